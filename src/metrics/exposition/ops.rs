//! The operations listeners (`[metrics]`, `[admin]`): the connections they dropped, by
//! listener and why.

use prometheus_client::encoding::DescriptorEncoder;

use super::{by_pair_where, Encoded};
use crate::metrics::Metrics;

pub(super) fn encode(encoder: &mut DescriptorEncoder<'_>, m: &Metrics) -> Encoded {
    by_pair_where(
        encoder,
        (
            "http_connections_dropped",
            "Connections the operations listeners closed: the request head or body not in \
             time, the response not read in time, or evicted to make room for a new connection.",
        ),
        ("listener", "reason"),
        &m.ops_dropped,
        |listener, reason| listener.can_drop(reason),
    )
}
