//! Slices: one safetensors file per pipeline stage and per output shard,
//! plus a manifest, so each compute node loads only its own part. This is
//! the manifest side (what every service reads); the tensors are loaded by
//! `setlist_model::slice`.
//!
//! ```text
//! <slices>/manifest.json          model version, config, plan, sha256 + tensor shapes per slice
//! <slices>/stage-<k>.safetensors  the layers of stage k
//! <slices>/shard-<s>.safetensors  output rows for shard s's songs
//! <slices>/catalogue.jsonl        the model's songs (the dispatcher needs their ids)
//! ```

use crate::artifact::{self, ArtifactError};
use crate::catalogue::Catalogue;
use crate::plan::PartitionPlan;
use crate::shape::{ModelConfig, ParamSpec};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

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

    /// The file of `part`, once its name and sha256 are checked against the
    /// manifest, with the tensors it must hold.
    pub fn verified_part(&self, part: Part) -> Result<(PathBuf, Vec<ParamSpec>), SliceError> {
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
        Ok((path, expected))
    }

    pub fn load_catalogue(&self) -> Result<Catalogue, SliceError> {
        let path = self.dir.join("catalogue.jsonl");
        artifact::verify_file(&path, &self.manifest.catalogue_sha256)?;
        Catalogue::load(&path, self.manifest.config.catalogue_size)
            .map_err(|source| ArtifactError::Catalogue { path, source }.into())
    }
}
