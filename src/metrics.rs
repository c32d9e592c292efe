//! Counters shared by every connection task.
//!
//! A plain struct of atomics, passed down explicitly (no globals), so several agents can
//! run in one test process. The Prometheus exposition builds on these later.

use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide counters. Cheap to bump from any task (`Relaxed` atomics).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections currently open.
    pub connections_active: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// NOTIFY frames answered.
    pub notify_total: AtomicU64,
    /// Requests allowed.
    pub allowed_total: AtomicU64,
    /// Requests denied.
    pub denied_total: AtomicU64,
    /// Messages whose `src` argument was missing or not an address.
    pub invalid_src_total: AtomicU64,
    /// NOTIFY frames without a `guard-check` message (answered with an empty ACK).
    pub unknown_message_total: AtomicU64,
    /// Connections ended by a protocol error.
    pub protocol_errors_total: AtomicU64,
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
}
