//! Live rule updates: noticing that the configuration or a rule file changed, rebuilding
//! the rule set off the request path (keeping the lists and ASN tables whose files did
//! not change, see [`rules::Loaded`](crate::rules::Loaded)), and swapping it in at once.
//!
//! ```text
//!  inotify events ──► FileWatcher ─────────┐
//!  stamp poll (every `poll_secs`): changed? ┴─► quiet for `debounce` ──┐
//!                                               (at most max_settle)   ├─► reload
//!  SIGHUP ─────────────────────────────────────────────────────────────┘      │
//!      reload thread (low priority): read config + every changed file, build Engine
//!                          │ ok                              │ error
//!            ArcSwap::swap, old engine freed off-path     old rules stay; errors logged
//!                                                          with file:line; counter + 1
//! ```
//!
//! One [`Reloader`] task owns all of it, so reloads never overlap: a change noticed
//! during a reload is handled by the next one. Requests in flight finish on the engine
//! they loaded; the old engine is freed on the blocking pool once the last of them lets
//! go, so no request pays for freeing a million-entry list.
//!
//! Settings that only take effect at start ([`Startup`](crate::config::Startup)) are
//! compared on every successful reload; a difference is logged by key, and the rest of
//! the reload is applied.

mod watch;

pub use crate::util::Stamps;
pub use watch::FileWatcher;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::agent::{Agent, InForce, ReloadReport, ReloadRequest};
use crate::config::Config;
use crate::engine::Engine;
use crate::metrics::ReloadResult;
use crate::util::unix_now;

/// Why a reload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// SIGHUP (or a caller): reload even if no file seems to have changed.
    Signal,
    /// A file event, after the debounce.
    Watch,
    /// The stamp poll found a change no event reported.
    Poll,
    /// The admin API (`POST /reload`).
    Admin,
}

impl Cause {
    /// `signal`, `watch` or `poll`, as logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Signal => "signal",
            Cause::Watch => "watch",
            Cause::Poll => "poll",
            Cause::Admin => "admin",
        }
    }
}

/// What one reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new rules are in force. `restart_needed` lists the changed settings that
    /// only a restart applies (`server.listen (a → b)`), already logged.
    Applied {
        /// Changed start-time settings, as `key (old → new)`.
        restart_needed: Vec<String>,
    },
    /// Something failed to load; the previous rules stay in force.
    Failed {
        /// Every error, as logged (`file:line: what is wrong`).
        errors: Vec<String>,
    },
}

/// How long the retired engine may stay referenced before the reloader stops waiting
/// for the last request to release it (it is then freed by that request instead).
const RETIRE_PATIENCE: Duration = Duration::from_secs(30);

/// Owns live updates for one running agent; see the module docs.
#[derive(Debug)]
pub struct Reloader {
    agent: Arc<Agent>,
    /// Settings in force: start-time sections as started, rules as last applied.
    running: Config,
    /// The configuration file and the rule files of the last attempt: what is watched.
    files: Vec<PathBuf>,
    /// Their stamps, taken before the last attempt read them.
    stamps: Stamps,
    /// `None` when watching is off or inotify is unavailable (the poll still runs).
    watcher: Option<FileWatcher>,
    /// A file changed between the first load and the watches being in place.
    changed_at_start: bool,
}

impl Reloader {
    /// A reloader for `agent`, whose rules were loaded from `config`; `stamps` were
    /// taken before those files were read (see [`Stamps::extended_to`]). Starts watching
    /// when `[reload] watch` is on.
    pub fn new(config: Config, stamps: Stamps, agent: Arc<Agent>) -> Reloader {
        let files = config.files();
        let watcher = if config.startup.reload.watch {
            match FileWatcher::new() {
                Ok(mut watcher) => {
                    watcher.watch(&files);
                    Some(watcher)
                }
                Err(err) => {
                    warn!(error = %err, "cannot watch files; changes are found by the stamp poll and SIGHUP");
                    None
                }
            }
        } else {
            None
        };
        // Checked once the watches are in place: anything later is an event.
        let changed_at_start = Stamps::of(&files) != stamps;
        Reloader {
            agent,
            running: config,
            files,
            stamps,
            watcher,
            changed_at_start,
        }
    }

    /// The directories being watched (empty when watching is off).
    pub fn watched_dirs(&self) -> Vec<PathBuf> {
        self.watcher
            .as_ref()
            .map(|w| w.dirs().map(Path::to_path_buf).collect())
            .unwrap_or_default()
    }

    /// Serves reload requests until `shutdown`: file changes (debounced), the stamp
    /// poll, `force` (SIGHUP) which reloads even without a visible change, and
    /// `requests` (the admin API), answered with the attempt's report.
    pub async fn run(
        mut self,
        force: Arc<Notify>,
        mut requests: mpsc::Receiver<ReloadRequest>,
        shutdown: CancellationToken,
    ) {
        let mut poll = self.running.startup.reload.poll().map(|every| {
            let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            poll
        });
        if self.changed_at_start {
            self.reload_if_changed(Cause::Poll).await;
        }
        loop {
            let cause = tokio::select! {
                () = shutdown.cancelled() => return,
                () = force.notified() => Cause::Signal,
                Some(reply) = requests.recv() => {
                    info!("admin request: reloading rules");
                    let outcome = self.reload(Cause::Admin).await;
                    let _ = reply.send(self.report(Cause::Admin, &outcome));
                    continue;
                }
                () = changed(self.watcher.as_ref()) => Cause::Watch,
                () = tick(poll.as_mut()) => {
                    if self.changed_files().await.is_empty() {
                        continue;
                    }
                    Cause::Poll
                }
            };
            // The poll may have caught a file being written, too: wait for quiet.
            let cause = match cause {
                Cause::Signal | Cause::Admin => cause,
                Cause::Watch | Cause::Poll => self.settle(&force, cause).await,
            };
            match cause {
                Cause::Signal | Cause::Admin => {
                    info!("SIGHUP: reloading rules");
                    self.reload(cause).await;
                }
                Cause::Watch | Cause::Poll => {
                    self.reload_if_changed(cause).await;
                }
            }
        }
    }

    /// Waits until no watched file has changed for the debounce time, or at most
    /// [`max_settle`] (a file appended to all the time, say by a tool adding attackers
    /// to a block list, must still be reloaded). A forced reload cuts the wait short.
    async fn settle(&self, force: &Notify, cause: Cause) -> Cause {
        let debounce = self.running.startup.reload.debounce();
        let deadline = tokio::time::Instant::now() + max_settle(debounce);
        loop {
            tokio::select! {
                () = changed(self.watcher.as_ref()) => {}
                () = force.notified() => return Cause::Signal,
                () = tokio::time::sleep(debounce) => return cause,
                () = tokio::time::sleep_until(deadline) => {
                    debug!("files still changing; reloading without waiting for quiet");
                    return cause;
                }
            }
        }
    }

    /// Reloads if any file's stamp differs from the last attempt's.
    ///
    /// Returns `None` when nothing changed (events that change nothing a reload reads,
    /// such as a ConfigMap's old directory being removed).
    pub async fn reload_if_changed(&mut self, cause: Cause) -> Option<Outcome> {
        let changed = self.changed_files().await;
        if changed.is_empty() {
            debug!(cause = cause.as_str(), "no rule file changed");
            return None;
        }
        info!(cause = cause.as_str(), files = %changed.join(", "), "rule files changed: reloading");
        Some(self.reload(cause).await)
    }

    /// The watched files whose stamps differ from the last attempt's, for the log.
    async fn changed_files(&self) -> Vec<String> {
        let files = self.files.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || Stamps::of(&files)).await else {
            return Vec::new();
        };
        now.changed_since(&self.stamps)
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    }

    /// Reloads now: reads the configuration and every rule file on the blocking pool,
    /// and swaps the new rules in if all of it loads. Logs the outcome and counts it.
    pub async fn reload(&mut self, cause: Cause) -> Outcome {
        let outcome = self.attempt(cause).await;
        self.agent.set_last_reload(self.report(cause, &outcome));
        outcome
    }

    /// `outcome` as the admin API reports it.
    fn report(&self, cause: Cause, outcome: &Outcome) -> ReloadReport {
        let (applied, errors, restart_needed) = match outcome {
            Outcome::Applied { restart_needed } => (true, Vec::new(), restart_needed.clone()),
            Outcome::Failed { errors } => (false, errors.clone(), Vec::new()),
        };
        ReloadReport {
            at: unix_now(),
            cause: cause.as_str().to_string(),
            applied,
            errors,
            restart_needed,
        }
    }

    /// [`Reloader::reload`] without recording the report.
    async fn attempt(&mut self, cause: Cause) -> Outcome {
        let started = Instant::now();
        let path = self.running.path.clone();
        let known = self.files.clone();
        let previous = self.agent.engine();
        let attempt = at_low_priority(move || Attempt::run(&path, known, &previous.engine)).await;
        let attempt = match attempt {
            Ok(attempt) => attempt,
            Err(failed) => Attempt {
                files: self.files.clone(),
                stamps: self.stamps.clone(),
                built: Err(vec![failed]),
            },
        };
        self.files = attempt.files;
        self.stamps = attempt.stamps;
        if let Some(watcher) = &mut self.watcher {
            watcher.watch(&self.files);
        }
        let metrics = &self.agent.metrics;
        let (config, engine) = match attempt.built {
            Ok(built) => built,
            Err(errors) => {
                for line in &errors {
                    error!(target: "spoa_guard::reload", "{line}");
                }
                metrics.reloads.of(ReloadResult::Failure).inc();
                metrics.reload_failing.set(1);
                warn!(
                    cause = cause.as_str(),
                    errors = errors.len(),
                    "reload failed; the previous rules stay in force"
                );
                return Outcome::Failed { errors };
            }
        };
        let restart_needed = self.running.restart_changes(&config);
        if !restart_needed.is_empty() {
            warn!(
                settings = %restart_needed.join(", "),
                "these settings only change on restart; the rules are reloaded without them"
            );
        }
        for warning in &config.warnings {
            warn!(target: "spoa_guard::reload", "{warning}");
        }
        let summary = engine.summary();
        retire(self.agent.install(engine));
        self.agent.auto_bans.install(&config.rules.auto_ban);
        self.running.rules = config.rules;
        metrics.reloads.of(ReloadResult::Success).inc();
        metrics.reload_failing.set(0);
        crate::engine::info_with_rule_sizes!(
            summary,
            cause = cause.as_str(),
            ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "rules reloaded"
        );
        Outcome::Applied { restart_needed }
    }
}

/// One attempt at loading everything, on the blocking pool.
struct Attempt {
    /// What the new configuration names (the old set if the configuration is broken).
    files: Vec<PathBuf>,
    /// Their stamps, taken before they were read.
    stamps: Stamps,
    built: Result<(Config, Engine), Vec<String>>,
}

impl Attempt {
    fn run(path: &Path, mut known: Vec<PathBuf>, previous: &Engine) -> Attempt {
        if !known.iter().any(|f| f == path) {
            known.insert(0, path.to_path_buf());
        }
        let stamps = Stamps::of(&known);
        let config = match Config::load(path) {
            Ok(config) => config,
            Err(errors) => {
                return Attempt {
                    files: known,
                    stamps,
                    built: Err(errors.0.iter().map(ToString::to_string).collect()),
                }
            }
        };
        let files = config.files();
        let stamps = stamps.extended_to(&files);
        let built = match Engine::load(&config.rules, &config.path, Some(previous), None) {
            Ok(engine) => Ok((config, engine)),
            Err(errors) => Err(errors.0.iter().map(ToString::to_string).collect()),
        };
        Attempt {
            files,
            stamps,
            built,
        }
    }
}

/// The longest a burst of changes delays a reload: five debounce periods, at least a
/// second.
pub fn max_settle(debounce: Duration) -> Duration {
    (debounce * 5).max(Duration::from_secs(1))
}

/// How much lower than the agent's the CPU priority of the reload builder is, in nice
/// steps. Where the builder and the threads answering requests want the same core, the
/// scheduler lets the request threads run first (a thread at nice +10 weighs about a tenth
/// of one at +0), so a reload does not delay decisions; on an idle core it runs at full
/// speed, and on a saturated one it still progresses (about a tenth of the core) instead
/// of waiting for idle time as `SCHED_IDLE` would.
const BUILDER_NICE_STEPS: i32 = 10;

/// Runs `build` on a thread of its own at [`BUILDER_NICE_STEPS`] below the agent's CPU
/// priority (threads it starts inherit that), and returns its result.
///
/// A thread per reload rather than the blocking pool: a lowered priority cannot be raised
/// again without privileges, and the pool's threads serve other work afterwards.
async fn at_low_priority<T: Send + 'static>(
    build: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            crate::util::lower_thread_priority(BUILDER_NICE_STEPS, "reload");
            // The reloader may have stopped waiting (shutdown): nothing to report then.
            let _ = done.send(build());
        })
        .map_err(|e| format!("cannot start the reload thread: {e}"))?;
    result
        .await
        .map_err(|_| "the reload thread failed before finishing".to_string())
}

/// Frees `old` on the blocking pool once no request holds it any more.
fn retire(old: Arc<InForce>) {
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + RETIRE_PATIENCE;
        let mut old = old;
        loop {
            match Arc::try_unwrap(old) {
                Ok(engine) => return drop(engine),
                Err(still_shared) if Instant::now() < deadline => {
                    old = still_shared;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return,
            }
        }
    });
}

/// Resolves when the watcher reports a change; never without a watcher.
async fn changed(watcher: Option<&FileWatcher>) {
    match watcher {
        Some(watcher) => watcher.changed().await,
        None => std::future::pending().await,
    }
}

/// Resolves at the next poll tick; never without a poll.
async fn tick(poll: Option<&mut tokio::time::Interval>) {
    match poll {
        Some(poll) => {
            poll.tick().await;
        }
        None => std::future::pending().await,
    }
}
