//! The `[[auto_ban]]` rules in force and what they set. After each deny the decider asks
//! every rule to count it ([`AutoBans::count`], on the request path: a capped map
//! update per rule, nothing more); a rule that reaches its `hits` hands a [`Trigger`] to
//! a bounded queue, and a task off the request path turns it into a ban
//! ([`AutoBans::apply`]): as long as the key's earlier offences make it (escalation),
//! with the rule as origin, logged and counted like every ban. A rule in dry run logs
//! and counts the ban it would have set.
//!
//! The offences (bans set per rule and key, and when the last one was) are kept here,
//! bounded by [`MAX_OFFENCES`] and forgotten after the rule's `forget_after`, and saved
//! with the bans in the state file. A reload replaces the rules; a rule whose settings
//! did not change keeps its counts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::controls::{Actor, Controls};
use crate::bans::state::Offence;
use crate::bans::{AutoBanRule, AutoBanSettings, Ban, Offences, Target, Trigger};
use crate::decision::{Decision, Verdict};
use crate::metrics::Metrics;

/// Triggers waiting to be applied; beyond it a trigger is dropped (and counted): the key
/// triggers again after `hits` more denies.
pub const TRIGGER_QUEUE: usize = 1024;

/// Most (rule, key) offences remembered; the oldest are forgotten first beyond it.
pub const MAX_OFFENCES: usize = 1_000_000;

/// The rules in force, their trigger queue and the offences; see the module docs.
#[derive(Debug)]
pub struct AutoBans {
    rules: ArcSwap<Vec<Arc<AutoBanRule>>>,
    queue: mpsc::Sender<Trigger>,
    /// Taken by the task that applies triggers.
    pending: Mutex<Option<mpsc::Receiver<Trigger>>>,
    offences: Mutex<HashMap<(Arc<str>, Target), Offences>>,
    /// Triggers dropped because the queue was full.
    dropped: AtomicU64,
}

impl Default for AutoBans {
    fn default() -> Self {
        let (queue, pending) = mpsc::channel(TRIGGER_QUEUE);
        AutoBans {
            rules: ArcSwap::from_pointee(Vec::new()),
            queue,
            pending: Mutex::new(Some(pending)),
            offences: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
        }
    }
}

impl AutoBans {
    /// Puts `settings` in force; a rule whose settings did not change keeps its counts.
    /// Entries that do not compile (a validated configuration has none) are skipped.
    pub fn install(&self, settings: &[AutoBanSettings]) {
        let current = self.rules.load();
        let rules = settings
            .iter()
            .filter_map(|s| {
                let kept = current.iter().find(|r| r.settings() == s).cloned();
                kept.or_else(|| s.compile().map(Arc::new))
            })
            .collect();
        self.rules.store(Arc::new(rules));
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<Vec<Arc<AutoBanRule>>> {
        self.rules.load_full()
    }

    /// Counts a decision for every rule; queues what triggers. Allows cost one compare.
    #[inline]
    pub fn count(&self, verdict: &Verdict, src: Option<IpAddr>, now: Instant) {
        if verdict.decision != Decision::Deny {
            return;
        }
        let Some(src) = src else {
            return;
        };
        let rules = self.rules.load();
        for rule in rules.iter() {
            if let Some(trigger) = rule.count(verdict, src, verdict.asn, now) {
                if self.queue.try_send(trigger).is_err() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Triggers dropped because too many were waiting.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The receiving end of the trigger queue, once (for the task that applies them).
    pub(super) fn take_queue(&self) -> Option<mpsc::Receiver<Trigger>> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Sets the ban `trigger` asks for at `now` (Unix seconds), escalated by the key's
    /// earlier offences; in dry run, logs it only. A key already banned by the same rule
    /// for at least as long is left alone (denies counted while the ban was on its way).
    pub fn apply(&self, trigger: &Trigger, now: u32, controls: &Controls, metrics: &Metrics) {
        let key = (Arc::clone(&trigger.rule), trigger.target);
        let before = self.offences().get(&key).copied();
        let (seconds, after) = trigger.escalation.next(before, now);
        if trigger.dry_run {
            info!(
                target: "spoa_guard::bans",
                action = "auto-ban-dry-run",
                rule = %trigger.rule,
                target = %trigger.target,
                duration_secs = seconds,
                reason = %trigger.reason,
                "auto_ban in dry run: would ban"
            );
            return;
        }
        let existing = controls.read().get(&trigger.target);
        if existing.is_some_and(|b| {
            *b.origin == *trigger.rule && b.expires_at >= now.saturating_add(seconds)
        }) {
            return;
        }
        let ban = Ban {
            target: trigger.target,
            origin: Arc::clone(&trigger.rule),
            reason: Arc::clone(&trigger.reason),
            since: now,
            expires_at: now.saturating_add(seconds),
        };
        let by = Actor::AutoBan(trigger.rule.to_string());
        if controls.ban(ban, &by, metrics).is_ok() {
            let mut offences = self.offences();
            if offences.len() >= MAX_OFFENCES && !offences.contains_key(&key) {
                forget_oldest(&mut offences, MAX_OFFENCES / 10);
            }
            offences.insert(key, after);
        }
    }

    /// Forgets the offences no rule in force would still escalate at `now`.
    pub fn forget(&self, now: u32) {
        let rules = self.rules.load();
        self.offences().retain(|(rule, _), o| {
            rules.iter().any(|r| {
                **r.name() == **rule && now.saturating_sub(o.last) <= r.escalation().forget_after
            })
        });
    }

    /// Every offence remembered, for the state file.
    pub fn offences_list(&self) -> Vec<Offence> {
        self.offences()
            .iter()
            .map(|((rule, key), o)| (Arc::clone(rule), *key, *o))
            .collect()
    }

    /// Puts saved offences back at start.
    pub fn restore(&self, saved: Vec<Offence>) {
        let mut offences = self.offences();
        for (rule, key, o) in saved.into_iter().take(MAX_OFFENCES) {
            offences.insert((rule, key), o);
        }
    }

    fn offences(&self) -> std::sync::MutexGuard<'_, HashMap<(Arc<str>, Target), Offences>> {
        self.offences.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Forgets the `n` oldest offences.
fn forget_oldest(offences: &mut HashMap<(Arc<str>, Target), Offences>, n: usize) {
    let mut ages: Vec<u32> = offences.values().map(|o| o.last).collect();
    let Some(last) = ages.len().checked_sub(1) else {
        return;
    };
    let (_, &mut cut, _) = ages.select_nth_unstable(n.min(last));
    warn!(
        target: "spoa_guard::bans",
        "auto_ban offences at their cap ({MAX_OFFENCES}); forgetting the oldest"
    );
    offences.retain(|_, o| o.last > cut);
}
