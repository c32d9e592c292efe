//! Space-Saving summaries (Metwally, Agrawal, El Abbadi, "Efficient computation of
//! frequent and top-k elements in data streams", ICDT 2005), weighted, and their merge.
//!
//! # One summary
//!
//! At most `k` counters, each `(key, count, error)`. Adding `w` for a key:
//!
//! ```text
//!   key monitored         → count += w
//!   fewer than k counters → new counter (count w, error 0)
//!   otherwise             → the counter with the smallest count (min) is given to the
//!                           key: count = min + w, error = min
//! ```
//!
//! With `N` the total weight added, for every monitored key
//! `count − error ≤ true ≤ count`, the smallest count is at most `N / k`, every key whose
//! true weight is above the smallest count (so every key above `N / k`) is monitored, and
//! a key not monitored has a true weight of at most the smallest count. While fewer than
//! `k` distinct keys have been seen, every counter is exact (error 0).
//!
//! The counters form a binary min-heap on `count` (the smallest at the root), and a hash
//! index maps key → counter, so an update is one index probe plus `O(log k)` moves in
//! the heap (counts only grow, so a counter only moves down). Counters do not move in
//! memory: the heap holds their positions and each counter its place in the heap, so a
//! move writes two small arrays and no hash-table entry (rewriting the index on every
//! move made aggregation 1.5 times slower).
//!
//! # Keys are identified by their hash
//!
//! A key is identified by a 64-bit keyed SipHash (the caller's `RandomState`), computed
//! once per sample and dimension and reused by both classes and by the merge; key bytes
//! are never compared. Two keys with the same hash would share a counter: with `k`
//! counters and `M` distinct keys passing through a summary the chance of any such
//! collision is below `M · k / 2⁶⁴` (10⁻¹¹ for a million keys and `k` = 100), and
//! the secret seed keeps anyone from crafting one.
//!
//! # Merge
//!
//! [`merge`] combines the summaries of consecutive time slots into one view of the
//! window. For a key, a summary that monitors it contributes its `(count, error)`; a
//! summary that does not monitor it and has replaced counters contributes `(min, min)`,
//! since the key's true weight there is between 0 and that summary's smallest count; a
//! summary that never replaced a counter contributes nothing (it saw the key zero
//! times). Summing keeps
//! `count − error ≤ true ≤ count`, and with `N` the window's total and `N_s` the slots'
//! totals the added error is at most `Σ N_s / k = N / k`: every key above `N / k` in the
//! window is monitored in at least one slot, so it is a candidate of the merge.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::util::PrehashedMap;

use std::net::IpAddr;

/// A key of one dimension, owned by a counter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Key {
    /// The value was absent (no source, no ASN known, no path, host or user agent).
    Missing,
    /// A source address.
    Addr(IpAddr),
    /// A source network: the first address of an IPv4 /24 or an IPv6 /48.
    Net(IpAddr),
    /// An autonomous system number.
    Asn(u32),
    /// Path, host or user agent bytes; longer than the configured key length means
    /// truncated (see `buffer`).
    Bytes(Vec<u8>),
}

/// A key borrowed from a sample, turned into a [`Key`] only when a counter takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum KeyRef<'a> {
    /// See [`Key::Missing`].
    Missing,
    /// See [`Key::Addr`].
    Addr(IpAddr),
    /// See [`Key::Net`].
    Net(IpAddr),
    /// See [`Key::Asn`].
    Asn(u32),
    /// See [`Key::Bytes`].
    Bytes(&'a [u8]),
}

impl KeyRef<'_> {
    /// Stores this key in `into`, reusing its byte buffer when both are bytes (a full
    /// summary of a long-tailed dimension replaces its smallest counter on almost every
    /// sample; reusing the buffer makes that allocation-free).
    fn store(self, into: &mut Key) {
        match (self, into) {
            (KeyRef::Bytes(bytes), Key::Bytes(buffer)) => {
                buffer.clear();
                // Exact, so that a counter's buffer never holds more than the longest
                // key it held (the memory bound relies on it).
                buffer.reserve_exact(bytes.len());
                buffer.extend_from_slice(bytes);
            }
            (key, into) => *into = key.to_owned(),
        }
    }

    /// The owned key.
    fn to_owned(self) -> Key {
        match self {
            KeyRef::Missing => Key::Missing,
            KeyRef::Addr(a) => Key::Addr(a),
            KeyRef::Net(a) => Key::Net(a),
            KeyRef::Asn(n) => Key::Asn(n),
            KeyRef::Bytes(b) => Key::Bytes(b.to_vec()),
        }
    }
}

/// One counter of a summary (its count lives in the heap, see [`Summary`]).
#[derive(Debug, Clone)]
struct Counter {
    /// The key's hash: its identity (see the module docs).
    hash: u64,
    /// The key, for the report.
    key: Key,
    /// `count − error` is a lower bound of the key's weight.
    error: u64,
    /// Where the counter is in the heap.
    pos: usize,
}

/// A place in the heap: a counter's count, kept here so that sifting compares within one
/// small array, and where the counter is in `counters`.
#[derive(Debug, Clone, Copy)]
struct Place {
    /// Upper bound of the key's weight since the counter was created.
    count: u64,
    /// Position in `counters`.
    id: usize,
}

/// A counter as [`Summary::entries`] shows it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry<'a> {
    /// The key's hash.
    pub(super) hash: u64,
    /// The key.
    pub(super) key: &'a Key,
    /// Upper bound of the key's weight.
    pub(super) count: u64,
    /// `count − error` is a lower bound of the key's weight.
    pub(super) error: u64,
}

/// A Space-Saving summary of at most `capacity` counters.
///
/// The counters stay where they were created (`counters`); the heap holds their counts
/// and positions, and each counter knows its place in the heap, so moving a counter in
/// the heap writes two small arrays and no hash-table entry.
#[derive(Debug, Default)]
pub(super) struct Summary {
    /// `k`.
    capacity: usize,
    /// The counters, in creation order.
    counters: Vec<Counter>,
    /// Binary min-heap on `count`.
    heap: Vec<Place>,
    /// Key hash → position in `counters`.
    index: PrehashedMap<usize>,
    /// Whether a counter was ever given to another key: until then every key seen is
    /// monitored, exactly.
    replaced: bool,
}

impl Summary {
    /// An empty summary of at most `capacity` (≥ 1) counters. Allocates on first use.
    pub(super) fn new(capacity: usize) -> Summary {
        Summary {
            capacity: capacity.max(1),
            ..Summary::default()
        }
    }

    /// Adds `weight` to the key `key` whose hash is `hash`.
    pub(super) fn add(&mut self, hash: u64, key: KeyRef<'_>, weight: u64) {
        if let Some(&id) = self.index.get(&hash) {
            let Some(pos) = self.counters.get(id).map(|c| c.pos) else {
                return;
            };
            if let Some(place) = self.heap.get_mut(pos) {
                place.count = place.count.saturating_add(weight);
            }
            self.sift_down(pos);
        } else if self.counters.len() < self.capacity {
            if self.counters.is_empty() {
                // All at their final size at once: no doubling beyond `k`.
                self.counters.reserve_exact(self.capacity);
                self.heap.reserve_exact(self.capacity);
                self.index.reserve(self.capacity);
            }
            let id = self.counters.len();
            self.counters.push(Counter {
                hash,
                key: key.to_owned(),
                error: 0,
                pos: id,
            });
            self.heap.push(Place { count: weight, id });
            self.index.insert(hash, id);
            self.sift_up(id);
        } else if let Some(root) = self.heap.first_mut() {
            let Some(counter) = self.counters.get_mut(root.id) else {
                return;
            };
            let min = root.count;
            root.count = min.saturating_add(weight);
            self.index.remove(&counter.hash);
            self.index.insert(hash, root.id);
            counter.hash = hash;
            key.store(&mut counter.key);
            counter.error = min;
            self.replaced = true;
            self.sift_down(0);
        }
    }

    /// The smallest count once a counter has been replaced (a bound on the weight of any
    /// key not monitored), 0 before (every key seen is monitored, exactly).
    pub(super) fn floor(&self) -> u64 {
        match self.heap.first() {
            Some(root) if self.replaced => root.count,
            _ => 0,
        }
    }

    /// The counters, in no particular order.
    pub(super) fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        self.heap.iter().filter_map(|place| {
            let counter = self.counters.get(place.id)?;
            Some(Entry {
                hash: counter.hash,
                key: &counter.key,
                count: place.count,
                error: counter.error,
            })
        })
    }

    /// Forgets everything, keeping the allocations.
    pub(super) fn clear(&mut self) {
        self.counters.clear();
        self.heap.clear();
        self.index.clear();
        self.replaced = false;
    }

    /// Heap bytes held: the counters, their key bytes, the heap and the index (hashbrown:
    /// one 16-byte entry and one control byte per bucket, buckets = capacity · 8/7
    /// rounded up to a power of two, plus 16 control bytes).
    pub(super) fn heap_bytes(&self) -> usize {
        let keys: usize = self
            .counters
            .iter()
            .map(|c| match &c.key {
                Key::Bytes(b) => b.capacity(),
                _ => 0,
            })
            .sum();
        self.counters.capacity() * std::mem::size_of::<Counter>()
            + self.heap.capacity() * std::mem::size_of::<Place>()
            + keys
            + index_bytes(self.index.capacity())
    }

    /// Moves the place at `pos` up while its count is below its parent's.
    fn sift_up(&mut self, mut pos: usize) {
        let Some(&place) = self.heap.get(pos) else {
            return;
        };
        while pos > 0 {
            let parent = (pos - 1) / 2;
            match self.heap.get(parent) {
                Some(&above) if above.count > place.count => self.put(pos, above),
                _ => break,
            }
            pos = parent;
        }
        self.put(pos, place);
    }

    /// Moves the place at `pos` down while its count is above a child's.
    fn sift_down(&mut self, mut pos: usize) {
        let Some(&place) = self.heap.get(pos) else {
            return;
        };
        loop {
            let left = 2 * pos + 1;
            let Some(&l) = self.heap.get(left) else {
                break;
            };
            let (child, below) = match self.heap.get(left + 1) {
                Some(&r) if r.count < l.count => (left + 1, r),
                _ => (left, l),
            };
            if below.count >= place.count {
                break;
            }
            self.put(pos, below);
            pos = child;
        }
        self.put(pos, place);
    }

    /// Puts `place` at heap position `pos`.
    fn put(&mut self, pos: usize, place: Place) {
        if let Some(slot) = self.heap.get_mut(pos) {
            *slot = place;
        }
        if let Some(counter) = self.counters.get_mut(place.id) {
            counter.pos = pos;
        }
    }
}

/// Heap bytes of a hashbrown table of `u64 → usize` with `capacity` items of capacity.
pub(super) fn index_bytes(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        // Small tables are full up to `buckets − 1` items.
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    buckets * (std::mem::size_of::<(u64, usize)>() + 1) + 16
}

/// The largest heap a summary of `capacity` counters can hold with keys of at most
/// `key_len` bytes (0 for dimensions without byte keys): the counters and the heap at
/// exactly `k` (reserved once), key buffers never larger than the longest key they held, and an
/// index that hashbrown grows to at most twice the buckets it needs for `k` entries (a
/// table full of deleted-entry markers is rehashed in place once it is at most half
/// full; a summary holds at most `k` + 1 entries for an instant).
pub(super) fn max_heap_bytes(capacity: usize, key_len: usize) -> usize {
    capacity * (std::mem::size_of::<Counter>() + std::mem::size_of::<Place>() + key_len)
        + 2 * index_bytes(capacity + 1)
}

/// A key of the merged window, with the bounds of its weight.
#[derive(Debug, Clone)]
pub(super) struct Merged<'a> {
    /// The key.
    pub(super) key: &'a Key,
    /// Upper bound of the key's weight in the window.
    pub(super) count: u64,
    /// `count − error` is a lower bound of the key's weight in the window.
    pub(super) error: u64,
}

/// The merge of summaries over disjoint parts of a stream (see the module docs): every
/// key monitored in any of them, heaviest first (ties: smaller error, then key order),
/// and the sum of their floors, an upper bound of the weight of any key that is not a
/// candidate.
pub(super) fn merge<'a>(parts: impl IntoIterator<Item = &'a Summary>) -> (Vec<Merged<'a>>, u64) {
    /// Per candidate: its key, and the sums over the summaries that monitor it.
    struct Acc<'a> {
        key: &'a Key,
        count: u64,
        error: u64,
        floors: u64,
    }
    let mut floors = 0_u64;
    let mut acc: PrehashedMap<Acc<'a>> = HashMap::default();
    for summary in parts {
        let floor = summary.floor();
        floors = floors.saturating_add(floor);
        for counter in summary.entries() {
            let entry = acc.entry(counter.hash).or_insert(Acc {
                key: counter.key,
                count: 0,
                error: 0,
                floors: 0,
            });
            entry.count = entry.count.saturating_add(counter.count);
            entry.error = entry.error.saturating_add(counter.error);
            entry.floors = entry.floors.saturating_add(floor);
        }
    }
    let mut merged: Vec<Merged<'a>> = acc
        .into_values()
        .map(|a| {
            // The summaries that do not monitor the key each add (floor, floor).
            let absent = floors.saturating_sub(a.floors);
            Merged {
                key: a.key,
                count: a.count.saturating_add(absent),
                error: a.error.saturating_add(absent),
            }
        })
        .collect();
    merged.sort_unstable_by(heavier_first);
    (merged, floors)
}

/// Orders merged entries as [`merge`] returns them.
pub(super) fn heavier_first(a: &Merged<'_>, b: &Merged<'_>) -> Ordering {
    b.count
        .cmp(&a.count)
        .then(a.error.cmp(&b.error))
        .then_with(|| a.key.cmp(b.key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap as Exact;
    use std::hash::{BuildHasher, RandomState};

    fn add(s: &mut Summary, seed: &RandomState, key: u32, weight: u64) {
        let k = KeyRef::Asn(key);
        s.add(seed.hash_one(k), k, weight);
    }

    /// Skewed keys: key i with probability ∝ 1/(i+1) (roughly Zipf), from a fixed seed.
    fn zipf_stream(len: usize, keys: u32, seed: u64) -> Vec<u32> {
        let mut rng = seed;
        let weights: Vec<f64> = (0..keys).map(|i| 1.0 / f64::from(i + 1)).collect();
        let total: f64 = weights.iter().sum();
        let mut cumulative = Vec::with_capacity(weights.len());
        let mut sum = 0.0;
        for w in &weights {
            sum += w / total;
            cumulative.push(sum);
        }
        (0..len)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let u = (rng >> 11) as f64 / (1u64 << 53) as f64;
                u32::try_from(cumulative.partition_point(|&c| c < u)).unwrap()
            })
            .collect()
    }

    fn heap_is_valid(s: &Summary) -> bool {
        let (c, h) = (&s.counters, &s.heap);
        h.len() == c.len()
            && (1..h.len()).all(|i| h[(i - 1) / 2].count <= h[i].count)
            && h.iter().enumerate().all(|(pos, p)| c[p.id].pos == pos)
            && c.iter()
                .enumerate()
                .all(|(id, c)| s.index.get(&c.hash) == Some(&id))
            && s.index.len() == c.len()
    }

    #[test]
    fn exact_while_not_full() {
        let seed = RandomState::new();
        let mut s = Summary::new(10);
        for key in 0..10 {
            add(&mut s, &seed, key, u64::from(key) + 1);
        }
        add(&mut s, &seed, 3, 5);
        assert_eq!(s.floor(), 0);
        assert!(heap_is_valid(&s));
        let count = |key: u32| {
            s.entries()
                .find(|c| *c.key == Key::Asn(key))
                .map(|c| (c.count, c.error))
        };
        assert_eq!(count(3), Some((9, 0)));
        assert_eq!(count(9), Some((10, 0)));
    }

    #[test]
    fn replaces_the_smallest_and_records_its_error() {
        let seed = RandomState::new();
        let mut s = Summary::new(2);
        add(&mut s, &seed, 1, 5);
        add(&mut s, &seed, 2, 3);
        add(&mut s, &seed, 3, 1);
        assert!(heap_is_valid(&s));
        let mut got: Vec<_> = s
            .entries()
            .map(|c| (c.key.clone(), c.count, c.error))
            .collect();
        got.sort();
        assert_eq!(got, vec![(Key::Asn(1), 5, 0), (Key::Asn(3), 4, 3)]);
        assert_eq!(s.floor(), 4);
    }

    #[test]
    fn error_bound_holds_on_a_skewed_stream() {
        let seed = RandomState::new();
        let k = 50;
        let stream = zipf_stream(200_000, 5_000, 0x9e37_79b9_7f4a_7c15);
        let mut s = Summary::new(k);
        let mut exact: Exact<u32, u64> = Exact::new();
        for (i, &key) in stream.iter().enumerate() {
            let weight = 1 + (i % 3) as u64; // weighted updates, as sampling makes them
            add(&mut s, &seed, key, weight);
            *exact.entry(key).or_default() += weight;
        }
        assert!(heap_is_valid(&s));
        let n: u64 = exact.values().sum();
        assert!(s.floor() <= n / k as u64, "{} > N/k", s.floor());
        for c in s.entries() {
            let Key::Asn(key) = *c.key else { panic!() };
            let truth = exact[&key];
            assert!(
                c.count - c.error <= truth && truth <= c.count,
                "key {key}: {} - {} vs {truth}",
                c.count,
                c.error
            );
            assert!(c.error <= n / k as u64);
        }
        for (&key, &truth) in &exact {
            if truth > n / k as u64 {
                assert!(
                    s.entries().any(|c| *c.key == Key::Asn(key)),
                    "heavy key {key} ({truth}) not monitored"
                );
            }
        }
    }

    #[test]
    fn merge_bounds_hold_over_slots() {
        let seed = RandomState::new();
        let k = 20;
        let mut exact: Exact<u32, u64> = Exact::new();
        let mut slots = Vec::new();
        for slot in 0..8_u32 {
            // Each slot has its own heavy keys, so that merged keys miss some slots.
            let stream = zipf_stream(20_000, 2_000, 0x1234_5678 + u64::from(slot));
            let mut s = Summary::new(k);
            for key in stream {
                let key = (key + slot * 7) % 2_000;
                add(&mut s, &seed, key, 1);
                *exact.entry(key).or_default() += 1;
            }
            slots.push(s);
        }
        let n: u64 = exact.values().sum();
        let (merged, floors) = merge(&slots);
        assert!(floors <= n / k as u64);
        assert!(merged
            .windows(2)
            .all(|w| heavier_first(&w[0], &w[1]).is_le()));
        for m in &merged {
            let Key::Asn(key) = m.key else { panic!() };
            let truth = exact[key];
            assert!(m.count - m.error <= truth && truth <= m.count, "key {key}");
            assert!(m.error <= n / k as u64);
        }
        for (&key, &truth) in &exact {
            let listed = merged.iter().any(|m| *m.key == Key::Asn(key));
            if !listed {
                assert!(truth <= floors, "key {key}: {truth} > {floors}");
            }
            if truth > n / k as u64 {
                assert!(listed, "heavy key {key} missing");
            }
        }
    }

    #[test]
    fn bytes_keys_reuse_their_buffer_and_memory_is_bounded() {
        let seed = RandomState::new();
        let k = 16;
        let mut s = Summary::new(k);
        for i in 0..100_000_u32 {
            let path = format!("/item/{i}/{}", "x".repeat((i % 100) as usize));
            let key = KeyRef::Bytes(path.as_bytes());
            s.add(seed.hash_one(key), key, 1);
        }
        assert!(heap_is_valid(&s));
        assert_eq!(s.entries().count(), k);
        assert!(
            s.heap_bytes() <= max_heap_bytes(k, 120),
            "{}",
            s.heap_bytes()
        );
    }
}
