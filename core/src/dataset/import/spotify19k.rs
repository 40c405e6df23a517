//! `song_info_RA_19k.csv` of the Spotify 19k data: one row per playlist
//! entry, `song_name,artist_name,album_names,playlist`. It has no track ids,
//! so a song is its artist and title.

use super::super::error::DatasetError;
use super::super::store::check_text;
use super::table::{Dialect, Table};
use super::{Gathering, Sink, TrackFields, TrackRecord, compose_id};
use crate::progress::Progress;
use csv::StringRecord;
use std::path::PathBuf;

const COLUMNS: [&str; 4] = ["song_name", "artist_name", "album_names", "playlist"];
const EXPECTED: &str = "a spotify19k file (song_info_RA_19k.csv) starts with the header \
    song_name,artist_name,album_names,playlist";
const FIELDS: TrackFields = TrackFields {
    id: "artist_name + song_name",
    title: "song_name",
    artist: "artist_name",
    album: "album_names",
};
const PLAYLIST_PREFIX: &str = "spotify19k:";

/// Whether `line` is this format's header, for format detection.
pub(super) fn is_header(line: &str) -> bool {
    line.split(',').eq(COLUMNS)
}

pub(super) fn read(
    files: &[PathBuf],
    sink: &mut Sink<'_>,
    progress: &dyn Progress,
) -> Result<(), DatasetError> {
    let mut gathering = Gathering::new();
    let mut record = StringRecord::new();
    for path in files {
        let mut table = Table::open(path, Dialect::Csv, progress)?;
        let Some(line) = table.read(&mut record)? else {
            return Err(DatasetError::EmptyFile {
                path: path.clone(),
                expected: EXPECTED,
            });
        };
        if !record.iter().eq(COLUMNS) {
            let found = record.iter().collect::<Vec<_>>().join(",");
            return Err(DatasetError::Header {
                at: table.at(line),
                found,
                expected: EXPECTED.into(),
            });
        }
        while let Some(line) = table.read(&mut record)? {
            let at = table.at(line);
            if record.len() != COLUMNS.len() {
                return Err(DatasetError::FieldCount {
                    at,
                    found: record.len(),
                    expected: COLUMNS.len(),
                    names: "song_name, artist_name, album_names, playlist",
                });
            }
            let (song, artist, album, playlist) = (&record[0], &record[1], &record[2], &record[3]);
            for (field, value) in [("song_name", song), ("playlist", playlist)] {
                check_text(value, true).map_err(|p| DatasetError::invalid(at.clone(), field, p))?;
            }
            let id = compose_id(&at, FIELDS.id, "track id", &[artist, " — ", song])?;
            let playlist_id =
                compose_id(&at, "playlist", "playlist id", &[PLAYLIST_PREFIX, playlist])?;
            let track = TrackRecord {
                id: &id,
                title: song,
                artist,
                album: Some(album),
            };
            let track = sink.checked_track(&at, &FIELDS, &track)?;
            gathering.push(&playlist_id, &at, track)?;
        }
    }
    for playlist in gathering.into_playlists() {
        let name = playlist.id.strip_prefix(PLAYLIST_PREFIX).map(str::to_owned);
        sink.playlist(playlist.at, playlist.id, name, playlist.entries)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::tests::{fixture, import_error, import_with};

    const HEADER: &str = "song_name,artist_name,album_names,playlist\n";

    fn error(content: &str) -> String {
        let dir = fixture(&[("s.csv", content)]);
        import_error(dir.path(), &["s.csv"], Some(Format::Spotify19k))
    }

    #[test]
    fn a_song_is_its_artist_and_title_and_playlists_keep_file_order() {
        let dir = fixture(&[(
            "s.csv",
            &format!(
                "{HEADER}Seven Nation Army,The White Stripes,Elephant,00s Rock\nIn The End,Linkin Park,,00s Rock\n\"Yes, And\",Pharrell,G I R L,Mood\nIn The End,Linkin Park,Hybrid Theory,Mood\n"
            ),
        )]);
        let d = import_with(dir.path(), &["s.csv"], Some(Format::Spotify19k)).unwrap();
        let ids: Vec<&str> = d.tracks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "The White Stripes — Seven Nation Army",
                "Linkin Park — In The End",
                "Pharrell — Yes, And"
            ]
        );
        assert_eq!(d.tracks[1].album.as_deref(), Some("Hybrid Theory"));
        assert_eq!(d.tracks[0].title, "Seven Nation Army");
        let playlists: Vec<(&str, Option<&str>, &[u32])> = d
            .playlists
            .iter()
            .map(|p| (p.id.as_str(), p.name.as_deref(), p.tracks.as_slice()))
            .collect();
        assert_eq!(
            playlists,
            [
                ("spotify19k:00s Rock", Some("00s Rock"), &[0, 1][..]),
                ("spotify19k:Mood", Some("Mood"), &[2, 1][..])
            ]
        );
    }

    #[test]
    fn every_error_names_file_line_and_field() {
        let long = "z".repeat(1020);
        let cases = [
            ("".to_owned(), "s.csv is empty; expected a spotify19k file"),
            (
                "song_name,song_popularity,duration_ms\n".to_owned(),
                "s.csv line 1: the header is \"song_name,song_popularity,duration_ms\", but a spotify19k file",
            ),
            (
                format!("{HEADER}a,b,c\n"),
                "s.csv line 2: the line has 3 fields, but this format has 4 (song_name, artist_name, album_names, playlist)",
            ),
            (
                format!("{HEADER},b,c,d\n"),
                "s.csv line 2: field \"song_name\": is empty",
            ),
            (
                format!("{HEADER}a,b,c,\n"),
                "s.csv line 2: field \"playlist\": is empty",
            ),
            (
                format!("{HEADER}{long},artist,c,d\n"),
                "s.csv line 2: field \"artist_name + song_name\": makes a track id of 1031 bytes, over the limit of 1024 bytes",
            ),
            (
                format!("{HEADER}a,b,c,{long}\n"),
                "s.csv line 2: field \"playlist\": makes a playlist id of 1031 bytes",
            ),
            (
                format!("{HEADER}a,b,{}x,d\n", "y".repeat(1024)),
                "s.csv line 2: field \"album_names\": is 1025 bytes long",
            ),
        ];
        for (content, expected) in cases {
            let err = error(&content);
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
    }
}
