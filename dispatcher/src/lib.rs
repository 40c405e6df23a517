//! Setlist's dispatcher: the recommendation API in front of the partitioned
//! pipeline. The decisions are pure types, tested directly with the time
//! injected: request limits and timings (`api`), the circuit breaker, the
//! retry budget, the latency floor, one request's attempts (`flight`), the
//! request table. Around them, thin shells: `pipeline` runs a request
//! against them, `publish` batches and delivers frames, `queue`, `cache`
//! and `jobs` hold what requests need within byte bounds, `supervise`
//! keeps the background loops alive, `service` connects Kafka, and `http`
//! serves it all.

pub mod api;
pub mod bytes;
pub mod cache;
pub mod config;
pub mod flight;
pub mod http;
pub mod jobs;
pub mod latency;
pub mod metrics;
pub mod pipeline;
pub mod publish;
pub mod queue;
pub mod requests;
pub mod retry;
pub mod service;
pub mod supervise;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex` even if a thread panicked while holding it: the state
/// behind each of the dispatcher's locks is updated in single steps, and a
/// background loop that panicked (and is restarted) must not take every
/// later request down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
