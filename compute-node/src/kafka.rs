//! The node's librdkafka callbacks: delivery reports, commit confirmations,
//! and client errors, which feed readiness and are logged at most a line
//! per kind every [`LOG_EVERY`] (librdkafka repeats them for as long as a
//! broker is down, ten times a second while a consumer closes).

use crate::health::Health;
use crate::ledger::Commits;
use crate::throttle::Throttle;
use prometheus::{IntCounter, IntGaugeVec};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often each kind of repeated Kafka complaint is logged.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Kafka's complaints, shared by the node's consumer and producer.
pub struct Complaints {
    health: Arc<Health>,
    throttle: Mutex<Throttle<String>>,
}

impl Complaints {
    pub fn new(health: Arc<Health>) -> Arc<Complaints> {
        Arc::new(Complaints {
            health,
            throttle: Mutex::new(Throttle::new(LOG_EVERY)),
        })
    }

    /// Logs a complaint unless one of its kind was logged lately.
    pub fn warn(&self, what: &'static str, error: &KafkaError, reason: &str) {
        let kind = format!("{what}: {:?}", error.rdkafka_error_code());
        let admitted = self
            .throttle
            .lock()
            .expect("throttle lock")
            .admit(kind, Instant::now());
        if let Some(held_back) = admitted {
            tracing::warn!(%error, reason, held_back, "{what} (repeats are logged every {LOG_EVERY:?})");
        }
    }

    /// A client-wide error: every broker down makes the node unready.
    fn client_error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.broker_reachable.store(false, Ordering::Relaxed);
        }
        self.warn("kafka client error", &error, reason);
    }
}

/// The consumer's callbacks; records which offsets the group coordinator
/// confirmed committing.
pub struct NodeContext {
    pub complaints: Arc<Complaints>,
    pub commits: Mutex<Commits>,
    /// Counts each assignment and revocation.
    pub rebalances: IntCounter,
    pub lag: ConsumerLag,
}

impl ClientContext for NodeContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.complaints.client_error(error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        self.lag
            .show(lag_by_partition(&statistics, &self.lag.topic));
    }
}

/// Lag of the partitions of `topic` this consumer fetches, as librdkafka
/// last measured it: the partition's end offset less the consumer's
/// position. A partition the group never consumed has no position yet; it
/// would be read from its start (`auto.offset.reset` earliest), so all it
/// holds is behind. Partitions it does not fetch, or whose offsets are not
/// known yet, are left out rather than shown as 0.
pub fn lag_by_partition(statistics: &Statistics, topic: &str) -> BTreeMap<i32, i64> {
    statistics
        .topics
        .get(topic)
        .into_iter()
        .flat_map(|t| t.partitions.values())
        .filter(|p| p.partition >= 0 && p.desired)
        .filter_map(|p| {
            let lag = if p.consumer_lag >= 0 {
                p.consumer_lag
            } else if p.app_offset < 0 && p.committed_offset < 0 && p.lo_offset >= 0 {
                p.hi_offset - p.lo_offset
            } else {
                return None;
            };
            (lag >= 0).then_some((p.partition, lag))
        })
        .collect()
}

/// The `consumer_lag` gauge of the input topic: one series per partition
/// this node holds now, so a revoked partition's series goes away instead
/// of showing its last lag for ever.
pub struct ConsumerLag {
    pub topic: String,
    pub gauge: IntGaugeVec,
    shown: Mutex<Vec<String>>,
}

impl ConsumerLag {
    pub fn new(topic: String, gauge: IntGaugeVec) -> ConsumerLag {
        ConsumerLag {
            topic,
            gauge,
            shown: Mutex::new(Vec::new()),
        }
    }

    fn show(&self, lag: BTreeMap<i32, i64>) {
        let now: Vec<String> = lag.keys().map(i32::to_string).collect();
        let mut shown = self.shown.lock().expect("lag lock");
        for gone in shown.iter().filter(|p| !now.contains(p)) {
            let _ = self.gauge.remove_label_values(&[gone]);
        }
        for (partition, lag) in &lag {
            self.gauge
                .with_label_values(&[&partition.to_string()])
                .set(*lag);
        }
        *shown = now;
    }
}

impl ConsumerContext for NodeContext {
    /// Every change of this node's partitions is logged: a node that holds
    /// none serves nothing, and the log says when and why that began.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let now = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        if !matches!(rebalance, Rebalance::Error(_)) {
            self.rebalances.inc();
        }
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(added = partitions.count(), now, "partitions assigned")
            }
            Rebalance::Revoke(partitions) => {
                tracing::info!(removed = partitions.count(), now, "partitions revoked")
            }
            Rebalance::Error(error) => tracing::warn!(%error, now, "rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        tracing::debug!(?result, ?offsets, "commit callback");
        let mut commits = self.commits.lock().expect("commits lock");
        match result {
            Ok(()) => {}
            // Nothing stored differs from what is committed: all of it is.
            Err(error) if error.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {
                commits.all_confirmed();
                return;
            }
            Err(_) => return,
        }
        for element in offsets.elements() {
            if let (Offset::Offset(next), Ok(())) = (element.offset(), element.error()) {
                commits.confirmed((element.topic().to_string(), element.partition()), next);
            }
        }
    }
}

/// The producer's callbacks: collects delivery reports as (message key,
/// the error if Kafka refused it).
pub struct DeliveryContext {
    pub complaints: Arc<Complaints>,
    pub reports: Mutex<Vec<(usize, Option<KafkaError>)>>,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.complaints.client_error(error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, key: usize) {
        let error = result.as_ref().err().map(|(error, _)| error.clone());
        self.reports
            .lock()
            .expect("delivery lock")
            .push((key, error));
    }
}
