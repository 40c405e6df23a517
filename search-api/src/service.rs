//! The search API's state: the served model's catalogue, its song index
//! and title lookup, the dispatcher client and the listener-event
//! publisher; loaded once at start-up.

use crate::config::Config;
use crate::events::Events;
use crate::http::{DispatcherView, LimitsView, PartView, StatusResponse};
use crate::index::SongIndex;
use crate::metrics::Metrics;
use crate::recommend::Dispatcher;
use crate::verify::TitleArtistLookup;
use anyhow::{Context, Result};
use serde::Deserialize;
use setlist_core::breaker::State;
use setlist_core::catalogue::Catalogue;
use setlist_core::dataset::{ImportOptions, import};
use setlist_core::kafka::KafkaSettings;
use setlist_core::progress::Silent;
use setlist_core::slice::SliceSet;
use setlist_core::topics::Topics;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long `/v1/status` waits for the dispatcher's own status.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

pub struct Search {
    pub catalogue: Catalogue,
    pub index: SongIndex,
    pub lookup: TitleArtistLookup,
    pub model_version: String,
    pub stages: usize,
    pub output_shards: usize,
    pub dispatcher: Dispatcher,
    pub dispatcher_timeout: Duration,
    dispatcher_status_url: String,
    status_client: reqwest::Client,
    pub events: Events,
    pub metrics: Metrics,
    pub max_concurrent_requests: usize,
    pub stopping: AtomicBool,
}

/// The part of the dispatcher's `/v1/status` the page shows.
#[derive(Deserialize)]
struct DispatcherStatus {
    ready: bool,
    parts: Vec<PartView>,
}

/// What a search API serves: one model's catalogue and plan.
pub struct Served {
    pub catalogue: Catalogue,
    pub model_version: String,
    pub catalogue_sha256: String,
    pub stages: usize,
    pub output_shards: usize,
}

impl Served {
    /// The catalogue and plan of `slices`, with the albums of
    /// `config.catalogue_file` added.
    pub fn from_slices(slices: SliceSet, config: &Config) -> Result<Served> {
        let started = Instant::now();
        let catalogue = slices.load_catalogue()?;
        tracing::info!(
            songs = catalogue.len(),
            seconds = started.elapsed().as_secs_f64(),
            "catalogue loaded"
        );
        let manifest = slices.manifest;
        let served = Served {
            catalogue,
            model_version: manifest.model_version.clone(),
            catalogue_sha256: manifest.catalogue_sha256.clone(),
            stages: manifest.plan.stages.len(),
            output_shards: manifest.plan.output_shards.len(),
        };
        if config.catalogue_file.is_empty() {
            return Ok(served);
        }
        let data = import(&config.catalogue_file, &ImportOptions::default(), &Silent)
            .context("cannot read the catalogue files (--catalogue-file)")?;
        let albums: HashMap<&str, &str> = data
            .tracks
            .iter()
            .filter_map(|t| Some((t.id.as_str(), t.album.as_deref()?)))
            .collect();
        let enriched = served.enrich(&albums)?;
        tracing::info!(
            files = config.catalogue_file.len(),
            "albums added from the catalogue files"
        );
        Ok(enriched)
    }

    /// The catalogue with an album for every song `albums` names (by id)
    /// that has none. The index is keyed by what was added too, so another
    /// enrichment gets its own.
    pub fn enrich(self, albums: &HashMap<&str, &str>) -> Result<Served> {
        let mut added = Sha256::new();
        added.update(self.catalogue_sha256.as_bytes());
        let mut songs = self.catalogue.into_songs();
        for song in &mut songs {
            if song.album.is_none()
                && let Some(album) = albums.get(song.id.as_str())
            {
                song.album = Some(album.to_string());
                added.update(song.id.as_bytes());
                added.update([0]);
                added.update(album.as_bytes());
                added.update([0]);
            }
        }
        Ok(Served {
            catalogue: Catalogue::new(songs)?,
            catalogue_sha256: hex::encode(added.finalize()),
            ..self
        })
    }
}

impl Search {
    /// Indexes (or reopens the index of) `served` and connects the clients.
    pub fn start(config: &Config, served: Served) -> Result<Search> {
        let metrics = Metrics::new();
        let started = Instant::now();
        let total = served.catalogue.len();
        let progress = |done: usize, total: usize| {
            tracing::info!(done, total, "indexing songs");
        };
        let index = match &config.index_dir {
            Some(root) => SongIndex::open_or_build(
                root,
                &served.model_version,
                &served.catalogue_sha256,
                &served.catalogue,
                &progress,
            )?,
            None => SongIndex::build(None, &served.catalogue, &progress)?,
        };
        tracing::info!(
            songs = total,
            seconds = started.elapsed().as_secs_f64(),
            "song index ready"
        );
        metrics.index_songs.set(index.songs() as i64);
        let lookup = TitleArtistLookup::new(&served.catalogue);
        let kafka = match &config.kafka {
            Some(servers) => Some(
                KafkaSettings::new(servers.clone())
                    .with_overrides(&config.kafka_set)
                    .map_err(anyhow::Error::msg)?,
            ),
            None => None,
        };
        let topics = Topics::new(&config.namespace, &config.cluster, &served.model_version)?;
        let events = Events::start(
            kafka.as_ref(),
            topics.interactions(),
            config.event_queue,
            metrics.clone(),
        )?;
        if kafka.is_none() {
            tracing::warn!("no --kafka: listener events are counted but not published");
        }
        let dispatcher_timeout = Duration::from_millis(config.dispatcher_timeout_ms);
        Ok(Search {
            dispatcher: Dispatcher::new(
                &config.dispatcher,
                config.deadline_ms,
                dispatcher_timeout,
                config.breaker_failures,
                Duration::from_millis(config.breaker_cooldown_ms),
                metrics.clone(),
            ),
            dispatcher_timeout,
            dispatcher_status_url: format!("{}/v1/status", config.dispatcher.trim_end_matches('/')),
            status_client: reqwest::Client::builder().timeout(STATUS_TIMEOUT).build()?,
            catalogue: served.catalogue,
            index,
            lookup,
            model_version: served.model_version,
            stages: served.stages,
            output_shards: served.output_shards,
            events,
            metrics,
            max_concurrent_requests: config.max_concurrent_requests,
            stopping: AtomicBool::new(false),
        })
    }

    /// Ready once the index is loaded (it is, once started) and until
    /// stopping. The dispatcher's health is not required: without it
    /// listeners still search, upload, and get flagged fallbacks.
    pub fn readiness(&self) -> Result<String, String> {
        if self.stopping.load(Ordering::Relaxed) {
            Err("stopping".into())
        } else {
            Ok(format!(
                "ready: {} songs indexed for model {}",
                self.index.songs(),
                self.model_version
            ))
        }
    }

    pub async fn status(&self) -> StatusResponse {
        let dispatcher = match self
            .status_client
            .get(&self.dispatcher_status_url)
            .send()
            .await
        {
            Ok(response) => response.json::<DispatcherStatus>().await.ok(),
            Err(_) => None,
        };
        StatusResponse {
            model_version: self.model_version.clone(),
            songs: self.catalogue.len(),
            stages: self.stages,
            output_shards: self.output_shards,
            dispatcher: DispatcherView {
                reachable: dispatcher.is_some(),
                ready: dispatcher.as_ref().is_some_and(|d| d.ready),
                breaker: match self.dispatcher.breaker_state() {
                    State::Closed { .. } => "closed",
                    State::Open { .. } => "open",
                    State::HalfOpen { .. } => "half-open",
                }
                .to_string(),
                parts: dispatcher.map(|d| d.parts).unwrap_or_default(),
            },
            limits: LimitsView::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use setlist_core::catalogue::Song;

    #[test]
    fn catalogue_files_add_albums_where_songs_have_none_and_key_a_new_index() {
        let song = |id: &str, album: Option<&str>| Song {
            id: id.into(),
            title: "t".into(),
            artist: "a".into(),
            album: album.map(Into::into),
            playlists: 1,
        };
        let served = Served {
            catalogue: Catalogue::new(vec![
                song("s1", None),
                song("s2", Some("Kept")),
                song("s3", None),
            ])
            .unwrap(),
            model_version: "m".into(),
            catalogue_sha256: "abc".into(),
            stages: 1,
            output_shards: 1,
        };
        let albums = HashMap::from([("s1", "Added"), ("s2", "Not used"), ("s9", "Unknown")]);
        let enriched = served.enrich(&albums).unwrap();
        let albums: Vec<Option<&str>> = enriched
            .catalogue
            .songs()
            .iter()
            .map(|s| s.album.as_deref())
            .collect();
        assert_eq!(albums, [Some("Added"), Some("Kept"), None]);
        assert_ne!(
            enriched.catalogue_sha256, "abc",
            "the enriched catalogue gets its own index"
        );
    }
}
