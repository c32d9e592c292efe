//! The operations listeners (`[metrics]`, `[admin]`): the connections they dropped, by
//! listener and why.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

use super::Encoded;
use crate::metrics::{Label, Metrics};

pub(super) fn encode(encoder: &mut DescriptorEncoder<'_>, m: &Metrics) -> Encoded {
    let mut dropped = encoder.encode_descriptor(
        "http_connections_dropped",
        "Connections the operations listeners closed: the request head or body not in \
         time, the response not read in time, or evicted to make room for a new connection.",
        None,
        MetricType::Counter,
    )?;
    for (listener, reason, count) in m.ops_dropped.iter() {
        ConstCounter::new(count).encode(
            dropped.encode_family(&[("listener", listener.label()), ("reason", reason.label())])?,
        )?;
    }
    Ok(())
}
