//! What a node reports on /metrics. Every series carries `part`
//! (`stage-0`, `shard-1`, …) so a dashboard shows the cost of each hop.

use crate::accept::Reason;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use setlist_core::telemetry::latency_buckets;
use setlist_service::health::Readiness;

pub struct Metrics {
    pub registry: Registry,
    /// From a frame's arrival at the node to the start of its batch's forward pass.
    pub queue_wait: Histogram,
    pub batch_rows: Histogram,
    pub compute: Histogram,
    /// Handing a batch's frames to Kafka until every one is acknowledged.
    pub produce: Histogram,
    pub frames_in: IntCounter,
    pub frames_out: IntCounter,
    /// Accepted requests that got no output, by reason: `deadline_expired`,
    /// or the dead-letter reason of an output that could not be sent.
    pub dropped_rows: IntCounterVec,
    /// Frames (or outputs) sent to the dead-letter topic, by reason.
    pub dead_letters: IntCounterVec,
    /// Dead letters Kafka refused in turn, by the reason they were for:
    /// those frames are gone but for the log line with their source.
    pub lost_dead_letters: IntCounterVec,
    pub produce_failures: IntCounter,
    /// Offsets that could not be stored (the partition moved to another
    /// node, which processes those frames again).
    pub offset_store_failures: IntCounter,
    pub assigned_partitions: IntGauge,
    /// Changes of this node's partitions (each assignment and each
    /// revocation): a few when replicas come and go, growing all the time
    /// when the group never settles.
    pub rebalances: IntCounter,
    /// Messages behind the end of each assigned input partition, by
    /// `partition`, from librdkafka's statistics.
    pub consumer_lag: IntGaugeVec,
    /// 1, labelled with the `model_version` of the slice this node serves.
    pub model_info: IntGaugeVec,
}

/// `ready` as /readyz would answer at the moment of each scrape.
struct ReadyGauge {
    gauge: IntGauge,
    readiness: Readiness,
}

impl Collector for ReadyGauge {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gauge.set(i64::from((self.readiness)().is_ok()));
        self.gauge.collect()
    }
}

impl Metrics {
    pub fn new(part: &str, readiness: Readiness) -> Metrics {
        let registry = Registry::new_custom(
            Some("setlist_node".into()),
            Some([("part".to_string(), part.to_string())].into()),
        )
        .expect("a valid registry prefix");
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid histogram options");
            registry
                .register(Box::new(h.clone()))
                .expect("each metric is registered once");
            h
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid counter options");
            registry
                .register(Box::new(c.clone()))
                .expect("each metric is registered once");
            c
        };
        let counter_vec = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["reason"])
                .expect("valid counter options");
            registry
                .register(Box::new(c.clone()))
                .expect("each metric is registered once");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid gauge options");
            registry
                .register(Box::new(g.clone()))
                .expect("each metric is registered once");
            g
        };
        let gauge_vec = |name: &str, help: &str, label: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid gauge options");
            registry
                .register(Box::new(g.clone()))
                .expect("each metric is registered once");
            g
        };
        let ready = IntGauge::new(
            "ready",
            "1 when the node serves: slice loaded, partitions assigned, broker reachable.",
        )
        .expect("valid gauge options");
        registry
            .register(Box::new(ReadyGauge {
                gauge: ready,
                readiness,
            }))
            .expect("each metric is registered once");
        let rows = vec![
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
        ];
        let metrics = Metrics {
            queue_wait: histogram(
                "queue_wait_seconds",
                "Time from a frame's arrival to the start of its batch's forward pass.",
                latency_buckets(),
            ),
            batch_rows: histogram("batch_rows", "Requests per forward pass.", rows),
            compute: histogram(
                "compute_seconds",
                "Forward pass time per batch.",
                latency_buckets(),
            ),
            produce: histogram(
                "produce_seconds",
                "Time to produce a batch's frames until Kafka acknowledged them.",
                latency_buckets(),
            ),
            frames_in: counter("frames_in_total", "Frames consumed."),
            frames_out: counter(
                "frames_out_total",
                "Frames Kafka acknowledged on the next stage's topic or on results.",
            ),
            dropped_rows: counter_vec(
                "dropped_rows_total",
                "Accepted requests that got no output, by reason.",
            ),
            dead_letters: counter_vec(
                "dead_letters_total",
                "Frames, or outputs that could not be sent, sent to the dead-letter topic, by reason.",
            ),
            lost_dead_letters: counter_vec(
                "lost_dead_letters_total",
                "Dead letters Kafka refused too (logged with their source), by reason.",
            ),
            produce_failures: counter(
                "produce_failures_total",
                "Messages Kafka did not acknowledge.",
            ),
            offset_store_failures: counter(
                "offset_store_failures_total",
                "Consumed offsets not stored because the partition moved to another node.",
            ),
            assigned_partitions: gauge(
                "assigned_partitions",
                "Input partitions assigned to this node.",
            ),
            rebalances: counter(
                "rebalances_total",
                "Assignments and revocations of this node's input partitions.",
            ),
            consumer_lag: gauge_vec(
                "consumer_lag",
                "Messages behind the end of each assigned input partition.",
                "partition",
            ),
            model_info: gauge_vec(
                "model_info",
                "1, labelled with the model version of the slice this node serves.",
                "model_version",
            ),
            registry,
        };
        // Every reason shows at 0 from the start, so a rate over it is 0
        // rather than no data, and the first dead letter is an increase.
        for reason in Reason::ALL.map(Reason::label) {
            metrics.dead_letters.with_label_values(&[reason]);
            metrics.lost_dead_letters.with_label_values(&[reason]);
            metrics.dropped_rows.with_label_values(&[reason]);
        }
        metrics
            .dropped_rows
            .with_label_values(&["deadline_expired"]);
        metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn ready_is_what_readiness_says_at_each_scrape() {
        let serving = Arc::new(AtomicBool::new(false));
        let flag = serving.clone();
        let metrics = Metrics::new(
            "stage-1",
            Arc::new(move || {
                if flag.load(Ordering::Relaxed) {
                    Ok("ready".into())
                } else {
                    Err("not ready".into())
                }
            }),
        );
        let scrape = || setlist_core::telemetry::render(&metrics.registry);
        assert!(
            scrape().contains("setlist_node_ready{part=\"stage-1\"} 0"),
            "{}",
            scrape()
        );
        serving.store(true, Ordering::Relaxed);
        assert!(scrape().contains("setlist_node_ready{part=\"stage-1\"} 1"));
    }
}
