//! The agent's periodic work, off the request path: evicting rate-limit keys whose
//! bucket is full again, folding traffic-insight samples into their windows, freeing
//! expired bans (and turning the dry-run switch off at its expiry), forgetting old
//! auto-ban counts and offences, setting the bans auto-ban rules trigger, and saving the
//! bans
//! to `[bans] state_file` when they change. The periodic ones run on the blocking pool
//! (walking millions of keys or thousands of samples); all stop when the agent shuts
//! down, the state writer after a last save.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Agent;
use crate::util::unix_now_u32;

/// How often idle rate-limit buckets are evicted.
pub const EVICT_INTERVAL: Duration = Duration::from_secs(2);

/// How often traffic-insight samples are folded into the windows.
pub const AGGREGATE_INTERVAL: Duration = Duration::from_secs(1);

impl Agent {
    /// Starts the periodic tasks on `tracker`; they end when `shutdown` is cancelled.
    pub fn spawn_tasks(self: &Arc<Self>, tracker: &TaskTracker, shutdown: &CancellationToken) {
        tracker.spawn(evict_idle_keys(Arc::clone(self), shutdown.clone()));
        tracker.spawn(expire_bans(Arc::clone(self), shutdown.clone()));
        if let Some(queue) = self.auto_bans.take_queue() {
            tracker.spawn(apply_auto_bans(Arc::clone(self), queue, shutdown.clone()));
        }
        if self.controls.settings().state_file.is_some() {
            tracker.spawn(save_bans(Arc::clone(self), shutdown.clone()));
        }
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

/// How often expired bans are freed. A ban stops denying at its second anyway (the
/// lookup compares expiries); this frees the memory and logs the expiry.
pub const EXPIRE_INTERVAL: Duration = Duration::from_secs(1);

/// Least time between two saves of the state file: changes in between are coalesced.
pub const SAVE_INTERVAL: Duration = Duration::from_millis(250);

/// Frees expired bans every [`EXPIRE_INTERVAL`], and says when the dry-run switch has
/// turned itself off.
async fn expire_bans(agent: Arc<Agent>, shutdown: CancellationToken) {
    let switch_was_on = Arc::new(std::sync::atomic::AtomicBool::new(false));
    every(EXPIRE_INTERVAL, shutdown, move || {
        agent.clock.refresh();
        let now = unix_now_u32();
        agent.controls.expire(now, &agent.metrics);
        agent.auto_bans.forget(now);
        for rule in agent.auto_bans.rules().iter() {
            rule.evict(Instant::now());
        }
        let on = agent.controls.dry_run_until(now).is_some();
        if switch_was_on.swap(on, std::sync::atomic::Ordering::Relaxed) && !on {
            tracing::warn!(
                target: "spoa_guard::bans",
                action = "dry-run-expired",
                "global dry-run switch expired: rules enforce again"
            );
        }
    })
    .await;
}

/// Applies the triggers of `[[auto_ban]]` rules as they come.
async fn apply_auto_bans(
    agent: Arc<Agent>,
    mut queue: tokio::sync::mpsc::Receiver<crate::bans::Trigger>,
    shutdown: CancellationToken,
) {
    loop {
        let trigger = tokio::select! {
            () = shutdown.cancelled() => return,
            trigger = queue.recv() => trigger,
        };
        let Some(trigger) = trigger else {
            return;
        };
        agent
            .auto_bans
            .apply(&trigger, unix_now_u32(), &agent.controls, &agent.metrics);
    }
}

/// Saves the bans when they change, at most once per [`SAVE_INTERVAL`], and once more
/// at shutdown. A failed save is logged and retried with the next change (and at the
/// next interval).
async fn save_bans(agent: Arc<Agent>, shutdown: CancellationToken) {
    loop {
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            () = agent.controls.changed.notified() => false,
            () = tokio::time::sleep(Duration::from_secs(5)) => false,
        };
        if agent.controls.take_unsaved() {
            let saver = Arc::clone(&agent);
            let saved = tokio::task::spawn_blocking(move || save_now(&saver)).await;
            if !matches!(saved, Ok(true)) {
                agent.controls.keep_unsaved();
            }
        }
        if stopping {
            return;
        }
        tokio::time::sleep(SAVE_INTERVAL).await;
    }
}

impl Agent {
    /// Writes `[bans] state_file` now (no-op without one); false if it failed (logged).
    /// For a handover: the new agent reads the file right after.
    pub fn save_bans_now(&self) -> bool {
        self.controls.take_unsaved();
        let saved = save_now(self);
        if !saved {
            self.controls.keep_unsaved();
        }
        saved
    }
}

/// Writes the state file now; false if it failed (logged).
fn save_now(agent: &Agent) -> bool {
    let Some(path) = agent.controls.settings().state_file.as_deref() else {
        return true;
    };
    let Some(_writing) = agent.controls.saving() else {
        return true; // a successor's file now
    };
    let now = unix_now_u32();
    let bans = agent.controls.list(now);
    let offences = agent.auto_bans.offences_list();
    match crate::bans::state::save(path, &bans, &offences, now) {
        Ok(()) => {
            tracing::debug!(bans = bans.len(), file = %path.display(), "bans saved");
            true
        }
        Err(err) => {
            tracing::error!(target: "spoa_guard::bans", "{err}; retrying");
            false
        }
    }
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
