//! The node's configuration: flags, environment variables (`SETLIST_*`) or a
//! YAML file, in that order of precedence.

use anyhow::{Context, Result};
use clap::Parser;
use serde::Deserialize;
use setlist_core::slice::Part;
use setlist_core::telemetry::LogFormat;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "setlist-node",
    version,
    about = "One stage or output shard of a Setlist pipeline"
)]
pub struct Args {
    /// YAML file with any of the settings below (snake_case keys); flags and
    /// environment variables win over it.
    #[arg(long, env = "SETLIST_CONFIG")]
    config: Option<PathBuf>,
    /// Slice directory written by `setlist slice`.
    #[arg(long, env = "SETLIST_SLICES")]
    slices: Option<PathBuf>,
    /// The part this node runs: `stage-K` or `shard-S`.
    #[arg(long, env = "SETLIST_PART")]
    part: Option<String>,
    /// Refuse slices of any other model version (default: the slices' own).
    #[arg(long, env = "SETLIST_MODEL_VERSION")]
    model_version: Option<String>,
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT…].
    #[arg(long, env = "SETLIST_KAFKA")]
    kafka: Option<String>,
    /// A librdkafka setting over Setlist's low-latency defaults, KEY=VALUE (repeatable).
    #[arg(long = "kafka-set", env = "SETLIST_KAFKA_SET", value_delimiter = ';')]
    kafka_set: Vec<String>,
    #[arg(long, env = "SETLIST_NAMESPACE")]
    namespace: Option<String>,
    #[arg(long, env = "SETLIST_CLUSTER")]
    cluster: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "SETLIST_LISTEN")]
    listen: Option<SocketAddr>,
    /// Most requests run in one forward pass.
    #[arg(long, env = "SETLIST_MAX_BATCH_ROWS")]
    max_batch_rows: Option<usize>,
    /// Longest a request waits for others to share its batch.
    #[arg(long, env = "SETLIST_MAX_WAIT_MS")]
    max_wait_ms: Option<u64>,
    /// Largest Kafka message the node produces (frames are split to fit).
    #[arg(long, env = "SETLIST_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
    /// Send activations as f16: half the bytes, no longer bit-exact.
    #[arg(long, env = "SETLIST_HALF_PRECISION")]
    half_precision: bool,
    /// libtorch threads for the forward pass. One per node by default: a
    /// machine runs several nodes, and more threads than cores only spin.
    #[arg(long, env = "SETLIST_THREADS")]
    threads: Option<u32>,
    #[arg(long, env = "SETLIST_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

/// The settings a YAML file may hold; flags and environment override them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    slices: Option<PathBuf>,
    part: Option<String>,
    model_version: Option<String>,
    kafka: Option<String>,
    #[serde(default)]
    kafka_set: Vec<String>,
    namespace: Option<String>,
    cluster: Option<String>,
    listen: Option<SocketAddr>,
    max_batch_rows: Option<usize>,
    max_wait_ms: Option<u64>,
    max_message_bytes: Option<usize>,
    #[serde(default)]
    half_precision: bool,
    threads: Option<u32>,
    log_format: Option<LogFormat>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub slices: PathBuf,
    pub part: Part,
    pub model_version: Option<String>,
    pub kafka: String,
    pub kafka_set: Vec<String>,
    pub namespace: String,
    pub cluster: String,
    pub listen: SocketAddr,
    pub max_batch_rows: usize,
    pub max_wait_ms: u64,
    pub max_message_bytes: usize,
    pub half_precision: bool,
    pub threads: u32,
    pub log_format: LogFormat,
}

/// Limits that keep a typo from becoming an outage.
const MAX_BATCH_ROWS: usize = 4096;
const MAX_WAIT_MS: u64 = 1000;
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

pub fn parse_part(text: &str) -> Result<Part> {
    let (kind, index) = text
        .split_once('-')
        .with_context(|| format!("part \"{text}\" is not stage-K or shard-S"))?;
    let index: u32 = index
        .parse()
        .with_context(|| format!("part \"{text}\" is not stage-K or shard-S"))?;
    match kind {
        "stage" => Ok(Part::Stage(index)),
        "shard" => Ok(Part::OutputShard(index)),
        _ => anyhow::bail!("part \"{text}\" is not stage-K or shard-S"),
    }
}

impl Config {
    pub fn load() -> Result<Config> {
        Self::from_args(Args::parse())
    }

    pub fn from_args(args: Args) -> Result<Config> {
        let file: FileConfig = match &args.config {
            Some(path) => {
                setlist_core::telemetry::load_yaml(path, 64 * 1024).map_err(anyhow::Error::msg)?
            }
            None => FileConfig::default(),
        };
        let slices = args
            .slices
            .or(file.slices)
            .context("--slices (or SETLIST_SLICES) is required")?;
        let part = parse_part(
            &args
                .part
                .or(file.part)
                .context("--part (or SETLIST_PART) is required")?,
        )?;
        let kafka = args
            .kafka
            .or(file.kafka)
            .context("--kafka (or SETLIST_KAFKA) is required")?;
        let kafka_set = if args.kafka_set.is_empty() {
            file.kafka_set
        } else {
            args.kafka_set
        };
        let config = Config {
            slices,
            part,
            model_version: args.model_version.or(file.model_version),
            kafka,
            kafka_set,
            namespace: args
                .namespace
                .or(file.namespace)
                .unwrap_or_else(|| "default".into()),
            cluster: args
                .cluster
                .or(file.cluster)
                .unwrap_or_else(|| "setlist".into()),
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "0.0.0.0:9100".parse().expect("a valid address")),
            max_batch_rows: args.max_batch_rows.or(file.max_batch_rows).unwrap_or(64),
            max_wait_ms: args.max_wait_ms.or(file.max_wait_ms).unwrap_or(2),
            max_message_bytes: args
                .max_message_bytes
                .or(file.max_message_bytes)
                .unwrap_or(1_000_000),
            half_precision: args.half_precision || file.half_precision,
            threads: args.threads.or(file.threads).unwrap_or(1),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
        };
        anyhow::ensure!(
            (1..=MAX_BATCH_ROWS).contains(&config.max_batch_rows),
            "max_batch_rows is {}; it must be between 1 and {MAX_BATCH_ROWS}",
            config.max_batch_rows
        );
        anyhow::ensure!(
            (1..=256).contains(&config.threads),
            "threads is {}; it must be between 1 and 256",
            config.threads
        );
        anyhow::ensure!(
            config.max_wait_ms <= MAX_WAIT_MS,
            "max_wait_ms is {}; it must be at most {MAX_WAIT_MS}",
            config.max_wait_ms
        );
        anyhow::ensure!(
            (64 * 1024..=MAX_MESSAGE_BYTES).contains(&config.max_message_bytes),
            "max_message_bytes is {}; it must be between 65536 and {MAX_MESSAGE_BYTES}",
            config.max_message_bytes
        );
        Ok(config)
    }
}
