//! Incident controls: the bans in force by origin, changes to the bans, admin requests,
//! and the global dry-run switch.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::{by_label, clamp, gauge, Encoded, Sources};
use crate::metrics::Label;

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
    let mut admin = encoder.encode_descriptor(
        "admin_requests",
        "Admin API requests, by route and result.",
        None,
        MetricType::Counter,
    )?;
    for (route, result, count) in m.admin_requests.iter() {
        ConstCounter::new(count).encode(
            admin.encode_family(&[("route", route.label()), ("result", result.label())])?,
        )?;
    }
    gauge(
        encoder,
        "dry_run_switch",
        "1 while the global dry-run switch is on: no rule and no ban denies.",
        i64::from(sources.dry_run_switch),
    )
}
