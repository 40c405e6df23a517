use thiserror::Error;

/// Why a frame could not be decoded, encoded or split.
///
/// Every message names the offending field (with the spelling of
/// `docs/wire-format.md`) and, where one applies, the limit, because these
/// strings end up in dead-letter records and in the dispatcher's error
/// responses where nobody has a debugger.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("frame is truncated: {field} needs {needed} bytes but only {available} remain")]
    Truncated {
        field: &'static str,
        needed: u64,
        available: u64,
    },
    #[error("frame does not start with the magic bytes \"STLF\" (found {found:02x?})")]
    BadMagic { found: [u8; 4] },
    #[error("frame version {found} is not supported; this reader understands version {supported}")]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error("frame kind {0} is unknown; expected 1 (activations) or 2 (top-k)")]
    UnknownKind(u8),
    #[error("activation dtype {0} is unknown; expected 0 (f32), 1 (f16) or 2 (track ids)")]
    UnknownDtype(u8),
    #[error("flags byte is {0:#04x}, but every flag is reserved and must be 0 in version 1")]
    ReservedFlags(u8),
    #[error("{field} is {found}, above the limit of {limit}")]
    LimitExceeded {
        field: &'static str,
        limit: u64,
        found: u64,
    },
    #[error("{field} is {found}, below the minimum of {minimum}")]
    BelowMinimum {
        field: &'static str,
        minimum: u64,
        found: u64,
    },
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 { field: &'static str },
    #[error("{field} holds {found} entries, but the frame's shape requires {expected}")]
    ValueCountMismatch {
        field: &'static str,
        expected: u64,
        found: u64,
    },
    #[error(
        "top-k of row {row} is not sorted by descending score: entry {position} scores higher than the one before it"
    )]
    TopKNotSorted { row: usize, position: usize },
    #[error("{0} unexpected bytes follow the end of the frame")]
    TrailingBytes(usize),
    #[error("{field} is invalid: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
    #[error("row {row} alone needs a {bytes}-byte frame, above the budget of {budget} bytes")]
    RowTooLarge {
        row: usize,
        bytes: usize,
        budget: usize,
    },
}
