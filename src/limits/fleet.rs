//! The request-path half of fleet limits (`scope = "fleet"`): what each agent keeps so
//! that many agents enforce one limit, deciding from memory alone.
//!
//! A fleet limit's buckets are ordinary GCRA buckets (`buckets.rs`) whose slots also
//! count the tokens taken here and not yet reported ([`FleetSlot`]). The fleet's
//! background task (the `fleet` module, off the request path) periodically:
//!
//! 1. collects the keys with unreported tokens ([`FleetBuckets::unreported`]), heaviest
//!    first up to its cap, and marks them reported ([`FleetBuckets::reported`]);
//! 2. adds them to the fleet's own bucket of each key in Redis, which answers with how far
//!    the fleet's `tat` runs ahead of now;
//! 3. folds that answer back ([`FleetBuckets::fold`]): the local `tat` becomes at least
//!    the fleet's plus the tokens taken here since step 1. A key every agent hammers is
//!    then denied everywhere, however the traffic is spread.
//!
//! Between two exchanges an agent only sees its own takes. To close that gap for keys
//! already over the limit, the first denial of a key (after it was last allowed) is
//! queued as a [`Mark`] (a lossy, bounded queue: the request path never waits), which
//! the fleet publishes at once; every agent then applies it ([`FleetBuckets::mark`]) and
//! denies the key too, rather than admitting a burst of it before the next exchange.
//!
//! A key new to an agent may take that agent's share of the burst at once, the rest
//! after the next exchange ([`FleetBuckets::set_agents`]). While the fleet store is
//! unreachable each agent enforces its share: the rate and the burst divided by the
//! agents last seen alive.
//!
//! Keys are hashed with a [`FleetSeed`] derived from the fleet's name and secret, so that
//! every agent names the same client's bucket alike (a local limit's seed is random per
//! process).

use std::hash::{BuildHasher, Hash, Hasher};
use std::time::Instant;

use siphasher::sip::SipHasher13;
use siphasher::sip128::{Hasher128, SipHasher13 as SipHasher13x128};

use super::buckets::{Buckets, Outcome, Slot};
use super::spec::LimitSpec;

/// The key hash every agent of a fleet computes alike: SipHash-1-3 keyed from the fleet's
/// name and secret (a 128-bit SipHash of both under a fixed key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetSeed {
    k0: u64,
    k1: u64,
}

impl FleetSeed {
    /// The seed of fleet `name` with `secret` (may be empty).
    pub fn derive(name: &str, secret: &[u8]) -> FleetSeed {
        let mut h = SipHasher13x128::new_with_keys(0x7370_6f61_2d67_7561, 0x7264_2066_6c65_6574);
        h.write(b"spoa-guard fleet key v1\0");
        h.write_usize(name.len());
        h.write(name.as_bytes());
        h.write_usize(secret.len());
        h.write(secret);
        let out = h.finish128();
        FleetSeed {
            k0: out.h1,
            k1: out.h2,
        }
    }

    /// The identity of a fleet limit: the same on every agent with the same `[[limit]]`
    /// (name, key, rate, burst, conditions; not `dry_run` or `max_keys`, which are this
    /// agent's business), different when any of these differ, so agents running two
    /// versions of a limit during a rollout do not share buckets of different sizes.
    pub fn limit_id(&self, spec: &LimitSpec) -> u64 {
        let mut h = self.build_hasher();
        spec.name.to_string().hash(&mut h);
        spec.key.to_string().hash(&mut h);
        spec.rate.to_bits().hash(&mut h);
        spec.burst().hash(&mut h);
        spec.path_prefix.hash(&mut h);
        let mut methods: Vec<String> = spec.methods.iter().map(|m| m.to_lowercase()).collect();
        methods.sort();
        methods.hash(&mut h);
        spec.host.as_ref().map(|h| h.to_lowercase()).hash(&mut h);
        h.finish()
    }
}

impl BuildHasher for FleetSeed {
    type Hasher = SipHasher13;

    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

/// A key found over its limit here, for the fleet to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The limit's [`FleetSeed::limit_id`].
    pub limit: u64,
    /// The hashed key.
    pub key: u64,
    /// Nanoseconds until the key's bucket has a token again.
    pub wait: u64,
}

/// Where the request path queues [`Mark`]s: bounded; a full queue drops the mark.
pub type MarkSender = tokio::sync::mpsc::Sender<Mark>;

/// What fleet limits need from the fleet when they are built.
#[derive(Debug, Clone)]
pub struct FleetLink {
    /// The fleet's key hash.
    pub seed: FleetSeed,
    /// Where marks go; `None` offline (`check`, `eval`).
    pub marks: Option<MarkSender>,
}

/// A fleet limit's slot: 16 bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FleetSlot {
    tat: u64,
    /// Tokens taken here since the key was last reported.
    unreported: u32,
    /// Denied since last allowed: its mark is out (or came from the fleet).
    marked: bool,
    /// New here and not yet folded with the fleet's view: `tat` started ahead by this
    /// agent's share of the burst (see [`FleetBuckets::set_agents`]).
    provisional: bool,
}

impl Slot for FleetSlot {
    type Seed = FleetSeed;

    #[inline]
    fn fresh(now: u64, ahead: u64) -> Self {
        FleetSlot {
            tat: now.saturating_add(ahead),
            unreported: 0,
            marked: false,
            provisional: ahead > 0,
        }
    }

    #[inline]
    fn tat(&self) -> u64 {
        self.tat
    }

    #[inline]
    fn allowed(&mut self, tat: u64) {
        self.tat = tat;
        self.unreported = self.unreported.saturating_add(1);
        self.marked = false;
    }

    #[inline]
    fn denied(&mut self) -> bool {
        !std::mem::replace(&mut self.marked, true)
    }

    fn idle(&self, now: u64) -> bool {
        self.tat <= now && self.unreported == 0
    }
}

/// A fleet limit's buckets, with its identity and the mark queue.
pub struct FleetBuckets {
    id: u64,
    pub(super) buckets: Buckets<FleetSlot>,
    marks: Option<MarkSender>,
}

impl std::fmt::Debug for FleetBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetBuckets")
            .field("id", &format_args!("{:016x}", self.id))
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}

impl FleetBuckets {
    /// Empty buckets for `spec` in the fleet of `link`.
    pub(super) fn new(
        spec: &LimitSpec,
        link: &FleetLink,
    ) -> Result<FleetBuckets, super::SpecError> {
        Ok(FleetBuckets {
            id: link.seed.limit_id(spec),
            buckets: Buckets::new(spec, link.seed)?,
            marks: link.marks.clone(),
        })
    }

    /// The limit's identity in the fleet ([`FleetSeed::limit_id`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Nanoseconds to refill one token, as configured (not this agent's share).
    pub fn period(&self) -> u64 {
        self.buckets.t
    }

    /// The burst as configured.
    pub fn burst(&self) -> u32 {
        self.buckets.burst
    }

    /// Takes one token at `now`; the first denial of a key since it was last allowed
    /// queues a [`Mark`] (dropped when the queue is full).
    #[inline]
    pub(super) fn take(&self, key: u64, now: Instant) -> super::Take {
        let outcome = self.buckets.take_outcome(key, now);
        if let (Outcome::Denied { wait, first: true }, Some(marks)) = (outcome, &self.marks) {
            let _ = marks.try_send(Mark {
                limit: self.id,
                key,
                wait,
            });
        }
        outcome.take()
    }

    /// Every key with tokens taken here and not yet reported, with their number.
    pub fn unreported(&self) -> Vec<(u64, u32)> {
        let mut keys = Vec::new();
        self.buckets.slots.for_each(|key, slot| {
            if slot.unreported > 0 {
                keys.push((key, slot.unreported));
            }
        });
        keys
    }

    /// Notes that `count` tokens of `key` were reported (tokens taken meanwhile stay
    /// unreported).
    pub fn reported(&self, key: u64, count: u32) {
        self.buckets.slots.get_mut(key, |slot| {
            slot.unreported = slot.unreported.saturating_sub(count);
        });
    }

    /// Puts back `count` unreported tokens of `key` after a failed report.
    pub fn unreport(&self, key: u64, count: u32) {
        self.buckets.slots.get_mut(key, |slot| {
            slot.unreported = slot.unreported.saturating_add(count);
        });
    }

    /// Folds the fleet's view of `key` in: its bucket's `tat` runs `ahead` nanoseconds
    /// ahead of `now` (negative: behind, a bucket with room) counting every token
    /// reported so far; the local `tat` becomes at least that plus the tokens taken here
    /// since. It never lowers the local `tat`, but for the head start of a provisional
    /// key (new here: its share of the burst was all it could take until the fleet's
    /// view came). A key evicted meanwhile is left out.
    pub fn fold(&self, key: u64, ahead: i64, now: Instant) {
        let now = self.buckets.nanos(now);
        let (t, _) = self.buckets.periods_now();
        let head_start = self.buckets.fresh_ahead();
        let fleet_tat = now.saturating_add_signed(ahead);
        self.buckets.slots.get_mut(key, |slot| {
            let tat = fleet_tat.saturating_add(t.saturating_mul(u64::from(slot.unreported)));
            let own = if slot.provisional {
                slot.tat.saturating_sub(head_start)
            } else {
                slot.tat
            };
            slot.tat = own.max(tat);
            slot.provisional = false;
        });
    }

    /// Applies a mark from another agent: `key` is denied for `wait` more nanoseconds
    /// from `now`. Stored even for a key never seen here (within the key cap), and not
    /// published again.
    pub fn mark(&self, key: u64, wait: u64, now: Instant) {
        let now = self.buckets.nanos(now);
        let (_, tau) = self.buckets.periods_now();
        let tat = now.saturating_add(tau).saturating_add(wait);
        self.buckets.slots.update(
            key,
            || FleetSlot::fresh(now, 0),
            |slot| {
                if tat > slot.tat {
                    slot.tat = tat;
                    slot.marked = true;
                    slot.provisional = false;
                }
            },
        );
    }

    /// Sets how the limit is enforced among `agents` (at least 1):
    ///
    /// - in step with the fleet (`alone = false`): the whole rate and burst, the fleet's
    ///   view folded in at each exchange; a key new here starts with this agent's share of
    ///   the burst (`burst ÷ agents`, at least one token) until the first exchange that
    ///   includes it, so that a key sprayed over every agent at once gets one burst in
    ///   all, not one per agent;
    /// - alone (`alone = true`, the fleet store unreachable): this agent's share, the rate
    ///   and the burst divided by `agents`.
    pub fn set_agents(&self, agents: u32, alone: bool) {
        let agents = agents.max(1);
        let share = self.buckets.burst.div_ceil(agents).max(1);
        if alone {
            let t = self.buckets.t.saturating_mul(u64::from(agents));
            self.buckets.set_periods(t, share, 0);
        } else {
            let t = self.buckets.t;
            let head_start = t.saturating_mul(u64::from(self.buckets.burst - share));
            self.buckets.set_periods(t, self.buckets.burst, head_start);
        }
    }

    /// The `n` keys whose buckets run furthest ahead of `now` — the heaviest users of
    /// the limit as this agent sees the fleet — with how far, in nanoseconds, heaviest
    /// first. Walks every key (one shard locked at a time): for the admin API, not the
    /// request path.
    pub fn hottest(&self, n: usize, now: Instant) -> Vec<(u64, u64)> {
        let now = self.buckets.nanos(now);
        let mut hot: Vec<(u64, u64)> = Vec::new();
        self.buckets.slots.for_each(|key, slot| {
            if slot.tat > now {
                hot.push((key, slot.tat - now));
            }
        });
        hot.sort_unstable_by_key(|h| std::cmp::Reverse(h.1));
        hot.truncate(n);
        hot
    }

    /// How long a bucket `ahead` nanoseconds ahead stays empty (0: it has tokens), and how
    /// many tokens it is ahead by.
    pub fn describe_ahead(&self, ahead: u64) -> (std::time::Duration, f64) {
        let (t, tau) = (
            self.buckets.t,
            self.buckets
                .t
                .saturating_mul(u64::from(self.buckets.burst - 1)),
        );
        (
            std::time::Duration::from_nanos(ahead.saturating_sub(tau)),
            ahead as f64 / t as f64,
        )
    }

    /// How far `key`'s local `tat` runs ahead of `now`, in nanoseconds (`None`: not
    /// tracked, or a full bucket).
    pub fn ahead(&self, key: u64, now: Instant) -> Option<u64> {
        let now = self.buckets.nanos(now);
        self.buckets
            .slots
            .get(key, |slot| slot.tat.checked_sub(now))
            .flatten()
            .filter(|&ahead| ahead > 0)
    }
}

#[cfg(test)]
mod tests;
