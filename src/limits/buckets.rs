//! The buckets of one limit: GCRA state per hashed key, in a sharded map with a hard cap.
//!
//! # GCRA
//!
//! A token bucket of `burst` tokens refilled at `rate` tokens per second is kept as one
//! number per key, the *theoretical arrival time* `tat` (the generic cell rate algorithm
//! of ATM traffic management, ITU-T I.371; the same arithmetic as governor's `gcra.rs`):
//!
//! ```text
//!   t   = 1 s / rate               time to refill one token ("emission interval")
//!   tau = t · (burst − 1)          how far tat may run ahead of now
//!
//!   take at now:   tat' = max(tat, now)            (an absent key has tat = now)
//!                  tat' − now > tau  → deny, retry after tat' − tau − now
//!                  otherwise         → allow, tat = tat' + t
//! ```
//!
//! `tat ≤ now` means a full bucket, which behaves exactly like an absent key: that is
//! what [`Buckets::retain_recent`] evicts. The decisions are identical to governor's
//! keyed limiter for the same `t` and burst (a property test checks it).
//!
//! Over any set of takes with times in `[a, b]`, in any order and from any thread, at
//! most `burst + rate · (b − a)` are allowed: `tat` only grows, by `t` per allowed take,
//! and an allowed take at `now ≤ b` needs `tat − tau ≤ b`.
//!
//! # Time
//!
//! Times are nanoseconds since the store's `epoch`, one day before it was created (so
//! that any `now` a caller took shortly before a reload still maps exactly; earlier
//! times count as the epoch). `u64` nanoseconds last 584 years.
//!
//! # Memory
//!
//! 64 shards, each a `Mutex<HashMap<u64, u64>>` (hashed key → tat), on their own cache
//! lines. An entry is 16 bytes plus one control byte, and hashbrown keeps its tables
//! between 7/16 and 7/8 full, so a key costs 19–39 bytes (about 37 measured over RSS; see
//! the `memory_per_key` test). The number of keys is capped with one shared counter, so
//! the cap is exact across shards; a new key at the cap is not stored at all (and its
//! request not limited) until eviction makes room. The lookup of a tracked key is one
//! hash-table probe under an uncontended lock; a new key costs a second probe to insert
//! (not `entry()`, which would grow a full table even when the cap then refuses the key).

use std::fmt;
use std::hash::RandomState;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{LimitSpec, SpecError, Take};
use crate::util::PrehashedMap;

/// log2 of the number of shards.
const SHARD_BITS: u32 = 6;

/// Where in the 64-bit key the shard index is taken from: hashbrown uses the low bits
/// for the bucket index and the top 7 for its control bytes, so use bits from the middle.
const SHARD_SHIFT: u32 = 40;

/// How far the time origin lies before the store's creation (see the module docs).
const EPOCH_SLACK: [Duration; 4] = [
    Duration::from_secs(86_400),
    Duration::from_secs(3_600),
    Duration::from_secs(60),
    Duration::from_secs(1),
];

/// The state of one limit's buckets; shared (`Arc`) by the old and new [`super::Limits`]
/// when a reload leaves the limit unchanged.
pub(crate) struct Buckets {
    /// Nanoseconds to refill one token (≥ 1).
    t: u64,
    /// `t · (burst − 1)`: the burst beyond the first token, in time.
    tau: u64,
    /// Hard cap on stored keys.
    max_keys: usize,
    /// Keys stored over all shards; may run ahead of the maps by one per thread while
    /// an insert is being refused, never behind.
    count: AtomicUsize,
    /// Takes refused a key because of the cap ([`Take::Untracked`]), for the metrics.
    untracked: AtomicU64,
    /// The maps, by bits `SHARD_SHIFT..` of the hashed key.
    shards: Box<[Shard]>,
    /// Time origin of every `tat`.
    epoch: Instant,
    /// Secret key of the key hash; lives here because the hashes in the maps are only
    /// meaningful with it.
    seed: RandomState,
}

/// One shard, alone on its cache lines so that threads on different shards do not
/// contend on the lock word.
#[derive(Default)]
#[repr(align(128))]
struct Shard(Mutex<PrehashedMap<u64>>);

impl Buckets {
    /// Empty buckets for `spec`: `rate` tokens per second, `burst` tokens, at most
    /// `max_keys` keys.
    ///
    /// # Errors
    ///
    /// Numbers that cannot make a bucket ([`LimitSpec::periods`]).
    pub(crate) fn new(spec: &LimitSpec) -> Result<Buckets, SpecError> {
        let (t, tau) = spec.periods()?;
        let now = Instant::now();
        let epoch = EPOCH_SLACK
            .iter()
            .find_map(|&slack| now.checked_sub(slack))
            .unwrap_or(now);
        Ok(Buckets {
            t,
            tau,
            max_keys: spec.max_keys(),
            count: AtomicUsize::new(0),
            untracked: AtomicU64::new(0),
            shards: (0..1_usize << SHARD_BITS)
                .map(|_| Shard::default())
                .collect(),
            epoch,
            seed: RandomState::new(),
        })
    }

    /// The key hash's secret seed.
    pub(crate) fn seed(&self) -> &RandomState {
        &self.seed
    }

    /// Takes one token from the bucket of `key` at `now`.
    pub(crate) fn take(&self, key: u64, now: Instant) -> Take {
        let now = self.nanos(now);
        let Some(mut map) = self.shard(key) else {
            return self.untracked();
        };
        if let Some(tat) = map.get_mut(&key) {
            let start = (*tat).max(now);
            let ahead = start - now;
            if ahead > self.tau {
                return Take::Denied {
                    retry_after: retry_after(ahead - self.tau),
                };
            }
            *tat = start.saturating_add(self.t);
            return Take::Allowed;
        }
        // A new key: a full bucket, so the take is allowed if the key can be stored.
        // The load keeps the counter's cache line shared while a flood holds the cap.
        if self.count.load(Ordering::Relaxed) >= self.max_keys {
            return self.untracked();
        }
        if self.count.fetch_add(1, Ordering::Relaxed) >= self.max_keys {
            self.count.fetch_sub(1, Ordering::Relaxed);
            return self.untracked();
        }
        map.insert(key, now.saturating_add(self.t));
        Take::Allowed
    }

    /// What [`Buckets::take`] would give at `now`, changing nothing.
    pub(crate) fn peek(&self, key: u64, now: Instant) -> Take {
        let now = self.nanos(now);
        let Some(map) = self.shard(key) else {
            return Take::Untracked;
        };
        match map.get(&key) {
            Some(&tat) => {
                let ahead = tat.max(now) - now;
                if ahead > self.tau {
                    Take::Denied {
                        retry_after: retry_after(ahead - self.tau),
                    }
                } else {
                    Take::Allowed
                }
            }
            None if self.count.load(Ordering::Relaxed) >= self.max_keys => Take::Untracked,
            None => Take::Allowed,
        }
    }

    /// Counts a refused key and says so.
    fn untracked(&self) -> Take {
        self.untracked.fetch_add(1, Ordering::Relaxed);
        Take::Untracked
    }

    /// Takes refused a key because of the cap so far.
    pub(crate) fn untracked_count(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    /// Drops the keys whose bucket is full at `now` (they behave as absent), and gives
    /// memory back when a shard's table is mostly empty. One shard locked at a time.
    pub(crate) fn retain_recent(&self, now: Instant) {
        let now = self.nanos(now);
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            let before = map.len();
            map.retain(|_, tat| *tat > now);
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
    pub(crate) fn key_count(&self) -> usize {
        self.count.load(Ordering::Relaxed).min(self.max_keys)
    }

    /// Time to refill one token, for tests.
    #[cfg(test)]
    pub(crate) fn period(&self) -> Duration {
        Duration::from_nanos(self.t)
    }

    /// Bytes held by the maps' tables (entries and control bytes), for tests.
    #[cfg(test)]
    pub(crate) fn table_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                // hashbrown: capacity() is 7/8 of the buckets (all but one below 8
                // buckets); a bucket is a 16-byte entry plus one control byte.
                let capacity = shard.lock().capacity();
                let buckets = match capacity {
                    0 => 0,
                    1..=7 => (capacity + 1).next_power_of_two(),
                    _ => (capacity * 8 / 7).next_power_of_two(),
                };
                buckets * 17
            })
            .sum()
    }

    /// The shard of `key`, locked. A poisoned lock is taken anyway: the map holds plain
    /// numbers that a panicking holder cannot have left half-written.
    fn shard(&self, key: u64) -> Option<MutexGuard<'_, PrehashedMap<u64>>> {
        let index = usize::try_from((key >> SHARD_SHIFT) & ((1 << SHARD_BITS) - 1)).ok()?;
        Some(self.shards.get(index)?.lock())
    }

    /// `now` as nanoseconds since the epoch (times before it count as the epoch).
    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, PrehashedMap<u64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A wait in whole seconds, rounded up, at least 1 (the unit of `txn.guard.retry_after`
/// and of the HTTP `Retry-After` header).
fn retry_after(wait_nanos: u64) -> Duration {
    Duration::from_secs(wait_nanos.div_ceil(1_000_000_000).max(1))
}

impl fmt::Debug for Buckets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buckets")
            .field("t", &Duration::from_nanos(self.t))
            .field("tau", &Duration::from_nanos(self.tau))
            .field("max_keys", &self.max_keys)
            .field("keys", &self.key_count())
            .finish_non_exhaustive()
    }
}
