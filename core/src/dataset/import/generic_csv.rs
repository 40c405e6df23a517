//! The generic playlist CSV: one row per playlist entry,
//! `playlist_id,position,track_id,track_name,artist_name[,album_name]`.

use super::super::error::{DatasetError, Location, Problem};
use super::super::store::check_text;
use super::table::{Dialect, Table};
use super::{Gathering, Sink, TrackFields, TrackRecord};
use crate::progress::Progress;
use csv::StringRecord;
use std::path::PathBuf;

const COLUMNS: [&str; 6] = [
    "playlist_id",
    "position",
    "track_id",
    "track_name",
    "artist_name",
    "album_name",
];
const EXPECTED: &str = "a playlist CSV starts with the header \
    playlist_id,position,track_id,track_name,artist_name (and optionally ,album_name)";
const FIELDS: TrackFields = TrackFields {
    id: "track_id",
    title: "track_name",
    artist: "artist_name",
    album: "album_name",
};

/// Whether `line` is this format's header, for format detection.
pub(super) fn is_header(line: &str) -> bool {
    let names: Vec<&str> = line.split(',').collect();
    matches!(names.len(), 5 | 6) && names == COLUMNS[..names.len()]
}

/// One row: where the track goes and where the row was, for errors.
struct Entry {
    position: u64,
    track: u32,
    file: usize,
    line: u64,
}

pub(super) fn read(
    files: &[PathBuf],
    sink: &mut Sink<'_>,
    progress: &dyn Progress,
) -> Result<(), DatasetError> {
    let mut gathering = Gathering::new();
    let mut record = StringRecord::new();
    for (file, path) in files.iter().enumerate() {
        let mut table = Table::open(path, Dialect::Csv, progress)?;
        let Some(line) = table.read(&mut record)? else {
            return Err(DatasetError::EmptyFile {
                path: path.clone(),
                expected: EXPECTED,
            });
        };
        let columns = record.len();
        if !matches!(columns, 5 | 6) || !record.iter().eq(COLUMNS[..columns].iter().copied()) {
            let found = record.iter().collect::<Vec<_>>().join(",");
            return Err(DatasetError::Header {
                at: table.at(line),
                found,
                expected: EXPECTED.into(),
            });
        }
        while let Some(line) = table.read(&mut record)? {
            let at = table.at(line);
            if record.len() != columns {
                let names = if columns == 6 {
                    "with album_name"
                } else {
                    "without album_name"
                };
                return Err(DatasetError::FieldCount {
                    at,
                    found: record.len(),
                    expected: columns,
                    names,
                });
            }
            let playlist = &record[0];
            check_text(playlist, true)
                .map_err(|p| DatasetError::invalid(at.clone(), "playlist_id", p))?;
            let position = record[1].trim().parse::<u64>().map_err(|_| {
                let problem = Problem::NotAPosition {
                    value: record[1].to_owned(),
                };
                DatasetError::invalid(at.clone(), "position", problem)
            })?;
            let track = TrackRecord {
                id: &record[2],
                title: &record[3],
                artist: &record[4],
                album: record.get(5),
            };
            let track = sink.checked_track(&at, &FIELDS, &track)?;
            gathering.push(
                playlist,
                &at,
                Entry {
                    position,
                    track,
                    file,
                    line,
                },
            )?;
        }
    }
    for playlist in gathering.into_playlists() {
        let mut entries = playlist.entries;
        entries.sort_by_key(|e| (e.position, e.file, e.line));
        if let Some(pair) = entries
            .windows(2)
            .find(|pair| pair[0].position == pair[1].position)
        {
            let (first, second) = (&pair[0], &pair[1]);
            let problem = Problem::DuplicatePosition {
                playlist: playlist.id,
                position: first.position,
                other: Location::line(&files[first.file], first.line),
            };
            let at = Location::line(&files[second.file], second.line);
            return Err(DatasetError::invalid(at, "position", problem));
        }
        let tracks = entries.iter().map(|e| e.track).collect();
        sink.playlist(playlist.at, playlist.id, None, tracks)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::tests::{fixture, import_error, import_with};

    const HEADER: &str = "playlist_id,position,track_id,track_name,artist_name,album_name\n";

    fn import(content: &str) -> Result<crate::dataset::Dataset, crate::dataset::DatasetError> {
        let dir = fixture(&[("p.csv", content)]);
        import_with(dir.path(), &["p.csv"], Some(Format::Csv))
    }

    fn error(content: &str) -> String {
        let dir = fixture(&[("p.csv", content)]);
        import_error(dir.path(), &["p.csv"], Some(Format::Csv))
    }

    #[test]
    fn rows_are_grouped_by_playlist_and_ordered_by_position() {
        let d = import(&format!(
            "{HEADER}b,5,t3,Three,C,\na,2,t2,Two,B,Second\nb,1,t1,One,A,First\na,0,t1,\"One, again\",A,\n\"a\",10,t3,Three,C,Album\n"
        ))
        .unwrap();
        let ids: Vec<&str> = d.tracks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["t3", "t2", "t1"]);
        assert_eq!(
            d.tracks[0].album.as_deref(),
            Some("Album"),
            "first non-empty album wins"
        );
        assert_eq!(d.tracks[2].title, "One");
        let playlists: Vec<(&str, &[u32])> = d
            .playlists
            .iter()
            .map(|p| (p.id.as_str(), p.tracks.as_slice()))
            .collect();
        assert_eq!(playlists, [("b", &[2, 0][..]), ("a", &[2, 1, 0][..])]);
    }

    #[test]
    fn album_column_is_optional_and_crlf_and_bom_are_fine() {
        let d =
            import("\u{feff}playlist_id,position,track_id,track_name,artist_name\r\np,0,t,T,A\r\n")
                .unwrap();
        assert_eq!(d.tracks[0].album, None);
        assert_eq!(d.playlists[0].tracks, [0]);
        let d = import("playlist_id,position,track_id,track_name,artist_name\n").unwrap();
        assert!(d.playlists.is_empty());
    }

    #[test]
    fn every_error_names_file_line_and_field() {
        let long = "x".repeat(1025);
        let cases = [
            (
                "".to_owned(),
                "p.csv is empty; expected a playlist CSV starts with the header",
            ),
            (
                "playlist,position\n".to_owned(),
                "p.csv line 1: the header is \"playlist,position\", but a playlist CSV",
            ),
            (
                "playlist_id,position,track_name,track_id,artist_name\n".to_owned(),
                "the header is \"playlist_id,position,track_name,track_id,artist_name\"",
            ),
            (
                format!("{HEADER}p,0,t,T,A\n"),
                "p.csv line 2: the line has 5 fields, but this format has 6 (with album_name)",
            ),
            (
                format!("{HEADER}p,x,t,T,A,\n"),
                "p.csv line 2: field \"position\": \"x\" is not a position",
            ),
            (
                format!("{HEADER}p,-1,t,T,A,\n"),
                "field \"position\": \"-1\" is not a position",
            ),
            (
                format!("{HEADER},0,t,T,A,\n"),
                "p.csv line 2: field \"playlist_id\": is empty",
            ),
            (
                format!("{HEADER}p,0,,T,A,\n"),
                "p.csv line 2: field \"track_id\": is empty",
            ),
            (
                format!("{HEADER}p,0,t,{long},A,\n"),
                "p.csv line 2: field \"track_name\": is 1025 bytes long, over the limit of 1024 bytes",
            ),
            (
                format!("{HEADER}p,0,t,T,A,{long}\n"),
                "field \"album_name\": is 1025 bytes long",
            ),
            (
                format!("{HEADER}p,3,t,T,A,\nq,0,u,U,B,\np,3,v,V,C,\n"),
                "p.csv line 4: field \"position\": position 3 of playlist \"p\" is also used at ",
            ),
            (
                format!("{HEADER}p,0,t,\"T,A,\n"),
                "p.csv line 2: the line has 4 fields",
            ),
        ];
        for (content, expected) in cases {
            let err = error(&content);
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
    }

    #[test]
    fn text_must_be_utf8() {
        let dir = fixture(&[]);
        std::fs::write(
            dir.path().join("p.csv"),
            [HEADER.as_bytes(), b"p,0,t,T,A,\xff\n"].concat(),
        )
        .unwrap();
        let err = import_error(dir.path(), &["p.csv"], Some(Format::Csv));
        assert!(
            err.contains("p.csv line 2: field \"column 6\": is not valid UTF-8 text"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_positions_name_both_lines() {
        let err = error(&format!("{HEADER}p,3,t,T,A,\nq,0,u,U,B,\np,3,v,V,C,\n"));
        assert!(
            err.contains("p.csv line 4") && err.contains("p.csv line 2;"),
            "{err}"
        );
    }

    #[test]
    fn lines_and_playlists_are_limited() {
        let err = error(&format!("{HEADER}p,0,t,{},A,\n", "y".repeat(70_000)));
        assert!(
            err.contains("p.csv line 2: the line is longer than 65536 bytes"),
            "{err}"
        );

        let mut rows = String::from(HEADER);
        for i in 0..=crate::dataset::MAX_PLAYLIST_TRACKS {
            rows.push_str(&format!("p,{i},t,T,A,\n"));
        }
        let err = error(&rows);
        assert!(
            err.contains("p.csv line 100002: playlist \"p\" has more than 100000 tracks"),
            "{err}"
        );
    }
}
