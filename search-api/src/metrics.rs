//! What the search API reports on /metrics (prefix `setlist_search_`).

use crate::recommend::{CIRCUIT_OPEN, DISPATCHER_REFUSED, DISPATCHER_UNREACHABLE};
use crate::verify::MatchedBy;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use setlist_core::telemetry::latency_buckets;
use std::time::Instant;

/// Every metric is a handle onto the one registry, so clones share counts.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Every HTTP request by `route` (the route's pattern, so label values
    /// stay bounded) and `status` code.
    pub request_seconds: HistogramVec,
    /// Recommendation answers by `source`: `model`, `cached`, `fallback`.
    pub answers: IntCounterVec,
    /// Fallback answers by `reason`: the dispatcher's own reasons, or
    /// `circuit_open`, `dispatcher_unreachable`, `dispatcher_refused` when
    /// this API answered without it.
    pub fallbacks: IntCounterVec,
    /// Listener events by `event` and `outcome` (`published`, or why it was
    /// dropped: `queue_full`, `broker_error`, `no_broker`).
    pub events: IntCounterVec,
    /// Uploaded playlist entries by `outcome`: `id`, `title_artist`,
    /// `fuzzy`, `not_recognised`.
    pub playlist_entries: IntCounterVec,
    /// Requests refused with a 503, by `reason`.
    pub shed_requests: IntCounterVec,
    /// The dispatcher breaker: 0 closed, 1 open, 2 half-open.
    pub breaker_state: IntGauge,
    pub index_songs: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("setlist_search".into()), None)
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
        let counters = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter"),
            )
        };
        let gauge = |name: &str, help: &str| {
            register(&registry, IntGauge::new(name, help).expect("a valid gauge"))
        };
        let metrics = Metrics {
            request_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "http_request_duration_seconds",
                        "HTTP requests by route pattern and status code, from the first byte read to the response",
                    )
                    .buckets(latency_buckets()),
                    &["route", "status"],
                )
                .expect("a valid histogram"),
            ),
            answers: counters(
                "recommendation_answers_total",
                "Recommendation answers by source: model, cached, fallback",
                &["source"],
            ),
            fallbacks: counters(
                "fallbacks_total",
                "Popularity answers by reason",
                &["reason"],
            ),
            events: counters(
                "listener_events_total",
                "Listener events by event and outcome (published, or why dropped)",
                &["event", "outcome"],
            ),
            playlist_entries: counters(
                "playlist_entries_total",
                "Uploaded playlist entries by how they were recognised, or not_recognised",
                &["outcome"],
            ),
            shed_requests: counters(
                "shed_requests_total",
                "Requests refused with a 503, by reason",
                &["reason"],
            ),
            breaker_state: gauge(
                "dispatcher_breaker_state",
                "The circuit breaker in front of the dispatcher: 0 closed, 1 open, 2 half-open",
            ),
            index_songs: gauge("index_songs", "Songs in the search index"),
            registry,
        };
        // Each source shows at 0 from the start, so ratios over them are 0
        // rather than no data.
        for source in ["model", "cached", "fallback"] {
            metrics.answers.with_label_values(&[source]);
        }
        for reason in [CIRCUIT_OPEN, DISPATCHER_UNREACHABLE, DISPATCHER_REFUSED] {
            metrics.fallbacks.with_label_values(&[reason]);
        }
        for outcome in MatchedBy::ALL.map(MatchedBy::as_str) {
            metrics.playlist_entries.with_label_values(&[outcome]);
        }
        metrics
            .playlist_entries
            .with_label_values(&["not_recognised"]);
        metrics
    }
}

/// Middleware: times every request under its route's pattern.
pub async fn record(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .request_seconds
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}
