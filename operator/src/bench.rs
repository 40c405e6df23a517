//! `setlist-operator bench`: the operator's speed, measured on a real API
//! server. It installs the CRD, runs the controller in this process against
//! a fresh namespace, creates clusters whose slices directories hold only a
//! manifest (no pod runs: what is timed is the operator and the API server,
//! not images or kubelets), changes their specs, and times each step until
//! the watches show every object as [`desired::desired_state`] predicts and
//! the status has observed the new generation.
//!
//! Times are taken from watch events, not by polling: polling would add
//! load to the API server being measured, and its period would round every
//! number up.

use crate::crd::RecommenderCluster;
use crate::desired::{self, DesiredState, INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGER, Observed};
use crate::metrics::Metrics;
use crate::reconcile::{self, Context};
use anyhow::{Context as _, Result, bail, ensure};
use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PodTemplateSpec, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, CustomResourceExt, Resource, ResourceExt};
use prometheus::core::Metric as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use setlist_core::plan::PartitionPlan;
use setlist_core::shape::{MAX_LSTM_LAYERS, ModelConfig};
use setlist_core::slice::{FORMAT_VERSION, SLICES_FORMAT, SliceManifest};
use std::collections::BTreeMap;
use std::fmt::{Debug, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The field manager of what the bench itself writes (the CRD), apart from
/// the operator's.
const BENCH_MANAGER: &str = "setlist-operator-bench";
/// How long one step may take before the bench gives up and says what is
/// still missing.
const STEP_TIMEOUT: Duration = Duration::from_secs(180);
/// A pause after each timed step: the passes the step set off (the
/// StatefulSets' own updates come back as watch events) finish before the
/// next step starts, so a step does not pay for the previous one's tail.
const SETTLE: Duration = Duration::from_secs(1);
/// The two model versions the rounds switch between.
const VERSIONS: [&str; 2] = ["v1", "v2"];

/// What `setlist-operator bench` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub clusters: u32,
    pub stages: u32,
    pub shards: u32,
    pub rounds: u32,
}

/// Every number the bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub api_server: ApiServer,
    pub clusters: u32,
    pub stages: u32,
    pub shards: u32,
    pub stage_replicas: u32,
    pub objects_per_cluster: usize,
    pub namespace: String,
    pub create: Step,
    pub rounds: Vec<Round>,
    pub round_median_ms: f64,
    pub round_max_ms: f64,
    pub change_all: Step,
    /// Every reconcile pass while the bench ran (the controller's own
    /// histogram).
    pub passes: Passes,
    pub wall_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    /// `/proc/loadavg`'s 1, 5 and 15 minute averages before and after.
    pub load_before: Vec<f64>,
    pub load_after: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiServer {
    pub url: String,
    pub version: String,
}

/// A step that changes several clusters at once.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub what: String,
    /// From the first request sent until the last cluster is applied.
    pub ms: f64,
    /// How long the requests themselves took (sent concurrently).
    pub requests_ms: f64,
    pub passes: Passes,
}

/// One spec change to one cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: u32,
    pub change: String,
    /// From the patch's response until every object shows the change and
    /// the status has observed the new generation.
    pub ms: f64,
    /// StatefulSets and Deployments whose spec the change touched.
    pub workloads_changed: usize,
    pub passes: Passes,
}

/// Reconcile passes from the controller's histogram. Its buckets bound the
/// quantiles: `p50_at_most_ms` is the bucket bound that half the passes
/// are under; `None` is over the last bucket (10 s).
#[derive(Debug, Clone, Serialize)]
pub struct Passes {
    pub count: u64,
    pub mean_ms: Option<f64>,
    pub p50_at_most_ms: Option<f64>,
    pub p90_at_most_ms: Option<f64>,
    pub max_at_most_ms: Option<f64>,
    pub failed: u64,
}

/// Runs the bench against KUBECONFIG's cluster (or the in-cluster service
/// account) and deletes what it created, even when a step fails.
pub async fn run(options: Options) -> Result<Report> {
    ensure!(
        options.clusters >= 1 && options.stages >= 1 && options.shards >= 1 && options.rounds >= 1,
        "--clusters, --stages, --shards and --rounds must each be at least 1"
    );
    let started = Instant::now();
    let load_before = load_average();
    let config = kube::Config::infer().await.context(
        "cannot find a Kubernetes API server: set KUBECONFIG (for the test control plane, \
         start ../shared/k8s/start.sh and export KUBECONFIG=$RUN/kubeconfig)",
    )?;
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config.clone())
        .context("cannot build a Kubernetes client from KUBECONFIG: check its certificates")?;
    let version = client.apiserver_version().await.with_context(|| {
        format!(
            "cannot reach the API server at {url}: start it, or point KUBECONFIG at one that runs"
        )
    })?;
    install_crd(&client).await?;

    let namespace = format!("setlist-bench-{}", std::process::id());
    let dir = std::env::temp_dir().join(&namespace);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let object: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": namespace, "labels": { "setlist.dev/bench": "true" } }
    }))?;
    namespaces
        .create(&PostParams::default(), &object)
        .await
        .with_context(|| {
            format!("cannot create namespace {namespace}: delete it if a previous bench left it (kubectl delete namespace {namespace})")
        })?;
    progress(&format!(
        "namespace {namespace}, slices in {}",
        dir.display()
    ));

    // The operator gets a client of its own, as it would in its own pod:
    // its requests do not queue behind the bench's on one connection pool.
    let operator_client = Client::try_from(config)
        .context("cannot build a Kubernetes client from KUBECONFIG: check its certificates")?;
    let mut bench = Bench::new(client.clone(), operator_client, &namespace, &dir, &options);
    let outcome = tokio::select! {
        outcome = bench.measure() => outcome,
        _ = setlist_service::shutdown::signal() => Err(anyhow::anyhow!("interrupted: the namespace and the slices are deleted; run the bench again")),
    };
    bench.stop().await;
    progress(&format!("deleting namespace {namespace}"));
    if let Err(error) = namespaces
        .delete(&namespace, &DeleteParams::background())
        .await
    {
        eprintln!(
            "warning: cannot delete namespace {namespace} ({error}): delete it with `kubectl delete namespace {namespace}`"
        );
    }
    if let Err(error) = std::fs::remove_dir_all(&dir) {
        eprintln!(
            "warning: cannot delete {} ({error}): delete it by hand",
            dir.display()
        );
    }
    let measured = outcome?;
    Ok(Report {
        machine: Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu: cpu_model(),
            load_before,
            load_after: load_average(),
        },
        api_server: ApiServer {
            url,
            version: version.git_version,
        },
        clusters: options.clusters,
        stages: options.stages,
        shards: options.shards,
        stage_replicas: 2,
        objects_per_cluster: measured.objects_per_cluster,
        namespace,
        round_median_ms: median(measured.rounds.iter().map(|r| r.ms)),
        round_max_ms: measured.rounds.iter().map(|r| r.ms).fold(0.0, f64::max),
        create: measured.create,
        rounds: measured.rounds,
        change_all: measured.change_all,
        passes: measured.passes,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

impl Report {
    /// The report as lines a person reads.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let load = |l: &[f64]| {
            l.iter()
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            out,
            "setlist-operator bench: {} clusters × ({} stages × {} replicas + {} output shards), dispatcher, search API; {} objects per cluster",
            self.clusters, self.stages, self.stage_replicas, self.shards, self.objects_per_cluster
        );
        let _ = writeln!(
            out,
            "machine: {} cores, {}; load {} before, {} after",
            self.machine.cores,
            self.machine.cpu,
            load(&self.machine.load_before),
            load(&self.machine.load_after)
        );
        let _ = writeln!(
            out,
            "API server: {} at {}; namespace {}",
            self.api_server.version, self.api_server.url, self.namespace
        );
        let _ = writeln!(out);
        let step = |out: &mut String, step: &Step| {
            let _ = writeln!(
                out,
                "{}: {:.1} ms (requests {:.1} ms); {}",
                step.what,
                step.ms,
                step.requests_ms,
                step.passes.text()
            );
        };
        step(&mut out, &self.create);
        let _ = writeln!(
            out,
            "spec change → all objects applied (one cluster, from the patch's response):"
        );
        for round in &self.rounds {
            let _ = writeln!(
                out,
                "  round {}  {:<26} {:>8.1} ms  ({} workloads changed; {})",
                round.round,
                round.change,
                round.ms,
                round.workloads_changed,
                round.passes.text()
            );
        }
        let _ = writeln!(
            out,
            "  median {:.1} ms, max {:.1} ms",
            self.round_median_ms, self.round_max_ms
        );
        step(&mut out, &self.change_all);
        let _ = writeln!(out, "all reconcile passes: {}", self.passes.text());
        let _ = writeln!(out, "wall time: {:.1} s", self.wall_seconds);
        out
    }
}

impl Passes {
    fn text(&self) -> String {
        let ms = |v: Option<f64>| match v {
            Some(v) => format!("≤ {v} ms"),
            None => "> 10 s".to_string(),
        };
        match self.mean_ms {
            None => "no reconcile passes".to_string(),
            Some(mean) => format!(
                "{} reconcile passes, mean {mean:.1} ms, p50 {}, p90 {}, max {}, {} failed",
                self.count,
                ms(self.p50_at_most_ms),
                ms(self.p90_at_most_ms),
                ms(self.max_at_most_ms),
                self.failed
            ),
        }
    }
}

/// Status lines while the bench runs (stderr: stdout is the report).
fn progress(line: &str) {
    eprintln!("bench: {line}");
}

/// Server-side applies the CRD the types generate and waits until the API
/// server serves it.
async fn install_crd(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = RecommenderCluster::crd();
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply(BENCH_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .with_context(|| {
        format!("cannot install CRD {name}: the bench needs a user that may write CustomResourceDefinitions (cluster-admin)")
    })?;
    let established = kube::runtime::wait::await_condition(
        crds,
        &name,
        kube::runtime::wait::conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(30), established)
        .await
        .with_context(|| {
            format!("CRD {name} was not Established within 30 s: look at the API server's log")
        })?
        .with_context(|| format!("cannot watch CRD {name}"))?;
    Ok(())
}

/// What [`Bench::measure`] found.
struct Measured {
    objects_per_cluster: usize,
    create: Step,
    rounds: Vec<Round>,
    change_all: Step,
    passes: Passes,
}

/// A cluster as the bench last changed it.
struct Cluster {
    name: String,
    stage_replicas: u32,
    version: usize,
    expected: Expectation,
}

struct Bench {
    client: Client,
    namespace: String,
    options: Options,
    /// The slices' `file://` URI of each of [`VERSIONS`], and its manifest.
    slices: Vec<(String, SliceManifest)>,
    dir: PathBuf,
    metrics: Arc<Metrics>,
    operator_client: Option<Client>,
    stop_operator: Option<watch::Sender<bool>>,
    operator: Option<JoinHandle<()>>,
    world: Option<World>,
}

impl Bench {
    fn new(
        client: Client,
        operator_client: Client,
        namespace: &str,
        dir: &Path,
        options: &Options,
    ) -> Bench {
        Bench {
            client,
            namespace: namespace.to_string(),
            options: options.clone(),
            slices: Vec::new(),
            dir: dir.to_path_buf(),
            metrics: Arc::new(Metrics::new()),
            operator_client: Some(operator_client),
            stop_operator: None,
            operator: None,
            world: None,
        }
    }

    async fn measure(&mut self) -> Result<Measured> {
        for version in VERSIONS {
            self.slices.push(manifest_only(
                &self.dir,
                self.options.stages,
                self.options.shards,
                version,
            )?);
        }
        let world = World::start(&self.client, &self.namespace).await?;
        self.world = Some(world);
        self.start_operator();
        // The controller's first lists and watches are not what is timed.
        tokio::time::sleep(SETTLE).await;
        let first = self.metrics_now();

        // 1. Every cluster created at once.
        let api: Api<RecommenderCluster> = Api::namespaced(self.client.clone(), &self.namespace);
        let names: Vec<String> = (0..self.options.clusters)
            .map(|i| format!("bench-{i:02}"))
            .collect();
        progress(&format!(
            "creating {} clusters of {} stages and {} shards",
            names.len(),
            self.options.stages,
            self.options.shards
        ));
        // The first write of a new kind pays the API server's one-time
        // costs (its storage for the kind, the CRD's validation compiled):
        // a dry run pays them outside the timing.
        let warm = self.cluster_object("bench-warm-up", 2, 0)?;
        api.create(
            &PostParams {
                dry_run: true,
                field_manager: None,
            },
            &warm,
        )
        .await
        .context(
            "the API server refused a RecommenderCluster: is the CRD the one these types generate?",
        )?;
        let before = self.metrics_now();
        let sent = Instant::now();
        let creates = names.iter().map(|name| {
            let api = api.clone();
            let cluster = self.cluster_object(name, 2, 0);
            async move {
                api.create(&PostParams::default(), &cluster?)
                    .await
                    .map_err(anyhow::Error::from)
            }
        });
        let created = futures::future::try_join_all(creates).await.context(
            "the API server refused a RecommenderCluster: is the CRD the one these types generate?",
        )?;
        let requests = sent.elapsed();
        let mut clusters = Vec::new();
        for cluster in &created {
            clusters.push(Cluster {
                name: cluster.name_any(),
                stage_replicas: 2,
                version: 0,
                expected: self.expectation(cluster)?,
            });
        }
        let all: Vec<&Expectation> = clusters.iter().map(|c| &c.expected).collect();
        self.world()?.wait_applied(&all).await?;
        let elapsed = sent.elapsed();
        tokio::time::sleep(SETTLE).await;
        let create = Step {
            what: format!(
                "create {} clusters at once → every object applied, status observed",
                clusters.len()
            ),
            ms: millis(elapsed),
            requests_ms: millis(requests),
            passes: self.metrics_now().since(&before),
        };
        let objects_per_cluster = clusters[0].expected.objects.len();

        // 2. One cluster's spec, changed round after round.
        let mut rounds = Vec::new();
        for round in 1..=self.options.rounds {
            let cluster = &mut clusters[0];
            let (change, patch) = if round % 2 == 1 {
                let to = if cluster.stage_replicas == 2 { 3 } else { 2 };
                let change = format!("stages.replicas {}→{to}", cluster.stage_replicas);
                cluster.stage_replicas = to;
                (
                    change,
                    serde_json::json!({ "spec": { "stages": { "replicas": to } } }),
                )
            } else {
                let to = 1 - cluster.version;
                let change = format!("model {}→{}", VERSIONS[cluster.version], VERSIONS[to]);
                cluster.version = to;
                (
                    change,
                    serde_json::json!({ "spec": { "model": { "uri": self.slices[to].0 } } }),
                )
            };
            progress(&format!("round {round}: {} {change}", cluster.name));
            let before = self.metrics_now();
            let patched = api
                .patch(
                    &cluster.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .with_context(|| {
                    format!("the API server refused the change to {}", cluster.name)
                })?;
            let sent = Instant::now();
            let expected = self.expectation(&patched)?;
            let workloads_changed = expected.workloads_changed(&cluster.expected);
            cluster.expected = expected;
            self.world()?.wait_applied(&[&cluster.expected]).await?;
            let elapsed = sent.elapsed();
            tokio::time::sleep(SETTLE).await;
            rounds.push(Round {
                round,
                change,
                ms: millis(elapsed),
                workloads_changed,
                passes: self.metrics_now().since(&before),
            });
        }

        // 3. Every cluster's model, changed at once.
        progress(&format!(
            "changing the model of all {} clusters at once",
            clusters.len()
        ));
        let before = self.metrics_now();
        let sent = Instant::now();
        let patches = clusters.iter().map(|cluster| {
            let api = api.clone();
            let uri = self.slices[1 - cluster.version].0.clone();
            let name = cluster.name.clone();
            async move {
                let patch = serde_json::json!({ "spec": { "model": { "uri": uri } } });
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .with_context(|| format!("the API server refused the change to {name}"))
            }
        });
        let patched = futures::future::try_join_all(patches).await?;
        let requests = sent.elapsed();
        for (cluster, patched) in clusters.iter_mut().zip(&patched) {
            cluster.version = 1 - cluster.version;
            cluster.expected = self.expectation(patched)?;
        }
        let all: Vec<&Expectation> = clusters.iter().map(|c| &c.expected).collect();
        self.world()?.wait_applied(&all).await?;
        let elapsed = sent.elapsed();
        tokio::time::sleep(SETTLE).await;
        let change_all = Step {
            what: format!(
                "change the model of all {} clusters at once → every object applied",
                clusters.len()
            ),
            ms: millis(elapsed),
            requests_ms: millis(requests),
            passes: self.metrics_now().since(&before),
        };

        Ok(Measured {
            objects_per_cluster,
            create,
            rounds,
            change_all,
            passes: self.metrics_now().since(&first),
        })
    }

    fn world(&self) -> Result<&World> {
        self.world
            .as_ref()
            .context("the bench's watches are not running")
    }

    /// The controller as `setlist-operator run` runs it, in this process,
    /// watching the bench's namespace only (no leader election: nothing
    /// else reconciles there).
    fn start_operator(&mut self) {
        let Some(client) = self.operator_client.take() else {
            return;
        };
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: Some(format!("bench-{}", std::process::id())),
            },
        );
        let context = Arc::new(Context::new(client, recorder, self.metrics.clone()));
        let (stop, mut stopped) = watch::channel(false);
        let namespace = self.namespace.clone();
        self.stop_operator = Some(stop);
        self.operator = Some(tokio::spawn(async move {
            reconcile::run(context, Some(&namespace), async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
        }));
    }

    /// Stops the controller (before the namespace goes: it would fight the
    /// deletion) and the bench's watches.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop_operator.take() {
            let _ = stop.send(true);
        }
        if let Some(operator) = self.operator.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), operator).await;
        }
        if let Some(world) = self.world.take() {
            world.stop();
        }
    }

    fn metrics_now(&self) -> Sample {
        Sample::of(&self.metrics)
    }

    fn cluster_object(
        &self,
        name: &str,
        stage_replicas: u32,
        version: usize,
    ) -> Result<RecommenderCluster> {
        let object = serde_json::json!({
            "apiVersion": "setlist.dev/v1alpha1",
            "kind": "RecommenderCluster",
            "metadata": { "name": name, "namespace": self.namespace },
            "spec": {
                "model": { "uri": self.slices[version].0 },
                "stages": { "count": self.options.stages, "replicas": stage_replicas },
                "outputShards": { "count": self.options.shards },
                "searchApi": { "replicas": 1 },
                // Nothing listens there: with topics unmanaged, the
                // operator never talks to Kafka.
                "kafka": { "bootstrapServers": "127.0.0.1:9", "manageTopics": false },
            },
        });
        serde_json::from_value(object).context("the bench's cluster does not fit the CRD's types")
    }

    /// What the operator should make of `cluster` as the API server holds
    /// it (its uid and generation).
    fn expectation(&self, cluster: &RecommenderCluster) -> Result<Expectation> {
        let manifest = self
            .slices
            .iter()
            .find(|(uri, _)| *uri == cluster.spec.model.uri)
            .map(|(_, manifest)| manifest)
            .context("the cluster names slices the bench did not write")?;
        let state = desired::desired_state(
            cluster,
            &Observed {
                manifest,
                kafka_secret_keys: &[],
            },
        )
        .context("the operator refuses the bench's cluster: the bench builds a spec that does not match its slices")?;
        Ok(Expectation {
            name: cluster.name_any(),
            namespace: self.namespace.clone(),
            generation: cluster
                .metadata
                .generation
                .context("the API server returned a cluster without a generation")?,
            objects: Snapshot::of_desired(&state),
        })
    }
}

/// A slices directory with only its manifest (the operator reads nothing
/// else, and no pod runs): `(file:// URI, manifest)`.
fn manifest_only(
    dir: &Path,
    stages: u32,
    shards: u32,
    version: &str,
) -> Result<(String, SliceManifest)> {
    // The fewest LSTM layers that can be cut into `stages`: the embedding
    // and each LSTM layer is a stage at most.
    let lstm_layers = stages.saturating_sub(1).max(1);
    ensure!(
        lstm_layers <= MAX_LSTM_LAYERS,
        "--stages {stages} needs a model of {lstm_layers} LSTM layers, and models have at most {MAX_LSTM_LAYERS}: ask for at most {} stages",
        MAX_LSTM_LAYERS + 1
    );
    let config = ModelConfig {
        catalogue_size: 1000,
        embedding_dim: 8,
        hidden_dim: 8,
        lstm_layers,
        max_history: 10,
        residual: false,
    };
    debug_assert!(PartitionPlan::max_stages(&config) >= stages);
    let plan = PartitionPlan::new(&config, stages, shards).with_context(|| {
        format!("cannot cut a model into {stages} stages and {shards} shards: ask for fewer")
    })?;
    let manifest = SliceManifest {
        format: SLICES_FORMAT.into(),
        format_version: FORMAT_VERSION,
        model_version: version.into(),
        plan,
        config,
        slices: Vec::new(),
        catalogue_sha256: String::new(),
    };
    let dir = dir.join(version);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create {}: is the temp dir writable?", dir.display()))?;
    let path = dir.join(setlist_service::slices::MANIFEST);
    std::fs::write(&path, serde_json::to_vec(&manifest)?)
        .with_context(|| format!("cannot write {}: is the temp dir writable?", path.display()))?;
    Ok((format!("file://{}", dir.display()), manifest))
}

/// `Kind/name` → the spec fields the bench compares (replicas and the pod
/// template's model version and config hash; `None` for kinds where being
/// there is enough).
type Snapshot = BTreeMap<String, Option<String>>;

trait SnapshotExt {
    fn of_desired(state: &DesiredState) -> Snapshot;
    fn add<K: Resource<DynamicType = ()>>(&mut self, object: &K, spec: Option<String>);
}

impl SnapshotExt for Snapshot {
    fn of_desired(state: &DesiredState) -> Snapshot {
        let mut snapshot = Snapshot::new();
        for o in &state.service_accounts {
            snapshot.add(o, None);
        }
        for o in &state.config_maps {
            snapshot.add(o, None);
        }
        for o in &state.services {
            snapshot.add(o, None);
        }
        for o in &state.stateful_sets {
            snapshot.add(o, stateful_set_spec(o));
        }
        for o in &state.deployments {
            snapshot.add(o, deployment_spec(o));
        }
        for o in &state.disruption_budgets {
            snapshot.add(o, None);
        }
        for o in &state.network_policies {
            snapshot.add(o, None);
        }
        for o in &state.ingresses {
            snapshot.add(o, None);
        }
        snapshot
    }

    fn add<K: Resource<DynamicType = ()>>(&mut self, object: &K, spec: Option<String>) {
        self.insert(format!("{}/{}", K::kind(&()), object.name_any()), spec);
    }
}

fn template_spec(replicas: Option<i32>, template: &PodTemplateSpec) -> String {
    let annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref());
    let annotation = |key: &str| {
        annotations
            .and_then(|a| a.get(key))
            .map_or("-", String::as_str)
            .to_string()
    };
    format!(
        "replicas {} model {} config {}",
        replicas.map_or("-".to_string(), |r| r.to_string()),
        annotation("setlist.dev/model-version"),
        annotation("setlist.dev/config-hash")
    )
}

fn stateful_set_spec(set: &StatefulSet) -> Option<String> {
    let spec = set.spec.as_ref()?;
    Some(template_spec(spec.replicas, &spec.template))
}

fn deployment_spec(deployment: &Deployment) -> Option<String> {
    let spec = deployment.spec.as_ref()?;
    Some(template_spec(spec.replicas, &spec.template))
}

/// What one cluster should have once the operator applied its spec.
struct Expectation {
    name: String,
    namespace: String,
    generation: i64,
    objects: Snapshot,
}

impl Expectation {
    fn workloads_changed(&self, before: &Expectation) -> usize {
        self.objects
            .iter()
            .filter(|(key, spec)| spec.is_some() && before.objects.get(*key) != Some(*spec))
            .count()
    }
}

/// The bench's own view of the namespace: a reflector per kind the
/// operator writes, each bumping `tick` on every event.
struct World {
    clusters: Store<RecommenderCluster>,
    service_accounts: Store<ServiceAccount>,
    config_maps: Store<ConfigMap>,
    services: Store<Service>,
    stateful_sets: Store<StatefulSet>,
    deployments: Store<Deployment>,
    disruption_budgets: Store<PodDisruptionBudget>,
    network_policies: Store<NetworkPolicy>,
    ingresses: Store<Ingress>,
    tick: Arc<watch::Sender<u64>>,
    tasks: Vec<JoinHandle<()>>,
}

impl World {
    async fn start(client: &Client, namespace: &str) -> Result<World> {
        let tick = Arc::new(watch::channel(0u64).0);
        let owned = format!("{MANAGED_BY_LABEL}={MANAGER}");
        let mut tasks = Vec::new();
        let clusters = mirror_of(client, namespace, None, &tick, &mut tasks);
        let owned = Some(owned.as_str());
        let service_accounts = mirror_of(client, namespace, owned, &tick, &mut tasks);
        let config_maps = mirror_of(client, namespace, owned, &tick, &mut tasks);
        let services = mirror_of(client, namespace, owned, &tick, &mut tasks);
        let stateful_sets = mirror_of(client, namespace, owned, &tick, &mut tasks);
        let deployments = mirror_of(client, namespace, owned, &tick, &mut tasks);
        let disruption_budgets = mirror_of(client, namespace, owned, &tick, &mut tasks);
        let network_policies = mirror_of(client, namespace, owned, &tick, &mut tasks);
        let ingresses = mirror_of(client, namespace, owned, &tick, &mut tasks);
        let world = World {
            clusters,
            service_accounts,
            config_maps,
            services,
            stateful_sets,
            deployments,
            disruption_budgets,
            network_policies,
            ingresses,
            tick,
            tasks,
        };
        let ready = async {
            world.clusters.wait_until_ready().await?;
            world.service_accounts.wait_until_ready().await?;
            world.config_maps.wait_until_ready().await?;
            world.services.wait_until_ready().await?;
            world.stateful_sets.wait_until_ready().await?;
            world.deployments.wait_until_ready().await?;
            world.disruption_budgets.wait_until_ready().await?;
            world.network_policies.wait_until_ready().await?;
            world.ingresses.wait_until_ready().await
        };
        tokio::time::timeout(Duration::from_secs(30), ready)
            .await
            .context(
                "the bench's watches did not start within 30 s: is the API server overloaded?",
            )?
            .context("a watch of the bench stopped before it listed its objects")?;
        Ok(world)
    }

    fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }

    /// What the watches show of `cluster`'s objects.
    fn snapshot(&self, cluster: &str) -> Snapshot {
        fn add<K>(
            snapshot: &mut Snapshot,
            store: &Store<K>,
            cluster: &str,
            spec: fn(&K) -> Option<String>,
        ) where
            K: Resource<DynamicType = ()> + Clone + 'static,
        {
            for object in store.state() {
                if object.labels().get(INSTANCE_LABEL).map(String::as_str) == Some(cluster) {
                    snapshot.add(&*object, spec(&object));
                }
            }
        }
        let mut snapshot = Snapshot::new();
        add(&mut snapshot, &self.service_accounts, cluster, |_| None);
        add(&mut snapshot, &self.config_maps, cluster, |_| None);
        add(&mut snapshot, &self.services, cluster, |_| None);
        add(
            &mut snapshot,
            &self.stateful_sets,
            cluster,
            stateful_set_spec,
        );
        add(&mut snapshot, &self.deployments, cluster, deployment_spec);
        add(&mut snapshot, &self.disruption_budgets, cluster, |_| None);
        add(&mut snapshot, &self.network_policies, cluster, |_| None);
        add(&mut snapshot, &self.ingresses, cluster, |_| None);
        snapshot
    }

    /// `None` once the watches show `expected` applied; else what is not.
    fn lacking(&self, expected: &Expectation) -> Option<String> {
        let cluster = self
            .clusters
            .get(&ObjectRef::new(&expected.name).within(&expected.namespace));
        let observed = cluster
            .as_ref()
            .and_then(|c| c.status.as_ref())
            .and_then(|s| s.observed_generation);
        let seen = self.snapshot(&expected.name);
        if seen != expected.objects {
            let differs = expected
                .objects
                .iter()
                .find(|(key, spec)| seen.get(*key) != Some(*spec))
                .map(|(key, spec)| {
                    format!(
                        "{key} should be {} but is {}",
                        spec.as_deref().unwrap_or("there"),
                        match seen.get(key) {
                            None => "missing",
                            Some(None) => "there",
                            Some(Some(spec)) => spec,
                        }
                    )
                })
                .or_else(|| {
                    seen.keys()
                        .find(|key| !expected.objects.contains_key(*key))
                        .map(|key| format!("{key} should not be there"))
                })
                .unwrap_or_default();
            return Some(format!("{}: {differs}", expected.name));
        }
        if observed != Some(expected.generation) {
            return Some(format!(
                "{}: status.observedGeneration is {observed:?}, not {}",
                expected.name, expected.generation
            ));
        }
        None
    }

    /// Waits until the watches show every expectation applied.
    async fn wait_applied(&self, expected: &[&Expectation]) -> Result<()> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        let mut ticks = self.tick.subscribe();
        // A cluster once applied stays applied (nothing else changes it):
        // only the others are checked again on each event.
        let mut pending: Vec<&Expectation> = expected.to_vec();
        loop {
            ticks.borrow_and_update();
            let mut lacking = Vec::new();
            pending.retain(|e| match self.lacking(e) {
                Some(what) => {
                    lacking.push(what);
                    true
                }
                None => false,
            });
            if pending.is_empty() {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, ticks.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("the bench's watches stopped: look at the API server's log"),
                Err(_) => bail!(
                    "{} of {} clusters were not applied within {} s ({}): run with RUST_LOG=setlist_operator=debug to see the operator's passes",
                    pending.len(),
                    expected.len(),
                    STEP_TIMEOUT.as_secs(),
                    lacking.join("; ")
                ),
            }
        }
    }
}

/// A reflector of kind `K` in `namespace` whose every event bumps `tick`.
fn mirror_of<K>(
    client: &Client,
    namespace: &str,
    labels: Option<&str>,
    tick: &Arc<watch::Sender<u64>>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let config = match labels {
        Some(labels) => watcher::Config::default().labels(labels),
        None => watcher::Config::default(),
    };
    let (store, writer) = reflector::store();
    let tick = tick.clone();
    tasks.push(tokio::spawn(async move {
        let events = reflector::reflector(writer, watcher(api, config)).default_backoff();
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            // The store holds the event's object before it is yielded.
            if event.is_ok() {
                tick.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }));
    store
}

/// The controller's reconcile histogram and error counter at one moment.
#[derive(Debug, Clone)]
struct Sample {
    count: u64,
    sum: f64,
    /// Upper bound (seconds) and cumulative count of each bucket.
    buckets: Vec<(f64, u64)>,
    failed: u64,
}

impl Sample {
    fn of(metrics: &Metrics) -> Sample {
        let metric = metrics.reconcile_duration.metric();
        let histogram = &metric.histogram;
        let failed = metrics
            .registry
            .gather()
            .iter()
            .filter(|family| family.name() == "setlist_operator_reconcile_errors_total")
            .flat_map(|family| &family.metric)
            .map(|m| m.counter.value())
            .sum::<f64>() as u64;
        Sample {
            count: histogram.sample_count(),
            sum: histogram.sample_sum(),
            buckets: histogram
                .bucket
                .iter()
                .map(|b| (b.upper_bound(), b.cumulative_count()))
                .collect(),
            failed,
        }
    }

    /// The passes between `before` and this sample.
    fn since(&self, before: &Sample) -> Passes {
        let count = self.count - before.count;
        let buckets: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .zip(&before.buckets)
            .map(|((bound, now), (_, then))| (*bound, now - then))
            .collect();
        // The bound of the first bucket that holds the rank-th pass.
        let at_most = |quantile: f64| {
            let rank = ((quantile * count as f64).ceil() as u64).max(1);
            buckets
                .iter()
                .find(|(_, cumulative)| *cumulative >= rank)
                .map(|(bound, _)| bound * 1000.0)
        };
        let some = count > 0;
        Passes {
            count,
            mean_ms: some.then(|| (self.sum - before.sum) / count as f64 * 1000.0),
            p50_at_most_ms: if some { at_most(0.5) } else { None },
            p90_at_most_ms: if some { at_most(0.9) } else { None },
            max_at_most_ms: if some { at_most(1.0) } else { None },
            failed: self.failed - before.failed,
        }
    }
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "model name").then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bounded_by_the_buckets_of_the_passes_in_between() {
        let before = Sample {
            count: 2,
            sum: 0.02,
            buckets: vec![(0.01, 2), (0.1, 2), (1.0, 2)],
            failed: 1,
        };
        // Then: 5 passes under 10 ms, 4 under 100 ms, 1 under 1 s.
        let after = Sample {
            count: 12,
            sum: 0.02 + 0.5,
            buckets: vec![(0.01, 7), (0.1, 11), (1.0, 12)],
            failed: 1,
        };
        let passes = after.since(&before);
        assert_eq!(passes.count, 10);
        assert!((passes.mean_ms.unwrap() - 50.0).abs() < 1e-9);
        assert_eq!(passes.p50_at_most_ms, Some(10.0));
        assert_eq!(passes.p90_at_most_ms, Some(100.0));
        assert_eq!(passes.max_at_most_ms, Some(1000.0));
        assert_eq!(passes.failed, 0);
        let none = after.since(&after);
        assert_eq!(
            (none.count, none.mean_ms, none.p50_at_most_ms),
            (0, None, None)
        );
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
    }

    #[test]
    fn manifest_only_cuts_the_model_into_the_stages_asked_for() {
        let dir = std::env::temp_dir().join(format!("setlist-bench-test-{}", std::process::id()));
        let (uri, manifest) = manifest_only(&dir, 6, 2, "v1").unwrap();
        assert_eq!(manifest.plan.stages.len(), 6);
        assert_eq!(manifest.plan.output_shards.len(), 2);
        assert!(uri.starts_with("file://") && uri.ends_with("/v1"), "{uri}");
        assert!(manifest_only(&dir, MAX_LSTM_LAYERS + 2, 1, "v2").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
