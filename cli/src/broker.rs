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

pub enum Broker {
    /// Lives as long as this value: dropping it stops the broker.
    Embedded(MockCluster<'static, DefaultProducerContext>),
    External(KafkaSettings),
}

impl Broker {
    /// The embedded broker, or the cluster at `servers` with the client
    /// settings `overrides` (KEY=VALUE).
    pub fn new(servers: Option<&str>, overrides: &[String]) -> Result<Broker> {
        Ok(match servers {
            Some(servers) => Broker::External(
                KafkaSettings::new(servers)
                    .with_overrides(overrides)
                    .map_err(anyhow::Error::msg)?,
            ),
            None => {
                Broker::Embedded(MockCluster::new(1).context("cannot start the embedded broker")?)
            }
        })
    }

    pub fn bootstrap_servers(&self) -> String {
        match self {
            Broker::Embedded(mock) => mock.bootstrap_servers(),
            Broker::External(settings) => settings.bootstrap_servers.clone(),
        }
    }

    pub fn is_embedded(&self) -> bool {
        matches!(self, Broker::Embedded(_))
    }

    /// Creates `(topic, partitions)`, keeping topics that already exist.
    pub fn create_topics(&self, topics: &[(String, u32)]) -> Result<()> {
        match self {
            Broker::Embedded(mock) => {
                for (name, partitions) in topics {
                    mock.create_topic(name, *partitions as i32, 1)
                        .with_context(|| format!("cannot create topic {name}"))?;
                }
                Ok(())
            }
            Broker::External(settings) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(create_external(settings, topics)),
        }
    }
}

async fn create_external(settings: &KafkaSettings, names: &[(String, u32)]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = settings
        .client_config(&Role::Producer)
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
