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
//! A [`CappedMap`] from hashed key to `tat`: 64 mutex-guarded shards with an exact cap on
//! keys. An entry is 16 bytes plus one control byte, and hashbrown keeps its tables
//! between 7/16 and 7/8 full, so a key costs 19–39 bytes (about 37 measured over RSS; see
//! the `memory_per_key` test). A new key at the cap is not stored at all (and its
//! request not limited) until eviction makes room.

use std::fmt;
use std::hash::RandomState;
use std::time::{Duration, Instant};

use super::{LimitSpec, SpecError, Take};
use crate::util::CappedMap;

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
    /// Hashed key → `tat`, at most `max_keys` of them.
    tats: CappedMap<u64>,
    /// Time origin of every `tat`.
    epoch: Instant,
    /// Secret key of the key hash; lives here because the hashes in the map are only
    /// meaningful with it.
    seed: RandomState,
}

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
            tats: CappedMap::new(spec.max_keys()),
            epoch,
            seed: RandomState::new(),
        })
    }

    /// The key hash's secret seed.
    pub(crate) fn seed(&self) -> &RandomState {
        &self.seed
    }

    /// Takes one token from the bucket of `key` at `now`.
    #[inline]
    pub(crate) fn take(&self, key: u64, now: Instant) -> Take {
        let now = self.nanos(now);
        // An absent key is a full bucket: tat = now.
        let taken = self.tats.update(
            key,
            || now,
            |tat| {
                let start = (*tat).max(now);
                let ahead = start - now;
                if ahead > self.tau {
                    return Take::Denied {
                        retry_after: retry_after(ahead - self.tau),
                    };
                }
                *tat = start.saturating_add(self.t);
                Take::Allowed
            },
        );
        taken.unwrap_or(Take::Untracked)
    }

    /// What [`Buckets::take`] would give at `now`, changing nothing.
    pub(crate) fn peek(&self, key: u64, now: Instant) -> Take {
        let now = self.nanos(now);
        match self.tats.get(key, |&tat| tat) {
            Some(tat) => {
                let ahead = tat.max(now) - now;
                if ahead > self.tau {
                    Take::Denied {
                        retry_after: retry_after(ahead - self.tau),
                    }
                } else {
                    Take::Allowed
                }
            }
            None if self.tats.is_full() => Take::Untracked,
            None => Take::Allowed,
        }
    }

    /// Takes refused a key because of the cap so far.
    pub(crate) fn untracked_count(&self) -> u64 {
        self.tats.untracked()
    }

    /// Drops the keys whose bucket is full at `now` (they behave as absent), and gives
    /// memory back when a shard's table is mostly empty. One shard locked at a time.
    pub(crate) fn retain_recent(&self, now: Instant) {
        let now = self.nanos(now);
        self.tats.retain(|tat| *tat > now);
    }

    /// Keys stored.
    pub(crate) fn key_count(&self) -> usize {
        self.tats.len()
    }

    /// Time to refill one token, for tests.
    #[cfg(test)]
    pub(crate) fn period(&self) -> Duration {
        Duration::from_nanos(self.t)
    }

    /// Bytes held by the map's tables (entries and control bytes), for tests.
    #[cfg(test)]
    pub(crate) fn table_bytes(&self) -> usize {
        self.tats.table_bytes()
    }

    /// `now` as nanoseconds since the epoch (times before it count as the epoch).
    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
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
            .field("max_keys", &self.tats.max_keys())
            .field("keys", &self.key_count())
            .finish_non_exhaustive()
    }
}
