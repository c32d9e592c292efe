//! Traffic insight: the heaviest sources, networks, ASNs, paths, hosts and user agents
//! over sliding windows, for all traffic and for denied traffic, in bounded memory and
//! at 5 to 40 nanoseconds per request on the request path.
//!
//! This module owns the data structure behind `GET /top`: [`Insight::record`] on the
//! request path, [`Insight::aggregate`] from a periodic task, and [`Insight::top`], which
//! returns a [`TopReport`] (serde) for the HTTP layer to serve. It reads no clock:
//! every call takes its `now` (tests move time by adding to an `Instant`).
//!
//! ```text
//!  worker threads                       periodic task (1/s) and GET /top
//!  ──────────────                       ────────────────────────────────
//!  record(obs) ─► thread-local countdown
//!                  │ sampled (1 in I)
//!                  ▼
//!            shard buffers  ─── drain ──► slot of each sample's time
//!            (64 KiB chunks,               ├─ all:    6 Space-Saving summaries + total
//!             one lock per thread)         └─ denied: 6 Space-Saving summaries + total
//!                                                │ ring of `slots` slots
//!                                                ▼
//!                                  top(window, n, now): merge the window's slots
//! ```
//!
//! # Dimensions and classes
//!
//! Six [`Dimension`]s: source address (IPv4-mapped IPv6 counted as IPv4), source
//! network (IPv4 /24, IPv6 /48), ASN, path, Host header and user agent; absent values
//! are a key of their own (`(none)`, ASN `unknown`). Two classes: every request, and
//! denied requests. Paths, hosts and user agents longer than `key_bytes` (128) are cut
//! there, so keys sharing a long prefix count together (shown with a trailing `…`).
//!
//! # Per-request cost: sampling
//!
//! The request path must not contend with other threads. [`Insight::record`] reads one
//! atomic (the sampling interval `I`, written once a second) and decrements a
//! thread-local countdown; only when that reaches 0 does it copy the request's fields
//! into its thread's buffer shard, under a lock no other request thread takes. Allowed
//! and denied requests are sampled as separate streams, each with its own `I`, and a
//! sample carries the number of requests it stands for (its weight). Details and the
//! proof that estimates are unbiased are in `buffer.rs`.
//!
//! [`Insight::aggregate`] sets `I` from the rate it drained since the previous
//! adaptation, so that at most `samples_per_sec` (20,000) samples a second reach the
//! buffers: below that rate `I = 1` and **every request is counted**; above it, allowed
//! and denied requests share the budget (the smaller stream gets up to half, the other
//! the rest), so denied traffic is counted exactly as long as it stays under half the
//! budget, however much allowed traffic there is; at 475k allowed and 25k denied
//! requests/s the intervals are 48 and 3. Giving the denied class half the budget
//! whenever it needs it costs the "all" class accuracy (its interval doubles) but keeps
//! the report of what is being blocked as good as the report of everything. Until the next adaptation a sudden
//! surge is sampled at the old interval; the buffers' byte cap bounds what that can
//! hold, and a sample over the cap is counted in the totals only (`sampling.dropped`).
//!
//! The alternative designs were a lock or an atomic per request (contended at 500k
//! requests/s across workers), and updating the summaries directly in the request path
//! (a keyed hash of each of six keys and up to twelve heap updates: several hundred
//! nanoseconds per request at low rates, when every request is sampled). Copying about
//! 200 bytes into a private buffer and leaving the rest to one background pass is what
//! keeps the request path under its budget; see [Costs](#costs).
//!
//! # Aggregation, slots and windows
//!
//! Time is cut into slots of `slot_secs` (10 s) since the `Insight` was created; a ring
//! keeps the last `slots` (30), so the longest window is 5 minutes. Aggregation drains
//! the buffers and adds every sample to the slot of its own time, in one weighted
//! Space-Saving summary (`summary.rs`) of `counters` (`k` = 100) counters per dimension and
//! class. A report merges the summaries of the slots in the window: the current,
//! partly elapsed slot and the whole slots before it, `window / slot_secs` in all, so a
//! 1-minute window covers between 50 and 60 seconds (`covered_secs`) and nothing older
//! than the window is ever reported: a request stops counting in a window of length
//! `W` at the latest `W` after it was made, and still counts at least until `W − slot`.
//! [`Insight::top`] aggregates first, so a report is never staler than its `now`.
//!
//! # Error bounds
//!
//! Let `N` be the requests of a class in the window and `k` the counters per summary.
//!
//! - **Space-Saving.** Per slot, a summary's counts overestimate by at most
//!   `N_slot / k`; merged over the window (a slot that does not monitor a key
//!   contributes its smallest count, a bound on the key's count there), each reported
//!   entry satisfies `count − error ≤ true ≤ count` with `error ≤ N / k`. Every key
//!   with more than `N / k` requests in the window is among the candidates, so a top
//!   `n` lists every such key that is heavier than its `n`-th entry; a key not listed has
//!   at most `max(N / k, count of the last listed entry)` requests. While a slot has seen
//!   fewer than `k` distinct keys of a dimension, its counts there are exact (error 0).
//! - **Sampling.** With `I > 1` the weights of a key's samples are an unbiased
//!   estimate of its requests, and the bounds above hold for the sampled stream, not for
//!   the true one. A key with `c` requests has a relative standard deviation of about
//!   `√(I / c)` (or better: the jittered systematic sampling is at most as variable as
//!   independent sampling with probability `1 / I`): at 500k requests/s with few
//!   denials (`I` = 25) a key with 1 % of a 1-minute window (300,000 requests) is
//!   within about ±1 % (one standard deviation). Totals are exact up to fewer than `2I`
//!   requests per thread still waiting for their sample. `sampling.exact` says whether
//!   the whole window was counted without sampling and nothing was dropped.
//!
//! # Memory
//!
//! Bounded whatever the traffic: [`InsightConfig::max_memory_bytes`], 15.3 MB with the
//! defaults, checked by a test that records a million distinct sources, networks, ASNs,
//! paths, hosts and user agents (all keys longer than `key_bytes`); its peak was 11.9 MB.
//!
//! - Sample buffers: at most `buffer_bytes` (8 MiB) of 64 KiB chunks, spares included.
//!   A sample takes about 200 bytes with browser user agents (at most 455 with the
//!   default `key_bytes`), so the cap holds about two seconds of the default budget;
//!   in steady state the buffers hold about one second's worth.
//! - Summaries: per slot, 2 classes × 6 dimensions × `k` counters of 72 bytes (key
//!   hash, key, error, heap place and count), plus up to `key_bytes + 1` bytes of key
//!   for paths, hosts and user agents, plus a hash index (at most 4.4 KB per summary).
//!   With the defaults that is at most 218 KB per slot and 6.5 MB for the ring; after
//!   five minutes of the bench's realistic mix every summary is full and the ring holds
//!   4.9 MB.
//! - A report: one dimension merged at a time, at most `slots · k` candidates (at
//!   most 0.4 MB), freed before [`Insight::top`] returns, plus the report itself.
//!
//! `buffer_bytes` and `samples_per_sec` go together (the buffers should hold about two
//! seconds of samples); memory for the summaries grows with `slots · counters`. The
//! figures count heap bytes as requested, not the allocator's own overhead (about 16
//! bytes per key buffer).
//!
//! # Costs
//!
//! `benches/insight.rs`, medians on the 2-vCPU VM of `BENCHMARKS.md` (a realistic
//! mix of sources, paths and user agents; the bench loop alone takes 3.5 ns, subtracted;
//! in noisier runs the same figures came out up to 25 % higher):
//!
//! | what | cost |
//! |---|---|
//! | [`Insight::record`], every request sampled (below 20,000 requests/s) | 36 ns (40 ns each with two threads recording at once) |
//! | [`Insight::record`] at 500k requests/s (intervals 48 and 3) | 5 ns (5 ns with two threads) |
//! | [`Insight::aggregate`] of one second at the full budget (20,000 samples) | 8.5 ms: 420 ns a sample, under 1 % of one CPU |
//! | [`Insight::top`], top 10 over 1 / 5 minutes, every summary full | 0.2 ms / 1.1 ms |
//!
//! So the request path pays 5 to 40 ns, under its 100 ns budget. What the periodic task
//! pays is bounded by the sample budget, not by the traffic: at 500k requests/s it
//! comes to 17 ns a request (22 ns in all with `record`), and below 20,000 requests/s
//! to at most 8.5 ms of one CPU a second. Most of the aggregation is the summary
//! updates (the heap and its index, with cache misses over the current slot's twelve
//! summaries) and, for a third, the keyed SipHash of the six keys (about 60 ns for a
//! 130-byte user agent).
//!
//! # JSON
//!
//! Abridged (`n` = 2, the denied class's other dimensions left out):
//!
//! ```json
//! {
//!   "window_secs": 60,
//!   "covered_secs": 57.25,
//!   "slot_secs": 10,
//!   "counters": 100,
//!   "totals": { "requests": 6000, "denied": 1000 },
//!   "sampling": { "exact": true, "interval": 1, "interval_denied": 1, "dropped": 0 },
//!   "all": {
//!     "src": [
//!       { "key": "203.0.113.9", "count": 5000, "share": 0.8333, "error": 0 },
//!       { "key": "192.0.2.44", "count": 12, "share": 0.002, "error": 0 }
//!     ],
//!     "src_net": [ { "key": "203.0.113.0/24", "count": 5000, "share": 0.8333, "error": 0 } ],
//!     "asn": [ { "key": "AS64500", "count": 5000, "share": 0.8333, "error": 0 } ],
//!     "path": [ { "key": "/login", "count": 5000, "share": 0.8333, "error": 0 } ],
//!     "host": [ { "key": "example.com", "count": 6000, "share": 1.0, "error": 0 } ],
//!     "ua": [ { "key": "python-requests/2.31.0", "count": 5000, "share": 0.8333, "error": 0 } ]
//!   },
//!   "denied": {
//!     "src": [ { "key": "203.0.113.9", "count": 1000, "share": 1.0, "error": 0 } ],
//!     "path": [ { "key": "/login", "count": 1000, "share": 1.0, "error": 0 } ]
//!   }
//! }
//! ```
//!
//! For example `jq -r '.all.src[] | "\(.count)\t\(.share * 100)%\t\(.key)"'`.

mod buffer;
mod report;
mod summary;
mod window;

use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::decision::{Decision, Request, Verdict};
use crate::util::{Invalid, KeyPath};

use buffer::{Buffers, Weights, CHUNK_BYTES, MAX_INTERVAL, MAX_KEY_BYTES};
use window::{Class, Window};

pub use report::{ClassTop, Sampling, TopEntry, TopReport, Totals};

/// The dimensions that keys are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// Source address.
    Src,
    /// Source network: IPv4 /24, IPv6 /48.
    SrcNet,
    /// Autonomous system of the source.
    Asn,
    /// Request path.
    Path,
    /// Host header.
    Host,
    /// User-Agent header.
    Ua,
}

impl Dimension {
    /// Every dimension, in report order.
    pub const ALL: [Dimension; 6] = [
        Dimension::Src,
        Dimension::SrcNet,
        Dimension::Asn,
        Dimension::Path,
        Dimension::Host,
        Dimension::Ua,
    ];

    /// The dimension's name in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Src => "src",
            Dimension::SrcNet => "src_net",
            Dimension::Asn => "asn",
            Dimension::Path => "path",
            Dimension::Host => "host",
            Dimension::Ua => "ua",
        }
    }
}

/// What [`Insight::record`] needs to know about one request.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Source address (IPv4-mapped IPv6 is counted as IPv4).
    pub src: Option<IpAddr>,
    /// The source's autonomous system, when known.
    pub asn: Option<u32>,
    /// Request path; `None` and empty are the same.
    pub path: Option<&'a [u8]>,
    /// Host header; `None` and empty are the same.
    pub host: Option<&'a [u8]>,
    /// User-Agent header; `None` and empty are the same.
    pub ua: Option<&'a [u8]>,
    /// Whether the request was denied (counted in both classes).
    pub denied: bool,
    /// When the request was evaluated: decides its slot.
    pub now: Instant,
}

impl<'a> Observation<'a> {
    /// The observation of a request and its verdict: denied when the decision is
    /// [`Decision::Deny`] (dry-run rules do not count), with the verdict's ASN.
    pub fn of(request: &Request<'a>, verdict: &Verdict, now: Instant) -> Observation<'a> {
        Observation {
            src: request.src,
            asn: verdict.asn,
            path: request.path,
            host: request.host,
            ua: request.ua,
            denied: verdict.decision == Decision::Deny,
            now,
        }
    }
}

/// Settings of [`Insight`]; the defaults suit an agent at up to a few hundred thousand
/// requests per second.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InsightConfig {
    /// Length of a slot: windows slide by this much, and a window of `W` covers between
    /// `W − slot_secs` and `W`.
    pub slot_secs: u64,
    /// Slots kept: the longest window is `slot_secs · slots`.
    pub slots: usize,
    /// Counters per summary (`k`): the error of a count is at most the window's
    /// requests / `k`, and memory grows linearly with it.
    pub counters: usize,
    /// Samples per second that aggregation aims at; below this rate every request is
    /// counted.
    pub samples_per_sec: u64,
    /// Longest path, host or user agent kept, in bytes; longer ones are cut.
    pub key_bytes: usize,
    /// Cap on the sample buffers, in bytes (whole 64 KiB chunks, at least one): about
    /// two seconds of `samples_per_sec` at 200 bytes a sample.
    pub buffer_bytes: usize,
}

impl Default for InsightConfig {
    fn default() -> Self {
        InsightConfig {
            slot_secs: 10,
            slots: 30,
            counters: 100,
            samples_per_sec: 20_000,
            key_bytes: 128,
            buffer_bytes: 8 << 20,
        }
    }
}

impl InsightConfig {
    /// Every problem with the settings, keys relative to `[insight]`: a zero slot
    /// length, slot count, counter count, sample budget or key length; a key length
    /// above 4096 bytes; a buffer smaller than one 64 KiB chunk; more than 10,000 slots
    /// or 100,000 counters.
    pub fn validate(&self) -> Vec<Invalid> {
        let checks = [
            (self.slot_secs >= 1, "slot_secs", "must be at least 1"),
            (
                (1..=10_000).contains(&self.slots),
                "slots",
                "must be 1 to 10000",
            ),
            (
                (1..=100_000).contains(&self.counters),
                "counters",
                "must be 1 to 100000",
            ),
            (
                self.samples_per_sec >= 1,
                "samples_per_sec",
                "must be at least 1",
            ),
            (
                (1..=MAX_KEY_BYTES).contains(&self.key_bytes),
                "key_bytes",
                "must be 1 to 4096",
            ),
            (
                self.buffer_bytes >= CHUNK_BYTES,
                "buffer_bytes",
                "must be at least 65536",
            ),
        ];
        checks
            .iter()
            .filter(|(ok, _, _)| !ok)
            .map(|(_, key, message)| Invalid::error(KeyPath::of(key), *message))
            .collect()
    }

    /// The most heap memory an [`Insight`] with these settings holds, in bytes, whatever
    /// the traffic (see the module docs; [`Insight::memory_bytes`] is what it holds now):
    /// full buffers, every summary of every slot full of keys of the maximum length,
    /// and the merge of one dimension during a report.
    pub fn max_memory_bytes(&self) -> usize {
        let k = self.counters;
        let buffers = (self.buffer_bytes / CHUNK_BYTES).max(1) * CHUNK_BYTES;
        let class =
            3 * summary::max_heap_bytes(k, 0) + 3 * summary::max_heap_bytes(k, self.key_bytes + 1);
        let ring = self.slots * (std::mem::size_of::<window::Slot>() + 2 * class);
        // A merge: a hash entry (key hash, reference, three sums: 40 bytes) per
        // candidate in a table at most 8/7 · 2 full, then a sorted vector (32 bytes).
        let merge = self.slots * k * (2 * 40 * 8 / 7 + 2 + 32);
        buffers + ring + merge
    }
}

/// Settings that cannot make an [`Insight`] ([`InsightConfig::validate`] says why).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("insight.{0}")]
pub struct InvalidInsight(pub Invalid);

/// Heavy hitters of the traffic over sliding windows. `Sync`: share it (`Arc`) between
/// the request path and the periodic task.
pub struct Insight {
    /// Slot length.
    slot: Duration,
    /// Slots kept.
    slots: usize,
    /// `k`, for the report.
    counters: usize,
    /// For rendering truncated keys.
    key_bytes: usize,
    /// Samples per second aimed at.
    samples_per_sec: u64,
    /// The request path's side.
    buffers: Buffers,
    /// The aggregated side: only `aggregate` and `top` take this lock.
    state: Mutex<State>,
}

impl std::fmt::Debug for Insight {
    /// The settings and the sampling intervals (the counts are in [`Insight::top`]).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (interval, interval_denied) = self.buffers.intervals();
        f.debug_struct("Insight")
            .field("slot", &self.slot)
            .field("slots", &self.slots)
            .field("counters", &self.counters)
            .field("key_bytes", &self.key_bytes)
            .field("samples_per_sec", &self.samples_per_sec)
            .field("interval", &interval)
            .field("interval_denied", &interval_denied)
            .finish_non_exhaustive()
    }
}

/// The aggregated side of an [`Insight`].
struct State {
    /// The slots.
    window: Window,
    /// Start of the current rate measurement.
    rate_since: Instant,
    /// Requests drained since `rate_since` (sample weights and dropped requests).
    drained: Weights,
}

/// The shortest period over which a rate is measured to adapt the sampling: a report
/// right after an aggregation does not adapt on a few milliseconds of traffic.
const ADAPT_PERIOD: Duration = Duration::from_millis(500);

impl Insight {
    /// An empty `Insight` whose first slot starts at `now`.
    ///
    /// # Errors
    ///
    /// Invalid settings (see [`InsightConfig::validate`]).
    pub fn new(config: &InsightConfig, now: Instant) -> Result<Insight, InvalidInsight> {
        if let Some(problem) = config.validate().into_iter().next() {
            return Err(InvalidInsight(problem));
        }
        // One shard per thread that records at the same time, as long as there are no
        // more of them than twice the CPUs (tokio's default is one worker per CPU).
        let shards = std::thread::available_parallelism()
            .map_or(4, std::num::NonZeroUsize::get)
            .saturating_mul(2)
            .clamp(2, 64);
        let slot = Duration::from_secs(config.slot_secs);
        Ok(Insight {
            slot,
            slots: config.slots,
            counters: config.counters,
            key_bytes: config.key_bytes,
            samples_per_sec: config.samples_per_sec,
            buffers: Buffers::new(now, config.key_bytes, config.buffer_bytes, shards),
            state: Mutex::new(State {
                window: Window::new(now, slot, config.slots, config.counters),
                rate_since: now,
                drained: Weights::default(),
            }),
        })
    }

    /// Counts one request. Called by every worker thread for every request: a
    /// thread-local countdown and, for the sampled ones, a copy into the thread's own
    /// buffer (see [the module docs](self#per-request-cost-sampling)).
    #[inline]
    pub fn record(&self, obs: &Observation<'_>) {
        self.buffers.record(obs);
    }

    /// Moves the buffered samples into the slots of their times, moves the window to
    /// `now` (forgetting the slots that fall out of it) and adapts the sampling interval
    /// to the rate seen. Call it about once a second from a periodic task, off the async
    /// workers (about 9 ms at the full sample budget; see
    /// `benches/insight.rs`). [`Insight::top`] calls it too.
    ///
    /// Samples are placed by their own time, so calling it late moves nothing between
    /// slots; only samples older than the ring (a stall of five minutes) are lost.
    pub fn aggregate(&self, now: Instant) {
        let mut guard = lock(&self.state);
        let State {
            window,
            rate_since,
            drained,
        } = &mut *guard;
        let index = window.index_of(now);
        window.advance(index);
        let dropped = self.buffers.drain(|sample| {
            drained.add(sample.denied, u64::from(sample.weight));
            window.add(sample);
        });
        window.add_dropped(index, dropped);
        drained.add(false, dropped.allowed);
        drained.add(true, dropped.denied);
        let elapsed = now.saturating_duration_since(*rate_since);
        if elapsed >= ADAPT_PERIOD {
            let (allowed, denied) = intervals(*drained, elapsed, self.samples_per_sec);
            self.buffers.set_intervals(allowed, denied);
            *drained = Weights::default();
            *rate_since = now;
        }
    }

    /// The `n` heaviest keys of every dimension and class over the last `window` at
    /// `now` (rounded down to whole slots, at least one, at most the ring). Aggregates
    /// first. Takes 0.2 ms for 1 minute and 1.1 ms for 5 minutes with full summaries
    /// (`benches/insight.rs`), holding the lock that [`Insight::aggregate`] takes (never
    /// one that [`Insight::record`] takes).
    pub fn top(&self, window: Duration, n: usize, now: Instant) -> TopReport {
        self.aggregate(now);
        let state = lock(&self.state);
        let ring = &state.window;
        let slot_nanos = self.slot.as_nanos().max(1);
        let span = u64::try_from(window.as_nanos() / slot_nanos)
            .unwrap_or(u64::MAX)
            .clamp(1, ring.len());
        let current = ring.index_of(now);
        let first = current.saturating_sub(span - 1);
        let slots: Vec<&window::Slot> = (first..=current).filter_map(|i| ring.slot(i)).collect();
        let all: Vec<&Class> = slots.iter().map(|s| &s.all).collect();
        let denied: Vec<&Class> = slots.iter().map(|s| &s.denied).collect();
        let totals = Totals {
            requests: all.iter().map(|c| c.total).sum(),
            denied: denied.iter().map(|c| c.total).sum(),
        };
        let (interval, interval_denied) = self.buffers.intervals();
        TopReport {
            window_secs: span.saturating_mul(self.slot.as_secs()),
            covered_secs: round_millis(now.saturating_duration_since(ring.start_of(first))),
            slot_secs: self.slot.as_secs(),
            counters: self.counters,
            totals,
            sampling: Sampling {
                exact: !slots.iter().any(|s| s.sampled),
                interval,
                interval_denied,
                dropped: slots.iter().map(|s| s.dropped).sum(),
            },
            all: ClassTop::build(&all, n, totals.requests, self.key_bytes),
            denied: ClassTop::build(&denied, n, totals.denied, self.key_bytes),
        }
    }

    /// Heap bytes held now: buffered samples and summaries (at most
    /// [`InsightConfig::max_memory_bytes`]); for a gauge.
    pub fn memory_bytes(&self) -> usize {
        let window = lock(&self.state).window.heap_bytes();
        self.buffers.heap_bytes() + window
    }

    /// The longest window kept.
    pub fn max_window(&self) -> Duration {
        self.slot
            .saturating_mul(u32::try_from(self.slots).unwrap_or(u32::MAX))
    }
}

/// Sampling intervals (allowed, denied) that would have brought `drained` requests over
/// `elapsed` down to `per_sec` samples a second (see the module docs).
fn intervals(drained: Weights, elapsed: Duration, per_sec: u64) -> (u32, u32) {
    let budget = u128::from(per_sec) * elapsed.as_nanos() / 1_000_000_000;
    let allowed = u128::from(drained.allowed);
    let denied = u128::from(drained.denied);
    if allowed + denied <= budget {
        return (1, 1);
    }
    let half = budget / 2;
    let denied_budget = if denied <= half {
        denied
    } else if allowed <= half {
        budget - allowed
    } else {
        half
    };
    let allowed_budget = budget - denied_budget;
    let interval = |n: u128, budget: u128| {
        if n <= budget {
            1
        } else {
            u32::try_from(n.div_ceil(budget.max(1)))
                .unwrap_or(MAX_INTERVAL)
                .min(MAX_INTERVAL)
        }
    };
    (
        interval(allowed, allowed_budget),
        interval(denied, denied_budget),
    )
}

/// Seconds, to the millisecond.
fn round_millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Statistics stay usable after a panic elsewhere.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
