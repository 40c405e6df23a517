//! The kustomize bases and overlays under `manifests/`: the operator's base
//! is the chart's render (no second copy kept by hand), every base and
//! overlay builds with `kubectl kustomize`, says what its README says, and
//! the real API server accepts it (`kubectl apply --dry-run=server`).

use serde_json::Value;
use setlist_tests::chart;
use setlist_tests::k8s::{Namespace, control_plane, install_crd, kubectl};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every kustomization under manifests/ (bases, overlays, the sample, the
/// monitoring component), relative to the repository.
fn kustomizations() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.file_name().unwrap() == "kustomization.yaml" {
                out.push(path.parent().unwrap().to_path_buf());
            }
        }
    }
    let mut dirs = Vec::new();
    walk(&repo().join("manifests"), &mut dirs);
    let mut dirs: Vec<String> = dirs
        .iter()
        .map(|d| {
            d.strip_prefix(repo())
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    dirs.sort();
    dirs
}

/// What can be applied on its own: every kustomization but the component.
const APPLIABLE: &[&str] = &[
    "manifests/cluster/base",
    "manifests/cluster/overlays/one-machine",
    "manifests/cluster/overlays/production",
    "manifests/operator/base",
    "manifests/operator/overlays/one-machine",
    "manifests/operator/overlays/production",
    "manifests/samples",
];

fn build(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(repo())
        .output()
        .expect("kubectl is installed");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    chart::yaml_documents(&String::from_utf8_lossy(&out.stdout))
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    kinds
}

#[test]
fn the_operator_base_and_monitoring_component_are_the_charts_render() {
    let out = Command::new(repo().join("scripts/render-manifests.sh"))
        .arg("--check")
        .env("SETLIST_HELM_PYTHON", chart::python())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_base_and_overlay_builds_and_says_what_it_is_for() {
    let mut expected: Vec<String> = APPLIABLE.iter().map(|s| s.to_string()).collect();
    expected.push("manifests/operator/components/monitoring".into());
    expected.sort();
    assert_eq!(
        kustomizations(),
        expected,
        "a kustomization this test does not build"
    );
    let readme = std::fs::read_to_string(repo().join("manifests/README.md")).unwrap();
    for dir in APPLIABLE {
        assert!(
            readme.contains(dir),
            "manifests/README.md does not name {dir}"
        );
    }

    // The operator: the chart's objects, labelled as kustomize's.
    let base = build("manifests/operator/base");
    let mut want = vec![
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Namespace",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ];
    assert_eq!(kinds(&base), want);
    for object in &base {
        assert_eq!(
            object["metadata"]["labels"]["app.kubernetes.io/managed-by"], "kustomize",
            "{object}"
        );
    }
    let deployment = find(&base, "Deployment", "setlist-operator").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["metadata"]["namespace"], "setlist-system");
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
        "setlist-operator"
    );

    let one = build("manifests/operator/overlays/one-machine");
    want.retain(|k| *k != "PodDisruptionBudget");
    assert_eq!(kinds(&one), want);
    let deployment = find(&one, "Deployment", "setlist-operator").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 1);
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains(r#"{"name":"SETLIST_LOG_FORMAT","value":"text"}"#),
        "{env}"
    );
    assert!(
        !env.contains(r#""value":"json""#),
        "one format, not two: {env}"
    );

    let production = build("manifests/operator/overlays/production");
    for (kind, name) in [
        ("PodDisruptionBudget", "setlist-operator"),
        ("ServiceMonitor", "setlist-operator"),
        ("PodMonitor", "setlist-operator-clusters"),
        ("PrometheusRule", "setlist-operator"),
        ("ConfigMap", "setlist-operator-dashboard"),
    ] {
        assert!(
            find(&production, kind, name).is_some(),
            "{kind} {name}: {:?}",
            kinds(&production)
        );
    }
    let deployment = find(&production, "Deployment", "setlist-operator").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    let spread = &deployment["spec"]["template"]["spec"]["topologySpreadConstraints"];
    assert_eq!(
        spread[0]["topologyKey"], "kubernetes.io/hostname",
        "{spread}"
    );

    // The sample cluster, unchanged by the base; the overlays' changes.
    let sample = chart::yaml_documents(
        &std::fs::read_to_string(repo().join("manifests/samples/recommendercluster-demo.yaml"))
            .unwrap(),
    );
    assert_eq!(build("manifests/samples"), sample);
    assert_eq!(build("manifests/cluster/base"), sample);
    let one = build("manifests/cluster/overlays/one-machine");
    let spec = &find(&one, "RecommenderCluster", "demo").unwrap()["spec"];
    assert_eq!(spec["stages"]["count"], 3, "the plan is the sample's");
    assert_eq!(spec["stages"]["replicas"], 1);
    assert_eq!(spec["outputShards"]["replicas"], 1);
    assert_eq!(spec["dispatcher"]["replicas"], 1);
    let production = build("manifests/cluster/overlays/production");
    let spec = &find(&production, "RecommenderCluster", "demo").unwrap()["spec"];
    assert_eq!(spec["stages"]["count"], 3);
    assert_eq!(spec["stages"]["replicas"], 2);
    assert_eq!(spec["kafka"]["replicationFactor"], 3);
    assert_eq!(spec["kafka"]["clientSecretName"], "demo-kafka-client");
    assert_eq!(spec["searchApi"]["ingress"]["host"], "music.example.com");
}

#[test]
fn the_api_server_accepts_every_base_and_overlay() {
    let admin = control_plane();
    install_crd(&admin);
    chart::install_monitoring_kinds(&admin);
    // A dry run creates nothing, and namespaced objects need their
    // namespace to be there: the operator's, for real.
    let (ok, _, err) = kubectl(&admin, &["create", "namespace", "setlist-system"], None);
    assert!(ok || err.contains("AlreadyExists"), "{err}");
    let ns = Namespace::new(&admin, "kustomize");
    let dir_of = |dir: &str| repo().join(dir).display().to_string();
    for dir in APPLIABLE {
        let path = dir_of(dir);
        let cluster = !dir.starts_with("manifests/operator");
        for server_side in [false, true] {
            let mut args = vec!["apply", "--dry-run=server", "-k", path.as_str()];
            if server_side {
                args.extend(["--server-side", "--force-conflicts"]);
            }
            if cluster {
                args.extend(["-n", ns.name.as_str()]);
            }
            let (ok, out, err) = kubectl(&admin, &args, None);
            assert!(ok, "kubectl {}: {err}", args.join(" "));
            assert!(out.contains("(server dry run)"), "{out}");
        }
    }
    // Still nothing of it there: a dry run.
    let (_, out, _) = kubectl(
        &admin,
        &["get", "deployments", "-n", "setlist-system", "-o", "name"],
        None,
    );
    assert!(out.trim().is_empty(), "{out}");
}
