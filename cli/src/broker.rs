//! The Kafka cluster a local run uses: librdkafka's mock cluster embedded in
//! this process (the real protocol on loopback, nothing to install), or a
//! real cluster named by `--kafka`, whose topics are made through the admin
//! API.

use anyhow::{Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use setlist_core::kafka::{KafkaSettings, Role};
use std::time::Duration;

/// 3 s: shorter, and the embedded broker's 3 s wait for a new group's first
/// members (its `group.initial.rebalance.delay.ms`) outlasts the session, so
/// a group never forms (seen with 2 s).
const EMBEDDED_SESSION_TIMEOUT_MS: u32 = 3_000;

pub struct Broker {
    /// Where clients connect, and the operator's client settings.
    settings: KafkaSettings,
    /// The embedded broker; dropping it stops the broker.
    embedded: Option<MockCluster<'static, DefaultProducerContext>>,
}

impl Broker {
    /// The embedded broker, or the cluster at `servers`; either way with the
    /// client settings `overrides` (KEY=VALUE).
    pub fn new(servers: Option<&str>, overrides: &[String]) -> Result<Broker> {
        let (servers, embedded) = match servers {
            Some(servers) => (servers.to_string(), None),
            None => {
                let mock = MockCluster::new(1).context("cannot start the embedded broker")?;
                (mock.bootstrap_servers(), Some(mock))
            }
        };
        let settings = KafkaSettings::new(servers)
            .with_overrides(overrides)
            .map_err(anyhow::Error::msg)?;
        Ok(Broker { settings, embedded })
    }

    /// Client settings for this broker, the operator's overrides included.
    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.settings.bootstrap_servers
    }

    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// The session timeout consumer groups should use: the embedded broker
    /// accepts a short one, so a dead node's partitions move in about 3 s;
    /// a real cluster gets the least a Kafka broker accepts by default
    /// (`--node-arg=--session-timeout-ms=…` where it allows less).
    pub fn session_timeout_ms(&self) -> u32 {
        if self.is_embedded() {
            EMBEDDED_SESSION_TIMEOUT_MS
        } else {
            setlist_core::kafka::DEFAULT_SESSION_TIMEOUT_MS
        }
    }

    /// Whether nodes get static group identities (KIP-345, a restarted node
    /// takes its partitions back without a rebalance): always on the
    /// embedded broker, on a real cluster only when asked, because a broker
    /// that mishandles them is worse than none. tansu 0.6 is one: it starts
    /// a new rebalance after every one that ends, every session timeout, and
    /// now and then leaves a member with no partitions for good.
    pub fn static_membership(&self, asked: bool) -> bool {
        self.is_embedded() || asked
    }

    /// Creates `(topic, partitions)`, keeping topics that already exist.
    pub fn create_topics(&self, topics: &[(String, u32)]) -> Result<()> {
        match &self.embedded {
            Some(mock) => {
                for (name, partitions) in topics {
                    mock.create_topic(name, *partitions as i32, 1)
                        .with_context(|| format!("cannot create topic {name}"))?;
                }
                Ok(())
            }
            None => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(create_external(&self.settings, topics)),
        }
    }
}

async fn create_external(settings: &KafkaSettings, names: &[(String, u32)]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        setlist_service::kafka::client_config(settings, &Role::Producer)
            .create()
            .context("cannot create a Kafka admin client")?;
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|(n, p)| NewTopic::new(n, *p as i32, TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?
    {
        match result {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use rdkafka::{Offset, TopicPartitionList};
    use std::time::Instant;

    /// The embedded broker answers a fetch that is waiting for data as soon
    /// as data arrives, as a Kafka broker does, not when the fetch's
    /// `fetch.wait.max.ms` expires (librdkafka's mock cluster did, until
    /// `scripts/patches/rdkafka-mock-wake-waiting-fetches.patch`). With a
    /// 30 s wait, a broker without the fix holds each message for up to 30 s;
    /// the test allows 10 s for all of them.
    #[test]
    fn a_waiting_fetch_is_answered_when_data_arrives_not_when_it_expires() {
        let broker = Broker::new(None, &["fetch.wait.max.ms=30000".to_string()]).unwrap();
        // One partition: a fetch waits only for the partitions it asked for,
        // and a second partition whose start offset is still being looked
        // up would be left out of the first fetch (and wait for good
        // reason, on any broker).
        broker.create_topics(&[("wake".to_string(), 1)]).unwrap();
        let consumer: BaseConsumer = setlist_service::kafka::client_config(
            broker.settings(),
            &Role::AssignedConsumer {
                client: "wake-test".into(),
            },
        )
        .create()
        .unwrap();
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset("wake", 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&assignment).unwrap();
        let producer: ThreadedProducer<DefaultProducerContext> =
            setlist_service::kafka::client_config(broker.settings(), &Role::Producer)
                .create()
                .unwrap();

        let started = Instant::now();
        let mut received = Vec::new();
        for round in 0..5u8 {
            // Let the consumer's fetch reach the broker and wait there.
            std::thread::sleep(Duration::from_millis(300));
            producer
                .send(
                    BaseRecord::<(), [u8]>::to("wake")
                        .partition(0)
                        .payload(&[round]),
                )
                .map_err(|(e, _)| e)
                .unwrap();
            producer.flush(Duration::from_secs(5)).unwrap();
            let message = consumer
                .poll(Duration::from_secs(60))
                .expect("a message within the poll")
                .unwrap();
            received.push(message.payload().unwrap().to_vec());
        }
        let took = started.elapsed();
        assert_eq!(received, (0..5u8).map(|r| vec![r]).collect::<Vec<_>>());
        assert!(
            took < Duration::from_secs(10),
            "five messages took {took:?} to arrive: the broker held waiting fetches for their full 30 s"
        );
    }
}
