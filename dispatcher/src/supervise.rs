//! Keeping the dispatcher's background work alive, and saying when it is
//! not. The results consumer (a thread) and the publisher (a task) are
//! restarted when they panic, with each restart counted and logged; each
//! beats a [`Heartbeat`] as it turns, and readiness fails while one has
//! been silent too long, so a dead or stuck one turns `/readyz` red
//! instead of silently turning every answer into a fallback.

use prometheus::IntCounterVec;
use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When a background loop last turned.
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    /// Milliseconds from `origin` to the last beat.
    last_ms: AtomicU64,
}

impl Heartbeat {
    pub fn new(now: Instant) -> Heartbeat {
        Heartbeat {
            origin: now,
            last_ms: AtomicU64::new(0),
        }
    }

    pub fn beat(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.origin).as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long since the last beat.
    pub fn silent_for(&self, now: Instant) -> Duration {
        let last = self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }
}

/// Counts and logs a restart of `task` after it panicked with `panic`.
pub fn restarted(task: &str, restarts: &IntCounterVec, panic: &(dyn Any + Send)) {
    restarts.with_label_values(&[task]).inc();
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!(
        task,
        panic = message,
        "a background task panicked; restarting it"
    );
}

/// Runs `body` until it returns, restarting it (after `backoff`, so a task
/// that panics at once does not spin) each time it panics. For a thread;
/// `body` must leave whatever it shares in a usable state when it unwinds.
pub fn keep_running(
    task: &str,
    restarts: &IntCounterVec,
    backoff: Duration,
    mut body: impl FnMut(),
) {
    while let Err(panic) = panic::catch_unwind(AssertUnwindSafe(&mut body)) {
        restarted(task, restarts, panic.as_ref());
        std::thread::sleep(backoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn restarts() -> IntCounterVec {
        IntCounterVec::new(Opts::new("restarts", "Restarts."), &["task"]).unwrap()
    }

    /// Issue 7, item 7: a panic in the results thread used to end it for
    /// good, while /readyz stayed green.
    #[test]
    fn a_panicking_task_is_restarted_until_it_returns() {
        let restarts = restarts();
        let mut runs = 0;
        keep_running("results", &restarts, Duration::ZERO, || {
            runs += 1;
            if runs < 3 {
                panic!("run {runs} fails");
            }
        });
        assert_eq!(runs, 3);
        assert_eq!(restarts.with_label_values(&["results"]).get(), 2);
    }

    #[test]
    fn silence_is_measured_from_the_last_beat() {
        let t0 = Instant::now();
        let heartbeat = Heartbeat::new(t0);
        assert_eq!(
            heartbeat.silent_for(t0 + Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        heartbeat.beat(t0 + Duration::from_secs(2));
        heartbeat.beat(t0 + Duration::from_secs(1));
        assert_eq!(
            heartbeat.silent_for(t0 + Duration::from_secs(7)),
            Duration::from_secs(5),
            "an older beat from another thread does not move it back"
        );
        assert_eq!(heartbeat.silent_for(t0), Duration::ZERO);
    }
}
