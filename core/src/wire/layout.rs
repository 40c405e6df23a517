//! The version 1 field order: the one place that knows which field follows
//! which. Reading, writing and size arithmetic sit side by side so a change
//! to one is visibly a change to all three.

use super::codec::{Reader, Writer};
use super::{
    Activations, Body, BodyShape, Dtype, Frame, FrameShape, Header, Hop, Kind, Limits, MAGIC,
    RowMeta, Scored, VERSION, Values, WireError, validate,
};

/// stage u16, queue_us u32, compute_us u32, sent_unix_us u64.
const HOP_LEN: usize = 2 + 4 + 4 + 8;
/// request_id u128, deadline_unix_ms u64, k u16, exclude_count u32.
const ROW_FIXED_LEN: usize = 16 + 8 + 2 + 4;
/// track u32, score f32.
const SCORED_LEN: usize = 4 + 4;
/// A row's top-k count prefix.
const TOPK_COUNT_LEN: usize = 2;
/// A row's length entry in an activations body.
const LENGTH_LEN: usize = 4;

pub(super) fn read_header<'a>(
    r: &mut Reader<'a>,
    limits: &Limits,
) -> Result<Header<'a>, WireError> {
    let found: [u8; 4] = r.array("magic")?;
    if found != MAGIC {
        return Err(WireError::BadMagic { found });
    }
    // Version before anything else: a later version may change every field
    // after it, kind and flags included.
    let version: u16 = r.get("version")?;
    if version != VERSION {
        return Err(WireError::UnsupportedVersion {
            found: version,
            supported: VERSION,
        });
    }
    let kind = Kind::try_from(r.get::<u8>("kind")?)?;
    let flags: u8 = r.get("flags")?;
    if flags != 0 {
        return Err(WireError::ReservedFlags(flags));
    }
    let model_version = r.str("model_version")?;
    validate::model_version(model_version, limits)?;
    Ok(Header {
        kind,
        model_version,
        stage: r.get("stage")?,
        reply_to: r.get("reply_to")?,
    })
}

/// Reads the fields in order, checking each count against its limit as soon
/// as it is read; the caller validates the whole frame afterwards.
pub(super) fn read_frame(bytes: &[u8], limits: &Limits) -> Result<Frame, WireError> {
    let mut r = Reader::new(bytes);
    let header = read_header(&mut r, limits)?;
    let trace_context = r.str("trace_context")?.to_owned();

    let hop_count: u16 = r.get("hop_count")?;
    validate::hop_count(usize::from(hop_count), limits)?;
    let hops = r.items("hops", u64::from(hop_count), HOP_LEN, |r| {
        Ok(Hop {
            stage: r.get("hop.stage")?,
            queue_us: r.get("hop.queue_us")?,
            compute_us: r.get("hop.compute_us")?,
            sent_unix_us: r.get("hop.sent_unix_us")?,
        })
    })?;

    let row_count: u32 = r.get("row_count")?;
    validate::row_count(row_count as usize, limits)?;
    let rows = r.items("rows", u64::from(row_count), ROW_FIXED_LEN, |r| {
        let request_id = r.get("request_id")?;
        let deadline_unix_ms = r.get("deadline_unix_ms")?;
        let k = r.get("k")?;
        let exclude_count: u32 = r.get("exclude_count")?;
        validate::exclude_count(exclude_count as usize, limits)?;
        Ok(RowMeta {
            request_id,
            deadline_unix_ms,
            k,
            exclude: r.values("exclude", u64::from(exclude_count))?,
        })
    })?;

    let body = match header.kind {
        Kind::Activations => Body::Activations(read_activations(&mut r, rows.len(), limits)?),
        Kind::TopK => Body::TopK(read_topk(&mut r, &rows)?),
    };
    r.finish()?;

    Ok(Frame {
        model_version: header.model_version.to_owned(),
        stage: header.stage,
        reply_to: header.reply_to,
        trace_context,
        hops,
        rows,
        body,
    })
}

fn read_activations(
    r: &mut Reader<'_>,
    rows: usize,
    limits: &Limits,
) -> Result<Activations, WireError> {
    let dtype = Dtype::try_from(r.get::<u8>("dtype")?)?;
    let dim: u32 = r.get("dim")?;
    validate::dim(dtype, dim, limits)?;
    let lengths: Vec<u32> = r.values("lengths", rows as u64)?;
    validate::lengths(&lengths, limits)?;
    // Overflow can only come from limits looser than any input could fill;
    // u64::MAX then reports the values as truncated.
    let count = validate::value_count(&lengths, dim).unwrap_or(u64::MAX);
    let values = match dtype {
        Dtype::F32 => Values::F32(r.values("values", count)?),
        Dtype::F16 => Values::F16(r.values("values", count)?),
        Dtype::TrackIds => Values::TrackIds(r.values("values", count)?),
    };
    Ok(Activations {
        dim,
        lengths,
        values,
    })
}

fn read_topk(r: &mut Reader<'_>, rows: &[RowMeta]) -> Result<Vec<Vec<Scored>>, WireError> {
    // The rows are already read, so their count is backed by input.
    let mut lists = Vec::with_capacity(rows.len());
    for meta in rows {
        let count: u16 = r.get("topk_count")?;
        validate::topk_count(usize::from(count), meta)?;
        lists.push(r.items("topk entries", u64::from(count), SCORED_LEN, |r| {
            Ok(Scored {
                track: r.get("track")?,
                score: r.get("score")?,
            })
        })?);
    }
    Ok(lists)
}

/// Writes the fields in order; the caller has validated the frame.
pub(super) fn write_frame(frame: &Frame) -> Result<Vec<u8>, WireError> {
    let mut w = Writer::with_capacity(encoded_len(frame));
    w.put_all(&MAGIC);
    w.put(VERSION);
    w.put(frame.kind() as u8);
    w.put(0u8); // flags
    w.put_str("model_version", &frame.model_version)?;
    w.put(frame.stage);
    w.put(frame.reply_to);
    w.put_str("trace_context", &frame.trace_context)?;

    w.put_len::<u16>("hop_count", frame.hops.len())?;
    for hop in &frame.hops {
        w.put(hop.stage);
        w.put(hop.queue_us);
        w.put(hop.compute_us);
        w.put(hop.sent_unix_us);
    }

    w.put_len::<u32>("row_count", frame.rows.len())?;
    for row in &frame.rows {
        w.put(row.request_id);
        w.put(row.deadline_unix_ms);
        w.put(row.k);
        w.put_len::<u32>("exclude_count", row.exclude.len())?;
        w.put_all(&row.exclude);
    }

    match &frame.body {
        Body::Activations(a) => {
            w.put(a.dtype() as u8);
            w.put(a.dim);
            w.put_all(&a.lengths);
            match &a.values {
                Values::F32(values) => w.put_all(values),
                Values::F16(values) => w.put_all(values),
                Values::TrackIds(values) => w.put_all(values),
            }
        }
        Body::TopK(lists) => {
            for list in lists {
                w.put_len::<u16>("topk_count", list.len())?;
                for scored in list {
                    w.put(scored.track);
                    w.put(scored.score);
                }
            }
        }
    }
    Ok(w.into_bytes())
}

/// Bytes that do not depend on the rows: the header, the hops, the row
/// count and, for activations, dtype and dim. Every piece of a split repeats
/// them.
pub(super) fn fixed_len(frame: &Frame) -> usize {
    let kind = match frame.body {
        Body::Activations(_) => Kind::Activations,
        Body::TopK(_) => Kind::TopK,
    };
    fixed_len_of(
        frame.model_version.len(),
        frame.trace_context.len(),
        frame.hops.len(),
        kind,
    )
}

fn fixed_len_of(model_version: usize, trace_context: usize, hops: usize, kind: Kind) -> usize {
    let header = MAGIC.len() + 2 + 1 + 1 + 2 + model_version + 2 + 4;
    let hops = 2 + trace_context + 2 + HOP_LEN * hops;
    let body = match kind {
        Kind::Activations => 1 + 4,
        Kind::TopK => 0,
    };
    header + hops + 4 + body
}

pub(super) fn shape_fixed_len(shape: &FrameShape) -> usize {
    let kind = match shape.body {
        BodyShape::Activations { .. } => Kind::Activations,
        BodyShape::TopK { .. } => Kind::TopK,
    };
    fixed_len_of(
        shape.model_version_bytes,
        shape.trace_context_bytes,
        shape.hops,
        kind,
    )
}

/// A row of `shape`: what [`row_meta_len`] and [`row_body_len`] give for it.
pub(super) fn shape_row_len(shape: &FrameShape) -> usize {
    let body = match shape.body {
        BodyShape::Activations {
            dtype,
            dim,
            positions_per_row,
        } => (positions_per_row as usize)
            .saturating_mul(dim as usize)
            .saturating_mul(dtype.size())
            .saturating_add(LENGTH_LEN),
        BodyShape::TopK { entries_per_row } => {
            TOPK_COUNT_LEN.saturating_add(SCORED_LEN.saturating_mul(entries_per_row))
        }
    };
    (ROW_FIXED_LEN + 4 * shape.exclude_per_row).saturating_add(body)
}

pub(super) fn row_meta_len(row: &RowMeta) -> usize {
    ROW_FIXED_LEN + 4 * row.exclude.len()
}

/// Row `index`'s share of the body, assuming a valid frame.
pub(super) fn row_body_len(body: &Body, index: usize) -> usize {
    match body {
        Body::Activations(a) => {
            LENGTH_LEN + a.lengths[index] as usize * a.dim as usize * a.dtype().size()
        }
        Body::TopK(lists) => TOPK_COUNT_LEN + SCORED_LEN * lists[index].len(),
    }
}

/// Counts what [`write_frame`] writes, from the actual vector lengths, so it
/// is exact for any frame, valid or not.
pub(super) fn encoded_len(frame: &Frame) -> usize {
    let rows: usize = frame.rows.iter().map(row_meta_len).sum();
    let body = match &frame.body {
        Body::Activations(a) => LENGTH_LEN * a.lengths.len() + a.values.len() * a.dtype().size(),
        Body::TopK(lists) => lists
            .iter()
            .map(|list| TOPK_COUNT_LEN + SCORED_LEN * list.len())
            .sum(),
    };
    fixed_len(frame) + rows + body
}
