//! `setlist-operator`: `crd` prints the CustomResourceDefinition.

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "setlist-operator",
    version,
    about = "Reconciles RecommenderCluster resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the RecommenderCluster CustomResourceDefinition (YAML).
    Crd,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", setlist_operator::crd_yaml()),
    }
    Ok(())
}
