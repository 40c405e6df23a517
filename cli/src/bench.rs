//! `setlist bench`: measurements for docs/benchmarks.md. Timings live here,
//! never in pass/fail tests.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use setlist_core::plan::PartitionPlan;
use setlist_core::slice::{self, Part, SliceSet};
use setlist_model::artifact::Model;
use setlist_model::ops::RowQuery;
use setlist_model::pipeline;
use setlist_model::slice::LoadParts;
use setlist_model::train::ModelShape;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Forward latency and throughput of the whole model, and the memory of
    /// each slice versus the whole model.
    Model(ModelBenchArgs),
    /// The whole model in one process against the partitioned pipeline over
    /// Kafka (1–4 stages, with and without micro-batching), with the broker's floor.
    Pipeline(crate::bench_pipeline::PipelineBenchArgs),
    /// A fixed request rate against a running dispatcher, with distinct
    /// playlists and clients that hang up: latency, outcomes, memory.
    Load(crate::bench_load::LoadBenchArgs),
    /// SIGKILL a node of a running `setlist up` under load, and time how
    /// long until listeners get fresh model answers again.
    Recovery(crate::bench_recovery::RecoveryBenchArgs),
    /// Search-as-you-type over HTTP on a generated catalogue (1M songs by
    /// default): latency and throughput, index build time and memory.
    Search(crate::search::SearchBenchArgs),
    /// (internal) Load one part in a fresh process and report its memory.
    #[command(hide = true)]
    MemoryProbe(MemoryProbeArgs),
}

#[derive(Args)]
pub struct ModelBenchArgs {
    /// A trained model directory to measure.
    #[arg(long, conflicts_with = "random")]
    model: Option<PathBuf>,
    /// Measure an untrained model with random weights instead, of this many
    /// songs (embedding and hidden sizes from --dim).
    #[arg(long)]
    random: Option<u32>,
    /// Embedding and hidden size of the random model.
    #[arg(long, default_value_t = 256)]
    dim: u32,
    /// LSTM layers of the random model.
    #[arg(long, default_value_t = 2)]
    lstm_layers: u32,
    /// Stages and output shards the memory comparison slices into.
    #[arg(long, default_value_t = 3)]
    stages: u32,
    #[arg(long, default_value_t = 2)]
    output_shards: u32,
    /// Timed forward passes per batch size.
    #[arg(long, default_value_t = 30)]
    iterations: usize,
    /// Scratch directory for slices (and the random model); removed afterwards.
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct MemoryProbeArgs {
    #[arg(long)]
    slices: Option<PathBuf>,
    #[arg(long)]
    model: Option<PathBuf>,
    /// "stage-K" or "shard-S" (with --slices).
    #[arg(long)]
    part: Option<String>,
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Model(args) => bench_model(args),
        BenchCommand::Pipeline(args) => crate::bench_pipeline::run(args),
        BenchCommand::Load(args) => crate::bench_load::run(args),
        BenchCommand::Recovery(args) => crate::bench_recovery::run(args),
        BenchCommand::Search(args) => crate::search::run_bench(args),
        BenchCommand::MemoryProbe(args) => memory_probe(args),
    }
}

/// Resident and peak memory of this process, from /proc.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A random-weight model of the default architecture (skip connections
/// included) with these sizes, saved to `dir` so it can be sliced.
pub fn saved_random_model(songs: u32, dim: u32, lstm_layers: u32, dir: &Path) -> Result<Model> {
    let shape = ModelShape {
        embedding_dim: dim,
        hidden_dim: dim,
        lstm_layers,
        ..ModelShape::default()
    };
    let m = Model::random(shape.config(songs), 1)?;
    let manifest = Model::save(dir, &m.config, &m.weights, &m.catalogue, &m.training)?;
    Ok(Model { manifest, ..m })
}

/// Memory measured while `part` is still alive: what a node holding it needs.
fn memory_holding<T>(part: T) -> (u64, u64) {
    let measured = memory();
    drop(part);
    measured
}

fn memory_probe(args: MemoryProbeArgs) -> Result<()> {
    let _ = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu)); // libtorch's own start-up, measured as the baseline
    let (before, _) = memory();
    let (rss, peak) = match (&args.model, &args.slices, &args.part) {
        (Some(dir), _, _) => memory_holding(Model::load(dir)?),
        (None, Some(dir), Some(part)) => {
            let set = SliceSet::open(dir, None)?;
            let (kind, index) = part
                .split_once('-')
                .context("--part is stage-K or shard-S")?;
            let index: u32 = index.parse().context("--part is stage-K or shard-S")?;
            match kind {
                "stage" => memory_holding(set.load_stage(index)?),
                "shard" => memory_holding(set.load_shard(index)?),
                _ => anyhow::bail!("--part is stage-K or shard-S"),
            }
        }
        (None, None, None) => memory(),
        _ => anyhow::bail!("give --model, or --slices with --part, or neither for the baseline"),
    };
    println!(
        "{}",
        serde_json::json!({ "baseline": before, "rss": rss, "peak": peak })
    );
    Ok(())
}

/// Runs the probe in a fresh process and returns (resident, peak) bytes above libtorch's baseline.
fn probe(args: &[&str]) -> Result<(u64, u64)> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(["bench", "memory-probe"])
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "memory probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let get = |k: &str| v[k].as_u64().unwrap_or(0);
    Ok((
        get("rss").saturating_sub(get("baseline")),
        get("peak").saturating_sub(get("baseline")),
    ))
}

/// The `p` quantile (0–1) of samples sorted in ascending order; NaN for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn bench_model(args: ModelBenchArgs) -> Result<()> {
    let scratch = tempfile_dir(args.work_dir.as_deref())?;
    let (model, model_dir) = match (&args.model, args.random) {
        (Some(dir), _) => (Model::load(dir)?, dir.clone()),
        (None, Some(songs)) => {
            eprintln!(
                "building a random-weight model of {songs} songs × {} dims…",
                args.dim
            );
            let dir = scratch.join("model");
            let model = saved_random_model(songs, args.dim, args.lstm_layers, &dir)?;
            (model, dir)
        }
        (None, None) => anyhow::bail!("give --model DIR or --random SONGS"),
    };
    let c = &model.config;
    println!("## setlist bench model");
    println!();
    println!("machine: {}", machine());
    println!(
        "model {}: {} songs, embedding {}, hidden {}, {} LSTM layers, history {} tracks, {:.1} MiB of f32 parameters",
        model.manifest.model_version,
        c.catalogue_size,
        c.embedding_dim,
        c.hidden_dim,
        c.lstm_layers,
        c.max_history,
        c.bytes() as f64 / (1 << 20) as f64
    );
    println!();
    println!("| batch | p50 ms | p99 ms | mean ms | histories/s |");
    println!("|---:|---:|---:|---:|---:|");
    for batch in [1usize, 8, 64] {
        // Full-length histories: the worst case the model is sized for.
        let histories = pipeline::random_histories(
            c.catalogue_size,
            batch,
            c.max_history as usize,
            batch as u64,
        );
        let histories: Vec<Vec<u32>> = histories
            .into_iter()
            .map(|mut h| {
                h.resize(c.max_history as usize, 0);
                h
            })
            .collect();
        let rows: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
        let queries: Vec<RowQuery> = rows
            .iter()
            .map(|h| RowQuery { k: 20, exclude: h })
            .collect();
        for _ in 0..3 {
            model.recommend(&rows, &queries);
        }
        let mut times: Vec<f64> = (0..args.iterations.max(1))
            .map(|_| {
                let start = Instant::now();
                model.recommend(&rows, &queries);
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        println!(
            "| {batch} | {:.2} | {:.2} | {:.2} | {:.0} |",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            mean,
            batch as f64 / (mean / 1e3)
        );
    }
    let plan = PartitionPlan::new(
        c,
        args.stages.min(PartitionPlan::max_stages(c)),
        args.output_shards,
    )?;
    let slices_dir = scratch.join("slices");
    setlist_model::slice::write_slices(&model, &plan, &slices_dir)?;
    let slices = slices_dir.to_str().context("scratch path is not UTF-8")?;
    println!();
    println!(
        "memory: resident bytes a process holds after loading only that part, above libtorch's own start-up ({} stages, {} output shards)",
        plan.stages.len(),
        plan.output_shards.len()
    );
    println!();
    println!("| part | parameters MiB | resident MiB | peak while loading MiB |");
    println!("|---|---:|---:|---:|");
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let (rss, peak) = probe(&[
        "--model",
        model_dir.to_str().context("model path is not UTF-8")?,
    ])?;
    println!(
        "| whole model | {:.1} | {:.1} | {:.1} |",
        mib(c.bytes()),
        mib(rss),
        mib(peak)
    );
    for part in slice::parts(&plan) {
        let bytes = match part {
            Part::Stage(k) => plan.stages[k as usize].bytes,
            Part::OutputShard(s) => plan.output_shards[s as usize].bytes,
        };
        let (rss, peak) = probe(&["--slices", slices, "--part", &part.to_string()])?;
        println!(
            "| {part} | {:.1} | {:.1} | {:.1} |",
            mib(bytes),
            mib(rss),
            mib(peak)
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

fn tempfile_dir(base: Option<&Path>) -> Result<PathBuf> {
    let base = base
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("setlist-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The machine, in words, for the record next to the numbers.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |kib| kib as f64 / (1 << 20) as f64);
    format!(
        "{}, {cores} cores, {memory:.0} GiB; libtorch (CPU) with {} threads",
        cpu.unwrap_or_else(|| "unknown CPU".into()),
        tch::get_num_threads()
    )
}
