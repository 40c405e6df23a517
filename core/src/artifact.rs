//! Model directories: what `setlist train` writes and everything else reads.
//!
//! ```text
//! <model>/manifest.json        model version + sha256 of every other file
//! <model>/config.json          the ModelConfig
//! <model>/weights.safetensors  all parameters, f32
//! <model>/catalogue.jsonl      the songs the model scores, in model index order
//! <model>/training.json        data fingerprint, split, training config and report
//! ```

use crate::catalogue::{Catalogue, CatalogueError};
use crate::model::{ModelConfig, Weights, WeightsError, check_weights, ops};
use crate::train::{Split, TrainConfig, TrainReport};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use tch::Tensor;

pub const MODEL_FORMAT: &str = "setlist-model";
pub const FORMAT_VERSION: u32 = 1;
/// Manifests and configs are small; a bigger one is not ours.
const MAX_JSON_BYTES: u64 = 16 * 1024 * 1024;

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

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{path}: the sha256 is {found}, but the manifest says {expected}; the file is damaged or was changed after it was written"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{path}: {source}")]
    Weights { path: PathBuf, source: WeightsError },
    #[error("{path}: {source}")]
    Catalogue {
        path: PathBuf,
        source: CatalogueError,
    },
    #[error("{0} already exists; choose another output directory or remove it first")]
    Exists(PathBuf),
}

impl ArtifactError {
    pub fn io(path: &Path, source: io::Error) -> Self {
        ArtifactError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn invalid(path: &Path, reason: impl Into<String>) -> Self {
        ArtifactError::Invalid {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// sha256 of a file, hex, read in chunks (weights can be gigabytes).
pub fn sha256_file(path: &Path) -> Result<String, ArtifactError> {
    let mut file = fs::File::open(path).map_err(|e| ArtifactError::io(path, e))?;
    let mut hash = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| ArtifactError::io(path, e))?;
        if n == 0 {
            return Ok(hex::encode(hash.finalize()));
        }
        hash.update(&buffer[..n]);
    }
}

/// Verifies a file against the sha256 a manifest recorded for it.
pub fn verify_file(path: &Path, expected: &str) -> Result<(), ArtifactError> {
    let found = sha256_file(path)?;
    if found != expected {
        return Err(ArtifactError::Checksum {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            found,
        });
    }
    Ok(())
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ArtifactError> {
    let file = fs::File::open(path).map_err(|e| ArtifactError::io(path, e))?;
    let mut text = String::new();
    file.take(MAX_JSON_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| ArtifactError::io(path, e))?;
    if text.len() as u64 > MAX_JSON_BYTES {
        return Err(ArtifactError::invalid(
            path,
            format!("the file is larger than the limit of {MAX_JSON_BYTES} bytes"),
        ));
    }
    serde_json::from_str(&text).map_err(|e| ArtifactError::invalid(path, e.to_string()))
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ArtifactError> {
    let text = serde_json::to_string_pretty(value).expect("artifact types serialise");
    fs::write(path, text + "\n").map_err(|e| ArtifactError::io(path, e))
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

/// Writes a directory atomically: `fill` writes into a fresh sibling
/// directory, which is renamed into place only when complete, so readers
/// never see half an artifact.
pub fn write_dir_atomically(
    out: &Path,
    fill: impl FnOnce(&Path) -> Result<(), ArtifactError>,
) -> Result<(), ArtifactError> {
    if out.exists() {
        return Err(ArtifactError::Exists(out.to_path_buf()));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| ArtifactError::io(&parent, e))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir(&staging).map_err(|e| ArtifactError::io(&staging, e))?;
    let result = fill(&staging)
        .and_then(|()| fs::rename(&staging, out).map_err(|e| ArtifactError::io(out, e)));
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

/// Records the sha256 of `names` (files inside `dir`).
pub fn checksums(dir: &Path, names: &[&str]) -> Result<BTreeMap<String, String>, ArtifactError> {
    names
        .iter()
        .map(|n| Ok((n.to_string(), sha256_file(&dir.join(n))?)))
        .collect()
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
    pub fn random(config: ModelConfig, seed: u64) -> Result<Model, crate::model::ConfigError> {
        config.validate()?;
        let songs = (0..config.catalogue_size)
            .map(|i| crate::catalogue::Song {
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
            weights: crate::model::initial_weights(&config, None, seed),
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
