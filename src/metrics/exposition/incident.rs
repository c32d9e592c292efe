//! Incident controls: the bans in force by origin, changes to the bans, admin requests,
//! and the global dry-run switch.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::{by_label, by_pair_where, clamp, gauge, Encoded, Sources};

pub(super) fn encode(encoder: &mut DescriptorEncoder<'_>, sources: &Sources<'_>) -> Encoded {
    let m = sources.metrics;
    let mut bans = encoder.encode_descriptor(
        "bans",
        "Bans held now, by origin (manual, an [[auto_ban]] rule's name).",
        None,
        MetricType::Gauge,
    )?;
    for (origin, count) in sources.bans_by_origin {
        ConstGauge::new(clamp(usize::try_from(*count).unwrap_or(usize::MAX)))
            .encode(bans.encode_family(&[("origin", origin.as_ref())])?)?;
    }
    by_label(
        encoder,
        "ban_changes",
        "Changes to the bans: set, lifted (unban), expired, refused (store full).",
        "change",
        &m.ban_changes,
    )?;
    by_pair_where(
        encoder,
        ("admin_requests", "Admin API requests, by route and result."),
        ("route", "result"),
        &m.admin_requests,
        |route, result| route.results().contains(&result),
    )?;
    auto_bans(encoder, sources)?;
    gauge(
        encoder,
        "dry_run_switch",
        "1 while the global dry-run switch is on: no rule and no ban denies.",
        i64::from(sources.dry_run_switch),
    )
}

fn auto_bans(encoder: &mut DescriptorEncoder<'_>, sources: &Sources<'_>) -> Encoded {
    let mut triggers = encoder.encode_descriptor(
        "auto_ban_triggers",
        "Bans an [[auto_ban]] rule set (dry_run=\"true\": would have set) since it was loaded.",
        None,
        MetricType::Counter,
    )?;
    for rule in sources.auto_bans {
        let dry_run = if rule.dry_run() { "true" } else { "false" };
        ConstCounter::new(rule.triggers()).encode(
            triggers.encode_family(&[("rule", rule.name().as_ref()), ("dry_run", dry_run)])?,
        )?;
    }
    let mut keys = encoder.encode_descriptor(
        "auto_ban_keys",
        "Keys (sources, networks, ASNs) each [[auto_ban]] rule is counting denies of.",
        None,
        MetricType::Gauge,
    )?;
    for rule in sources.auto_bans {
        ConstGauge::new(clamp(rule.keys().0))
            .encode(keys.encode_family(&[("rule", rule.name().as_ref())])?)?;
    }
    let mut untracked = encoder.encode_descriptor(
        "auto_ban_untracked",
        "Denies an [[auto_ban]] rule did not count because it was at max_keys.",
        None,
        MetricType::Counter,
    )?;
    for rule in sources.auto_bans {
        ConstCounter::new(rule.keys().1)
            .encode(untracked.encode_family(&[("rule", rule.name().as_ref())])?)?;
    }
    super::counter(
        encoder,
        "auto_ban_dropped",
        "Auto-ban triggers dropped because too many were waiting to be applied.",
        sources.auto_ban_dropped,
    )
}
