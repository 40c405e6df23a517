//! Setlist's light core: what every service shares and none of them needs
//! libtorch or a Kafka client for. The activation wire format, topic names
//! and Kafka client settings, the model's shape and its partition plan,
//! slice manifests, the song catalogue and query limits, the playlist data
//! formats, the playlist files listeners upload, ports, logs and metrics
//! helpers.
//!
//! Nothing here serves requests or talks to Kubernetes or Kafka: the binaries
//! are thin shells around these pure parts. The model's arithmetic lives in
//! `setlist-model`, which only compute nodes and the CLI link.

pub mod api;
pub mod artifact;
pub mod breaker;
pub mod catalogue;
pub mod dataset;
pub mod kafka;
pub mod plan;
pub mod playlist_file;
pub mod ports;
pub mod progress;
pub mod query;
pub mod shape;
pub mod slice;
pub mod telemetry;
pub mod topics;
pub mod trace;
pub mod wire;
