//! In-memory counters with a bounded number of keys.

use std::collections::HashMap;

use crate::limits::Counter;

/// The key table is at its configured bound and holds no expired counter to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("counter table is full ({capacity} keys)")]
pub struct KeyTableFull {
    pub capacity: usize,
}

/// One actor's counters. Keys are opaque bytes built by the engine.
#[derive(Debug)]
pub struct MemoryCounters {
    // Randomly seeded per table: keys are client-controlled, and the routing hash must not
    // correlate with the table's own.
    map: HashMap<Box<[u8]>, Counter, foldhash::quality::RandomState>,
    capacity: usize,
    last_full_sweep: u64,
}

impl MemoryCounters {
    pub fn new(capacity: usize) -> MemoryCounters {
        MemoryCounters {
            map: HashMap::default(),
            capacity,
            last_full_sweep: 0,
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&Counter> {
        self.map.get(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.map.contains_key(key)
    }

    /// Whether `new_keys` more keys fit (after dropping expired counters, at most once a
    /// second, so that a full table costs no more than an empty one).
    pub fn make_room(&mut self, new_keys: usize, now_secs: u64) -> Result<(), KeyTableFull> {
        let fits = |table: &Self| table.map.len().saturating_add(new_keys) <= table.capacity;
        if fits(self) {
            return Ok(());
        }
        if self.last_full_sweep != now_secs {
            self.last_full_sweep = now_secs;
            self.sweep(now_secs);
        }
        if fits(self) {
            Ok(())
        } else {
            Err(KeyTableFull {
                capacity: self.capacity,
            })
        }
    }

    /// Stores `counter` under `key`; for a new key, check [`Self::make_room`] first.
    pub fn put(&mut self, key: &[u8], counter: Counter) {
        match self.map.get_mut(key) {
            Some(slot) => *slot = counter,
            None => {
                self.map.insert(key.into(), counter);
            }
        }
    }

    /// Updates `key` only if it is stored (a refund never creates a counter).
    pub fn update(&mut self, key: &[u8], counter: Counter) {
        if let Some(slot) = self.map.get_mut(key) {
            *slot = counter;
        }
    }

    /// Drops every counter whose window has ended; returns how many.
    pub fn sweep(&mut self, now_secs: u64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, c| c.is_live(now_secs));
        before - self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(window_end: u64) -> Counter {
        Counter {
            window_end,
            count: 1,
        }
    }

    #[test]
    fn the_key_bound_holds_and_expired_keys_make_room() {
        let mut table = MemoryCounters::new(3);
        assert!(table.make_room(3, 0).is_ok());
        assert_eq!(table.make_room(4, 0), Err(KeyTableFull { capacity: 3 }));
        for key in [b"a", b"b"] {
            table.put(key, counter(60));
        }
        assert!(table.make_room(1, 10).is_ok());
        assert_eq!(table.make_room(2, 10), Err(KeyTableFull { capacity: 3 }));
        // Once the windows have ended, the sweep inside make_room frees the table.
        assert!(table.make_room(3, 60).is_ok());
        assert!(table.is_empty());
    }

    #[test]
    fn refund_updates_never_create_keys() {
        let mut table = MemoryCounters::new(4);
        table.update(b"a", counter(60));
        assert!(table.get(b"a").is_none());
        table.put(b"a", counter(60));
        table.update(
            b"a",
            Counter {
                window_end: 60,
                count: 0,
            },
        );
        assert_eq!(table.get(b"a").map(|c| c.count), Some(0));
    }

    #[test]
    fn sweep_drops_only_ended_windows() {
        let mut table = MemoryCounters::new(4);
        table.put(b"old", counter(60));
        table.put(b"new", counter(120));
        assert_eq!(table.sweep(60), 1);
        assert!(table.get(b"new").is_some());
        assert_eq!(table.len(), 1);
    }
}
