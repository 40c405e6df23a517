//! `setlist index` (build the song index of a slices directory once, where
//! `setlist-search` and `setlist up` reuse it) and `setlist bench search`
//! (search-as-you-type over HTTP on a large generated catalogue).

use crate::bench::{machine, percentile};
use crate::up::cache_dir;
use anyhow::{Context, Result};
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use setlist_core::catalogue::{Catalogue, Song};
use setlist_core::dataset::synth::{self, SynthConfig};
use setlist_core::slice::SliceSet;
use setlist_search::config::Config;
use setlist_search::index::SongIndex;
use setlist_search::service::{Search, Served};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct IndexArgs {
    /// The slices directory the search API will serve.
    #[arg(long)]
    slices: PathBuf,
    /// Where indexes are kept (what `setlist-search --index-dir` reads);
    /// default: the one `setlist up` uses, ~/.cache/setlist/index.
    #[arg(long)]
    index_dir: Option<PathBuf>,
}

pub fn run_index(args: IndexArgs) -> Result<()> {
    let slices = SliceSet::open(&args.slices, None)?;
    let served = Served::from_slices(slices, &Config::default())?;
    let root = args.index_dir.unwrap_or_else(|| cache_dir().join("index"));
    let started = Instant::now();
    let total = served.catalogue.len();
    let index = SongIndex::open_or_build(
        &root,
        &served.model_version,
        &served.catalogue_sha256,
        &served.catalogue,
        &|done, total| eprintln!("setlist: indexed {done} of {total} songs"),
    )?;
    println!(
        "song index of model {} ({} songs) ready in {} ({:.1} s)",
        served.model_version,
        index.songs().max(total as u64),
        root.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(Args)]
pub struct SearchBenchArgs {
    /// Songs of the generated catalogue.
    #[arg(long, default_value_t = 1_000_000)]
    songs: usize,
    /// Playlists generated to give the songs their popularity.
    #[arg(long, default_value_t = 100_000)]
    playlists: usize,
    /// Concurrent clients, each sending its next query when the last is answered.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Share of queries (0–1) with a typo: a letter dropped, doubled or changed.
    #[arg(long, default_value_t = 0.2)]
    typo_share: f64,
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// Keep the index here (reused by the next run) instead of in memory.
    #[arg(long)]
    index_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Resident memory of this process, bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// A generated catalogue, each song as popular as the generated playlists
/// make it.
fn generated_catalogue(songs: usize, playlists: usize, seed: u64) -> Result<Catalogue> {
    let data = synth::generate(&SynthConfig {
        seed,
        tracks: songs,
        playlists,
        ..SynthConfig::default()
    });
    let mut counts = vec![0u32; data.tracks.len()];
    for playlist in &data.playlists {
        let mut seen = playlist.tracks.clone();
        seen.sort_unstable();
        seen.dedup();
        for track in seen {
            counts[track as usize] += 1;
        }
    }
    Ok(Catalogue::new(
        data.tracks
            .into_iter()
            .zip(counts)
            .map(|(track, playlists)| Song {
                id: track.id,
                title: track.title,
                artist: track.artist,
                album: track.album,
                playlists,
            })
            .collect(),
    )?)
}

/// What a listener types: the first 3–12 characters of a title, sometimes
/// of "artist title", sometimes with one typo.
fn queries(catalogue: &Catalogue, count: usize, typo_share: f64, seed: u64) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let songs = catalogue.songs();
    (0..count)
        .map(|_| {
            let song = &songs[rng.random_range(0..songs.len())];
            let text = if rng.random_bool(0.25) {
                format!("{} {}", song.artist, song.title)
            } else {
                song.title.clone()
            };
            let mut chars: Vec<char> = text.chars().collect();
            let typed = rng
                .random_range(3..=12usize)
                .min(chars.len())
                .max(3.min(chars.len()));
            chars.truncate(typed);
            if rng.random_bool(typo_share) && chars.len() >= 4 {
                let at = rng.random_range(1..chars.len());
                match rng.random_range(0..3) {
                    0 => {
                        chars.remove(at);
                    }
                    1 => chars.insert(at, chars[at]),
                    _ => chars[at] = (b'a' + rng.random_range(0..26u8)) as char,
                }
            }
            chars.into_iter().collect::<String>()
        })
        // The API refuses fewer than 3 characters, as the page never sends.
        .filter(|query| query.trim().chars().count() >= 3)
        .collect()
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn run_bench(args: SearchBenchArgs) -> Result<()> {
    println!("## setlist bench search");
    println!();
    println!("machine: {}", machine());
    let baseline = rss();
    let started = Instant::now();
    let catalogue = generated_catalogue(args.songs, args.playlists, args.seed)?;
    let generated = started.elapsed();
    let with_catalogue = rss();
    let config = Config {
        index_dir: args.index_dir.clone(),
        // No dispatcher and no broker: only search is measured.
        dispatcher: "http://127.0.0.1:9".into(),
        ..Config::default()
    };
    let queries = queries(&catalogue, 100_000, args.typo_share, args.seed);
    let served = Served {
        model_version: format!("bench-{}-{}", args.songs, args.seed),
        catalogue_sha256: format!("generated-{}-{}-{}", args.songs, args.playlists, args.seed),
        stages: 0,
        output_shards: 0,
        catalogue,
    };
    let started = Instant::now();
    // The server runs on its own runtime with one worker per core; the
    // load on another, so neither waits for the other's scheduler.
    let server = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let search = Arc::new(
        server
            .block_on(async { tokio::task::block_in_place(|| Search::start(&config, served)) })?,
    );
    let indexed = started.elapsed();
    let with_index = rss();
    let listener = server.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let address = listener.local_addr()?;
    let app = setlist_search::http::router(search.clone());
    server.spawn(async move { axum::serve(listener, app).await });

    println!(
        "catalogue: {} generated songs ({:.1} s); song index {} ({:.1} s); memory: catalogue {:.0} MiB, index and lookups {:.0} MiB more",
        search.catalogue.len(),
        generated.as_secs_f64(),
        if args.index_dir.is_some() {
            "built or reopened on disk"
        } else {
            "built in memory"
        },
        indexed.as_secs_f64(),
        (with_catalogue.saturating_sub(baseline)) as f64 / (1 << 20) as f64,
        (with_index.saturating_sub(with_catalogue)) as f64 / (1 << 20) as f64,
    );
    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (latencies, errors, wall) = load.block_on(load_queries(
        address,
        queries,
        args.connections,
        Duration::from_secs(args.seconds),
        args.limit,
    ))?;
    let ms_of = |keep: &dyn Fn(usize) -> bool| {
        let mut ms: Vec<f64> = latencies
            .iter()
            .filter(|(chars, _)| keep(*chars))
            .map(|(_, d)| d.as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        ms
    };
    let ms = ms_of(&|_| true);
    println!(
        "load: {} connections, closed loop, {} s, queries of 3–12 characters from titles (a quarter \"artist title\"), {:.0} % with a typo, limit {}",
        args.connections,
        args.seconds,
        args.typo_share * 100.0,
        args.limit
    );
    println!();
    println!("| queries | errors | queries/s | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
        ms.len(),
        errors,
        ms.len() as f64 / wall.as_secs_f64(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN),
    );
    println!();
    println!("by what was typed:");
    println!();
    println!("| characters | queries | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|");
    for (name, range) in [("3–4", 3..=4), ("5–7", 5..=7), ("8–12", 8..=12)] {
        let ms = ms_of(&|chars| range.contains(&chars));
        println!(
            "| {name} | {} | {:.2} | {:.2} |",
            ms.len(),
            percentile(&ms, 0.5),
            percentile(&ms, 0.99)
        );
    }
    server.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// `connections` clients asking one query after another for `span`.
async fn load_queries(
    address: std::net::SocketAddr,
    queries: Vec<String>,
    connections: usize,
    span: Duration,
    limit: usize,
) -> Result<(Vec<(usize, Duration)>, usize, Duration)> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let queries = Arc::new(queries);
    let started = Instant::now();
    let end = started + span;
    let mut tasks = Vec::new();
    for connection in 0..connections {
        let client = client.clone();
        let queries = queries.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut next = connection;
            while Instant::now() < end {
                let query = &queries[next % queries.len()];
                let class = query.trim().chars().count();
                next += connections;
                let uri = format!(
                    "http://{address}/v1/songs/search?limit={limit}&q={}",
                    percent_encode(query)
                );
                let asked = Instant::now();
                let ok = match client.get(uri.parse().expect("a valid URI")).await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        ok && response.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                };
                if ok {
                    latencies.push((class, asked.elapsed()));
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.context("a load task failed")?;
        latencies.extend(l);
        errors += e;
    }
    Ok((latencies, errors, started.elapsed()))
}
