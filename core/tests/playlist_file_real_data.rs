//! Uploaded-playlist parsing (`setlist_core::playlist_file`) on the real MPD
//! slices in the folder `SETLIST_DATASETS` names (`shared/datasets` beside
//! the project; see its README). Every test here has `real_data` in its name
//! so a runner without the data can leave them out by name, visibly; run
//! without the variable, they fail rather than pass having checked nothing.
//! The files are read where they are, never copied.

mod common;

use common::datasets;
use serde_json::Value;
use setlist_core::playlist_file::{Format, Limits, PlaylistFile, PlaylistFileError, parse};
use std::fs;
use std::path::PathBuf;

/// A string field as the parser keeps it: trimmed, `None` when empty.
fn text(value: &Value) -> Option<&str> {
    value.as_str().map(str::trim).filter(|s| !s.is_empty())
}

/// Checks that `file` holds exactly the playlists and tracks of the slice
/// `bytes`, read independently, each entry on the line where its track's
/// object starts. Returns the number of entries.
fn same_as_slice(name: &str, bytes: &[u8], file: &PlaylistFile) -> usize {
    let slice: Value = serde_json::from_slice(bytes).unwrap();
    let playlists = slice["playlists"].as_array().unwrap();
    assert_eq!(file.format, Format::MpdSlice, "{name}");
    assert_eq!(file.playlists.len(), playlists.len(), "{name}");
    assert!(file.skipped.is_empty(), "{name}: {:?}", file.skipped);
    let lines: Vec<&str> = std::str::from_utf8(bytes).unwrap().lines().collect();
    let mut entries = 0;
    for (got, want) in file.playlists.iter().zip(playlists) {
        assert_eq!(got.name.as_deref(), text(&want["name"]), "{name}");
        let tracks = want["tracks"].as_array().unwrap();
        assert_eq!(
            got.entries.len(),
            tracks.len(),
            "{name} pid {}",
            want["pid"]
        );
        for (e, t) in got.entries.iter().zip(tracks) {
            let fields = (
                e.id.as_deref(),
                e.title.as_deref(),
                e.artist.as_deref(),
                e.album.as_deref(),
            );
            let expected = (
                text(&t["track_uri"]),
                text(&t["track_name"]),
                text(&t["artist_name"]),
                text(&t["album_name"]),
            );
            assert_eq!(fields, expected, "{name} line {}", e.line);
            assert_eq!(lines[e.line - 1].trim(), "{", "{name} line {}", e.line);
            let first_key = t.as_object().unwrap().keys().next().unwrap();
            assert!(
                lines[e.line].contains(&format!("\"{first_key}\""))
                    || lines[e.line].contains("\"pos\""),
                "{name} line {}: {}",
                e.line + 1,
                lines[e.line]
            );
        }
        entries += tracks.len();
    }
    entries
}

#[test]
fn real_data_playlist_file_mpd_format_samples() {
    let samples = datasets().join("mpd-format-samples");
    let path = samples.join("niclas_mpd.slice.0-999.json");
    let bytes = fs::read(&path).unwrap();
    let file = parse(&bytes, &Limits::default()).unwrap();
    let entries = same_as_slice("niclas", &bytes, &file);
    assert_eq!((file.playlists.len(), entries), (29, 1_448));
    let first = &file.playlists[0];
    assert_eq!(first.name.as_deref(), Some("Throwbacks"));
    let opener = &first.entries[0];
    assert_eq!(
        (opener.line, opener.text.as_str(), opener.album.as_deref()),
        (
            17,
            "Missy Elliott - Lose Control (feat. Ciara & Fat Man Scoop)",
            Some("The Cookbook")
        )
    );

    // The other sample was cut at 1 MiB, in the middle of a string.
    let cut = fs::read(samples.join("rtirfe_mpd.slice.0-999.json")).unwrap();
    let err = parse(&cut, &Limits::default()).unwrap_err();
    assert_eq!(
        err,
        PlaylistFileError::JsonTruncated {
            line: 21_320,
            inside: "a string"
        }
    );
    assert_eq!(
        err.to_string(),
        "line 21320: JSON ends in the middle of a string: the file looks truncated; download or \
         export it again"
    );
}

#[test]
fn real_data_playlist_file_mpd_dev_slices() {
    let folder = datasets().join("mpd-dev");
    let mut paths: Vec<PathBuf> = fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 466);
    let (mut playlists, mut entries) = (0, 0);
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy();
        let bytes = fs::read(path).unwrap();
        let file = parse(&bytes, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        entries += same_as_slice(&name, &bytes, &file);
        playlists += file.playlists.len();
    }
    assert_eq!((playlists, entries), (3_571, 354_350));
}
