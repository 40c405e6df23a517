//! The dispatcher's shell: loads the catalogue, connects to Kafka, and
//! wires the pure parts together. Requests go through the answer cache,
//! then the [`Pipeline`] (breaker, retries, the request table), which
//! publishes through the byte-bounded submission queue to the
//! [`Publisher`]; the results thread reads this replica's partition and
//! hands each shard's top-k to the pipeline. Both background loops are
//! supervised, and readiness says when one has stopped turning.

use crate::api::{self, FallbackReason};
use crate::cache::{AnswerCache, AnswerKey};
use crate::config::Config;
use crate::jobs::Jobs;
use crate::lock;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineSettings, Query};
use crate::publish::{Deliver, FrameSettings, Publisher};
use crate::queue::{SubmissionQueue, submission_queue};
use crate::supervise::{self, Heartbeat};
use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use setlist_core::api::{RecommendationRequest, RecommendationResponse, StageTiming, Timings};
use setlist_core::breaker::State as BreakerState;
use setlist_core::catalogue::Catalogue;
use setlist_core::kafka::{KafkaSettings, Role};
use setlist_core::query;
use setlist_core::slice::SliceSet;
use setlist_core::topics::Topics;
use setlist_core::trace::{TraceParent, request_ids};
use setlist_core::wire::{Body, Frame, Hop};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Health {
    pub results_assigned: AtomicBool,
    pub broker_reachable: AtomicBool,
    pub stopping: AtomicBool,
}

/// A background loop silent for longer than this is reported as stopped:
/// each beats at least once a second while it runs.
const SILENCE_BOUND: Duration = Duration::from_secs(5);
/// Pause before restarting a results consumer that panicked.
const RESTART_BACKOFF: Duration = Duration::from_millis(200);
/// How long a frame may wait for room in librdkafka's local queue.
const QUEUE_WAIT: Duration = Duration::from_secs(1);

/// When each part of the pipeline was last seen answering, for /v1/status.
#[derive(Default)]
struct Observed {
    parts: HashMap<String, (Instant, f64)>,
}

/// The broker's stage-0 topic.
struct StageZero {
    producer: FutureProducer,
    topic: String,
}

impl Deliver for StageZero {
    async fn deliver(&self, frame: Vec<u8>) -> Result<(), String> {
        self.producer
            .send(
                FutureRecord::<(), [u8]>::to(&self.topic).payload(frame.as_slice()),
                Timeout::After(QUEUE_WAIT),
            )
            .await
            .map(|_| ())
            .map_err(|(error, _)| error.to_string())
    }
}

pub struct Dispatcher {
    pub config: Config,
    pub catalogue: Catalogue,
    pub model_version: String,
    pub stages: u16,
    pub shards: usize,
    max_history: usize,
    topics: Topics,
    pipeline: Pipeline,
    queue: SubmissionQueue,
    cache: AnswerCache,
    pub jobs: Arc<Jobs>,
    observed: Mutex<Observed>,
    results_heartbeat: Heartbeat,
    publisher_heartbeat: Heartbeat,
    pub metrics: Metrics,
    pub health: Health,
}

impl Dispatcher {
    /// Loads the catalogue of `set`, connects to Kafka and starts the
    /// publisher and the results consumer.
    pub fn start(config: Config, set: SliceSet) -> Result<Arc<Dispatcher>> {
        let catalogue = set.load_catalogue()?;
        let manifest = &set.manifest;
        let topics = Topics::new(&config.namespace, &config.cluster, &manifest.model_version)?;
        let settings = KafkaSettings::new(&config.kafka)
            .with_overrides(&config.kafka_set)
            .map_err(anyhow::Error::msg)?;
        let producer: FutureProducer =
            setlist_service::kafka::client_config(&settings, &Role::Producer)
                .set(
                    "message.max.bytes",
                    (config.max_message_bytes + 64 * 1024).to_string(),
                )
                .create()
                .context("cannot create the Kafka producer")?;
        let metrics = Metrics::new();
        metrics
            .model_info
            .with_label_values(&[manifest.model_version.as_str()])
            .set(1);
        metrics
            .deadline_seconds
            .set(config.default_deadline_ms as f64 / 1000.0);
        let shards = manifest.plan.output_shards.len();
        let max_history = manifest.config.max_history as usize;
        let (queue, queued) = submission_queue(config.submission_queue_bytes);
        let publisher = Publisher {
            deliver: StageZero {
                producer,
                topic: topics.stage(0),
            },
            frames: FrameSettings {
                model_version: manifest.model_version.clone(),
                reply_to: config.reply_partition,
                max_history,
                max_message_bytes: config.max_message_bytes,
            },
            max_batch_rows: config.max_batch_rows,
            max_wait: Duration::from_micros(config.max_wait_us),
            max_in_flight: config.max_in_flight_publishes,
            metrics: metrics.clone(),
        };
        let now = Instant::now();
        let dispatcher = Arc::new(Dispatcher {
            catalogue,
            model_version: manifest.model_version.clone(),
            stages: manifest.plan.stages.len() as u16,
            shards,
            max_history,
            topics,
            pipeline: Pipeline::new(
                &PipelineSettings {
                    shards,
                    pipeline_timeout: Duration::from_millis(config.pipeline_timeout_ms),
                    breaker_failures: config.breaker_failures,
                    breaker_cooldown: Duration::from_millis(config.breaker_cooldown_ms),
                    breaker_probe_timeout: Duration::from_millis(config.breaker_probe_timeout_ms),
                    retry_budget_ratio: config.retry_budget_ratio,
                    retry_budget_min_per_second: config.retry_budget_min_per_second,
                },
                metrics.clone(),
            ),
            queue,
            cache: AnswerCache::new(
                config.cache_bytes,
                Duration::from_secs(config.cache_ttl_seconds),
                &metrics.evictions,
            ),
            jobs: Jobs::new(
                config.running_jobs_bytes,
                config.finished_jobs_bytes,
                Duration::from_secs(config.job_ttl_seconds),
                &metrics.evictions,
            ),
            observed: Mutex::new(Observed::default()),
            results_heartbeat: Heartbeat::new(now),
            publisher_heartbeat: Heartbeat::new(now),
            metrics,
            health: Health::default(),
            config,
        });
        let consumer = dispatcher.results_consumer(&settings)?;
        let results = dispatcher.clone();
        std::thread::Builder::new()
            .name("results".into())
            .spawn(move || {
                supervise::keep_running(
                    "results_consumer",
                    &results.metrics.task_restarts,
                    RESTART_BACKOFF,
                    || results.consume_results(&consumer),
                )
            })?;
        let publishing = dispatcher.clone();
        tokio::spawn(async move {
            let failed = |ids: &[u128]| publishing.pipeline.fail(ids);
            publisher
                .run_supervised(queued, &publishing.publisher_heartbeat, &failed)
                .await;
        });
        Ok(dispatcher)
    }

    fn results_consumer(&self, settings: &KafkaSettings) -> Result<BaseConsumer> {
        setlist_service::kafka::client_config(
            settings,
            &Role::AssignedConsumer {
                client: format!(
                    "{}.dispatcher-{}",
                    self.topics.results(),
                    self.config.reply_partition
                ),
            },
        )
        .create()
        .context("cannot create the Kafka results consumer")
    }

    /// Starts reading this replica's results partition at its current end,
    /// asked of the broker first. Assigning `Offset::End` instead would let
    /// librdkafka look the end up later, in the background: an answer
    /// produced before that look-up returns would be skipped, while
    /// `/readyz` already said ready.
    fn start_reading_results(&self, consumer: &BaseConsumer) -> Result<i64> {
        let topic = self.topics.results();
        let partition = self.config.reply_partition as i32;
        let (_, end) = consumer
            .fetch_watermarks(&topic, partition, Duration::from_secs(1))
            .context("cannot look up the end of this replica's results partition")?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&topic, partition, Offset::Offset(end))?;
        consumer
            .assign(&assignment)
            .context("cannot read this replica's results partition")?;
        Ok(end)
    }

    /// Answers one validated request within `deadline_ms`; its frames go
    /// by `trace`'s id.
    pub async fn recommend(
        &self,
        request: &RecommendationRequest,
        deadline_ms: u64,
        trace: TraceParent,
    ) -> RecommendationResponse {
        let started = tokio::time::Instant::now();
        let deadline = started + Duration::from_millis(deadline_ms);
        let tracks = query::resolve(&self.catalogue, &request.tracks);
        let mut exclude = tracks.known.clone();
        exclude.extend(query::resolve(&self.catalogue, &request.exclude).known);
        exclude.sort_unstable();
        exclude.dedup();
        let mut response = RecommendationResponse {
            recommendations: Vec::new(),
            model_version: self.model_version.clone(),
            fallback: false,
            fallback_reason: None,
            unknown_tracks: tracks.unknown,
            cached: false,
            timings: Timings::default(),
        };
        let history = tracks.known[tracks.known.len().saturating_sub(self.max_history)..].to_vec();
        let outcome = if history.is_empty() {
            Err(FallbackReason::NoKnownTracks)
        } else {
            let key = AnswerKey {
                history,
                exclude: exclude.clone(),
                k: request.k,
            };
            match self.cache.get(&key) {
                Some(scored) => {
                    response.cached = true;
                    Ok(scored.to_vec())
                }
                // Failing fast: a request sent now would only wait out its
                // deadline in the producer's queue.
                None if !self.health.broker_reachable.load(Ordering::Relaxed) => {
                    Err(FallbackReason::BrokerUnreachable)
                }
                None => {
                    let query = Query {
                        history: key.history.clone(),
                        exclude: key.exclude.clone(),
                        k: key.k,
                    };
                    self.pipeline
                        .ask(&query, deadline, trace.request_id(), |s| {
                            self.queue.try_submit(s)
                        })
                        .await
                        .map(|answer| {
                            response.timings.stages = self.record_hops(&answer.hops);
                            self.cache.insert(key, &answer);
                            answer.scored
                        })
                }
            }
        };
        let scored = match outcome {
            Ok(scored) => {
                self.metrics
                    .answers
                    .with_label_values(&[if response.cached { "cached" } else { "model" }])
                    .inc();
                scored
            }
            Err(reason) => {
                self.metrics.answers.with_label_values(&["fallback"]).inc();
                self.metrics
                    .fallbacks
                    .with_label_values(&[reason.as_str()])
                    .inc();
                response.fallback = true;
                response.fallback_reason = Some(reason.as_str().to_string());
                self.catalogue.popular(request.k, &exclude)
            }
        };
        response.recommendations = query::recommendations(&self.catalogue, &scored);
        response.timings.total_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::debug!(
            cached = response.cached,
            fallback_reason = response.fallback_reason.as_deref().unwrap_or("none"),
            total_ms = response.timings.total_ms,
            "answered"
        );
        self.metrics
            .request_seconds
            .observe(started.elapsed().as_secs_f64());
        response
    }

    /// Per-hop timings of an answer: the stages once (from the first
    /// shard's path), then every shard's own hop. Also feeds the hop
    /// histograms and /v1/status.
    fn record_hops(&self, hops_per_shard: &[Vec<Hop>]) -> Vec<StageTiming> {
        let mut timings: Vec<StageTiming> = Vec::new();
        for (i, hops) in hops_per_shard.iter().enumerate() {
            let path = api::timings_from_hops(hops, self.stages);
            let keep = if i == 0 { path.len() } else { 1 };
            timings.extend(path.into_iter().rev().take(keep).rev());
        }
        let mut observed = lock(&self.observed);
        for t in &timings {
            self.metrics
                .hop_queue
                .with_label_values(&[&t.part])
                .observe(t.queue_ms / 1e3);
            self.metrics
                .hop_compute
                .with_label_values(&[&t.part])
                .observe(t.compute_ms / 1e3);
            self.metrics
                .hop_transport
                .with_label_values(&[&t.part])
                .observe(t.transport_ms / 1e3);
            observed
                .parts
                .insert(t.part.clone(), (Instant::now(), t.compute_ms));
        }
        timings
    }

    /// The results thread: reads this replica's partition and hands each
    /// shard's results to the pipeline, until the process stops.
    fn consume_results(&self, consumer: &BaseConsumer) {
        let mut last_check = Instant::now() - Duration::from_secs(60);
        let mut failed_starts = 0u32;
        while !self.health.stopping.load(Ordering::Relaxed) {
            self.results_heartbeat.beat(Instant::now());
            if !self.health.results_assigned.load(Ordering::Relaxed) {
                match self.start_reading_results(consumer) {
                    Ok(offset) => {
                        tracing::info!(offset, "reading the results partition");
                        self.health.results_assigned.store(true, Ordering::Relaxed);
                        self.health.broker_reachable.store(true, Ordering::Relaxed);
                    }
                    Err(error) => {
                        if failed_starts.is_multiple_of(20) {
                            tracing::warn!("{error:#}; retrying every 250 ms");
                        }
                        failed_starts += 1;
                        self.health.broker_reachable.store(false, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(250));
                        continue;
                    }
                }
            }
            let message = match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::warn!(%error, "results consumer error");
                    continue;
                }
                None => {
                    // While the brokers are away, look often: requests fail
                    // fast until they are back.
                    let reachable_before = self.health.broker_reachable.load(Ordering::Relaxed);
                    let (every, wait) = if reachable_before {
                        (Duration::from_secs(2), Duration::from_secs(1))
                    } else {
                        (Duration::from_millis(250), Duration::from_millis(250))
                    };
                    if last_check.elapsed() > every {
                        let reachable = consumer
                            .fetch_metadata(Some(&self.topics.results()), wait)
                            .is_ok();
                        self.health
                            .broker_reachable
                            .store(reachable, Ordering::Relaxed);
                        last_check = Instant::now();
                    }
                    continue;
                }
            };
            self.health.broker_reachable.store(true, Ordering::Relaxed);
            match Frame::decode(message.payload().unwrap_or_default()) {
                Ok(frame) => self.complete(frame),
                Err(error) => {
                    tracing::warn!(%error, offset = message.offset(), "ignoring an undecodable result")
                }
            }
        }
    }

    fn complete(&self, frame: Frame) {
        let Body::TopK(lists) = frame.body else {
            tracing::warn!("ignoring an activations frame on the results topic");
            return;
        };
        if frame.model_version != self.model_version {
            tracing::warn!(model_version = %frame.model_version, "ignoring a result of another model");
            return;
        }
        tracing::debug!(
            shard = frame.stage,
            request_ids = %request_ids(frame.rows.iter().map(|r| r.request_id)),
            "a shard's result"
        );
        self.pipeline
            .offer(frame.stage as usize, &frame.rows, lists, &frame.hops);
    }

    /// Ready: the catalogue is loaded (it is, once started), this replica's
    /// results partition is assigned, the brokers answer, and both
    /// background loops are turning.
    pub fn readiness(&self) -> Result<String, String> {
        if self.health.stopping.load(Ordering::Relaxed) {
            return Err("not ready: shutting down".into());
        }
        let now = Instant::now();
        for (what, heartbeat) in [
            ("results consumer", &self.results_heartbeat),
            ("publisher", &self.publisher_heartbeat),
        ] {
            let silent = heartbeat.silent_for(now);
            if silent > SILENCE_BOUND {
                return Err(format!(
                    "not ready: the {what} has not run for {} s; it is restarted when it fails, see the log",
                    silent.as_secs()
                ));
            }
        }
        if !self.health.broker_reachable.load(Ordering::Relaxed) {
            return Err("not ready: the Kafka brokers are not reachable".into());
        }
        if !self.health.results_assigned.load(Ordering::Relaxed) {
            return Err("not ready: the results partition is not assigned yet".into());
        }
        Ok(format!(
            "ready: model {}, {} songs",
            self.model_version,
            self.catalogue.len()
        ))
    }

    pub fn status(&self) -> Status {
        let observed = lock(&self.observed);
        let parts = (0..self.stages)
            .map(|k| format!("stage-{k}"))
            .chain((0..self.shards).map(|s| format!("shard-{s}")))
            .map(|part| {
                let seen = observed.parts.get(&part);
                PartStatus {
                    last_answer_ms_ago: seen.map(|(at, _)| at.elapsed().as_millis() as u64),
                    last_compute_ms: seen.map(|(_, ms)| *ms),
                    part,
                }
            })
            .collect();
        let count = |outcome: &str| self.metrics.answers.with_label_values(&[outcome]).get();
        Status {
            model_version: self.model_version.clone(),
            stages: self.stages as usize,
            output_shards: self.shards,
            reply_partition: self.config.reply_partition,
            songs: self.catalogue.len(),
            breaker: match self.pipeline.breaker_state() {
                BreakerState::Closed { .. } => "closed",
                BreakerState::Open { .. } => "open",
                BreakerState::HalfOpen { .. } => "half-open",
            },
            parts,
            answers: AnswerCounts {
                model: count("model"),
                cached: count("cached"),
                fallback: count("fallback"),
            },
            in_flight: self.pipeline.in_flight(),
            memory: MemoryStatus {
                submission_queue_bytes: self.queue.bytes(),
                answer_cache_bytes: self.cache.bytes(),
                running_jobs_bytes: self.jobs.running_bytes(),
                finished_jobs_bytes: self.jobs.finished_bytes(),
            },
            ready: self.readiness().is_ok(),
        }
    }
}

/// `GET /v1/status`: the pipeline as this replica sees it from its traffic.
#[derive(Debug, Serialize)]
pub struct Status {
    pub model_version: String,
    pub stages: usize,
    pub output_shards: usize,
    pub reply_partition: u32,
    pub songs: usize,
    pub breaker: &'static str,
    pub parts: Vec<PartStatus>,
    pub answers: AnswerCounts,
    /// Requests waiting for the pipeline now.
    pub in_flight: usize,
    pub memory: MemoryStatus,
    pub ready: bool,
}

#[derive(Debug, Serialize)]
pub struct PartStatus {
    pub part: String,
    /// Since this part last answered a request of this replica (none yet: null).
    pub last_answer_ms_ago: Option<u64>,
    pub last_compute_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct AnswerCounts {
    pub model: u64,
    pub cached: u64,
    pub fallback: u64,
}

/// What the bounded stores hold now, in bytes.
#[derive(Debug, Serialize)]
pub struct MemoryStatus {
    pub submission_queue_bytes: usize,
    pub answer_cache_bytes: u64,
    pub running_jobs_bytes: usize,
    pub finished_jobs_bytes: u64,
}
