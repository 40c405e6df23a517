//! The operator's topic management against tansu, a real Kafka-protocol
//! broker (librdkafka's embedded mock cluster does not implement the
//! CreateTopics and CreatePartitions admin APIs). Needs `SETLIST_TANSU`
//! (`scripts/install-tansu.sh` prints it).

use setlist_core::kafka::KafkaSettings;
use setlist_operator::topics::{
    TopicAdmin, TopicPlan, TopicsError, cluster_prefix, desired_topics, plan_topics,
};
use setlist_tests::Tansu;
use std::collections::BTreeMap;
use std::time::Duration;

const NAMESPACE: &str = "prod";
const CLUSTER: &str = "radio";

/// The topics under the cluster's prefix once the broker lists them all
/// (metadata can lag a moment behind a change).
async fn listed(
    admin: &TopicAdmin,
    until: impl Fn(&BTreeMap<String, u32>) -> bool,
) -> BTreeMap<String, u32> {
    let prefix = cluster_prefix(NAMESPACE, CLUSTER).unwrap();
    let mut existing = BTreeMap::new();
    for _ in 0..50 {
        existing = admin
            .existing(&prefix)
            .await
            .expect("the topics are listed");
        if until(&existing) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    existing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clusters_topics_are_created_kept_grown_and_deleted() {
    let tansu = Tansu::start();
    let admin = TopicAdmin::new(&KafkaSettings::new(tansu.bootstrap.clone()))
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    let prefix = cluster_prefix(NAMESPACE, CLUSTER).unwrap();
    // Another cluster's topic, which nothing here may touch.
    let neighbour = desired_topics(NAMESPACE, "radio-2", "m1", 1, 2, 1).unwrap();
    let plan = plan_topics(&neighbour, &BTreeMap::new(), "setlist.prod.radio-2.");
    admin.apply(&plan, 1).await.expect("the neighbour's topics");

    // A 3-stage cluster, 4 partitions a stage, 2 dispatchers.
    let desired = desired_topics(NAMESPACE, CLUSTER, "m1", 3, 4, 2).unwrap();
    let wanted: BTreeMap<String, u32> = desired
        .iter()
        .map(|t| (t.name.clone(), t.partitions))
        .collect();
    let plan = plan_topics(&desired, &admin.existing(&prefix).await.unwrap(), &prefix);
    assert_eq!(
        plan.create, desired,
        "nothing of this cluster's is there yet"
    );
    let report = admin.apply(&plan, 1).await.expect("the topics are created");
    let mut created = report.created.clone();
    created.sort();
    assert_eq!(created, wanted.keys().cloned().collect::<Vec<_>>());
    let existing = listed(&admin, |e| *e == wanted).await;
    assert_eq!(existing, wanted, "each topic with its partitions");

    // Again: nothing to do, and doing it changes nothing.
    let plan = plan_topics(&desired, &existing, &prefix);
    assert_eq!(plan, TopicPlan::default());
    let report = admin.apply(&plan, 1).await.unwrap();
    assert!(report.created.is_empty() && report.grown.is_empty());
    // Creating what is there (a plan made from stale metadata) is fine.
    let stale = plan_topics(&desired, &BTreeMap::new(), &prefix);
    let report = admin
        .apply(&stale, 1)
        .await
        .expect("existing topics are fine");
    assert!(report.created.is_empty(), "{report:?}");
    assert_eq!(report.already_existed.len(), desired.len(), "{report:?}");
    assert_eq!(listed(&admin, |e| *e == wanted).await, wanted);

    // topicPartitions 4 → 6: the stage topics should grow, but tansu 0.6
    // has no CreatePartitions API (its ApiVersions does not list it, so
    // librdkafka refuses the request itself: UnsupportedFeature). The
    // operator says so, naming each topic and what to do instead. A broker
    // that grows them would fail this test: then assert the growth.
    let grown = desired_topics(NAMESPACE, CLUSTER, "m1", 3, 6, 2).unwrap();
    let plan = plan_topics(&grown, &existing, &prefix);
    assert_eq!(plan.grow.len(), 4, "{plan:?}");
    assert!(
        plan.grow.iter().all(|g| g.from == 4 && g.to == 6),
        "{plan:?}"
    );
    let message = match admin.apply(&plan, 1).await {
        Err(TopicsError::Refused(failures)) => {
            assert_eq!(failures.len(), 4, "{failures:?}");
            TopicsError::Refused(failures).to_string()
        }
        other => panic!("tansu 0.6 cannot add partitions, yet apply gave {other:?}"),
    };
    assert!(
        message.starts_with("the Kafka cluster refused to add partitions to topics "),
        "{message}"
    );
    for g in &plan.grow {
        assert!(
            message.contains(&format!("{} (from 4 to 6 partitions)", g.name)),
            "{message}"
        );
    }
    assert!(
        message.contains("this broker cannot add partitions to a topic"),
        "{message}"
    );
    assert_eq!(
        listed(&admin, |e| *e == wanted).await,
        wanted,
        "a refused grow leaves the topics as they were"
    );

    // A new model version: the old version's topics become obsolete, and
    // apply leaves them for the caller.
    let next = desired_topics(NAMESPACE, CLUSTER, "m2", 3, 4, 2).unwrap();
    let existing = admin.existing(&prefix).await.unwrap();
    let plan = plan_topics(&next, &existing, &prefix);
    let mut old: Vec<String> = wanted.keys().cloned().collect();
    old.sort();
    assert_eq!(plan.obsolete, old);
    let report = admin.apply(&plan, 1).await.unwrap();
    assert_eq!(report.obsolete, old);
    let both = listed(&admin, |e| e.len() == 2 * desired.len()).await;
    assert_eq!(both.len(), 2 * desired.len(), "{both:?}");

    // The cluster is deleted: all its topics go. (tansu 0.6's SQLite
    // engine deletes every topic it has on any DeleteTopics, its
    // `topic_delete_by.sql` matching on the cluster alone, and then answers
    // UnknownTopicOrPartition for the rest; so what a delete spares, the
    // neighbour's topics, cannot be checked on it. The unit tests show no
    // plan ever names another cluster's topics.)
    let all: Vec<String> = both.keys().cloned().collect();
    let deleted = admin.delete(&all).await.expect("the topics are deleted");
    assert!(
        !deleted.is_empty() && deleted.iter().all(|d| all.contains(d)),
        "{deleted:?}"
    );
    assert_eq!(
        listed(&admin, BTreeMap::is_empty).await,
        BTreeMap::new(),
        "no topic of the cluster is left"
    );
    // Deleting again is fine: they are gone already.
    assert_eq!(admin.delete(&all).await.unwrap(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_reported_within_the_timeout() {
    let port = setlist_core::ports::free_loopback_ports(1).unwrap();
    let servers = format!("127.0.0.1:{port}");
    let admin = TopicAdmin::new(&KafkaSettings::new(servers.clone()))
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let err = admin.existing("setlist.").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&servers) && message.contains("reachable from the operator"),
        "{message}"
    );
    let desired = desired_topics(NAMESPACE, CLUSTER, "m1", 1, 1, 1).unwrap();
    let plan = plan_topics(&desired, &BTreeMap::new(), "setlist.prod.radio.");
    let err = admin.apply(&plan, 1).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20), "{err}");
    assert!(err.to_string().contains("CreateTopics"), "{err}");
}
