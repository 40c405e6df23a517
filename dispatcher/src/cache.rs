//! Recent answers, keyed by the model's input, so a listener who asks
//! twice (or many listeners with the same popular playlist) cost one pass.
//!
//! Bounded by bytes, not entries: a key holds up to 10,000 excluded tracks
//! (40 KB), so ten thousand entries could be most of a gigabyte. Entries
//! also expire. Admission and eviction are `moka`'s TinyLFU, which keeps a
//! popular playlist's answer over a flood of one-off ones; evictions are
//! counted by cause.

use crate::requests::Answer;
use moka::notification::RemovalCause;
use prometheus::IntCounterVec;
use setlist_core::wire::Scored;
use std::sync::Arc;
use std::time::Duration;

/// The model's input for one answer (within one model version: a
/// dispatcher serves one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AnswerKey {
    pub history: Vec<u32>,
    /// Sorted, so equal sets are equal keys.
    pub exclude: Vec<u32>,
    pub k: usize,
}

/// What an entry costs beyond its key and value: moka's own bookkeeping
/// and the allocations' headers, near enough.
const ENTRY_OVERHEAD: usize = 160;

/// The label an eviction is counted under, if it is one.
pub fn eviction_cause(cause: RemovalCause) -> Option<&'static str> {
    match cause {
        RemovalCause::Size => Some("size"),
        RemovalCause::Expired => Some("expired"),
        RemovalCause::Explicit | RemovalCause::Replaced => None,
    }
}

/// Counts `store`'s evictions in `evictions` (labels: store, cause).
pub fn count_evictions<K, V>(
    evictions: &IntCounterVec,
    store: &'static str,
) -> impl Fn(Arc<K>, V, RemovalCause) + Send + Sync + 'static {
    for cause in ["size", "expired"] {
        evictions.with_label_values(&[store, cause]);
    }
    let evictions = evictions.clone();
    move |_, _, cause| {
        if let Some(cause) = eviction_cause(cause) {
            evictions.with_label_values(&[store, cause]).inc();
        }
    }
}

pub struct AnswerCache {
    entries: moka::sync::Cache<AnswerKey, Arc<[Scored]>>,
}

impl AnswerCache {
    /// Holds at most `max_bytes` (0: nothing) for `ttl` each.
    pub fn new(max_bytes: u64, ttl: Duration, evictions: &IntCounterVec) -> AnswerCache {
        AnswerCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &AnswerKey, value: &Arc<[Scored]>| weight(key, value))
                .time_to_live(ttl)
                .eviction_listener(count_evictions(evictions, "answer_cache"))
                .build(),
        }
    }

    pub fn get(&self, key: &AnswerKey) -> Option<Arc<[Scored]>> {
        self.entries.get(key)
    }

    pub fn insert(&self, key: AnswerKey, answer: &Answer) {
        self.entries.insert(key, answer.scored.as_slice().into());
    }

    /// Bytes held, once pending bookkeeping is done.
    pub fn bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}

fn weight(key: &AnswerKey, value: &[Scored]) -> u32 {
    let bytes = ENTRY_OVERHEAD
        + size_of::<AnswerKey>()
        + size_of::<u32>() * (key.history.len() + key.exclude.len())
        + size_of_val(value);
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn evictions() -> IntCounterVec {
        IntCounterVec::new(Opts::new("evictions", "Evictions."), &["store", "cause"]).unwrap()
    }

    fn key(i: u32, excluded: usize) -> AnswerKey {
        AnswerKey {
            history: vec![i],
            exclude: (0..excluded as u32).collect(),
            k: 20,
        }
    }

    fn answer() -> Answer {
        Answer {
            scored: (0..20).map(|track| Scored { track, score: 0.5 }).collect(),
            hops: vec![],
        }
    }

    #[test]
    fn answers_come_back_for_the_same_input_only() {
        let cache = AnswerCache::new(1 << 20, Duration::from_secs(60), &evictions());
        cache.insert(key(1, 3), &answer());
        assert_eq!(cache.get(&key(1, 3)).unwrap().len(), 20);
        assert!(cache.get(&key(1, 4)).is_none());
        assert!(cache.get(&key(2, 3)).is_none());
    }

    /// Issue 7, item 9: the cache was bounded by entries, so large keys
    /// could hold most of a gigabyte.
    #[test]
    fn the_cache_never_holds_more_than_its_bytes_and_counts_evictions() {
        let evictions = evictions();
        let max_bytes = 1 << 20;
        let cache = AnswerCache::new(max_bytes, Duration::from_secs(60), &evictions);
        let big = weight(&key(0, 10_000), &answer().scored) as u64;
        assert!(
            big > 40_000,
            "a key of 10,000 excludes weighs what it holds"
        );
        for i in 0..100 {
            cache.insert(key(i, 10_000), &answer());
        }
        assert!(cache.bytes() <= max_bytes, "{} bytes", cache.bytes());
        assert!(cache.bytes() >= max_bytes - 2 * big, "it is not left empty");
        let evicted = evictions.with_label_values(&["answer_cache", "size"]).get();
        assert!(evicted >= 100 - max_bytes / big, "{evicted} evictions");
    }

    #[test]
    fn a_zero_byte_cache_holds_nothing() {
        let cache = AnswerCache::new(0, Duration::from_secs(60), &evictions());
        cache.insert(key(1, 0), &answer());
        assert_eq!(cache.bytes(), 0);
        assert!(cache.get(&key(1, 0)).is_none());
    }

    #[test]
    fn explicit_removals_are_not_evictions() {
        assert_eq!(eviction_cause(RemovalCause::Replaced), None);
        assert_eq!(eviction_cause(RemovalCause::Explicit), None);
        assert_eq!(eviction_cause(RemovalCause::Size), Some("size"));
        assert_eq!(eviction_cause(RemovalCause::Expired), Some("expired"));
    }
}
