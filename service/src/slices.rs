//! Where a process's slices come from: a directory on this machine, read in
//! place as `setlist slice` wrote it, or a URI where `setlist publish` put
//! them (`file://` on a mounted volume, `http(s)://`, `s3://`, `gs://`,
//! `az://`), read with `object_store`. From a URI a process downloads the
//! manifest and then only the files it needs (a compute node: its own part;
//! the dispatcher and the search API: the catalogue) into a cache folder,
//! each checked against the manifest's sha256, and reuses what the cache
//! already holds.
//!
//! The decisions (which files, how large each may be, which are cached, how
//! names join a prefix) are pure functions; the rest is a thin layer of I/O.

use object_store::aws::AmazonS3Builder;
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::buffered::BufWriter;
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt, ObjectStoreScheme, RetryConfig};
use setlist_core::artifact::{self, ArtifactError};
use setlist_core::slice::{Part, SliceError, SliceManifest, SliceSet};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use url::Url;

/// The schemes a slices URI may have, as the error for any other says.
pub const SCHEMES: &str = "file://, http://, https://, s3://, gs:// or az://";
/// Every scheme accepted: [`SCHEMES`] and `object_store`'s other names
/// for the same stores.
const KNOWN_SCHEMES: [&str; 11] = [
    "file", "http", "https", "s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl",
];

pub const MANIFEST: &str = "manifest.json";
pub const CATALOGUE: &str = "catalogue.jsonl";
/// A manifest lists shapes and checksums: kilobytes, even for a large model.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// What a file may exceed the size its manifest records by before the
/// download stops: the sha256 check refuses any difference anyway; this
/// only keeps a wrong file from filling the disk first.
pub const SIZE_SLACK_BYTES: u64 = 64 * 1024;
/// The manifest records no size for the catalogue, only its song count; a
/// song's line is a few hundred bytes.
pub const MAX_CATALOGUE_LINE_BYTES: u64 = 4 * 1024;

/// Bounds on every request to a store. The whole-request bound is long
/// because a part can be gigabytes; a stalled transfer is caught sooner by
/// the bound between two reads.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A failed request is retried (with backoff) this many times, within
/// [`RETRY_TIMEOUT`] of the first attempt.
pub const RETRIES: usize = 3;
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// Files up to this size are uploaded in one request; larger ones in parts.
const UPLOAD_BUFFER_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SliceSourceError {
    #[error(
        "the slices source is empty; give a slices directory or a URI ({SCHEMES}) where `setlist publish` put them"
    )]
    Empty,
    #[error(
        "\"{text}\": Setlist cannot read slices from \"{scheme}://\"; give a slices directory, or a URI with one of {SCHEMES}"
    )]
    UnknownScheme { text: String, scheme: String },
    #[error("\"{text}\" is not a slices URI Setlist can read: {reason}")]
    BadUri { text: String, reason: String },
    #[error(
        "{uri} does not exist: publish the slices there (`setlist publish --slices DIR --to {base}`) or correct the URI"
    )]
    Missing { uri: String, base: String },
    #[error(
        "{uri}: {source}; check the URI, the network, and the store's credentials in the environment (AWS_*, GOOGLE_*, AZURE_*)"
    )]
    Store {
        uri: String,
        source: object_store::Error,
    },
    #[error(
        "{uri} is larger than the {limit} bytes its manifest allows for it, so it is not the file the manifest describes; publish the slices again"
    )]
    TooLarge { uri: String, limit: u64 },
    #[error(
        "{uri}: the sha256 is {found}, but the manifest says {expected}; the published {file} is damaged or belongs to other slices: publish the slices again (`setlist publish --slices DIR --to {base} --force`)"
    )]
    Checksum {
        uri: String,
        base: String,
        file: String,
        expected: String,
        found: String,
    },
    #[error("{uri}: {reason}; publish the slices again with `setlist publish`")]
    BadManifest { uri: String, reason: String },
    #[error("{uri}: the plan has no {part}; it has {stages} stages and {shards} output shards")]
    NoSuchPart {
        uri: String,
        part: Part,
        stages: usize,
        shards: usize,
    },
    #[error(
        "{path}: {source}; the slice cache (--slice-cache) must be a folder this process can write"
    )]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Slice(#[from] SliceError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

/// Where the slices are.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum SliceSource {
    /// A directory on this machine, read in place (never copied).
    Local(PathBuf),
    /// A URI; what a process needs is downloaded into its cache.
    Remote(Remote),
}

/// A slices URI: its store and the prefix the files lie under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    url: Url,
    scheme: ObjectStoreScheme,
    prefix: ObjectPath,
}

/// What a process needs of the slices besides the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// The manifest alone (the model version and plan).
    Manifest,
    /// The manifest and the catalogue (the dispatcher, the search API).
    Catalogue,
    /// The manifest and one part's file (a compute node).
    Part(Part),
}

/// A file a fetch needs besides the manifest: the most bytes it may have,
/// and the sha256 it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeededFile {
    pub name: String,
    pub sha256: String,
    pub max_bytes: u64,
}

/// The outcome of a fetch: the slices, opened and checked (their
/// directory is the cache's copy for a URI), and which files came from
/// where.
#[derive(Debug)]
pub struct Fetched {
    pub set: SliceSet,
    /// Files downloaded by this fetch, the manifest first.
    pub downloaded: Vec<String>,
    /// Files the cache already held with the right sha256.
    pub reused: Vec<String>,
}

/// `~/.cache/setlist/slice-cache`, where fetched slices are kept by default.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/setlist/slice-cache"))
        .unwrap_or_else(|| std::env::temp_dir().join("setlist-slice-cache"))
}

impl SliceSource {
    /// A directory path, or a URI with one of [`SCHEMES`].
    pub fn parse(text: &str) -> Result<SliceSource, SliceSourceError> {
        if text.is_empty() {
            return Err(SliceSourceError::Empty);
        }
        let scheme = match text.split_once("://") {
            // What precedes "://" in a path (a folder named "a:") is no scheme.
            Some((scheme, _))
                if !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
            {
                scheme.to_ascii_lowercase()
            }
            _ => return Ok(SliceSource::Local(PathBuf::from(text))),
        };
        if !KNOWN_SCHEMES.contains(&scheme.as_str()) {
            return Err(SliceSourceError::UnknownScheme {
                text: text.to_string(),
                scheme,
            });
        }
        let bad = |reason: String| SliceSourceError::BadUri {
            text: text.to_string(),
            reason,
        };
        let url = Url::parse(text).map_err(|e| bad(e.to_string()))?;
        if url.query().is_some() || url.fragment().is_some() {
            // Signed URLs would put secrets in logs and in every file's URI.
            return Err(bad(
                "it has a ?query or #fragment; give the store's credentials through the environment instead".into(),
            ));
        }
        let (scheme, prefix) = ObjectStoreScheme::parse(&url).map_err(|e| {
            bad(match url.scheme() {
                "file" => format!("{e}; a folder is file:///absolute/path"),
                _ => e.to_string(),
            })
        })?;
        Ok(SliceSource::Remote(Remote {
            url,
            scheme,
            prefix,
        }))
    }

    /// Opens the slices, fetching what `wanted` needs first when they are
    /// at a URI: the manifest (its format, plan and, with
    /// `expected_version`, model version checked before anything else is
    /// downloaded), then each wanted file the cache does not hold already,
    /// into `cache/<model version>/`. A local directory is opened in place,
    /// as `SliceSet::open` does; its files are checked when loaded.
    pub async fn fetch(
        &self,
        cache: &Path,
        wanted: Wanted,
        expected_version: Option<&str>,
    ) -> Result<Fetched, SliceSourceError> {
        match self {
            SliceSource::Local(dir) => Ok(Fetched {
                set: SliceSet::open(dir, expected_version)?,
                downloaded: Vec::new(),
                reused: Vec::new(),
            }),
            SliceSource::Remote(remote) => remote.fetch(cache, wanted, expected_version).await,
        }
    }
}

impl std::str::FromStr for SliceSource {
    type Err = SliceSourceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SliceSource::parse(text)
    }
}

impl TryFrom<String> for SliceSource {
    type Error = SliceSourceError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        SliceSource::parse(&text)
    }
}

impl fmt::Display for SliceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SliceSource::Local(dir) => write!(f, "{}", dir.display()),
            SliceSource::Remote(remote) => remote.fmt(f),
        }
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.base())
    }
}

/// Whether `name` is one plain file name: nothing a manifest names (nor a
/// model version, a folder of the cache) may reach outside its folder.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// The object `name` under `prefix`, where `name` is a plain file name.
pub fn object_path(prefix: &ObjectPath, name: &str) -> Option<ObjectPath> {
    is_plain_file_name(name).then(|| prefix.clone().join(name))
}

/// The files `wanted` needs besides the manifest, each with its sha256 and
/// the most bytes it may have. `uri` (the manifest's) names the manifest in
/// errors.
pub fn needed_files(
    manifest: &SliceManifest,
    wanted: Wanted,
    uri: &str,
) -> Result<Vec<NeededFile>, SliceSourceError> {
    match wanted {
        Wanted::Manifest => Ok(Vec::new()),
        Wanted::Catalogue => Ok(vec![NeededFile {
            name: CATALOGUE.to_string(),
            sha256: manifest.catalogue_sha256.clone(),
            max_bytes: u64::from(manifest.config.catalogue_size) * MAX_CATALOGUE_LINE_BYTES
                + SIZE_SLACK_BYTES,
        }]),
        Wanted::Part(part) => {
            let entry = manifest
                .slices
                .iter()
                .find(|e| e.part == part)
                .ok_or_else(|| SliceSourceError::NoSuchPart {
                    uri: uri.to_string(),
                    part,
                    stages: manifest.plan.stages.len(),
                    shards: manifest.plan.output_shards.len(),
                })?;
            if !is_plain_file_name(&entry.file) {
                return Err(SliceSourceError::BadManifest {
                    uri: uri.to_string(),
                    reason: format!(
                        "the file of {part}, \"{}\", is not a plain file name",
                        entry.file
                    ),
                });
            }
            Ok(vec![NeededFile {
                name: entry.file.clone(),
                sha256: entry.sha256.clone(),
                max_bytes: entry.bytes + SIZE_SLACK_BYTES,
            }])
        }
    }
}

/// The files of `needed` to download: those the cache does not hold with
/// the right sha256 (`cached`: the sha256 of each file it holds, by name).
pub fn to_download<'a>(
    needed: &'a [NeededFile],
    cached: &HashMap<String, String>,
) -> Vec<&'a NeededFile> {
    needed
        .iter()
        .filter(|f| cached.get(&f.name) != Some(&f.sha256))
        .collect()
}

impl Remote {
    /// The URI, without a trailing slash.
    fn base(&self) -> &str {
        self.url.as_str().trim_end_matches('/')
    }

    /// The URI of the file `name` under this one.
    pub fn uri(&self, name: &str) -> String {
        format!("{}/{name}", self.base())
    }

    /// A client for the store: credentials and settings from the
    /// environment as `object_store` reads them (`AWS_*`, `GOOGLE_*`,
    /// `AZURE_*`), every request bounded in time.
    pub fn open(&self) -> Result<SliceStore, SliceSourceError> {
        let client = [
            (ClientConfigKey::ConnectTimeout, CONNECT_TIMEOUT),
            (ClientConfigKey::ReadTimeout, READ_TIMEOUT),
            (ClientConfigKey::Timeout, REQUEST_TIMEOUT),
        ]
        .map(|(key, value)| (key, format!("{}s", value.as_secs())));
        let retry = RetryConfig {
            max_retries: RETRIES,
            retry_timeout: RETRY_TIMEOUT,
            ..RetryConfig::default()
        };
        let text = self.url.as_str();
        let built: object_store::Result<Arc<dyn ObjectStore>> = match self.scheme {
            ObjectStoreScheme::Local => Ok(Arc::new(LocalFileSystem::new())),
            ObjectStoreScheme::AmazonS3 => client
                .into_iter()
                .fold(AmazonS3Builder::from_env().with_url(text), |b, (k, v)| {
                    b.with_config(object_store::aws::AmazonS3ConfigKey::Client(k), v)
                })
                .with_retry(retry)
                .build()
                .map(|s| Arc::new(s) as _),
            ObjectStoreScheme::GoogleCloudStorage => client
                .into_iter()
                .fold(
                    GoogleCloudStorageBuilder::from_env().with_url(text),
                    |b, (k, v)| b.with_config(GoogleConfigKey::Client(k), v),
                )
                .with_retry(retry)
                .build()
                .map(|s| Arc::new(s) as _),
            ObjectStoreScheme::MicrosoftAzure => client
                .into_iter()
                .fold(
                    MicrosoftAzureBuilder::from_env().with_url(text),
                    |b, (k, v)| b.with_config(AzureConfigKey::Client(k), v),
                )
                .with_retry(retry)
                .build()
                .map(|s| Arc::new(s) as _),
            ObjectStoreScheme::Http => client
                .into_iter()
                .fold(
                    HttpBuilder::new()
                        .with_url(&self.url[..url::Position::BeforePath])
                        // Plain HTTP only where the URI says so.
                        .with_config(
                            ClientConfigKey::AllowHttp,
                            (self.url.scheme() == "http").to_string(),
                        ),
                    |b, (k, v)| b.with_config(k, v),
                )
                .with_retry(retry)
                .build()
                .map(|s| Arc::new(s) as _),
            // `parse` accepts no other scheme.
            ref other => unreachable!("a slices URI of scheme {other:?}"),
        };
        let store = built.map_err(|source| SliceSourceError::Store {
            uri: self.base().to_string(),
            source,
        })?;
        Ok(SliceStore {
            store,
            remote: self.clone(),
        })
    }

    async fn fetch(
        &self,
        cache: &Path,
        wanted: Wanted,
        expected_version: Option<&str>,
    ) -> Result<Fetched, SliceSourceError> {
        let store = self.open()?;
        let manifest_uri = self.uri(MANIFEST);
        let text = store.read(MANIFEST, MAX_MANIFEST_BYTES).await?;
        let manifest: SliceManifest =
            serde_json::from_slice(&text).map_err(|e| SliceSourceError::BadManifest {
                uri: manifest_uri.clone(),
                reason: format!("it is not a Setlist slices manifest: {e}"),
            })?;
        if !is_plain_file_name(&manifest.model_version) {
            return Err(SliceSourceError::BadManifest {
                uri: manifest_uri,
                reason: format!(
                    "the model version \"{}\" is not a plain name",
                    manifest.model_version
                ),
            });
        }
        let dir = cache.join(&manifest.model_version);
        std::fs::create_dir_all(&dir).map_err(|source| SliceSourceError::Cache {
            path: dir.clone(),
            source,
        })?;
        write_atomically(&dir, MANIFEST, &text)?;
        // Format, plan and version, before any large file is downloaded.
        let set = SliceSet::open(&dir, expected_version)?;
        let needed = needed_files(&set.manifest, wanted, &manifest_uri)?;
        let cached = cached_checksums(&dir, &needed).await?;
        let mut downloaded = vec![MANIFEST.to_string()];
        let mut reused = Vec::new();
        let missing = to_download(&needed, &cached);
        for file in &needed {
            if missing.contains(&file) {
                store.download(file, &dir).await?;
                downloaded.push(file.name.clone());
            } else {
                reused.push(file.name.clone());
            }
        }
        tracing::info!(slices = %self, cache = %dir.display(), ?downloaded, ?reused, "slices fetched");
        Ok(Fetched {
            set,
            downloaded,
            reused,
        })
    }
}

/// The sha256 of each needed file the cache folder `dir` holds.
async fn cached_checksums(
    dir: &Path,
    needed: &[NeededFile],
) -> Result<HashMap<String, String>, SliceSourceError> {
    let dir = dir.to_path_buf();
    let names: Vec<String> = needed.iter().map(|f| f.name.clone()).collect();
    // Hashing a part reads gigabytes: off the async threads.
    tokio::task::spawn_blocking(move || {
        let mut found = HashMap::new();
        for name in names {
            let path = dir.join(&name);
            if path.exists() {
                found.insert(name, artifact::sha256_file(&path)?);
            }
        }
        Ok(found)
    })
    .await
    .expect("hashing the cache does not panic")
}

/// Writes `name` in `dir` whole or not at all: a reader (another process
/// sharing the cache) never sees half a file. No fsync: a file torn by a
/// crash fails its sha256 next time and is downloaded again.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SliceSourceError> {
    let cache_error = |source| SliceSourceError::Cache {
        path: dir.join(name),
        source,
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(dir)
        .map_err(cache_error)?;
    std::io::Write::write_all(&mut temp, bytes).map_err(cache_error)?;
    temp.persist(dir.join(name))
        .map_err(|e| cache_error(e.error))?;
    Ok(())
}

/// A connection to the store of a [`Remote`].
pub struct SliceStore {
    store: Arc<dyn ObjectStore>,
    remote: Remote,
}

impl SliceStore {
    fn location(&self, name: &str) -> ObjectPath {
        object_path(&self.remote.prefix, name).expect("names are checked before they get here")
    }

    fn error(&self, name: &str, source: object_store::Error) -> SliceSourceError {
        let uri = self.remote.uri(name);
        match source {
            object_store::Error::NotFound { .. } => SliceSourceError::Missing {
                uri,
                base: self.remote.base().to_string(),
            },
            source => SliceSourceError::Store { uri, source },
        }
    }

    /// A small file, whole, refused past `limit` bytes.
    async fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>, SliceSourceError> {
        let mut bytes = Vec::new();
        self.stream(name, limit, |chunk| {
            bytes.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(bytes)
    }

    /// Streams the file `name` to `each`, chunk by chunk, refusing it as
    /// soon as it passes `limit` bytes.
    async fn stream(
        &self,
        name: &str,
        limit: u64,
        mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), SliceSourceError> {
        use futures::StreamExt;
        let too_large = || SliceSourceError::TooLarge {
            uri: self.remote.uri(name),
            limit,
        };
        let found = self
            .store
            .get(&self.location(name))
            .await
            .map_err(|e| self.error(name, e))?;
        if found.meta.size > limit {
            return Err(too_large());
        }
        let mut chunks = found.into_stream();
        let mut received = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| self.error(name, e))?;
            received += chunk.len() as u64;
            if received > limit {
                return Err(too_large());
            }
            each(&chunk).map_err(|source| SliceSourceError::Cache {
                path: PathBuf::from(name),
                source,
            })?;
        }
        Ok(())
    }

    /// Downloads `file` into the folder `dir`, checked against its sha256
    /// before it takes its name there.
    async fn download(&self, file: &NeededFile, dir: &Path) -> Result<(), SliceSourceError> {
        let path = dir.join(&file.name);
        let cache_error = |source| SliceSourceError::Cache {
            path: path.clone(),
            source,
        };
        let temp = tempfile::Builder::new()
            .prefix(".download-")
            .tempfile_in(dir)
            .map_err(cache_error)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, temp.as_file());
        self.stream(&file.name, file.max_bytes, |chunk| {
            std::io::Write::write_all(&mut out, chunk)
        })
        .await?;
        std::io::Write::flush(&mut out).map_err(cache_error)?;
        drop(out);
        let temp_path = temp.path().to_path_buf();
        let found = tokio::task::spawn_blocking(move || artifact::sha256_file(&temp_path))
            .await
            .expect("hashing does not panic")?;
        if found != file.sha256 {
            return Err(SliceSourceError::Checksum {
                uri: self.remote.uri(&file.name),
                base: self.remote.base().to_string(),
                file: file.name.clone(),
                expected: file.sha256.clone(),
                found,
            });
        }
        temp.persist(&path).map_err(|e| cache_error(e.error))?;
        tracing::info!(uri = %self.remote.uri(&file.name), path = %path.display(), "downloaded and verified");
        Ok(())
    }

    /// The manifest published here, if there is one.
    pub async fn published_manifest(&self) -> Result<Option<SliceManifest>, SliceSourceError> {
        match self.read(MANIFEST, MAX_MANIFEST_BYTES).await {
            Ok(text) => {
                serde_json::from_slice(&text)
                    .map(Some)
                    .map_err(|e| SliceSourceError::BadManifest {
                        uri: self.remote.uri(MANIFEST),
                        reason: format!("it is not a Setlist slices manifest: {e}"),
                    })
            }
            Err(SliceSourceError::Missing { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Uploads the local file `path` as `name` here; returns its size.
    /// Large files go in parts, where the store takes them so.
    pub async fn upload(&self, path: &Path, name: &str) -> Result<u64, SliceSourceError> {
        let read_error = |e| ArtifactError::io(path, e);
        let mut file = tokio::fs::File::open(path).await.map_err(read_error)?;
        let mut writer =
            BufWriter::with_capacity(self.store.clone(), self.location(name), UPLOAD_BUFFER_BYTES);
        let copied = tokio::io::copy(&mut file, &mut writer).await;
        let written = match copied {
            Ok(bytes) => writer.shutdown().await.map(|()| bytes),
            Err(e) => Err(e),
        };
        // The store's errors come back wrapped in io::Error; any other is
        // the local file's.
        written.map_err(|e| match e.downcast::<object_store::Error>() {
            Ok(source) => self.error(name, source),
            Err(e) => read_error(e).into(),
        })
    }

    /// The URI of `name` here.
    pub fn uri(&self, name: &str) -> String {
        self.remote.uri(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use setlist_core::plan::PartitionPlan;
    use setlist_core::shape::ModelConfig;
    use setlist_core::slice::{FORMAT_VERSION, SLICES_FORMAT, SliceEntry};

    fn remote(text: &str) -> Remote {
        match SliceSource::parse(text).unwrap() {
            SliceSource::Remote(r) => r,
            local => panic!("{text} parsed as {local:?}"),
        }
    }

    #[test]
    fn paths_are_local_and_uris_name_their_store_and_prefix() {
        for path in ["slices/mpd-3x2", "/srv/slices", "./a://b", "a b"] {
            assert_eq!(
                SliceSource::parse(path).unwrap(),
                SliceSource::Local(PathBuf::from(path))
            );
        }
        for (uri, scheme, prefix) in [
            (
                "file:///srv/slices/m1",
                ObjectStoreScheme::Local,
                "srv/slices/m1",
            ),
            (
                "http://127.0.0.1:8000/pub/m1",
                ObjectStoreScheme::Http,
                "pub/m1",
            ),
            (
                "https://models.example.com/m1/",
                ObjectStoreScheme::Http,
                "m1",
            ),
            (
                "s3://bucket/setlist/m1",
                ObjectStoreScheme::AmazonS3,
                "setlist/m1",
            ),
            (
                "gs://bucket/m1",
                ObjectStoreScheme::GoogleCloudStorage,
                "m1",
            ),
            ("az://container/m1", ObjectStoreScheme::MicrosoftAzure, "m1"),
        ] {
            let r = remote(uri);
            assert_eq!(
                (r.scheme.clone(), r.prefix.as_ref()),
                (scheme, prefix),
                "{uri}"
            );
        }
        assert_eq!(
            remote("https://models.example.com/m1/").uri(MANIFEST),
            "https://models.example.com/m1/manifest.json"
        );
        assert_eq!(
            SliceSource::parse("s3://bucket/m1/").unwrap().to_string(),
            "s3://bucket/m1"
        );
    }

    #[test]
    fn an_unknown_scheme_is_refused_naming_those_supported() {
        let error = SliceSource::parse("ftp://host/slices")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "\"ftp://host/slices\": Setlist cannot read slices from \"ftp://\"; give a slices directory, or a URI with one of file://, http://, https://, s3://, gs:// or az://"
        );
        let error = SliceSource::parse("memory:///x").unwrap_err().to_string();
        assert!(error.contains("\"memory://\""), "{error}");
        let error = SliceSource::parse("file://host/x").unwrap_err().to_string();
        assert!(error.contains("file:///absolute/path"), "{error}");
        let error = SliceSource::parse("https://h/m1?sig=secret")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("credentials through the environment"),
            "{error}"
        );
        assert!(matches!(
            SliceSource::parse(""),
            Err(SliceSourceError::Empty)
        ));
    }

    #[test]
    fn names_join_the_prefix_only_as_plain_file_names() {
        let prefix = remote("s3://bucket/setlist/m1").prefix;
        assert_eq!(
            object_path(&prefix, "stage-0.safetensors")
                .unwrap()
                .as_ref(),
            "setlist/m1/stage-0.safetensors"
        );
        for bad in ["", ".", "..", "../x", "a/b", "/etc/passwd", "a\\b", "a\nb"] {
            assert_eq!(object_path(&prefix, bad), None, "{bad:?}");
        }
        // Dot segments in the URI itself are resolved before the prefix is taken.
        assert_eq!(remote("http://h/a/../b").prefix.as_ref(), "b");
    }

    fn manifest() -> SliceManifest {
        let config = ModelConfig {
            catalogue_size: 100,
            embedding_dim: 8,
            hidden_dim: 8,
            lstm_layers: 2,
            max_history: 10,
            residual: false,
        };
        let plan = PartitionPlan::new(&config, 2, 1).unwrap();
        let slices = setlist_core::slice::parts(&plan)
            .map(|part| SliceEntry {
                part,
                file: format!("{part}.safetensors"),
                sha256: format!("sha-{part}"),
                bytes: 1000,
                tensors: Vec::new(),
            })
            .collect();
        SliceManifest {
            format: SLICES_FORMAT.into(),
            format_version: FORMAT_VERSION,
            model_version: "mtest".into(),
            config,
            plan,
            slices,
            catalogue_sha256: "sha-catalogue".into(),
        }
    }

    #[test]
    fn each_wanted_needs_its_own_files_bounded_by_the_manifest() {
        let m = manifest();
        assert_eq!(needed_files(&m, Wanted::Manifest, "u").unwrap(), []);
        assert_eq!(
            needed_files(&m, Wanted::Catalogue, "u").unwrap(),
            [NeededFile {
                name: CATALOGUE.into(),
                sha256: "sha-catalogue".into(),
                max_bytes: 100 * MAX_CATALOGUE_LINE_BYTES + SIZE_SLACK_BYTES,
            }]
        );
        assert_eq!(
            needed_files(&m, Wanted::Part(Part::Stage(1)), "u").unwrap(),
            [NeededFile {
                name: "stage-1.safetensors".into(),
                sha256: "sha-stage-1".into(),
                max_bytes: 1000 + SIZE_SLACK_BYTES,
            }]
        );
        let error = needed_files(&m, Wanted::Part(Part::OutputShard(3)), "u/manifest.json")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "u/manifest.json: the plan has no shard-3; it has 2 stages and 1 output shards"
        );
        let mut escaping = manifest();
        escaping.slices[0].file = "../../etc/passwd".into();
        let error = needed_files(&escaping, Wanted::Part(Part::Stage(0)), "u")
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a plain file name"), "{error}");
    }

    #[test]
    fn only_files_the_cache_lacks_or_holds_changed_are_downloaded() {
        let needed = needed_files(&manifest(), Wanted::Catalogue, "u").unwrap();
        let names = |cached: &[(&str, &str)]| -> Vec<String> {
            let cached = cached
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect();
            to_download(&needed, &cached)
                .iter()
                .map(|f| f.name.clone())
                .collect()
        };
        assert_eq!(names(&[]), [CATALOGUE]);
        assert_eq!(names(&[(CATALOGUE, "sha-catalogue")]), Vec::<String>::new());
        assert_eq!(names(&[(CATALOGUE, "sha-older")]), [CATALOGUE]);
    }
}
