//! Spotify Million Playlist Dataset slices:
//! `{"info":…,"playlists":[{"name","pid","tracks":[{"pos"?,"artist_name",
//! "track_uri","track_name","album_name"?,…}]}]}`. Unknown fields are
//! ignored.
//!
//! Field checks run while parsing, so their errors carry the parser's line
//! and column, and the field's path (`playlists[3].tracks[17].track_uri`).

use super::super::MAX_PLAYLIST_TRACKS;
use super::super::error::{DatasetError, Location, Problem};
use super::super::io::{Metered, json_error, open_input};
use super::super::store::check_text;
use super::{Sink, TrackRecord};
use crate::progress::Progress;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use std::io::BufReader;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Slice {
    playlists: Vec<MpdPlaylist>,
}

#[derive(Deserialize)]
struct MpdPlaylist {
    name: Option<Text>,
    pid: u64,
    num_tracks: Option<u64>,
    tracks: Tracks,
}

#[derive(Deserialize)]
struct MpdTrack {
    pos: Option<u64>,
    artist_name: Text,
    track_uri: Text<true>,
    track_name: Text,
    album_name: Option<Text>,
}

/// A string within the text limit; `REQUIRED` ones must not be empty.
struct Text<const REQUIRED: bool = false>(String);

impl<'de, const REQUIRED: bool> Deserialize<'de> for Text<REQUIRED> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        check_text(&text, REQUIRED).map_err(de::Error::custom)?;
        Ok(Text(text))
    }
}

/// A playlist's tracks in play order: by `pos` where the slice has it (the
/// complete MPD does), else in array order.
#[derive(Deserialize)]
#[serde(try_from = "Vec<MpdTrack>")]
struct Tracks(Vec<MpdTrack>);

impl TryFrom<Vec<MpdTrack>> for Tracks {
    type Error = Problem;

    fn try_from(tracks: Vec<MpdTrack>) -> Result<Self, Problem> {
        let len = tracks.len();
        if len > MAX_PLAYLIST_TRACKS {
            return Err(Problem::TooManyTracks {
                len,
                limit: MAX_PLAYLIST_TRACKS,
            });
        }
        if tracks.iter().all(|t| t.pos.is_none()) {
            return Ok(Tracks(tracks));
        }
        let mut slots: Vec<Option<(usize, MpdTrack)>> = Vec::new();
        slots.resize_with(len, || None);
        for (track, entry) in tracks.into_iter().enumerate() {
            let Some(pos) = entry.pos else {
                return Err(Problem::PositionMissing { track });
            };
            let slot = usize::try_from(pos).ok().and_then(|p| slots.get_mut(p));
            match slot {
                None => return Err(Problem::PositionGap { track, pos, len }),
                Some(Some((first, _))) => {
                    return Err(Problem::PositionRepeated {
                        first: *first,
                        second: track,
                        pos,
                    });
                }
                Some(slot) => *slot = Some((track, entry)),
            }
        }
        // n tracks with distinct positions below n fill every slot.
        Ok(Tracks(
            slots.into_iter().flatten().map(|(_, t)| t).collect(),
        ))
    }
}

pub(super) fn read(
    files: &[PathBuf],
    sink: &mut Sink<'_>,
    progress: &dyn Progress,
) -> Result<(), DatasetError> {
    for path in files {
        let (file, _) = open_input(path)?;
        let mut de = serde_json::Deserializer::from_reader(BufReader::new(Metered::new(
            file, false, progress,
        )));
        let slice: Slice = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = e.path().to_string();
            json_error(path, None, Some(field), e.into_inner())
        })?;
        de.end().map_err(|e| json_error(path, None, None, e))?;

        for (i, playlist) in slice.playlists.into_iter().enumerate() {
            let listed = playlist.tracks.0.len();
            if let Some(declared) = playlist.num_tracks.filter(|&n| n != listed as u64) {
                sink.warn(&format!(
                    "{}: playlists[{i}] (pid {}) says num_tracks {declared} but lists {listed} \
                     tracks; importing the {listed} listed",
                    path.display(),
                    playlist.pid
                ));
            }
            let mut tracks = Vec::with_capacity(listed);
            for t in &playlist.tracks.0 {
                tracks.push(sink.track(&TrackRecord {
                    id: &t.track_uri.0,
                    title: &t.track_name.0,
                    artist: &t.artist_name.0,
                    album: t.album_name.as_ref().map(|a| a.0.as_str()),
                })?);
            }
            let name = playlist.name.map(|n| n.0);
            sink.playlist(
                Location::file(path),
                format!("mpd:{}", playlist.pid),
                name,
                tracks,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::tests::{Recorder, fixture, import_error, import_with};
    use std::path::PathBuf;

    fn error(content: &str) -> String {
        let dir = fixture(&[("mpd.slice.0-999.json", content)]);
        import_error(dir.path(), &["mpd.slice.0-999.json"], Some(Format::Mpd))
    }

    fn track(pos: Option<u32>, uri: &str) -> String {
        let pos = pos.map(|p| format!("\"pos\": {p}, ")).unwrap_or_default();
        format!(
            "{{{pos}\"artist_name\": \"A\", \"track_uri\": \"{uri}\", \"track_name\": \"T {uri}\", \"album_uri\": \"x\"}}"
        )
    }

    fn slice(tracks: &[String]) -> String {
        format!(
            "{{\n\"info\": {{\"slice\": \"0-999\"}},\n\"playlists\": [\n{{\"name\": \"classics\", \"pid\": 7, \"num_tracks\": {}, \"collaborative\": \"false\",\n\"tracks\": [\n{}\n]}}\n]\n}}\n",
            tracks.len(),
            tracks.join(",\n")
        )
    }

    #[test]
    fn reads_playlists_in_order_of_pos_and_ignores_unknown_fields() {
        let content = slice(&[
            track(Some(1), "u1"),
            track(Some(0), "u0"),
            track(Some(2), "u1"),
        ]);
        let dir = fixture(&[("s.json", &content)]);
        let d = import_with(dir.path(), &["s.json"], Some(Format::Mpd)).unwrap();
        assert_eq!(d.playlists.len(), 1);
        assert_eq!(d.playlists[0].id, "mpd:7");
        assert_eq!(d.playlists[0].name.as_deref(), Some("classics"));
        let ids: Vec<&str> = d.playlists[0]
            .tracks
            .iter()
            .map(|&i| d.tracks[i as usize].id.as_str())
            .collect();
        assert_eq!(ids, ["u0", "u1", "u1"]);
        assert_eq!(
            (d.tracks[0].id.as_str(), d.tracks[0].title.as_str()),
            ("u0", "T u0")
        );
        assert_eq!(d.tracks[0].album, None);
    }

    #[test]
    fn without_pos_tracks_keep_array_order_and_albums_are_kept() {
        let content = r#"{"playlists":[{"name":"n","pid":1,"tracks":[
            {"artist_name":"B","track_uri":"u2","track_name":"Two","album_name":"Al"},
            {"artist_name":"A","track_uri":"u1","track_name":"One","album_name":""}]}]}"#;
        let dir = fixture(&[("s.json", content)]);
        let d = import_with(dir.path(), &["s.json"], None).unwrap();
        assert_eq!(d.playlists[0].tracks, [0, 1]);
        assert_eq!(d.tracks[0].album.as_deref(), Some("Al"));
        assert_eq!(d.tracks[1].album, None, "an empty album is no album");
    }

    #[test]
    fn a_wrong_num_tracks_is_a_warning() {
        let content = slice(&[track(None, "u0")]).replace("\"num_tracks\": 1", "\"num_tracks\": 3");
        let dir = fixture(&[("s.json", &content)]);
        let recorder = Recorder::default();
        let options = super::super::ImportOptions::default();
        let d = super::super::import(&[dir.path().join("s.json")], &options, &recorder).unwrap();
        assert_eq!(d.playlists[0].tracks.len(), 1);
        let messages = recorder.messages.lock().unwrap();
        assert!(
            messages[0].contains("playlists[0] (pid 7) says num_tracks 3 but lists 1 tracks"),
            "{messages:?}"
        );
    }

    #[test]
    fn every_error_names_file_line_and_field() {
        let long = "x".repeat(1025);
        let cases = [
            (slice(&[track(None, "u0"), track(None, "u1").replace("\"track_uri\": \"u1\", ", "")]), "mpd.slice.0-999.json line 7 column 60: field \"playlists[0].tracks[1]\": missing field `track_uri`"),
            (slice(&[track(None, "")]), "line 6 column 37: field \"playlists[0].tracks[0].track_uri\": is empty; give it a value"),
            (slice(&[track(None, &long)]), "field \"playlists[0].tracks[0].track_uri\": is 1025 bytes long, over the limit of 1024 bytes"),
            (slice(&[track(None, "u").replace("\"A\"", "3")]), "field \"playlists[0].tracks[0].artist_name\": invalid type: integer `3`, expected a string"),
            (slice(&[track(Some(0), "a"), track(Some(0), "b")]), "line 8 column 2: field \"playlists[0].tracks\": tracks 0 and 1 both have pos 0"),
            (slice(&[track(Some(0), "a"), track(Some(2), "b")]), "field \"playlists[0].tracks\": track 1 has pos 2, but the playlist has only 2 tracks"),
            (slice(&[track(Some(0), "a"), track(None, "b")]), "field \"playlists[0].tracks\": track 1 has no \"pos\" but others in the playlist have one"),
            (slice(&[track(Some(0), "a")]).replace("\"pos\": 0", "\"pos\": -1"), "field \"playlists[0].tracks[0].pos\": invalid value: integer `-1`, expected u64"),
            (slice(&[]).replace("\"pid\": 7, ", ""), "field \"playlists[0]\": missing field `pid`"),
            ("{\"info\": {}}".to_owned(), "mpd.slice.0-999.json line 1 column 12: missing field `playlists`"),
            ("[1, 2]".to_owned(), "line 1 column 3: field \"[0]\": invalid type: integer `1`, expected a sequence"),
            ("{\"playlists\": []} {}".to_owned(), "line 1 column 19: trailing characters"),
            (slice(&[track(None, "u0")])[..60].to_owned(), "mpd.slice.0-999.json line 4 column 15: the file ends in the middle of its JSON, so it looks truncated; copy or download it again"),
            (String::new(), "the file ends in the middle of its JSON"),
            ("{\"playlists\": [{\"name\": \"a\", \"pid\": 1, \"tracks\": []}, {\"name\": \"b\", \"pid\": 1, \"tracks\": []}]}".to_owned(), "mpd.slice.0-999.json: playlist id \"mpd:1\" was already imported from"),
        ];
        for (content, expected) in cases {
            let err = error(&content);
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
    }

    #[test]
    fn playlists_are_limited_in_length() {
        let tracks = vec![track(None, "u"); crate::dataset::MAX_PLAYLIST_TRACKS + 1];
        let err = error(&slice(&tracks));
        assert!(
            err.contains(
                "field \"playlists[0].tracks\": has 100001 tracks, over the limit of 100000"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_folder_is_not_a_slice_file() {
        let dir = fixture(&[]);
        std::fs::create_dir(dir.path().join("sub.json")).unwrap();
        let inputs = [PathBuf::from(dir.path())];
        let options = super::super::ImportOptions {
            format: Some(Format::Mpd),
            ..Default::default()
        };
        let err = super::super::import(&inputs, &options, &crate::progress::Silent)
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no *.json files"), "{err}");
    }
}
