//! The invariants of a version 1 frame, one function per rule. The decoder
//! calls the count rules as soon as it reads a count (to fail before reading
//! what the count promises) and [`frame`] once at the end; the encoder calls
//! [`frame`] before writing. One definition serves both directions, so the
//! encoder cannot produce what the decoder rejects.

use super::{Activations, Body, Dtype, Frame, Limits, RowMeta, Scored, WireError};

pub(super) fn at_most(field: &'static str, found: usize, limit: usize) -> Result<(), WireError> {
    if found > limit {
        return Err(WireError::LimitExceeded {
            field,
            limit: limit as u64,
            found: found as u64,
        });
    }
    Ok(())
}

/// `1..=limit`: every count except hops, exclusions and top-k entries must be
/// non-empty.
pub(super) fn one_to(field: &'static str, found: usize, limit: usize) -> Result<(), WireError> {
    if found == 0 {
        return Err(WireError::BelowMinimum {
            field,
            minimum: 1,
            found: 0,
        });
    }
    at_most(field, found, limit)
}

pub(super) fn model_version(s: &str, limits: &Limits) -> Result<(), WireError> {
    one_to("model_version", s.len(), limits.max_model_version_bytes)
}

pub(super) fn hop_count(count: usize, limits: &Limits) -> Result<(), WireError> {
    at_most("hop_count", count, limits.max_hops)
}

pub(super) fn row_count(count: usize, limits: &Limits) -> Result<(), WireError> {
    one_to("row_count", count, limits.max_rows)
}

pub(super) fn exclude_count(count: usize, limits: &Limits) -> Result<(), WireError> {
    at_most("exclude_count", count, limits.max_exclude)
}

pub(super) fn dim(dtype: Dtype, dim: u32, limits: &Limits) -> Result<(), WireError> {
    if dtype == Dtype::TrackIds && dim != 1 {
        return Err(WireError::Invalid {
            field: "dim",
            reason: "must be 1 when the values are track ids",
        });
    }
    one_to("dim", dim as usize, limits.max_dim)
}

pub(super) fn lengths(lengths: &[u32], limits: &Limits) -> Result<(), WireError> {
    lengths
        .iter()
        .try_for_each(|&len| one_to("length", len as usize, limits.max_positions))
}

/// Σ(lengths) × dim, or `None` if it overflows (which no valid frame does).
pub(super) fn value_count(lengths: &[u32], dim: u32) -> Option<u64> {
    lengths
        .iter()
        .try_fold(0u64, |sum, &len| sum.checked_add(u64::from(len)))?
        .checked_mul(u64::from(dim))
}

pub(super) fn topk_count(count: usize, row: &RowMeta) -> Result<(), WireError> {
    at_most("topk_count", count, usize::from(row.k))
}

fn row(row: &RowMeta, limits: &Limits) -> Result<(), WireError> {
    one_to("k", usize::from(row.k), limits.max_k)?;
    exclude_count(row.exclude.len(), limits)
}

fn activations(a: &Activations, rows: usize, limits: &Limits) -> Result<(), WireError> {
    dim(a.dtype(), a.dim, limits)?;
    if a.lengths.len() != rows {
        return Err(WireError::ValueCountMismatch {
            field: "lengths",
            expected: rows as u64,
            found: a.lengths.len() as u64,
        });
    }
    lengths(&a.lengths, limits)?;
    let expected = value_count(&a.lengths, a.dim).unwrap_or(u64::MAX);
    if a.values.len() as u64 != expected {
        return Err(WireError::ValueCountMismatch {
            field: "values",
            expected,
            found: a.values.len() as u64,
        });
    }
    Ok(())
}

fn topk(lists: &[Vec<Scored>], rows: &[RowMeta]) -> Result<(), WireError> {
    if lists.len() != rows.len() {
        return Err(WireError::ValueCountMismatch {
            field: "topk rows",
            expected: rows.len() as u64,
            found: lists.len() as u64,
        });
    }
    for (index, (list, meta)) in lists.iter().zip(rows).enumerate() {
        topk_count(list.len(), meta)?;
        // NaN has no place in a descending order, so it cannot be merged.
        if list.iter().any(|s| s.score.is_nan()) {
            return Err(WireError::Invalid {
                field: "score",
                reason: "must not be NaN",
            });
        }
        if let Some(position) = list
            .windows(2)
            .position(|pair| pair[0].score < pair[1].score)
        {
            return Err(WireError::TopKNotSorted {
                row: index,
                position: position + 1,
            });
        }
    }
    Ok(())
}

pub(super) fn frame(frame: &Frame, limits: &Limits) -> Result<(), WireError> {
    model_version(&frame.model_version, limits)?;
    at_most(
        "trace_context",
        frame.trace_context.len(),
        limits.max_trace_context_bytes,
    )?;
    hop_count(frame.hops.len(), limits)?;
    row_count(frame.rows.len(), limits)?;
    frame.rows.iter().try_for_each(|meta| row(meta, limits))?;
    match &frame.body {
        Body::Activations(a) => activations(a, frame.rows.len(), limits)?,
        Body::TopK(lists) => topk(lists, &frame.rows)?,
    }
    at_most("frame_bytes", frame.encoded_len(), limits.max_frame_bytes)
}
