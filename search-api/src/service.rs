//! The search API's state: the served model's catalogue, its song index
//! and title lookup, the dispatcher client and the listener-event
//! publisher; loaded once at start-up.

use crate::config::Config;
use crate::events::Events;
use crate::http::{DispatcherView, PartView, StatusResponse};
use crate::index::SongIndex;
use crate::metrics::Metrics;
use crate::recommend::Dispatcher;
use crate::verify::TitleArtistLookup;
use anyhow::{Context, Result};
use serde::Deserialize;
use setlist_core::breaker::State;
use setlist_core::catalogue::Catalogue;
use setlist_core::kafka::KafkaSettings;
use setlist_core::slice::SliceSet;
use setlist_core::topics::Topics;
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
    /// The catalogue and plan of the slices in `config.slices`.
    pub fn from_slices(config: &Config) -> Result<Served> {
        let slices = SliceSet::open(&config.slices, config.model_version.as_deref())
            .with_context(|| format!("cannot open the slices in {}", config.slices.display()))?;
        let started = Instant::now();
        let catalogue = slices.load_catalogue()?;
        tracing::info!(
            songs = catalogue.len(),
            seconds = started.elapsed().as_secs_f64(),
            "catalogue loaded"
        );
        let manifest = slices.manifest;
        Ok(Served {
            catalogue,
            model_version: manifest.model_version.clone(),
            catalogue_sha256: manifest.catalogue_sha256.clone(),
            stages: manifest.plan.stages.len(),
            output_shards: manifest.plan.output_shards.len(),
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
        }
    }
}
