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
//! the `memory_per_key` test). A new key at the cap is not stored in the table until
//! eviction makes room; meanwhile its requests are limited approximately, in a sketch
//! of fixed size ([`super::overflow`]) that never admits a key more than its limit.
//!
//! # Slots
//!
//! What is stored per key is a [`Slot`]: a bare `tat` for a local limit, a `tat` with
//! the count of tokens not yet reported to the fleet for a fleet limit (`fleet.rs`).
//! The arithmetic above is the same for both; the slot only hears about allowed and
//! denied takes.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::overflow::{Estimate, Overflow};
use super::{LimitSpec, SpecError, Take};
use crate::util::CappedMap;

/// How far the time origin lies before the store's creation (see the module docs).
const EPOCH_SLACK: [Duration; 4] = [
    Duration::from_secs(86_400),
    Duration::from_secs(3_600),
    Duration::from_secs(60),
    Duration::from_secs(1),
];

/// What the buckets keep per key: the GCRA `tat`, and whatever a kind of limit needs
/// beside it.
pub(crate) trait Slot: Send + 'static {
    /// The key hash's seed for this kind of limit.
    type Seed: BuildHasher + Send + Sync;
    /// The slot of a key never seen at `now`: a full bucket, or (a fleet limit) one
    /// whose `tat` starts `ahead` nanoseconds later.
    fn fresh(now: u64, ahead: u64) -> Self;
    /// The theoretical arrival time.
    fn tat(&self) -> u64;
    /// A take was allowed and moved the `tat` to `tat`.
    fn allowed(&mut self, tat: u64);
    /// A take was denied; true when it is the first since the last allowed one.
    fn denied(&mut self) -> bool;
    /// Whether the key can be forgotten at `now` (it behaves as never seen).
    fn idle(&self, now: u64) -> bool {
        self.tat() <= now
    }
}

/// A local limit's slot: the `tat` alone.
impl Slot for u64 {
    type Seed = RandomState;
    #[inline]
    fn fresh(now: u64, _ahead: u64) -> Self {
        now
    }
    #[inline]
    fn tat(&self) -> u64 {
        *self
    }
    #[inline]
    fn allowed(&mut self, tat: u64) {
        *self = tat;
    }
    #[inline]
    fn denied(&mut self) -> bool {
        false
    }
}

/// What one take did, with the precise wait (the fleet publishes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A token was taken.
    Allowed,
    /// The bucket is empty for `wait` more nanoseconds; `first`: the first denial since
    /// the key was last allowed.
    Denied { wait: u64, first: bool },
}

impl Outcome {
    /// As the engine sees it.
    #[inline]
    pub(crate) fn take(self) -> Take {
        match self {
            Outcome::Allowed => Take::Allowed,
            Outcome::Denied { wait, .. } => Take::Denied {
                retry_after: retry_after(wait),
            },
        }
    }
}

/// The state of one limit's buckets; shared (`Arc`) by the old and new [`super::Limits`]
/// when a reload leaves the limit unchanged.
pub(crate) struct Buckets<S: Slot = u64> {
    /// Nanoseconds to refill one token (≥ 1) as configured.
    pub(super) t: u64,
    /// The burst as configured.
    pub(super) burst: u32,
    /// Nanoseconds to refill one token in force: `t`, or `t · n` while a fleet limit
    /// falls back to this agent's share of `n` agents.
    t_now: AtomicU64,
    /// `t_now · (burst in force − 1)`: the burst beyond the first token, in time.
    tau_now: AtomicU64,
    /// How much later than now a new key's `tat` starts (0 but for fleet limits).
    fresh_ahead: AtomicU64,
    /// Hashed key → slot, at most `max_keys` of them.
    pub(super) slots: CappedMap<S>,
    /// The keys that do not fit in `slots`, approximately.
    overflow: Overflow,
    /// Time origin of every `tat`.
    epoch: Instant,
    /// Key of the key hash; lives here because the hashes in the map are only
    /// meaningful with it.
    seed: S::Seed,
}

impl<S: Slot> Buckets<S> {
    /// Empty buckets for `spec`: `rate` tokens per second, `burst` tokens, at most
    /// `max_keys` keys, keys hashed with `seed`.
    ///
    /// # Errors
    ///
    /// Numbers that cannot make a bucket ([`LimitSpec::periods`]).
    pub(crate) fn new(spec: &LimitSpec, seed: S::Seed) -> Result<Self, SpecError> {
        let (t, tau) = spec.periods()?;
        let now = Instant::now();
        let epoch = EPOCH_SLACK
            .iter()
            .find_map(|&slack| now.checked_sub(slack))
            .unwrap_or(now);
        Ok(Buckets {
            t,
            burst: spec.burst(),
            t_now: AtomicU64::new(t),
            tau_now: AtomicU64::new(tau),
            fresh_ahead: AtomicU64::new(0),
            slots: CappedMap::new(spec.max_keys()),
            overflow: Overflow::default(),
            epoch,
            seed,
        })
    }

    /// The key hash's seed.
    pub(crate) fn seed(&self) -> &S::Seed {
        &self.seed
    }

    /// The refill period and burst time in force.
    #[inline]
    pub(super) fn periods_now(&self) -> (u64, u64) {
        (
            self.t_now.load(Ordering::Relaxed),
            self.tau_now.load(Ordering::Relaxed),
        )
    }

    /// Puts in force one token per `t` nanoseconds and a burst of `burst` tokens, new
    /// keys starting `fresh_ahead` nanoseconds into their bucket.
    pub(super) fn set_periods(&self, t: u64, burst: u32, fresh_ahead: u64) {
        let tau = t.saturating_mul(u64::from(burst.max(1) - 1));
        self.t_now.store(t, Ordering::Relaxed);
        self.tau_now.store(tau, Ordering::Relaxed);
        self.fresh_ahead.store(fresh_ahead, Ordering::Relaxed);
    }

    /// How much later than now a new key's `tat` starts.
    pub(super) fn fresh_ahead(&self) -> u64 {
        self.fresh_ahead.load(Ordering::Relaxed)
    }

    /// Takes one token from the bucket of `key` at `now`.
    #[inline]
    pub(crate) fn take(&self, key: u64, now: Instant) -> Take {
        self.take_outcome(key, now).take()
    }

    /// Takes one token from the bucket of `key` at `now`, with the precise outcome.
    #[inline]
    pub(crate) fn take_outcome(&self, key: u64, now: Instant) -> Outcome {
        let now = self.nanos(now);
        let (t, tau) = self.periods_now();
        // An absent key is a full bucket: tat = now.
        let taken = self.slots.update(
            key,
            || S::fresh(now, self.fresh_ahead()),
            |slot| {
                let start = slot.tat().max(now);
                let ahead = start - now;
                if ahead > tau {
                    let first = slot.denied();
                    return Outcome::Denied {
                        wait: ahead - tau,
                        first,
                    };
                }
                slot.allowed(start.saturating_add(t));
                Outcome::Allowed
            },
        );
        taken.unwrap_or_else(|| match self.overflow.take(key, now, t, tau) {
            Estimate::Allowed => Outcome::Allowed,
            Estimate::Denied(wait) => Outcome::Denied { wait, first: false },
        })
    }

    /// What [`Buckets::take`] would give at `now`, changing nothing.
    pub(crate) fn peek(&self, key: u64, now: Instant) -> Take {
        let now = self.nanos(now);
        let (_, tau) = self.periods_now();
        match self.slots.get(key, S::tat) {
            Some(tat) => {
                let ahead = tat.max(now) - now;
                if ahead > tau {
                    Take::Denied {
                        retry_after: retry_after(ahead - tau),
                    }
                } else {
                    Take::Allowed
                }
            }
            None => {
                let ahead = self.overflow.ahead(key, now);
                if ahead > tau {
                    Take::Denied {
                        retry_after: retry_after(ahead - tau),
                    }
                } else {
                    Take::Allowed
                }
            }
        }
    }

    /// Takes decided by the sketch so far: their key did not fit under the cap.
    pub(crate) fn approximate_count(&self) -> u64 {
        self.slots.untracked()
    }

    /// Drops the keys whose bucket is full at `now` (they behave as absent), and gives
    /// memory back when a shard's table is mostly empty. One shard locked at a time.
    pub(crate) fn retain_recent(&self, now: Instant) {
        let now = self.nanos(now);
        self.slots.retain(|slot| !slot.idle(now));
    }

    /// Keys stored.
    pub(crate) fn key_count(&self) -> usize {
        self.slots.len()
    }

    /// Time to refill one token, for tests.
    #[cfg(test)]
    pub(crate) fn period(&self) -> Duration {
        Duration::from_nanos(self.t)
    }

    /// Bytes held by the map's tables (entries and control bytes), for tests.
    #[cfg(test)]
    pub(crate) fn table_bytes(&self) -> usize {
        self.slots.table_bytes()
    }

    /// `now` as nanoseconds since the epoch (times before it count as the epoch).
    pub(super) fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A wait in whole seconds, rounded up, at least 1 (the unit of `txn.guard.retry_after`
/// and of the HTTP `Retry-After` header).
fn retry_after(wait_nanos: u64) -> Duration {
    Duration::from_secs(wait_nanos.div_ceil(1_000_000_000).max(1))
}

impl<S: Slot> fmt::Debug for Buckets<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (t, tau) = self.periods_now();
        f.debug_struct("Buckets")
            .field("t", &Duration::from_nanos(t))
            .field("tau", &Duration::from_nanos(tau))
            .field("max_keys", &self.slots.max_keys())
            .field("keys", &self.key_count())
            .finish_non_exhaustive()
    }
}
