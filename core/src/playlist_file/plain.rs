//! Plain text, one song per line:
//!
//! ```text
//! # Road trip
//! Daft Punk - One More Time
//! 2. Sigur Rós – Hoppípolla
//! https://open.spotify.com/track/4uLU6hMCjMI75M1A2tKUQC?si=x
//! ```
//!
//! "Artist - Title" splits at the first ` - `, ` – ` or ` — `; a leading
//! list number ("2. ", "2) ") is dropped. A line that is only a Spotify track
//! URI, link or bare id is an entry with that id. Blank lines and `#` lines
//! are ignored. Other lines are skipped with the reason: a line without a
//! dash (including "Title by Artist", which cannot be told from "Stand by
//! Me"), a file path, a link to something other than a song. A file with no
//! song at all is not a playlist.

use super::ids::{self, Spotify};
use super::lines::{lines, looks_like_path, split_artist_title};
use super::{Collector, Label, PlaylistFileError, Song};

pub(super) fn read(text: &str, c: &mut Collector<'_>) -> Result<(), PlaylistFileError> {
    c.start(None)?;
    let mut recognised = 0usize;
    for (n, raw) in lines(text) {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(line) = c.field(n, Label::Text("the line"), line)? else {
            continue;
        };
        match ids::classify(&line) {
            Some(Spotify::Track(uri)) => {
                recognised += 1;
                let song = Song {
                    line: n,
                    id: Some(uri),
                    text: Some(line),
                    ..Song::default()
                };
                c.song(song, "");
                continue;
            }
            Some(Spotify::Local {
                uri,
                artist,
                album,
                title,
            }) => {
                recognised += 1;
                let field = |v: &str| c.field(n, Label::Text("the line"), v);
                let song = Song {
                    line: n,
                    id: Some(uri),
                    title: field(&title)?,
                    artist: field(&artist)?,
                    album: field(&album)?,
                    text: Some(line.clone()),
                };
                c.song(song, "");
                continue;
            }
            Some(Spotify::Other(kind)) => {
                recognised += 1;
                c.skip(n, Spotify::reason(&kind));
                continue;
            }
            None => {}
        }
        let body = without_number(&line);
        if looks_like_path(body) {
            c.skip(
                n,
                "a file path, not \"Artist - Title\": upload the M3U playlist itself, or write the song's name",
            );
            continue;
        }
        match split_artist_title(body) {
            Some((artist, title)) if !title.is_empty() => {
                recognised += 1;
                let song = Song {
                    line: n,
                    id: None,
                    title: Some(title.to_owned()),
                    artist: (!artist.is_empty()).then(|| artist.to_owned()),
                    album: None,
                    text: Some(line.clone()),
                };
                c.song(song, "");
            }
            _ => c.skip(
                n,
                "no \" - \" between artist and title: write the line as \"Artist - Title\"",
            ),
        }
    }
    if recognised == 0 && !c.over_limit() {
        return Err(PlaylistFileError::NotAPlaylist {
            hint: Some("no line reads \"Artist - Title\" or is a Spotify link".to_owned()),
        });
    }
    Ok(())
}

/// The line without a leading list number: "12. ", "12) ", "12 - " stays
/// (it may be a band: "311 - Amber").
fn without_number(line: &str) -> &str {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 4 {
        return line;
    }
    let rest = line.get(digits..).unwrap_or_default();
    match rest.strip_prefix(". ").or_else(|| rest.strip_prefix(") ")) {
        Some(body) => body.trim_start(),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Entry, Format, Limits, PlaylistFileError, parse};
    use super::without_number;

    fn entry(
        line: usize,
        artist: Option<&str>,
        title: Option<&str>,
        id: Option<&str>,
        text: &str,
    ) -> Entry {
        Entry {
            line,
            id: id.map(str::to_owned),
            title: title.map(str::to_owned),
            artist: artist.map(str::to_owned),
            album: None,
            text: text.to_owned(),
        }
    }

    #[test]
    fn reads_artist_title_lines_and_spotify_links() {
        let file = "# My mix\r\n\r\nDaft Punk - One More Time\r\n2. Sigur Rós – Hoppípolla\r\n  Jay-Z — \"99 Problems\"  \r\nhttps://open.spotify.com/track/4uLU6hMCjMI75M1A2tKUQC?si=x\r\n4uLU6hMCjMI75M1A2tKUQC\r\nStand by Me\r\nspotify:album:1DFixLWuPkv3KT3TnV35m3\r\nC:\\Music\\A - B.mp3\r\n";
        let got = parse(file.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(got.format, Format::PlainText);
        let uri = Some("spotify:track:4uLU6hMCjMI75M1A2tKUQC");
        let expected = [
            entry(
                3,
                Some("Daft Punk"),
                Some("One More Time"),
                None,
                "Daft Punk - One More Time",
            ),
            entry(
                4,
                Some("Sigur Rós"),
                Some("Hoppípolla"),
                None,
                "2. Sigur Rós – Hoppípolla",
            ),
            entry(
                5,
                Some("Jay-Z"),
                Some("\"99 Problems\""),
                None,
                "Jay-Z — \"99 Problems\"",
            ),
            entry(
                6,
                None,
                None,
                uri,
                "https://open.spotify.com/track/4uLU6hMCjMI75M1A2tKUQC?si=x",
            ),
            entry(7, None, None, uri, "4uLU6hMCjMI75M1A2tKUQC"),
        ];
        let entries = &got.playlists[0].entries;
        assert_eq!(entries.len(), expected.len());
        for (got, want) in entries.iter().zip(&expected) {
            assert_eq!(got, want);
        }
        let skipped: Vec<(usize, &str)> = got
            .skipped
            .iter()
            .map(|s| (s.line, s.reason.as_str()))
            .collect();
        assert_eq!(
            skipped,
            [
                (
                    8,
                    "no \" - \" between artist and title: write the line as \"Artist - Title\""
                ),
                (
                    9,
                    "a link to a Spotify album, not a song: list the album's songs"
                ),
                (
                    10,
                    "a file path, not \"Artist - Title\": upload the M3U playlist itself, or write the song's name"
                ),
            ]
        );
    }

    #[test]
    fn text_that_is_no_playlist_is_refused() {
        for text in [
            "Dear diary,\nthis is not a playlist.\n",
            "# only a comment\n",
            "hello",
        ] {
            let err = parse(text.as_bytes(), &Limits::default()).unwrap_err();
            assert!(
                matches!(err, PlaylistFileError::NotAPlaylist { .. }),
                "{text:?}: {err}"
            );
            assert!(err.to_string().starts_with("the content is not a playlist format Setlist reads (Spotify account data export, Spotify Web API playlist tracks, MPD slice JSON, Exportify CSV, M3U/M3U8, or \"Artist - Title\" lines); no line reads"), "{err}");
        }
    }

    #[test]
    fn limits_on_lines() {
        let limits = Limits {
            max_field_bytes: 10,
            max_entries: 2,
            ..Limits::default()
        };
        let err = parse("A - B\nAbcde - Fghij\n".as_bytes(), &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: the line is 13 bytes; the limit is 10: shorten it or remove that song"
        );
        let err = parse("A - B\nC - D\nE - F\nG\n".as_bytes(), &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the file holds 4 entries; the limit is 2: split the playlist into files of at most 2 songs"
        );
    }

    #[test]
    fn list_numbers_are_dropped_but_not_band_names() {
        assert_eq!(without_number("12. A - B"), "A - B");
        assert_eq!(without_number("3) A - B"), "A - B");
        assert_eq!(without_number("311 - Amber"), "311 - Amber");
        assert_eq!(without_number("1999"), "1999");
        assert_eq!(without_number("12345. A"), "12345. A");
    }
}
