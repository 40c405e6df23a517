//! `setlist bench pipeline`: the whole model in one process against the
//! partitioned pipeline over Kafka, in one run, with the broker's own floor
//! measured alongside so Setlist's per-hop cost can be told apart from
//! Kafka's.
//!
//! The benchmark is its own dispatcher: it produces stage-0 frames and reads
//! the results partition directly, so HTTP is not part of what is measured.

use crate::broker::Broker;
use crate::up::{self, Children, StopSignals};
use anyhow::{Context, Result};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::{Offset, TopicPartitionList};
use setlist_core::kafka::{KafkaSettings, Role};
use setlist_core::plan::{PartitionPlan, layer_name};
use setlist_core::slice;
use setlist_core::telemetry::now_unix_us;
use setlist_core::topics::Topics;
use setlist_core::wire::track_ids;
use setlist_core::wire::{Body, Frame, Hop, RowMeta};
use setlist_model::artifact::Model;
use setlist_model::ops::RowQuery;
use setlist_model::pipeline::random_histories;
use setlist_service::slices::SliceSource;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct PipelineBenchArgs {
    /// A trained model to measure (it needs 3 LSTM layers for 4 stages).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Otherwise a random-weight model of this many songs…
    #[arg(long, default_value_t = 20_000)]
    songs: u32,
    /// …with this embedding and hidden size…
    #[arg(long, default_value_t = 128)]
    dim: u32,
    /// …and this many LSTM layers.
    #[arg(long, default_value_t = 3)]
    lstm_layers: u32,
    /// Most pipeline stages measured (1 up to this).
    #[arg(long, default_value_t = 4)]
    max_stages: u32,
    /// Sequential requests timed per setup for latency.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Seconds of load per setup for saturation throughput.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Requests kept in flight at saturation: 8 frames of 64, enough to keep
    /// every stage of a 4-stage pipeline busy while others are in transit.
    #[arg(long, default_value_t = 512)]
    in_flight: usize,
    /// Compute nodes per stage and per shard (consumer-group replicas).
    #[arg(long, default_value_t = 1)]
    replicas: u16,
    /// Tracks per request history.
    #[arg(long, default_value_t = 50)]
    history: usize,
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Measure on a real Kafka cluster (HOST:PORT[,…]) instead of the
    /// embedded broker; its topics are made through the admin API, named
    /// for this run.
    #[arg(long)]
    kafka: Option<String>,
    /// A librdkafka setting for the benchmark and its nodes, KEY=VALUE (repeatable).
    #[arg(long = "kafka-set")]
    kafka_set: Vec<String>,
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    crate::bench::percentile(samples, p)
}

/// A client that speaks the pipeline's protocol: stage-0 frames out,
/// top-k frames back on results partition 0.
struct Client {
    producer: BaseProducer,
    consumer: BaseConsumer,
    stage0: String,
    model_version: String,
    next_id: u128,
}

impl Client {
    fn new(settings: &KafkaSettings, topics: &Topics, model_version: &str) -> Result<Client> {
        let producer: BaseProducer =
            setlist_service::kafka::client_config(settings, &Role::Producer).create()?;
        let consumer: BaseConsumer = setlist_service::kafka::client_config(
            settings,
            &Role::AssignedConsumer {
                client: format!("{}.bench", topics.results()),
            },
        )
        .create()?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&topics.results(), 0, Offset::Beginning)?;
        consumer.assign(&assignment)?;
        Ok(Client {
            producer,
            consumer,
            stage0: topics.stage(0),
            model_version: model_version.into(),
            next_id: 1,
        })
    }

    /// Publishes one frame holding `histories`; returns their request ids.
    fn send(&mut self, histories: &[&[u32]]) -> Result<Vec<u128>> {
        // Long enough never to expire in a measurement, and within what a
        // node accepts (it dead-letters a frame whose deadline is further
        // ahead than its --max-deadline-ms, 65 s by default).
        let deadline_unix_ms = now_unix_us() / 1000 + 60_000;
        let rows: Vec<RowMeta> = histories
            .iter()
            .map(|h| {
                self.next_id += 1;
                RowMeta {
                    request_id: self.next_id,
                    deadline_unix_ms,
                    k: 20,
                    exclude: h.to_vec(),
                }
            })
            .collect();
        let ids = rows.iter().map(|r| r.request_id).collect();
        let frame = Frame {
            model_version: self.model_version.clone(),
            stage: 0,
            reply_to: 0,
            trace_context: String::new(),
            hops: vec![Hop {
                stage: u16::MAX,
                queue_us: 0,
                compute_us: 0,
                sent_unix_us: now_unix_us(),
            }],
            rows,
            body: Body::Activations(track_ids(histories, usize::MAX)),
        };
        let bytes = frame.encode()?;
        self.producer
            .send(BaseRecord::<(), [u8]>::to(&self.stage0).payload(bytes.as_slice()))
            .map_err(|(e, _)| e)?;
        self.producer.poll(Duration::ZERO);
        Ok(ids)
    }

    /// The next result frame, if one arrives within `wait`.
    fn receive(&self, wait: Duration) -> Option<Frame> {
        self.producer.poll(Duration::ZERO);
        match self.consumer.poll(wait)? {
            Ok(message) => Frame::decode(message.payload()?).ok(),
            Err(_) => None,
        }
    }
}

struct Measured {
    p50_ms: f64,
    p99_ms: f64,
    compute_p50_ms: f64,
    rows_per_second: f64,
}

/// Sequential single requests (latency), then `in_flight` requests kept
/// outstanding for `seconds` (throughput). `pack` puts every request that
/// is ready into one frame, as the dispatcher's micro-batching does.
fn drive(
    client: &mut Client,
    histories: &[Vec<u32>],
    args: &PipelineBenchArgs,
    pack: bool,
) -> Result<Measured> {
    let mut latencies = Vec::new();
    let mut computes = Vec::new();
    for i in 0..args.requests + 20 {
        let started = Instant::now();
        let ids = client.send(&[&histories[i % histories.len()]])?;
        let frame = loop {
            let frame = client
                .receive(Duration::from_secs(10))
                .context("no answer from the pipeline in 10 s")?;
            if frame.rows.first().map(|r| r.request_id) == ids.first().copied() {
                break frame;
            }
        };
        if i >= 20 {
            latencies.push(started.elapsed().as_secs_f64() * 1e3);
            computes.push(frame.hops.iter().map(|h| h.compute_us as f64).sum::<f64>() / 1e3);
        }
    }
    let mut outstanding: HashMap<u128, ()> = HashMap::new();
    let mut done = 0usize;
    let mut i = 0usize;
    let started = Instant::now();
    let run = Duration::from_secs_f64(args.seconds);
    while started.elapsed() < run {
        let room = args.in_flight.saturating_sub(outstanding.len());
        if room > 0 {
            let count = if pack { room.min(64) } else { 1 };
            let batch: Vec<&[u32]> = (0..count)
                .map(|j| histories[(i + j) % histories.len()].as_slice())
                .collect();
            i += count;
            for id in client.send(&batch)? {
                outstanding.insert(id, ());
            }
            if !pack && room > 1 {
                continue;
            }
        }
        if let Some(frame) = client.receive(Duration::from_millis(1)) {
            for row in &frame.rows {
                if outstanding.remove(&row.request_id).is_some() {
                    done += 1;
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Drain what is still in flight so the next setup starts clean.
    let drain = Instant::now();
    while !outstanding.is_empty() && drain.elapsed() < Duration::from_secs(30) {
        if let Some(frame) = client.receive(Duration::from_millis(50)) {
            for row in &frame.rows {
                outstanding.remove(&row.request_id);
            }
        }
    }
    Ok(Measured {
        p50_ms: percentile(&mut latencies.clone(), 0.5),
        p99_ms: percentile(&mut latencies, 0.99),
        compute_p50_ms: percentile(&mut computes, 0.5),
        rows_per_second: done as f64 / elapsed,
    })
}

/// The broker's floor: one small frame produced and consumed, round trip,
/// with the same client settings the pipeline uses.
fn broker_floor(
    broker: &Broker,
    settings: &KafkaSettings,
    run: &str,
    samples: usize,
) -> Result<(f64, f64)> {
    let topic = &format!("setlist.bench.floor-{run}");
    broker.create_topics(&[(topic.clone(), 1)])?;
    let producer: BaseProducer =
        setlist_service::kafka::client_config(settings, &Role::Producer).create()?;
    let consumer: BaseConsumer = setlist_service::kafka::client_config(
        settings,
        &Role::AssignedConsumer {
            client: topic.clone(),
        },
    )
    .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let payload = [0u8; 64];
    let mut rtts = Vec::new();
    for i in 0..samples + 20 {
        let started = Instant::now();
        producer
            .send(BaseRecord::<(), [u8]>::to(topic).payload(&payload[..]))
            .map_err(|(e, _)| e)?;
        producer.poll(Duration::ZERO);
        loop {
            if let Some(Ok(_)) = consumer.poll(Duration::from_secs(5)) {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "the broker did not deliver in 10 s"
            );
        }
        if i >= 20 {
            rtts.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok((
        percentile(&mut rtts.clone(), 0.5),
        percentile(&mut rtts, 0.99),
    ))
}

/// The whole model's latency: single requests, one after another.
fn whole_model(model: &Model, histories: &[Vec<u32>], args: &PipelineBenchArgs) -> Measured {
    let one = |h: &[u32]| {
        let q = [RowQuery { k: 20, exclude: h }];
        model.recommend(&[h], &q)
    };
    for h in histories.iter().take(20) {
        one(h);
    }
    let mut latencies: Vec<f64> = histories
        .iter()
        .cycle()
        .take(args.requests)
        .map(|h| {
            let started = Instant::now();
            one(h);
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let p50 = percentile(&mut latencies.clone(), 0.5);
    Measured {
        p50_ms: p50,
        p99_ms: percentile(&mut latencies, 0.99),
        compute_p50_ms: p50,
        rows_per_second: whole_model_throughput(model, histories, args),
    }
}

/// The whole model's saturation throughput: batches of 64 back to back for
/// `seconds`, in requests per second.
fn whole_model_throughput(model: &Model, histories: &[Vec<u32>], args: &PipelineBenchArgs) -> f64 {
    let batch: Vec<&[u32]> = histories.iter().take(64).map(Vec::as_slice).collect();
    let queries: Vec<RowQuery> = batch
        .iter()
        .map(|h| RowQuery { k: 20, exclude: h })
        .collect();
    let started = Instant::now();
    let mut done = 0;
    while started.elapsed().as_secs_f64() < args.seconds {
        model.recommend(&batch, &queries);
        done += batch.len();
    }
    done as f64 / started.elapsed().as_secs_f64()
}

pub fn run(args: PipelineBenchArgs) -> Result<()> {
    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("setlist-bench-pipeline-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = measure(&args, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn measure(args: &PipelineBenchArgs, work: &Path) -> Result<()> {
    let model = match &args.model {
        Some(dir) => Model::load(dir)?,
        None => crate::bench::saved_random_model(
            args.songs,
            args.dim,
            args.lstm_layers,
            &work.join("model"),
        )?,
    };
    let c = &model.config;
    // Full-length histories (shorter random ones repeated): the size the model is built for.
    let histories: Vec<Vec<u32>> = random_histories(c.catalogue_size, 512, args.history, 3)
        .into_iter()
        .map(|h| h.iter().copied().cycle().take(args.history).collect())
        .collect();
    let [node_bin] = up::siblings([up::NODE_BINARY])?;
    let broker = Broker::new(args.kafka.as_deref(), &args.kafka_set)?;
    let settings = broker.settings();
    // A real cluster keeps earlier runs' topics: this run's names are its own.
    let run = std::process::id().to_string();
    let broker_name = if broker.is_embedded() {
        "librdkafka mock cluster (1 broker, loopback)".to_string()
    } else {
        broker.bootstrap_servers().to_string()
    };
    let client_settings = settings
        .overrides
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");

    println!("## setlist bench pipeline");
    println!();
    println!("machine: {}", crate::bench::machine());
    println!(
        "model {}: {} songs, {} dims, {} LSTM layers; histories of {} tracks, top-20; broker: {broker_name}; client settings: Setlist's defaults (fetch.wait.max.ms={}){}; {} node{} per stage and per shard, 1 libtorch thread each; {} requests in flight at saturation",
        model.manifest.model_version,
        c.catalogue_size,
        c.hidden_dim,
        c.lstm_layers,
        args.history,
        setlist_core::kafka::FETCH_WAIT_MAX_MS,
        if client_settings.is_empty() {
            String::new()
        } else {
            format!(" with {client_settings}")
        },
        args.replicas,
        if args.replicas == 1 { "" } else { "s" },
        args.in_flight
    );
    let (floor_p50, floor_p99) = broker_floor(&broker, settings, &run, args.requests)?;
    println!();
    println!(
        "broker floor (64-byte message, produce → consume, same client settings): p50 {floor_p50:.3} ms, p99 {floor_p99:.3} ms"
    );
    println!();
    println!(
        "| setup | p50 ms | p99 ms | compute p50 ms | Setlist overhead per hop, p50 ms | saturation req/s | one process just before and after, req/s | vs one process |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    tch::set_num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()) as i32);
    let single = whole_model(&model, &histories, args);
    println!(
        "| whole model, one process ({} threads) | {:.2} | {:.2} | {:.2} | – | {:.0} | – | 1.00 |",
        tch::get_num_threads(),
        single.p50_ms,
        single.p99_ms,
        single.compute_p50_ms,
        single.rows_per_second
    );

    // The machine's speed drifts (a shared host): each setup is compared with
    // the whole model measured right before and right after it.
    let mut before = single.rows_per_second;
    let max_stages = args.max_stages.min(PartitionPlan::max_stages(c));
    for stages in 1..=max_stages {
        let plan = PartitionPlan::new(c, stages, 1)?;
        let slices = work.join(format!("slices-{stages}"));
        setlist_model::slice::write_slices(&model, &plan, &slices)?;
        for batching in [false, true] {
            let cluster = format!("bench{stages}{}-{run}", if batching { "b" } else { "u" });
            let topics = Topics::new("bench", &cluster, &model.manifest.model_version)?;
            let pipeline = up::PipelineFlags {
                slices: &SliceSource::Local(slices.clone()),
                kafka: broker.bootstrap_servers(),
                namespace: "bench",
                cluster: &cluster,
                kafka_set: &args.kafka_set,
                session_timeout_ms: broker.session_timeout_ms(),
                static_membership: broker.static_membership(false),
            };
            let stage_topics = (0..=stages).map(|k| (topics.stage(k), 4));
            let others = [
                topics.results(),
                topics.dead_letter(),
                topics.interactions(),
            ]
            .map(|t| (t, 1));
            broker.create_topics(&stage_topics.chain(others).collect::<Vec<_>>())?;
            let count = (plan.stages.len() + plan.output_shards.len()) as u16 * args.replicas;
            let base = setlist_core::ports::free_loopback_ports(count)
                .context("no free ports on loopback for the nodes")?;
            let replicas =
                slice::parts(&plan).flat_map(|part| (0..args.replicas).map(move |r| (part, r)));
            // The bench catches no signal: a Ctrl-C ends it, and its nodes
            // die with it (the parent-death signal).
            let mut nodes = Children::new(StopSignals::default());
            for (port, (part, replica)) in (base..).zip(replicas) {
                let name = format!("{cluster}-{part}-{replica}");
                let mut command =
                    pipeline.node_command(&node_bin, part, &format!("127.0.0.1:{port}"), &name);
                command.extend([
                    format!("--max-batch-rows={}", if batching { 64 } else { 1 }),
                    "--max-wait-ms=0".into(),
                ]);
                nodes.spawn(
                    name.clone(),
                    command,
                    work.join(format!("{name}.log")),
                    format!("http://127.0.0.1:{port}"),
                )?;
            }
            let started = Instant::now();
            while !nodes.processes().iter().all(|p| up::ready(&p.url)) {
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(60),
                    "nodes not ready in 60 s; see {}",
                    work.display()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            let mut client = Client::new(settings, &topics, &model.manifest.model_version)?;
            let m = drive(&mut client, &histories, args, batching);
            nodes.stop();
            let m = m?;
            let after = whole_model_throughput(&model, &histories, args);
            let around = (before + after) / 2.0;
            before = after;
            let transfers = stages as f64 + 2.0;
            let overhead = (m.p50_ms - m.compute_p50_ms - transfers * floor_p50) / transfers;
            println!(
                "| {stages} stage{} ({}) + 1 shard, {} | {:.2} | {:.2} | {:.2} | {:.3} | {:.0} | {:.0} | {:.2} |",
                if stages == 1 { "" } else { "s" },
                plan.stages
                    .iter()
                    .map(|s| s.layers().map(layer_name).collect::<Vec<_>>().join(" + "))
                    .collect::<Vec<_>>()
                    .join(" → "),
                if batching {
                    "micro-batching"
                } else {
                    "no batching"
                },
                m.p50_ms,
                m.p99_ms,
                m.compute_p50_ms,
                overhead,
                m.rows_per_second,
                around,
                m.rows_per_second / around
            );
        }
    }
    println!();
    println!(
        "Setlist overhead per hop = (p50 − compute p50 − hops × broker floor p50) / hops, with hops = stages + 2 Kafka transfers (client → stage 0 → … → shard → results). Each setup's throughput is compared with the mean of the whole model's, measured just before and just after it: this machine's speed drifts."
    );
    Ok(())
}
