//! What a node reports on /metrics. Every series carries `part`
//! (`stage-0`, `shard-1`, …) so a dashboard shows the cost of each hop.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use setlist_core::telemetry::latency_buckets;

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
    /// Requests dropped, by reason (`deadline_expired`).
    pub dropped_rows: IntCounterVec,
    /// Frames sent to the dead-letter topic, by reason.
    pub dead_letters: IntCounterVec,
    pub produce_failures: IntCounter,
    pub assigned_partitions: IntGauge,
    pub ready: IntGauge,
}

impl Metrics {
    pub fn new(part: &str) -> Metrics {
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
        let rows = vec![
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
        ];
        Metrics {
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
                "Frames produced to the next stage or to results.",
            ),
            dropped_rows: counter_vec("dropped_rows_total", "Requests dropped, by reason."),
            dead_letters: counter_vec(
                "dead_letters_total",
                "Frames sent to the dead-letter topic, by reason.",
            ),
            produce_failures: counter(
                "produce_failures_total",
                "Frames Kafka did not acknowledge.",
            ),
            assigned_partitions: gauge(
                "assigned_partitions",
                "Input partitions assigned to this node.",
            ),
            ready: gauge(
                "ready",
                "1 when the node serves: slice loaded, partitions assigned, broker reachable.",
            ),
            registry,
        }
    }
}
