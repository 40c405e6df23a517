//! The results topic's partition count, which every frame's `reply_to` is
//! checked against: read from the brokers' metadata, and read again now
//! and then (a topic can grow), when a frame names a partition beyond it,
//! and while it is unknown. Pure: the worker does the reading and passes
//! in the clock.

use std::time::{Duration, Instant};

/// While idle the read doubles as the broker reachability probe.
const IDLE_REFRESH: Duration = Duration::from_secs(2);
/// While busy, new partitions are noticed within this long anyway.
const BUSY_REFRESH: Duration = Duration::from_secs(30);
/// The soonest a read is repeated for a miss or an unknown count, so a
/// stream of bad frames costs at most one metadata request a second.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default)]
pub struct ResultsPartitions {
    count: Option<u32>,
    last_read: Option<Instant>,
}

impl ResultsPartitions {
    /// The partition count last read, if any read succeeded.
    pub fn count(&self) -> Option<u32> {
        self.count
    }

    fn since_last_read(&self, now: Instant) -> Option<Duration> {
        self.last_read.map(|t| now.saturating_duration_since(t))
    }

    /// Whether to read the metadata at `now`, the node being `idle` or not.
    pub fn due(&self, now: Instant, idle: bool) -> bool {
        let Some(since) = self.since_last_read(now) else {
            return true;
        };
        let every = match (self.count, idle) {
            (None, _) => RETRY,
            (Some(_), true) => IDLE_REFRESH,
            (Some(_), false) => BUSY_REFRESH,
        };
        since >= every
    }

    /// Whether a frame naming partition `reply_to` should wait for a fresh
    /// read before it is judged: the topic may have grown since.
    pub fn due_for(&self, reply_to: u32, now: Instant) -> bool {
        self.count.is_some_and(|count| reply_to >= count)
            && self.since_last_read(now).is_none_or(|since| since >= RETRY)
    }

    /// A read at `now` found `partitions` (`None`: the read failed, or the
    /// topic does not exist yet, which is the deployment's problem, not any
    /// frame's, so the last count stays).
    pub fn record(&mut self, now: Instant, partitions: Option<u32>) {
        self.last_read = Some(now);
        if let Some(count) = partitions.filter(|&c| c > 0) {
            self.count = Some(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_read_at_once_and_retried_every_second_while_unknown() {
        let secs = Duration::from_secs;
        let t0 = Instant::now();
        let mut partitions = ResultsPartitions::default();
        assert!(partitions.due(t0, false));
        partitions.record(t0, None);
        assert_eq!(partitions.count(), None);
        assert!(!partitions.due(t0 + Duration::from_millis(999), false));
        assert!(partitions.due(t0 + secs(1), false));
        partitions.record(t0 + secs(1), Some(0));
        assert_eq!(partitions.count(), None, "a missing topic has no count");
        partitions.record(t0 + secs(2), Some(4));
        assert_eq!(partitions.count(), Some(4));
    }

    #[test]
    fn a_known_count_is_read_again_every_2_s_idle_and_30_s_busy() {
        let secs = Duration::from_secs;
        let t0 = Instant::now();
        let mut partitions = ResultsPartitions::default();
        partitions.record(t0, Some(2));
        assert!(!partitions.due(t0 + secs(1), true));
        assert!(partitions.due(t0 + secs(2), true));
        assert!(!partitions.due(t0 + secs(29), false));
        assert!(partitions.due(t0 + secs(30), false));
        // A failed read keeps the last count.
        partitions.record(t0 + secs(30), None);
        assert_eq!(partitions.count(), Some(2));
    }

    #[test]
    fn a_partition_beyond_the_count_is_checked_again_at_most_once_a_second() {
        let secs = Duration::from_secs;
        let t0 = Instant::now();
        let mut partitions = ResultsPartitions::default();
        assert!(!partitions.due_for(9, t0), "an unknown count is no miss");
        partitions.record(t0, Some(2));
        assert!(!partitions.due_for(1, t0 + secs(5)));
        assert!(!partitions.due_for(2, t0 + Duration::from_millis(500)));
        assert!(partitions.due_for(2, t0 + secs(1)));
        partitions.record(t0 + secs(1), Some(3));
        assert!(!partitions.due_for(2, t0 + secs(3)), "the topic grew");
    }
}
