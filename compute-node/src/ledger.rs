//! At-least-once bookkeeping: which consumed offsets wait for which produced
//! messages. A batch's input offsets are stored only once Kafka has settled
//! every message the batch produced (its outputs and its dead letters), and
//! batches settle in the order they were consumed, so a crash never skips
//! a frame: whatever was not stored is consumed again. Pure: no Kafka here.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

/// A topic partition.
pub type Partition = (String, i32);

/// A consumed message's position: topic, partition, offset.
pub type Position = (String, i32, i64);

/// One consumed batch, numbered in consumption order.
pub type BatchId = u64;

/// Batches whose messages Kafka has not settled yet, oldest first. `M` is
/// what the worker keeps about each message until its delivery report (what
/// to dead-letter should Kafka refuse it).
#[derive(Debug)]
pub struct Ledger<M> {
    batches: VecDeque<Batch<M>>,
    next_batch: BatchId,
    next_message: usize,
}

#[derive(Debug)]
struct Batch<M> {
    id: BatchId,
    positions: Vec<Position>,
    outstanding: HashMap<usize, M>,
    started: Instant,
    /// The brokers failed a message of this batch: it must be processed
    /// again, so neither it nor any later batch ever stores its offsets.
    broken: bool,
}

/// A batch whose output Kafka settled: the offsets to store (the next one
/// to read, per partition) and when it was consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub next_offsets: Vec<(Partition, i64)>,
    pub started: Instant,
}

impl<M> Default for Ledger<M> {
    fn default() -> Self {
        Ledger {
            batches: VecDeque::new(),
            next_batch: 0,
            next_message: 0,
        }
    }
}

impl<M> Ledger<M> {
    /// A batch of messages consumed at `now`, at `positions`.
    pub fn open(&mut self, positions: Vec<Position>, now: Instant) -> BatchId {
        let id = self.next_batch;
        self.next_batch += 1;
        self.batches.push_back(Batch {
            id,
            positions,
            outstanding: HashMap::new(),
            started: now,
            broken: false,
        });
        id
    }

    /// A message of `batch` about to be handed to Kafka; returns its key
    /// (the delivery opaque its report comes back with). `None` if the
    /// batch is no longer in flight, which would be a bug.
    pub fn sending(&mut self, batch: BatchId, message: M) -> Option<usize> {
        let key = self.next_message;
        let batch = self.batches.iter_mut().find(|b| b.id == batch)?;
        self.next_message = self.next_message.wrapping_add(1);
        batch.outstanding.insert(key, message);
        Some(key)
    }

    /// Kafka settled the message `key`, delivered or not (or took it back
    /// at once): it no longer holds its batch back. Returns its batch and
    /// what was kept about it, for a failure to be dealt with; `None` for a
    /// key already settled.
    pub fn settle_message(&mut self, key: usize) -> Option<(BatchId, M)> {
        self.batches.iter_mut().find_map(|b| {
            let message = b.outstanding.remove(&key)?;
            Some((b.id, message))
        })
    }

    /// The brokers failed a message of `batch`.
    pub fn break_batch(&mut self, batch: BatchId) {
        if let Some(b) = self.batches.iter_mut().find(|b| b.id == batch) {
            b.broken = true;
        }
    }

    /// Takes the settled batches off the front, in order: each has every
    /// message settled and none broken. Stops at the first that has not.
    pub fn settled(&mut self) -> Vec<Settled> {
        let mut done = Vec::new();
        while let Some(front) = self.batches.front()
            && front.outstanding.is_empty()
            && !front.broken
        {
            let batch = self.batches.pop_front().expect("checked above");
            let mut next: BTreeMap<Partition, i64> = BTreeMap::new();
            for (topic, partition, offset) in batch.positions {
                let slot = next.entry((topic, partition)).or_insert(offset + 1);
                *slot = (*slot).max(offset + 1);
            }
            done.push(Settled {
                next_offsets: next.into_iter().collect(),
                started: batch.started,
            });
        }
        done
    }

    /// Batches still in flight.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// Messages Kafka has not settled.
    pub fn outstanding(&self) -> usize {
        self.batches.iter().map(|b| b.outstanding.len()).sum()
    }

    /// Whether waiting longer could settle anything more: false once every
    /// batch has settled, or the oldest is broken (it never will).
    pub fn can_settle(&self) -> bool {
        self.batches.front().is_some_and(|b| !b.broken)
    }
}

/// The offsets this node stored and those the group coordinator confirmed
/// committing, per partition, so stopping can tell whether its last
/// offsets were committed (and say which were not).
#[derive(Debug, Default)]
pub struct Commits {
    stored: HashMap<Partition, i64>,
    confirmed: HashMap<Partition, i64>,
}

impl Commits {
    pub fn stored(&mut self, partition: Partition, next_offset: i64) {
        self.stored.insert(partition, next_offset);
    }

    pub fn confirmed(&mut self, partition: Partition, next_offset: i64) {
        let slot = self.confirmed.entry(partition).or_insert(next_offset);
        *slot = (*slot).max(next_offset);
    }

    /// The group coordinator has every stored offset already.
    pub fn all_confirmed(&mut self) {
        let stored: Vec<(Partition, i64)> =
            self.stored.iter().map(|(p, n)| (p.clone(), *n)).collect();
        for (partition, next) in stored {
            self.confirmed(partition, next);
        }
    }

    /// Forgets partitions outside `assigned`: those moved to another member,
    /// whose commits this node neither makes nor hears of any more.
    pub fn keep_only(&mut self, assigned: &[Partition]) {
        self.stored.retain(|p, _| assigned.contains(p));
    }

    /// Partitions whose stored offset is not confirmed committed yet.
    pub fn pending(&self) -> Vec<&Partition> {
        let mut pending: Vec<&Partition> = self
            .stored
            .iter()
            .filter(|(p, next)| self.confirmed.get(*p).is_none_or(|c| c < next))
            .map(|(p, _)| p)
            .collect();
        pending.sort();
        pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(topic: &str, partition: i32, offset: i64) -> Position {
        (topic.to_string(), partition, offset)
    }

    fn part(partition: i32) -> Partition {
        ("in".to_string(), partition)
    }

    #[test]
    fn offsets_wait_for_every_message_of_their_batch() {
        let now = Instant::now();
        let mut ledger = Ledger::default();
        let batch = ledger.open(vec![at("in", 0, 7), at("in", 1, 3), at("in", 0, 8)], now);
        let output = ledger.sending(batch, "output").unwrap();
        let dead_letter = ledger.sending(batch, "dead letter").unwrap();
        assert!(ledger.settled().is_empty());
        assert_eq!(ledger.settle_message(output), Some((batch, "output")));
        assert!(ledger.settled().is_empty(), "one message is still out");
        assert_eq!(ledger.settle_message(output), None, "a report counts once");
        ledger.settle_message(dead_letter);
        assert_eq!(
            ledger.settled(),
            [Settled {
                next_offsets: vec![(part(0), 9), (part(1), 4)],
                started: now,
            }]
        );
        assert_eq!(ledger.len(), 0);
        assert!(!ledger.can_settle());
    }

    #[test]
    fn batches_settle_in_consumption_order() {
        let now = Instant::now();
        let mut ledger = Ledger::default();
        let first = ledger.open(vec![at("in", 0, 1)], now);
        let second = ledger.open(vec![at("in", 0, 2)], now);
        let slow = ledger.sending(first, ()).unwrap();
        let fast = ledger.sending(second, ()).unwrap();
        ledger.settle_message(fast);
        assert!(
            ledger.settled().is_empty(),
            "storing offset 2 before offset 1 settles would skip frame 1 on a crash"
        );
        ledger.settle_message(slow);
        let settled = ledger.settled();
        let offsets: Vec<_> = settled.iter().map(|s| s.next_offsets.clone()).collect();
        assert_eq!(offsets, [vec![(part(0), 2)], vec![(part(0), 3)]]);
    }

    #[test]
    fn a_batch_with_no_messages_settles_at_once() {
        let mut ledger: Ledger<()> = Ledger::default();
        ledger.open(vec![at("in", 2, 40)], Instant::now());
        assert_eq!(ledger.settled()[0].next_offsets, [(part(2), 41)]);
    }

    #[test]
    fn a_broken_batch_never_stores_and_holds_back_every_later_one() {
        let now = Instant::now();
        let mut ledger = Ledger::default();
        let first = ledger.open(vec![at("in", 0, 1)], now);
        let second = ledger.open(vec![at("in", 0, 2)], now);
        let failed = ledger.sending(first, ()).unwrap();
        ledger.settle_message(failed);
        ledger.break_batch(first);
        let delivered = ledger.sending(second, ()).unwrap();
        ledger.settle_message(delivered);
        assert!(ledger.settled().is_empty());
        assert_eq!(ledger.len(), 2);
        assert!(!ledger.can_settle(), "waiting cannot help a broken batch");
    }

    #[test]
    fn messages_of_a_batch_no_longer_in_flight_are_refused() {
        let mut ledger: Ledger<()> = Ledger::default();
        let batch = ledger.open(Vec::new(), Instant::now());
        ledger.settled();
        assert_eq!(ledger.sending(batch, ()), None);
    }

    #[test]
    fn outstanding_counts_unsettled_messages() {
        let mut ledger = Ledger::default();
        let batch = ledger.open(Vec::new(), Instant::now());
        let a = ledger.sending(batch, ()).unwrap();
        ledger.sending(batch, ());
        assert_eq!(ledger.outstanding(), 2);
        ledger.settle_message(a);
        assert_eq!(ledger.outstanding(), 1);
        assert!(ledger.can_settle());
    }

    #[test]
    fn nothing_left_to_commit_confirms_every_stored_offset() {
        let mut commits = Commits::default();
        commits.stored(part(0), 8);
        commits.stored(part(1), 3);
        commits.confirmed(part(1), 5);
        commits.all_confirmed();
        assert!(commits.pending().is_empty());
        commits.stored(part(1), 6);
        assert_eq!(commits.pending(), [&part(1)], "a later offset is new again");
    }

    #[test]
    fn commits_are_pending_until_confirmed_at_or_past_the_stored_offset() {
        let mut commits = Commits::default();
        commits.stored(part(0), 10);
        commits.stored(part(1), 5);
        assert_eq!(commits.pending(), [&part(0), &part(1)]);
        commits.confirmed(part(0), 9);
        commits.confirmed(part(1), 5);
        assert_eq!(commits.pending(), [&part(0)]);
        commits.confirmed(part(0), 11);
        // An older confirmation arriving late does not undo a newer one.
        commits.confirmed(part(0), 3);
        assert!(commits.pending().is_empty());
    }

    #[test]
    fn a_partition_moved_to_another_member_is_no_longer_waited_for() {
        let mut commits = Commits::default();
        commits.stored(part(0), 10);
        commits.stored(part(1), 5);
        commits.keep_only(&[part(1)]);
        assert_eq!(commits.pending(), [&part(1)]);
    }
}
