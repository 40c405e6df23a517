//! Running a partitioned model: converting between a stage's padded tensors
//! and the wire's ragged activations, and an in-process pipeline that passes
//! every hand-off through encoded frames exactly as the compute nodes do.

use crate::artifact::Model;
use crate::catalogue::Catalogue;
use crate::model::ops::{self, RowQuery, Scored};
use crate::plan::PartitionPlan;
use crate::slice::{self, Part, ShardSlice, SliceError, SliceSet, StageSlice};
use crate::wire::{Activations, Body, Frame, RowMeta, Values, WireError};
use tch::Tensor;

/// Anything that turns playlist histories into ranked songs: the whole model
/// or its slices.
pub trait Recommender {
    fn catalogue(&self) -> &Catalogue;
    fn model_version(&self) -> &str;
    fn max_history(&self) -> usize;
    fn recommend(
        &self,
        histories: &[&[u32]],
        queries: &[RowQuery],
    ) -> Result<Vec<Vec<Scored>>, WireError>;
}

impl Recommender for Model {
    fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    fn model_version(&self) -> &str {
        &self.manifest.model_version
    }

    fn max_history(&self) -> usize {
        self.config.max_history as usize
    }

    fn recommend(
        &self,
        histories: &[&[u32]],
        queries: &[RowQuery],
    ) -> Result<Vec<Vec<Scored>>, WireError> {
        Ok(Model::recommend(self, histories, queries))
    }
}

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

/// Flat indices of the real (unpadded) positions of a `[B, T]` batch.
fn real_positions(lengths: &[i64], width: i64) -> Tensor {
    let positions: Vec<i64> = lengths
        .iter()
        .enumerate()
        .flat_map(|(r, &len)| (0..len).map(move |t| r as i64 * width + t))
        .collect();
    Tensor::from_slice(&positions)
}

/// A stage's output as wire activations: `[B, T, D]` keeps each row's real
/// positions; `[B, D]` (the hand-off to the output) is one position per row.
pub fn to_activations(output: &Tensor, lengths: &[i64], half: bool) -> Activations {
    let size = output.size();
    let dim = *size.last().expect("stage outputs have a feature dimension");
    let (rows, lengths) = if size.len() == 2 {
        (output.shallow_clone(), vec![1u32; lengths.len()])
    } else {
        let flat = output
            .reshape([-1, dim])
            .index_select(0, &real_positions(lengths, size[1]));
        (flat, lengths.iter().map(|&l| l as u32).collect())
    };
    let rows = rows.contiguous().view([-1]);
    let values = if half {
        let halves = Vec::<f32>::try_from(rows).expect("activations are f32");
        Values::F16(halves.into_iter().map(half::f16::from_f32).collect())
    } else {
        Values::F32(Vec::<f32>::try_from(rows).expect("activations are f32"))
    };
    Activations {
        dim: dim as u32,
        lengths,
        values,
    }
}

/// Wire activations as a right-padded batch: `[B, T]` i64 ids, or
/// `[B, T, D]` f32; plus the row lengths. `hand_off` (all rows one
/// position, for the output shards) gives `[B, D]` instead.
pub fn from_activations(activations: &Activations, hand_off: bool) -> (Tensor, Vec<i64>) {
    let lengths: Vec<i64> = activations.lengths.iter().map(|&l| l as i64).collect();
    let (batch, dim) = (lengths.len() as i64, activations.dim as i64);
    let values = match &activations.values {
        Values::TrackIds(ids) => {
            Tensor::from_slice(&ids.iter().map(|&t| t as i64).collect::<Vec<i64>>())
        }
        Values::F32(v) => Tensor::from_slice(v),
        Values::F16(v) => Tensor::from_slice(&v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>()),
    };
    if hand_off {
        return (values.view([batch, dim]), lengths);
    }
    let width = lengths.iter().copied().max().unwrap_or(1).max(1);
    let ids = matches!(activations.values, Values::TrackIds(_));
    let padded_shape = if ids {
        vec![batch * width]
    } else {
        vec![batch * width, dim]
    };
    let values = if ids { values } else { values.view([-1, dim]) };
    let padded = Tensor::zeros(padded_shape, (values.kind(), values.device())).index_copy(
        0,
        &real_positions(&lengths, width),
        &values,
    );
    let shape = if ids {
        vec![batch, width]
    } else {
        vec![batch, width, dim]
    };
    (padded.view(shape.as_slice()), lengths)
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

/// All slices of a model in one process. Every hand-off between stages, and
/// from the last stage to the shards, is encoded to a wire frame and decoded
/// again, so this runs the arithmetic and the format of the distributed
/// pipeline without the transport.
pub struct LocalPipeline {
    model_version: String,
    max_history: usize,
    catalogue: Catalogue,
    stages: Vec<StageSlice>,
    shards: Vec<ShardSlice>,
    /// Send activations as f16 (half the bytes, no longer exact).
    pub half: bool,
}

impl LocalPipeline {
    /// Cuts a loaded model by `plan` in memory.
    pub fn from_model(model: &Model, plan: &PartitionPlan) -> LocalPipeline {
        let version = &model.manifest.model_version;
        let stages = plan
            .stages
            .iter()
            .map(|s| {
                let weights = slice::cut(&model.config, plan, &model.weights, Part::Stage(s.index));
                StageSlice::from_weights(version, &model.config, s, weights)
            })
            .collect();
        let shards = plan
            .output_shards
            .iter()
            .map(|s| {
                ShardSlice::from_weights(
                    version,
                    s,
                    slice::cut(
                        &model.config,
                        plan,
                        &model.weights,
                        Part::OutputShard(s.index),
                    ),
                )
            })
            .collect();
        LocalPipeline {
            model_version: version.clone(),
            max_history: model.config.max_history as usize,
            catalogue: model.catalogue.clone(),
            stages,
            shards,
            half: false,
        }
    }

    /// Loads every slice of a slice directory (each one verified).
    pub fn load(set: &SliceSet) -> Result<LocalPipeline, SliceError> {
        let plan = &set.manifest.plan;
        Ok(LocalPipeline {
            model_version: set.manifest.model_version.clone(),
            max_history: set.manifest.config.max_history as usize,
            catalogue: set.load_catalogue()?,
            stages: plan
                .stages
                .iter()
                .map(|s| set.load_stage(s.index))
                .collect::<Result<_, _>>()?,
            shards: plan
                .output_shards
                .iter()
                .map(|s| set.load_shard(s.index))
                .collect::<Result<_, _>>()?,
            half: false,
        })
    }

    /// Encodes and decodes a frame, as a topic would carry it.
    fn transmit(
        &self,
        stage: usize,
        rows: &[RowMeta],
        activations: Activations,
    ) -> Result<Activations, WireError> {
        let frame = Frame {
            model_version: self.model_version.clone(),
            stage: stage as u16,
            reply_to: 0,
            trace_context: String::new(),
            hops: Vec::new(),
            rows: rows.to_vec(),
            body: Body::Activations(activations),
        };
        match Frame::decode(&frame.encode()?)?.body {
            Body::Activations(a) => Ok(a),
            Body::TopK(_) => unreachable!("an activations frame decodes as activations"),
        }
    }
}

impl Recommender for LocalPipeline {
    fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    fn model_version(&self) -> &str {
        &self.model_version
    }

    fn max_history(&self) -> usize {
        self.max_history
    }

    fn recommend(
        &self,
        histories: &[&[u32]],
        queries: &[RowQuery],
    ) -> Result<Vec<Vec<Scored>>, WireError> {
        let rows: Vec<RowMeta> = queries
            .iter()
            .enumerate()
            .map(|(i, q)| RowMeta {
                request_id: i as u128,
                deadline_unix_ms: u64::MAX,
                k: q.k.min(u16::MAX as usize) as u16,
                exclude: q.exclude.to_vec(),
            })
            .collect();
        let mut activations = track_ids(histories, self.max_history);
        for (k, stage) in self.stages.iter().enumerate() {
            let received = self.transmit(k, &rows, activations)?;
            let (input, lengths) = from_activations(&received, false);
            let output = stage.forward(&input, &lengths);
            activations = to_activations(&output, &lengths, self.half);
        }
        let received = self.transmit(self.stages.len(), &rows, activations)?;
        let (hidden, _) = from_activations(&received, true);
        let per_shard: Vec<Vec<Vec<Scored>>> = self
            .shards
            .iter()
            .map(|s| s.top_k(&hidden, queries))
            .collect();
        Ok((0..queries.len())
            .map(|r| {
                let lists: Vec<Vec<Scored>> = per_shard.iter().map(|s| s[r].clone()).collect();
                ops::merge_top_k(&lists, queries[r].k)
            })
            .collect())
    }
}

/// How closely two recommenders agree on the same histories.
#[derive(Debug, Clone, PartialEq)]
pub struct Agreement {
    pub histories: usize,
    /// Histories whose top-k lists hold the same songs in the same order.
    pub same_top_k: usize,
    /// The largest score difference of a song both lists hold.
    pub max_score_difference: f32,
}

impl Agreement {
    pub fn holds(&self, tolerance: f32) -> bool {
        self.same_top_k == self.histories && self.max_score_difference <= tolerance
    }
}

/// Runs both recommenders on `histories` (each excluding its own tracks)
/// and compares their top-`k`.
pub fn compare(
    a: &dyn Recommender,
    b: &dyn Recommender,
    histories: &[Vec<u32>],
    k: usize,
) -> Result<Agreement, WireError> {
    let mut agreement = Agreement {
        histories: histories.len(),
        same_top_k: 0,
        max_score_difference: 0.0,
    };
    for batch in histories.chunks(64) {
        let rows: Vec<&[u32]> = batch.iter().map(Vec::as_slice).collect();
        let queries: Vec<RowQuery> = rows.iter().map(|h| RowQuery { k, exclude: h }).collect();
        for (x, y) in a
            .recommend(&rows, &queries)?
            .iter()
            .zip(&b.recommend(&rows, &queries)?)
        {
            let tracks = |l: &[Scored]| l.iter().map(|s| s.track).collect::<Vec<_>>();
            if tracks(x) == tracks(y) {
                agreement.same_top_k += 1;
            }
            for s in x {
                if let Some(t) = y.iter().find(|t| t.track == s.track) {
                    agreement.max_score_difference = agreement
                        .max_score_difference
                        .max((s.score - t.score).abs());
                }
            }
        }
    }
    Ok(agreement)
}

/// Seeded random histories of 1..=`max_len` songs from a catalogue of
/// `catalogue_size`: inputs for checking slices against their model.
pub fn random_histories(
    catalogue_size: u32,
    count: usize,
    max_len: usize,
    seed: u64,
) -> Vec<Vec<u32>> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let len = rng.random_range(1..=max_len.max(1));
            (0..len)
                .map(|_| rng.random_range(0..catalogue_size))
                .collect()
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
    fn activations_round_trip_through_padded_tensors() {
        let ids = track_ids(&[&[1, 2, 3], &[7]], 2);
        assert_eq!(ids.lengths, vec![2, 1]);
        let (t, lengths) = from_activations(&ids, false);
        assert_eq!(t.size(), vec![2, 2]);
        assert_eq!(lengths, vec![2, 1]);
        let seq = floats(&[2, 1], 3, 0.0);
        let (t, lengths) = from_activations(&seq, false);
        assert_eq!(t.size(), vec![2, 2, 3]);
        assert_eq!(to_activations(&t, &lengths, false), seq);
        // Rows of one length need no padding.
        let full = floats(&[2, 2], 3, 0.0);
        let (t, lengths) = from_activations(&full, false);
        assert_eq!(t.size(), vec![2, 2, 3]);
        assert_eq!(to_activations(&t, &lengths, false), full);
        let ids = track_ids(&[&[1, 2], &[7, 8]], 5);
        let (t, _) = from_activations(&ids, false);
        assert_eq!(
            Vec::<i64>::try_from(t.view([-1])).unwrap(),
            vec![1, 2, 7, 8]
        );
    }
}
