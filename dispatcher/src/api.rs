//! The pure parts of answering (the API's JSON is `setlist_core::api`):
//! why a fallback answered, and per-stage timings from a frame's hops.

use setlist_core::api::StageTiming;
use setlist_core::wire::Hop;

/// Why the popularity fallback answered instead of the model; the
/// response's `fallback_reason` and a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// None of the request's tracks is in the catalogue.
    NoKnownTracks,
    /// The pipeline has been failing; the breaker answers without waiting.
    CircuitOpen,
    /// The deadline is shorter than the pipeline has lately needed to
    /// answer; this request alone gets the fallback at once.
    DeadlineTooShort,
    /// The pipeline did not answer by the request's deadline.
    Deadline,
    /// The broker refused the request's frame.
    PublishFailed,
    /// The queue in front of the broker is full.
    Overloaded,
    /// The Kafka brokers do not answer; no request is sent into the
    /// pipeline until they do.
    BrokerUnreachable,
}

impl FallbackReason {
    /// Every reason, so /metrics shows each at 0 before it first happens.
    pub const ALL: [FallbackReason; 7] = [
        FallbackReason::NoKnownTracks,
        FallbackReason::CircuitOpen,
        FallbackReason::DeadlineTooShort,
        FallbackReason::Deadline,
        FallbackReason::PublishFailed,
        FallbackReason::Overloaded,
        FallbackReason::BrokerUnreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::NoKnownTracks => "no_known_tracks",
            FallbackReason::CircuitOpen => "circuit_open",
            FallbackReason::DeadlineTooShort => "deadline_too_short",
            FallbackReason::Deadline => "deadline",
            FallbackReason::PublishFailed => "publish_failed",
            FallbackReason::Overloaded => "overloaded",
            FallbackReason::BrokerUnreachable => "broker_unreachable",
        }
    }
}

/// The hop a dispatcher appends when it publishes a frame.
pub const DISPATCHER_HOP: u16 = u16::MAX;

/// Per-stage timings from the hops of one answer. `hops` are in path
/// order, starting with the dispatcher's; nodes numbered `stages` and above
/// are output shards.
pub fn timings_from_hops(hops: &[Hop], stages: u16) -> Vec<StageTiming> {
    let ms = |us: i64| us as f64 / 1000.0;
    hops.windows(2)
        .map(|w| {
            let (previous, hop) = (w[0], w[1]);
            let received = hop.sent_unix_us as i64 - hop.compute_us as i64 - hop.queue_us as i64;
            StageTiming {
                part: if hop.stage < stages {
                    format!("stage-{}", hop.stage)
                } else {
                    format!("shard-{}", hop.stage - stages)
                },
                queue_ms: ms(hop.queue_us as i64),
                compute_ms: ms(hop.compute_us as i64),
                transport_ms: ms((received - previous.sent_unix_us as i64).max(0)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_split_each_hop_into_transport_queue_and_compute() {
        let hops = [
            Hop {
                stage: DISPATCHER_HOP,
                queue_us: 0,
                compute_us: 0,
                sent_unix_us: 1_000_000,
            },
            Hop {
                stage: 0,
                queue_us: 300,
                compute_us: 2_000,
                sent_unix_us: 1_003_500,
            },
            Hop {
                stage: 2,
                queue_us: 100,
                compute_us: 500,
                sent_unix_us: 1_005_100,
            },
        ];
        let t = timings_from_hops(&hops, 2);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[0],
            StageTiming {
                part: "stage-0".into(),
                queue_ms: 0.3,
                compute_ms: 2.0,
                transport_ms: 1.2
            }
        );
        assert_eq!(t[1].part, "shard-0");
        assert!((t[1].transport_ms - 1.0).abs() < 1e-9);
    }
}
