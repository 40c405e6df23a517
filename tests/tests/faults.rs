//! Faults outside Setlist's own processes: the broker going away under
//! load. Every request must still end within its deadline with a flagged
//! fallback, no process may crash-loop, and fresh model answers must come
//! back once the broker does.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use setlist_tests::{DistinctPlaylists, Fate, Tansu, Up, catalogue_ids, post, small_model};
use std::time::{Duration, Instant};

const DEADLINE_MS: u128 = 500;
/// The promise: every request ends within its deadline plus this.
const SLACK_MS: u128 = 50;

/// Asks once and checks the promise every answer keeps: in time, with songs,
/// never from the cache (the playlists never repeat), a fallback saying why.
fn ask(url: &str, playlists: &mut DistinctPlaylists) -> Value {
    let sent = Instant::now();
    let (status, answer) = post(
        url,
        &json!({"tracks": playlists.fresh(), "k": 10, "deadline_ms": DEADLINE_MS}),
    );
    let took = sent.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert!(
        took.as_millis() <= DEADLINE_MS + SLACK_MS,
        "a request took {took:?} with a {DEADLINE_MS} ms deadline: {answer}"
    );
    assert_eq!(
        answer["recommendations"].as_array().map(Vec::len),
        Some(10),
        "every answer has songs: {answer}"
    );
    assert_eq!(answer["cached"], false, "no playlist repeats: {answer}");
    if answer["fallback"] == true {
        assert!(
            answer["fallback_reason"].is_string(),
            "a fallback says why: {answer}"
        );
    }
    answer
}

/// Asks until a fresh model answer comes; how long that took.
fn until_fresh(up: &Up, playlists: &mut DistinctPlaylists, limit: Duration) -> Duration {
    let url = format!("{}/v1/recommendations", up.dispatcher());
    let started = Instant::now();
    loop {
        let answer = ask(&url, playlists);
        if answer["fallback"] == false {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "no fresh model answer within {limit:?}; the last answer: {answer}"
        );
    }
}

/// The small model served by `setlist up` on a tansu broker of its own.
struct Served {
    model: std::path::PathBuf,
    up: Up,
    tansu: Tansu,
    _dir: tempfile::TempDir,
}

impl Served {
    fn on_tansu(up_args: &[&str]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let model = small_model(dir.path());
        let tansu = Tansu::start();
        let args: Vec<&str> = tansu
            .up_args()
            .into_iter()
            .chain(up_args.iter().copied())
            .collect();
        let up = Up::start(&model, &args);
        Served {
            model,
            up,
            tansu,
            _dir: dir,
        }
    }

    fn ids(&self) -> Vec<String> {
        catalogue_ids(&self.model)
    }
}

/// tansu is a separate process, so it can die like a real broker: SIGKILL,
/// five seconds of outage, then a restart on the same address and storage.
#[test]
fn a_broker_outage_costs_flagged_fallbacks_in_time_and_answers_resume_on_tansu() {
    let mut served = Served::on_tansu(&[]);
    let ids = served.ids();
    let mut playlists = DistinctPlaylists::new(&ids);
    let (up, tansu) = (&served.up, &mut served.tansu);
    until_fresh(up, &mut playlists, Duration::from_secs(60));
    let processes = up.children();
    let url = format!("{}/v1/recommendations", up.dispatcher());

    tansu.kill();
    let outage = Instant::now();
    let mut during = 0;
    while outage.elapsed() < Duration::from_secs(5) {
        let answer = ask(&url, &mut playlists);
        during += 1;
        // A frame already in the pipeline may still come back in the first moments.
        if outage.elapsed() > Duration::from_secs(1) {
            assert_eq!(
                answer["fallback"], true,
                "with the broker gone, answers are fallbacks: {answer}"
            );
        }
    }
    tansu.restart();
    let waited = until_fresh(up, &mut playlists, Duration::from_secs(90));
    eprintln!(
        "broker outage on tansu: {during} requests during 5 s without a broker, all in time; the first fresh model answer came {:.1} s after the broker was back",
        waited.as_secs_f64()
    );
    for p in processes {
        assert_eq!(
            p.fate(),
            Fate::Running,
            "process {} was not restarted: nothing crash-looped",
            p.pid
        );
    }
}

/// A graceful stop commits, leaves the consumer group and flushes: each
/// step talks to the broker. With the broker gone, every process must still
/// end on SIGTERM by itself, within its own shutdown bound, instead of
/// waiting for a broker that will not come back (or for `setlist up` to
/// kill it).
#[test]
fn with_the_broker_gone_every_process_still_stops_on_sigterm_on_tansu() {
    let mut served = Served::on_tansu(&[
        "--node-arg=--shutdown-timeout-ms=2000",
        "--dispatcher-arg=--shutdown-timeout-ms=2000",
    ]);
    let ids = served.ids();
    let (up, tansu) = (&served.up, &mut served.tansu);
    until_fresh(
        up,
        &mut DistinctPlaylists::new(&ids),
        Duration::from_secs(60),
    );
    let processes = up.children();

    tansu.kill();
    // Let every client notice: the first failed requests and reconnects.
    std::thread::sleep(Duration::from_secs(2));
    for p in &processes {
        kill(Pid::from_raw(p.pid), Signal::SIGTERM).unwrap();
    }
    // Generous next to the processes' 2 s bound; `setlist up` itself would kill
    // a child only after 10 s and only when it is stopping, which it is not.
    let bound = Instant::now() + Duration::from_secs(8);
    while processes.iter().any(|p| p.fate() == Fate::Running) && Instant::now() < bound {
        std::thread::sleep(Duration::from_millis(100));
    }
    let running: Vec<i32> = processes
        .iter()
        .filter(|p| p.fate() == Fate::Running)
        .map(|p| p.pid)
        .collect();
    assert!(
        running.is_empty(),
        "still running 8 s after SIGTERM with the broker gone: {running:?}"
    );
}
