//! An immutable map from disjoint, inclusive integer intervals to values.
//!
//! This module owns [`IntervalMap`], the lookup structure behind every address rule: it is
//! built once from possibly-overlapping input ranges, each carrying a priority and a value,
//! and answers "which value covers this point?" with one binary search.
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
//!   ranges), `O(n)` extra memory while building;
//! - lookup: `O(log s)` comparisons, a binary search over a packed array of segment starts;
//! - memory: `2 * size_of::<K>() + size_of::<V>()` bytes per segment (struct of arrays:
//!   12 bytes for IPv4 keys with `u32` values, 36 bytes for IPv6 keys).

use std::collections::BTreeSet;
use std::fmt;

/// An integer type usable as an [`IntervalMap`] key.
///
/// Implemented for `u32` (IPv4 addresses, AS numbers) and `u128` (IPv6 addresses). The
/// build needs the successor and predecessor of a key to turn inclusive ends into sweep
/// events without overflowing at [`Key::MAX`].
pub trait Key: Copy + Ord + fmt::Debug {
    /// The largest key; a range may end here.
    const MAX: Self;

    /// The key right after `self`, or `None` for [`Key::MAX`].
    fn next(self) -> Option<Self>;

    /// The key right before `self`, or `None` for the smallest key.
    fn prev(self) -> Option<Self>;
}

impl Key for u32 {
    const MAX: Self = u32::MAX;

    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }

    fn prev(self) -> Option<Self> {
        self.checked_sub(1)
    }
}

impl Key for u128 {
    const MAX: Self = u128::MAX;

    fn next(self) -> Option<Self> {
        self.checked_add(1)
    }

    fn prev(self) -> Option<Self> {
        self.checked_sub(1)
    }
}

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
}

impl<K, V> Default for IntervalMap<K, V> {
    fn default() -> Self {
        Self {
            starts: Vec::new(),
            ends: Vec::new(),
            values: Vec::new(),
        }
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

        map.starts.shrink_to_fit();
        map.ends.shrink_to_fit();
        map.values.shrink_to_fit();
        map
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
    /// The value of the segment containing `key`, if any. `O(log n)`.
    pub fn get(&self, key: K) -> Option<&V> {
        // Number of segments starting at or before `key`; the last of them is the only one
        // that can contain it.
        let i = self.starts.partition_point(|&s| s <= key).checked_sub(1)?;
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
}
