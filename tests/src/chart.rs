//! The operator's Helm chart (`charts/setlist-operator`) rendered and
//! linted by the real Helm engine: Helm's Go SDK embedded in PyPI's
//! `helm-python-sdk`, in the virtual environment that
//! `scripts/install-sre-tools.sh` makes and names on stdout. The same
//! engine `helm install` runs: values.schema.json, templates, lint.
//!
//! A test that needs it and cannot have it fails, saying what to run; it is
//! never skipped.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The chart's folder.
pub fn chart_dir() -> PathBuf {
    repo().join("charts/setlist-operator")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the repository")
}

/// The virtual environment's python with `helm_python`: `SETLIST_HELM_PYTHON`
/// where set, else what `scripts/install-sre-tools.sh` prints (it installs
/// what is missing, once; test processes take turns through a lock).
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let python = match std::env::var_os("SETLIST_HELM_PYTHON") {
                Some(path) => PathBuf::from(path),
                None => {
                    let lock = std::fs::File::create("/tmp/setlist-sre-tools.lock")
                        .expect("the install lock file can be made");
                    let _held =
                        nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
                            .map_err(|(_, e)| e)
                            .expect("the install lock");
                    let script = repo().join("scripts/install-sre-tools.sh");
                    let out = Command::new(&script)
                        .stdin(Stdio::null())
                        .output()
                        .unwrap_or_else(|e| panic!("{} cannot run: {e}", script.display()));
                    assert!(
                        out.status.success(),
                        "{} failed, so the Helm engine (PyPI helm-python-sdk) is missing; run it by hand to see why:\n{}",
                        script.display(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
                }
            };
            let check = Command::new(&python)
                .args(["-c", "import helm_python"])
                .output();
            assert!(
                check.as_ref().is_ok_and(|o| o.status.success()),
                "{} cannot import helm_python (PyPI helm-python-sdk): run scripts/install-sre-tools.sh, or set SETLIST_HELM_PYTHON to a python that has it ({check:?})",
                python.display()
            );
            python
        })
        .clone()
}

/// The Python side: one JSON request on stdin, one JSON answer on stdout.
/// Rendered manifests are split into documents and parsed by Helm's own
/// YAML reader (`values_from_yaml`), so Rust reads JSON only.
const PROGRAM: &str = r#"
import json, re, sys
import helm_python

def documents(text):
    out = []
    for doc in re.split(r"(?m)^---[ \t]*$", text):
        if not doc.strip():
            continue
        parsed = helm_python.values_from_yaml(doc)
        if parsed:
            out.append(parsed)
    return out

request = json.load(sys.stdin)
answer = {}
try:
    if request["op"] == "render":
        chart = helm_python.Chart.load(request["chart"])
        files = chart.render(request["values"], name=request["release"],
                             namespace=request["namespace"], is_install=True)
        answer["files"] = files
        answer["objects"] = [
            {"template": path, "object": obj}
            for path in sorted(files)
            if not path.endswith("NOTES.txt")
            for obj in documents(files[path])
        ]
    elif request["op"] == "lint":
        answer["lint"] = helm_python.lint(request["chart"], request["values"], strict=True,
                                          namespace=request["namespace"])
    elif request["op"] == "yaml":
        answer["documents"] = documents(request["text"])
    else:
        raise ValueError("unknown op " + request["op"])
except helm_python.HelmError as e:
    answer["error"] = {"type": type(e).__name__, "message": str(e)}
json.dump(answer, sys.stdout)
"#;

fn call(request: Value) -> Value {
    use std::io::Write;
    let mut child = Command::new(python())
        .args(["-c", PROGRAM])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the Helm engine's python starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Helm engine failed on {request}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the Helm engine answers JSON")
}

/// A release of the chart, rendered.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Template path (`setlist-operator/templates/…`) → rendered text,
    /// `NOTES.txt` included.
    pub files: BTreeMap<String, String>,
    /// Every object, in template order.
    pub objects: Vec<Value>,
}

impl Rendered {
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// The one object of `kind` named `name`.
    pub fn get(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {:#?}", self.names()))
    }

    /// `Kind/name` of every object.
    pub fn names(&self) -> Vec<String> {
        self.objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or("?"),
                    o["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    pub fn notes(&self) -> &str {
        self.files
            .iter()
            .find(|(path, _)| path.ends_with("NOTES.txt"))
            .map(|(_, text)| text.as_str())
            .unwrap_or("")
    }
}

/// Renders the chart as `helm install RELEASE -n NAMESPACE --values` would
/// (values.schema.json checked first); Err is Helm's message.
pub fn try_render(values: &Value, release: &str, namespace: &str) -> Result<Rendered, String> {
    let answer = call(json!({
        "op": "render",
        "chart": chart_dir(),
        "values": values,
        "release": release,
        "namespace": namespace,
    }));
    if let Some(error) = answer.get("error") {
        return Err(format!(
            "{}: {}",
            error["type"].as_str().unwrap_or(""),
            error["message"].as_str().unwrap_or("")
        ));
    }
    let files = answer["files"]
        .as_object()
        .expect("rendered files")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let objects = answer["objects"]
        .as_array()
        .expect("rendered objects")
        .iter()
        .map(|o| o["object"].clone())
        .collect();
    Ok(Rendered { files, objects })
}

pub fn render(values: &Value, release: &str, namespace: &str) -> Rendered {
    try_render(values, release, namespace)
        .unwrap_or_else(|e| panic!("the chart does not render with {values}: {e}"))
}

/// `helm lint --strict` with these values: `{"total_charts_linted",
/// "messages": [{"severity", "path", "error"}], "errors"}` (severity 1
/// info, 2 warning, 3 error).
pub fn lint(values: &Value, namespace: &str) -> Value {
    let answer = call(json!({
        "op": "lint",
        "chart": chart_dir(),
        "values": values,
        "namespace": namespace,
    }));
    assert!(
        answer.get("error").is_none(),
        "helm lint could not run: {answer}"
    );
    answer["lint"].clone()
}

/// A multi-document YAML text (a manifest, `kubectl kustomize`'s output)
/// as JSON values, read by Helm's YAML reader.
pub fn yaml_documents(text: &str) -> Vec<Value> {
    let answer = call(json!({ "op": "yaml", "text": text }));
    if let Some(error) = answer.get("error") {
        panic!("not YAML: {error}\n{text}");
    }
    answer["documents"].as_array().cloned().unwrap_or_default()
}

/// The Prometheus Operator's kinds, for the API server to accept the
/// monitoring component's objects: stand-ins (the kinds, no schema), since
/// the real CRDs are not on this machine. The objects' fields are checked
/// in tests/tests/chart.rs instead.
pub fn install_monitoring_kinds(admin: &Path) {
    for (plural, kind) in [
        ("servicemonitors", "ServiceMonitor"),
        ("podmonitors", "PodMonitor"),
        ("prometheusrules", "PrometheusRule"),
    ] {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": { "name": format!("{plural}.monitoring.coreos.com") },
            "spec": {
                "group": "monitoring.coreos.com",
                "scope": "Namespaced",
                "names": {
                    "plural": plural,
                    "singular": kind.to_lowercase(),
                    "kind": kind,
                    "listKind": format!("{kind}List"),
                },
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": { "openAPIV3Schema": {
                        "type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    }},
                }],
            },
        });
        let (ok, _, err) = crate::k8s::kubectl(
            admin,
            &[
                "apply",
                "--server-side",
                "--field-manager=setlist-tests-standin",
                "-f",
                "-",
            ],
            Some(&crd.to_string()),
        );
        assert!(ok, "{err}");
        let (ok, _, err) = crate::k8s::kubectl(
            admin,
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                &format!("crd/{plural}.monitoring.coreos.com"),
            ],
            None,
        );
        assert!(ok, "{err}");
    }
}
