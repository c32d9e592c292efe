//! The SPOP side: connections, health checks, frames by type, protocol errors by kind.

use prometheus_client::encoding::DescriptorEncoder;

use super::{by_label, counter, gauge, Encoded};
use crate::metrics::Metrics;

pub(super) fn encode(encoder: &mut DescriptorEncoder<'_>, m: &Metrics) -> Encoded {
    by_label(
        encoder,
        "frames",
        "SPOP frames received (haproxy-*, notify, unset) and sent (agent-*, ack), by type.",
        "type",
        &m.frames,
    )?;
    by_label(
        encoder,
        "protocol_errors",
        "Connections ended by a protocol error, by kind (each answered with an AGENT-DISCONNECT).",
        "kind",
        &m.protocol_errors,
    )?;
    gauge(
        encoder,
        "connections_active",
        "SPOP connections open now.",
        m.connections_active.get(),
    )?;
    counter(
        encoder,
        "connections",
        "SPOP connections accepted.",
        m.connections.get(),
    )?;
    counter(
        encoder,
        "healthchecks",
        "SPOP health checks answered.",
        m.healthchecks.get(),
    )
}
