//! M3U and M3U8 (the same text, M3U8 being UTF-8):
//!
//! ```text
//! #EXTM3U
//! #PLAYLIST:Road trip
//! #EXTINF:320,Daft Punk - One More Time
//! C:\Music\Daft Punk\Discovery\01 One More Time.mp3
//! /music/Sigur Rós - Hoppípolla.flac
//! ```
//!
//! An `#EXTINF` line gives the entry (its line, and "Artist - Title" after the
//! first comma outside quotes, so `tvg-name="a, b"` attributes are fine); the
//! path after it only adds a Spotify id when it is one. A path without
//! `#EXTINF` gives an entry when its file name is "Artist - Title" (a leading
//! track number dropped) or it is a Spotify link, and is skipped otherwise.
//! An `#EXTINF` with no path after it (the file ends, or another `#EXTINF`
//! follows) still names its song, so it is an entry. `#PLAYLIST:` names the
//! playlist; other `#` lines are comments.

use super::ids::{self, Spotify};
use super::lines::{artist_title_of_file, file_stem, lines, split_artist_title};
use super::{Collector, Label, PlaylistFileError, Song};

/// Whether the first non-blank line makes the file M3U.
pub(super) fn is_header(first: &str) -> bool {
    ["#EXTM3U", "#EXTINF:", "#PLAYLIST:"]
        .iter()
        .any(|tag| starts_with_ci(first, tag))
}

fn starts_with_ci(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// An `#EXTINF` waiting for its path.
struct Pending {
    line: usize,
    title: Option<String>,
}

pub(super) fn read(text: &str, c: &mut Collector<'_>) -> Result<(), PlaylistFileError> {
    let playlist = c.start(None)?;
    let mut named = false;
    let mut pending: Option<Pending> = None;
    for (n, line) in lines(text) {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if starts_with_ci(line, "#EXTINF:") {
            if let Some(p) = pending.take() {
                emit(c, p, None)?;
            }
            let title = extinf_title(line.get("#EXTINF:".len()..).unwrap_or_default());
            pending = Some(Pending {
                line: n,
                title: c.field(n, Label::Text("the #EXTINF title"), title)?,
            });
        } else if starts_with_ci(line, "#PLAYLIST:") {
            let name = line.get("#PLAYLIST:".len()..).unwrap_or_default();
            let name = c.field(n, Label::Text("the #PLAYLIST name"), name)?;
            if !named && name.is_some() {
                c.name(playlist, name);
                named = true;
            }
        } else if line.starts_with('#') {
            continue;
        } else {
            match pending.take() {
                Some(p) => emit(c, p, Some((n, line)))?,
                None => path_only(c, n, line)?,
            }
        }
    }
    if let Some(p) = pending {
        emit(c, p, None)?;
    }
    Ok(())
}

/// The text after the comma that ends `<seconds> <attributes>`.
fn extinf_title(rest: &str) -> &str {
    let mut quoted = false;
    for (i, ch) in rest.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => return rest.get(i + 1..).unwrap_or_default(),
            _ => {}
        }
    }
    ""
}

/// An `#EXTINF` entry, with the path line after it (and its number) if there
/// is one.
fn emit(
    c: &mut Collector<'_>,
    p: Pending,
    path_line: Option<(usize, &str)>,
) -> Result<(), PlaylistFileError> {
    let path = path_line.map(|(_, path)| path);
    let spotify = path.and_then(ids::classify);
    if let (Some(_), Some((n, path))) = (&spotify, path_line) {
        c.field(n, Label::Text("the Spotify link"), path)?;
    }
    let id = match &spotify {
        Some(Spotify::Track(uri)) => Some(uri.clone()),
        Some(Spotify::Local { uri, .. }) => Some(uri.clone()),
        _ => None,
    };
    let Some(title) = p.title else {
        // No title of its own: the path says what it can.
        return match path {
            Some(path) => path_only(c, p.line, path),
            None => {
                c.skip(
                    p.line,
                    "the #EXTINF line has no title and no file follows it",
                );
                Ok(())
            }
        };
    };
    if let Some(Spotify::Other(kind)) = &spotify {
        c.skip(p.line, Spotify::reason(kind));
        return Ok(());
    }
    let (artist, song_title) = match split_artist_title(&title) {
        Some((artist, song_title)) if !song_title.is_empty() => {
            (non_empty(artist), song_title.to_owned())
        }
        _ => (None, title.clone()),
    };
    c.song(
        Song {
            line: p.line,
            id,
            title: Some(song_title),
            artist,
            album: None,
            text: Some(title),
        },
        "",
    );
    Ok(())
}

/// A path or URL with no `#EXTINF` before it.
fn path_only(c: &mut Collector<'_>, n: usize, path: &str) -> Result<(), PlaylistFileError> {
    let spotify = ids::classify(path);
    if spotify.is_some() {
        c.field(n, Label::Text("the Spotify link"), path)?;
    }
    match spotify {
        Some(Spotify::Track(uri)) => {
            c.song(
                Song {
                    line: n,
                    id: Some(uri),
                    text: Some(path.to_owned()),
                    ..Song::default()
                },
                "",
            );
            return Ok(());
        }
        Some(Spotify::Local {
            uri,
            artist,
            album,
            title,
        }) => {
            let field = |v: &str| c.field(n, Label::Text("the file name"), v);
            let song = Song {
                line: n,
                id: Some(uri),
                title: field(&title)?,
                artist: field(&artist)?,
                album: field(&album)?,
                text: None,
            };
            c.song(song, "");
            return Ok(());
        }
        Some(Spotify::Other(kind)) => {
            c.skip(n, Spotify::reason(&kind));
            return Ok(());
        }
        None => {}
    }
    let stem = file_stem(path);
    let stem = c.field(n, Label::Text("the file name"), &stem)?;
    match stem.as_deref().and_then(artist_title_of_file) {
        Some((artist, title)) if !title.is_empty() => {
            let song = Song {
                line: n,
                id: None,
                title: Some(title.to_owned()),
                artist: non_empty(artist),
                album: None,
                text: stem.clone(),
            };
            c.song(song, "");
        }
        _ => c.skip(
            n,
            format!(
                "the file \"{}\" has no #EXTINF line and its name is not \"Artist - Title\"",
                stem.unwrap_or_default()
            ),
        ),
    }
    Ok(())
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::{Entry, Format, Limits, PlaylistFileError, Skipped, parse};

    fn entry(line: usize, artist: Option<&str>, title: &str, text: &str) -> Entry {
        Entry {
            line,
            id: None,
            title: Some(title.to_owned()),
            artist: artist.map(str::to_owned),
            album: None,
            text: text.to_owned(),
        }
    }

    #[test]
    fn reads_extinf_titles_paths_and_the_playlist_name() {
        let file = "\u{feff}#EXTM3U\r\n#PLAYLIST:Road “trip”\r\n\r\n#EXTINF:320,Daft Punk - One More Time\r\nC:\\Music\\01 One More Time.mp3\r\n# a comment\r\n#EXTINF:-1 tvg-name=\"a, b\" group-title=\"x\",Sigur Rós – Hoppípolla\r\nhttp://radio.example/stream?x=1\r\n/music/07 - Beyoncé - Halo.flac\r\n/music/untitled.mp3\r\n#EXTINF:200,Intro\r\nspotify:track:4uLU6hMCjMI75M1A2tKUQC\r\n#EXTINF:100,\"Weird\" - \"Quotes\"\r\n";
        let got = parse(file.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(got.format, Format::M3u);
        assert_eq!(got.playlists.len(), 1);
        assert_eq!(got.playlists[0].name.as_deref(), Some("Road “trip”"));
        let mut intro = entry(11, None, "Intro", "Intro");
        intro.id = Some("spotify:track:4uLU6hMCjMI75M1A2tKUQC".to_owned());
        let expected = [
            entry(
                4,
                Some("Daft Punk"),
                "One More Time",
                "Daft Punk - One More Time",
            ),
            entry(7, Some("Sigur Rós"), "Hoppípolla", "Sigur Rós – Hoppípolla"),
            entry(9, Some("Beyoncé"), "Halo", "07 - Beyoncé - Halo"),
            intro,
            entry(
                13,
                Some("\"Weird\""),
                "\"Quotes\"",
                "\"Weird\" - \"Quotes\"",
            ),
        ];
        let entries = &got.playlists[0].entries;
        assert_eq!(entries.len(), expected.len());
        for (got, want) in entries.iter().zip(&expected) {
            assert_eq!(got, want);
        }
        assert_eq!(
            got.skipped,
            [Skipped {
                line: 10,
                reason: "the file \"untitled\" has no #EXTINF line and its name is not \"Artist - Title\"".to_owned()
            }]
        );
    }

    #[test]
    fn headerless_paths_and_edge_cases() {
        let file = "/music/Daft Punk - Digital Love.mp3\n/music/noname.mp3\nhttps://open.spotify.com/episode/512ojhOuo1ktJprKbVcKyQ\n#EXTINF:1,\n/music/Air - La femme d'argent.mp3\n#EXTINF:1,\n";
        let got = parse(file.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(got.format, Format::M3u);
        let entries = &got.playlists[0].entries;
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0],
            entry(
                1,
                Some("Daft Punk"),
                "Digital Love",
                "Daft Punk - Digital Love"
            )
        );
        assert_eq!(
            entries[1],
            entry(
                4,
                Some("Air"),
                "La femme d'argent",
                "Air - La femme d'argent"
            )
        );
        let lines: Vec<usize> = got.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, [2, 3, 6]);
        assert_eq!(got.skipped[1].reason, "a podcast episode, not a song");
        assert_eq!(
            got.skipped[2].reason,
            "the #EXTINF line has no title and no file follows it"
        );
    }

    #[test]
    fn an_extinf_without_a_path_is_still_a_song_and_a_header_alone_is_empty() {
        let got = parse(
            b"#EXTM3U\n#EXTINF:12,A - B\n#EXTINF:13,C - D",
            &Limits::default(),
        )
        .unwrap();
        let titles: Vec<_> = got
            .entries()
            .map(|e| (e.line, e.title.clone().unwrap()))
            .collect();
        assert_eq!(titles, [(2, "B".to_owned()), (3, "D".to_owned())]);
        let empty = parse(b"#EXTM3U\r\n", &Limits::default()).unwrap();
        assert_eq!(empty.format, Format::M3u);
        assert_eq!(empty.playlists.len(), 1);
        assert!(empty.playlists[0].entries.is_empty() && empty.skipped.is_empty());
    }

    #[test]
    fn malformed_m3u() {
        let limits = Limits {
            max_field_bytes: 20,
            ..Limits::default()
        };
        let long = format!(
            "#EXTM3U\n#EXTINF:1,A - B\nx.mp3\n#EXTINF:1,{}\n",
            "x".repeat(21)
        );
        let err = parse(long.as_bytes(), &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 4: the #EXTINF title is 21 bytes; the limit is 20: shorten it or remove that song"
        );
        // Cut in the middle of a line: what is there is read.
        let cut = parse(
            b"#EXTM3U\n#EXTINF:1,A - B\n/m/x.mp3\n#EXTINF:1,C - D",
            &limits,
        )
        .unwrap();
        assert_eq!(cut.entries().count(), 2);
        // JSON appended to an M3U: each line that is not a song is skipped, by line.
        let mixed = parse(
            b"#EXTM3U\n#EXTINF:1,A - B\n/m/x.mp3\n{\"playlists\": []}\n",
            &limits,
        )
        .unwrap();
        assert_eq!(mixed.entries().count(), 1);
        assert_eq!(mixed.skipped.len(), 1);
        assert_eq!(mixed.skipped[0].line, 4);
        let many = "#EXTM3U\n".to_owned() + &"#EXTINF:1,A - B\n/m/x.mp3\n".repeat(5);
        let err = parse(
            many.as_bytes(),
            &Limits {
                max_entries: 3,
                ..Limits::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            err,
            PlaylistFileError::TooManyEntries {
                found: 5,
                complete: true,
                limit: 3
            }
        );
    }
}
