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
//! The agent's periodic work (evicting idle rate-limit keys, folding traffic-insight
//! samples into their windows) is started by [`Agent::spawn_tasks`] (`tasks.rs`), and its
//! Prometheus collector lives in `exposition.rs`.
//!
//! The agent knows nothing about sockets or frames: it takes a [`Request`] and the time,
//! and returns a [`Verdict`].

mod exposition;
mod record;
mod tasks;

pub use exposition::registry;
pub use tasks::{AGGREGATE_INTERVAL, EVICT_INTERVAL};

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};

use crate::decision::{Request, Verdict};
use crate::engine::Engine;
use crate::insight::{Insight, InsightConfig, InvalidInsight};
use crate::metrics::{Hit, HitTable, Metrics};
use crate::util::{unix_now, LogThrottle};

/// How the agent records decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSettings {
    /// At most this many denied requests are logged per second; 0 logs none.
    pub deny_lines_per_second: u32,
    /// Traffic insight windows; `None` turns insight off.
    pub insight: Option<InsightConfig>,
}

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
    /// Heavy hitters for `/top`; `None` when turned off.
    insight: Option<Insight>,
    /// Paces deny log lines; `None`: denies are not logged.
    deny_log: Option<LogThrottle>,
    /// Keeps the "bad src" warning to one line per interval.
    invalid_src_log: LogThrottle,
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
        ))
    }

    /// An agent with default insight and no deny log: for tests and tools.
    pub fn with_engine(engine: Engine) -> Agent {
        // The default settings are valid (a test says so); were they not, the agent
        // would simply run without insight.
        let insight = Insight::new(&InsightConfig::default(), Instant::now()).ok();
        Agent::assemble(engine, insight, 0)
    }

    fn assemble(engine: Engine, insight: Option<Insight>, deny_lines_per_second: u32) -> Agent {
        let metrics = Metrics::default();
        let in_force = ArcSwap::from_pointee(in_force(&metrics, engine));
        metrics.rules_loaded_unix_seconds.set_u64(unix_now());
        Agent {
            in_force,
            metrics,
            insight,
            deny_log: (deny_lines_per_second > 0)
                .then(|| LogThrottle::new(Duration::from_secs(1) / deny_lines_per_second)),
            invalid_src_log: LogThrottle::new(INVALID_SRC_LOG_INTERVAL),
        }
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
    pub fn decider(&self) -> Decider<'_> {
        Decider {
            agent: self,
            rules: self.in_force.load(),
        }
    }
}

/// Decides requests with one rule set ([`Agent::decider`]).
pub struct Decider<'a> {
    agent: &'a Agent,
    rules: Guard<Arc<InForce>>,
}

impl Decider<'_> {
    /// Decides one request at `now`, then records it: counters, per-rule hits, latency,
    /// traffic insight, the deny log.
    #[inline]
    pub fn decide(&self, request: &Request<'_>, now: Instant) -> Verdict {
        let verdict = self.rules.engine.evaluate(request, now);
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
