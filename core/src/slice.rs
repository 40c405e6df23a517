//! Slices: one safetensors file per pipeline stage and per output shard,
//! plus a manifest, so each compute node loads only its own part.
//!
//! ```text
//! <slices>/manifest.json          model version, config, plan, sha256 + tensor shapes per slice
//! <slices>/stage-<k>.safetensors  the layers of stage k
//! <slices>/shard-<s>.safetensors  output rows for shard s's songs
//! <slices>/catalogue.jsonl        the model's songs (the dispatcher needs their ids)
//! ```

use crate::artifact::{self, ArtifactError, Model};
use crate::catalogue::Catalogue;
use crate::model::ops::{self, RowQuery, Scored};
use crate::model::{ModelConfig, OUTPUT_BIAS, OUTPUT_WEIGHT, ParamSpec, Weights, check_weights};
use crate::plan::{PartitionPlan, ShardPlan, StagePlan};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use tch::Tensor;

pub const SLICES_FORMAT: &str = "setlist-slices";
pub const FORMAT_VERSION: u32 = 1;

/// Which part of the partitioned model a slice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "index")]
pub enum Part {
    Stage(u32),
    OutputShard(u32),
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Stage(k) => write!(f, "stage-{k}"),
            Part::OutputShard(s) => write!(f, "shard-{s}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceEntry {
    pub part: Part,
    pub file: String,
    pub sha256: String,
    pub bytes: u64,
    pub tensors: Vec<ParamSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceManifest {
    pub format: String,
    pub format_version: u32,
    pub model_version: String,
    pub config: ModelConfig,
    pub plan: PartitionPlan,
    pub slices: Vec<SliceEntry>,
    pub catalogue_sha256: String,
}

/// The tensors each part holds, by name and shape.
pub fn part_params(
    config: &ModelConfig,
    plan: &PartitionPlan,
    part: Part,
) -> Option<Vec<ParamSpec>> {
    match part {
        Part::Stage(k) => {
            let stage = plan.stages.get(k as usize)?;
            Some(
                config.layers()[stage.layers()]
                    .iter()
                    .flat_map(|l| l.params.clone())
                    .collect(),
            )
        }
        Part::OutputShard(s) => {
            Some(config.output_params(plan.output_shards.get(s as usize)?.songs()))
        }
    }
}

/// Every part of a plan, stages first.
pub fn parts(plan: &PartitionPlan) -> impl Iterator<Item = Part> + '_ {
    let stages = plan.stages.iter().map(|s| Part::Stage(s.index));
    stages.chain(
        plan.output_shards
            .iter()
            .map(|s| Part::OutputShard(s.index)),
    )
}

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
            artifact::write_weights(&path, &weights)?;
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

#[derive(Debug, thiserror::Error)]
pub enum SliceError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(
        "{path}: these slices are of model version {found}, but this node serves {expected}; deploy the slices of {expected} or change the node's model version"
    )]
    WrongVersion {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{path}: the plan has no {part}; it has {stages} stages and {shards} output shards")]
    NoSuchPart {
        path: PathBuf,
        part: Part,
        stages: usize,
        shards: usize,
    },
}

/// A slice directory whose manifest has been read and checked; parts are
/// loaded (and verified) one at a time.
#[derive(Debug, Clone)]
pub struct SliceSet {
    pub dir: PathBuf,
    pub manifest: SliceManifest,
}

impl SliceSet {
    /// Opens a slice directory. With `expected_version`, refuses slices of
    /// any other model version.
    pub fn open(dir: &Path, expected_version: Option<&str>) -> Result<SliceSet, SliceError> {
        let path = dir.join("manifest.json");
        let manifest: SliceManifest = artifact::read_json(&path)?;
        if manifest.format != SLICES_FORMAT || manifest.format_version != FORMAT_VERSION {
            return Err(ArtifactError::invalid(
                &path,
                format!(
                    "this is a \"{}\" version {} artifact, but \"{SLICES_FORMAT}\" version {FORMAT_VERSION} slices were expected",
                    manifest.format, manifest.format_version
                ),
            )
            .into());
        }
        if let Some(expected) = expected_version.filter(|v| *v != manifest.model_version) {
            return Err(SliceError::WrongVersion {
                path,
                expected: expected.to_string(),
                found: manifest.model_version.clone(),
            });
        }
        // The plan is a pure function of the config and the counts: a
        // manifest whose plan differs was edited or written by another
        // planner, and its slices would not fit together.
        let replanned = PartitionPlan::new(
            &manifest.config,
            manifest.plan.stages.len() as u32,
            manifest.plan.output_shards.len() as u32,
        )
        .map_err(|e| ArtifactError::invalid(&path, e.to_string()))?;
        if replanned != manifest.plan {
            return Err(ArtifactError::invalid(
                &path,
                "the plan does not match the model config; re-slice the model",
            )
            .into());
        }
        Ok(SliceSet {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    fn load_part(&self, part: Part) -> Result<Weights, SliceError> {
        let m = &self.manifest;
        let no_such_part = || SliceError::NoSuchPart {
            path: self.dir.join("manifest.json"),
            part,
            stages: m.plan.stages.len(),
            shards: m.plan.output_shards.len(),
        };
        let expected = part_params(&m.config, &m.plan, part).ok_or_else(no_such_part)?;
        let entry = m
            .slices
            .iter()
            .find(|e| e.part == part)
            .ok_or_else(no_such_part)?;
        if entry.file.contains('/') || entry.file.contains("..") {
            return Err(ArtifactError::invalid(
                &self.dir.join("manifest.json"),
                format!(
                    "slice file name \"{}\" is not a plain file name",
                    entry.file
                ),
            )
            .into());
        }
        let path = self.dir.join(&entry.file);
        artifact::verify_file(&path, &entry.sha256)?;
        let weights = artifact::read_weights(&path)?;
        check_weights(&weights, &expected)
            .map_err(|source| ArtifactError::Weights { path, source })?;
        Ok(weights)
    }

    pub fn load_stage(&self, index: u32) -> Result<StageSlice, SliceError> {
        let weights = self.load_part(Part::Stage(index))?;
        Ok(StageSlice {
            model_version: self.manifest.model_version.clone(),
            config: self.manifest.config.clone(),
            plan: self.manifest.plan.stages[index as usize].clone(),
            weights,
        })
    }

    pub fn load_shard(&self, index: u32) -> Result<ShardSlice, SliceError> {
        let weights = self.load_part(Part::OutputShard(index))?;
        Ok(ShardSlice {
            model_version: self.manifest.model_version.clone(),
            plan: self.manifest.plan.output_shards[index as usize].clone(),
            weights,
        })
    }

    pub fn load_catalogue(&self) -> Result<Catalogue, SliceError> {
        let path = self.dir.join("catalogue.jsonl");
        artifact::verify_file(&path, &self.manifest.catalogue_sha256)?;
        Catalogue::load(&path, self.manifest.config.catalogue_size)
            .map_err(|source| ArtifactError::Catalogue { path, source }.into())
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
