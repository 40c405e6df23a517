//! Artifacts on disk: checksummed files, bounded JSON, directories written
//! atomically. Model directories (`setlist-model`) and slice directories
//! (`slice`) are both built from these.

use crate::catalogue::CatalogueError;
use crate::shape::WeightsError;
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Manifests and configs are small; a bigger one is not ours.
const MAX_JSON_BYTES: u64 = 16 * 1024 * 1024;

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
