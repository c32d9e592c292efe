//! The process: the build and resident memory.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::Encoded;

pub(super) fn build_info(encoder: &mut DescriptorEncoder<'_>) -> Encoded {
    let mut family = encoder.encode_descriptor(
        "build_info",
        "Version of the running agent (always 1).",
        None,
        MetricType::Gauge,
    )?;
    let labels = [("version", env!("CARGO_PKG_VERSION"))];
    ConstGauge::new(1).encode(family.encode_family(&labels)?)
}

pub(super) fn encode(encoder: &mut DescriptorEncoder<'_>) -> Encoded {
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

/// `VmRSS` from /proc/self/status, in bytes (Linux).
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
