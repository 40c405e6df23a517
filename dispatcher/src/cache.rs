//! Recent answers, keyed by model version and input, so a listener who asks
//! twice (or many listeners with the same popular playlist) cost one pass.
//! Least recently used entries go first; entries also expire.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

pub struct Cache<K, V> {
    entries: HashMap<K, (V, Instant, u64)>,
    /// Use tick → key, oldest first.
    order: BTreeMap<u64, K>,
    tick: u64,
    capacity: usize,
    ttl: Duration,
}

impl<K: Hash + Eq + Clone, V: Clone> Cache<K, V> {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Cache {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            capacity,
            ttl,
        }
    }

    pub fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        let (value, inserted, used) = self.entries.get_mut(key)?;
        if now.duration_since(*inserted) > self.ttl {
            let used = *used;
            self.entries.remove(key);
            self.order.remove(&used);
            return None;
        }
        self.order.remove(used);
        self.tick += 1;
        *used = self.tick;
        self.order.insert(self.tick, key.clone());
        Some(value.clone())
    }

    pub fn insert(&mut self, key: K, value: V, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        self.tick += 1;
        if let Some((_, _, used)) = self.entries.insert(key.clone(), (value, now, self.tick)) {
            self.order.remove(&used);
        }
        self.order.insert(self.tick, key);
        while self.entries.len() > self.capacity {
            let (_, oldest) = self.order.pop_first().expect("order tracks every entry");
            self.entries.remove(&oldest);
        }
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

    #[test]
    fn evicts_the_least_recently_used() {
        let t = Instant::now();
        let mut c = Cache::new(2, Duration::from_secs(60));
        c.insert("a", 1, t);
        c.insert("b", 2, t);
        assert_eq!(c.get(&"a", t), Some(1));
        c.insert("c", 3, t);
        assert_eq!(c.get(&"b", t), None, "b was used least recently");
        assert_eq!(c.get(&"a", t), Some(1));
        assert_eq!(c.get(&"c", t), Some(3));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn entries_expire() {
        let t = Instant::now();
        let mut c = Cache::new(10, Duration::from_secs(5));
        c.insert("a", 1, t);
        assert_eq!(c.get(&"a", t + Duration::from_secs(5)), Some(1));
        assert_eq!(c.get(&"a", t + Duration::from_secs(6)), None);
        assert!(c.is_empty());
    }

    #[test]
    fn reinserting_replaces_without_growing() {
        let t = Instant::now();
        let mut c = Cache::new(2, Duration::from_secs(60));
        c.insert("a", 1, t);
        c.insert("a", 2, t);
        c.insert("b", 3, t);
        assert_eq!(c.get(&"a", t), Some(2));
        assert_eq!(c.len(), 2);
    }
}
