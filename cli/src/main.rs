//! `setlist`: the one command for ML engineers and for running the whole
//! system on one machine.

mod bench;
mod bench_load;
mod bench_pipeline;
mod bench_recovery;
mod broker;
mod data;
mod progress;
mod recommend;
mod slice;
mod train;
mod up;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "setlist",
    version,
    about = "Setlist: a partitioned next-song recommender"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system on this machine: embedded Kafka, compute nodes, dispatcher.
    Up(up::UpArgs),
    /// Import real playlist data or generate a synthetic data set.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Train the next-song model on a data set.
    Train(train::TrainArgs),
    /// Score the model and baselines on the model's held-out playlists.
    Evaluate(train::EvaluateArgs),
    /// Recommend songs for a file of JSONL queries (offline batch scoring).
    Recommend(recommend::RecommendArgs),
    /// Print how a model would be split into stages and output shards.
    Plan(slice::PlanArgs),
    /// Write one slice file per stage and output shard, and verify them.
    Slice(slice::SliceArgs),
    /// Measure latency, throughput and memory (see docs/benchmarks.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let bar = progress::Bar::new();
    match cli.command {
        Command::Up(args) => up::run(args, &bar),
        Command::Data(cmd) => data::run(cmd, &bar),
        Command::Train(args) => train::run_train(args, &bar),
        Command::Evaluate(args) => train::run_evaluate(args, &bar),
        Command::Recommend(args) => recommend::run(args),
        Command::Plan(args) => slice::run_plan(args),
        Command::Slice(args) => slice::run_slice(args),
        Command::Bench(cmd) => bench::run(cmd),
    }
}
