//! The requests waiting for the pipeline, keyed by request id: each output
//! shard's top-k is collected until all have answered, then merged into
//! one answer. At-least-once delivery and retries mean a shard may answer
//! twice, and answers may come after their request has ended; both are
//! told apart and ignored. Pure; `R` is how the waiting request is told.

use setlist_core::query::merge_top_k;
use setlist_core::wire::{Hop, Scored};
use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;

/// What the pipeline answered for one request: the merged top-k and, per
/// shard, the hops its frame took.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub scored: Vec<Scored>,
    pub hops: Vec<Vec<Hop>>,
}

/// What became of one shard's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Offer<R> {
    /// The last missing shard: tell `R` the merged answer.
    Complete(R, Answer),
    /// Kept; other shards have yet to answer.
    Partial,
    /// This shard had already answered (a redelivered or retried frame).
    Duplicate,
    /// No request waits for it any more (answered, given up, or gone).
    Late,
    /// A shard number this plan does not have.
    UnknownShard,
}

#[derive(Debug)]
struct Waiting<R> {
    k: usize,
    shards: Vec<Option<(Vec<Scored>, Vec<Hop>)>>,
    answered: bool,
    reply: R,
}

#[derive(Debug)]
pub struct RequestTable<R> {
    entries: HashMap<u128, Waiting<R>>,
    shards: usize,
}

impl<R: Clone> RequestTable<R> {
    /// A table for a plan with `shards` output shards.
    pub fn new(shards: usize) -> Self {
        RequestTable {
            entries: HashMap::new(),
            shards,
        }
    }

    /// Starts waiting for request `id`'s top `k`. False (and nothing
    /// changes) when `id` is already waiting.
    pub fn insert(&mut self, id: u128, k: usize, reply: R) -> bool {
        match self.entries.entry(id) {
            Slot::Occupied(_) => false,
            Slot::Vacant(slot) => {
                slot.insert(Waiting {
                    k,
                    shards: vec![None; self.shards],
                    answered: false,
                    reply,
                });
                true
            }
        }
    }

    /// One shard's top-k for request `id`.
    pub fn offer(&mut self, id: u128, shard: usize, list: Vec<Scored>, hops: Vec<Hop>) -> Offer<R> {
        if shard >= self.shards {
            return Offer::UnknownShard;
        }
        let Some(request) = self.entries.get_mut(&id) else {
            return Offer::Late;
        };
        if request.answered {
            return Offer::Late;
        }
        if request.shards[shard].is_some() {
            return Offer::Duplicate;
        }
        request.shards[shard] = Some((list, hops));
        if request.shards.iter().any(Option::is_none) {
            return Offer::Partial;
        }
        request.answered = true;
        let (lists, hops): (Vec<Vec<Scored>>, Vec<Vec<Hop>>) =
            request.shards.iter_mut().filter_map(Option::take).unzip();
        Offer::Complete(
            request.reply.clone(),
            Answer {
                scored: merge_top_k(&lists, request.k),
                hops,
            },
        )
    }

    /// An attempt of request `id` could not be published: who to tell,
    /// unless it has been answered or is gone. The request keeps waiting
    /// (another attempt, or an earlier one, may still answer).
    pub fn fail(&self, id: u128) -> Option<R> {
        self.entries
            .get(&id)
            .filter(|r| !r.answered)
            .map(|r| r.reply.clone())
    }

    /// The request ended (answered, expired, or its client left): results
    /// still on their way are late from now on.
    pub fn remove(&mut self, id: u128) -> bool {
        self.entries.remove(&id).is_some()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(pairs: &[(u32, f32)]) -> Vec<Scored> {
        pairs
            .iter()
            .map(|&(track, score)| Scored { track, score })
            .collect()
    }

    fn hop(stage: u16) -> Vec<Hop> {
        vec![Hop {
            stage,
            queue_us: 1,
            compute_us: 2,
            sent_unix_us: 3,
        }]
    }

    #[test]
    fn completes_once_every_shard_answered_with_the_merged_top_k() {
        let mut table = RequestTable::new(2);
        assert!(table.insert(7, 2, "reply-7"));
        assert_eq!(
            table.offer(7, 1, scored(&[(10, 0.9), (11, 0.1)]), hop(3)),
            Offer::Partial
        );
        let Offer::Complete(reply, answer) =
            table.offer(7, 0, scored(&[(1, 0.5), (2, 0.4)]), hop(2))
        else {
            panic!("both shards answered")
        };
        assert_eq!(reply, "reply-7");
        assert_eq!(answer.scored, scored(&[(10, 0.9), (1, 0.5)]));
        assert_eq!(answer.hops, vec![hop(2), hop(3)], "in shard order");
    }

    #[test]
    fn duplicates_and_late_results_are_told_apart() {
        let mut table = RequestTable::new(2);
        table.insert(1, 5, ());
        table.offer(1, 0, scored(&[(1, 0.5)]), hop(2));
        assert_eq!(
            table.offer(1, 0, scored(&[(1, 0.5)]), hop(2)),
            Offer::Duplicate
        );
        assert!(matches!(
            table.offer(1, 1, scored(&[(2, 0.4)]), hop(3)),
            Offer::Complete(..)
        ));
        assert_eq!(
            table.offer(1, 1, scored(&[(2, 0.4)]), hop(3)),
            Offer::Late,
            "answered already"
        );
        assert!(table.remove(1));
        assert_eq!(table.offer(1, 0, scored(&[]), hop(2)), Offer::Late);
        assert_eq!(table.offer(99, 0, scored(&[]), hop(2)), Offer::Late);
        assert_eq!(table.offer(1, 2, scored(&[]), hop(4)), Offer::UnknownShard);
        assert!(table.is_empty());
    }

    #[test]
    fn a_publish_failure_tells_the_request_until_it_is_answered() {
        let mut table = RequestTable::new(1);
        table.insert(1, 5, "r");
        assert_eq!(table.fail(1), Some("r"));
        assert_eq!(table.len(), 1, "it keeps waiting for another attempt");
        assert!(matches!(
            table.offer(1, 0, scored(&[(3, 1.0)]), hop(1)),
            Offer::Complete("r", _)
        ));
        assert_eq!(table.fail(1), None);
        assert_eq!(table.fail(2), None);
    }

    #[test]
    fn an_id_waits_once() {
        let mut table = RequestTable::new(1);
        assert!(table.insert(1, 5, "first"));
        assert!(!table.insert(1, 5, "second"));
        assert!(matches!(
            table.offer(1, 0, scored(&[]), hop(1)),
            Offer::Complete("first", _)
        ));
        assert!(table.remove(1));
        assert!(!table.remove(1));
    }
}
