//! Setlist's core library: the next-song model, its partition plan and slice
//! files, the activation wire format, and the playlist data formats.
//!
//! Nothing here serves requests or talks to Kubernetes or Kafka: the binaries
//! are thin shells around these pure parts.

pub mod artifact;
pub mod catalogue;
pub mod dataset;
pub mod eval;
pub mod kafka;
pub mod model;
pub mod pipeline;
pub mod plan;
pub mod ports;
pub mod progress;
pub mod query;
pub mod slice;
pub mod telemetry;
pub mod topics;
pub mod train;
pub mod wire;
