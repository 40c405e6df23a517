//! Model directories: what `setlist train` writes and everything else reads.
//!
//! ```text
//! <model>/manifest.json        model version + sha256 of every other file
//! <model>/config.json          the ModelConfig
//! <model>/weights.safetensors  all parameters, f32
//! <model>/catalogue.jsonl      the songs the model scores, in model index order
//! <model>/training.json        data fingerprint, split, training config and report
//! ```

use crate::train::{Split, TrainConfig, TrainReport};
use crate::{Weights, check_weights, ops};
use serde::{Deserialize, Serialize};
use setlist_core::artifact::{
    ArtifactError, checksums, read_json, verify_file, write_dir_atomically, write_json,
};
use setlist_core::catalogue::{Catalogue, Song};
use setlist_core::shape::{ConfigError, ModelConfig};
use std::collections::BTreeMap;
use std::path::Path;
use tch::Tensor;

pub const MODEL_FORMAT: &str = "setlist-model";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelManifest {
    pub format: String,
    pub format_version: u32,
    /// `m` + the first 12 hex digits of the weights' sha256: two models with
    /// the same version are the same model.
    pub model_version: String,
    pub created_unix: u64,
    /// sha256 (hex) of each file in the directory but the manifest.
    pub files: BTreeMap<String, String>,
}

/// How a model came to be, kept next to it so `setlist evaluate` can rebuild
/// the exact split and anyone can tell which data it saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    pub dataset_source: String,
    pub dataset_fingerprint: String,
    pub split: Split,
    pub min_playlists: u32,
    pub config: TrainConfig,
    pub report: TrainReport,
}

pub fn read_weights(path: &Path) -> Result<Weights, ArtifactError> {
    let tensors =
        Tensor::read_safetensors(path).map_err(|e| ArtifactError::invalid(path, e.to_string()))?;
    Ok(tensors.into_iter().collect())
}

pub fn write_weights(path: &Path, weights: &Weights) -> Result<(), ArtifactError> {
    let named: Vec<(&str, &Tensor)> = weights.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&named, path).map_err(|e| ArtifactError::invalid(path, e.to_string()))
}

/// A trained model, loaded and verified.
pub struct Model {
    pub manifest: ModelManifest,
    pub config: ModelConfig,
    pub weights: Weights,
    pub catalogue: Catalogue,
    pub training: TrainingRecord,
}

const FILES: [&str; 4] = [
    "config.json",
    "weights.safetensors",
    "catalogue.jsonl",
    "training.json",
];

impl Model {
    /// Saves a model directory at `out` (which must not exist yet).
    pub fn save(
        out: &Path,
        config: &ModelConfig,
        weights: &Weights,
        catalogue: &Catalogue,
        training: &TrainingRecord,
    ) -> Result<ModelManifest, ArtifactError> {
        let mut manifest = None;
        write_dir_atomically(out, |dir| {
            write_json(&dir.join("config.json"), config)?;
            write_weights(&dir.join("weights.safetensors"), weights)?;
            catalogue
                .save(&dir.join("catalogue.jsonl"))
                .map_err(|e| ArtifactError::io(&dir.join("catalogue.jsonl"), e))?;
            write_json(&dir.join("training.json"), training)?;
            let files = checksums(dir, &FILES)?;
            let m = ModelManifest {
                format: MODEL_FORMAT.to_string(),
                format_version: FORMAT_VERSION,
                model_version: format!("m{}", &files["weights.safetensors"][..12]),
                created_unix: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                files,
            };
            write_json(&dir.join("manifest.json"), &m)?;
            manifest = Some(m);
            Ok(())
        })?;
        Ok(manifest.expect("the manifest is written on success"))
    }

    /// Loads a model directory, verifying every checksum and every shape.
    pub fn load(dir: &Path) -> Result<Model, ArtifactError> {
        let manifest_path = dir.join("manifest.json");
        let manifest: ModelManifest = read_json(&manifest_path)?;
        if manifest.format != MODEL_FORMAT || manifest.format_version != FORMAT_VERSION {
            return Err(ArtifactError::invalid(
                &manifest_path,
                format!(
                    "this is a \"{}\" version {} artifact, but a \"{MODEL_FORMAT}\" version {FORMAT_VERSION} model directory was expected",
                    manifest.format, manifest.format_version
                ),
            ));
        }
        for name in FILES {
            let expected = manifest.files.get(name).ok_or_else(|| {
                ArtifactError::invalid(
                    &manifest_path,
                    format!("the manifest has no checksum for {name}"),
                )
            })?;
            verify_file(&dir.join(name), expected)?;
        }
        let config: ModelConfig = read_json(&dir.join("config.json"))?;
        config
            .validate()
            .map_err(|e| ArtifactError::invalid(&dir.join("config.json"), e.to_string()))?;
        let weights_path = dir.join("weights.safetensors");
        let weights = read_weights(&weights_path)?;
        check_weights(&weights, &config.all_params()).map_err(|source| ArtifactError::Weights {
            path: weights_path,
            source,
        })?;
        let catalogue_path = dir.join("catalogue.jsonl");
        let catalogue =
            Catalogue::load(&catalogue_path, config.catalogue_size).map_err(|source| {
                ArtifactError::Catalogue {
                    path: catalogue_path,
                    source,
                }
            })?;
        let training = read_json(&dir.join("training.json"))?;
        Ok(Model {
            manifest,
            config,
            weights,
            catalogue,
            training,
        })
    }

    /// An untrained model with seeded random weights and placeholder songs
    /// (`random:00000042`): for tests and benchmarks at sizes no data set
    /// here reaches. Never saved as if trained: its training record says so.
    pub fn random(config: ModelConfig, seed: u64) -> Result<Model, ConfigError> {
        config.validate()?;
        let songs = (0..config.catalogue_size)
            .map(|i| Song {
                id: format!("random:{i:08}"),
                title: format!("Song {i}"),
                artist: "Random".into(),
                album: None,
                playlists: 1,
            })
            .collect();
        Ok(Model {
            manifest: ModelManifest {
                format: MODEL_FORMAT.into(),
                format_version: FORMAT_VERSION,
                model_version: format!("mrandom{seed}"),
                created_unix: 0,
                files: BTreeMap::new(),
            },
            weights: crate::initial_weights(&config, None, seed),
            config,
            catalogue: Catalogue::new(songs).expect("generated ids are unique"),
            training: TrainingRecord {
                dataset_source: "none: random weights, untrained".into(),
                dataset_fingerprint: String::new(),
                split: Split {
                    seed: 0,
                    holdout: 0.0,
                },
                min_playlists: 0,
                config: TrainConfig::default(),
                report: TrainReport {
                    epochs: Vec::new(),
                    seconds: 0.0,
                    sequences: 0,
                    targets: 0,
                    softmax: "none".into(),
                },
            },
        })
    }

    /// The best `k` songs for each playlist history (model indices), leaving
    /// out each row's excludes. One forward pass for the whole batch.
    pub fn recommend(
        &self,
        histories: &[&[u32]],
        queries: &[ops::RowQuery],
    ) -> Vec<Vec<ops::Scored>> {
        let _guard = tch::no_grad_guard();
        let (ids, lengths) = ops::pad_tracks(histories, self.config.max_history as usize);
        let layers = 0..self.config.lstm_layers as usize + 1;
        let hidden = ops::run_stage(&self.config, &self.weights, layers, &ids, &lengths);
        ops::top_k(&ops::scores(&self.weights, &hidden), 0, queries)
    }
}
