//! A real Kubernetes control plane for the operator's tests, the way
//! controller-runtime's envtest is used: the first test of a run starts
//! `../shared/k8s/start.sh` (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler on loopback), the others reuse it, each test in its own
//! namespace. `scripts/test.sh` stops it after the run.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the test run's control plane keeps its state, and its ports: not
/// the defaults, so a control plane someone runs by hand is left alone.
pub const RUN: &str = "/tmp/setlist-k8s-tests";
const PORTS: [(&str, u16); 5] = [
    ("APISERVER_PORT", 16443),
    ("ETCD_CLIENT_PORT", 12379),
    ("ETCD_PEER_PORT", 12380),
    ("CONTROLLER_MANAGER_PORT", 20257),
    ("SCHEDULER_PORT", 20259),
];

/// The control-plane scripts: `SETLIST_K8S`, else `shared/k8s` beside the
/// project. A test that needs them fails, saying so, where they are missing.
pub fn scripts() -> PathBuf {
    let dir = std::env::var_os("SETLIST_K8S")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/k8s"));
    assert!(
        dir.join("start.sh").is_file(),
        "no Kubernetes control plane at {}: set SETLIST_K8S to the folder with start.sh (the project's ../shared/k8s)",
        dir.display()
    );
    dir
}

/// An admin kubeconfig for the run's control plane, started if it is not
/// running yet.
pub fn control_plane() -> PathBuf {
    let kubeconfig = Path::new(RUN).join("kubeconfig");
    let lock = File::create(format!("{RUN}.lock")).expect("the lock file can be made");
    // One test starts it; the others wait here, then find it running.
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("the control plane's lock");
    if !answers(&kubeconfig) {
        let mut start = Command::new(scripts().join("start.sh"));
        start.env("RUN", RUN);
        for (name, port) in PORTS {
            start.env(name, port.to_string());
        }
        let out = start.output().expect("start.sh runs");
        assert!(
            out.status.success() && answers(&kubeconfig),
            "the control plane did not start:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    kubeconfig
}

fn answers(kubeconfig: &Path) -> bool {
    kubeconfig.is_file()
        && Command::new("kubectl")
            .args(["--request-timeout=5s", "get", "--raw", "/readyz"])
            .env("KUBECONFIG", kubeconfig)
            .output()
            .is_ok_and(|o| o.status.success())
}

/// `kubectl` against the run's control plane: (success, stdout, stderr).
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .arg("--request-timeout=30s")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl is installed");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A namespace of its own for one test, deleted (in the background) when
/// dropped.
pub struct Namespace {
    pub name: String,
    pub kubeconfig: PathBuf,
}

/// A file of the repository, for `kubectl apply -f`.
pub fn repo_file(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
        .display()
        .to_string()
}

/// A slices directory with only its manifest: the operator reads nothing
/// else, and these tests run no pods.
pub fn manifest_only(dir: &Path, stages: u32, shards: u32, version: &str) -> String {
    use setlist_core::plan::PartitionPlan;
    use setlist_core::shape::ModelConfig;
    use setlist_core::slice::{FORMAT_VERSION, SLICES_FORMAT, SliceManifest};
    let config = ModelConfig {
        catalogue_size: 100,
        embedding_dim: 8,
        hidden_dim: 8,
        lstm_layers: 3,
        max_history: 10,
        residual: false,
    };
    let manifest = SliceManifest {
        format: SLICES_FORMAT.into(),
        format_version: FORMAT_VERSION,
        model_version: version.into(),
        plan: PartitionPlan::new(&config, stages, shards).unwrap(),
        config,
        slices: Vec::new(),
        catalogue_sha256: String::new(),
    };
    let dir = dir.join(format!("{version}-{stages}x{shards}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string(&manifest).unwrap(),
    )
    .unwrap();
    format!("file://{}", dir.display())
}

/// Installs the CRD from `crds/` (idempotent: server-side apply) and waits
/// until the API server serves it.
pub fn install_crd(kubeconfig: &Path) {
    let crd = repo_file("crds/recommenderclusters.setlist.dev.yaml");
    let (ok, _, err) = kubectl(
        kubeconfig,
        &["apply", "--server-side", "--force-conflicts", "-f", &crd],
        None,
    );
    assert!(ok, "the CRD installs: {err}");
    let (ok, _, err) = kubectl(
        kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/recommenderclusters.setlist.dev",
        ],
        None,
    );
    assert!(ok, "the CRD is established: {err}");
}

impl Namespace {
    /// `kubectl get ARGS… -o json` in this namespace.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let (ok, out, err) = self.kubectl(&all, None);
        assert!(ok, "kubectl get {args:?}: {err}");
        serde_json::from_str(&out).expect("kubectl prints JSON")
    }

    pub fn new(kubeconfig: &Path, prefix: &str) -> Namespace {
        let name = format!("{prefix}-{:x}", std::process::id() ^ rand_suffix());
        let (ok, _, err) = kubectl(kubeconfig, &["create", "namespace", &name], None);
        assert!(ok, "cannot create namespace {name}: {err}");
        Namespace {
            name,
            kubeconfig: kubeconfig.to_path_buf(),
        }
    }

    /// `kubectl -n <this namespace> ARGS…`.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        kubectl(&self.kubeconfig, &all, stdin)
    }
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl(
            &self.kubeconfig,
            &["delete", "namespace", &self.name, "--wait=false"],
            None,
        );
    }
}

/// A `setlist-operator run` process against the run's control plane,
/// watching one namespace, with its Lease there too; killed when dropped.
pub struct Operator {
    child: std::process::Child,
    pub identity: String,
    pub metrics_url: String,
    pub log: PathBuf,
}

impl Operator {
    /// Runs as the operator's ServiceAccount with exactly the rights the
    /// Helm chart grants it ([`operator_kubeconfig`]), never as admin: a
    /// call the chart's RBAC does not allow fails the test that makes it.
    pub fn start(admin: &Path, namespace: &str, identity: &str, log_dir: &Path) -> Operator {
        let credentials = operator_kubeconfig(admin, namespace);
        Operator::start_as(&credentials, namespace, identity, log_dir)
    }

    /// Runs with `kubeconfig`'s credentials, watching `namespace` with its
    /// Lease (the chart's default name) there too.
    pub fn start_as(
        kubeconfig: &Path,
        namespace: &str,
        identity: &str,
        log_dir: &Path,
    ) -> Operator {
        let port = setlist_core::ports::free_loopback_ports(1).expect("a free port");
        let log = log_dir.join(format!("{identity}.log"));
        let out = File::create(&log).expect("the operator's log");
        let child = Command::new(crate::binary("setlist-operator"))
            .args([
                "run",
                "--watch-namespace",
                namespace,
                "--lease-namespace",
                namespace,
            ])
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--identity={identity}"))
            // Short, so the handover test takes seconds.
            .arg("--lease-seconds=4")
            .env("KUBECONFIG", kubeconfig)
            // The controller's own errors (a refused watch among them) are
            // debug lines of setlist_operator::reconcile.
            .env(
                "RUST_LOG",
                "info,kube=warn,setlist_operator::reconcile=debug",
            )
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("setlist-operator starts");
        Operator {
            child,
            identity: identity.to_string(),
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            log,
        }
    }

    /// `setlist_operator_leader`: 1 while it leads; None before it serves.
    pub fn leads(&self) -> Option<bool> {
        let text = crate::http()
            .get(&self.metrics_url)
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        crate::metric(&text, "setlist_operator_leader", &[]).map(|v| v == 1.0)
    }

    pub fn metrics(&self) -> String {
        crate::http()
            .get(&self.metrics_url)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails when the API server refused the operator anything (its log
    /// says `forbidden` then, Events included, which are best effort and
    /// fail nothing else).
    pub fn assert_nothing_refused(&self) {
        let log = self.log_text();
        let refused: Vec<&str> = log
            .lines()
            .filter(|l| l.to_lowercase().contains("forbidden"))
            .collect();
        assert!(
            refused.is_empty(),
            "the API server refused {} calls: the chart's RBAC (charts/setlist-operator/templates/_helpers.tpl) lacks a rule:\n{}",
            self.identity,
            refused.join("\n")
        );
    }

    /// SIGTERM, as Kubernetes stops a pod; waits for the exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the operator did not stop within 40 s of SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 100 ms until it gives a value, or fails after
/// `bound` saying what was awaited and what `diagnose` shows.
pub fn wait_for<T>(
    bound: std::time::Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    diagnose: impl Fn() -> String,
) -> T {
    let deadline = std::time::Instant::now() + bound;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited {bound:?} for {what}:\n{}",
            diagnose()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The release name the tests install the chart's RBAC under.
pub const OPERATOR_RELEASE: &str = "setlist-operator";

/// The chart's ServiceAccount and RBAC for an operator in `namespace`
/// that watches that namespace (`watchNamespace`), rendered by the real
/// Helm engine ([`crate::chart`]) with `values` on top and applied as
/// admin; returns the ServiceAccount's name and what was applied.
pub fn install_operator_rbac(
    admin: &Path,
    release: &str,
    namespace: &str,
    values: &serde_json::Value,
) -> (String, Vec<serde_json::Value>) {
    let rendered = crate::chart::render(values, release, namespace);
    let kinds = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    let objects: Vec<serde_json::Value> = rendered
        .objects
        .iter()
        .filter(|o| kinds.iter().any(|k| o["kind"] == *k))
        .cloned()
        .collect();
    let account = rendered
        .of_kind("ServiceAccount")
        .first()
        .map(|sa| sa["metadata"]["name"].as_str().unwrap().to_string())
        .expect("the chart makes a ServiceAccount");
    let list = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": objects });
    let (ok, _, err) = kubectl(
        admin,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=setlist-tests",
            "-f",
            "-",
        ],
        Some(&list.to_string()),
    );
    assert!(ok, "the chart's ServiceAccount and RBAC apply: {err}");
    (account, objects)
}

/// A kubeconfig for ServiceAccount `account` of `namespace`: the admin
/// kubeconfig's server and CA, and a token the API server mints for the
/// account (`kubectl create token`), as a pod's mounted token would be.
pub fn service_account_kubeconfig(admin: &Path, namespace: &str, account: &str) -> PathBuf {
    let (ok, token, err) = kubectl(
        admin,
        &["-n", namespace, "create", "token", account, "--duration=4h"],
        None,
    );
    assert!(ok, "a token for {namespace}/{account}: {err}");
    let (ok, view, err) = kubectl(
        admin,
        &["config", "view", "--raw", "--minify", "-o", "json"],
        None,
    );
    assert!(ok, "the admin kubeconfig: {err}");
    let view: serde_json::Value = serde_json::from_str(&view).expect("kubectl prints JSON");
    let cluster = view["clusters"][0]["cluster"].clone();
    let user = format!("system:serviceaccount:{namespace}:{account}");
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "local", "cluster": {
            "server": cluster["server"],
            "certificate-authority-data": cluster["certificate-authority-data"],
        }}],
        "users": [{ "name": user, "user": { "token": token.trim() } }],
        "contexts": [{ "name": "operator", "context": {
            "cluster": "local", "user": user, "namespace": namespace,
        }}],
        "current-context": "operator",
    });
    let path = Path::new(RUN).join(format!("{namespace}.{account}.kubeconfig"));
    std::fs::write(&path, config.to_string()).expect("the kubeconfig is written");
    path
}

/// The operator's own credentials for a test namespace: the chart
/// (release [`OPERATOR_RELEASE`], `watchNamespace` = the namespace, which
/// is also the release's) grants its ServiceAccount a Role there and the
/// leader-election Role; the kubeconfig holds that account's token. Made
/// once per namespace.
pub fn operator_kubeconfig(admin: &Path, namespace: &str) -> PathBuf {
    let values = serde_json::json!({ "watchNamespace": namespace, "crds": { "install": false } });
    let account = OPERATOR_RELEASE;
    let path = Path::new(RUN).join(format!("{namespace}.{account}.kubeconfig"));
    if path.is_file() {
        return path;
    }
    let (made, _) = install_operator_rbac(admin, OPERATOR_RELEASE, namespace, &values);
    assert_eq!(
        made, account,
        "the chart names the ServiceAccount after the release"
    );
    service_account_kubeconfig(admin, namespace, account)
}
