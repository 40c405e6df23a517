//! The HTTP API's JSON and the pure parts of answering: validation
//! (against the limits every Setlist service shares,
//! `setlist_core::query::Limits`), why a fallback answered, and per-stage
//! timings from a frame's hops.

use serde::{Deserialize, Serialize};
use setlist_core::query::{Limits, QueryError, Recommendation};
use setlist_core::wire::Hop;

/// `POST /v1/recommendations` and `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendationRequest {
    pub tracks: Vec<String>,
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub deadline_ms: Option<u64>,
}

fn default_k() -> usize {
    20
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendationResponse {
    pub recommendations: Vec<Recommendation>,
    pub model_version: String,
    /// True when the answer is the popularity ranking, not the model's.
    pub fallback: bool,
    /// Why the fallback answered: a [`FallbackReason`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// Input ids the catalogue does not know (ignored, not fatal).
    pub unknown_tracks: Vec<String>,
    pub cached: bool,
    pub timings: Timings,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub total_ms: f64,
    /// One entry per hop the answer took: `stage-K` and `shard-S`.
    pub stages: Vec<StageTiming>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTiming {
    pub part: String,
    /// From the frame's arrival at the node to the start of its forward pass.
    pub queue_ms: f64,
    pub compute_ms: f64,
    /// From the previous hop sending the frame to this node receiving it.
    pub transport_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

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

/// Parses and checks a request body; the error names the field and the limit.
pub fn parse_request(body: &[u8], limits: &Limits) -> Result<RecommendationRequest, QueryError> {
    limits.check_size("body", body.len())?;
    let request: RecommendationRequest =
        serde_json::from_slice(body).map_err(|e| QueryError::Invalid {
            what: "body",
            reason: e.to_string(),
        })?;
    limits.check_query(
        &request.tracks,
        &request.exclude,
        request.k,
        request.deadline_ms,
    )?;
    Ok(request)
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
    fn requests_are_checked_field_by_field() {
        let limits = Limits {
            max_tracks: 2,
            max_exclude: 1,
            max_k: 50,
            max_id_bytes: 4,
            ..Limits::default()
        };
        let ok = parse_request(br#"{"tracks":["a","b"]}"#, &limits).unwrap();
        assert_eq!((ok.k, ok.deadline_ms), (20, None));
        let err = |body: &str| {
            parse_request(body.as_bytes(), &limits)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(r#"{"tracks":["a","b","c"]}"#),
            "field \"tracks\" has 3 tracks, over the limit of 2"
        );
        assert_eq!(
            err(r#"{"tracks":[],"exclude":["a","b"]}"#),
            "field \"exclude\" has 2 tracks, over the limit of 1"
        );
        assert_eq!(
            err(r#"{"tracks":["abcde"]}"#),
            "field \"tracks\" holds an id of 5 bytes, over the limit of 4"
        );
        assert_eq!(
            err(r#"{"tracks":[],"k":0}"#),
            "field \"k\" is 0; it must be between 1 and 50"
        );
        assert_eq!(
            err(r#"{"tracks":[],"deadline_ms":5}"#),
            "field \"deadline_ms\" is 5; it must be between 10 and 60000"
        );
        assert!(err(r#"{"tracks":[],"kk":1}"#).contains("unknown field `kk`"));
        assert!(err("{").starts_with("the body is not a valid request"));
        let small = Limits {
            max_request_bytes: 3,
            ..limits
        };
        assert_eq!(
            parse_request(b"{  }", &small).unwrap_err().to_string(),
            "the body is 4 bytes, over the limit of 3"
        );
    }

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
