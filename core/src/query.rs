//! Recommendation queries in their JSON forms, their limits, and turning
//! song ids into model indices. Shared by batch scoring and the services so
//! every entry point enforces the same limits with the same words.

use crate::catalogue::Catalogue;
use crate::wire::Scored;
use serde::{Deserialize, Serialize};

/// Limits on one query. A playlist longer than `max_tracks` is not a
/// playlist; the model reads only its last tracks anyway, but all of them
/// are excluded from the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_tracks: usize,
    pub max_k: usize,
    pub max_id_bytes: usize,
    pub max_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tracks: 10_000,
            max_k: 1_000,
            max_id_bytes: 512,
            max_line_bytes: 4 * 1024 * 1024,
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("the line is {found} bytes, over the limit of {limit}")]
    LineTooLong { found: usize, limit: usize },
    #[error("{0}")]
    Json(String),
    #[error("field \"{field}\" is {found} bytes long, over the limit of {limit}")]
    IdTooLong {
        field: &'static str,
        found: usize,
        limit: usize,
    },
    #[error("field \"tracks\" has {found} tracks, over the limit of {limit}")]
    TooManyTracks { found: usize, limit: usize },
    #[error("field \"k\" is {found}; it must be between 1 and {limit}")]
    BadK { found: usize, limit: usize },
}

impl Limits {
    /// Checks a query's id, tracks and k against the limits.
    pub fn check(&self, id: &str, tracks: &[String], k: usize) -> Result<(), QueryError> {
        if id.len() > self.max_id_bytes {
            return Err(QueryError::IdTooLong {
                field: "id",
                found: id.len(),
                limit: self.max_id_bytes,
            });
        }
        if tracks.len() > self.max_tracks {
            return Err(QueryError::TooManyTracks {
                found: tracks.len(),
                limit: self.max_tracks,
            });
        }
        if let Some(t) = tracks.iter().find(|t| t.len() > self.max_id_bytes) {
            return Err(QueryError::IdTooLong {
                field: "tracks",
                found: t.len(),
                limit: self.max_id_bytes,
            });
        }
        if k == 0 || k > self.max_k {
            return Err(QueryError::BadK {
                found: k,
                limit: self.max_k,
            });
        }
        Ok(())
    }

    /// Parses and checks one JSONL line of batch input.
    pub fn parse_line(&self, line: &str, k: usize) -> Result<BatchQuery, QueryError> {
        if line.len() > self.max_line_bytes {
            return Err(QueryError::LineTooLong {
                found: line.len(),
                limit: self.max_line_bytes,
            });
        }
        let query: BatchQuery =
            serde_json::from_str(line).map_err(|e| QueryError::Json(e.to_string()))?;
        self.check(&query.id, &query.tracks, k)?;
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

    #[test]
    fn lines_are_checked_field_by_field() {
        let limits = Limits {
            max_tracks: 2,
            max_k: 10,
            max_id_bytes: 5,
            max_line_bytes: 100,
        };
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
            "field \"tracks\" is 6 bytes long, over the limit of 5"
        );
        assert_eq!(
            err(r#"{"id":"a","tracks":[]}"#, 11),
            "field \"k\" is 11; it must be between 1 and 10"
        );
        assert!(err(r#"{"id":"a"}"#, 3).contains("missing field `tracks`"));
        assert!(err(r#"{"id":"a","tracks":[],"x":1}"#, 3).contains("unknown field `x`"));
        assert_eq!(
            err(&"x".repeat(101), 3),
            "the line is 101 bytes, over the limit of 100"
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
