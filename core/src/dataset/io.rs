//! Reading input files within the size limits, with progress.

use super::error::{DatasetError, Location};
use super::{MAX_CSV_LINE_BYTES, MAX_FILE_BYTES};
use crate::progress::Progress;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Opens an input file, refusing folders and files over the size limit before
/// reading a byte of them.
pub(crate) fn open_input(path: &Path) -> Result<(File, u64), DatasetError> {
    let file = File::open(path).map_err(|e| DatasetError::io("open", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| DatasetError::io("read", path, e))?;
    if meta.is_dir() {
        return Err(DatasetError::io(
            "read",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "it is a folder, not a file"),
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(DatasetError::FileTooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE_BYTES,
        });
    }
    Ok((file, meta.len()))
}

/// A limit that only shows while reading: a pipe or special file reports no
/// size, and a file can grow after it was opened.
#[derive(Debug)]
pub(crate) enum Overrun {
    File,
    Line { line: u64 },
}

impl fmt::Display for Overrun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Overrun::File => write!(f, "the file is larger than {MAX_FILE_BYTES} bytes"),
            Overrun::Line { line } => {
                write!(f, "line {line} is longer than {MAX_CSV_LINE_BYTES} bytes")
            }
        }
    }
}

impl std::error::Error for Overrun {}

/// Turns an I/O error met while reading `path` into the dataset error it
/// stands for, so an overrun reads as a limit and not as a disk failure.
pub(crate) fn read_error(path: &Path, error: io::Error) -> DatasetError {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Overrun>())
    {
        Some(Overrun::File) => DatasetError::FileTooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE_BYTES,
        },
        Some(Overrun::Line { line }) => DatasetError::LineTooLong {
            at: Location::line(path, *line),
            limit: MAX_CSV_LINE_BYTES,
        },
        None => DatasetError::io("read", path, error),
    }
}

/// Turns a JSON error into the dataset error naming the file, line, column
/// and field. `line` replaces the parser's line for one-record-per-line files,
/// whose records are parsed one line at a time.
pub(crate) fn json_error(
    path: &Path,
    line: Option<u64>,
    field: Option<String>,
    error: serde_json::Error,
) -> DatasetError {
    if error.is_io() {
        return read_error(path, io::Error::from(error));
    }
    let at = Location {
        file: path.to_path_buf(),
        line: Some(line.unwrap_or(error.line() as u64)),
        column: Some(error.column() as u64),
    };
    if error.is_eof() && line.is_none() {
        return DatasetError::Truncated { at };
    }
    let message = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let message = message
        .strip_suffix(&position)
        .unwrap_or(&message)
        .to_owned();
    DatasetError::Syntax {
        at,
        field: field.filter(|f| f != "."),
        message,
    }
}

/// Passes bytes through, reporting them to the progress sink and enforcing
/// the file limit and, for line formats, the line limit.
pub(crate) struct Metered<'p, R> {
    inner: R,
    read: u64,
    line_limit: bool,
    newlines: u64,
    run: usize,
    progress: &'p dyn Progress,
}

impl<'p, R: Read> Metered<'p, R> {
    /// `line_limit`: whether lines longer than [`MAX_CSV_LINE_BYTES`] are an
    /// error (CSV and TSV; JSON may legitimately be a single line).
    pub(crate) fn new(inner: R, line_limit: bool, progress: &'p dyn Progress) -> Self {
        Metered {
            inner,
            read: 0,
            line_limit,
            newlines: 0,
            run: 0,
            progress,
        }
    }
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let chunk = buf.get(..n).unwrap_or_default();
        self.read = self.read.saturating_add(n as u64);
        if self.read > MAX_FILE_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, Overrun::File));
        }
        if self.line_limit {
            for (i, segment) in chunk.split(|&b| b == b'\n').enumerate() {
                if i > 0 {
                    self.newlines += 1;
                    self.run = 0;
                }
                self.run = self.run.saturating_add(segment.len());
                if self.run > MAX_CSV_LINE_BYTES {
                    let line = self.newlines + 1;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        Overrun::Line { line },
                    ));
                }
            }
        }
        self.progress.advance(n as u64);
        Ok(n)
    }
}
