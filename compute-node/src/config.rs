//! The node's configuration: flags, environment variables (`SETLIST_*`) or a
//! YAML file, in that order of precedence (see `setlist_service::config`).

use anyhow::Result;
use clap::Parser;
use serde::{Deserialize, Serialize};
use setlist_core::plan::{DEFAULT_MAX_BATCH_ROWS, DEFAULT_MAX_MESSAGE_BYTES};
use setlist_core::slice::Part;
use setlist_core::telemetry::LogFormat;
use setlist_service::config::{self as settings, out_of_range, required};
use setlist_service::slices::SliceSource;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug, Default, Serialize)]
// A flag given twice takes its last value: `setlist up --node-arg` and
// `--dispatcher-arg` override what `up` itself sets.
#[command(
    name = "setlist-node",
    version,
    args_override_self = true,
    about = "One stage or output shard of a Setlist pipeline"
)]
pub struct Args {
    /// YAML file with any of the settings below (snake_case keys); flags and
    /// environment variables win over it.
    #[arg(long, env = "SETLIST_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// The slices: a directory written by `setlist slice` (read in place),
    /// or a URI where `setlist publish` put them (file:///abs/dir,
    /// http(s)://host/path, s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix), from which the node downloads the manifest
    /// and its own part only, checked against the manifest's sha256.
    #[arg(long, env = "SETLIST_SLICES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    slices: Option<String>,
    /// Where slices fetched from a URI are kept, one folder per model
    /// version, and reused when their sha256 still matches (on Kubernetes,
    /// an emptyDir). Default: ~/.cache/setlist/slice-cache.
    #[arg(long, env = "SETLIST_SLICE_CACHE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    slice_cache: Option<PathBuf>,
    /// The part this node runs: `stage-K` or `shard-S`.
    #[arg(long, env = "SETLIST_PART")]
    #[serde(skip_serializing_if = "Option::is_none")]
    part: Option<String>,
    /// Refuse slices of any other model version (default: the slices' own).
    #[arg(long, env = "SETLIST_MODEL_VERSION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<String>,
    /// This node's stable identity in its consumer group (Kafka's
    /// `group.instance.id`, e.g. the pod name): restarted under the same
    /// one, it takes its partitions back without waiting for a rebalance.
    #[arg(long, env = "SETLIST_INSTANCE_ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_id: Option<String>,
    /// How long the broker waits for a silent node before its partitions
    /// move to another (Kafka's `session.timeout.ms`; a Kafka broker refuses
    /// less than its `group.min.session.timeout.ms`, 6 s by default).
    #[arg(long, env = "SETLIST_SESSION_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    session_timeout_ms: Option<u32>,
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT…].
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
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "SETLIST_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    /// Most requests run in one forward pass.
    #[arg(long, env = "SETLIST_MAX_BATCH_ROWS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_batch_rows: Option<usize>,
    /// Longest a request waits for others to share its batch. 0 (the
    /// default): a batch is whatever frames have already arrived, which
    /// under load is many (they queue while the node computes) and when idle
    /// is one, so no request waits for company that is not coming.
    #[arg(long, env = "SETLIST_MAX_WAIT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_wait_ms: Option<u64>,
    /// Largest Kafka message the node produces (frames are split to fit).
    #[arg(long, env = "SETLIST_MAX_MESSAGE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_message_bytes: Option<usize>,
    /// Send activations as f16: half the bytes, no longer bit-exact.
    #[arg(long, env = "SETLIST_HALF_PRECISION", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    half_precision: Option<bool>,
    /// The furthest ahead of this node's clock a request's deadline may be;
    /// frames claiming more are dead-lettered (deadline_too_far).
    #[arg(long, env = "SETLIST_MAX_DEADLINE_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_deadline_ms: Option<u64>,
    /// Longest a graceful shutdown may take before the node exits anyway;
    /// delivering, committing and leaving the group get a quarter each.
    #[arg(long, env = "SETLIST_SHUTDOWN_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    shutdown_timeout_ms: Option<u64>,
    /// libtorch threads for the forward pass. One per node by default: a
    /// machine runs several nodes, and more threads than cores only spin.
    #[arg(long, env = "SETLIST_THREADS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    threads: Option<u32>,
    #[arg(long, env = "SETLIST_LOG_FORMAT", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub slices: Option<SliceSource>,
    pub slice_cache: PathBuf,
    #[serde(deserialize_with = "deserialize_part")]
    pub part: Option<Part>,
    pub model_version: Option<String>,
    pub instance_id: Option<String>,
    pub session_timeout_ms: u32,
    pub kafka: String,
    pub kafka_set: Vec<String>,
    pub namespace: String,
    pub cluster: String,
    pub listen: SocketAddr,
    pub max_batch_rows: usize,
    pub max_wait_ms: u64,
    pub max_message_bytes: usize,
    pub half_precision: bool,
    pub max_deadline_ms: u64,
    pub shutdown_timeout_ms: u64,
    pub threads: u32,
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            slices: None,
            slice_cache: setlist_service::slices::default_cache_dir(),
            part: None,
            model_version: None,
            instance_id: None,
            session_timeout_ms: setlist_core::kafka::DEFAULT_SESSION_TIMEOUT_MS,
            kafka: String::new(),
            kafka_set: Vec::new(),
            namespace: "default".into(),
            cluster: "setlist".into(),
            listen: "0.0.0.0:9100".parse().expect("a valid address"),
            max_batch_rows: DEFAULT_MAX_BATCH_ROWS,
            max_wait_ms: 0,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            half_precision: false,
            // 60 s is the longest deadline any Setlist service allows; the
            // rest is for clocks that differ between machines.
            max_deadline_ms: 65_000,
            shutdown_timeout_ms: 10_000,
            threads: 1,
            log_format: LogFormat::default(),
        }
    }
}

/// Limits that keep a typo from becoming an outage.
const MAX_BATCH_ROWS: usize = 4096;
const MAX_WAIT_MS: u64 = 1000;
/// Kafka's limit on a group member's identity, as on topic names.
const MAX_INSTANCE_ID_BYTES: usize = 249;
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
const DEADLINE_MS: std::ops::RangeInclusive<u64> = 1_000..=3_600_000;

pub fn parse_part(text: &str) -> Result<Part, String> {
    let bad = || format!("part \"{text}\" is not stage-K or shard-S");
    let (kind, index) = text.split_once('-').ok_or_else(bad)?;
    let index: u32 = index.parse().map_err(|_| bad())?;
    match kind {
        "stage" => Ok(Part::Stage(index)),
        "shard" => Ok(Part::OutputShard(index)),
        _ => Err(bad()),
    }
}

fn deserialize_part<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Part>, D::Error> {
    let text = String::deserialize(d)?;
    parse_part(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
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

    /// The bound on a whole graceful shutdown.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// The bound on each step of a graceful shutdown (delivering the frames
    /// in flight, committing, leaving the group): three of them fit the
    /// whole bound with room to spare.
    pub fn shutdown_step(&self) -> Duration {
        self.shutdown_timeout() / 4
    }

    /// The part this node runs (required, so always there once loaded).
    pub fn part(&self) -> Part {
        self.part.expect("validate() requires a part")
    }

    /// Where the slices are (required, so always there once loaded).
    pub fn slices(&self) -> &SliceSource {
        self.slices.as_ref().expect("validate() requires slices")
    }

    fn validate(&self) -> Result<(), settings::ConfigError> {
        if self.slices.is_none() {
            return Err(required("slices"));
        }
        if self.part.is_none() {
            return Err(required("part"));
        }
        if self.kafka.is_empty() {
            return Err(required("kafka"));
        }
        if let Some(id) = &self.instance_id
            && (id.is_empty()
                || id.len() > MAX_INSTANCE_ID_BYTES
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
        {
            return Err(out_of_range(
                "instance_id",
                format!("\"{id}\""),
                &format!(
                    "1 to {MAX_INSTANCE_ID_BYTES} letters, digits, '.', '_' or '-' (a pod name is)"
                ),
            ));
        }
        if !(1_000..=300_000).contains(&self.session_timeout_ms) {
            return Err(out_of_range(
                "session_timeout_ms",
                self.session_timeout_ms,
                "between 1000 and 300000",
            ));
        }
        if !(1..=MAX_BATCH_ROWS).contains(&self.max_batch_rows) {
            return Err(out_of_range(
                "max_batch_rows",
                self.max_batch_rows,
                &format!("between 1 and {MAX_BATCH_ROWS}"),
            ));
        }
        if !(1..=256).contains(&self.threads) {
            return Err(out_of_range("threads", self.threads, "between 1 and 256"));
        }
        if self.max_wait_ms > MAX_WAIT_MS {
            return Err(out_of_range(
                "max_wait_ms",
                self.max_wait_ms,
                &format!("at most {MAX_WAIT_MS}"),
            ));
        }
        settings::within("max_deadline_ms", self.max_deadline_ms, &DEADLINE_MS)?;
        settings::within(
            "shutdown_timeout_ms",
            self.shutdown_timeout_ms,
            &setlist_service::shutdown::TIMEOUT_MS,
        )?;
        if !(64 * 1024..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            return Err(out_of_range(
                "max_message_bytes",
                self.max_message_bytes,
                &format!("between 65536 and {MAX_MESSAGE_BYTES}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str]) -> Result<Config> {
        let mut argv = vec!["setlist-node"];
        argv.extend_from_slice(flags);
        Config::from_args(Args::try_parse_from(argv)?)
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.yaml");
        std::fs::write(
            &file,
            "slices: /s\npart: shard-1\nkafka: k:9092\nthreads: 3\nhalf_precision: true\n",
        )
        .unwrap();
        let config = parse(&[&format!("--config={}", file.display()), "--threads=2"]).unwrap();
        assert_eq!(config.part(), Part::OutputShard(1));
        assert_eq!((config.threads, config.half_precision), (2, true));
        assert_eq!(
            (config.max_batch_rows, config.namespace.as_str()),
            (64, "default")
        );
        assert_eq!(config.max_deadline_ms, 65_000);
        assert_eq!(config.shutdown_step(), Duration::from_millis(2_500));
    }

    #[test]
    fn slices_are_a_directory_or_a_uri_and_an_unknown_scheme_is_named() {
        let local = parse(&["--slices=/s", "--kafka=k", "--part=stage-0"]).unwrap();
        assert_eq!(local.slices(), &SliceSource::Local(PathBuf::from("/s")));
        let remote = parse(&[
            "--slices=https://models.example.com/m1",
            "--slice-cache=/cache",
            "--kafka=k",
            "--part=stage-0",
        ])
        .unwrap();
        assert!(matches!(remote.slices(), SliceSource::Remote(_)));
        assert_eq!(remote.slice_cache, PathBuf::from("/cache"));
        let err = parse(&["--slices=ftp://h/m1", "--kafka=k", "--part=stage-0"])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "setting \"slices\": \"ftp://h/m1\": Setlist cannot read slices from \"ftp://\""
            ),
            "{err}"
        );
    }

    /// `setlist up --node-arg` comes after what `up` sets, and wins.
    #[test]
    fn a_flag_given_twice_takes_the_last_value_and_repeatable_ones_add_up() {
        let config = parse(&[
            "--slices=/s",
            "--kafka=k",
            "--part=stage-0",
            "--session-timeout-ms=3000",
            "--kafka-set=linger.ms=1",
            "--session-timeout-ms=9000",
            "--kafka-set=acks=1",
        ])
        .unwrap();
        assert_eq!(config.session_timeout_ms, 9000);
        assert_eq!(config.kafka_set, ["linger.ms=1", "acks=1"]);
    }

    #[test]
    fn errors_name_the_setting() {
        let err = parse(&["--slices=/s", "--kafka=k"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"part\": it is required: pass --part"),
            "{err}"
        );
        let err = parse(&["--slices=/s", "--kafka=k", "--part=layer-1"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("part \"layer-1\" is not stage-K or shard-S"),
            "{err}"
        );
        let err = parse(&[
            "--slices=/s",
            "--kafka=k",
            "--part=stage-0",
            "--max-wait-ms=5000",
        ])
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "setting \"max_wait_ms\": it is 5000; it must be at most 1000"
        );
        let err = parse(&[
            "--slices=/s",
            "--kafka=k",
            "--part=stage-0",
            "--shutdown-timeout-ms=0",
        ])
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "setting \"shutdown_timeout_ms\": it is 0; it must be between 100 and 300000"
        );
        let err = parse(&[
            "--slices=/s",
            "--kafka=k",
            "--part=stage-0",
            "--instance-id=stage 1",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("setting \"instance_id\": it is \"stage 1\""),
            "{err}"
        );
        let ok = parse(&[
            "--slices=/s",
            "--kafka=k",
            "--part=stage-0",
            "--instance-id=setlist-demo-stage-1-0",
        ])
        .unwrap();
        assert_eq!(ok.instance_id.as_deref(), Some("setlist-demo-stage-1-0"));
    }
}
