//! An immutable map from disjoint, inclusive integer intervals to values.
//!
//! This module owns [`IntervalMap`], the lookup structure behind every address rule: it is
//! built once from possibly-overlapping input ranges, each carrying a priority and a value,
//! and answers "which value covers this point?" with one binary search, narrowed by a
//! bucket table first when the map is large.
//!
//! Two uses, one structure:
//!
//! - **IP allow/block lists** (`rules::ip`): keys are IPv4 (`u32`) or IPv6 (`u128`)
//!   addresses, priority is the list's position in the configuration and the value is the
//!   list's index, so an address found in several lists reports the first one.
//! - **IP-to-ASN tables** (later): keys are addresses, priority is the range's width
//!   (`end - start`) and the value is the AS number, so where a table's ranges overlap (the
//!   real iptoasn IPv6 table does) the most specific range wins.
//!
//! # Semantics
//!
//! For every point `k`, the map stores the value of the input range that covers `k` and has
//! the smallest priority; among equal priorities the range given first wins. Points that no
//! input covers have no value. The result is stored as sorted, disjoint segments; adjacent
//! segments that would carry equal values are merged into one, so the segment count depends
//! on the shape of the data, not on how it was split up in the input.
//!
//! # Complexity
//!
//! With `n` input ranges and `s` output segments (`s <= 2n - 1`):
//!
//! - build: `O(n log n)` time (one sort of `2n` events plus a `BTreeSet` of the active
//!   ranges; when every range has the same priority and value, as in one list file, one
//!   sort of the `n` ranges and a merge), `O(n)` extra memory while building;
//! - lookup: `O(log s)` comparisons, a binary search over a packed array of segment starts;
//!   from 4096 segments up, only over the few starting in the key's bucket of a table built
//!   with the map (see `Index`);
//! - memory: `2 * size_of::<K>() + size_of::<V>()` bytes per segment (struct of arrays:
//!   12 bytes for IPv4 keys with `u32` values, 36 bytes for IPv6 keys), plus the bucket
//!   table of maps from 4096 segments: 4 bytes per bucket, 16 to 256 KiB
//!   ([`IntervalMap::index_bytes`]).

use std::collections::BTreeSet;
use std::fmt;

/// An integer type usable as an [`IntervalMap`] key.
///
/// Implemented for `u32` (IPv4 addresses, AS numbers) and `u128` (IPv6 addresses). The
/// build needs the successor and predecessor of a key to turn inclusive ends into sweep
/// events without overflowing at [`Key::MAX`], and the bucket arithmetic of the lookup
/// index (`offset_bits`, `bucket`) to place keys in equal-width buckets above a base key.
pub trait Key: Copy + Ord + fmt::Debug {
    /// The largest key; a range may end here.
    const MAX: Self;

    /// The key right after `self`, or `None` for [`Key::MAX`].
    fn next(self) -> Option<Self>;

    /// The key right before `self`, or `None` for the smallest key.
    fn prev(self) -> Option<Self>;

    /// How many bits it takes to write `self - base`: 0 when `self <= base`.
    fn offset_bits(self, base: Self) -> u32;

    /// `(self - base) >> shift`, saturated to `u64::MAX`, or `None` when `self < base`. A
    /// `shift` of the key's width or more gives 0.
    fn bucket(self, base: Self, shift: u32) -> Option<u64>;
}

/// Implements [`Key`] for unsigned integer types.
macro_rules! impl_key {
    ($($t:ty),*) => {$(
        impl Key for $t {
            const MAX: Self = <$t>::MAX;

            fn next(self) -> Option<Self> {
                self.checked_add(1)
            }

            fn prev(self) -> Option<Self> {
                self.checked_sub(1)
            }

            fn offset_bits(self, base: Self) -> u32 {
                <$t>::BITS - self.saturating_sub(base).leading_zeros()
            }

            fn bucket(self, base: Self, shift: u32) -> Option<u64> {
                let above = self.checked_sub(base)?.checked_shr(shift).unwrap_or(0);
                Some(u64::try_from(above).unwrap_or(u64::MAX))
            }
        }
    )*};
}

impl_key!(u32, u128);

/// One input to [`IntervalMap::build`]: the inclusive range `start..=end`, mapped to `value`
/// with `priority` (smaller wins where ranges overlap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range<K, P, V> {
    /// First key covered.
    pub start: K,
    /// Last key covered (inclusive, so a range can end at [`Key::MAX`]).
    pub end: K,
    /// Where ranges overlap, the one with the smallest priority provides the value.
    pub priority: P,
    /// The value stored for every key this range wins.
    pub value: V,
}

impl<K, P, V> Range<K, P, V> {
    /// The range `start..=end` carrying `value` with `priority`.
    pub fn new(start: K, end: K, priority: P, value: V) -> Self {
        Self {
            start,
            end,
            priority,
            value,
        }
    }
}

/// A sweep event: at `pos`, input range `idx` becomes active (`start`) or stops being
/// active (the key after its end).
struct Event<K> {
    pos: K,
    start: bool,
    idx: usize,
}

/// An immutable map from disjoint inclusive intervals of `K` to values `V`.
///
/// See the [module documentation](self) for the overlap rule and costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntervalMap<K, V> {
    /// First key of each segment, strictly increasing; the array the lookup searches, kept
    /// apart from the rest so the binary search touches only these cache lines.
    starts: Vec<K>,
    /// Last key (inclusive) of each segment; `ends[i] < starts[i + 1]`.
    ends: Vec<K>,
    /// The value of each segment; two adjacent segments (`ends[i] + 1 == starts[i + 1]`)
    /// never hold equal values, they are merged at build time.
    values: Vec<V>,
    /// Where in `starts` each bucket of keys begins, for maps of at least
    /// [`INDEX_MIN_SEGMENTS`] segments; `None` for smaller maps, searched whole.
    index: Option<Index<K>>,
}

impl<K, V> Default for IntervalMap<K, V> {
    fn default() -> Self {
        Self {
            starts: Vec::new(),
            ends: Vec::new(),
            values: Vec::new(),
            index: None,
        }
    }
}

/// Maps with fewer segments than this get no [`Index`]: their `starts` (16 KiB of IPv4
/// keys at most) stay in cache, and the index would outweigh the map.
const INDEX_MIN_SEGMENTS: usize = 4096;

/// At most `2^INDEX_MAX_BITS` buckets: a 256 KiB table of bounds.
const INDEX_MAX_BITS: u32 = 16;

/// A first-level index over the sorted segment starts of a large [`IntervalMap`].
///
/// The keys from `base` (the first segment start) up are cut into `2^bits` buckets of
/// `2^shift` keys each, the last bucket running on to [`Key::MAX`]. `shift` is the smallest
/// that fits the last segment start into the buckets, so the populated span of the key
/// space fills them whatever the key type: IPv4 tables spread over most of the 32 bits
/// (1.0.0.0 to 223.x: `shift` 16), IPv6 tables over a small part of 2000::/3 (2001:: to
/// 2c0f::: `shift` 108, buckets of a /20). Fixed bits would do worse on IPv6: of the
/// 103k segment starts of the ip-location-db table, the top 16 bits fill 61 buckets and
/// bits 109..125 fill 358, the span-fitted buckets 666. `bits` is `ceil(log2(segments))`,
/// at most [`INDEX_MAX_BITS`], so the table costs at most 8 bytes per segment (about 4 on
/// average) and 256 KiB in all.
///
/// A lookup computes its key's bucket, then binary-searches only the segments starting
/// inside that bucket: the segment containing the key is the last one there that starts
/// at or before it, or, if none does, the segment right before the bucket's (which may
/// have started in an earlier bucket and run on into this one). With random keys that
/// turns the last cache-missing steps of a binary search over the whole array into one
/// miss on the table and a search inside one or two cache lines. The worst case stays
/// `O(log n)`: a bucket holds at most all `n` segments.
///
/// IPv6 stays the weak case: its allocations cluster at every scale, so a key's bucket
/// still holds about 2,800 segments on average (weighted by segments, as random hits
/// are), against about 57 for IPv4. A second level of equal-width buckets inside the crowded
/// buckets only gets that down to about 250, and measured slower than one level on both
/// key types (one more table miss, plus finding the child), so there is none.
#[derive(Clone, PartialEq, Eq)]
struct Index<K> {
    /// The first key of bucket 0: the first segment start.
    base: K,
    /// Bucket `b` holds keys `base + (b << shift) ..= base + ((b + 1) << shift) - 1`.
    shift: u32,
    /// `bounds[b]` is the index of the first segment whose start is in bucket `b` or a
    /// later one; `2^bits + 1` entries, the last equal to the segment count.
    bounds: Box<[u32]>,
}

impl<K: Key> Index<K> {
    /// The index of `starts` (strictly increasing), if there are enough of them and their
    /// count fits the `u32` bounds.
    fn build(starts: &[K]) -> Option<Self> {
        if starts.len() < INDEX_MIN_SEGMENTS {
            return None;
        }
        let count = u32::try_from(starts.len()).ok()?;
        let (&base, &last) = (starts.first()?, starts.last()?);
        let bits = (u32::BITS - count.saturating_sub(1).leading_zeros()).min(INDEX_MAX_BITS);
        let shift = last.offset_bits(base).saturating_sub(bits);
        let buckets = 1usize << bits;

        // Count the segments starting in each bucket, one slot to the right, then sum up:
        // `bounds[b]` becomes the number of segments starting before bucket `b`.
        let mut bounds = vec![0u32; buckets + 1];
        let last_bucket = buckets - 1;
        for &start in starts {
            let b = start
                .bucket(base, shift)
                .and_then(|b| usize::try_from(b).ok())
                .map_or(0, |b| b.min(last_bucket));
            if let Some(slot) = bounds.get_mut(b + 1) {
                *slot += 1;
            }
        }
        let mut total = 0u32;
        for slot in &mut bounds {
            total += *slot;
            *slot = total;
        }
        Some(Self {
            base,
            shift,
            bounds: bounds.into_boxed_slice(),
        })
    }

    /// The index of the last of `starts` (the array the index was built from) that is at
    /// or before `key`, or `None` when every start is after `key`.
    fn last_start_at_or_before(&self, key: K, starts: &[K]) -> Option<usize> {
        // Keys below the first start are in no segment.
        let bucket = key.bucket(self.base, self.shift)?;
        // Keys past the last full bucket belong to the last one.
        let last_bucket = self.bounds.len().checked_sub(2)?;
        let b = usize::try_from(bucket).map_or(last_bucket, |b| b.min(last_bucket));
        let lo = usize::try_from(*self.bounds.get(b)?).ok()?;
        let hi = usize::try_from(*self.bounds.get(b + 1)?).ok()?;
        let here = starts.get(lo..hi)?;
        (lo + here.partition_point(|&s| s <= key)).checked_sub(1)
    }

    /// Heap bytes of the table.
    fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.bounds)
    }
}

/// Shows the shape of the index, not its 65k bounds.
impl<K: fmt::Debug> fmt::Debug for Index<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index")
            .field("base", &self.base)
            .field("shift", &self.shift)
            .field("buckets", &self.bounds.len().saturating_sub(1))
            .finish()
    }
}

impl<K: Key, V: Clone + PartialEq> IntervalMap<K, V> {
    /// Builds the map from `ranges`, which may overlap and come in any order.
    ///
    /// Every key gets the value of the covering range with the smallest `priority`; ties go
    /// to the range that comes first in `ranges`. A range with `start > end` is empty and
    /// ignored. Runs in `O(n log n)` for `n` ranges.
    pub fn build<P: Ord + Copy>(ranges: impl IntoIterator<Item = Range<K, P, V>>) -> Self {
        let inputs: Vec<Range<K, P, V>> = ranges.into_iter().filter(|r| r.start <= r.end).collect();
        if let Some(first) = inputs.first() {
            if inputs
                .iter()
                .all(|r| r.priority == first.priority && r.value == first.value)
            {
                let value = first.value.clone();
                return Self::union(inputs, &value);
            }
        }

        let mut events = Vec::with_capacity(inputs.len().saturating_mul(2));
        for (idx, r) in inputs.iter().enumerate() {
            events.push(Event {
                pos: r.start,
                start: true,
                idx,
            });
            // A range ending at MAX stays active to the end of the key space.
            if let Some(after) = r.end.next() {
                events.push(Event {
                    pos: after,
                    start: false,
                    idx,
                });
            }
        }
        // Events at the same position are all applied before the position is read, so
        // their relative order does not matter.
        events.sort_unstable_by_key(|e| e.pos);

        let mut map = Self::default();
        // The ranges covering the current position, best (smallest priority, then first
        // given) first.
        let mut active: BTreeSet<(P, usize)> = BTreeSet::new();
        let mut events = events.into_iter().peekable();
        while let Some(first) = events.next() {
            let pos = first.pos;
            let mut event = Some(first);
            while let Some(e) = event {
                if let Some(r) = inputs.get(e.idx) {
                    if e.start {
                        active.insert((r.priority, e.idx));
                    } else {
                        active.remove(&(r.priority, e.idx));
                    }
                }
                event = events.next_if(|next| next.pos == pos);
            }

            let Some(&(_, winner)) = active.first() else {
                continue;
            };
            let Some(value) = inputs.get(winner).map(|r| &r.value) else {
                continue;
            };
            // The segment runs until just before the next event; with no next event the
            // active range ends at MAX.
            let end = match events.peek() {
                // `next.pos > pos`, so it has a predecessor.
                Some(next) => match next.pos.prev() {
                    Some(end) => end,
                    None => continue,
                },
                None => K::MAX,
            };
            map.push(pos, end, value);
        }

        map.finish()
    }

    /// The map of ranges that all carry `value` with one priority (one list file, the
    /// common case): their union, from one sort of the ranges by start and a merge, with
    /// no sweep over `2n` events.
    fn union<P>(mut inputs: Vec<Range<K, P, V>>, value: &V) -> Self {
        inputs.sort_unstable_by_key(|r| r.start);
        let mut map = Self::default();
        let mut current: Option<(K, K)> = None;
        for r in &inputs {
            current = match current {
                // Overlapping or touching: one segment.
                Some((start, end)) if r.start <= end || end.next() == Some(r.start) => {
                    Some((start, end.max(r.end)))
                }
                Some((start, end)) => {
                    map.push(start, end, value);
                    Some((r.start, r.end))
                }
                None => Some((r.start, r.end)),
            };
        }
        if let Some((start, end)) = current {
            map.push(start, end, value);
        }
        map.finish()
    }

    /// Gives back the spare capacity of the segment arrays and builds the lookup index.
    fn finish(mut self) -> Self {
        self.starts.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.values.shrink_to_fit();
        self.index = Index::build(&self.starts);
        self
    }

    /// Appends the segment `start..=end`, merging it into the previous one when they touch
    /// and hold equal values.
    fn push(&mut self, start: K, end: K, value: &V) {
        if let (Some(last_end), Some(last_value)) = (self.ends.last_mut(), self.values.last()) {
            if last_end.next() == Some(start) && last_value == value {
                *last_end = end;
                return;
            }
        }
        self.starts.push(start);
        self.ends.push(end);
        self.values.push(value.clone());
    }
}

impl<K: Key, V> IntervalMap<K, V> {
    /// The value of the segment containing `key`, if any. `O(log n)`, no allocation.
    pub fn get(&self, key: K) -> Option<&V> {
        // The last segment starting at or before `key` is the only one that can contain it.
        let i = match &self.index {
            Some(index) => index.last_start_at_or_before(key, &self.starts)?,
            None => self.starts.partition_point(|&s| s <= key).checked_sub(1)?,
        };
        if key <= *self.ends.get(i)? {
            self.values.get(i)
        } else {
            None
        }
    }

    /// Number of disjoint segments stored (after merging).
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Bytes of lookup index on top of the segments: 0 below 4096 segments, then about 4
    /// per segment, at most 256 KiB.
    pub fn index_bytes(&self) -> usize {
        self.index.as_ref().map_or(0, Index::heap_bytes)
    }

    /// The segments as `(start, end inclusive, value)`, in increasing key order.
    pub fn iter(&self) -> impl Iterator<Item = (K, K, &V)> + '_ {
        self.starts
            .iter()
            .zip(&self.ends)
            .zip(&self.values)
            .map(|((&s, &e), v)| (s, e, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn build32(ranges: &[(u32, u32, u32, char)]) -> IntervalMap<u32, char> {
        IntervalMap::build(ranges.iter().map(|&(s, e, p, v)| Range::new(s, e, p, v)))
    }

    fn segments<K: Key, V: Copy>(map: &IntervalMap<K, V>) -> Vec<(K, K, V)> {
        map.iter().map(|(s, e, v)| (s, e, *v)).collect()
    }

    #[test]
    fn empty_map() {
        let map = build32(&[]);
        assert!(map.is_empty());
        assert_eq!(map.len(), 0);
        assert_eq!(map.get(0), None);
        assert_eq!(map.get(u32::MAX), None);
        let map: IntervalMap<u128, u8> = IntervalMap::default();
        assert_eq!(map.get(7), None);
    }

    #[test]
    fn single_range_and_gaps() {
        let map = build32(&[(10, 20, 0, 'a')]);
        assert_eq!(segments(&map), vec![(10, 20, 'a')]);
        assert_eq!(map.get(9), None);
        assert_eq!(map.get(10), Some(&'a'));
        assert_eq!(map.get(20), Some(&'a'));
        assert_eq!(map.get(21), None);
    }

    #[test]
    fn nested_lower_priority_inside() {
        // The outer range wins everywhere, so nothing of the inner one shows.
        let map = build32(&[(0, 100, 0, 'a'), (10, 20, 1, 'b')]);
        assert_eq!(segments(&map), vec![(0, 100, 'a')]);
    }

    #[test]
    fn nested_higher_priority_inside_splits_outer() {
        let map = build32(&[(0, 100, 1, 'a'), (10, 20, 0, 'b')]);
        assert_eq!(
            segments(&map),
            vec![(0, 9, 'a'), (10, 20, 'b'), (21, 100, 'a')]
        );
    }

    #[test]
    fn partial_overlap() {
        let map = build32(&[(0, 50, 1, 'a'), (40, 90, 0, 'b')]);
        assert_eq!(segments(&map), vec![(0, 39, 'a'), (40, 90, 'b')]);
        let map = build32(&[(0, 50, 0, 'a'), (40, 90, 1, 'b')]);
        assert_eq!(segments(&map), vec![(0, 50, 'a'), (51, 90, 'b')]);
    }

    #[test]
    fn identical_ranges_and_priority_ties_go_to_first_input() {
        let map = build32(&[(5, 9, 3, 'a'), (5, 9, 3, 'b')]);
        assert_eq!(segments(&map), vec![(5, 9, 'a')]);
        // A tie on overlap only: the earlier input keeps the shared part.
        let map = build32(&[(10, 20, 0, 'x'), (0, 15, 0, 'y')]);
        assert_eq!(segments(&map), vec![(0, 9, 'y'), (10, 20, 'x')]);
        // Identical ranges, the later one with a better priority.
        let map = build32(&[(5, 9, 3, 'a'), (5, 9, 2, 'b')]);
        assert_eq!(segments(&map), vec![(5, 9, 'b')]);
    }

    #[test]
    fn adjacent_equal_values_are_merged() {
        let map = build32(&[
            (0, 9, 0, 'a'),
            (10, 19, 1, 'a'),
            (20, 29, 0, 'b'),
            (31, 40, 0, 'b'),
        ]);
        assert_eq!(
            segments(&map),
            vec![(0, 19, 'a'), (20, 29, 'b'), (31, 40, 'b')]
        );
        // A range split around a hole that another range with the same value fills.
        let map = build32(&[(0, 100, 1, 'a'), (10, 20, 0, 'a')]);
        assert_eq!(segments(&map), vec![(0, 100, 'a')]);
    }

    #[test]
    fn inverted_range_is_ignored() {
        let map = build32(&[(9, 5, 0, 'a'), (1, 2, 1, 'b')]);
        assert_eq!(segments(&map), vec![(1, 2, 'b')]);
    }

    #[test]
    fn boundaries_zero_and_max_u32() {
        let map = build32(&[(0, 0, 0, 'z'), (u32::MAX, u32::MAX, 0, 'm')]);
        assert_eq!(segments(&map), vec![(0, 0, 'z'), (u32::MAX, u32::MAX, 'm')]);
        assert_eq!(map.get(0), Some(&'z'));
        assert_eq!(map.get(1), None);
        assert_eq!(map.get(u32::MAX - 1), None);
        assert_eq!(map.get(u32::MAX), Some(&'m'));

        let map = build32(&[(0, u32::MAX, 1, 'a'), (u32::MAX - 1, u32::MAX, 0, 'b')]);
        assert_eq!(
            segments(&map),
            vec![(0, u32::MAX - 2, 'a'), (u32::MAX - 1, u32::MAX, 'b')]
        );
    }

    #[test]
    fn whole_key_space_u128() {
        let map = IntervalMap::build([
            Range::new(0u128, u128::MAX, 2u8, 1u16),
            Range::new(u128::MAX, u128::MAX, 1, 2),
            Range::new(0, 0, 1, 3),
        ]);
        assert_eq!(
            segments(&map),
            vec![(0, 0, 3), (1, u128::MAX - 1, 1), (u128::MAX, u128::MAX, 2)]
        );
        assert_eq!(map.get(u128::MAX / 2), Some(&1));
    }

    #[test]
    fn most_specific_wins_with_width_priority() {
        // The ASN use: priority is the width, so the narrower range wins.
        let asn = |s: u32, e: u32, v: u32| Range::new(s, e, e - s, v);
        let map = IntervalMap::build([asn(0, 255, 64496), asn(16, 31, 64511), asn(20, 20, 65000)]);
        assert_eq!(map.get(0), Some(&64496));
        assert_eq!(map.get(16), Some(&64511));
        assert_eq!(map.get(20), Some(&65000));
        assert_eq!(map.get(21), Some(&64511));
        assert_eq!(map.get(32), Some(&64496));
        assert_eq!(map.len(), 5);
    }

    /// The value the overlap rule promises for `key`, by brute force.
    fn naive(ranges: &[(u32, u32, u8, u8)], key: u32) -> Option<u8> {
        ranges
            .iter()
            .enumerate()
            .filter(|(_, r)| r.0 <= key && key <= r.1)
            .min_by_key(|(i, r)| (r.2, *i))
            .map(|(_, r)| r.3)
    }

    /// Keys clustered near 0 and near MAX so ranges overlap and touch the edges often.
    fn key() -> impl Strategy<Value = u32> {
        prop_oneof![0u32..48, (0u32..16).prop_map(|d| u32::MAX - d)]
    }

    #[test]
    fn small_maps_have_no_index() {
        let ranges = (0..4095u32).map(|i| Range::new(i * 4, i * 4 + 1, 0u8, i));
        let map = IntervalMap::build(ranges);
        assert_eq!(map.len(), 4095);
        assert!(map.index.is_none());
        assert_eq!(map.index_bytes(), 0);
        assert_eq!(map.get(4 * 4094 + 1), Some(&4094));
    }

    #[test]
    fn indexed_u32_edges_spans_and_empty_buckets() {
        // 4096 one-key segments packed in the first 64 Ki keys, one segment spanning most of
        // the key space, and the last key: 4098 segments, so 2^13 buckets of 2^19 keys.
        let small = (0..4096u32).map(|i| Range::new(i * 16, i * 16, 0u8, i));
        let edges = [
            Range::new(1 << 20, 3 << 30, 0, 5000),
            Range::new(u32::MAX, u32::MAX, 0, 5001),
        ];
        let map = IntervalMap::build(small.chain(edges));
        assert_eq!(map.len(), 4098);
        let index = map.index.as_ref().expect("indexed");
        assert_eq!((index.base, index.shift, index.bounds.len()), (0, 19, 8193));
        assert_eq!(map.index_bytes(), 8193 * 4);

        assert_eq!(map.get(0), Some(&0));
        assert_eq!(map.get(1), None);
        assert_eq!(map.get(16 * 4095), Some(&4095));
        assert_eq!(map.get(16 * 4095 + 1), None);
        // Empty buckets between the small segments and the big one.
        assert_eq!(map.get(1 << 19), None);
        assert_eq!(map.get((1 << 20) - 1), None);
        // Every bucket the big segment covers, at its first key and the key before.
        assert_eq!(map.get(2 << 19), Some(&5000));
        for b in 3..(3 << 11) {
            assert_eq!(map.get(b << 19), Some(&5000), "bucket {b}");
            assert_eq!(map.get((b << 19) - 1), Some(&5000), "before bucket {b}");
        }
        assert_eq!(map.get(3 << 30), Some(&5000));
        assert_eq!(map.get((3 << 30) + 1), None);
        assert_eq!(map.get(u32::MAX - 1), None);
        assert_eq!(map.get(u32::MAX), Some(&5001));
    }

    #[test]
    fn indexed_u128_ipv6_like() {
        // 5000 /48s in 2a00::/12, one /16 at 2001::, and ::/96: the index spans ::/96 to
        // 2a00::, so bucket `b` starts at `b << shift`.
        let net = |top: u128, bits: u32| (top, top | (u128::MAX >> (128 - bits)));
        let mut ranges: Vec<Range<u128, u8, u32>> = (0..5000u128)
            .map(|i| {
                let (s, e) = net(0x2a00 << 112 | i << 82, 80);
                Range::new(s, e, 0, u32::try_from(i).unwrap())
            })
            .collect();
        let (s16, e16) = net(0x2001 << 112, 112);
        ranges.push(Range::new(s16, e16, 0, 6000));
        ranges.push(Range::new(0, u128::from(u32::MAX), 0, 6001));
        let map = IntervalMap::build(ranges);
        assert_eq!(map.len(), 5002);
        let index = map.index.as_ref().expect("indexed");
        // The last start, 2a00:0:1387:: (bit 125 set), fits 2^13 buckets of 2^113 keys.
        assert_eq!(
            (index.base, index.shift, index.bounds.len()),
            (0, 113, 8193)
        );

        assert_eq!(map.get(0), Some(&6001));
        assert_eq!(map.get(u128::from(u32::MAX) + 1), None);
        assert_eq!(map.get(s16 - 1), None);
        assert_eq!(map.get(s16), Some(&6000));
        assert_eq!(map.get(e16), Some(&6000));
        assert_eq!(map.get(0x2a00 << 112), Some(&0));
        assert_eq!(map.get(0x2a00 << 112 | 4999 << 82 | 0xffff), Some(&4999));
        assert_eq!(map.get(0x2a00 << 112 | 5000 << 82), None);
        assert_eq!(map.get(u128::MAX), None);
    }

    /// Disjoint ranges laid end to end from `first`, each a gap and then a length (both
    /// scaled by `2^scale`), stopping before one would pass `max`. Values count up from 100,
    /// so no two touching segments merge.
    fn laid_out(
        first: u128,
        steps: &[(u32, u32)],
        scale: u32,
        max: u128,
    ) -> Vec<(u128, u128, u32)> {
        let mut out = Vec::with_capacity(steps.len());
        let mut at = first;
        for (value, &(gap, len)) in (100u32..).zip(steps) {
            let Some(start) = at.checked_add(u128::from(gap) << scale) else {
                break;
            };
            let end = match start.checked_add(u128::from(len) << scale) {
                Some(end) if end <= max => end,
                _ => break,
            };
            out.push((start, end, value));
            match end.checked_add(1) {
                Some(next) => at = next,
                None => break,
            }
        }
        out
    }

    /// Gaps and lengths: mostly short, sometimes wide enough to leave buckets empty or to
    /// span many of them.
    fn step() -> impl Strategy<Value = u32> {
        prop_oneof![4 => 0u32..4, 4 => 0u32..1 << 12, 1 => 0u32..1 << 20, 1 => 0u32..1 << 22]
    }

    /// Builds `K` maps from `background` (disjoint, priority 1) under `overlay` (any ranges,
    /// priority 0), and checks every interesting key against an independent reference and
    /// against the index-free search.
    fn check_indexed<K>(
        background: &[(u128, u128, u32)],
        overlay: &[(u128, u128, u32)],
        extra: &[u128],
    ) -> Result<(), TestCaseError>
    where
        K: Key + TryFrom<u128> + Into<u128>,
    {
        let key = |k: u128| K::try_from(k).ok();
        let map: IntervalMap<K, u32> = IntervalMap::build(
            overlay
                .iter()
                .map(|r| (r, 0u8))
                .chain(background.iter().map(|r| (r, 1u8)))
                .filter_map(|(&(s, e, v), p)| Some(Range::new(key(s)?, key(e)?, p, v))),
        );
        let plain = IntervalMap {
            index: None,
            ..map.clone()
        };
        prop_assert_eq!(map.index.is_some(), map.len() >= INDEX_MIN_SEGMENTS);

        let starts: std::collections::BTreeMap<u128, (u128, u32)> =
            background.iter().map(|&(s, e, v)| (s, (e, v))).collect();
        let reference = |k: u128| {
            let on_top = overlay.iter().find(|r| r.0 <= k && k <= r.1);
            match on_top {
                Some(r) => Some(r.2),
                None => starts
                    .range(..=k)
                    .next_back()
                    .and_then(|(_, &(e, v))| (k <= e).then_some(v)),
            }
        };

        let mut probes: Vec<u128> = vec![0, K::MAX.into()];
        probes.extend_from_slice(extra);
        for &(s, e, _) in background.iter().chain(overlay) {
            probes.extend([s.wrapping_sub(1), s, e, e.wrapping_add(1)]);
        }
        if let Some(index) = &map.index {
            let base: u128 = index.base.into();
            // Bounds: non-decreasing, ending at the segment count, and each segment in
            // the bucket its start falls in.
            prop_assert_eq!(index.bounds.last().map(|&b| b as usize), Some(map.len()));
            for (b, w) in index.bounds.windows(2).enumerate() {
                prop_assert!(w[0] <= w[1]);
                for i in w[0]..w[1] {
                    let start = map.starts[i as usize];
                    let bucket = start.bucket(index.base, index.shift).unwrap();
                    prop_assert!(bucket == b as u64 || b + 2 == index.bounds.len());
                }
                let first = (b as u128)
                    .checked_shl(index.shift)
                    .and_then(|o| base.checked_add(o));
                if let Some(first) = first {
                    probes.extend([first.wrapping_sub(1), first]);
                }
            }
        }
        for k in probes {
            let Some(kk) = key(k) else { continue };
            prop_assert_eq!(map.get(kk).copied(), reference(k), "key {:#x}", k);
            prop_assert_eq!(map.get(kk), plain.get(kk), "key {:#x}", k);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn get_matches_naive_scan(
            raw in proptest::collection::vec((key(), key(), 0u8..4, 0u8..4), 0..12),
        ) {
            let ranges: Vec<(u32, u32, u8, u8)> = raw;
            let map = IntervalMap::build(
                ranges.iter().map(|&(s, e, p, v)| Range::new(s, e, p, v)),
            );
            let probes = (0u32..50).chain((0u32..18).map(|d| u32::MAX - d));
            for k in probes {
                prop_assert_eq!(map.get(k).copied(), naive(&ranges, k), "key {}", k);
            }
            // Segments are sorted, disjoint and never mergeable.
            let segs = segments(&map);
            for w in segs.windows(2) {
                let (a, b) = (w[0], w[1]);
                prop_assert!(a.0 <= a.1 && a.1 < b.0);
                prop_assert!(!(a.1 + 1 == b.0 && a.2 == b.2), "unmerged {:?} {:?}", a, b);
            }
        }
    }

    proptest! {
        #[test]
        fn union_of_one_priority_matches_naive_scan(
            raw in proptest::collection::vec((key(), key()), 0..16),
        ) {
            // One priority and one value: the union path.
            let ranges: Vec<(u32, u32, u8, u8)> = raw.iter().map(|&(s, e)| (s, e, 1, 7)).collect();
            let map = IntervalMap::build(
                ranges.iter().map(|&(s, e, p, v)| Range::new(s, e, p, v)),
            );
            let probes = (0u32..50).chain((0u32..18).map(|d| u32::MAX - d));
            for k in probes {
                prop_assert_eq!(map.get(k).copied(), naive(&ranges, k), "key {}", k);
            }
            for w in segments(&map).windows(2) {
                prop_assert!(w[0].1 + 1 < w[1].0, "unmerged {:?} {:?}", w[0], w[1]);
            }
        }
    }

    /// Keys of an overlay range: near 0, near the top of the key space, or anywhere.
    fn edge_key(max: u128) -> impl Strategy<Value = u128> {
        prop_oneof![0u128..48, (0u128..16).prop_map(move |d| max - d), 0..=max]
    }

    proptest! {
        // Each case builds a map of over 4096 segments: fewer cases in debug builds.
        #![proptest_config(ProptestConfig::with_cases(if cfg!(debug_assertions) { 16 } else { 64 }))]

        #[test]
        fn indexed_get_matches_reference_u32(
            first in prop_oneof![Just(0u128), 0u128..1 << 30],
            steps in proptest::collection::vec((step(), step()), 4100..4600),
            overlay in proptest::collection::vec(
                (edge_key(u32::MAX.into()), edge_key(u32::MAX.into()), 0u32..4), 0..8),
            extra in proptest::collection::vec(0u128..=u32::MAX.into(), 64),
        ) {
            let background = laid_out(first, &steps, 0, u32::MAX.into());
            check_indexed::<u32>(&background, &overlay, &extra)?;
        }

        #[test]
        fn indexed_get_matches_reference_u128(
            first in prop_oneof![Just(0u128), Just(0x2000 << 112), any::<u128>().prop_map(|k| k >> 3)],
            scale in prop_oneof![Just(0u32), 0u32..=90, Just(80)],
            steps in proptest::collection::vec((step(), step()), 4100..4600),
            overlay in proptest::collection::vec(
                (edge_key(u128::MAX), edge_key(u128::MAX), 0u32..4), 0..8),
            extra in proptest::collection::vec(any::<u128>(), 64),
        ) {
            let background = laid_out(first, &steps, scale, u128::MAX);
            check_indexed::<u128>(&background, &overlay, &extra)?;
        }
    }
}
