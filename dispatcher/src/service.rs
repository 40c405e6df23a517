//! The dispatcher's core: publish requests into the pipeline (micro-batched
//! into shared frames), collect every output shard's top-k from this
//! replica's results partition, and always answer by the deadline, with the
//! model's answer or a flagged popularity fallback.

use crate::api::{
    self, DISPATCHER_HOP, RecommendationRequest, RecommendationResponse, StageTiming, Timings,
};
use crate::breaker::{Breaker, Decision, State as BreakerState};
use crate::cache::Cache;
use crate::config::Config;
use crate::metrics::Metrics;
use anyhow::{Context, Result};
use rand::RngExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use setlist_core::catalogue::Catalogue;
use setlist_core::kafka::{KafkaSettings, Role};
use setlist_core::query::{self, merge_top_k};
use setlist_core::slice::SliceSet;
use setlist_core::telemetry::now_unix_us;
use setlist_core::topics::Topics;
use setlist_core::wire::{Body, Frame, Hop, RowMeta, Scored, track_ids};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// What the results thread hands a waiting request.
type Outcome = Result<(Vec<Scored>, Vec<Vec<Hop>>), &'static str>;

/// A request waiting for its output shards.
struct Pending {
    k: usize,
    /// Per shard: its top-k and the hops its frame took.
    shards: Vec<Option<(Vec<Scored>, Vec<Hop>)>>,
    reply: Option<oneshot::Sender<Outcome>>,
}

/// A request handed to the batcher.
struct Submission {
    row: RowMeta,
    history: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    history: Vec<u32>,
    exclude: Vec<u32>,
    k: usize,
}

#[derive(Default)]
pub struct Health {
    pub results_assigned: AtomicBool,
    pub broker_reachable: AtomicBool,
    pub stopping: AtomicBool,
}

/// When each part of the pipeline was last seen answering, for /v1/status.
#[derive(Default)]
struct Observed {
    parts: HashMap<String, (Instant, f64)>,
}

pub struct Dispatcher {
    pub config: Config,
    pub catalogue: Catalogue,
    pub model_version: String,
    pub stages: u16,
    pub shards: usize,
    max_history: usize,
    topics: Topics,
    producer: FutureProducer,
    pending: Mutex<HashMap<u128, Pending>>,
    submissions: mpsc::Sender<Submission>,
    breaker: Mutex<Breaker>,
    cache: Mutex<Cache<CacheKey, Vec<Scored>>>,
    observed: Mutex<Observed>,
    pub metrics: Metrics,
    pub health: Health,
}

/// Most requests waiting to be published; beyond it a request is answered
/// from the fallback at once instead of queueing past its deadline.
const SUBMISSION_QUEUE: usize = 65_536;

impl Dispatcher {
    /// Loads the catalogue, connects to Kafka and starts the batcher and the
    /// results consumer.
    pub fn start(config: Config) -> Result<Arc<Dispatcher>> {
        let set = SliceSet::open(&config.slices, config.model_version.as_deref())?;
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
        let (submissions, queue) = mpsc::channel(SUBMISSION_QUEUE);
        let dispatcher = Arc::new(Dispatcher {
            catalogue,
            model_version: manifest.model_version.clone(),
            stages: manifest.plan.stages.len() as u16,
            shards: manifest.plan.output_shards.len(),
            max_history: manifest.config.max_history as usize,
            topics,
            producer,
            pending: Mutex::new(HashMap::new()),
            submissions,
            breaker: Mutex::new(Breaker::new(
                config.breaker_failures,
                Duration::from_millis(config.breaker_cooldown_ms),
            )),
            cache: Mutex::new(Cache::new(
                config.cache_entries,
                Duration::from_secs(config.cache_ttl_seconds),
            )),
            observed: Mutex::new(Observed::default()),
            metrics: Metrics::new(),
            health: Health::default(),
            config,
        });
        let consumer: BaseConsumer = setlist_service::kafka::client_config(
            &settings,
            &Role::AssignedConsumer {
                client: format!(
                    "{}.dispatcher-{}",
                    dispatcher.topics.results(),
                    dispatcher.config.reply_partition
                ),
            },
        )
        .create()
        .context("cannot create the Kafka results consumer")?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(
            &dispatcher.topics.results(),
            dispatcher.config.reply_partition as i32,
            Offset::End,
        )?;
        consumer
            .assign(&assignment)
            .context("cannot read this replica's results partition")?;
        let results = dispatcher.clone();
        std::thread::Builder::new()
            .name("results".into())
            .spawn(move || results.consume_results(consumer))?;
        tokio::spawn(dispatcher.clone().batch_and_publish(queue));
        Ok(dispatcher)
    }

    /// Answers one validated request within `deadline_ms`.
    pub async fn recommend(
        &self,
        request: &RecommendationRequest,
        deadline_ms: u64,
    ) -> RecommendationResponse {
        let started = Instant::now();
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
            Err("no_known_tracks")
        } else {
            let key = CacheKey {
                history: history.clone(),
                exclude: exclude.clone(),
                k: request.k,
            };
            let cached = self
                .cache
                .lock()
                .expect("cache lock")
                .get(&key, Instant::now());
            match cached {
                Some(scored) => {
                    response.cached = true;
                    Ok(scored)
                }
                None => self
                    .ask_pipeline(
                        history,
                        exclude.clone(),
                        request.k,
                        deadline,
                        &mut response.timings,
                    )
                    .await
                    .inspect(|scored| {
                        self.cache.lock().expect("cache lock").insert(
                            key,
                            scored.clone(),
                            Instant::now(),
                        );
                    }),
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
                self.metrics.fallbacks.with_label_values(&[reason]).inc();
                response.fallback = true;
                response.fallback_reason = Some(reason.to_string());
                self.catalogue.popular(request.k, &exclude)
            }
        };
        response.recommendations = query::recommendations(&self.catalogue, &scored);
        response.timings.total_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.metrics
            .request_seconds
            .observe(started.elapsed().as_secs_f64());
        response
    }

    /// Publishes the request, retries once when it is not answered within
    /// `retry_after` of the deadline, and gives up just before the deadline.
    async fn ask_pipeline(
        &self,
        history: Vec<u32>,
        exclude: Vec<u32>,
        k: usize,
        deadline: Instant,
        timings: &mut Timings,
    ) -> Result<Vec<Scored>, &'static str> {
        let decision = self
            .breaker
            .lock()
            .expect("breaker lock")
            .allow(Instant::now());
        self.update_breaker_gauge();
        if decision == Decision::Reject {
            return Err("circuit_open");
        }
        let request_id: u128 = rand::rng().random();
        let (reply, mut answer) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(
            request_id,
            Pending {
                k,
                shards: vec![None; self.shards],
                reply: Some(reply),
            },
        );
        let row = RowMeta {
            request_id,
            deadline_unix_ms: (now_unix_us() / 1000)
                + deadline
                    .saturating_duration_since(Instant::now())
                    .as_millis() as u64,
            k: k as u16,
            exclude,
        };
        let now = Instant::now();
        let first_try = now
            + deadline
                .saturating_duration_since(now)
                .mul_f64(self.config.retry_after);
        // The fallback needs a moment to build; stop waiting just before the deadline.
        let give_up = deadline
            .checked_sub(Duration::from_millis(2))
            .unwrap_or(deadline);
        let mut outcome = None;
        for (attempt, until) in [(0, first_try), (1, give_up)] {
            if attempt == 1 {
                self.metrics.retries.inc();
            }
            if self
                .submissions
                .try_send(Submission {
                    row: row.clone(),
                    history: history.clone(),
                })
                .is_err()
            {
                outcome = Some(Err("overloaded"));
                break;
            }
            match tokio::time::timeout_at(until.into(), &mut answer).await {
                Ok(Ok(result)) => {
                    outcome = Some(result);
                    break;
                }
                Ok(Err(_)) => {
                    outcome = Some(Err("deadline"));
                    break;
                }
                Err(_) => continue,
            }
        }
        self.pending
            .lock()
            .expect("pending lock")
            .remove(&request_id);
        let outcome = outcome.unwrap_or(Err("deadline"));
        self.breaker
            .lock()
            .expect("breaker lock")
            .record(outcome.is_ok(), Instant::now());
        self.update_breaker_gauge();
        let (scored, hops) = outcome?;
        timings.stages = self.record_hops(&hops);
        Ok(scored)
    }

    fn update_breaker_gauge(&self) {
        let state = match self.breaker.lock().expect("breaker lock").state() {
            BreakerState::Closed { .. } => 0,
            BreakerState::Open { .. } => 1,
            BreakerState::HalfOpen => 2,
        };
        self.metrics.breaker_state.set(state);
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
        let mut observed = self.observed.lock().expect("status lock");
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

    /// Gathers concurrent submissions into shared stage-0 frames: whatever
    /// is queued goes out together, and with `max_wait_us` a frame also
    /// waits that long for company.
    async fn batch_and_publish(self: Arc<Self>, mut queue: mpsc::Receiver<Submission>) {
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            let until =
                tokio::time::Instant::now() + Duration::from_micros(self.config.max_wait_us);
            while batch.len() < self.config.max_batch_rows {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) if self.config.max_wait_us == 0 => break,
                    Err(_) => match tokio::time::timeout_at(until, queue.recv()).await {
                        Ok(Some(next)) => batch.push(next),
                        _ => break,
                    },
                }
            }
            self.publish(batch).await;
        }
    }

    async fn publish(&self, batch: Vec<Submission>) {
        self.metrics.frame_rows.observe(batch.len() as f64);
        let histories: Vec<&[u32]> = batch.iter().map(|s| s.history.as_slice()).collect();
        let trace = format!(
            "00-{:032x}-{:016x}-01",
            batch[0].row.request_id, batch[0].row.request_id as u64
        );
        let frame = Frame {
            model_version: self.model_version.clone(),
            stage: 0,
            reply_to: self.config.reply_partition,
            trace_context: trace,
            hops: vec![Hop {
                stage: DISPATCHER_HOP,
                queue_us: 0,
                compute_us: 0,
                sent_unix_us: now_unix_us(),
            }],
            rows: batch.iter().map(|s| s.row.clone()).collect(),
            body: Body::Activations(track_ids(&histories, self.max_history)),
        };
        let topic = self.topics.stage(0);
        let pieces = match frame.split_to_fit(self.config.max_message_bytes) {
            Ok(pieces) => pieces,
            Err(error) => {
                tracing::error!(%error, "cannot fit a request into a Kafka message");
                return self.fail(batch.iter().map(|s| s.row.request_id), "publish_failed");
            }
        };
        for piece in pieces {
            let ids: Vec<u128> = piece.rows.iter().map(|r| r.request_id).collect();
            let sent = match piece.encode() {
                Ok(bytes) => self
                    .producer
                    .send(
                        FutureRecord::<(), [u8]>::to(&topic).payload(bytes.as_slice()),
                        Timeout::After(Duration::from_secs(2)),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(error, _)| error.to_string()),
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = sent {
                tracing::warn!(%error, "publishing to stage 0 failed");
                self.fail(ids.into_iter(), "publish_failed");
            }
        }
    }

    fn fail(&self, ids: impl Iterator<Item = u128>, reason: &'static str) {
        let mut pending = self.pending.lock().expect("pending lock");
        for id in ids {
            if let Some(reply) = pending.get_mut(&id).and_then(|p| p.reply.take()) {
                let _ = reply.send(Err(reason));
            }
        }
    }

    /// The results thread: reads this replica's partition and completes a
    /// request once every shard has answered. Duplicates (a retried request,
    /// a redelivered frame) and late answers are counted and ignored.
    fn consume_results(self: Arc<Self>, consumer: BaseConsumer) {
        let mut last_check = Instant::now() - Duration::from_secs(60);
        while !self.health.stopping.load(Ordering::Relaxed) {
            let assigned = consumer
                .assignment()
                .map(|a| a.count() > 0)
                .unwrap_or(false);
            self.health
                .results_assigned
                .store(assigned, Ordering::Relaxed);
            let message = match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::warn!(%error, "results consumer error");
                    continue;
                }
                None => {
                    if last_check.elapsed() > Duration::from_secs(2) {
                        let reachable = consumer
                            .fetch_metadata(Some(&self.topics.results()), Duration::from_secs(1))
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
        let shard = frame.stage as usize;
        let Body::TopK(lists) = frame.body else {
            tracing::warn!("ignoring an activations frame on the results topic");
            return;
        };
        if frame.model_version != self.model_version || shard >= self.shards {
            tracing::warn!(model_version = %frame.model_version, shard, "ignoring a result of another model or plan");
            return;
        }
        let mut pending = self.pending.lock().expect("pending lock");
        for (row, list) in frame.rows.iter().zip(lists) {
            let Some(request) = pending.get_mut(&row.request_id) else {
                self.metrics.late_results.inc();
                continue;
            };
            if request.shards[shard].is_some() || request.reply.is_none() {
                self.metrics.duplicate_results.inc();
                continue;
            }
            request.shards[shard] = Some((list, frame.hops.clone()));
            if request.shards.iter().all(Option::is_some) {
                let (lists, hops): (Vec<Vec<Scored>>, Vec<Vec<Hop>>) = request
                    .shards
                    .iter_mut()
                    .map(|s| s.take().expect("every shard answered"))
                    .unzip();
                let merged = merge_top_k(&lists, request.k);
                if let Some(reply) = request.reply.take() {
                    let _ = reply.send(Ok((merged, hops)));
                }
            }
        }
    }

    /// Ready: the catalogue is loaded (it is, once started), this replica's
    /// results partition is assigned, and the brokers answer.
    pub fn readiness(&self) -> Result<String, String> {
        if self.health.stopping.load(Ordering::Relaxed) {
            return Err("not ready: shutting down".into());
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
        let observed = self.observed.lock().expect("status lock");
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
            breaker: match self.breaker.lock().expect("breaker lock").state() {
                BreakerState::Closed { .. } => "closed",
                BreakerState::Open { .. } => "open",
                BreakerState::HalfOpen => "half-open",
            },
            parts,
            answers: AnswerCounts {
                model: count("model"),
                cached: count("cached"),
                fallback: count("fallback"),
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
