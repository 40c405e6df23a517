//! Kafka client settings shared by every Setlist process: low-latency
//! defaults, the operator's overrides on top, and nothing else. This is
//! configuration, not I/O: the properties are plain pairs, which a process
//! collects into an `rdkafka::ClientConfig` (`properties(..).into_iter().collect()`).

use std::collections::BTreeMap;

/// Where the brokers are and what to change in the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    /// librdkafka properties applied last, e.g. `fetch.wait.max.ms=10`.
    pub overrides: Vec<(String, String)>,
}

/// What a client is for; each gets the defaults its job needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Producer,
    /// A member of a consumer group (a stage's or a shard's replicas).
    /// `instance` is its static identity (`group.instance.id`, e.g. the pod
    /// name): a restarted member with the same identity takes its partitions
    /// back without a rebalance, on brokers that support it (KIP-345).
    GroupConsumer {
        group: String,
        instance: Option<String>,
        /// How long the broker waits for a silent member before it hands its
        /// partitions on (see [`DEFAULT_SESSION_TIMEOUT_MS`]).
        session_timeout_ms: u32,
    },
    /// A consumer of explicitly assigned partitions (a dispatcher's reply
    /// partition); it never commits, so it needs no group of its own, but
    /// librdkafka wants a `group.id`.
    AssignedConsumer {
        client: String,
    },
}

/// The least session timeout a Kafka broker accepts by default
/// (`group.min.session.timeout.ms`); a broker that allows less (the embedded
/// one does) lets a dead member's partitions move sooner.
pub const DEFAULT_SESSION_TIMEOUT_MS: u32 = 6_000;

/// How long a fetch that finds no data waits for some (see [`defaults`]).
pub const FETCH_WAIT_MAX_MS: u32 = 100;

/// Defaults chosen for latency, not throughput (librdkafka's own defaults
/// batch for 5 ms on produce and wait up to 500 ms on fetch):
/// - `linger.ms` 0: a frame leaves as soon as it is produced;
/// - `fetch.wait.max.ms` 100 with `fetch.min.bytes` 1: a broker answers a
///   fetch as soon as data arrives, so this bounds only how long an idle
///   fetch waits; a tiny value would make every consumer poll, at a cost in
///   CPU that competes with the work (the embedded broker answers early too,
///   with `scripts/patches/rdkafka-mock-wake-waiting-fetches.patch`);
/// - `socket.nagle.disable`: no 40 ms delayed-ACK stalls on small frames;
/// - `session.timeout.ms` 6000 (the role's) / `heartbeat.interval.ms` a
///   third of it, at most 1000: a dead node's partitions move to a live
///   replica within seconds, not 45 s;
/// - `partition.assignment.strategy` cooperative-sticky: a rebalance (a
///   replica died or came back) moves only the partitions that change
///   owner, and the surviving replicas keep consuming theirs meanwhile;
/// - offsets are stored only after a batch's output was produced and are
///   committed every 200 ms: at-least-once, never at-most-once.
pub fn defaults(role: &Role) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        ("socket.nagle.disable", "true".to_string()),
        ("client.id", "setlist".to_string()),
        // librdkafka backs off up to 10 s between reconnects; a broker back
        // from an outage should have its clients back within a second.
        ("reconnect.backoff.max.ms", "1000".to_string()),
    ];
    match role {
        Role::Producer => settings.extend([
            ("linger.ms", "0".to_string()),
            ("acks", "all".to_string()),
            ("message.timeout.ms", "10000".to_string()),
        ]),
        Role::GroupConsumer {
            group,
            instance,
            session_timeout_ms,
        } => {
            settings.extend(instance.iter().map(|i| ("group.instance.id", i.clone())));
            settings.extend([
                ("group.id", group.clone()),
                ("fetch.wait.max.ms", FETCH_WAIT_MAX_MS.to_string()),
                ("fetch.min.bytes", "1".to_string()),
                ("session.timeout.ms", session_timeout_ms.to_string()),
                (
                    "heartbeat.interval.ms",
                    (session_timeout_ms / 3).clamp(1, 1000).to_string(),
                ),
                (
                    "partition.assignment.strategy",
                    "cooperative-sticky".to_string(),
                ),
                ("enable.auto.commit", "true".to_string()),
                ("enable.auto.offset.store", "false".to_string()),
                ("auto.commit.interval.ms", "200".to_string()),
                // A group with no committed offset starts at the beginning, so
                // nothing produced before the first member joined is lost; stale
                // frames are dropped cheaply by their deadline.
                ("auto.offset.reset", "earliest".to_string()),
            ]);
        }
        Role::AssignedConsumer { client } => settings.extend([
            ("group.id", client.clone()),
            ("fetch.wait.max.ms", FETCH_WAIT_MAX_MS.to_string()),
            ("fetch.min.bytes", "1".to_string()),
            ("enable.auto.commit", "false".to_string()),
            ("auto.offset.reset", "latest".to_string()),
        ]),
    }
    settings
}

impl KafkaSettings {
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaSettings {
            bootstrap_servers: bootstrap_servers.into(),
            overrides: Vec::new(),
        }
    }

    /// Parses `key=value` overrides, e.g. from repeated `--kafka-set` flags.
    pub fn with_overrides(mut self, pairs: &[String]) -> Result<Self, String> {
        for pair in pairs {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                format!("Kafka setting \"{pair}\" is not key=value, e.g. fetch.wait.max.ms=10")
            })?;
            self.overrides
                .push((key.trim().to_string(), value.trim().to_string()));
        }
        Ok(self)
    }

    /// Every librdkafka property of a client for `role`: the brokers, the
    /// defaults, and the overrides over both.
    pub fn properties(&self, role: &Role) -> BTreeMap<String, String> {
        let mut properties = BTreeMap::from([(
            "bootstrap.servers".to_string(),
            self.bootstrap_servers.clone(),
        )]);
        properties.extend(defaults(role).into_iter().map(|(k, v)| (k.to_string(), v)));
        properties.extend(self.overrides.iter().cloned());
        properties
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_over_defaults() {
        let settings = KafkaSettings::new("localhost:9092")
            .with_overrides(&["fetch.wait.max.ms = 10".into()])
            .unwrap();
        let properties = settings.properties(&Role::GroupConsumer {
            group: "g".into(),
            instance: Some("stage-1-0".into()),
            session_timeout_ms: 3_000,
        });
        let value = |key: &str| properties.get(key).map(String::as_str);
        assert_eq!(value("fetch.wait.max.ms"), Some("10"));
        assert_eq!(value("enable.auto.offset.store"), Some("false"));
        assert_eq!(value("bootstrap.servers"), Some("localhost:9092"));
        assert_eq!(value("group.instance.id"), Some("stage-1-0"));
        assert_eq!(value("session.timeout.ms"), Some("3000"));
        assert_eq!(value("heartbeat.interval.ms"), Some("1000"));
    }

    #[test]
    fn a_malformed_override_says_what_is_expected() {
        let err = KafkaSettings::new("x")
            .with_overrides(&["linger.ms".into()])
            .unwrap_err();
        assert_eq!(
            err,
            "Kafka setting \"linger.ms\" is not key=value, e.g. fetch.wait.max.ms=10"
        );
    }
}
