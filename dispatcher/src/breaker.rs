//! The circuit breaker: when the pipeline keeps failing, stop waiting on it
//! (answer from the fallback at once) until a probe request succeeds.
//! A pure state machine; the caller supplies the time.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The pipeline answers; `failures` in a row so far.
    Closed { failures: u32 },
    /// The pipeline is failing; no request goes to it until `until`.
    Open { until: Instant },
    /// One probe request is in flight; the others get the fallback.
    HalfOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send the request to the pipeline.
    Pass,
    /// Send it: it decides whether the breaker closes again.
    Probe,
    /// Answer from the fallback without waiting.
    Reject,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    /// Opens after `threshold` failures in a row, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            state: State::Closed { failures: 0 },
            threshold: threshold.max(1),
            cooldown,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn allow(&mut self, now: Instant) -> Decision {
        match self.state {
            State::Closed { .. } => Decision::Pass,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                Decision::Probe
            }
            State::Open { .. } | State::HalfOpen => Decision::Reject,
        }
    }

    /// Records how a request the breaker let through ended.
    pub fn record(&mut self, success: bool, now: Instant) {
        self.state = match (self.state, success) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            (_, false) => State::Open {
                until: now + self.cooldown,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_probes_after_the_cooldown() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(2));
        for _ in 0..2 {
            assert_eq!(b.allow(t0), Decision::Pass);
            b.record(false, t0);
        }
        assert_eq!(b.state(), State::Closed { failures: 2 });
        b.record(false, t0);
        assert_eq!(b.allow(t0 + Duration::from_secs(1)), Decision::Reject);
        assert_eq!(b.allow(t0 + Duration::from_secs(2)), Decision::Probe);
        assert_eq!(
            b.allow(t0 + Duration::from_secs(2)),
            Decision::Reject,
            "one probe at a time"
        );
        b.record(false, t0 + Duration::from_secs(3));
        assert_eq!(
            b.allow(t0 + Duration::from_secs(4)),
            Decision::Reject,
            "a failed probe opens it again"
        );
        assert_eq!(b.allow(t0 + Duration::from_secs(5)), Decision::Probe);
        b.record(true, t0 + Duration::from_secs(5));
        assert_eq!(b.allow(t0 + Duration::from_secs(5)), Decision::Pass);
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(1));
        b.record(false, t0);
        b.record(true, t0);
        b.record(false, t0);
        assert_eq!(b.allow(t0), Decision::Pass);
    }
}
