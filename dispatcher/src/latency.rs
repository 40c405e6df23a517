//! The fastest the pipeline has answered lately. A request whose deadline
//! is shorter than that cannot be answered by the model, so it gets the
//! fallback at once (`deadline_too_short`) instead of loading the pipeline
//! for nothing, and a retry is only worth it while that much time is left.
//!
//! Only the fastest answer counts, and only for a while (between one and
//! two windows): a slow spell cannot lock requests out for good, because
//! once the slow answers are forgotten every request is tried again. Pure;
//! the caller supplies the time.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LatencyFloor {
    window: Duration,
    /// Start of the current window.
    started: Instant,
    current: Option<Duration>,
    previous: Option<Duration>,
}

impl LatencyFloor {
    pub fn new(window: Duration, now: Instant) -> LatencyFloor {
        LatencyFloor {
            window,
            started: now,
            current: None,
            previous: None,
        }
    }

    /// The pipeline answered a request `latency` after it was published.
    pub fn record(&mut self, latency: Duration, now: Instant) {
        self.roll(now);
        self.current = Some(self.current.map_or(latency, |c| c.min(latency)));
    }

    /// The fastest recent answer; `None` when there is none to go by.
    pub fn fastest(&mut self, now: Instant) -> Option<Duration> {
        self.roll(now);
        match (self.current, self.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed >= 2 * self.window {
            self.previous = None;
            self.current = None;
            self.started = now;
        } else if elapsed >= self.window {
            self.previous = self.current.take();
            self.started += self.window;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn knows_nothing_until_an_answer() {
        let t0 = Instant::now();
        let mut floor = LatencyFloor::new(WINDOW, t0);
        assert_eq!(floor.fastest(at(t0, 1)), None);
        floor.record(Duration::from_millis(30), at(t0, 1));
        floor.record(Duration::from_millis(12), at(t0, 2));
        floor.record(Duration::from_millis(50), at(t0, 3));
        assert_eq!(floor.fastest(at(t0, 3)), Some(Duration::from_millis(12)));
    }

    #[test]
    fn answers_are_remembered_for_one_to_two_windows() {
        let t0 = Instant::now();
        let mut floor = LatencyFloor::new(WINDOW, t0);
        floor.record(Duration::from_millis(12), at(t0, 5));
        assert_eq!(
            floor.fastest(at(t0, 19)),
            Some(Duration::from_millis(12)),
            "still in the previous window"
        );
        floor.record(Duration::from_millis(40), at(t0, 19));
        assert_eq!(floor.fastest(at(t0, 20)), Some(Duration::from_millis(40)));
        assert_eq!(
            floor.fastest(at(t0, 45)),
            None,
            "a slow spell is forgotten, so requests are tried again"
        );
    }
}
