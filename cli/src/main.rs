//! `setlist`: the one command for ML engineers and for running the whole
//! system on one machine.

mod data;
mod progress;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "setlist", version, about = "Setlist: a partitioned next-song recommender")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import real playlist data or generate a synthetic data set.
    #[command(subcommand)]
    Data(data::DataCommand),
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
        Command::Data(cmd) => data::run(cmd, &bar),
    }
}
