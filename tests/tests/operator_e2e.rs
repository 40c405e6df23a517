//! The whole promise on a real API server: `kubectl apply` the sample
//! cluster → the operator → pods on a stand-in node (processes, see
//! `setlist_tests::kubelet`) → compute nodes serving over Kafka (the
//! embedded broker, in this test process) → answers equal to `setlist
//! recommend` on the whole model. Then a compute node is SIGKILLed until its
//! pod crash-loops; the operator replaces it (Event, status, metric) and
//! fresh model answers resume.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use serde_json::{Value, json};
use setlist_core::slice::SliceManifest;
use setlist_core::topics::Topics;
use setlist_tests::k8s::{Namespace, Operator, control_plane, install_crd, repo_file, wait_for};
use setlist_tests::kubelet::{NodeOptions, StandInNode};
use setlist_tests::{
    DistinctPlaylists, catalogue_ids, path_str, post, setlist_ok, small_model, whole_model_answers,
};
use std::fs;
use std::time::{Duration, Instant};

fn tracks(answer: &Value) -> Vec<String> {
    answer["recommendations"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|r| r["track"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_cluster_applied_with_kubectl_serves_the_model_and_a_crash_looping_node_is_replaced() {
    let kubeconfig = control_plane();
    install_crd(&kubeconfig);
    let ns = Namespace::new(&kubeconfig, "e2e");
    // Not under /tmp: pods mount an emptyDir there, which hides the host's
    // /tmp from them as it would on a real node.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();

    // The model, sliced as the sample says (3 stages, 2 output shards).
    let model = small_model(dir.path());
    let slices = dir.path().join("slices");
    setlist_ok(&[
        "slice",
        "--model",
        path_str(&model),
        "--stages",
        "3",
        "--output-shards",
        "2",
        "--out",
        path_str(&slices),
    ]);
    let manifest: SliceManifest =
        serde_json::from_str(&fs::read_to_string(slices.join("manifest.json")).unwrap()).unwrap();

    // Kafka: the embedded broker, in this process; it has no admin API, so
    // its topics are made here (manageTopics: false), as an admin would.
    let broker: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1).unwrap();
    let topics = Topics::new(&ns.name, "demo", &manifest.model_version).unwrap();
    for topic in topics.all(3) {
        let partitions = if topic.contains(".stage-") { 4 } else { 1 };
        broker.create_topic(&topic, partitions, 1).unwrap();
    }

    let node = StandInNode::start(
        &kubeconfig,
        &ns.name,
        NodeOptions::new(&dir.path().join("node")),
    );
    let operator = Operator::start(&kubeconfig, &ns.name, "operator", dir.path());
    let diagnose = || {
        format!(
            "operator:\n{}\nnode:\n{}\npods:\n{}",
            operator.log_text(),
            node.log_tails(15),
            ns.kubectl(&["get", "pods", "-o", "wide"], None).1
        )
    };

    // The sample, pointed at this test's slices, broker and node.
    let sample: serde_yaml::Value = serde_yaml::from_str(
        &fs::read_to_string(repo_file("manifests/samples/recommendercluster-demo.yaml")).unwrap(),
    )
    .unwrap();
    let mut cluster: Value = serde_json::to_value(sample).unwrap();
    cluster["spec"]["model"]["uri"] = json!(format!("file://{}", slices.display()));
    cluster["spec"]["stages"]["replicas"] = json!(1);
    cluster["spec"]["kafka"] = json!({
        "bootstrapServers": broker.bootstrap_servers(),
        "topicPartitions": 4,
        "manageTopics": false,
        // The embedded broker takes a short session: a lost node's
        // partitions move in seconds.
        "sessionTimeoutMs": 3000,
    });
    // Every answer below is a fresh pass through the pipeline.
    cluster["spec"]["dispatcher"] = json!({ "cacheBytes": 0, "deadlineMs": 5000 });
    cluster["spec"]["placement"] =
        json!({ "nodeSelector": { "kubernetes.io/hostname": node.name() } });
    cluster["spec"]["replacementGraceSeconds"] = json!(60);
    let applied = Instant::now();
    let (ok, _, err) = ns.kubectl(&["apply", "-f", "-"], Some(&cluster.to_string()));
    assert!(ok, "{err}");

    let running = wait_for(
        Duration::from_secs(240),
        "the cluster to be Running",
        || {
            let status = ns.get_json(&["recommendercluster", "demo"])["status"].clone();
            (status["phase"] == "Running").then_some(status)
        },
        diagnose,
    );
    println!("kubectl apply → Running: {:?}", applied.elapsed());
    assert_eq!(running["readyParts"], "7/7", "{running}");
    assert_eq!(running["modelVersion"], json!(manifest.model_version));
    let (_, table, _) = ns.kubectl(&["get", "rcl", "demo"], None);
    println!("{table}");

    // Answers through the dispatcher's pod equal the whole model's.
    let dispatcher = format!(
        "http://{}:8080",
        node.pod_address(&ns.name, "demo-dispatcher-0").unwrap()
    );
    let ids = catalogue_ids(&model);
    let mut fresh = DistinctPlaylists::new(&ids);
    let playlists: Vec<Vec<String>> = (0..40).map(|_| fresh.fresh()).collect();
    let expected: Vec<Vec<String>> = whole_model_answers(&model, dir.path(), &playlists)
        .iter()
        .map(tracks)
        .collect();
    let ask = |playlist: &[String]| {
        post(
            &format!("{dispatcher}/v1/recommendations"),
            &json!({"tracks": playlist, "k": 10, "deadline_ms": 2000}),
        )
    };
    for (playlist, expected) in playlists.iter().zip(&expected).take(5) {
        let (status, answer) = ask(playlist);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["fallback"], false, "the model answered: {answer}");
        assert_eq!(&tracks(&answer), expected);
    }
    // And the listener's side reaches the dispatcher through its Service.
    let search = format!("http://{}:8080", {
        let pods = ns.get_json(&["pods", "-l", "setlist.dev/part=search"]);
        let name = pods["items"][0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        node.pod_address(&ns.name, &name).unwrap()
    });
    // A listener picks at least five songs.
    let mut songs: Vec<String> = playlists[5].iter().chain(&playlists[6]).cloned().collect();
    songs.dedup();
    let (status, answer) = post(
        &format!("{search}/v1/recommendations"),
        &json!({"songs": songs, "k": 10}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["fallback"], false, "{answer}");

    // Kill stage-1's node until its pod crash-loops.
    let pod = "demo-stage-1-0";
    let uid = ns.get_json(&["pod", pod])["metadata"]["uid"].clone();
    let mut last_kill = Instant::now();
    let mut kills = 0;
    let replaced = loop {
        let now = ns.get_json(&["pod", pod]);
        if now["metadata"]["uid"] != uid && now["metadata"]["uid"].is_string() {
            break now;
        }
        if let Some(pid) = node.process_id(&ns.name, pod, "compute-node") {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            kills += 1;
            last_kill = Instant::now();
        }
        assert!(
            kills < 20,
            "killed {kills} times and never replaced:\n{}",
            diagnose()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let replaced_at = Instant::now();
    println!(
        "killed {kills} times; last kill → pod replaced: {:?}",
        replaced_at - last_kill
    );
    assert!(
        kills >= 3,
        "a crash loop takes repeated failures: {kills} kills"
    );
    let _ = replaced;

    // Fresh model answers again.
    let mut next = playlists.iter().zip(&expected).skip(7);
    let (playlist, expected_tracks) = next.next().unwrap();
    wait_for(
        Duration::from_secs(120),
        "fresh model answers from the replaced node",
        || {
            let (status, answer) = ask(playlist);
            (status == 200 && answer["fallback"] == false).then_some(answer)
        },
        diagnose,
    );
    println!(
        "fresh answers again: {:?} after the last kill, {:?} after the replacement",
        last_kill.elapsed(),
        replaced_at.elapsed()
    );
    let (_, answer) = ask(playlist);
    assert_eq!(&tracks(&answer), expected_tracks);
    for (playlist, expected) in next.take(5) {
        let (status, answer) = ask(playlist);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["fallback"], false, "{answer}");
        assert_eq!(&tracks(&answer), expected);
    }

    // The replacement is in status, in an Event, and in the metrics.
    let status = wait_for(
        Duration::from_secs(30),
        "the replacement in status",
        || {
            let status = ns.get_json(&["recommendercluster", "demo"])["status"].clone();
            (status["replacements"]["count"].as_u64() >= Some(1)).then_some(status)
        },
        diagnose,
    );
    let last = &status["replacements"]["recent"][0];
    assert_eq!(last["pod"], pod, "{status}");
    assert_eq!(last["part"], "stage-1", "{status}");
    assert_eq!(last["reason"], "CrashLoop", "{status}");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("crash-looping after"),
        "{status}"
    );
    let events = ns.get_json(&[
        "events",
        "--field-selector",
        "involvedObject.name=demo,reason=NodeReplaced",
    ]);
    let note = events["items"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        note.starts_with(&format!("replaced {pod} (stage-1): crash-looping")),
        "{events}"
    );
    let metrics = operator.metrics();
    assert!(
        setlist_tests::metric(
            &metrics,
            "setlist_operator_node_replacements_total",
            &[("reason", "CrashLoop")]
        ) >= Some(1.0),
        "{metrics}"
    );
    wait_for(
        Duration::from_secs(60),
        "Running again",
        || {
            (ns.get_json(&["recommendercluster", "demo"])["status"]["phase"] == "Running")
                .then_some(())
        },
        diagnose,
    );
    // The operator ran as the chart's ServiceAccount (`Operator::start`)
    // and the API server refused it nothing.
    operator.assert_nothing_refused();
}
