//! [`CappedMap`]: a concurrent map from pre-hashed 64-bit keys to small values, in 64
//! mutex-guarded shards, holding at most a fixed number of keys. What the rate limiter
//! keeps its buckets in and the auto-ban rules their deny counts: state per client that
//! a botnet of millions of sources must not be able to grow without bound.
//!
//! At the cap a new key is refused — not stored, and counted as *untracked* — until
//! [`CappedMap::retain`] makes room; keys already stored keep working. The cap is exact
//! across shards (one shared counter). Finding a stored key is one hash-table probe under
//! an uncontended lock; a new key costs a second probe to insert (not `entry()`, which
//! would grow a full table even when the cap then refuses the key).
//!
//! Each shard sits on its own cache lines, so threads working on different shards do not
//! contend on the lock word. A poisoned lock is taken anyway: the values are plain
//! numbers that a panicking holder cannot have left half-written.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::PrehashedMap;

/// log2 of the number of shards.
const SHARD_BITS: u32 = 6;

/// Where in the 64-bit key the shard index is taken from: hashbrown uses the low bits
/// for the bucket index and the top 7 for its control bytes, so use bits from the middle.
const SHARD_SHIFT: u32 = 40;

/// A concurrent map with a hard cap on keys; see the module docs.
pub struct CappedMap<V> {
    shards: Box<[Shard<V>]>,
    /// Hard cap on stored keys.
    max_keys: usize,
    /// Keys stored over all shards; may run ahead of the maps by one per thread while an
    /// insert is being refused, never behind.
    count: AtomicUsize,
    /// Keys refused because of the cap.
    untracked: AtomicU64,
}

/// One shard, alone on its cache lines.
#[repr(align(128))]
struct Shard<V>(Mutex<PrehashedMap<V>>);

impl<V> Default for Shard<V> {
    fn default() -> Self {
        Shard(Mutex::new(PrehashedMap::default()))
    }
}

impl<V> Shard<V> {
    fn lock(&self) -> MutexGuard<'_, PrehashedMap<V>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<V> CappedMap<V> {
    /// An empty map holding at most `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        CappedMap {
            shards: (0..1_usize << SHARD_BITS)
                .map(|_| Shard::default())
                .collect(),
            max_keys,
            count: AtomicUsize::new(0),
            untracked: AtomicU64::new(0),
        }
    }

    /// Calls `f` on the value of `key`, first storing `new()` if the key is absent and
    /// the cap allows; `None` (and one more untracked key) when the cap refuses it.
    #[inline]
    pub fn update<R>(
        &self,
        key: u64,
        new: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> Option<R> {
        let mut map = self.shard(key)?;
        if let Some(value) = map.get_mut(&key) {
            return Some(f(value));
        }
        // The load keeps the counter's cache line shared while a flood holds the cap.
        if self.count.load(Ordering::Relaxed) >= self.max_keys {
            self.untracked.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self.count.fetch_add(1, Ordering::Relaxed) >= self.max_keys {
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.untracked.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut value = new();
        let result = f(&mut value);
        map.insert(key, value);
        Some(result)
    }

    /// Calls `f` on the value of `key` if stored, changing nothing else.
    #[inline]
    pub fn get<R>(&self, key: u64, f: impl FnOnce(&V) -> R) -> Option<R> {
        self.shard(key)?.get(&key).map(f)
    }

    /// Calls `f` on the value of `key` if stored, to change it; never stores a key.
    #[inline]
    pub fn get_mut<R>(&self, key: u64, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        self.shard(key)?.get_mut(&key).map(f)
    }

    /// Calls `f` on every stored key and value, one shard locked at a time.
    pub fn for_each(&self, mut f: impl FnMut(u64, &V)) {
        for shard in self.shards.iter() {
            for (key, value) in shard.lock().iter() {
                f(*key, value);
            }
        }
    }

    /// Removes `key`; whether it was stored.
    pub fn remove(&self, key: u64) -> bool {
        let removed = self.shard(key).and_then(|mut map| map.remove(&key));
        if removed.is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        removed.is_some()
    }

    /// Whether a new key would be refused now.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.count.load(Ordering::Relaxed) >= self.max_keys
    }

    /// Keeps the keys for which `keep` is true, and gives memory back when a shard's
    /// table is mostly empty. One shard locked at a time.
    pub fn retain(&self, mut keep: impl FnMut(&mut V) -> bool) {
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            let before = map.len();
            map.retain(|_, value| keep(value));
            let removed = before - map.len();
            if removed > 0 {
                self.count.fetch_sub(removed, Ordering::Relaxed);
            }
            if map.capacity() > 4 * map.len().max(64) {
                let keep = 2 * map.len();
                map.shrink_to(keep);
            }
        }
    }

    /// Keys stored.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed).min(self.max_keys)
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cap.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Keys refused because of the cap so far.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    /// Bytes held by the shards' tables (entries and control bytes), for memory tests:
    /// hashbrown's capacity is 7/8 of its buckets (all but one below 8 buckets), and a
    /// bucket is an entry plus one control byte.
    pub fn table_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u64, V)>() + 1;
        self.shards
            .iter()
            .map(|shard| {
                let capacity = shard.lock().capacity();
                let buckets = match capacity {
                    0 => 0,
                    1..=7 => (capacity + 1).next_power_of_two(),
                    _ => (capacity * 8 / 7).next_power_of_two(),
                };
                buckets * entry
            })
            .sum()
    }

    /// The shard of `key`, locked.
    #[inline]
    fn shard(&self, key: u64) -> Option<MutexGuard<'_, PrehashedMap<V>>> {
        let index = usize::try_from((key >> SHARD_SHIFT) & ((1 << SHARD_BITS) - 1)).ok()?;
        Some(self.shards.get(index)?.lock())
    }
}

impl<V> fmt::Debug for CappedMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CappedMap")
            .field("keys", &self.len())
            .field("max_keys", &self.max_keys)
            .field("untracked", &self.untracked())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys spread over the shards.
    fn key(i: u64) -> u64 {
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    #[test]
    fn the_cap_is_exact_and_refused_keys_are_counted() {
        let map: CappedMap<u32> = CappedMap::new(100);
        for i in 0..150 {
            let stored = map.update(key(i), || 0, |v| *v += 1);
            assert_eq!(stored.is_some(), i < 100, "{i}");
        }
        assert_eq!((map.len(), map.untracked()), (100, 50));
        assert!(map.is_full());
        // Stored keys keep working at the cap.
        assert_eq!(map.update(key(5), || 0, |v| *v), Some(1));
        assert_eq!(map.get(key(5), |v| *v), Some(1));
        assert_eq!(map.get(key(120), |v| *v), None);
        map.retain(|v| *v > 5);
        assert!(map.is_empty());
        assert!(map.update(key(120), || 7, |v| *v).is_some());
        assert!(map.remove(key(120)));
        assert!(!map.remove(key(120)));
        assert_eq!(map.len(), 0);
    }

    #[test]
    fn threads_never_store_more_than_the_cap() {
        let map: std::sync::Arc<CappedMap<u8>> = std::sync::Arc::new(CappedMap::new(1000));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let map = map.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        map.update(key(t * 10_000 + i), || 0, |_| ());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let stored: usize = (0..4)
            .flat_map(|t| (0..2000).map(move |i| key(t * 10_000 + i)))
            .filter(|&k| map.get(k, |_| ()).is_some())
            .count();
        assert_eq!(stored, 1000);
        assert_eq!(map.len(), 1000);
        assert_eq!(map.untracked(), 7000);
    }
}
