//! What the dispatcher reports on /metrics.

use crate::api::FallbackReason;
use crate::flight::RetryReason;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use setlist_core::telemetry::latency_buckets;

/// Every metric is a handle onto the one registry, so clones share counts.
#[derive(Clone)]
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
    /// Retries published, by what justified them (`pipeline_timeout`, `publish_failed`).
    pub retries: IntCounterVec,
    /// Retries a failure justified but that were not published: `budget`
    /// (the retry budget was spent), `no_time` (the pipeline could not
    /// answer in the time left).
    pub retries_refused: IntCounterVec,
    pub duplicate_results: IntCounter,
    pub late_results: IntCounter,
    pub frame_rows: Histogram,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_state: IntGauge,
    /// Requests waiting for the pipeline.
    pub requests_in_flight: IntGauge,
    /// Stage-0 frames handed to the broker and not yet acknowledged.
    pub publishes_in_flight: IntGauge,
    /// Stage-0 frames that could not be published.
    pub publish_errors: IntCounter,
    /// Background tasks restarted after a panic, by `task`.
    pub task_restarts: IntCounterVec,
    /// Entries evicted from a bounded store, by `store` (`answer_cache`,
    /// `jobs`) and `cause` (`size`, `expired`).
    pub evictions: IntCounterVec,
    /// Requests refused with a 503, by `reason` (`overloaded`, `timeout`,
    /// `jobs_full`).
    pub shed_requests: IntCounterVec,
    /// 1, labelled with the `model_version` this dispatcher asks for.
    pub model_info: IntGaugeVec,
    /// A request's deadline when it names none: the latency budget an
    /// alert compares the p99 with.
    pub deadline_seconds: Gauge,
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
        let counters = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid options"),
            )
        };
        let gauge = |name: &str, help: &str| {
            register(&registry, IntGauge::new(name, help).expect("valid options"))
        };
        let metrics = Metrics {
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
            retries: counters(
                "retries_total",
                "Requests published again, by what justified it.",
                &["reason"],
            ),
            retries_refused: counters(
                "retries_refused_total",
                "Retries a failure justified but that were not published, by why.",
                &["reason"],
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
            requests_in_flight: gauge("requests_in_flight", "Requests waiting for the pipeline."),
            publishes_in_flight: gauge(
                "publishes_in_flight",
                "Stage-0 frames handed to the broker and not yet acknowledged.",
            ),
            publish_errors: register(
                &registry,
                IntCounter::new(
                    "publish_errors_total",
                    "Stage-0 frames that could not be published.",
                )
                .expect("valid options"),
            ),
            task_restarts: counters(
                "task_restarts_total",
                "Background tasks restarted after a panic.",
                &["task"],
            ),
            evictions: counters(
                "evictions_total",
                "Entries evicted from a bounded store, by store and cause.",
                &["store", "cause"],
            ),
            shed_requests: counters(
                "shed_requests_total",
                "Requests refused with a 503 (retry later), by reason.",
                &["reason"],
            ),
            model_info: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "model_info",
                        "1, labelled with the model version this dispatcher asks for.",
                    ),
                    &["model_version"],
                )
                .expect("valid options"),
            ),
            deadline_seconds: register(
                &registry,
                Gauge::new(
                    "deadline_seconds",
                    "The deadline of a request that names none (the latency budget).",
                )
                .expect("valid options"),
            ),
            registry,
        };
        // Every outcome and reason shows at 0 from the start, so ratios and
        // rates over them are 0 rather than no data.
        for outcome in ["model", "fallback", "cached"] {
            metrics.answers.with_label_values(&[outcome]);
        }
        for reason in FallbackReason::ALL.map(FallbackReason::as_str) {
            metrics.fallbacks.with_label_values(&[reason]);
        }
        for reason in RetryReason::ALL.map(RetryReason::as_str) {
            metrics.retries.with_label_values(&[reason]);
        }
        for reason in ["budget", "no_time"] {
            metrics.retries_refused.with_label_values(&[reason]);
        }
        for task in ["publisher", "results_consumer"] {
            metrics.task_restarts.with_label_values(&[task]);
        }
        metrics.shed_requests.with_label_values(&["jobs_full"]);
        metrics
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
