//! The partitioned pipeline across real processes: `setlist up` with the
//! embedded Kafka broker (librdkafka's mock cluster, the real protocol on
//! loopback), three stages and two output shards; and the same pipeline on a
//! second broker implementation, tansu.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};
use setlist_core::topics::Topics;
use setlist_core::wire::{Activations, Body, Frame, RowMeta, Values};
use setlist_tests::{
    Tansu, Up, get_text, metric, path_str, post, read_jsonl, setlist_ok, small_model,
};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

fn catalogue_ids(model: &Path) -> Vec<String> {
    read_jsonl(&model.join("catalogue.jsonl"))
        .iter()
        .map(|song| song["id"].as_str().unwrap().to_string())
        .collect()
}

/// Deterministic playlists of 1..=12 catalogue songs.
fn playlists(ids: &[String], count: usize) -> Vec<Vec<String>> {
    (0..count)
        .map(|i| {
            (0..=(i % 12))
                .map(|j| ids[(i * 37 + j * 11) % ids.len()].clone())
                .collect()
        })
        .collect()
}

fn tracks(answer: &Value) -> Vec<String> {
    answer["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["track"].as_str().unwrap().to_string())
        .collect()
}

/// `setlist recommend` on the whole model: one answer per playlist, top-10.
fn whole_model_answers(model: &Path, dir: &Path, playlists: &[Vec<String>]) -> Vec<Value> {
    let lines: Vec<String> = playlists
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"id": i.to_string(), "tracks": p}).to_string())
        .collect();
    let queries = dir.join("queries.jsonl");
    fs::write(&queries, lines.join("\n")).unwrap();
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

/// Every playlist through the dispatcher gets the whole model's top-10, with
/// the same scores, and a timing for every hop of 3 stages and 2 shards.
fn assert_the_pipeline_answers_like(url: &str, playlists: &[Vec<String>], expected: &[Value]) {
    for (playlist, expected) in playlists.iter().zip(expected) {
        let (status, answer) = post(
            &format!("{url}/v1/recommendations"),
            &json!({"tracks": playlist, "k": 10, "deadline_ms": 20000}),
        );
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["fallback"], false, "the model answered: {answer}");
        assert_eq!(
            tracks(&answer),
            tracks(expected),
            "the pipeline's top-10 is the whole model's"
        );
        for (a, b) in answer["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .zip(expected["recommendations"].as_array().unwrap())
        {
            assert!((a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs() <= 1e-5);
        }
        let parts: Vec<&str> = answer["timings"]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["part"].as_str().unwrap())
            .collect();
        assert_eq!(
            parts,
            ["stage-0", "stage-1", "stage-2", "shard-0", "shard-1"],
            "every hop is timed"
        );
    }
}

#[test]
fn the_pipeline_answers_like_the_whole_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let up = Up::start(&model, &[]);
    let url = up.dispatcher();
    let ids = catalogue_ids(&model);
    let playlists = playlists(&ids, 16);
    let batch = whole_model_answers(&model, dir.path(), &playlists);
    assert_the_pipeline_answers_like(&url, &playlists, &batch);

    // The same request again comes from the cache, with the same answer.
    let (_, again) = post(
        &format!("{url}/v1/recommendations"),
        &json!({"tracks": playlists[3], "k": 10, "deadline_ms": 20000}),
    );
    assert_eq!(again["cached"], true);
    assert_eq!(tracks(&again), tracks(&batch[3]));

    // Unknown tracks are reported, not fatal; no known track: the flagged fallback.
    let (_, answer) = post(
        &format!("{url}/v1/recommendations"),
        &json!({"tracks": [ids[1], "nope"], "k": 5, "deadline_ms": 20000}),
    );
    assert_eq!(answer["unknown_tracks"], json!(["nope"]));
    assert_eq!(answer["fallback"], false);
    let (_, answer) = post(
        &format!("{url}/v1/recommendations"),
        &json!({"tracks": ["nope"], "k": 5}),
    );
    assert_eq!(
        (
            answer["fallback"].clone(),
            answer["fallback_reason"].clone()
        ),
        (json!(true), json!("no_known_tracks"))
    );
    assert_eq!(tracks(&answer).len(), 5);

    // An asynchronous job: accepted at once, then DONE with the model's answer.
    let (status, job) = post(
        &format!("{url}/v1/jobs"),
        &json!({"tracks": playlists[5], "k": 10}),
    );
    assert_eq!(status, 202);
    assert_eq!(job["state"], "PENDING");
    let id = job["id"].as_str().unwrap();
    let (status, text) = get_text(&format!("{url}/v1/jobs/{id}?wait_seconds=20"));
    assert_eq!(status, 200);
    let job: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(job["state"], "DONE", "{job}");
    assert_eq!(tracks(&job["result"]), tracks(&batch[5]));
    let (status, _) = get_text(&format!("{url}/v1/jobs/0000?wait_seconds=1"));
    assert_eq!(status, 404);

    // Bad input: the error names the field and the limit.
    let (status, error) = post(
        &format!("{url}/v1/recommendations"),
        &json!({"tracks": [ids[0]], "k": 5000}),
    );
    assert_eq!(status, 400);
    assert_eq!(
        error["error"],
        "field \"k\" is 5000; it must be between 1 and 1000"
    );
    let huge: Vec<String> = (0..60_000).map(|i| format!("track-{i:010}")).collect();
    let (status, error) = post(
        &format!("{url}/v1/recommendations"),
        &json!({"tracks": huge}),
    );
    assert_eq!(status, 413, "{error}");

    let (_, status) = get_text(&format!("{url}/v1/status"));
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["stages"], 3);
    assert!(
        status["parts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["last_answer_ms_ago"].is_u64()),
        "{status}"
    );
}

/// The same pipeline on a second, independent Kafka implementation (tansu,
/// with its SQLite storage): topics made through the admin API, consumer
/// groups run by a real group coordinator, and the same answers.
#[test]
fn the_pipeline_answers_like_the_whole_model_on_tansu() {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let tansu = Tansu::start();
    let up = Up::start(&model, &["--kafka", &tansu.bootstrap]);
    assert_eq!(up.info["kafka"], tansu.bootstrap.as_str());
    let ids = catalogue_ids(&model);
    let playlists = playlists(&ids, 8);
    let batch = whole_model_answers(&model, dir.path(), &playlists);
    assert_the_pipeline_answers_like(&up.dispatcher(), &playlists, &batch);

    let (status, job) = post(
        &format!("{}/v1/jobs", up.dispatcher()),
        &json!({"tracks": playlists[2], "k": 10}),
    );
    assert_eq!(status, 202);
    let id = job["id"].as_str().unwrap();
    let (_, text) = get_text(&format!("{}/v1/jobs/{id}?wait_seconds=20", up.dispatcher()));
    let job: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(job["state"], "DONE", "{job}");
    assert_eq!(tracks(&job["result"]), tracks(&batch[2]));
}

#[test]
fn malformed_frames_go_to_dead_letter_and_the_node_keeps_serving() {
    malformed_frames_go_to_dead_letter(&[]);
}

#[test]
fn malformed_frames_go_to_dead_letter_on_tansu() {
    let tansu = Tansu::start();
    malformed_frames_go_to_dead_letter(&["--kafka", &tansu.bootstrap]);
}

/// `up_args` choose the broker.
fn malformed_frames_go_to_dead_letter(up_args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let up = Up::start(&model, up_args);
    let topics = Topics::new(
        "default",
        "local",
        up.info["model_version"].as_str().unwrap(),
    )
    .unwrap();
    let kafka = up.info["kafka"].as_str().unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .create()
        .unwrap();
    let wrong_version = Frame {
        model_version: "mffffffffffff".into(),
        stage: 0,
        reply_to: 0,
        trace_context: String::new(),
        hops: Vec::new(),
        rows: vec![RowMeta {
            request_id: 1,
            deadline_unix_ms: u64::MAX,
            k: 5,
            exclude: Vec::new(),
        }],
        body: Body::Activations(Activations {
            dim: 1,
            lengths: vec![1],
            values: Values::TrackIds(vec![0]),
        }),
    }
    .encode()
    .unwrap();
    let stage0 = topics.stage(0);
    for payload in [b"not a frame at all".to_vec(), wrong_version] {
        producer
            .send(BaseRecord::<(), [u8]>::to(&stage0).payload(payload.as_slice()))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let node = up.process("stage-0-0")["url"].as_str().unwrap().to_string();
    let started = Instant::now();
    loop {
        let (_, text) = get_text(&format!("{node}/metrics"));
        let count = |reason| {
            metric(
                &text,
                "setlist_node_dead_letters_total",
                &[("reason", reason)],
            )
            .unwrap_or(0.0)
        };
        if count("undecodable") == 1.0 && count("wrong_model_version") == 1.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the node did not count both dead letters:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The dead-letter topic holds both frames, each with its reason.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("group.id", "test-dead-letter")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&topics.dead_letter(), 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut reasons = Vec::new();
    while reasons.len() < 2 && started.elapsed() < Duration::from_secs(60) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) {
            let headers = message.headers().expect("dead letters carry headers");
            let reason = headers
                .iter()
                .find(|h| h.key == "setlist-reason")
                .and_then(|h| h.value)
                .unwrap();
            reasons.push(String::from_utf8(reason.to_vec()).unwrap());
        }
    }
    reasons.sort();
    assert_eq!(reasons, ["undecodable", "wrong_model_version"]);

    let ids = catalogue_ids(&model);
    let (status, answer) = post(
        &format!("{}/v1/recommendations", up.dispatcher()),
        &json!({"tracks": [ids[0], ids[1]], "k": 5, "deadline_ms": 20000}),
    );
    assert_eq!(status, 200);
    assert_eq!(answer["fallback"], false, "the node still serves: {answer}");
}

#[test]
fn a_killed_node_costs_fallbacks_not_hangs_and_answers_resume() {
    a_killed_node_costs_fallbacks_not_hangs(&[]);
}

/// The broker's group coordinator must notice the dead member and hand its
/// partitions to the replacement: broker behaviour, so tried on both.
#[test]
fn a_killed_node_costs_fallbacks_not_hangs_and_answers_resume_on_tansu() {
    let tansu = Tansu::start();
    a_killed_node_costs_fallbacks_not_hangs(&["--kafka", &tansu.bootstrap]);
}

/// `broker_args` choose the broker.
fn a_killed_node_costs_fallbacks_not_hangs(broker_args: &[&str]) {
    use nix::sys::signal::{Signal, kill};
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let mut up_args = vec!["--dispatcher-arg=--breaker-cooldown-ms=500"];
    up_args.extend_from_slice(broker_args);
    let up = Up::start(&model, &up_args);
    let url = format!("{}/v1/recommendations", up.dispatcher());
    let ids = catalogue_ids(&model);
    const DEADLINE_MS: u64 = 1000;
    // Generous: this checks that nothing hangs, not how fast it is.
    const SLACK_MS: u128 = 1500;

    let victim = up.process("stage-1-0")["pid"].as_u64().unwrap() as i32;
    let started = Instant::now();
    let mut killed_at = None;
    let mut answers = Vec::new();
    let mut resumed_at = None;
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(90) {
        if killed_at.is_none() && started.elapsed() > Duration::from_secs(2) {
            kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).unwrap();
            killed_at = Some(Instant::now());
        }
        let playlist = [&ids[i % ids.len()], &ids[(i * 7 + 3) % ids.len()]];
        i += 1;
        let sent = Instant::now();
        let (status, answer) = post(
            &url,
            &json!({"tracks": playlist, "k": 10, "deadline_ms": DEADLINE_MS}),
        );
        let took = sent.elapsed();
        assert_eq!(status, 200, "{answer}");
        assert!(
            took.as_millis() <= DEADLINE_MS as u128 + SLACK_MS,
            "a request took {took:?} with a {DEADLINE_MS} ms deadline"
        );
        let fallback = answer["fallback"].as_bool().unwrap();
        assert_eq!(
            tracks(&answer).len(),
            10,
            "every answer has songs, model or fallback: {answer}"
        );
        if fallback {
            assert!(
                answer["fallback_reason"].is_string(),
                "a fallback says why: {answer}"
            );
        }
        answers.push(fallback);
        if let Some(killed) = killed_at
            && sent > killed
            && !fallback
            && resumed_at.is_none()
        {
            resumed_at = Some(sent);
        }
        if resumed_at.is_some_and(|r| r.elapsed() > Duration::from_secs(2)) {
            break;
        }
    }
    let killed = killed_at.expect("the node was killed");
    let resumed = resumed_at.expect("model answers resumed after the replacement node started");
    let fallbacks = answers.iter().filter(|f| **f).count();
    eprintln!(
        "recovery: model answers resumed {:.1} s after SIGKILL; {} requests, {} answered by the fallback, none hung",
        (resumed - killed).as_secs_f64(),
        answers.len(),
        fallbacks
    );
    assert!(
        fallbacks > 0,
        "with the only stage-1 node dead, some requests must have fallen back"
    );
}
