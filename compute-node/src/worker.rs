//! The node's loop: consume a micro-batch of frames, check them, run the
//! slice once for all of them, produce one frame per input frame, and only
//! then store the input offsets (at-least-once).

use crate::config::Config;
use crate::metrics::Metrics;
use anyhow::{Context, Result};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use setlist_core::kafka::{KafkaSettings, Role};
use setlist_core::telemetry::now_unix_us;
use setlist_core::topics::{Consumer as TopicConsumer, Topics};
use setlist_core::wire::{Activations, Body, Frame, Hop, Values, WireError};
use setlist_core::wire::{concat, split_rows, take_rows};
use setlist_model::ops::RowQuery;
use setlist_model::pipeline::{from_activations, to_activations};
use setlist_model::slice::{ShardSlice, StageSlice};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The loaded slice.
pub enum Slice {
    Stage(StageSlice),
    Shard(ShardSlice),
}

/// What the HTTP endpoints read about the worker.
#[derive(Default)]
pub struct Health {
    pub assigned_partitions: AtomicUsize,
    pub broker_reachable: AtomicBool,
    pub stopping: AtomicBool,
}

/// Notices when every broker is unreachable (readiness must say so).
pub struct NodeContext {
    health: Arc<Health>,
}

impl ClientContext for NodeContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.broker_reachable.store(false, Ordering::Relaxed);
        }
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl ConsumerContext for NodeContext {}

/// Collects librdkafka's delivery reports (batch number, delivered?), so a
/// batch's input offsets are stored only once all of its output arrived.
#[derive(Default)]
pub struct DeliveryContext {
    reports: Mutex<Vec<(usize, bool)>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, batch: usize) {
        if let Err((error, _)) = result {
            tracing::error!(%error, "kafka did not accept a frame");
        }
        self.reports
            .lock()
            .expect("delivery lock")
            .push((batch, result.is_ok()));
    }
}

/// A processed batch whose output Kafka has not fully acknowledged yet.
struct InFlight {
    batch: usize,
    outstanding: usize,
    failed: bool,
    offsets: Vec<(String, i32, i64)>,
    started: Instant,
}

/// Batches awaiting acknowledgement before the node stops taking more:
/// enough to keep the pipeline full, few enough to redo quickly on a crash.
const MAX_IN_FLIGHT: usize = 32;

/// One consumed message, checked against this node as it arrives.
struct Received {
    topic: String,
    partition: i32,
    offset: i64,
    received_us: u64,
    checked: Result<(Frame, Activations), Refused>,
}

/// A message this node will not compute, and its bytes for the dead-letter
/// topic (only refused messages keep their bytes: activations are large).
struct Refused {
    rejection: Rejection,
    payload: Vec<u8>,
}

/// Why a frame could not be used; the label of the dead-letter counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: &'static str,
    pub detail: String,
}

/// A frame accepted for computing, with its surviving rows.
struct Accepted {
    frame: Frame,
    activations: Activations,
    received_us: u64,
}

pub struct Worker {
    slice: Slice,
    model_version: String,
    stages: u32,
    catalogue_size: u32,
    topics: Topics,
    input_topic: String,
    consumer: BaseConsumer<NodeContext>,
    producer: BaseProducer<DeliveryContext>,
    in_flight: VecDeque<InFlight>,
    next_batch: usize,
    config: Config,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl Worker {
    pub fn new(
        slice: Slice,
        manifest: &setlist_core::slice::SliceManifest,
        config: Config,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Worker> {
        let topics = Topics::new(&config.namespace, &config.cluster, &manifest.model_version)?;
        let stages = manifest.plan.stages.len() as u32;
        let consumer_kind = match &slice {
            Slice::Stage(s) => TopicConsumer::Stage(s.plan.index),
            Slice::Shard(s) => TopicConsumer::OutputShard(s.plan.index),
        };
        let settings = KafkaSettings::new(&config.kafka)
            .with_overrides(&config.kafka_set)
            .map_err(anyhow::Error::msg)?;
        let consumer: BaseConsumer<NodeContext> = setlist_service::kafka::client_config(
            &settings,
            &Role::GroupConsumer {
                group: topics.group(consumer_kind),
            },
        )
        .create_with_context(NodeContext {
            health: health.clone(),
        })
        .context("cannot create the Kafka consumer")?;
        let input_topic = topics.input_of(consumer_kind, stages);
        consumer
            .subscribe(&[&input_topic])
            .context("cannot subscribe to the input topic")?;
        let producer: BaseProducer<DeliveryContext> =
            setlist_service::kafka::client_config(&settings, &Role::Producer)
                .set(
                    "message.max.bytes",
                    (config.max_message_bytes + 64 * 1024).to_string(),
                )
                .create_with_context(DeliveryContext::default())
                .context("cannot create the Kafka producer")?;
        Ok(Worker {
            slice,
            model_version: manifest.model_version.clone(),
            stages,
            catalogue_size: manifest.config.catalogue_size,
            topics,
            input_topic,
            consumer,
            producer,
            in_flight: VecDeque::new(),
            next_batch: 0,
            config,
            metrics,
            health,
        })
    }

    /// Runs until `health.stopping` is set, then finishes the batch in hand,
    /// commits and leaves the group.
    pub fn run(mut self) -> Result<()> {
        tracing::info!(topic = %self.input_topic, "consuming");
        let mut last_broker_check = Instant::now() - Duration::from_secs(60);
        while !self.health.stopping.load(Ordering::Relaxed) {
            let batch = self.collect();
            self.settle()?;
            self.refresh_assignment();
            if batch.is_empty() {
                if last_broker_check.elapsed() > Duration::from_secs(2) {
                    let reachable = self
                        .consumer
                        .fetch_metadata(Some(&self.input_topic), Duration::from_secs(1))
                        .is_ok();
                    self.health
                        .broker_reachable
                        .store(reachable, Ordering::Relaxed);
                    last_broker_check = Instant::now();
                }
                continue;
            }
            self.health.broker_reachable.store(true, Ordering::Relaxed);
            self.process(batch)?;
        }
        tracing::info!("stopping: committing and leaving the consumer group");
        self.drain(Duration::from_secs(5))
            .context("cannot deliver the last frames")?;
        if let Err(error) = self
            .consumer
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        {
            // Nothing stored since the last automatic commit is not an error.
            if error.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset) {
                tracing::warn!(%error, "final commit failed; the last frames may be processed again");
            }
        }
        self.consumer.unsubscribe();
        Ok(())
    }

    fn refresh_assignment(&self) {
        let assigned = self.consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.health
            .assigned_partitions
            .store(assigned, Ordering::Relaxed);
        self.metrics.assigned_partitions.set(assigned as i64);
    }

    /// Waits up to 100 ms for a first frame (so a stop request is noticed),
    /// then up to `max_wait_ms` for more, until `max_batch_rows` requests.
    fn collect(&self) -> Vec<Received> {
        let mut batch = Vec::new();
        let mut rows = 0usize;
        let mut until: Option<Instant> = None;
        loop {
            // After the first frame, whatever has already arrived joins the
            // batch at no cost (a zero wait), then up to max_wait_ms more.
            let wait = match until {
                None => Duration::from_millis(100),
                Some(end) => end.saturating_duration_since(Instant::now()),
            };
            match self.consumer.poll(wait) {
                Some(Ok(message)) => {
                    let received_us = now_unix_us();
                    let payload = message.payload().unwrap_or_default();
                    let checked =
                        self.accept(Frame::decode(payload))
                            .map_err(|rejection| Refused {
                                rejection,
                                payload: payload.to_vec(),
                            });
                    rows += checked.as_ref().map_or(1, |(f, _)| f.rows.len());
                    batch.push(Received {
                        topic: message.topic().to_string(),
                        partition: message.partition(),
                        offset: message.offset(),
                        received_us,
                        checked,
                    });
                    until.get_or_insert_with(|| {
                        Instant::now() + Duration::from_millis(self.config.max_wait_ms)
                    });
                    if rows >= self.config.max_batch_rows {
                        break;
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "consume error");
                    break;
                }
                None => break,
            }
        }
        batch
    }

    fn process(&mut self, batch: Vec<Received>) -> Result<()> {
        self.metrics.frames_in.inc_by(batch.len() as u64);
        let now_ms = now_unix_us() / 1000;
        let batch_number = self.next_batch;
        self.next_batch += 1;
        let mut in_flight = InFlight {
            batch: batch_number,
            outstanding: 0,
            failed: false,
            offsets: batch
                .iter()
                .map(|r| (r.topic.clone(), r.partition, r.offset))
                .collect(),
            started: Instant::now(),
        };
        let mut accepted = Vec::new();
        for received in batch {
            let (mut frame, activations) = match received.checked {
                Ok(checked) => checked,
                Err(ref refused) => {
                    self.dead_letter(&received, refused, &mut in_flight);
                    continue;
                }
            };
            let alive: Vec<usize> = (0..frame.rows.len())
                .filter(|&r| frame.rows[r].deadline_unix_ms >= now_ms)
                .collect();
            let expired = frame.rows.len() - alive.len();
            if expired > 0 {
                self.metrics
                    .dropped_rows
                    .with_label_values(&["deadline_expired"])
                    .inc_by(expired as u64);
            }
            if alive.is_empty() {
                continue;
            }
            let activations = if expired > 0 {
                frame.rows = alive.iter().map(|&r| frame.rows[r].clone()).collect();
                take_rows(&activations, &alive)
            } else {
                activations
            };
            accepted.push(Accepted {
                frame,
                activations,
                received_us: received.received_us,
            });
        }
        if !accepted.is_empty() {
            let outputs = self.compute(accepted);
            self.produce(outputs, &mut in_flight)?;
        }
        self.in_flight.push_back(in_flight);
        // Backpressure: wait for Kafka rather than pile up unacknowledged work.
        while self.in_flight.len() > MAX_IN_FLIGHT {
            self.producer.poll(Duration::from_millis(1));
            self.settle()?;
        }
        self.settle()
    }

    /// Applies delivery reports and stores the input offsets of every batch
    /// at the front whose output is fully acknowledged, in order. A batch
    /// Kafka refused ends the worker before its offsets are stored, so the
    /// group hands it to a member again: at-least-once.
    fn settle(&mut self) -> Result<()> {
        self.producer.poll(Duration::ZERO);
        let reports = std::mem::take(
            &mut *self
                .producer
                .context()
                .reports
                .lock()
                .expect("delivery lock"),
        );
        for (batch, delivered) in reports {
            if let Some(b) = self.in_flight.iter_mut().find(|b| b.batch == batch) {
                b.outstanding = b.outstanding.saturating_sub(1);
                b.failed |= !delivered;
            }
        }
        while self.in_flight.front().is_some_and(|b| b.outstanding == 0) {
            let done = self.in_flight.pop_front().expect("checked above");
            if done.failed {
                self.metrics.produce_failures.inc();
                anyhow::bail!(
                    "Kafka refused frames of a batch; stopping so the batch is processed again"
                );
            }
            self.metrics
                .produce
                .observe(done.started.elapsed().as_secs_f64());
            for (topic, partition, offset) in &done.offsets {
                self.consumer
                    .store_offset(topic, *partition, *offset)
                    .context("cannot store a consumed offset")?;
            }
        }
        Ok(())
    }

    /// Waits up to `limit` for every batch in flight to be acknowledged.
    fn drain(&mut self, limit: Duration) -> Result<()> {
        let started = Instant::now();
        while !self.in_flight.is_empty() {
            anyhow::ensure!(
                started.elapsed() < limit,
                "Kafka did not acknowledge the last frames in {limit:?}"
            );
            self.producer.poll(Duration::from_millis(1));
            self.settle()?;
        }
        Ok(())
    }

    /// Checks a frame against this node: decodable, same model version,
    /// addressed to this part, and of the shape this part reads.
    fn accept(&self, decoded: Result<Frame, WireError>) -> Result<(Frame, Activations), Rejection> {
        let reject = |reason, detail: String| Rejection { reason, detail };
        let mut frame = decoded.map_err(|e| reject("undecodable", e.to_string()))?;
        if frame.model_version != self.model_version {
            return Err(reject(
                "wrong_model_version",
                format!(
                    "the frame is for model {}, this node serves {}",
                    frame.model_version, self.model_version
                ),
            ));
        }
        let expected_stage = match &self.slice {
            Slice::Stage(s) => s.plan.index,
            Slice::Shard(_) => self.stages,
        };
        if u32::from(frame.stage) != expected_stage {
            return Err(reject(
                "wrong_stage",
                format!(
                    "the frame is for stage {}, this node reads stage {expected_stage}",
                    frame.stage
                ),
            ));
        }
        let activations = match std::mem::replace(&mut frame.body, Body::TopK(Vec::new())) {
            Body::Activations(a) => a,
            Body::TopK(_) => {
                return Err(reject(
                    "wrong_shape",
                    "a top-k frame on a stage topic".into(),
                ));
            }
        };
        let (expect_ids, expect_dim) = match &self.slice {
            Slice::Stage(s) => (s.reads_track_ids(), s.input_dim()),
            Slice::Shard(s) => (false, s.hidden_dim()),
        };
        let is_ids = matches!(activations.values, Values::TrackIds(_));
        if is_ids != expect_ids || activations.dim != expect_dim {
            let what = if expect_ids {
                "track ids".to_string()
            } else {
                format!("activations of width {expect_dim}")
            };
            return Err(reject(
                "wrong_shape",
                format!(
                    "this node reads {what}, the frame holds {:?} of width {}",
                    activations.dtype(),
                    activations.dim
                ),
            ));
        }
        if let Values::TrackIds(ids) = &activations.values
            && let Some(bad) = ids.iter().find(|&&t| t >= self.catalogue_size)
        {
            return Err(reject(
                "wrong_shape",
                format!(
                    "track index {bad} is outside the catalogue of {} songs",
                    self.catalogue_size
                ),
            ));
        }
        if matches!(self.slice, Slice::Shard(_)) && activations.lengths.iter().any(|&l| l != 1) {
            return Err(reject(
                "wrong_shape",
                "output shards read one position per request".into(),
            ));
        }
        Ok((frame, activations))
    }

    fn dead_letter(&self, received: &Received, refused: &Refused, in_flight: &mut InFlight) {
        let rejection = &refused.rejection;
        tracing::warn!(reason = rejection.reason, detail = %rejection.detail, partition = received.partition, offset = received.offset, "dead-lettering a frame");
        self.metrics
            .dead_letters
            .with_label_values(&[rejection.reason])
            .inc();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "setlist-reason",
                value: Some(rejection.reason),
            })
            .insert(Header {
                key: "setlist-detail",
                value: Some(&rejection.detail),
            })
            .insert(Header {
                key: "setlist-source",
                value: Some(&format!(
                    "{}/{}/{}",
                    received.topic, received.partition, received.offset
                )),
            });
        let topic = self.topics.dead_letter();
        self.send(
            BaseRecord::with_opaque_to(&topic, in_flight.batch)
                .payload(refused.payload.as_slice())
                .headers(headers),
            in_flight,
        );
    }

    /// One forward pass for every accepted frame; one output frame per input.
    fn compute(&self, accepted: Vec<Accepted>) -> Vec<(Frame, Option<i32>)> {
        let started = Instant::now();
        let started_us = now_unix_us();
        let row_counts: Vec<usize> = accepted.iter().map(|a| a.frame.rows.len()).collect();
        let (inputs, parts): (Vec<(Frame, u64)>, Vec<Activations>) = accepted
            .into_iter()
            .map(|a| ((a.frame, a.received_us), a.activations))
            .unzip();
        let combined = concat(parts).expect("accepted frames share this node's input shape");
        self.metrics
            .batch_rows
            .observe(row_counts.iter().sum::<usize>() as f64);
        let bodies: Vec<Body> = match &self.slice {
            Slice::Stage(stage) => {
                let (input, lengths) = from_activations(&combined, false);
                let output = stage.forward(&input, &lengths);
                let output = to_activations(&output, &lengths, self.config.half_precision);
                split_rows(output, &row_counts)
                    .into_iter()
                    .map(Body::Activations)
                    .collect()
            }
            Slice::Shard(shard) => {
                let (hidden, _) = from_activations(&combined, true);
                let metas: Vec<_> = inputs.iter().flat_map(|(f, _)| f.rows.iter()).collect();
                let queries: Vec<RowQuery> = metas
                    .iter()
                    .map(|m| RowQuery {
                        k: m.k as usize,
                        exclude: &m.exclude,
                    })
                    .collect();
                let mut lists = shard.top_k(&hidden, &queries).into_iter();
                row_counts
                    .iter()
                    .map(|&count| Body::TopK(lists.by_ref().take(count).collect()))
                    .collect()
            }
        };
        let compute = started.elapsed();
        self.metrics.compute.observe(compute.as_secs_f64());
        let (hop_stage, next_stage) = match &self.slice {
            Slice::Stage(s) => (s.plan.index, s.plan.index + 1),
            Slice::Shard(s) => (self.stages + s.plan.index, s.plan.index),
        };
        inputs
            .into_iter()
            .zip(bodies)
            .map(|((frame, received_us), body)| {
                let queue_us = started_us.saturating_sub(received_us);
                self.metrics.queue_wait.observe(queue_us as f64 / 1e6);
                let mut hops = frame.hops;
                hops.push(Hop {
                    stage: hop_stage as u16,
                    queue_us: queue_us.min(u32::MAX as u64) as u32,
                    compute_us: compute.as_micros().min(u32::MAX as u128) as u32,
                    sent_unix_us: now_unix_us(),
                });
                let reply_partition =
                    matches!(self.slice, Slice::Shard(_)).then_some(frame.reply_to as i32);
                let next = Frame {
                    stage: next_stage as u16,
                    hops,
                    body,
                    ..frame
                };
                (next, reply_partition)
            })
            .collect()
    }

    fn produce(&self, outputs: Vec<(Frame, Option<i32>)>, in_flight: &mut InFlight) -> Result<()> {
        let topic = match &self.slice {
            Slice::Stage(s) => self.topics.stage(s.plan.index + 1),
            Slice::Shard(_) => self.topics.results(),
        };
        for (frame, partition) in outputs {
            for piece in frame
                .split_to_fit(self.config.max_message_bytes)
                .context("a single request exceeds max_message_bytes")?
            {
                let bytes = piece
                    .encode()
                    .context("an output frame failed validation")?;
                let record =
                    BaseRecord::with_opaque_to(&topic, in_flight.batch).payload(bytes.as_slice());
                self.send(
                    match partition {
                        Some(p) => record.partition(p),
                        None => record,
                    },
                    in_flight,
                );
                self.metrics.frames_out.inc();
            }
        }
        Ok(())
    }

    /// Hands a record to the producer (waiting while its queue is full) and
    /// counts it as outstanding for its batch.
    fn send(&self, mut record: BaseRecord<'_, (), [u8], usize>, in_flight: &mut InFlight) {
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    in_flight.outstanding += 1;
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => {
                    tracing::error!(%error, "cannot produce a frame");
                    in_flight.failed = true;
                    return;
                }
            }
        }
    }
}
