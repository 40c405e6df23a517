//! A sink for progress reports, so long-running library work (imports,
//! training, evaluation) can drive a progress bar without knowing about one.

/// Receives progress of one long-running task. Implementations must be cheap:
/// callers report often.
pub trait Progress: Sync {
    /// Starts a new phase of `total` units (bytes, rows, steps) named `what`.
    fn start(&self, what: &str, total: u64);
    /// Records `n` more units done in the current phase.
    fn advance(&self, n: u64);
    /// A line worth showing to the user (a finished epoch, a warning).
    fn message(&self, line: &str);
    /// Ends the current phase.
    fn finish(&self);
}

/// Discards every report; for tests and quiet callers.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _what: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
    fn message(&self, _line: &str) {}
    fn finish(&self) {}
}
