//! Traffic: decisions by action and reason, hits per rule, evaluation latency, bad
//! messages, suppressed deny logs, and the heaviest-hitter shares from traffic insight.

use std::time::{Duration, Instant};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::{by_pair_where, counter, Encoded, Sources};
use crate::insight::{Dimension, Insight};
use crate::metrics::Metrics;

pub(super) fn encode(encoder: &mut DescriptorEncoder<'_>, sources: &Sources<'_>) -> Encoded {
    let m = sources.metrics;
    decisions(encoder, m)?;
    rule_hits(encoder, m)?;
    evaluation(encoder, m)?;
    counter(
        encoder,
        "invalid_src",
        "Messages without a usable src argument (allowed; check the SPOE message's args).",
        m.invalid_src.get(),
    )?;
    counter(
        encoder,
        "unknown_messages",
        "NOTIFY frames without the configured message (answered with no action).",
        m.unknown_messages.get(),
    )?;
    counter(
        encoder,
        "deny_logs_suppressed",
        "Deny log lines left out by [log] deny_lines_per_second.",
        m.deny_logs_suppressed.get(),
    )?;
    if let Some(insight) = sources.insight {
        top_share(encoder, insight)?;
    }
    Ok(())
}

/// Every (action, reason) a verdict can have from the start, no other
/// ([`crate::engine::outcomes`]).
fn decisions(encoder: &mut DescriptorEncoder<'_>, m: &Metrics) -> Encoded {
    let outcomes = crate::engine::outcomes();
    by_pair_where(
        encoder,
        (
            "decisions",
            "Requests decided, by action and by the step that decided (reason none: nothing matched).",
        ),
        ("action", "reason"),
        &m.decisions,
        |decision, reason| outcomes.contains(&(decision, reason)),
    )
}

fn rule_hits(encoder: &mut DescriptorEncoder<'_>, m: &Metrics) -> Encoded {
    let mut family = encoder.encode_descriptor(
        "rule_hits",
        "Requests each configured rule decided, or in dry run would have decided (mode dry-run). \
         Label values are configured names; blocked ASNs count as rule blocked-asns.",
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
    Ok(())
}

fn evaluation(encoder: &mut DescriptorEncoder<'_>, m: &Metrics) -> Encoded {
    let snapshot = m.evaluation.snapshot();
    let mut metric = encoder.encode_descriptor(
        "evaluation_duration",
        "Time to evaluate one request against the rules (the engine only, not the network).",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        snapshot.sum,
        snapshot.count,
        &snapshot.buckets,
        None,
    )
}

fn top_share(encoder: &mut DescriptorEncoder<'_>, insight: &Insight) -> Encoded {
    // One minute, as the alert rules assume; the report aggregates first.
    let window = Duration::from_secs(60).min(insight.max_window());
    let report = insight.top(window, 1, Instant::now());
    let mut family = encoder.encode_descriptor(
        "top_share",
        "Share (0 to 1) of the heaviest single key of a dimension among the requests of the last \
         minute (window 1m); which key: GET /top or spoa-guard top.",
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
    Ok(())
}
