//! The queue between the requests and the publisher, bounded by bytes:
//! a request carries up to 10,000 excluded tracks, so a bound by count
//! alone (65,536 of them was 2.6 GB) bounds nothing. A request that does
//! not fit is refused at once and answered from the fallback
//! (`overloaded`); its bytes are given back when the publisher has
//! encoded it.

use crate::bytes::{ByteBudget, Held};
use setlist_core::wire::RowMeta;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A request handed to the publisher.
#[derive(Debug, Clone)]
pub struct Submission {
    pub row: RowMeta,
    pub history: Vec<u32>,
    /// When no one waits for this request any more (publishing it is moot).
    pub deadline: Instant,
}

impl Submission {
    /// What it holds in memory, near enough.
    pub fn bytes(&self) -> usize {
        size_of::<Submission>() + size_of::<u32>() * (self.history.len() + self.row.exclude.len())
    }
}

/// A submission and the queue bytes it holds.
#[derive(Debug)]
pub struct Queued {
    pub submission: Submission,
    _held: Held,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

#[derive(Debug, Clone)]
pub struct SubmissionQueue {
    sender: mpsc::UnboundedSender<Queued>,
    room: ByteBudget,
}

pub type Receiver = mpsc::UnboundedReceiver<Queued>;

/// A queue holding at most `max_bytes` of submissions.
pub fn submission_queue(max_bytes: usize) -> (SubmissionQueue, Receiver) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let queue = SubmissionQueue {
        sender,
        room: ByteBudget::new(max_bytes),
    };
    (queue, receiver)
}

impl SubmissionQueue {
    pub fn try_submit(&self, submission: Submission) -> Result<(), QueueFull> {
        let held = self.room.try_take(submission.bytes()).ok_or(QueueFull)?;
        self.sender
            .send(Queued {
                submission,
                _held: held,
            })
            // The publisher is gone (the process is stopping): no room either.
            .map_err(|_| QueueFull)
    }

    /// Bytes queued now.
    pub fn bytes(&self) -> usize {
        self.room.used()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(excluded: usize) -> Submission {
        Submission {
            row: RowMeta {
                request_id: 1,
                deadline_unix_ms: 0,
                k: 10,
                exclude: vec![0; excluded],
            },
            history: vec![1, 2, 3],
            deadline: Instant::now(),
        }
    }

    /// Issue 7, item 9: the queue held up to 65,536 requests whatever
    /// their size.
    #[test]
    fn holds_at_most_its_bytes_until_the_publisher_takes_them() {
        let big = submission(10_000);
        let (queue, mut receiver) = submission_queue(3 * big.bytes());
        for _ in 0..3 {
            queue.try_submit(big.clone()).unwrap();
        }
        assert_eq!(queue.try_submit(big.clone()), Err(QueueFull));
        assert_eq!(queue.bytes(), 3 * big.bytes());
        let taken = receiver.try_recv().unwrap();
        assert_eq!(
            queue.try_submit(big.clone()),
            Err(QueueFull),
            "the bytes are held until the publisher is done with them"
        );
        drop(taken);
        queue.try_submit(big).unwrap();
        let small = submission(0);
        assert!(small.bytes() < 200);
    }

    #[test]
    fn a_stopped_publisher_refuses_everything() {
        let (queue, receiver) = submission_queue(1 << 20);
        drop(receiver);
        assert_eq!(queue.try_submit(submission(0)), Err(QueueFull));
        assert_eq!(queue.bytes(), 0, "refused bytes are given back");
    }
}
