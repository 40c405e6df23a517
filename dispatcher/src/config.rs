//! The dispatcher's configuration: flags, environment variables
//! (`SETLIST_*`) or a YAML file, in that order of precedence.

use anyhow::{Context, Result};
use clap::Parser;
use serde::Deserialize;
use setlist_core::telemetry::LogFormat;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug, Default)]
#[command(
    name = "setlist-dispatcher",
    version,
    about = "Setlist's recommendation API"
)]
pub struct Args {
    /// YAML file with any of the settings below (snake_case keys); flags and
    /// environment variables win over it.
    #[arg(long, env = "SETLIST_CONFIG")]
    config: Option<PathBuf>,
    /// Slice directory (the dispatcher reads its manifest and catalogue only).
    #[arg(long, env = "SETLIST_SLICES")]
    slices: Option<PathBuf>,
    /// Refuse slices of any other model version.
    #[arg(long, env = "SETLIST_MODEL_VERSION")]
    model_version: Option<String>,
    #[arg(long, env = "SETLIST_KAFKA")]
    kafka: Option<String>,
    /// A librdkafka setting over Setlist's low-latency defaults, KEY=VALUE (repeatable).
    #[arg(long = "kafka-set", env = "SETLIST_KAFKA_SET", value_delimiter = ';')]
    kafka_set: Vec<String>,
    #[arg(long, env = "SETLIST_NAMESPACE")]
    namespace: Option<String>,
    #[arg(long, env = "SETLIST_CLUSTER")]
    cluster: Option<String>,
    #[arg(long, env = "SETLIST_LISTEN")]
    listen: Option<SocketAddr>,
    /// This replica's partition of the results topic (one per dispatcher replica).
    #[arg(long, env = "SETLIST_REPLY_PARTITION")]
    reply_partition: Option<u32>,
    /// Deadline of a request that names none.
    #[arg(long, env = "SETLIST_DEFAULT_DEADLINE_MS")]
    default_deadline_ms: Option<u64>,
    /// Deadline of an asynchronous job that names none.
    #[arg(long, env = "SETLIST_JOB_DEADLINE_MS")]
    job_deadline_ms: Option<u64>,
    /// Share of the deadline after which an unanswered request is published once more.
    #[arg(long, env = "SETLIST_RETRY_AFTER")]
    retry_after: Option<f64>,
    /// Most requests in one stage-0 frame.
    #[arg(long, env = "SETLIST_MAX_BATCH_ROWS")]
    max_batch_rows: Option<usize>,
    /// Longest a request waits for others to share its frame (0: never waits).
    #[arg(long, env = "SETLIST_MAX_WAIT_US")]
    max_wait_us: Option<u64>,
    #[arg(long, env = "SETLIST_CACHE_ENTRIES")]
    cache_entries: Option<usize>,
    #[arg(long, env = "SETLIST_CACHE_TTL_SECONDS")]
    cache_ttl_seconds: Option<u64>,
    /// Pipeline failures in a row that open the circuit breaker.
    #[arg(long, env = "SETLIST_BREAKER_FAILURES")]
    breaker_failures: Option<u32>,
    /// How long an open breaker answers from the fallback before probing.
    #[arg(long, env = "SETLIST_BREAKER_COOLDOWN_MS")]
    breaker_cooldown_ms: Option<u64>,
    #[arg(long, env = "SETLIST_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
    #[arg(long, env = "SETLIST_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    slices: Option<PathBuf>,
    model_version: Option<String>,
    kafka: Option<String>,
    #[serde(default)]
    kafka_set: Vec<String>,
    namespace: Option<String>,
    cluster: Option<String>,
    listen: Option<SocketAddr>,
    reply_partition: Option<u32>,
    default_deadline_ms: Option<u64>,
    job_deadline_ms: Option<u64>,
    retry_after: Option<f64>,
    max_batch_rows: Option<usize>,
    max_wait_us: Option<u64>,
    cache_entries: Option<usize>,
    cache_ttl_seconds: Option<u64>,
    breaker_failures: Option<u32>,
    breaker_cooldown_ms: Option<u64>,
    max_message_bytes: Option<usize>,
    log_format: Option<LogFormat>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub slices: PathBuf,
    pub model_version: Option<String>,
    pub kafka: String,
    pub kafka_set: Vec<String>,
    pub namespace: String,
    pub cluster: String,
    pub listen: SocketAddr,
    pub reply_partition: u32,
    pub default_deadline_ms: u64,
    pub job_deadline_ms: u64,
    pub retry_after: f64,
    pub max_batch_rows: usize,
    pub max_wait_us: u64,
    pub cache_entries: usize,
    pub cache_ttl_seconds: u64,
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
    pub max_message_bytes: usize,
    pub log_format: LogFormat,
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
        let config = Config {
            slices: args
                .slices
                .or(file.slices)
                .context("--slices (or SETLIST_SLICES) is required")?,
            model_version: args.model_version.or(file.model_version),
            kafka: args
                .kafka
                .or(file.kafka)
                .context("--kafka (or SETLIST_KAFKA) is required")?,
            kafka_set: if args.kafka_set.is_empty() {
                file.kafka_set
            } else {
                args.kafka_set
            },
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
                .unwrap_or_else(|| "0.0.0.0:8080".parse().expect("a valid address")),
            reply_partition: args.reply_partition.or(file.reply_partition).unwrap_or(0),
            default_deadline_ms: args
                .default_deadline_ms
                .or(file.default_deadline_ms)
                .unwrap_or(1_000),
            job_deadline_ms: args
                .job_deadline_ms
                .or(file.job_deadline_ms)
                .unwrap_or(10_000),
            retry_after: args.retry_after.or(file.retry_after).unwrap_or(0.5),
            max_batch_rows: args.max_batch_rows.or(file.max_batch_rows).unwrap_or(64),
            max_wait_us: args.max_wait_us.or(file.max_wait_us).unwrap_or(500),
            cache_entries: args.cache_entries.or(file.cache_entries).unwrap_or(10_000),
            cache_ttl_seconds: args
                .cache_ttl_seconds
                .or(file.cache_ttl_seconds)
                .unwrap_or(300),
            breaker_failures: args.breaker_failures.or(file.breaker_failures).unwrap_or(5),
            breaker_cooldown_ms: args
                .breaker_cooldown_ms
                .or(file.breaker_cooldown_ms)
                .unwrap_or(2_000),
            max_message_bytes: args
                .max_message_bytes
                .or(file.max_message_bytes)
                .unwrap_or(1_000_000),
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
        };
        let limits = crate::api::Limits::default();
        for (field, value) in [
            ("default_deadline_ms", config.default_deadline_ms),
            ("job_deadline_ms", config.job_deadline_ms),
        ] {
            anyhow::ensure!(
                (limits.min_deadline_ms..=limits.max_deadline_ms).contains(&value),
                "{field} is {value}; it must be between {} and {}",
                limits.min_deadline_ms,
                limits.max_deadline_ms
            );
        }
        anyhow::ensure!(
            config.retry_after > 0.0 && config.retry_after < 1.0,
            "retry_after is {}; it must be between 0 and 1 (a share of the deadline)",
            config.retry_after
        );
        anyhow::ensure!(
            (1..=4096).contains(&config.max_batch_rows),
            "max_batch_rows is {}; it must be between 1 and 4096",
            config.max_batch_rows
        );
        anyhow::ensure!(
            config.max_wait_us <= 100_000,
            "max_wait_us is {}; it must be at most 100000",
            config.max_wait_us
        );
        anyhow::ensure!(
            config.cache_entries <= 10_000_000,
            "cache_entries is {}; it must be at most 10000000",
            config.cache_entries
        );
        anyhow::ensure!(
            (64 * 1024..=16 * 1024 * 1024).contains(&config.max_message_bytes),
            "max_message_bytes is {}; it must be between 65536 and 16777216",
            config.max_message_bytes
        );
        Ok(config)
    }
}
