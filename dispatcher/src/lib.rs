//! Setlist's dispatcher: the recommendation API in front of the partitioned
//! pipeline. The pure parts (request limits, timings, the circuit breaker,
//! the answer cache) are tested directly; `service` is the Kafka shell.

pub mod api;
pub mod breaker;
pub mod cache;
pub mod config;
pub mod http;
pub mod metrics;
pub mod service;
