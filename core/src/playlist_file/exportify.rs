//! Exportify-style CSV:
//!
//! ```text
//! "Track URI","Track Name","Album Name","Artist Name(s)","Release Date",...
//! "spotify:track:4uLU6hMCjMI75M1A2tKUQC","Never Gonna Give You Up","Whenever You Need Somebody","Rick Astley","1987-11-12",...
//! ```
//!
//! The first non-blank line is the header. Columns are found by name, case
//! and surrounding spaces ignored, in any order (Exportify has changed its
//! order between versions); other columns are ignored:
//!
//! | field | columns |
//! |---|---|
//! | id | "Track URI", "Spotify URI", else "Spotify ID", "Track ID" (a bare id) |
//! | title | "Track Name", "Track Title" |
//! | artist | "Artist Name(s)", "Artist Names", "Artist Name", "Artists": the part before the first `,` |
//! | album | "Album Name", "Album" |
//!
//! The separator is `,`, `;` or a tab: the first that splits the header into
//! a known column. Every row must have as many fields as the header: a row
//! with more or fewer is a damaged or cut-short file, and refused with its
//! line. A row with neither id nor title is skipped; so is a podcast episode.

use super::ids::{self, Spotify};
use super::{Collector, Label, PlaylistFileError, Song};
use csv::{ReaderBuilder, StringRecord};

const URI: [&str; 2] = ["track uri", "spotify uri"];
const ID: [&str; 2] = ["spotify id", "track id"];
const TITLE: [&str; 2] = ["track name", "track title"];
const ARTIST: [&str; 4] = ["artist name(s)", "artist names", "artist name", "artists"];
const ALBUM: [&str; 2] = ["album name", "album"];

/// The separator of `first` (the first non-blank line) if it is a header
/// with two or more columns, one of them an id or title column.
pub(super) fn detect(first: &str) -> Option<u8> {
    [b',', b';', b'\t'].into_iter().find(|&delimiter| {
        let mut reader = ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .from_reader(first.as_bytes());
        let mut header = StringRecord::new();
        matches!(reader.read_record(&mut header), Ok(true))
            && header.len() >= 2
            && header.iter().any(|name| {
                let name = normal(name);
                [URI, ID, TITLE]
                    .iter()
                    .any(|names| names.contains(&name.as_str()))
            })
    })
}

fn normal(name: &str) -> String {
    name.trim().to_lowercase()
}

/// The index of the first column whose name is one of `names`, in the order
/// of `names`.
fn column(header: &StringRecord, names: &[&str]) -> Option<usize> {
    names
        .iter()
        .find_map(|wanted| header.iter().position(|name| normal(name) == *wanted))
}

pub(super) fn read(
    text: &str,
    delimiter: u8,
    c: &mut Collector<'_>,
) -> Result<(), PlaylistFileError> {
    // Start at the header, so blank lines before it are not taken for it.
    let mut start = 0;
    let mut skipped_lines = 0;
    for line in text.split_inclusive('\n') {
        if !line.trim().is_empty() {
            break;
        }
        start += line.len();
        skipped_lines += 1;
    }
    let body = text.get(start..).unwrap_or_default();
    let mut reader = ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(body.as_bytes());
    // Lines from byte offsets: the reader's own count, and its offset, stop
    // between the CR and the LF of a CRLF ending.
    let mut counted = (0, skipped_lines + 1);
    let mut line_at = |byte: u64| {
        let (from, line) = counted;
        let mut to = usize::try_from(byte)
            .unwrap_or(usize::MAX)
            .clamp(from, body.len());
        while matches!(body.as_bytes().get(to), Some(b'\r' | b'\n')) {
            to += 1;
        }
        let newlines = body.as_bytes().get(from..to).unwrap_or_default();
        counted = (to, line + newlines.iter().filter(|&&b| b == b'\n').count());
        counted.1
    };
    let csv_error = |e: csv::Error| PlaylistFileError::Csv {
        line: skipped_lines + e.position().map_or(1, |p| p.line() as usize),
        problem: e.to_string(),
    };

    let mut header = StringRecord::new();
    reader.read_record(&mut header).map_err(csv_error)?;
    let uri = column(&header, &URI);
    let id = column(&header, &ID);
    let title = column(&header, &TITLE);
    let artist = column(&header, &ARTIST);
    let album = column(&header, &ALBUM);

    c.start(None)?;
    let mut record = StringRecord::new();
    while reader.read_record(&mut record).map_err(csv_error)? {
        let line = line_at(record.position().map_or(0, |p| p.byte()));
        if record.len() == 1 && record.get(0).is_some_and(|f| f.trim().is_empty()) {
            continue;
        }
        if record.len() != header.len() {
            return Err(PlaylistFileError::CsvRow {
                line,
                found: record.len(),
                expected: header.len(),
            });
        }
        let field = |col: Option<usize>| -> Result<Option<String>, PlaylistFileError> {
            let Some(col) = col else { return Ok(None) };
            let name = header.get(col).unwrap_or_default().trim();
            c.field(line, Label::Key(name), record.get(col).unwrap_or_default())
        };
        let uri = field(uri)?;
        let bare_id = field(id)?;
        let mut song = Song {
            line,
            title: field(title)?,
            artist: field(artist)?.and_then(|names| first_artist(&names)),
            album: field(album)?,
            ..Song::default()
        };
        let written = uri.or(bare_id);
        match written.as_deref().and_then(ids::classify) {
            Some(Spotify::Track(uri)) => song.id = Some(uri),
            Some(Spotify::Local {
                uri,
                artist,
                album,
                title,
            }) => {
                song.id = Some(uri);
                let part = |text: String| (!text.trim().is_empty()).then(|| text.trim().to_owned());
                song.title = song.title.or_else(|| part(title));
                song.artist = song.artist.or_else(|| part(artist));
                song.album = song.album.or_else(|| part(album));
            }
            Some(Spotify::Other(kind)) => {
                c.skip(line, Spotify::reason(&kind));
                continue;
            }
            None => song.id = written,
        }
        c.song(song, "the row has neither a track URI nor a track name");
    }
    Ok(())
}

/// "Daft Punk, Pharrell Williams" → "Daft Punk".
fn first_artist(names: &str) -> Option<String> {
    let first = names.split(',').next().unwrap_or_default().trim();
    (!first.is_empty()).then(|| first.to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::{Entry, Format, Limits, PlaylistFileError, parse};

    const HEADER: &str = "\"Track URI\",\"Track Name\",\"Artist URI(s)\",\"Artist Name(s)\",\"Album Name\",\"Added At\"";

    fn entry(
        line: usize,
        id: Option<&str>,
        title: Option<&str>,
        artist: Option<&str>,
        album: Option<&str>,
        text: &str,
    ) -> Entry {
        Entry {
            line,
            id: id.map(str::to_owned),
            title: title.map(str::to_owned),
            artist: artist.map(str::to_owned),
            album: album.map(str::to_owned),
            text: text.to_owned(),
        }
    }

    #[test]
    fn reads_exportify_rows_by_column_name() {
        let file = format!(
            "{HEADER}\r\n\
             \"spotify:track:0UaMYEvWZi0ZqiDOoHU3YI\",\"Lose Control (feat. Ciara & Fat Man Scoop)\",\"spotify:artist:x\",\"Missy Elliott, Ciara, Fat Man Scoop\",\"The Cookbook\",\"2020-01-01\"\r\n\
             \"spotify:track:6I9VzXrHxO9rA9A5euc8Ak\",\"Say \"\"Hi\"\"\nagain\",\"\",\"Beyoncé\",\"\",\"\"\r\n\
             \"spotify:local:Daft+Punk:Discovery:One+More+Time:320\",\"\",\"\",\"\",\"\",\"\"\r\n\
             \"spotify:episode:512ojhOuo1ktJprKbVcKyQ\",\"A show\",\"\",\"\",\"\",\"\"\r\n\
             \"\",\"\",\"\",\"Nobody\",\"\",\"\"\r\n\
             \r\n"
        );
        let got = parse(file.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(got.format, Format::ExportifyCsv);
        let expected = [
            entry(
                2,
                Some("spotify:track:0UaMYEvWZi0ZqiDOoHU3YI"),
                Some("Lose Control (feat. Ciara & Fat Man Scoop)"),
                Some("Missy Elliott"),
                Some("The Cookbook"),
                "Missy Elliott - Lose Control (feat. Ciara & Fat Man Scoop)",
            ),
            entry(
                3,
                Some("spotify:track:6I9VzXrHxO9rA9A5euc8Ak"),
                Some("Say \"Hi\"\nagain"),
                Some("Beyoncé"),
                None,
                "Beyoncé - Say \"Hi\" again",
            ),
            entry(
                5,
                Some("spotify:local:Daft+Punk:Discovery:One+More+Time:320"),
                Some("One More Time"),
                Some("Daft Punk"),
                Some("Discovery"),
                "Daft Punk - One More Time",
            ),
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
                (6, "a podcast episode, not a song"),
                (7, "the row has neither a track URI nor a track name")
            ]
        );
    }

    #[test]
    fn columns_in_another_order_with_semicolons_and_bare_ids() {
        let file = "\n\nAlbum Name;artist name(s);Popularity;TRACK NAME;Spotify ID\nDiscovery;Daft Punk;80;One More Time;0DiWol3AO6WpXZgp0goxAV\n;;;Intro;\n";
        let got = parse(file.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(got.format, Format::ExportifyCsv);
        let entries = &got.playlists[0].entries;
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0],
            entry(
                4,
                Some("spotify:track:0DiWol3AO6WpXZgp0goxAV"),
                Some("One More Time"),
                Some("Daft Punk"),
                Some("Discovery"),
                "Daft Punk - One More Time"
            )
        );
        assert_eq!(
            entries[1],
            entry(5, None, Some("Intro"), None, None, "Intro")
        );
    }

    #[test]
    fn broken_rows_are_refused_with_their_line() {
        let short = format!(
            "{HEADER}\n\"spotify:track:0UaMYEvWZi0ZqiDOoHU3YI\",\"A\",\"\",\"B\",\"C\",\"D\"\n\"x\",\"y\"\n"
        );
        let err = parse(short.as_bytes(), &Limits::default()).unwrap_err();
        assert_eq!(
            err,
            PlaylistFileError::CsvRow {
                line: 3,
                found: 2,
                expected: 6
            }
        );
        assert_eq!(
            err.to_string(),
            "line 3: the row has 2 fields but the header has 6: the CSV is damaged or cut short; export it again"
        );
        // Cut inside a quoted field: the rest of the file is one field.
        let cut = format!(
            "{HEADER}\n\"spotify:track:0UaMYEvWZi0ZqiDOoHU3YI\",\"A\",\"\",\"B\",\"C\",\"D\"\n\"spotify:track:6I9VzXrHxO9rA9A5euc8Ak\",\"Say"
        );
        let err = parse(cut.as_bytes(), &Limits::default()).unwrap_err();
        assert_eq!(
            err,
            PlaylistFileError::CsvRow {
                line: 3,
                found: 2,
                expected: 6
            }
        );
        // M3U lines appended to a CSV.
        let mixed = format!("{HEADER}\n\"u\",\"A\",\"\",\"B\",\"C\",\"D\"\n#EXTINF:1,A - B\n");
        let err = parse(mixed.as_bytes(), &Limits::default()).unwrap_err();
        assert_eq!(
            err,
            PlaylistFileError::CsvRow {
                line: 3,
                found: 2,
                expected: 6
            }
        );
        let long = format!(
            "{HEADER}\n\"u\",\"{}\",\"\",\"B\",\"C\",\"D\"\n",
            "x".repeat(900)
        );
        let err = parse(long.as_bytes(), &Limits::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: \"Track Name\" is 900 bytes; the limit is 512: shorten it or remove that song"
        );
    }

    #[test]
    fn a_header_alone_is_an_empty_playlist() {
        let got = parse(HEADER.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(got.format, Format::ExportifyCsv);
        assert_eq!(got.playlists.len(), 1);
        assert!(got.playlists[0].entries.is_empty());
    }
}
