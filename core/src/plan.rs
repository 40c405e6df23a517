//! The partition plan: which pipeline layers each compute stage runs, and
//! which songs each output shard scores. A pure function of the model's
//! shape, so every component (CLI, nodes, operator) computes the same plan.

use crate::shape::ModelConfig;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Range;

/// More output shards than this would make each shard's matrix multiply too
/// small to be worth a network hop; the limit also bounds the fan-in the
/// dispatcher merges per request.
pub const MAX_OUTPUT_SHARDS: u32 = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPlan {
    pub stages: Vec<StagePlan>,
    pub output_shards: Vec<ShardPlan>,
}

/// A compute stage: pipeline layers `first_layer..end_layer` (0 is the
/// embedding, 1..=M the LSTMs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagePlan {
    pub index: u32,
    pub first_layer: u32,
    pub end_layer: u32,
    pub bytes: u64,
}

/// An output shard: the output projection rows for songs `first_song..end_song`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    pub index: u32,
    pub first_song: u32,
    pub end_song: u32,
    pub bytes: u64,
}

impl StagePlan {
    pub fn layers(&self) -> Range<usize> {
        self.first_layer as usize..self.end_layer as usize
    }
}

impl ShardPlan {
    pub fn songs(&self) -> Range<u32> {
        self.first_song..self.end_song
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "stages is {requested}, but this model has {layers} pipeline layers (an embedding and {lstm} LSTM layers), so it must be between 1 and {layers}"
    )]
    Stages {
        requested: u32,
        layers: u32,
        lstm: u32,
    },
    #[error(
        "output shards is {requested}, but it must be between 1 and {max} for a catalogue of {catalogue} songs"
    )]
    OutputShards {
        requested: u32,
        max: u32,
        catalogue: u32,
    },
    #[error(transparent)]
    Model(#[from] crate::shape::ConfigError),
}

impl PartitionPlan {
    /// The most stages `config` can be split into.
    pub fn max_stages(config: &ModelConfig) -> u32 {
        config.lstm_layers + 1
    }

    /// The most output shards `config` can be split into.
    pub fn max_output_shards(config: &ModelConfig) -> u32 {
        config.catalogue_size.min(MAX_OUTPUT_SHARDS)
    }

    /// Splits the pipeline layers into `stages` contiguous groups whose
    /// largest holds as few parameter bytes as possible, and the output
    /// projection into `output_shards` song ranges of equal size (±1 song).
    pub fn new(
        config: &ModelConfig,
        stages: u32,
        output_shards: u32,
    ) -> Result<PartitionPlan, PlanError> {
        config.validate()?;
        let layer_bytes: Vec<u64> = config.layers().iter().map(|l| l.bytes()).collect();
        let layers = layer_bytes.len() as u32;
        if stages == 0 || stages > layers {
            return Err(PlanError::Stages {
                requested: stages,
                layers,
                lstm: config.lstm_layers,
            });
        }
        let max_shards = Self::max_output_shards(config);
        if output_shards == 0 || output_shards > max_shards {
            return Err(PlanError::OutputShards {
                requested: output_shards,
                max: max_shards,
                catalogue: config.catalogue_size,
            });
        }
        let bounds = balanced_bounds(&layer_bytes, stages as usize);
        let stages = bounds
            .windows(2)
            .enumerate()
            .map(|(i, w)| StagePlan {
                index: i as u32,
                first_layer: w[0] as u32,
                end_layer: w[1] as u32,
                bytes: layer_bytes[w[0]..w[1]].iter().sum(),
            })
            .collect();
        let songs = config.catalogue_size;
        let (base, extra) = (songs / output_shards, songs % output_shards);
        let mut first_song = 0;
        let output_shards = (0..output_shards)
            .map(|i| {
                let end_song = first_song + base + u32::from(i < extra);
                let bytes = config
                    .output_params(first_song..end_song)
                    .iter()
                    .map(|p| p.elements() * 4)
                    .sum();
                let shard = ShardPlan {
                    index: i,
                    first_song,
                    end_song,
                    bytes,
                };
                first_song = end_song;
                shard
            })
            .collect();
        Ok(PartitionPlan {
            stages,
            output_shards,
        })
    }

    /// The largest stage or shard, in bytes: what one node must hold.
    pub fn largest_part_bytes(&self) -> u64 {
        let stages = self.stages.iter().map(|s| s.bytes);
        stages
            .chain(self.output_shards.iter().map(|s| s.bytes))
            .max()
            .unwrap_or(0)
    }
}

/// Boundaries `0 = b0 < b1 < … < bn = len` of `n` contiguous non-empty
/// groups minimising the largest group's sum (linear partition, by dynamic
/// programming: the layer count is small). Among equally good splits the one
/// with the earliest boundaries wins, so the plan is deterministic.
fn balanced_bounds(sizes: &[u64], n: usize) -> Vec<usize> {
    let len = sizes.len();
    let mut prefix = vec![0u64; len + 1];
    for (i, &size) in sizes.iter().enumerate() {
        prefix[i + 1] = prefix[i] + size;
    }
    let sum = |a: usize, b: usize| prefix[b] - prefix[a];
    // best[g][j]: the smallest possible largest sum when the first j layers form g groups.
    let mut best = vec![vec![u64::MAX; len + 1]; n + 1];
    let mut cut = vec![vec![0usize; len + 1]; n + 1];
    best[0][0] = 0;
    for g in 1..=n {
        for j in g..=len {
            for s in (g - 1)..j {
                if best[g - 1][s] == u64::MAX {
                    continue;
                }
                let cost = best[g - 1][s].max(sum(s, j));
                if cost < best[g][j] {
                    best[g][j] = cost;
                    cut[g][j] = s;
                }
            }
        }
    }
    let mut bounds = vec![len];
    let mut j = len;
    for g in (1..=n).rev() {
        j = cut[g][j];
        bounds.push(j);
    }
    bounds.reverse();
    bounds
}

/// A pipeline layer in words: 0 is the embedding, 1..=M the LSTMs.
pub fn layer_name(layer: usize) -> String {
    if layer == 0 {
        "embedding".to_string()
    } else {
        format!("lstm {layer}")
    }
}

impl fmt::Display for PartitionPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        for s in &self.stages {
            let layers: Vec<String> = s.layers().map(layer_name).collect();
            writeln!(
                f,
                "stage {:<3} {:>10.2} MiB  {}",
                s.index,
                mib(s.bytes),
                layers.join(", ")
            )?;
        }
        for s in &self.output_shards {
            writeln!(
                f,
                "shard {:<3} {:>10.2} MiB  songs {}..{}",
                s.index,
                mib(s.bytes),
                s.first_song,
                s.end_song
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(layers: u32, songs: u32) -> ModelConfig {
        ModelConfig {
            catalogue_size: songs,
            embedding_dim: 16,
            hidden_dim: 32,
            lstm_layers: layers,
            max_history: 50,
            residual: false,
        }
    }

    /// Every way to cut `len` layers into `n` contiguous groups.
    fn all_bounds(len: usize, n: usize) -> Vec<Vec<usize>> {
        if n == 1 {
            return vec![vec![0, len]];
        }
        let mut out = Vec::new();
        for first_end in 1..=len - (n - 1) {
            for rest in all_bounds(len - first_end, n - 1) {
                let mut b = vec![0];
                b.extend(rest.iter().map(|x| x + first_end));
                out.push(b);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn balanced_bounds_are_optimal(sizes in prop::collection::vec(1u64..1_000_000, 1..8), n_seed in 0usize..8) {
            let n = n_seed % sizes.len() + 1;
            let bounds = balanced_bounds(&sizes, n);
            prop_assert_eq!(bounds.len(), n + 1);
            prop_assert_eq!(bounds[0], 0);
            prop_assert_eq!(bounds[n], sizes.len());
            prop_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "groups are non-empty: {:?}", bounds);
            let largest = |b: &[usize]| b.windows(2).map(|w| sizes[w[0]..w[1]].iter().sum::<u64>()).max().unwrap();
            let optimum = all_bounds(sizes.len(), n).iter().map(|b| largest(b)).min().unwrap();
            prop_assert_eq!(largest(&bounds), optimum);
        }

        #[test]
        fn every_allowed_plan_covers_the_model(layers in 1u32..6, songs in 1u32..5000, s_seed in 0u32..1000, n_seed in 0u32..10) {
            let c = config(layers, songs);
            let stages = n_seed % PartitionPlan::max_stages(&c) + 1;
            let shards = s_seed % PartitionPlan::max_output_shards(&c) + 1;
            let plan = PartitionPlan::new(&c, stages, shards).unwrap();
            prop_assert_eq!(plan.stages.len() as u32, stages);
            prop_assert_eq!(plan.stages[0].first_layer, 0);
            prop_assert_eq!(plan.stages.last().unwrap().end_layer, layers + 1);
            prop_assert!(plan.stages.windows(2).all(|w| w[0].end_layer == w[1].first_layer));
            prop_assert_eq!(plan.output_shards[0].first_song, 0);
            prop_assert_eq!(plan.output_shards.last().unwrap().end_song, songs);
            prop_assert!(plan.output_shards.windows(2).all(|w| w[0].end_song == w[1].first_song));
            let sizes: Vec<u32> = plan.output_shards.iter().map(|s| s.end_song - s.first_song).collect();
            prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            let total: u64 = plan.stages.iter().map(|s| s.bytes).sum::<u64>()
                + plan.output_shards.iter().map(|s| s.bytes).sum::<u64>();
            prop_assert_eq!(total, c.bytes());
        }
    }

    #[test]
    fn a_large_embedding_gets_a_stage_of_its_own() {
        let c = ModelConfig {
            catalogue_size: 1_000_000,
            embedding_dim: 256,
            hidden_dim: 256,
            lstm_layers: 2,
            max_history: 50,
            residual: false,
        };
        let plan = PartitionPlan::new(&c, 2, 4).unwrap();
        assert_eq!(
            (plan.stages[0].first_layer, plan.stages[0].end_layer),
            (0, 1)
        );
        assert_eq!(
            (plan.stages[1].first_layer, plan.stages[1].end_layer),
            (1, 3)
        );
        assert_eq!(plan.output_shards[3].songs(), 750_000..1_000_000);
    }

    #[test]
    fn impossible_plans_say_what_is_allowed() {
        let c = config(2, 10);
        assert_eq!(
            PartitionPlan::new(&c, 4, 1).unwrap_err().to_string(),
            "stages is 4, but this model has 3 pipeline layers (an embedding and 2 LSTM layers), so it must be between 1 and 3"
        );
        assert_eq!(
            PartitionPlan::new(&c, 1, 11).unwrap_err().to_string(),
            "output shards is 11, but it must be between 1 and 10 for a catalogue of 10 songs"
        );
        assert!(PartitionPlan::new(&c, 0, 1).is_err());
        assert!(PartitionPlan::new(&c, 1, 0).is_err());
    }
}
