//! What the agent counts, and its Prometheus exposition.
//!
//! The hot path only touches plain atomics (`Relaxed` adds, no lock, no allocation):
//! counters and gauges here, the evaluation-latency [`Histogram`], and per-rule
//! [`RuleHits`]. The state is a struct passed down explicitly (no globals), so several
//! agents can run in one test process. Everything is read at scrape time by
//! [`exposition`], which also reads the rule counts and rate-limit keys from the engine
//! in force; so nothing is computed for metrics between scrapes.
//!
//! Every label value is a fixed word (`allow`, `notify`, `too-big`, …) or a name from the
//! configuration; nothing from a request ever becomes a label.

pub mod exposition;
mod histogram;
mod hits;

pub use histogram::{Histogram, Snapshot as HistogramSnapshot, BOUNDS_NANOS};
pub use hits::{Hit, RuleHits, ASN_RULE};

use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::{Decision, Reason, Verdict};
use crate::spop::{Error, FrameType};

/// Every [`Reason`], in the order of the decision counters.
pub const REASONS: [Reason; 6] = [
    Reason::None,
    Reason::Allowlist,
    Reason::Blocklist,
    Reason::Asn,
    Reason::UserAgent,
    Reason::RateLimit,
];

/// Every frame type counted, in the order of the frame counters.
pub const FRAME_TYPES: [FrameType; 7] = [
    FrameType::HaproxyHello,
    FrameType::HaproxyDisconnect,
    FrameType::Notify,
    FrameType::Unset,
    FrameType::AgentHello,
    FrameType::AgentDisconnect,
    FrameType::Ack,
];

/// Every protocol error kind ([`Error::kind`]), in the order of their counters.
pub const ERROR_KINDS: [&str; 10] = [
    "io",
    "too-big",
    "invalid",
    "unexpected",
    "fragmented",
    "no-version",
    "no-frame-size",
    "no-capabilities",
    "bad-version",
    "bad-frame-size",
];

/// Process-wide counters. Cheap to bump from any task.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections currently open.
    pub connections_active: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Frames received and sent, by [`FRAME_TYPES`] index.
    frames: [AtomicU64; FRAME_TYPES.len()],
    /// Decisions by action (allow, deny) and [`REASONS`] index.
    decisions: [[AtomicU64; REASONS.len()]; 2],
    /// Hits per configured rule.
    pub hits: RuleHits,
    /// Time to evaluate one request (engine only).
    pub evaluation: Histogram,
    /// Messages whose `src` argument was missing or not an address.
    pub invalid_src_total: AtomicU64,
    /// NOTIFY frames without a `guard-check` message (answered with an empty ACK).
    pub unknown_message_total: AtomicU64,
    /// Connections ended by a protocol error, by [`ERROR_KINDS`] index.
    protocol_errors: [AtomicU64; ERROR_KINDS.len()],
    /// Health-check HELLOs answered.
    pub healthchecks_total: AtomicU64,
    /// Reloads that put new rules in force.
    pub reloads_applied_total: AtomicU64,
    /// Reloads that failed (the previous rules stayed in force).
    pub reloads_failed_total: AtomicU64,
    /// 1 while the last reload attempt failed: the files on disk are not what is in
    /// force. 0 after a successful one.
    pub reload_failing: AtomicU64,
    /// Unix time (seconds) the rules in force were loaded.
    pub rules_loaded_unix_seconds: AtomicU64,
    /// Deny log lines left out by the deny-log rate limit.
    pub deny_logs_suppressed_total: AtomicU64,
}

impl Metrics {
    /// Adds one to `counter`.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one from `counter` (for gauges such as active connections).
    pub fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts a frame received or sent.
    pub fn frame(&self, frame_type: FrameType) {
        if let Some(i) = FRAME_TYPES.iter().position(|&t| t == frame_type) {
            if let Some(counter) = self.frames.get(i) {
                Metrics::inc(counter);
            }
        }
    }

    /// Frames of `frame_type` counted so far.
    pub fn frames(&self, frame_type: FrameType) -> u64 {
        FRAME_TYPES
            .iter()
            .position(|&t| t == frame_type)
            .and_then(|i| self.frames.get(i))
            .map_or(0, Metrics::get)
    }

    /// Counts a decision and the rules behind it (the deciding rule, and the dry-run
    /// rule that would have decided, if any).
    pub fn verdict(&self, verdict: &Verdict) {
        if let Some(counter) = self.decision_counter(verdict.decision, verdict.reason) {
            Metrics::inc(counter);
        }
        if verdict.reason != Reason::None {
            self.hits.record(verdict.reason, &verdict.rule, false);
        }
        if let Some(dry) = &verdict.dry_run {
            self.hits.record(dry.reason, &dry.rule, true);
        }
    }

    fn decision_counter(&self, decision: Decision, reason: Reason) -> Option<&AtomicU64> {
        let row = match decision {
            Decision::Allow => 0,
            Decision::Deny => 1,
        };
        let column = REASONS.iter().position(|&r| r == reason)?;
        self.decisions.get(row)?.get(column)
    }

    /// Decisions counted for `decision` and `reason`.
    pub fn decisions(&self, decision: Decision, reason: Reason) -> u64 {
        self.decision_counter(decision, reason)
            .map_or(0, Metrics::get)
    }

    /// Decisions counted for `decision`, whatever the reason.
    pub fn decided(&self, decision: Decision) -> u64 {
        REASONS.iter().map(|&r| self.decisions(decision, r)).sum()
    }

    /// Counts a connection ended by a protocol error.
    pub fn protocol_error(&self, error: &Error) {
        if let Some(i) = ERROR_KINDS.iter().position(|&k| k == error.kind()) {
            if let Some(counter) = self.protocol_errors.get(i) {
                Metrics::inc(counter);
            }
        }
    }

    /// Protocol errors counted, all kinds.
    pub fn protocol_errors(&self) -> u64 {
        self.protocol_errors.iter().map(Metrics::get).sum()
    }

    /// Protocol errors counted of `kind`, as [`ERROR_KINDS`].
    fn protocol_errors_of(&self, i: usize) -> u64 {
        self.protocol_errors.get(i).map_or(0, Metrics::get)
    }
}
