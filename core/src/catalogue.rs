//! The songs a model scores, in model index order, with what a listener
//! needs to recognise them and how popular each was in training (the
//! popularity fallback's ranking).

use crate::wire::Scored;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufWriter, Write};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Song {
    pub id: String,
    pub title: String,
    pub artist: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub album: Option<String>,
    /// Training playlists that contain the song.
    pub playlists: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Catalogue {
    songs: Vec<Song>,
    index: HashMap<String, u32>,
    /// Model indices from most to least popular (ties by index).
    by_popularity: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("line {line}: song id \"{id}\" appears twice; ids must be unique")]
    Duplicate { line: usize, id: String },
    #[error("the catalogue has {found} songs, but the model scores {expected}")]
    Count { expected: u32, found: usize },
}

impl Catalogue {
    pub fn new(songs: Vec<Song>) -> Result<Catalogue, CatalogueError> {
        let mut index = HashMap::with_capacity(songs.len());
        for (i, song) in songs.iter().enumerate() {
            if index.insert(song.id.clone(), i as u32).is_some() {
                return Err(CatalogueError::Duplicate {
                    line: i + 1,
                    id: song.id.clone(),
                });
            }
        }
        let mut by_popularity: Vec<u32> = (0..songs.len() as u32).collect();
        by_popularity.sort_by_key(|&i| (std::cmp::Reverse(songs[i as usize].playlists), i));
        Ok(Catalogue {
            songs,
            index,
            by_popularity,
        })
    }

    pub fn len(&self) -> usize {
        self.songs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.songs.is_empty()
    }

    pub fn songs(&self) -> &[Song] {
        &self.songs
    }

    /// The songs, in model order, to change and make a new catalogue of.
    pub fn into_songs(self) -> Vec<Song> {
        self.songs
    }

    pub fn song(&self, index: u32) -> Option<&Song> {
        self.songs.get(index as usize)
    }

    pub fn index_of(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// The `k` most popular songs not in `exclude`, scored by the share of
    /// training playlists that hold them: the answer when the model cannot
    /// give one.
    ///
    /// Each candidate is looked up in `exclude` by binary search, so up to
    /// 10,000 excludes cost a few comparisons per candidate, not a scan.
    /// Callers that already hold `exclude` sorted (the dispatcher does) pay
    /// only a check; any other order (a playlist, in play order) is sorted
    /// into a copy first.
    pub fn popular(&self, k: usize, exclude: &[u32]) -> Vec<Scored> {
        let exclude: Cow<[u32]> = if exclude.is_sorted() {
            Cow::Borrowed(exclude)
        } else {
            let mut sorted = exclude.to_vec();
            sorted.sort_unstable();
            Cow::Owned(sorted)
        };
        let total = self
            .songs
            .iter()
            .map(|s| s.playlists)
            .max()
            .unwrap_or(1)
            .max(1) as f32;
        self.by_popularity
            .iter()
            .filter(|i| exclude.binary_search(i).is_err())
            .take(k)
            .map(|&i| Scored {
                track: i,
                score: self.songs[i as usize].playlists as f32 / total,
            })
            .collect()
    }

    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut out = BufWriter::new(fs::File::create(path)?);
        for song in &self.songs {
            serde_json::to_writer(&mut out, song)?;
            out.write_all(b"\n")?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    }

    /// Loads a catalogue that must hold exactly `expected` songs.
    pub fn load(path: &Path, expected: u32) -> Result<Catalogue, CatalogueError> {
        let reader = io::BufReader::new(fs::File::open(path)?);
        let mut songs = Vec::with_capacity(expected.min(1 << 20) as usize);
        for (i, line) in reader.lines().enumerate() {
            let line = line?;
            if songs.len() >= expected as usize {
                return Err(CatalogueError::Count {
                    expected,
                    found: songs.len() + 1,
                });
            }
            let song: Song = serde_json::from_str(&line).map_err(|e| CatalogueError::Line {
                line: i + 1,
                reason: e.to_string(),
            })?;
            songs.push(song);
        }
        if songs.len() != expected as usize {
            return Err(CatalogueError::Count {
                expected,
                found: songs.len(),
            });
        }
        Catalogue::new(songs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn song(id: &str, playlists: u32) -> Song {
        Song {
            id: id.into(),
            title: format!("{id} title"),
            artist: "a".into(),
            album: None,
            playlists,
        }
    }

    #[test]
    fn popular_ranks_by_playlists_and_skips_excludes() {
        let c =
            Catalogue::new(vec![song("a", 3), song("b", 9), song("c", 3), song("d", 1)]).unwrap();
        let top: Vec<u32> = c.popular(3, &[1]).iter().map(|s| s.track).collect();
        assert_eq!(top, vec![0, 2, 3]);
        assert_eq!(c.popular(1, &[])[0].score, 1.0);
    }

    #[test]
    fn popular_skips_excludes_in_any_order() {
        let songs: Vec<Song> = (0..100).map(|i| song(&format!("s{i}"), 1000 - i)).collect();
        let c = Catalogue::new(songs).unwrap();
        let sorted = [0, 2, 3, 50, 51];
        let shuffled = [51, 3, 0, 50, 2, 3];
        let top = |exclude: &[u32]| -> Vec<u32> {
            c.popular(4, exclude).iter().map(|s| s.track).collect()
        };
        assert_eq!(top(&sorted), vec![1, 4, 5, 6]);
        assert_eq!(top(&shuffled), top(&sorted));
        let everything: Vec<u32> = (0..100).collect();
        assert!(c.popular(4, &everything).is_empty());
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let err = Catalogue::new(vec![song("a", 1), song("a", 2)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: song id \"a\" appears twice; ids must be unique"
        );
    }

    #[test]
    fn save_and_load_round_trip_and_check_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalogue.jsonl");
        let c = Catalogue::new(vec![song("a", 1), song("b", 2)]).unwrap();
        c.save(&path).unwrap();
        assert_eq!(Catalogue::load(&path, 2).unwrap(), c);
        assert_eq!(
            Catalogue::load(&path, 3).unwrap_err().to_string(),
            "the catalogue has 2 songs, but the model scores 3"
        );
        assert!(matches!(
            Catalogue::load(&path, 1).unwrap_err(),
            CatalogueError::Count { .. }
        ));
        fs::write(&path, "{\"id\": 1}\n").unwrap();
        assert!(
            Catalogue::load(&path, 1)
                .unwrap_err()
                .to_string()
                .starts_with("line 1: ")
        );
    }
}
