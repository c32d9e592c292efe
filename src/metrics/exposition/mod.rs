//! The Prometheus exposition: what the agent's collector writes at scrape time, split
//! by area — traffic (decisions, rule hits, latency, insight), protocol (connections,
//! frames, errors), rules (reloads, rule sizes, rate-limit keys), incident controls
//! (bans, admin requests, the dry-run switch), the operations listeners (connections
//! dropped), fleet mode, the build, and the standard `process_*` metrics
//! ([`ProcessCollector`], a collector of its own: those names have no prefix).
//!
//! Names follow Prometheus conventions: prefix `spoa_guard_`, base units (seconds,
//! bytes), `_total` for counters (added by the encoder). The README lists every series;
//! the alert rules and the dashboard in `deploy/` use them.
//!
//! A labelled family is pre-created at 0 (so that `rate()` and dashboards see it before
//! the first event) for the label combinations that can happen, and only those: a
//! decision's action with the reasons that can give it ([`crate::engine::outcomes`]), an
//! admin route with the results it can have, a listener with the ways it can drop a
//! connection, the protocol-error kinds that are counted. A combination outside those is
//! still shown if it ever counts something.

mod fleet;
mod incident;
mod ops;
mod process;
mod protocol;
mod rules;
mod traffic;

pub use process::{resident_memory_bytes, ProcessCollector, ProcessStats};

use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{Counters, Label, Matrix, Metrics};
use crate::bans::AutoBanRule;
use crate::engine::Engine;
use crate::insight::Insight;

/// What one scrape reads.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// The agent's counters.
    pub metrics: &'a Metrics,
    /// The rules in force.
    pub engine: &'a Engine,
    /// Traffic insight, if on.
    pub insight: Option<&'a Insight>,
    /// The bans held, counted by origin.
    pub bans_by_origin: &'a [(Arc<str>, u64)],
    /// Whether the global dry-run switch is on.
    pub dry_run_switch: bool,
    /// The `[[auto_ban]]` rules in force.
    pub auto_bans: &'a [Arc<AutoBanRule>],
    /// Auto-ban triggers dropped because too many were waiting.
    pub auto_ban_dropped: u64,
}

/// Writes every `spoa_guard_*` series of `sources` (the `process_*` ones are
/// [`ProcessCollector`]'s).
///
/// # Errors
///
/// Only if formatting fails, which writing to a `String` does not.
pub fn encode_all(mut encoder: DescriptorEncoder<'_>, sources: &Sources<'_>) -> Encoded {
    process::build_info(&mut encoder)?;
    traffic::encode(&mut encoder, sources)?;
    protocol::encode(&mut encoder, sources.metrics)?;
    rules::encode(&mut encoder, sources)?;
    incident::encode(&mut encoder, sources)?;
    ops::encode(&mut encoder, sources.metrics)?;
    fleet::encode(&mut encoder, &sources.metrics.fleet)
}

/// The text exposition of `registry` (OpenMetrics text format, which Prometheus reads).
///
/// # Errors
///
/// Only if formatting fails, which writing to a `String` does not.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::with_capacity(8 * 1024);
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The result of writing a series.
pub type Encoded = Result<(), std::fmt::Error>;

/// A counter without labels.
fn counter(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Encoded {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

/// A gauge without labels.
fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: i64) -> Encoded {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

/// A counter family with one series per value of `L`, labelled `label`.
fn by_label<L: Label>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    counters: &Counters<L>,
) -> Encoded {
    by_label_where(encoder, (name, help), label, counters, |_| true)
}

/// A counter family with one series per value of `L` that can happen (`possible`),
/// labelled `label`; another value only once it has counted something.
fn by_label_where<L: Label>(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help): (&str, &str),
    label: &str,
    counters: &Counters<L>,
    possible: impl Fn(L) -> bool,
) -> Encoded {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in counters.iter() {
        if count > 0 || possible(value) {
            ConstCounter::new(count).encode(family.encode_family(&[(label, value.label())])?)?;
        }
    }
    Ok(())
}

/// A counter family over two labels (`labels`), with one series per pair that can
/// happen (`possible`); another pair only once it has counted something.
fn by_pair_where<A: Label, B: Label>(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help): (&str, &str),
    labels: (&str, &str),
    counters: &Matrix<A, B>,
    possible: impl Fn(A, B) -> bool,
) -> Encoded {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (a, b, count) in counters.iter() {
        if count > 0 || possible(a, b) {
            let pair = [(labels.0, a.label()), (labels.1, b.label())];
            ConstCounter::new(count).encode(family.encode_family(&pair)?)?;
        }
    }
    Ok(())
}

/// A size as a gauge value.
fn clamp(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
