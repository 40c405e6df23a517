//! What the dispatcher reports on /metrics.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use setlist_core::telemetry::latency_buckets;

pub struct Metrics {
    pub registry: Registry,
    /// Answers by outcome: `model`, `fallback`, `cached`.
    pub answers: IntCounterVec,
    pub fallbacks: IntCounterVec,
    pub invalid_requests: IntCounter,
    pub request_seconds: Histogram,
    /// Per hop (`part` = stage-K, shard-S), as reported by the frames' hops.
    pub hop_queue: HistogramVec,
    pub hop_compute: HistogramVec,
    pub hop_transport: HistogramVec,
    pub retries: IntCounter,
    pub duplicate_results: IntCounter,
    pub late_results: IntCounter,
    pub frame_rows: Histogram,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_state: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("setlist_dispatcher".into()), None)
            .expect("a valid registry prefix");
        fn register<T: prometheus::core::Collector + Clone + 'static>(
            registry: &Registry,
            metric: T,
        ) -> T {
            registry
                .register(Box::new(metric.clone()))
                .expect("each metric is registered once");
            metric
        }
        let hop = |name: &str, help: &str| {
            register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(latency_buckets()),
                    &["part"],
                )
                .expect("valid options"),
            )
        };
        Metrics {
            answers: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("answers_total", "Answers by outcome."),
                    &["outcome"],
                )
                .expect("valid options"),
            ),
            fallbacks: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("fallbacks_total", "Popularity answers by reason."),
                    &["reason"],
                )
                .expect("valid options"),
            ),
            invalid_requests: register(
                &registry,
                IntCounter::new("invalid_requests_total", "Requests refused with a 4xx.")
                    .expect("valid options"),
            ),
            request_seconds: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "request_seconds",
                        "Time to answer a recommendation request.",
                    )
                    .buckets(latency_buckets()),
                )
                .expect("valid options"),
            ),
            hop_queue: hop("hop_queue_seconds", "Queue wait per pipeline hop."),
            hop_compute: hop("hop_compute_seconds", "Compute time per pipeline hop."),
            hop_transport: hop(
                "hop_transport_seconds",
                "Kafka transport time into each pipeline hop.",
            ),
            retries: register(
                &registry,
                IntCounter::new("retries_total", "Requests published a second time.")
                    .expect("valid options"),
            ),
            duplicate_results: register(
                &registry,
                IntCounter::new(
                    "duplicate_results_total",
                    "Shard results for a shard already answered (ignored).",
                )
                .expect("valid options"),
            ),
            late_results: register(
                &registry,
                IntCounter::new(
                    "late_results_total",
                    "Shard results for requests already answered or unknown (ignored).",
                )
                .expect("valid options"),
            ),
            frame_rows: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new("frame_rows", "Requests per stage-0 frame.")
                        .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 256.0, 1024.0]),
                )
                .expect("valid options"),
            ),
            breaker_state: register(
                &registry,
                IntGauge::new(
                    "breaker_state",
                    "Circuit breaker: 0 closed, 1 open, 2 half-open.",
                )
                .expect("valid options"),
            ),
            registry,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
