//! What /readyz reports, and the start of stopping.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Shared by the worker (which updates it) and the HTTP endpoints.
#[derive(Debug, Default)]
pub struct Health {
    pub assigned_partitions: AtomicUsize,
    pub broker_reachable: AtomicBool,
    stopping: AtomicBool,
    /// Why the slice was refused, if it was: the node then stays up to say
    /// so rather than restart in a loop that would hide the reason.
    refused: Mutex<Option<String>>,
}

impl Health {
    /// Ready means serving: slice loaded, input partitions assigned, broker
    /// reachable, not stopping. The sentence is the body of /readyz.
    pub fn readiness(&self) -> Result<String, String> {
        if let Some(error) = &*self.refused.lock().expect("health lock") {
            return Err(format!("not ready: the slice was refused: {error}"));
        }
        if self.is_stopping() {
            return Err("not ready: shutting down".into());
        }
        if !self.broker_reachable.load(Ordering::Relaxed) {
            return Err("not ready: the Kafka brokers are not reachable".into());
        }
        match self.assigned_partitions.load(Ordering::Relaxed) {
            0 => Err(
                "not ready: no input partitions assigned yet (joining the consumer group)".into(),
            ),
            n => Ok(format!("ready: {n} input partitions assigned")),
        }
    }

    pub fn refuse(&self, why: String) {
        *self.refused.lock().expect("health lock") = Some(why);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Starts stopping, once, whoever asks first (a signal or the worker
    /// giving up): from here the process ends within `limit`, whatever
    /// librdkafka does meanwhile. True for the call that started it.
    pub fn begin_stopping(&self, limit: Duration) -> bool {
        let first = !self.stopping.swap(true, Ordering::SeqCst);
        if first {
            setlist_service::shutdown::exit_after(limit, 1);
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving() -> Health {
        let health = Health::default();
        health.broker_reachable.store(true, Ordering::Relaxed);
        health.assigned_partitions.store(2, Ordering::Relaxed);
        health
    }

    #[test]
    fn ready_with_partitions_and_a_reachable_broker() {
        assert_eq!(
            serving().readiness(),
            Ok("ready: 2 input partitions assigned".into())
        );
        let joining = serving();
        joining.assigned_partitions.store(0, Ordering::Relaxed);
        assert_eq!(
            joining.readiness(),
            Err("not ready: no input partitions assigned yet (joining the consumer group)".into())
        );
        let cut_off = serving();
        cut_off.broker_reachable.store(false, Ordering::Relaxed);
        assert_eq!(
            cut_off.readiness(),
            Err("not ready: the Kafka brokers are not reachable".into())
        );
    }

    #[test]
    fn a_refused_slice_or_stopping_is_never_ready() {
        let refused = serving();
        refused.refuse("checksum mismatch".into());
        assert_eq!(
            refused.readiness(),
            Err("not ready: the slice was refused: checksum mismatch".into())
        );
        let stopping = serving();
        // The watchdog is far beyond this test's life.
        assert!(stopping.begin_stopping(Duration::from_secs(24 * 3600)));
        assert!(!stopping.begin_stopping(Duration::from_secs(24 * 3600)));
        assert_eq!(stopping.readiness(), Err("not ready: shutting down".into()));
    }
}
