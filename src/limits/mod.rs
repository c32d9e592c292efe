//! Rate limits: keyed token buckets with explicit time and bounded memory.
//!
//! Each `[[limit]]` becomes a [`Limit`]: a key specification (which requests share a
//! bucket, see [Keys](#keys)), optional conditions (path prefix, methods, host) and
//! the buckets themselves. For one request the engine asks the limits that may apply
//! ([`Limits::candidates`], an index by path prefix and host, see the `index` module)
//! whether each [`applies`](Limit::applies) and, if so, [`take`](Limit::take)s one
//! token at the request's `now`:
//!
//! ```text
//!  Request ──► applies? ──► key hash (SipHash of src/64, path, …) ──► shard ──► GCRA
//!                                                                         │
//!        Take::Allowed / Denied { retry_after } ◄─────────────────────────┘
//! ```
//!
//! # Keys
//!
//! `src` (IPv4 address, IPv6 /64), `src/N`, `src/N/M`, `asn`, `host`, `path`, `method`,
//! `arg:NAME`, `global`, joined with `+`; a missing value is one shared "absent" value,
//! so that leaving a header out does not escape a limit. Details in the `key` module.
//!
//! # Time
//!
//! Every operation takes `now` as an argument and nothing here reads a clock to decide
//! (the engine stays a pure function of request and time; tests move time by adding to
//! an `Instant`, never by sleeping). Threads may pass slightly different, even
//! out-of-order `now`s: the state update is atomic per key, and a take with an older
//! `now` only sees less refill, so no interleaving grants more than
//! `burst + rate · (latest − earliest now)` tokens.
//!
//! # Memory
//!
//! A tracked key costs about 37 bytes (a 64-bit key hash and a 64-bit time in a hash
//! table). Each limit holds at most `max_keys` keys: at the cap, a request with a new key
//! is limited approximately, in a fixed 2 MiB sketch allocated the first time the cap is
//! reached (the `overflow` module: never more than the key's limit, sometimes less when
//! very many keys are over it) and counted ([`Limit::approximate`], exposed as a
//! metric), while the keys in the table keep being limited exactly. [`Limits::retain_recent`],
//! called periodically, drops the keys whose bucket has refilled completely, which is
//! exactly the state of a key never seen; so a flood of millions of one-shot sources
//! occupies at most `max_keys` keys, and for no longer than `burst / rate` after its
//! last request plus one eviction interval.
//!
//! # Why not governor's keyed limiter
//!
//! governor 0.10 implements the same algorithm (GCRA) and the decisions here are
//! identical to governor's (a property test drives both with the same times). It is not
//! used for the state because:
//!
//! - **No explicit time.** `RateLimiter::check_key` reads `self.clock.now()` and has no
//!   variant taking a time. The clock belongs to the limiter, which every worker thread
//!   shares, so per-request times from several threads can only reach it through a
//!   thread-local the caller sets before each call: sound, but the time then travels
//!   beside the call instead of through it.
//! - **No hard key cap.** Its `DashMapStateStore` inserts every new key
//!   (`entry(key.clone()).or_default()`), and the limiter neither exposes its store nor
//!   can tell whether a key is new; `len()` locks every DashMap shard. A cap needs a
//!   custom `StateStore`, and the `StateStore` contract (a closure generic over governor's
//!   outcome types) gives the store no way to report "not tracked", so that needs a second
//!   side channel or a second lookup.
//! - **Eviction.** `retain_recent()` also reads the limiter's clock, and the per-key
//!   `InMemoryState::is_older_than` is crate-private, so a custom store would re-implement
//!   the per-key state anyway.
//!
//! With both a custom clock and a custom store, governor would contribute the dozen lines
//! of GCRA arithmetic. Here those lines sit next to the map, under one lock, with
//! `now` as a parameter. `benches/limits.rs` measures governor (thread-local clock,
//! DashMap, no cap) next to this implementation and a naive `Mutex<HashMap>` baseline:
//! on a hot key the two are equal (35–40 ns); on 100k cold keys governor's lookup was
//! 10–30 % faster (about 55 against 70 ns, both dominated by the same cache miss on the
//! table entry), and memory per key is the same (37 bytes).
//!
//! # Reloads
//!
//! [`Limits::build`] hands the buckets of every limit whose name and parameters are
//! unchanged to the new [`Limits`] (`dry_run` may change: it does not change what the
//! buckets count, and keeping the state is what an operator switching a limit from dry
//! run to enforcing wants). Any other change starts with fresh (full) buckets.

mod buckets;
mod fleet;
mod index;
mod key;
mod overflow;
mod spec;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::decision::Request;

use buckets::Buckets;
pub use fleet::{FleetBuckets, FleetLink, FleetSeed, Mark, MarkSender};
pub use index::Candidates;
use index::LimitIndex;
use key::host_without_port;
pub use key::{KeyError, KeySpec};
pub use spec::{LimitSpec, Scope, SpecError, DEFAULT_MAX_KEYS};

/// Every configured limit, in configuration order, with its buckets.
#[derive(Debug, Default)]
pub struct Limits {
    /// In configuration order (the engine evaluates them in this order).
    limits: Vec<Limit>,
    /// Finds the limits that may apply to a request without asking each.
    index: LimitIndex,
    /// The fleet the fleet limits were built for, handed on to the next build.
    fleet: Option<FleetLink>,
}

/// A limit's buckets: this agent's alone, or its view of the fleet's.
#[derive(Debug, Clone)]
enum State {
    Local(Arc<Buckets>),
    Fleet(Arc<FleetBuckets>),
}

/// One `[[limit]]`: conditions, key and buckets.
#[derive(Debug)]
pub struct Limit {
    /// `txn.guard.rule` value when this limit denies.
    name: Bytes,
    /// As configured: compared on reload to decide whether the buckets carry over, and
    /// used by [`Limit::describe`].
    spec: LimitSpec,
    /// The key is `global`: one bucket, nothing to hash.
    global: bool,
    /// `spec.host` lower-cased without a port, for [`Limit::applies`].
    host: Option<Vec<u8>>,
    /// The state; shared with the previous [`Limits`] when carried over.
    state: State,
}

/// What taking a token from a request's bucket gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// A token was taken.
    Allowed,
    /// The bucket is empty.
    Denied {
        /// Until the bucket has a token again: whole seconds, rounded up, at least 1
        /// (`txn.guard.retry_after`).
        retry_after: Duration,
    },
}

impl Limits {
    /// Builds the limits of `specs`. The buckets of every limit of `previous` whose
    /// name and parameters (everything but `dry_run`) are unchanged are shared with the
    /// new limit; changed and new limits start with full buckets; removed ones are dropped
    /// with the old `Limits`. Fleet limits join the fleet of `fleet`, or of `previous`
    /// when `fleet` is `None`.
    ///
    /// # Errors
    ///
    /// Numbers that cannot make a bucket (a validated [`LimitSpec`] has none), or a
    /// fleet limit without a fleet, naming the limit.
    pub fn build(
        specs: &[LimitSpec],
        previous: Option<&Limits>,
        fleet: Option<&FleetLink>,
    ) -> Result<Limits, BuildError> {
        let fleet = fleet.or_else(|| previous.and_then(|p| p.fleet.as_ref()));
        let mut limits: Vec<Limit> = Vec::with_capacity(specs.len());
        for spec in specs {
            let carried = previous
                .and_then(|p| p.limits.iter().find(|l| same_state(&l.spec, spec)))
                .map(|l| l.state.clone());
            let error = |error| BuildError {
                limit: spec.name.to_string(),
                error,
            };
            let state = match (carried, spec.scope, fleet) {
                (Some(state), _, _) => state,
                (None, Scope::Local, _) => State::Local(Arc::new(
                    Buckets::new(spec, Default::default()).map_err(error)?,
                )),
                (None, Scope::Fleet, Some(link)) => {
                    State::Fleet(Arc::new(FleetBuckets::new(spec, link).map_err(error)?))
                }
                (None, Scope::Fleet, None) => return Err(error(SpecError::NoFleet)),
            };
            limits.push(Limit {
                name: spec.name.bytes().clone(),
                host: spec
                    .host
                    .as_ref()
                    .map(|h| host_without_port(h.as_bytes()).to_ascii_lowercase()),
                global: spec.key.is_global(),
                spec: spec.clone(),
                state,
            });
        }
        let index = LimitIndex::build(specs);
        Ok(Limits {
            limits,
            index,
            fleet: fleet.cloned(),
        })
    }

    /// The limits in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Limit> {
        self.limits.iter()
    }

    /// The positions (in configuration order, as [`iter`](Self::iter) counts them) of
    /// the limits that may apply to `request`: every limit that
    /// [`applies`](Limit::applies) is among them, and most that do not are left out
    /// without being asked. Cost: the path up to the longest `path_prefix`, a binary
    /// search of the hosts, the limits without either condition; not the number of
    /// limits.
    pub fn candidates(&self, request: &Request<'_>) -> Candidates {
        self.index.candidates(request)
    }

    /// The limit at `position` (as [`candidates`](Self::candidates) gives them).
    pub fn get(&self, position: u32) -> Option<&Limit> {
        self.limits.get(position as usize)
    }

    /// Number of limits.
    pub fn len(&self) -> usize {
        self.limits.len()
    }

    /// Whether there are no limits.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// Evicts the keys whose bucket is full at `now` (idle for at least `burst / rate`):
    /// they behave exactly like keys never seen. Call it every few seconds from a
    /// periodic task, off the async workers: it walks every map, one shard (1/64 of the
    /// keys) locked at a time; about 0.2 ms per 100,000 keys and 3 ms per million
    /// (`benches/limits.rs`).
    pub fn retain_recent(&self, now: Instant) {
        for limit in &self.limits {
            match &limit.state {
                State::Local(buckets) => buckets.retain_recent(now),
                State::Fleet(fleet) => fleet.buckets.retain_recent(now),
            }
        }
    }

    /// Keys tracked over all limits (the rate-limit keys gauge).
    pub fn key_count(&self) -> usize {
        self.limits.iter().map(Limit::key_count).sum()
    }
}

/// A limit whose numbers cannot make a bucket.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("limit {limit:?}: {error}")]
pub struct BuildError {
    /// The limit's name.
    pub limit: String,
    /// What is wrong.
    pub error: SpecError,
}

impl Limit {
    /// The limit's name (`txn.guard.rule`).
    pub fn name(&self) -> &Bytes {
        &self.name
    }

    /// Whether the limit only reports what it would deny.
    pub fn dry_run(&self) -> bool {
        self.spec.dry_run
    }

    /// The limit as configured.
    pub fn spec(&self) -> &LimitSpec {
        &self.spec
    }

    /// Whether the request is subject to this limit: its path starts with `path_prefix`
    /// (bytes; a request without a path never matches a prefix), its method is one of
    /// `methods` (case-insensitive), and its Host header, without `:port`, is `host`
    /// (case-insensitive). Unset conditions match everything.
    pub fn applies(&self, request: &Request<'_>) -> bool {
        if let Some(prefix) = &self.spec.path_prefix {
            if !request
                .path
                .is_some_and(|p| p.starts_with(prefix.as_bytes()))
            {
                return false;
            }
        }
        if !self.spec.methods.is_empty() {
            let Some(method) = request.method else {
                return false;
            };
            if !self
                .spec
                .methods
                .iter()
                .any(|m| m.as_bytes().eq_ignore_ascii_case(method))
            {
                return false;
            }
        }
        if let Some(host) = &self.host {
            let Some(request_host) = request.host else {
                return false;
            };
            if !host_without_port(request_host).eq_ignore_ascii_case(host) {
                return false;
            }
        }
        true
    }

    /// Takes one token at `now` from the bucket of the request's key (`asn`: the
    /// source's ASN when known). Does not check [`Limit::applies`].
    #[inline]
    pub fn take(&self, request: &Request<'_>, asn: Option<u32>, now: Instant) -> Take {
        match &self.state {
            State::Local(buckets) => buckets.take(self.key_hash(buckets.seed(), request, asn), now),
            State::Fleet(fleet) => {
                fleet.take(self.key_hash(fleet.buckets.seed(), request, asn), now)
            }
        }
    }

    /// What [`Limit::take`] would give at `now`, without taking anything (for `eval`
    /// on steps after the decision).
    pub fn peek(&self, request: &Request<'_>, asn: Option<u32>, now: Instant) -> Take {
        match &self.state {
            State::Local(buckets) => buckets.peek(self.key_hash(buckets.seed(), request, asn), now),
            State::Fleet(fleet) => fleet
                .buckets
                .peek(self.key_hash(fleet.buckets.seed(), request, asn), now),
        }
    }

    /// Keys tracked by this limit.
    pub fn key_count(&self) -> usize {
        match &self.state {
            State::Local(buckets) => buckets.key_count(),
            State::Fleet(fleet) => fleet.buckets.key_count(),
        }
    }

    /// Requests limited approximately because their key did not fit under the key cap,
    /// since these buckets were created (they carry over reloads with the buckets).
    pub fn approximate(&self) -> u64 {
        match &self.state {
            State::Local(buckets) => buckets.approximate_count(),
            State::Fleet(fleet) => fleet.buckets.approximate_count(),
        }
    }

    /// Whose traffic the limit counts.
    pub fn scope(&self) -> Scope {
        self.spec.scope
    }

    /// The fleet side of a fleet limit, for the fleet's background task.
    pub fn fleet(&self) -> Option<&FleetBuckets> {
        match &self.state {
            State::Local(_) => None,
            State::Fleet(fleet) => Some(fleet),
        }
    }

    /// The hashed key of a request, as [`Limit::fleet`]'s keys are named (for `eval` and
    /// tests).
    pub fn key_of(&self, request: &Request<'_>, asn: Option<u32>) -> u64 {
        match &self.state {
            State::Local(buckets) => self.key_hash(buckets.seed(), request, asn),
            State::Fleet(fleet) => self.key_hash(fleet.buckets.seed(), request, asn),
        }
    }

    /// The limit in words, for `eval`: `key src+path, 1/s burst 5, POST /login*`.
    pub fn describe(&self) -> String {
        let spec = &self.spec;
        let mut text = format!("key {}, {}/s burst {}", spec.key, spec.rate, spec.burst());
        let mut conditions: Vec<String> = Vec::new();
        if !spec.methods.is_empty() {
            let methods: Vec<String> = spec
                .methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect();
            conditions.push(methods.join(","));
        }
        if let Some(prefix) = &spec.path_prefix {
            conditions.push(format!("{}*", prefix.escape_debug()));
        }
        if let Some(host) = &self.host {
            conditions.push(format!("host {}", host.escape_ascii()));
        }
        if !conditions.is_empty() {
            text.push_str(", ");
            text.push_str(&conditions.join(" "));
        }
        text
    }

    /// The request's key in words, for `eval`: `src=192.0.2.7 path=/login`.
    pub fn describe_key(&self, request: &Request<'_>, asn: Option<u32>) -> String {
        self.spec.key.describe(request, asn)
    }

    /// A local limit's buckets, for tests.
    #[cfg(test)]
    fn local_buckets(&self) -> &Arc<Buckets> {
        match &self.state {
            State::Local(buckets) => buckets,
            State::Fleet(_) => panic!("a fleet limit"),
        }
    }

    /// The hashed key (a constant for `global`).
    #[inline]
    fn key_hash(
        &self,
        seed: &impl std::hash::BuildHasher,
        request: &Request<'_>,
        asn: Option<u32>,
    ) -> u64 {
        if self.global {
            0
        } else {
            self.spec.key.hash(seed, request, asn)
        }
    }
}

/// Whether the buckets of a limit configured as `old` stay valid for `new`.
fn same_state(old: &LimitSpec, new: &LimitSpec) -> bool {
    LimitSpec {
        dry_run: new.dry_run,
        ..old.clone()
    } == *new
}

#[cfg(test)]
mod tests;
