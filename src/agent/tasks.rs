//! The agent's periodic work, off the request path: evicting rate-limit keys whose
//! bucket is full again, and folding traffic-insight samples into their windows. Both
//! run on the blocking pool (walking millions of keys or thousands of samples) and stop
//! when the agent shuts down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Agent;

/// How often idle rate-limit buckets are evicted.
pub const EVICT_INTERVAL: Duration = Duration::from_secs(2);

/// How often traffic-insight samples are folded into the windows.
pub const AGGREGATE_INTERVAL: Duration = Duration::from_secs(1);

impl Agent {
    /// Starts the periodic tasks on `tracker`; they end when `shutdown` is cancelled.
    pub fn spawn_tasks(self: &Arc<Self>, tracker: &TaskTracker, shutdown: &CancellationToken) {
        tracker.spawn(evict_idle_keys(Arc::clone(self), shutdown.clone()));
        if self.insight.is_some() {
            tracker.spawn(aggregate_insight(Arc::clone(self), shutdown.clone()));
        }
    }
}

/// Calls `work` on the blocking pool every `every` until `shutdown`.
async fn every(
    every: Duration,
    shutdown: CancellationToken,
    work: impl Fn() + Clone + Send + 'static,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let _ = tokio::task::spawn_blocking(work.clone()).await;
    }
}

/// Evicts idle rate-limit keys every [`EVICT_INTERVAL`], so memory follows the active
/// clients rather than every client ever seen.
async fn evict_idle_keys(agent: Arc<Agent>, shutdown: CancellationToken) {
    every(EVICT_INTERVAL, shutdown, move || {
        let rules = agent.engine();
        let limits = rules.engine.limits();
        let before = limits.key_count();
        limits.retain_recent(Instant::now());
        let after = limits.key_count();
        if before > 0 {
            tracing::debug!(
                evicted = before - after.min(before),
                tracked = after,
                "rate-limit keys"
            );
        }
    })
    .await;
}

/// Folds traffic-insight samples into their windows every [`AGGREGATE_INTERVAL`].
async fn aggregate_insight(agent: Arc<Agent>, shutdown: CancellationToken) {
    every(AGGREGATE_INTERVAL, shutdown, move || {
        if let Some(insight) = agent.insight() {
            insight.aggregate(Instant::now());
        }
    })
    .await;
}
