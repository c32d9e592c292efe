//! The Prometheus exposition: a prometheus-client [`Collector`] that reads [`Metrics`],
//! the engine in force and the process at scrape time, and the list of metric names it
//! produces (documented in the README, used by the alert rules and the dashboard).
//!
//! Names follow Prometheus conventions: prefix `spoa_guard_`, base units (seconds,
//! bytes), `_total` for counters (added by the encoder).

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::{Metrics, ERROR_KINDS, FRAME_TYPES, REASONS};
use crate::engine::{Decision, Summary};
use crate::insight::Dimension;
use crate::server::Shared;

/// The registry of an agent: one collector over `shared`.
pub fn registry(shared: Arc<Shared>) -> Registry {
    let mut registry = Registry::with_prefix("spoa_guard");
    registry.register_collector(Box::new(AgentCollector { shared }));
    registry
}

/// The text exposition of `registry` (OpenMetrics text format, which Prometheus reads).
///
/// # Errors
///
/// Only if formatting fails, which writing to a `String` does not.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::with_capacity(8 * 1024);
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug)]
struct AgentCollector {
    shared: Arc<Shared>,
}

type Encoded = Result<(), std::fmt::Error>;

fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Encoded {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: i64) -> Encoded {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

fn clamp(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Collector for AgentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Encoded {
        let m: &Metrics = &self.shared.metrics;
        let engine = self.shared.engine.load();

        {
            let mut family = encoder.encode_descriptor(
                "build_info",
                "Version of the running agent (always 1).",
                None,
                MetricType::Gauge,
            )?;
            let labels = [("version", env!("CARGO_PKG_VERSION"))];
            ConstGauge::new(1).encode(family.encode_family(&labels)?)?;
        }

        {
            let mut family = encoder.encode_descriptor(
                "decisions",
                "Requests decided, by action and by the step that decided (reason none: nothing matched).",
                None,
                MetricType::Counter,
            )?;
            for decision in [Decision::Allow, Decision::Deny] {
                for reason in REASONS {
                    let labels = [("action", decision.as_str()), ("reason", reason.as_str())];
                    ConstCounter::new(m.decisions(decision, reason))
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }

        {
            let mut family = encoder.encode_descriptor(
                "rule_hits",
                "Requests each configured rule decided, or in dry run would have denied (mode dry-run). Label values are configured names; blocked ASNs count as rule blocked-asns.",
                None,
                MetricType::Counter,
            )?;
            for (hit, count) in m.hits.snapshot() {
                let rule = String::from_utf8_lossy(&hit.rule);
                let mode = if hit.dry_run { "dry-run" } else { "enforce" };
                let labels = [
                    ("reason", hit.reason.as_str()),
                    ("rule", rule.as_ref()),
                    ("mode", mode),
                ];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }

        {
            let snapshot = m.evaluation.snapshot();
            let metric = encoder.encode_descriptor(
                "evaluation_duration",
                "Time to evaluate one request against the rules (the engine only, not the network).",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            let mut metric = metric;
            metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                snapshot.sum,
                snapshot.count,
                &snapshot.buckets,
                None,
            )?;
        }

        {
            let mut family = encoder.encode_descriptor(
                "frames",
                "SPOP frames received (haproxy-*, notify, unset) and sent (agent-*, ack), by type.",
                None,
                MetricType::Counter,
            )?;
            for frame_type in FRAME_TYPES {
                let labels = [("type", frame_type.as_str())];
                ConstCounter::new(m.frames(frame_type)).encode(family.encode_family(&labels)?)?;
            }
        }

        {
            let mut family = encoder.encode_descriptor(
                "protocol_errors",
                "Connections ended by a protocol error, by kind (each answered with an AGENT-DISCONNECT).",
                None,
                MetricType::Counter,
            )?;
            for (i, kind) in ERROR_KINDS.iter().enumerate() {
                let labels = [("kind", *kind)];
                ConstCounter::new(m.protocol_errors_of(i))
                    .encode(family.encode_family(&labels)?)?;
            }
        }

        gauge(
            &mut encoder,
            "connections_active",
            "SPOP connections open now.",
            i64::try_from(Metrics::get(&m.connections_active)).unwrap_or(0),
        )?;
        counter(
            &mut encoder,
            "connections",
            "SPOP connections accepted.",
            Metrics::get(&m.connections_total),
        )?;
        counter(
            &mut encoder,
            "healthchecks",
            "SPOP health checks answered.",
            Metrics::get(&m.healthchecks_total),
        )?;
        counter(
            &mut encoder,
            "invalid_src",
            "Messages without a usable src argument (allowed; check the SPOE message's args).",
            Metrics::get(&m.invalid_src_total),
        )?;
        counter(
            &mut encoder,
            "unknown_messages",
            "NOTIFY frames without the configured message (answered with no action).",
            Metrics::get(&m.unknown_message_total),
        )?;

        {
            let mut family = encoder.encode_descriptor(
                "reloads",
                "Rule reloads, by result (failure: the previous rules stayed in force).",
                None,
                MetricType::Counter,
            )?;
            for (result, value) in [
                ("success", Metrics::get(&m.reloads_applied_total)),
                ("failure", Metrics::get(&m.reloads_failed_total)),
            ] {
                ConstCounter::new(value).encode(family.encode_family(&[("result", result)])?)?;
            }
        }
        gauge(
            &mut encoder,
            "reload_failing",
            "1 while the last reload failed: the rule files on disk are not the rules in force.",
            i64::try_from(Metrics::get(&m.reload_failing)).unwrap_or(0),
        )?;
        {
            let metric = encoder.encode_descriptor(
                "rules_loaded_timestamp",
                "Unix time the rules in force were loaded.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::try_from(Metrics::get(&m.rules_loaded_unix_seconds)).unwrap_or(0))
                .encode(metric)?;
        }

        {
            let s = Summary::of(&engine);
            let mut family = encoder.encode_descriptor(
                "rules",
                "Size of the rule set in force, by kind.",
                None,
                MetricType::Gauge,
            )?;
            for (kind, value) in [
                ("allow_entries", s.allow_entries),
                ("block_entries", s.block_entries),
                ("dry_run_entries", s.dry_run_entries),
                ("asn_ranges", s.asn_ranges),
                ("asn_blocked", s.asn_blocked),
                ("user_agent_rules", s.ua_rules),
                ("user_agent_patterns", s.ua_patterns),
                ("limits", s.limits),
            ] {
                ConstGauge::new(clamp(value)).encode(family.encode_family(&[("kind", kind)])?)?;
            }
        }

        {
            let mut keys = encoder.encode_descriptor(
                "ratelimit_keys",
                "Keys (clients, paths, …) each rate limit tracks now.",
                None,
                MetricType::Gauge,
            )?;
            for limit in engine.limits().iter() {
                let name = String::from_utf8_lossy(limit.name());
                ConstGauge::new(clamp(limit.key_count()))
                    .encode(keys.encode_family(&[("limit", name.as_ref())])?)?;
            }
        }
        {
            let mut untracked = encoder.encode_descriptor(
                "ratelimit_untracked",
                "Requests not limited because their limit was at max_keys (fail open); resets when the limit changes.",
                None,
                MetricType::Counter,
            )?;
            for limit in engine.limits().iter() {
                let name = String::from_utf8_lossy(limit.name());
                ConstCounter::new(limit.untracked())
                    .encode(untracked.encode_family(&[("limit", name.as_ref())])?)?;
            }
        }

        counter(
            &mut encoder,
            "deny_logs_suppressed",
            "Deny log lines left out by [log] deny_lines_per_second.",
            Metrics::get(&m.deny_logs_suppressed_total),
        )?;

        if let Some(insight) = &self.shared.insight {
            // One minute, as the alert rules assume; the report aggregates first.
            let window = Duration::from_secs(60).min(insight.max_window());
            let report = insight.top(window, 1, Instant::now());
            let mut family = encoder.encode_descriptor(
                "top_share",
                "Share (0 to 1) of the heaviest single key of a dimension among the requests of the last minute (window 1m); which key: GET /top or spoa-guard top.",
                None,
                MetricType::Gauge,
            )?;
            for (class, top) in [("all", &report.all), ("denied", &report.denied)] {
                for dimension in Dimension::ALL {
                    let share = top.get(dimension).first().map_or(0.0, |e| e.share);
                    let labels = [
                        ("dimension", dimension.as_str()),
                        ("class", class),
                        ("window", "1m"),
                    ];
                    ConstGauge::new(share).encode(family.encode_family(&labels)?)?;
                }
            }
        }

        if let Some(bytes) = resident_memory_bytes() {
            let metric = encoder.encode_descriptor(
                "process_resident_memory",
                "Resident memory of the agent process.",
                Some(&Unit::Bytes),
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::try_from(bytes).unwrap_or(i64::MAX)).encode(metric)?;
        }
        Ok(())
    }
}

/// `VmRSS` from /proc/self/status, in bytes (Linux).
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
