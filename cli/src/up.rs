//! `setlist up`: the whole system on one machine. An embedded Kafka broker
//! (librdkafka's mock cluster, real protocol on loopback) unless `--kafka`
//! names a real one; the demo model, trained and sliced on first run and
//! cached; one process per stage and output shard; the dispatcher. Children
//! that die are restarted (as Kubernetes would). Ctrl-C stops the children
//! (a second one kills them at once), then the broker; the children also die
//! with `setlist up` if it is killed.

use crate::broker::Broker;
use crate::scrape::{self, ScrapeFiles};
use crate::train::Forecast;
use anyhow::{Context, Result};
use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use setlist_core::dataset::synth::{self, SynthConfig};
use setlist_core::plan::{
    DEFAULT_MAX_BATCH_ROWS, DEFAULT_MAX_MESSAGE_BYTES, FrameBatch, PartitionPlan,
};
use setlist_core::progress::Progress;
use setlist_core::slice::{self, Part, SliceManifest};
use setlist_core::topics::Topics;
use setlist_model::artifact::Model;
use setlist_model::train::{self, TrainSpec};
use setlist_service::shutdown::PARENT_PID_VAR;
use setlist_service::slices::{SliceSource, Wanted};
use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[derive(Args, Clone)]
pub struct UpArgs {
    /// A real Kafka cluster (HOST:PORT[,…]) instead of the embedded broker.
    #[arg(long)]
    kafka: Option<String>,
    /// A librdkafka setting for every process, KEY=VALUE (repeatable).
    #[arg(long = "kafka-set")]
    kafka_set: Vec<String>,
    /// With --kafka: give each node its name as a static consumer-group
    /// identity, so a restarted node takes its partitions back without a
    /// rebalance. Needs a broker that implements KIP-345 well (Apache Kafka
    /// 2.3 or later; not tansu 0.6). Always on with the embedded broker.
    #[arg(long, requires = "kafka")]
    static_membership: bool,
    /// Serve this trained model (sliced on start) instead of the demo model.
    #[arg(long, conflicts_with = "slices")]
    model: Option<PathBuf>,
    /// Serve these slices as they are: a directory, or a URI where `setlist
    /// publish` put them (file:///abs/dir, http(s)://host/path,
    /// s3://bucket/prefix, gs://bucket/prefix, az://container/prefix); every
    /// process then fetches only what it needs into
    /// ~/.cache/setlist/slice-cache.
    #[arg(long)]
    slices: Option<SliceSource>,
    #[arg(long, default_value_t = 3)]
    stages: u32,
    #[arg(long, default_value_t = 2)]
    output_shards: u32,
    /// Compute nodes per stage and per shard.
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// Partitions of each stage topic (at least the replicas): room for 16
    /// replicas per part. At 200 requests/s on the embedded broker 16 gave
    /// p99 21–55 ms and 4 gave 32 ms (docs/benchmarks.md: the machine's
    /// spread is wider than the difference); each partition holds up to
    /// 5 MiB there, so more cost memory, and more than 16 cost latency at
    /// low rates.
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    #[arg(long, default_value = "127.0.0.1:8080")]
    dispatcher_listen: String,
    /// Where the listener's page and the search API listen.
    #[arg(long, default_value = "127.0.0.1:8081")]
    search_listen: String,
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
    /// Extra flags for the search API.
    #[arg(long = "search-arg", allow_hyphen_values = true)]
    search_args: Vec<String>,
    /// Where logs (and derived slices) go; default ~/.cache/setlist/up.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Print the running system as one JSON line on stdout (for scripts and tests).
    #[arg(long)]
    json: bool,
    /// Seconds every process gets to become ready before `up` gives up.
    #[arg(long, default_value_t = 120)]
    ready_timeout: u64,
    /// Also start a Prometheus (Debian's `prometheus` on PATH) that scrapes
    /// every process and evaluates the alert rules: the SRE's view of this
    /// machine. Without it, `up` still writes the targets and a
    /// configuration under the work dir's `prometheus/` for your own.
    #[arg(long)]
    prometheus: bool,
    #[arg(long, default_value = "127.0.0.1:9090")]
    prometheus_listen: String,
    /// Seconds between scrapes (and rule evaluations).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    scrape_interval: u64,
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
    const DEMO_VERSION: &str = "v4";
    let demos = cache_dir().join("demo");
    let dir = demos.join(DEMO_VERSION);
    let model = dir.join("model");
    if model.join("manifest.json").exists() {
        return Ok(model);
    }
    say(format_args!(
        "training the demo model once, on one thread: about a minute where a core is free (more exactly once the first steps are timed); it is cached in {}",
        dir.display()
    ));
    // One libtorch thread: the demo is the same model on every machine (the
    // thread count changes the weights), and with no OpenMP worker threads
    // none can spin against other work. On a busy machine that is faster
    // than two threads, and on an idle one not much slower
    // (docs/benchmarks.md).
    tch::set_num_threads(1);
    let started = Instant::now();
    let data = synth::generate(&SynthConfig::default());
    let mut spec = TrainSpec::default();
    spec.model.embedding_dim = 64;
    spec.model.hidden_dim = 64;
    spec.training.epochs = 6;
    let forecast = Forecast::new(progress, spec.training.epochs);
    let trained = train::train_model(&data, &spec, &forecast)?;
    say(format_args!(
        "trained the demo model in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
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

/// Where `up` and its children keep slices fetched from a URI.
pub fn slice_cache_dir() -> PathBuf {
    cache_dir().join("slice-cache")
}

/// How long stopping waits for children to exit on their own (nodes commit
/// and leave their consumer group) before it kills what is left.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// A child that died is started again after this pause, so one that cannot
/// start does not spin.
const RESTART_DELAY: Duration = Duration::from_millis(500);

/// SIGINT and SIGTERM, counted: the first asks for a graceful stop, a second
/// one (an impatient Ctrl-C) for killing what is still running at once. The
/// default value counts nothing: signals keep their default action.
#[derive(Clone, Default)]
pub struct StopSignals(Arc<AtomicU32>);

impl StopSignals {
    /// Catches SIGINT and SIGTERM from now on, counting them on `runtime`.
    pub fn catch(runtime: &tokio::runtime::Runtime) -> Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        // Installed here, before the first child starts, so no signal can
        // come between the children's start and the handler.
        let _context = runtime.enter();
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let signals = StopSignals::default();
        let count = signals.0.clone();
        runtime.spawn(async move {
            loop {
                tokio::select! {
                    _ = interrupt.recv() => {},
                    _ = terminate.recv() => {},
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(signals)
    }

    pub fn stop_requested(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= 1
    }

    pub fn kill_requested(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= 2
    }
}

/// One supervised child process; restarted in place when it dies.
pub struct Process {
    pub name: String,
    command: Vec<String>,
    pub log: PathBuf,
    pub url: String,
    child: Child,
    /// When the child was seen to have exited, until it is started again.
    exited_at: Option<Instant>,
    restarts: u32,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child still runs. Reaps it once it has exited (and
    /// remembers its status), so a dead child is never left a zombie and its
    /// pid, free for reuse, is never signalled again.
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// Every process one run has started, restarted ones included. Stopping
/// (`stop`, or dropping this on any way out: an error or a panic during
/// start-up, a failed restart) signals each one, waits for it with a bound,
/// kills and reaps what is left: no path out of `setlist up` leaves a child.
///
/// Children are started from the thread that owns this, which must live as
/// long as the process (the main thread): the kernel sends a child its
/// parent-death signal when the *thread* that started it ends.
pub struct Children {
    processes: Vec<Process>,
    signals: StopSignals,
}

impl Children {
    /// No children yet; a second stop signal counted by `signals` cuts a
    /// stop's grace short.
    pub fn new(signals: StopSignals) -> Children {
        Children {
            processes: Vec::new(),
            signals,
        }
    }

    /// Starts `command`, its output appended to `log`.
    pub fn spawn(
        &mut self,
        name: String,
        command: Vec<String>,
        log: PathBuf,
        url: String,
    ) -> Result<()> {
        let child = start(&command, &log)?;
        self.processes.push(Process {
            name,
            command,
            log,
            url,
            child,
            exited_at: None,
            restarts: 0,
        });
        Ok(())
    }

    pub fn processes(&self) -> &[Process] {
        &self.processes
    }

    /// A child that has exited, with its status, if any has.
    pub fn exited(&mut self) -> Option<(&Process, ExitStatus)> {
        let i = self
            .processes
            .iter_mut()
            .position(|p| p.exit_status().is_some())?;
        let status = self.processes[i].exit_status()?;
        Some((&self.processes[i], status))
    }

    /// Starts again each child that exited at least [`RESTART_DELAY`] ago,
    /// as Kubernetes would restart a pod's container.
    pub fn restart_exited(&mut self) -> Result<()> {
        for p in &mut self.processes {
            let Some(status) = p.exit_status() else {
                continue;
            };
            let exited_at = *p.exited_at.get_or_insert_with(|| {
                say(format_args!("{} exited ({status}); restarting it", p.name));
                Instant::now()
            });
            if exited_at.elapsed() >= RESTART_DELAY {
                p.child = start(&p.command, &p.log)
                    .with_context(|| format!("cannot restart {}", p.name))?;
                p.exited_at = None;
                p.restarts += 1;
                say(format_args!(
                    "{} restarted (restart {})",
                    p.name, p.restarts
                ));
            }
        }
        Ok(())
    }

    /// Stops every child: SIGTERM (the latest started first, so the
    /// dispatcher stops taking requests before the nodes go), up to
    /// [`STOP_GRACE`] for them to exit, then SIGKILL for the rest; every
    /// child is reaped.
    pub fn stop(&mut self) {
        self.stop_within(STOP_GRACE);
    }

    fn stop_within(&mut self, grace: Duration) {
        for p in self.processes.iter_mut().rev() {
            if p.running() {
                let _ = kill(Pid::from_raw(p.pid() as i32), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while self.processes.iter_mut().any(Process::running)
            && Instant::now() < deadline
            && !self.signals.kill_requested()
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let why = if self.signals.kill_requested() {
            "a second signal came"
        } else {
            "it did not stop in time"
        };
        for p in &mut self.processes {
            if !p.running() {
                continue;
            }
            say(format_args!("killing {}: {why}", p.name));
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        self.processes.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `command` with its output appended to `log`, in a process group
/// of its own (a Ctrl-C in the terminal reaches `setlist up` alone, which
/// stops the children in order and keeps the broker until they are gone),
/// and told through [`PARENT_PID_VAR`] to die with this process, even if
/// this one is killed.
fn start(command: &[String], log: &Path) -> Result<Child> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    Command::new(&command[0])
        .args(&command[1..])
        .env(PARENT_PID_VAR, std::process::id().to_string())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot start {}", command[0]))
}

/// A line on stderr that never fails: after a Ctrl-C on `setlist up | tee`,
/// stderr may be a pipe whose reader is gone, and a panicking `eprintln!`
/// would skip stopping the children.
fn say(line: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr(), "setlist: {line}");
}

/// What a child said before it exited, from its log: the `Error: …` line a
/// failing Rust `main` prints (a backtrace may follow it), or else the last
/// lines.
fn last_words(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    match lines.iter().rposition(|l| l.starts_with("Error: ")) {
        Some(i) => lines[i].to_string(),
        None => lines[lines.len().saturating_sub(5)..].join("\n"),
    }
}

#[derive(Serialize)]
struct Running<'a> {
    kafka: &'a str,
    model_version: &'a str,
    slices: &'a Path,
    dispatcher: String,
    /// The listener's page (and the search API under it).
    page: String,
    /// The Prometheus started with `--prometheus`.
    prometheus: Option<String>,
    /// Prometheus file-SD targets: every process's /metrics.
    scrape_targets: &'a Path,
    /// A Prometheus configuration reading them, with the alert rules.
    scrape_config: &'a Path,
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
    pub slices: &'a SliceSource,
    pub kafka: &'a str,
    pub namespace: &'a str,
    pub cluster: &'a str,
    pub kafka_set: &'a [String],
    /// The nodes' consumer-group session timeout (the broker's to choose).
    pub session_timeout_ms: u32,
    /// Whether each node's name is its static group identity (see
    /// `Broker::static_membership`).
    pub static_membership: bool,
}

impl PipelineFlags<'_> {
    /// The command line of `bin` (a node or the dispatcher) with these flags.
    pub fn command(&self, bin: &Path) -> Vec<String> {
        let mut command = vec![
            bin.display().to_string(),
            format!("--slices={}", self.slices),
            format!("--kafka={}", self.kafka),
            format!("--namespace={}", self.namespace),
            format!("--cluster={}", self.cluster),
        ];
        if let SliceSource::Remote(_) = self.slices {
            // The cache `up` fetched the manifest and catalogue into: the
            // dispatcher and the search API find them there.
            command.push(format!("--slice-cache={}", slice_cache_dir().display()));
        }
        command.extend(self.kafka_set.iter().map(|s| format!("--kafka-set={s}")));
        command
    }

    /// A compute node's command line: these flags, its part, its address,
    /// and, with static membership, `name` as its group identity, which a
    /// restarted node keeps.
    pub fn node_command(&self, bin: &Path, part: Part, listen: &str, name: &str) -> Vec<String> {
        let mut command = self.command(bin);
        command.extend([
            format!("--part={part}"),
            format!("--listen={listen}"),
            format!("--session-timeout-ms={}", self.session_timeout_ms),
        ]);
        if self.static_membership {
            command.push(format!("--instance-id={name}"));
        }
        command
    }
}

pub const NODE_BINARY: &str = "setlist-node";
pub const DISPATCHER_BINARY: &str = "setlist-dispatcher";
pub const SEARCH_BINARY: &str = "setlist-search";
/// Every binary `setlist up` starts, each found next to `setlist` itself.
/// The `setlist` script builds every binary of the workspace; a unit test
/// checks that each one here is a workspace binary and that the script builds
/// them all. A new child binary is one more name here.
pub const CHILD_BINARIES: [&str; 3] = [NODE_BINARY, DISPATCHER_BINARY, SEARCH_BINARY];

/// `names`, next to this executable: where `cargo build` puts the
/// workspace's binaries.
pub fn siblings<const N: usize>(names: [&str; N]) -> Result<[PathBuf; N]> {
    siblings_of(&std::env::current_exe()?, names)
}

/// `names` next to `exe`, or one error that names every one missing and
/// says how to build them.
fn siblings_of<const N: usize>(exe: &Path, names: [&str; N]) -> Result<[PathBuf; N]> {
    let paths = names.map(|name| exe.with_file_name(name));
    let missing: Vec<&str> = names
        .iter()
        .zip(&paths)
        .filter(|(_, path)| !path.exists())
        .map(|(name, _)| *name)
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "{} {} missing next to {}: run `./setlist up` from the repository, which builds every binary, or `cargo build --release --workspace --bins`",
        missing.join(" and "),
        if missing.len() == 1 { "is" } else { "are" },
        exe.display()
    );
    Ok(paths)
}

pub fn ready(url: &str) -> bool {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(500)))
        .build()
        .new_agent();
    agent.get(&format!("{url}/readyz")).call().is_ok()
}

/// Refuses, before any process starts, a plan one of whose requests cannot
/// fit the nodes' Kafka messages (they would each refuse their slice): with
/// the message size and precision the nodes will run with.
fn check_frames_fit(manifest: &SliceManifest, node_args: &[String]) -> Result<()> {
    let given = |flag: &str| {
        node_args.iter().find_map(|a| {
            a.strip_prefix(flag)?
                .strip_prefix('=')?
                .parse::<usize>()
                .ok()
        })
    };
    let max_message_bytes = given("--max-message-bytes").unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
    let batch = FrameBatch {
        rows: given("--max-batch-rows").unwrap_or(DEFAULT_MAX_BATCH_ROWS),
        half_precision: node_args.iter().any(|a| a == "--half-precision"),
    };
    for link in manifest.plan.frame_sizes(&manifest.config, batch) {
        link.check(max_message_bytes, "--node-arg=--max-message-bytes")?;
    }
    Ok(())
}

pub fn run(args: UpArgs, progress: &dyn Progress) -> Result<()> {
    let [node_bin, dispatcher_bin, search_bin] = siblings(CHILD_BINARIES)?;
    let prometheus_bin = args.prometheus.then(scrape::find_prometheus).transpose()?;
    let source = match (&args.slices, &args.model) {
        (Some(s), _) => s.clone(),
        (None, Some(m)) => SliceSource::Local(slices_for(m, args.stages, args.output_shards)?),
        (None, None) => SliceSource::Local(slices_for(
            &demo_model(progress)?,
            args.stages,
            args.output_shards,
        )?),
    };
    // The manifest gives the plan and the topics; the catalogue is for the
    // tools that read the printed `slices` folder (`setlist bench recovery`).
    let fetched = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(source.fetch(&slice_cache_dir(), Wanted::Catalogue, None))?;
    if let SliceSource::Remote(_) = source {
        say(format_args!(
            "fetched the manifest and catalogue of {source} into {}",
            fetched.set.dir.display()
        ));
    }
    let set = fetched.set;
    let manifest = &set.manifest;
    let stages = manifest.plan.stages.len() as u32;
    let topics = Topics::new(&args.namespace, &args.cluster, &manifest.model_version)?;
    check_frames_fit(manifest, &args.node_args)?;
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

    // The embedded broker lives in this process, as long as `broker`.
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
        slices: &source,
        kafka: &kafka,
        namespace: &args.namespace,
        cluster: &args.cluster,
        kafka_set: &args.kafka_set,
        session_timeout_ms: broker.session_timeout_ms(),
        static_membership: broker.static_membership(args.static_membership),
    };

    // One background worker counts signals while this thread supervises.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let signals = StopSignals::catch(&runtime)?;
    // Declared after the broker, so on every way out of this function the
    // children are stopped (when this drops) before the broker they use.
    let mut children = Children::new(signals.clone());
    let mut port = args.node_port_base;
    for part in slice::parts(&manifest.plan) {
        for replica in 0..args.replicas {
            let name = format!("{part}-{replica}");
            let listen = format!("127.0.0.1:{port}");
            port += 1;
            let mut command = pipeline.node_command(&node_bin, part, &listen, &name);
            command.extend(args.node_args.iter().cloned());
            children.spawn(
                name.clone(),
                command,
                logs.join(format!("{name}.log")),
                format!("http://{listen}"),
            )?;
        }
    }
    let mut command = pipeline.command(&dispatcher_bin);
    command.push(format!("--listen={}", args.dispatcher_listen));
    command.extend(args.dispatcher_args.iter().cloned());
    let dispatcher_url = format!("http://{}", args.dispatcher_listen);
    children.spawn(
        "dispatcher".into(),
        command,
        logs.join("dispatcher.log"),
        dispatcher_url.clone(),
    )?;

    let mut command = pipeline.command(&search_bin);
    command.extend([
        format!("--dispatcher={dispatcher_url}"),
        format!("--listen={}", args.search_listen),
        // One index per catalogue, built on the first start and reused.
        format!("--index-dir={}", cache_dir().join("index").display()),
    ]);
    command.extend(args.search_args.iter().cloned());
    let page_url = format!("http://{}/", args.search_listen);
    children.spawn(
        "search".into(),
        command,
        logs.join("search.log"),
        format!("http://{}", args.search_listen),
    )?;

    let scrape_files = ScrapeFiles::write(
        &work.join("prometheus"),
        children
            .processes()
            .iter()
            .map(|p| (p.name.as_str(), p.url.as_str())),
        Duration::from_secs(args.scrape_interval),
    )?;
    let started = Instant::now();
    wait_until_ready(
        &mut children,
        &signals,
        Duration::from_secs(args.ready_timeout),
        &logs,
    )?;
    let prometheus_url = match &prometheus_bin {
        Some(bin) => {
            let url = format!("http://{}", args.prometheus_listen);
            children.spawn(
                "prometheus".into(),
                scrape_files.server_command(
                    bin,
                    &args.prometheus_listen,
                    &work.join("prometheus").join("data"),
                ),
                logs.join("prometheus.log"),
                url.clone(),
            )?;
            wait_for_prometheus(&mut children, &url, Duration::from_secs(args.ready_timeout))?;
            Some(url)
        }
        None => None,
    };
    let running = Running {
        kafka: &kafka,
        model_version: &manifest.model_version,
        slices: &set.dir,
        dispatcher: dispatcher_url.clone(),
        page: page_url.clone(),
        prometheus: prometheus_url.clone(),
        scrape_targets: &scrape_files.targets,
        scrape_config: &scrape_files.config,
        processes: children
            .processes()
            .iter()
            .map(|p| RunningProcess {
                name: &p.name,
                pid: p.pid(),
                url: &p.url,
                log: &p.log,
            })
            .collect(),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&running)?)?;
    } else {
        writeln!(
            out,
            "Setlist is up ({:.1} s): model {}, {} stages, {} output shards",
            started.elapsed().as_secs_f64(),
            manifest.model_version,
            stages,
            manifest.plan.output_shards.len()
        )?;
        writeln!(out, "  listener page    {page_url}")?;
        writeln!(
            out,
            "  recommendations  POST {dispatcher_url}/v1/recommendations"
        )?;
        writeln!(
            out,
            "  status           {dispatcher_url}/v1/status   metrics {dispatcher_url}/metrics"
        )?;
        writeln!(
            out,
            "  kafka            {kafka}{}",
            if broker.is_embedded() {
                " (embedded)"
            } else {
                ""
            }
        )?;
        match &prometheus_url {
            Some(url) => writeln!(
                out,
                "  prometheus       {url}   alerts {url}/alerts   targets {url}/targets"
            )?,
            None => writeln!(
                out,
                "  scrape targets   {}   (prometheus --config.file={}, or up --prometheus)",
                scrape_files.targets.display(),
                scrape_files.config.display()
            )?,
        }
        for p in running
            .processes
            .iter()
            .filter(|p| !["dispatcher", "search", "prometheus"].contains(&p.name))
        {
            writeln!(
                out,
                "  {:<16} {}/metrics  log {}",
                p.name,
                p.url,
                p.log.display()
            )?;
        }
        writeln!(out, "Press Ctrl-C to stop (twice to kill at once).")?;
    }
    out.flush()?;
    drop(out);

    // Supervise: a child that dies is started again, as a pod would be.
    while !signals.stop_requested() {
        children.restart_exited()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    say(format_args!("stopping…"));
    children.stop();
    drop(broker);
    say(format_args!("stopped"));
    Ok(())
}

/// Waits until the Prometheus child answers `/-/ready`; fails if it exits
/// first or after `timeout`.
fn wait_for_prometheus(children: &mut Children, url: &str, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(500)))
        .build()
        .new_agent();
    while agent.get(&format!("{url}/-/ready")).call().is_err() {
        if let Some((p, status)) = children.exited() {
            anyhow::bail!(
                "{} exited while starting ({status}); its log {} says:\n{}",
                p.name,
                p.log.display(),
                last_words(&p.log)
            );
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "Prometheus did not answer {url}/-/ready within {} s",
            timeout.as_secs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Waits until every child answers /readyz. Fails, and so stops them all, if
/// one exits first, if a stop signal comes, or after `timeout`.
fn wait_until_ready(
    children: &mut Children,
    signals: &StopSignals,
    timeout: Duration,
    logs: &Path,
) -> Result<()> {
    let started = Instant::now();
    let mut waiting: Vec<usize> = (0..children.processes().len()).collect();
    while !waiting.is_empty() {
        anyhow::ensure!(
            !signals.stop_requested(),
            "stopped by a signal while starting"
        );
        if let Some((p, status)) = children.exited() {
            anyhow::bail!(
                "{} exited while starting ({status}); its log {} says:\n{}",
                p.name,
                p.log.display(),
                last_words(&p.log)
            );
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "not ready after {} s: {}; see the logs in {} (a busy machine may need a longer --ready-timeout)",
            timeout.as_secs(),
            waiting
                .iter()
                .map(|&i| children.processes()[i].name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            logs.display()
        );
        waiting.retain(|&i| !ready(&children.processes()[i].url));
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh scratch folder for one test (the CLI has no tempfile).
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("setlist-up-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Issue 7, item 10: a plan whose requests no node message can hold is
    /// refused before any process starts, naming what to change.
    #[test]
    fn frames_that_cannot_fit_a_message_stop_up_before_it_starts_anything() {
        let config = setlist_core::shape::ModelConfig {
            catalogue_size: 1_000,
            embedding_dim: 4_096,
            hidden_dim: 4_096,
            lstm_layers: 1,
            max_history: 50,
            residual: false,
        };
        let manifest = SliceManifest {
            format: setlist_core::slice::SLICES_FORMAT.into(),
            format_version: setlist_core::slice::FORMAT_VERSION,
            model_version: "mtest".into(),
            plan: PartitionPlan::new(&config, 2, 1).unwrap(),
            config,
            slices: Vec::new(),
            catalogue_sha256: String::new(),
        };
        // 50 positions of 4,096 f32 values are 800 KiB: under the 1 MB default.
        check_frames_fit(&manifest, &[]).unwrap();
        let error = check_frames_fit(&manifest, &["--max-message-bytes=500000".into()])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--node-arg=--max-message-bytes"), "{error}");
        let halves = [
            "--max-message-bytes=500000".into(),
            "--half-precision".into(),
        ];
        check_frames_fit(&manifest, &halves).unwrap();
    }

    fn sh(script: &str) -> Vec<String> {
        ["sh", "-c", script].map(String::from).to_vec()
    }

    /// Whether `pid` is a process at all, a zombie included (a child that
    /// exited and was not reaped keeps its /proc entry).
    fn exists(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }

    /// A process that ignores SIGTERM (the disposition survives `exec`).
    const IGNORES_SIGTERM: &str = "trap '' TERM; exec sleep 600";

    #[test]
    fn stopping_kills_and_reaps_a_child_that_ignores_sigterm() {
        let dir = scratch("ignores-sigterm");
        let mut children = Children::new(StopSignals::default());
        children
            .spawn(
                "stubborn".into(),
                sh(IGNORES_SIGTERM),
                dir.join("log"),
                String::new(),
            )
            .unwrap();
        children
            .spawn(
                "polite".into(),
                sh("exec sleep 600"),
                dir.join("log"),
                String::new(),
            )
            .unwrap();
        let pids: Vec<u32> = children.processes().iter().map(Process::pid).collect();
        children.stop_within(Duration::from_millis(500));
        for pid in pids {
            assert!(!exists(pid), "process {pid} is still there, or a zombie");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_second_signal_kills_without_waiting_for_the_grace() {
        let dir = scratch("second-signal");
        let signals = StopSignals(Arc::new(AtomicU32::new(2)));
        let mut children = Children::new(signals);
        children
            .spawn(
                "stubborn".into(),
                sh(IGNORES_SIGTERM),
                dir.join("log"),
                String::new(),
            )
            .unwrap();
        let pid = children.processes()[0].pid();
        let started = Instant::now();
        children.stop_within(Duration::from_secs(3600));
        // Generous: the grace is an hour; killing takes milliseconds.
        assert!(started.elapsed() < Duration::from_secs(60));
        assert!(!exists(pid));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn dropping_the_children_stops_them() {
        let dir = scratch("drop");
        let mut children = Children::new(StopSignals::default());
        children
            .spawn(
                "sleeper".into(),
                sh("exec sleep 600"),
                dir.join("log"),
                String::new(),
            )
            .unwrap();
        let pid = children.processes()[0].pid();
        drop(children);
        assert!(!exists(pid), "dropping the children left {pid}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_child_knows_its_parent_and_has_its_own_process_group() {
        let dir = scratch("parent");
        let log = dir.join("log");
        let mut children = Children::new(StopSignals::default());
        // Field 5 of /proc/self/stat is the process group.
        let script = format!("echo ${PARENT_PID_VAR} $(cut -d' ' -f5 /proc/$$/stat) $$");
        children
            .spawn("teller".into(), sh(&script), log.clone(), String::new())
            .unwrap();
        while children.exited().is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = std::fs::read_to_string(&log).unwrap();
        let words: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(words[0], std::process::id().to_string(), "{text}");
        assert_eq!(words[1], words[2], "the child leads its own group: {text}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_restarted_child_is_stopped_too() {
        let dir = scratch("restart");
        let marker = dir.join("started-once");
        // Exits the first time, runs (until stopped) the second.
        let script = format!(
            "test -e {0} || {{ touch {0}; exit 3; }}; exec sleep 600",
            marker.display()
        );
        let mut children = Children::new(StopSignals::default());
        children
            .spawn("flaky".into(), sh(&script), dir.join("log"), String::new())
            .unwrap();
        let first = children.processes()[0].pid();
        let started = Instant::now();
        while children.processes()[0].restarts == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "never restarted"
            );
            children.restart_exited().unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let second = children.processes()[0].pid();
        assert_ne!(first, second);
        assert!(!exists(first), "the first run was reaped");
        children.stop_within(Duration::from_secs(5));
        assert!(!exists(second), "the restarted child was stopped");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The workspace's binary targets, from `cargo metadata`.
    fn workspace_binaries(root: &Path) -> Vec<String> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["metadata", "--no-deps", "--format-version=1", "--offline"])
            .current_dir(root)
            .output()
            .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().unwrap())
            .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// The arguments of every `cargo` command the `setlist` script runs for
    /// `setlist --version`, recorded by a stand-in `cargo` first on PATH.
    fn cargo_commands_of_the_script(root: &Path, dir: &Path) -> Vec<Vec<String>> {
        let record = dir.join("cargo-commands");
        let fake = dir.join("bin");
        std::fs::create_dir_all(&fake).unwrap();
        let cargo = fake.join("cargo");
        std::fs::write(
            &cargo,
            format!("#!/bin/sh\nprintf '%s\\n' \"$*\" >> {}\n", record.display()),
        )
        .unwrap();
        std::fs::set_permissions(&cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap());
        let out = Command::new(root.join("setlist"))
            .arg("--version")
            .env("PATH", path)
            .output()
            .expect("the setlist script runs");
        let text = std::fs::read_to_string(&record).unwrap_or_else(|_| {
            panic!(
                "the script ran no cargo command ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        text.lines()
            .map(|l| l.split_whitespace().map(String::from).collect())
            .collect()
    }

    #[test]
    fn every_child_binary_is_a_workspace_binary_that_the_setlist_script_builds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let binaries = workspace_binaries(root);
        for name in CHILD_BINARIES {
            assert!(
                binaries.iter().any(|b| b == name),
                "setlist up starts {name}, which is not a binary of the workspace ({binaries:?})"
            );
        }
        // The script builds every workspace binary, not a list of its own.
        let dir = scratch("script");
        let commands = cargo_commands_of_the_script(root, &dir);
        let builds: Vec<&Vec<String>> = commands.iter().filter(|c| c[0] == "build").collect();
        assert_eq!(builds.len(), 1, "one build: {commands:?}");
        for flag in ["--release", "--workspace", "--bins"] {
            assert!(
                builds[0].iter().any(|a| a == flag),
                "no {flag} in {:?}",
                builds[0]
            );
        }
        let _ = std::fs::remove_dir_all(dir);
        // And `up` finds each one where that build puts it, next to `setlist`
        // (this test runs from target/<profile>/deps/).
        let exe = std::env::current_exe().unwrap();
        let profile = exe.parent().and_then(Path::parent).unwrap();
        if let Err(error) = siblings_of(&profile.join("setlist"), CHILD_BINARIES) {
            panic!(
                "{error:#} (the end-to-end tests need them too: `cargo build --release --workspace --bins`)"
            );
        }
    }
}
