//! Listener events: every search, upload and recommendation shown goes to
//! the cluster's `interactions` topic, tomorrow's training data. Publishing
//! never holds up a listener: events wait in a bounded queue for a
//! background producer, and what cannot be published (queue full, broker
//! refused, no broker configured) is dropped and counted by reason.
//!
//! The schema (`docs/listener-events.md`) is versioned: each message carries
//! `schema` and `version`, and a consumer must ignore fields it does not know.

use crate::metrics::Metrics;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use setlist_core::kafka::{KafkaSettings, Role};
use std::time::Duration;
use tokio::sync::mpsc;

pub const SCHEMA: &str = "setlist.listener-event";
pub const VERSION: u32 = 1;
/// How long the producer may try to deliver one event before it is
/// dropped; a broker that is away must not pile events up in memory.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// What happened, with what a recommender learns from: the songs the
/// listener saw and picked.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ListenerEvent {
    /// A search answered: the query and the songs shown, in order.
    Search { query: String, shown: Vec<String> },
    /// A playlist file checked: its format, how many entries, and the songs
    /// recognised, in file order.
    PlaylistUpload {
        format: String,
        entries: usize,
        recognised: Vec<String>,
    },
    /// Recommendations shown for a playlist.
    RecommendationsShown {
        playlist: Vec<String>,
        shown: Vec<String>,
        model_version: String,
        fallback: bool,
    },
}

impl ListenerEvent {
    pub fn name(&self) -> &'static str {
        match self {
            ListenerEvent::Search { .. } => "search",
            ListenerEvent::PlaylistUpload { .. } => "playlist_upload",
            ListenerEvent::RecommendationsShown { .. } => "recommendations_shown",
        }
    }
}

/// One message on the topic.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub schema: &'static str,
    pub version: u32,
    /// Milliseconds since the Unix epoch, when the search API answered.
    pub at_ms: u64,
    /// The request id the listener's request carried (`x-request-id`), so
    /// an event can be matched with the logs of every process it touched.
    pub request_id: &'a str,
    #[serde(flatten)]
    pub event: &'a ListenerEvent,
}

struct Queued {
    event: ListenerEvent,
    request_id: String,
    at_ms: u64,
}

/// Where handlers hand events over; cheap to clone.
#[derive(Clone)]
pub struct Events {
    queue: Option<mpsc::Sender<Queued>>,
    metrics: Metrics,
}

impl Events {
    /// Events published to `topic` through the brokers in `kafka`, or, with
    /// none, counted as dropped (`no_broker`).
    pub fn start(
        kafka: Option<&KafkaSettings>,
        topic: String,
        capacity: usize,
        metrics: Metrics,
    ) -> anyhow::Result<Events> {
        let Some(kafka) = kafka else {
            return Ok(Events {
                queue: None,
                metrics,
            });
        };
        let mut config = setlist_service::kafka::client_config(kafka, &Role::Producer);
        config.set(
            "message.timeout.ms",
            DELIVERY_TIMEOUT.as_millis().to_string(),
        );
        let producer: FutureProducer = config.create()?;
        let (sender, receiver) = mpsc::channel(capacity);
        tokio::spawn(publish(producer, topic, receiver, metrics.clone()));
        Ok(Events {
            queue: Some(sender),
            metrics,
        })
    }

    /// Queues `event` for the broker; never waits.
    pub fn record(&self, request_id: &str, event: ListenerEvent) {
        let name = event.name();
        let outcome = match &self.queue {
            None => "no_broker",
            Some(queue) => match queue.try_send(Queued {
                event,
                request_id: request_id.to_string(),
                at_ms: setlist_core::telemetry::now_unix_us() / 1000,
            }) {
                Ok(()) => return,
                Err(_) => "queue_full",
            },
        };
        self.metrics
            .events
            .with_label_values(&[name, outcome])
            .inc();
    }
}

async fn publish(
    producer: FutureProducer,
    topic: String,
    mut queue: mpsc::Receiver<Queued>,
    metrics: Metrics,
) {
    while let Some(queued) = queue.recv().await {
        let payload = serde_json::to_vec(&Envelope {
            schema: SCHEMA,
            version: VERSION,
            at_ms: queued.at_ms,
            request_id: &queued.request_id,
            event: &queued.event,
        })
        .expect("an event serialises");
        let name = queued.event.name();
        // Deliveries run concurrently: one slow acknowledgement must not
        // hold up the events behind it.
        let delivery = producer.send_result(
            FutureRecord::<str, [u8]>::to(&topic)
                .key(&queued.request_id)
                .payload(&payload),
        );
        let metrics = metrics.clone();
        match delivery {
            Ok(delivery) => {
                tokio::spawn(async move {
                    let outcome = match delivery.await {
                        Ok(Ok(_)) => "published",
                        _ => "broker_error",
                    };
                    metrics.events.with_label_values(&[name, outcome]).inc();
                });
            }
            Err(_) => {
                metrics
                    .events
                    .with_label_values(&[name, "queue_full"])
                    .inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_carries_its_schema_version_and_request_id() {
        let event = ListenerEvent::RecommendationsShown {
            playlist: vec!["a".into()],
            shown: vec!["b".into(), "c".into()],
            model_version: "m1".into(),
            fallback: false,
        };
        let json = serde_json::to_value(Envelope {
            schema: SCHEMA,
            version: VERSION,
            at_ms: 7,
            request_id: "r-1",
            event: &event,
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "schema": "setlist.listener-event", "version": 1, "at_ms": 7,
                "request_id": "r-1", "event": "recommendations_shown",
                "playlist": ["a"], "shown": ["b", "c"], "model_version": "m1", "fallback": false
            })
        );
    }

    /// A broker that is gone never holds up a listener: recording returns
    /// at once, and what cannot be delivered is counted as dropped once its
    /// delivery times out.
    #[tokio::test]
    async fn a_broker_that_is_gone_costs_counted_events_not_requests() {
        let port = setlist_core::ports::free_loopback_ports(1).unwrap();
        let metrics = Metrics::new();
        let kafka = KafkaSettings::new(format!("127.0.0.1:{port}"));
        let events = Events::start(Some(&kafka), "t".into(), 2, metrics.clone()).unwrap();
        let started = std::time::Instant::now();
        for n in 0..5 {
            events.record(
                "r",
                ListenerEvent::Search {
                    query: format!("query {n}"),
                    shown: vec![],
                },
            );
        }
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "recording never waits"
        );
        let count = |outcome: &str| metrics.events.with_label_values(&["search", outcome]).get();
        while count("broker_error") + count("queue_full") < 5 {
            assert!(
                started.elapsed() < DELIVERY_TIMEOUT * 3,
                "every event is counted as dropped: {} broker_error, {} queue_full",
                count("broker_error"),
                count("queue_full")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(count("broker_error") >= 1);
        assert_eq!(count("published"), 0);
    }

    #[tokio::test]
    async fn without_a_broker_events_are_counted_as_dropped_not_waited_for() {
        let metrics = Metrics::new();
        let events = Events::start(None, "t".into(), 1, metrics.clone()).unwrap();
        events.record(
            "r",
            ListenerEvent::Search {
                query: "abc".into(),
                shown: vec![],
            },
        );
        assert_eq!(
            metrics
                .events
                .with_label_values(&["search", "no_broker"])
                .get(),
            1
        );
    }
}
