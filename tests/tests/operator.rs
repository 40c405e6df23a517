//! The operator against a real Kubernetes API server (`../shared/k8s`, see
//! `setlist_tests::k8s`): the CRD installs, and the API server holds specs
//! to the CRD's bounds, defaults and CEL rules.

use serde_json::Value;
use setlist_tests::k8s::{Namespace, control_plane, install_crd, manifest_only, repo_file};

#[test]
fn the_api_server_fills_defaults_and_refuses_specs_that_cannot_work() {
    let kubeconfig = control_plane();
    install_crd(&kubeconfig);
    let ns = Namespace::new(&kubeconfig, "crd");

    let sample = repo_file("manifests/samples/recommendercluster-demo.yaml");
    let (ok, _, err) = ns.kubectl(&["apply", "-f", &sample], None);
    assert!(ok, "the sample is accepted: {err}");
    let (_, json, _) = ns.kubectl(&["get", "recommendercluster", "demo", "-o", "json"], None);
    let spec = serde_json::from_str::<Value>(&json).unwrap()["spec"].clone();
    assert_eq!(spec["dispatcher"]["replicas"], 1, "{spec}");
    assert_eq!(spec["dispatcher"]["deadlineMs"], 1000, "{spec}");
    assert_eq!(spec["searchApi"]["replicas"], 1, "{spec}");
    assert_eq!(spec["kafka"]["manageTopics"], true, "{spec}");
    assert_eq!(spec["outputShards"]["replicas"], 1, "{spec}");
    assert_eq!(spec["replacementGraceSeconds"], 120, "{spec}");
    assert_eq!(spec["images"]["pullPolicy"], "IfNotPresent", "{spec}");

    // The short name and the printer columns.
    let (ok, table, err) = ns.kubectl(&["get", "rcl"], None);
    assert!(ok, "{err}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "MODEL", "PHASE", "AGE"]);

    // Each spec that cannot work is refused with a sentence naming the field.
    let refused = |spec: &str, says: &str| {
        let manifest = format!(
            "apiVersion: setlist.dev/v1alpha1\nkind: RecommenderCluster\nmetadata:\n  name: refused\nspec:\n{spec}"
        );
        let (ok, _, err) = ns.kubectl(&["apply", "-f", "-"], Some(&manifest));
        assert!(!ok, "refused: {spec}");
        assert!(err.contains(says), "\"{err}\" should say \"{says}\"");
    };
    let valid = "  model: {uri: \"s3://models/demo\"}\n  stages: {count: 3}\n  outputShards: {count: 2}\n  kafka: {bootstrapServers: \"k:9092\"}\n";
    refused(
        &valid.replace("stages: {count: 3}", "stages: {count: 3, replicas: 20}"),
        "stages.replicas must be at most kafka.topicPartitions",
    );
    refused(
        &valid.replace(
            "outputShards: {count: 2}",
            "outputShards: {count: 2, replicas: 17}",
        ),
        "outputShards.replicas must be at most kafka.topicPartitions",
    );
    refused(
        &valid.replace("s3://models/demo", "ftp://models/demo"),
        "spec.model.uri",
    );
    refused(
        &valid.replace("outputShards: {count: 2}", "outputShards: {count: 0}"),
        "spec.outputShards.count",
    );
    refused(&valid.replace("k:9092", ""), "spec.kafka.bootstrapServers");
    refused(
        &format!("{valid}  images: {{pullPolicy: Sometimes}}\n"),
        "spec.images.pullPolicy",
    );
    refused(
        &valid.replace("  kafka: {bootstrapServers: \"k:9092\"}\n", ""),
        "spec.kafka: Required value",
    );
    // And the valid one is accepted.
    let manifest = format!(
        "apiVersion: setlist.dev/v1alpha1\nkind: RecommenderCluster\nmetadata:\n  name: fine\nspec:\n{valid}"
    );
    let (ok, _, err) = ns.kubectl(&["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "{err}");
}

/// `kind → sorted names` of what the operator owns for cluster `demo`.
fn owned(ns: &Namespace) -> std::collections::BTreeMap<String, Vec<String>> {
    let list = ns.get_json(&[
            "statefulsets,deployments,services,configmaps,serviceaccounts,poddisruptionbudgets,networkpolicies,ingresses",
            "-l",
            "app.kubernetes.io/instance=demo,app.kubernetes.io/managed-by=setlist-operator",
        ],
    );
    let mut owned = std::collections::BTreeMap::<String, Vec<String>>::new();
    for item in list["items"].as_array().unwrap() {
        owned
            .entry(item["kind"].as_str().unwrap().to_string())
            .or_default()
            .push(item["metadata"]["name"].as_str().unwrap().to_string());
    }
    for names in owned.values_mut() {
        names.sort();
    }
    owned
}

fn status(ns: &Namespace) -> Value {
    ns.get_json(&["recommendercluster", "demo"])["status"].clone()
}

fn condition(status: &Value, type_: &str) -> Value {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or(Value::Null)
}

fn apply_cluster(ns: &Namespace, spec: &Value) {
    let manifest = serde_json::json!({
        "apiVersion": "setlist.dev/v1alpha1",
        "kind": "RecommenderCluster",
        "metadata": { "name": "demo" },
        "spec": spec,
    });
    let (ok, _, err) = ns.kubectl(&["apply", "-f", "-"], Some(&manifest.to_string()));
    assert!(ok, "{err}");
}

/// The reconcile loop on a real API server, with no pods running: every
/// object with owner and labels, status and Events; a smaller spec removes
/// what it no longer asks for; slices that do not match are refused with
/// a sentence and nothing changes; `paused` holds; a second operator takes
/// over when the leader stops; deleting the cluster deletes everything
/// (the real garbage collector).
#[test]
fn the_operator_applies_shrinks_refuses_pauses_hands_over_and_cleans_up() {
    use setlist_tests::k8s::{Operator, wait_for};
    use std::time::{Duration, Instant};
    let kubeconfig = control_plane();
    install_crd(&kubeconfig);
    let ns = Namespace::new(&kubeconfig, "reconcile");
    let dir = tempfile::tempdir().unwrap();
    let big = manifest_only(dir.path(), 3, 2, "v1");
    let small = manifest_only(dir.path(), 1, 1, "v2");
    let mut first = Operator::start(&kubeconfig, &ns.name, "operator-a", dir.path());
    let mut second = Operator::start(&kubeconfig, &ns.name, "operator-b", dir.path());
    let logs = || {
        format!(
            "operator-a:\n{}\noperator-b:\n{}",
            first.log_text(),
            second.log_text()
        )
    };
    let leader = wait_for(
        Duration::from_secs(30),
        "one operator to lead",
        || match (first.leads(), second.leads()) {
            (Some(true), Some(false)) => Some("operator-a"),
            (Some(false), Some(true)) => Some("operator-b"),
            _ => None,
        },
        logs,
    );

    let mut spec = serde_json::json!({
        "model": { "uri": big },
        "stages": { "count": 3, "replicas": 2 },
        "outputShards": { "count": 2 },
        "kafka": { "bootstrapServers": "127.0.0.1:9", "manageTopics": false },
    });
    let applied_at = Instant::now();
    apply_cluster(&ns, &spec);
    let expected = |stages: &[&str], search: bool| {
        let mut sets: Vec<String> = stages.iter().map(|p| format!("demo-{p}")).collect();
        sets.push("demo-dispatcher".into());
        sets.sort();
        let mut pdbs = sets.clone();
        let mut services = vec!["demo-dispatcher".to_string(), "demo-nodes".to_string()];
        let mut policies = vec!["demo-compute-nodes", "demo-default-deny", "demo-dispatcher"];
        let mut expected = std::collections::BTreeMap::new();
        if search {
            expected.insert("Deployment".to_string(), vec!["demo-search".to_string()]);
            pdbs.push("demo-search".into());
            pdbs.sort();
            services.push("demo-search".into());
            policies.push("demo-search");
        }
        expected.insert("StatefulSet".to_string(), sets);
        expected.insert("PodDisruptionBudget".to_string(), pdbs);
        expected.insert("Service".to_string(), services);
        expected.insert(
            "NetworkPolicy".to_string(),
            policies.iter().map(|s| s.to_string()).collect(),
        );
        expected.insert("ConfigMap".to_string(), vec!["demo-config".to_string()]);
        expected.insert("ServiceAccount".to_string(), vec!["demo".to_string()]);
        expected
    };
    let all_parts = ["stage-0", "stage-1", "stage-2", "shard-0", "shard-1"];
    wait_for(
        Duration::from_secs(30),
        "every object of the cluster",
        || (owned(&ns) == expected(&all_parts, true)).then_some(()),
        || format!("{:#?}\n{}", owned(&ns), logs()),
    );
    println!(
        "spec applied → every object there: {:?}",
        applied_at.elapsed()
    );

    // Owned by the cluster, labelled, restricted.
    let uid = ns.get_json(&["recommendercluster", "demo"])["metadata"]["uid"].clone();
    let sets = ns.get_json(&["statefulsets", "-l", "app.kubernetes.io/instance=demo"]);
    for set in sets["items"].as_array().unwrap() {
        let meta = &set["metadata"];
        assert_eq!(meta["ownerReferences"][0]["uid"], uid, "{meta}");
        assert_eq!(meta["ownerReferences"][0]["controller"], true, "{meta}");
        assert_eq!(
            meta["labels"]["app.kubernetes.io/name"], "setlist",
            "{meta}"
        );
        let pod = &set["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{pod}");
        assert_eq!(
            pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
            true
        );
    }
    let stage1 = ns.get_json(&["statefulset", "demo-stage-1"]);
    assert_eq!(stage1["spec"]["replicas"], 2);

    // Status and Events.
    let status_now = wait_for(
        Duration::from_secs(30),
        "status with observedGeneration 1",
        || {
            let s = status(&ns);
            (s["observedGeneration"] == 1).then_some(s)
        },
        logs,
    );
    assert_eq!(status_now["modelVersion"], "v1", "{status_now}");
    assert_eq!(
        condition(&status_now, "ModelReady")["status"],
        "True",
        "{status_now}"
    );
    assert_eq!(
        condition(&status_now, "Available")["status"],
        "False",
        "no pod runs here: {status_now}"
    );
    assert_eq!(
        status_now["parts"].as_array().unwrap().len(),
        7,
        "{status_now}"
    );
    let events = ns.get_json(&["events", "--field-selector", "involvedObject.name=demo"]);
    let notes: Vec<String> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["reason"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n == "Created created StatefulSet demo-stage-2"),
        "{notes:#?}"
    );

    // The leader stops (SIGTERM, as on a rollout): the other takes over at
    // once (it released the lease) and makes the next change.
    let (leading, standby) = if leader == "operator-a" {
        (&mut first, &second)
    } else {
        (&mut second, &first)
    };
    let stopped = Instant::now();
    assert!(
        leading.stop().success(),
        "a leader stops cleanly on SIGTERM:\n{}",
        leading.log_text()
    );
    wait_for(
        Duration::from_secs(10),
        "the standby to lead",
        || (standby.leads() == Some(true)).then_some(()),
        || standby.log_text(),
    );
    println!("leader stopped → the other leads: {:?}", stopped.elapsed());

    // Smaller slices and no search API: what the spec drops is deleted.
    spec["model"]["uri"] = serde_json::json!(small);
    spec["stages"]["count"] = serde_json::json!(1);
    spec["outputShards"]["count"] = serde_json::json!(1);
    spec["searchApi"] = serde_json::json!({ "replicas": 0 });
    let applied_at = Instant::now();
    apply_cluster(&ns, &spec);
    wait_for(
        Duration::from_secs(30),
        "the dropped parts' objects to go",
        || (owned(&ns) == expected(&["stage-0", "shard-0"], false)).then_some(()),
        || format!("{:#?}\n{}", owned(&ns), standby.log_text()),
    );
    println!(
        "smaller spec applied → orphans gone: {:?}",
        applied_at.elapsed()
    );
    let status_now = wait_for(
        Duration::from_secs(30),
        "status of generation 2",
        || {
            let s = status(&ns);
            (s["observedGeneration"] == 2).then_some(s)
        },
        || standby.log_text(),
    );
    assert_eq!(status_now["modelVersion"], "v2", "{status_now}");

    // Slices that do not match the spec: refused, saying what to change,
    // and what runs is left as it is.
    spec["stages"]["count"] = serde_json::json!(3);
    apply_cluster(&ns, &spec);
    let refused = wait_for(
        Duration::from_secs(30),
        "ModelReady=False",
        || {
            let s = status(&ns);
            (s["observedGeneration"] == 3).then_some(s)
        },
        || standby.log_text(),
    );
    let model = condition(&refused, "ModelReady");
    assert_eq!(model["status"], "False", "{refused}");
    assert_eq!(model["reason"], "SlicesDoNotMatch", "{refused}");
    assert!(
        model["message"]
            .as_str()
            .unwrap()
            .contains("spec.stages.count is 3 but the slices at file://")
            && model["message"]
                .as_str()
                .unwrap()
                .contains("set stages.count to 1"),
        "{model}"
    );
    assert_eq!(refused["phase"], "ModelNotReady");
    assert_eq!(
        owned(&ns),
        expected(&["stage-0", "shard-0"], false),
        "nothing changed"
    );

    // Paused: a change waits; unpaused, it is applied.
    spec["stages"]["count"] = serde_json::json!(1);
    spec["paused"] = serde_json::json!(true);
    apply_cluster(&ns, &spec);
    wait_for(
        Duration::from_secs(30),
        "phase Paused",
        || (status(&ns)["phase"] == "Paused").then_some(()),
        || format!("{}\n{}", status(&ns), standby.log_text()),
    );
    spec["dispatcher"] = serde_json::json!({ "replicas": 3 });
    apply_cluster(&ns, &spec);
    std::thread::sleep(Duration::from_secs(3));
    let dispatcher = ns.get_json(&["statefulset", "demo-dispatcher"]);
    assert_eq!(dispatcher["spec"]["replicas"], 1, "paused: nothing changes");
    spec["paused"] = serde_json::json!(false);
    apply_cluster(&ns, &spec);
    wait_for(
        Duration::from_secs(30),
        "the held change to be applied",
        || {
            (ns.get_json(&["statefulset", "demo-dispatcher"])["spec"]["replicas"] == 3)
                .then_some(())
        },
        || standby.log_text(),
    );

    // Deleting the cluster deletes everything it owned.
    let (ok, _, err) = ns.kubectl(
        &[
            "delete",
            "recommendercluster",
            "demo",
            "--wait=true",
            "--timeout=60s",
        ],
        None,
    );
    assert!(ok, "{err}");
    wait_for(
        Duration::from_secs(60),
        "the garbage collector to delete the cluster's objects",
        || owned(&ns).is_empty().then_some(()),
        || format!("{:#?}", owned(&ns)),
    );
    // All of it as the chart's ServiceAccount, refused nothing.
    leading.assert_nothing_refused();
    standby.assert_nothing_refused();
}

/// Topics managed by the operator, on tansu (a Kafka-protocol broker with
/// an admin API): made when the cluster is applied, with a finalizer on the
/// cluster; deleted with the cluster, after which the finalizer goes and
/// the cluster with it.
#[test]
fn managed_topics_are_made_with_the_cluster_and_deleted_with_it() {
    use setlist_core::kafka::KafkaSettings;
    use setlist_operator::topics::{TopicAdmin, cluster_prefix};
    use setlist_tests::k8s::{Operator, wait_for};
    use std::time::Duration;
    let tansu = setlist_tests::Tansu::start();
    let kubeconfig = control_plane();
    install_crd(&kubeconfig);
    let ns = Namespace::new(&kubeconfig, "topics");
    let dir = tempfile::tempdir().unwrap();
    let slices = manifest_only(dir.path(), 2, 1, "v1");
    let operator = Operator::start(&kubeconfig, &ns.name, "operator", dir.path());
    apply_cluster(
        &ns,
        &serde_json::json!({
            "model": { "uri": slices },
            "stages": { "count": 2 },
            "outputShards": { "count": 1 },
            "dispatcher": { "replicas": 2 },
            "kafka": { "bootstrapServers": tansu.bootstrap, "topicPartitions": 3 },
        }),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let admin = TopicAdmin::new(&KafkaSettings::new(tansu.bootstrap.clone())).unwrap();
    let prefix = cluster_prefix(&ns.name, "demo").unwrap();
    let topics = || {
        runtime
            .block_on(admin.existing(&prefix))
            .unwrap_or_default()
    };
    let made = wait_for(
        Duration::from_secs(60),
        "the cluster's topics on the broker",
        || {
            let topics = topics();
            (topics.len() == 6).then_some(topics)
        },
        || format!("{:?}\n{}", topics(), operator.log_text()),
    );
    let by_suffix = |suffix: &str| {
        made.iter()
            .find(|(name, _)| name.ends_with(suffix))
            .map(|(_, p)| *p)
    };
    assert_eq!(by_suffix(".stage-0"), Some(3), "{made:?}");
    assert_eq!(
        by_suffix(".stage-2"),
        Some(3),
        "the shards' input: {made:?}"
    );
    assert_eq!(
        by_suffix(".results"),
        Some(2),
        "one reply partition per dispatcher: {made:?}"
    );
    assert_eq!(by_suffix(".dead-letter"), Some(1), "{made:?}");
    let cluster = ns.get_json(&["recommendercluster", "demo"]);
    assert_eq!(
        cluster["metadata"]["finalizers"],
        serde_json::json!(["setlist.dev/kafka-topics"])
    );
    let events = ns.get_json(&[
        "events",
        "--field-selector",
        "involvedObject.name=demo,reason=TopicsApplied",
    ]);
    assert!(
        events["items"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("created setlist."),
        "{events}"
    );

    let (ok, _, err) = ns.kubectl(
        &["delete", "recommendercluster", "demo", "--timeout=60s"],
        None,
    );
    assert!(
        ok,
        "the cluster is deleted once its topics are: {err}\n{}",
        operator.log_text()
    );
    assert!(topics().is_empty(), "{:?}", topics());
    operator.assert_nothing_refused();
}
