//! `setlist`: the one command for ML engineers and for running the whole
//! system on one machine.

mod bench;
mod bench_load;
mod bench_pipeline;
mod bench_recovery;
mod broker;
mod data;
mod progress;
mod publish;
mod recommend;
mod scrape;
mod search;
mod slice;
mod train;
mod up;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::os::unix::process::CommandExt;

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
    /// Run the whole system on this machine: embedded Kafka, compute nodes,
    /// dispatcher, and the listener's page and search API.
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
    /// Upload a slices directory (the manifest last) to object storage, an
    /// HTTP server or a mounted volume, where processes given
    /// `--slices URI` fetch it.
    Publish(publish::PublishArgs),
    /// Build the song index of a slices directory once, for `setlist-search`
    /// and `setlist up` to reuse.
    Index(search::IndexArgs),
    /// Measure latency, throughput and memory (see docs/benchmarks.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

impl Command {
    /// Whether the command keeps libtorch's OpenMP threads busy for long, on
    /// a machine that may be busy with other work.
    fn computes_for_long(&self) -> bool {
        matches!(self, Command::Train(_) | Command::Evaluate(_))
    }
}

/// The wait policy of libtorch's OpenMP threads for the commands that train
/// and evaluate: PASSIVE, a waiting thread sleeps. The default spins, which
/// is about a quarter faster on an idle machine and half again slower on a
/// busy one, where a spinning thread takes the core that the thread it waits
/// for needs; a short spin keeps neither advantage (measured in
/// docs/benchmarks.md).
/// Training runs for minutes to hours, on machines that rarely stay idle that
/// long; OMP_WAIT_POLICY=ACTIVE gets the spinning back where they do.
const OPENMP_WAIT_POLICY: &str = "PASSIVE";

/// Starts this executable again, same pid and arguments, with
/// [`OPENMP_WAIT_POLICY`] set: libgomp reads OMP_WAIT_POLICY once, when it is
/// loaded before `main`, so setting it from in here would come too late.
/// Returns at once where OMP_WAIT_POLICY is set already: by the user, or by
/// this restart.
fn wait_passively_in_openmp() -> Result<()> {
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return Ok(());
    }
    let error = std::process::Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env("OMP_WAIT_POLICY", OPENMP_WAIT_POLICY)
        .exec();
    Err(error).context("cannot start setlist again with OMP_WAIT_POLICY set")
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.command.computes_for_long() {
        wait_passively_in_openmp()?;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let bar = progress::Bar::new();
    match cli.command {
        Command::Up(args) => up::run(args, &bar),
        Command::Data(cmd) => data::run(cmd, &bar),
        Command::Train(args) => train::run_train(args, &bar),
        Command::Evaluate(args) => train::run_evaluate(args, &bar),
        Command::Recommend(args) => recommend::run(args),
        Command::Plan(args) => slice::run_plan(args),
        Command::Slice(args) => slice::run_slice(args),
        Command::Publish(args) => publish::run(args),
        Command::Index(args) => search::run_index(args),
        Command::Bench(cmd) => bench::run(cmd),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// How many times libgomp's waiting threads spin before they sleep,
    /// as in effect when `setlist ARGS` ran: it prints its settings when it
    /// loads (OMP_DISPLAY_ENV), so after a restart the last ones printed are
    /// those in effect. (Its OMP_WAIT_POLICY line cannot tell: it reads
    /// PASSIVE for the default too, which spins 300,000 times first.)
    fn spin_count_in_effect(args: &[&str], policy: Option<&str>) -> u64 {
        // Unit tests run from target/<profile>/deps/; `setlist` is one up.
        let exe = std::env::current_exe().unwrap();
        let setlist = exe.parent().and_then(Path::parent).unwrap().join("setlist");
        let mut command = std::process::Command::new(&setlist);
        command.args(args).env("OMP_DISPLAY_ENV", "VERBOSE");
        match policy {
            Some(p) => command.env("OMP_WAIT_POLICY", p),
            None => command.env_remove("OMP_WAIT_POLICY"),
        };
        let out = command
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} ({e}); build it first", setlist.display()));
        let text = String::from_utf8_lossy(&out.stderr);
        text.lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("GOMP_SPINCOUNT = "))
            .unwrap_or_else(|| panic!("libgomp printed no settings:\n{text}"))
            .trim_matches('\'')
            .parse()
            .expect("a spin count is a number")
    }

    #[test]
    fn training_and_evaluating_wait_passively_in_openmp() {
        // Both fail at once on the missing data set, after the restart.
        let train = [
            "train",
            "--data",
            "/nonexistent",
            "--out",
            "/nonexistent/model",
        ];
        assert_eq!(spin_count_in_effect(&train, None), 0);
        let evaluate = [
            "evaluate",
            "--model",
            "/nonexistent",
            "--data",
            "/nonexistent",
        ];
        assert_eq!(spin_count_in_effect(&evaluate, None), 0);
        // The user's own choice stands.
        assert!(spin_count_in_effect(&train, Some("ACTIVE")) > 300_000);
    }

    #[test]
    fn other_commands_keep_the_default_wait_policy() {
        let plan = ["plan", "--model", "/nonexistent", "--stages", "1"];
        assert_eq!(
            spin_count_in_effect(&plan, None),
            300_000,
            "libgomp's default"
        );
    }
}
