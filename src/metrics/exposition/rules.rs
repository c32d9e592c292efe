//! The rules: reloads and their state, the size of the rule set in force (one gauge per
//! kind with what it counts in its name, derived from each step's descriptor), and the
//! rate limits' keys.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::{by_label, clamp, gauge, Encoded, Sources};
use crate::engine::Engine;

pub(super) fn encode(encoder: &mut DescriptorEncoder<'_>, sources: &Sources<'_>) -> Encoded {
    let m = sources.metrics;
    by_label(
        encoder,
        "reloads",
        "Rule reloads, by result (failure: the previous rules stayed in force).",
        "result",
        &m.reloads,
    )?;
    gauge(
        encoder,
        "reload_failing",
        "1 while the last reload failed: the rule files on disk are not the rules in force.",
        m.reload_failing.get(),
    )?;
    let metric = encoder.encode_descriptor(
        "rules_loaded_timestamp",
        "Unix time the rules in force were loaded.",
        Some(&Unit::Seconds),
        MetricType::Gauge,
    )?;
    ConstGauge::new(m.rules_loaded_unix_seconds.get()).encode(metric)?;
    sizes(encoder, sources.engine)?;
    limits(encoder, sources.engine)
}

/// One gauge per [`RuleGauge`](crate::engine::RuleGauge) of the steps' descriptors:
/// `spoa_guard_blocklist_entries`, … (a new step's gauges appear without a change here).
fn sizes(encoder: &mut DescriptorEncoder<'_>, engine: &Engine) -> Encoded {
    for (gauge, value) in engine.summary().gauges() {
        let metric = encoder.encode_descriptor(gauge.name, gauge.help, None, MetricType::Gauge)?;
        ConstGauge::new(clamp(value)).encode(metric)?;
    }
    Ok(())
}

fn limits(encoder: &mut DescriptorEncoder<'_>, engine: &Engine) -> Encoded {
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
    let mut capacity = encoder.encode_descriptor(
        "ratelimit_max_keys",
        "Keys each rate limit can track exactly (its max_keys); beyond them, new keys are \
         limited approximately.",
        None,
        MetricType::Gauge,
    )?;
    for limit in engine.limits().iter() {
        let name = String::from_utf8_lossy(limit.name());
        ConstGauge::new(clamp(limit.spec().max_keys()))
            .encode(capacity.encode_family(&[("limit", name.as_ref())])?)?;
    }
    let mut approximate = encoder.encode_descriptor(
        "ratelimit_approximate",
        "Requests whose key did not fit in their limit's max_keys, limited approximately (a \
         fixed-size sketch: never more than the limit, sometimes less); resets when the limit \
         changes.",
        None,
        MetricType::Counter,
    )?;
    for limit in engine.limits().iter() {
        let name = String::from_utf8_lossy(limit.name());
        ConstCounter::new(limit.approximate())
            .encode(approximate.encode_family(&[("limit", name.as_ref())])?)?;
    }
    Ok(())
}
