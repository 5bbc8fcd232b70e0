//! A map that forgets its oldest entries past a capacity: the timeline remembers messages and
//! parts of a session that may run for days, and a part that never finishes must not stay.

use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone)]
pub struct BoundedMap<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
    cap: usize,
}

impl<V> BoundedMap<V> {
    pub fn new(cap: usize) -> Self {
        BoundedMap {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    /// The entry for `key`, inserting `make()` (and evicting the oldest) when absent.
    pub fn entry(&mut self, key: &str, make: impl FnOnce() -> V) -> &mut V {
        if !self.map.contains_key(key) {
            while self.map.len() >= self.cap {
                match self.order.pop_front() {
                    Some(old) => {
                        self.map.remove(&old);
                    }
                    None => break,
                }
            }
            self.order.push_back(key.to_owned());
            self.map.insert(key.to_owned(), make());
        }
        // Inserted above when it was missing.
        self.map.get_mut(key).expect("entry present")
    }

    pub fn insert(&mut self, key: &str, value: V) {
        match self.map.get_mut(key) {
            Some(slot) => *slot = value,
            None => {
                self.entry(key, || value);
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let value = self.map.remove(key)?;
        self.order.retain(|k| k != key);
        Some(value)
    }

    /// Roughly the bytes held: each key twice (map and order), `value` of each value, and a
    /// fixed cost per entry for the tables.
    pub fn footprint(&self, value: impl Fn(&V) -> usize) -> usize {
        const PER_ENTRY: usize = 64;
        self.map
            .iter()
            .map(|(k, v)| 2 * k.len() + PER_ENTRY + value(v))
            .sum()
    }

    /// Keys in insertion order, oldest first.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.order.iter().filter(|k| self.map.contains_key(*k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_entries_go_first() {
        let mut m = BoundedMap::new(2);
        m.insert("a", 1);
        m.insert("b", 2);
        m.insert("a", 10);
        assert_eq!(m.get("a"), Some(&10));
        m.insert("c", 3);
        assert_eq!(m.get("a"), None, "a was the oldest");
        assert_eq!(m.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(m.remove("b"), Some(2));
        assert_eq!(m.keys().count(), 1);
        *m.entry("d", || 4) += 1;
        assert_eq!(m.get("d"), Some(&5));
    }

    #[test]
    fn footprint_grows_with_keys_and_values() {
        let mut m = BoundedMap::new(4);
        let empty = m.footprint(String::len);
        m.insert("key", "x".repeat(1000));
        assert!(m.footprint(String::len) >= empty + 1000 + 2 * "key".len());
    }
}
