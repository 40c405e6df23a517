//! Every object a `RecommenderCluster` needs, computed from its spec and the
//! slices' manifest alone: no I/O, so each decision is tested directly and
//! the reconciler only applies what this returns.
//!
//! The shape, and why:
//! - Compute nodes run as one **StatefulSet per part** (stage or output
//!   shard): a pod keeps its name across restarts and replacements, and the
//!   name is its Kafka static group identity, so a replaced node takes its
//!   partitions back without a rebalance.
//! - The **dispatcher** is a StatefulSet too: replica `i` reads partition
//!   `i` of the results topic, from the pod-index label the StatefulSet
//!   controller puts on each pod.
//! - The **search API** is stateless: a Deployment.
//! - Each process reads a YAML file from one ConfigMap; the file's hash is
//!   a pod-template annotation, so a change to it rolls the pods.
//! - Every object carries the `app.kubernetes.io/*` labels and is owned by
//!   the cluster, so deleting the cluster deletes all of it and a tree view
//!   (Kubeview, `kubectl tree`) shows one root.

use crate::crd::{PartSpec, RecommenderCluster, RecommenderClusterSpec};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use setlist_core::slice::{Part, SliceManifest};
use setlist_core::topics::{TopicError, Topics};

/// The operator's name in labels and as its server-side-apply field manager.
pub const MANAGER: &str = "setlist-operator";
/// Where every process listens for HTTP (API, health, metrics).
pub const HTTP_PORT: i32 = 8080;
/// The label a StatefulSet puts on each pod with its ordinal.
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// Labels every object of a cluster has; the operator finds what it owns by
/// `instance` and `managed-by`.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Which part a workload or pod is: `stage-K`, `shard-S`, `dispatcher`,
/// `search`.
pub const PART_LABEL: &str = "setlist.dev/part";
/// Where the process configuration is mounted in every pod.
const CONFIG_DIR: &str = "/etc/setlist";
/// An emptyDir for fetched slices and the search index.
const CACHE_DIR: &str = "/var/cache/setlist";
/// The longest cluster name whose objects' names all fit: pod names are
/// label values (at most 63 bytes), and the longest is
/// `<name>-dispatcher-<ordinal>` or `<name>-shard-<s>-<ordinal>`.
pub const MAX_NAME_BYTES: usize = 40;
/// A non-root user the images run as (distroless's `nonroot`).
const RUN_AS: i64 = 65532;

/// Why a spec cannot be turned into objects; each says what to change.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error(
        "spec.stages.count is {spec} but the slices at {uri} (model {version}) are cut into {slices} stages: set stages.count to {slices}, or publish slices cut into {spec} (`setlist slice --stages {spec}`)"
    )]
    StageCount {
        spec: u32,
        slices: usize,
        uri: String,
        version: String,
    },
    #[error(
        "spec.outputShards.count is {spec} but the slices at {uri} (model {version}) have {slices} output shards: set outputShards.count to {slices}, or publish slices cut into {spec} (`setlist slice --output-shards {spec}`)"
    )]
    ShardCount {
        spec: u32,
        slices: usize,
        uri: String,
        version: String,
    },
    #[error(
        "spec.model.version is {spec} but the slices at {uri} are model {slices}: publish version {spec} there, or point model.uri at it, or set model.version to {slices}"
    )]
    ModelVersion {
        spec: String,
        slices: String,
        uri: String,
    },
    #[error(
        "the cluster's name {name:?} is {bytes} bytes; at most {MAX_NAME_BYTES} leave room for its pods' names: recreate it under a shorter name"
    )]
    NameTooLong { name: String, bytes: usize },
    #[error("the cluster has no {0}: it was not read from the API server")]
    Metadata(&'static str),
    #[error("the cluster's Kafka topic names: {0}")]
    Topics(#[from] TopicError),
}

/// What the operator read besides the spec.
pub struct Observed<'a> {
    pub manifest: &'a SliceManifest,
    /// The keys of `kafka.clientSecretName`'s Secret (each becomes a
    /// librdkafka setting), when the spec names one.
    pub kafka_secret_keys: &'a [String],
}

/// Every object the cluster should have, by kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredState {
    pub config_maps: Vec<ConfigMap>,
    pub service_accounts: Vec<ServiceAccount>,
    pub services: Vec<Service>,
    pub stateful_sets: Vec<StatefulSet>,
    pub deployments: Vec<Deployment>,
    pub disruption_budgets: Vec<PodDisruptionBudget>,
    pub network_policies: Vec<NetworkPolicy>,
    pub ingresses: Vec<Ingress>,
}

impl DesiredState {
    pub fn len(&self) -> usize {
        self.config_maps.len()
            + self.service_accounts.len()
            + self.services.len()
            + self.stateful_sets.len()
            + self.deployments.len()
            + self.disruption_budgets.len()
            + self.network_policies.len()
            + self.ingresses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One workload of the cluster and how many pods it should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// `stage-K`, `shard-S`, `dispatcher` or `search`.
    pub part: String,
    /// The StatefulSet's or Deployment's name.
    pub name: String,
    pub replicas: u32,
    /// A compute node: the operator replaces its failed pods.
    pub compute: bool,
}

/// The workloads a spec asks for, in pipeline order.
pub fn workloads(cluster: &str, spec: &RecommenderClusterSpec) -> Vec<Workload> {
    let compute = (0..spec.stages.count)
        .map(|k| (Part::Stage(k), spec.stages.replicas))
        .chain(
            (0..spec.output_shards.count)
                .map(|s| (Part::OutputShard(s), spec.output_shards.replicas)),
        )
        .map(|(part, replicas)| Workload {
            part: part.to_string(),
            name: format!("{cluster}-{part}"),
            replicas,
            compute: true,
        });
    let serving = [
        ("dispatcher", spec.dispatcher.replicas),
        ("search", spec.search_api.replicas),
    ]
    .into_iter()
    .filter(|(_, replicas)| *replicas > 0)
    .map(|(part, replicas)| Workload {
        part: part.to_string(),
        name: format!("{cluster}-{part}"),
        replicas,
        compute: false,
    });
    compute.chain(serving).collect()
}

/// Checks the spec against the slices it names: the stage and shard counts
/// are the plan's, the version is the one asked for.
pub fn check_model(
    spec: &RecommenderClusterSpec,
    manifest: &SliceManifest,
) -> Result<(), SpecError> {
    let uri = || spec.model.uri.clone();
    if let Some(version) = &spec.model.version
        && *version != manifest.model_version
    {
        return Err(SpecError::ModelVersion {
            spec: version.clone(),
            slices: manifest.model_version.clone(),
            uri: uri(),
        });
    }
    if spec.stages.count as usize != manifest.plan.stages.len() {
        return Err(SpecError::StageCount {
            spec: spec.stages.count,
            slices: manifest.plan.stages.len(),
            uri: uri(),
            version: manifest.model_version.clone(),
        });
    }
    if spec.output_shards.count as usize != manifest.plan.output_shards.len() {
        return Err(SpecError::ShardCount {
            spec: spec.output_shards.count,
            slices: manifest.plan.output_shards.len(),
            uri: uri(),
            version: manifest.model_version.clone(),
        });
    }
    Ok(())
}

/// Every object `cluster` should have.
pub fn desired_state(
    cluster: &RecommenderCluster,
    observed: &Observed,
) -> Result<DesiredState, SpecError> {
    let name = cluster
        .metadata
        .name
        .as_deref()
        .ok_or(SpecError::Metadata("name"))?;
    let namespace = cluster
        .metadata
        .namespace
        .as_deref()
        .ok_or(SpecError::Metadata("namespace"))?;
    let uid = cluster
        .metadata
        .uid
        .as_deref()
        .ok_or(SpecError::Metadata("uid"))?;
    if name.len() > MAX_NAME_BYTES {
        return Err(SpecError::NameTooLong {
            name: name.to_string(),
            bytes: name.len(),
        });
    }
    let spec = &cluster.spec;
    let manifest = observed.manifest;
    check_model(spec, manifest)?;
    // Refuses names Kafka would refuse, before any pod tries them.
    Topics::new(namespace, name, &manifest.model_version)?;

    let ctx = Context {
        name,
        namespace,
        spec,
        owner: OwnerReference {
            api_version: "setlist.dev/v1alpha1".into(),
            kind: "RecommenderCluster".into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
        model_version: &manifest.model_version,
        kafka_secret_keys: observed.kafka_secret_keys,
    };
    let config = ctx.config_map(manifest);
    let config_hash = {
        use sha2::Digest;
        let data = serde_json::to_vec(&config.data).expect("a ConfigMap's data serialises");
        hex::encode(sha2::Sha256::digest(data))
    };
    let mut state = DesiredState {
        service_accounts: vec![ctx.service_account()],
        services: vec![ctx.nodes_service()],
        config_maps: vec![config],
        ..DesiredState::default()
    };
    for workload in workloads(name, spec) {
        state
            .disruption_budgets
            .push(ctx.disruption_budget(&workload));
        match workload.part.as_str() {
            "dispatcher" => {
                state
                    .stateful_sets
                    .push(ctx.dispatcher(&workload, &config_hash));
                state
                    .services
                    .push(ctx.http_service(&workload.name, "dispatcher"));
            }
            "search" => {
                state.deployments.push(ctx.search(&workload, &config_hash));
                state
                    .services
                    .push(ctx.http_service(&workload.name, "search"));
                if let Some(ingress) = ctx.ingress(&workload.name) {
                    state.ingresses.push(ingress);
                }
            }
            _ => {
                let part_spec = if workload.part.starts_with("stage-") {
                    &spec.stages
                } else {
                    &spec.output_shards
                };
                state
                    .stateful_sets
                    .push(ctx.compute_node(&workload, part_spec, &config_hash));
            }
        }
    }
    if spec.network_policy.enabled {
        state.network_policies = ctx.network_policies();
    }
    Ok(state)
}

struct Context<'a> {
    name: &'a str,
    namespace: &'a str,
    spec: &'a RecommenderClusterSpec,
    owner: OwnerReference,
    model_version: &'a str,
    kafka_secret_keys: &'a [String],
}

/// Builds a typed object from its JSON: objects read here as they do in
/// YAML. A mismatch is a bug in this file, caught by its tests.
fn object<T: DeserializeOwned>(value: Value) -> T {
    match serde_json::from_value(value) {
        Ok(object) => object,
        Err(error) => panic!("the operator built an object its own type refuses: {error}"),
    }
}

impl Context<'_> {
    /// The labels that pick a part's pods (a workload's selector; never
    /// changed once created, as Kubernetes requires).
    fn selector(&self, part: &str) -> Value {
        json!({ INSTANCE_LABEL: self.name, PART_LABEL: part })
    }

    fn labels(&self, component: &str, part: Option<&str>) -> Value {
        let mut labels = json!({
            "app.kubernetes.io/name": "setlist",
            INSTANCE_LABEL: self.name,
            COMPONENT_LABEL: component,
            "app.kubernetes.io/part-of": "setlist",
            MANAGED_BY_LABEL: MANAGER,
            "app.kubernetes.io/version": env!("CARGO_PKG_VERSION"),
        });
        if let Some(part) = part {
            labels[PART_LABEL] = json!(part);
        }
        labels
    }

    fn metadata(&self, name: &str, component: &str, part: Option<&str>) -> Value {
        json!({
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(component, part),
            "ownerReferences": [self.owner],
        })
    }

    fn config_map(&self, manifest: &SliceManifest) -> ConfigMap {
        let spec = self.spec;
        let kafka = &spec.kafka;
        // Shared by every process: where the slices are and which Kafka
        // topics are theirs.
        let common = json!({
            "slices": spec.model.uri,
            "slice_cache": format!("{CACHE_DIR}/slices"),
            "model_version": self.model_version,
            "kafka": kafka.bootstrap_servers,
            "namespace": self.namespace,
            "cluster": self.name,
            "listen": format!("0.0.0.0:{HTTP_PORT}"),
        });
        let with = |extra: Value| {
            let mut file = common.clone();
            for (key, value) in extra.as_object().expect("an object") {
                file[key] = value.clone();
            }
            serde_yaml::to_string(&file).expect("a process configuration serialises")
        };
        let mut node = json!({});
        if let Some(timeout) = kafka.session_timeout_ms {
            node["session_timeout_ms"] = json!(timeout);
        }
        let dispatcher = json!({
            "default_deadline_ms": spec.dispatcher.deadline_ms,
            "cache_bytes": spec.dispatcher.cache_bytes,
        });
        let search = json!({
            "index_dir": format!("{CACHE_DIR}/index"),
            "dispatcher": format!("http://{}-dispatcher:{HTTP_PORT}", self.name),
            "deadline_ms": spec.dispatcher.deadline_ms,
            // The search API waits for the dispatcher's answer a little
            // longer than the deadline the answer is due by (it refuses
            // less).
            "dispatcher_timeout_ms": spec.dispatcher.deadline_ms + 500,
        });
        let plan = serde_json::to_string_pretty(&json!({
            "model_version": manifest.model_version,
            "plan": manifest.plan,
        }))
        .expect("the plan serialises");
        object(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": self.metadata(&format!("{}-config", self.name), "config", None),
            "data": {
                "node.yaml": with(node),
                "dispatcher.yaml": with(dispatcher),
                "search.yaml": with(search),
                "plan.json": plan,
            },
        }))
    }

    fn service_account(&self) -> ServiceAccount {
        object(json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": self.metadata(self.name, "workload-identity", None),
            // Nothing in a Setlist pod talks to the API server.
            "automountServiceAccountToken": false,
        }))
    }

    /// The compute nodes' headless Service: the StatefulSets' governing
    /// service, and what monitoring discovers nodes through.
    fn nodes_service(&self) -> Service {
        object(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self.metadata(&format!("{}-nodes", self.name), "compute-node", None),
            "spec": {
                "clusterIP": "None",
                "selector": { INSTANCE_LABEL: self.name, COMPONENT_LABEL: "compute-node" },
                "ports": [{ "name": "http", "port": HTTP_PORT, "targetPort": "http" }],
                // Metrics of a node that is still loading its slice.
                "publishNotReadyAddresses": true,
            },
        }))
    }

    fn http_service(&self, name: &str, part: &str) -> Service {
        object(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self.metadata(name, component_of(part), Some(part)),
            "spec": {
                "selector": self.selector(part),
                "ports": [{ "name": "http", "port": HTTP_PORT, "targetPort": "http" }],
            },
        }))
    }

    /// The pod every part shares: security context, config volume, probes,
    /// placement. `extra_env` and `part_resources` make it a part's.
    fn pod_template(
        &self,
        part: &str,
        image: &str,
        config_file: &str,
        extra_env: Vec<Value>,
        resources: Option<&k8s_openapi::api::core::v1::ResourceRequirements>,
        config_hash: &str,
    ) -> Value {
        let component = component_of(part);
        let mut env = extra_env;
        env.extend([
            json!({ "name": "RUST_LOG", "value": self.spec.logging.level }),
            json!({ "name": "SETLIST_LOG_FORMAT", "value": self.spec.logging.format.as_str() }),
        ]);
        if let Some(tracing) = &self.spec.tracing {
            env.extend([
                json!({ "name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": tracing.otlp_endpoint }),
                json!({ "name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": tracing.protocol.as_str() }),
                json!({
                    "name": "OTEL_RESOURCE_ATTRIBUTES",
                    "value": format!(
                        "k8s.namespace.name={},setlist.cluster={},setlist.part={part}",
                        self.namespace, self.name
                    ),
                }),
            ]);
        }
        let mut args = vec![json!(format!("--config={CONFIG_DIR}/{config_file}"))];
        // Secret values stay in the Secret: each key reaches the process
        // through an environment variable the kubelet expands in the args.
        for (i, key) in self.kafka_secret_keys.iter().enumerate() {
            let var = format!("SETLIST_KAFKA_SECRET_{i}");
            env.push(json!({
                "name": var,
                "valueFrom": { "secretKeyRef": {
                    "name": self.spec.kafka.client_secret_name,
                    "key": key,
                }},
            }));
            args.push(json!(format!("--kafka-set={key}=$({var})")));
        }
        let mut pod_spec = json!({
            "serviceAccountName": self.name,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "terminationGracePeriodSeconds": 30,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "fsGroup": RUN_AS,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "containers": [{
                "name": component,
                "image": image,
                "imagePullPolicy": self.spec.images.pull_policy.as_str(),
                "args": args,
                "env": env,
                "ports": [{ "name": "http", "containerPort": HTTP_PORT, "protocol": "TCP" }],
                // Ready only once its slice is loaded and its Kafka clients
                // are up; checked often, so a failed node is seen quickly.
                "readinessProbe": {
                    "httpGet": { "path": "/readyz", "port": "http" },
                    "periodSeconds": 2,
                    "timeoutSeconds": 1,
                    "failureThreshold": 2,
                },
                "livenessProbe": {
                    "httpGet": { "path": "/healthz", "port": "http" },
                    "initialDelaySeconds": 5,
                    "periodSeconds": 10,
                    "timeoutSeconds": 2,
                    "failureThreshold": 3,
                },
                "resources": resources,
                // A container that fails at start says why in its status.
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "privileged": false,
                    "capabilities": { "drop": ["ALL"] },
                },
                "volumeMounts": [
                    { "name": "config", "mountPath": CONFIG_DIR, "readOnly": true },
                    { "name": "cache", "mountPath": CACHE_DIR },
                    { "name": "tmp", "mountPath": "/tmp" },
                ],
            }],
            "volumes": [
                { "name": "config", "configMap": { "name": format!("{}-config", self.name) } },
                { "name": "cache", "emptyDir": {} },
                { "name": "tmp", "emptyDir": { "sizeLimit": "64Mi" } },
            ],
        });
        if resources.is_none() {
            pod_spec["containers"][0]
                .as_object_mut()
                .expect("a container")
                .remove("resources");
        }
        if let Some(placement) = &self.spec.placement {
            if !placement.node_selector.is_empty() {
                pod_spec["nodeSelector"] = json!(placement.node_selector);
            }
            if !placement.tolerations.is_empty() {
                pod_spec["tolerations"] = json!(placement.tolerations);
            }
            if let Some(affinity) = &placement.affinity {
                pod_spec["affinity"] = json!(affinity);
            }
        }
        json!({
            "metadata": {
                "labels": self.labels(component, Some(part)),
                "annotations": {
                    "setlist.dev/config-hash": config_hash,
                    "setlist.dev/model-version": self.model_version,
                },
            },
            "spec": pod_spec,
        })
    }

    fn compute_node(
        &self,
        workload: &Workload,
        part_spec: &PartSpec,
        config_hash: &str,
    ) -> StatefulSet {
        let mut env = vec![
            json!({ "name": "SETLIST_PART", "value": workload.part }),
            json!({ "name": "SETLIST_THREADS", "value": part_spec.threads.to_string() }),
        ];
        if self.spec.kafka.static_membership {
            env.push(json!({
                "name": "SETLIST_INSTANCE_ID",
                "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } },
            }));
        }
        let template = self.pod_template(
            &workload.part,
            &self.spec.images.node,
            "node.yaml",
            env,
            part_spec.resources.as_ref(),
            config_hash,
        );
        self.stateful_set(workload, &format!("{}-nodes", self.name), template)
    }

    fn dispatcher(&self, workload: &Workload, config_hash: &str) -> StatefulSet {
        let env = vec![json!({
            "name": "SETLIST_REPLY_PARTITION",
            "valueFrom": { "fieldRef": {
                "fieldPath": format!("metadata.labels['{POD_INDEX_LABEL}']"),
            }},
        })];
        let template = self.pod_template(
            &workload.part,
            &self.spec.images.dispatcher,
            "dispatcher.yaml",
            env,
            self.spec.dispatcher.resources.as_ref(),
            config_hash,
        );
        self.stateful_set(workload, &workload.name, template)
    }

    fn stateful_set(&self, workload: &Workload, service: &str, template: Value) -> StatefulSet {
        let component = component_of(&workload.part);
        object(json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": self.metadata(&workload.name, component, Some(&workload.part)),
            "spec": {
                "replicas": workload.replicas,
                "serviceName": service,
                "selector": { "matchLabels": self.selector(&workload.part) },
                // Replicas of a part are interchangeable: start them all at
                // once rather than one after another.
                "podManagementPolicy": "Parallel",
                "updateStrategy": { "type": "RollingUpdate" },
                "template": template,
            },
        }))
    }

    fn search(&self, workload: &Workload, config_hash: &str) -> Deployment {
        let template = self.pod_template(
            &workload.part,
            &self.spec.images.search,
            "search.yaml",
            Vec::new(),
            self.spec.search_api.resources.as_ref(),
            config_hash,
        );
        object(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self.metadata(&workload.name, "search-api", Some("search")),
            "spec": {
                "replicas": workload.replicas,
                "selector": { "matchLabels": self.selector("search") },
                "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
                "template": template,
            },
        }))
    }

    /// At most one pod of a part down for a drain or an upgrade of the
    /// machines under it.
    fn disruption_budget(&self, workload: &Workload) -> PodDisruptionBudget {
        let component = component_of(&workload.part);
        object(json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": self.metadata(&workload.name, component, Some(&workload.part)),
            "spec": {
                "maxUnavailable": 1,
                "selector": { "matchLabels": self.selector(&workload.part) },
                // A pod that never became ready may be evicted regardless.
                "unhealthyPodEvictionPolicy": "AlwaysAllow",
            },
        }))
    }

    fn ingress(&self, service: &str) -> Option<Ingress> {
        let spec = self.spec.search_api.ingress.as_ref()?;
        let mut ingress_spec = json!({
            "rules": [{
                "host": spec.host,
                "http": { "paths": [{
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": { "service": { "name": service, "port": { "name": "http" } } },
                }]},
            }],
        });
        if let Some(class) = &spec.class_name {
            ingress_spec["ingressClassName"] = json!(class);
        }
        if let Some(secret) = &spec.tls_secret_name {
            ingress_spec["tls"] = json!([{ "hosts": [spec.host], "secretName": secret }]);
        }
        Some(object(json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": self.metadata(service, "search-api", Some("search")),
            "spec": ingress_spec,
        })))
    }

    /// Deny by default, then open exactly: the search API to anyone, the
    /// dispatcher to the search API and monitoring, nodes to monitoring and
    /// the operator.
    /// Egress stays open: Kafka and the slices' store are outside.
    fn network_policies(&self) -> Vec<NetworkPolicy> {
        let monitoring =
            json!({ "namespaceSelector": self.spec.network_policy.monitoring_namespace_selector });
        let http = json!([{ "protocol": "TCP", "port": "http" }]);
        let policy =
            |suffix: &str, component: &str, pods: Value, from: Option<Value>| -> NetworkPolicy {
                // A policy for one part's pods carries that part's label.
                let part = ["dispatcher", "search"].contains(&suffix).then_some(suffix);
                let mut spec =
                    json!({ "podSelector": { "matchLabels": pods }, "policyTypes": ["Ingress"] });
                if let Some(from) = from {
                    spec["ingress"] = json!([{ "from": from, "ports": http }]);
                }
                object(json!({
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": self.metadata(&format!("{}-{suffix}", self.name), component, part),
                    "spec": spec,
                }))
            };
        let mut policies = vec![
            policy(
                "default-deny",
                "network",
                json!({ INSTANCE_LABEL: self.name }),
                None,
            ),
            policy(
                "compute-nodes",
                "compute-node",
                json!({ INSTANCE_LABEL: self.name, COMPONENT_LABEL: "compute-node" }),
                // The operator reads an unready node's /readyz to learn why.
                Some(json!([monitoring, {
                    "namespaceSelector": {},
                    "podSelector": { "matchLabels": { "app.kubernetes.io/name": MANAGER } },
                }])),
            ),
            policy(
                "dispatcher",
                "dispatcher",
                self.selector("dispatcher"),
                Some(
                    json!([{ "podSelector": { "matchLabels": self.selector("search") } }, monitoring]),
                ),
            ),
        ];
        if self.spec.search_api.replicas > 0 {
            // An empty peer list: from anywhere.
            let mut search = policy("search", "search-api", self.selector("search"), None);
            search.spec.as_mut().expect("a spec").ingress =
                Some(vec![object(json!({ "ports": http }))]);
            policies.push(search);
        }
        policies
    }
}

/// The `app.kubernetes.io/component` of a part.
pub fn component_of(part: &str) -> &'static str {
    match part {
        "dispatcher" => "dispatcher",
        "search" => "search-api",
        _ => "compute-node",
    }
}

/// The cluster's owned objects' common labels, as a selector string.
pub fn owned_selector(cluster: &str) -> String {
    format!("{INSTANCE_LABEL}={cluster},{MANAGED_BY_LABEL}={MANAGER}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::RecommenderClusterSpec;
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use setlist_core::plan::PartitionPlan;
    use setlist_core::shape::ModelConfig;
    use setlist_core::slice::{FORMAT_VERSION, SLICES_FORMAT};

    fn manifest(stages: u32, shards: u32, version: &str) -> SliceManifest {
        let config = ModelConfig {
            catalogue_size: 100,
            embedding_dim: 8,
            hidden_dim: 8,
            lstm_layers: 3,
            max_history: 10,
            residual: false,
        };
        SliceManifest {
            format: SLICES_FORMAT.into(),
            format_version: FORMAT_VERSION,
            model_version: version.into(),
            plan: PartitionPlan::new(&config, stages, shards).unwrap(),
            config,
            slices: Vec::new(),
            catalogue_sha256: String::new(),
        }
    }

    fn cluster(yaml: &str) -> RecommenderCluster {
        let spec: RecommenderClusterSpec = serde_yaml::from_str(yaml).unwrap();
        let mut cluster = RecommenderCluster::new("demo", spec);
        cluster.metadata.namespace = Some("music".into());
        cluster.metadata.uid = Some("0b5c7d1e".into());
        cluster
    }

    const DEMO: &str = "
model: { uri: 'file:///models/demo' }
stages: { count: 3, replicas: 2, threads: 2 }
outputShards: { count: 2 }
kafka: { bootstrapServers: 'kafka:9092' }
";

    fn build(
        cluster: &RecommenderCluster,
        manifest: &SliceManifest,
    ) -> Result<DesiredState, SpecError> {
        desired_state(
            cluster,
            &Observed {
                manifest,
                kafka_secret_keys: &[],
            },
        )
    }

    fn names<
        T: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    >(
        objects: &[T],
    ) -> Vec<String> {
        objects
            .iter()
            .map(|o| o.metadata().name.clone().unwrap())
            .collect()
    }

    fn template(set: &StatefulSet) -> &PodTemplateSpec {
        &set.spec.as_ref().unwrap().template
    }

    fn env(template: &PodTemplateSpec) -> BTreeMap<String, String> {
        template.spec.as_ref().unwrap().containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| {
                let value = e.value.clone().unwrap_or_else(|| {
                    let from = e.value_from.as_ref().unwrap();
                    from.field_ref
                        .as_ref()
                        .map(|f| format!("field:{}", f.field_path))
                        .or_else(|| {
                            from.secret_key_ref
                                .as_ref()
                                .map(|s| format!("secret:{}/{}", s.name, s.key))
                        })
                        .unwrap()
                });
                (e.name.clone(), value)
            })
            .collect()
    }

    use std::collections::BTreeMap;

    #[test]
    fn a_cluster_gets_one_stateful_set_per_part_plus_dispatcher_and_search() {
        let state = build(&cluster(DEMO), &manifest(3, 2, "v4")).unwrap();
        assert_eq!(
            names(&state.stateful_sets),
            [
                "demo-stage-0",
                "demo-stage-1",
                "demo-stage-2",
                "demo-shard-0",
                "demo-shard-1",
                "demo-dispatcher"
            ]
        );
        assert_eq!(names(&state.deployments), ["demo-search"]);
        assert_eq!(
            names(&state.services),
            ["demo-nodes", "demo-dispatcher", "demo-search"]
        );
        assert_eq!(names(&state.config_maps), ["demo-config"]);
        assert_eq!(names(&state.service_accounts), ["demo"]);
        assert_eq!(state.disruption_budgets.len(), 7);
        assert_eq!(
            names(&state.network_policies),
            [
                "demo-default-deny",
                "demo-compute-nodes",
                "demo-dispatcher",
                "demo-search"
            ]
        );
        assert!(state.ingresses.is_empty());
        let replicas: Vec<i32> = state
            .stateful_sets
            .iter()
            .map(|s| s.spec.as_ref().unwrap().replicas.unwrap())
            .collect();
        assert_eq!(replicas, [2, 2, 2, 1, 1, 1]);
    }

    #[test]
    fn every_object_is_owned_by_the_cluster_and_labelled_with_it() {
        let state = build(&cluster(DEMO), &manifest(3, 2, "v4")).unwrap();
        let all: Vec<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta> = state
            .config_maps
            .iter()
            .map(|o| &o.metadata)
            .chain(state.service_accounts.iter().map(|o| &o.metadata))
            .chain(state.services.iter().map(|o| &o.metadata))
            .chain(state.stateful_sets.iter().map(|o| &o.metadata))
            .chain(state.deployments.iter().map(|o| &o.metadata))
            .chain(state.disruption_budgets.iter().map(|o| &o.metadata))
            .chain(state.network_policies.iter().map(|o| &o.metadata))
            .collect();
        assert_eq!(all.len(), state.len());
        for meta in all {
            let name = meta.name.as_deref().unwrap();
            assert_eq!(meta.namespace.as_deref(), Some("music"), "{name}");
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
                ("RecommenderCluster", "demo", "0b5c7d1e")
            );
            assert_eq!(owner.controller, Some(true), "{name}");
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels[INSTANCE_LABEL], "demo", "{name}");
            assert_eq!(labels[MANAGED_BY_LABEL], MANAGER, "{name}");
            assert_eq!(labels["app.kubernetes.io/name"], "setlist", "{name}");
            assert!(labels.contains_key(COMPONENT_LABEL), "{name}");
        }
    }

    #[test]
    fn pods_run_restricted_and_probe_their_health() {
        let state = build(&cluster(DEMO), &manifest(3, 2, "v4")).unwrap();
        let templates = state.stateful_sets.iter().map(template).chain(
            state
                .deployments
                .iter()
                .map(|d| &d.spec.as_ref().unwrap().template),
        );
        for template in templates {
            let pod = template.spec.as_ref().unwrap();
            let security = pod.security_context.as_ref().unwrap();
            assert_eq!(security.run_as_non_root, Some(true));
            assert_eq!(
                security.seccomp_profile.as_ref().unwrap().type_,
                "RuntimeDefault"
            );
            assert_eq!(pod.automount_service_account_token, Some(false));
            let container = &pod.containers[0];
            let security = container.security_context.as_ref().unwrap();
            assert_eq!(security.read_only_root_filesystem, Some(true));
            assert_eq!(security.allow_privilege_escalation, Some(false));
            assert_eq!(
                security.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_string()][..])
            );
            let readiness = container
                .readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap();
            assert_eq!(readiness.path.as_deref(), Some("/readyz"));
            let liveness = container
                .liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap();
            assert_eq!(liveness.path.as_deref(), Some("/healthz"));
            // The selector's labels are on the pods, or the workload is refused.
            let labels = template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
            assert!(labels.contains_key(PART_LABEL));
        }
    }

    #[test]
    fn each_node_knows_its_part_and_identity_and_each_dispatcher_its_reply_partition() {
        let state = build(&cluster(DEMO), &manifest(3, 2, "v4")).unwrap();
        let stage1 = env(template(&state.stateful_sets[1]));
        assert_eq!(stage1["SETLIST_PART"], "stage-1");
        assert_eq!(stage1["SETLIST_THREADS"], "2");
        assert_eq!(stage1["SETLIST_INSTANCE_ID"], "field:metadata.name");
        assert_eq!(
            env(template(&state.stateful_sets[4]))["SETLIST_PART"],
            "shard-1"
        );
        let dispatcher = env(template(&state.stateful_sets[5]));
        assert_eq!(
            dispatcher["SETLIST_REPLY_PARTITION"],
            "field:metadata.labels['apps.kubernetes.io/pod-index']"
        );

        let mut no_static = cluster(DEMO);
        no_static.spec.kafka.static_membership = false;
        let state = build(&no_static, &manifest(3, 2, "v4")).unwrap();
        assert!(!env(template(&state.stateful_sets[0])).contains_key("SETLIST_INSTANCE_ID"));
    }

    #[test]
    fn the_config_map_tells_every_process_the_slices_kafka_and_topics() {
        let state = build(&cluster(DEMO), &manifest(3, 2, "v4")).unwrap();
        let data = state.config_maps[0].data.as_ref().unwrap();
        let node: serde_yaml::Value = serde_yaml::from_str(&data["node.yaml"]).unwrap();
        assert_eq!(node["slices"], "file:///models/demo");
        assert_eq!(node["model_version"], "v4");
        assert_eq!(node["kafka"], "kafka:9092");
        assert_eq!(node["namespace"], "music");
        assert_eq!(node["cluster"], "demo");
        let search: serde_yaml::Value = serde_yaml::from_str(&data["search.yaml"]).unwrap();
        assert_eq!(search["dispatcher"], "http://demo-dispatcher:8080");
        assert!(search["dispatcher_timeout_ms"].as_u64() > search["deadline_ms"].as_u64());
        let dispatcher: serde_yaml::Value = serde_yaml::from_str(&data["dispatcher.yaml"]).unwrap();
        assert_eq!(dispatcher["default_deadline_ms"], 1000);
        let plan: Value = serde_json::from_str(&data["plan.json"]).unwrap();
        assert_eq!(plan["plan"]["stages"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn a_config_change_changes_the_pods_so_they_roll() {
        let hash = |state: &DesiredState| {
            template(&state.stateful_sets[0])
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()["setlist.dev/config-hash"]
                .clone()
        };
        let before = build(&cluster(DEMO), &manifest(3, 2, "v4")).unwrap();
        let mut changed = cluster(DEMO);
        changed.spec.kafka.bootstrap_servers = "kafka-2:9092".into();
        let after = build(&changed, &manifest(3, 2, "v4")).unwrap();
        assert_ne!(hash(&before), hash(&after));
        let again = build(&cluster(DEMO), &manifest(3, 2, "v4")).unwrap();
        assert_eq!(before, again, "the same inputs give the same objects");
    }

    #[test]
    fn scaling_stages_and_replicas_up_and_down_changes_exactly_the_workloads() {
        let mut bigger = cluster(DEMO);
        bigger.spec.stages.count = 4;
        bigger.spec.stages.replicas = 3;
        let state = build(&bigger, &manifest(4, 2, "v4")).unwrap();
        assert_eq!(
            names(&state.stateful_sets),
            [
                "demo-stage-0",
                "demo-stage-1",
                "demo-stage-2",
                "demo-stage-3",
                "demo-shard-0",
                "demo-shard-1",
                "demo-dispatcher"
            ]
        );
        assert_eq!(
            state.stateful_sets[3].spec.as_ref().unwrap().replicas,
            Some(3)
        );

        let mut smaller = cluster(DEMO);
        smaller.spec.stages.count = 1;
        smaller.spec.output_shards.count = 1;
        smaller.spec.search_api.replicas = 0;
        smaller.spec.dispatcher.replicas = 2;
        let state = build(&smaller, &manifest(1, 1, "v4")).unwrap();
        assert_eq!(
            names(&state.stateful_sets),
            ["demo-stage-0", "demo-shard-0", "demo-dispatcher"]
        );
        assert_eq!(
            state.stateful_sets[2].spec.as_ref().unwrap().replicas,
            Some(2)
        );
        assert!(state.deployments.is_empty(), "no search API at 0 replicas");
        assert_eq!(names(&state.services), ["demo-nodes", "demo-dispatcher"]);
        assert!(!names(&state.network_policies).contains(&"demo-search".to_string()));
    }

    #[test]
    fn a_spec_that_does_not_match_the_slices_is_refused_saying_what_to_change() {
        let err = build(&cluster(DEMO), &manifest(2, 2, "v4")).unwrap_err();
        assert!(matches!(
            err,
            SpecError::StageCount {
                spec: 3,
                slices: 2,
                ..
            }
        ));
        assert!(err.to_string().contains("set stages.count to 2"), "{err}");
        let err = build(&cluster(DEMO), &manifest(3, 4, "v4")).unwrap_err();
        assert!(
            err.to_string().contains("set outputShards.count to 4"),
            "{err}"
        );
        let mut pinned = cluster(DEMO);
        pinned.spec.model.version = Some("v5".into());
        let err = build(&pinned, &manifest(3, 2, "v4")).unwrap_err();
        assert!(
            err.to_string().contains(
                "spec.model.version is v5 but the slices at file:///models/demo are model v4"
            ),
            "{err}"
        );
        pinned.spec.model.version = Some("v4".into());
        assert!(build(&pinned, &manifest(3, 2, "v4")).is_ok());
    }

    #[test]
    fn a_model_version_change_reaches_every_process() {
        let state = build(&cluster(DEMO), &manifest(3, 2, "v5")).unwrap();
        let node: serde_yaml::Value =
            serde_yaml::from_str(&state.config_maps[0].data.as_ref().unwrap()["node.yaml"])
                .unwrap();
        assert_eq!(node["model_version"], "v5");
        let annotations = template(&state.stateful_sets[0])
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone()
            .unwrap();
        assert_eq!(annotations["setlist.dev/model-version"], "v5");
    }

    #[test]
    fn every_process_logs_at_the_clusters_level_and_format() {
        let default = build(&cluster(DEMO), &manifest(3, 2, "v5")).unwrap();
        let env_of_all = |state: &DesiredState| {
            let mut all: Vec<BTreeMap<String, String>> = state
                .stateful_sets
                .iter()
                .map(|s| env(template(s)))
                .collect();
            all.extend(
                state
                    .deployments
                    .iter()
                    .map(|d| env(&d.spec.as_ref().unwrap().template)),
            );
            all
        };
        for env in env_of_all(&default) {
            assert_eq!(env["RUST_LOG"], "info");
            assert_eq!(env["SETLIST_LOG_FORMAT"], "json");
        }
        let traced = cluster(&format!(
            "{DEMO}logging: {{ level: 'info,setlist_node=debug', format: text }}"
        ));
        let state = build(&traced, &manifest(3, 2, "v5")).unwrap();
        for env in env_of_all(&state) {
            assert_eq!(env["RUST_LOG"], "info,setlist_node=debug");
            assert_eq!(env["SETLIST_LOG_FORMAT"], "text");
            assert!(!env.contains_key("OTEL_EXPORTER_OTLP_ENDPOINT"));
        }
        let exported = cluster(&format!(
            "{DEMO}tracing: {{ otlpEndpoint: 'http://collector:4318', protocol: http/json }}"
        ));
        let state = build(&exported, &manifest(3, 2, "v5")).unwrap();
        for env in env_of_all(&state) {
            assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://collector:4318");
            assert_eq!(env["OTEL_EXPORTER_OTLP_PROTOCOL"], "http/json");
            assert!(
                env["OTEL_RESOURCE_ATTRIBUTES"]
                    .starts_with("k8s.namespace.name=music,setlist.cluster=demo,setlist.part="),
                "{env:?}"
            );
        }
    }

    #[test]
    fn names_and_versions_kafka_or_kubernetes_would_refuse_are_refused_first() {
        let mut long = cluster(DEMO);
        long.metadata.name = Some("a".repeat(41));
        assert!(matches!(
            build(&long, &manifest(3, 2, "v4")),
            Err(SpecError::NameTooLong { bytes: 41, .. })
        ));
        let err = build(&cluster(DEMO), &manifest(3, 2, "v4/evil")).unwrap_err();
        assert!(matches!(err, SpecError::Topics(_)), "{err}");
    }

    #[test]
    fn kafka_secret_settings_reach_the_processes_without_their_values() {
        let mut with_secret = cluster(DEMO);
        with_secret.spec.kafka.client_secret_name = Some("kafka-client".into());
        let keys = vec!["security.protocol".to_string(), "sasl.password".to_string()];
        let manifest = manifest(3, 2, "v4");
        let state = desired_state(
            &with_secret,
            &Observed {
                manifest: &manifest,
                kafka_secret_keys: &keys,
            },
        )
        .unwrap();
        let template = template(&state.stateful_sets[0]);
        let env = env(template);
        assert_eq!(
            env["SETLIST_KAFKA_SECRET_1"],
            "secret:kafka-client/sasl.password"
        );
        let args = template.spec.as_ref().unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        assert!(
            args.contains(&"--kafka-set=sasl.password=$(SETLIST_KAFKA_SECRET_1)".to_string()),
            "{args:?}"
        );
    }

    #[test]
    fn placement_ingress_and_network_policy_follow_the_spec() {
        let yaml = format!(
            "{DEMO}
placement:
  nodeSelector: {{ pool: music }}
  tolerations: [{{ key: dedicated, operator: Equal, value: music, effect: NoSchedule }}]
searchApi:
  ingress: {{ host: music.example.com, className: nginx, tlsSecretName: music-tls }}
networkPolicy: {{ enabled: false }}
"
        );
        let state = build(&cluster(&yaml), &manifest(3, 2, "v4")).unwrap();
        let pod = template(&state.stateful_sets[0]).spec.as_ref().unwrap();
        assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "music");
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("dedicated")
        );
        let ingress = state.ingresses[0].spec.as_ref().unwrap();
        assert_eq!(ingress.ingress_class_name.as_deref(), Some("nginx"));
        assert_eq!(
            ingress.tls.as_ref().unwrap()[0].secret_name.as_deref(),
            Some("music-tls")
        );
        let backend = ingress.rules.as_ref().unwrap()[0]
            .http
            .as_ref()
            .unwrap()
            .paths[0]
            .backend
            .service
            .clone()
            .unwrap();
        assert_eq!(backend.name, "demo-search");
        assert!(state.network_policies.is_empty());
    }

    #[test]
    fn only_the_search_api_is_open_to_everyone() {
        let state = build(&cluster(DEMO), &manifest(3, 2, "v4")).unwrap();
        let policy = |name: &str| {
            state
                .network_policies
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(name))
                .unwrap()
                .spec
                .clone()
                .unwrap()
        };
        assert!(
            policy("demo-default-deny").ingress.is_none(),
            "deny all by default"
        );
        let search = policy("demo-search").ingress.unwrap();
        assert!(search[0].from.is_none(), "from anywhere");
        let dispatcher = policy("demo-dispatcher").ingress.unwrap();
        let from = dispatcher[0].from.as_ref().unwrap();
        assert_eq!(
            from[0]
                .pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()[PART_LABEL],
            "search"
        );
        assert!(from[1].namespace_selector.is_some(), "and monitoring");
        let nodes = policy("demo-compute-nodes").ingress.unwrap();
        let from = nodes[0].from.as_ref().unwrap();
        assert_eq!(from.len(), 2, "monitoring and the operator only");
        assert!(from[0].namespace_selector.is_some() && from[0].pod_selector.is_none());
        let operator = from[1]
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap();
        assert_eq!(operator["app.kubernetes.io/name"], MANAGER);
    }
}
