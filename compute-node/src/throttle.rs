//! Rate-limited logging: librdkafka repeats some errors (all brokers down,
//! a transport failure) for as long as they last, ten times a second while
//! a consumer is closing; one line per kind per interval says as much.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Lets the first occurrence of each kind through, then one per `interval`,
/// counting the ones it holds back.
#[derive(Debug)]
pub struct Throttle<K> {
    interval: Duration,
    kinds: HashMap<K, Seen>,
}

#[derive(Debug)]
struct Seen {
    logged_at: Instant,
    held_back: u64,
}

impl<K: Hash + Eq> Throttle<K> {
    pub fn new(interval: Duration) -> Throttle<K> {
        Throttle {
            interval,
            kinds: HashMap::new(),
        }
    }

    /// `Some(n)` if an occurrence of `kind` at `now` should be logged, `n`
    /// being how many were held back since the last one logged; `None` to
    /// hold it back.
    pub fn admit(&mut self, kind: K, now: Instant) -> Option<u64> {
        match self.kinds.get_mut(&kind) {
            Some(seen) if now.saturating_duration_since(seen.logged_at) < self.interval => {
                seen.held_back += 1;
                None
            }
            Some(seen) => {
                let held_back = std::mem::take(&mut seen.held_back);
                seen.logged_at = now;
                Some(held_back)
            }
            None => {
                self.kinds.insert(
                    kind,
                    Seen {
                        logged_at: now,
                        held_back: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_interval_with_the_count_held_back() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut throttle = Throttle::new(Duration::from_secs(10));
        assert_eq!(throttle.admit("down", t0), Some(0));
        // Ten a second, as librdkafka repeats it while a consumer closes.
        for i in 1..100 {
            assert_eq!(throttle.admit("down", t0 + ms(i * 100)), None);
        }
        assert_eq!(throttle.admit("other", t0 + ms(500)), Some(0));
        assert_eq!(throttle.admit("down", t0 + ms(10_000)), Some(99));
        assert_eq!(throttle.admit("down", t0 + ms(10_100)), None);
        assert_eq!(throttle.admit("down", t0 + ms(20_000)), Some(1));
    }
}
