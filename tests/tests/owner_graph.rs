//! The cluster's object tree, as Kubeview or `kubectl tree` shows it, on a
//! real API server (`../shared/k8s`, see `setlist_tests::k8s`): one root,
//! the `RecommenderCluster`; everything of the cluster reaches it through
//! `metadata.ownerReferences`, carries the cluster's labels, and is named
//! after it; what is not in the tree is Kubernetes' own (or the operator's
//! own installation), each kind of exception named below with why; deleting
//! the cluster leaves nothing of it behind.
//!
//! The pods and ReplicaSets are the real kube-controller-manager's, made
//! from the operator's templates. No node runs them: they stay Pending
//! (`placement` selects a node label no node has, so the stand-in nodes of
//! tests running alongside never pick them up), which is all an owner graph
//! needs, and an unscheduled pod is deleted at once when its owner goes.

use serde_json::{Value, json};
use setlist_tests::k8s::{
    Namespace, OPERATOR_RELEASE, Operator, control_plane, install_crd, kubectl, manifest_only,
    wait_for,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const CLUSTER: &str = "demo";
const STAGES: u32 = 3;
const SHARDS: u32 = 2;
/// The operator's identity in its leader Lease.
const IDENTITY: &str = "operator";
/// The Lease the operator leads by (its `--lease-name` default, which the
/// chart keeps).
const LEADER_LEASE: &str = "setlist-operator";

/// The labels every object of the cluster carries, with their values.
const COMMON_LABELS: [(&str, &str); 4] = [
    ("app.kubernetes.io/instance", CLUSTER),
    ("app.kubernetes.io/managed-by", "setlist-operator"),
    ("app.kubernetes.io/name", "setlist"),
    ("app.kubernetes.io/part-of", "setlist"),
];
const PART: &str = "setlist.dev/part";
const COMPONENT: &str = "app.kubernetes.io/component";

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("?")
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("?")
}

fn uid(o: &Value) -> &str {
    o["metadata"]["uid"].as_str().unwrap_or("")
}

fn label<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o["metadata"]["labels"][key].as_str()
}

fn owner_refs(o: &Value) -> &[Value] {
    o["metadata"]["ownerReferences"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// `Kind/name`, as `kubectl tree` prints an object.
fn id(o: &Value) -> String {
    format!("{}/{}", kind(o), name(o))
}

/// The API group of an `apiVersion` (`apps/v1` → `apps`, `v1` → ``).
fn group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// Every part of the cluster this test applies, in pipeline order.
fn parts() -> Vec<String> {
    (0..STAGES)
        .map(|k| format!("stage-{k}"))
        .chain((0..SHARDS).map(|s| format!("shard-{s}")))
        .chain(["dispatcher".to_string(), "search".to_string()])
        .collect()
}

/// The `app.kubernetes.io/component` of a part's objects.
fn component_of(part: &str) -> &'static str {
    match part {
        "dispatcher" => "dispatcher",
        "search" => "search-api",
        _ => "compute-node",
    }
}

/// The part an object's name says it belongs to: `<cluster>-<part>`, or
/// `<cluster>-<part>-…` (a pod, ReplicaSet, ControllerRevision or
/// EndpointSlice Kubernetes names after its owner); the longest part wins.
fn part_of_name(name: &str, parts: &[String]) -> Option<String> {
    parts
        .iter()
        .filter(|part| {
            let prefix = format!("{CLUSTER}-{part}");
            name == prefix || name.starts_with(&format!("{prefix}-"))
        })
        .max_by_key(|part| part.len())
        .cloned()
}

/// Every object in the namespace, of every namespaced resource the API
/// server lists (`kubectl api-resources --verbs=list --namespaced`), once
/// each: Events are served under two groups, with one uid.
fn everything(ns: &Namespace) -> Vec<Value> {
    let mut why = String::new();
    // Other tests install and remove CRDs meanwhile: a resource discovered
    // here may be gone when it is listed; discover again then.
    for _ in 0..5 {
        let (_, found, err) = kubectl(
            &ns.kubeconfig,
            &[
                "api-resources",
                "--verbs=list",
                "--namespaced",
                "-o",
                "name",
            ],
            None,
        );
        let resources: Vec<&str> = found
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if resources.is_empty() {
            why = format!("kubectl api-resources: {err}");
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let (ok, out, err) = ns.kubectl(&["get", &resources.join(","), "-o", "json"], None);
        if !ok {
            why = format!("kubectl get {}: {err}", resources.join(","));
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        let list: Value = serde_json::from_str(&out).expect("kubectl prints JSON");
        let mut seen = BTreeSet::new();
        return list["items"]
            .as_array()
            .expect("a List")
            .iter()
            .filter(|o| seen.insert(uid(o).to_string()))
            .cloned()
            .collect();
    }
    panic!("cannot list the namespace {}: {why}", ns.name)
}

/// The namespace's owner graph.
struct Graph<'a> {
    objects: &'a [Value],
    by_uid: BTreeMap<&'a str, &'a Value>,
    /// Owner uid → its dependents, through references that resolve.
    dependents: BTreeMap<&'a str, Vec<&'a Value>>,
}

impl<'a> Graph<'a> {
    fn new(objects: &'a [Value]) -> Graph<'a> {
        let by_uid: BTreeMap<&str, &Value> = objects.iter().map(|o| (uid(o), o)).collect();
        let mut dependents: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for o in objects {
            for reference in owner_refs(o) {
                if let Some(owner) = reference["uid"].as_str()
                    && by_uid.contains_key(owner)
                {
                    dependents.entry(owner).or_default().push(o);
                }
            }
        }
        for list in dependents.values_mut() {
            list.sort_by_key(|o| (kind(o).to_string(), name(o).to_string()));
        }
        Graph {
            objects,
            by_uid,
            dependents,
        }
    }

    /// The cluster: the one `RecommenderCluster` named [`CLUSTER`].
    fn root(&self) -> Option<&'a Value> {
        self.objects
            .iter()
            .find(|o| kind(o) == "RecommenderCluster" && name(o) == CLUSTER)
    }

    /// The uids `root` reaches through its dependents, itself included.
    fn tree(&self, root: &str) -> BTreeSet<&'a str> {
        let mut reached = BTreeSet::new();
        let mut next = vec![self.by_uid.get(root).map_or("", |o| uid(o))];
        while let Some(at) = next.pop() {
            if at.is_empty() || !reached.insert(at) {
                continue;
            }
            for dependent in self.dependents.get(at).into_iter().flatten() {
                next.push(uid(dependent));
            }
        }
        reached
    }

    /// The tree under `root`, indented as `kubectl tree` prints it, with
    /// each object's part and component labels.
    fn render(&self, root: &Value) -> String {
        fn describe(o: &Value) -> String {
            let mut line = id(o);
            for key in [PART, COMPONENT] {
                if let Some(value) = label(o, key) {
                    let _ = write!(line, "  {}={value}", key.rsplit('/').next().unwrap());
                }
            }
            line
        }
        fn walk<'a>(
            graph: &Graph<'a>,
            o: &'a Value,
            indent: &str,
            out: &mut String,
            seen: &mut BTreeSet<&'a str>,
        ) {
            if !seen.insert(uid(o)) {
                return;
            }
            let children = graph.dependents.get(uid(o)).cloned().unwrap_or_default();
            for (i, child) in children.iter().enumerate() {
                let last = i + 1 == children.len();
                let _ = writeln!(
                    out,
                    "{indent}{}{}",
                    if last { "└─" } else { "├─" },
                    describe(child)
                );
                let deeper = format!("{indent}{}", if last { "  " } else { "│ " });
                walk(graph, child, &deeper, out, seen);
            }
        }
        let mut out = format!("{}\n", describe(root));
        walk(self, root, "", &mut out, &mut BTreeSet::new());
        out
    }
}

/// Why an object outside the cluster's tree may be there, or None: it
/// should not be. `tree_services` are the names of the Services in the
/// tree.
fn allowed_outside(o: &Value, tree_services: &BTreeSet<&str>) -> Option<&'static str> {
    let helm_release = label(o, "app.kubernetes.io/managed-by") == Some("Helm")
        && label(o, "app.kubernetes.io/instance") == Some(OPERATOR_RELEASE)
        && label(o, "app.kubernetes.io/name") == Some("setlist-operator");
    match (kind(o), name(o)) {
        ("Event", _) => Some(
            "a record of what happened to an object (involvedObject), never owned: the API server expires it (1 h TTL)",
        ),
        ("ConfigMap", "kube-root-ca.crt") => Some(
            "the cluster's CA bundle, put in every namespace by kube-controller-manager's root-ca-cert-publisher",
        ),
        ("ConfigMap", "openshift-service-ca.crt")
            if o["metadata"]["annotations"]["service.beta.openshift.io/inject-cabundle"]
                == "true" =>
        {
            Some(
                "the service CA bundle placeholder kube-controller-manager's service-ca-certificate-publisher puts in every namespace (for OpenShift's workloads)",
            )
        }
        ("ServiceAccount", "default") => Some(
            "the namespace's default account, made by kube-controller-manager's serviceaccount controller",
        ),
        ("Endpoints", service) if tree_services.contains(service) && owner_refs(o).is_empty() => {
            Some(
                "the endpoints controller's mirror of the Service of that name: Kubernetes gives Endpoints no ownerReferences (it copies the Service's labels and deletes them with it); the EndpointSlices, which the Service owns, are in the tree",
            )
        }
        ("ServiceAccount" | "Role" | "RoleBinding", _) if helm_release => Some(
            "the operator's own installation (the chart's ServiceAccount and RBAC, which Operator::start applies as `helm install setlist-operator` would): it serves every cluster of the namespace and outlives each",
        ),
        ("Lease", LEADER_LEASE) if o["spec"]["holderIdentity"] == IDENTITY => {
            Some("the operator's leader-election Lease, held by the operator, not by any cluster")
        }
        _ => None,
    }
}

/// Everything wrong with the namespace's owner graph, labels and names
/// (check by check), and the tree as `kubectl tree` prints it.
fn inspect(objects: &[Value]) -> (String, Vec<String>) {
    let graph = Graph::new(objects);
    let parts = parts();
    let mut problems = Vec::new();
    let Some(root) = graph.root() else {
        return (
            "(no RecommenderCluster)".into(),
            vec![format!("no RecommenderCluster {CLUSTER}")],
        );
    };
    let tree = graph.tree(uid(root));
    let mut text = graph.render(root);

    // 1. Every reference resolves, to the object it names; one controller
    // each; the cluster itself has no owner.
    if !owner_refs(root).is_empty() {
        problems.push(format!(
            "{} is owned ({}): it should be the root",
            id(root),
            json!(owner_refs(root))
        ));
    }
    for o in objects {
        let refs = owner_refs(o);
        if refs.is_empty() {
            continue;
        }
        for reference in refs {
            let owner = reference["uid"].as_str().and_then(|u| graph.by_uid.get(u));
            match owner {
                None => problems.push(format!(
                    "{}: ownerReference {reference} names no object in the namespace (a dangling owner)",
                    id(o)
                )),
                Some(owner)
                    if reference["kind"] != kind(owner)
                        || reference["name"] != name(owner)
                        || group(reference["apiVersion"].as_str().unwrap_or(""))
                            != group(owner["apiVersion"].as_str().unwrap_or("")) =>
                {
                    problems.push(format!(
                        "{}: ownerReference {reference} has the uid of {}",
                        id(o),
                        id(owner)
                    ))
                }
                Some(_) => {}
            }
        }
        let controllers = refs.iter().filter(|r| r["controller"] == true).count();
        if controllers != 1 {
            problems.push(format!(
                "{}: {controllers} controller references (one wanted): {}",
                id(o),
                json!(refs)
            ));
        }
    }

    // 2. Outside the tree: only the allowed exceptions. This also makes the
    // cluster the only root of what is Setlist's (labelled with the cluster
    // or as part of Setlist).
    let tree_services: BTreeSet<&str> = objects
        .iter()
        .filter(|o| kind(o) == "Service" && tree.contains(uid(o)))
        .map(name)
        .collect();
    let mut outside: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for o in objects.iter().filter(|o| !tree.contains(uid(o))) {
        match allowed_outside(o, &tree_services) {
            Some(why) => outside.entry(why).or_default().push(id(o)),
            None => {
                let setlist = label(o, "app.kubernetes.io/instance") == Some(CLUSTER)
                    || label(o, "app.kubernetes.io/part-of") == Some("setlist");
                problems.push(format!(
                    "{} is not in the cluster's tree{}; owners: {}",
                    id(o),
                    if setlist {
                        " but is labelled as Setlist's (a second root, or a leftover)"
                    } else {
                        ", and is no allowed exception"
                    },
                    json!(owner_refs(o))
                ));
                let _ = writeln!(text, "NOT IN THE TREE: {}", id(o));
            }
        }
    }
    for (why, ids) in &outside {
        let _ = writeln!(
            text,
            "outside the tree, allowed ({why}):\n    {}",
            ids.join(", ")
        );
    }

    // 3 and 4. Labels and names of everything in the tree.
    for o in objects
        .iter()
        .filter(|o| tree.contains(uid(o)) && uid(o) != uid(root))
    {
        let made_by_operator = owner_refs(o)
            .iter()
            .any(|r| r["controller"] == true && r["uid"] == uid(root));
        for (key, value) in COMMON_LABELS {
            if label(o, key) != Some(value) {
                problems.push(format!(
                    "{} ({}) has {key}={:?}, not {value:?}",
                    id(o),
                    if made_by_operator {
                        "owned by the cluster itself: made by the operator"
                    } else {
                        "made by Kubernetes from the operator's objects"
                    },
                    label(o, key)
                ));
            }
        }
        let by_name = part_of_name(name(o), &parts);
        let workload = matches!(
            kind(o),
            "Pod" | "ReplicaSet" | "StatefulSet" | "Deployment" | "ControllerRevision"
        );
        match (&by_name, label(o, PART)) {
            (None, None) if workload => problems.push(format!(
                "{} is a workload or pod but its name says no part and it has no {PART} label",
                id(o)
            )),
            (None, None) => {}
            (Some(part), labelled) => {
                if labelled != Some(part.as_str()) {
                    problems.push(format!(
                        "{} is named as part {part}'s but has {PART}={labelled:?}",
                        id(o)
                    ));
                }
                let component = component_of(part);
                if label(o, COMPONENT) != Some(component) {
                    problems.push(format!(
                        "{} is named as part {part}'s but has {COMPONENT}={:?}, not {component:?}",
                        id(o),
                        label(o, COMPONENT)
                    ));
                }
            }
            (None, Some(labelled)) => problems.push(format!(
                "{} has {PART}={labelled} but its name is not {CLUSTER}-{labelled}[-…]",
                id(o)
            )),
        }
        let n = name(o);
        if n != CLUSTER && !n.starts_with(&format!("{CLUSTER}-")) {
            problems.push(format!(
                "{}: the name does not start with the cluster's, {CLUSTER}-",
                id(o)
            ));
        }
    }
    (text, problems)
}

/// How many objects of `kind` the namespace has.
fn count(objects: &[Value], of: &str) -> usize {
    objects.iter().filter(|o| kind(o) == of).count()
}

/// The cluster's tree on a real API server is tidy, as the module says,
/// and goes entirely when the cluster is deleted (foreground cascading:
/// the cluster goes last, after every dependent the garbage collector
/// deletes).
#[test]
fn the_clusters_object_tree_has_one_root_its_labels_and_names_and_goes_with_it() {
    let started = Instant::now();
    let kubeconfig = control_plane();
    install_crd(&kubeconfig);
    let ns = Namespace::new(&kubeconfig, "owner-graph");
    let dir = tempfile::tempdir().unwrap();
    let slices = manifest_only(dir.path(), STAGES, SHARDS, "v1");
    let operator = Operator::start(&kubeconfig, &ns.name, IDENTITY, dir.path());

    // Every kind the operator makes: several stages and shards, replicas
    // (so several pods per StatefulSet and ReplicaSet), the search API with
    // an Ingress, NetworkPolicies (on by default).
    let cluster = json!({
        "apiVersion": "setlist.dev/v1alpha1",
        "kind": "RecommenderCluster",
        "metadata": { "name": CLUSTER },
        "spec": {
            "model": { "uri": slices },
            "stages": { "count": STAGES, "replicas": 2 },
            "outputShards": { "count": SHARDS },
            "dispatcher": { "replicas": 2 },
            "searchApi": { "replicas": 2, "ingress": { "host": "music.example.com" } },
            "networkPolicy": { "enabled": true },
            "kafka": { "bootstrapServers": "127.0.0.1:9", "manageTopics": false },
            // No node has this label: the pods stay Pending (see the
            // module's documentation).
            "placement": { "nodeSelector": { "setlist.dev/owner-graph-test": "no-such-node" } },
            // Pending pods are unready: no replacement while the test runs.
            "replacementGraceSeconds": 3600,
        },
    });
    let applied = Instant::now();
    let (ok, _, err) = ns.kubectl(&["apply", "-f", "-"], Some(&cluster.to_string()));
    assert!(ok, "{err}");

    // The operator's objects, and what the controllers make from them.
    let pods = (STAGES * 2 + SHARDS + 2 + 2) as usize;
    let services = 3; // <cluster>-nodes, -dispatcher, -search
    let sets = (STAGES + SHARDS + 1) as usize;
    let objects = wait_for(
        Duration::from_secs(90),
        "the cluster's whole tree (operator's objects, ReplicaSet, pods, revisions, endpoints)",
        || {
            let objects = everything(&ns);
            let complete = count(&objects, "StatefulSet") == sets
                && count(&objects, "Deployment") == 1
                && count(&objects, "PodDisruptionBudget") == sets + 1
                && count(&objects, "NetworkPolicy") == 4
                && count(&objects, "Ingress") == 1
                && count(&objects, "ReplicaSet") == 1
                && count(&objects, "Pod") == pods
                && count(&objects, "ControllerRevision") == sets
                && count(&objects, "Service") == services
                && count(&objects, "Endpoints") == services
                && count(&objects, "EndpointSlice") >= services
                && objects.iter().any(|o| kind(o) == "Lease");
            complete.then_some(objects)
        },
        || {
            let objects = everything(&ns);
            let mut kinds = BTreeMap::<&str, usize>::new();
            for o in &objects {
                *kinds.entry(kind(o)).or_default() += 1;
            }
            format!(
                "{kinds:#?}\n{}\noperator:\n{}",
                inspect(&objects).0,
                operator.log_text()
            )
        },
    );
    eprintln!(
        "kubectl apply → the whole tree ({} objects in the namespace): {:?}",
        objects.len(),
        applied.elapsed()
    );
    // Two seconds more for anything a controller makes late; then the
    // final look.
    std::thread::sleep(Duration::from_secs(2));
    let objects = everything(&ns);
    let (tree, mut problems) = inspect(&objects);
    eprintln!("{tree}");

    // 5. Deleted, the cluster takes everything of its with it. Checked even
    // when the tree is not tidy, so one run reports every problem.
    let deleting = Instant::now();
    let (ok, _, err) = ns.kubectl(
        &[
            "delete",
            "recommendercluster",
            CLUSTER,
            "--cascade=foreground",
            "--timeout=90s",
        ],
        None,
    );
    if !ok {
        problems.push(format!(
            "the cluster was not deleted (foreground) within 90 s: {err}"
        ));
    }
    // Without the cluster nothing is in its tree, so nothing is excepted
    // for being of it (its Services' Endpoints among them).
    let leftovers = |objects: &[Value]| -> Vec<String> {
        objects
            .iter()
            .filter(|o| allowed_outside(o, &BTreeSet::new()).is_none())
            .map(id)
            .collect()
    };
    let bound = Duration::from_secs(60);
    let left = loop {
        let left = leftovers(&everything(&ns));
        if left.is_empty() || deleting.elapsed() > bound {
            break left;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if left.is_empty() {
        eprintln!(
            "delete (foreground) → nothing of the cluster's left: {:?}",
            deleting.elapsed()
        );
    } else {
        problems.push(format!(
            "{bound:?} after the cluster's deletion, still there: {}",
            left.join(", ")
        ));
    }
    eprintln!("whole test: {:?}", started.elapsed());
    assert!(
        problems.is_empty(),
        "the cluster's object tree is not tidy ({} problems):\n  {}\n{tree}",
        problems.len(),
        problems.join("\n  ")
    );
    operator.assert_nothing_refused();
}
