//! The operator's Helm chart (`charts/setlist-operator`), rendered and
//! linted by the real Helm engine (`setlist_tests::chart`): every values
//! combination charts/README.md documents (`ci/*-values.yaml`) renders,
//! passes `helm lint --strict`, and keeps the Deployment's promises;
//! values.schema.json refuses bad values naming the field; NOTES.txt says
//! what to do next; the monitoring objects follow the job-name contract;
//! the real API server accepts every combination's objects.

use serde_json::{Value, json};
use setlist_tests::chart::{self, Rendered};
use std::path::{Path, PathBuf};

const RELEASE: &str = "setlist-operator";
const NAMESPACE: &str = "setlist-system";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The documented combinations: `charts/setlist-operator/ci/*-values.yaml`
/// (the folder chart-testing reads too), each named in charts/README.md.
fn documented() -> Vec<(String, Value)> {
    let readme = read("charts/README.md");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(chart::chart_dir().join("ci")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.ends_with("-values.yaml"), "ci/{name}");
        assert!(
            readme.contains(&format!("ci/{name}")),
            "charts/README.md does not document ci/{name}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let values = chart::yaml_documents(&text)
            .into_iter()
            .next()
            .unwrap_or(json!({}));
        out.push((name, values));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 6, "{out:?}");
    out
}

fn value<'a>(values: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut at = values;
    for key in path {
        at = at.get(key)?;
    }
    Some(at)
}

fn enabled(values: &Value, key: &str) -> bool {
    value(values, &[key, "enabled"]) == Some(&json!(true))
}

/// What every release must be, whatever its values.
fn assert_promises(name: &str, values: &Value, r: &Rendered) {
    let deployment = r.get("Deployment", RELEASE);
    let replicas = value(values, &["replicaCount"])
        .cloned()
        .unwrap_or(json!(2));
    assert_eq!(deployment["spec"]["replicas"], replicas, "{name}");
    let template = &deployment["spec"]["template"];
    let labels = &template["metadata"]["labels"];
    // The compute nodes' NetworkPolicy admits the operator by this label.
    assert_eq!(
        labels["app.kubernetes.io/name"],
        setlist_operator::desired::MANAGER,
        "{name}"
    );
    for (key, v) in deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&labels[key], v, "{name}: the selector selects the pods");
    }
    // Never a label that would make the operator one of its own pods.
    assert_ne!(labels["app.kubernetes.io/managed-by"], "setlist-operator");

    let pod = &template["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
    assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{name}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{name}"
    );
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
    assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
    assert_eq!(container["args"], json!(["run"]), "{name}");
    assert_eq!(
        container["ports"],
        json!([{ "name": "http", "containerPort": 8080, "protocol": "TCP" }])
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({ "path": "/healthz", "port": "http" })
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({ "path": "/readyz", "port": "http" })
    );
    assert!(
        container["resources"]["requests"]["memory"].is_string(),
        "{name}"
    );
    let env = container["env"].as_array().unwrap();
    for (var, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        assert!(
            env.contains(
                &json!({ "name": var, "valueFrom": { "fieldRef": { "fieldPath": field } } })
            ),
            "{name}: {var} from the downward API"
        );
    }
    let tag = value(values, &["image", "tag"])
        .and_then(Value::as_str)
        .unwrap_or(env!("CARGO_PKG_VERSION"));
    let repository = value(values, &["image", "repository"])
        .and_then(Value::as_str)
        .unwrap_or("ghcr.io/setlist-dev/setlist-operator");
    assert_eq!(container["image"], format!("{repository}:{tag}"), "{name}");

    // The account the pods run as is the one the bindings name.
    let account = pod["serviceAccountName"].as_str().unwrap();
    for binding in r
        .of_kind("RoleBinding")
        .into_iter()
        .chain(r.of_kind("ClusterRoleBinding"))
    {
        assert_eq!(
            binding["subjects"],
            json!([{ "kind": "ServiceAccount", "name": account, "namespace": NAMESPACE }]),
            "{name}"
        );
    }
    let creates_account = value(values, &["serviceAccount", "create"]) != Some(&json!(false));
    assert_eq!(
        r.of_kind("ServiceAccount").len(),
        usize::from(creates_account),
        "{name}"
    );

    let service = r.get("Service", RELEASE);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let pdb = r.of_kind("PodDisruptionBudget");
    assert_eq!(
        pdb.len(),
        usize::from(replicas.as_u64().unwrap() > 1),
        "{name}: a PodDisruptionBudget exactly when there is a replica to spare"
    );
    if let Some(pdb) = pdb.first() {
        assert_eq!(pdb["spec"]["minAvailable"], 1);
    }

    let crds = value(values, &["crds", "install"]) != Some(&json!(false));
    assert_eq!(
        r.of_kind("CustomResourceDefinition").len(),
        usize::from(crds),
        "{name}"
    );
    for (key, kind) in [
        ("serviceMonitor", "ServiceMonitor"),
        ("podMonitor", "PodMonitor"),
        ("prometheusRule", "PrometheusRule"),
    ] {
        assert_eq!(
            r.of_kind(kind).len(),
            usize::from(enabled(values, key)),
            "{name}: {kind}"
        );
    }
    assert_eq!(
        r.of_kind("ConfigMap").len(),
        usize::from(enabled(values, "grafanaDashboard")),
        "{name}"
    );

    // Namespaced objects in the release's namespace, but the watched
    // namespace's Role and the dashboard where it is asked for.
    let watched = value(values, &["watchNamespace"]).and_then(Value::as_str);
    for object in &r.objects {
        let kind = object["kind"].as_str().unwrap();
        let namespace = object["metadata"]["namespace"].as_str();
        let expected = match kind {
            "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding" => None,
            "Role" | "RoleBinding" if object["metadata"]["name"] == RELEASE => watched,
            "ConfigMap" => Some(
                value(values, &["grafanaDashboard", "namespace"])
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .unwrap_or(NAMESPACE),
            ),
            _ => Some(NAMESPACE),
        };
        assert_eq!(namespace, expected, "{name}: {kind}");
    }
}

#[test]
fn every_documented_values_combination_renders_lints_strictly_and_keeps_the_promises() {
    for (name, values) in documented() {
        let rendered = chart::render(&values, RELEASE, NAMESPACE);
        assert_promises(&name, &values, &rendered);
        let lint = chart::lint(&values, NAMESPACE);
        let findings: Vec<&Value> = lint["messages"]
            .as_array()
            .unwrap()
            .iter()
            // 1 is information ("icon is recommended"); 2 warning, 3 error.
            .filter(|m| m["severity"].as_i64() >= Some(2))
            .collect();
        assert!(
            findings.is_empty() && lint["errors"].as_array().is_none_or(Vec::is_empty),
            "helm lint --strict with ci/{name}: {lint:#}"
        );
        assert_eq!(lint["total_charts_linted"], 1);
        println!("ci/{name}: {} objects", rendered.objects.len());
    }
}

/// What `helm install` would send, the API server accepts (a server-side
/// dry run), for every documented combination.
#[test]
fn the_api_server_accepts_every_documented_combination() {
    use setlist_tests::k8s::{control_plane, install_crd, kubectl};
    let admin = control_plane();
    install_crd(&admin);
    chart::install_monitoring_kinds(&admin);
    // A dry run creates nothing, so the namespaces the combinations name
    // are made for real.
    for namespace in [NAMESPACE, "music", "monitoring"] {
        let (ok, _, err) = kubectl(&admin, &["create", "namespace", namespace], None);
        assert!(ok || err.contains("AlreadyExists"), "{err}");
    }
    for (name, values) in documented() {
        let rendered = chart::render(&values, RELEASE, NAMESPACE);
        let list = json!({ "apiVersion": "v1", "kind": "List", "items": rendered.objects });
        let (ok, out, err) = kubectl(
            &admin,
            &[
                "apply",
                "--dry-run=server",
                "--server-side",
                "--force-conflicts",
                "-f",
                "-",
            ],
            Some(&list.to_string()),
        );
        assert!(ok, "ci/{name}: {err}");
        assert_eq!(
            out.lines().count(),
            rendered.objects.len(),
            "ci/{name}: {out}"
        );
    }
}

/// The env variables the chart sets are the ones `setlist-operator run`
/// reads, and its image tag is the workspace's version.
#[test]
fn the_deployment_speaks_the_operators_flags() {
    let help = std::process::Command::new(setlist_tests::binary("setlist-operator"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let rendered = chart::render(&json!({ "watchNamespace": "music" }), RELEASE, NAMESPACE);
    let env =
        &rendered.get("Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]["env"];
    for var in env.as_array().unwrap() {
        let var = var["name"].as_str().unwrap();
        if var == "RUST_LOG" {
            continue;
        }
        assert!(
            help.contains(&format!("[env: {var}=")),
            "the chart sets {var}, which `setlist-operator run` does not read:\n{help}"
        );
    }
    let chart_yaml = read("charts/setlist-operator/Chart.yaml");
    assert!(
        chart_yaml.contains(&format!("appVersion: \"{}\"", env!("CARGO_PKG_VERSION"))),
        "Chart.yaml's appVersion is the workspace version"
    );
}

#[test]
fn the_schema_refuses_bad_values_naming_the_field() {
    for (values, says) in [
        (json!({ "replicaCount": "two" }), "/replicaCount"),
        (json!({ "replicaCount": 0 }), "/replicaCount"),
        (json!({ "replicas": 2 }), "'replicas' not allowed"),
        (json!({ "watchNamespace": "Music_Team" }), "/watchNamespace"),
        (
            json!({ "image": { "pullPolicy": "Sometimes" } }),
            "/image/pullPolicy",
        ),
        (json!({ "logFormat": "xml" }), "/logFormat"),
        (
            json!({ "leaderElection": { "leaseSeconds": 1 } }),
            "/leaderElection/leaseSeconds",
        ),
        (
            json!({ "serviceMonitor": { "enabled": "yes" } }),
            "/serviceMonitor/enabled",
        ),
        (
            json!({ "podMonitor": { "interval": "often" } }),
            "/podMonitor/interval",
        ),
        (
            json!({ "rbac": { "readSecrets": false } }),
            "'readSecrets' not allowed",
        ),
    ] {
        let error = chart::try_render(&values, RELEASE, NAMESPACE)
            .err()
            .unwrap_or_else(|| panic!("{values} was accepted"));
        assert!(
            error.contains("values don't meet the specifications of the schema")
                && error.contains(says),
            "{values}: {error}"
        );
        // helm lint says the same.
        let lint = chart::lint(&values, NAMESPACE);
        assert!(lint.to_string().contains(says), "{values}: {lint}");
    }
    // A rule no schema can say: an account to bind, when none is made.
    let error = chart::try_render(
        &json!({ "serviceAccount": { "create": false } }),
        RELEASE,
        NAMESPACE,
    )
    .unwrap_err();
    assert!(
        error.contains("serviceAccount.name: name an existing ServiceAccount"),
        "{error}"
    );
}

#[test]
fn notes_say_what_to_do_next() {
    let notes = chart::render(&json!({}), RELEASE, NAMESPACE);
    let notes = notes.notes();
    for line in [
        "installed as setlist-operator in namespace setlist-system",
        "in every namespace",
        "kubectl -n setlist-system rollout status deployment/setlist-operator",
        "setlist publish",
        "kubectl apply -f manifests/samples/recommendercluster-demo.yaml",
        "kubectl get rcl -w",
        "kubectl describe rcl demo",
        "port-forward svc/setlist-operator 8080",
    ] {
        assert!(notes.contains(line), "NOTES.txt lacks {line:?}:\n{notes}");
    }
    let one = chart::render(
        &json!({ "watchNamespace": "music", "crds": { "install": false }, "replicaCount": 1,
                "podMonitor": { "enabled": true } }),
        RELEASE,
        NAMESPACE,
    );
    let notes = one.notes();
    for line in [
        "in namespace music only",
        "kubectl apply -n music -f",
        "crds.install is false",
        "PodMonitor (jobs setlist-dispatcher, setlist-search-api, setlist-compute-node)",
        "monitoringNamespaceSelector",
    ] {
        assert!(notes.contains(line), "NOTES.txt lacks {line:?}:\n{notes}");
    }
    assert!(!notes.contains("sharing the Lease"), "{notes}");
}

/// The chart's CRD is crds/'s (which the types generate), byte for byte in
/// files/ and the same object once rendered (with the chart's labels and
/// the keep policy).
#[test]
fn the_charts_crd_is_the_generated_one() {
    let generated = read("crds/recommenderclusters.setlist.dev.yaml");
    assert!(
        read("charts/setlist-operator/files/recommenderclusters.setlist.dev.yaml") == generated,
        "charts/setlist-operator/files/recommenderclusters.setlist.dev.yaml is not crds/'s: run scripts/render-manifests.sh"
    );
    let rendered = chart::render(&json!({}), RELEASE, NAMESPACE);
    let mut crd = rendered
        .get(
            "CustomResourceDefinition",
            "recommenderclusters.setlist.dev",
        )
        .clone();
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let meta = crd["metadata"].as_object_mut().unwrap();
    meta.remove("labels");
    meta.remove("annotations");
    let expected = chart::yaml_documents(&generated).remove(0);
    assert!(crd == expected, "the rendered CRD differs from crds/'s");
    let kept = chart::render(&json!({ "crds": { "keep": false } }), RELEASE, NAMESPACE);
    assert!(
        kept.get(
            "CustomResourceDefinition",
            "recommenderclusters.setlist.dev"
        )["metadata"]["annotations"]
            .is_null()
    );
}

/// Monitoring: the jobs are named as `setlist up` names them locally and
/// as the alerts expect; the alerts and the dashboard are the files'.
#[test]
fn monitoring_objects_follow_the_job_contract() {
    let values = json!({
        "serviceMonitor": { "enabled": true, "labels": { "release": "prometheus" } },
        "podMonitor": { "enabled": true },
        "prometheusRule": { "enabled": true },
        "grafanaDashboard": { "enabled": true },
    });
    let r = chart::render(&values, RELEASE, NAMESPACE);

    let monitor = r.get("ServiceMonitor", RELEASE);
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "http");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(
        endpoint["relabelings"],
        json!([{ "action": "replace", "targetLabel": "job", "replacement": "setlist-operator" }])
    );
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        r.get("Service", RELEASE)["spec"]["selector"]
    );

    let pods = r.get("PodMonitor", "setlist-operator-clusters");
    assert_eq!(
        pods["spec"]["selector"]["matchLabels"],
        json!({ "app.kubernetes.io/managed-by": setlist_operator::desired::MANAGER })
    );
    assert_eq!(pods["spec"]["namespaceSelector"], json!({ "any": true }));
    let endpoint = &pods["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "http");
    let relabel = &endpoint["relabelings"][0];
    assert_eq!(
        relabel["sourceLabels"],
        json!(["__meta_kubernetes_pod_label_app_kubernetes_io_component"])
    );
    assert_eq!(relabel["targetLabel"], "job");
    // The alerts keep the cluster as setlist_cluster: the pods' instance
    // label, which the operator sets to the cluster's name.
    assert_eq!(
        endpoint["relabelings"][1],
        json!({ "action": "replace", "targetLabel": "setlist_cluster",
                "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"] })
    );
    assert_eq!(
        setlist_operator::desired::INSTANCE_LABEL,
        "app.kubernetes.io/instance"
    );
    // The components the operator gives its pods, and so the job names.
    let jobs: Vec<String> = ["dispatcher", "search", "stage-0", "shard-0"]
        .iter()
        .map(|part| {
            let component = setlist_operator::desired::component_of(part);
            relabel["replacement"]
                .as_str()
                .unwrap()
                .replace("${1}", component)
        })
        .collect();
    assert_eq!(
        jobs,
        [
            "setlist-dispatcher",
            "setlist-search-api",
            "setlist-compute-node",
            "setlist-compute-node"
        ]
    );
    let one = chart::render(
        &json!({ "watchNamespace": "music", "podMonitor": { "enabled": true } }),
        RELEASE,
        NAMESPACE,
    );
    assert_eq!(
        one.get("PodMonitor", "setlist-operator-clusters")["spec"]["namespaceSelector"],
        json!({ "matchNames": ["music"] })
    );

    let alerts = chart::yaml_documents(&read("charts/setlist-operator/files/setlist-alerts.yml"))
        .into_iter()
        .next()
        .expect("the alerts file has a document");
    assert_eq!(
        r.get("PrometheusRule", RELEASE)["spec"]["groups"],
        alerts["groups"],
        "the PrometheusRule holds the alerts file's groups"
    );

    let dashboard = r.get("ConfigMap", "setlist-operator-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let held: Value = serde_json::from_str(
        dashboard["data"]["setlist-dashboard.json"]
            .as_str()
            .unwrap(),
    )
    .expect("the dashboard ConfigMap holds JSON");
    let file: Value = serde_json::from_str(&read(
        "charts/setlist-operator/files/setlist-dashboard.json",
    ))
    .unwrap();
    assert_eq!(held, file);
    let elsewhere = chart::render(
        &json!({ "grafanaDashboard": { "enabled": true, "namespace": "monitoring",
                // Helm merges maps: null drops the default label.
                "labels": { "dashboards": "setlist", "grafana_dashboard": null } } }),
        RELEASE,
        NAMESPACE,
    );
    let dashboard = elsewhere.get("ConfigMap", "setlist-operator-dashboard");
    assert_eq!(dashboard["metadata"]["namespace"], "monitoring");
    assert_eq!(dashboard["metadata"]["labels"]["dashboards"], "setlist");
    assert!(dashboard["metadata"]["labels"]["grafana_dashboard"].is_null());
}
