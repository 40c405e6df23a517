//! The one reader for the row formats (CSV and Last.fm's TSV): file and line
//! limits, progress, and errors that name the file and line.

use super::super::error::{DatasetError, Location};
use super::super::io::{Metered, open_input, read_error};
use crate::progress::Progress;
use csv::{ReaderBuilder, StringRecord};
use std::fs::File;
use std::path::{Path, PathBuf};

pub(super) enum Dialect {
    /// Comma-separated, with `"` quoting.
    Csv,
    /// Tab-separated without quoting: Last.fm track names contain stray `"`.
    Tsv,
}

pub(super) struct Table<'p> {
    path: PathBuf,
    reader: csv::Reader<Metered<'p, File>>,
}

impl<'p> Table<'p> {
    pub(super) fn open(
        path: &Path,
        dialect: Dialect,
        progress: &'p dyn Progress,
    ) -> Result<Self, DatasetError> {
        let (file, _) = open_input(path)?;
        let mut builder = ReaderBuilder::new();
        // Headers and ragged rows are checked by each format, with its own
        // words.
        builder.has_headers(false).flexible(true);
        if let Dialect::Tsv = dialect {
            builder.delimiter(b'\t').quoting(false);
        }
        let reader = builder.from_reader(Metered::new(file, true, progress));
        Ok(Table {
            path: path.to_path_buf(),
            reader,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// A location in this table, for errors.
    pub(super) fn at(&self, line: u64) -> Location {
        Location::line(&self.path, line)
    }

    /// Reads the next row into `record`; returns the line it starts on, or
    /// `None` at the end. Blank lines are skipped.
    pub(super) fn read(&mut self, record: &mut StringRecord) -> Result<Option<u64>, DatasetError> {
        match self.reader.read_record(record) {
            Ok(false) => Ok(None),
            Ok(true) => Ok(Some(record.position().map_or(0, |p| p.line()))),
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, error: csv::Error) -> DatasetError {
        let line = error.position().map(|p| p.line());
        let message = error.to_string();
        match error.into_kind() {
            csv::ErrorKind::Io(e) => read_error(&self.path, e),
            csv::ErrorKind::Utf8 { err, .. } => DatasetError::Syntax {
                at: Location {
                    file: self.path.clone(),
                    line,
                    column: None,
                },
                field: Some(format!("column {}", err.field() + 1)),
                message: "is not valid UTF-8 text".to_owned(),
            },
            _ => DatasetError::Syntax {
                at: Location {
                    file: self.path.clone(),
                    line,
                    column: None,
                },
                field: None,
                message,
            },
        }
    }
}
