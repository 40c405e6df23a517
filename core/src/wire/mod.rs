//! The activation wire format: the binary frame that carries a batch of
//! requests from one pipeline stage to the next, and the output shards'
//! top-k back to the dispatcher. One frame is one Kafka message value.
//!
//! The byte layout, limits and versioning rule are specified in
//! `docs/wire-format.md`; this module is its only implementation. Decoding
//! never panics and allocates in proportion to its input, so a node can feed
//! it whatever arrives on a topic and dead-letter the [`WireError`].

use std::ops::Range;

mod codec;
mod error;
mod fuzz;
mod layout;
mod rows;
mod split;
mod validate;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use error::WireError;
#[doc(hidden)]
pub use fuzz::fuzz_decode_roundtrip;
pub use rows::{concat, split_rows, take_rows, track_ids};

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"STLF";

/// The only version this code reads and writes.
pub const VERSION: u16 = 1;

/// One Kafka message value.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The model version every stage in the pipeline must be serving; a node
    /// serving another version dead-letters the frame instead of mixing them.
    pub model_version: String,
    /// Activations: the stage that must consume the frame (the output shards
    /// consume `stage == number of stages`). Top-k: the producing shard.
    pub stage: u16,
    /// The results-topic partition of the dispatcher replica that asked.
    pub reply_to: u32,
    /// W3C `traceparent` text, or empty.
    pub trace_context: String,
    /// One entry per stage already passed, in order.
    pub hops: Vec<Hop>,
    /// One entry per request in the batch; the body is in the same order.
    pub rows: Vec<RowMeta>,
    pub body: Body,
}

/// Timing of one stage, appended by that stage, so the dispatcher can report
/// queue, compute and transport time per stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hop {
    pub stage: u16,
    pub queue_us: u32,
    pub compute_us: u32,
    pub sent_unix_us: u64,
}

/// Per-request metadata that travels with its row through every stage.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RowMeta {
    pub request_id: u128,
    /// Each request keeps its own deadline: micro-batching mixes requests
    /// that arrived at different times, and a node drops only expired rows.
    pub deadline_unix_ms: u64,
    /// How many recommendations the request wants.
    pub k: u16,
    /// Track indices the output shards must not recommend (the input songs).
    pub exclude: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Activations(Activations),
    /// Per row, at most that row's `k` entries sorted by descending score.
    TopK(Vec<Vec<Scored>>),
}

/// A batch of variable-length sequences, row-major: row 0's positions, each
/// `dim` values wide, then row 1's, and so on.
#[derive(Debug, Clone, PartialEq)]
pub struct Activations {
    /// Values per position; always 1 for track ids.
    pub dim: u32,
    /// Positions per row.
    pub lengths: Vec<u32>,
    pub values: Values,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    /// Half the bytes of f32 at ~1e-3 relative error; see `docs/wire-format.md`.
    F16(Vec<half::f16>),
    /// Stage 0's input: catalogue indices of the playlist's songs.
    TrackIds(Vec<u32>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub track: u32,
    pub score: f32,
}

/// What a frame carries; byte 6 of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Activations = 1,
    TopK = 2,
}

/// The element type of [`Values`]; the first byte of an activations body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Dtype {
    F32 = 0,
    F16 = 1,
    TrackIds = 2,
}

/// A frame that has not been built, by its size-determining counts: `rows`
/// rows that each carry `exclude_per_row` exclusions and a body of `body`.
/// Its lengths are exact (what [`Frame::encoded_len`] gives for such a
/// frame), so a partition plan can size the largest frames a pipeline sends
/// without allocating them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameShape {
    pub model_version_bytes: usize,
    pub trace_context_bytes: usize,
    pub hops: usize,
    pub rows: usize,
    pub exclude_per_row: usize,
    pub body: BodyShape,
}

/// What each row of a [`FrameShape`] carries in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyShape {
    Activations {
        dtype: Dtype,
        dim: u32,
        positions_per_row: u32,
    },
    TopK {
        entries_per_row: usize,
    },
}

/// The routing fields at the front of a frame, read by [`peek_header`]
/// without touching the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header<'a> {
    pub kind: Kind,
    pub model_version: &'a str,
    pub stage: u16,
    pub reply_to: u32,
}

/// Bounds a reader enforces. [`Limits::V1`] (the default) is the version 1
/// contract and what [`Frame::encode`] validates against; a reader may pass
/// tighter limits to [`Frame::decode_with`] as local policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_model_version_bytes: usize,
    pub max_trace_context_bytes: usize,
    pub max_hops: usize,
    pub max_rows: usize,
    pub max_exclude: usize,
    pub max_k: usize,
    /// Positions per row.
    pub max_positions: usize,
    pub max_dim: usize,
}

impl Limits {
    pub const V1: Limits = Limits {
        max_frame_bytes: 16 << 20,
        max_model_version_bytes: 64,
        max_trace_context_bytes: 256,
        max_hops: 64,
        max_rows: 4096,
        max_exclude: 10_000,
        max_k: 1000,
        max_positions: 4096,
        max_dim: 65_536,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::V1
    }
}

impl TryFrom<u8> for Kind {
    type Error = WireError;

    fn try_from(byte: u8) -> Result<Self, WireError> {
        match byte {
            1 => Ok(Kind::Activations),
            2 => Ok(Kind::TopK),
            other => Err(WireError::UnknownKind(other)),
        }
    }
}

impl TryFrom<u8> for Dtype {
    type Error = WireError;

    fn try_from(byte: u8) -> Result<Self, WireError> {
        match byte {
            0 => Ok(Dtype::F32),
            1 => Ok(Dtype::F16),
            2 => Ok(Dtype::TrackIds),
            other => Err(WireError::UnknownDtype(other)),
        }
    }
}

impl Dtype {
    /// Bytes per value on the wire.
    pub const fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::TrackIds => 4,
            Dtype::F16 => 2,
        }
    }
}

impl Frame {
    /// Validates against [`Limits::V1`] and encodes, so a frame that encodes
    /// always decodes.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        self.validate(&Limits::V1)?;
        layout::write_frame(self)
    }

    /// The exact length [`Frame::encode`] produces, without encoding.
    pub fn encoded_len(&self) -> usize {
        layout::encoded_len(self)
    }

    /// Decodes with [`Limits::V1`].
    pub fn decode(bytes: &[u8]) -> Result<Frame, WireError> {
        Self::decode_with(bytes, &Limits::V1)
    }

    pub fn decode_with(bytes: &[u8], limits: &Limits) -> Result<Frame, WireError> {
        validate::at_most("frame_bytes", bytes.len(), limits.max_frame_bytes)?;
        let frame = layout::read_frame(bytes, limits)?;
        frame.validate(limits)?;
        Ok(frame)
    }

    /// Checks every invariant of the format against `limits`: the single
    /// definition of a valid frame, shared by encode and decode.
    pub fn validate(&self, limits: &Limits) -> Result<(), WireError> {
        validate::frame(self, limits)
    }

    pub fn kind(&self) -> Kind {
        match self.body {
            Body::Activations(_) => Kind::Activations,
            Body::TopK(_) => Kind::TopK,
        }
    }

    /// The fields [`peek_header`] reads from this frame's encoding.
    pub fn header(&self) -> Header<'_> {
        Header {
            kind: self.kind(),
            model_version: &self.model_version,
            stage: self.stage,
            reply_to: self.reply_to,
        }
    }

    /// Splits the rows into consecutive frames that each encode to at most
    /// `max_bytes` (capped at [`Limits::V1`]'s frame size) and at most
    /// [`Limits::V1`]'s row count, in order, each carrying the same header and
    /// hops. Kafka caps message size (1 MB by default), so producers split
    /// large batches rather than fail them. Fails with
    /// [`WireError::RowTooLarge`] if one row alone does not fit, or if the
    /// frame is invalid for any reason other than its size or row count.
    pub fn split_to_fit(self, max_bytes: usize) -> Result<Vec<Frame>, WireError> {
        split::split_to_fit(self, max_bytes)
    }
}

/// Reads only magic, version, kind, flags, model version, stage and reply-to,
/// so a node can route or dead-letter a message without decoding its body.
/// Success says nothing about the rest of the frame.
pub fn peek_header(bytes: &[u8]) -> Result<Header<'_>, WireError> {
    layout::read_header(&mut codec::Reader::new(bytes), &Limits::V1)
}

impl FrameShape {
    /// The largest frame of `rows` rows of `body` that `limits` allow: the
    /// longest model version and trace context, every hop, every exclusion.
    pub fn largest(rows: usize, body: BodyShape, limits: &Limits) -> FrameShape {
        FrameShape {
            model_version_bytes: limits.max_model_version_bytes,
            trace_context_bytes: limits.max_trace_context_bytes,
            hops: limits.max_hops,
            rows,
            exclude_per_row: limits.max_exclude,
            body,
        }
    }

    /// The bytes every frame of this shape has whatever its row count (and
    /// every piece of a split repeats).
    pub fn fixed_len(&self) -> usize {
        layout::shape_fixed_len(self)
    }

    /// The bytes each row adds: its metadata and its share of the body.
    pub fn row_len(&self) -> usize {
        layout::shape_row_len(self)
    }

    /// The exact length such a frame encodes to (saturating: no valid frame
    /// comes near `usize::MAX`).
    pub fn encoded_len(&self) -> usize {
        self.fixed_len()
            .saturating_add(self.rows.saturating_mul(self.row_len()))
    }

    /// How many messages of at most `max_bytes` [`Frame::split_to_fit`]
    /// cuts such a frame into, or `None` if one row alone does not fit.
    pub fn messages(&self, max_bytes: usize) -> Option<usize> {
        let budget = max_bytes.min(Limits::V1.max_frame_bytes);
        let room = budget.checked_sub(self.fixed_len())?;
        let per_message = (room / self.row_len().max(1)).min(Limits::V1.max_rows);
        (per_message > 0).then(|| self.rows.div_ceil(per_message).max(1))
    }
}

impl Activations {
    pub fn dtype(&self) -> Dtype {
        self.values.dtype()
    }

    /// The offsets into `values` of row `row`'s values.
    ///
    /// # Panics
    /// If `row` is not below `lengths.len()`, like slice indexing.
    pub fn row_range(&self, row: usize) -> Range<usize> {
        let dim = self.dim as usize;
        let start = self.lengths[..row]
            .iter()
            .map(|&len| len as usize)
            .sum::<usize>()
            * dim;
        start..start + self.lengths[row] as usize * dim
    }

    /// Rounds f32 values to the nearest f16 (magnitudes above 65504 become
    /// infinite); f16 values and track ids are returned unchanged.
    pub fn to_f16(&self) -> Activations {
        let values = match &self.values {
            Values::F32(values) => {
                Values::F16(values.iter().map(|&v| half::f16::from_f32(v)).collect())
            }
            other => other.clone(),
        };
        self.with_values(values)
    }

    /// Widens f16 values to f32, which is exact; f32 values and track ids
    /// are returned unchanged.
    pub fn to_f32(&self) -> Activations {
        let values = match &self.values {
            Values::F16(values) => Values::F32(values.iter().map(|v| v.to_f32()).collect()),
            other => other.clone(),
        };
        self.with_values(values)
    }

    fn with_values(&self, values: Values) -> Activations {
        Activations {
            dim: self.dim,
            lengths: self.lengths.clone(),
            values,
        }
    }
}

impl Values {
    pub fn dtype(&self) -> Dtype {
        match self {
            Values::F32(_) => Dtype::F32,
            Values::F16(_) => Dtype::F16,
            Values::TrackIds(_) => Dtype::TrackIds,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F16(v) => v.len(),
            Values::TrackIds(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
