//! `setlist up`'s processes live and die with it: however it stops (Ctrl-C,
//! SIGTERM, a failure while starting, even SIGKILL), no process of the run
//! is left running or unreaped.
//!
//! A run's processes are found by the cache folder on their command lines,
//! whatever `setlist up` did about them. Each test also makes itself a child
//! subreaper first: a process that outlives `setlist up` is then re-parented
//! to the test, not to init, so the test sees it (running, or a zombie that
//! `setlist up` did not reap) instead of init reaping it out of sight.

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use setlist_tests::{
    Fate, ProcessId, Up, UpProcess, assert_no_process_left, log_tails, processes_mentioning,
    small_model, up_command_line,
};
use std::path::Path;
use std::time::{Duration, Instant};

/// Generous bounds for "it ended": the nodes' graceful stop takes well under
/// a second; `setlist up` kills what is left after 10 s.
const STOP_BOUND: Duration = Duration::from_secs(60);
const START_BOUND: Duration = Duration::from_secs(180);

/// Two stages and one shard: three nodes and the dispatcher.
const PIPELINE: [&str; 4] = ["--stages", "2", "--output-shards", "1"];

fn become_subreaper() {
    nix::sys::prctl::set_child_subreaper(true).expect("the test can adopt orphans");
}

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    PIPELINE
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

/// Waits until `count` processes started by `setlist up` are running.
fn wait_for_processes(up: &UpProcess, count: usize) -> Vec<ProcessId> {
    let started = Instant::now();
    loop {
        let running = up.children_now();
        if running.len() == count {
            return running;
        }
        assert!(
            started.elapsed() < START_BOUND,
            "{} processes of the run, not {count}; the logs:\n{}",
            running.len(),
            up.log_tails()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A stop signal ends `setlist up` cleanly, and it leaves nothing behind.
fn assert_signal_stops_everything(model: &Path, signal: Signal) {
    become_subreaper();
    let mut up = Up::start(model, &args(&[]));
    let children = up.children();
    assert_eq!(
        children.len(),
        5,
        "three nodes, the dispatcher and the search API"
    );
    up.supervisor.signal(signal);
    let status = up.supervisor.wait(STOP_BOUND);
    assert!(
        status.success(),
        "setlist up ended with {status} on {signal}"
    );
    assert_no_process_left(up.supervisor.cache(), &children);
}

#[test]
fn sigint_stops_every_process_of_the_run() {
    let dir = tempfile::tempdir().unwrap();
    assert_signal_stops_everything(&small_model(dir.path()), Signal::SIGINT);
}

#[test]
fn sigterm_stops_every_process_of_the_run() {
    let dir = tempfile::tempdir().unwrap();
    assert_signal_stops_everything(&small_model(dir.path()), Signal::SIGTERM);
}

/// The issue's case: during a run of `setlist up 2>&1 | tee up.log` a node
/// was SIGKILLed (and restarted); then Ctrl-C, which the terminal sends to
/// the whole foreground process group: `setlist up` and tee, which dies, so
/// `setlist up` stops with its stderr a pipe nobody reads.
#[test]
fn ctrl_c_on_setlist_up_piped_to_tee_stops_every_process_a_restarted_one_too() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let cache = dir.path().join("cache");
    let command = up_command_line(&model, &args(&[]), &cache);
    let mut shell = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#""$@" 2>&1 | tee up.log"#)
        .arg("sh")
        .args(&command)
        .current_dir(dir.path())
        .env("SETLIST_CACHE", &cache)
        // A group of its own, as a terminal gives a pipeline.
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read from tee like a terminal, and keep reading it until the Ctrl-C
    // (a tee whose reader is gone dies at its next line).
    let mut tee_out = std::io::BufReader::new(shell.stdout.take().unwrap());
    let mut line = String::new();
    tee_out.read_line(&mut line).unwrap();
    let info: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
        panic!(
            "setlist up did not start: {line}\n{}",
            log_tails(&cache.join("up/logs"))
        )
    });
    let pid_of = |name: &str| {
        let process = info["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap();
        ProcessId::of(process["pid"].as_u64().unwrap() as i32).unwrap()
    };
    let mut seen: Vec<ProcessId> = [
        "stage-0-0",
        "stage-1-0",
        "shard-0-0",
        "dispatcher",
        "search",
    ]
    .map(pid_of)
    .to_vec();
    let up = parent_of(seen[0].pid) as i32;

    let victim = pid_of("stage-1-0");
    kill(Pid::from_raw(victim.pid), Signal::SIGKILL).unwrap();
    let started = Instant::now();
    let replacement = loop {
        let children = processes_mentioning(&cache)
            .into_iter()
            .filter(|p| parent_of(p.pid) == up as u32);
        if let Some(new) = children.into_iter().find(|p| !seen.contains(p)) {
            break new;
        }
        assert!(
            started.elapsed() < START_BOUND,
            "the node was not restarted"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(victim.fate(), Fate::Gone, "the killed node was reaped");
    seen.push(replacement);

    let up = ProcessId::of(up).unwrap();
    nix::sys::signal::killpg(Pid::from_raw(shell.id() as i32), Signal::SIGINT).unwrap();
    // The shell reaps `setlist up`, or, should the shell die first, this
    // test does (it adopts orphans).
    let started = Instant::now();
    while up.fate() != Fate::Gone {
        let _ = shell.try_wait();
        let _ = waitpid(Pid::from_raw(up.pid), Some(WaitPidFlag::WNOHANG));
        assert!(
            started.elapsed() < STOP_BOUND,
            "setlist up did not stop; the logs:\n{}",
            log_tails(&cache.join("up/logs"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = shell.wait();
    drop(tee_out);
    assert_no_process_left(&cache, &seen);
}

/// The parent of process `pid` (field 4 of /proc/<pid>/stat).
fn parent_of(pid: i32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[1].parse().unwrap()
}

/// Killed itself, `setlist up` cannot stop anything: its children go through
/// the parent-death signal it asked the kernel for on their behalf.
#[test]
fn the_children_die_with_a_sigkilled_setlist_up() {
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let mut up = Up::start(&model, &args(&[]));
    let children = up.children();
    up.supervisor.signal(Signal::SIGKILL);
    up.supervisor.wait(STOP_BOUND);
    // The orphans are this test's children now: reap each as it ends.
    let started = Instant::now();
    for child in &children {
        loop {
            let _ = waitpid(Pid::from_raw(child.pid), Some(WaitPidFlag::WNOHANG));
            if child.fate() == Fate::Gone {
                break;
            }
            assert!(
                started.elapsed() < STOP_BOUND,
                "{child:?} outlived setlist up by {STOP_BOUND:?}; the logs:\n{}",
                up.supervisor.log_tails()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_no_process_left(up.supervisor.cache(), &children);
}

/// Runs `setlist up` that cannot start; returns its stderr once it has
/// exited, non-zero, having left no process behind.
fn assert_failed_start_leaves_nothing(model: &Path, extra: &[&str]) -> String {
    become_subreaper();
    let mut up = UpProcess::spawn(model, &args(extra));
    let status = up.wait(START_BOUND);
    // No pid list here (it never got to print one): no process of the run
    // may be left.
    assert_no_process_left(up.cache(), &[]);
    assert!(!status.success(), "setlist up succeeded with {extra:?}");
    up.stderr()
}

#[test]
fn a_node_that_exits_while_starting_fails_up_and_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let stderr = assert_failed_start_leaves_nothing(&model, &["--node-arg=--max-batch-rows=0"]);
    assert!(stderr.contains("exited while starting"), "{stderr}");
    assert!(
        stderr.contains("max_batch_rows"),
        "the node's own reason: {stderr}"
    );
}

#[test]
fn a_dispatcher_that_cannot_listen_fails_up_and_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    // TEST-NET-1: an address no interface of this machine has.
    let stderr = assert_failed_start_leaves_nothing(&model, &["--dispatcher-listen=192.0.2.1:9"]);
    assert!(
        stderr.contains("dispatcher exited while starting"),
        "{stderr}"
    );
}

/// Nodes that refuse their slices stay up, unready, and say why on /readyz.
const UNREADY_NODES: &str = "--node-arg=--model-version=m000000000000";

#[test]
fn a_readiness_timeout_fails_up_and_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let stderr = assert_failed_start_leaves_nothing(&model, &[UNREADY_NODES, "--ready-timeout=5"]);
    assert!(stderr.contains("not ready after 5 s"), "{stderr}");
}

#[test]
fn a_signal_while_starting_stops_every_process_started_so_far() {
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let mut up = UpProcess::spawn(&model, &args(&[UNREADY_NODES]));
    // Three nodes, the dispatcher and the search API.
    let started = wait_for_processes(&up, 5);
    up.signal(Signal::SIGINT);
    let status = up.wait(STOP_BOUND);
    assert_no_process_left(up.cache(), &started);
    assert!(!status.success(), "stopped before it was up: {status}");
    assert!(
        up.stderr().contains("stopped by a signal while starting"),
        "{}",
        up.stderr()
    );
}
