//! The SPOP side: connections (and those the agent dropped, by why), health checks,
//! frames by type, protocol errors by kind.

use prometheus_client::encoding::DescriptorEncoder;

use super::{by_label, by_label_where, counter, gauge, Encoded};
use crate::metrics::Metrics;
use crate::spop::ErrorKind;

pub(super) fn encode(encoder: &mut DescriptorEncoder<'_>, m: &Metrics) -> Encoded {
    by_label(
        encoder,
        "frames",
        "SPOP frames received (haproxy-*, notify, unset) and sent (agent-*, ack), by type.",
        "type",
        &m.frames,
    )?;
    by_label_where(
        encoder,
        (
            "protocol_errors",
            "Connections ended by a protocol error, by kind (each answered with an AGENT-DISCONNECT).",
        ),
        "kind",
        &m.protocol_errors,
        ErrorKind::is_reported,
    )?;
    counter(
        encoder,
        "protocol_error_logs_suppressed",
        "Protocol-error log lines left out by their rate limit (the connections are all counted above).",
        m.protocol_error_logs_suppressed.get(),
    )?;
    by_label(
        encoder,
        "connections_dropped",
        "SPOP connections the agent closed: no HELLO in time, idle, a peer not reading, or evicted before its HELLO to admit a new connection at max_connections.",
        "reason",
        &m.connections_dropped,
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
