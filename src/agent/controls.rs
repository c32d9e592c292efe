//! The runtime state operators and `[[auto_ban]]` rules change without a reload: the
//! bans in force ([`BanStore`] behind a read-write lock) and the global dry-run switch.
//!
//! The request path takes the read lock once per batch of frames ([`super::Decider`]),
//! so a ban set by the admin API or an auto-ban rule takes effect on the next batch.
//! Writers hold the write lock for one change (about a microsecond) or one slice of
//! expiries ([`EXPIRE_SLICE`]). Every change is logged (what, target, reason, duration,
//! by whom) under the `spoa_guard::bans` target and counted, and wakes the state writer
//! (`tasks.rs`), which saves the bans at most a few times a second.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{
    Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

use tokio::sync::{mpsc, Notify};
use tracing::{info, warn};

use crate::bans::{AddError, Added, Ban, BanSettings, BanStore, Target};
use crate::metrics::{BanChange, Metrics};

/// Most expired bans freed under one hold of the write lock (about 1 ms of work).
pub const EXPIRE_SLICE: usize = 1000;

/// Who made a change, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An admin request over the unix socket, from this user id.
    Uid(u32),
    /// An admin request over TCP with the bearer token.
    Token,
    /// An `[[auto_ban]]` rule.
    AutoBan(String),
    /// The state file, at start.
    StateFile,
    /// The agent itself (an expiry).
    Agent,
    /// Another agent of the fleet (its id), or the fleet store on a full read.
    Fleet(String),
}

/// A change to the bans made here, for the other agents of the fleet (`[fleet]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BanEvent {
    /// A ban set or replaced.
    Set(Ban),
    /// A ban lifted before its expiry, at this Unix time in milliseconds.
    Lifted {
        /// The ban lifted.
        ban: Ban,
        /// When, Unix milliseconds.
        at_ms: u64,
    },
}

/// Most changes waiting for the fleet; beyond it they are dropped (logged), and the next
/// full read of the fleet's bans sends this agent's bans again.
pub const FLEET_OUTBOX: usize = 65_536;

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Uid(uid) => write!(f, "uid {uid}"),
            Actor::Token => f.write_str("token"),
            Actor::AutoBan(rule) => write!(f, "auto_ban {rule}"),
            Actor::StateFile => f.write_str("state file"),
            Actor::Agent => f.write_str("agent"),
            Actor::Fleet(agent) => write!(f, "fleet agent {agent}"),
        }
    }
}

/// Bans and the dry-run switch; see the module docs.
#[derive(Debug)]
pub struct Controls {
    bans: RwLock<BanStore>,
    settings: BanSettings,
    /// Unix second at which the global dry-run switch turns itself off; 0: off.
    dry_run_until: AtomicU32,
    /// Set by every change to the bans, cleared by the state writer when it saves.
    unsaved: AtomicBool,
    /// Held while the state file is written: the state writer and a handover's save
    /// never write at once.
    save_lock: Mutex<()>,
    /// Set once the bans are a successor's to save (after a handover).
    saves_stopped: AtomicBool,
    /// Wakes the state writer.
    pub(super) changed: Notify,
    /// Where changes made here go for the fleet, once fleet mode is on.
    fleet: OnceLock<mpsc::Sender<BanEvent>>,
}

impl Controls {
    /// No bans, switch off.
    pub fn new(settings: BanSettings) -> Controls {
        Controls {
            bans: RwLock::new(BanStore::new(settings.max_entries)),
            settings,
            dry_run_until: AtomicU32::new(0),
            unsaved: AtomicBool::new(false),
            save_lock: Mutex::new(()),
            saves_stopped: AtomicBool::new(false),
            changed: Notify::new(),
            fleet: OnceLock::new(),
        }
    }

    /// `[bans]` as started.
    pub fn settings(&self) -> &BanSettings {
        &self.settings
    }

    /// The bans, for reading. A poisoned lock is taken anyway: the store is changed by
    /// whole operations that do not panic half-way on valid indexes.
    #[inline]
    pub fn read(&self) -> RwLockReadGuard<'_, BanStore> {
        self.bans.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BanStore> {
        self.bans.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets `ban`, logged as done `by`, and counts it.
    ///
    /// # Errors
    ///
    /// The store is full, or the ban has already expired; counted as refused.
    pub fn ban(&self, ban: Ban, by: &Actor, metrics: &Metrics) -> Result<Added, AddError> {
        let added = self.write().add(ban.clone());
        match &added {
            Ok(added) => {
                metrics.ban_changes.of(BanChange::Set).inc();
                info!(
                    target: "spoa_guard::bans",
                    action = "ban",
                    target = %ban.target,
                    origin = %ban.origin,
                    reason = %ban.reason,
                    duration_secs = ban.expires_at.saturating_sub(ban.since),
                    replaced = matches!(added, Added::Replaced(_)),
                    by = %by,
                    "ban set"
                );
                self.mark_changed();
                if !matches!(by, Actor::Fleet(_)) {
                    self.to_fleet(BanEvent::Set(ban));
                }
            }
            Err(err) => {
                metrics.ban_changes.of(BanChange::Refused).inc();
                warn!(target: "spoa_guard::bans", target = %ban.target, by = %by, "ban refused: {err}");
            }
        }
        added
    }

    /// Lifts the ban on exactly `target`, logged as done `by`; `None` if there was none
    /// in force.
    pub fn unban(&self, target: &Target, now: u32, by: &Actor, metrics: &Metrics) -> Option<Ban> {
        let removed = self.write().remove(target);
        let ban = removed?;
        self.mark_changed();
        if ban.expires_at <= now {
            // It had expired already: freed, but there was nothing to lift.
            metrics.ban_changes.of(BanChange::Expired).inc();
            return None;
        }
        metrics.ban_changes.of(BanChange::Lifted).inc();
        info!(
            target: "spoa_guard::bans",
            action = "unban",
            target = %ban.target,
            origin = %ban.origin,
            reason = %ban.reason,
            left_secs = ban.expires_at.saturating_sub(now),
            by = %by,
            "ban lifted"
        );
        if !matches!(by, Actor::Fleet(_)) {
            self.to_fleet(BanEvent::Lifted {
                ban: ban.clone(),
                at_ms: crate::util::unix_now_millis(),
            });
        }
        Some(ban)
    }

    /// Sends the changes made here from now on to `outbox` (fleet mode); once.
    pub fn connect_fleet(&self, outbox: mpsc::Sender<BanEvent>) {
        let _ = self.fleet.set(outbox);
    }

    /// Queues `event` for the fleet, if fleet mode is on.
    fn to_fleet(&self, event: BanEvent) {
        if let Some(outbox) = self.fleet.get() {
            if outbox.try_send(event).is_err() {
                warn!(
                    target: "spoa_guard::fleet",
                    "too many ban changes waiting for the fleet store; this one goes with the next full exchange"
                );
            }
        }
    }

    /// The ban on exactly `target`, if any (expired or not).
    pub fn get(&self, target: &Target) -> Option<Ban> {
        self.read().get(target)
    }

    /// Puts saved bans back at start (one log line for all of them, by the caller);
    /// returns how many the store refused (full, or expired meanwhile).
    pub fn restore(&self, bans: Vec<Ban>) -> usize {
        let mut store = self.write();
        bans.into_iter()
            .filter(|b| store.add(b.clone()).is_err())
            .count()
    }

    /// The bans in force at `now`, in target order.
    pub fn list(&self, now: u32) -> Vec<Ban> {
        let mut bans: Vec<Ban> = self
            .read()
            .list()
            .into_iter()
            .filter(|b| b.expires_at > now)
            .collect();
        bans.sort_by_key(|b| b.target);
        bans
    }

    /// Frees the bans expired at `now`, a slice at a time; logs and counts each.
    pub fn expire(&self, now: u32, metrics: &Metrics) {
        loop {
            let expired = self.write().expire(now, EXPIRE_SLICE);
            for ban in &expired {
                info!(
                    target: "spoa_guard::bans",
                    action = "expire",
                    target = %ban.target,
                    origin = %ban.origin,
                    reason = %ban.reason,
                    "ban expired"
                );
            }
            metrics
                .ban_changes
                .of(BanChange::Expired)
                .add(expired.len() as u64);
            if !expired.is_empty() {
                self.mark_changed();
            }
            if expired.len() < EXPIRE_SLICE {
                return;
            }
        }
    }

    /// Turns the global dry-run switch on until `until` (Unix seconds), or off (`None`).
    pub fn set_dry_run(&self, until: Option<u32>, now: u32, by: &Actor) {
        let was = self.dry_run_until(now);
        self.dry_run_until
            .store(until.unwrap_or(0), Ordering::Relaxed);
        match until {
            Some(until) => warn!(
                target: "spoa_guard::bans",
                action = "dry-run-on",
                for_secs = until.saturating_sub(now),
                by = %by,
                "global dry-run switch on: no rule and no ban denies until it is turned off or expires"
            ),
            None if was.is_some() => info!(
                target: "spoa_guard::bans",
                action = "dry-run-off",
                by = %by,
                "global dry-run switch off: rules enforce again"
            ),
            None => {}
        }
    }

    /// When the global dry-run switch turns off, if it is on at `now`.
    #[inline]
    pub fn dry_run_until(&self, now: u32) -> Option<u32> {
        let until = self.dry_run_until.load(Ordering::Relaxed);
        (until > now).then_some(until)
    }

    /// Notes a change for the state writer.
    fn mark_changed(&self) {
        self.unsaved.store(true, Ordering::Release);
        self.changed.notify_one();
    }

    /// Whether bans changed since the last [`Controls::take_unsaved`], clearing it.
    pub(super) fn take_unsaved(&self) -> bool {
        self.unsaved.swap(false, Ordering::AcqRel)
    }

    /// The right to write the state file now, one writer at a time; `None` once a
    /// successor has taken over (its file now, which this agent must not overwrite).
    pub(super) fn saving(&self) -> Option<MutexGuard<'_, ()>> {
        let guard = self
            .save_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (!self.saves_stopped.load(Ordering::Acquire)).then_some(guard)
    }

    /// Stops this agent from writing the state file again: a successor took over.
    pub fn stop_saving(&self) {
        let _writing = self
            .save_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.saves_stopped.store(true, Ordering::Release);
    }

    /// Marks the bans unsaved again after a failed save.
    pub(super) fn keep_unsaved(&self) {
        self.unsaved.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_handover_this_agent_writes_the_state_file_no_more() {
        let controls = Controls::new(BanSettings::default());
        assert!(controls.saving().is_some());
        controls.stop_saving();
        assert!(controls.saving().is_none());
    }

    #[test]
    fn the_dry_run_switch_turns_itself_off_at_its_second() {
        let controls = Controls::new(BanSettings::default());
        controls.set_dry_run(Some(1_000), 900, &Actor::Token);
        assert_eq!(controls.dry_run_until(999), Some(1_000));
        assert_eq!(controls.dry_run_until(1_000), None);
        controls.set_dry_run(None, 950, &Actor::Uid(0));
        assert_eq!(controls.dry_run_until(951), None);
    }
}
