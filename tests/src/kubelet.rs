//! A stand-in node: a tiny kubelet (and kube-proxy) for end-to-end tests on
//! the real control plane of [`crate::k8s`], which has no kubelet and no
//! container runtime.
//!
//! [`StandInNode::start`] registers a `Node` (Ready, 16 CPUs, 64 GiB, 110
//! pods, InternalIP 127.0.0.1), renews its `Lease` in `kube-node-lease` and
//! heartbeats its Ready condition every 10 s, and watches the pods bound to
//! it (`spec.nodeName`). It runs each pod's containers as local processes and
//! writes the pod's status subresource the way a kubelet does, so `kubectl
//! get pods` shows `Running 1/1`, `CrashLoopBackOff`, restart counts, and so
//! on. Several nodes may run at once, in one test process or several: each
//! handles only its own pods. Dropping the node stops every process it
//! started (SIGTERM, then SIGKILL) and deletes the `Node`.
//!
//! # How a pod maps onto this machine
//!
//! - **Address**: each pod gets a loopback address of its own,
//!   `127.<h>.<1..127>.<1..250>`, where `h` comes from a hash of the node's
//!   name; it is `status.podIP`, and `hostIP` is 127.0.0.1. An address is
//!   held with a lock file under `$TMPDIR/setlist-standin-addresses`, so nodes
//!   in concurrent test processes never hand out the same one. `hostNetwork`
//!   pods get 127.0.0.1.
//! - **Images**: the last path segment of the image's repository names a
//!   binary in [`NodeOptions::binaries`]
//!   (`ghcr.io/setlist-dev/setlist-node:0.1.0` → `<binaries>/setlist-node`),
//!   else a program on `PATH`. A `command` overrides it; its first word is
//!   mapped the same way when it names a binary there, else run from `PATH`.
//!   `$(VAR)` in command, args and env values is expanded as the kubelet does
//!   (`$$` escapes; unknown references stay as they are).
//! - **Environment**: the test process's own, less `SETLIST_*` and
//!   `KUBECONFIG`; then service links (`<SVC>_SERVICE_HOST`/`_PORT`, pointing
//!   at the proxy below) unless `enableServiceLinks: false`; then `envFrom`
//!   (configMapRef, secretRef, prefix) and `env` (value; valueFrom fieldRef —
//!   metadata.name/namespace/uid/labels['k']/annotations['k'], spec.nodeName,
//!   spec.serviceAccountName, status.podIP/hostIP —, configMapKeyRef and
//!   secretKeyRef with `optional` honoured, resourceFieldRef with the node's
//!   capacity as the default limit).
//! - **Volumes** live under `<work>/<namespace>/<pod>/volumes/<name>`:
//!   emptyDir is a fresh folder; configMap, secret, projected (configMap,
//!   secret, downwardAPI, serviceAccountToken through the TokenRequest API)
//!   and downwardAPI volumes are folders with one file per key (items,
//!   paths and modes honoured); hostPath is that path; a
//!   persistentVolumeClaim is `<work>/<namespace>/claims/<claim>`, kept
//!   across pods. Processes cannot mount, so each `volumeMount`'s
//!   `mountPath` (with its `subPath`) is **rewritten** to the local folder
//!   wherever it appears as a path in command, args, env values, `workingDir`
//!   and in the text of files materialised from configMap and secret
//!   volumes (longest mountPath first), so a config file naming
//!   `/var/cache/setlist` works.
//! - **Network**: the literal `0.0.0.0` in args, env values and materialised
//!   files becomes the pod's address, so servers listen there (a process that
//!   binds 127.0.0.1 itself is not reachable at the pod's address; one that
//!   binds `0.0.0.0` through a value the node cannot see clashes with other
//!   pods). Addresses such as `127.0.0.1:PORT` pass through untouched.
//! - **Services**: there is no kube-proxy and no DNS, so the node is a tiny
//!   kube-proxy. Every Service of type ClusterIP with a selector in a
//!   namespace where the node runs pods gets a loopback address of its own
//!   (`127.<h>.<128..254>.<1..250>`); the node listens there on each TCP
//!   service port and forwards each connection to a Ready pod that this node
//!   runs and the selector matches, at the `targetPort` (a number or a named
//!   container port), round robin. The service's host names — `svc`,
//!   `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local` — and its ClusterIP
//!   are rewritten to that address in args, env values and materialised files
//!   where they appear as whole host names: the dotted forms anywhere, the
//!   bare `svc` only where it is clearly a host (`svc:9092`, `http://svc/…`,
//!   `user@svc`), so a word that happens to equal a service name stays. The
//!   rewriting happens when a pod starts: a Service created after a pod
//!   started is proxied, but is not rewritten into that pod (create Services
//!   first). Service ports below 1024 need a process allowed to bind them.
//! - **Logs**: stdout and stderr of each container go to
//!   [`StandInNode::log_path`], `<work>/<namespace>/<pod>/<container>.log`,
//!   appended across restarts, with a `--- standin …` marker line at each
//!   start and exit (and for probe failures that restart it).
//!
//! # Lifecycle, as a kubelet
//!
//! Phase Pending → Running (→ Succeeded / Failed for restartPolicy Never and
//! OnFailure once every container is done); conditions PodScheduled,
//! PodReadyToStartContainers, Initialized, ContainersReady, Ready with their
//! transition times; container statuses with `standin://<pid>` container
//! IDs, running / terminated (exit code, reason Completed / Error /
//! StartError, signal) / waiting (ContainerCreating, PodInitializing,
//! CreateContainerConfigError, CrashLoopBackOff with the kubelet's
//! "back-off 10s restarting failed container=… pod=…" message) states and
//! `lastState`. Status is written only when it changed. Init containers run
//! in order to completion first (those with `restartPolicy: Always` run
//! beside the others, as sidecars). A container that exits is restarted
//! (policy Always, or OnFailure after a failure) after a back-off:
//! [`NodeOptions::crash_backoff`], doubling per consecutive restart up to
//! 5 min, reset once a run lasted 10 min. Probes (startup, readiness,
//! liveness; httpGet, tcpSocket, exec; initialDelaySeconds, periodSeconds,
//! timeoutSeconds, successThreshold, failureThreshold) work as the kubelet's:
//! readiness sets the container's and the pod's readiness, a failed liveness
//! or startup probe kills (SIGTERM, SIGKILL after the grace period) and
//! restarts the container. A pod whose deletion starts (deletionTimestamp)
//! has its processes stopped (SIGTERM, SIGKILL after its grace period), its
//! probes and proxying stopped, and is then deleted with grace 0, so it
//! disappears. A pod deleted outright has its processes stopped at once.
//!
//! Each container runs in a process group of its own (the group is killed
//! when the container stops, so its children go too) under `setpriv
//! --pdeathsig KILL` where util-linux's `setpriv` exists, so the container's
//! main process dies with the node's thread even if the test process is
//! killed; dropping the node (also while a test panics) kills what is left.
//!
//! # What it does not do
//!
//! No isolation (no namespaces, cgroups, users, resource limits, read-only
//! mounts): every container is a plain process of the test's user sharing its
//! file system. No images are pulled. No DNS: only the Service host names it
//! rewrites resolve, and not `pod.svc` names of headless services. UDP
//! service ports, NodePorts, LoadBalancers, Ingress, NetworkPolicies,
//! gRPC probes (they fail, saying so), HTTPS probes beyond connecting,
//! lifecycle hooks, ephemeral containers, in-place resize, and
//! `activeDeadlineSeconds` are not supported; in-cluster API access from a
//! pod does not work (the service account token is written, but clients look
//! for it at the fixed path, and the API server's address is not
//! injected). Pod spec updates after the start (e.g. a changed image) are
//! ignored: a pod runs as it was first seen.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, Node, Pod, PodSpec, Probe, ResourceFieldSelector, Secret,
    Service, ServiceAccount, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot, watch};

/// The field manager of everything the node writes.
const MANAGER: &str = "setlist-standin-kubelet";
/// How often the node renews its Lease and heartbeats its Ready condition.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// The kubelet's ceiling on the crash back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A run this long resets the crash back-off, as the kubelet's does.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// The Kubernetes version the node reports (that of `../shared/k8s`).
const KUBELET_VERSION: &str = "v1.32.13";

/// How a [`StandInNode`] runs pods.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Where images' binaries are: `<binaries>/<last segment of the image>`,
    /// e.g. `target/release`.
    pub binaries: PathBuf,
    /// Logs and volumes: `<work>/<namespace>/<pod>/…`.
    pub work: PathBuf,
    /// The first crash back-off; it doubles per consecutive restart, up to
    /// 5 min. The kubelet's is 10 s; tests want about 1 s.
    pub crash_backoff: Duration,
    /// Labels of the Node, besides `kubernetes.io/hostname=<name>`,
    /// `kubernetes.io/os` and `kubernetes.io/arch`.
    pub labels: BTreeMap<String, String>,
}

impl NodeOptions {
    /// The workspace's binaries next to the test executable
    /// (`target/<profile>/`), logs and volumes under `work`, a 1 s crash
    /// back-off, no extra labels.
    pub fn new(work: &Path) -> NodeOptions {
        let exe = std::env::current_exe().expect("the test knows its own path");
        let binaries = exe
            .parent()
            .and_then(Path::parent)
            .expect("tests run from target/<profile>/deps")
            .to_path_buf();
        NodeOptions {
            binaries,
            work: work.to_path_buf(),
            crash_backoff: Duration::from_secs(1),
            labels: BTreeMap::new(),
        }
    }
}

/// A registered node that runs the pods bound to it as local processes (see
/// the module's documentation). Stops them all and deletes the Node when
/// dropped.
pub struct StandInNode {
    name: String,
    work: PathBuf,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    stopped: std::sync::mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StandInNode {
    /// Registers the node `name` with the API server of `kubeconfig` and
    /// starts running its pods; returns once the node is Ready and
    /// schedulable. Panics, saying why, when it cannot.
    pub fn start(kubeconfig: &Path, name: &str, options: NodeOptions) -> StandInNode {
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
        let work = options.work.clone();
        let thread = std::thread::Builder::new()
            .name(format!("standin-{name}"))
            .spawn({
                let kubeconfig = kubeconfig.to_path_buf();
                let name = name.to_string();
                let shared = shared.clone();
                move || {
                    // One thread runs everything, so the processes it starts
                    // (under `setpriv --pdeathsig`) die with it and no sooner.
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime.block_on(run_node(
                            kubeconfig,
                            name,
                            options,
                            shared,
                            ready_tx,
                            shutdown_rx,
                        )),
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("no tokio runtime: {e}")));
                        }
                    }
                    let _ = stopped_tx.send(());
                }
            })
            .expect("a thread for the stand-in node");
        let node = StandInNode {
            name: name.to_string(),
            work,
            shared,
            shutdown: Some(shutdown_tx),
            stopped: stopped_rx,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(90)) {
            Ok(Ok(())) => node,
            Ok(Err(e)) => panic!(
                "the stand-in node {name} could not start (kubeconfig {}): {e}",
                kubeconfig.display()
            ),
            Err(_) => panic!(
                "the stand-in node {name} was not registered and Ready within 90 s (kubeconfig {})",
                kubeconfig.display()
            ),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pid of the running process of a container of a pod this node
    /// runs (the leader of its process group), if it is running now.
    pub fn process_id(&self, namespace: &str, pod: &str, container: &str) -> Option<u32> {
        lock(&self.shared.pods)
            .get(&(namespace.to_string(), pod.to_string()))?
            .pids
            .get(container)
            .copied()
    }

    /// The loopback address of a pod this node runs (its `status.podIP`).
    pub fn pod_address(&self, namespace: &str, pod: &str) -> Option<Ipv4Addr> {
        lock(&self.shared.pods)
            .get(&(namespace.to_string(), pod.to_string()))
            .map(|entry| entry.address)
    }

    /// Where a container's stdout and stderr go (appended across restarts).
    pub fn log_path(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.work
            .join(namespace)
            .join(pod)
            .join(format!("{container}.log"))
    }

    /// The last `lines` lines of every container log of this node, for a
    /// failure message.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut logs = Vec::new();
        for namespace in read_dir_paths(&self.work) {
            for pod in read_dir_paths(&namespace) {
                for file in read_dir_paths(&pod) {
                    if file.extension().is_some_and(|e| e == "log") {
                        logs.push(format!(
                            "== {}\n{}",
                            file.display(),
                            crate::last_lines(&file, lines)
                        ));
                    }
                }
            }
        }
        logs.sort();
        logs.join("\n")
    }
}

fn read_dir_paths(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

impl Drop for StandInNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "the container logs of the stand-in node {}:\n{}",
                self.name,
                self.log_tails(30)
            );
        }
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if self.stopped.recv_timeout(Duration::from_secs(30)).is_ok()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
        // Whatever the node's thread did not stop, for whatever reason.
        for group in lock(&self.shared.groups).drain() {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// RFC 3339 to the second, as `metav1.Time`.
fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// What the node's thread and the test's thread share.
#[derive(Default)]
struct Shared {
    pods: Mutex<HashMap<PodKey, PodEntry>>,
    /// Live process groups, killed in `Drop` if the node's thread left any.
    groups: Mutex<HashSet<i32>>,
}

/// (namespace, name)
type PodKey = (String, String);

/// A loopback address and the lock file that reserves it, if any.
type HeldAddress = (Ipv4Addr, Option<Flock<File>>);

struct PodEntry {
    uid: String,
    address: Ipv4Addr,
    labels: BTreeMap<String, String>,
    /// Named container ports, for services' named target ports.
    ports: HashMap<String, u16>,
    ready: bool,
    terminating: bool,
    /// Running containers' pids.
    pids: HashMap<String, u32>,
}

impl Shared {
    fn with_pod(&self, key: &PodKey, uid: &str, change: impl FnOnce(&mut PodEntry)) {
        if let Some(entry) = lock(&self.pods).get_mut(key)
            && entry.uid == uid
        {
            change(entry);
        }
    }

    /// Where a service's connections may go: Ready pods of this node in
    /// `namespace` that `selector` matches, at the target port.
    fn backends(
        &self,
        namespace: &str,
        selector: &BTreeMap<String, String>,
        target: &IntOrString,
    ) -> Vec<SocketAddrV4> {
        let pods = lock(&self.pods);
        let mut backends: Vec<SocketAddrV4> = pods
            .iter()
            .filter(|((ns, _), entry)| {
                ns == namespace
                    && entry.ready
                    && !entry.terminating
                    && selector.iter().all(|(k, v)| entry.labels.get(k) == Some(v))
            })
            .filter_map(|(_, entry)| {
                let port = match target {
                    IntOrString::Int(port) => u16::try_from(*port).ok(),
                    IntOrString::String(name) => {
                        entry.ports.get(name).copied().or_else(|| name.parse().ok())
                    }
                }?;
                Some(SocketAddrV4::new(entry.address, port))
            })
            .collect();
        backends.sort();
        backends
    }
}

/// The node's thread: registers, then handles pods until told to stop.
async fn run_node(
    kubeconfig: PathBuf,
    name: String,
    options: NodeOptions,
    shared: Arc<Shared>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let kubelet = match Kubelet::start(&kubeconfig, &name, options, shared).await {
        Ok(kubelet) => Arc::new(kubelet),
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let heartbeat = tokio::spawn(kubelet.clone().heartbeat());
    let services = tokio::spawn(kubelet.clone().watch_services());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={name}"));
    let mut events =
        std::pin::pin!(watcher(Api::<Pod>::all(kubelet.client.clone()), config).default_backoff());
    let _ = ready.send(Ok(()));

    let mut pods: HashMap<String, PodTask> = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut listed: Option<HashSet<String>> = None;
    loop {
        let event = tokio::select! {
            _ = &mut shutdown => break,
            event = events.next() => event,
        };
        match event {
            Some(Ok(watcher::Event::Init)) => listed = Some(HashSet::new()),
            Some(Ok(watcher::Event::InitApply(pod))) => {
                if let Some(listed) = listed.as_mut() {
                    listed.insert(uid_of(&pod));
                }
                kubelet.apply_pod(&mut pods, &finished, pod);
            }
            Some(Ok(watcher::Event::InitDone)) => {
                if let Some(listed) = listed.take() {
                    for (uid, task) in &pods {
                        if !listed.contains(uid) {
                            let _ = task.desired.send(Desired::Gone);
                        }
                    }
                }
            }
            Some(Ok(watcher::Event::Apply(pod))) => kubelet.apply_pod(&mut pods, &finished, pod),
            Some(Ok(watcher::Event::Delete(pod))) => {
                if let Some(task) = pods.get(&uid_of(&pod)) {
                    let _ = task.desired.send(Desired::Gone);
                }
            }
            Some(Err(e)) => eprintln!("standin {name}: watching pods failed (retrying): {e}"),
            None => break,
        }
        pods.retain(|uid, task| {
            let done = task.handle.is_finished();
            if done {
                finished.insert(uid.clone());
            }
            !done
        });
    }
    for task in pods.values() {
        let _ = task.desired.send(Desired::Shutdown);
    }
    let handles = pods.into_values().map(|task| task.handle);
    let _ = tokio::time::timeout(Duration::from_secs(15), futures::future::join_all(handles)).await;
    heartbeat.abort();
    services.abort();
    kubelet.deregister().await;
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// What the node wants of a pod's task.
#[derive(Clone)]
enum Desired {
    /// The pod as last seen.
    Run(Box<Pod>),
    /// Deleted outright (or gone from a relist).
    Gone,
    /// The node is going away.
    Shutdown,
}

struct PodTask {
    desired: watch::Sender<Desired>,
    handle: tokio::task::JoinHandle<()>,
}

/// The node's state inside its thread.
struct Kubelet {
    name: String,
    client: Client,
    options: NodeOptions,
    shared: Arc<Shared>,
    /// util-linux's `setpriv`, for `--pdeathsig`.
    setpriv: Option<PathBuf>,
    /// The test process's environment less `SETLIST_*` and `KUBECONFIG`.
    base_env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    addresses: Mutex<Addresses>,
    /// Each service's address, kept for the node's life.
    service_addresses: Mutex<HashMap<PodKey, HeldAddress>>,
    /// Namespaces where the node runs (or ran) pods: the services it proxies.
    served: Mutex<HashSet<String>>,
    proxies: tokio::sync::Mutex<HashMap<PodKey, ServiceProxy>>,
    ready_since: Timestamp,
}

impl Kubelet {
    async fn start(
        kubeconfig: &Path,
        name: &str,
        options: NodeOptions,
        shared: Arc<Shared>,
    ) -> Result<Kubelet, String> {
        let config = kube::config::Kubeconfig::read_from(kubeconfig)
            .map_err(|e| format!("cannot read the kubeconfig: {e}"))?;
        let config = kube::Config::from_custom_kubeconfig(
            config,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(|e| format!("bad kubeconfig: {e}"))?;
        let client = Client::try_from(config).map_err(|e| format!("no client: {e}"))?;
        std::fs::create_dir_all(&options.work)
            .map_err(|e| format!("cannot make {}: {e}", options.work.display()))?;
        let base_env = std::env::vars_os()
            .filter(|(key, _)| {
                let key = key.to_string_lossy();
                !key.starts_with("SETLIST_") && key != "KUBECONFIG"
            })
            .collect();
        let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file());
        let kubelet = Kubelet {
            name: name.to_string(),
            client,
            addresses: Mutex::new(Addresses::new(name)),
            options,
            shared,
            setpriv,
            base_env,
            service_addresses: Mutex::default(),
            served: Mutex::default(),
            proxies: tokio::sync::Mutex::default(),
            ready_since: now(),
        };
        kubelet.register().await?;
        Ok(kubelet)
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let mut labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), self.name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), arch.to_string()),
        ]);
        labels.extend(self.options.labels.clone());
        labels
    }

    fn node_status(&self) -> Value {
        let beat = rfc3339(now());
        let since = rfc3339(self.ready_since);
        let condition = |kind: &str, status: &str, reason: &str, message: &str| {
            json!({"type": kind, "status": status, "reason": reason, "message": message,
                   "lastHeartbeatTime": beat, "lastTransitionTime": since})
        };
        let resources =
            json!({"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"});
        json!({
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "stand-in kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "standin", "systemUUID": "standin", "bootID": "standin",
                "kernelVersion": "", "osImage": "stand-in node (setlist tests)",
                "containerRuntimeVersion": "standin://0.1.0",
                "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": self.labels()["kubernetes.io/arch"],
            },
        })
    }

    async fn register(&self) -> Result<(), String> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": self.name, "labels": self.labels()},
            "status": self.node_status(),
        }))
        .map_err(|e| format!("bad node: {e}"))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // Left by an earlier run: take it over.
                let patch = json!({"metadata": {"labels": self.labels()},
                                   "spec": {"unschedulable": false, "taints": null}});
                nodes
                    .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| format!("cannot take over node {}: {e}", self.name))?;
            }
            Err(e) => return Err(format!("cannot create node {}: {e}", self.name)),
        }
        self.renew().await?;
        // The node lifecycle controller may have tainted it before it was
        // Ready; wait until the scheduler can use it.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let node = nodes
                .get(&self.name)
                .await
                .map_err(|e| format!("cannot read node {}: {e}", self.name))?;
            let taints: Vec<String> = node
                .spec
                .and_then(|s| s.taints)
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t.key.starts_with("node.kubernetes.io/"))
                .map(|t| t.key)
                .collect();
            if taints.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node {} is still tainted {taints:?} after 60 s",
                    self.name
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Renews the Lease and heartbeats the node's conditions.
    async fn renew(&self) -> Result<(), String> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = nodes
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": self.node_status()})),
            )
            .await
            .map_err(|e| format!("cannot write node {}'s status: {e}", self.name))?;
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some("kube-node-lease".into()),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: self.name.clone(),
                    uid: node.metadata.uid.unwrap_or_default(),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.name.clone()),
                lease_duration_seconds: Some(40),
                renew_time: Some(MicroTime(now())),
                ..Default::default()
            }),
        };
        Api::<Lease>::namespaced(self.client.clone(), "kube-node-lease")
            .patch(
                &self.name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await
            .map_err(|e| format!("cannot renew node {}'s lease: {e}", self.name))?;
        Ok(())
    }

    async fn heartbeat(self: Arc<Self>) {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            if let Err(e) = self.renew().await {
                eprintln!("standin {}: {e}", self.name);
            }
        }
    }

    async fn deregister(&self) {
        let limit = Duration::from_secs(10);
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let _ =
            tokio::time::timeout(limit, leases.delete(&self.name, &DeleteParams::default())).await;
        let nodes: Api<Node> = Api::all(self.client.clone());
        if let Ok(Err(e)) =
            tokio::time::timeout(limit, nodes.delete(&self.name, &DeleteParams::default())).await
        {
            eprintln!("standin {}: cannot delete the node: {e}", self.name);
        }
    }

    fn apply_pod(
        self: &Arc<Self>,
        pods: &mut HashMap<String, PodTask>,
        finished: &HashSet<String>,
        pod: Pod,
    ) {
        let uid = uid_of(&pod);
        if uid.is_empty() || finished.contains(&uid) {
            return;
        }
        let desired = Desired::Run(Box::new(pod));
        match pods.get(&uid) {
            Some(task) => {
                let _ = task.desired.send(desired);
            }
            None => {
                let (tx, rx) = watch::channel(desired);
                let handle = tokio::spawn(run_pod(self.clone(), rx));
                pods.insert(
                    uid,
                    PodTask {
                        desired: tx,
                        handle,
                    },
                );
            }
        }
    }

    async fn delete_pod(&self, namespace: &str, name: &str, uid: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        for attempt in 0..5 {
            match pods.delete(name, &params).await {
                Ok(_) => return,
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return,
                Err(e) => {
                    eprintln!(
                        "standin {}: cannot delete pod {namespace}/{name} (attempt {attempt}): {e}",
                        self.name
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// The program for a command's first word: a workspace binary of that
    /// name if there is one, else the word itself.
    fn program(&self, word: &str) -> String {
        let base = word.rsplit('/').next().unwrap_or(word);
        let candidate = self.options.binaries.join(base);
        if !base.is_empty() && candidate.is_file() {
            candidate.display().to_string()
        } else {
            word.to_string()
        }
    }

    /// The executable to run for `program` with the container's environment.
    fn resolve(&self, program: &str, env: &[(String, String)]) -> Result<PathBuf, String> {
        if program.contains('/') {
            let path = PathBuf::from(program);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(format!("{program}: no such file"))
            };
        }
        let path = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_default();
        path.split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| Path::new(dir).join(program))
            .find(|candidate| {
                candidate
                    .metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
            .ok_or_else(|| {
                format!(
                    "exec: {program:?}: executable file not found in {} nor in $PATH",
                    self.options.binaries.display()
                )
            })
    }

    /// Starts a process in a process group of its own, its output appended
    /// to `log`.
    fn spawn(
        &self,
        program: &str,
        args: &[String],
        env: &[(String, String)],
        cwd: &Path,
        output: Stdio,
        errors: Stdio,
    ) -> Result<tokio::process::Child, String> {
        let executable = self.resolve(program, env)?;
        let mut command = match &self.setpriv {
            Some(setpriv) => {
                let mut command = tokio::process::Command::new(setpriv);
                command.args(["--pdeathsig", "KILL", "--"]).arg(&executable);
                command
            }
            None => tokio::process::Command::new(&executable),
        };
        command
            .args(args)
            .env_clear()
            .envs(self.base_env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .process_group(0)
            .kill_on_drop(false);
        command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", executable.display()))
    }

    /// Proxies the services of `namespace` from now on; the ones there now
    /// are listed (not left to the watch, which may lag).
    async fn serve_namespace(&self, namespace: &str) -> Result<(), String> {
        lock(&self.served).insert(namespace.to_string());
        let services: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        let list = services
            .list(&Default::default())
            .await
            .map_err(|e| format!("cannot list the services of {namespace}: {e}"))?;
        for service in list {
            self.ensure_proxy(&service).await;
        }
        Ok(())
    }

    async fn watch_services(self: Arc<Self>) {
        let mut events = std::pin::pin!(
            watcher(
                Api::<Service>::all(self.client.clone()),
                watcher::Config::default()
            )
            .default_backoff()
        );
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(service) | watcher::Event::InitApply(service)) => {
                    let namespace = service.metadata.namespace.clone().unwrap_or_default();
                    if lock(&self.served).contains(&namespace) {
                        self.ensure_proxy(&service).await;
                    }
                }
                Ok(watcher::Event::Delete(service)) => {
                    let key = (
                        service.metadata.namespace.clone().unwrap_or_default(),
                        service.metadata.name.clone().unwrap_or_default(),
                    );
                    let mut proxies = self.proxies.lock().await;
                    if let Some(proxy) = proxies.remove(&key) {
                        proxy.stop().await;
                    }
                }
                Ok(_) => {}
                Err(e) => eprintln!(
                    "standin {}: watching services failed (retrying): {e}",
                    self.name
                ),
            }
        }
    }

    fn service_address(&self, key: &PodKey) -> Ipv4Addr {
        let mut addresses = lock(&self.service_addresses);
        if let Some((address, _)) = addresses.get(key) {
            return *address;
        }
        let (address, held) = lock(&self.addresses).take(true);
        addresses.insert(key.clone(), (address, held));
        address
    }

    /// Listens for `service` (again, if its spec changed); stops listening
    /// for one that no longer has a selector.
    async fn ensure_proxy(&self, service: &Service) {
        let key = (
            service.metadata.namespace.clone().unwrap_or_default(),
            service.metadata.name.clone().unwrap_or_default(),
        );
        let spec = service.spec.clone().unwrap_or_default();
        let selector = spec.selector.clone().unwrap_or_default();
        let ports: Vec<_> = spec
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .collect();
        let eligible = matches!(spec.type_.as_deref(), None | Some("ClusterIP"))
            && !selector.is_empty()
            && !ports.is_empty();
        let fingerprint =
            serde_json::to_string(&(&selector, &ports, &spec.cluster_ip)).unwrap_or_default();
        let mut proxies = self.proxies.lock().await;
        if eligible
            && proxies
                .get(&key)
                .is_some_and(|p| p.fingerprint == fingerprint)
        {
            return;
        }
        if let Some(old) = proxies.remove(&key) {
            old.stop().await;
        }
        if !eligible {
            return;
        }
        let address = self.service_address(&key);
        let mut tasks = Vec::new();
        let mut served_ports = Vec::new();
        for port in &ports {
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            match tokio::net::TcpListener::bind((address, number)).await {
                Ok(listener) => {
                    let target = port
                        .target_port
                        .clone()
                        .unwrap_or(IntOrString::Int(port.port));
                    tasks.push(tokio::spawn(proxy(
                        self.shared.clone(),
                        key.0.clone(),
                        selector.clone(),
                        target,
                        listener,
                    )));
                    served_ports.push((port.name.clone(), number));
                }
                Err(e) => eprintln!(
                    "standin {}: cannot listen for service {}/{} on {address}:{number}: {e}",
                    self.name, key.0, key.1
                ),
            }
        }
        proxies.insert(
            key,
            ServiceProxy {
                fingerprint,
                address,
                cluster_ip: spec.cluster_ip.filter(|ip| !ip.is_empty() && ip != "None"),
                ports: served_ports,
                tasks,
            },
        );
    }

    /// The proxied services of a namespace: (name, address, cluster IP, ports).
    async fn services_of(&self, namespace: &str) -> Vec<ServiceView> {
        let proxies = self.proxies.lock().await;
        let mut views: Vec<ServiceView> = proxies
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|((_, name), proxy)| ServiceView {
                name: name.clone(),
                address: proxy.address,
                cluster_ip: proxy.cluster_ip.clone(),
                ports: proxy.ports.clone(),
            })
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }
}

struct ServiceView {
    name: String,
    address: Ipv4Addr,
    cluster_ip: Option<String>,
    ports: Vec<(Option<String>, u16)>,
}

struct ServiceProxy {
    fingerprint: String,
    address: Ipv4Addr,
    cluster_ip: Option<String>,
    ports: Vec<(Option<String>, u16)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ServiceProxy {
    /// Stops listening; returns once the ports are free again.
    async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Accepts a service port's connections and forwards each to a backend.
async fn proxy(
    shared: Arc<Shared>,
    namespace: String,
    selector: BTreeMap<String, String>,
    target: IntOrString,
    listener: tokio::net::TcpListener,
) {
    let turn = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let backends = shared.backends(&namespace, &selector, &target);
        let first = turn.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            for i in 0..backends.len() {
                let backend = backends[(first + i) % backends.len()];
                let connect = tokio::net::TcpStream::connect(backend);
                if let Ok(Ok(mut outbound)) =
                    tokio::time::timeout(Duration::from_secs(3), connect).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    return;
                }
            }
            // No Ready backend: the connection closes, as kube-proxy's
            // REJECT would refuse it.
        });
    }
}

/// Loopback addresses for pods and services, held with lock files so nodes
/// in other test processes skip them.
struct Addresses {
    second: u8,
    next_pod: u32,
    next_service: u32,
    dir: PathBuf,
}

impl Addresses {
    fn new(node: &str) -> Addresses {
        // FNV-1a: stable across processes, unlike std's hasher.
        let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let dir = std::env::temp_dir().join("setlist-standin-addresses");
        let _ = std::fs::create_dir_all(&dir);
        Addresses {
            // Not 0: 127.0.x.y holds 127.0.0.1 and Debian's 127.0.1.1.
            second: 1 + (hash % 254) as u8,
            next_pod: 0,
            next_service: 0,
            dir,
        }
    }

    /// A free address: `127.h.1-127.x` for pods, `127.h.128-254.x` for
    /// services; the lock file is held while the returned lock lives.
    fn take(&mut self, service: bool) -> (Ipv4Addr, Option<Flock<File>>) {
        let slots = 250 * 127;
        let mut last = Ipv4Addr::LOCALHOST;
        for _ in 0..slots {
            let counter = if service {
                &mut self.next_service
            } else {
                &mut self.next_pod
            };
            let c = *counter % slots;
            *counter += 1;
            let third = (c / 250) as u8 + if service { 128 } else { 1 };
            let address = Ipv4Addr::new(127, self.second, third, 1 + (c % 250) as u8);
            last = address;
            let Ok(file) = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.dir.join(address.to_string()))
            else {
                // No way to coordinate: take it.
                return (address, None);
            };
            if let Ok(held) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                return (address, Some(held));
            }
        }
        (last, None)
    }
}

/// A pod's task: prepares it, runs it, reports it, stops it.
async fn run_pod(kubelet: Arc<Kubelet>, mut desired: watch::Receiver<Desired>) {
    let pod = match &*desired.borrow_and_update() {
        Desired::Run(pod) => (**pod).clone(),
        _ => return,
    };
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = uid_of(&pod);
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    let Some(spec) = pod.spec.clone() else {
        return;
    };
    if pod.metadata.deletion_timestamp.is_some() {
        kubelet.delete_pod(&namespace, &name, &uid).await;
        return;
    }
    if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
        // Done before this node saw it: only its deletion is left to do.
        if let Stop::Delete(_) = next_stop(&mut desired, Duration::ZERO).await {
            kubelet.delete_pod(&namespace, &name, &uid).await;
        }
        return;
    }
    let host_network = spec.host_network == Some(true);
    let (address, held) = if host_network {
        (Ipv4Addr::LOCALHOST, None)
    } else {
        lock(&kubelet.addresses).take(false)
    };
    let ctx = Arc::new(PodCtx::new(
        kubelet.clone(),
        pod,
        spec,
        address,
        host_network,
        held,
    ));
    lock(&kubelet.shared.pods).insert(
        ctx.key.clone(),
        PodEntry {
            uid: uid.clone(),
            address,
            labels: ctx.pod.metadata.labels.clone().unwrap_or_default(),
            ports: named_ports(&ctx.spec),
            ready: false,
            terminating: false,
            pids: HashMap::new(),
        },
    );
    let stop = ctx.clone().live(&mut desired).await;
    match stop {
        Stop::Delete(_) => {
            ctx.write_status().await;
            kubelet.delete_pod(&namespace, &name, &uid).await;
        }
        Stop::Gone | Stop::Shutdown => {}
    }
    let mut pods = lock(&kubelet.shared.pods);
    if pods.get(&ctx.key).is_some_and(|entry| entry.uid == uid) {
        pods.remove(&ctx.key);
    }
}

fn named_ports(spec: &PodSpec) -> HashMap<String, u16> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
        .collect()
}

/// Why and how a pod's processes stop.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// The pod's deletion started: stop within its grace period, then
    /// delete it.
    Delete(Duration),
    Gone,
    Shutdown,
}

impl Stop {
    fn grace(self) -> Duration {
        match self {
            Stop::Delete(grace) => grace,
            Stop::Gone => Duration::from_secs(2),
            Stop::Shutdown => Duration::from_secs(3),
        }
    }
}

/// Waits until the node wants the pod stopped.
async fn next_stop(desired: &mut watch::Receiver<Desired>, default_grace: Duration) -> Stop {
    loop {
        let stop = match &*desired.borrow_and_update() {
            Desired::Run(pod) => pod.metadata.deletion_timestamp.as_ref().map(|_| {
                let seconds = pod
                    .metadata
                    .deletion_grace_period_seconds
                    .map(|s| Duration::from_secs(s.max(0) as u64))
                    .unwrap_or(default_grace);
                Stop::Delete(seconds)
            }),
            Desired::Gone => Some(Stop::Gone),
            Desired::Shutdown => Some(Stop::Shutdown),
        };
        if let Some(stop) = stop {
            return stop;
        }
        if desired.changed().await.is_err() {
            return Stop::Shutdown;
        }
    }
}

/// A pod as the node runs it.
struct PodCtx {
    kubelet: Arc<Kubelet>,
    key: PodKey,
    uid: String,
    pod: Pod,
    spec: PodSpec,
    address: Ipv4Addr,
    host_network: bool,
    dir: PathBuf,
    grace: Duration,
    state: Mutex<PodState>,
    changed: Notify,
    written: Mutex<Option<Value>>,
    _address_held: Option<Flock<File>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Init(usize),
    Main(usize),
}

struct PodState {
    start_time: Timestamp,
    sandbox: bool,
    initialized: bool,
    init_failed: bool,
    terminal: Option<&'static str>,
    init: Vec<ContainerState>,
    containers: Vec<ContainerState>,
    /// Condition type → (status, last transition).
    conditions: BTreeMap<&'static str, (bool, Timestamp)>,
}

#[derive(Debug, Clone)]
struct ContainerState {
    name: String,
    image: String,
    state: State,
    last: Option<Terminated>,
    restarts: u32,
    started: bool,
    ready: bool,
}

#[derive(Debug, Clone)]
enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        since: Timestamp,
        id: String,
    },
    Terminated(Terminated),
}

#[derive(Debug, Clone)]
struct Terminated {
    exit_code: i32,
    signal: Option<i32>,
    reason: String,
    message: Option<String>,
    started: Timestamp,
    finished: Timestamp,
    id: String,
}

impl Terminated {
    fn json(&self) -> Value {
        let mut t = json!({
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": rfc3339(self.started),
            "finishedAt": rfc3339(self.finished),
        });
        if let Some(signal) = self.signal {
            t["signal"] = json!(signal);
        }
        if let Some(message) = &self.message {
            t["message"] = json!(message);
        }
        if !self.id.is_empty() {
            t["containerID"] = json!(self.id);
        }
        t
    }
}

impl ContainerState {
    fn new(c: &Container, reason: &str) -> ContainerState {
        ContainerState {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            state: State::Waiting {
                reason: reason.into(),
                message: None,
            },
            last: None,
            restarts: 0,
            started: false,
            ready: false,
        }
    }

    fn json(&self) -> Value {
        let (state, id) = match &self.state {
            State::Waiting { reason, message } => {
                let mut w = json!({"reason": reason});
                if let Some(message) = message {
                    w["message"] = json!(message);
                }
                (
                    json!({"waiting": w}),
                    self.last.as_ref().map(|t| t.id.clone()),
                )
            }
            State::Running { since, id } => (
                json!({"running": {"startedAt": rfc3339(*since)}}),
                Some(id.clone()),
            ),
            State::Terminated(t) => (json!({"terminated": t.json()}), Some(t.id.clone())),
        };
        let mut status = json!({
            "name": self.name,
            "image": self.image,
            "imageID": if id.is_some() { self.image.as_str() } else { "" },
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restarts,
            "state": state,
            "lastState": self.last.as_ref().map(|t| json!({"terminated": t.json()})).unwrap_or(json!({})),
        });
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            status["containerID"] = json!(id);
        }
        status
    }
}

impl PodState {
    fn slot(&mut self, slot: Slot) -> &mut ContainerState {
        match slot {
            Slot::Init(i) => &mut self.init[i],
            Slot::Main(i) => &mut self.containers[i],
        }
    }

    /// The kubelet's `getPhase`.
    fn phase(&mut self, policy: &str) -> &'static str {
        if let Some(terminal) = self.terminal {
            return terminal;
        }
        if self.init_failed {
            self.terminal = Some("Failed");
            return "Failed";
        }
        if !self.initialized {
            return "Pending";
        }
        let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
        for c in &self.containers {
            match &c.state {
                State::Running { .. } => running += 1,
                State::Terminated(t) => {
                    stopped += 1;
                    if t.exit_code == 0 {
                        succeeded += 1;
                    }
                }
                State::Waiting { .. } if c.last.is_some() => stopped += 1,
                State::Waiting { .. } => waiting += 1,
            }
        }
        let phase = if waiting > 0 {
            "Pending"
        } else if running > 0 {
            "Running"
        } else if stopped > 0 {
            match policy {
                "Always" => "Running",
                _ if stopped == succeeded => "Succeeded",
                "Never" => "Failed",
                _ => "Running",
            }
        } else {
            "Pending"
        };
        if matches!(phase, "Succeeded" | "Failed") {
            self.terminal = Some(phase);
        }
        phase
    }

    fn condition(&mut self, kind: &'static str, status: bool) -> Value {
        let entry = self.conditions.entry(kind).or_insert((status, now()));
        if entry.0 != status {
            *entry = (status, now());
        }
        json!({
            "type": kind,
            "status": if status { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": rfc3339(entry.1),
        })
    }

    /// The status subresource, and whether the pod is Ready.
    fn status(&mut self, ctx: &PodCtx) -> (Value, bool) {
        let policy = ctx.spec.restart_policy.as_deref().unwrap_or("Always");
        let phase = self.phase(policy);
        let terminal = self.terminal.is_some();
        let unready: Vec<&str> = self
            .containers
            .iter()
            .filter(|c| !c.ready)
            .map(|c| c.name.as_str())
            .collect();
        let containers_ready = self.initialized && !terminal && unready.is_empty();
        let uninitialized: Vec<&str> = self
            .init
            .iter()
            .filter(|c| !matches!(&c.state, State::Terminated(t) if t.exit_code == 0))
            .map(|c| c.name.as_str())
            .collect();
        let (reason, message) = if terminal {
            ("PodCompleted".to_string(), None)
        } else {
            (
                "ContainersNotReady".to_string(),
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
            )
        };
        let unready_init_message = format!(
            "containers with incomplete status: [{}]",
            uninitialized.join(" ")
        );
        let (sandbox, initialized) = (self.sandbox, self.initialized);
        let mut ready_to_start = self.condition("PodReadyToStartContainers", sandbox);
        let mut init = self.condition("Initialized", initialized);
        let mut ready = self.condition("Ready", containers_ready);
        let mut containers = self.condition("ContainersReady", containers_ready);
        let scheduled = self.condition("PodScheduled", true);
        if !sandbox {
            ready_to_start["reason"] = json!("SandboxNotReady");
        }
        if !initialized {
            init["reason"] = json!("ContainersNotInitialized");
            init["message"] = json!(unready_init_message);
        } else if terminal {
            init["reason"] = json!("PodCompleted");
        }
        if !containers_ready {
            for condition in [&mut ready, &mut containers] {
                condition["reason"] = json!(reason);
                if let Some(message) = &message {
                    condition["message"] = json!(message);
                }
            }
        }
        let address = ctx.address.to_string();
        let mut status = json!({
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": address,
            "podIPs": [{"ip": address}],
            "startTime": rfc3339(self.start_time),
            "conditions": [ready_to_start, init, ready, containers, scheduled],
            "containerStatuses": self.containers.iter().map(ContainerState::json).collect::<Vec<_>>(),
        });
        if !self.init.is_empty() {
            status["initContainerStatuses"] = json!(
                self.init
                    .iter()
                    .map(ContainerState::json)
                    .collect::<Vec<_>>()
            );
        }
        (status, containers_ready)
    }
}

/// What a container runs, all mapping done.
struct Launch {
    container: Container,
    program: String,
    args: Vec<String>,
    /// The container's own variables, rewritten (the process also gets the
    /// test's environment).
    env: Vec<(String, String)>,
    /// The same before rewriting, for `$(VAR)` in exec probes.
    vars: HashMap<String, String>,
    cwd: PathBuf,
    log: PathBuf,
    rewrites: Rewrites,
}

struct Prepared {
    init: Vec<Arc<Launch>>,
    containers: Vec<Arc<Launch>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    Always,
    OnFailure,
    Never,
}

impl Restart {
    fn of(policy: Option<&str>) -> Restart {
        match policy {
            Some("Never") => Restart::Never,
            Some("OnFailure") => Restart::OnFailure,
            _ => Restart::Always,
        }
    }

    fn restarts(self, succeeded: bool) -> bool {
        match self {
            Restart::Always => true,
            Restart::OnFailure => !succeeded,
            Restart::Never => false,
        }
    }
}

/// How one container is run.
struct Run {
    slot: Slot,
    launch: Arc<Launch>,
    policy: Restart,
    probes: bool,
}

/// A reference cache of the ConfigMaps and Secrets a pod reads.
struct Objects {
    client: Client,
    namespace: String,
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
}

impl Objects {
    async fn config_map(&mut self, name: &str) -> Result<Option<ConfigMap>, String> {
        if let Some(found) = self.config_maps.get(name) {
            return Ok(found.clone());
        }
        let found = Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(name)
            .await
            .map_err(|e| format!("cannot read configmap {name:?}: {e}"))?;
        self.config_maps.insert(name.to_string(), found.clone());
        Ok(found)
    }

    async fn secret(&mut self, name: &str) -> Result<Option<Secret>, String> {
        if let Some(found) = self.secrets.get(name) {
            return Ok(found.clone());
        }
        let found = Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(name)
            .await
            .map_err(|e| format!("cannot read secret {name:?}: {e}"))?;
        self.secrets.insert(name.to_string(), found.clone());
        Ok(found)
    }

    /// A ConfigMap's keys (data and binaryData); `None` when it is missing
    /// and `optional`, an error when it is missing otherwise.
    async fn config_map_data(
        &mut self,
        name: &str,
        optional: Option<bool>,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        match self.config_map(name).await? {
            Some(cm) => {
                let mut data: BTreeMap<String, Vec<u8>> = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(
                    cm.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                Ok(Some(data))
            }
            None if optional == Some(true) => Ok(None),
            None => Err(format!("configmap {name:?} not found")),
        }
    }

    async fn secret_data(
        &mut self,
        name: &str,
        optional: Option<bool>,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        match self.secret(name).await? {
            Some(secret) => {
                let mut data: BTreeMap<String, Vec<u8>> = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                data.extend(
                    secret
                        .string_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes())),
                );
                Ok(Some(data))
            }
            None if optional == Some(true) => Ok(None),
            None => Err(format!("secret {name:?} not found")),
        }
    }
}

/// Writes a file of a volume, making its folders; `mode` as Kubernetes
/// gives it (decimal of the octal bits), 0644 by default.
fn write_file(path: &Path, bytes: &[u8], mode: Option<i32>) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = mode.unwrap_or(0o644) as u32 & 0o7777;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes `data`'s keys (or just `items`) into `dir`; returns the files.
fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    optional: Option<bool>,
    mode: Option<i32>,
    what: &str,
) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    match items {
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(bytes) => {
                        let path = dir.join(&item.path);
                        write_file(&path, bytes, item.mode.or(mode))?;
                        written.push(path);
                    }
                    None if optional == Some(true) => {}
                    None => return Err(format!("{what} has no key {:?}", item.key)),
                }
            }
        }
        None => {
            for (key, bytes) in data {
                let path = dir.join(key);
                write_file(&path, bytes, mode)?;
                written.push(path);
            }
        }
    }
    Ok(written)
}

impl PodCtx {
    fn new(
        kubelet: Arc<Kubelet>,
        pod: Pod,
        spec: PodSpec,
        address: Ipv4Addr,
        host_network: bool,
        held: Option<Flock<File>>,
    ) -> PodCtx {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let dir = kubelet.options.work.join(&namespace).join(&name);
        let init: Vec<ContainerState> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| ContainerState::new(c, "PodInitializing"))
            .collect();
        let main_reason = if init.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let containers = spec
            .containers
            .iter()
            .map(|c| ContainerState::new(c, main_reason))
            .collect();
        let grace =
            Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64);
        PodCtx {
            uid: uid_of(&pod),
            key: (namespace, name),
            kubelet,
            pod,
            address,
            host_network,
            dir,
            grace,
            state: Mutex::new(PodState {
                start_time: now(),
                sandbox: false,
                initialized: spec.init_containers.as_ref().is_none_or(Vec::is_empty),
                init_failed: false,
                terminal: None,
                init,
                containers,
                conditions: BTreeMap::new(),
            }),
            spec,
            changed: Notify::new(),
            written: Mutex::new(None),
            _address_held: held,
        }
    }

    fn label(&self) -> String {
        format!("{}/{}", self.key.0, self.key.1)
    }

    fn update(&self, slot: Slot, change: impl FnOnce(&mut ContainerState)) {
        change(lock(&self.state).slot(slot));
        self.changed.notify_one();
    }

    /// Writes the status subresource if it changed since the last write.
    async fn write_status(&self) {
        let (status, ready) = lock(&self.state).status(self);
        self.kubelet
            .shared
            .with_pod(&self.key, &self.uid, |entry| entry.ready = ready);
        if lock(&self.written).as_ref() == Some(&status) {
            return;
        }
        let pods: Api<Pod> = Api::namespaced(self.kubelet.client.clone(), &self.key.0);
        // The uid guards a successor of the same name (a StatefulSet's)
        // from this pod's status: the API server refuses a changed uid.
        let patch = Patch::Merge(json!({"metadata": {"uid": self.uid}, "status": status}));
        match pods
            .patch_status(&self.key.1, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => *lock(&self.written) = Some(status),
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => {}
            Err(e) => eprintln!(
                "standin {}: cannot write the status of {}: {e}",
                self.kubelet.name,
                self.label()
            ),
        }
    }

    /// Runs the pod until the node wants it stopped; stops it.
    async fn live(self: Arc<Self>, desired: &mut watch::Receiver<Desired>) -> Stop {
        self.write_status().await;
        let mut reported = String::new();
        let prepared = loop {
            match self.prepare().await {
                Ok(prepared) => break prepared,
                Err(message) => {
                    if message != reported {
                        eprintln!(
                            "standin {}: cannot start {}: {message} (retrying)",
                            self.kubelet.name,
                            self.label()
                        );
                        reported = message.clone();
                        let _ = std::fs::create_dir_all(&self.dir);
                        for c in self
                            .spec
                            .init_containers
                            .iter()
                            .flatten()
                            .chain(&self.spec.containers)
                        {
                            if let Ok(mut log) = File::options()
                                .create(true)
                                .append(true)
                                .open(self.dir.join(format!("{}.log", c.name)))
                            {
                                let _ = writeln!(
                                    log,
                                    "--- standin {}: CreateContainerConfigError: {message}",
                                    rfc3339(now())
                                );
                            }
                        }
                    }
                    {
                        let state = &mut *lock(&self.state);
                        for c in state.init.iter_mut().chain(state.containers.iter_mut()) {
                            c.state = State::Waiting {
                                reason: "CreateContainerConfigError".into(),
                                message: Some(message.clone()),
                            };
                        }
                    }
                    self.write_status().await;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        stop = next_stop(desired, self.grace) => return stop,
                    }
                }
            }
        };
        lock(&self.state).sandbox = true;
        let (stop_tx, stop_rx) = watch::channel(None);
        let mut runner = tokio::spawn(self.clone().run_all(prepared, stop_rx));
        let stop = loop {
            tokio::select! {
                _ = self.changed.notified() => self.write_status().await,
                _ = tokio::time::sleep(Duration::from_secs(2)) => self.write_status().await,
                stop = next_stop(desired, self.grace) => break stop,
            }
        };
        self.kubelet
            .shared
            .with_pod(&self.key, &self.uid, |entry| entry.terminating = true);
        let grace = stop.grace();
        let _ = stop_tx.send(Some(grace));
        if tokio::time::timeout(grace + Duration::from_secs(10), &mut runner)
            .await
            .is_err()
        {
            runner.abort();
        }
        stop
    }

    /// Runs the init containers, then the others, until they are done or
    /// stopped.
    async fn run_all(self: Arc<Self>, prepared: Prepared, stop: watch::Receiver<Option<Duration>>) {
        let policy = Restart::of(self.spec.restart_policy.as_deref());
        let mut tasks = Vec::new();
        for (i, launch) in prepared.init.into_iter().enumerate() {
            let sidecar = launch.container.restart_policy.as_deref() == Some("Always");
            if sidecar {
                let run = Run {
                    slot: Slot::Init(i),
                    launch,
                    policy: Restart::Always,
                    probes: true,
                };
                tasks.push(tokio::spawn(self.clone().run_container(run, stop.clone())));
                continue;
            }
            let run = Run {
                slot: Slot::Init(i),
                launch,
                policy: if policy == Restart::Never {
                    Restart::Never
                } else {
                    Restart::OnFailure
                },
                probes: false,
            };
            if !self.clone().run_container(run, stop.clone()).await {
                if stop.borrow().is_none() {
                    lock(&self.state).init_failed = true;
                    self.changed.notify_one();
                }
                futures::future::join_all(tasks).await;
                return;
            }
        }
        {
            let mut state = lock(&self.state);
            state.initialized = true;
            for c in &mut state.containers {
                c.state = State::Waiting {
                    reason: "ContainerCreating".into(),
                    message: None,
                };
            }
        }
        self.changed.notify_one();
        for (i, launch) in prepared.containers.into_iter().enumerate() {
            let run = Run {
                slot: Slot::Main(i),
                launch,
                policy,
                probes: true,
            };
            tasks.push(tokio::spawn(self.clone().run_container(run, stop.clone())));
        }
        futures::future::join_all(tasks).await;
    }

    /// Runs one container, restarting it as its policy says, until it is
    /// done or stopped; true if its last run succeeded (and it was not
    /// stopped).
    async fn run_container(
        self: Arc<Self>,
        run: Run,
        mut stop: watch::Receiver<Option<Duration>>,
    ) -> bool {
        let launch = &run.launch;
        let name = launch.container.name.clone();
        let mut consecutive = 0_u32;
        let mut restarts = 0_u32;
        loop {
            if stop.borrow().is_some() {
                return false;
            }
            let begun = Instant::now();
            let started = now();
            let log = File::options().create(true).append(true).open(&launch.log);
            let outcome = match log
                .map_err(|e| format!("cannot open {}: {e}", launch.log.display()))
                .and_then(|mut log| {
                    let _ = writeln!(
                        log,
                        "--- standin {}: starting container {name} (restart {restarts}): {} {}",
                        rfc3339(started),
                        launch.program,
                        launch.args.join(" ")
                    );
                    let errors = log.try_clone().map_err(|e| e.to_string())?;
                    self.kubelet.spawn(
                        &launch.program,
                        &launch.args,
                        &launch.env,
                        &launch.cwd,
                        Stdio::from(log),
                        Stdio::from(errors),
                    )
                }) {
                Err(message) => {
                    self.mark(launch, &format!("cannot start: {message}"));
                    Terminated {
                        exit_code: 128,
                        signal: None,
                        reason: "StartError".into(),
                        message: Some(message),
                        started,
                        finished: now(),
                        id: String::new(),
                    }
                }
                Ok(mut child) => {
                    let pid = child.id().unwrap_or_default();
                    let group = pid as i32;
                    lock(&self.kubelet.shared.groups).insert(group);
                    self.kubelet.shared.with_pod(&self.key, &self.uid, |entry| {
                        entry.pids.insert(name.clone(), pid);
                    });
                    let id = format!("standin://{pid}");
                    let has_startup = run.probes && launch.container.startup_probe.is_some();
                    let has_readiness = run.probes && launch.container.readiness_probe.is_some();
                    let is_init = matches!(run.slot, Slot::Init(_)) && !run.probes;
                    self.update(run.slot, |c| {
                        c.state = State::Running {
                            since: started,
                            id: id.clone(),
                        };
                        c.started = !has_startup;
                        c.ready = !has_startup && !has_readiness && !is_init;
                    });
                    enum Ended {
                        Exited(std::io::Result<ExitStatus>),
                        Unhealthy(String),
                        Stopped,
                    }
                    let ended = tokio::select! {
                        status = child.wait() => Ended::Exited(status),
                        reason = self.probes(&run, begun) => Ended::Unhealthy(reason),
                        _ = wait_for_stop(&mut stop) => Ended::Stopped,
                    };
                    let status = match ended {
                        Ended::Exited(status) => status,
                        Ended::Unhealthy(reason) => {
                            self.mark(launch, &format!("{reason}; killing it"));
                            let grace = launch
                                .container
                                .liveness_probe
                                .as_ref()
                                .and_then(|p| p.termination_grace_period_seconds)
                                .map(|s| Duration::from_secs(s.max(0) as u64))
                                .unwrap_or(self.grace);
                            terminate(&mut child, group, grace).await
                        }
                        Ended::Stopped => {
                            let grace = stop.borrow().unwrap_or(Duration::from_secs(2));
                            terminate(&mut child, group, grace).await
                        }
                    };
                    // The container is gone: so is whatever it left in its group.
                    let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
                    lock(&self.kubelet.shared.groups).remove(&group);
                    self.kubelet.shared.with_pod(&self.key, &self.uid, |entry| {
                        if entry.pids.get(&name) == Some(&pid) {
                            entry.pids.remove(&name);
                        }
                    });
                    let (exit_code, signal) = match &status {
                        Ok(s) => match (s.code(), s.signal()) {
                            (Some(code), _) => (code, None),
                            (None, Some(signal)) => (128 + signal, Some(signal)),
                            _ => (-1, None),
                        },
                        Err(_) => (-1, None),
                    };
                    self.mark(
                        launch,
                        &match signal {
                            Some(signal) => format!("exited on signal {signal}"),
                            None => format!("exited with code {exit_code}"),
                        },
                    );
                    Terminated {
                        exit_code,
                        signal,
                        reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
                        message: status.err().map(|e| e.to_string()),
                        started,
                        finished: now(),
                        id,
                    }
                }
            };
            let succeeded = outcome.exit_code == 0;
            let stopping = stop.borrow().is_some();
            if stopping || !run.policy.restarts(succeeded) {
                self.update(run.slot, |c| {
                    c.state = State::Terminated(outcome);
                    c.ready = false;
                    c.started = false;
                });
                return succeeded && !stopping;
            }
            if begun.elapsed() >= BACKOFF_RESET {
                consecutive = 0;
            }
            consecutive += 1;
            let delay = backoff(self.kubelet.options.crash_backoff, consecutive);
            let message = format!(
                "back-off {} restarting failed container={name} pod={}_{}({})",
                go_duration(delay),
                self.key.1,
                self.key.0,
                self.uid
            );
            self.update(run.slot, |c| {
                c.last = Some(outcome);
                c.state = State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: Some(message),
                };
                c.ready = false;
                c.started = false;
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = wait_for_stop(&mut stop) => return false,
            }
            restarts += 1;
            self.update(run.slot, |c| c.restarts += 1);
        }
    }

    /// Appends a marker line to a container's log.
    fn mark(&self, launch: &Launch, what: &str) {
        if let Ok(mut log) = File::options().create(true).append(true).open(&launch.log) {
            let _ = writeln!(
                log,
                "--- standin {}: container {} {what}",
                rfc3339(now()),
                launch.container.name
            );
        }
    }

    /// Runs a container's probes (from `begun`, its start); returns only
    /// when a startup or liveness probe failed for good, saying why.
    async fn probes(&self, run: &Run, begun: Instant) -> String {
        if !run.probes {
            return std::future::pending().await;
        }
        let c = &run.launch.container;
        if let Some(probe) = &c.startup_probe {
            let settings = ProbeSettings::of(probe);
            tokio::time::sleep_until((begun + settings.initial_delay).into()).await;
            let mut failures = 0;
            loop {
                match self.probe(&run.launch, probe, settings.timeout).await {
                    Ok(()) => break,
                    Err(e) => {
                        failures += 1;
                        if failures >= settings.failure_threshold {
                            return format!("failed its startup probe {failures} times: {e}");
                        }
                    }
                }
                tokio::time::sleep(settings.period).await;
            }
        }
        let readiness_probe = c.readiness_probe.is_some();
        self.update(run.slot, |state| {
            state.started = true;
            state.ready = !readiness_probe;
        });
        let readiness = async {
            if let Some(probe) = &c.readiness_probe {
                let settings = ProbeSettings::of(probe);
                tokio::time::sleep_until((begun + settings.initial_delay).into()).await;
                let (mut successes, mut failures, mut ready) = (0, 0, false);
                loop {
                    let result = self.probe(&run.launch, probe, settings.timeout).await;
                    match &result {
                        Ok(()) => {
                            successes += 1;
                            failures = 0;
                        }
                        Err(_) => {
                            failures += 1;
                            successes = 0;
                        }
                    }
                    let now_ready = if successes >= settings.success_threshold {
                        true
                    } else if failures >= settings.failure_threshold {
                        false
                    } else {
                        ready
                    };
                    if now_ready != ready {
                        ready = now_ready;
                        if let Err(e) = &result
                            && !ready
                        {
                            self.mark(&run.launch, &format!("is not ready: {e}"));
                        }
                        self.update(run.slot, |state| state.ready = ready);
                    }
                    tokio::time::sleep(settings.period).await;
                }
            }
            std::future::pending::<()>().await
        };
        let liveness = async {
            if let Some(probe) = &c.liveness_probe {
                let settings = ProbeSettings::of(probe);
                tokio::time::sleep_until((begun + settings.initial_delay).into()).await;
                let mut failures = 0;
                loop {
                    match self.probe(&run.launch, probe, settings.timeout).await {
                        Ok(()) => failures = 0,
                        Err(e) => {
                            failures += 1;
                            if failures >= settings.failure_threshold {
                                return format!("failed its liveness probe {failures} times: {e}");
                            }
                        }
                    }
                    tokio::time::sleep(settings.period).await;
                }
            }
            std::future::pending::<String>().await
        };
        tokio::select! {
            reason = liveness => reason,
            () = readiness => String::new(),
        }
    }

    /// One probe, within its timeout.
    async fn probe(&self, launch: &Launch, probe: &Probe, limit: Duration) -> Result<(), String> {
        let attempt = async {
            if let Some(http) = &probe.http_get {
                let port = container_port(&launch.container, &http.port)?;
                let host = http
                    .host
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| self.address.to_string());
                let headers: Vec<(String, String)> = http
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect();
                let path = http.path.clone().unwrap_or_else(|| "/".into());
                let https = http.scheme.as_deref() == Some("HTTPS");
                http_probe(&host, port, &path, &headers, https).await
            } else if let Some(tcp) = &probe.tcp_socket {
                let port = container_port(&launch.container, &tcp.port)?;
                let host = tcp
                    .host
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| self.address.to_string());
                tokio::net::TcpStream::connect((host.as_str(), port))
                    .await
                    .map(drop)
                    .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
            } else if let Some(exec) = &probe.exec {
                self.exec_probe(launch, exec.command.as_deref().unwrap_or_default())
                    .await
            } else if probe.grpc.is_some() {
                Err("gRPC probes are not supported by the stand-in node".into())
            } else {
                Err("the probe has no handler".into())
            }
        };
        tokio::time::timeout(limit, attempt)
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {}", go_duration(limit))))
    }

    async fn exec_probe(&self, launch: &Launch, command: &[String]) -> Result<(), String> {
        let words: Vec<String> = command
            .iter()
            .map(|w| launch.rewrites.apply(&expand(w, &launch.vars)))
            .collect();
        let Some((first, args)) = words.split_first() else {
            return Err("the exec probe has no command".into());
        };
        let program = self.kubelet.program(first);
        let child = self.kubelet.spawn(
            &program,
            args,
            &launch.env,
            &launch.cwd,
            Stdio::piped(),
            Stdio::piped(),
        )?;
        let group = child.id().unwrap_or_default() as i32;
        // Killed with its group if the probe times out (this future dropped).
        struct Reap(i32);
        impl Drop for Reap {
            fn drop(&mut self) {
                let _ = killpg(Pid::from_raw(self.0), Signal::SIGKILL);
            }
        }
        let _reap = Reap(group);
        let output = child.wait_with_output().await.map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "command {words:?} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// Materialises the volumes, maps the mounts, resolves every
    /// container's environment and command.
    async fn prepare(&self) -> Result<Prepared, String> {
        let namespace = self.key.0.clone();
        self.kubelet.serve_namespace(&namespace).await?;
        let services = self.kubelet.services_of(&namespace).await;
        let mut hosts = Vec::new();
        for s in &services {
            let (n, ns) = (&s.name, &namespace);
            hosts.push((n.clone(), s.address, true));
            for qualified in [
                format!("{n}.{ns}"),
                format!("{n}.{ns}.svc"),
                format!("{n}.{ns}.svc.cluster.local"),
            ] {
                hosts.push((qualified, s.address, false));
            }
            if let Some(ip) = &s.cluster_ip {
                hosts.push((ip.clone(), s.address, false));
            }
        }
        let mut objects = Objects {
            client: self.kubelet.client.clone(),
            namespace: namespace.clone(),
            config_maps: HashMap::new(),
            secrets: HashMap::new(),
        };
        let root = self.dir.join("volumes");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let mut volumes = HashMap::new();
        let mut texts = Vec::new();
        for volume in self.spec.volumes.iter().flatten() {
            let path = self
                .materialise(volume, &root, &mut objects, &mut texts)
                .await
                .map_err(|e| format!("volume {:?}: {e}", volume.name))?;
            volumes.insert(volume.name.clone(), path);
        }
        let all: Vec<&Container> = self
            .spec
            .init_containers
            .iter()
            .flatten()
            .chain(&self.spec.containers)
            .collect();
        let mut pod_mounts: Vec<(String, PathBuf)> = Vec::new();
        let mut container_mounts = Vec::new();
        for c in &all {
            let mounts = mounts(c, &volumes)?;
            for (path, local) in &mounts {
                if !pod_mounts.iter().any(|(p, _)| p == path) {
                    pod_mounts.push((path.clone(), local.clone()));
                }
            }
            container_mounts.push(mounts);
        }
        let address = (!self.host_network).then_some(self.address);
        let files = Rewrites::new(address, &pod_mounts, &hosts);
        for file in texts {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let rewritten = files.apply(&text);
                if rewritten != text {
                    std::fs::write(&file, rewritten)
                        .map_err(|e| format!("{}: {e}", file.display()))?;
                }
            }
        }
        let service_env = if self.spec.enable_service_links == Some(false) {
            Vec::new()
        } else {
            service_links(&services)
        };
        let mut launches = Vec::new();
        for (c, mounts) in all.iter().zip(container_mounts) {
            let rewrites = Rewrites::new(address, &mounts, &hosts);
            let launch = self
                .launch(c, rewrites, &service_env, &mut objects)
                .await
                .map_err(|e| format!("container {:?}: {e}", c.name))?;
            launches.push(Arc::new(launch));
        }
        let init_count = self.spec.init_containers.as_ref().map_or(0, Vec::len);
        let containers = launches.split_off(init_count);
        Ok(Prepared {
            init: launches,
            containers,
        })
    }

    async fn materialise(
        &self,
        volume: &Volume,
        root: &Path,
        objects: &mut Objects,
        texts: &mut Vec<PathBuf>,
    ) -> Result<PathBuf, String> {
        let dir = root.join(&volume.name);
        if let Some(host) = &volume.host_path {
            let path = PathBuf::from(&host.path);
            if host.type_.as_deref() == Some("DirectoryOrCreate") {
                std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            return Ok(path);
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            let path = self
                .kubelet
                .options
                .work
                .join(&self.key.0)
                .join("claims")
                .join(&claim.claim_name);
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            return Ok(path);
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if let Some(cm) = &volume.config_map {
            if let Some(data) = objects.config_map_data(&cm.name, cm.optional).await? {
                let what = format!("configmap {:?}", cm.name);
                texts.extend(write_keys(
                    &dir,
                    &data,
                    cm.items.as_ref(),
                    cm.optional,
                    cm.default_mode,
                    &what,
                )?);
            }
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            if let Some(data) = objects.secret_data(&name, secret.optional).await? {
                let what = format!("secret {name:?}");
                texts.extend(write_keys(
                    &dir,
                    &data,
                    secret.items.as_ref(),
                    secret.optional,
                    secret.default_mode,
                    &what,
                )?);
            }
        } else if let Some(projected) = &volume.projected {
            let mode = projected.default_mode;
            for source in projected.sources.iter().flatten() {
                if let Some(cm) = &source.config_map
                    && let Some(data) = objects.config_map_data(&cm.name, cm.optional).await?
                {
                    let what = format!("configmap {:?}", cm.name);
                    let items = cm.items.as_ref();
                    texts.extend(write_keys(&dir, &data, items, cm.optional, mode, &what)?);
                }
                if let Some(secret) = &source.secret
                    && let Some(data) = objects.secret_data(&secret.name, secret.optional).await?
                {
                    let what = format!("secret {:?}", secret.name);
                    let items = secret.items.as_ref();
                    texts.extend(write_keys(
                        &dir,
                        &data,
                        items,
                        secret.optional,
                        mode,
                        &what,
                    )?);
                }
                if let Some(downward) = &source.downward_api {
                    for item in downward.items.iter().flatten() {
                        let value = self.downward(
                            item.field_ref.as_ref().map(|f| f.field_path.as_str()),
                            item.resource_field_ref.as_ref(),
                        )?;
                        write_file(&dir.join(&item.path), value.as_bytes(), item.mode.or(mode))?;
                    }
                }
                if let Some(token) = &source.service_account_token {
                    let jwt = self
                        .token(token.audience.clone(), token.expiration_seconds)
                        .await?;
                    write_file(&dir.join(&token.path), jwt.as_bytes(), mode)?;
                }
            }
        } else if let Some(downward) = &volume.downward_api {
            for item in downward.items.iter().flatten() {
                let value = self.downward(
                    item.field_ref.as_ref().map(|f| f.field_path.as_str()),
                    item.resource_field_ref.as_ref(),
                )?;
                write_file(
                    &dir.join(&item.path),
                    value.as_bytes(),
                    item.mode.or(downward.default_mode),
                )?;
            }
        } else if volume.empty_dir.is_none() {
            eprintln!(
                "standin {}: volume {:?} of {} is of a kind the stand-in node does not know: an empty folder stands in for it",
                self.kubelet.name,
                volume.name,
                self.label()
            );
        }
        Ok(dir)
    }

    fn downward(
        &self,
        field: Option<&str>,
        resource: Option<&ResourceFieldSelector>,
    ) -> Result<String, String> {
        match (field, resource) {
            (Some(field), _) => self.field(field),
            (None, Some(resource)) => {
                let container = resource.container_name.as_deref().unwrap_or_default();
                let c = self
                    .spec
                    .containers
                    .iter()
                    .find(|c| c.name == container)
                    .ok_or_else(|| format!("no container {container:?} for resourceFieldRef"))?;
                resource_value(c, resource)
            }
            (None, None) => Err("a downwardAPI item needs fieldRef or resourceFieldRef".into()),
        }
    }

    /// A service account token for the pod, from the TokenRequest API.
    async fn token(
        &self,
        audience: Option<String>,
        expiration: Option<i64>,
    ) -> Result<String, String> {
        let account = self
            .spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let request = TokenRequest {
            metadata: ObjectMeta::default(),
            spec: TokenRequestSpec {
                audiences: audience.into_iter().collect(),
                expiration_seconds: expiration,
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(self.key.1.clone()),
                    uid: Some(self.uid.clone()),
                }),
            },
            status: None,
        };
        let accounts: Api<ServiceAccount> =
            Api::namespaced(self.kubelet.client.clone(), &self.key.0);
        let answer = accounts
            .create_token_request(&account, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("cannot get a token for service account {account:?}: {e}"))?;
        Ok(answer.status.map(|s| s.token).unwrap_or_default())
    }

    /// A `fieldRef`'s value.
    fn field(&self, path: &str) -> Result<String, String> {
        let meta = &self.pod.metadata;
        let keyed = |prefix: &str| {
            let rest = path.strip_prefix(prefix)?;
            rest.strip_prefix("['")
                .and_then(|r| r.strip_suffix("']"))
                .or_else(|| rest.strip_prefix("[\"").and_then(|r| r.strip_suffix("\"]")))
                .map(str::to_string)
        };
        let listing = |map: &Option<BTreeMap<String, String>>| {
            map.iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        Ok(match path {
            "metadata.name" => self.key.1.clone(),
            "metadata.namespace" => self.key.0.clone(),
            "metadata.uid" => self.uid.clone(),
            "metadata.labels" => listing(&meta.labels),
            "metadata.annotations" => listing(&meta.annotations),
            "spec.nodeName" => self.kubelet.name.clone(),
            "spec.serviceAccountName" => self
                .spec
                .service_account_name
                .clone()
                .unwrap_or_else(|| "default".into()),
            "status.podIP" | "status.podIPs" => self.address.to_string(),
            "status.hostIP" | "status.hostIPs" => "127.0.0.1".into(),
            _ => {
                if let Some(key) = keyed("metadata.labels") {
                    meta.labels
                        .as_ref()
                        .and_then(|l| l.get(&key))
                        .cloned()
                        .unwrap_or_default()
                } else if let Some(key) = keyed("metadata.annotations") {
                    meta.annotations
                        .as_ref()
                        .and_then(|a| a.get(&key))
                        .cloned()
                        .unwrap_or_default()
                } else {
                    return Err(format!(
                        "fieldRef {path:?} is not supported by the stand-in node"
                    ));
                }
            }
        })
    }

    /// A container's environment, command and working folder.
    async fn launch(
        &self,
        c: &Container,
        rewrites: Rewrites,
        service_env: &[(String, String)],
        objects: &mut Objects,
    ) -> Result<Launch, String> {
        let mut vars = Vars::default();
        for (k, v) in service_env {
            vars.set(k, v.clone());
        }
        for source in c.env_from.iter().flatten() {
            let prefix = source.prefix.clone().unwrap_or_default();
            if let Some(r) = &source.config_map_ref
                && let Some(data) = objects.config_map_data(&r.name, r.optional).await?
            {
                for (k, v) in data {
                    vars.set(
                        &format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
            if let Some(r) = &source.secret_ref
                && let Some(data) = objects.secret_data(&r.name, r.optional).await?
            {
                for (k, v) in data {
                    vars.set(
                        &format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
        }
        for e in c.env.iter().flatten() {
            let value = match &e.value_from {
                None => Some(expand(e.value.as_deref().unwrap_or_default(), &vars.map)),
                Some(from) => {
                    if let Some(f) = &from.field_ref {
                        Some(self.field(&f.field_path)?)
                    } else if let Some(sel) = &from.config_map_key_ref {
                        match objects.config_map_data(&sel.name, sel.optional).await? {
                            Some(data) => match data.get(&sel.key) {
                                Some(v) => Some(String::from_utf8_lossy(v).into_owned()),
                                None if sel.optional == Some(true) => None,
                                None => {
                                    return Err(format!(
                                        "configmap {:?} has no key {:?}",
                                        sel.name, sel.key
                                    ));
                                }
                            },
                            None => None,
                        }
                    } else if let Some(sel) = &from.secret_key_ref {
                        match objects.secret_data(&sel.name, sel.optional).await? {
                            Some(data) => match data.get(&sel.key) {
                                Some(v) => Some(String::from_utf8_lossy(v).into_owned()),
                                None if sel.optional == Some(true) => None,
                                None => {
                                    return Err(format!(
                                        "secret {:?} has no key {:?}",
                                        sel.name, sel.key
                                    ));
                                }
                            },
                            None => None,
                        }
                    } else if let Some(sel) = &from.resource_field_ref {
                        let target = match sel.container_name.as_deref() {
                            Some(name) if !name.is_empty() => self
                                .spec
                                .containers
                                .iter()
                                .find(|other| other.name == name)
                                .unwrap_or(c),
                            _ => c,
                        };
                        Some(resource_value(target, sel)?)
                    } else {
                        return Err(format!(
                            "env {:?}: a valueFrom the stand-in node does not know",
                            e.name
                        ));
                    }
                }
            };
            if let Some(value) = value {
                vars.set(&e.name, value);
            }
        }
        let words = |list: &Option<Vec<String>>| -> Vec<String> {
            list.iter()
                .flatten()
                .map(|w| rewrites.apply(&expand(w, &vars.map)))
                .collect()
        };
        let command = words(&c.command);
        let (program, mut args) = match command.split_first() {
            Some((first, rest)) => (self.kubelet.program(first), rest.to_vec()),
            None => (
                self.kubelet
                    .program(image_binary(c.image.as_deref().unwrap_or_default())),
                Vec::new(),
            ),
        };
        args.extend(words(&c.args));
        // A container runtime names the container's host after the pod.
        let hostname = self
            .spec
            .hostname
            .clone()
            .unwrap_or_else(|| self.key.1.clone());
        let env = std::iter::once(("HOSTNAME".to_string(), hostname))
            .chain(
                vars.list
                    .iter()
                    .map(|(k, v)| (k.clone(), rewrites.apply(v))),
            )
            .collect();
        let default_dir = self.dir.join("cwd");
        std::fs::create_dir_all(&default_dir)
            .map_err(|e| format!("{}: {e}", default_dir.display()))?;
        let cwd = match c.working_dir.as_deref().filter(|d| !d.is_empty()) {
            Some(dir) => {
                let mapped = PathBuf::from(rewrites.apply(dir));
                if mapped.starts_with(&self.dir) {
                    let _ = std::fs::create_dir_all(&mapped);
                }
                if mapped.is_dir() { mapped } else { default_dir }
            }
            None => default_dir,
        };
        Ok(Launch {
            container: c.clone(),
            program,
            args,
            env,
            vars: vars.map,
            cwd,
            log: self.dir.join(format!("{}.log", c.name)),
            rewrites,
        })
    }
}

/// A container's mounts: (mountPath, local path), subPath applied.
fn mounts(
    c: &Container,
    volumes: &HashMap<String, PathBuf>,
) -> Result<Vec<(String, PathBuf)>, String> {
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let volume = volumes.get(&m.name).ok_or_else(|| {
            format!(
                "container {:?} mounts {:?}, which is not a volume of the pod",
                c.name, m.name
            )
        })?;
        let local = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                let path = volume.join(sub);
                if !path.exists() {
                    std::fs::create_dir_all(&path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
                path
            }
            None => volume.clone(),
        };
        let mount_path = m.mount_path.trim_end_matches('/');
        if !mount_path.is_empty() {
            mounts.push((mount_path.to_string(), local));
        }
    }
    Ok(mounts)
}

/// A container port by number or name.
fn container_port(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("bad port {n}")),
        IntOrString::String(name) => name.parse().or_else(|_| {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("container {:?} has no port named {name:?}", c.name))
        }),
    }
}

/// An HTTP GET as the kubelet's prober makes it: 2xx and 3xx succeed. An
/// HTTPS probe only connects.
async fn http_probe(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    https: bool,
) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("GET http://{host}:{port}{path}: {e}"))?;
    if https {
        return Ok(());
    }
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("GET http://{host}:{port}{path}: {e}"))?;
    let mut answer = Vec::new();
    let mut buffer = [0_u8; 512];
    while !answer.contains(&b'\n') && answer.len() < 4096 {
        let n = stream
            .read(&mut buffer)
            .await
            .map_err(|e| format!("GET http://{host}:{port}{path}: {e}"))?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
    }
    let line = String::from_utf8_lossy(&answer);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET http://{host}:{port}{path}: no HTTP answer"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("GET http://{host}:{port}{path}: status {code}"))
    }
}

/// Sends SIGTERM to a container's process group, SIGKILL after `grace`;
/// returns how its main process ended.
async fn terminate(
    child: &mut tokio::process::Child,
    group: i32,
    grace: Duration,
) -> std::io::Result<ExitStatus> {
    let _ = killpg(Pid::from_raw(group), Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
            child.wait().await
        }
    }
}

async fn wait_for_stop(stop: &mut watch::Receiver<Option<Duration>>) {
    loop {
        if stop.borrow_and_update().is_some() {
            return;
        }
        if stop.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// The crash back-off before restart number `consecutive` (from 1).
fn backoff(first: Duration, consecutive: u32) -> Duration {
    let factor = 1_u32 << consecutive.saturating_sub(1).min(20);
    first.saturating_mul(factor).min(MAX_BACKOFF)
}

/// A duration as Go prints it (`10s`, `1m20s`, `500ms`), as in the
/// kubelet's back-off message.
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, ms / 60_000 % 60);
    let s_ms = ms % 60_000;
    let s = if s_ms.is_multiple_of(1000) {
        format!("{}", s_ms / 1000)
    } else {
        format!("{}.{:03}", s_ms / 1000, s_ms % 1000)
            .trim_end_matches('0')
            .to_string()
    };
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

struct ProbeSettings {
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

impl ProbeSettings {
    fn of(probe: &Probe) -> ProbeSettings {
        let seconds = |v: Option<i32>, default: u64| {
            Duration::from_secs(v.map_or(default, |v| v.max(0) as u64))
        };
        ProbeSettings {
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

/// Environment variables in definition order, later ones overriding.
#[derive(Default)]
struct Vars {
    list: Vec<(String, String)>,
    map: HashMap<String, String>,
}

impl Vars {
    fn set(&mut self, key: &str, value: String) {
        match self.list.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.clone(),
            None => self.list.push((key.to_string(), value.clone())),
        }
        self.map.insert(key.to_string(), value);
    }
}

/// Service links, as the kubelet gives them: `<NAME>_SERVICE_HOST`,
/// `<NAME>_SERVICE_PORT[_<PORT NAME>]`, `<NAME>_PORT[_<n>_TCP[_…]]`.
fn service_links(services: &[ServiceView]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for s in services {
        let Some((_, first)) = s.ports.first() else {
            continue;
        };
        let name = s.name.to_uppercase().replace('-', "_");
        let host = s.address.to_string();
        env.push((format!("{name}_SERVICE_HOST"), host.clone()));
        env.push((format!("{name}_SERVICE_PORT"), first.to_string()));
        env.push((format!("{name}_PORT"), format!("tcp://{host}:{first}")));
        for (port_name, port) in &s.ports {
            if let Some(port_name) = port_name.as_deref().filter(|n| !n.is_empty()) {
                let port_name = port_name.to_uppercase().replace('-', "_");
                env.push((format!("{name}_SERVICE_PORT_{port_name}"), port.to_string()));
            }
            let prefix = format!("{name}_PORT_{port}_TCP");
            env.push((prefix.clone(), format!("tcp://{host}:{port}")));
            env.push((format!("{prefix}_PROTO"), "tcp".into()));
            env.push((format!("{prefix}_PORT"), port.to_string()));
            env.push((format!("{prefix}_ADDR"), host.clone()));
        }
    }
    env
}

/// The binary an image names: the last path segment of its repository.
fn image_binary(image: &str) -> &str {
    let repository = image.split('@').next().unwrap_or(image);
    let last = repository.rsplit('/').next().unwrap_or(repository);
    last.split(':').next().unwrap_or(last)
}

/// A Kubernetes quantity as a number (`500m`, `2`, `64Gi`, `1e3`).
fn quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024_f64),
        ("Mi", 1024_f64.powi(2)),
        ("Gi", 1024_f64.powi(3)),
        ("Ti", 1024_f64.powi(4)),
        ("Pi", 1024_f64.powi(5)),
        ("Ei", 1024_f64.powi(6)),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in suffixes {
        if let Some(number) = text.strip_suffix(suffix)
            && let Ok(n) = number.parse::<f64>()
        {
            return Some(n * factor);
        }
    }
    text.parse().ok()
}

/// A `resourceFieldRef`'s value: the container's limit (the node's
/// capacity without one) or request (its limit, else 0), over the divisor,
/// rounded up.
fn resource_value(c: &Container, selector: &ResourceFieldSelector) -> Result<String, String> {
    let (kind, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| format!("bad resource {:?}", selector.resource))?;
    let resources = c.resources.clone().unwrap_or_default();
    let get = |map: &Option<
        BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| {
        map.as_ref()
            .and_then(|m| m.get(resource))
            .and_then(|q| quantity(&q.0))
    };
    let capacity = match resource {
        "cpu" => 16.0,
        "memory" => 64.0 * 1024_f64.powi(3),
        "ephemeral-storage" => 100.0 * 1024_f64.powi(3),
        _ => {
            return Err(format!(
                "resource {:?} is not supported by the stand-in node",
                selector.resource
            ));
        }
    };
    let limit = get(&resources.limits);
    let value = match kind {
        "limits" => limit.unwrap_or(capacity),
        "requests" => get(&resources.requests).or(limit).unwrap_or(0.0),
        _ => return Err(format!("bad resource {:?}", selector.resource)),
    };
    let divisor = selector
        .divisor
        .as_ref()
        .and_then(|q| quantity(&q.0))
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Ok(format!("{}", (value / divisor).ceil() as i64))
}

/// Expands `$(VAR)` as the kubelet does: known variables are replaced,
/// unknown references stay as written, `$$` is a literal `$`.
fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match after.chars().next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Text rewriting that maps a pod onto this machine: mount paths to local
/// folders, `0.0.0.0` to the pod's address, service host names to their
/// proxies' addresses. One pass, longest match first, so a replacement is
/// never rewritten again.
#[derive(Debug, Clone, Default)]
struct Rewrites {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    needle: String,
    replacement: String,
    kind: RuleKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleKind {
    Path,
    Wildcard,
    /// `bare`: a single label (`svc`), replaced only where it is clearly a
    /// host.
    Host {
        bare: bool,
    },
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

impl Rule {
    fn fits(&self, before: &str, after: &str) -> bool {
        let last = before.chars().next_back();
        let next = after.chars().next();
        match self.kind {
            RuleKind::Path => {
                let start = before.ends_with("://")
                    || last.is_none_or(|c| !is_name_char(c) && c != '/' && c != '~');
                start && next.is_none_or(|c| !is_name_char(c))
            }
            RuleKind::Wildcard => {
                let apart = |c: char| !c.is_ascii_digit() && c != '.';
                last.is_none_or(apart) && next.is_none_or(apart)
            }
            RuleKind::Host { bare } => {
                let whole =
                    last.is_none_or(|c| !is_name_char(c)) && next.is_none_or(|c| !is_name_char(c));
                let clearly_a_host = !bare
                    || before.ends_with("://")
                    || before.ends_with('@')
                    || after
                        .strip_prefix(':')
                        .is_some_and(|port| port.starts_with(|c: char| c.is_ascii_digit()));
                whole && clearly_a_host
            }
        }
    }
}

impl Rewrites {
    fn new(
        address: Option<Ipv4Addr>,
        mounts: &[(String, PathBuf)],
        hosts: &[(String, Ipv4Addr, bool)],
    ) -> Rewrites {
        let mut rules: Vec<Rule> = mounts
            .iter()
            .map(|(path, local)| Rule {
                needle: path.clone(),
                replacement: local.display().to_string(),
                kind: RuleKind::Path,
            })
            .collect();
        if let Some(address) = address {
            rules.push(Rule {
                needle: "0.0.0.0".into(),
                replacement: address.to_string(),
                kind: RuleKind::Wildcard,
            });
        }
        rules.extend(hosts.iter().map(|(host, address, bare)| Rule {
            needle: host.clone(),
            replacement: address.to_string(),
            kind: RuleKind::Host { bare: *bare },
        }));
        rules.sort_by_key(|rule| std::cmp::Reverse(rule.needle.len()));
        Rewrites { rules }
    }

    fn apply(&self, text: &str) -> String {
        if self.rules.is_empty() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        'text: while i < text.len() {
            for rule in &self.rules {
                if text[i..].starts_with(&rule.needle)
                    && rule.fits(&text[..i], &text[i + rule.needle.len()..])
                {
                    out.push_str(&rule.replacement);
                    i += rule.needle.len();
                    continue 'text;
                }
            }
            let c = text[i..].chars().next().expect("i is on a char boundary");
            out.push(c);
            i += c.len_utf8();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_the_kubelet() {
        let vars = HashMap::from([
            ("A".to_string(), "x".to_string()),
            ("B".to_string(), "$(A)".to_string()),
        ]);
        assert_eq!(expand("$(A)-$(B)", &vars), "x-$(A)");
        assert_eq!(expand("$$(A) $(C) $A $", &vars), "$(A) $(C) $A $");
        assert_eq!(expand("$(A", &vars), "$(A");
        assert_eq!(expand("héllo $(A)é", &vars), "héllo xé");
    }

    #[test]
    fn rewrites_map_paths_wildcards_and_hosts_as_whole_words() {
        let address = Ipv4Addr::new(127, 9, 1, 1);
        let svc = Ipv4Addr::new(127, 9, 128, 1);
        let rewrites = Rewrites::new(
            Some(address),
            &[
                ("/var/cache".into(), PathBuf::from("/w/cache")),
                ("/var/cache/setlist".into(), PathBuf::from("/w/setlist")),
            ],
            &[
                ("kafka".into(), svc, true),
                ("kafka.ns".into(), svc, false),
                ("kafka.ns.svc.cluster.local".into(), svc, false),
            ],
        );
        let cases = [
            ("--dir=/var/cache/setlist/x", "--dir=/w/setlist/x"),
            ("/var/cache", "/w/cache"),
            (
                "/var/cached /x/var/cache file:///var/cache",
                "/var/cached /x/var/cache file:///w/cache",
            ),
            (
                "0.0.0.0:8080 10.0.0.0 127.0.0.1:9",
                "127.9.1.1:8080 10.0.0.0 127.0.0.1:9",
            ),
            (
                "kafka:9092 http://kafka/x kafka-topic --role kafka",
                "127.9.128.1:9092 http://127.9.128.1/x kafka-topic --role kafka",
            ),
            (
                "kafka.ns.svc.cluster.local:1 kafka.ns",
                "127.9.128.1:1 127.9.128.1",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(rewrites.apply(text), expected, "{text}");
        }
    }

    #[test]
    fn images_name_binaries_and_backoff_doubles() {
        assert_eq!(
            image_binary("ghcr.io/setlist-dev/setlist-node:0.1.0"),
            "setlist-node"
        );
        assert_eq!(image_binary("localhost:5000/a/b@sha256:00"), "b");
        assert_eq!(image_binary("busybox"), "busybox");
        let first = Duration::from_secs(10);
        assert_eq!(go_duration(backoff(first, 1)), "10s");
        assert_eq!(go_duration(backoff(first, 4)), "1m20s");
        assert_eq!(go_duration(backoff(first, 30)), "5m0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("2Gi"), Some(2.0 * 1024_f64.powi(3)));
    }
}
