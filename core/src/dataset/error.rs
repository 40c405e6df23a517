//! The one error type of the data formats. Every message is a sentence that
//! names the file, the line and the field where it can, and says what to do.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where in an input something went wrong: a file, and the line (and column)
/// when the format has lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub column: Option<u64>,
}

impl Location {
    pub fn file(file: impl Into<PathBuf>) -> Self {
        Location {
            file: file.into(),
            line: None,
            column: None,
        }
    }

    pub fn line(file: impl Into<PathBuf>, line: u64) -> Self {
        Location {
            file: file.into(),
            line: Some(line),
            column: None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if let Some(column) = self.column {
            write!(f, " column {column}")?;
        }
        Ok(())
    }
}

/// What is wrong with one field's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    #[error("is empty; give it a value")]
    Empty,
    #[error("is {len} bytes long, over the limit of {limit} bytes; shorten it")]
    TooLong { len: usize, limit: usize },
    #[error("has {len} tracks, over the limit of {limit} tracks per playlist; split the playlist")]
    TooManyTracks { len: usize, limit: usize },
    #[error(
        "index {index} is out of range (the catalogue has {tracks} tracks); the data set is \
         damaged, so import or generate it again"
    )]
    OutOfRange { index: u32, tracks: usize },
    #[error("track id {id:?} also appears on line {first_line}; each track must be listed once")]
    DuplicateTrack { id: String, first_line: u64 },
    #[error(
        "playlist id {id:?} also appears on line {first_line}; each playlist must be listed once"
    )]
    DuplicatePlaylist { id: String, first_line: u64 },
    #[error("{value:?} is not a position (a whole number from 0 up); fix the row")]
    NotAPosition { value: String },
    #[error(
        "position {position} of playlist {playlist:?} is also used at {other}; give each track \
         of a playlist its own position"
    )]
    DuplicatePosition {
        playlist: String,
        position: u64,
        other: Location,
    },
    #[error(
        "track {track} has no \"pos\" but others in the playlist have one; give every track a \
         \"pos\" or none"
    )]
    PositionMissing { track: usize },
    #[error(
        "track {track} has pos {pos}, but the playlist has only {len} tracks; positions must run \
         from 0 to {len} - 1 without gaps"
    )]
    PositionGap { track: usize, pos: u64, len: usize },
    #[error(
        "tracks {first} and {second} both have pos {pos}; give each track of a playlist its own \
         position"
    )]
    PositionRepeated {
        first: usize,
        second: usize,
        pos: u64,
    },
    #[error("{value:?} is not a UTC time like 2009-05-04T23:08:57Z ({reason}); fix the line")]
    Timestamp { value: String, reason: &'static str },
    #[error("makes a {what} of {len} bytes, over the limit of {limit} bytes; shorten it")]
    ComposedTooLong {
        what: &'static str,
        len: usize,
        limit: usize,
    },
}

/// Everything that can go wrong reading, writing, importing or generating a
/// data set. The rarer, larger parts are boxed to keep `Result`s small.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} is larger than {limit} bytes, the limit for one input file; split it into smaller \
         files",
        path.display()
    )]
    FileTooLarge { path: PathBuf, limit: u64 },
    #[error(
        "{at}: the line is longer than {limit} bytes, the limit for one line; check that the \
         file is in the format you asked for, or split the long line"
    )]
    LineTooLong { at: Location, limit: usize },
    #[error("{at}: field \"{field}\": {problem}")]
    Invalid {
        at: Location,
        field: String,
        problem: Box<Problem>,
    },
    #[error("{at}: {}{}", field_prefix(field), with_remedy(message))]
    Syntax {
        at: Location,
        field: Option<String>,
        message: String,
    },
    #[error(
        "{at}: the file ends in the middle of its JSON, so it looks truncated; copy or download \
         it again"
    )]
    Truncated { at: Location },
    #[error("{} is empty; expected {expected}", path.display())]
    EmptyFile {
        path: PathBuf,
        expected: &'static str,
    },
    #[error(
        "{at}: the header is {found:?}, but {expected}; fix the header or pick another --format"
    )]
    Header {
        at: Location,
        found: String,
        expected: String,
    },
    #[error(
        "{at}: the line has {found} fields, but this format has {expected} ({names}); fix the line"
    )]
    FieldCount {
        at: Location,
        found: usize,
        expected: usize,
        names: &'static str,
    },
    #[error(
        "{} is the Last.fm-1K user profile table (id, gender, age, country, registered), not a \
         listening history; import only the \
         userid-timestamp-artid-artname-traid-traname.tsv files",
        path.display()
    )]
    ProfileTable { path: PathBuf },
    #[error(
        "cannot tell which format {} is in ({reason}); pass --format mpd, csv, spotify19k or \
         lastfm",
        path.display()
    )]
    UnknownFormat { path: PathBuf, reason: String },
    #[error("no input files were given; name at least one file or folder to import")]
    NoInputs,
    #[error(
        "{} holds no {extensions} files; name the data files themselves or another folder",
        path.display()
    )]
    EmptyFolder {
        path: PathBuf,
        extensions: &'static str,
    },
    #[error(
        "{at}: playlist {playlist:?} has more than {limit} tracks, the limit per playlist; split \
         it{hint}"
    )]
    PlaylistTooLong {
        at: Location,
        playlist: String,
        limit: usize,
        hint: &'static str,
    },
    #[error(
        "{at}: playlist id {id:?} was already imported from {first}; each playlist must appear \
         once, so leave out the repeated input"
    )]
    DuplicatePlaylist {
        at: Location,
        id: String,
        first: Box<Location>,
    },
    #[error(
        "the import has more than {limit} distinct tracks, the limit of one catalogue; import \
         fewer files"
    )]
    CatalogueTooLarge { limit: usize },
    #[error(
        "{} has no dataset.json, so it is not a Setlist data set (or writing it was \
         interrupted); create one with `setlist data import` or `setlist data generate`",
        path.display()
    )]
    NotADataset { path: PathBuf },
    #[error(
        "{} exists and holds files other than a Setlist data set; choose a new or empty folder",
        path.display()
    )]
    OutputNotEmpty { path: PathBuf },
    #[error(
        "{} has \"format\": {found:?}, not \"setlist-dataset\"; point at a folder written by \
         `setlist data import` or `setlist data generate`",
        path.display()
    )]
    WrongFormat { path: PathBuf, found: String },
    #[error(
        "{} is version {version} of the data set format, but this setlist reads only version \
         {supported}; upgrade setlist or import the data again",
        path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        version: u64,
        supported: u64,
    },
    #[error(
        "{} says there are {declared} {what}, but {} has {found}; the data set is incomplete or \
         was edited, so import or generate it again",
        path.display(),
        other.display()
    )]
    CountMismatch {
        path: PathBuf,
        what: &'static str,
        declared: u64,
        found: u64,
        other: PathBuf,
    },
}

/// Parser messages say what is wrong but not what to do; the checks run
/// inside the parser (see [`Problem`]) say both, after a semicolon.
fn with_remedy(message: &str) -> String {
    if message.contains("; ") {
        message.to_owned()
    } else {
        format!("{message}; fix the file or export it again")
    }
}

fn field_prefix(field: &Option<String>) -> String {
    field
        .as_ref()
        .map(|f| format!("field \"{f}\": "))
        .unwrap_or_default()
}

impl DatasetError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        DatasetError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(at: Location, field: impl Into<String>, problem: Problem) -> Self {
        DatasetError::Invalid {
            at,
            field: field.into(),
            problem: Box::new(problem),
        }
    }
}
