//! The fleet's instruments ([`FleetMetrics`]): how the exchanges with the fleet store go,
//! what they carry, and whether this agent is in step with its fleet. Always present
//! (zero without a `[fleet]`), so that dashboards need no special case.

use strum::{EnumCount, EnumIter};

use super::{Counter, Counters, Gauge, Histogram, Label};

/// Why an exchange with the fleet store failed, for
/// `spoa_guard_fleet_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumCount, EnumIter)]
pub enum FleetError {
    /// No answer within the deadline.
    Timeout,
    /// Could not connect, or the connection broke.
    Connection,
    /// The store refused the command: read-only replica, out of memory, no permission,
    /// loading, a script error.
    Refused,
    /// An answer that was not what was asked for.
    Protocol,
}

impl Label for FleetError {
    fn index(self) -> usize {
        self as usize
    }
    fn label(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Refused => "refused",
            Self::Protocol => "protocol",
        }
    }
}

/// The fleet's counters and gauges.
#[derive(Debug)]
pub struct FleetMetrics {
    /// Round trip of each periodic exchange (counts, agents, ban version).
    pub sync_duration: Histogram,
    /// Exchanges that failed, by why.
    pub errors: Counters<FleetError>,
    /// Rate-limit keys whose counts were sent.
    pub keys_sent: Counter,
    /// Rate-limit keys left for a later exchange by the per-exchange cap.
    pub keys_deferred: Counter,
    /// Bytes of commands sent to the store (arguments, approximately the wire size).
    pub bytes_sent: Counter,
    /// Bytes of answers received from the store (approximately).
    pub bytes_received: Counter,
    /// Agents of the fleet seen alive at the last exchange.
    pub agents: Gauge,
    /// 1 while this agent is not in step with its fleet (store unreachable): fleet
    /// limits enforce this agent's share.
    pub degraded: Gauge,
    /// When the current degradation began, Unix seconds; 0 when not degraded.
    pub degraded_since: Gauge,
    /// Times this agent became degraded.
    pub degradations: Counter,
    /// Bans and unbans received from other agents.
    pub bans_received: Counter,
    /// Bans and unbans sent to the fleet.
    pub bans_sent: Counter,
    /// Full reads of the fleet's bans (start, reconnect, a missed message, periodic).
    pub ban_resyncs: Counter,
    /// Over-limit marks published.
    pub marks_sent: Counter,
    /// Over-limit marks received from other agents.
    pub marks_received: Counter,
}

impl Default for FleetMetrics {
    fn default() -> Self {
        FleetMetrics {
            sync_duration: Histogram::round_trips(),
            errors: Counters::default(),
            keys_sent: Counter::default(),
            keys_deferred: Counter::default(),
            bytes_sent: Counter::default(),
            bytes_received: Counter::default(),
            agents: Gauge::default(),
            degraded: Gauge::default(),
            degraded_since: Gauge::default(),
            degradations: Counter::default(),
            bans_received: Counter::default(),
            bans_sent: Counter::default(),
            ban_resyncs: Counter::default(),
            marks_sent: Counter::default(),
            marks_received: Counter::default(),
        }
    }
}
