//! Hits per rule: how often each list, blocked-ASN set, user-agent rule and limit
//! decided a request (or, in dry run, would have denied one).
//!
//! Label values are the names written in the configuration (list file stems, rule and
//! limit names), never request data, so the set is bounded by what operators configured.
//! Every configured rule has its series from the moment its rules are installed (at 0),
//! so `increase()` and `absent()` work before the first hit. Counters survive reloads (a
//! rule keeps its counter as long as its name, step and mode), so `rate()` never sees a
//! reset from a reload.
//!
//! The request path never looks a name up: when a rule set is installed, [`RuleHits::table`]
//! resolves each of its rules to its counter once, and a hit is an index into that
//! [`HitTable`] by the verdict's [`RuleId`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use super::Counter;
use crate::decision::{Reason, RuleId};

/// What a counter counts: the labels of one `spoa_guard_rule_hits_total` series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hit {
    /// The step (`allowlist`, `blocklist`, `asn`, `user-agent`, `rate-limit`).
    pub reason: Reason,
    /// The configured name (the label, which for blocked ASNs is the set's name).
    pub rule: Bytes,
    /// A dry-run rule that would have denied.
    pub dry_run: bool,
}

/// Every hit counter the process has made, by [`Hit`]. Touched when rules are installed
/// and when metrics are scraped, never per request.
#[derive(Debug, Default)]
pub struct RuleHits {
    counters: Mutex<BTreeMap<Hit, Arc<Counter>>>,
}

impl RuleHits {
    /// The counters of `rules`, in their order (the engine's [`RuleId`] order), made at 0
    /// where new.
    pub fn table(&self, rules: impl IntoIterator<Item = Hit>) -> HitTable {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        HitTable(
            rules
                .into_iter()
                .map(|hit| Arc::clone(counters.entry(hit).or_default()))
                .collect(),
        )
    }

    /// Every counter, sorted by labels, for exposition.
    pub fn snapshot(&self) -> Vec<(Hit, u64)> {
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters
            .iter()
            .map(|(hit, counter)| (hit.clone(), counter.get()))
            .collect()
    }
}

/// The hit counters of one rule set, by [`RuleId`].
#[derive(Debug, Default)]
pub struct HitTable(Box<[Arc<Counter>]>);

impl HitTable {
    /// Counts a hit of rule `id` (an id from another rule set counts nothing).
    #[inline]
    pub fn record(&self, id: RuleId) {
        if let Some(counter) = self.0.get(id.index()) {
            counter.inc();
        }
    }

    /// Hits of rule `id` so far.
    pub fn get(&self, id: RuleId) -> u64 {
        self.0.get(id.index()).map_or(0, |c| c.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(reason: Reason, rule: &'static str, dry_run: bool) -> Hit {
        Hit {
            reason,
            rule: Bytes::from_static(rule.as_bytes()),
            dry_run,
        }
    }

    #[test]
    fn every_rule_has_a_series_from_the_start_and_keeps_it_across_tables() {
        let hits = RuleHits::default();
        let first = hits.table([
            hit(Reason::Blocklist, "drop", false),
            hit(Reason::Blocklist, "drop", true),
            hit(Reason::Asn, "blocked-asns", false),
        ]);
        assert_eq!(
            hits.snapshot(),
            vec![
                (hit(Reason::Blocklist, "drop", false), 0),
                (hit(Reason::Blocklist, "drop", true), 0),
                (hit(Reason::Asn, "blocked-asns", false), 0),
            ]
        );
        for _ in 0..3 {
            first.record(RuleId(0));
        }
        first.record(RuleId(1));
        first.record(RuleId(2));
        first.record(RuleId(99)); // not in this table: ignored
                                  // A reload that reorders the rules keeps each rule's counter.
        let second = hits.table([
            hit(Reason::Asn, "blocked-asns", false),
            hit(Reason::Blocklist, "drop", false),
        ]);
        second.record(RuleId(1));
        assert_eq!(second.get(RuleId(1)), 4);
        assert_eq!(
            hits.snapshot(),
            vec![
                (hit(Reason::Blocklist, "drop", false), 4),
                (hit(Reason::Blocklist, "drop", true), 1),
                (hit(Reason::Asn, "blocked-asns", false), 1),
            ]
        );
    }
}
