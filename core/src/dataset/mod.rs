//! Playlists and the song catalogue in Setlist's internal form.
//!
//! A [`Dataset`] is a catalogue of [`Track`]s and a list of [`Playlist`]s
//! whose entries are indices into the catalogue, in play order. It comes from
//! real data through [`import`], or from [`synth::generate`], and lives on
//! disk as a folder (see [`Dataset::save`] and `docs/data-formats.md`).

mod error;
pub mod import;
mod io;
mod store;
pub mod synth;

pub use error::{DatasetError, Location, Problem};
pub use import::{Format, ImportOptions, SessionOptions, import};
pub use synth::{SynthConfig, generate};

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// The longest id, title, artist, album or playlist name, in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;
/// The most tracks one playlist may hold.
pub const MAX_PLAYLIST_TRACKS: usize = 100_000;
/// The most distinct tracks one catalogue may hold; far above any real
/// catalogue Setlist can train on, and far below where `u32` indices run out.
pub const MAX_TRACKS: usize = 50_000_000;
/// The largest single input file, in bytes.
pub const MAX_FILE_BYTES: u64 = 4 << 30;
/// The longest line of a CSV or TSV input, in bytes.
pub const MAX_CSV_LINE_BYTES: usize = 64 << 10;
/// The longest line of `tracks.jsonl` or `playlists.jsonl`, in bytes: a
/// playlist at [`MAX_PLAYLIST_TRACKS`] with ten-digit indices fits well.
pub const MAX_JSONL_LINE_BYTES: usize = 4 << 20;

/// One song of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    /// Unique in the catalogue: a Spotify URI, a MusicBrainz id, or a made-up
    /// key where the source has none.
    pub id: String,
    pub title: String,
    pub artist: String,
    pub album: Option<String>,
}

/// One playlist or listening session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Playlist {
    pub id: String,
    pub name: Option<String>,
    /// Indices into [`Dataset::tracks`], in play order.
    pub tracks: Vec<u32>,
}

/// A catalogue and the playlists drawn from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    /// Where the data came from, for people: the import's inputs or the
    /// generator's settings.
    pub source: String,
    pub tracks: Vec<Track>,
    pub playlists: Vec<Playlist>,
}

/// Sizes of a data set, as `setlist data stats` prints them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub tracks: usize,
    pub playlists: usize,
    /// Playlist entries, repeats included.
    pub entries: usize,
    pub min_length: usize,
    pub median_length: f64,
    pub max_length: usize,
    /// Distinct artist names in the catalogue.
    pub artists: usize,
}

impl Dataset {
    /// The number of playlist entries, repeats included.
    pub fn entries(&self) -> usize {
        self.playlists.iter().map(|p| p.tracks.len()).sum()
    }

    pub fn stats(&self) -> Stats {
        let mut lengths: Vec<usize> = self.playlists.iter().map(|p| p.tracks.len()).collect();
        lengths.sort_unstable();
        let median_length = match lengths.len() {
            0 => 0.0,
            n if n % 2 == 1 => lengths[n / 2] as f64,
            n => (lengths[n / 2 - 1] + lengths[n / 2]) as f64 / 2.0,
        };
        let artists: HashSet<&str> = self.tracks.iter().map(|t| t.artist.as_str()).collect();
        Stats {
            tracks: self.tracks.len(),
            playlists: self.playlists.len(),
            entries: lengths.iter().sum(),
            min_length: lengths.first().copied().unwrap_or(0),
            median_length,
            max_length: lengths.last().copied().unwrap_or(0),
            artists: artists.len(),
        }
    }
}

/// Assembles a [`Dataset`], giving each distinct track id one catalogue
/// index.
#[derive(Debug, Default)]
pub struct DatasetBuilder {
    source: String,
    tracks: Vec<Track>,
    index: HashMap<String, u32>,
    playlists: Vec<Playlist>,
}

impl DatasetBuilder {
    pub fn new(source: impl Into<String>) -> Self {
        DatasetBuilder {
            source: source.into(),
            ..Self::default()
        }
    }

    /// The catalogue index of track `id`, adding it on first sight. Sources
    /// often leave a name out on some rows, so the first non-empty title,
    /// artist and album seen for an id are kept; an empty album is no album.
    ///
    /// # Panics
    /// If the catalogue would outgrow `u32` indices; importers stop at
    /// [`MAX_TRACKS`] long before.
    pub fn track(&mut self, id: &str, title: &str, artist: &str, album: Option<&str>) -> u32 {
        let album = album.filter(|a| !a.is_empty());
        if let Some(&index) = self.index.get(id) {
            let track = &mut self.tracks[index as usize];
            if track.title.is_empty() {
                title.clone_into(&mut track.title);
            }
            if track.artist.is_empty() {
                artist.clone_into(&mut track.artist);
            }
            if track.album.is_none() {
                track.album = album.map(str::to_owned);
            }
            return index;
        }
        let index =
            u32::try_from(self.tracks.len()).expect("a catalogue has fewer than 2^32 tracks");
        self.tracks.push(Track {
            id: id.to_owned(),
            title: title.to_owned(),
            artist: artist.to_owned(),
            album: album.map(str::to_owned),
        });
        self.index.insert(id.to_owned(), index);
        index
    }

    /// Adds a playlist of catalogue indices returned by [`Self::track`].
    pub fn playlist(&mut self, id: impl Into<String>, name: Option<String>, tracks: Vec<u32>) {
        self.playlists.push(Playlist {
            id: id.into(),
            name,
            tracks,
        });
    }

    /// The number of distinct tracks so far.
    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }

    pub fn finish(self) -> Dataset {
        Dataset {
            source: self.source,
            tracks: self.tracks,
            playlists: self.playlists,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_interns_track_ids_and_keeps_first_non_empty_metadata() {
        let mut b = DatasetBuilder::new("test");
        let a = b.track("a", "", "Artist", Some(""));
        let x = b.track("x", "X", "Y", None);
        assert_eq!(b.track("a", "Title", "Other", Some("Album")), a);
        assert_eq!(b.track("a", "Later", "Later", Some("Later")), a);
        b.playlist("p", Some("P".into()), vec![a, x, a]);
        let d = b.finish();
        assert_eq!((a, x), (0, 1));
        assert_eq!(
            d.tracks[0],
            Track {
                id: "a".into(),
                title: "Title".into(),
                artist: "Artist".into(),
                album: Some("Album".into())
            }
        );
        assert_eq!(d.tracks[1].album, None);
        assert_eq!(d.playlists[0].tracks, vec![0, 1, 0]);
    }

    #[test]
    fn stats_count_lengths_and_artists() {
        let mut b = DatasetBuilder::new("test");
        let t: Vec<u32> = (0..5)
            .map(|i| b.track(&i.to_string(), "t", ["A", "B"][i % 2], None))
            .collect();
        b.playlist("1", None, vec![t[0]]);
        b.playlist("2", None, t.clone());
        b.playlist("3", None, vec![t[1], t[2]]);
        b.playlist("4", None, vec![t[1], t[2], t[3]]);
        let s = b.finish().stats();
        assert_eq!(
            s,
            Stats {
                tracks: 5,
                playlists: 4,
                entries: 11,
                min_length: 1,
                median_length: 2.5,
                max_length: 5,
                artists: 2
            }
        );
        let empty = DatasetBuilder::new("empty").finish().stats();
        assert_eq!(
            (empty.min_length, empty.median_length, empty.max_length),
            (0, 0.0, 0)
        );
    }
}
