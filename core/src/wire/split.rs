use std::ops::Range;

use super::{Activations, Body, Frame, Limits, Values, WireError, layout};

pub(super) fn split_to_fit(frame: Frame, max_bytes: usize) -> Result<Vec<Frame>, WireError> {
    // Size and row count are what splitting repairs; everything else must
    // already hold, so that every piece encodes.
    let unbounded = Limits {
        max_frame_bytes: usize::MAX,
        max_rows: usize::MAX,
        ..Limits::V1
    };
    frame.validate(&unbounded)?;
    let budget = max_bytes.min(Limits::V1.max_frame_bytes);
    let counts = plan(&frame, budget)?;
    if counts.len() == 1 {
        return Ok(vec![frame]);
    }
    Ok(cut(frame, &counts))
}

/// Rows per piece, packed greedily in order: a piece takes rows until the
/// next one would overflow the byte budget or the row limit. Order matters
/// more than packing density: the output shards and the dispatcher see the
/// requests in the order they were batched.
fn plan(frame: &Frame, budget: usize) -> Result<Vec<usize>, WireError> {
    let fixed = layout::fixed_len(frame);
    let mut counts = Vec::new();
    let (mut rows, mut bytes) = (0, fixed);
    for (index, meta) in frame.rows.iter().enumerate() {
        let cost = layout::row_meta_len(meta) + layout::row_body_len(&frame.body, index);
        if fixed + cost > budget {
            return Err(WireError::RowTooLarge {
                row: index,
                bytes: fixed + cost,
                budget,
            });
        }
        if bytes + cost > budget || rows == Limits::V1.max_rows {
            counts.push(rows);
            (rows, bytes) = (0, fixed);
        }
        rows += 1;
        bytes += cost;
    }
    counts.push(rows);
    Ok(counts)
}

fn cut(frame: Frame, counts: &[usize]) -> Vec<Frame> {
    let Frame {
        model_version,
        stage,
        reply_to,
        trace_context,
        hops,
        rows,
        body,
    } = frame;
    let bodies: Vec<Body> = match body {
        Body::Activations(a) => {
            let (mut next_row, mut next_value) = (0, 0);
            counts
                .iter()
                .map(|&count| {
                    let lengths = &a.lengths[next_row..next_row + count];
                    let positions: usize = lengths.iter().map(|&len| len as usize).sum();
                    let values = next_value..next_value + positions * a.dim as usize;
                    (next_row, next_value) = (next_row + count, values.end);
                    Body::Activations(Activations {
                        dim: a.dim,
                        lengths: lengths.to_vec(),
                        values: slice(&a.values, values),
                    })
                })
                .collect()
        }
        Body::TopK(lists) => {
            let mut lists = lists.into_iter();
            counts
                .iter()
                .map(|&count| Body::TopK(lists.by_ref().take(count).collect()))
                .collect()
        }
    };
    let mut rows = rows.into_iter();
    counts
        .iter()
        .zip(bodies)
        .map(|(&count, body)| Frame {
            model_version: model_version.clone(),
            stage,
            reply_to,
            trace_context: trace_context.clone(),
            hops: hops.clone(),
            rows: rows.by_ref().take(count).collect(),
            body,
        })
        .collect()
}

pub(super) fn slice(values: &Values, range: Range<usize>) -> Values {
    match values {
        Values::F32(v) => Values::F32(v[range].to_vec()),
        Values::F16(v) => Values::F16(v[range].to_vec()),
        Values::TrackIds(v) => Values::TrackIds(v[range].to_vec()),
    }
}
