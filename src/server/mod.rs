//! The network side: listeners, the accept loop, and graceful shutdown. One task per
//! connection ([`serve_stream`]) runs the SPOP session.
//!
//! Resource bounds: a semaphore caps open connections (the rest wait in the listen
//! backlog, which is large because HAProxy 3.x opens about one connection per concurrent
//! request), the codec caps frame size, and every connection has an idle timeout.
//!
//! Shutdown: cancelling the token stops the accept loop at once; every connection answers
//! the frames it has already received, sends AGENT-DISCONNECT status 0 and closes; [`run`]
//! returns when all are done or when the deadline passes.

mod conn;

pub use conn::serve_stream;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::FutureExt;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Listen, ServerConfig};
use crate::engine::Engine;
use crate::insight::{Insight, InsightConfig};
use crate::metrics::Metrics;
use crate::throttle::LogThrottle;

/// State shared by every connection task.
pub struct Shared {
    /// The rules in force; a reload swaps in a new engine, in-flight requests finish on
    /// the one they loaded.
    pub engine: ArcSwap<Engine>,
    /// Counters.
    pub metrics: Metrics,
    /// Per-connection settings from `[server]`.
    pub settings: ConnSettings,
    /// Keeps the "bad src" warning to one line per interval.
    invalid_src_log: LogThrottle,
    /// Paces deny log lines; `None`: denies are not logged.
    pub deny_log: Option<LogThrottle>,
    /// Heavy hitters for `/top`; `None` only if its settings were invalid (never with
    /// the defaults or a validated config).
    pub insight: Option<Insight>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("engine", &self.engine)
            .field("metrics", &self.metrics)
            .field("settings", &self.settings)
            .field("insight", &self.insight.is_some())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Shared state for a server with these settings, starting with `engine`.
    pub fn new(engine: Engine, config: &ServerConfig) -> Self {
        let metrics = Metrics::default();
        Metrics::set(
            &metrics.rules_loaded_unix_seconds,
            crate::reload::unix_now(),
        );
        Self {
            engine: ArcSwap::from_pointee(engine),
            metrics,
            settings: ConnSettings {
                max_frame_size: config.max_frame_size,
                idle_timeout: config.idle_timeout,
                message: Bytes::from(config.message.clone().into_bytes()),
            },
            invalid_src_log: LogThrottle::new(Duration::from_secs(10)),
            deny_log: None,
            insight: Insight::new(&InsightConfig::default(), Instant::now()).ok(),
        }
    }

    /// Uses `config` for traffic insight.
    ///
    /// # Errors
    ///
    /// Invalid settings (a validated [`crate::config::Config`] has none).
    pub fn with_insight(mut self, config: &InsightConfig) -> Result<Self, String> {
        self.insight = Some(Insight::new(config, Instant::now())?);
        Ok(self)
    }

    /// Logs at most `per_second` denied requests a second (0: none).
    #[must_use]
    pub fn with_deny_log(mut self, per_second: u32) -> Self {
        self.deny_log =
            (per_second > 0).then(|| LogThrottle::new(Duration::from_secs(1) / per_second));
        self
    }
}

/// What each connection needs to know from `[server]`.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// The agent's max-frame-size; the negotiated one is never larger.
    pub max_frame_size: u32,
    /// Close a connection with no frame for this long.
    pub idle_timeout: Duration,
    /// Name of the SPOE message to evaluate.
    pub message: Bytes,
}

/// A bound listening socket.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix socket, with its path (removed when the listener is dropped).
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `listen` with the given backlog.
    ///
    /// A stale unix socket file (nobody accepting on it) is removed first; a live one is
    /// an error, so two agents never steal each other's socket.
    ///
    /// # Errors
    ///
    /// Address in use, permission denied, and other socket errors.
    pub fn bind(listen: &Listen, backlog: u32) -> io::Result<Listener> {
        let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
        match listen {
            Listen::Tcp(addr) => {
                let socket = Socket::new(
                    Domain::for_address(*addr),
                    Type::STREAM,
                    Some(Protocol::TCP),
                )?;
                socket.set_reuse_address(true)?;
                socket.bind(&(*addr).into())?;
                socket.listen(backlog)?;
                socket.set_nonblocking(true)?;
                Ok(Listener::Tcp(TcpListener::from_std(socket.into())?))
            }
            Listen::Unix(path) => {
                remove_stale_socket(path)?;
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
                socket.bind(&SockAddr::unix(path)?)?;
                socket.listen(backlog)?;
                socket.set_nonblocking(true)?;
                let std_listener: std::os::unix::net::UnixListener = socket.into();
                Ok(Listener::Unix(
                    UnixListener::from_std(std_listener)?,
                    path.clone(),
                ))
            }
        }
    }

    /// The TCP address actually bound (useful with port 0), if TCP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().ok(),
            Self::Unix(..) => None,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Self::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn remove_stale_socket(path: &Path) -> io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a running process", path.display()),
        )),
        Err(_) => std::fs::remove_file(path),
    }
}

/// How often idle rate-limit buckets are evicted.
pub const EVICT_INTERVAL: Duration = Duration::from_secs(2);

/// Evicts idle rate-limit keys every [`EVICT_INTERVAL`] until `shutdown`, so memory
/// follows the active clients rather than every client ever seen.
async fn evict_idle_keys(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EVICT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let engine = shared.engine.load_full();
        // Walking the maps takes a while with millions of keys: off the async workers.
        let counts = tokio::task::spawn_blocking(move || {
            let limits = engine.limits();
            let before = limits.key_count();
            limits.retain_recent(Instant::now());
            (before, limits.key_count())
        })
        .await;
        if let Ok((before, after)) = counts {
            if before > 0 {
                tracing::debug!(
                    evicted = before - after.min(before),
                    tracked = after,
                    "rate-limit keys"
                );
            }
        }
    }
}

/// How often traffic-insight samples are folded into the windows.
pub const AGGREGATE_INTERVAL: Duration = Duration::from_secs(1);

/// Folds traffic-insight samples into their windows every [`AGGREGATE_INTERVAL`], off
/// the request path, until `shutdown`.
async fn aggregate_insight(shared: Arc<Shared>, shutdown: CancellationToken) {
    if shared.insight.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(AGGREGATE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let shared = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(insight) = &shared.insight {
                insight.aggregate(Instant::now());
            }
        })
        .await;
    }
}

/// Serves connections from `listener` until `shutdown` is cancelled, then drains open
/// connections for at most `grace`.
pub async fn run(
    listener: Listener,
    shared: Arc<Shared>,
    max_connections: usize,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(max_connections));
    let evictor = tokio::spawn(evict_idle_keys(shared.clone(), shutdown.clone()));
    let aggregator = tokio::spawn(aggregate_insight(shared.clone(), shutdown.clone()));
    loop {
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = accept(&listener) => accepted,
        };
        let session = match accepted {
            Ok(Accepted::Tcp(stream, peer)) => {
                let _ = stream.set_nodelay(true);
                serve_stream(stream, peer.to_string(), shared.clone(), shutdown.clone()).boxed()
            }
            Ok(Accepted::Unix(stream)) => {
                serve_stream(stream, "unix".into(), shared.clone(), shutdown.clone()).boxed()
            }
            Err(err) => {
                // EMFILE and friends: back off briefly, never give up.
                warn!(error = %err, "accept failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        tracker.spawn(async move {
            session.await;
            drop(permit);
        });
    }
    drop(listener);
    evictor.abort();
    aggregator.abort();
    tracker.close();
    let open = tracker.len();
    if open > 0 {
        info!(
            connections = open,
            grace_secs = grace.as_secs_f64(),
            "stopped accepting; draining connections"
        );
    }
    let started = Instant::now();
    match tokio::time::timeout(grace, tracker.wait()).await {
        Ok(()) => info!(
            elapsed_secs = started.elapsed().as_secs_f64(),
            "all connections closed"
        ),
        Err(_) => warn!(
            connections = tracker.len(),
            "shutdown deadline reached; closing remaining connections"
        ),
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, peer)| Accepted::Tcp(s, peer)),
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}
