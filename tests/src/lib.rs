//! Helpers shared by the end-to-end tests: they run Setlist's real binaries,
//! built by `cargo build --release --workspace --bins` (which `./setlist
//! test` does before the tests).

pub mod chart;
pub mod k8s;
pub mod kubelet;
pub mod prometheus;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A workspace binary next to the test executable (`target/<profile>/`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --release --workspace --bins`, which `./setlist test` runs)",
        path.display()
    );
    path
}

/// Runs `setlist` with `args`; returns its output whatever the status.
pub fn setlist(args: &[&str]) -> Output {
    Command::new(binary("setlist"))
        .args(args)
        .output()
        .expect("setlist starts")
}

/// Runs `setlist` and fails the test, showing its stderr, unless it succeeds.
pub fn setlist_ok(args: &[&str]) -> String {
    let out = setlist(args);
    assert!(
        out.status.success(),
        "setlist {} failed with {}:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("setlist prints UTF-8")
}

/// The folder of real data sets, from `SETLIST_DATASETS`. Real-data tests
/// call this: without the variable they fail, loudly; `./setlist test`
/// leaves them out (and says so) where the folder does not exist.
pub fn datasets() -> PathBuf {
    let dir = std::env::var_os("SETLIST_DATASETS").map(PathBuf::from).expect(
        "SETLIST_DATASETS is not set: point it at the shared data sets (e.g. ../shared/datasets) or run `./setlist test`, which leaves real-data tests out when there is no data",
    );
    assert!(
        dir.is_dir(),
        "SETLIST_DATASETS={} is not a folder",
        dir.display()
    );
    dir
}

/// Runs `setlist evaluate --json` on a model and its data set; returns the
/// printed table and the metrics, one JSON object per ranker in order.
pub fn evaluate(model: &Path, data: &Path) -> (String, Vec<serde_json::Value>) {
    let json = model.with_extension("eval.json");
    let table = setlist_ok(&[
        "evaluate",
        "--model",
        path_str(model),
        "--data",
        path_str(data),
        "--json",
        path_str(&json),
    ]);
    let text = std::fs::read_to_string(&json).expect("evaluate wrote its --json file");
    let metrics = serde_json::from_str(&text).expect("evaluate's --json file is a JSON array");
    (table, metrics)
}

/// Every line of a JSON-lines file, parsed.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// A `setlist up` process on free ports with a cache of its own, maybe not
/// ready yet; stopped (SIGTERM, then SIGKILL) when dropped. Its stderr goes
/// to the test's stderr and is kept for assertions.
pub struct UpProcess {
    child: std::process::Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    cache: tempfile::TempDir,
}

impl UpProcess {
    /// Starts `setlist up --json --model MODEL ARGS…` on free ports (or
    /// `args`'s `--dispatcher-listen`).
    pub fn spawn(model: &Path, args: &[&str]) -> UpProcess {
        UpProcess::spawn_serving(["--model", path_str(model)], args)
    }

    /// Starts `setlist up --json SERVE ARGS…`, where `serve` is `--model
    /// DIR` or `--slices DIR|URI`, on free ports.
    pub fn spawn_serving(serve: [&str; 2], args: &[&str]) -> UpProcess {
        UpProcess::spawn_serving_with_env(serve, args, &[])
    }

    /// [`UpProcess::spawn_serving`] with `env` set for `setlist up` and so
    /// for every process it starts (`RUST_LOG`, say).
    pub fn spawn_serving_with_env(
        serve: [&str; 2],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> UpProcess {
        let cache = tempfile::tempdir().unwrap();
        let command = up_command_line_serving(serve, args, cache.path());
        let mut child = Command::new(&command[0])
            .args(&command[1..])
            .envs(env.iter().copied())
            .env("SETLIST_CACHE", cache.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("setlist up starts");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = std::io::BufReader::new(child.stderr.take().unwrap());
        let kept = stderr.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut line = String::new();
            while matches!(pipe.read_line(&mut line), Ok(n) if n > 0) {
                eprint!("{line}");
                kept.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        UpProcess {
            child,
            stderr,
            cache,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The run's cache folder: the demo model, slices and logs.
    pub fn cache(&self) -> &Path {
        self.cache.path()
    }

    /// The processes `setlist up` has started that are running now.
    pub fn children_now(&self) -> Vec<ProcessId> {
        processes_mentioning(self.cache())
            .into_iter()
            .filter(|p| p.pid != self.pid() as i32)
            .collect()
    }

    /// What `setlist up` has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal)
            .expect("setlist up can be signalled");
    }

    /// Waits until `setlist up` has exited; fails the test after `bound`.
    pub fn wait(&mut self, bound: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Its stderr is complete once the pipe closes; a moment is plenty.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(
                started.elapsed() < bound,
                "setlist up did not exit within {bound:?}; its processes' logs:\n{}",
                self.log_tails()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of every log of the run's processes.
    pub fn log_tails(&self) -> String {
        log_tails(&self.cache.path().join("up/logs"))
    }
}

/// The command line of `setlist up --json --model MODEL ARGS…` on free ports
/// (or `args`'s `--dispatcher-listen` and `--search-listen`), its logs under
/// `cache/up/logs`.
pub fn up_command_line(model: &Path, args: &[&str], cache: &Path) -> Vec<String> {
    up_command_line_serving(["--model", path_str(model)], args, cache)
}

/// [`up_command_line`] serving `serve`: `--model DIR` or `--slices DIR|URI`.
fn up_command_line_serving(serve: [&str; 2], args: &[&str], cache: &Path) -> Vec<String> {
    let ports = setlist_core::ports::free_loopback_ports(24).expect("24 free ports on loopback");
    let mut command: Vec<String> = [path_str(&binary("setlist")), "up", "--json"]
        .into_iter()
        .chain(serve)
        .map(String::from)
        .collect();
    if !args.iter().any(|a| a.starts_with("--dispatcher-listen")) {
        command.push(format!("--dispatcher-listen=127.0.0.1:{ports}"));
    }
    if !args.iter().any(|a| a.starts_with("--search-listen")) {
        // The last of the free ports: the nodes count up from the first.
        command.push(format!("--search-listen=127.0.0.1:{}", ports + 23));
    }
    command.push(format!("--node-port-base={}", ports + 1));
    command.push(format!("--work-dir={}", cache.join("up").display()));
    command.extend(args.iter().map(|a| a.to_string()));
    command
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        if std::thread::panicking() {
            // The logs go with the temporary folder: a failed test shows them.
            eprintln!("the logs of this run's processes:\n{}", self.log_tails());
        }
        let _ = kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            Signal::SIGTERM,
        );
        for _ in 0..300 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `setlist up`, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Up {
    /// The `setlist up` process itself.
    pub supervisor: UpProcess,
    /// The JSON line `setlist up --json` printed.
    pub info: serde_json::Value,
}

/// The last `count` lines of a text file; nothing where it cannot be read.
fn last_lines(path: &Path, count: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// The last lines of every log in `dir`, for a failure message.
pub fn log_tails(dir: &Path) -> String {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return format!("(no logs in {})", dir.display());
    };
    let mut tails = Vec::new();
    for entry in entries.flatten() {
        let tail = last_lines(&entry.path(), 20);
        tails.push(format!("== {}\n{tail}", entry.path().display()));
    }
    tails.sort();
    tails.join("\n")
}

impl Up {
    /// Starts `setlist up` with `args` on free ports and waits until it is ready.
    pub fn start(model: &Path, args: &[&str]) -> Up {
        Up::start_serving(["--model", path_str(model)], args)
    }

    /// [`Up::start`] serving `serve`: `--model DIR` or `--slices DIR|URI`.
    pub fn start_serving(serve: [&str; 2], args: &[&str]) -> Up {
        Up::start_serving_with_env(serve, args, &[])
    }

    /// [`Up::start_serving`] with `env` set for every process of the run.
    pub fn start_serving_with_env(serve: [&str; 2], args: &[&str], env: &[(&str, &str)]) -> Up {
        use std::io::BufRead;
        let mut supervisor = UpProcess::spawn_serving_with_env(serve, args, env);
        let stdout = supervisor.child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        assert!(
            !line.is_empty(),
            "setlist up exited before it was ready (its stderr is above); its processes' logs, which go with its temporary folder:\n{}",
            supervisor.log_tails()
        );
        let info = serde_json::from_str(&line).expect("setlist up --json prints one JSON line");
        Up { supervisor, info }
    }

    pub fn dispatcher(&self) -> String {
        self.info["dispatcher"].as_str().unwrap().to_string()
    }

    /// The listener's page, and the search API under it (ends in `/`).
    pub fn page(&self) -> String {
        self.info["page"].as_str().unwrap().to_string()
    }

    /// A process by name (`stage-1-0`, `shard-0-0`, `dispatcher`).
    pub fn process(&self, name: &str) -> &serde_json::Value {
        self.info["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    /// Every process's counters (its `/metrics` without histograms), for a
    /// failure message: which hop a lost request stopped at.
    pub fn counters(&self) -> String {
        let short = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut report = Vec::new();
        for process in self.info["processes"].as_array().into_iter().flatten() {
            let name = process["name"].as_str().unwrap_or("?");
            let Some(url) = process["url"].as_str() else {
                continue;
            };
            let text = short
                .get(&format!("{url}/metrics"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .unwrap_or_else(|| "(no answer)".into());
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("setlist_") && !l.contains("_bucket{"))
                .collect();
            report.push(format!("== {name}\n{}", lines.join("\n")));
        }
        report.join("\n")
    }

    /// The processes `setlist up --json` listed, as they were when it printed.
    pub fn children(&self) -> Vec<ProcessId> {
        self.info["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let pid = p["pid"].as_u64().unwrap() as i32;
                ProcessId::of(pid).unwrap_or_else(|| panic!("{} ({pid}) is not running", p["name"]))
            })
            .collect()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the counters of this run's processes:\n{}", self.counters());
        }
    }
}

/// A process, told apart from a later one that reuses its pid by its start
/// time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: i32,
    start_ticks: u64,
}

/// What has become of a [`ProcessId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Exited and reaped (or its pid now belongs to another process).
    Gone,
    /// Exited, but its parent has not reaped it.
    Zombie,
    Running,
}

/// The state letter and start time of `/proc/<pid>/stat`.
fn stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: fields count from its end.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start_ticks = fields.get(19)?.parse().ok()?;
    Some((state, start_ticks))
}

impl ProcessId {
    pub fn of(pid: i32) -> Option<ProcessId> {
        let (_, start_ticks) = stat(pid)?;
        Some(ProcessId { pid, start_ticks })
    }

    pub fn fate(&self) -> Fate {
        match stat(self.pid) {
            Some((_, start)) if start != self.start_ticks => Fate::Gone,
            Some(('Z', _)) => Fate::Zombie,
            Some(_) => Fate::Running,
            None => Fate::Gone,
        }
    }
}

/// Every live process whose command line mentions `folder`. For the cache
/// folder of one run of `setlist up` (see [`up_command_line`]), that is
/// `setlist up` itself and every process it started — their slices are in
/// there — restarted ones and orphans included, whatever `setlist up` did or
/// did not do about them.
pub fn processes_mentioning(folder: &Path) -> Vec<ProcessId> {
    let needle = folder.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|line| line.windows(needle.len()).any(|w| w == needle))
        })
        .filter_map(ProcessId::of)
        .collect()
}

/// Fails the test unless each of `processes` is gone and reaped (not a
/// zombie), and no process of the run whose cache folder is `cache` is left.
pub fn assert_no_process_left(cache: &Path, processes: &[ProcessId]) {
    let left: Vec<(ProcessId, Fate)> = processes
        .iter()
        .map(|p| (*p, p.fate()))
        .filter(|(_, fate)| *fate != Fate::Gone)
        .collect();
    assert!(left.is_empty(), "processes of the run are left: {left:?}");
    let unlisted = processes_mentioning(cache);
    assert!(
        unlisted.is_empty(),
        "processes of the run in {} are still running: {unlisted:?}",
        cache.display()
    );
}

/// The tansu broker binary: `SETLIST_TANSU`, else where
/// `scripts/install-tansu.sh` puts it. A test that needs it fails, with
/// instructions, where it is missing; `./setlist test` installs it first.
pub fn tansu_binary() -> PathBuf {
    let path = std::env::var_os("SETLIST_TANSU")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/setlist/tansu-0.6.0/bin/tansu"))
        })
        .expect("neither SETLIST_TANSU nor HOME is set");
    assert!(
        path.exists(),
        "the tansu broker is not at {}: run scripts/install-tansu.sh (which `./setlist test` runs) or set SETLIST_TANSU",
        path.display()
    );
    path
}

/// A tansu broker (a Kafka implementation independent of librdkafka's mock
/// cluster) on a free loopback port, storing in SQLite in a temporary
/// folder; killed when dropped.
pub struct Tansu {
    child: std::process::Child,
    pub bootstrap: String,
    dir: tempfile::TempDir,
}

impl Tansu {
    /// `setlist up`'s flags for this broker. tansu 0.6 ends each fetch with
    /// a sleep for the rest of the fetch's `fetch.wait.max.ms` even when it
    /// found data (the loop in tansu-storage's `service/fetch.rs`), so
    /// Setlist's default of 100 ms, right for a Kafka broker, would add
    /// 100 ms to every hop: on tansu the clients poll every millisecond.
    pub fn up_args(&self) -> [&str; 3] {
        [
            "--kafka",
            &self.bootstrap,
            "--kafka-set=fetch.wait.max.ms=1",
        ]
    }

    pub fn start() -> Tansu {
        let dir = tempfile::tempdir().unwrap();
        let port = setlist_core::ports::free_loopback_ports(1).expect("a free port on loopback");
        let child = Tansu::spawn(port, dir.path());
        let mut tansu = Tansu {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            dir,
        };
        tansu.wait_until_it_answers();
        tansu
    }

    /// The broker on `port`, storing in `dir` (kept across restarts).
    fn spawn(port: u16, dir: &Path) -> std::process::Child {
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("tansu.log"))
            .unwrap();
        Command::new(tansu_binary())
            .arg("broker")
            .arg(format!("--listener-url={url}"))
            .arg(format!("--advertised-listener-url={url}"))
            // tansu puts its SQLite file under its working directory.
            .arg("--storage-engine=sqlite:///tansu.db")
            .current_dir(dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tansu starts")
    }

    /// Ready when it answers a metadata request over the Kafka protocol.
    fn wait_until_it_answers(&mut self) {
        use rdkafka::producer::{BaseProducer, Producer};
        let producer: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let started = std::time::Instant::now();
        while producer
            .client()
            .fetch_metadata(None, std::time::Duration::from_secs(1))
            .is_err()
        {
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none() && started.elapsed() < std::time::Duration::from_secs(60),
                "tansu did not answer on {} within 60 s ({exited:?}); its log:\n{}",
                self.bootstrap,
                std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
            );
        }
    }

    /// An outage: the broker dies at once (SIGKILL), as a crashed machine would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The broker back on the same address with the same storage, once it
    /// answers again.
    pub fn restart(&mut self) {
        let port: u16 = self.bootstrap.rsplit(':').next().unwrap().parse().unwrap();
        self.child = Tansu::spawn(port, self.dir.path());
        self.wait_until_it_answers();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "the last lines of the tansu broker's log:\n{}",
                last_lines(&self.dir.path().join("tansu.log"), 40)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The song ids of a model (or slices) directory, in model order.
pub fn catalogue_ids(model: &Path) -> Vec<String> {
    read_jsonl(&model.join("catalogue.jsonl"))
        .iter()
        .map(|song| song["id"].as_str().unwrap().to_string())
        .collect()
}

/// Playlists that never repeat, so no answer can come from the cache and a
/// model answer after the kill is a fresh pass through the pipeline.
pub struct DistinctPlaylists<'a> {
    ids: &'a [String],
    state: u64,
    seen: std::collections::HashSet<Vec<usize>>,
}

impl<'a> DistinctPlaylists<'a> {
    pub fn new(ids: &'a [String]) -> Self {
        DistinctPlaylists {
            ids,
            state: 0x9e37_79b9_7f4a_7c15,
            seen: std::collections::HashSet::new(),
        }
    }

    fn next_index(&mut self) -> usize {
        // xorshift64: enough to spread picks, seeded so a failure repeats.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state % self.ids.len() as u64) as usize
    }

    pub fn fresh(&mut self) -> Vec<String> {
        loop {
            let mut picks: Vec<usize> = (0..4).map(|_| self.next_index()).collect();
            picks.sort_unstable();
            picks.dedup();
            if self.seen.insert(picks.clone()) {
                return picks.iter().map(|&i| self.ids[i].clone()).collect();
            }
        }
    }
}

/// An HTTP client with a hard timeout, so no test can hang on a request.
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// POSTs JSON and returns (status, body).
pub fn post(url: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let mut response = http()
        .post(url)
        .send_json(body)
        .expect("the server answers");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_json().expect("the answer is JSON"),
    )
}

pub fn get_text(url: &str) -> (u16, String) {
    let mut response = http().get(url).call().expect("the server answers");
    (
        response.status().as_u16(),
        response.body_mut().read_to_string().unwrap(),
    )
}

/// A small model trained by the real CLI in `dir`: a fresh data set, two
/// epochs, 32 dimensions, two LSTM layers.
pub fn small_model(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data");
    let model = dir.join("model");
    setlist_ok(&[
        "data",
        "generate",
        "--out",
        path_str(&data),
        "--seed",
        "5",
        "--tracks",
        "800",
        "--playlists",
        "500",
    ]);
    setlist_ok(&[
        "train",
        "--data",
        path_str(&data),
        "--out",
        path_str(&model),
        "--epochs",
        "2",
        "--embedding-dim",
        "32",
        "--hidden-dim",
        "32",
        "--lstm-layers",
        "2",
    ]);
    model
}

/// The value of the Prometheus sample `name` whose labels include every
/// `labels` pair, e.g. `metric(text, "x_total", &[("reason", "deadline")])`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            let wanted = series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            if wanted { value.parse().ok() } else { None }
        })
}

/// `setlist recommend` on the whole model: one answer per playlist, top-10.
pub fn whole_model_answers(
    model: &Path,
    dir: &Path,
    playlists: &[Vec<String>],
) -> Vec<serde_json::Value> {
    let lines: Vec<String> = playlists
        .iter()
        .enumerate()
        .map(|(i, p)| serde_json::json!({"id": i.to_string(), "tracks": p}).to_string())
        .collect();
    let queries = dir.join("queries.jsonl");
    std::fs::write(&queries, lines.join("\n")).unwrap();
    let out = dir.join("answers.jsonl");
    setlist_ok(&[
        "recommend",
        "--model",
        path_str(model),
        "--input",
        path_str(&queries),
        "--k",
        "10",
        "--output",
        path_str(&out),
    ]);
    read_jsonl(&out)
}
