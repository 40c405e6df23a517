//! `setlist bench recovery`: how long listeners wait for fresh model answers
//! after a compute node is SIGKILLed under load. Runs against a `setlist up`
//! started with `--json` (its one line names every process), kills the
//! victim, keeps a fixed rate of distinct playlists going (so no answer can
//! come from the cache), and reports when the first fresh model answer came
//! and when answers were only fresh again. `setlist up` restarts the victim
//! between runs, as Kubernetes would.

use crate::bench_load::{Listeners, Outcome, Sample, song_ids};
use anyhow::{Context, Result};
use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct RecoveryBenchArgs {
    /// A file holding the line `setlist up --json` printed.
    #[arg(long)]
    up: PathBuf,
    /// The process to SIGKILL, by its name in that line (e.g. stage-1-0).
    #[arg(long, default_value = "stage-1-0")]
    victim: String,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Requests per second, offered throughout.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    #[arg(long, default_value_t = 1000)]
    deadline_ms: u64,
    /// Fresh answers this long in a row after the last other answer: recovered.
    #[arg(long, default_value_t = 3)]
    steady_seconds: u64,
    /// Give up on a run after this long.
    #[arg(long, default_value_t = 60)]
    limit_seconds: u64,
}

/// One kill and what listeners saw after it.
struct Run {
    first_fresh: Option<Duration>,
    only_fresh: Option<Duration>,
    requests: usize,
    others: usize,
    /// The most any request took beyond its deadline.
    worst_overrun: Duration,
}

pub fn run(args: RecoveryBenchArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.up)
        .with_context(|| format!("cannot read {}", args.up.display()))?;
    let up: serde_json::Value = serde_json::from_str(text.trim()).with_context(|| {
        format!(
            "{} is not the JSON line of `setlist up --json`",
            args.up.display()
        )
    })?;
    let dispatcher = up["dispatcher"]
        .as_str()
        .context("the line names no dispatcher")?
        .to_string();
    let slices = PathBuf::from(up["slices"].as_str().context("the line names no slices")?);
    let victim = up["processes"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == args.victim.as_str()))
        .with_context(|| format!("`setlist up` runs no process {}", args.victim))?;
    let victim_url = victim["url"].as_str().context("the victim has no URL")?;
    let listen = victim_url.trim_start_matches("http://").to_string();
    let ids = song_ids(&slices.join("catalogue.jsonl"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut listeners = Listeners::new(&dispatcher, ids, 4, 10, args.deadline_ms, 0.0, 7)?;
    println!(
        "SIGKILL of {} under {:.0} requests/s of distinct playlists, deadline {} ms; recovered = fresh model answers only, for {} s",
        args.victim, args.rate, args.deadline_ms, args.steady_seconds
    );
    println!();
    println!(
        "| run | first fresh answer after the kill | only fresh answers from | requests | other answers | worst time past the deadline |"
    );
    println!("|---|---|---|---|---|---|");
    for n in 1..=args.runs {
        wait_until_ready(victim_url, Duration::from_secs(120))?;
        let pid = pid_listening_on(&listen)
            .with_context(|| format!("no running process listens on {listen}"))?;
        let run = runtime.block_on(kill_and_watch(&args, &mut listeners, pid))?;
        let seconds = |d: Option<Duration>| {
            d.map_or("not within the limit".to_string(), |d| {
                format!("{:.1} s", d.as_secs_f64())
            })
        };
        println!(
            "| {n} | {} | {} | {} | {} | {:.0} ms |",
            seconds(run.first_fresh),
            seconds(run.only_fresh),
            run.requests,
            run.others,
            run.worst_overrun.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}

/// Two seconds of load, the kill, then load until answers are only fresh
/// for `steady_seconds` (or the limit passes).
async fn kill_and_watch(
    args: &RecoveryBenchArgs,
    listeners: &mut Listeners,
    pid: i32,
) -> Result<Run> {
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let steady = Duration::from_secs(args.steady_seconds);
    let (done, mut samples) = tokio::sync::mpsc::unbounded_channel::<Sample>();
    let started = Instant::now();
    let killed = started + Duration::from_secs(2);
    let mut run = Run {
        first_fresh: None,
        only_fresh: None,
        requests: 0,
        others: 0,
        worst_overrun: Duration::ZERO,
    };
    let mut last_other = killed;
    let mut killed_yet = false;
    let deadline = Duration::from_millis(args.deadline_ms);
    let mut next = started;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {
                if !killed_yet && next >= killed {
                    kill(Pid::from_raw(pid), Signal::SIGKILL).context("cannot kill the victim")?;
                    killed_yet = true;
                }
                let request = listeners.ask(next);
                let done = done.clone();
                tokio::spawn(async move {
                    let _ = done.send(request.await);
                });
                next += period;
            }
            Some(sample) = samples.recv() => {
                run.worst_overrun = run.worst_overrun.max(sample.latency.saturating_sub(deadline));
                if sample.due < killed {
                    continue;
                }
                run.requests += 1;
                if sample.outcome == Outcome::Model {
                    run.first_fresh.get_or_insert(sample.due - killed);
                    if sample.due.saturating_duration_since(last_other) >= steady {
                        run.only_fresh = Some(last_other - killed);
                        return Ok(run);
                    }
                } else {
                    run.others += 1;
                    last_other = last_other.max(sample.due);
                }
            }
        }
        if started.elapsed() > Duration::from_secs(args.limit_seconds) {
            return Ok(run);
        }
    }
}

fn wait_until_ready(url: &str, limit: Duration) -> Result<()> {
    let started = Instant::now();
    while !crate::up::ready(url) {
        anyhow::ensure!(
            started.elapsed() < limit,
            "{url} was not ready within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The pid of the process started with `--listen=<address>` (a node keeps
/// its address across restarts; its pid changes).
fn pid_listening_on(address: &str) -> Option<i32> {
    let flag = format!("--listen={address}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            let argv = std::fs::read(entry.path().join("cmdline")).ok()?;
            argv.split(|&b| b == 0)
                .any(|a| a == flag.as_bytes())
                .then_some(pid)
        })
}
