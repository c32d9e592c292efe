//! [`TopReport`]: the heaviest keys of a window, as `GET /top` serves them (JSON through
//! serde), built by merging the window's slots.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::summary::{merge, Key};
use super::window::Class;
use super::Dimension;

/// The heaviest keys of every dimension over a window, for all traffic and for denied
/// traffic. See the [module docs](super) for an example and for what the numbers
/// guarantee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopReport {
    /// The window: the one asked for, rounded down to whole slots (at least one) and
    /// capped at the longest window kept.
    pub window_secs: u64,
    /// The time the counts cover: from the start of the window's oldest slot (or the
    /// start of the [`Insight`](super::Insight), if later) to the report's `now`;
    /// between `window_secs − slot_secs` and `window_secs`.
    pub covered_secs: f64,
    /// Slot length: the granularity with which windows slide.
    pub slot_secs: u64,
    /// Counters per summary (`k`): a key's `error` is at most its class's requests / `k`.
    pub counters: usize,
    /// Requests in the window.
    pub totals: Totals,
    /// How the requests were counted.
    pub sampling: Sampling,
    /// The heaviest keys over every request; shares are of `totals.requests`.
    pub all: ClassTop,
    /// The heaviest keys over denied requests; shares are of `totals.denied`.
    pub denied: ClassTop,
}

/// Requests in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Every request.
    pub requests: u64,
    /// Denied requests.
    pub denied: u64,
}

/// How the requests of the window were counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sampling {
    /// Every request of the window was counted (no sampling, nothing dropped): counts
    /// with `error` 0 are exact.
    pub exact: bool,
    /// Sampling interval of allowed requests now: one request in `interval` is
    /// recorded, standing for `interval` requests (1: every request).
    pub interval: u32,
    /// Sampling interval of denied requests now.
    pub interval_denied: u32,
    /// Requests of the window that were counted in the totals only, because the sample
    /// buffers were full (aggregation did not keep up).
    pub dropped: u64,
}

/// The heaviest keys of one class, per dimension, heaviest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassTop {
    /// Source addresses (IPv4-mapped IPv6 shown as IPv4; `(none)` when HAProxy sent
    /// none).
    pub src: Vec<TopEntry>,
    /// Source networks: IPv4 /24, IPv6 /48 (`192.0.2.0/24`, `2001:db8:1::/48`).
    pub src_net: Vec<TopEntry>,
    /// Autonomous systems of the sources (`AS64500`; `unknown` when no database knows
    /// the source).
    pub asn: Vec<TopEntry>,
    /// Paths (`(none)` when absent).
    pub path: Vec<TopEntry>,
    /// Host headers, as sent (`(none)` when absent).
    pub host: Vec<TopEntry>,
    /// User agents (`(none)` when absent).
    pub ua: Vec<TopEntry>,
}

impl ClassTop {
    /// The entries of one dimension.
    pub fn get(&self, dimension: Dimension) -> &[TopEntry] {
        match dimension {
            Dimension::Src => &self.src,
            Dimension::SrcNet => &self.src_net,
            Dimension::Asn => &self.asn,
            Dimension::Path => &self.path,
            Dimension::Host => &self.host,
            Dimension::Ua => &self.ua,
        }
    }

    fn get_mut(&mut self, dimension: Dimension) -> &mut Vec<TopEntry> {
        match dimension {
            Dimension::Src => &mut self.src,
            Dimension::SrcNet => &mut self.src_net,
            Dimension::Asn => &mut self.asn,
            Dimension::Path => &mut self.path,
            Dimension::Host => &mut self.host,
            Dimension::Ua => &mut self.ua,
        }
    }

    /// The top `n` of every dimension over `classes` (one per slot of the window), with
    /// shares of `total`.
    pub(super) fn build(classes: &[&Class], n: usize, total: u64, key_bytes: usize) -> ClassTop {
        let mut top = ClassTop::default();
        for (i, &dimension) in Dimension::ALL.iter().enumerate() {
            let (merged, _) = merge(classes.iter().filter_map(|c| c.dims.get(i)));
            *top.get_mut(dimension) = merged
                .iter()
                .take(n)
                .map(|m| TopEntry {
                    key: render(m.key, dimension, key_bytes),
                    count: m.count,
                    share: share(m.count, total),
                    error: m.error,
                })
                .collect();
        }
        top
    }
}

/// One heavy key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopEntry {
    /// The key as text: an address, a network, `AS<n>`, or the bytes of a path, host or
    /// user agent (invalid UTF-8 replaced by U+FFFD, a truncated key ending in `…`).
    pub key: String,
    /// Requests with this key: an upper bound, `count − error ≤ true ≤ count` (before
    /// sampling; with sampling, an estimate of both).
    pub count: u64,
    /// `count` over the class's requests, rounded to 4 decimal places.
    pub share: f64,
    /// How much `count` may exceed the true number (see `count`).
    pub error: u64,
}

fn share(count: u64, total: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (count as f64 / total as f64 * 10_000.0).round() / 10_000.0
}

/// A key as text (see [`TopEntry::key`]).
fn render(key: &Key, dimension: Dimension, key_bytes: usize) -> String {
    match key {
        Key::Missing if dimension == Dimension::Asn => "unknown".to_string(),
        Key::Missing => "(none)".to_string(),
        Key::Addr(a) => a.to_string(),
        Key::Net(IpAddr::V4(a)) => format!("{a}/24"),
        Key::Net(IpAddr::V6(a)) => format!("{a}/48"),
        Key::Asn(n) => format!("AS{n}"),
        Key::Bytes(b) => match b.get(..key_bytes) {
            Some(head) if b.len() > key_bytes => {
                let mut text = String::from_utf8_lossy(head).into_owned();
                text.push('…');
                text
            }
            _ => String::from_utf8_lossy(b).into_owned(),
        },
    }
}
