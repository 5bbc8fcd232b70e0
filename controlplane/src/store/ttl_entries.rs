//! The map under the store's replica caches (`role_cache`, `agent_cache`): entries trusted
//! for a fixed time, and a bound on how many are kept. When full, the stale ones go first,
//! then everything: a refill is one store read per entry, and a cache that only forgets is
//! never wrong.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

pub(super) struct TtlEntries<K, V> {
    map: HashMap<K, (V, Instant)>,
    ttl: Duration,
    capacity: usize,
}

impl<K: Hash + Eq, V: Clone> TtlEntries<K, V> {
    pub(super) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            ttl,
            capacity,
        }
    }

    /// The entry of `key` if it was put within the TTL; an older one is dropped.
    pub(super) fn get(&mut self, key: &K) -> Option<V> {
        let (value, put) = self.map.get(key)?;
        if put.elapsed() >= self.ttl {
            self.map.remove(key);
            return None;
        }
        Some(value.clone())
    }

    pub(super) fn insert(&mut self, key: K, value: V) {
        if self.map.len() >= self.capacity {
            let ttl = self.ttl;
            self.map.retain(|_, (_, put)| put.elapsed() < ttl);
            if self.map.len() >= self.capacity {
                self.map.clear();
            }
        }
        self.map.insert(key, (value, Instant::now()));
    }

    /// Keeps the entries `keep` says yes to.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.map.retain(|k, (v, _)| keep(k, v));
    }

    pub(super) fn remove(&mut self, key: &K) {
        self.map.remove(key);
    }

    pub(super) fn clear(&mut self) {
        self.map.clear();
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_a_full_map_makes_room() {
        let mut fresh = TtlEntries::new(Duration::from_secs(60), 3);
        for i in 0..3 {
            fresh.insert(i, i * 10);
        }
        assert_eq!(fresh.get(&1), Some(10));
        fresh.insert(3, 30);
        assert_eq!(fresh.len(), 1, "nothing stale: everything went");
        assert_eq!(fresh.get(&3), Some(30));

        let mut stale = TtlEntries::new(Duration::ZERO, 3);
        stale.insert(1, 1);
        assert_eq!(stale.get(&1), None, "past its TTL");
        assert_eq!(stale.len(), 0);

        fresh.insert(4, 40);
        fresh.retain(|k, _| *k == 4);
        assert_eq!((fresh.get(&3), fresh.get(&4)), (None, Some(40)));
        fresh.remove(&4);
        assert_eq!(fresh.len(), 0);
    }
}
