//! Batches of rows as the pipeline handles them: stage 0's input built
//! from histories, and frames' batches joined for one forward pass, cut
//! apart again, or thinned to the requests that are still alive. Pure data
//! handling, no tensors.

use super::{Activations, Values};

/// Stage 0's input: each history's last `max_history` tracks.
pub fn track_ids(histories: &[&[u32]], max_history: usize) -> Activations {
    let rows: Vec<&[u32]> = histories
        .iter()
        .map(|h| &h[h.len().saturating_sub(max_history)..])
        .collect();
    Activations {
        dim: 1,
        lengths: rows.iter().map(|r| r.len() as u32).collect(),
        values: Values::TrackIds(rows.concat()),
    }
}

/// Rows `rows` of a batch, in that order: what is left of a frame after its
/// expired requests are dropped, or one frame's share of a combined batch.
pub fn take_rows(activations: &Activations, rows: &[usize]) -> Activations {
    let dim = activations.dim as usize;
    let mut offsets = Vec::with_capacity(activations.lengths.len() + 1);
    offsets.push(0usize);
    for &len in &activations.lengths {
        offsets.push(offsets[offsets.len() - 1] + len as usize * dim);
    }
    fn pick<T: Copy>(values: &[T], offsets: &[usize], rows: &[usize]) -> Vec<T> {
        rows.iter()
            .flat_map(|&r| values[offsets[r]..offsets[r + 1]].iter().copied())
            .collect()
    }
    Activations {
        dim: activations.dim,
        lengths: rows.iter().map(|&r| activations.lengths[r]).collect(),
        values: match &activations.values {
            Values::F32(v) => Values::F32(pick(v, &offsets, rows)),
            Values::F16(v) => Values::F16(pick(v, &offsets, rows)),
            Values::TrackIds(v) => Values::TrackIds(pick(v, &offsets, rows)),
        },
    }
}

/// Several frames' batches as one, so a node runs them in one forward pass;
/// f16 parts are widened when mixed with f32 ones. A single part is returned
/// as it is, without a copy. `None` when the parts differ in `dim` or mix
/// track ids with activations (callers check each frame's shape first, so
/// this is a bug guard, not a user error).
pub fn concat(mut parts: Vec<Activations>) -> Option<Activations> {
    let dim = parts.first().map_or(1, |p| p.dim);
    let is_ids = |p: &Activations| matches!(p.values, Values::TrackIds(_));
    let ids = parts.iter().all(is_ids);
    if parts.iter().any(|p| p.dim != dim) || (!ids && parts.iter().any(is_ids)) {
        return None;
    }
    if parts.len() == 1 {
        return parts.pop();
    }
    let lengths = parts
        .iter()
        .flat_map(|p| p.lengths.iter().copied())
        .collect();
    let halves = parts.iter().all(|p| matches!(p.values, Values::F16(_)));
    let mut values = match (ids, halves) {
        (true, _) => Values::TrackIds(Vec::new()),
        (false, true) => Values::F16(Vec::new()),
        (false, false) => Values::F32(Vec::new()),
    };
    for part in parts {
        match (&mut values, part.values) {
            (Values::TrackIds(all), Values::TrackIds(v)) => all.extend(v),
            (Values::F16(all), Values::F16(v)) => all.extend(v),
            (Values::F32(all), Values::F32(v)) => all.extend(v),
            (Values::F32(all), Values::F16(v)) => all.extend(v.iter().map(|x| x.to_f32())),
            _ => return None,
        }
    }
    Some(Activations {
        dim,
        lengths,
        values,
    })
}

/// A combined batch cut back into consecutive pieces of `rows` rows each
/// (one per input frame); a single piece is the batch itself, not a copy.
pub fn split_rows(activations: Activations, rows: &[usize]) -> Vec<Activations> {
    if rows.len() == 1 {
        return vec![activations];
    }
    let mut first = 0;
    rows.iter()
        .map(|&count| {
            let piece = take_rows(&activations, &(first..first + count).collect::<Vec<_>>());
            first += count;
            piece
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(lengths: &[u32], dim: u32, start: f32) -> Activations {
        let n: u32 = lengths.iter().sum::<u32>() * dim;
        Activations {
            dim,
            lengths: lengths.to_vec(),
            values: Values::F32((0..n).map(|i| start + i as f32).collect()),
        }
    }

    #[test]
    fn take_rows_picks_whole_rows_in_the_given_order() {
        let a = floats(&[1, 2, 1], 2, 0.0);
        let picked = take_rows(&a, &[2, 0]);
        assert_eq!(picked.lengths, vec![1, 1]);
        assert_eq!(picked.values, Values::F32(vec![6.0, 7.0, 0.0, 1.0]));
    }

    #[test]
    fn concat_joins_batches_and_refuses_mixed_kinds() {
        let joined = concat(vec![floats(&[1], 2, 0.0), floats(&[2], 2, 10.0).to_f16()]).unwrap();
        assert_eq!(joined.lengths, vec![1, 2]);
        assert_eq!(
            joined.values,
            Values::F32(vec![0.0, 1.0, 10.0, 11.0, 12.0, 13.0])
        );
        let ids = Activations {
            dim: 1,
            lengths: vec![2],
            values: Values::TrackIds(vec![4, 5]),
        };
        assert_eq!(
            concat(vec![ids.clone(), ids.clone()]).unwrap().values,
            Values::TrackIds(vec![4, 5, 4, 5])
        );
        let halves = concat(vec![
            floats(&[1], 1, 0.0).to_f16(),
            floats(&[1], 1, 1.0).to_f16(),
        ]);
        assert_eq!(halves.unwrap(), floats(&[1, 1], 1, 0.0).to_f16());
        assert_eq!(concat(vec![ids.clone()]).unwrap(), ids);
        assert!(concat(vec![ids.clone(), floats(&[1], 1, 0.0)]).is_none());
        assert!(concat(vec![floats(&[1], 1, 0.0), ids]).is_none());
        assert!(concat(vec![floats(&[1], 1, 0.0), floats(&[1], 2, 0.0)]).is_none());
    }

    #[test]
    fn split_rows_undoes_concat() {
        let parts = vec![floats(&[1, 3], 2, 0.0), floats(&[2], 2, 50.0)];
        let joined = concat(parts.clone()).unwrap();
        assert_eq!(split_rows(joined, &[2, 1]), parts);
        let one = floats(&[2, 2], 3, 0.0);
        assert_eq!(split_rows(one.clone(), &[2]), vec![one]);
    }

    #[test]
    fn track_ids_keep_each_history_s_last_tracks() {
        let ids = track_ids(&[&[1, 2, 3], &[7]], 2);
        assert_eq!(ids.lengths, vec![2, 1]);
        assert_eq!(ids.values, Values::TrackIds(vec![2, 3, 7]));
    }
}
