//! No input makes an importer or `Dataset::load` panic: random bytes, text
//! built from each format's own characters, and valid files with random
//! edits all end in a data set or an error.

use proptest::prelude::*;
use proptest::sample::Index;
use setlist_core::dataset::{Dataset, DatasetBuilder, Format, ImportOptions, import};
use setlist_core::progress::Silent;
use std::fs;

const MPD: &str = r#"{"info": {"slice": "0-999"}, "playlists": [
 {"name": "n", "pid": 3, "num_tracks": 2, "tracks": [
  {"pos": 1, "artist_name": "A", "track_uri": "spotify:track:1", "track_name": "One", "album_name": "X"},
  {"pos": 0, "artist_name": "B", "track_uri": "spotify:track:2", "track_name": "Two"}]}]}
"#;
const CSV: &str = "playlist_id,position,track_id,track_name,artist_name,album_name\n\
    p,1,t1,\"One, two\",A,X\np,0,t2,Two,B,\nq,0,t1,One,A,\n";
const SPOTIFY: &str = "song_name,artist_name,album_names,playlist\nOne,A,X,Mix\nTwo,B,,Mix\n";
const LASTFM: &str = "user\ttimestamp\tartist_id\tartist\tartist_id\tsong\n\
    u\t2009-05-04T23:08:57Z\tx\tA\tm1\tOne\nu\t2009-05-04T23:05:00Z\t\tB\t\tTwo\n";
const VALID: [(&str, Option<Format>); 4] = [
    (MPD, Some(Format::Mpd)),
    (CSV, Some(Format::Csv)),
    (SPOTIFY, Some(Format::Spotify19k)),
    (LASTFM, Some(Format::LastFm)),
];
const FORMATS: [Option<Format>; 5] = [
    None,
    Some(Format::Mpd),
    Some(Format::Csv),
    Some(Format::Spotify19k),
    Some(Format::LastFm),
];

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

fn import_bytes(bytes: &[u8], name: &str, format: Option<Format>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    fs::write(&path, bytes).unwrap();
    let options = ImportOptions {
        format,
        ..ImportOptions::default()
    };
    if let Ok(dataset) = import(&[path], &options, &Silent) {
        // Whatever an import accepts must save and load again.
        let out = dir.path().join("out");
        dataset.save(&out).unwrap();
        assert_eq!(Dataset::load(&out).unwrap(), dataset);
    }
}

fn saved() -> tempfile::TempDir {
    let mut b = DatasetBuilder::new("fuzz");
    let a = b.track("a", "Alpha", "Ann", Some("First"));
    let c = b.track("c", "Gamma", "Cy", None);
    b.playlist("p1", Some("One".into()), vec![a, c, a]);
    b.playlist("p2", None, vec![c]);
    let dir = tempfile::tempdir().unwrap();
    b.finish().save(dir.path()).unwrap();
    dir
}

const DATASET_FILES: [&str; 3] = ["dataset.json", "tracks.jsonl", "playlists.jsonl"];

fn edits() -> impl Strategy<Value = Vec<(Index, u8, u8)>> {
    prop::collection::vec((any::<Index>(), any::<u8>(), any::<u8>()), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn importers_survive_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512), format in 0..FORMATS.len()) {
        import_bytes(&bytes, "input", FORMATS[format]);
    }

    #[test]
    fn importers_survive_text_of_their_own_alphabet(
        text in "[a-z0-9 ,\t\n\r\"{}:\\[\\]TZ@#-]{0,300}",
        format in 0..FORMATS.len(),
        name in prop::sample::select(vec!["input.json", "input.csv", "input.tsv", "input"]),
    ) {
        import_bytes(text.as_bytes(), name, FORMATS[format]);
    }

    #[test]
    fn importers_survive_damaged_valid_files(which in 0..VALID.len(), edits in edits(), auto in any::<bool>()) {
        let (content, format) = VALID[which];
        import_bytes(&damage(content.as_bytes().to_vec(), &edits), "input", if auto { None } else { format });
    }

    #[test]
    fn load_survives_random_bytes(which in 0..DATASET_FILES.len(), bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let dir = saved();
        fs::write(dir.path().join(DATASET_FILES[which]), bytes).unwrap();
        let _ = Dataset::load(dir.path());
    }

    #[test]
    fn load_survives_damaged_files(which in 0..DATASET_FILES.len(), edits in edits()) {
        let dir = saved();
        let path = dir.path().join(DATASET_FILES[which]);
        fs::write(&path, damage(fs::read(&path).unwrap(), &edits)).unwrap();
        if let Ok(dataset) = Dataset::load(dir.path()) {
            let again = tempfile::tempdir().unwrap();
            dataset.save(again.path()).unwrap();
        }
    }
}

#[test]
fn the_valid_fixtures_import() {
    for (content, format) in VALID {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input");
        fs::write(&path, content).unwrap();
        let options = ImportOptions {
            format,
            ..ImportOptions::default()
        };
        let d = import(&[path], &options, &Silent).unwrap_or_else(|e| panic!("{e}"));
        assert!(!d.playlists.is_empty() && d.entries() >= 2, "{format:?}");
    }
}
