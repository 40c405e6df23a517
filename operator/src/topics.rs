//! A cluster's Kafka topics, through the Kafka admin API, when
//! `spec.kafka.manageTopics` is set: created with the partitions the spec
//! asks for, grown when it asks for more, and deleted with the cluster.
//!
//! Design choices, and why:
//! - **Names come from `setlist_core::topics`**, the one function every
//!   component uses, so the operator creates exactly the topics the nodes
//!   and dispatchers read and write.
//! - **Partitions**: a stage topic (and the output shards' input) gets
//!   `kafka.topicPartitions`, at least the replicas of the part reading it,
//!   which the CRD's rules enforce; the results topic one partition per
//!   dispatcher replica, because each replica reads its own reply partition;
//!   interactions and dead-letter one, as `setlist up` makes them: they are
//!   low-volume, and one partition keeps their events in order.
//! - **What to do is a pure function** ([`plan_topics`]) of the desired
//!   topics and the cluster's, so every case (missing, too few, too many,
//!   an old model version's) is a unit test; [`TopicAdmin`] only carries a
//!   plan out.
//! - **Partitions are never taken away**: Kafka cannot shrink a topic, so a
//!   topic with more partitions than asked is reported (`too_many`), not
//!   recreated, which would lose its messages. Extra partitions are harmless
//!   (a consumer group spreads them over its members).
//! - **Obsolete topics are reported, not deleted**: a topic under the
//!   cluster's prefix that the spec no longer asks for (an old model
//!   version's, during a rollout) may still be read by the nodes finishing
//!   it; the caller deletes them once nothing reads them any more. The old
//!   version's `interactions` topic holds listener events, the training data
//!   of the next model: delete it deliberately.
//! - **Idempotent**: a topic that already exists when it is created is
//!   fine, as is one already gone when it is deleted; so two reconciles
//!   racing, or a retry after a timeout, do no harm.
//! - **Every call is bounded** (the admin API's request and operation
//!   timeouts, and a timer around each call), and every failure names the
//!   topic and says what to do, so a status condition can carry the
//!   message as it is.

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use setlist_core::kafka::{KafkaSettings, Role};
use setlist_core::topics::{TopicError, Topics};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A topic and the partitions it should have.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
}

/// A topic with fewer partitions than asked: grown `from` → `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grow {
    pub name: String,
    pub from: u32,
    pub to: u32,
}

/// A topic with more partitions than asked (Kafka cannot remove them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooMany {
    pub name: String,
    pub have: u32,
    pub want: u32,
}

/// What to change to give a cluster its topics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicPlan {
    pub create: Vec<TopicSpec>,
    pub grow: Vec<Grow>,
    /// Reported, never shrunk.
    pub too_many: Vec<TooMany>,
    /// Under the cluster's prefix but not desired; left for the caller.
    pub obsolete: Vec<String>,
}

impl TopicPlan {
    /// Whether [`TopicAdmin::apply`] would change nothing.
    pub fn changes_nothing(&self) -> bool {
        self.create.is_empty() && self.grow.is_empty()
    }
}

/// What [`TopicAdmin::apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicReport {
    pub created: Vec<String>,
    /// Planned for creation but there already (made meanwhile by someone
    /// else, or not yet visible in the metadata the plan was made from).
    pub already_existed: Vec<String>,
    pub grown: Vec<Grow>,
    pub too_many: Vec<TooMany>,
    pub obsolete: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error(transparent)]
    Names(#[from] TopicError),
    #[error("kafka.topicPartitions is 0; give each stage topic at least 1 partition")]
    NoPartitions,
    #[error(
        "cannot make a Kafka admin client for {servers}: {source}; check spec.kafka.bootstrapServers and the settings in spec.kafka.clientSecretName"
    )]
    Client { servers: String, source: KafkaError },
    #[error(
        "the Kafka cluster at {servers} did not answer {action} within {after:?}; check that its brokers are up and reachable from the operator (spec.kafka.bootstrapServers, and TLS/SASL settings in spec.kafka.clientSecretName)"
    )]
    TimedOut {
        servers: String,
        action: &'static str,
        after: Duration,
    },
    #[error(
        "cannot {action} on the Kafka cluster at {servers}: {source}; check that its brokers are up and reachable from the operator (spec.kafka.bootstrapServers, and TLS/SASL settings in spec.kafka.clientSecretName)"
    )]
    Request {
        servers: String,
        action: &'static str,
        source: KafkaError,
    },
    #[error("{}", list(.0))]
    Refused(Vec<TopicFailure>),
}

/// One sentence per kind of refusal, naming every topic it was about, so
/// four topics refused for the same reason read as one refusal, not four.
fn list(failures: &[TopicFailure]) -> String {
    let mut kinds: Vec<(TopicAction, RDKafkaErrorCode, Vec<&TopicFailure>)> = Vec::new();
    for failure in failures {
        match kinds
            .iter_mut()
            .find(|(action, code, _)| *action == failure.action && *code == failure.code)
        {
            Some((_, _, all)) => all.push(failure),
            None => kinds.push((failure.action, failure.code, vec![failure])),
        }
    }
    kinds
        .iter()
        .map(|(action, code, all)| {
            let topics = all
                .iter()
                .map(|f| f.topic_and_ask())
                .collect::<Vec<_>>()
                .join(", ");
            let plural = if all.len() > 1 { "s" } else { "" };
            format!(
                "the Kafka cluster refused to {} topic{plural} {topics}: {code}; {}",
                action.verb(),
                hint(*action, *code)
            )
        })
        .collect::<Vec<_>>()
        .join("; and ")
}

/// What was done to a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicAction {
    Create,
    Grow,
    Delete,
}

/// One topic the brokers refused to create, grow or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFailure {
    pub topic: String,
    pub action: TopicAction,
    pub code: RDKafkaErrorCode,
    /// What was asked, e.g. "to 8 partitions"; empty for a delete.
    pub asked: String,
}

impl TopicAction {
    fn verb(self) -> &'static str {
        match self {
            TopicAction::Create => "create",
            TopicAction::Grow => "add partitions to",
            TopicAction::Delete => "delete",
        }
    }
}

impl TopicFailure {
    fn topic_and_ask(&self) -> String {
        if self.asked.is_empty() {
            self.topic.clone()
        } else {
            format!("{} ({})", self.topic, self.asked)
        }
    }
}

impl fmt::Display for TopicFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&list(std::slice::from_ref(self)))
    }
}

/// What to do about a refusal.
fn hint(action: TopicAction, code: RDKafkaErrorCode) -> &'static str {
    use RDKafkaErrorCode as C;
    match (action, code) {
        (_, C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed) => {
            "grant the operator's Kafka principal Create, Alter and Delete on topics prefixed setlist. (or create the topics yourself and set spec.kafka.manageTopics to false)"
        }
        (_, C::PolicyViolation) => {
            "the cluster's topic policy forbids it: create or change the topic yourself and set spec.kafka.manageTopics to false"
        }
        (TopicAction::Create, C::InvalidReplicationFactor) => {
            "set spec.kafka.replicationFactor to at most the number of brokers"
        }
        (TopicAction::Grow, C::InvalidPartitions) => {
            "its partition count changed meanwhile, or is over the brokers' limit; the next reconcile looks again"
        }
        (TopicAction::Grow, C::UnsupportedVersion | C::UnsupportedFeature | C::InvalidRequest) => {
            "this broker cannot add partitions to a topic (it has no CreatePartitions API): add them with the broker's own tools, or ask for no more partitions than the topic has (spec.kafka.topicPartitions for stage topics, spec.dispatcher.replicas for results)"
        }
        (TopicAction::Delete, C::TopicDeletionDisabled) => {
            "the brokers refuse to delete topics (delete.topic.enable=false): delete it with the broker's own tools"
        }
        (_, C::UnsupportedVersion | C::UnsupportedFeature) => {
            "this broker does not support that admin request: manage the topic with the broker's own tools and set spec.kafka.manageTopics to false"
        }
        _ => "check the brokers' logs; the operator tries again at the next reconcile",
    }
}

/// `setlist.<namespace>.<cluster>.`: every topic of the cluster, whatever
/// its model version, and no other cluster's (names hold no '.').
pub fn cluster_prefix(namespace: &str, cluster: &str) -> Result<String, TopicError> {
    // Checked as core checks them, so the prefix matches the names it makes.
    Topics::new(namespace, cluster, "v")?;
    Ok(format!("setlist.{namespace}.{cluster}."))
}

/// The topics a cluster of `stages` stages on `model_version` uses, with
/// their partitions.
pub fn desired_topics(
    namespace: &str,
    cluster: &str,
    model_version: &str,
    stages: u32,
    stage_partitions: u32,
    dispatcher_replicas: u32,
) -> Result<Vec<TopicSpec>, TopicsError> {
    let topics = Topics::new(namespace, cluster, model_version)?;
    if stage_partitions == 0 {
        return Err(TopicsError::NoPartitions);
    }
    let spec = |name: String, partitions: u32| TopicSpec { name, partitions };
    let mut desired: Vec<TopicSpec> = (0..=stages)
        .map(|k| spec(topics.stage(k), stage_partitions))
        .collect();
    desired.extend([
        // Even with no dispatcher running, the topic needs a partition.
        spec(topics.results(), dispatcher_replicas.max(1)),
        spec(topics.interactions(), 1),
        spec(topics.dead_letter(), 1),
    ]);
    Ok(desired)
}

/// What to change so the topics under `cluster_prefix` are `desired`, given
/// the `existing` topics (name → partitions; others' topics are ignored).
pub fn plan_topics(
    desired: &[TopicSpec],
    existing: &BTreeMap<String, u32>,
    cluster_prefix: &str,
) -> TopicPlan {
    let mut plan = TopicPlan::default();
    for topic in desired {
        match existing.get(&topic.name) {
            None => plan.create.push(topic.clone()),
            Some(&have) if have < topic.partitions => plan.grow.push(Grow {
                name: topic.name.clone(),
                from: have,
                to: topic.partitions,
            }),
            Some(&have) if have > topic.partitions => plan.too_many.push(TooMany {
                name: topic.name.clone(),
                have,
                want: topic.partitions,
            }),
            Some(_) => {}
        }
    }
    let wanted: BTreeSet<&str> = desired.iter().map(|t| t.name.as_str()).collect();
    plan.obsolete = existing
        .keys()
        .filter(|name| name.starts_with(cluster_prefix) && !wanted.contains(name.as_str()))
        .cloned()
        .collect();
    plan
}

/// The admin API of the Kafka cluster a RecommenderCluster uses.
pub struct TopicAdmin {
    admin: Arc<AdminClient<DefaultClientContext>>,
    servers: String,
    timeout: Duration,
}

/// How long one admin call may take unless [`TopicAdmin::with_timeout`] says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

impl TopicAdmin {
    /// A client for the brokers in `settings`, with its overrides (TLS,
    /// SASL, read from the cluster's Secret by the caller). Connects lazily:
    /// an unreachable broker shows at the first call, not here.
    pub fn new(settings: &KafkaSettings) -> Result<TopicAdmin, TopicsError> {
        let admin = setlist_service::kafka::client_config(settings, &Role::Producer)
            .create()
            .map_err(|source| TopicsError::Client {
                servers: settings.bootstrap_servers.clone(),
                source,
            })?;
        Ok(TopicAdmin {
            admin: Arc::new(admin),
            servers: settings.bootstrap_servers.clone(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Bounds every call by `timeout` instead of [`DEFAULT_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> TopicAdmin {
        self.timeout = timeout;
        self
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout))
    }

    /// Runs an admin request under the timeout, naming what failed.
    async fn bounded<T>(
        &self,
        action: &'static str,
        call: impl Future<Output = Result<T, KafkaError>>,
    ) -> Result<T, TopicsError> {
        // librdkafka enforces the request timeout itself; the timer is a
        // backstop a little later, so its own, more precise error wins.
        let backstop = self.timeout + Duration::from_secs(2);
        match tokio::time::timeout(backstop, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(
                KafkaError::AdminOp(
                    RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut,
                )
                | KafkaError::MetadataFetch(
                    RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut,
                ),
            ))
            | Err(_) => Err(TopicsError::TimedOut {
                servers: self.servers.clone(),
                action,
                after: self.timeout,
            }),
            Ok(Err(source)) => Err(TopicsError::Request {
                servers: self.servers.clone(),
                action,
                source,
            }),
        }
    }

    /// The topics whose names start with `prefix`, and their partitions.
    pub async fn existing(&self, prefix: &str) -> Result<BTreeMap<String, u32>, TopicsError> {
        let admin = Arc::clone(&self.admin);
        let timeout = self.timeout;
        let prefix = prefix.to_string();
        // librdkafka's metadata call blocks; not on the runtime's threads.
        let listing = async move {
            tokio::task::spawn_blocking(move || {
                let metadata = admin.inner().fetch_metadata(None, timeout)?;
                Ok(metadata
                    .topics()
                    .iter()
                    // A topic the metadata reports an error for (being made or
                    // deleted) is left out: creating it again is harmless.
                    .filter(|t| t.name().starts_with(&prefix) && t.error().is_none())
                    .map(|t| (t.name().to_string(), t.partitions().len() as u32))
                    .collect())
            })
            .await
            .unwrap_or_else(|e| Err(KafkaError::MetadataFetch(panicked(&e))))
        };
        self.bounded("a metadata request (listing topics)", listing)
            .await
    }

    /// Creates the missing topics and grows those with too few partitions;
    /// reports the rest of the plan as it is. Obsolete topics are left alone.
    pub async fn apply(
        &self,
        plan: &TopicPlan,
        replication_factor: u16,
    ) -> Result<TopicReport, TopicsError> {
        let mut report = TopicReport {
            too_many: plan.too_many.clone(),
            obsolete: plan.obsolete.clone(),
            ..TopicReport::default()
        };
        let mut failures = Vec::new();
        let options = self.options();

        if !plan.create.is_empty() {
            let new: Vec<NewTopic> = plan
                .create
                .iter()
                .map(|t| {
                    let replication = TopicReplication::Fixed(i32::from(replication_factor));
                    NewTopic::new(&t.name, t.partitions as i32, replication)
                })
                .collect();
            let results = self
                .bounded(
                    "a CreateTopics request",
                    self.admin.create_topics(&new, &options),
                )
                .await?;
            for result in results {
                match result {
                    Ok(name) => report.created.push(name),
                    Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                        report.already_existed.push(name)
                    }
                    Err((name, code)) => {
                        let partitions = plan
                            .create
                            .iter()
                            .find(|t| t.name == name)
                            .map_or(0, |t| t.partitions);
                        failures.push(TopicFailure {
                            asked: format!(
                                "{partitions} partitions, replication factor {replication_factor}"
                            ),
                            topic: name,
                            action: TopicAction::Create,
                            code,
                        });
                    }
                }
            }
        }

        if !plan.grow.is_empty() {
            let new: Vec<NewPartitions> = plan
                .grow
                .iter()
                .map(|g| NewPartitions::new(&g.name, g.to as usize))
                .collect();
            match self
                .bounded(
                    "a CreatePartitions request",
                    self.admin.create_partitions(&new, &options),
                )
                .await
            {
                Ok(results) => {
                    for result in results {
                        let (name, outcome) = match result {
                            Ok(name) => (name, None),
                            Err((name, code)) => (name, Some(code)),
                        };
                        let Some(grow) = plan.grow.iter().find(|g| g.name == name) else {
                            continue;
                        };
                        match outcome {
                            None => report.grown.push(grow.clone()),
                            Some(code) => failures.push(grow_failure(grow, code)),
                        }
                    }
                }
                // A broker without the API refuses the whole request, before
                // any topic: that is about each of them.
                Err(TopicsError::Request {
                    source: KafkaError::AdminOp(code),
                    ..
                }) if is_unsupported(code) => {
                    failures.extend(plan.grow.iter().map(|g| grow_failure(g, code)));
                }
                Err(e) => return Err(e),
            }
        }

        if failures.is_empty() {
            Ok(report)
        } else {
            Err(TopicsError::Refused(failures))
        }
    }

    /// Deletes `names`; those already gone are fine. Returns the names it
    /// deleted.
    pub async fn delete(&self, names: &[String]) -> Result<Vec<String>, TopicsError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let results = self
            .bounded(
                "a DeleteTopics request",
                self.admin.delete_topics(&names, &self.options()),
            )
            .await?;
        let mut deleted = Vec::new();
        let mut failures = Vec::new();
        for result in results {
            match result {
                Ok(name) => deleted.push(name),
                Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((topic, code)) => failures.push(TopicFailure {
                    topic,
                    action: TopicAction::Delete,
                    code,
                    asked: String::new(),
                }),
            }
        }
        if failures.is_empty() {
            Ok(deleted)
        } else {
            Err(TopicsError::Refused(failures))
        }
    }
}

fn grow_failure(grow: &Grow, code: RDKafkaErrorCode) -> TopicFailure {
    TopicFailure {
        topic: grow.name.clone(),
        action: TopicAction::Grow,
        code,
        asked: format!("from {} to {} partitions", grow.from, grow.to),
    }
}

fn is_unsupported(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnsupportedFeature
            | RDKafkaErrorCode::UnsupportedVersion
            | RDKafkaErrorCode::InvalidRequest
    )
}

/// A metadata task that panicked reads as a failed fetch.
fn panicked(_: &tokio::task::JoinError) -> RDKafkaErrorCode {
    RDKafkaErrorCode::Fail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reconciler runs on a multi-threaded runtime: its futures must
    /// be `Send`. Checked when this compiles.
    #[allow(dead_code)]
    fn calls_can_move_between_threads(admin: &TopicAdmin, plan: &TopicPlan) {
        fn send<T: Send>(_: T) {}
        send(admin.existing("setlist."));
        send(admin.apply(plan, 1));
        send(admin.delete(&[]));
    }

    fn spec(name: &str, partitions: u32) -> TopicSpec {
        TopicSpec {
            name: name.into(),
            partitions,
        }
    }

    fn desired() -> Vec<TopicSpec> {
        desired_topics("prod", "radio", "m1", 3, 8, 2).unwrap()
    }

    fn existing(topics: &[(&str, u32)]) -> BTreeMap<String, u32> {
        topics.iter().map(|(n, p)| (n.to_string(), *p)).collect()
    }

    const PREFIX: &str = "setlist.prod.radio.";

    #[test]
    fn a_cluster_has_its_stage_topics_results_interactions_and_dead_letter() {
        assert_eq!(
            desired(),
            vec![
                spec("setlist.prod.radio.m1.stage-0", 8),
                spec("setlist.prod.radio.m1.stage-1", 8),
                spec("setlist.prod.radio.m1.stage-2", 8),
                // The output shards' input.
                spec("setlist.prod.radio.m1.stage-3", 8),
                // One reply partition per dispatcher replica.
                spec("setlist.prod.radio.m1.results", 2),
                spec("setlist.prod.radio.m1.interactions", 1),
                spec("setlist.prod.radio.m1.dead-letter", 1),
            ]
        );
        // The same names as core's, which every component uses.
        let topics = Topics::new("prod", "radio", "m1").unwrap();
        let names: Vec<String> = desired().into_iter().map(|t| t.name).collect();
        assert_eq!(names, topics.all(3));
    }

    #[test]
    fn results_keep_a_partition_with_no_dispatcher() {
        let topics = desired_topics("p", "c", "m", 1, 4, 0).unwrap();
        assert_eq!(topics[2], spec("setlist.p.c.m.results", 1));
    }

    #[test]
    fn bad_names_and_no_partitions_are_refused() {
        assert_eq!(
            desired_topics("prod", "radio.eu", "m1", 3, 8, 1)
                .unwrap_err()
                .to_string(),
            "cluster \"radio.eu\" may only hold letters, digits, '_' and '-' (Kafka topic names allow '.', but Setlist uses it as the separator)"
        );
        assert_eq!(
            desired_topics("prod", "radio", "m1", 3, 0, 1)
                .unwrap_err()
                .to_string(),
            "kafka.topicPartitions is 0; give each stage topic at least 1 partition"
        );
        assert!(cluster_prefix("prod", "").is_err());
    }

    #[test]
    fn the_cluster_prefix_covers_every_topic_of_the_cluster_and_no_other() {
        let prefix = cluster_prefix("prod", "radio").unwrap();
        assert_eq!(prefix, PREFIX);
        for topic in Topics::new("prod", "radio", "m9").unwrap().all(5) {
            assert!(topic.starts_with(&prefix), "{topic}");
        }
        for other in [("prod", "radio-2"), ("prod-2", "radio"), ("prod", "radi")] {
            for topic in Topics::new(other.0, other.1, "m1").unwrap().all(2) {
                assert!(!topic.starts_with(&prefix), "{topic}");
            }
        }
    }

    #[test]
    fn nothing_there_creates_everything() {
        let plan = plan_topics(&desired(), &BTreeMap::new(), PREFIX);
        assert_eq!(plan.create, desired());
        assert!(plan.grow.is_empty() && plan.too_many.is_empty() && plan.obsolete.is_empty());
        assert!(!plan.changes_nothing());
    }

    #[test]
    fn everything_as_desired_changes_nothing() {
        let there: BTreeMap<String, u32> = desired()
            .into_iter()
            .map(|t| (t.name, t.partitions))
            .collect();
        let plan = plan_topics(&desired(), &there, PREFIX);
        assert_eq!(plan, TopicPlan::default());
        assert!(plan.changes_nothing());
    }

    #[test]
    fn missing_topics_are_created_and_short_ones_grown() {
        let there = existing(&[
            ("setlist.prod.radio.m1.stage-0", 8),
            ("setlist.prod.radio.m1.stage-1", 4),
            ("setlist.prod.radio.m1.stage-2", 8),
            ("setlist.prod.radio.m1.results", 1),
            ("setlist.prod.radio.m1.interactions", 1),
        ]);
        let plan = plan_topics(&desired(), &there, PREFIX);
        assert_eq!(
            plan.create,
            vec![
                spec("setlist.prod.radio.m1.stage-3", 8),
                spec("setlist.prod.radio.m1.dead-letter", 1),
            ]
        );
        assert_eq!(
            plan.grow,
            vec![
                Grow {
                    name: "setlist.prod.radio.m1.stage-1".into(),
                    from: 4,
                    to: 8
                },
                Grow {
                    name: "setlist.prod.radio.m1.results".into(),
                    from: 1,
                    to: 2
                },
            ]
        );
        assert!(plan.too_many.is_empty() && plan.obsolete.is_empty());
    }

    #[test]
    fn topics_with_more_partitions_are_reported_never_shrunk() {
        let mut there: BTreeMap<String, u32> = desired()
            .into_iter()
            .map(|t| (t.name, t.partitions))
            .collect();
        there.insert("setlist.prod.radio.m1.stage-2".into(), 16);
        there.insert("setlist.prod.radio.m1.results".into(), 5);
        let plan = plan_topics(&desired(), &there, PREFIX);
        assert_eq!(
            plan.too_many,
            vec![
                TooMany {
                    name: "setlist.prod.radio.m1.stage-2".into(),
                    have: 16,
                    want: 8
                },
                TooMany {
                    name: "setlist.prod.radio.m1.results".into(),
                    have: 5,
                    want: 2
                },
            ]
        );
        assert!(plan.changes_nothing());
    }

    #[test]
    fn an_old_model_versions_topics_and_dropped_stages_are_obsolete() {
        let mut there: BTreeMap<String, u32> = desired()
            .into_iter()
            .map(|t| (t.name, t.partitions))
            .collect();
        for topic in Topics::new("prod", "radio", "m0").unwrap().all(2) {
            there.insert(topic, 8);
        }
        // The spec went from 4 stages to 3.
        there.insert("setlist.prod.radio.m1.stage-4".into(), 8);
        let plan = plan_topics(&desired(), &there, PREFIX);
        let mut expected = Topics::new("prod", "radio", "m0").unwrap().all(2);
        expected.push("setlist.prod.radio.m1.stage-4".into());
        expected.sort();
        assert_eq!(plan.obsolete, expected);
        assert!(plan.changes_nothing());
    }

    #[test]
    fn other_clusters_and_other_applications_topics_are_left_alone() {
        let mut there: BTreeMap<String, u32> = desired()
            .into_iter()
            .map(|t| (t.name, t.partitions))
            .collect();
        for (namespace, cluster) in [("prod", "radio-2"), ("staging", "radio"), ("prod", "radi")] {
            for topic in Topics::new(namespace, cluster, "m1").unwrap().all(3) {
                there.insert(topic, 8);
            }
        }
        there.insert("orders".into(), 3);
        there.insert("__consumer_offsets".into(), 50);
        assert_eq!(
            plan_topics(&desired(), &there, PREFIX),
            TopicPlan::default()
        );
    }

    #[test]
    fn refusals_name_the_topic_and_say_what_to_do() {
        let failure = TopicFailure {
            topic: "setlist.prod.radio.m1.stage-0".into(),
            action: TopicAction::Create,
            code: RDKafkaErrorCode::InvalidReplicationFactor,
            asked: "8 partitions, replication factor 3".into(),
        };
        assert_eq!(
            failure.to_string(),
            "the Kafka cluster refused to create topic setlist.prod.radio.m1.stage-0 (8 partitions, replication factor 3): InvalidReplicationFactor (Broker: Invalid replication factor); set spec.kafka.replicationFactor to at most the number of brokers"
        );
        let grow = grow_failure(
            &Grow {
                name: "setlist.prod.radio.m1.stage-1".into(),
                from: 4,
                to: 8,
            },
            RDKafkaErrorCode::UnsupportedFeature,
        );
        let other = grow_failure(
            &Grow {
                name: "setlist.prod.radio.m1.results".into(),
                from: 1,
                to: 2,
            },
            RDKafkaErrorCode::UnsupportedFeature,
        );
        let message = TopicsError::Refused(vec![grow, failure, other]).to_string();
        assert_eq!(
            message,
            "the Kafka cluster refused to add partitions to topics setlist.prod.radio.m1.stage-1 (from 4 to 8 partitions), setlist.prod.radio.m1.results (from 1 to 2 partitions): \
             UnsupportedFeature (Local: Required feature not supported by broker); this broker cannot add partitions to a topic (it has no CreatePartitions API): \
             add them with the broker's own tools, or ask for no more partitions than the topic has (spec.kafka.topicPartitions for stage topics, spec.dispatcher.replicas for results); \
             and the Kafka cluster refused to create topic setlist.prod.radio.m1.stage-0 (8 partitions, replication factor 3): \
             InvalidReplicationFactor (Broker: Invalid replication factor); set spec.kafka.replicationFactor to at most the number of brokers"
        );
        let denied = TopicFailure {
            topic: "t".into(),
            action: TopicAction::Delete,
            code: RDKafkaErrorCode::TopicAuthorizationFailed,
            asked: String::new(),
        };
        assert!(
            denied
                .to_string()
                .contains("grant the operator's Kafka principal"),
            "{denied}"
        );
    }
}
