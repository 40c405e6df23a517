//! Micro-batching: how long the worker waits for frames to share a forward
//! pass, and which of a frame's rows are still worth computing. Pure: the
//! worker passes in the clock.

use setlist_core::wire::{Activations, Frame, take_rows};
use std::time::{Duration, Instant};

/// How long the worker polls while no frame has arrived: short enough that a
/// stop request is noticed at once, long enough not to spin.
pub const IDLE_POLL: Duration = Duration::from_millis(100);

/// One batch being gathered: the first frame starts a `max_wait` window;
/// the batch is complete when the window closes, when a poll within it finds
/// nothing more, or when it holds `max_rows` requests.
#[derive(Debug, Clone)]
pub struct Assembly {
    max_rows: usize,
    max_wait: Duration,
    rows: usize,
    until: Option<Instant>,
}

impl Assembly {
    pub fn new(max_rows: usize, max_wait: Duration) -> Assembly {
        Assembly {
            max_rows,
            max_wait,
            rows: 0,
            until: None,
        }
    }

    /// How long to poll for the next frame at `now`, or `None` once the
    /// batch is full. Once the window has closed this is zero: whatever has
    /// already arrived still joins at no cost.
    pub fn next_wait(&self, now: Instant) -> Option<Duration> {
        if self.rows >= self.max_rows {
            return None;
        }
        Some(match self.until {
            None => IDLE_POLL,
            Some(end) => end.saturating_duration_since(now),
        })
    }

    /// A frame of `rows` requests arrived at `now` (a refused frame counts
    /// as one: it costs a dead-letter message, not a forward pass).
    pub fn add(&mut self, rows: usize, now: Instant) {
        self.rows += rows;
        self.until.get_or_insert(now + self.max_wait);
    }
}

/// The rows of a frame whose deadline has not passed at `now_unix_ms`, with
/// their activations, or `None` when none is left; and how many expired.
pub fn drop_expired(
    mut frame: Frame,
    activations: Activations,
    now_unix_ms: u64,
) -> (Option<(Frame, Activations)>, usize) {
    let alive: Vec<usize> = (0..frame.rows.len())
        .filter(|&r| frame.rows[r].deadline_unix_ms >= now_unix_ms)
        .collect();
    let expired = frame.rows.len() - alive.len();
    if alive.is_empty() {
        return (None, expired);
    }
    if expired == 0 {
        return (Some((frame, activations)), 0);
    }
    let activations = take_rows(&activations, &alive);
    frame.rows.retain(|row| row.deadline_unix_ms >= now_unix_ms);
    (Some((frame, activations)), expired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use setlist_core::wire::{Body, RowMeta, Values};

    #[test]
    fn an_idle_poll_is_short_and_the_first_frame_opens_the_window() {
        let t0 = Instant::now();
        let mut batch = Assembly::new(8, Duration::from_millis(5));
        assert_eq!(batch.next_wait(t0), Some(IDLE_POLL));
        batch.add(2, t0);
        assert_eq!(batch.next_wait(t0), Some(Duration::from_millis(5)));
        let t3 = t0 + Duration::from_millis(3);
        batch.add(1, t3);
        // Later frames do not extend the window.
        assert_eq!(batch.next_wait(t3), Some(Duration::from_millis(2)));
        assert_eq!(
            batch.next_wait(t0 + Duration::from_millis(9)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_batch_is_complete_at_max_rows() {
        let t0 = Instant::now();
        let mut batch = Assembly::new(4, Duration::from_millis(5));
        batch.add(3, t0);
        assert!(batch.next_wait(t0).is_some());
        batch.add(1, t0);
        assert_eq!(batch.next_wait(t0), None);
        let mut big = Assembly::new(4, Duration::from_millis(5));
        big.add(100, t0);
        assert_eq!(big.next_wait(t0), None);
    }

    fn frame(deadlines: &[u64]) -> (Frame, Activations) {
        let rows = deadlines
            .iter()
            .enumerate()
            .map(|(i, &deadline_unix_ms)| RowMeta {
                request_id: i as u128,
                deadline_unix_ms,
                k: 3,
                exclude: vec![i as u32],
            })
            .collect();
        let activations = Activations {
            dim: 2,
            lengths: vec![1; deadlines.len()],
            values: Values::F32((0..2 * deadlines.len()).map(|v| v as f32).collect()),
        };
        let frame = Frame {
            model_version: "m1".into(),
            stage: 1,
            reply_to: 0,
            trace_context: String::new(),
            hops: Vec::new(),
            rows,
            body: Body::TopK(Vec::new()),
        };
        (frame, activations)
    }

    #[test]
    fn expired_rows_are_dropped_and_counted_and_the_rest_keep_their_values() {
        let (f, a) = frame(&[99, 100, 101]);
        let (alive, expired) = drop_expired(f, a, 100);
        let (f, a) = alive.unwrap();
        assert_eq!(expired, 1);
        let ids: Vec<u128> = f.rows.iter().map(|r| r.request_id).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(f.rows[0].exclude, vec![1]);
        assert_eq!(a.values, Values::F32(vec![2.0, 3.0, 4.0, 5.0]));
    }

    #[test]
    fn a_frame_with_every_row_expired_is_gone_and_one_with_none_is_untouched() {
        let (f, a) = frame(&[1, 2]);
        let (alive, expired) = drop_expired(f, a, 3);
        assert!(alive.is_none());
        assert_eq!(expired, 2);
        let (f, a) = frame(&[5, 6]);
        let (alive, expired) = drop_expired(f.clone(), a.clone(), 5);
        assert_eq!(alive, Some((f, a)));
        assert_eq!(expired, 0);
    }
}
