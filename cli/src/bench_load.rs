//! `setlist bench load`: a fixed request rate against a running dispatcher
//! (open loop, so a slow answer does not slow the offered load), with
//! distinct playlists (no cache hits) and, if asked, clients that hang up
//! mid-request. Latency is counted from when each request was due, not
//! from when it was sent, so a stalled client cannot hide a stalled server.
//! Reports what a listener sees (fresh model answers, fallbacks by reason,
//! errors) and the memory of every Setlist process before and after.

use anyhow::{Context, Result};
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct LoadBenchArgs {
    /// The dispatcher to load, e.g. the one `setlist up` prints.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The served slices (or model) directory: its catalogue.jsonl gives the
    /// song ids the playlists are drawn from.
    #[arg(long)]
    catalogue: PathBuf,
    /// Requests per second, offered whatever the answers' latency.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// How long to offer the load.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Not counted: the first seconds of load, while caches and batches warm up.
    #[arg(long, default_value_t = 5)]
    warmup_seconds: u64,
    /// Songs per playlist.
    #[arg(long, default_value_t = 5)]
    tracks: usize,
    #[arg(long, default_value_t = 20)]
    k: usize,
    #[arg(long, default_value_t = 1000)]
    deadline_ms: u64,
    /// Share of requests (0–1) whose client hangs up before the answer comes.
    #[arg(long, default_value_t = 0.0)]
    abort_share: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Model,
    Cached,
    Fallback(String),
    /// An HTTP status other than 200, or a transport error.
    Error(String),
    /// The client hung up on purpose.
    Aborted,
}

pub struct Sample {
    pub due: Instant,
    pub latency: Duration,
    pub outcome: Outcome,
}

pub fn run(args: LoadBenchArgs) -> Result<()> {
    anyhow::ensure!(
        args.rate > 0.0 && args.rate <= 100_000.0,
        "--rate is {}; it must be between 0 and 100000 requests per second",
        args.rate
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.abort_share),
        "--abort-share is {}; it must be between 0 and 1",
        args.abort_share
    );
    let path = if args.catalogue.is_dir() {
        args.catalogue.join("catalogue.jsonl")
    } else {
        args.catalogue.clone()
    };
    let ids = song_ids(&path)?;
    // The client shares the machine with the system under test: one worker.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let before = memory_of_setlist_processes();
    let samples = runtime.block_on(offer_load(&args, &ids))?;
    // Let in-flight work and the answer cache's churn settle before reading memory again.
    std::thread::sleep(Duration::from_secs(2));
    let after = memory_of_setlist_processes();
    report(&args, &samples, &before, &after);
    // Clients that hung up must leave no pending request behind.
    let status = dispatcher_status(&args.url)?;
    println!();
    println!(
        "after the load: {} requests in flight in the dispatcher; its bounded stores hold {}",
        status["in_flight"], status["memory"]
    );
    Ok(())
}

fn dispatcher_status(url: &str) -> Result<serde_json::Value> {
    let status_url = format!("{url}/v1/status");
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent();
    agent
        .get(&status_url)
        .call()
        .and_then(|mut answer| answer.body_mut().read_json())
        .with_context(|| format!("cannot read {status_url}"))
}

/// The `id` of every song in a catalogue.jsonl.
pub fn song_ids(path: &std::path::Path) -> Result<Vec<String>> {
    let read = || -> Result<Vec<String>> {
        std::fs::read_to_string(path)?
            .lines()
            .enumerate()
            .map(|(n, line)| {
                let song: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("line {} is not JSON", n + 1))?;
                song["id"]
                    .as_str()
                    .map(str::to_string)
                    .with_context(|| format!("line {} has no \"id\"", n + 1))
            })
            .collect()
    };
    read().with_context(|| format!("cannot read the song ids in {}", path.display()))
}

/// Listeners asking for recommendations: a distinct random playlist each
/// time, over pooled keep-alive connections, some hanging up on purpose.
pub struct Listeners {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    uri: hyper::Uri,
    ids: Vec<String>,
    rng: ChaCha8Rng,
    tracks: usize,
    k: usize,
    deadline_ms: u64,
    abort_share: f64,
}

impl Listeners {
    /// Listeners of the dispatcher at `url`, drawing playlists of `tracks`
    /// songs from `ids`.
    pub fn new(
        url: &str,
        ids: Vec<String>,
        tracks: usize,
        k: usize,
        deadline_ms: u64,
        abort_share: f64,
        seed: u64,
    ) -> Result<Listeners> {
        anyhow::ensure!(
            ids.len() >= tracks,
            "the catalogue has {} songs, fewer than --tracks {tracks}",
            ids.len()
        );
        Ok(Listeners {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build_http(),
            uri: format!("{}/v1/recommendations", url.trim_end_matches('/'))
                .parse()
                .context("--url is not an HTTP address")?,
            ids,
            rng: ChaCha8Rng::seed_from_u64(seed),
            tracks,
            k,
            deadline_ms,
            abort_share,
        })
    }

    /// One request, due at `due`: the future sends it and resolves to how
    /// it ended, its latency counted from `due`.
    pub fn ask(&mut self, due: Instant) -> impl Future<Output = Sample> + Send + 'static {
        let playlist: Vec<&String> = self.ids.sample(&mut self.rng, self.tracks).collect();
        let body = serde_json::json!({
            "tracks": playlist,
            "k": self.k,
            "deadline_ms": self.deadline_ms,
        })
        .to_string();
        let request = hyper::Request::post(self.uri.clone())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        // A client that hangs up does so before any answer could come.
        let hang_up = (self.rng.random::<f64>() < self.abort_share)
            .then(|| Duration::from_micros(self.rng.random_range(100..2_000)));
        let limit = Duration::from_millis(self.deadline_ms + 5_000);
        let client = self.client.clone();
        async move {
            let call = async {
                let response = client.request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                anyhow::Ok((status, body))
            };
            let outcome = match hang_up {
                Some(after) => match tokio::time::timeout(after, call).await {
                    Ok(result) => classify(result),
                    Err(_) => Outcome::Aborted,
                },
                None => match tokio::time::timeout(limit, call).await {
                    Ok(result) => classify(result),
                    Err(_) => Outcome::Error(format!("no answer in {limit:?}")),
                },
            };
            Sample {
                due,
                latency: due.elapsed(),
                outcome,
            }
        }
    }
}

async fn offer_load(args: &LoadBenchArgs, ids: &[String]) -> Result<Vec<Sample>> {
    let mut listeners = Listeners::new(
        &args.url,
        ids.to_vec(),
        args.tracks,
        args.k,
        args.deadline_ms,
        args.abort_share,
        args.seed,
    )?;
    let samples = Arc::new(Mutex::new(Vec::new()));
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let started = Instant::now();
    let counted_from = started + Duration::from_secs(args.warmup_seconds);
    let total = (args.rate * args.seconds as f64) as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = started + period.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let request = listeners.ask(due);
        let samples = samples.clone();
        tasks.spawn(async move {
            let sample = request.await;
            if sample.due >= counted_from {
                samples.lock().expect("samples lock").push(sample);
            }
        });
        // Reap finished requests as we go, so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let samples = std::mem::take(&mut *samples.lock().expect("samples lock"));
    Ok(samples)
}

fn classify(result: Result<(hyper::StatusCode, Bytes)>) -> Outcome {
    let (status, body) = match result {
        Ok(answer) => answer,
        Err(error) => return Outcome::Error(format!("transport: {error}")),
    };
    if status != hyper::StatusCode::OK {
        return Outcome::Error(format!("HTTP {}", status.as_u16()));
    }
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Outcome::Error("an answer that is not JSON".into());
    };
    if answer["fallback"] == true {
        Outcome::Fallback(
            answer["fallback_reason"]
                .as_str()
                .unwrap_or("unknown")
                .to_string(),
        )
    } else if answer["cached"] == true {
        Outcome::Cached
    } else {
        Outcome::Model
    }
}

/// Resident memory (KiB) of every Setlist process on this machine, by pid
/// and what it is (the binary, and a node's part).
fn memory_of_setlist_processes() -> BTreeMap<(String, u32), u64> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let argv = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let argv: Vec<String> = argv
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let binary = argv[0].rsplit('/').next().unwrap_or_default().to_string();
        if !binary.starts_with("setlist") || pid == std::process::id() {
            continue;
        }
        let part = argv.iter().find_map(|a| a.strip_prefix("--part="));
        let name = match part {
            Some(part) => format!("{binary} {part}"),
            None => binary,
        };
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        found.insert((name, pid), rss);
    }
    found
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(
    args: &LoadBenchArgs,
    samples: &[Sample],
    before: &BTreeMap<(String, u32), u64>,
    after: &BTreeMap<(String, u32), u64>,
) {
    let mut counts: BTreeMap<&Outcome, usize> = BTreeMap::new();
    for s in samples {
        *counts.entry(&s.outcome).or_default() += 1;
    }
    let span = match (
        samples.iter().map(|s| s.due).min(),
        samples.iter().map(|s| s.due).max(),
    ) {
        (Some(first), Some(last)) if last > first => (last - first).as_secs_f64(),
        _ => 0.0,
    };
    println!(
        "offered {:.0} requests/s for {} s ({} s counted: {} requests, {:.0}/s), {} songs per playlist, k {}, deadline {} ms, {:.0} % of clients hang up",
        args.rate,
        args.seconds,
        args.seconds.saturating_sub(args.warmup_seconds),
        samples.len(),
        if span > 0.0 {
            samples.len() as f64 / span
        } else {
            0.0
        },
        args.tracks,
        args.k,
        args.deadline_ms,
        args.abort_share * 100.0
    );
    println!();
    println!("| answers | count | p50 ms | p90 ms | p99 ms | max ms | over deadline |");
    println!("|---|---|---|---|---|---|---|");
    let deadline = Duration::from_millis(args.deadline_ms);
    for (outcome, count) in &counts {
        let mut ms: Vec<f64> = samples
            .iter()
            .filter(|s| &&s.outcome == outcome)
            .map(|s| s.latency.as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        let late = samples
            .iter()
            .filter(|s| &&s.outcome == outcome && s.latency > deadline)
            .count();
        println!(
            "| {} | {count} | {:.1} | {:.1} | {:.1} | {:.1} | {late} |",
            match outcome {
                Outcome::Model => "fresh model answer".to_string(),
                Outcome::Cached => "cached (not counted as fresh)".to_string(),
                Outcome::Fallback(reason) => format!("fallback: {reason}"),
                Outcome::Error(what) => format!("error: {what}"),
                Outcome::Aborted => "client hung up".to_string(),
            },
            percentile(&ms, 0.5),
            percentile(&ms, 0.9),
            percentile(&ms, 0.99),
            ms.last().copied().unwrap_or(f64::NAN),
        );
    }
    println!();
    println!("| process | pid | RSS before MiB | RSS after MiB |");
    println!("|---|---|---|---|");
    for ((name, pid), kib) in before {
        let now = after
            .get(&(name.clone(), *pid))
            .map_or("gone".to_string(), |k| format!("{:.1}", *k as f64 / 1024.0));
        println!("| {name} | {pid} | {:.1} | {now} |", *kib as f64 / 1024.0);
    }
}
