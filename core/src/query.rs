//! Recommendation queries in their JSON forms, their limits, and turning
//! song ids into model indices. Shared by batch scoring and the services so
//! every entry point enforces the same limits with the same words.

use crate::catalogue::Catalogue;
use crate::wire::Scored;
use serde::{Deserialize, Serialize};

/// The limits on one query, the same at every entry point: the HTTP API
/// (`setlist-dispatcher`), batch scoring (`setlist recommend`) and whatever
/// service comes next, so a query refused by one is refused by all, in the
/// same words.
///
/// A playlist may be as long as a streaming service allows (10,000 songs);
/// the model reads only its last tracks, but all of them are excluded from
/// the answer. The tracks and the extra excludes together become one row's
/// exclude list in the wire format, so together they stay within its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// An HTTP body or one line of batch input.
    pub max_request_bytes: usize,
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
            max_request_bytes: 1024 * 1024,
            max_tracks: 10_000,
            max_exclude: 5_000,
            max_k: 1_000,
            max_id_bytes: 512,
            min_deadline_ms: 10,
            max_deadline_ms: 60_000,
        }
    }
}

/// One line of `setlist recommend --input`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchQuery {
    pub id: String,
    pub tracks: Vec<String>,
}

/// One line of `setlist recommend --output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchAnswer {
    pub id: String,
    pub recommendations: Vec<Recommendation>,
    /// True when no input track was known and the answer is the popularity ranking.
    pub fallback: bool,
    pub unknown_tracks: usize,
}

/// The output line for an input line that could not be used, so every input
/// line has exactly one output line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchError {
    pub id: Option<String>,
    pub line: usize,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub track: String,
    pub score: f32,
}

/// Why a query was refused; each message names the field and the limit.
/// `what` is the request's form: "body" (HTTP) or "line" (batch input).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("the {what} is {found} bytes, over the limit of {limit}")]
    TooLarge {
        what: &'static str,
        found: usize,
        limit: usize,
    },
    #[error("the {what} is not a valid request: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("field \"id\" is {found} bytes long, over the limit of {limit}")]
    IdTooLong { found: usize, limit: usize },
    #[error("field \"{field}\" holds an id of {found} bytes, over the limit of {limit}")]
    TrackIdTooLong {
        field: &'static str,
        found: usize,
        limit: usize,
    },
    #[error("field \"{field}\" has {found} tracks, over the limit of {limit}")]
    TooManyTracks {
        field: &'static str,
        found: usize,
        limit: usize,
    },
    #[error(
        "fields \"tracks\" and \"exclude\" hold {found} tracks together, over the limit of {limit}"
    )]
    TooManyExcluded { found: usize, limit: usize },
    #[error("field \"k\" is {found}; it must be between 1 and {limit}")]
    BadK { found: usize, limit: usize },
    #[error("field \"deadline_ms\" is {found}; it must be between {min} and {max}")]
    BadDeadline { found: u64, min: u64, max: u64 },
}

impl Limits {
    /// Refuses a body or line over `max_request_bytes` before it is parsed.
    pub fn check_size(&self, what: &'static str, bytes: usize) -> Result<(), QueryError> {
        if bytes > self.max_request_bytes {
            return Err(QueryError::TooLarge {
                what,
                found: bytes,
                limit: self.max_request_bytes,
            });
        }
        Ok(())
    }

    pub fn check_k(&self, k: usize) -> Result<(), QueryError> {
        if k == 0 || k > self.max_k {
            return Err(QueryError::BadK {
                found: k,
                limit: self.max_k,
            });
        }
        Ok(())
    }

    pub fn check_deadline_ms(&self, deadline_ms: u64) -> Result<(), QueryError> {
        if !(self.min_deadline_ms..=self.max_deadline_ms).contains(&deadline_ms) {
            return Err(QueryError::BadDeadline {
                found: deadline_ms,
                min: self.min_deadline_ms,
                max: self.max_deadline_ms,
            });
        }
        Ok(())
    }

    /// Checks what every query has: its tracks, the tracks it excludes on
    /// top, how many answers it wants and (where it has one) its deadline.
    pub fn check_query(
        &self,
        tracks: &[String],
        exclude: &[String],
        k: usize,
        deadline_ms: Option<u64>,
    ) -> Result<(), QueryError> {
        for (field, ids, limit) in [
            ("tracks", tracks, self.max_tracks),
            ("exclude", exclude, self.max_exclude),
        ] {
            if ids.len() > limit {
                return Err(QueryError::TooManyTracks {
                    field,
                    found: ids.len(),
                    limit,
                });
            }
        }
        let excluded = tracks.len() + exclude.len();
        let wire_limit = crate::wire::Limits::V1.max_exclude;
        if excluded > wire_limit {
            return Err(QueryError::TooManyExcluded {
                found: excluded,
                limit: wire_limit,
            });
        }
        for (field, ids) in [("tracks", tracks), ("exclude", exclude)] {
            if let Some(id) = ids.iter().find(|id| id.len() > self.max_id_bytes) {
                return Err(QueryError::TrackIdTooLong {
                    field,
                    found: id.len(),
                    limit: self.max_id_bytes,
                });
            }
        }
        self.check_k(k)?;
        if let Some(deadline_ms) = deadline_ms {
            self.check_deadline_ms(deadline_ms)?;
        }
        Ok(())
    }

    /// Parses and checks one JSONL line of batch input.
    pub fn parse_line(&self, line: &str, k: usize) -> Result<BatchQuery, QueryError> {
        self.check_size("line", line.len())?;
        let query: BatchQuery = serde_json::from_str(line).map_err(|e| QueryError::Invalid {
            what: "line",
            reason: e.to_string(),
        })?;
        if query.id.len() > self.max_id_bytes {
            return Err(QueryError::IdTooLong {
                found: query.id.len(),
                limit: self.max_id_bytes,
            });
        }
        self.check_query(&query.tracks, &[], k, None)?;
        Ok(query)
    }
}

/// A playlist's tracks as model indices, in order; unknown ids are counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub known: Vec<u32>,
    pub unknown: Vec<String>,
}

pub fn resolve(catalogue: &Catalogue, tracks: &[String]) -> Resolved {
    let mut resolved = Resolved {
        known: Vec::with_capacity(tracks.len()),
        unknown: Vec::new(),
    };
    for id in tracks {
        match catalogue.index_of(id) {
            Some(i) => resolved.known.push(i),
            None => resolved.unknown.push(id.clone()),
        }
    }
    resolved
}

/// Song ids and scores for model indices.
pub fn recommendations(catalogue: &Catalogue, scored: &[Scored]) -> Vec<Recommendation> {
    scored
        .iter()
        .filter_map(|s| {
            catalogue.song(s.track).map(|song| Recommendation {
                track: song.id.clone(),
                score: s.score,
            })
        })
        .collect()
}

/// Orders by score descending, then song index ascending.
pub fn sort_scored(list: &mut [Scored]) {
    list.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.track.cmp(&b.track)));
}

/// Merges output shards' top-k lists (each sorted) into the overall top `k`.
pub fn merge_top_k(lists: &[Vec<Scored>], k: usize) -> Vec<Scored> {
    let mut all: Vec<Scored> = lists.iter().flatten().copied().collect();
    sort_scored(&mut all);
    all.dedup_by_key(|s| s.track);
    all.truncate(k);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Song;

    fn small() -> Limits {
        Limits {
            max_request_bytes: 100,
            max_tracks: 2,
            max_exclude: 1,
            max_k: 10,
            max_id_bytes: 5,
            min_deadline_ms: 10,
            max_deadline_ms: 60_000,
        }
    }

    #[test]
    fn lines_are_checked_field_by_field() {
        let limits = small();
        assert_eq!(
            limits
                .parse_line(r#"{"id":"a","tracks":["x","y"]}"#, 3)
                .unwrap(),
            BatchQuery {
                id: "a".into(),
                tracks: vec!["x".into(), "y".into()]
            }
        );
        let err = |line: &str, k| limits.parse_line(line, k).unwrap_err().to_string();
        assert_eq!(
            err(r#"{"id":"a","tracks":["x","y","z"]}"#, 3),
            "field \"tracks\" has 3 tracks, over the limit of 2"
        );
        assert_eq!(
            err(r#"{"id":"abcdef","tracks":[]}"#, 3),
            "field \"id\" is 6 bytes long, over the limit of 5"
        );
        assert_eq!(
            err(r#"{"id":"a","tracks":["abcdef"]}"#, 3),
            "field \"tracks\" holds an id of 6 bytes, over the limit of 5"
        );
        assert_eq!(
            err(r#"{"id":"a","tracks":[]}"#, 11),
            "field \"k\" is 11; it must be between 1 and 10"
        );
        assert!(err(r#"{"id":"a"}"#, 3).starts_with("the line is not a valid request: "));
        assert!(err(r#"{"id":"a"}"#, 3).contains("missing field `tracks`"));
        assert!(err(r#"{"id":"a","tracks":[],"x":1}"#, 3).contains("unknown field `x`"));
        assert_eq!(
            err(&"x".repeat(101), 3),
            "the line is 101 bytes, over the limit of 100"
        );
    }

    #[test]
    fn queries_are_checked_field_by_field() {
        let limits = small();
        let ids = |n: usize| -> Vec<String> { (0..n).map(|i| i.to_string()).collect() };
        let err = |tracks: &[String], exclude: &[String], k, deadline| {
            limits
                .check_query(tracks, exclude, k, deadline)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(limits.check_query(&ids(2), &ids(1), 10, Some(10)), Ok(()));
        assert_eq!(
            err(&ids(1), &ids(2), 1, None),
            "field \"exclude\" has 2 tracks, over the limit of 1"
        );
        assert_eq!(
            err(&[], &["abcdef".into()], 1, None),
            "field \"exclude\" holds an id of 6 bytes, over the limit of 5"
        );
        assert_eq!(
            err(&[], &[], 0, None),
            "field \"k\" is 0; it must be between 1 and 10"
        );
        assert_eq!(
            err(&[], &[], 1, Some(9)),
            "field \"deadline_ms\" is 9; it must be between 10 and 60000"
        );
        assert_eq!(
            err(&[], &[], 1, Some(60_001)),
            "field \"deadline_ms\" is 60001; it must be between 10 and 60000"
        );
        assert_eq!(
            limits.check_size("body", 101).unwrap_err().to_string(),
            "the body is 101 bytes, over the limit of 100"
        );
    }

    #[test]
    fn tracks_and_excludes_together_fit_the_wire_limit() {
        let limits = Limits::default();
        let wire = crate::wire::Limits::V1.max_exclude;
        let ids = |n: usize| -> Vec<String> { (0..n).map(|i| i.to_string()).collect() };
        assert_eq!(
            limits.check_query(&ids(wire - 10), &ids(10), 1, None),
            Ok(())
        );
        assert_eq!(
            limits
                .check_query(&ids(wire - 10), &ids(11), 1, None)
                .unwrap_err()
                .to_string(),
            format!(
                "fields \"tracks\" and \"exclude\" hold {} tracks together, over the limit of {wire}",
                wire + 1
            )
        );
    }

    #[test]
    fn resolve_keeps_order_and_reports_unknown_ids() {
        let songs = ["a", "b"]
            .iter()
            .map(|id| Song {
                id: id.to_string(),
                title: String::new(),
                artist: String::new(),
                album: None,
                playlists: 1,
            })
            .collect();
        let catalogue = Catalogue::new(songs).unwrap();
        let r = resolve(&catalogue, &["b".into(), "zz".into(), "a".into()]);
        assert_eq!(
            r,
            Resolved {
                known: vec![1, 0],
                unknown: vec!["zz".into()]
            }
        );
    }
}
