//! Keys beyond a limit's `max_keys`: limited approximately, in fixed memory.
//!
//! When the exact table is full, a new key's bucket lives in a sketch instead: `DEPTH`
//! rows of `WIDTH` GCRA `tat` cells (the arithmetic of [`super::buckets`]), a key
//! mapped to one cell per row by its hash. A key's `tat` is read as the smallest of its
//! cells, and an allowed take raises each of its cells to the new `tat` when it is below
//! ("conservative update", as in count-min sketches: Estan and Varghese, 2002). This is
//! the idea of pingora-limits' rate estimator, with the token bucket's state in the
//! cells instead of counts.
//!
//! # Error bound
//!
//! A cell only ever holds the `tat` of some key mapped to it, never less than that of
//! any of them, so a key's estimate is never below its true `tat`: **a key in the sketch
//! is never admitted more than its limit** (`burst + rate · T` over any `T`). The error
//! is the other way: a key is denied wrongly only when every one of its `DEPTH` cells is
//! shared with a key whose own bucket is empty. With `H` such keys (clients over the
//! limit) among `WIDTH` cells, that happens to a given key with probability about
//! `(1 − e^(−H/WIDTH))^DEPTH`: 4 · 10⁻⁴ with 10,000 clients over the limit, 0.7 % with
//! 20,000, 16 % with 65,536 — above that, the sketch limits the whole overflow more like
//! one shared bucket per cell. Keys in the exact table are never affected.
//!
//! # Cost
//!
//! `DEPTH × WIDTH × 8` bytes = 2 MiB per limit, allocated the first time the limit's
//! table is full (nothing before). A take reads `DEPTH` cells and, when allowed, raises
//! them with `fetch_max`: lock-free, no allocation. Concurrent takes of one key may both
//! be allowed where one would be denied (a race of a few nanoseconds), which is within
//! the approximation. Cells are never cleared: a cell whose `tat` is in the past is a
//! full bucket, exactly as an absent key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Rows of the sketch.
const DEPTH: usize = 4;
/// log2 of the cells per row.
const WIDTH_BITS: u32 = 16;
/// Cells per row.
pub(crate) const WIDTH: usize = 1 << WIDTH_BITS;

/// Odd multipliers, one per row: multiply-shift hashing of the (already uniform) key
/// hash gives each row its own cell.
const MULTIPLIERS: [u64; DEPTH] = [
    0x9e37_79b9_7f4a_7c15,
    0xc2b2_ae3d_27d4_eb4f,
    0x1656_67b1_9e37_79f9,
    0xd6e8_feb8_6659_fd93,
];

/// What a take from the sketch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Estimate {
    /// Allowed: a token was taken.
    Allowed,
    /// The estimated bucket is empty for this many more nanoseconds.
    Denied(u64),
}

/// The sketch of one limit, allocated on first use.
#[derive(Default)]
pub(crate) struct Overflow {
    cells: OnceLock<Box<[AtomicU64]>>,
}

impl Overflow {
    /// The cells, allocated on first use (2 MiB, zero: every bucket full).
    fn cells(&self) -> &[AtomicU64] {
        self.cells
            .get_or_init(|| (0..DEPTH * WIDTH).map(|_| AtomicU64::new(0)).collect())
    }

    /// The cell of `key` in each row.
    #[inline]
    fn slots(key: u64) -> [usize; DEPTH] {
        let mut slots = [0; DEPTH];
        for (row, (slot, multiplier)) in slots.iter_mut().zip(MULTIPLIERS).enumerate() {
            let column = key.wrapping_mul(multiplier) >> (64 - WIDTH_BITS);
            // column < WIDTH: the shift leaves WIDTH_BITS bits.
            *slot = row * WIDTH + usize::try_from(column).unwrap_or(0);
        }
        slots
    }

    /// Takes one token of `key` at `now` (nanoseconds), one token every `t`, `tau` the
    /// burst in time (see [`super::buckets`]).
    #[inline]
    pub(crate) fn take(&self, key: u64, now: u64, t: u64, tau: u64) -> Estimate {
        let cells = self.cells();
        let slots = Self::slots(key);
        let tat = slots
            .iter()
            .filter_map(|&i| cells.get(i))
            .map(|cell| cell.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        let start = tat.max(now);
        let ahead = start - now;
        if ahead > tau {
            return Estimate::Denied(ahead - tau);
        }
        let next = start.saturating_add(t);
        for cell in slots.iter().filter_map(|&i| cells.get(i)) {
            cell.fetch_max(next, Ordering::Relaxed);
        }
        Estimate::Allowed
    }

    /// How far ahead of `now` the estimated `tat` of `key` runs (0: a full bucket),
    /// changing nothing; 0 when the sketch was never used.
    pub(crate) fn ahead(&self, key: u64, now: u64) -> u64 {
        let Some(cells) = self.cells.get() else {
            return 0;
        };
        Self::slots(key)
            .iter()
            .filter_map(|&i| cells.get(i))
            .map(|cell| cell.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
            .saturating_sub(now)
    }

    /// Whether the sketch has been used (its memory allocated).
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> bool {
        self.cells.get().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    /// A SplitMix64 step: uniform key hashes, as the limiter's key hash gives.
    fn hash(i: u64) -> u64 {
        let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn one_key_gets_exactly_its_burst_and_rate() {
        let sketch = Overflow::default();
        let (t, tau) = (SEC / 10, 9 * SEC / 10); // 10/s, burst 10
        let now = 100 * SEC;
        let allowed = (0..50)
            .filter(|_| sketch.take(hash(1), now, t, tau) == Estimate::Allowed)
            .count();
        assert_eq!(allowed, 10);
        // One second later: 10 more.
        let allowed = (0..50)
            .filter(|_| sketch.take(hash(1), now + SEC, t, tau) == Estimate::Allowed)
            .count();
        assert_eq!(allowed, 10);
        assert!(sketch.ahead(hash(1), now + SEC) > 0);
        assert_eq!(sketch.ahead(hash(2), now + SEC), 0);
    }

    #[test]
    fn no_key_is_admitted_beyond_its_limit_whatever_the_collisions() {
        // 200k keys in a 64k-wide sketch: every key collides somewhere; none is ever
        // admitted more than its own burst.
        let sketch = Overflow::default();
        let (t, tau) = (SEC, 4 * SEC); // 1/s, burst 5
        let now = 10 * SEC;
        for i in 0..200_000 {
            let allowed = (0..8)
                .filter(|_| sketch.take(hash(i), now, t, tau) == Estimate::Allowed)
                .count();
            assert!(allowed <= 5, "key {i}: {allowed}");
        }
    }

    #[test]
    fn innocent_keys_are_rarely_caught_by_heavy_ones() {
        // 10,000 keys over the limit, then 10,000 fresh keys take one token each.
        let sketch = Overflow::default();
        let (t, tau) = (SEC, 0); // 1/s, burst 1
        let now = 10 * SEC;
        for i in 0..10_000 {
            for _ in 0..3 {
                sketch.take(hash(i), now, t, tau);
            }
        }
        let wrongly_denied = (1_000_000..1_010_000)
            .filter(|&i| sketch.take(hash(i), now, t, tau) != Estimate::Allowed)
            .count();
        // Expected about (1 − e^(−10000/65536))^4 ≈ 4 · 10⁻⁴, i.e. ~4 of 10,000.
        assert!(wrongly_denied <= 30, "{wrongly_denied} of 10,000 denied");
    }

    #[test]
    fn memory_is_taken_on_first_use_only() {
        let sketch = Overflow::default();
        assert!(!sketch.in_use());
        assert_eq!(sketch.ahead(hash(1), 0), 0);
        assert!(!sketch.in_use());
        sketch.take(hash(1), SEC, SEC, 0);
        assert!(sketch.in_use());
    }
}
