//! The dispatcher's configuration: flags, environment variables
//! (`SETLIST_*`) or a YAML file, in that order of precedence (see
//! `setlist_service::config`).

use anyhow::Result;
use clap::Parser;
use serde::{Deserialize, Serialize};
use setlist_core::query::Limits;
use setlist_core::telemetry::LogFormat;
use setlist_service::config::{self as settings, ConfigError, out_of_range, required};
use setlist_service::slices::SliceSource;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug, Default, Serialize)]
// A flag given twice takes its last value: `setlist up --node-arg` and
// `--dispatcher-arg` override what `up` itself sets.
#[command(
    name = "setlist-dispatcher",
    version,
    args_override_self = true,
    about = "Setlist's recommendation API"
)]
pub struct Args {
    /// YAML file with any of the settings below (snake_case keys); flags and
    /// environment variables win over it.
    #[arg(long, env = "SETLIST_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// The slices (the dispatcher reads their manifest and catalogue only):
    /// a directory written by `setlist slice`, or a URI where `setlist
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
    /// How long the pipeline may take to answer one attempt; past it the
    /// attempt counts as a pipeline failure (for the breaker) and may be retried.
    #[arg(long, env = "SETLIST_PIPELINE_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline_timeout_ms: Option<u64>,
    /// Retries allowed per first attempt (0.1: at most 10 % extra load).
    #[arg(long, env = "SETLIST_RETRY_BUDGET_RATIO")]
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_budget_ratio: Option<f64>,
    /// Retries allowed per second whatever the traffic.
    #[arg(long, env = "SETLIST_RETRY_BUDGET_MIN_PER_SECOND")]
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_budget_min_per_second: Option<f64>,
    /// Most requests in one stage-0 frame.
    #[arg(long, env = "SETLIST_MAX_BATCH_ROWS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_batch_rows: Option<usize>,
    /// Longest a request waits for others to share its frame. 0 (the
    /// default): a frame is whatever requests are already queued, so no
    /// request waits for company that is not coming.
    #[arg(long, env = "SETLIST_MAX_WAIT_US")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_wait_us: Option<u64>,
    /// Stage-0 frames handed to the broker and not yet acknowledged, at most.
    #[arg(long, env = "SETLIST_MAX_IN_FLIGHT_PUBLISHES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_in_flight_publishes: Option<usize>,
    /// Bytes of requests waiting to be published; past it a request gets
    /// the fallback (`overloaded`).
    #[arg(long, env = "SETLIST_SUBMISSION_QUEUE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    submission_queue_bytes: Option<usize>,
    /// HTTP requests served at once (each holds at most a 1 MiB body);
    /// past it a request gets a 503 with Retry-After.
    #[arg(long, env = "SETLIST_MAX_CONCURRENT_REQUESTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_concurrent_requests: Option<usize>,
    /// Bytes of recent answers kept (0: no cache).
    #[arg(long, env = "SETLIST_CACHE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_bytes: Option<u64>,
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
    /// How long a probe may hold the half-open breaker before the next
    /// request probes instead.
    #[arg(long, env = "SETLIST_BREAKER_PROBE_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    breaker_probe_timeout_ms: Option<u64>,
    /// How long a finished job is kept, from when it finished.
    #[arg(long, env = "SETLIST_JOB_TTL_SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    job_ttl_seconds: Option<u64>,
    /// Bytes of running jobs' requests; past it a new job gets a 503 with Retry-After.
    #[arg(long, env = "SETLIST_RUNNING_JOBS_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    running_jobs_bytes: Option<usize>,
    /// Bytes of finished jobs kept; past it the coldest are evicted.
    #[arg(long, env = "SETLIST_FINISHED_JOBS_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_jobs_bytes: Option<u64>,
    #[arg(long, env = "SETLIST_MAX_MESSAGE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_message_bytes: Option<usize>,
    /// The bound on a graceful shutdown (answering the requests in flight,
    /// stopping the Kafka clients); past it the process exits anyway.
    #[arg(long, env = "SETLIST_SHUTDOWN_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    shutdown_timeout_ms: Option<u64>,
    #[arg(long, env = "SETLIST_LOG_FORMAT", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormat>,
}

const MIB: usize = 1024 * 1024;
/// The most any one store may be given: a typo, not a machine.
const MAX_STORE_BYTES: u64 = 16 * 1024 * MIB as u64;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub slices: Option<SliceSource>,
    pub slice_cache: PathBuf,
    pub model_version: Option<String>,
    pub kafka: String,
    pub kafka_set: Vec<String>,
    pub namespace: String,
    pub cluster: String,
    pub listen: SocketAddr,
    pub reply_partition: u32,
    pub default_deadline_ms: u64,
    pub job_deadline_ms: u64,
    pub pipeline_timeout_ms: u64,
    pub retry_budget_ratio: f64,
    pub retry_budget_min_per_second: f64,
    pub max_batch_rows: usize,
    pub max_wait_us: u64,
    pub max_in_flight_publishes: usize,
    pub submission_queue_bytes: usize,
    pub max_concurrent_requests: usize,
    pub cache_bytes: u64,
    pub cache_ttl_seconds: u64,
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
    pub breaker_probe_timeout_ms: u64,
    pub job_ttl_seconds: u64,
    pub running_jobs_bytes: usize,
    pub finished_jobs_bytes: u64,
    pub max_message_bytes: usize,
    pub shutdown_timeout_ms: u64,
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            slices: None,
            slice_cache: setlist_service::slices::default_cache_dir(),
            model_version: None,
            kafka: String::new(),
            kafka_set: Vec::new(),
            namespace: "default".into(),
            cluster: "setlist".into(),
            listen: "0.0.0.0:8080".parse().expect("a valid address"),
            reply_partition: 0,
            default_deadline_ms: 1_000,
            job_deadline_ms: 10_000,
            pipeline_timeout_ms: 500,
            retry_budget_ratio: 0.1,
            retry_budget_min_per_second: 10.0,
            max_batch_rows: 64,
            max_wait_us: 0,
            max_in_flight_publishes: 64,
            submission_queue_bytes: 16 * MIB,
            max_concurrent_requests: 512,
            cache_bytes: 64 * MIB as u64,
            cache_ttl_seconds: 300,
            breaker_failures: 5,
            breaker_cooldown_ms: 500,
            breaker_probe_timeout_ms: 1_000,
            job_ttl_seconds: 600,
            running_jobs_bytes: 32 * MIB,
            finished_jobs_bytes: 64 * MIB as u64,
            max_message_bytes: setlist_core::plan::DEFAULT_MAX_MESSAGE_BYTES,
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
        if self.kafka.is_empty() {
            return Err(required("kafka"));
        }
        let limits = Limits::default();
        for (field, value) in [
            ("default_deadline_ms", self.default_deadline_ms),
            ("job_deadline_ms", self.job_deadline_ms),
        ] {
            if limits.check_deadline_ms(value).is_err() {
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
        if !(1..=limits.max_deadline_ms).contains(&self.pipeline_timeout_ms) {
            return Err(out_of_range(
                "pipeline_timeout_ms",
                self.pipeline_timeout_ms,
                &format!("between 1 and {}", limits.max_deadline_ms),
            ));
        }
        if !(self.pipeline_timeout_ms..=600_000).contains(&self.breaker_probe_timeout_ms) {
            return Err(out_of_range(
                "breaker_probe_timeout_ms",
                self.breaker_probe_timeout_ms,
                &format!(
                    "between pipeline_timeout_ms ({}) and 600000",
                    self.pipeline_timeout_ms
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.retry_budget_ratio) {
            return Err(out_of_range(
                "retry_budget_ratio",
                self.retry_budget_ratio,
                "between 0 and 1 (retries per first attempt)",
            ));
        }
        if !(0.0..=1000.0).contains(&self.retry_budget_min_per_second) {
            return Err(out_of_range(
                "retry_budget_min_per_second",
                self.retry_budget_min_per_second,
                "between 0 and 1000",
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
        if !(1..=4096).contains(&self.max_in_flight_publishes) {
            return Err(out_of_range(
                "max_in_flight_publishes",
                self.max_in_flight_publishes,
                "between 1 and 4096",
            ));
        }
        if self.reply_partition > 1_000_000 {
            return Err(out_of_range(
                "reply_partition",
                self.reply_partition,
                "at most 1000000",
            ));
        }
        if !(1..=100_000).contains(&self.max_concurrent_requests) {
            return Err(out_of_range(
                "max_concurrent_requests",
                self.max_concurrent_requests,
                "between 1 and 100000",
            ));
        }
        settings::within(
            "shutdown_timeout_ms",
            self.shutdown_timeout_ms,
            &setlist_service::shutdown::TIMEOUT_MS,
        )?;
        if !(1..=86_400).contains(&self.job_ttl_seconds) {
            return Err(out_of_range(
                "job_ttl_seconds",
                self.job_ttl_seconds,
                "between 1 and 86400",
            ));
        }
        // Each of these must hold at least the largest request it can be
        // given, or that request could never be served.
        let largest = limits.max_request_bytes as u64;
        for (field, value, least) in [
            ("cache_bytes", self.cache_bytes, 0),
            (
                "submission_queue_bytes",
                self.submission_queue_bytes as u64,
                largest,
            ),
            (
                "running_jobs_bytes",
                self.running_jobs_bytes as u64,
                largest,
            ),
            ("finished_jobs_bytes", self.finished_jobs_bytes, 0),
        ] {
            if !(least..=MAX_STORE_BYTES).contains(&value) {
                return Err(out_of_range(
                    field,
                    value,
                    &format!("between {least} and {MAX_STORE_BYTES} bytes"),
                ));
            }
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

    /// `setlist up --dispatcher-arg` comes after what `up` sets, and wins.
    #[test]
    fn a_flag_given_twice_takes_the_last_value_and_repeatable_ones_add_up() {
        let config = parse(&[
            "--slices=/s",
            "--kafka=k",
            "--max-batch-rows=16",
            "--kafka-set=linger.ms=1",
            "--max-batch-rows=1",
            "--kafka-set=acks=1",
        ])
        .unwrap();
        assert_eq!(config.max_batch_rows, 1);
        assert_eq!(config.kafka_set, ["linger.ms=1", "acks=1"]);
    }

    #[test]
    fn errors_name_the_setting() {
        let err = parse(&["--kafka=k"]).unwrap_err().to_string();
        assert!(err.contains("\"slices\": it is required"), "{err}");
        let err = |flags: &[&str]| {
            let mut all = vec!["--slices=/s", "--kafka=k"];
            all.extend_from_slice(flags);
            parse(&all).unwrap_err().to_string()
        };
        assert_eq!(
            err(&["--retry-budget-ratio=2"]),
            "setting \"retry_budget_ratio\": it is 2; it must be between 0 and 1 (retries per first attempt)"
        );
        assert_eq!(
            err(&[
                "--pipeline-timeout-ms=800",
                "--breaker-probe-timeout-ms=500"
            ]),
            "setting \"breaker_probe_timeout_ms\": it is 500; it must be between pipeline_timeout_ms (800) and 600000"
        );
        assert_eq!(
            err(&["--submission-queue-bytes=1000"]),
            format!(
                "setting \"submission_queue_bytes\": it is 1000; it must be between 1048576 and {MAX_STORE_BYTES} bytes"
            )
        );
        assert_eq!(
            err(&["--reply-partition=2000000"]),
            "setting \"reply_partition\": it is 2000000; it must be at most 1000000"
        );
        assert!(
            err(&["--max-concurrent-requests=0"])
                .starts_with("setting \"max_concurrent_requests\"")
        );
        assert!(err(&["--job-ttl-seconds=0"]).starts_with("setting \"job_ttl_seconds\""));
        assert!(err(&["--shutdown-timeout-ms=50"]).starts_with("setting \"shutdown_timeout_ms\""));
    }

    #[test]
    fn the_new_settings_come_from_the_file_too() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dispatcher.yaml");
        std::fs::write(
            &file,
            "slices: /s\nkafka: k:9092\ncache_bytes: 0\npipeline_timeout_ms: 250\nretry_budget_ratio: 0.05\n",
        )
        .unwrap();
        let config = parse(&[&format!("--config={}", file.display())]).unwrap();
        assert_eq!(config.cache_bytes, 0);
        assert_eq!(config.pipeline_timeout_ms, 250);
        assert_eq!(config.retry_budget_ratio, 0.05);
        assert_eq!(config.breaker_probe_timeout_ms, 1_000);
    }
}
