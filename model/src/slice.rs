//! Slice files' tensors: cutting a model into parts, writing them, and
//! loading one part (verified against its manifest) to run it.

use crate::artifact::{Model, read_weights, write_weights};
use crate::ops::{self, RowQuery};
use crate::{Weights, check_weights};
use setlist_core::artifact::{self, ArtifactError};
use setlist_core::plan::{PartitionPlan, ShardPlan, StagePlan};
use setlist_core::shape::{ModelConfig, OUTPUT_BIAS, OUTPUT_WEIGHT};
use setlist_core::slice::{
    FORMAT_VERSION, Part, SLICES_FORMAT, SliceEntry, SliceError, SliceManifest, SliceSet,
    part_params, parts,
};
use setlist_core::wire::Scored;
use std::path::Path;
use tch::Tensor;

/// The weights of one part, cut from the whole model's (sharing storage
/// where the part is a whole tensor).
pub fn cut(config: &ModelConfig, plan: &PartitionPlan, weights: &Weights, part: Part) -> Weights {
    match part {
        Part::Stage(_) => part_params(config, plan, part)
            .expect("parts come from the plan")
            .into_iter()
            .map(|p| {
                let t = weights[&p.name].shallow_clone();
                (p.name, t)
            })
            .collect(),
        Part::OutputShard(s) => {
            let songs = plan.output_shards[s as usize].songs();
            let (first, len) = (songs.start as i64, (songs.end - songs.start) as i64);
            [OUTPUT_WEIGHT, OUTPUT_BIAS]
                .iter()
                .map(|&n| (n.to_string(), weights[n].narrow(0, first, len)))
                .collect()
        }
    }
}

/// Writes the slices of `model` under `plan` into `out` (which must not
/// exist yet).
pub fn write_slices(
    model: &Model,
    plan: &PartitionPlan,
    out: &Path,
) -> Result<SliceManifest, ArtifactError> {
    let mut manifest = None;
    artifact::write_dir_atomically(out, |dir| {
        let mut slices = Vec::new();
        for part in parts(plan) {
            let file = format!("{part}.safetensors");
            let path = dir.join(&file);
            // `contiguous` copies a shard's rows out of the whole matrix, so
            // the file holds only them.
            let weights: Weights = cut(&model.config, plan, &model.weights, part)
                .into_iter()
                .map(|(n, t)| (n, t.contiguous()))
                .collect();
            write_weights(&path, &weights)?;
            slices.push(SliceEntry {
                part,
                sha256: artifact::sha256_file(&path)?,
                bytes: std::fs::metadata(&path)
                    .map_err(|e| ArtifactError::io(&path, e))?
                    .len(),
                tensors: part_params(&model.config, plan, part).expect("parts come from the plan"),
                file,
            });
        }
        let catalogue_path = dir.join("catalogue.jsonl");
        model
            .catalogue
            .save(&catalogue_path)
            .map_err(|e| ArtifactError::io(&catalogue_path, e))?;
        let m = SliceManifest {
            format: SLICES_FORMAT.to_string(),
            format_version: FORMAT_VERSION,
            model_version: model.manifest.model_version.clone(),
            config: model.config.clone(),
            plan: plan.clone(),
            slices,
            catalogue_sha256: artifact::sha256_file(&catalogue_path)?,
        };
        artifact::write_json(&dir.join("manifest.json"), &m)?;
        manifest = Some(m);
        Ok(())
    })?;
    Ok(manifest.expect("the manifest is written on success"))
}

/// Loading one part of a [`SliceSet`] into memory, verified.
pub trait LoadParts {
    fn load_stage(&self, index: u32) -> Result<StageSlice, SliceError>;
    fn load_shard(&self, index: u32) -> Result<ShardSlice, SliceError>;
}

fn load_part(set: &SliceSet, part: Part) -> Result<Weights, SliceError> {
    let (path, expected) = set.verified_part(part)?;
    let weights = read_weights(&path)?;
    check_weights(&weights, &expected).map_err(|source| ArtifactError::Weights { path, source })?;
    Ok(weights)
}

impl LoadParts for SliceSet {
    fn load_stage(&self, index: u32) -> Result<StageSlice, SliceError> {
        let weights = load_part(self, Part::Stage(index))?;
        Ok(StageSlice {
            model_version: self.manifest.model_version.clone(),
            config: self.manifest.config.clone(),
            plan: self.manifest.plan.stages[index as usize].clone(),
            weights,
        })
    }

    fn load_shard(&self, index: u32) -> Result<ShardSlice, SliceError> {
        let weights = load_part(self, Part::OutputShard(index))?;
        Ok(ShardSlice {
            model_version: self.manifest.model_version.clone(),
            plan: self.manifest.plan.output_shards[index as usize].clone(),
            weights,
        })
    }
}

/// A pipeline stage's layers, ready to run.
pub struct StageSlice {
    pub model_version: String,
    pub config: ModelConfig,
    pub plan: StagePlan,
    weights: Weights,
}

impl StageSlice {
    /// From weights already cut and checked (see [`cut`]).
    pub fn from_weights(
        model_version: &str,
        config: &ModelConfig,
        plan: &StagePlan,
        weights: Weights,
    ) -> StageSlice {
        StageSlice {
            model_version: model_version.to_string(),
            config: config.clone(),
            plan: plan.clone(),
            weights,
        }
    }

    /// Whether the stage reads track ids (it holds the embedding).
    pub fn reads_track_ids(&self) -> bool {
        self.plan.first_layer == 0
    }

    /// Whether the stage hands its output to the output shards.
    pub fn feeds_output(&self) -> bool {
        self.plan.end_layer == self.config.lstm_layers + 1
    }

    /// Width of what the stage produces.
    pub fn output_dim(&self) -> u32 {
        self.config
            .layer_output_dim(self.plan.end_layer as usize - 1)
    }

    /// Width of what the stage reads (1 for track ids).
    pub fn input_dim(&self) -> u32 {
        if self.reads_track_ids() {
            1
        } else {
            self.config
                .layer_output_dim(self.plan.first_layer as usize - 1)
        }
    }

    /// Runs the stage on a right-padded batch: `[B, T]` ids or `[B, T, D]`
    /// activations in; `[B, T, D']` out, or `[B, H]` when it feeds the output.
    pub fn forward(&self, input: &Tensor, lengths: &[i64]) -> Tensor {
        let _guard = tch::no_grad_guard();
        ops::run_stage(
            &self.config,
            &self.weights,
            self.plan.layers(),
            input,
            lengths,
        )
    }
}

/// An output shard: scores its songs and keeps each row's top k.
pub struct ShardSlice {
    pub model_version: String,
    pub plan: ShardPlan,
    weights: Weights,
}

impl ShardSlice {
    pub fn from_weights(model_version: &str, plan: &ShardPlan, weights: Weights) -> ShardSlice {
        ShardSlice {
            model_version: model_version.to_string(),
            plan: plan.clone(),
            weights,
        }
    }

    /// Width of the hand-off the shard reads (the last LSTM's hidden size).
    pub fn hidden_dim(&self) -> u32 {
        self.weights[OUTPUT_WEIGHT].size()[1] as u32
    }

    pub fn top_k(&self, hidden: &Tensor, queries: &[RowQuery]) -> Vec<Vec<Scored>> {
        let _guard = tch::no_grad_guard();
        ops::top_k(
            &ops::scores(&self.weights, hidden),
            self.plan.first_song,
            queries,
        )
    }
}
