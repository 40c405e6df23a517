//! The dispatcher's configuration: flags, environment variables
//! (`SETLIST_*`) or a YAML file, in that order of precedence (see
//! `setlist_service::config`).

use anyhow::Result;
use clap::Parser;
use serde::{Deserialize, Serialize};
use setlist_core::telemetry::LogFormat;
use setlist_service::config::{self as settings, ConfigError, out_of_range, required};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug, Default, Serialize)]
#[command(
    name = "setlist-dispatcher",
    version,
    about = "Setlist's recommendation API"
)]
pub struct Args {
    /// YAML file with any of the settings below (snake_case keys); flags and
    /// environment variables win over it.
    #[arg(long, env = "SETLIST_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Slice directory (the dispatcher reads its manifest and catalogue only).
    #[arg(long, env = "SETLIST_SLICES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    slices: Option<PathBuf>,
    /// Refuse slices of any other model version.
    #[arg(long, env = "SETLIST_MODEL_VERSION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<String>,
    #[arg(long, env = "SETLIST_KAFKA")]
    #[serde(skip_serializing_if = "Option::is_none")]
    kafka: Option<String>,
    /// A librdkafka setting over Setlist's low-latency defaults, KEY=VALUE (repeatable).
    #[arg(long = "kafka-set", env = "SETLIST_KAFKA_SET", value_delimiter = ';')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kafka_set: Vec<String>,
    #[arg(long, env = "SETLIST_NAMESPACE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[arg(long, env = "SETLIST_CLUSTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
    #[arg(long, env = "SETLIST_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// This replica's partition of the results topic (one per dispatcher replica).
    #[arg(long, env = "SETLIST_REPLY_PARTITION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_partition: Option<u32>,
    /// Deadline of a request that names none.
    #[arg(long, env = "SETLIST_DEFAULT_DEADLINE_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    default_deadline_ms: Option<u64>,
    /// Deadline of an asynchronous job that names none.
    #[arg(long, env = "SETLIST_JOB_DEADLINE_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    job_deadline_ms: Option<u64>,
    /// Share of the deadline after which an unanswered request is published once more.
    #[arg(long, env = "SETLIST_RETRY_AFTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<f64>,
    /// Most requests in one stage-0 frame.
    #[arg(long, env = "SETLIST_MAX_BATCH_ROWS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_batch_rows: Option<usize>,
    /// Longest a request waits for others to share its frame (0: never waits).
    #[arg(long, env = "SETLIST_MAX_WAIT_US")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_wait_us: Option<u64>,
    #[arg(long, env = "SETLIST_CACHE_ENTRIES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_entries: Option<usize>,
    #[arg(long, env = "SETLIST_CACHE_TTL_SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_ttl_seconds: Option<u64>,
    /// Pipeline failures in a row that open the circuit breaker.
    #[arg(long, env = "SETLIST_BREAKER_FAILURES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    breaker_failures: Option<u32>,
    /// How long an open breaker answers from the fallback before probing.
    #[arg(long, env = "SETLIST_BREAKER_COOLDOWN_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    breaker_cooldown_ms: Option<u64>,
    #[arg(long, env = "SETLIST_MAX_MESSAGE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_message_bytes: Option<usize>,
    #[arg(long, env = "SETLIST_LOG_FORMAT", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
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

impl Default for Config {
    fn default() -> Self {
        Config {
            slices: PathBuf::new(),
            model_version: None,
            kafka: String::new(),
            kafka_set: Vec::new(),
            namespace: "default".into(),
            cluster: "setlist".into(),
            listen: "0.0.0.0:8080".parse().expect("a valid address"),
            reply_partition: 0,
            default_deadline_ms: 1_000,
            job_deadline_ms: 10_000,
            retry_after: 0.5,
            max_batch_rows: 64,
            max_wait_us: 500,
            cache_entries: 10_000,
            cache_ttl_seconds: 300,
            breaker_failures: 5,
            breaker_cooldown_ms: 2_000,
            max_message_bytes: 1_000_000,
            log_format: LogFormat::default(),
        }
    }
}

impl Config {
    pub fn load() -> Result<Config> {
        Self::from_args(Args::parse())
    }

    pub fn from_args(args: Args) -> Result<Config> {
        let config: Config = settings::load(&args, args.config.as_deref())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.slices.as_os_str().is_empty() {
            return Err(required("slices"));
        }
        if self.kafka.is_empty() {
            return Err(required("kafka"));
        }
        let limits = crate::api::Limits::default();
        for (field, value) in [
            ("default_deadline_ms", self.default_deadline_ms),
            ("job_deadline_ms", self.job_deadline_ms),
        ] {
            if !(limits.min_deadline_ms..=limits.max_deadline_ms).contains(&value) {
                return Err(out_of_range(
                    field,
                    value,
                    &format!(
                        "between {} and {}",
                        limits.min_deadline_ms, limits.max_deadline_ms
                    ),
                ));
            }
        }
        if !(self.retry_after > 0.0 && self.retry_after < 1.0) {
            return Err(out_of_range(
                "retry_after",
                self.retry_after,
                "between 0 and 1 (a share of the deadline)",
            ));
        }
        if !(1..=4096).contains(&self.max_batch_rows) {
            return Err(out_of_range(
                "max_batch_rows",
                self.max_batch_rows,
                "between 1 and 4096",
            ));
        }
        if self.max_wait_us > 100_000 {
            return Err(out_of_range(
                "max_wait_us",
                self.max_wait_us,
                "at most 100000",
            ));
        }
        if self.cache_entries > 10_000_000 {
            return Err(out_of_range(
                "cache_entries",
                self.cache_entries,
                "at most 10000000",
            ));
        }
        if !(64 * 1024..=16 * 1024 * 1024).contains(&self.max_message_bytes) {
            return Err(out_of_range(
                "max_message_bytes",
                self.max_message_bytes,
                "between 65536 and 16777216",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str]) -> Result<Config> {
        let mut argv = vec!["setlist-dispatcher"];
        argv.extend_from_slice(flags);
        Config::from_args(Args::try_parse_from(argv)?)
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dispatcher.yaml");
        std::fs::write(
            &file,
            "slices: /s\nkafka: k:9092\nreply_partition: 3\nkafka_set: [linger.ms=1]\n",
        )
        .unwrap();
        let config = parse(&[
            &format!("--config={}", file.display()),
            "--reply-partition=1",
        ])
        .unwrap();
        assert_eq!(config.reply_partition, 1);
        assert_eq!(config.kafka_set, ["linger.ms=1"]);
        assert_eq!(config.default_deadline_ms, 1_000);
    }

    #[test]
    fn errors_name_the_setting() {
        let err = parse(&["--kafka=k"]).unwrap_err().to_string();
        assert!(err.contains("\"slices\": it is required"), "{err}");
        let err = parse(&["--slices=/s", "--kafka=k", "--retry-after=2"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "setting \"retry_after\": it is 2; it must be between 0 and 1 (a share of the deadline)"
        );
    }
}
