//! What the agent counts, and its Prometheus exposition.
//!
//! The request path only touches plain atomics (relaxed adds, no lock, no allocation):
//! the [`Counter`] and [`Gauge`] newtypes, counters indexed by label enums
//! ([`Counters`], [`Matrix`]), the evaluation-latency [`Histogram`] and the per-rule
//! [`HitTable`]. The state is a struct passed down explicitly (no globals), so several
//! agents can run in one test process. Everything is read at scrape time by
//! [`exposition`], which also reads the rule counts and rate-limit keys from the engine
//! in force and the traffic-insight report; so nothing is computed for metrics between
//! scrapes.
//!
//! Every label value is a fixed word (`allow`, `notify`, `too-big`, …) or a name from the
//! configuration; nothing from a request ever becomes a label.

pub mod exposition;
mod histogram;
mod hits;
mod instruments;

pub use histogram::{Histogram, Snapshot as HistogramSnapshot, BOUNDS_NANOS};
pub use hits::{Hit, HitTable, RuleHits};
pub use instruments::{Counter, Counters, Gauge, Hold, Label, Matrix};

use strum::{EnumCount, EnumIter};

use crate::decision::{Decision, Reason, Verdict};
use crate::spop::{ErrorKind, FrameType};

/// How a reload attempt ended, for `spoa_guard_reloads_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumCount, EnumIter)]
pub enum ReloadResult {
    /// The new rules are in force.
    Success,
    /// Something failed to load; the previous rules stayed in force.
    Failure,
}

impl Label for ReloadResult {
    fn index(self) -> usize {
        self as usize
    }
    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// Process-wide counters. Cheap to bump from any task.
#[derive(Debug, Default)]
pub struct Metrics {
    /// SPOP connections open now.
    pub connections_active: Gauge,
    /// SPOP connections accepted since start.
    pub connections: Counter,
    /// Frames received and sent, by type.
    pub frames: Counters<FrameType>,
    /// Decisions by action and by the step that decided.
    pub decisions: Matrix<Decision, Reason>,
    /// Hit counters of every rule ever installed.
    pub hits: RuleHits,
    /// Time to evaluate one request (engine only).
    pub evaluation: Histogram,
    /// Messages whose `src` argument was missing or not an address.
    pub invalid_src: Counter,
    /// NOTIFY frames without the configured message (answered with an empty ACK).
    pub unknown_messages: Counter,
    /// Connections ended by a protocol error, by kind.
    pub protocol_errors: Counters<ErrorKind>,
    /// Health-check HELLOs answered.
    pub healthchecks: Counter,
    /// Reload attempts, by result.
    pub reloads: Counters<ReloadResult>,
    /// 1 while the last reload attempt failed: the files on disk are not what is in
    /// force. 0 after a successful one.
    pub reload_failing: Gauge,
    /// Unix time (seconds) the rules in force were loaded.
    pub rules_loaded_unix_seconds: Gauge,
    /// Deny log lines left out by the deny-log rate limit.
    pub deny_logs_suppressed: Counter,
}

impl Metrics {
    /// Counts a decision (the per-rule hits are counted by the [`HitTable`] of the rules
    /// that decided).
    #[inline]
    pub fn decided(&self, verdict: &Verdict) {
        self.decisions.of(verdict.decision, verdict.reason).inc();
    }

    /// Decisions counted for `decision`, whatever the reason.
    pub fn decisions_of(&self, decision: Decision) -> u64 {
        self.decisions.row(decision).map(|(_, n)| n).sum()
    }
}
