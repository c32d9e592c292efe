//! The agent: the state every connection, listener and task shares, and the one place
//! where a request becomes a decision.
//!
//! [`Agent`] owns the rules in force (an engine and the hit counters of its rules,
//! swapped whole by a reload), the metrics, traffic insight and the deny log. The SPOP
//! session asks it for verdicts through a [`Decider`] ([`Agent::decider`]), which runs the
//! engine and then the recorders (`record.rs`): decision counters, per-rule hits,
//! latency, traffic insight, the deny log. Whatever must happen after a decision —
//! today those recorders; later bans, escalation, fleet counting — plugs in there, not
//! in the connection code.
//!
//! Beside the rules, the agent holds the runtime state an operator changes without a
//! reload ([`Controls`]: the bans and the global dry-run switch, `controls.rs`); the
//! decider reads it with the rules.
//!
//! The agent's periodic work (evicting idle rate-limit keys, folding traffic-insight
//! samples into their windows, expiring and saving bans) is started by [`Agent::spawn_tasks`] (`tasks.rs`), and its
//! Prometheus collector lives in `exposition.rs`.
//!
//! The agent knows nothing about sockets or frames: it takes a [`Request`] and the time,
//! and returns a [`Verdict`].

mod auto_ban;
mod controls;
mod exposition;
mod record;
mod tasks;

pub use auto_ban::{AutoBans, MAX_OFFENCES, TRIGGER_QUEUE};
pub use controls::{Actor, BanEvent, Controls, EXPIRE_SLICE, FLEET_OUTBOX};
pub use exposition::registry;
pub use tasks::{AGGREGATE_INTERVAL, EVICT_INTERVAL, EXPIRE_INTERVAL, SAVE_INTERVAL};

use std::sync::{Arc, Mutex, PoisonError, RwLockReadGuard};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};

use crate::bans::{BanSettings, BanStore};
use crate::decision::{Request, Verdict};
use crate::engine::{Context, Engine};
use crate::insight::{Insight, InsightConfig, InvalidInsight};
use crate::metrics::{Hit, HitTable, Metrics};
use crate::util::{unix_now, LogThrottle, WallClock};

/// How the agent records decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSettings {
    /// At most this many denied requests are logged per second; 0 logs none.
    pub deny_lines_per_second: u32,
    /// Traffic insight windows; `None` turns insight off.
    pub insight: Option<InsightConfig>,
    /// `[bans]`.
    pub bans: BanSettings,
}

/// What the last reload attempt did, for the admin API (`spoa-guard rules`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReloadReport {
    /// When it ended, Unix seconds.
    pub at: u64,
    /// What started it: `signal`, `watch`, `poll`, `admin`.
    pub cause: String,
    /// Whether the new rules are in force.
    pub applied: bool,
    /// Every error (`file:line: what is wrong`) when it failed.
    pub errors: Vec<String>,
    /// Changed settings that only a restart applies.
    pub restart_needed: Vec<String>,
}

/// A request to reload now, answered with the attempt's report (the admin API's `POST
/// /reload`; the reloader serves it).
pub type ReloadRequest = tokio::sync::oneshot::Sender<ReloadReport>;

/// The rules in force: an engine and the hit counters of its rules, swapped together.
#[derive(Debug)]
pub struct InForce {
    /// The compiled rules and rate-limit state.
    pub engine: Engine,
    /// The hit counter of each of its rules, by rule id.
    pub hits: HitTable,
}

/// The state of one running agent; see the module docs.
pub struct Agent {
    /// The rules in force; a reload swaps in new ones, requests in flight finish on the
    /// ones they loaded.
    in_force: ArcSwap<InForce>,
    /// Counters.
    pub metrics: Metrics,
    /// Bans and the global dry-run switch: runtime state no reload touches.
    pub controls: Controls,
    /// The `[[auto_ban]]` rules in force, their counts and the offences.
    pub auto_bans: AutoBans,
    /// Unix seconds of the request path's `Instant`s (ban expiries).
    pub clock: WallClock,
    /// Heavy hitters for `/top`; `None` when turned off.
    insight: Option<Insight>,
    /// Paces deny log lines; `None`: denies are not logged.
    deny_log: Option<LogThrottle>,
    /// Keeps the "bad src" warning to one line per interval.
    invalid_src_log: LogThrottle,
    /// The last reload attempt; `None` before the first.
    last_reload: Mutex<Option<ReloadReport>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("in_force", &self.in_force)
            .field("metrics", &self.metrics)
            .field("insight", &self.insight.is_some())
            .field("deny_log", &self.deny_log.is_some())
            .finish_non_exhaustive()
    }
}

/// How often the "no usable src" warning may be logged.
const INVALID_SRC_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Agent {
    /// An agent deciding with `engine`.
    ///
    /// # Errors
    ///
    /// Invalid insight settings (a validated configuration has none).
    pub fn new(engine: Engine, settings: &AgentSettings) -> Result<Agent, InvalidInsight> {
        let insight = settings
            .insight
            .as_ref()
            .map(|config| Insight::new(config, Instant::now()))
            .transpose()?;
        Ok(Agent::assemble(
            engine,
            insight,
            settings.deny_lines_per_second,
            settings.bans.clone(),
        ))
    }

    /// An agent with default insight and no deny log: for tests and tools.
    pub fn with_engine(engine: Engine) -> Agent {
        // The default settings are valid (a test says so); were they not, the agent
        // would simply run without insight.
        let insight = Insight::new(&InsightConfig::default(), Instant::now()).ok();
        Agent::assemble(engine, insight, 0, BanSettings::default())
    }

    fn assemble(
        engine: Engine,
        insight: Option<Insight>,
        deny_lines_per_second: u32,
        bans: BanSettings,
    ) -> Agent {
        let metrics = Metrics::default();
        let in_force = ArcSwap::from_pointee(in_force(&metrics, engine));
        metrics.rules_loaded_unix_seconds.set_u64(unix_now());
        Agent {
            in_force,
            metrics,
            controls: Controls::new(bans),
            auto_bans: AutoBans::default(),
            clock: WallClock::default(),
            insight,
            deny_log: (deny_lines_per_second > 0)
                .then(|| LogThrottle::new(Duration::from_secs(1) / deny_lines_per_second)),
            invalid_src_log: LogThrottle::new(INVALID_SRC_LOG_INTERVAL),
            last_reload: Mutex::new(None),
        }
    }

    /// The last reload attempt, if any.
    pub fn last_reload(&self) -> Option<ReloadReport> {
        self.last_reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records a reload attempt.
    pub fn set_last_reload(&self, report: ReloadReport) {
        *self
            .last_reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(report);
    }

    /// The rules in force now.
    pub fn in_force(&self) -> Guard<Arc<InForce>> {
        self.in_force.load()
    }

    /// The engine in force now, kept alive by the returned `Arc`.
    pub fn engine(&self) -> Arc<InForce> {
        self.in_force.load_full()
    }

    /// Puts `engine` in force (its rules get their hit counters, at 0 where new) and
    /// returns the rules it replaces, which requests in flight may still hold.
    pub fn install(&self, engine: Engine) -> Arc<InForce> {
        let old = self
            .in_force
            .swap(Arc::new(in_force(&self.metrics, engine)));
        self.metrics.rules_loaded_unix_seconds.set_u64(unix_now());
        old
    }

    /// Traffic insight, unless turned off.
    pub fn insight(&self) -> Option<&Insight> {
        self.insight.as_ref()
    }

    /// Decides requests with the rules in force now: take one per batch of requests, so
    /// that a batch is decided by one rule set (a reload swaps in the next one between
    /// batches).
    ///
    /// The batch also reads the bans under one read lock, and the dry-run switch once: a
    /// ban set meanwhile applies from the next batch. Each request's Unix second comes
    /// from its `Instant` ([`WallClock`]), with no clock read.
    pub fn decider(&self) -> Decider<'_> {
        Decider {
            agent: self,
            rules: self.in_force.load(),
            bans: self.controls.read(),
            dry_run_until: self.controls.dry_run_until(0),
        }
    }
}

/// Decides requests with one rule set ([`Agent::decider`]).
pub struct Decider<'a> {
    agent: &'a Agent,
    rules: Guard<Arc<InForce>>,
    bans: RwLockReadGuard<'a, BanStore>,
    /// When the dry-run switch turns off, if it was set when the batch started.
    dry_run_until: Option<u32>,
}

impl Decider<'_> {
    /// Decides one request at `now`, then records it: counters, per-rule hits, latency,
    /// traffic insight, the deny log.
    #[inline]
    pub fn decide(&self, request: &Request<'_>, now: Instant) -> Verdict {
        // The wall clock only matters to bans and the switch: skip it without either.
        let unix_now = if self.bans.is_empty() && self.dry_run_until.is_none() {
            0
        } else {
            self.agent.clock.unix_secs(now)
        };
        let context = Context {
            now,
            unix_now,
            bans: Some(&self.bans),
            dry_run_all: self.dry_run_until.is_some_and(|until| until > unix_now),
        };
        let verdict = self.rules.engine.evaluate_in(request, &context);
        record::decision(self.agent, &self.rules, request, &verdict, now);
        verdict
    }
}

/// `engine` with the hit counters of its rules.
fn in_force(metrics: &Metrics, engine: Engine) -> InForce {
    let hits = metrics
        .hits
        .table(engine.table().iter().map(|(_, rule)| Hit {
            reason: rule.step.reason(),
            rule: rule.name.clone(),
            dry_run: rule.dry_run,
        }));
    InForce { engine, hits }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_insight_settings_are_valid() {
        assert!(InsightConfig::default().validate().is_empty());
        let agent = Agent::with_engine(Engine::new(Default::default(), Default::default()));
        assert!(agent.insight().is_some());
    }
}
