//! The on-disk form of a data set: a folder with `dataset.json`,
//! `tracks.jsonl` and `playlists.jsonl`.

use super::error::{DatasetError, Location, Problem};
use super::io::{json_error, open_input, read_error};
use super::{
    Dataset, MAX_JSONL_LINE_BYTES, MAX_PLAYLIST_TRACKS, MAX_TEXT_BYTES, MAX_TRACKS, Playlist, Track,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const FORMAT: &str = "setlist-dataset";
const VERSION: u64 = 1;
const DESCRIPTION: &str = "dataset.json";
const TRACKS: &str = "tracks.jsonl";
const PLAYLISTS: &str = "playlists.jsonl";
const MAX_DESCRIPTION_BYTES: u64 = 64 << 10;

/// `dataset.json`: what the folder holds, so a reader can tell a complete
/// data set from a damaged one.
#[derive(Serialize, Deserialize)]
struct Description {
    format: String,
    version: u64,
    source: String,
    tracks: u64,
    playlists: u64,
    entries: u64,
}

/// Checks one text field against the limits; `required` fields (ids) must
/// not be empty either.
pub(crate) fn check_text(value: &str, required: bool) -> Result<(), Problem> {
    if required && value.is_empty() {
        return Err(Problem::Empty);
    }
    if value.len() > MAX_TEXT_BYTES {
        return Err(Problem::TooLong {
            len: value.len(),
            limit: MAX_TEXT_BYTES,
        });
    }
    Ok(())
}

fn check_field(
    at: &Location,
    field: &str,
    value: &str,
    required: bool,
) -> Result<(), DatasetError> {
    check_text(value, required).map_err(|p| DatasetError::invalid(at.clone(), field, p))
}

impl Dataset {
    /// Writes the data set into folder `dir`, creating it if needed and
    /// replacing a data set already there. Each file is written under a
    /// temporary name first, and `dataset.json` is put in place last, so an
    /// interrupted save leaves no folder that [`Dataset::load`] would take for
    /// complete.
    pub fn save(&self, dir: &Path) -> Result<(), DatasetError> {
        self.check(dir)?;
        prepare_output(dir)?;
        let description = Description {
            format: FORMAT.to_owned(),
            version: VERSION,
            source: self.source.clone(),
            tracks: self.tracks.len() as u64,
            playlists: self.playlists.len() as u64,
            entries: self.entries() as u64,
        };
        let staged = [
            stage(dir, TRACKS, |w| write_jsonl(w, &self.tracks))?,
            stage(dir, PLAYLISTS, |w| write_jsonl(w, &self.playlists))?,
            stage(dir, DESCRIPTION, |w| {
                serde_json::to_writer_pretty(&mut *w, &description)?;
                w.write_all(b"\n")
            })?,
        ];
        let description_path = dir.join(DESCRIPTION);
        match fs::remove_file(&description_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(DatasetError::io("replace", description_path, e));
            }
            _ => {}
        }
        for (temporary, name) in staged.iter().zip([TRACKS, PLAYLISTS, DESCRIPTION]) {
            let target = dir.join(name);
            fs::rename(temporary, &target).map_err(|e| DatasetError::io("write", target, e))?;
        }
        // Makes the renames themselves durable.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| DatasetError::io("write", dir, e))
    }

    /// Reads a data set folder written by [`Dataset::save`], checking that
    /// the files agree with each other and stay within the limits.
    pub fn load(dir: &Path) -> Result<Dataset, DatasetError> {
        let description = read_description(dir)?;
        let description_path = dir.join(DESCRIPTION);
        let (tracks, tracks_found) = read_jsonl::<Track>(&dir.join(TRACKS), description.tracks)?;
        let (playlists, playlists_found) =
            read_jsonl::<Playlist>(&dir.join(PLAYLISTS), description.playlists)?;
        for (what, declared, found, file) in [
            ("tracks", description.tracks, tracks_found, TRACKS),
            (
                "playlists",
                description.playlists,
                playlists_found,
                PLAYLISTS,
            ),
        ] {
            if declared != found {
                return Err(DatasetError::CountMismatch {
                    path: description_path,
                    what,
                    declared,
                    found,
                    other: dir.join(file),
                });
            }
        }
        let dataset = Dataset {
            source: description.source,
            tracks,
            playlists,
        };
        let entries = dataset.entries() as u64;
        if entries != description.entries {
            return Err(DatasetError::CountMismatch {
                path: description_path,
                what: "playlist entries",
                declared: description.entries,
                found: entries,
                other: dir.join(PLAYLISTS),
            });
        }
        dataset.check(dir)?;
        Ok(dataset)
    }

    /// SHA-256 (hex) of the catalogue and playlists in their saved form, so a
    /// model can record which data it was trained on. The `source` is left
    /// out: the same data imported from another path is the same data.
    pub fn fingerprint(&self) -> String {
        let mut hash = HashWriter(Sha256::new());
        let written: io::Result<()> = (|| {
            writeln!(hash, "{FORMAT}/{VERSION}")?;
            writeln!(hash, "{}", self.tracks.len())?;
            write_jsonl(&mut hash, &self.tracks)?;
            writeln!(hash, "{}", self.playlists.len())?;
            write_jsonl(&mut hash, &self.playlists)
        })();
        // Hashing into memory cannot fail.
        debug_assert!(written.is_ok());
        hex::encode(hash.0.finalize())
    }

    /// Checks every rule of the internal form, naming the line each track or
    /// playlist has (or would have) in the files under `dir`.
    fn check(&self, dir: &Path) -> Result<(), DatasetError> {
        if self.tracks.len() > MAX_TRACKS {
            return Err(DatasetError::CatalogueTooLarge { limit: MAX_TRACKS });
        }
        let description = Location::file(dir.join(DESCRIPTION));
        check_field(&description, "source", &self.source, false)?;

        let tracks_path = dir.join(TRACKS);
        let mut track_lines: HashMap<&str, u64> = HashMap::with_capacity(self.tracks.len());
        for (line, track) in (1..).zip(&self.tracks) {
            let at = Location::line(&tracks_path, line);
            check_field(&at, "id", &track.id, true)?;
            check_field(&at, "title", &track.title, false)?;
            check_field(&at, "artist", &track.artist, false)?;
            check_field(
                &at,
                "album",
                track.album.as_deref().unwrap_or_default(),
                false,
            )?;
            if let Some(first_line) = track_lines.insert(&track.id, line) {
                let problem = Problem::DuplicateTrack {
                    id: track.id.clone(),
                    first_line,
                };
                return Err(DatasetError::invalid(at, "id", problem));
            }
        }

        let playlists_path = dir.join(PLAYLISTS);
        let mut playlist_lines: HashMap<&str, u64> = HashMap::with_capacity(self.playlists.len());
        for (line, playlist) in (1..).zip(&self.playlists) {
            let at = Location::line(&playlists_path, line);
            check_field(&at, "id", &playlist.id, true)?;
            check_field(
                &at,
                "name",
                playlist.name.as_deref().unwrap_or_default(),
                false,
            )?;
            if playlist.tracks.len() > MAX_PLAYLIST_TRACKS {
                let problem = Problem::TooManyTracks {
                    len: playlist.tracks.len(),
                    limit: MAX_PLAYLIST_TRACKS,
                };
                return Err(DatasetError::invalid(at, "tracks", problem));
            }
            if let Some(&index) = playlist
                .tracks
                .iter()
                .find(|&&i| i as usize >= self.tracks.len())
            {
                let problem = Problem::OutOfRange {
                    index,
                    tracks: self.tracks.len(),
                };
                return Err(DatasetError::invalid(at, "tracks", problem));
            }
            if let Some(first_line) = playlist_lines.insert(&playlist.id, line) {
                let problem = Problem::DuplicatePlaylist {
                    id: playlist.id.clone(),
                    first_line,
                };
                return Err(DatasetError::invalid(at, "id", problem));
            }
        }
        Ok(())
    }
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_jsonl<T: Serialize>(w: &mut impl Write, items: &[T]) -> io::Result<()> {
    for item in items {
        serde_json::to_writer(&mut *w, item)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Creates `dir`, or makes sure what is in it is only an earlier data set
/// (perhaps half-written) that may be replaced.
fn prepare_output(dir: &Path) -> Result<(), DatasetError> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(|e| DatasetError::io("read", dir, e))?;
                let name = entry.file_name();
                let ours = [DESCRIPTION, TRACKS, PLAYLISTS].iter().any(|known| {
                    name.to_str()
                        .is_some_and(|n| n == *known || n.strip_suffix(".tmp") == Some(known))
                });
                if !ours {
                    return Err(DatasetError::OutputNotEmpty {
                        path: dir.to_path_buf(),
                    });
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| DatasetError::io("create", dir, e))
        }
        Err(e) => Err(DatasetError::io("open", dir, e)),
    }
}

/// Writes `dir/name.tmp` through `write` and flushes it to disk; returns its
/// path.
fn stage(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<PathBuf, DatasetError> {
    let path = dir.join(format!("{name}.tmp"));
    let written = File::create(&path).and_then(|file| {
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        w.into_inner()
            .map_err(io::IntoInnerError::into_error)?
            .sync_all()
    });
    written.map_err(|e| DatasetError::io("write", &path, e))?;
    Ok(path)
}

fn read_description(dir: &Path) -> Result<Description, DatasetError> {
    let path = dir.join(DESCRIPTION);
    let file = match File::open(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DatasetError::NotADataset {
                path: dir.to_path_buf(),
            });
        }
        opened => opened.map_err(|e| DatasetError::io("open", &path, e))?,
    };
    let mut bytes = Vec::new();
    file.take(MAX_DESCRIPTION_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| DatasetError::io("read", &path, e))?;
    if bytes.len() as u64 > MAX_DESCRIPTION_BYTES {
        return Err(DatasetError::FileTooLarge {
            path,
            limit: MAX_DESCRIPTION_BYTES,
        });
    }
    let value: serde_json::Value = parse_json(&path, None, &bytes)?;
    let at = Location::file(&path);
    let format = value.get("format").and_then(|f| f.as_str());
    if format != Some(FORMAT) {
        let found = format.map_or_else(|| "(none)".to_owned(), str::to_owned);
        return Err(DatasetError::WrongFormat { path, found });
    }
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(VERSION) => {}
        Some(version) => {
            return Err(DatasetError::UnsupportedVersion {
                path,
                version,
                supported: VERSION,
            });
        }
        None => {
            let message = "it must be a whole number".to_owned();
            return Err(DatasetError::Syntax {
                at,
                field: Some("version".into()),
                message,
            });
        }
    }
    serde_path_to_error::deserialize(value).map_err(|e| DatasetError::Syntax {
        at,
        field: Some(e.path().to_string()).filter(|p| p != "."),
        message: e.into_inner().to_string(),
    })
}

fn parse_json<T: DeserializeOwned>(
    path: &Path,
    line: Option<u64>,
    bytes: &[u8],
) -> Result<T, DatasetError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        json_error(path, line, Some(field), e.into_inner())
    })?;
    de.end().map_err(|e| json_error(path, line, None, e))?;
    Ok(value)
}

/// Reads one record per line. Stops keeping records after `declared` of them
/// (only counting the rest), so a damaged count cannot make it hold more
/// than the file.
fn read_jsonl<T: DeserializeOwned>(
    path: &Path,
    declared: u64,
) -> Result<(Vec<T>, u64), DatasetError> {
    let (file, _) = open_input(path)?;
    let mut reader = BufReader::new(file);
    let capacity = declared.min(1 << 20) as usize;
    let mut records = Vec::with_capacity(capacity);
    let mut buf = Vec::new();
    let mut count = 0u64;
    for line in 1.. {
        buf.clear();
        let n = (&mut reader)
            .take(MAX_JSONL_LINE_BYTES as u64 + 2)
            .read_until(b'\n', &mut buf)
            .map_err(|e| read_error(path, e))?;
        if n == 0 {
            break;
        }
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.len() > MAX_JSONL_LINE_BYTES {
            return Err(DatasetError::LineTooLong {
                at: Location::line(path, line),
                limit: MAX_JSONL_LINE_BYTES,
            });
        }
        if text.is_empty() {
            return Err(DatasetError::Syntax {
                at: Location::line(path, line),
                field: None,
                message: "the line is empty; remove it, or import the data again".to_owned(),
            });
        }
        count += 1;
        if count <= declared {
            records.push(parse_json(path, Some(line), text)?);
        }
    }
    Ok((records, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::DatasetBuilder;

    fn sample() -> Dataset {
        let mut b = DatasetBuilder::new("unit test");
        let a = b.track("spotify:track:a", "Alpha", "Ann", Some("First"));
        let c = b.track("spotify:track:c", "Gamma \"quoted\"\nline", "Cy", None);
        b.playlist("p1", Some("One".into()), vec![a, c, a]);
        b.playlist("p2", None, vec![]);
        b.finish()
    }

    fn saved(dataset: &Dataset) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        dataset.save(dir.path()).unwrap();
        dir
    }

    fn rewrite(dir: &Path, name: &str, edit: impl FnOnce(String) -> String) {
        let path = dir.join(name);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, edit(text)).unwrap();
    }

    fn load_error(dir: &Path) -> String {
        Dataset::load(dir).unwrap_err().to_string()
    }

    #[test]
    fn save_then_load_round_trips() {
        let d = sample();
        let dir = saved(&d);
        assert_eq!(Dataset::load(dir.path()).unwrap(), d);
        let description: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join(DESCRIPTION)).unwrap()).unwrap();
        assert_eq!(
            description,
            serde_json::json!({"format": "setlist-dataset", "version": 1, "source": "unit test",
                "tracks": 2, "playlists": 2, "entries": 3})
        );
        let playlists = fs::read_to_string(dir.path().join(PLAYLISTS)).unwrap();
        assert_eq!(
            playlists,
            "{\"id\":\"p1\",\"name\":\"One\",\"tracks\":[0,1,0]}\n{\"id\":\"p2\",\"name\":null,\"tracks\":[]}\n"
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "no temporary files are left: {names:?}");
    }

    #[test]
    fn save_replaces_a_data_set_but_not_other_files() {
        let dir = saved(&sample());
        let mut other = sample();
        other.playlists.pop();
        other.save(dir.path()).unwrap();
        assert_eq!(Dataset::load(dir.path()).unwrap(), other);

        fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let err = sample().save(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("holds files other than a Setlist data set"),
            "{err}"
        );
    }

    #[test]
    fn an_interrupted_save_is_not_taken_for_a_data_set() {
        let dir = saved(&sample());
        fs::remove_file(dir.path().join(DESCRIPTION)).unwrap();
        assert!(load_error(dir.path()).contains("has no dataset.json"));
        sample().save(dir.path()).unwrap();
        assert_eq!(Dataset::load(dir.path()).unwrap(), sample());
    }

    #[test]
    fn save_refuses_a_data_set_that_breaks_the_rules() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = sample();
        d.playlists[0].tracks.push(7);
        let err = d.save(dir.path()).unwrap_err().to_string();
        assert!(err.contains("playlists.jsonl line 1: field \"tracks\": index 7 is out of range (the catalogue has 2 tracks)"), "{err}");
        assert!(!dir.path().join(DESCRIPTION).exists());
    }

    #[test]
    fn fingerprint_follows_content_not_source() {
        let d = sample();
        let mut renamed = d.clone();
        renamed.source = "elsewhere".into();
        assert_eq!(d.fingerprint(), renamed.fingerprint());
        assert_eq!(d.fingerprint().len(), 64);
        let mut reordered = d.clone();
        reordered.playlists[0].tracks.swap(0, 1);
        assert_ne!(d.fingerprint(), reordered.fingerprint());
        let dir = saved(&d);
        assert_eq!(
            Dataset::load(dir.path()).unwrap().fingerprint(),
            d.fingerprint()
        );
    }

    #[test]
    fn load_names_the_file_line_and_field_of_each_problem() {
        type Edit = Box<dyn Fn(String) -> String>;
        let cases: Vec<(&str, Edit, &str)> = vec![
            (
                DESCRIPTION,
                Box::new(|t| t.replace("setlist-dataset", "other")),
                "has \"format\": \"other\", not \"setlist-dataset\"",
            ),
            (
                DESCRIPTION,
                Box::new(|t| t.replace("\"version\": 1", "\"version\": 2")),
                "is version 2 of the data set format, but this setlist reads only version 1",
            ),
            (
                DESCRIPTION,
                Box::new(|t| t.replace("\"version\": 1", "\"version\": \"1\"")),
                "dataset.json: field \"version\": it must be a whole number",
            ),
            (
                DESCRIPTION,
                Box::new(|t| t.replace("\"tracks\": 2", "\"tracks\": 3")),
                "says there are 3 tracks, but",
            ),
            (
                DESCRIPTION,
                Box::new(|t| t.replace("\"entries\": 3", "\"entries\": 4")),
                "says there are 4 playlist entries",
            ),
            (
                DESCRIPTION,
                Box::new(|t| t.replace("\"source\": \"unit test\",", "")),
                "dataset.json: missing field `source`",
            ),
            (
                DESCRIPTION,
                Box::new(|t| t.replace('}', "")),
                "dataset.json line 9 column 0: the file ends in the middle of its JSON",
            ),
            (
                TRACKS,
                Box::new(|t| t + "\n"),
                "tracks.jsonl line 3: the line is empty; remove it",
            ),
            (
                TRACKS,
                Box::new(|t| t.replace("spotify:track:c", "spotify:track:a")),
                "tracks.jsonl line 2: field \"id\": track id \"spotify:track:a\" also appears on line 1",
            ),
            (
                TRACKS,
                Box::new(|t| t.replace("\"id\":\"spotify:track:c\",", "")),
                "tracks.jsonl line 2 column 61: missing field `id`",
            ),
            (
                TRACKS,
                Box::new(|t| t.replace("\"Ann\"", "7")),
                "tracks.jsonl line 1 column 50: field \"artist\": invalid type: integer `7`, expected a string",
            ),
            (
                TRACKS,
                Box::new(|t| t.replace("Alpha", &"x".repeat(1025))),
                "tracks.jsonl line 1: field \"title\": is 1025 bytes long, over the limit of 1024 bytes",
            ),
            (
                TRACKS,
                Box::new(|t| t.replace("spotify:track:a", "")),
                "tracks.jsonl line 1: field \"id\": is empty",
            ),
            (
                TRACKS,
                Box::new(|t| t.replace("}\n{", "} {")),
                "tracks.jsonl line 1 column 73: trailing characters",
            ),
            (
                PLAYLISTS,
                Box::new(|t| t.replace("[0,1,0]", "[0,90211,0]")),
                "playlists.jsonl line 1: field \"tracks\": index 90211 is out of range (the catalogue has 2 tracks)",
            ),
            (
                PLAYLISTS,
                Box::new(|t| t.replace("[0,1,0]", "[0,\"x\",0]")),
                "playlists.jsonl line 1 column 39: field \"tracks[1]\": invalid type: string \"x\", expected u32",
            ),
            (
                PLAYLISTS,
                Box::new(|t| t.replace("[0,1,0]", "[0,-1,0]")),
                "field \"tracks[1]\": invalid value: integer `-1`, expected u32",
            ),
            (
                PLAYLISTS,
                Box::new(|t| t.replace("\"p2\"", "\"p1\"")),
                "playlists.jsonl line 2: field \"id\": playlist id \"p1\" also appears on line 1",
            ),
            (
                PLAYLISTS,
                Box::new(|t| t.replace("\n{\"id\":\"p2\"", "\n\n{\"id\":\"p2\"")),
                "playlists.jsonl line 2: the line is empty; remove it",
            ),
        ];
        for (file, edit, expected) in cases {
            let dir = saved(&sample());
            rewrite(dir.path(), file, edit);
            let err = load_error(dir.path());
            assert!(
                err.contains(expected),
                "editing {file}: expected {expected:?} in {err:?}"
            );
            assert!(
                err.ends_with("again") || err.contains("; "),
                "says what to do: {err}"
            );
        }
    }

    #[test]
    fn load_refuses_oversized_lines_and_playlists() {
        let dir = saved(&sample());
        rewrite(dir.path(), TRACKS, |t| {
            t.replace("Alpha", &"x".repeat(MAX_JSONL_LINE_BYTES))
        });
        assert!(
            load_error(dir.path())
                .contains("tracks.jsonl line 1: the line is longer than 4194304 bytes")
        );

        let dir = saved(&sample());
        let long = vec!["0"; MAX_PLAYLIST_TRACKS + 1].join(",");
        rewrite(dir.path(), PLAYLISTS, |t| {
            t.replace("[0,1,0]", &format!("[{long}]"))
        });
        rewrite(dir.path(), DESCRIPTION, |t| {
            t.replace("\"entries\": 3", "\"entries\": 100001")
        });
        let err = load_error(dir.path());
        assert!(err.contains("playlists.jsonl line 1: field \"tracks\": has 100001 tracks, over the limit of 100000"), "{err}");
    }

    #[test]
    fn load_reports_a_missing_folder_or_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_error(&dir.path().join("nope")).contains("has no dataset.json"));
        let dir = saved(&sample());
        fs::remove_file(dir.path().join(PLAYLISTS)).unwrap();
        assert!(
            load_error(dir.path()).contains("cannot open"),
            "{}",
            load_error(dir.path())
        );
    }
}
