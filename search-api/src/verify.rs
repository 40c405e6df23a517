//! Which songs of an uploaded playlist the catalogue knows, and how each
//! was recognised, in this order:
//!
//! 1. **id**: the entry's id is a catalogue id (`spotify:track:…` in a
//!    model trained on Spotify data);
//! 2. **title_artist**: its title and artist, folded
//!    (`setlist_core::playlist_file::fold`), equal a song's;
//! 3. **fuzzy**: among the song index's candidates (songs that share most of
//!    the entry's words, allowing typos), one whose folded title and artist
//!    are each within one edit in five characters of the entry's, after
//!    dropping what uploads add to titles ("(Remastered 2009)", " - Live").
//!
//! Anything else is not recognised, with the reason.

use crate::index::SongIndex;
use serde::Serialize;
use setlist_core::catalogue::Catalogue;
use setlist_core::playlist_file::{Entry, PlaylistFile, fold};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// How an entry was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchedBy {
    Id,
    TitleArtist,
    Fuzzy,
}

impl MatchedBy {
    pub const ALL: [MatchedBy; 3] = [MatchedBy::Id, MatchedBy::TitleArtist, MatchedBy::Fuzzy];

    pub fn as_str(self) -> &'static str {
        match self {
            MatchedBy::Id => "id",
            MatchedBy::TitleArtist => "title_artist",
            MatchedBy::Fuzzy => "fuzzy",
        }
    }
}

/// What one entry came to: the song and how, or why not.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Recognised { song: u32, by: MatchedBy },
    NotRecognised { reason: String },
}

/// Songs by folded (title, artist), hashed: 16 bytes a song, where the
/// folded strings themselves would cost a hundred. A hash hit is confirmed
/// against the song's own text.
pub struct TitleArtistLookup {
    songs: HashMap<u64, u32>,
}

fn key(title: &str, artist: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (title, artist).hash(&mut hasher);
    hasher.finish()
}

impl TitleArtistLookup {
    pub fn new(catalogue: &Catalogue) -> TitleArtistLookup {
        let mut songs = HashMap::with_capacity(catalogue.len());
        for (i, song) in catalogue.songs().iter().enumerate() {
            // The most popular song of a (title, artist) pair wins: the
            // catalogue holds the same recording under several ids
            // (singles, albums, compilations).
            songs
                .entry(key(&fold(&song.title), &fold(&song.artist)))
                .and_modify(|held: &mut u32| {
                    if catalogue.songs()[*held as usize].playlists < song.playlists {
                        *held = i as u32;
                    }
                })
                .or_insert(i as u32);
        }
        TitleArtistLookup { songs }
    }

    fn find(&self, catalogue: &Catalogue, title: &str, artist: &str) -> Option<u32> {
        let song = *self.songs.get(&key(title, artist))?;
        let held = catalogue.song(song)?;
        (fold(&held.title) == title && fold(&held.artist) == artist).then_some(song)
    }
}

/// What uploads append to titles that the catalogue's titles lack:
/// "(Remastered 2009)", "[Live]", " - Radio Edit", "feat. …".
fn core_title(title: &str) -> String {
    let mut kept = String::with_capacity(title.len());
    let mut depth = 0usize;
    for c in title.chars() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => kept.push(c),
            _ => {}
        }
    }
    let lower = kept.to_lowercase();
    let cut = [" - ", " – ", " feat. ", " ft. ", " featuring "]
        .iter()
        .filter_map(|marker| lower.find(marker))
        .min()
        .unwrap_or(kept.len());
    // `lower` and `kept` can differ in length only for letters whose
    // lowercase is longer; cut on a boundary of `kept` either way.
    let mut cut = cut.min(kept.len());
    while !kept.is_char_boundary(cut) {
        cut -= 1;
    }
    kept[..cut].trim().to_string()
}

/// Edit distance between two strings, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Whether `found` is `wanted` but for a few typos: at most one edit in
/// five characters.
fn close(wanted: &str, found: &str) -> bool {
    let longest = wanted.chars().count().max(found.chars().count());
    longest > 0 && distance(wanted, found) * 5 <= longest
}

/// How many candidates the index is asked for per entry.
const CANDIDATES: usize = 5;

pub fn verify_entry(
    entry: &Entry,
    catalogue: &Catalogue,
    lookup: &TitleArtistLookup,
    index: &SongIndex,
) -> Verdict {
    if let Some(song) = entry.id.as_deref().and_then(|id| catalogue.index_of(id)) {
        return Verdict::Recognised {
            song,
            by: MatchedBy::Id,
        };
    }
    let Some(title) = entry.title.as_deref() else {
        return Verdict::NotRecognised {
            reason: match &entry.id {
                Some(id) => format!(
                    "the id {id} is not in this catalogue, and the entry has no title to look for"
                ),
                None => "the entry has neither an id nor a title".into(),
            },
        };
    };
    let artist = entry.artist.as_deref().unwrap_or("");
    let (title_folded, artist_folded) = (fold(title), fold(artist));
    if !artist_folded.is_empty()
        && let Some(song) = lookup.find(catalogue, &title_folded, &artist_folded)
    {
        return Verdict::Recognised {
            song,
            by: MatchedBy::TitleArtist,
        };
    }
    let core = fold(&core_title(title));
    let core = if core.is_empty() { title_folded } else { core };
    let candidates = index
        .candidates(&format!("{core} {artist_folded}"), CANDIDATES)
        .unwrap_or_default();
    let found = candidates.iter().find_map(|&candidate| {
        let song = catalogue.song(candidate)?;
        let title_ok = close(&core, &fold(&core_title(&song.title)));
        let artist_ok = artist_folded.is_empty() || close(&artist_folded, &fold(&song.artist));
        (title_ok && artist_ok).then_some(candidate)
    });
    match found {
        Some(song) => Verdict::Recognised {
            song,
            by: MatchedBy::Fuzzy,
        },
        None => Verdict::NotRecognised {
            reason: if artist_folded.is_empty() {
                format!("no song titled \"{title}\" in this catalogue (an artist would help)")
            } else {
                format!("no song \"{title}\" by {artist} in this catalogue, nor one close to it")
            },
        },
    }
}

/// Every entry of `file`, in file order, with its verdict.
pub fn verify(
    file: &PlaylistFile,
    catalogue: &Catalogue,
    lookup: &TitleArtistLookup,
    index: &SongIndex,
) -> Vec<Vec<Verdict>> {
    file.playlists
        .iter()
        .map(|playlist| {
            playlist
                .entries
                .iter()
                .map(|entry| verify_entry(entry, catalogue, lookup, index))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use setlist_core::catalogue::Song;

    fn catalogue() -> Catalogue {
        let song = |id: &str, title: &str, artist: &str, playlists| Song {
            id: id.into(),
            title: title.into(),
            artist: artist.into(),
            album: None,
            playlists,
        };
        Catalogue::new(vec![
            song("spotify:track:0", "Halo", "Beyoncé", 10),
            song("spotify:track:1", "Let It Be", "The Beatles", 20),
            song("spotify:track:2", "Let It Be", "The Beatles", 30),
            song("spotify:track:3", "Don't Stop Me Now", "Queen", 5),
            song("spotify:track:4", "Bohemian Rhapsody", "Queen", 50),
        ])
        .unwrap()
    }

    fn entry(id: Option<&str>, title: Option<&str>, artist: Option<&str>) -> Entry {
        Entry {
            line: 1,
            id: id.map(Into::into),
            title: title.map(Into::into),
            artist: artist.map(Into::into),
            album: None,
            text: String::new(),
        }
    }

    #[test]
    fn entries_are_recognised_by_id_then_title_and_artist_then_fuzzily() {
        let catalogue = catalogue();
        let lookup = TitleArtistLookup::new(&catalogue);
        let index = SongIndex::build(None, &catalogue, &|_, _| {}).unwrap();
        let check = |e: Entry| verify_entry(&e, &catalogue, &lookup, &index);
        assert_eq!(
            check(entry(Some("spotify:track:3"), Some("whatever"), None)),
            Verdict::Recognised {
                song: 3,
                by: MatchedBy::Id
            }
        );
        // Case, accents and punctuation fold; the more popular of two
        // identical recordings wins.
        assert_eq!(
            check(entry(None, Some("HALO"), Some("Beyonce"))),
            Verdict::Recognised {
                song: 0,
                by: MatchedBy::TitleArtist
            }
        );
        assert_eq!(
            check(entry(
                Some("spotify:track:unknown"),
                Some("Let it be"),
                Some("the beatles")
            )),
            Verdict::Recognised {
                song: 2,
                by: MatchedBy::TitleArtist
            }
        );
        assert_eq!(
            check(entry(
                None,
                Some("Bohemian Rapsody - Remastered 2011"),
                Some("Queen")
            )),
            Verdict::Recognised {
                song: 4,
                by: MatchedBy::Fuzzy
            }
        );
        assert_eq!(
            check(entry(
                None,
                Some("Dont Stop Me Now (Live at Wembley)"),
                Some("Quen")
            )),
            Verdict::Recognised {
                song: 3,
                by: MatchedBy::Fuzzy
            }
        );
        let Verdict::NotRecognised { reason } =
            check(entry(None, Some("Imagine"), Some("John Lennon")))
        else {
            panic!("not in the catalogue")
        };
        assert_eq!(
            reason,
            "no song \"Imagine\" by John Lennon in this catalogue, nor one close to it"
        );
        let Verdict::NotRecognised { reason } = check(entry(Some("spotify:track:x"), None, None))
        else {
            panic!("nothing to look for")
        };
        assert!(reason.contains("spotify:track:x"), "{reason}");
        // A close title by another artist is not a match.
        assert!(matches!(
            check(entry(None, Some("Halo"), Some("Depeche Mode"))),
            Verdict::NotRecognised { .. }
        ));
    }

    #[test]
    fn titles_lose_what_uploads_add_to_them() {
        assert_eq!(core_title("Halo (Remastered 2009) [Live]"), "Halo");
        assert_eq!(core_title("Let It Be - Remastered"), "Let It Be");
        assert_eq!(core_title("Song feat. Somebody"), "Song");
        assert_eq!(core_title("(Untitled)"), "");
        assert_eq!(distance("beatles", "beatls"), 1);
        assert!(close("bohemian rhapsody", "bohemian rapsody"));
        assert!(!close("halo", "hello"));
    }
}
