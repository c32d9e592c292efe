//! Fleet mode: many agents, one set of limits and bans, shared through Redis or Valkey
//! (`[fleet]`), with no network I/O on the request path.
//!
//! ```text
//!  request path (memory only)          background tasks of this module        Redis / Valkey
//!  ─────────────────────────           ────────────────────────────────        ──────────────
//!  fleet limit take ── counts ───────► sync loop, every sync_interval: ──────► FOLD script, agents,
//!                   ◄─ fleet view ───  one pipelined round trip           ◄──── bans version
//!  first denial ───── mark ──────────► writer: PUBLISH marks ────────────────► channel
//!  admin/auto ban ─── BanEvent ──────► writer: BAN script (record+publish) ──► bans hash
//!  ban store ◄─────── apply/lift ────  events: SUBSCRIBE ◄───────────────────── channel
//!            ◄─────── full read ─────  sync loop on start, reconnect, gap ◄─── HGETALL bans
//! ```
//!
//! - **Limits** (`limits::fleet` holds the request-path half): each agent decides from
//!   memory; the sync loop sends the tokens taken per key since the last exchange
//!   (heaviest keys first, at most `max_keys_per_sync`) and folds the fleet's answer back.
//!   The first denial of a key is published at once as a mark, so that the other agents
//!   deny it too without waiting for an exchange.
//! - **Bans**: a ban or lift made here (admin API, auto-ban) is written to the store and
//!   published in one script; the other agents apply it on receipt (milliseconds). The
//!   bans carry a version: a gap in the versions received, a version read that runs ahead
//!   twice, a reconnect, or five minutes pass — and the agent reads all records and
//!   reconciles (`records.rs`: the later record wins; bans the store lacks are sent back,
//!   so a store restarted empty is refilled from the agents).
//! - **Failure** (`health.rs`): no request waits on the store, ever — only these tasks
//!   talk to it, each exchange under a deadline. Failed exchanges open a circuit breaker
//!   that retries with back-off (0.5 s doubling to 4 s); when the last success is older than three intervals the
//!   agent is *degraded*: fleet limits enforce its share (rate and burst divided by the
//!   agents last seen alive), bans already received stay in force, a gauge and a
//!   rate-limited log line say so. The next success ends it.
//!
//! The store layout, the scripts and why they are scripts: `store.rs`.

mod events;
mod health;
mod records;
mod settings;
mod store;
mod sync;

pub use health::{Breaker, Change, Health, FAILURES_TO_OPEN};
pub use records::{decide, reconcile, Message, Record, Step};
pub use settings::{read_secret, FleetSettings};
pub use store::Names;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::IntoConnectionInfo;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{Agent, FLEET_OUTBOX};
use crate::limits::{FleetLink, FleetSeed, Mark};
use crate::metrics::FleetError;

/// Most marks waiting to be published; beyond it the request path drops them.
pub const MARK_QUEUE: usize = 16_384;

/// How long connecting to the store may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The circuit breaker's back-off, shortest and longest: one attempt per agent every few
/// seconds at most does not hammer a struggling store, and a store back is used again
/// within seconds.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(4));

/// A full read of the bans at least this often, whatever the versions say.
const FULL_READ_EVERY: Duration = Duration::from_secs(300);

/// Why fleet mode could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FleetSetupError {
    /// A password or secret file.
    #[error("[fleet] {0}")]
    File(String),
    /// The URL.
    #[error("[fleet] redis: {0}")]
    Url(String),
    /// The fleet's thread.
    #[error("[fleet] cannot start its thread: {0}")]
    Thread(String),
}

/// The fleet's key hash, for building the engine: reads `secret_file`.
///
/// # Errors
///
/// An unreadable or empty secret file.
pub fn seed(settings: &FleetSettings) -> Result<FleetSeed, FleetSetupError> {
    let secret = match &settings.secret_file {
        Some(path) => read_secret(path).map_err(FleetSetupError::File)?,
        None => String::new(),
    };
    Ok(FleetSeed::derive(&settings.name, secret.as_bytes()))
}

/// The link of fleet limits built where no store is reached (`check`, `eval`): the same
/// key hash, no marks.
///
/// # Errors
///
/// An unreadable or empty secret file.
pub fn offline_link(settings: &FleetSettings) -> Result<FleetLink, FleetSetupError> {
    Ok(FleetLink {
        seed: seed(settings)?,
        marks: None,
    })
}

/// Fleet mode, set up but not started: the link the engine's fleet limits are built
/// with, and what the background tasks need.
pub struct Fleet {
    settings: FleetSettings,
    client: redis::Client,
    id: String,
    link: FleetLink,
    marks: mpsc::Receiver<Mark>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("name", &self.settings.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Reads the password and secret files and makes the client; no I/O to the store.
    ///
    /// # Errors
    ///
    /// An unreadable file, an unusable URL.
    pub fn new(settings: &FleetSettings) -> Result<Fleet, FleetSetupError> {
        let mut info = settings
            .redis
            .as_str()
            .into_connection_info()
            .map_err(|e| FleetSetupError::Url(e.to_string()))?;
        if let Some(path) = &settings.password_file {
            let password = read_secret(path).map_err(FleetSetupError::File)?;
            let redis = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(redis);
        }
        let client = redis::Client::open(info).map_err(|e| FleetSetupError::Url(e.to_string()))?;
        let (marks_tx, marks) = mpsc::channel(MARK_QUEUE);
        Ok(Fleet {
            settings: settings.clone(),
            client,
            id: agent_id(),
            link: FleetLink {
                seed: seed(settings)?,
                marks: Some(marks_tx),
            },
            marks,
        })
    }

    /// What fleet limits are built with.
    pub fn link(&self) -> &FleetLink {
        &self.link
    }

    /// This agent's id in the fleet (`host:pid:random`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Starts the background tasks on a thread of their own (`fleet`, with its own
    /// single-threaded runtime: the exchanges' bursts of work — collecting, encoding and
    /// folding thousands of keys — never hold up the runtime that answers HAProxy), kept
    /// open in `tracker` until they end with `shutdown`; then waits until the fleet's bans
    /// are in `agent`'s store, or `startup_wait` has passed (then the agent serves with
    /// the bans it has and catches up when the store answers).
    ///
    /// # Errors
    ///
    /// The thread or its runtime could not be made.
    pub async fn start(
        self,
        agent: Arc<Agent>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<(), FleetSetupError> {
        let (outbox_tx, outbox) = mpsc::channel(FLEET_OUTBOX);
        let (ready_tx, mut ready) = watch::channel(false);
        let interval = self.settings.interval();
        let wait = self.settings.startup_wait();
        let redis = redacted(&self.settings.redis);
        let shared = Arc::new(Shared {
            names: Names::new(&self.settings.name),
            id: self.id,
            client: self.client,
            conn: tokio::sync::Mutex::new(None),
            breaker: Mutex::new(Breaker::new(BACKOFF.0, BACKOFF.1)),
            health: Mutex::new(Health::new(stale_after(interval), Instant::now())),
            bans: Mutex::new(BanSync::default()),
            settings: self.settings,
            agent: agent.clone(),
            degraded_log: crate::util::LogThrottle::new(Duration::from_secs(60)),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| FleetSetupError::Thread(e.to_string()))?;
        let (marks, shutdown, open) = (self.marks, shutdown.clone(), tracker.token());
        std::thread::Builder::new()
            .name("fleet".into())
            .spawn(move || {
                // An exchange is a burst of a few milliseconds (collecting, encoding and
                // folding thousands of keys): in SCHED_IDLE a serving thread that wakes on
                // the same core runs first (`benches/scripts/fleet.sh`, BENCHMARKS.md).
                crate::util::idle_thread_priority("fleet");
                runtime.block_on(async move {
                    let tasks = TaskTracker::new();
                    tasks.spawn(sync::run(shared.clone(), ready_tx, shutdown.clone()));
                    tasks.spawn(events::listen(shared.clone(), shutdown.clone()));
                    tasks.spawn(events::write_loop(shared, outbox, marks, shutdown));
                    tasks.close();
                    tasks.wait().await;
                });
                drop(open);
            })
            .map_err(|e| FleetSetupError::Thread(e.to_string()))?;
        agent.controls.connect_fleet(outbox_tx);
        let got = tokio::time::timeout(wait, ready.wait_for(|ready| *ready)).await;
        if got.is_err() {
            tracing::warn!(
                target: "spoa_guard::fleet",
                redis = %redis,
                waited_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "the fleet store did not answer in time: serving with the bans held here; fleet limits enforce this agent's share until it does"
            );
        }
        Ok(())
    }
}

/// What the fleet's tasks share.
struct Shared {
    settings: FleetSettings,
    names: Names,
    id: String,
    client: redis::Client,
    /// The connection for commands, made on first use and kept (it reconnects itself).
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    breaker: Mutex<Breaker>,
    health: Mutex<Health>,
    bans: Mutex<BanSync>,
    agent: Arc<Agent>,
    /// Paces "still degraded" lines.
    degraded_log: crate::util::LogThrottle,
}

/// Where this agent stands with the fleet's bans.
#[derive(Debug, Default)]
struct BanSync {
    /// The version of the last full read, advanced by the events received in order.
    known: Option<u64>,
    /// A version read that ran ahead of `known` once (a second time means a missed event).
    ahead_once: Option<u64>,
    /// A full read is due (start, reconnect, gap).
    due: bool,
    /// When the last full read was.
    last_full: Option<Instant>,
}

impl BanSync {
    /// Notes the version read at an exchange; true if a full read is due.
    fn read(&mut self, version: u64, now: Instant) -> bool {
        if self
            .last_full
            .is_none_or(|at| now.saturating_duration_since(at) >= FULL_READ_EVERY)
        {
            self.due = true;
        }
        match self.known {
            None => self.due = true,
            Some(known) if version < known => self.due = true,
            Some(known) if version == known => self.ahead_once = None,
            Some(_) if self.ahead_once == Some(version) => self.due = true,
            Some(_) => self.ahead_once = Some(version),
        }
        self.due
    }

    /// Notes an event of version `v`; true if it shows a gap (a full read is due).
    fn event(&mut self, v: u64) -> bool {
        match self.known {
            Some(known) if v == known + 1 => {
                self.known = Some(v);
                self.ahead_once = None;
            }
            Some(known) if v > known + 1 => self.due = true,
            _ => {}
        }
        self.due
    }

    /// A full read at `now` saw version `version`.
    fn full(&mut self, version: u64, now: Instant) {
        self.known = Some(version);
        self.ahead_once = None;
        self.due = false;
        self.last_full = Some(now);
    }
}

impl Shared {
    fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The command connection, connecting first if there is none.
    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let mut conn = self.conn.lock().await;
        if let Some(manager) = conn.as_ref() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.deadline()))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let manager = self
            .client
            .get_connection_manager_with_config(config)
            .await?;
        tracing::info!(target: "spoa_guard::fleet", redis = %redacted(&self.settings.redis), id = %self.id, "connected to the fleet store");
        *conn = Some(manager.clone());
        Ok(manager)
    }

    /// How long one exchange may take: twice the interval, within 100 ms to 2 s.
    fn deadline(&self) -> Duration {
        (self.settings.interval() * 2).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// Whether the breaker lets an attempt through now.
    fn may_try(&self) -> bool {
        Shared::lock(&self.breaker).allows(Instant::now())
    }

    /// Counts a failed attempt and feeds the breaker. After a timeout or a broken
    /// connection the connection is dropped: the next attempt connects afresh (and so
    /// succeeds as soon as the store is back) rather than waiting on the connection
    /// manager's own reconnection.
    async fn failed(&self, kind: FleetError, what: &str, error: &(dyn std::fmt::Display + Sync)) {
        if matches!(kind, FleetError::Timeout | FleetError::Connection) {
            self.conn.lock().await.take();
        }
        self.agent.metrics.fleet.errors.of(kind).inc();
        let opened = Shared::lock(&self.breaker).failure(Instant::now());
        if let Some(wait) = opened {
            if self.degraded_log.check(Instant::now()).is_some() {
                tracing::warn!(
                    target: "spoa_guard::fleet",
                    redis = %redacted(&self.settings.redis),
                    kind = kind_label(kind),
                    retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "fleet store {what} failed: {error}"
                );
            }
        } else {
            tracing::debug!(target: "spoa_guard::fleet", "fleet store {what} failed: {error}");
        }
    }
}

/// When the last success is too old: three intervals, at least one second.
fn stale_after(interval: Duration) -> Duration {
    (interval * 3).max(Duration::from_secs(1))
}

/// How long an agent counts as alive after its last exchange: eight intervals, at least
/// two seconds.
fn alive_for(interval: Duration) -> Duration {
    (interval * 8).max(Duration::from_secs(2))
}

/// The kind of a store error, for the errors counter.
fn classify(error: &redis::RedisError) -> FleetError {
    if error.is_timeout() {
        FleetError::Timeout
    } else if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal()
    {
        FleetError::Connection
    } else {
        let kind = format!("{:?}", error.kind());
        if kind.contains("Type") || kind.contains("Parse") {
            FleetError::Protocol
        } else {
            FleetError::Refused
        }
    }
}

fn kind_label(kind: FleetError) -> &'static str {
    crate::metrics::Label::label(kind)
}

/// The URL without its password, for logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// This agent's id: host name, process id and a random part (a restarted agent is a new
/// agent).
fn agent_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "agent".into());
    let random = RandomState::new().hash_one(std::process::id()) & 0xffff;
    format!("{host}:{}:{random:04x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("redis://:s3cret@10.0.0.9:6379/0"),
            "redis://***@10.0.0.9:6379/0"
        );
        assert_eq!(redacted("redis://10.0.0.9"), "redis://10.0.0.9");
    }

    #[test]
    fn missed_ban_events_are_noticed() {
        let now = Instant::now();
        let mut sync = BanSync::default();
        assert!(sync.read(5, now), "nothing read yet");
        sync.full(5, now);
        assert!(!sync.read(5, now));
        assert!(!sync.event(6));
        assert!(!sync.read(6, now));
        // A version ahead once may be an event in flight; twice, it was missed.
        assert!(!sync.read(7, now));
        assert!(sync.read(7, now));
        sync.full(7, now);
        assert!(sync.event(9), "a gap");
        sync.full(9, now);
        assert!(sync.read(0, now), "the store lost its bans");
        sync.full(0, now);
        assert!(
            sync.read(0, now + FULL_READ_EVERY),
            "and every five minutes"
        );
    }
}
