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
mod fleet;
mod histogram;
mod hits;
mod instruments;
mod ops;
mod sessions;

pub use fleet::{FleetError, FleetMetrics};
pub use histogram::{
    Histogram, Snapshot as HistogramSnapshot, BOUNDS_NANOS, ROUND_TRIP_BOUNDS_NANOS,
};
pub use hits::{Hit, HitTable, RuleHits};
pub use instruments::{Counter, Counters, Gauge, Hold, Label, Matrix};
pub use ops::{OpsDrop, OpsListener};
pub use sessions::ConnectionDrop;

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

/// A change to the bans, for `spoa_guard_ban_changes_total{change}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumCount, EnumIter)]
pub enum BanChange {
    /// A ban set (or replaced) by an operator, an auto-ban rule or the fleet.
    Set,
    /// A ban lifted before its expiry.
    Lifted,
    /// A ban freed at its expiry.
    Expired,
    /// A ban refused: the store is full, or it would already have expired.
    Refused,
}

impl Label for BanChange {
    fn index(self) -> usize {
        self as usize
    }
    fn label(self) -> &'static str {
        match self {
            Self::Set => "set",
            Self::Lifted => "lifted",
            Self::Expired => "expired",
            Self::Refused => "refused",
        }
    }
}

/// What an admin request asked for, for `spoa_guard_admin_requests_total{route}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumCount, EnumIter)]
pub enum AdminRoute {
    /// `GET /bans`.
    ListBans,
    /// `POST /bans`.
    Ban,
    /// `DELETE /bans/TARGET`.
    Unban,
    /// `GET /rules`.
    Rules,
    /// `POST /reload`.
    Reload,
    /// `GET /dry-run`.
    DryRunState,
    /// `POST /dry-run` or `DELETE /dry-run`.
    DryRunSwitch,
    /// Anything else (404, 405).
    Other,
}

impl Label for AdminRoute {
    fn index(self) -> usize {
        self as usize
    }
    fn label(self) -> &'static str {
        match self {
            Self::ListBans => "list-bans",
            Self::Ban => "ban",
            Self::Unban => "unban",
            Self::Rules => "rules",
            Self::Reload => "reload",
            Self::DryRunState => "dry-run-state",
            Self::DryRunSwitch => "dry-run-switch",
            Self::Other => "other",
        }
    }
}

impl AdminRoute {
    /// The results a request of this route can have (`ops::admin` answers): 401 only
    /// before routing (route `other`), which never succeeds (404, 405); the routes that
    /// only read are never refused. Any route but `other` fails (500) if its JSON cannot
    /// be written.
    pub fn results(self) -> &'static [AdminResult] {
        use AdminResult::{Error, Ok, Refused, Unauthorized};
        match self {
            Self::ListBans | Self::Rules | Self::DryRunState => &[Ok, Error],
            Self::Ban | Self::Unban | Self::Reload | Self::DryRunSwitch => &[Ok, Refused, Error],
            Self::Other => &[Refused, Unauthorized],
        }
    }
}

/// How an admin request ended, for `spoa_guard_admin_requests_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumCount, EnumIter)]
pub enum AdminResult {
    /// Done (2xx).
    Ok,
    /// Refused: bad input, unknown ban, a failed reload (4xx other than 401).
    Refused,
    /// No or a wrong token (401).
    Unauthorized,
    /// The agent failed (5xx).
    Error,
}

impl Label for AdminResult {
    fn index(self) -> usize {
        self as usize
    }
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Unauthorized => "unauthorized",
            Self::Error => "error",
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
    /// Protocol-error log lines left out by their rate limit.
    pub protocol_error_logs_suppressed: Counter,
    /// Connections the agent dropped (deadlines, admission), by why.
    pub connections_dropped: Counters<ConnectionDrop>,
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
    /// Changes to the bans, by kind.
    pub ban_changes: Counters<BanChange>,
    /// Admin requests, by route and result.
    pub admin_requests: Matrix<AdminRoute, AdminResult>,
    /// Connections the operations listeners dropped (deadlines, eviction), by listener
    /// and why.
    pub ops_dropped: Matrix<OpsListener, OpsDrop>,
    /// Fleet mode: exchanges with the fleet store, degradation.
    pub fleet: FleetMetrics,
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
