//! The shell every Setlist process shares, around `setlist-core`'s pure
//! parts: layered configuration, the health endpoints, stopping, Kafka
//! clients, and fetching slices from where they are published; the I/O the
//! compute node, the dispatcher, the search API and the CLI would otherwise
//! each write again.

pub mod config;
pub mod health;
pub mod http;
pub mod kafka;
pub mod otel;
pub mod shutdown;
pub mod slices;
