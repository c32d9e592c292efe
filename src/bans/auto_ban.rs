//! `[[auto_ban]]`: repeat offenders ban themselves. A rule counts the denies it is about
//! (by reason, and optionally by rule name) per key — the source address (its /64 for
//! IPv6), its network, or its AS — and when a key collects `hits` of them within
//! `window`, bans it for `duration`, each later ban of the same key `factor` times longer
//! up to `max_duration` ([`Escalation`]).
//!
//! This module owns the settings and their checks ([`AutoBanSettings`]), the compiled
//! rule ([`AutoBanRule`]) with its count per key, and what a trigger sets
//! ([`Trigger`]). The counts live in a [`CappedMap`] (bounded like the rate limiter's
//! buckets: at the cap a new key is not counted, and counted as untracked) and use a
//! sliding window estimated from two fixed windows (the previous window's count weighted
//! by how much of it still overlaps, plus the current one's), 12 bytes per key. Who
//! applies a trigger (the agent, off the request path) and remembers the offences is the
//! caller's.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Escalation, Target};
use crate::decision::{Decision, Reason, Verdict};
use crate::util::{parse_duration, CappedMap, Invalid, KeyPath};

/// One `[[auto_ban]]` entry as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AutoBanSettings {
    /// The rule's name: the `origin` of its bans, and its metric label.
    pub name: String,
    /// The deny reasons that count: `rate-limit`, `user-agent`, `blocklist`, `asn`.
    pub reasons: Vec<String>,
    /// Only denies by these rules (limit, user-agent rule or list names) count; empty:
    /// any rule of those reasons.
    #[serde(default)]
    pub rules: Vec<String>,
    /// This many counted denies of one key ...
    pub hits: u32,
    /// ... within this window trigger a ban (`1m`).
    pub window: String,
    /// What is banned: `src` (the address; its /64 for IPv6), `src/N` (IPv4 /N, IPv6
    /// /64), `src/N/M` (IPv4 /N, IPv6 /M), `asn`.
    #[serde(default = "default_key")]
    pub key: String,
    /// The first ban of a key (`10m`).
    pub duration: String,
    /// Each later ban of the same key lasts this many times the previous one.
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// The longest ban (default: 24h, or `duration` if longer).
    #[serde(default)]
    pub max_duration: Option<String>,
    /// Offences older than this no longer escalate (default 24h).
    #[serde(default)]
    pub forget_after: Option<String>,
    /// Count and log the bans it would set, set none.
    #[serde(default)]
    pub dry_run: bool,
    /// Most keys counted at once; beyond it new keys are not counted (untracked).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_key() -> String {
    "src".into()
}

fn default_factor() -> f64 {
    2.0
}

fn default_max_keys() -> usize {
    100_000
}

/// The deny reasons a rule may count.
const COUNTABLE: [Reason; 4] = [
    Reason::RateLimit,
    Reason::UserAgent,
    Reason::Blocklist,
    Reason::Asn,
];

/// Longest `window`, `duration`, `max_duration` and `forget_after`.
const LONGEST: Duration = Duration::from_secs(366 * 86_400);

/// What a rule bans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanKey {
    /// The source's network: IPv4 `/v4`, IPv6 `/v6` (`src` is /32 and /64).
    Src {
        /// IPv4 prefix length.
        v4: u8,
        /// IPv6 prefix length.
        v6: u8,
    },
    /// The source's AS (sources without a known AS are not counted).
    Asn,
}

impl BanKey {
    /// Parses `src`, `src/N`, `src/N/M`, `asn`.
    ///
    /// # Errors
    ///
    /// Anything else, or prefix lengths out of range.
    pub fn parse(text: &str) -> Result<BanKey, String> {
        let bad = || {
            format!("{text:?} is not a ban key: src, src/N (IPv4 /N), src/N/M (IPv4 /N, IPv6 /M) or asn")
        };
        let text = text.trim();
        if text == "asn" {
            return Ok(BanKey::Asn);
        }
        let mut parts = text.split('/');
        if parts.next() != Some("src") {
            return Err(bad());
        }
        let mut len = |max: u8, default: u8| -> Result<u8, String> {
            match parts.next() {
                None => Ok(default),
                Some(n) => n.parse::<u8>().ok().filter(|&n| n <= max).ok_or_else(bad),
            }
        };
        let v4 = len(32, 32)?;
        let v6 = len(128, 64)?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(BanKey::Src { v4, v6 })
    }

    /// The target of this key for a source `src` in AS `asn`; `None` for an AS key and
    /// a source of unknown AS.
    pub fn target(self, src: IpAddr, asn: Option<u32>) -> Option<Target> {
        match self {
            BanKey::Src { v4, v6 } => {
                let len = match super::target::canonical(src) {
                    IpAddr::V4(_) => v4,
                    IpAddr::V6(_) => v6,
                };
                Some(Target::network_of(src, len))
            }
            BanKey::Asn => asn.map(Target::Asn),
        }
    }
}

impl AutoBanSettings {
    /// Every problem, keys relative to this entry.
    pub fn validate(&self) -> Vec<Invalid> {
        let mut problems = Vec::new();
        let mut error = |key: &str, message: String| {
            problems.push(Invalid::error(KeyPath::of(key), message));
        };
        if self.name.trim().is_empty() {
            error(
                "name",
                "empty; the name is the origin of the bans it sets".into(),
            );
        }
        if self.reasons.is_empty() {
            error(
                "reasons",
                "empty: name the denies that count (rate-limit, user-agent, blocklist, asn)".into(),
            );
        }
        for (i, reason) in self.reasons.iter().enumerate() {
            if countable(reason).is_none() {
                problems.push(Invalid::error(
                    KeyPath::of("reasons").index(i),
                    format!("{reason:?} is not a deny reason that can be counted: rate-limit, user-agent, blocklist or asn"),
                ));
            }
        }
        let mut error = |key: &str, message: String| {
            problems.push(Invalid::error(KeyPath::of(key), message));
        };
        if self.hits == 0 {
            error("hits", "0 would ban on no deny at all; at least 1".into());
        }
        for (key, value) in [
            ("window", Some(&self.window)),
            ("duration", Some(&self.duration)),
        ]
        .into_iter()
        .chain([
            ("max_duration", self.max_duration.as_ref()),
            ("forget_after", self.forget_after.as_ref()),
        ]) {
            if let Some(text) = value {
                if let Err(e) = checked(text) {
                    error(key, e);
                }
            }
        }
        if let Err(e) = BanKey::parse(&self.key) {
            error("key", e);
        }
        if !(self.factor.is_finite() && (1.0..=100.0).contains(&self.factor)) {
            error(
                "factor",
                format!("{} is not between 1 (no escalation) and 100", self.factor),
            );
        }
        if self.max_keys == 0 {
            error("max_keys", "0 would count nothing; at least 1".into());
        }
        problems
    }

    /// The compiled rule; `None` when [`AutoBanSettings::validate`] has errors.
    pub fn compile(&self) -> Option<AutoBanRule> {
        let seconds = |text: &str| checked(text).ok();
        let first = seconds(&self.duration)?;
        let max = match &self.max_duration {
            Some(text) => seconds(text)?,
            None => first.max(86_400),
        };
        let forget_after = match &self.forget_after {
            Some(text) => seconds(text)?,
            None => 86_400,
        };
        let window = parse_duration(&self.window).ok()?;
        let reasons = self
            .reasons
            .iter()
            .map(|r| countable(r))
            .collect::<Option<Vec<Reason>>>()?;
        Some(AutoBanRule {
            name: Arc::from(self.name.trim()),
            rules: self.rules.iter().map(|r| Bytes::from(r.clone())).collect(),
            hits: self.hits.max(1),
            window_nanos: u64::try_from(window.as_nanos()).ok()?.max(1),
            key: BanKey::parse(&self.key).ok()?,
            escalation: Escalation {
                first,
                factor: self.factor,
                max: max.max(first),
                forget_after,
            },
            dry_run: self.dry_run,
            settings: self.clone(),
            counts: CappedMap::new(self.max_keys),
            seed: RandomState::new(),
            epoch: Instant::now(),
            ban_reason: Arc::from(ban_reason(&reasons, self.hits, &self.window)),
            triggers: AtomicU64::new(0),
            reasons,
        })
    }
}

/// `text` as whole seconds between 1 s and 366 days.
fn checked(text: &str) -> Result<u32, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_secs(1) || d > LONGEST {
        return Err(format!("{text:?} must be between 1s and 366d"));
    }
    u32::try_from(d.as_secs()).map_err(|_| format!("{text:?} is too long"))
}

fn countable(reason: &str) -> Option<Reason> {
    COUNTABLE.into_iter().find(|r| r.as_str() == reason.trim())
}

/// The count of one key: denies in the current fixed window and the one before.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Which window `current` counts (nanoseconds since the epoch / window length).
    index: u32,
    previous: u32,
    current: u32,
}

/// A compiled `[[auto_ban]]` rule and its counts; see the module docs.
#[derive(Debug)]
pub struct AutoBanRule {
    name: Arc<str>,
    reasons: Vec<Reason>,
    rules: Vec<Bytes>,
    hits: u32,
    window_nanos: u64,
    key: BanKey,
    escalation: Escalation,
    dry_run: bool,
    settings: AutoBanSettings,
    counts: CappedMap<Window>,
    seed: RandomState,
    epoch: Instant,
    /// The reason its bans carry.
    ban_reason: Arc<str>,
    /// Triggers so far (bans set, or in dry run, bans it would have set).
    triggers: AtomicU64,
}

/// What a rule decided to ban (or, in dry run, would have).
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// The rule's name: the ban's origin.
    pub rule: Arc<str>,
    /// What to ban.
    pub target: Target,
    /// Whether the rule is in dry run.
    pub dry_run: bool,
    /// How long the ban lasts, given the key's earlier offences.
    pub escalation: Escalation,
    /// The ban's reason.
    pub reason: Arc<str>,
}

impl AutoBanRule {
    /// The rule's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The settings it was compiled from (a reload keeps the counts of a rule whose
    /// settings did not change).
    pub fn settings(&self) -> &AutoBanSettings {
        &self.settings
    }

    /// How long its bans last.
    pub fn escalation(&self) -> &Escalation {
        &self.escalation
    }

    /// Whether it only reports.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Keys counted now, and keys not counted because of `max_keys` so far.
    pub fn keys(&self) -> (usize, u64) {
        (self.counts.len(), self.counts.untracked())
    }

    /// Counts `verdict` (for a source `src` in AS `asn`, at `now`) if it is a deny this
    /// rule is about; returns the trigger when the key reaches `hits` within the window
    /// (its count starts again then).
    #[inline]
    pub fn count(
        &self,
        verdict: &Verdict,
        src: IpAddr,
        asn: Option<u32>,
        now: Instant,
    ) -> Option<Trigger> {
        if verdict.decision != Decision::Deny || !self.reasons.contains(&verdict.reason) {
            return None;
        }
        if !self.rules.is_empty() && !self.rules.contains(&verdict.rule) {
            return None;
        }
        let target = self.key.target(src, asn)?;
        let key = self.seed.hash_one(target);
        let elapsed =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let index = u32::try_from(elapsed / self.window_nanos).unwrap_or(u32::MAX);
        // How far into the current window `now` is, as a fraction.
        let into = (elapsed % self.window_nanos) as f64 / self.window_nanos as f64;
        let fresh = || Window {
            index,
            previous: 0,
            current: 0,
        };
        let reached = self.counts.update(key, fresh, |w| {
            if w.index != index {
                w.previous = if w.index.saturating_add(1) == index {
                    w.current
                } else {
                    0
                };
                w.current = 0;
                w.index = index;
            }
            w.current = w.current.saturating_add(1);
            let estimate = f64::from(w.previous) * (1.0 - into) + f64::from(w.current);
            let reached = estimate >= f64::from(self.hits);
            if reached {
                w.previous = 0;
                w.current = 0;
            }
            reached
        })?;
        if !reached {
            return None;
        }
        self.triggers.fetch_add(1, Ordering::Relaxed);
        Some(Trigger {
            rule: Arc::clone(&self.name),
            target,
            dry_run: self.dry_run,
            escalation: self.escalation,
            reason: Arc::clone(&self.ban_reason),
        })
    }

    /// Forgets the counts that can no longer reach `hits` (no deny in the current or
    /// previous window at `now`).
    pub fn evict(&self, now: Instant) {
        let elapsed =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let index = u32::try_from(elapsed / self.window_nanos).unwrap_or(u32::MAX);
        self.counts
            .retain(|w| w.index.saturating_add(1) >= index && w.current + w.previous > 0);
    }

    /// The reason its bans carry: `20 rate-limit denies within 1m`.
    pub fn ban_reason(&self) -> &Arc<str> {
        &self.ban_reason
    }

    /// Triggers so far: bans set or, in dry run, bans it would have set.
    pub fn triggers(&self) -> u64 {
        self.triggers.load(Ordering::Relaxed)
    }
}

/// `20 rate-limit denies within 1m`.
fn ban_reason(reasons: &[Reason], hits: u32, window: &str) -> String {
    let reasons: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
    format!(
        "{hits} {} denies within {}",
        reasons.join("/"),
        window.trim()
    )
}

#[cfg(test)]
mod tests;
