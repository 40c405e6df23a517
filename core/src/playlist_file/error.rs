//! Why an upload was refused. Every message is one sentence for the listener:
//! where (the line, and the field or limit where one applies), what is wrong,
//! and, after the colon, what to do.

use super::Format;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlaylistFileError {
    #[error("the file is empty: choose the playlist file and upload it again")]
    Empty,
    #[error(
        "the file holds only spaces and blank lines: choose the playlist file and upload it again"
    )]
    Blank,
    #[error(
        "the file is {}; the limit is {}: split the playlist into smaller files",
        sizes(*.bytes, *.limit).0,
        sizes(*.bytes, *.limit).1
    )]
    TooLarge { bytes: usize, limit: usize },
    #[error("line {line} is not valid UTF-8 (byte {byte} of the line): save the file as UTF-8")]
    NotUtf8 { line: usize, byte: usize },
    #[error(
        "line {line} holds a NUL byte (byte {byte} of the line), so the file is UTF-16 without a \
         byte-order mark or not text at all: save it as UTF-8"
    )]
    NulByte { line: usize, byte: usize },
    #[error("line {line} is not valid UTF-16 ({problem}): save the file as UTF-8")]
    NotUtf16 { line: usize, problem: &'static str },
    #[error(
        "line {line}: the file ends in the middle of a character, so it looks truncated: download \
         or export it again"
    )]
    CutCharacter { line: usize },
    /// `complete`: whether `found` counts the whole file, or only up to where
    /// it stopped making sense.
    #[error(
        "the file holds {}{} entries; the limit is {}: split the playlist into files of at most {} songs",
        if *.complete { "" } else { "at least " },
        thousands(*.found),
        thousands(*.limit),
        thousands(*.limit)
    )]
    TooManyEntries {
        found: usize,
        complete: bool,
        limit: usize,
    },
    #[error(
        "the file holds more than {} playlists; the limit is {}: upload fewer playlists at a time",
        thousands(*.limit),
        thousands(*.limit)
    )]
    TooManyPlaylists { limit: usize },
    #[error(
        "line {line}: {field} is {} bytes; the limit is {}: shorten it or remove that song",
        thousands(*.bytes),
        thousands(*.limit)
    )]
    FieldTooLong {
        line: usize,
        field: String,
        bytes: usize,
        limit: usize,
    },
    #[error(
        "the content is not a playlist format Setlist reads (Spotify account data export, Spotify \
         Web API playlist tracks, MPD slice JSON, Exportify CSV, M3U/M3U8, or \"Artist - Title\" \
         lines){}: export the playlist in one of these formats",
        .hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default()
    )]
    NotAPlaylist { hint: Option<String> },
    #[error(
        "line {line}: JSON ends in the middle of {inside}: the file looks truncated; download or export it again"
    )]
    JsonTruncated { line: usize, inside: &'static str },
    #[error("line {line}, column {column}: the JSON is broken ({problem}): export the file again")]
    JsonSyntax {
        line: usize,
        column: usize,
        problem: String,
    },
    #[error(
        "line {line}: more text follows the end of the JSON ({found:?}), as if another file were \
         appended to it: upload the JSON file alone"
    )]
    JsonTrailing { line: usize, found: String },
    #[error(
        "line {line}: the JSON nests deeper than {limit} levels, which no playlist format does: upload the playlist file itself"
    )]
    JsonTooDeep { line: usize, limit: usize },
    /// JSON that parses but is not what the format it resembles writes.
    #[error(
        "line {line}: the file looks like {format} but {problem}: upload the file exactly as it was exported"
    )]
    Shape {
        line: usize,
        format: Format,
        problem: String,
    },
    #[error(
        "line {line}: the row has {found} fields but the header has {expected}: the CSV is damaged \
         or cut short; export it again"
    )]
    CsvRow {
        line: usize,
        found: usize,
        expected: usize,
    },
    #[error("line {line}: the CSV cannot be read ({problem}): export it again")]
    Csv { line: usize, problem: String },
}

impl PlaylistFileError {
    /// The 1-based line the error is about, where there is one.
    pub fn line(&self) -> Option<usize> {
        use PlaylistFileError::*;
        match self {
            NotUtf8 { line, .. }
            | NulByte { line, .. }
            | NotUtf16 { line, .. }
            | CutCharacter { line }
            | FieldTooLong { line, .. }
            | JsonTruncated { line, .. }
            | JsonSyntax { line, .. }
            | JsonTrailing { line, .. }
            | JsonTooDeep { line, .. }
            | Shape { line, .. }
            | CsvRow { line, .. }
            | Csv { line, .. } => Some(*line),
            Empty
            | Blank
            | TooLarge { .. }
            | TooManyEntries { .. }
            | TooManyPlaylists { .. }
            | NotAPlaylist { .. } => None,
        }
    }
}

const MIB: usize = 1 << 20;

/// 12500 → "12,500".
pub(super) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// A size for people, rounded up to a tenth of a MiB so a file just over the
/// limit never reads as the limit: "3.1 MiB", "2 MiB", "900 bytes".
fn size(n: usize) -> String {
    if n < MIB {
        return format!("{} bytes", thousands(n));
    }
    let tenths = n.saturating_mul(10).div_ceil(MIB);
    match tenths % 10 {
        0 => format!("{} MiB", tenths / 10),
        frac => format!("{}.{frac} MiB", tenths / 10),
    }
}

/// The file's size and the limit; in bytes when rounding makes them look
/// alike.
fn sizes(bytes: usize, limit: usize) -> (String, String) {
    let (a, b) = (size(bytes), size(limit));
    if a == b {
        (
            format!("{} bytes", thousands(bytes)),
            format!("{} bytes", thousands(limit)),
        )
    } else {
        (a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(12_500), "12,500");
        assert_eq!(thousands(1_234_567), "1,234,567");
        let too_large = |bytes| {
            PlaylistFileError::TooLarge {
                bytes,
                limit: 2 << 20,
            }
            .to_string()
        };
        assert_eq!(
            too_large(3_250_000),
            "the file is 3.1 MiB; the limit is 2 MiB: split the playlist into smaller files"
        );
        assert!(too_large((2 << 20) + 1).starts_with("the file is 2.1 MiB; the limit is 2 MiB"));
        let odd = PlaylistFileError::TooLarge {
            bytes: 2_150_000,
            limit: 2_140_000,
        };
        assert!(
            odd.to_string()
                .starts_with("the file is 2,150,000 bytes; the limit is 2,140,000 bytes"),
            "{odd}"
        );
        let small = PlaylistFileError::TooLarge {
            bytes: 1001,
            limit: 1000,
        };
        assert!(
            small
                .to_string()
                .starts_with("the file is 1,001 bytes; the limit is 1,000 bytes")
        );
    }
}
