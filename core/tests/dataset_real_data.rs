//! Imports of the real data sets in the folder `SETLIST_DATASETS` names
//! (`shared/datasets` beside the project; see its README). Every test here
//! has `real_data` in its name so a runner without the data can leave them
//! out by name, visibly; run without the variable, they fail rather than
//! pass having checked nothing.

mod common;

use common::datasets;
use setlist_core::dataset::{Dataset, DatasetError, Format, ImportOptions, import};
use setlist_core::progress::{Progress, Silent};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn import_paths(paths: &[PathBuf], format: Option<Format>) -> Result<Dataset, DatasetError> {
    let options = ImportOptions {
        format,
        ..ImportOptions::default()
    };
    import(paths, &options, &Silent)
}

fn tracks_of<'d>(d: &'d Dataset, playlist: &str) -> Vec<&'d str> {
    let p = d
        .playlists
        .iter()
        .find(|p| p.id == playlist)
        .unwrap_or_else(|| panic!("no {playlist}"));
    p.tracks
        .iter()
        .map(|&i| d.tracks[i as usize].title.as_str())
        .collect()
}

#[derive(Default)]
struct Messages(Mutex<Vec<String>>);

impl Progress for Messages {
    fn start(&self, _what: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
    fn message(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_owned());
    }
    fn finish(&self) {}
}

#[test]
fn real_data_mpd_dev_counts() {
    let started = Instant::now();
    let d = import_paths(&[datasets().join("mpd-dev")], None).unwrap();
    let took = started.elapsed();
    let stats = d.stats();
    assert_eq!(
        (stats.playlists, stats.entries, stats.tracks),
        (3_571, 354_350, 127_627)
    );
    assert_eq!(
        (stats.min_length, stats.max_length, stats.artists),
        (5, 250, 29_690)
    );
    assert!(
        d.tracks
            .iter()
            .all(|t| t.id.starts_with("spotify:track:") && t.album.is_none())
    );

    // The first slice by name opens with this playlist.
    let first = &d.playlists[0];
    assert_eq!(
        (first.id.as_str(), first.name.as_deref(), first.tracks.len()),
        ("mpd:2365", Some("classics"), 120)
    );
    let opener = &d.tracks[first.tracks[0] as usize];
    assert_eq!(
        (
            opener.id.as_str(),
            opener.title.as_str(),
            opener.artist.as_str()
        ),
        (
            "spotify:track:5Wj1rJnCLpMHdLaxsFtJLs",
            "Bennie And The Jets - Remastered 2014",
            "Elton John"
        )
    );

    let dir = tempfile::tempdir().unwrap();
    d.save(dir.path()).unwrap();
    let loaded = Dataset::load(dir.path()).unwrap();
    assert_eq!(loaded.fingerprint(), d.fingerprint());
    assert!(
        took < Duration::from_secs(20),
        "importing mpd-dev took {took:?}"
    );
}

#[test]
fn real_data_mpd_format_samples_have_albums() {
    let samples = datasets().join("mpd-format-samples");
    let messages = Messages::default();
    let options = ImportOptions::default();
    let d = import(
        &[samples.join("niclas_mpd.slice.0-999.json")],
        &options,
        &messages,
    )
    .unwrap();
    let stats = d.stats();
    assert_eq!((stats.playlists, stats.entries), (29, 1_448));
    assert!(
        d.tracks.iter().all(|t| t.album.is_some()),
        "the complete format has album_name"
    );
    let opener = &d.tracks[d.playlists[0].tracks[0] as usize];
    assert_eq!(
        (opener.title.as_str(), opener.album.as_deref()),
        (
            "Lose Control (feat. Ciara & Fat Man Scoop)",
            Some("The Cookbook")
        )
    );
    // Playlist pid 1 lists one track more than its num_tracks says.
    let messages = messages.0.lock().unwrap();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("(pid 1) says num_tracks 39 but lists 40 tracks")),
        "{messages:?}"
    );
    assert_eq!(d.playlists[1].tracks.len(), 40);

    // The other sample was cut at 1 MiB, in the middle of a string.
    let cut = samples.join("rtirfe_mpd.slice.0-999.json");
    let err = import_paths(&[cut], None).unwrap_err();
    assert!(matches!(err, DatasetError::Truncated { .. }), "{err}");
    let err = err.to_string();
    assert!(
        err.contains("rtirfe_mpd.slice.0-999.json line 21320") && err.contains("looks truncated"),
        "{err}"
    );
}

#[test]
fn real_data_spotify19k_playlists() {
    let folder = datasets().join("spotify-19k");
    let d = import_paths(&[folder.join("song_info_RA_19k.csv")], None).unwrap();
    let stats = d.stats();
    assert_eq!(
        (stats.playlists, stats.entries, stats.tracks),
        (300, 18_835, 14_006)
    );
    assert_eq!((stats.min_length, stats.max_length), (10, 100));
    let first = &d.playlists[0];
    assert_eq!(
        (first.id.as_str(), first.name.as_deref()),
        ("spotify19k:00s Rock Anthems", Some("00s Rock Anthems"))
    );
    let opener = &d.tracks[first.tracks[0] as usize];
    assert_eq!(opener.id, "Green Day — Boulevard of Broken Dreams");
    assert_eq!(
        opener.album.as_deref(),
        Some("Greatest Hits: God's Favorite Band")
    );

    // The folder's other tables have other headers; auto-detection says so.
    let err = import_paths(&[folder], None).unwrap_err().to_string();
    assert!(
        err.contains("cannot tell which format") && err.contains("pass --format"),
        "{err}"
    );
}

#[test]
fn real_data_lastfm_sessions() {
    let folder = datasets().join("lastfm-1k-sample");
    let history = folder.join("myluco_userid-timestamp-artid-artname-traid-traname.tsv");
    let with_header = folder.join("franklin_userid-timestamp-artid-artname-traid-traname.tsv");
    let d = import_paths(std::slice::from_ref(&history), None).unwrap();
    let stats = d.stats();
    // Worked out by hand (a short script) from the file: 30-minute gaps,
    // sessions of 2 tracks or more.
    assert_eq!(
        (
            stats.playlists,
            stats.entries,
            stats.tracks,
            stats.max_length
        ),
        (300, 4_977, 1_189, 166)
    );
    assert_eq!(d.playlists[0].id, "lastfm:user_000001@2008-12-08T06:13:34Z");
    assert_eq!(d.playlists[0].tracks.len(), 15);
    assert_eq!(
        tracks_of(&d, "lastfm:user_000001@2008-12-08T06:13:34Z")[0],
        "Jikan Wo Tomete (Featuring Maki Nomiya)"
    );
    assert_eq!(
        tracks_of(&d, "lastfm:user_000001@2009-04-16T13:07:18Z").len(),
        166
    );
    // The same song twice in one session is one catalogue entry.
    let last = d.playlists.last().unwrap();
    assert_eq!(last.id, "lastfm:user_000002@2008-12-08T06:04:00Z");
    assert_eq!(
        tracks_of(&d, &last.id),
        ["Milkshake", "Volcan Veins", "Milkshake"]
    );
    assert_eq!(last.tracks[0], last.tracks[2]);
    // Two scrobbles at 11:11:08; listed newest first, the lower line played first.
    let session = tracks_of(&d, "lastfm:user_000001@2008-12-08T09:21:55Z");
    let evacuation = session
        .iter()
        .position(|&t| t == "Evacuation Plan")
        .unwrap();
    assert_eq!(session[evacuation - 1], "When I Die");
    // Without a track-mbid, artist and title make the id.
    assert!(
        d.tracks
            .iter()
            .any(|t| t.id == "Kissey Asplund — Move Me [Feat. Soliloquy]")
    );

    // The other sample has a header and is a part of the first: together
    // they give the same sessions.
    let part = import_paths(std::slice::from_ref(&with_header), None).unwrap();
    assert_eq!((part.playlists.len(), part.entries()), (5, 85));
    let both = import_paths(&[with_header, history], None).unwrap();
    assert_eq!(both.fingerprint(), d.fingerprint());

    let err = import_paths(&[folder.join("userid-profile.tsv")], None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is the Last.fm-1K user profile table"),
        "{err}"
    );
}
