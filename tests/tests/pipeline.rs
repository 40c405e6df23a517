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
    DistinctPlaylists, Tansu, Up, catalogue_ids, get_text, metric, post, setlist_ok, small_model,
    whole_model_answers,
};
use std::fs;
use std::time::{Duration, Instant};

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

/// Every playlist through the dispatcher gets the whole model's top-10, with
/// the same scores, and a timing for every hop of 3 stages and 2 shards.
fn assert_the_pipeline_answers_like(url: &str, playlists: &[Vec<String>], expected: &[Value]) {
    assert_eq!(
        playlists.len(),
        expected.len(),
        "one expected answer per playlist"
    );
    assert!(!playlists.is_empty(), "something to compare");
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
        let (ours, theirs) = (
            answer["recommendations"].as_array().unwrap(),
            expected["recommendations"].as_array().unwrap(),
        );
        assert_eq!(ours.len(), 10, "a full top-10: {answer}");
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(theirs) {
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
    // The last playlist is kept back, to be asked for the first time later.
    let playlists = playlists(&ids, 17);
    let batch = whole_model_answers(&model, dir.path(), &playlists);
    assert_the_pipeline_answers_like(&url, &playlists[..16], &batch[..16]);

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

    // Thirty listeners whose deadlines no pipeline can meet get their own
    // fallback; they do not switch model answers off for anyone else.
    let short: Vec<Value> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..30)
            .map(|i| {
                let (url, ids) = (&url, &ids);
                let tracks = &playlists[i % playlists.len()];
                scope.spawn(move || {
                    post(
                        &format!("{url}/v1/recommendations"),
                        &json!({"tracks": [tracks[0], ids[i + 40]], "k": 10, "deadline_ms": 10}),
                    )
                    .1
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert!(
        short.iter().all(|a| tracks(a).len() == 10),
        "every short-deadline listener got songs"
    );
    let (_, answer) = post(
        &format!("{url}/v1/recommendations"),
        &json!({"tracks": playlists[16], "k": 10, "deadline_ms": 20000}),
    );
    assert_eq!(
        (answer["fallback"].clone(), answer["cached"].clone()),
        (json!(false), json!(false)),
        "after the short deadlines, the next listener gets a fresh model answer: {answer}"
    );
    assert_eq!(tracks(&answer), tracks(&batch[16]));

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
    let up = Up::start(&model, &tansu.up_args());
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

/// Each node's count of partition assignments and revocations.
fn rebalances(up: &Up) -> Vec<(String, f64)> {
    up.info["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !["dispatcher", "search"].contains(&p["name"].as_str().unwrap()))
        .map(|p| {
            let (_, text) = get_text(&format!("{}/metrics", p["url"].as_str().unwrap()));
            let count = metric(&text, "setlist_node_rebalances_total", &[]).unwrap_or(f64::NAN);
            (p["name"].as_str().unwrap().to_string(), count)
        })
        .collect()
}

/// Once every node has its partitions, nothing moves them: a group that
/// rebalances again and again pauses its node each time, and tansu once
/// left a node with none for good that way (when nodes had static
/// identities there). `up_args` choose the broker.
fn a_settled_pipeline_keeps_its_partitions(up_args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let up = Up::start(&model, up_args);
    let ids = catalogue_ids(&model);
    let ask = || {
        let (status, answer) = post(
            &format!("{}/v1/recommendations", up.dispatcher()),
            &json!({"tracks": [ids[0], ids[1]], "k": 5, "deadline_ms": 20000}),
        );
        assert_eq!(status, 200);
        assert_eq!(answer["fallback"], false, "the pipeline answered: {answer}");
    };
    ask();
    let before = rebalances(&up);
    assert!(
        before.iter().all(|(_, count)| *count >= 1.0),
        "every node was assigned its partitions: {before:?}"
    );
    // Two of tansu's 6 s session timeouts, four of the embedded broker's.
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(
        rebalances(&up),
        before,
        "partitions moved in a settled group"
    );
    ask();
}

#[test]
fn a_settled_pipeline_keeps_its_partitions_on_the_embedded_broker() {
    a_settled_pipeline_keeps_its_partitions(&[]);
}

#[test]
fn a_settled_pipeline_keeps_its_partitions_on_tansu() {
    let tansu = Tansu::start();
    a_settled_pipeline_keeps_its_partitions(&tansu.up_args());
}

#[test]
fn malformed_frames_go_to_dead_letter_and_the_node_keeps_serving() {
    malformed_frames_go_to_dead_letter(&[]);
}

#[test]
fn malformed_frames_go_to_dead_letter_on_tansu() {
    let tansu = Tansu::start();
    malformed_frames_go_to_dead_letter(&tansu.up_args());
}

/// Every way a frame can be wrong, on stage 0's topic and on the output
/// shards' (where a bad `reply_to` used to stop every shard in a loop): each
/// is counted, lands on the dead-letter topic with its reason, and the nodes
/// that refused them keep running and serving. `up_args` choose the broker.
fn malformed_frames_go_to_dead_letter(up_args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let up = Up::start(&model, up_args);
    let model_version = up.info["model_version"].as_str().unwrap();
    let topics = Topics::new("default", "local", model_version).unwrap();
    let kafka = up.info["kafka"].as_str().unwrap();
    let (_, status) = get_text(&format!("{}/v1/status", up.dispatcher()));
    let stages = serde_json::from_str::<Value>(&status).unwrap()["stages"]
        .as_u64()
        .unwrap() as u16;
    let songs = catalogue_ids(&model).len() as u32;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // A frame stage 0 would accept; each case below spoils one thing.
    let valid = Frame {
        model_version: model_version.into(),
        stage: 0,
        reply_to: 0,
        trace_context: String::new(),
        hops: Vec::new(),
        rows: vec![RowMeta {
            request_id: 1,
            deadline_unix_ms: now_ms + 20_000,
            k: 5,
            exclude: vec![3],
        }],
        body: Body::Activations(Activations {
            dim: 1,
            lengths: vec![2],
            values: Values::TrackIds(vec![3, 4]),
        }),
    };
    // The small model's LSTMs are 32 wide: what the later stages and the
    // output shards read.
    let hidden = |dim: u32| {
        Body::Activations(Activations {
            dim,
            lengths: vec![1],
            values: Values::F32(vec![0.25; dim as usize]),
        })
    };
    let encode = |frame: Frame| frame.encode().unwrap();
    let mut far_deadline = valid.clone();
    far_deadline.rows[0].deadline_unix_ms = u64::MAX;
    let stage0_cases: Vec<(&str, Vec<u8>)> = vec![
        ("undecodable", b"not a frame at all".to_vec()),
        (
            "wrong_model_version",
            encode(Frame {
                model_version: "mffffffffffff".into(),
                ..valid.clone()
            }),
        ),
        (
            "wrong_stage",
            encode(Frame {
                stage: 1,
                ..valid.clone()
            }),
        ),
        (
            "wrong_shape",
            encode(Frame {
                body: hidden(32),
                ..valid.clone()
            }),
        ),
        (
            "track_out_of_range",
            encode(Frame {
                body: Body::Activations(Activations {
                    dim: 1,
                    lengths: vec![2],
                    values: Values::TrackIds(vec![3, songs]),
                }),
                ..valid.clone()
            }),
        ),
        (
            "unknown_reply_partition",
            encode(Frame {
                reply_to: 7,
                ..valid.clone()
            }),
        ),
        ("deadline_too_far", encode(far_deadline)),
    ];
    // What the last stage would send, for a dispatcher that does not exist.
    let to_no_dispatcher = encode(Frame {
        stage: stages,
        reply_to: 7,
        body: hidden(32),
        ..valid.clone()
    });
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .create()
        .unwrap();
    let stage0 = topics.stage(0);
    let mut sends: Vec<(String, &[u8])> = stage0_cases
        .iter()
        .map(|(_, payload)| (stage0.clone(), payload.as_slice()))
        .collect();
    sends.push((topics.stage(u32::from(stages)), to_no_dispatcher.as_slice()));
    for (topic, payload) in &sends {
        producer
            .send(BaseRecord::<(), [u8]>::to(topic).payload(*payload))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    // Each refusing node counts each of its frames once.
    let started = Instant::now();
    let shards_topic = topics.stage(u32::from(stages));
    let refusals: Vec<(&str, &String, Vec<&str>)> = vec![
        (
            "stage-0-0",
            &stage0,
            stage0_cases.iter().map(|(reason, _)| *reason).collect(),
        ),
        ("shard-0-0", &shards_topic, vec!["unknown_reply_partition"]),
        ("shard-1-0", &shards_topic, vec!["unknown_reply_partition"]),
    ];
    for (node, _, reasons) in &refusals {
        let url = up.process(node)["url"].as_str().unwrap().to_string();
        loop {
            let (_, text) = get_text(&format!("{url}/metrics"));
            let count = |reason| {
                metric(
                    &text,
                    "setlist_node_dead_letters_total",
                    &[("reason", reason)],
                )
                .unwrap_or(0.0)
            };
            if reasons.iter().all(|&r| count(r) == 1.0) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{node} did not count one dead letter for each of {reasons:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // The dead-letter topic holds every one, each with its reason, the
    // topic it came from and a sentence saying what was wrong.
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
    let mut expected: Vec<(String, String)> = refusals
        .iter()
        .flat_map(|(_, topic, reasons)| reasons.iter().map(|r| (topic.to_string(), r.to_string())))
        .collect();
    expected.sort();
    let mut dead_letters = Vec::new();
    while dead_letters.len() < expected.len() && started.elapsed() < Duration::from_secs(90) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) {
            let headers = message.headers().expect("dead letters carry headers");
            let header = |key: &str| {
                let value = headers
                    .iter()
                    .find(|h| h.key == key)
                    .and_then(|h| h.value)
                    .unwrap_or_else(|| panic!("a dead letter has the header {key}"));
                String::from_utf8(value.to_vec()).unwrap()
            };
            assert!(!header("setlist-detail").is_empty());
            let source = header("setlist-source");
            let topic = source.rsplitn(3, '/').last().unwrap().to_string();
            dead_letters.push((topic, header("setlist-reason")));
        }
    }
    dead_letters.sort();
    assert_eq!(dead_letters, expected);

    // The refusing nodes are the processes `setlist up` started, not
    // replacements after a crash, and the pipeline still answers.
    for (node, _, _) in &refusals {
        let pid = up.process(node)["pid"].as_u64().unwrap();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(") ")
            .next()
            .and_then(|rest| rest.chars().next());
        assert!(
            matches!(state, Some(s) if s != 'Z'),
            "{node} (pid {pid}) is no longer running: {stat:?}"
        );
    }
    let ids = catalogue_ids(&model);
    let (status, answer) = post(
        &format!("{}/v1/recommendations", up.dispatcher()),
        &json!({"tracks": [ids[0], ids[1]], "k": 5, "deadline_ms": 20000}),
    );
    assert_eq!(status, 200);
    assert_eq!(answer["fallback"], false, "the nodes still serve: {answer}");
}

#[test]
fn a_killed_node_costs_fallbacks_not_hangs_and_answers_resume() {
    a_killed_node_costs_fallbacks_not_hangs(&[], "stage-1-0");
}

/// With two nodes per part, the survivor (or the restarted twin) takes over.
#[test]
fn a_killed_replica_costs_fallbacks_not_hangs_and_answers_resume() {
    a_killed_node_costs_fallbacks_not_hangs(&["--replicas=2"], "stage-1-0");
}

/// The broker's group coordinator must notice the dead member and hand its
/// partitions to the replacement: broker behaviour, so tried on both.
#[test]
fn a_killed_node_costs_fallbacks_not_hangs_and_answers_resume_on_tansu() {
    let tansu = Tansu::start();
    a_killed_node_costs_fallbacks_not_hangs(&tansu.up_args(), "stage-1-0");
}

/// `up_args` choose the broker and the replicas; `victim` is the process
/// SIGKILLed two seconds in.
fn a_killed_node_costs_fallbacks_not_hangs(up_args: &[&str], victim: &str) {
    use nix::sys::signal::{Signal, kill};
    let dir = tempfile::tempdir().unwrap();
    let model = small_model(dir.path());
    let up = Up::start(&model, up_args);
    let url = format!("{}/v1/recommendations", up.dispatcher());
    let ids = catalogue_ids(&model);
    let mut playlists = DistinctPlaylists::new(&ids);
    const DEADLINE_MS: u128 = 1000;
    // The promise: every request ends within its deadline plus this.
    const SLACK_MS: u128 = 50;
    // Fresh answers this long in a row after the last fallback: recovered.
    const STEADY: Duration = Duration::from_secs(2);

    let victim_pid = up.process(victim)["pid"].as_u64().unwrap() as i32;
    let started = Instant::now();
    let mut killed_at = None;
    let (mut requests, mut fallbacks) = (0usize, 0usize);
    let mut first_fresh = None;
    let mut last_fallback = None;
    let mut recovered = None;
    while started.elapsed() < Duration::from_secs(90) && recovered.is_none() {
        if killed_at.is_none() && started.elapsed() > Duration::from_secs(2) {
            kill(nix::unistd::Pid::from_raw(victim_pid), Signal::SIGKILL).unwrap();
            killed_at = Some(Instant::now());
        }
        let sent = Instant::now();
        let (status, answer) = post(
            &url,
            &json!({"tracks": playlists.fresh(), "k": 10, "deadline_ms": DEADLINE_MS}),
        );
        let took = sent.elapsed();
        requests += 1;
        assert_eq!(status, 200, "{answer}");
        assert!(
            took.as_millis() <= DEADLINE_MS + SLACK_MS,
            "a request took {took:?} with a {DEADLINE_MS} ms deadline: {answer}"
        );
        assert_eq!(
            tracks(&answer).len(),
            10,
            "every answer has songs, model or fallback: {answer}"
        );
        assert_eq!(answer["cached"], false, "no playlist repeats: {answer}");
        let Some(killed) = killed_at else {
            continue;
        };
        if answer["fallback"] == true {
            assert!(
                answer["fallback_reason"].is_string(),
                "a fallback says why: {answer}"
            );
            fallbacks += 1;
            last_fallback = Some(sent);
            continue;
        }
        first_fresh.get_or_insert(sent - killed);
        let calm_since = last_fallback.unwrap_or(killed);
        if calm_since.elapsed() >= STEADY {
            recovered = Some(calm_since - killed);
        }
    }
    let first_fresh = first_fresh.expect("fresh model answers came back after the kill");
    let recovered = recovered.expect("every answer was a fresh model answer again");
    eprintln!(
        "recovery after SIGKILL of {victim} ({up_args:?}): first fresh model answer {:.1} s after the kill, only fresh answers from {:.1} s; {requests} requests, {fallbacks} fallbacks, none over the deadline",
        first_fresh.as_secs_f64(),
        recovered.as_secs_f64()
    );
    if !up_args.contains(&"--replicas=2") {
        assert!(
            fallbacks > 0,
            "with the only {victim} dead, some requests must have fallen back"
        );
    }
}

/// `setlist bench pipeline` drives real nodes with frames they accept (its
/// frames once claimed no deadline and every node dead-lettered them, so the
/// benchmark stopped with "no answer from the pipeline"): each setup gets a
/// row with its measurements.
#[test]
fn the_pipeline_benchmark_measures_every_setup() {
    let out = setlist_ok(&[
        "bench",
        "pipeline",
        "--songs=500",
        "--dim=16",
        "--lstm-layers=1",
        "--max-stages=1",
        "--requests=5",
        "--seconds=1",
        "--in-flight=64",
    ]);
    for setup in ["whole model, one process", "no batching", "micro-batching"] {
        let row = out
            .lines()
            .find(|l| l.starts_with('|') && l.contains(setup))
            .unwrap_or_else(|| panic!("no row for {setup}:\n{out}"));
        let throughput: f64 = row.split('|').nth(6).unwrap().trim().parse().unwrap();
        assert!(throughput > 0.0, "{row}");
    }
}
