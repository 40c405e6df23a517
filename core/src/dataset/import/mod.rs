//! Real playlist data in its published formats, turned into a [`Dataset`].
//!
//! Every importer reads through the same gate, [`Sink`], which enforces the
//! limits of the internal form, so whatever an import returns can be saved
//! and loaded again.

mod generic_csv;
mod lastfm;
mod mpd;
mod spotify19k;
mod table;

use super::error::{DatasetError, Location, Problem};
use super::io::open_input;
use super::store::check_text;
use super::{
    Dataset, DatasetBuilder, MAX_CSV_LINE_BYTES, MAX_PLAYLIST_TRACKS, MAX_TEXT_BYTES, MAX_TRACKS,
};
use crate::progress::Progress;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A published playlist data format Setlist can import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Spotify Million Playlist Dataset slice JSON.
    Mpd,
    /// `playlist_id,position,track_id,track_name,artist_name[,album_name]`.
    Csv,
    /// `song_info_RA_19k.csv` of the Spotify 19k editorial playlists.
    Spotify19k,
    /// Last.fm-1K listening histories (TSV), cut into listening sessions.
    LastFm,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Mpd, Format::Csv, Format::Spotify19k, Format::LastFm];

    /// The name `--format` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Mpd => "mpd",
            Format::Csv => "csv",
            Format::Spotify19k => "spotify19k",
            Format::LastFm => "lastfm",
        }
    }

    /// The files of this format a folder is searched for.
    fn pattern(self) -> &'static str {
        match self {
            Format::Mpd => "*.json",
            Format::Csv | Format::Spotify19k => "*.csv",
            Format::LastFm => "*.tsv",
        }
    }

    /// Tells the format of one file from its first line, falling back on its
    /// extension when the content is not conclusive.
    pub fn detect(path: &Path) -> Result<Format, DatasetError> {
        let (file, _) = open_input(path)?;
        let mut head = Vec::new();
        file.take(MAX_CSV_LINE_BYTES as u64)
            .read_to_end(&mut head)
            .map_err(|e| DatasetError::io("read", path, e))?;
        let head = head.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&head);
        if head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            return Ok(Format::Mpd);
        }
        let first = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let first = String::from_utf8_lossy(first.strip_suffix(b"\r").unwrap_or(first));
        if generic_csv::is_header(&first) {
            return Ok(Format::Csv);
        }
        if spotify19k::is_header(&first) {
            return Ok(Format::Spotify19k);
        }
        if lastfm::is_scrobble_line(&first) {
            return Ok(Format::LastFm);
        }
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("json") => Ok(Format::Mpd),
            Some("tsv") => Ok(Format::LastFm),
            _ => {
                let reason = if head.is_empty() {
                    "it is empty".to_owned()
                } else {
                    let shown: String = first.chars().take(80).collect();
                    format!("its first line, {shown:?}, is not a header Setlist knows")
                };
                Err(DatasetError::UnknownFormat {
                    path: path.to_path_buf(),
                    reason,
                })
            }
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a listening history is cut into sessions, each of which becomes a
/// playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// A pause longer than this many seconds starts a new session.
    pub gap_seconds: u64,
    /// Sessions with fewer tracks are left out: they hold no next song.
    pub min_tracks: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            gap_seconds: 30 * 60,
            min_tracks: 2,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// `None` tells each file's format from its content and extension.
    pub format: Option<Format>,
    pub sessions: SessionOptions,
}

/// Imports files and folders (each folder's files of the format, sorted by
/// name) into one data set: the same track id anywhere is the same track.
/// Progress is reported in bytes read.
pub fn import(
    inputs: &[PathBuf],
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<Dataset, DatasetError> {
    if inputs.is_empty() {
        return Err(DatasetError::NoInputs);
    }
    let mut files = Vec::new();
    for input in inputs {
        expand(input, options.format, &mut files)?;
    }
    // A file named twice (itself and through its folder, say) would repeat
    // its playlists' entries.
    let mut seen = HashSet::new();
    let mut repeated = Vec::new();
    files.retain(|(path, _)| {
        let first = seen.insert(std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()));
        if !first {
            repeated.push(path.display().to_string());
        }
        first
    });
    let total = files
        .iter()
        .filter_map(|(path, _)| path.metadata().ok())
        .map(|m| m.len())
        .sum();

    let mut formats: Vec<Format> = Vec::new();
    for (_, format) in &files {
        if !formats.contains(format) {
            formats.push(*format);
        }
    }
    let mut sink = Sink::new(describe_source(&formats, inputs), progress);
    for path in repeated {
        sink.warn(&format!("{path} was named more than once; it is read once"));
    }
    progress.start("importing", total);
    for format in formats {
        let paths: Vec<PathBuf> = files
            .iter()
            .filter(|(_, f)| *f == format)
            .map(|(p, _)| p.clone())
            .collect();
        match format {
            Format::Mpd => mpd::read(&paths, &mut sink, progress)?,
            Format::Csv => generic_csv::read(&paths, &mut sink, progress)?,
            Format::Spotify19k => spotify19k::read(&paths, &mut sink, progress)?,
            Format::LastFm => lastfm::read(&paths, &options.sessions, &mut sink, progress)?,
        }
    }
    progress.finish();
    Ok(sink.finish())
}

/// Adds `input`, or the files of a folder sorted by name, with their formats.
fn expand(
    input: &Path,
    format: Option<Format>,
    files: &mut Vec<(PathBuf, Format)>,
) -> Result<(), DatasetError> {
    if !input.is_dir() {
        let format = match format {
            Some(format) => format,
            None => Format::detect(input)?,
        };
        files.push((input.to_path_buf(), format));
        return Ok(());
    }
    let patterns: Vec<&str> = match format {
        Some(format) => vec![format.pattern()],
        None => Format::ALL.iter().map(|f| f.pattern()).collect(),
    };
    let mut found = Vec::new();
    let entries = std::fs::read_dir(input).map_err(|e| DatasetError::io("open", input, e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| DatasetError::io("read", input, e))?
            .path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let wanted = extension.is_some_and(|e| patterns.contains(&format!("*.{e}").as_str()));
        if wanted && !name.starts_with('.') && path.is_file() {
            found.push(path);
        }
    }
    if found.is_empty() {
        let extensions = match format {
            Some(format) => format.pattern(),
            None => "*.json, *.csv or *.tsv",
        };
        return Err(DatasetError::EmptyFolder {
            path: input.to_path_buf(),
            extensions,
        });
    }
    found.sort();
    for path in found {
        expand(&path, format, files)?;
    }
    Ok(())
}

/// A short account of the inputs for [`Dataset::source`].
fn describe_source(formats: &[Format], inputs: &[PathBuf]) -> String {
    let names: Vec<&str> = formats.iter().map(|f| f.name()).collect();
    let mut shown: Vec<String> = inputs
        .iter()
        .take(3)
        .map(|p| p.display().to_string())
        .collect();
    if inputs.len() > 3 {
        shown.push(format!("and {} more", inputs.len() - 3));
    }
    let mut source = format!("{} import of {}", names.join("+"), shown.join(", "));
    if source.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES - '…'.len_utf8();
        while !source.is_char_boundary(end) {
            end -= 1;
        }
        source.truncate(end);
        source.push('…');
    }
    source
}

/// The names a format gives the parts of a track, for error messages.
pub(crate) struct TrackFields {
    pub id: &'static str,
    pub title: &'static str,
    pub artist: &'static str,
    pub album: &'static str,
}

/// One track as an input row describes it.
pub(crate) struct TrackRecord<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub artist: &'a str,
    pub album: Option<&'a str>,
}

/// Joins `parts` into an id for a source that has none, checking that the id
/// fits the limit; `field` names the parts for the error.
pub(crate) fn compose_id(
    at: &Location,
    field: &str,
    what: &'static str,
    parts: &[&str],
) -> Result<String, DatasetError> {
    let id = parts.concat();
    if id.len() > MAX_TEXT_BYTES {
        let problem = Problem::ComposedTooLong {
            what,
            len: id.len(),
            limit: MAX_TEXT_BYTES,
        };
        return Err(DatasetError::invalid(at.clone(), field, problem));
    }
    Ok(id)
}

/// The one way into an import's data set: checks the limits and that each
/// playlist id is used once, and collects warnings.
pub(crate) struct Sink<'p> {
    builder: DatasetBuilder,
    playlist_origins: HashMap<String, Location>,
    progress: &'p dyn Progress,
    warnings: usize,
}

/// Shown in full; past that only counted, so bad data cannot flood the screen.
const SHOWN_WARNINGS: usize = 10;

impl<'p> Sink<'p> {
    fn new(source: String, progress: &'p dyn Progress) -> Self {
        Sink {
            builder: DatasetBuilder::new(source),
            playlist_origins: HashMap::new(),
            progress,
            warnings: 0,
        }
    }

    /// Checks a track's fields against the limits.
    pub(crate) fn check_track(
        at: &Location,
        fields: &TrackFields,
        track: &TrackRecord<'_>,
    ) -> Result<(), DatasetError> {
        let values = [
            (fields.id, track.id, true),
            (fields.title, track.title, false),
            (fields.artist, track.artist, false),
            (fields.album, track.album.unwrap_or_default(), false),
        ];
        for (field, value, required) in values {
            check_text(value, required).map_err(|p| DatasetError::invalid(at.clone(), field, p))?;
        }
        Ok(())
    }

    /// Adds a track whose fields were checked already; fails only when the
    /// catalogue outgrows its limit.
    pub(crate) fn track(&mut self, track: &TrackRecord<'_>) -> Result<u32, DatasetError> {
        let index = self
            .builder
            .track(track.id, track.title, track.artist, track.album);
        if self.builder.track_count() > MAX_TRACKS {
            return Err(DatasetError::CatalogueTooLarge { limit: MAX_TRACKS });
        }
        Ok(index)
    }

    /// [`Self::check_track`], then [`Self::track`].
    pub(crate) fn checked_track(
        &mut self,
        at: &Location,
        fields: &TrackFields,
        track: &TrackRecord<'_>,
    ) -> Result<u32, DatasetError> {
        Self::check_track(at, fields, track)?;
        self.track(track)
    }

    /// Adds a playlist; `at` is where it starts, for errors.
    pub(crate) fn playlist(
        &mut self,
        at: Location,
        id: String,
        name: Option<String>,
        tracks: Vec<u32>,
    ) -> Result<(), DatasetError> {
        check_text(&id, true).map_err(|p| DatasetError::invalid(at.clone(), "playlist id", p))?;
        if let Some(name) = &name {
            check_text(name, false)
                .map_err(|p| DatasetError::invalid(at.clone(), "playlist name", p))?;
        }
        if tracks.len() > MAX_PLAYLIST_TRACKS {
            return Err(DatasetError::PlaylistTooLong {
                at,
                playlist: id,
                limit: MAX_PLAYLIST_TRACKS,
                hint: "",
            });
        }
        match self.playlist_origins.entry(id) {
            Entry::Occupied(first) => Err(DatasetError::DuplicatePlaylist {
                at,
                id: first.key().clone(),
                first: Box::new(first.get().clone()),
            }),
            Entry::Vacant(slot) => {
                self.builder.playlist(slot.key().clone(), name, tracks);
                slot.insert(at);
                Ok(())
            }
        }
    }

    /// Something the import worked around, worth telling the user.
    pub(crate) fn warn(&mut self, line: &str) {
        self.warnings += 1;
        if self.warnings <= SHOWN_WARNINGS {
            self.progress.message(&format!("warning: {line}"));
        }
    }

    /// Something worth knowing about the import that is not a problem.
    pub(crate) fn note(&self, line: &str) {
        self.progress.message(line);
    }

    fn finish(self) -> Dataset {
        if self.warnings > SHOWN_WARNINGS {
            let more = self.warnings - SHOWN_WARNINGS;
            self.progress
                .message(&format!("warning: {more} more warnings like these"));
        }
        self.builder.finish()
    }
}

/// Playlists whose rows may come in any order, kept in order of first
/// appearance, each within the playlist length limit.
pub(crate) struct Gathering<T> {
    index: HashMap<String, usize>,
    playlists: Vec<Gathered<T>>,
}

pub(crate) struct Gathered<T> {
    pub id: String,
    /// Where the playlist first appears.
    pub at: Location,
    pub entries: Vec<T>,
}

impl<T> Gathering<T> {
    pub(crate) fn new() -> Self {
        Gathering {
            index: HashMap::new(),
            playlists: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, id: &str, at: &Location, entry: T) -> Result<(), DatasetError> {
        let slot = match self.index.get(id) {
            Some(&slot) => slot,
            None => {
                self.index.insert(id.to_owned(), self.playlists.len());
                self.playlists.push(Gathered {
                    id: id.to_owned(),
                    at: at.clone(),
                    entries: Vec::new(),
                });
                self.playlists.len() - 1
            }
        };
        let playlist = &mut self.playlists[slot];
        if playlist.entries.len() >= MAX_PLAYLIST_TRACKS {
            return Err(DatasetError::PlaylistTooLong {
                at: at.clone(),
                playlist: id.to_owned(),
                limit: MAX_PLAYLIST_TRACKS,
                hint: "",
            });
        }
        playlist.entries.push(entry);
        Ok(())
    }

    pub(crate) fn into_playlists(self) -> Vec<Gathered<T>> {
        self.playlists
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::progress::Progress;
    use std::sync::Mutex;

    /// Records what an import reports, to check warnings and byte counts.
    #[derive(Default)]
    pub(crate) struct Recorder {
        pub messages: Mutex<Vec<String>>,
        pub advanced: Mutex<u64>,
        pub started: Mutex<u64>,
    }

    impl Progress for Recorder {
        fn start(&self, _what: &str, total: u64) {
            *self.started.lock().unwrap() = total;
        }
        fn advance(&self, n: u64) {
            *self.advanced.lock().unwrap() += n;
        }
        fn message(&self, line: &str) {
            self.messages.lock().unwrap().push(line.to_owned());
        }
        fn finish(&self) {}
    }

    /// Writes `files` (name, content) into a fresh folder.
    pub(crate) fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        dir
    }

    pub(crate) fn import_with(
        dir: &Path,
        names: &[&str],
        format: Option<Format>,
    ) -> Result<Dataset, DatasetError> {
        let inputs: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        let options = ImportOptions {
            format,
            ..ImportOptions::default()
        };
        import(&inputs, &options, &crate::progress::Silent)
    }

    pub(crate) fn import_error(dir: &Path, names: &[&str], format: Option<Format>) -> String {
        import_with(dir, names, format).unwrap_err().to_string()
    }

    const GENERIC: &str = "playlist_id,position,track_id,track_name,artist_name\np,0,t1,One,A\n";
    const MPD: &str = r#"{"playlists":[{"name":"m","pid":1,"tracks":[{"artist_name":"A","track_uri":"t1","track_name":"One"}]}]}"#;
    const SPOTIFY: &str = "song_name,artist_name,album_names,playlist\nOne,A,Al,Mix\n";
    const LASTFM: &str =
        "u\t2009-05-04T23:08:57Z\t\tA\tt1\tOne\nu\t2009-05-04T23:05:00Z\t\tA\tt2\tTwo\n";

    #[test]
    fn formats_are_told_by_content_then_extension() {
        let dir = fixture(&[
            ("a.json", MPD),
            ("b.txt", GENERIC),
            ("c.csv", SPOTIFY),
            ("d.txt", LASTFM),
            ("e.json", "[]"),
            ("f.tsv", "#id\tgender\n"),
            ("g.csv", "x,y\n1,2\n"),
            ("h.dat", ""),
            ("i", " \n {\"playlists\": []}"),
        ]);
        let detect = |name: &str| Format::detect(&dir.path().join(name));
        assert_eq!(detect("a.json").unwrap(), Format::Mpd);
        assert_eq!(detect("b.txt").unwrap(), Format::Csv);
        assert_eq!(detect("c.csv").unwrap(), Format::Spotify19k);
        assert_eq!(detect("d.txt").unwrap(), Format::LastFm);
        assert_eq!(detect("e.json").unwrap(), Format::Mpd);
        assert_eq!(detect("f.tsv").unwrap(), Format::LastFm);
        assert_eq!(detect("i").unwrap(), Format::Mpd);
        let err = detect("g.csv").unwrap_err().to_string();
        assert!(
            err.contains("cannot tell which format")
                && err.contains("\"x,y\"")
                && err.contains("pass --format"),
            "{err}"
        );
        assert!(
            detect("h.dat")
                .unwrap_err()
                .to_string()
                .contains("(it is empty)")
        );
        assert!(
            detect("missing")
                .unwrap_err()
                .to_string()
                .starts_with("cannot open")
        );
    }

    #[test]
    fn inputs_of_several_formats_merge_into_one_catalogue() {
        let dir = fixture(&[
            ("a.json", MPD),
            ("b.csv", GENERIC),
            ("c.csv", SPOTIFY),
            ("d.tsv", LASTFM),
        ]);
        let d = import_with(dir.path(), &["a.json", "b.csv", "c.csv", "d.tsv"], None).unwrap();
        let ids: Vec<&str> = d.tracks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["t1", "A — One", "t2"]);
        let playlists: Vec<(&str, &[u32])> = d
            .playlists
            .iter()
            .map(|p| (p.id.as_str(), p.tracks.as_slice()))
            .collect();
        assert_eq!(
            playlists,
            [
                ("mpd:1", &[0][..]),
                ("p", &[0][..]),
                ("spotify19k:Mix", &[1][..]),
                ("lastfm:u@2009-05-04T23:05:00Z", &[2, 0][..])
            ]
        );
        assert!(
            d.source.starts_with("mpd+csv+spotify19k+lastfm import of "),
            "{}",
            d.source
        );
    }

    #[test]
    fn folders_expand_to_their_files_in_name_order() {
        let dir = fixture(&[
            ("b.json", &MPD.replace("\"pid\":1", "\"pid\":2")),
            ("a.json", MPD),
            (".hidden.json", "not json"),
            ("notes.md", "ignored"),
        ]);
        let d = import(
            &[dir.path().to_path_buf()],
            &ImportOptions::default(),
            &crate::progress::Silent,
        )
        .unwrap();
        let ids: Vec<&str> = d.playlists.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["mpd:1", "mpd:2"]);

        let empty = fixture(&[("notes.md", "")]);
        let err = import(
            &[empty.path().to_path_buf()],
            &ImportOptions::default(),
            &crate::progress::Silent,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("holds no *.json, *.csv or *.tsv files"),
            "{err}"
        );
        let options = ImportOptions {
            format: Some(Format::LastFm),
            ..ImportOptions::default()
        };
        let err = import(
            &[dir.path().to_path_buf()],
            &options,
            &crate::progress::Silent,
        )
        .unwrap_err();
        assert!(err.to_string().contains("holds no *.tsv files"), "{err}");
        let err = import(&[], &ImportOptions::default(), &crate::progress::Silent).unwrap_err();
        assert!(matches!(err, DatasetError::NoInputs));
    }

    #[test]
    fn a_file_named_twice_is_read_once() {
        let dir = fixture(&[("c.csv", SPOTIFY)]);
        let inputs = [dir.path().join("c.csv"), dir.path().to_path_buf()];
        let recorder = Recorder::default();
        let d = import(&inputs, &ImportOptions::default(), &recorder).unwrap();
        assert_eq!(d.playlists[0].tracks.len(), 1);
        let messages = recorder.messages.lock().unwrap();
        assert!(
            messages[0].contains("c.csv was named more than once"),
            "{messages:?}"
        );
    }

    #[test]
    fn a_playlist_id_may_come_from_one_input_only() {
        let dir = fixture(&[("a.json", MPD), ("b.json", MPD)]);
        let err = import_error(dir.path(), &["a.json", "b.json"], None);
        assert!(
            err.contains("b.json: playlist id \"mpd:1\" was already imported from"),
            "{err}"
        );
        assert!(err.contains("a.json"), "{err}");
    }

    #[test]
    fn progress_counts_every_byte() {
        let dir = fixture(&[("a.json", MPD), ("b.csv", GENERIC), ("d.tsv", LASTFM)]);
        let inputs: Vec<PathBuf> = ["a.json", "b.csv", "d.tsv"]
            .iter()
            .map(|n| dir.path().join(n))
            .collect();
        let recorder = Recorder::default();
        import(&inputs, &ImportOptions::default(), &recorder).unwrap();
        let total = (MPD.len() + GENERIC.len() + LASTFM.len()) as u64;
        assert_eq!(*recorder.started.lock().unwrap(), total);
        assert_eq!(*recorder.advanced.lock().unwrap(), total);
    }

    #[test]
    fn the_source_stays_within_the_text_limit() {
        let long: Vec<PathBuf> = (0..3)
            .map(|i| PathBuf::from(format!("{i}{}", "é".repeat(400))))
            .collect();
        let source = describe_source(&[Format::Csv], &long);
        assert!(
            source.len() <= MAX_TEXT_BYTES && source.ends_with('…'),
            "{}",
            source.len()
        );
        let many: Vec<PathBuf> = (0..5).map(|i| PathBuf::from(format!("f{i}"))).collect();
        assert_eq!(
            describe_source(&[Format::Mpd], &many),
            "mpd import of f0, f1, f2, and 2 more"
        );
    }
}
