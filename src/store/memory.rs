//! In-memory counters with a bounded number of keys.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::limits::Counter;

/// The key table is at its configured bound and holds no expired counter to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("counter table is full ({capacity} keys)")]
pub struct KeyTableFull {
    pub capacity: usize,
}

/// The most shard actors one engine spreads keys over.
pub const MAX_SHARDS: usize = 1 << 16;

/// The hash of counter keys, randomly seeded (keys are client-controlled).
///
/// Every table of one engine shares one, so a key is hashed once per call: the engine routes
/// the key to its actor by [`HashedKey::shard`], and the actor's table files it by the same
/// hash.
#[derive(Clone, Debug, Default)]
pub struct KeyHasher(foldhash::quality::RandomState);

impl KeyHasher {
    pub fn hash<'k>(&self, key: &'k [u8]) -> HashedKey<'k> {
        HashedKey {
            key,
            hash: self.0.hash_one(key),
        }
    }
}

impl<'k> HashedKey<'k> {
    /// A key with the hash its [`KeyHasher`] gave it before (kept apart while the key's
    /// bytes were still being written).
    pub(crate) fn with_hash(key: &'k [u8], hash: u64) -> HashedKey<'k> {
        HashedKey { key, hash }
    }

    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    /// Which of `shards` (at most [`MAX_SHARDS`]) owns the key. Taken from bits 24 to 55,
    /// which a table leaves alone: it indexes by the low bits (fewer than 24 up to 16 million
    /// buckets) and tags entries with the top 7, so keys that share a shard still spread over
    /// its buckets and tags; 32 bits spread evenly over any number of shards up to the bound.
    /// They are scaled to the count by a multiply and a shift rather than a division (which
    /// costs tens of cycles, on every key of every call).
    pub fn shard(&self, shards: usize) -> usize {
        let bits = u64::from((self.hash >> 24) as u32);
        ((bits * shards as u64) >> 32) as usize
    }
}

/// Keys up to this long are stored in the table's slot itself; longer ones on the heap.
const INLINE_KEY_BYTES: usize = 46;
// An inline key's length is kept in a byte.
const _: () = assert!(INLINE_KEY_BYTES <= u8::MAX as usize);

/// A counter key as its table holds it. Inline, a lookup that finds the key compares it on the
/// cache line it already read for the slot, instead of missing the cache once more behind a
/// pointer (each cold counter costs a miss fewer), and a new counter allocates nothing.
#[derive(Debug)]
enum StoredKey {
    Inline {
        len: u8,
        bytes: [u8; INLINE_KEY_BYTES],
    },
    Heap(Box<[u8]>),
}

impl StoredKey {
    fn new(key: &[u8]) -> StoredKey {
        let mut bytes = [0; INLINE_KEY_BYTES];
        match bytes.get_mut(..key.len()) {
            Some(inline) => {
                inline.copy_from_slice(key);
                StoredKey::Inline {
                    len: key.len() as u8,
                    bytes,
                }
            }
            None => StoredKey::Heap(key.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            StoredKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            StoredKey::Heap(bytes) => bytes,
        }
    }
}

/// One counter with its key: one cache line.
#[derive(Debug)]
#[repr(align(64))]
struct Slot {
    counter: Counter,
    key: StoredKey,
}

/// One actor's counters. Keys are opaque bytes built by the engine.
///
/// A turn hashes each key once ([`KeyHasher::hash`]) and reads, creates and writes it with
/// that hash: three lookups of a key cost one hash.
#[derive(Debug)]
pub struct MemoryCounters {
    table: HashTable<Slot>,
    // The same hasher as the keys it is given: growing the table hashes stored keys again.
    hasher: KeyHasher,
    capacity: usize,
    last_full_sweep: u64,
    /// Changes whenever entries may have moved or gone (a key added, a sweep), so that a
    /// [`Found`] from before is not trusted.
    shape: u64,
}

/// Where [`MemoryCounters::find`] found a key: the write that follows in the same turn goes
/// straight to it instead of searching again, unless the table has changed shape in between.
#[derive(Clone, Copy, Debug)]
pub struct Found {
    bucket: usize,
    shape: u64,
}

/// A key with its hash. Every table a key is used with must share the [`KeyHasher`] that
/// hashed it: with another, a lookup may miss a stored key and a write may file the key under a
/// hash no lookup makes.
#[derive(Clone, Copy, Debug, Eq)]
pub struct HashedKey<'k> {
    key: &'k [u8],
    hash: u64,
}

impl HashedKey<'_> {
    /// Whether a table entry is this key (the table has already matched the hash).
    fn stored_in(&self, slot: &Slot) -> bool {
        slot.key.as_bytes() == self.key
    }
}

/// The same key: the hash compared first, the bytes only when it matches.
impl PartialEq for HashedKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.key == other.key
    }
}

impl MemoryCounters {
    pub fn new(capacity: usize, hasher: KeyHasher) -> MemoryCounters {
        MemoryCounters {
            table: HashTable::new(),
            hasher,
            capacity,
            last_full_sweep: 0,
            shape: 0,
        }
    }

    /// A key hashed by another hasher would be filed twice, its count split. That must never
    /// happen; debug builds (the tests) check it.
    fn debug_check(&self, key: HashedKey<'_>) {
        debug_assert_eq!(
            self.hasher.hash(key.key).hash,
            key.hash,
            "a key hashed by another KeyHasher"
        );
    }

    #[cfg(test)]
    fn get(&self, key: HashedKey<'_>) -> Option<&Counter> {
        self.find(key).map(|(_, counter)| counter)
    }

    /// The counter of `key`, and where it is for a write later in the same turn.
    pub fn find(&self, key: HashedKey<'_>) -> Option<(Found, &Counter)> {
        self.debug_check(key);
        let bucket = self
            .table
            .find_bucket_index(key.hash, |slot| key.stored_in(slot))?;
        let slot = self.table.get_bucket(bucket)?;
        let found = Found {
            bucket,
            shape: self.shape,
        };
        Some((found, &slot.counter))
    }

    /// The slot `found` points to, if it is still where it was found and still `key`'s. The
    /// key is compared again (on the line just read): a `Found` from another table, or of
    /// another key, is never written through.
    fn slot_at(&mut self, key: HashedKey<'_>, found: Option<Found>) -> Option<&mut Slot> {
        let found = found.filter(|f| f.shape == self.shape)?;
        self.table
            .get_bucket_mut(found.bucket)
            .filter(|slot| key.stored_in(slot))
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Whether `new_keys` more keys fit (after dropping expired counters, at most once a
    /// second, so that a full table costs no more than an empty one).
    pub fn make_room(&mut self, new_keys: usize, now_secs: u64) -> Result<(), KeyTableFull> {
        let fits = |table: &Self| table.table.len().saturating_add(new_keys) <= table.capacity;
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

    /// Stores `counter` under `key`, where [`Self::find`] found it if it did; for a new key,
    /// check [`Self::make_room`] first.
    pub fn put(&mut self, key: HashedKey<'_>, found: Option<Found>, counter: Counter) {
        self.debug_check(key);
        if let Some(slot) = self.slot_at(key, found) {
            slot.counter = counter;
            return;
        }
        let hasher = &self.hasher;
        match self.table.entry(
            key.hash,
            |slot| key.stored_in(slot),
            |slot| hasher.hash(slot.key.as_bytes()).hash,
        ) {
            Entry::Occupied(mut slot) => slot.get_mut().counter = counter,
            Entry::Vacant(slot) => {
                slot.insert(Slot {
                    counter,
                    key: StoredKey::new(key.key),
                });
                self.shape += 1;
            }
        }
    }

    /// Updates `key` only if it is stored (a refund never creates a counter).
    pub fn update(&mut self, key: HashedKey<'_>, found: Option<Found>, counter: Counter) {
        self.debug_check(key);
        if let Some(slot) = self.slot_at(key, found) {
            slot.counter = counter;
        } else if let Some(slot) = self.table.find_mut(key.hash, |slot| key.stored_in(slot)) {
            slot.counter = counter;
        }
    }

    /// Drops every counter whose window has ended; returns how many.
    pub fn sweep(&mut self, now_secs: u64) -> usize {
        let before = self.table.len();
        // Erasing moves no other entry, but a bucket swept may be filled by another key later.
        self.shape += 1;
        self.table.retain(|slot| slot.counter.is_live(now_secs));
        before - self.table.len()
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
        let keys = KeyHasher::default();
        let mut table = MemoryCounters::new(3, keys.clone());
        assert!(table.make_room(3, 0).is_ok());
        assert_eq!(table.make_room(4, 0), Err(KeyTableFull { capacity: 3 }));
        for key in [b"a", b"b"] {
            table.put(keys.hash(key), None, counter(60));
        }
        assert!(table.make_room(1, 10).is_ok());
        assert_eq!(table.make_room(2, 10), Err(KeyTableFull { capacity: 3 }));
        // Once the windows have ended, the sweep inside make_room frees the table.
        assert!(table.make_room(3, 60).is_ok());
        assert!(table.is_empty());
    }

    #[test]
    fn refund_updates_never_create_keys() {
        let keys = KeyHasher::default();
        let mut table = MemoryCounters::new(4, keys.clone());
        table.update(keys.hash(b"a"), None, counter(60));
        assert!(table.get(keys.hash(b"a")).is_none());
        table.put(keys.hash(b"a"), None, counter(60));
        table.update(
            keys.hash(b"a"),
            None,
            Counter {
                window_end: 60,
                count: 0,
            },
        );
        assert_eq!(table.get(keys.hash(b"a")).map(|c| c.count), Some(0));
    }

    #[test]
    fn keys_of_every_length_are_kept_apart_inline_and_on_the_heap() {
        let keys = KeyHasher::default();
        let mut table = MemoryCounters::new(64, keys.clone());
        // Around the inline bound, and keys that are prefixes of one another.
        let lengths = [
            0,
            1,
            INLINE_KEY_BYTES - 1,
            INLINE_KEY_BYTES,
            INLINE_KEY_BYTES + 1,
            300,
        ];
        let names: Vec<Vec<u8>> = lengths.iter().map(|&n| vec![b'k'; n]).collect();
        for (i, name) in names.iter().enumerate() {
            table.put(keys.hash(name), None, counter(60 + i as u64));
        }
        let stored = |name: &[u8]| {
            let slot = table.table.iter().find(|s| s.key.as_bytes() == name);
            slot.map(|s| matches!(s.key, StoredKey::Inline { .. }))
        };
        assert_eq!(stored(&names[3]), Some(true), "at the bound: inline");
        assert_eq!(stored(&names[4]), Some(false), "past it: on the heap");
        for (i, name) in names.iter().enumerate() {
            let stored = table.get(keys.hash(name)).map(|c| c.window_end);
            assert_eq!(stored, Some(60 + i as u64), "key of {} bytes", name.len());
        }
        assert_eq!(table.len(), lengths.len());
        assert!(table.get(keys.hash(&[b'k'; 2])).is_none());
    }

    #[test]
    fn a_write_goes_where_the_key_was_found_unless_the_table_changed_shape() {
        let keys = KeyHasher::default();
        let mut table = MemoryCounters::new(10_000, keys.clone());
        let (a, b) = (keys.hash(b"a"), keys.hash(b"b"));
        table.put(a, None, counter(60));
        table.put(b, None, counter(60));
        let (found, _) = table.find(a).expect("stored");
        assert!(table.slot_at(a, Some(found)).is_some());
        table.put(a, Some(found), counter(61));
        assert_eq!(table.get(a).map(|c| c.window_end), Some(61));
        // Never written through for another key.
        assert!(table.slot_at(b, Some(found)).is_none());
        table.put(b, Some(found), counter(62));
        assert_eq!(table.get(a).map(|c| c.window_end), Some(61));
        assert_eq!(table.get(b).map(|c| c.window_end), Some(62));
        // A new key may grow the table and move every entry: the place is not trusted after.
        table.put(keys.hash(b"c"), None, counter(60));
        assert!(table.slot_at(a, Some(found)).is_none());
        // Nor after a sweep, which may free the bucket for another key.
        let (found, _) = table.find(a).expect("stored");
        table.sweep(0);
        assert!(table.slot_at(a, Some(found)).is_none());
        // Writes with a stale place still reach the right key, after the table has grown.
        let names: Vec<String> = (0..1_000).map(|i| format!("key-{i}")).collect();
        for name in &names {
            table.put(keys.hash(name.as_bytes()), None, counter(70));
        }
        table.put(a, Some(found), counter(63));
        table.update(b, Some(found), counter(64));
        assert_eq!(table.get(a).map(|c| c.window_end), Some(63));
        assert_eq!(table.get(b).map(|c| c.window_end), Some(64));
        for name in &names {
            let stored = table.get(keys.hash(name.as_bytes())).map(|c| c.window_end);
            assert_eq!(stored, Some(70), "{name}");
        }
    }

    #[test]
    fn stored_keys_are_the_bytes_given_and_prefixes_are_other_keys() {
        let keys = KeyHasher::default();
        let long: Vec<u8> = (0..300).map(|i| i as u8).collect();
        for n in 0..=long.len() {
            let stored = StoredKey::new(&long[..n]);
            assert_eq!(stored.as_bytes(), &long[..n]);
            let slot = Slot {
                counter: counter(60),
                key: stored,
            };
            assert!(keys.hash(&long[..n]).stored_in(&slot));
            if n > 0 {
                assert!(!keys.hash(&long[..n - 1]).stored_in(&slot));
                assert!(!keys.hash(&long[1..n]).stored_in(&slot));
            }
        }
    }

    #[test]
    fn a_counter_and_its_inline_key_take_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::align_of::<Slot>(), 64);
    }

    #[test]
    fn sweep_drops_only_ended_windows() {
        let keys = KeyHasher::default();
        let mut table = MemoryCounters::new(4, keys.clone());
        table.put(keys.hash(b"old"), None, counter(60));
        table.put(keys.hash(b"new"), None, counter(120));
        assert_eq!(table.sweep(60), 1);
        assert!(table.get(keys.hash(b"new")).is_some());
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn keys_of_one_shard_still_spread_over_the_bits_a_table_uses() {
        let keys = KeyHasher::default();
        // About 3,000 keys land in one shard of 64: enough that every value of 7 bits shows up.
        let names: Vec<String> = (0..200_000).map(|i| format!("key-{i}")).collect();
        let hashes: Vec<HashedKey<'_>> = names.iter().map(|n| keys.hash(n.as_bytes())).collect();
        let in_shard_0: Vec<u64> = hashes
            .iter()
            .filter(|k| k.shard(64) == 0)
            .map(|k| k.hash)
            .collect();
        assert!(
            in_shard_0.len() > 2_000,
            "{} keys in shard 0",
            in_shard_0.len()
        );
        // Every bit a table may index by (0 to 23) and every tag bit (57 to 63) is still both
        // 0 and 1 within one shard: routing fixed none of them.
        for bit in (0..24).chain(57..64) {
            let set = in_shard_0.iter().filter(|h| *h >> bit & 1 == 1).count();
            assert!(
                set > 0 && set < in_shard_0.len(),
                "bit {bit} is fixed in shard 0"
            );
        }
        let top: std::collections::HashSet<u64> = in_shard_0.iter().map(|h| h >> 57).collect();
        assert_eq!(top.len(), 128);
        // Shard counts that are not powers of two fill evenly too.
        for shards in [3, 100] {
            let mut filled = vec![0usize; shards];
            for k in &hashes {
                filled[k.shard(shards)] += 1;
            }
            let expected = hashes.len() / shards;
            for (shard, &n) in filled.iter().enumerate() {
                assert!(
                    n.abs_diff(expected) < expected / 5,
                    "shard {shard} of {shards}: {n} keys, expected about {expected}"
                );
            }
        }
        // A count that does not divide the bits' range: no block of shards gets twice the keys
        // (as 16 bits over 40,000 shards would give the first 25,536).
        let low_half = hashes.iter().filter(|k| k.shard(40_000) < 20_000).count();
        let half = hashes.len() / 2;
        assert!(
            low_half.abs_diff(half) < half / 20,
            "{low_half} of {}",
            hashes.len()
        );
    }

    #[test]
    #[should_panic(expected = "another KeyHasher")]
    fn a_key_hashed_by_another_hasher_is_caught_in_tests() {
        let mut table = MemoryCounters::new(4, KeyHasher::default());
        table.put(KeyHasher::default().hash(b"a"), None, counter(60));
    }
}
