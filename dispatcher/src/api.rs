//! The HTTP API's JSON, its limits, and the pure parts of answering:
//! validation and per-stage timings from a frame's hops.

use serde::{Deserialize, Serialize};
use setlist_core::query::Recommendation;
use setlist_core::wire::Hop;

/// Limits of one request. `tracks` and `exclude` together become the
/// frame's exclude list, whose wire limit is 10,000.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_tracks: usize,
    pub max_exclude: usize,
    pub max_k: usize,
    pub max_id_bytes: usize,
    pub min_deadline_ms: u64,
    pub max_deadline_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            max_tracks: 5_000,
            max_exclude: 5_000,
            max_k: 1_000,
            max_id_bytes: 512,
            min_deadline_ms: 10,
            max_deadline_ms: 60_000,
        }
    }
}

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
    /// Why the fallback answered: `no_known_tracks`, `circuit_open`, `deadline`, `publish_failed`.
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

/// Parses and checks a request body; the error names the field and the limit.
pub fn parse_request(body: &[u8], limits: &Limits) -> Result<RecommendationRequest, String> {
    if body.len() > limits.max_body_bytes {
        return Err(format!(
            "the body is {} bytes, over the limit of {}",
            body.len(),
            limits.max_body_bytes
        ));
    }
    let request: RecommendationRequest = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a valid request: {e}"))?;
    if request.tracks.len() > limits.max_tracks {
        return Err(format!(
            "field \"tracks\" has {} tracks, over the limit of {}",
            request.tracks.len(),
            limits.max_tracks
        ));
    }
    if request.exclude.len() > limits.max_exclude {
        return Err(format!(
            "field \"exclude\" has {} tracks, over the limit of {}",
            request.exclude.len(),
            limits.max_exclude
        ));
    }
    for (field, ids) in [("tracks", &request.tracks), ("exclude", &request.exclude)] {
        if let Some(id) = ids.iter().find(|id| id.len() > limits.max_id_bytes) {
            return Err(format!(
                "field \"{field}\" holds an id of {} bytes, over the limit of {}",
                id.len(),
                limits.max_id_bytes
            ));
        }
    }
    if request.k == 0 || request.k > limits.max_k {
        return Err(format!(
            "field \"k\" is {}; it must be between 1 and {}",
            request.k, limits.max_k
        ));
    }
    if let Some(d) = request.deadline_ms
        && !(limits.min_deadline_ms..=limits.max_deadline_ms).contains(&d)
    {
        return Err(format!(
            "field \"deadline_ms\" is {d}; it must be between {} and {}",
            limits.min_deadline_ms, limits.max_deadline_ms
        ));
    }
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
        let err = |body: &str| parse_request(body.as_bytes(), &limits).unwrap_err();
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
            max_body_bytes: 3,
            ..limits
        };
        assert_eq!(
            parse_request(b"{  }", &small).unwrap_err(),
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
