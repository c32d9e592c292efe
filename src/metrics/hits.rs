//! Hits per rule: how often each list, blocked-ASN set, user-agent rule and limit
//! decided a request (or, in dry run, would have).
//!
//! Label values are the names written in the configuration (list file stems, rule and
//! limit names), never request data, so the set is bounded by what operators configured.
//! Blocked ASNs count under one rule, `blocked-asns`: the set may hold hundreds of ASNs
//! and which ones hit is what `/top` is for. Counters survive reloads (a rule keeps its
//! counter as long as its name), so `rate()` never sees a reset from a reload.
//!
//! The map is read without a lock on every hit ([`ArcSwap`]); a name seen for the first
//! time copies the map under a mutex, once per name for the life of the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::engine::Reason;

/// The rule label of a blocked-ASN hit.
pub const ASN_RULE: &str = "blocked-asns";

/// What a counter counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hit {
    /// The step (`allowlist`, `blocklist`, `asn`, `user-agent`, `rate-limit`).
    pub reason: Reason,
    /// The configured name.
    pub rule: Bytes,
    /// A dry-run rule that would have decided.
    pub dry_run: bool,
}

/// Counters by [`Hit`].
#[derive(Debug, Default)]
pub struct RuleHits {
    counters: ArcSwap<HashMap<Hit, Arc<AtomicU64>>>,
    adding: Mutex<()>,
}

impl RuleHits {
    /// Counts one hit of `rule` at step `reason`.
    pub fn record(&self, reason: Reason, rule: &Bytes, dry_run: bool) {
        let rule = if reason == Reason::Asn {
            Bytes::from_static(ASN_RULE.as_bytes())
        } else {
            rule.clone()
        };
        let hit = Hit {
            reason,
            rule,
            dry_run,
        };
        if let Some(counter) = self.counters.load().get(&hit) {
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
        let mut counters = HashMap::clone(&self.counters.load());
        counters
            .entry(hit)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
        self.counters.store(Arc::new(counters));
    }

    /// Every counter, sorted, for exposition.
    pub fn snapshot(&self) -> Vec<(Hit, u64)> {
        let mut all: Vec<(Hit, u64)> = self
            .counters
            .load()
            .iter()
            .map(|(hit, counter)| (hit.clone(), counter.load(Ordering::Relaxed)))
            .collect();
        all.sort();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_are_counted_per_rule_and_mode_and_asns_share_one_rule() {
        let hits = RuleHits::default();
        let drop = Bytes::from_static(b"drop");
        for _ in 0..3 {
            hits.record(Reason::Blocklist, &drop, false);
        }
        hits.record(Reason::Blocklist, &drop, true);
        hits.record(Reason::Asn, &Bytes::from_static(b"AS64500"), false);
        hits.record(Reason::Asn, &Bytes::from_static(b"AS64501"), false);
        let hit = |reason, rule: &'static str, dry_run| Hit {
            reason,
            rule: Bytes::from_static(rule.as_bytes()),
            dry_run,
        };
        assert_eq!(
            hits.snapshot(),
            vec![
                (hit(Reason::Blocklist, "drop", false), 3),
                (hit(Reason::Blocklist, "drop", true), 1),
                (hit(Reason::Asn, ASN_RULE, false), 2),
            ]
        );
    }
}
