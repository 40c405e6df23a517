//! Faults outside Setlist's own processes: the broker going away under
//! load. Every request must still end within its deadline with a flagged
//! fallback, no process may crash-loop, and fresh model answers must come
//! back once the broker does.

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
fn until_fresh(url: &str, playlists: &mut DistinctPlaylists, limit: Duration) -> Duration {
    let started = Instant::now();
    while ask(url, playlists)["fallback"] == true {
        assert!(
            started.elapsed() < limit,
            "no fresh model answer within {limit:?}"
        );
    }
    started.elapsed()
}

/// tansu is a separate process, so it can die like a real broker: SIGKILL,
/// five seconds of outage, then a restart on the same address and storage.
#[test]
fn a_broker_outage_costs_flagged_fallbacks_in_time_and_answers_resume_on_tansu() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let mut tansu = Tansu::start();
    let up = Up::start(&model, &["--kafka", &tansu.bootstrap]);
    let url = format!("{}/v1/recommendations", up.dispatcher());
    let ids = catalogue_ids(&model);
    let mut playlists = DistinctPlaylists::new(&ids);
    until_fresh(&url, &mut playlists, Duration::from_secs(60));
    let processes = up.children();

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
    let waited = until_fresh(&url, &mut playlists, Duration::from_secs(90));
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
