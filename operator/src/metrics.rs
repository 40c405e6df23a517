//! The operator's own metrics on `/metrics`: reconcile duration and
//! errors, node replacements by reason, and whether this replica leads.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    pub reconcile_duration: Histogram,
    reconcile_errors: IntCounterVec,
    replacements: IntCounterVec,
    pub leader: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "setlist_operator_reconcile_duration_seconds",
                "Time one reconcile pass of a RecommenderCluster took.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("a valid histogram");
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "setlist_operator_reconcile_errors_total",
                "Reconcile passes that failed, by what failed (api, kafka).",
            ),
            &["reason"],
        )
        .expect("a valid counter");
        let replacements = IntCounterVec::new(
            Opts::new(
                "setlist_operator_node_replacements_total",
                "Compute nodes replaced, by reason (CrashLoop, Unready, SliceMismatch).",
            ),
            &["reason"],
        )
        .expect("a valid counter");
        let leader = IntGauge::new(
            "setlist_operator_leader",
            "1 while this replica holds the leader Lease and reconciles.",
        )
        .expect("a valid gauge");
        for collector in [
            Box::new(reconcile_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_errors.clone()),
            Box::new(replacements.clone()),
            Box::new(leader.clone()),
        ] {
            registry
                .register(collector)
                .expect("each metric registers once");
        }
        // Every reason shows from the start, at zero, so rates work at once.
        for reason in ["CrashLoop", "Unready", "SliceMismatch"] {
            replacements.with_label_values(&[reason]);
        }
        for reason in ["api", "kafka"] {
            reconcile_errors.with_label_values(&[reason]);
        }
        Metrics {
            registry,
            reconcile_duration,
            reconcile_errors,
            replacements,
            leader,
        }
    }

    pub fn reconcile_error(&self, reason: &str) {
        self.reconcile_errors.with_label_values(&[reason]).inc();
    }

    pub fn replacement(&self, reason: &str) {
        self.replacements.with_label_values(&[reason]).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
