//! Running a partitioned model: converting between a stage's padded tensors
//! and the wire's ragged activations, and an in-process pipeline that passes
//! every hand-off through encoded frames exactly as the compute nodes do.

use crate::artifact::Model;
use crate::ops::{RowQuery, Scored};
use crate::slice::{self, LoadParts, ShardSlice, StageSlice};
use setlist_core::catalogue::Catalogue;
use setlist_core::plan::PartitionPlan;
use setlist_core::slice::{Part, SliceError, SliceSet};
use setlist_core::wire::{Activations, Body, Frame, RowMeta, Values, WireError, track_ids};
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
                setlist_core::query::merge_top_k(&lists, queries[r].k)
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
