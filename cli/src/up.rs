//! `setlist up`: the whole system on one machine. An embedded Kafka broker
//! (librdkafka's mock cluster, real protocol on loopback) unless `--kafka`
//! names a real one; the demo model, trained and sliced on first run and
//! cached; one process per stage and output shard; the dispatcher. Children
//! that die are restarted (as Kubernetes would); Ctrl-C stops everything.

use crate::broker::Broker;
use anyhow::{Context, Result};
use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use setlist_core::dataset::synth::{self, SynthConfig};
use setlist_core::plan::PartitionPlan;
use setlist_core::progress::Progress;
use setlist_core::slice::{self, Part, SliceSet};
use setlist_core::topics::Topics;
use setlist_model::artifact::Model;
use setlist_model::train::{self, TrainSpec};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Args, Clone)]
pub struct UpArgs {
    /// A real Kafka cluster (HOST:PORT[,…]) instead of the embedded broker.
    #[arg(long)]
    kafka: Option<String>,
    /// A librdkafka setting for every process, KEY=VALUE (repeatable).
    #[arg(long = "kafka-set")]
    kafka_set: Vec<String>,
    /// Serve this trained model (sliced on start) instead of the demo model.
    #[arg(long, conflicts_with = "slices")]
    model: Option<PathBuf>,
    /// Serve these slices as they are.
    #[arg(long)]
    slices: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    stages: u32,
    #[arg(long, default_value_t = 2)]
    output_shards: u32,
    /// Compute nodes per stage and per shard.
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// Partitions of each stage topic (at least the replicas).
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    #[arg(long, default_value = "127.0.0.1:8080")]
    dispatcher_listen: String,
    /// Nodes listen on consecutive ports from this one.
    #[arg(long, default_value_t = 9100)]
    node_port_base: u16,
    #[arg(long, default_value = "default")]
    namespace: String,
    #[arg(long, default_value = "local")]
    cluster: String,
    /// Extra flags for every compute node (e.g. "--max-wait-ms=0").
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// Extra flags for the dispatcher.
    #[arg(long = "dispatcher-arg", allow_hyphen_values = true)]
    dispatcher_args: Vec<String>,
    /// Where logs (and derived slices) go; default ~/.cache/setlist/up.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Print the running system as one JSON line on stdout (for scripts and tests).
    #[arg(long)]
    json: bool,
}

/// The cache for the demo model and derived artifacts.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SETLIST_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/setlist")))
        .unwrap_or_else(|| PathBuf::from(".setlist-cache"))
}

/// The demo: a seeded synthetic catalogue and a small model, trained once and
/// cached; the same on every machine.
pub fn demo_model(progress: &dyn Progress) -> Result<PathBuf> {
    // Bumped whenever the demo's training changes, so no stale model is served.
    const DEMO_VERSION: &str = "v2";
    let demos = cache_dir().join("demo");
    let dir = demos.join(DEMO_VERSION);
    let model = dir.join("model");
    if model.join("manifest.json").exists() {
        return Ok(model);
    }
    eprintln!(
        "setlist: training the demo model once (about a minute); it is cached in {}",
        dir.display()
    );
    let data = synth::generate(&SynthConfig::default());
    let mut spec = TrainSpec::default();
    spec.model.embedding_dim = 64;
    spec.model.hidden_dim = 64;
    spec.training.epochs = 6;
    let trained = train::train_model(&data, &spec, progress)?;
    std::fs::create_dir_all(&dir)?;
    let _ = std::fs::remove_dir_all(&model);
    Model::save(
        &model,
        &trained.config,
        &trained.weights,
        &trained.catalogue,
        &trained.record,
    )?;
    // Older versions' demo models are never read again.
    for entry in std::fs::read_dir(&demos)?.flatten() {
        if entry.file_name() != DEMO_VERSION {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(model)
}

/// Slices `model` by the plan, once per model version and plan.
pub fn slices_for(model_dir: &Path, stages: u32, shards: u32) -> Result<PathBuf> {
    let model = Model::load(model_dir)
        .with_context(|| format!("cannot load the model {}", model_dir.display()))?;
    let out = cache_dir().join("slices").join(format!(
        "{}-{stages}x{shards}",
        model.manifest.model_version
    ));
    if !out.join("manifest.json").exists() {
        let plan = PartitionPlan::new(&model.config, stages, shards)?;
        let _ = std::fs::remove_dir_all(&out);
        setlist_model::slice::write_slices(&model, &plan, &out)?;
    }
    Ok(out)
}

/// One supervised child process.
pub struct Process {
    pub name: String,
    command: Vec<String>,
    pub log: PathBuf,
    pub url: String,
    child: Child,
    restarts: u32,
}

impl Process {
    pub fn spawn(name: String, command: Vec<String>, log: PathBuf, url: String) -> Result<Process> {
        let child = start(&command, &log)?;
        Ok(Process {
            name,
            command,
            log,
            url,
            child,
            restarts: 0,
        })
    }
}

fn start(command: &[String], log: &Path) -> Result<Child> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot start {}", command[0]))
}

/// Asks every process to stop (SIGTERM: nodes commit and leave their
/// group), waits up to 10 s, then kills what is left.
pub fn stop_all(processes: &mut [Process]) {
    for p in processes.iter() {
        let _ = kill(Pid::from_raw(p.child.id() as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for p in processes.iter_mut() {
        while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(p.child.try_wait(), Ok(None)) {
            eprintln!("setlist: {} did not stop in 10 s; killing it", p.name);
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

#[derive(Serialize)]
struct Running<'a> {
    kafka: &'a str,
    model_version: &'a str,
    slices: &'a Path,
    dispatcher: String,
    processes: Vec<RunningProcess<'a>>,
}

#[derive(Serialize)]
struct RunningProcess<'a> {
    name: &'a str,
    pid: u32,
    url: &'a str,
    log: &'a Path,
}

/// The flags every process of one pipeline gets: its slices, its broker
/// and client settings, and whose topics it uses.
pub struct PipelineFlags<'a> {
    pub slices: &'a Path,
    pub kafka: &'a str,
    pub namespace: &'a str,
    pub cluster: &'a str,
    pub kafka_set: &'a [String],
}

impl PipelineFlags<'_> {
    /// The command line of `bin` (a node or the dispatcher) with these flags.
    pub fn command(&self, bin: &Path) -> Vec<String> {
        let mut command = vec![
            bin.display().to_string(),
            format!("--slices={}", self.slices.display()),
            format!("--kafka={}", self.kafka),
            format!("--namespace={}", self.namespace),
            format!("--cluster={}", self.cluster),
        ];
        command.extend(self.kafka_set.iter().map(|s| format!("--kafka-set={s}")));
        command
    }

    /// A compute node's command line: these flags, its part and its address.
    pub fn node_command(&self, bin: &Path, part: Part, listen: &str) -> Vec<String> {
        let mut command = self.command(bin);
        command.extend([format!("--part={part}"), format!("--listen={listen}")]);
        command
    }
}

pub fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing next to {}; build the workspace (`cargo build --release --workspace`)",
        name,
        exe.display()
    );
    Ok(path)
}

pub fn ready(url: &str) -> bool {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(500)))
        .build()
        .new_agent();
    agent.get(&format!("{url}/readyz")).call().is_ok()
}

pub fn run(args: UpArgs, progress: &dyn Progress) -> Result<()> {
    // One background worker runs the signal listener while this thread supervises.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let node_bin = sibling("setlist-node")?;
    let dispatcher_bin = sibling("setlist-dispatcher")?;
    let slices = match (&args.slices, &args.model) {
        (Some(s), _) => s.clone(),
        (None, Some(m)) => slices_for(m, args.stages, args.output_shards)?,
        (None, None) => slices_for(&demo_model(progress)?, args.stages, args.output_shards)?,
    };
    let set = SliceSet::open(&slices, None)?;
    let manifest = &set.manifest;
    let stages = manifest.plan.stages.len() as u32;
    let topics = Topics::new(&args.namespace, &args.cluster, &manifest.model_version)?;
    anyhow::ensure!(
        args.partitions >= args.replicas,
        "--partitions ({}) must be at least --replicas ({}): a replica with no partition idles",
        args.partitions,
        args.replicas
    );
    let topic_partitions: Vec<(String, u32)> = (0..=stages)
        .map(|k| (topics.stage(k), args.partitions))
        .chain([
            (topics.results(), 1),
            (topics.interactions(), 1),
            (topics.dead_letter(), 1),
        ])
        .collect();

    // The embedded broker lives as long as this function.
    let broker = Broker::new(args.kafka.as_deref(), &args.kafka_set)?;
    broker.create_topics(&topic_partitions)?;
    let kafka = broker.bootstrap_servers().to_string();

    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(|| cache_dir().join("up"));
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let pipeline = PipelineFlags {
        slices: &slices,
        kafka: &kafka,
        namespace: &args.namespace,
        cluster: &args.cluster,
        kafka_set: &args.kafka_set,
    };
    let mut processes = Vec::new();
    let mut port = args.node_port_base;
    let parts: Vec<Part> = slice::parts(&manifest.plan).collect();
    for part in parts {
        for replica in 0..args.replicas {
            let name = format!("{part}-{replica}");
            let listen = format!("127.0.0.1:{port}");
            port += 1;
            let mut command = pipeline.node_command(&node_bin, part, &listen);
            command.extend(args.node_args.iter().cloned());
            processes.push(Process::spawn(
                name.clone(),
                command,
                logs.join(format!("{name}.log")),
                format!("http://{listen}"),
            )?);
        }
    }
    let mut command = pipeline.command(&dispatcher_bin);
    command.push(format!("--listen={}", args.dispatcher_listen));
    command.extend(args.dispatcher_args.iter().cloned());
    let dispatcher_url = format!("http://{}", args.dispatcher_listen);
    processes.push(Process::spawn(
        "dispatcher".into(),
        command,
        logs.join("dispatcher.log"),
        dispatcher_url.clone(),
    )?);

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    runtime.spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler installs");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        flag.store(true, Ordering::Relaxed);
    });
    let stopping = || stop.load(Ordering::Relaxed);

    let started = Instant::now();
    let mut waiting: Vec<usize> = (0..processes.len()).collect();
    while !waiting.is_empty() {
        anyhow::ensure!(!stopping(), "stopped while starting");
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "not ready after 120 s: {}; see the logs in {}",
            waiting
                .iter()
                .map(|&i| processes[i].name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            logs.display()
        );
        for p in processes.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                anyhow::bail!(
                    "{} exited while starting ({status}); see {}",
                    p.name,
                    p.log.display()
                );
            }
        }
        waiting.retain(|&i| !ready(&processes[i].url));
        std::thread::sleep(Duration::from_millis(200));
    }
    let running = Running {
        kafka: &kafka,
        model_version: &manifest.model_version,
        slices: &slices,
        dispatcher: dispatcher_url.clone(),
        processes: processes
            .iter()
            .map(|p| RunningProcess {
                name: &p.name,
                pid: p.child.id(),
                url: &p.url,
                log: &p.log,
            })
            .collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&running)?);
    } else {
        println!(
            "Setlist is up ({:.1} s): model {}, {} stages, {} output shards",
            started.elapsed().as_secs_f64(),
            manifest.model_version,
            stages,
            manifest.plan.output_shards.len()
        );
        println!("  recommendations  POST {dispatcher_url}/v1/recommendations");
        println!(
            "  status           {dispatcher_url}/v1/status   metrics {dispatcher_url}/metrics"
        );
        println!(
            "  kafka            {kafka}{}",
            if broker.is_embedded() {
                " (embedded)"
            } else {
                ""
            }
        );
        for p in &processes[..processes.len() - 1] {
            println!(
                "  {:<16} {}/metrics  log {}",
                p.name,
                p.url,
                p.log.display()
            );
        }
        println!("Press Ctrl-C to stop.");
    }

    // Supervise: a child that dies is started again, as a pod would be.
    while !stopping() {
        for p in processes.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                p.restarts += 1;
                eprintln!(
                    "setlist: {} exited ({status}); restarting it (restart {})",
                    p.name, p.restarts
                );
                std::thread::sleep(Duration::from_millis(500));
                p.child = start(&p.command, &p.log)?;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("setlist: stopping…");
    stop_all(&mut processes);
    drop(broker);
    Ok(())
}
