//! Properties: [`parse`] never panics and keeps its invariants
//! ([`fuzz_parse`]) on arbitrary bytes, on text made of each format's own
//! characters, and on valid files of every format cut short or with bytes
//! changed; and random playlists rendered in each format parse back to the
//! same songs.

use super::render::{Track, render};
use super::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

/// Letters of several scripts, and the punctuation song names have; no
/// comma (Exportify's artist separator), no dash, no '#', no '.'.
const ARTIST: &str = "[A-Za-zÀ-ÿ東京ß][A-Za-z0-9À-ÿ東京ß&'!?()\" ]{0,16}[A-Za-z0-9À-ÿ東京ß!?)]";
/// Titles may also hold commas, semicolons and " - ".
const TITLE: &str =
    "[A-Za-z0-9À-ÿ東京ß&'!?()\"][A-Za-z0-9À-ÿ東京ß&'!?()\", ;-]{0,24}[A-Za-z0-9À-ÿ東京ß!?)\"]";

fn tracks() -> impl Strategy<Value = Vec<Track>> {
    let track = (
        ARTIST,
        TITLE,
        proptest::option::of(TITLE),
        proptest::option::of("[A-Za-z0-9]{22}"),
    )
        .prop_map(|(artist, title, album, id)| Track {
            title,
            artist,
            album,
            id,
        });
    vec(track, 1..12)
}

fn format() -> impl Strategy<Value = Format> {
    proptest::sample::select(Format::ALL.to_vec())
}

/// Replaces, inserts or deletes a byte at each edit's place.
fn damage(mut bytes: Vec<u8>, edits: &[(Index, u8, u8)]) -> Vec<u8> {
    for (at, byte, kind) in edits {
        let i = at.index(bytes.len() + 1);
        match (kind % 3, i < bytes.len()) {
            (0, true) => bytes[i] = *byte,
            (1, _) => bytes.insert(i, *byte),
            (2, true) => {
                bytes.remove(i);
            }
            _ => {}
        }
    }
    bytes
}

/// What each format keeps of a track.
fn kept(format: Format, t: &Track) -> (Option<String>, String, String, Option<String>) {
    let id = match format {
        Format::PlainText => None,
        _ => t.uri(),
    };
    let album = match format {
        Format::M3u | Format::PlainText => None,
        _ => t.album.clone(),
    };
    (id, t.title.clone(), t.artist.clone(), album)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_playlists_read_back_the_same_in_every_format(tracks in tracks(), format in format()) {
        let text = render(format, "Mix", &tracks);
        let file = parse(text.as_bytes(), &Limits::default());
        prop_assert!(file.is_ok(), "{}: {:?}\n{}", format, file, text);
        let file = file.unwrap_or_else(|_| unreachable!());
        prop_assert_eq!(file.format, format);
        prop_assert!(file.skipped.is_empty(), "{:?}", file.skipped);
        let got: Vec<_> = file
            .entries()
            .map(|e| {
                (
                    e.id.clone(),
                    e.title.clone().unwrap_or_default(),
                    e.artist.clone().unwrap_or_default(),
                    e.album.clone(),
                )
            })
            .collect();
        let want: Vec<_> = tracks.iter().map(|t| kept(format, t)).collect();
        prop_assert_eq!(got, want);
        fuzz_parse(text.as_bytes());
    }

    #[test]
    fn damaged_files_of_every_format_never_panic(
        tracks in tracks(),
        format in format(),
        cut in any::<Index>(),
        edits in vec((any::<Index>(), any::<u8>(), any::<u8>()), 0..6),
        utf16 in any::<bool>(),
    ) {
        let text = render(format, "Mix", &tracks);
        let bytes = if utf16 {
            let mut le = vec![0xFF, 0xFE];
            le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
            le
        } else {
            text.into_bytes()
        };
        let end = cut.index(bytes.len() + 1);
        let cut_short = bytes[..end].to_vec();
        fuzz_parse(&cut_short);
        fuzz_parse(&damage(bytes.clone(), &edits));
        fuzz_parse(&damage(cut_short, &edits));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048)) {
        fuzz_parse(&bytes);
    }

    #[test]
    fn text_of_format_characters_never_panics(
        text in "[{}\\[\\]\":,\\\\ \n\r\t0-9a-zA-Z_#.;/-]{0,400}",
        head in proptest::sample::select(vec![
            "", "{", "[", "{\"playlists\": [", "{\"items\": [", "{\"tracks\": ",
            "#EXTM3U\n", "#EXTINF:1,", "Track URI,Track Name\n", "Track Name;Artist Name(s)\n",
            "A - B\n", "/music/", "spotify:", "https://open.spotify.com/",
        ]),
    ) {
        fuzz_parse(format!("{head}{text}").as_bytes());
    }
}
