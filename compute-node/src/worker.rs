//! The node's loop, a thin shell around the pure parts: gather a batch of
//! frames ([`Assembly`]), check each ([`Expected::accept`]), run the slice
//! once for all of them, produce one frame per input frame, and store the
//! input offsets only once Kafka settled all of it ([`Ledger`]):
//! at-least-once. A frame, or an output, that cannot be used goes to the
//! dead-letter topic and its offset is stored like any other, so no frame
//! can stop a node twice; only the brokers failing stops it.

use crate::accept::{Expected, Input, Positions, Reason, Rejection};
use crate::batch::{Assembly, drop_expired};
use crate::config::Config;
use crate::delivery::{Pending, dead_letter_headers, dead_letter_payload, frame_tied, rows_only};
use crate::health::Health;
use crate::kafka::{Complaints, ConsumerLag, DeliveryContext, NodeContext};
use crate::ledger::{BatchId, Commits, Ledger};
use crate::metadata::ResultsPartitions;
use crate::metrics::Metrics;
use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use setlist_core::kafka::{KafkaSettings, Role};
use setlist_core::telemetry::now_unix_us;
use setlist_core::topics::{Consumer as TopicConsumer, Topics};
use setlist_core::trace::{TraceParent, request_ids};
use setlist_core::wire::{Activations, Body, Frame, Hop, WireError, concat, split_rows};
use setlist_model::ops::RowQuery;
use setlist_model::pipeline::{from_activations, to_activations};
use setlist_model::slice::{ShardSlice, StageSlice};
use setlist_service::otel;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Span;

/// The loaded slice.
pub enum Slice {
    Stage(StageSlice),
    Shard(ShardSlice),
}

/// Reads the results topic's partition count into `partitions`; the answer
/// (or its absence) is also the broker reachability readiness reports.
fn read_results_partitions(
    consumer: &BaseConsumer<NodeContext>,
    topic: &str,
    health: &Health,
    partitions: &mut ResultsPartitions,
) {
    let read = consumer.fetch_metadata(Some(topic), Duration::from_secs(1));
    health
        .broker_reachable
        .store(read.is_ok(), Ordering::Relaxed);
    let count = read.ok().and_then(|metadata| {
        let found = metadata.topics().iter().find(|t| t.name() == topic)?;
        if found.error().is_some() {
            return None;
        }
        u32::try_from(found.partitions().len()).ok()
    });
    if count.is_some() && count != partitions.count() {
        tracing::info!(partitions = count, topic, "results topic partitions");
    }
    partitions.record(Instant::now(), count);
}

/// Batches awaiting acknowledgement before the node stops taking more:
/// enough to keep the pipeline full, few enough to redo quickly on a crash.
const MAX_IN_FLIGHT: usize = 32;

/// How often librdkafka measures the input partitions' lag: often enough
/// for a lag alert's rate over minutes, rarely enough to cost nothing.
const LAG_EVERY_MS: u32 = 5_000;

/// One consumed message, checked against this node as it arrives.
struct Received {
    topic: String,
    partition: i32,
    offset: i64,
    received_us: u64,
    checked: Result<(Frame, Activations), Refused>,
}

impl Received {
    /// Where it was consumed, for dead letters and logs.
    fn source(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// A message this node will not compute, and its bytes for the dead-letter
/// topic (only refused messages keep their bytes: activations are large).
struct Refused {
    rejection: Rejection,
    payload: Vec<u8>,
}

/// A frame accepted for computing, with its surviving rows.
struct Accepted {
    frame: Frame,
    activations: Activations,
    received_us: u64,
    source: String,
    /// Its `compute` span (none unless spans are exported).
    span: Span,
}

/// An accepted frame, its activations taken for the forward pass.
struct Computing {
    frame: Frame,
    received_us: u64,
    source: String,
    span: Span,
}

/// An output frame and where it goes.
struct Output {
    frame: Frame,
    /// The results partition of the dispatcher that asked (shards only).
    partition: Option<i32>,
    source: String,
    /// The input's `compute` span, which ends once the output is sent.
    _span: Span,
}

pub struct Worker {
    slice: Slice,
    expected: Expected,
    stages: u32,
    topics: Topics,
    input_topic: String,
    output_topic: String,
    consumer: BaseConsumer<NodeContext>,
    producer: BaseProducer<DeliveryContext>,
    ledger: Ledger<Pending>,
    results_partitions: ResultsPartitions,
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
        let model = &manifest.config;
        let (consumer_kind, stage, input, positions, output_topic) = match &slice {
            Slice::Stage(s) => (
                TopicConsumer::Stage(s.plan.index),
                s.plan.index,
                if s.reads_track_ids() {
                    Input::TrackIds
                } else {
                    Input::Floats { dim: s.input_dim() }
                },
                Positions::UpTo(model.max_history),
                topics.stage(s.plan.index + 1),
            ),
            Slice::Shard(s) => (
                TopicConsumer::OutputShard(s.plan.index),
                stages,
                Input::Floats {
                    dim: s.hidden_dim(),
                },
                Positions::One,
                topics.results(),
            ),
        };
        let expected = Expected {
            model_version: manifest.model_version.clone(),
            stage,
            input,
            positions,
            catalogue_size: model.catalogue_size,
            max_deadline_ahead_ms: config.max_deadline_ms,
        };
        let complaints = Complaints::new(health.clone());
        let settings = KafkaSettings::new(&config.kafka)
            .with_overrides(&config.kafka_set)
            .map_err(anyhow::Error::msg)?;
        let input_topic = topics.input_of(consumer_kind, stages);
        let consumer: BaseConsumer<NodeContext> = setlist_service::kafka::client_config(
            &settings,
            &Role::GroupConsumer {
                group: topics.group(consumer_kind),
                instance: config.instance_id.clone(),
                session_timeout_ms: config.session_timeout_ms,
            },
        )
        // Statistics carry each partition's lag, which /metrics shows.
        .set("statistics.interval.ms", LAG_EVERY_MS.to_string())
        .create_with_context(NodeContext {
            complaints: complaints.clone(),
            commits: Mutex::new(Commits::default()),
            rebalances: metrics.rebalances.clone(),
            lag: ConsumerLag::new(input_topic.clone(), metrics.consumer_lag.clone()),
        })
        .context("cannot create the Kafka consumer")?;
        consumer
            .subscribe(&[&input_topic])
            .context("cannot subscribe to the input topic")?;
        // Headroom over max_message_bytes for the record's key, headers and
        // batch framing, so a frame that fits the budget is never refused here.
        let producer: BaseProducer<DeliveryContext> =
            setlist_service::kafka::client_config(&settings, &Role::Producer)
                .set(
                    "message.max.bytes",
                    (config.max_message_bytes + 64 * 1024).to_string(),
                )
                .create_with_context(DeliveryContext {
                    complaints,
                    reports: Mutex::new(Vec::new()),
                })
                .context("cannot create the Kafka producer")?;
        Ok(Worker {
            slice,
            expected,
            stages,
            topics,
            input_topic,
            output_topic,
            consumer,
            producer,
            ledger: Ledger::default(),
            results_partitions: ResultsPartitions::default(),
            config,
            metrics,
            health,
        })
    }

    /// Serves until a stop signal or a broker-level failure, then stops
    /// within the shutdown timeout whatever the brokers do.
    pub fn run(mut self) -> Result<()> {
        tracing::info!(topic = %self.input_topic, "consuming");
        let outcome = self.serve();
        if let Err(error) = &outcome {
            tracing::error!(
                error = format!("{error:#}"),
                "stopping after a broker-level failure; the unsettled frames will be processed again"
            );
        }
        self.health.begin_stopping(self.config.shutdown_timeout());
        self.stop();
        outcome
    }

    fn serve(&mut self) -> Result<()> {
        while !self.health.is_stopping() {
            let batch = self.collect();
            self.settle()?;
            self.refresh_assignment();
            if self
                .results_partitions
                .due(Instant::now(), batch.is_empty())
            {
                read_results_partitions(
                    &self.consumer,
                    &self.topics.results(),
                    &self.health,
                    &mut self.results_partitions,
                );
            }
            if batch.is_empty() {
                continue;
            }
            self.health.broker_reachable.store(true, Ordering::Relaxed);
            self.process(batch)?;
        }
        Ok(())
    }

    fn refresh_assignment(&self) {
        let assigned = self.consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.health
            .assigned_partitions
            .store(assigned, Ordering::Relaxed);
        self.metrics.assigned_partitions.set(assigned as i64);
    }

    /// Gathers one batch of frames, checking each as it arrives.
    fn collect(&mut self) -> Vec<Received> {
        let mut batch = Vec::new();
        let mut assembly = Assembly::new(
            self.config.max_batch_rows,
            Duration::from_millis(self.config.max_wait_ms),
        );
        while let Some(wait) = assembly.next_wait(Instant::now()) {
            let received = match self.consumer.poll(wait) {
                Some(Ok(message)) => {
                    let received_us = now_unix_us();
                    let payload = message.payload().unwrap_or_default();
                    let decoded = Frame::decode(payload);
                    // A partition beyond the known count may be new: read
                    // the count again before judging the frame by it.
                    if let Ok(frame) = &decoded
                        && self
                            .results_partitions
                            .due_for(frame.reply_to, Instant::now())
                    {
                        read_results_partitions(
                            &self.consumer,
                            &self.topics.results(),
                            &self.health,
                            &mut self.results_partitions,
                        );
                    }
                    let checked = self
                        .expected
                        .accept(decoded, received_us / 1000, self.results_partitions.count())
                        .map_err(|rejection| Refused {
                            rejection,
                            payload: payload.to_vec(),
                        });
                    Received {
                        topic: message.topic().to_string(),
                        partition: message.partition(),
                        offset: message.offset(),
                        received_us,
                        checked,
                    }
                }
                Some(Err(error)) => {
                    self.consumer
                        .context()
                        .complaints
                        .warn("consume error", &error, "");
                    break;
                }
                None => break,
            };
            let rows = received.checked.as_ref().map_or(1, |(f, _)| f.rows.len());
            assembly.add(rows, Instant::now());
            batch.push(received);
        }
        batch
    }

    fn process(&mut self, batch: Vec<Received>) -> Result<()> {
        self.metrics.frames_in.inc_by(batch.len() as u64);
        let now_ms = now_unix_us() / 1000;
        let positions = batch
            .iter()
            .map(|r| (r.topic.clone(), r.partition, r.offset))
            .collect();
        let id = self.ledger.open(positions, Instant::now());
        let mut accepted = Vec::new();
        for received in batch {
            let source = received.source();
            match received.checked {
                Err(refused) => {
                    self.dead_letter_refused(id, &source, &refused.rejection, &refused.payload)?;
                }
                Ok((frame, activations)) => {
                    let span = self.compute_span(&frame, &source);
                    let _in_span = span.enter();
                    tracing::debug!(
                        request_ids = %request_ids(frame.rows.iter().map(|r| r.request_id)),
                        trace_context = %frame.trace_context,
                        %source,
                        "computing a frame"
                    );
                    // Only rows past their deadline: nothing to allocate
                    // when none is.
                    let late: Vec<u128> = frame
                        .rows
                        .iter()
                        .filter(|r| r.deadline_unix_ms < now_ms)
                        .map(|r| r.request_id)
                        .collect();
                    let (alive, expired) = drop_expired(frame, activations, now_ms);
                    if expired > 0 {
                        tracing::debug!(request_ids = %request_ids(late), %source, "dropping rows past their deadline");
                        self.metrics
                            .dropped_rows
                            .with_label_values(&["deadline_expired"])
                            .inc_by(expired as u64);
                    }
                    if let Some((frame, activations)) = alive {
                        accepted.push(Accepted {
                            frame,
                            activations,
                            received_us: received.received_us,
                            source,
                            span: span.clone(),
                        });
                    }
                }
            }
        }
        if !accepted.is_empty() {
            let outputs = self.compute(accepted);
            self.produce(id, outputs)?;
        }
        // Backpressure: wait for Kafka rather than pile up unacknowledged work.
        while self.ledger.len() > MAX_IN_FLIGHT && !self.health.is_stopping() {
            self.producer.poll(Duration::from_millis(1));
            self.settle()?;
        }
        self.settle()
    }

    /// Applies delivery reports (dead-lettering what Kafka refused because
    /// of the message itself) and stores the offsets of every batch at the
    /// front that has settled, in order. A broker-level failure breaks its
    /// batch, whose offsets are then never stored: at-least-once.
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
        let mut failure = Ok(());
        for (key, error) in reports {
            let Some((batch, pending)) = self.ledger.settle_message(key) else {
                continue;
            };
            match error {
                None if matches!(pending, Pending::Output { .. }) => self.metrics.frames_out.inc(),
                None => {}
                Some(error) => {
                    let outcome = self.refused(batch, pending, error);
                    if failure.is_ok() {
                        failure = outcome;
                    }
                }
            }
        }
        for done in self.ledger.settled() {
            self.metrics
                .produce
                .observe(done.started.elapsed().as_secs_f64());
            for ((topic, partition), next) in done.next_offsets {
                // rd_kafka_offset_store stores `offset + 1`: the next to read.
                match self.consumer.store_offset(&topic, partition, next - 1) {
                    Ok(()) => self
                        .consumer
                        .context()
                        .commits
                        .lock()
                        .expect("commits lock")
                        .stored((topic, partition), next),
                    Err(error) => {
                        // The partition moved to another member, which
                        // consumes these frames again: at-least-once holds.
                        self.metrics.offset_store_failures.inc();
                        self.consumer.context().complaints.warn(
                            "cannot store an offset of a partition this node no longer has",
                            &error,
                            &topic,
                        );
                    }
                }
            }
        }
        failure
    }

    /// Kafka refused a message, at once or in its delivery report.
    fn refused(&mut self, batch: BatchId, pending: Pending, error: KafkaError) -> Result<()> {
        self.metrics.produce_failures.inc();
        let Some(reason) = frame_tied(&error) else {
            self.ledger.break_batch(batch);
            anyhow::bail!(
                "Kafka did not take a frame ({error}); stopping so that its batch is processed again"
            );
        };
        let rejection = Rejection::new(reason, format!("Kafka refused the output: {error}"));
        match pending {
            Pending::Output { rows, source } => {
                self.metrics
                    .dropped_rows
                    .with_label_values(&[reason.label()])
                    .inc_by(rows.rows.len() as u64);
                self.dead_letter_rows(batch, &rows, &source, &rejection)
            }
            Pending::DeadLetter { reason, source } => {
                self.metrics
                    .lost_dead_letters
                    .with_label_values(&[reason.label()])
                    .inc();
                tracing::error!(%error, reason = reason.label(), %source, "Kafka refused a dead letter too; the frame is dropped");
                Ok(())
            }
        }
    }

    /// Sends a frame this node refused to the dead-letter topic.
    fn dead_letter_refused(
        &mut self,
        batch: BatchId,
        source: &str,
        rejection: &Rejection,
        payload: &[u8],
    ) -> Result<()> {
        // The ids of a frame refused for what it says rather than how it
        // is written, so its requests can still be found in the logs.
        let ids = Frame::decode(payload)
            .map(|f| request_ids(f.rows.iter().map(|r| r.request_id)))
            .unwrap_or_default();
        tracing::warn!(
            reason = rejection.reason.label(),
            detail = %rejection.detail,
            %source,
            request_ids = %ids,
            "dead-lettering a frame"
        );
        self.metrics
            .dead_letters
            .with_label_values(&[rejection.reason.label()])
            .inc();
        let (payload, cut_from) = dead_letter_payload(payload, self.config.max_message_bytes);
        let headers = dead_letter_headers(rejection, source, cut_from);
        let pending = Pending::DeadLetter {
            reason: rejection.reason,
            source: source.to_string(),
        };
        let topic = self.topics.dead_letter();
        self.send(batch, &topic, None, payload, Some(headers), pending)
    }

    /// Sends the rows of an output that could not be produced to the
    /// dead-letter topic: the rows only (see [`rows_only`]), split to fit.
    fn dead_letter_rows(
        &mut self,
        batch: BatchId,
        rows: &Frame,
        source: &str,
        rejection: &Rejection,
    ) -> Result<()> {
        tracing::warn!(
            reason = rejection.reason.label(),
            detail = %rejection.detail,
            %source,
            request_ids = %request_ids(rows.rows.iter().map(|r| r.request_id)),
            "dead-lettering the rows of an output"
        );
        self.metrics
            .dead_letters
            .with_label_values(&[rejection.reason.label()])
            .inc();
        let pieces = rows_only(rows)
            .split_to_fit(self.config.max_message_bytes)
            .and_then(|pieces| {
                pieces
                    .iter()
                    .map(Frame::encode)
                    .collect::<Result<Vec<_>, _>>()
            });
        let pieces = match pieces {
            Ok(pieces) => pieces,
            Err(error) => {
                // A row's metadata alone fits any allowed max_message_bytes,
                // so this is a bug; it is counted and logged, not fatal.
                self.metrics
                    .lost_dead_letters
                    .with_label_values(&[rejection.reason.label()])
                    .inc();
                tracing::error!(%error, %source, "cannot encode the rows of a dead letter; they are dropped");
                return Ok(());
            }
        };
        let topic = self.topics.dead_letter();
        for bytes in pieces {
            let headers = dead_letter_headers(rejection, source, None);
            let pending = Pending::DeadLetter {
                reason: rejection.reason,
                source: source.to_string(),
            };
            self.send(batch, &topic, None, &bytes, Some(headers), pending)?;
        }
        Ok(())
    }

    /// The span of one frame's work here when spans are exported (else
    /// none, at no cost): the child of the span its trace context names
    /// (the dispatcher's `publish`, or the previous stage's `compute`),
    /// which the output frame then names in turn. A frame is one trace's,
    /// its first row's; the other rows' ids are in `request_ids` (their
    /// spans are not known here, so they cannot be linked).
    fn compute_span(&self, frame: &Frame, source: &str) -> Span {
        if !otel::enabled() {
            return Span::none();
        }
        let span = tracing::info_span!(
            "compute",
            request_ids = %request_ids(frame.rows.iter().map(|r| r.request_id)),
            part = %self.config.part(),
            rows = frame.rows.len(),
            source,
        );
        match TraceParent::parse(&frame.trace_context) {
            Some(parent) => otel::set_parent(&span, parent),
            None => {
                if let Some(first) = frame.rows.first() {
                    otel::start_trace(&span, first.request_id);
                }
            }
        }
        span
    }

    /// One forward pass for every accepted frame; one output frame per input.
    fn compute(&self, accepted: Vec<Accepted>) -> Vec<Output> {
        let started = Instant::now();
        let started_us = now_unix_us();
        let row_counts: Vec<usize> = accepted.iter().map(|a| a.frame.rows.len()).collect();
        let (inputs, parts): (Vec<Computing>, Vec<Activations>) = accepted
            .into_iter()
            .map(|a| {
                let input = Computing {
                    frame: a.frame,
                    received_us: a.received_us,
                    source: a.source,
                    span: a.span,
                };
                (input, a.activations)
            })
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
                let metas: Vec<_> = inputs.iter().flat_map(|i| i.frame.rows.iter()).collect();
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
            .map(|(input, body)| {
                let Computing {
                    frame,
                    received_us,
                    source,
                    span,
                } = input;
                let queue_us = started_us.saturating_sub(received_us);
                self.metrics.queue_wait.observe(queue_us as f64 / 1e6);
                let mut hops = frame.hops;
                hops.push(Hop {
                    stage: hop_stage as u16,
                    queue_us: queue_us.min(u32::MAX as u64) as u32,
                    compute_us: compute.as_micros().min(u32::MAX as u128) as u32,
                    sent_unix_us: now_unix_us(),
                });
                // Acceptance refuses a reply_to above i32::MAX; were one to
                // get here, Kafka would refuse partition i32::MAX and the
                // rows be dead-lettered, never routed to a random partition.
                let partition = matches!(self.slice, Slice::Shard(_))
                    .then(|| i32::try_from(frame.reply_to).unwrap_or(i32::MAX));
                // Sent on by this node's span when spans are exported, else
                // as it came.
                let trace_context =
                    otel::context_of(&span).map_or(frame.trace_context, |c| c.to_string());
                let frame = Frame {
                    stage: next_stage as u16,
                    hops,
                    body,
                    trace_context,
                    ..frame
                };
                Output {
                    frame,
                    partition,
                    source,
                    _span: span,
                }
            })
            .collect()
    }

    /// Sends each output, split to fit a message; an output that cannot be
    /// split or encoded has its rows dead-lettered instead.
    fn produce(&mut self, batch: BatchId, outputs: Vec<Output>) -> Result<()> {
        let topic = self.output_topic.clone();
        for output in outputs {
            let rows = rows_only(&output.frame);
            let encoded = output
                .frame
                .split_to_fit(self.config.max_message_bytes)
                .and_then(|pieces| {
                    pieces
                        .into_iter()
                        .map(|piece| Ok((rows_only(&piece), piece.encode()?)))
                        .collect::<Result<Vec<_>, WireError>>()
                });
            let pieces = match encoded {
                Ok(pieces) => pieces,
                Err(error) => {
                    let reason = match error {
                        WireError::RowTooLarge { .. } => Reason::OutputTooLarge,
                        _ => Reason::OutputRefused,
                    };
                    self.metrics
                        .dropped_rows
                        .with_label_values(&[reason.label()])
                        .inc_by(rows.rows.len() as u64);
                    let rejection = Rejection::new(reason, error.to_string());
                    self.dead_letter_rows(batch, &rows, &output.source, &rejection)?;
                    continue;
                }
            };
            for (rows, bytes) in pieces {
                let pending = Pending::Output {
                    rows,
                    source: output.source.clone(),
                };
                self.send(batch, &topic, output.partition, &bytes, None, pending)?;
            }
        }
        Ok(())
    }

    /// Hands a record to the producer, waiting while its queue is full, and
    /// counts it against its batch. A record Kafka refuses at once is dealt
    /// with like a refused delivery.
    fn send(
        &mut self,
        batch: BatchId,
        topic: &str,
        partition: Option<i32>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        pending: Pending,
    ) -> Result<()> {
        let key = self
            .ledger
            .sending(batch, pending)
            .context("a batch was settled before its last message was sent; this is a bug")?;
        let mut record = BaseRecord::<(), [u8], usize>::with_opaque_to(topic, key).payload(payload);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if !self.health.is_stopping() =>
                {
                    record = back;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => {
                    let (batch, pending) = self
                        .ledger
                        .settle_message(key)
                        .context("a message was settled twice; this is a bug")?;
                    return self.refused(batch, pending, error);
                }
            }
        }
    }

    /// Stops within three bounded steps, each up to a quarter of the
    /// shutdown timeout: deliver what is in flight (storing the offsets of
    /// what settles), commit, leave the consumer group. A step the brokers
    /// do not answer in time is skipped, with a line saying what that costs.
    fn stop(mut self) {
        let step = self.config.shutdown_step();
        let assignment = self.consumer.assignment().unwrap_or_default();
        // No new frames while stopping: polling for callbacks below would
        // otherwise fetch some only to drop them.
        let _ = self.consumer.pause(&assignment);
        let assigned: Vec<(String, i32)> = assignment
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        self.consumer
            .context()
            .commits
            .lock()
            .expect("commits lock")
            .keep_only(&assigned);

        tracing::info!(limit = ?step, "stopping: delivering the frames in flight");
        let until = Instant::now() + step;
        while self.ledger.can_settle() && Instant::now() < until {
            self.producer.poll(Duration::from_millis(10));
            if let Err(error) = self.settle() {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "delivery failed while stopping"
                );
            }
        }
        if self.ledger.len() > 0 {
            tracing::warn!(
                batches = self.ledger.len(),
                messages = self.ledger.outstanding(),
                "skipped: frames Kafka did not acknowledge; their input will be processed again"
            );
        }

        tracing::info!(limit = ?step, "stopping: committing the stored offsets");
        let pending = || {
            let commits = self
                .consumer
                .context()
                .commits
                .lock()
                .expect("commits lock");
            commits.pending().len()
        };
        if pending() > 0 {
            if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Async) {
                tracing::warn!(%error, "cannot ask for the final commit");
            }
            let until = Instant::now() + step;
            while pending() > 0 && Instant::now() < until {
                self.consumer.poll(Duration::from_millis(50));
            }
        }
        match pending() {
            0 => tracing::info!("committed"),
            n => tracing::warn!(
                partitions = n,
                "skipped: the final commit was not confirmed in time; frames since the last commit will be processed again"
            ),
        }

        tracing::info!(limit = ?step, "stopping: leaving the consumer group");
        let until = Instant::now() + step;
        if let Err(error) = self.consumer.close_queue() {
            tracing::warn!(%error, "cannot start leaving the consumer group");
        }
        while !self.consumer.closed() && Instant::now() < until {
            self.consumer.poll(Duration::from_millis(50));
        }
        if self.consumer.closed() {
            tracing::info!("left the consumer group");
        } else {
            tracing::warn!(
                "skipped: leaving the consumer group (the brokers did not answer); the group hands this node's partitions on after session.timeout.ms"
            );
        }
        // Everything worth keeping is delivered, committed and handed back
        // above, and the process ends right after this. librdkafka's
        // destructors are not bounded: the consumer's tries to close again
        // and then waits for its broker threads (seen to hang until the
        // watchdog even after a clean leave), the producer's waits for
        // deliveries. The operating system frees what they hold.
        let Worker {
            consumer, producer, ..
        } = self;
        std::mem::forget(consumer);
        std::mem::forget(producer);
    }
}
