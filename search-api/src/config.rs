//! The search API's settings: flags, environment variables (`SETLIST_*`)
//! or a YAML file, in that order of precedence (see
//! `setlist_service::config`).

use anyhow::Result;
use clap::Parser;
use serde::{Deserialize, Serialize};
use setlist_core::telemetry::LogFormat;
use setlist_service::config::{self as settings, ConfigError, out_of_range, required};
use setlist_service::slices::SliceSource;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug, Default, Serialize)]
// A flag given twice takes its last value, so `setlist up --search-arg`
// overrides what `up` itself sets.
#[command(
    name = "setlist-search",
    version,
    args_override_self = true,
    about = "Setlist's listener API and page: song search, playlist upload, recommendations"
)]
pub struct Args {
    /// YAML file with any of the settings below (snake_case keys); flags and
    /// environment variables win over it.
    #[arg(long, env = "SETLIST_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// The served model's slices (their manifest and catalogue are read): a
    /// directory written by `setlist slice`, or a URI where `setlist
    /// publish` put them (file:///abs/dir, http(s)://host/path,
    /// s3://bucket/prefix, gs://bucket/prefix, az://container/prefix), from
    /// which those two files are downloaded, checked against the manifest.
    #[arg(long, env = "SETLIST_SLICES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    slices: Option<String>,
    /// Where slices fetched from a URI are kept and reused.
    /// Default: ~/.cache/setlist/slice-cache.
    #[arg(long, env = "SETLIST_SLICE_CACHE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    slice_cache: Option<PathBuf>,
    /// Refuse slices of any other model version.
    #[arg(long, env = "SETLIST_MODEL_VERSION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<String>,
    /// Where song indexes are kept and reused, one folder per catalogue
    /// (default: built in memory at every start).
    #[arg(long, env = "SETLIST_INDEX_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    index_dir: Option<PathBuf>,
    /// Playlist data in a layout `setlist data import` reads (repeatable):
    /// catalogue songs with the same id take its album, where they have
    /// none (MPD's own album names, say, for a model trained without them).
    #[arg(
        long = "catalogue-file",
        env = "SETLIST_CATALOGUE_FILE",
        value_delimiter = ';'
    )]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    catalogue_file: Vec<PathBuf>,
    #[arg(long, env = "SETLIST_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// The dispatcher's base URL, e.g. http://setlist-dispatcher:8080.
    #[arg(long, env = "SETLIST_DISPATCHER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    dispatcher: Option<String>,
    /// The deadline each recommendation asks of the dispatcher.
    #[arg(long, env = "SETLIST_DEADLINE_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    deadline_ms: Option<u64>,
    /// How long a call to the dispatcher may take before it counts as
    /// failed (for the breaker) and the popularity fallback answers.
    #[arg(long, env = "SETLIST_DISPATCHER_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    dispatcher_timeout_ms: Option<u64>,
    /// Failed dispatcher calls in a row that open the circuit breaker.
    #[arg(long, env = "SETLIST_BREAKER_FAILURES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    breaker_failures: Option<u32>,
    /// How long an open breaker answers from the fallback before probing.
    #[arg(long, env = "SETLIST_BREAKER_COOLDOWN_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    breaker_cooldown_ms: Option<u64>,
    /// Kafka brokers for listener events (none: events are not published).
    #[arg(long, env = "SETLIST_KAFKA")]
    #[serde(skip_serializing_if = "Option::is_none")]
    kafka: Option<String>,
    /// A librdkafka setting over Setlist's defaults, KEY=VALUE (repeatable).
    #[arg(long = "kafka-set", env = "SETLIST_KAFKA_SET", value_delimiter = ';')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kafka_set: Vec<String>,
    #[arg(long, env = "SETLIST_NAMESPACE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[arg(long, env = "SETLIST_CLUSTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
    /// Listener events waiting for the broker, at most; past it they are
    /// dropped (and counted), never waited for.
    #[arg(long, env = "SETLIST_EVENT_QUEUE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    event_queue: Option<usize>,
    /// HTTP requests served at once; past it a request gets a 503 with Retry-After.
    #[arg(long, env = "SETLIST_MAX_CONCURRENT_REQUESTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_concurrent_requests: Option<usize>,
    /// The bound on a graceful shutdown; past it the process exits anyway.
    #[arg(long, env = "SETLIST_SHUTDOWN_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    shutdown_timeout_ms: Option<u64>,
    #[arg(long, env = "SETLIST_LOG_FORMAT", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub slices: Option<SliceSource>,
    pub slice_cache: PathBuf,
    pub model_version: Option<String>,
    pub index_dir: Option<PathBuf>,
    pub catalogue_file: Vec<PathBuf>,
    pub listen: SocketAddr,
    pub dispatcher: String,
    pub deadline_ms: u64,
    pub dispatcher_timeout_ms: u64,
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
    pub kafka: Option<String>,
    pub kafka_set: Vec<String>,
    pub namespace: String,
    pub cluster: String,
    pub event_queue: usize,
    pub max_concurrent_requests: usize,
    pub shutdown_timeout_ms: u64,
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            slices: None,
            slice_cache: setlist_service::slices::default_cache_dir(),
            model_version: None,
            index_dir: None,
            catalogue_file: Vec::new(),
            listen: "0.0.0.0:8081".parse().expect("a valid address"),
            dispatcher: "http://127.0.0.1:8080".into(),
            deadline_ms: 1_000,
            dispatcher_timeout_ms: 1_500,
            breaker_failures: 3,
            breaker_cooldown_ms: 2_000,
            kafka: None,
            kafka_set: Vec::new(),
            namespace: "default".into(),
            cluster: "setlist".into(),
            event_queue: 4_096,
            max_concurrent_requests: 1_024,
            shutdown_timeout_ms: 10_000,
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

    /// Where the slices are (required, so always there once loaded).
    pub fn slices(&self) -> &SliceSource {
        self.slices.as_ref().expect("validate() requires slices")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.slices.is_none() {
            return Err(required("slices"));
        }
        if !(self.dispatcher.starts_with("http://") || self.dispatcher.starts_with("https://")) {
            return Err(ConfigError::Field {
                field: "dispatcher".into(),
                reason: format!(
                    "\"{}\" is not an http:// or https:// URL, e.g. http://setlist-dispatcher:8080",
                    self.dispatcher
                ),
            });
        }
        let limits = setlist_core::query::Limits::default();
        if limits.check_deadline_ms(self.deadline_ms).is_err() {
            return Err(out_of_range(
                "deadline_ms",
                self.deadline_ms,
                &format!(
                    "between {} and {}",
                    limits.min_deadline_ms, limits.max_deadline_ms
                ),
            ));
        }
        // The dispatcher answers within the deadline; the timeout only has
        // to cover the trip there and back on top.
        if !(self.deadline_ms..=self.deadline_ms + 60_000).contains(&self.dispatcher_timeout_ms) {
            return Err(out_of_range(
                "dispatcher_timeout_ms",
                self.dispatcher_timeout_ms,
                &format!(
                    "at least deadline_ms ({}) and at most a minute more",
                    self.deadline_ms
                ),
            ));
        }
        settings::within(
            "breaker_failures",
            u64::from(self.breaker_failures),
            &(1..=1000),
        )?;
        settings::within(
            "breaker_cooldown_ms",
            self.breaker_cooldown_ms,
            &(1..=600_000),
        )?;
        settings::within("event_queue", self.event_queue as u64, &(1..=1_000_000))?;
        settings::within(
            "max_concurrent_requests",
            self.max_concurrent_requests as u64,
            &(1..=100_000),
        )?;
        settings::within(
            "shutdown_timeout_ms",
            self.shutdown_timeout_ms,
            &setlist_service::shutdown::TIMEOUT_MS,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str]) -> Result<Config> {
        let mut argv = vec!["setlist-search"];
        argv.extend_from_slice(flags);
        Config::from_args(Args::try_parse_from(argv)?)
    }

    #[test]
    fn defaults_fill_what_the_flags_leave() {
        let config = parse(&["--slices", "s", "--dispatcher", "http://d:8080"]).unwrap();
        assert_eq!(config.dispatcher, "http://d:8080");
        assert_eq!(config.deadline_ms, 1_000);
        assert_eq!(config.kafka, None);
        let config =
            parse(&["--slices", "s", "--kafka", "k:9092", "--deadline-ms", "500"]).unwrap();
        assert_eq!(config.kafka.as_deref(), Some("k:9092"));
        assert_eq!(config.deadline_ms, 500);
    }

    #[test]
    fn bad_settings_are_named() {
        let error = |flags: &[&str]| parse(flags).unwrap_err().to_string();
        assert!(error(&[]).contains("\"slices\""));
        assert!(error(&["--slices", "s", "--dispatcher", "d:8080"]).contains("http://"));
        assert!(error(&["--slices", "s", "--deadline-ms", "5"]).contains("\"deadline_ms\""));
        assert!(
            error(&["--slices", "s", "--dispatcher-timeout-ms", "10"])
                .contains("\"dispatcher_timeout_ms\"")
        );
        assert!(error(&["--slices", "s", "--breaker-failures", "0"]).contains("breaker_failures"));
    }
}
