//! The `RecommenderCluster` resource (`setlist.dev/v1alpha1`): what a
//! platform engineer writes, and the status the operator reports back.
//!
//! The schema carries the bounds and defaults a person reads in
//! `kubectl explain`; invariants across fields are CEL rules the API server
//! checks, so a spec that cannot work is refused at `kubectl apply` with a
//! sentence, not discovered later by the operator.

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A partitioned next-song recommender: compute nodes holding one slice
/// each, a dispatcher, and the listener's search API, over Kafka.
// Each printer column repeats `type_ = …`: several columns, not one
// attribute given twice, which is what this lint takes them for.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "setlist.dev",
    version = "v1alpha1",
    kind = "RecommenderCluster",
    namespaced,
    status = "RecommenderClusterStatus",
    shortname = "rcl",
    category = "setlist",
    doc = "A partitioned next-song recommender: compute nodes holding one model slice each, a dispatcher and a search API, over Kafka.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.readyParts",
        description = "Parts (stages and shards) with every replica ready"
    ),
    printcolumn(
        name = "Model",
        type_ = "string",
        json_path = ".status.modelVersion",
        description = "The model version served"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.stages.replicas <= self.kafka.topicPartitions").message("stages.replicas must be at most kafka.topicPartitions: each replica of a stage needs a partition of its topic, or it idles"),
    validation = Rule::new("self.outputShards.replicas <= self.kafka.topicPartitions").message("outputShards.replicas must be at most kafka.topicPartitions: each replica of a shard needs a partition of its topic, or it idles"),
)]
#[serde(rename_all = "camelCase")]
pub struct RecommenderClusterSpec {
    pub model: ModelSpec,
    /// The pipeline stages: how many (the model's layers are split across
    /// them by the partition plan) and how each runs.
    pub stages: PartSpec,
    /// The output projection, split by song range into shards.
    pub output_shards: PartSpec,
    #[serde(default)]
    pub dispatcher: DispatcherSpec,
    #[serde(default)]
    pub search_api: SearchApiSpec,
    pub kafka: KafkaSpec,
    #[serde(default)]
    pub images: ImagesSpec,
    /// Where the cluster's pods may run (every part alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementSpec>,
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    #[serde(default)]
    pub logging: LoggingSpec,
    /// Where the processes export their spans (OpenTelemetry, OTLP over
    /// HTTP); none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
    /// Stop every change to the cluster's objects (status is still written).
    #[serde(default)]
    pub paused: bool,
    /// How long a compute node may stay unready before it is replaced.
    #[serde(default = "default_grace")]
    #[schemars(range(min = 10, max = 3600))]
    pub replacement_grace_seconds: u32,
}

fn default_grace() -> u32 {
    120
}

/// Where the model's slices are, as `setlist slice` wrote and `setlist
/// publish` uploaded them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// The slices directory: `s3://`, `gs://`, `az://`, `http(s)://`, or
    /// `file://` on a volume every node mounts.
    #[schemars(regex(pattern = r"^(s3|gs|az|https?|file)://.+"))]
    pub uri: String,
    /// The model version the slices must be; others are refused
    /// (`ModelReady=False`). Empty: whatever the manifest says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One kind of part: pipeline stages or output shards.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PartSpec {
    /// How many: must match the slices' plan.
    #[schemars(range(min = 1, max = 64))]
    pub count: u32,
    /// Compute nodes per part, sharing its topic as one consumer group.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub replicas: u32,
    /// libtorch threads per node; give each node as many as its cores.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub threads: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn one() -> u32 {
    1
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DispatcherSpec {
    /// Each replica reads its own partition of the results topic.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub replicas: u32,
    /// The deadline of a request that names none.
    #[serde(default = "default_deadline")]
    #[schemars(range(min = 10, max = 60000))]
    pub deadline_ms: u64,
    /// Bytes of recent answers kept per replica (0: no cache).
    #[serde(default = "default_cache")]
    pub cache_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_deadline() -> u64 {
    1_000
}

fn default_cache() -> u64 {
    64 << 20
}

impl Default for DispatcherSpec {
    fn default() -> Self {
        DispatcherSpec {
            replicas: 1,
            deadline_ms: default_deadline(),
            cache_bytes: default_cache(),
            resources: None,
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SearchApiSpec {
    /// 0: no search API (the dispatcher alone serves recommendations).
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 64))]
    pub replicas: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Expose the listener's page through an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
}

impl Default for SearchApiSpec {
    fn default() -> Self {
        SearchApiSpec {
            replicas: 1,
            resources: None,
            ingress: None,
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// A TLS Secret for the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
}

/// Node selection for every pod of the cluster, as in a pod spec.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

/// Who may reach the cluster's pods: the search API from anywhere, the
/// dispatcher from the search API (and monitoring), compute nodes' HTTP
/// ports (health and metrics) from monitoring and the operator (pods labelled
/// `app.kubernetes.io/name: setlist-operator`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Write the NetworkPolicies (they take effect where the cluster's
    /// network plugin enforces them).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The namespaces monitoring scrapes from.
    #[serde(default = "monitoring_namespaces")]
    pub monitoring_namespace_selector: LabelSelector,
}

fn monitoring_namespaces() -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            "monitoring".to_string(),
        )])),
        match_expressions: None,
    }
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        NetworkPolicySpec {
            enabled: true,
            monitoring_namespace_selector: monitoring_namespaces(),
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// `host:port[,host:port…]`.
    #[schemars(length(min = 1))]
    pub bootstrap_servers: String,
    /// Partitions of each stage and shard topic: at least the replicas of
    /// any part (more leave room to scale without touching the topics).
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 1024))]
    pub topic_partitions: u32,
    #[serde(default = "one_u16")]
    #[schemars(range(min = 1, max = 5))]
    pub replication_factor: u16,
    /// Create and grow the cluster's topics through the Kafka admin API
    /// (and delete them with the cluster).
    #[serde(default = "yes")]
    pub manage_topics: bool,
    /// A Secret whose keys are librdkafka settings (TLS, SASL), given to
    /// every process as `--kafka-set KEY=VALUE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_name: Option<String>,
    /// Give each compute node its pod name as a static group identity
    /// (KIP-345): a restarted node takes its partitions back at once. Turn
    /// off for brokers that mishandle static members.
    #[serde(default = "yes")]
    pub static_membership: bool,
    /// How long the broker waits for a silent node before its partitions
    /// move (brokers refuse less than their `group.min.session.timeout.ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000, max = 300000))]
    pub session_timeout_ms: Option<u32>,
}

fn default_partitions() -> u32 {
    16
}

fn one_u16() -> u16 {
    1
}

fn yes() -> bool {
    true
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImagesSpec {
    #[serde(default = "default_node_image")]
    pub node: String,
    #[serde(default = "default_dispatcher_image")]
    pub dispatcher: String,
    #[serde(default = "default_search_image")]
    pub search: String,
    #[serde(default)]
    pub pull_policy: PullPolicy,
}

const IMAGE_TAG: &str = env!("CARGO_PKG_VERSION");

fn default_node_image() -> String {
    format!("ghcr.io/setlist-dev/setlist-node:{IMAGE_TAG}")
}

fn default_dispatcher_image() -> String {
    format!("ghcr.io/setlist-dev/setlist-dispatcher:{IMAGE_TAG}")
}

fn default_search_image() -> String {
    format!("ghcr.io/setlist-dev/setlist-search:{IMAGE_TAG}")
}

/// What every process of the cluster logs, and how. A change rolls the
/// pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoggingSpec {
    /// `RUST_LOG` of every process: a level or per-module directives.
    /// `info,setlist_search=debug,setlist_dispatcher=debug,setlist_node=debug`
    /// logs each request, under its id, in every process it passes.
    #[serde(default = "default_log_level")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[A-Za-z0-9_:=,.\-]+$"))]
    pub level: String,
    /// `json` (one object per line, for a log collector) or `text`.
    #[serde(default)]
    pub format: LogFormat,
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for LoggingSpec {
    fn default() -> Self {
        LoggingSpec {
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

impl LogFormat {
    /// The value of the processes' `SETLIST_LOG_FORMAT`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        }
    }
}

/// An OTLP/HTTP collector every process sends its spans to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    /// The collector's base URL, e.g. `http://otel-collector.monitoring:4318`
    /// (`/v1/traces` is added).
    #[schemars(length(max = 512), regex(pattern = r"^https?://[^\s]+$"))]
    pub otlp_endpoint: String,
    #[serde(default)]
    pub protocol: OtlpProtocol,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
}

impl OtlpProtocol {
    /// The value of `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::HttpJson => "http/json",
        }
    }
}

/// When the kubelet pulls the images.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

impl Default for ImagesSpec {
    fn default() -> Self {
        ImagesSpec {
            node: default_node_image(),
            dispatcher: default_dispatcher_image(),
            search: default_search_image(),
            pull_policy: PullPolicy::default(),
        }
    }
}

/// What the operator saw and did, for `kubectl get` and `kubectl describe`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecommenderClusterStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Running`, `Progressing`, `Degraded`, `ModelNotReady` or `Paused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `Available`, `Progressing`, `Degraded`, `ModelReady`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The model version the slices hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// "ready/desired" over the parts, e.g. "5/5".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_parts: Option<String>,
    #[serde(default)]
    pub parts: Vec<PartStatus>,
    #[serde(default)]
    pub replacements: ReplacementStatus,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PartStatus {
    /// `stage-K`, `shard-S`, `dispatcher` or `search`.
    pub part: String,
    pub ready: u32,
    pub desired: u32,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplacementStatus {
    /// Compute nodes replaced since the cluster was created.
    #[serde(default)]
    pub count: u64,
    /// The latest replacements, newest first (at most 10).
    #[serde(default)]
    pub recent: Vec<Replacement>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Replacement {
    pub pod: String,
    pub part: String,
    /// `CrashLoop`, `Unready` or `SliceMismatch`.
    pub reason: String,
    pub message: String,
    /// RFC 3339.
    pub at: String,
}
