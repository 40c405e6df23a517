//! `setlist bench load`: a fixed request rate against a running dispatcher
//! (open loop, so a slow answer does not slow the offered load), with
//! distinct playlists (no cache hits) and, if asked, clients that hang up
//! mid-request. Latency is counted from when each request was due, not
//! from when it was sent, so a stalled client cannot hide a stalled server.
//! Reports what a listener sees (fresh model answers, fallbacks by reason,
//! errors), where the answers' time went, hop by hop, and the memory and
//! CPU of every Setlist process.

use crate::bench::percentile;
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
    /// A model answer's per-hop timings, as the dispatcher reported them.
    pub hops: Vec<HopTiming>,
}

/// One hop of an answer's path (a stage, or an output shard), in ms.
#[derive(Debug, Clone, PartialEq)]
pub struct HopTiming {
    pub part: String,
    pub queue: f64,
    pub compute: f64,
    pub transport: f64,
}

impl HopTiming {
    fn total(&self) -> f64 {
        self.queue + self.compute + self.transport
    }
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
    let before = usage_of_setlist_processes();
    let started = Instant::now();
    let samples = runtime.block_on(offer_load(&args, &ids))?;
    let at_end = usage_of_setlist_processes();
    let load_seconds = started.elapsed().as_secs_f64();
    // Let in-flight work and the answer cache's churn settle before reading memory again.
    std::thread::sleep(Duration::from_secs(2));
    let after = usage_of_setlist_processes();
    report(&args, &samples);
    print_usage(&before, &at_end, &after, load_seconds);
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
            let (outcome, hops) = match hang_up {
                Some(after) => match tokio::time::timeout(after, call).await {
                    Ok(result) => classify(result),
                    Err(_) => (Outcome::Aborted, Vec::new()),
                },
                None => match tokio::time::timeout(limit, call).await {
                    Ok(result) => classify(result),
                    Err(_) => (
                        Outcome::Error(format!("no answer in {limit:?}")),
                        Vec::new(),
                    ),
                },
            };
            Sample {
                due,
                latency: due.elapsed(),
                outcome,
                hops,
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

fn classify(result: Result<(hyper::StatusCode, Bytes)>) -> (Outcome, Vec<HopTiming>) {
    let (status, body) = match result {
        Ok(answer) => answer,
        Err(error) => return (Outcome::Error(format!("transport: {error}")), Vec::new()),
    };
    if status != hyper::StatusCode::OK {
        return (
            Outcome::Error(format!("HTTP {}", status.as_u16())),
            Vec::new(),
        );
    }
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (
            Outcome::Error("an answer that is not JSON".into()),
            Vec::new(),
        );
    };
    if answer["fallback"] == true {
        let reason = answer["fallback_reason"].as_str().unwrap_or("unknown");
        (Outcome::Fallback(reason.to_string()), Vec::new())
    } else if answer["cached"] == true {
        (Outcome::Cached, Vec::new())
    } else {
        (Outcome::Model, hops(&answer["timings"]["stages"]))
    }
}

fn hops(stages: &serde_json::Value) -> Vec<HopTiming> {
    let ms = |hop: &serde_json::Value, key: &str| hop[key].as_f64().unwrap_or(f64::NAN);
    stages
        .as_array()
        .into_iter()
        .flatten()
        .map(|hop| HopTiming {
            part: hop["part"].as_str().unwrap_or("?").to_string(),
            queue: ms(hop, "queue_ms"),
            compute: ms(hop, "compute_ms"),
            transport: ms(hop, "transport_ms"),
        })
        .collect()
}

/// Where an answer's time went: the mean of each hop's queue, compute and
/// transport, over `answers`, and what the hops do not cover (HTTP, the
/// dispatcher's batching, the results' way back): the latency less the
/// stages and the slowest shard.
fn breakdown(answers: &[&Sample]) -> (Vec<(String, [f64; 3])>, f64) {
    let mut sums: BTreeMap<String, ([f64; 3], usize)> = BTreeMap::new();
    let mut rest = 0.0;
    for answer in answers {
        let stages: f64 = answer
            .hops
            .iter()
            .filter(|h| h.part.starts_with("stage"))
            .map(HopTiming::total)
            .sum();
        let slowest_shard = answer
            .hops
            .iter()
            .filter(|h| h.part.starts_with("shard"))
            .map(HopTiming::total)
            .fold(0.0, f64::max);
        rest += answer.latency.as_secs_f64() * 1000.0 - stages - slowest_shard;
        for hop in &answer.hops {
            let (sum, n) = sums.entry(hop.part.clone()).or_default();
            sum[0] += hop.queue;
            sum[1] += hop.compute;
            sum[2] += hop.transport;
            *n += 1;
        }
    }
    let means = sums
        .into_iter()
        .map(|(part, (sum, n))| (part, sum.map(|x| x / n as f64)))
        .collect();
    (means, rest / answers.len().max(1) as f64)
}

fn print_breakdown(samples: &[Sample]) {
    let mut answers: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.outcome == Outcome::Model)
        .collect();
    if answers.is_empty() {
        return;
    }
    answers.sort_by_key(|s| s.latency);
    let slowest = &answers[answers.len() - answers.len().div_ceil(100)..];
    let (all, all_rest) = breakdown(&answers);
    let (tail, tail_rest) = breakdown(slowest);
    println!();
    println!(
        "where the time of fresh answers went, mean ms (queue / compute / transport), all {} and the slowest {}:",
        answers.len(),
        slowest.len()
    );
    println!();
    println!("| hop | all answers | slowest 1 % |");
    println!("|---|---|---|");
    let tail: BTreeMap<String, [f64; 3]> = tail.into_iter().collect();
    for (part, [q, c, t]) in &all {
        let [tq, tc, tt] = tail.get(part).copied().unwrap_or([f64::NAN; 3]);
        println!("| {part} | {q:.1} / {c:.1} / {t:.1} | {tq:.1} / {tc:.1} / {tt:.1} |");
    }
    println!(
        "| the rest: HTTP, the dispatcher's batching, results back | {all_rest:.1} | {tail_rest:.1} |"
    );
}

/// What one process used at a moment: resident memory and CPU time so far.
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss_kib: u64,
    cpu_seconds: f64,
}

/// Every Setlist process on this machine (this one, the load generator,
/// included), by what it is (the binary, and a node's part) and pid.
fn usage_of_setlist_processes() -> BTreeMap<(String, u32), Usage> {
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
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
        if !binary.starts_with("setlist") {
            continue;
        }
        let part = argv.iter().find_map(|a| a.strip_prefix("--part="));
        let name = match (part, argv.get(1).map(String::as_str)) {
            (Some(part), _) => format!("{binary} {part}"),
            (None, Some(command)) if binary == "setlist" => format!("{binary} {command}"),
            _ => binary,
        };
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        // utime and stime, the 12th and 13th fields after the command name.
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ticks: u64 = stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|t| t.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        let usage = Usage {
            rss_kib,
            cpu_seconds: ticks as f64 / ticks_per_second,
        };
        found.insert((name, pid), usage);
    }
    found
}

fn report(args: &LoadBenchArgs, samples: &[Sample]) {
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
    print_breakdown(samples);
}

/// Each process's memory before and after the load, and its share of one
/// core during it (two cores make 200 %).
fn print_usage(
    before: &BTreeMap<(String, u32), Usage>,
    at_end: &BTreeMap<(String, u32), Usage>,
    after: &BTreeMap<(String, u32), Usage>,
    load_seconds: f64,
) {
    println!();
    println!("| process | pid | RSS before MiB | RSS after MiB | CPU during the load |");
    println!("|---|---|---|---|---|");
    let mut total_cpu = 0.0;
    for (key @ (name, pid), usage) in before {
        let rss_after = after.get(key).map_or("gone".to_string(), |u| {
            format!("{:.1}", u.rss_kib as f64 / 1024.0)
        });
        let cpu = at_end.get(key).map_or("gone".to_string(), |u| {
            let share = (u.cpu_seconds - usage.cpu_seconds) / load_seconds * 100.0;
            total_cpu += share;
            format!("{share:.0} %")
        });
        println!(
            "| {name} | {pid} | {:.1} | {rss_after} | {cpu} |",
            usage.rss_kib as f64 / 1024.0
        );
    }
    println!("| all of them | | | | {total_cpu:.0} % |");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(part: &str, queue: f64, compute: f64, transport: f64) -> HopTiming {
        HopTiming {
            part: part.into(),
            queue,
            compute,
            transport,
        }
    }

    fn answer(latency_ms: u64, hops: Vec<HopTiming>) -> Sample {
        Sample {
            due: Instant::now(),
            latency: Duration::from_millis(latency_ms),
            outcome: Outcome::Model,
            hops,
        }
    }

    #[test]
    fn the_breakdown_averages_each_hop_and_leaves_the_rest_to_the_slowest_shard() {
        let samples = [
            answer(
                20,
                vec![
                    hop("stage-0", 1.0, 2.0, 3.0),
                    hop("shard-0", 1.0, 1.0, 1.0),
                    hop("shard-1", 2.0, 2.0, 2.0),
                ],
            ),
            answer(
                30,
                vec![
                    hop("stage-0", 3.0, 2.0, 1.0),
                    hop("shard-0", 1.0, 1.0, 1.0),
                    hop("shard-1", 0.0, 0.0, 0.0),
                ],
            ),
        ];
        let (means, rest) = breakdown(&samples.iter().collect::<Vec<_>>());
        assert_eq!(
            means,
            vec![
                ("shard-0".to_string(), [1.0, 1.0, 1.0]),
                ("shard-1".to_string(), [1.0, 1.0, 1.0]),
                ("stage-0".to_string(), [2.0, 2.0, 2.0]),
            ]
        );
        // (20 - 6 - 6) and (30 - 6 - 3): the shards run side by side.
        assert_eq!(rest, (8.0 + 21.0) / 2.0);
    }

    #[test]
    fn only_a_model_answer_carries_hops() {
        let body = serde_json::json!({
            "fallback": false, "cached": false,
            "timings": {"stages": [{"part": "stage-0", "queue_ms": 0.5, "compute_ms": 1.5, "transport_ms": 2.0}]}
        });
        let ok = |b: &serde_json::Value| Ok((hyper::StatusCode::OK, Bytes::from(b.to_string())));
        assert_eq!(
            classify(ok(&body)),
            (Outcome::Model, vec![hop("stage-0", 0.5, 1.5, 2.0)])
        );
        let fallback = serde_json::json!({"fallback": true, "fallback_reason": "deadline"});
        assert_eq!(
            classify(ok(&fallback)),
            (Outcome::Fallback("deadline".into()), vec![])
        );
    }
}
