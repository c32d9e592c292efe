//! Fleet mode: exchanges with the fleet store (round trips, keys, bytes, errors), the
//! agents seen, degradation, bans and marks exchanged.

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::{by_label, counter, gauge, Encoded};
use crate::metrics::FleetMetrics;

pub(super) fn encode(encoder: &mut DescriptorEncoder<'_>, f: &FleetMetrics) -> Encoded {
    let snapshot = f.sync_duration.snapshot();
    let mut metric = encoder.encode_descriptor(
        "fleet_sync_duration",
        "Round trip of each exchange with the fleet store (counts, agents, ban version).",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    metric.encode_histogram::<NoLabelSet>(snapshot.sum, snapshot.count, &snapshot.buckets, None)?;
    by_label(
        encoder,
        "fleet_errors",
        "Failed exchanges with the fleet store, by kind (timeout, connection, refused, protocol).",
        "kind",
        &f.errors,
    )?;
    let counters = [
        (
            "fleet_keys_sent",
            "Rate-limit keys whose counts were sent to the fleet store.",
            f.keys_sent.get(),
        ),
        (
            "fleet_keys_deferred",
            "Rate-limit keys left for a later exchange by fleet.max_keys_per_sync.",
            f.keys_deferred.get(),
        ),
        (
            "fleet_sent_bytes",
            "Bytes of commands sent to the fleet store (approximate).",
            f.bytes_sent.get(),
        ),
        (
            "fleet_received_bytes",
            "Bytes of answers from the fleet store (approximate).",
            f.bytes_received.get(),
        ),
        (
            "fleet_degradations",
            "Times this agent lost step with its fleet.",
            f.degradations.get(),
        ),
        (
            "fleet_bans_received",
            "Bans and unbans received from other agents of the fleet.",
            f.bans_received.get(),
        ),
        (
            "fleet_bans_sent",
            "Bans and unbans sent to the fleet.",
            f.bans_sent.get(),
        ),
        (
            "fleet_ban_resyncs",
            "Full reads of the fleet's bans (start, reconnect, missed message, periodic).",
            f.ban_resyncs.get(),
        ),
        (
            "fleet_marks_sent",
            "Over-limit marks published to the fleet.",
            f.marks_sent.get(),
        ),
        (
            "fleet_marks_received",
            "Over-limit marks received from other agents.",
            f.marks_received.get(),
        ),
    ];
    for (name, help, value) in counters {
        counter(encoder, name, help, value)?;
    }
    gauge(
        encoder,
        "fleet_agents",
        "Agents of the fleet seen alive at the last exchange.",
        f.agents.get(),
    )?;
    gauge(
        encoder,
        "fleet_degraded",
        "1 while this agent cannot reach its fleet store: fleet limits enforce its share.",
        f.degraded.get(),
    )?;
    gauge(
        encoder,
        "fleet_degraded_since_unix_seconds",
        "When the current degradation began (0: in step with the fleet).",
        f.degraded_since.get(),
    )
}
