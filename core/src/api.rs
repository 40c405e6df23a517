//! The recommendation API's JSON (`POST /v1/recommendations`, jobs), the
//! same for the dispatcher that serves it and the search API that calls it,
//! and the check every request passes (against the limits every Setlist
//! service shares, [`Limits`]).

use crate::query::{Limits, QueryError, Recommendation};
use serde::{Deserialize, Serialize};

/// `POST /v1/recommendations` and `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
}
