//! The reconciler: the thin shell around [`crate::desired`],
//! [`crate::replace`] and [`crate::status`]. Level-triggered: each pass
//! reads the cluster, the slices' manifest and the owned objects, applies
//! what differs with server-side apply, deletes what the spec no longer
//! wants, replaces failed nodes, and writes status. Every change is a
//! Kubernetes Event on the cluster.

use crate::crd::{RecommenderCluster, RecommenderClusterStatus, Replacement, ReplacementStatus};
use crate::desired::{
    self, DesiredState, INSTANCE_LABEL, MANAGER, Observed, PART_LABEL, SpecError,
};
use crate::metrics::Metrics;
use crate::replace::{self, NodeHealth};
use crate::status::{self, Outcome};
use crate::topics;
use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use setlist_core::kafka::KafkaSettings;
use setlist_core::slice::SliceManifest;
use setlist_service::slices::SliceSource;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The finalizer that deletes a cluster's Kafka topics; present only while
/// the operator manages them.
pub const TOPICS_FINALIZER: &str = "setlist.dev/kafka-topics";
/// How long a manifest read from the slices' store is reused: pods change
/// often, the slices rarely, and a store should not be asked every second.
const MANIFEST_TTL: Duration = Duration::from_secs(30);
/// A cluster whose parts are all ready is looked at again after this even
/// with nothing happening (level-triggered: drift is found).
const RESYNC: Duration = Duration::from_secs(300);
/// While something is starting or failing: grace periods run out in time.
const WATCHFUL: Duration = Duration::from_secs(5);
/// Status keeps this many replacements.
const RECENT_REPLACEMENTS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the API server refused {what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the cluster's Kafka topics: {0}")]
    Topics(String),
}

fn kube_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

/// An object by kind, namespace and name.
type ObjectKey = (String, String, String);
/// The digest of what was applied, and the object's edit mark after it.
type Applied = (String, String);

/// What every reconcile pass shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    manifests: Mutex<HashMap<String, (Instant, Arc<SliceManifest>)>>,
    /// Per object (kind, namespace, name): the digest of what this process
    /// last applied and the object's edit mark after it, so an unchanged
    /// object is not applied again on every pass.
    applied: Mutex<HashMap<ObjectKey, Applied>>,
    http: ureq::Agent,
}

impl Context {
    pub fn new(client: Client, recorder: Recorder, metrics: Arc<Metrics>) -> Context {
        Context {
            client,
            recorder,
            metrics,
            manifests: Mutex::new(HashMap::new()),
            applied: Mutex::new(HashMap::new()),
            http: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(1)))
                .http_status_as_error(false)
                .build()
                .new_agent(),
        }
    }

    async fn manifest(&self, uri: &str) -> Result<Arc<SliceManifest>, String> {
        if let Some((read, manifest)) = self.manifests.lock().expect("manifest cache").get(uri)
            && read.elapsed() < MANIFEST_TTL
        {
            return Ok(manifest.clone());
        }
        let manifest = Arc::new(read_manifest(uri).await?);
        self.manifests
            .lock()
            .expect("manifest cache")
            .insert(uri.to_string(), (Instant::now(), manifest.clone()));
        Ok(manifest)
    }

    /// `/readyz`'s sentence from a node, which says why it is not ready
    /// (a refused slice, no broker) better than its probe's status code.
    async fn readiness(&self, pod: &Pod) -> Option<String> {
        let ip = pod.status.as_ref()?.pod_ip.clone()?;
        let agent = self.http.clone();
        let url = format!("http://{ip}:{}/readyz", desired::HTTP_PORT);
        tokio::task::spawn_blocking(move || {
            let mut response = agent.get(&url).call().ok()?;
            let text = response
                .body_mut()
                .with_config()
                .limit(4096)
                .read_to_string()
                .ok()?;
            Some(text.trim().to_string())
        })
        .await
        .ok()
        .flatten()
    }
}

/// Reads `manifest.json` where the spec says the slices are.
async fn read_manifest(uri: &str) -> Result<SliceManifest, String> {
    let source = SliceSource::parse(uri).map_err(|e| e.to_string())?;
    match source {
        SliceSource::Local(dir) => {
            let path = dir.join(setlist_service::slices::MANIFEST);
            setlist_core::artifact::read_json(&path).map_err(|e| e.to_string())
        }
        SliceSource::Remote(remote) => {
            let store = remote.open().map_err(|e| e.to_string())?;
            store
                .published_manifest()
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!(
                        "{} does not exist: publish the slices there (`setlist publish --slices DIR --to {uri}`) or correct spec.model.uri",
                        remote.uri(setlist_service::slices::MANIFEST)
                    )
                })
        }
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    context: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let owned =
        || watcher::Config::default().labels(&format!("{}={MANAGER}", desired::MANAGED_BY_LABEL));
    Controller::new(
        scoped::<RecommenderCluster>(&client, namespace),
        watcher::Config::default(),
    )
    .owns(scoped::<StatefulSet>(&client, namespace), owned())
    .owns(scoped::<Deployment>(&client, namespace), owned())
    .owns(scoped::<ConfigMap>(&client, namespace), owned())
    .owns(scoped::<Service>(&client, namespace), owned())
    // Pods belong to the StatefulSets, but the operator decides on
    // them: a pod's change is its cluster's.
    .watches(scoped::<Pod>(&client, namespace), owned(), |pod| {
        let cluster = pod.labels().get(INSTANCE_LABEL)?.clone();
        Some(ObjectRef::new(&cluster).within(&pod.namespace()?))
    })
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, context)
    .for_each(|result| async move {
        if let Err(error) = result {
            tracing::debug!(%error, "reconcile");
        }
    })
    .await;
}

fn error_policy(cluster: Arc<RecommenderCluster>, error: &Error, context: Arc<Context>) -> Action {
    context.metrics.reconcile_error(match error {
        Error::Kube { .. } => "api",
        Error::Topics(_) => "kafka",
    });
    tracing::warn!(cluster = %cluster.name_any(), namespace = ?cluster.namespace(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

pub async fn reconcile(
    cluster: Arc<RecommenderCluster>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&cluster, &context).await;
    context
        .metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(cluster: &RecommenderCluster, context: &Context) -> Result<Action, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let api: Api<RecommenderCluster> = Api::namespaced(context.client.clone(), &namespace);
    let spec = &cluster.spec;

    if cluster.metadata.deletion_timestamp.is_some() {
        // The owned objects go with the cluster (garbage collection); only
        // the topics are outside Kubernetes.
        if has_finalizer(cluster) {
            delete_topics(cluster, context, &namespace).await?;
            set_finalizer(&api, cluster, false).await?;
        }
        return Ok(Action::await_change());
    }

    let manifest = match context.manifest(&spec.model.uri).await {
        Ok(manifest) => manifest,
        Err(message) => {
            let outcome = Outcome::ModelNotReady {
                reason: "SlicesUnreadable",
                message: format!(
                    "the slices' manifest at {} cannot be read: {message}",
                    spec.model.uri
                ),
            };
            write_status(&api, cluster, context, &outcome, None).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let secret_keys = match kafka_secret(cluster, context, &namespace).await? {
        Ok(secret) => secret
            .map(|s| s.into_keys().collect::<Vec<String>>())
            .unwrap_or_default(),
        Err(message) => {
            let outcome = Outcome::Invalid {
                reason: "KafkaSecretMissing",
                message,
            };
            write_status(&api, cluster, context, &outcome, None).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let desired_state = match desired::desired_state(
        cluster,
        &Observed {
            manifest: &manifest,
            kafka_secret_keys: &secret_keys,
        },
    ) {
        Ok(state) => state,
        Err(error) => {
            let message = error.to_string();
            let outcome = match error {
                SpecError::StageCount { .. }
                | SpecError::ShardCount { .. }
                | SpecError::ModelVersion { .. } => Outcome::ModelNotReady {
                    reason: "SlicesDoNotMatch",
                    message,
                },
                _ => Outcome::Invalid {
                    reason: "InvalidSpec",
                    message,
                },
            };
            if !spec.paused {
                publish(
                    context,
                    cluster,
                    EventType::Warning,
                    "SpecRefused",
                    "Refuse",
                    &outcome_message(&outcome),
                    None,
                )
                .await;
            }
            write_status(&api, cluster, context, &outcome, None).await?;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
    };

    let mut history = cluster
        .status
        .as_ref()
        .map(|s| s.replacements.clone())
        .unwrap_or_default();
    let mut held = Vec::new();
    if !spec.paused {
        if spec.kafka.manage_topics != has_finalizer(cluster) {
            set_finalizer(&api, cluster, spec.kafka.manage_topics).await?;
        }
        if spec.kafka.manage_topics {
            ensure_topics(cluster, context, &namespace, &manifest).await?;
        }
        apply_all(cluster, context, &namespace, &desired_state).await?;
    }
    let pods = health_of(context, &cluster_pods(cluster, context, &namespace).await?).await;
    if !spec.paused {
        held = replace_failed(cluster, context, &namespace, &pods, &mut history).await?;
    }
    let parts = observe(cluster, context, &namespace, &pods).await?;
    let settled = parts
        .iter()
        .all(|p| p.ready >= p.workload.replicas && p.rolled_out);
    let outcome = Outcome::Applied {
        model_version: manifest.model_version.clone(),
        parts,
        held,
        paused: spec.paused,
    };
    write_status(&api, cluster, context, &outcome, Some(history)).await?;
    Ok(Action::requeue(if settled { RESYNC } else { WATCHFUL }))
}

fn outcome_message(outcome: &Outcome) -> String {
    match outcome {
        Outcome::ModelNotReady { message, .. } | Outcome::Invalid { message, .. } => {
            message.clone()
        }
        Outcome::Applied { .. } => String::new(),
    }
}

async fn kafka_secret(
    cluster: &RecommenderCluster,
    context: &Context,
    namespace: &str,
) -> Result<Result<Option<BTreeMap<String, String>>, String>, Error> {
    let Some(secret_name) = &cluster.spec.kafka.client_secret_name else {
        return Ok(Ok(None));
    };
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), namespace);
    let Some(secret) = secrets
        .get_opt(secret_name)
        .await
        .map_err(kube_error(format!("reading Secret {secret_name}")))?
    else {
        return Ok(Err(format!(
            "spec.kafka.clientSecretName names Secret {secret_name}, which does not exist in namespace {namespace}: create it (its keys are librdkafka settings) or remove the field"
        )));
    };
    let values = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .chain(secret.string_data.unwrap_or_default())
        .collect();
    Ok(Ok(Some(values)))
}

/// The operator's own Kafka client settings for a cluster.
async fn kafka_settings(
    cluster: &RecommenderCluster,
    context: &Context,
    namespace: &str,
) -> Result<KafkaSettings, Error> {
    let secret = kafka_secret(cluster, context, namespace)
        .await?
        .map_err(Error::Topics)?
        .unwrap_or_default();
    let overrides: Vec<String> = secret.iter().map(|(k, v)| format!("{k}={v}")).collect();
    KafkaSettings::new(cluster.spec.kafka.bootstrap_servers.clone())
        .with_overrides(&overrides)
        .map_err(|e| Error::Topics(e.to_string()))
}

async fn ensure_topics(
    cluster: &RecommenderCluster,
    context: &Context,
    namespace: &str,
    manifest: &SliceManifest,
) -> Result<(), Error> {
    let spec = &cluster.spec;
    let name = cluster.name_any();
    let wanted = topics::desired_topics(
        namespace,
        &name,
        &manifest.model_version,
        spec.stages.count,
        spec.kafka.topic_partitions,
        spec.dispatcher.replicas,
    )
    .map_err(|e| Error::Topics(e.to_string()))?;
    let admin = topics::TopicAdmin::new(&kafka_settings(cluster, context, namespace).await?)
        .map_err(|e| Error::Topics(e.to_string()))?;
    let prefix =
        topics::cluster_prefix(namespace, &name).map_err(|e| Error::Topics(e.to_string()))?;
    let existing = admin
        .existing(&prefix)
        .await
        .map_err(|e| Error::Topics(e.to_string()))?;
    let plan = topics::plan_topics(&wanted, &existing, &prefix);
    if plan.changes_nothing() {
        return Ok(());
    }
    let report = admin
        .apply(&plan, spec.kafka.replication_factor)
        .await
        .map_err(|e| Error::Topics(e.to_string()))?;
    let mut said = Vec::new();
    if !report.created.is_empty() {
        said.push(format!("created {}", report.created.join(", ")));
    }
    for grow in &report.grown {
        said.push(format!(
            "grew {} from {} to {} partitions",
            grow.name, grow.from, grow.to
        ));
    }
    if said.is_empty() {
        return Ok(());
    }
    publish(
        context,
        cluster,
        EventType::Normal,
        "TopicsApplied",
        "ApplyTopics",
        &said.join("; "),
        None,
    )
    .await;
    Ok(())
}

async fn delete_topics(
    cluster: &RecommenderCluster,
    context: &Context,
    namespace: &str,
) -> Result<(), Error> {
    let name = cluster.name_any();
    let admin = topics::TopicAdmin::new(&kafka_settings(cluster, context, namespace).await?)
        .map_err(|e| Error::Topics(e.to_string()))?;
    let prefix =
        topics::cluster_prefix(namespace, &name).map_err(|e| Error::Topics(e.to_string()))?;
    let existing = admin
        .existing(&prefix)
        .await
        .map_err(|e| Error::Topics(e.to_string()))?;
    let names: Vec<String> = existing.into_keys().collect();
    if !names.is_empty() {
        admin
            .delete(&names)
            .await
            .map_err(|e| Error::Topics(e.to_string()))?;
    }
    Ok(())
}

fn has_finalizer(cluster: &RecommenderCluster) -> bool {
    cluster.finalizers().iter().any(|f| f == TOPICS_FINALIZER)
}

async fn set_finalizer(
    api: &Api<RecommenderCluster>,
    cluster: &RecommenderCluster,
    on: bool,
) -> Result<(), Error> {
    let mut finalizers: Vec<String> = cluster
        .finalizers()
        .iter()
        .filter(|f| *f != TOPICS_FINALIZER)
        .cloned()
        .collect();
    if on {
        finalizers.push(TOPICS_FINALIZER.to_string());
    }
    // The resourceVersion makes this a no-op when someone changed the list
    // meanwhile; the next pass sees theirs.
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": cluster.resource_version() }
    });
    api.patch(
        &cluster.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(kube_error("the cluster's finalizers"))?;
    Ok(())
}

/// Applies every desired object and deletes the owned ones no longer
/// desired, kind by kind.
async fn apply_all(
    cluster: &RecommenderCluster,
    context: &Context,
    namespace: &str,
    state: &DesiredState,
) -> Result<(), Error> {
    let mut changes = Vec::new();
    apply_kind(
        context,
        namespace,
        cluster,
        &state.service_accounts,
        &mut changes,
    )
    .await?;
    apply_kind(
        context,
        namespace,
        cluster,
        &state.config_maps,
        &mut changes,
    )
    .await?;
    apply_kind(context, namespace, cluster, &state.services, &mut changes).await?;
    apply_kind(
        context,
        namespace,
        cluster,
        &state.stateful_sets,
        &mut changes,
    )
    .await?;
    apply_kind(
        context,
        namespace,
        cluster,
        &state.deployments,
        &mut changes,
    )
    .await?;
    apply_kind(
        context,
        namespace,
        cluster,
        &state.disruption_budgets,
        &mut changes,
    )
    .await?;
    apply_kind(
        context,
        namespace,
        cluster,
        &state.network_policies,
        &mut changes,
    )
    .await?;
    apply_kind(context, namespace, cluster, &state.ingresses, &mut changes).await?;
    for (reason, action, note, object) in changes {
        publish(
            context,
            cluster,
            EventType::Normal,
            reason,
            action,
            &note,
            Some(object),
        )
        .await;
    }
    Ok(())
}

/// What identifies an object's content as someone last wrote it: its
/// generation where it has one (status updates do not move it), else its
/// resourceVersion.
fn edit_mark<K: Resource>(object: &K) -> String {
    match object.meta().generation {
        Some(generation) => format!("g{generation}"),
        None => format!("v{}", object.resource_version().unwrap_or_default()),
    }
}

fn digest<K: Serialize>(object: &K) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(
        serde_json::to_vec(object).expect("an object serialises"),
    ))
}

/// Reason, action, note, and the object it concerns: Events about
/// different objects stay apart (the recorder folds repeats of one reason
/// about one pair of objects into a series).
type Change = (&'static str, &'static str, String, ObjectReference);

fn reference<K: Resource<DynamicType = ()>>(object: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: object.meta().name.clone(),
        namespace: object.meta().namespace.clone(),
        uid: object.meta().uid.clone(),
        ..ObjectReference::default()
    }
}

async fn apply_kind<K>(
    context: &Context,
    namespace: &str,
    cluster: &RecommenderCluster,
    desired: &[K],
    changes: &mut Vec<Change>,
) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(context.client.clone(), namespace);
    let kind = K::kind(&());
    let existing = api
        .list(&ListParams::default().labels(&desired::owned_selector(&cluster.name_any())))
        .await
        .map_err(kube_error(format!("listing {kind}s")))?;
    let versions: BTreeMap<String, String> = existing
        .items
        .iter()
        .map(|o| (o.name_any(), o.resource_version().unwrap_or_default()))
        .collect();
    let params = PatchParams::apply(MANAGER).force();
    for object in desired {
        let name = object.name_any();
        let key = (kind.to_string(), namespace.to_string(), name.clone());
        let digest = digest(object);
        let current = existing.items.iter().find(|o| o.name_any() == name);
        // Applied by this process as it is wanted now, and not changed by
        // anyone since: asking the API server again would change nothing.
        if let Some(current) = current
            && context.applied.lock().expect("applied cache").get(&key)
                == Some(&(digest.clone(), edit_mark(current)))
        {
            continue;
        }
        let applied = api
            .patch(&name, &params, &Patch::Apply(object))
            .await
            .map_err(kube_error(format!("{kind} {name}")))?;
        context
            .applied
            .lock()
            .expect("applied cache")
            .insert(key, (digest, edit_mark(&applied)));
        match versions.get(&name) {
            None => changes.push((
                "Created",
                "Create",
                format!("created {kind} {name}"),
                reference(&applied),
            )),
            Some(before) if applied.resource_version().as_deref() != Some(before) => {
                changes.push((
                    "Updated",
                    "Update",
                    format!("updated {kind} {name}"),
                    reference(&applied),
                ))
            }
            Some(_) => {}
        }
    }
    let wanted: Vec<String> = desired.iter().map(|o| o.name_any()).collect();
    for orphan in existing
        .items
        .iter()
        .filter(|o| !wanted.contains(&o.name_any()))
    {
        // Only what this cluster controls, never an object someone else
        // labelled alike.
        let owned = orphan
            .owner_references()
            .iter()
            .any(|r| r.controller == Some(true) && Some(&r.uid) == cluster.uid().as_ref());
        if !owned {
            continue;
        }
        let name = orphan.name_any();
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => return Err(kube_error(format!("deleting {kind} {name}"))(source)),
        }
        changes.push((
            "Deleted",
            "Delete",
            format!("deleted {kind} {name}: the spec no longer asks for it"),
            reference(orphan),
        ));
    }
    Ok(())
}

/// What each pod of the cluster says, read once a pass; an unready compute
/// node's `/readyz` sentence too (it says why better than the probe's
/// status code).
async fn health_of(context: &Context, pods: &[Pod]) -> Vec<NodeHealth> {
    let mut health = Vec::new();
    for pod in pods {
        let Some(mut node) = NodeHealth::of(pod, PART_LABEL) else {
            continue;
        };
        if !node.ready && !node.terminating && desired::component_of(&node.part) == "compute-node" {
            node.readiness = context
                .readiness(pod)
                .await
                .filter(|text| text.starts_with("not ready"));
        }
        health.push(node);
    }
    health
}

/// Every pod of the cluster, read once a pass.
async fn cluster_pods(
    cluster: &RecommenderCluster,
    context: &Context,
    namespace: &str,
) -> Result<Vec<Pod>, Error> {
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), namespace);
    Ok(pods
        .list(&ListParams::default().labels(&desired::owned_selector(&cluster.name_any())))
        .await
        .map_err(kube_error("listing the cluster's pods"))?
        .items)
}

/// Replaces the failed compute nodes [`replace::decide`] picks; returns the
/// parts whose replacements wait.
async fn replace_failed(
    cluster: &RecommenderCluster,
    context: &Context,
    namespace: &str,
    pods: &[NodeHealth],
    history: &mut ReplacementStatus,
) -> Result<Vec<String>, Error> {
    let nodes: Vec<NodeHealth> = pods
        .iter()
        .filter(|n| desired::component_of(&n.part) == "compute-node")
        .cloned()
        .collect();
    let now = Timestamp::now();
    let grace = Duration::from_secs(cluster.spec.replacement_grace_seconds.into());
    let (decisions, held) = replace::decide(&nodes, &history.recent, now, grace);
    let api: Api<Pod> = Api::namespaced(context.client.clone(), namespace);
    for decision in decisions {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(decision.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&decision.pod, &params).await {
            Ok(_) => {}
            // Gone already, or replaced meanwhile: nothing to do.
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => continue,
            Err(source) => {
                return Err(kube_error(format!("deleting pod {}", decision.pod))(source));
            }
        }
        let reason = decision.reason.as_str();
        context.metrics.replacement(reason);
        let note = format!(
            "replaced {} ({}): {}",
            decision.pod, decision.part, decision.message
        );
        tracing::info!(cluster = %cluster.name_any(), %namespace, pod = %decision.pod, reason, "{note}");
        publish(
            context,
            cluster,
            EventType::Warning,
            "NodeReplaced",
            "Replace",
            &note,
            Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(decision.pod.clone()),
                namespace: Some(namespace.to_string()),
                uid: Some(decision.uid.clone()),
                ..ObjectReference::default()
            }),
        )
        .await;
        history.count += 1;
        history.recent.insert(
            0,
            Replacement {
                pod: decision.pod,
                part: decision.part,
                reason: reason.to_string(),
                message: decision.message,
                at: now.to_string(),
            },
        );
        history.recent.truncate(RECENT_REPLACEMENTS);
    }
    Ok(held.into_iter().map(|h| h.message).collect())
}

/// Each workload's readiness, and what is wrong with its unready pods.
async fn observe(
    cluster: &RecommenderCluster,
    context: &Context,
    namespace: &str,
    pods: &[NodeHealth],
) -> Result<Vec<status::Observed>, Error> {
    let name = cluster.name_any();
    let owned = ListParams::default().labels(&desired::owned_selector(&name));
    let sets: BTreeMap<String, StatefulSet> =
        Api::<StatefulSet>::namespaced(context.client.clone(), namespace)
            .list(&owned)
            .await
            .map_err(kube_error("listing the cluster's StatefulSets"))?
            .items
            .into_iter()
            .map(|s| (s.name_any(), s))
            .collect();
    let deployments: BTreeMap<String, Deployment> =
        Api::<Deployment>::namespaced(context.client.clone(), namespace)
            .list(&owned)
            .await
            .map_err(kube_error("listing the cluster's Deployments"))?
            .items
            .into_iter()
            .map(|d| (d.name_any(), d))
            .collect();
    let mut observed = Vec::new();
    for workload in desired::workloads(&name, &cluster.spec) {
        let (ready, rolled_out) = if workload.part == "search" {
            match deployments.get(&workload.name) {
                Some(d) => {
                    let s = d.status.clone().unwrap_or_default();
                    let current = s.observed_generation == d.metadata.generation
                        && s.updated_replicas.unwrap_or(0) as u32 == workload.replicas
                        && s.replicas.unwrap_or(0) as u32 == workload.replicas;
                    (s.ready_replicas.unwrap_or(0) as u32, current)
                }
                None => (0, false),
            }
        } else {
            match sets.get(&workload.name) {
                Some(set) => {
                    let s = set.status.clone().unwrap_or_default();
                    let current = s.observed_generation == set.metadata.generation
                        && s.updated_replicas.unwrap_or(0) as u32 == workload.replicas
                        && s.current_revision == s.update_revision;
                    (s.ready_replicas.unwrap_or(0) as u32, current)
                }
                None => (0, false),
            }
        };
        let problems = pods
            .iter()
            .filter(|n| n.part == workload.part && !n.ready)
            .map(|n| (n.pod.clone(), n.problem()))
            .collect();
        observed.push(status::Observed {
            workload,
            ready,
            rolled_out,
            problems,
        });
    }
    Ok(observed)
}

async fn write_status(
    api: &Api<RecommenderCluster>,
    cluster: &RecommenderCluster,
    context: &Context,
    outcome: &Outcome,
    history: Option<ReplacementStatus>,
) -> Result<(), Error> {
    let previous = cluster.status.as_ref();
    let history =
        history.unwrap_or_else(|| previous.map(|s| s.replacements.clone()).unwrap_or_default());
    let new: RecommenderClusterStatus = status::status(
        previous,
        cluster.metadata.generation,
        outcome,
        history,
        Timestamp::now(),
    );
    if previous == Some(&new) {
        return Ok(());
    }
    let previous_phase = previous.and_then(|s| s.phase.clone());
    if new.phase != previous_phase
        && let Some(phase) = &new.phase
    {
        let kind = if phase == "Running" || phase == "Progressing" || phase == "Paused" {
            EventType::Normal
        } else {
            EventType::Warning
        };
        let why = new
            .conditions
            .iter()
            .find(|c| {
                (c.type_ == "Degraded" || c.type_ == "ModelReady")
                    && c.status
                        == (if c.type_ == "Degraded" {
                            "True"
                        } else {
                            "False"
                        })
            })
            .map(|c| format!(": {}", c.message))
            .unwrap_or_default();
        publish(
            context,
            cluster,
            kind,
            // One reason per phase: the recorder folds repeats of a reason
            // into a series that keeps its first note.
            phase,
            "Observe",
            &format!("phase {phase}{why}"),
            None,
        )
        .await;
    }
    let patch = serde_json::json!({
        "apiVersion": "setlist.dev/v1alpha1",
        "kind": "RecommenderCluster",
        "status": new,
    });
    api.patch_status(
        &cluster.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(kube_error("the cluster's status"))?;
    Ok(())
}

/// Publishes an Event on the cluster; a failure to do so is logged, never
/// fatal (Events are best effort by design).
async fn publish(
    context: &Context,
    cluster: &RecommenderCluster,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
    about: Option<ObjectReference>,
) {
    // The API server refuses notes over 1 KiB.
    let note: String = note.chars().take(1000).collect();
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: about,
    };
    if let Err(error) = context
        .recorder
        .publish(&event, &cluster.object_ref(&()))
        .await
    {
        tracing::warn!(%error, reason, "cannot publish an Event");
    }
}

#[cfg(test)]
mod tests {
    //! The reconcile shell against a fake API server (`tower-test`): fast
    //! checks of which requests a pass makes. The real API server tests in
    //! `tests/tests/operator*.rs` are the proof.

    use super::*;
    use crate::crd::RecommenderClusterSpec;
    use http::{Request, Response};
    use kube::client::Body;
    use kube::runtime::events::Reporter;
    use setlist_core::plan::PartitionPlan;
    use setlist_core::shape::ModelConfig;
    use setlist_core::slice::{FORMAT_VERSION, SLICES_FORMAT};
    use tower_test::mock;

    fn slices(dir: &std::path::Path, stages: u32) -> String {
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
            model_version: "v7".into(),
            plan: PartitionPlan::new(&config, stages, 2).unwrap(),
            config,
            slices: Vec::new(),
            catalogue_sha256: String::new(),
        };
        std::fs::write(
            dir.join("manifest.json"),
            serde_json::to_string(&manifest).unwrap(),
        )
        .unwrap();
        format!("file://{}", dir.display())
    }

    fn cluster(uri: &str) -> RecommenderCluster {
        let spec: RecommenderClusterSpec = serde_yaml::from_str(&format!(
            "model: {{ uri: '{uri}' }}\nstages: {{ count: 3 }}\noutputShards: {{ count: 2 }}\nkafka: {{ bootstrapServers: 'k:9092' }}\n"
        ))
        .unwrap();
        let mut cluster = RecommenderCluster::new("demo", spec);
        cluster.metadata.namespace = Some("music".into());
        cluster.metadata.uid = Some("u-1".into());
        cluster.metadata.generation = Some(4);
        cluster
    }

    fn context(client: Client) -> Arc<Context> {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "setlist-operator".into(),
                instance: None,
            },
        );
        Arc::new(Context::new(client, recorder, Arc::new(Metrics::new())))
    }

    /// Answers every request with its own body (what a create returns, near
    /// enough), a status write with the cluster, and records method, path
    /// and body.
    async fn serve(
        mut handle: mock::Handle<Request<Body>, Response<Body>>,
        requests: usize,
        cluster: RecommenderCluster,
    ) -> Vec<(String, String, serde_json::Value)> {
        let mut seen = Vec::new();
        for _ in 0..requests {
            let Some((request, send)) = handle.next_request().await else {
                break;
            };
            let method = request.method().to_string();
            let path = request.uri().path().to_string();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let reply = if path.ends_with("/status") {
                serde_json::to_vec(&cluster).unwrap()
            } else {
                bytes.to_vec()
            };
            send.send_response(Response::builder().body(Body::from(reply)).unwrap());
            seen.push((method, path, body));
        }
        seen
    }

    #[tokio::test]
    async fn slices_that_do_not_match_touch_nothing_but_status_and_an_event() {
        let dir = tempfile::tempdir().unwrap();
        let uri = slices(dir.path(), 2);
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let server = tokio::spawn(serve(handle, 3, cluster(&uri)));
        let action = reconcile(Arc::new(cluster(&uri)), context(client))
            .await
            .unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(60)));
        let seen = server.await.unwrap();
        let calls: Vec<(&str, &str)> = seen
            .iter()
            .map(|(m, p, _)| (m.as_str(), p.as_str()))
            .collect();
        assert_eq!(
            calls,
            [
                ("POST", "/apis/events.k8s.io/v1/namespaces/music/events"),
                ("POST", "/apis/events.k8s.io/v1/namespaces/music/events"),
                (
                    "PATCH",
                    "/apis/setlist.dev/v1alpha1/namespaces/music/recommenderclusters/demo/status"
                ),
            ]
        );
        let event = &seen[0].2;
        assert_eq!(event["reason"], "SpecRefused");
        assert!(
            event["note"]
                .as_str()
                .unwrap()
                .contains("set stages.count to 2"),
            "{event}"
        );
        assert_eq!(seen[1].2["reason"], "ModelNotReady", "the phase it enters");
        let status = &seen[2].2["status"];
        assert_eq!(status["observedGeneration"], 4);
        assert_eq!(status["phase"], "ModelNotReady");
        let model = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "ModelReady")
            .unwrap();
        assert_eq!(model["status"], "False");
        assert_eq!(model["reason"], "SlicesDoNotMatch");
    }

    #[tokio::test]
    async fn unreadable_slices_say_where_they_were_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("file://{}/nothing-here", dir.path().display());
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(serve(handle, 2, cluster(&uri)));
        reconcile(
            Arc::new(cluster(&uri)),
            context(Client::new(service, "default")),
        )
        .await
        .unwrap();
        let seen = server.await.unwrap();
        assert_eq!(seen.len(), 2, "only the phase's Event and status: {seen:?}");
        assert!(seen[0].1.ends_with("/events"));
        let status = &seen[1].2["status"];
        let model = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "ModelReady")
            .unwrap();
        assert_eq!(model["reason"], "SlicesUnreadable");
        assert!(
            model["message"].as_str().unwrap().contains("nothing-here"),
            "{model}"
        );
    }
}
