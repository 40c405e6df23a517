//! Kafka clients built from Setlist's settings (`setlist_core::kafka`).

use rdkafka::ClientConfig;
use setlist_core::kafka::{KafkaSettings, Role};

/// The librdkafka configuration of a client for `role`.
pub fn client_config(settings: &KafkaSettings, role: &Role) -> ClientConfig {
    settings.properties(role).into_iter().collect()
}
