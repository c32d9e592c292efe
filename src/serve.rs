//! The composition root: the one place that puts a running agent together. `main`, the
//! integration tests, the benchmarks and the load generator all start an agent with
//! [`start`] (or [`start_file`]), so they run exactly what production runs.
//!
//! ```text
//!  Config ──► Engine::load (blocking pool) ──► Agent ──┬─► server::run   (SPOP listener)
//!                                                      ├─► ops::http::serve (metrics, health, top)
//!                                                      ├─► ops::http::serve (admin: bans, reload, dry run)
//!                                                      ├─► Reloader::run  (watch, rebuild, swap)
//!                                                      ├─► Agent::spawn_tasks (eviction, insight)
//!                                                      └─► Fleet::start (sync, channel; [fleet] only)
//! ```
//!
//! [`start`] returns a [`Running`] agent: its addresses, its state, and the handles to
//! reload it or stop it. Signals are `main`'s business ([`run`]): SIGTERM/SIGINT drain
//! and stop, SIGHUP reloads, SIGUSR2 starts a successor that takes the listeners over
//! (`process.rs`, which also tells systemd when the agent is ready).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::agent::{Agent, AgentSettings};
use crate::config::{Config, ConfigErrors, LogFormat, LogSettings};
use crate::engine::Engine;
use crate::fleet::{Fleet, FleetSetupError};
use crate::handover;
use crate::insight::InvalidInsight;
use crate::ops::{self, Admin, AdminSettings, Endpoints};
use crate::reload::{Reloader, Stamps};
use crate::rules::LoadErrors;
use crate::server::{self, Service};
use crate::util::listener::SocketAccess;
use crate::util::{unix_now_u32, Listen, Listener};

mod process;
mod sockets;

use sockets::Sockets;

/// Why an agent did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// `[fleet]` cannot be set up (a password or secret file).
    #[error("{0}")]
    Fleet(#[from] FleetSetupError),
    /// A rule file is invalid.
    #[error("{} error(s) in rule files; not starting", .0 .0.len())]
    Rules(LoadErrors),
    /// A listener could not be bound.
    #[error("cannot listen on {listen} ({what}): {source}")]
    Bind {
        /// Which listener (`server.listen`, `metrics.listen`).
        what: &'static str,
        /// The address.
        listen: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The admin listener cannot be set up as configured (token file, socket group).
    #[error("[admin]: {0}")]
    Admin(String),
    /// The traffic-insight settings are invalid.
    #[error(transparent)]
    Insight(#[from] InvalidInsight),
    /// The runtime could not start.
    #[error("{0}")]
    Runtime(String),
}

/// A running agent; see the module docs.
#[derive(Debug)]
pub struct Running {
    agent: Arc<Agent>,
    spop_addr: Option<SocketAddr>,
    ops_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    /// Stops the operations listener, which outlives the SPOP side so that `/readyz`
    /// says 503 while connections drain.
    ops_stop: CancellationToken,
    reload: Arc<Notify>,
    tasks: TaskTracker,
    server: JoinHandle<()>,
}

impl Running {
    /// The agent's state: rules in force, metrics, insight.
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    /// The SPOP listener's TCP address (useful with port 0); `None` on a unix socket.
    pub fn spop_addr(&self) -> Option<SocketAddr> {
        self.spop_addr
    }

    /// The operations listener's address, when `[metrics] listen` is set.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops_addr
    }

    /// The admin listener's address, when `[admin] listen` is a TCP address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The token whose cancellation starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Reloads the rules now, as SIGHUP does.
    pub fn reload(&self) {
        self.reload.notify_one();
    }

    /// The handle SIGHUP notifies to reload.
    pub fn reload_handle(&self) -> Arc<Notify> {
        self.reload.clone()
    }

    /// Waits until the SPOP side has stopped (after [`Running::shutdown_token`] is
    /// cancelled and connections drained, or the deadline passed), then stops the rest.
    pub async fn stopped(self) {
        let _ = self.server.await;
        self.shutdown.cancel();
        self.ops_stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Starts a graceful shutdown and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.stopped().await;
    }
}

/// Starts an agent for `config`: loads the rules (on the blocking pool), binds the
/// listeners, and spawns the server, the operations listener, the reloader and the
/// periodic tasks on the current runtime.
///
/// # Errors
///
/// Invalid rule files, a listener that cannot be bound, invalid insight settings.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let stamps = Stamps::of(&config.files());
    start_stamped(config, stamps).await
}

/// Reads the configuration at `path` and starts it like [`start`]; the files' stamps
/// are taken before they are read, so that a change during the start is reloaded.
///
/// # Errors
///
/// As [`start`], plus an invalid configuration.
pub async fn start_file(path: &Path) -> Result<Running, StartError> {
    let stamps = Stamps::of(&[path]);
    let config = Config::load(path)?;
    let stamps = stamps.extended_to(&config.files());
    start_stamped(config, stamps).await
}

async fn start_stamped(config: Config, stamps: Stamps) -> Result<Running, StartError> {
    let fleet = config.startup.fleet.as_ref().map(Fleet::new).transpose()?;
    let engine = load_rules(&config, fleet.as_ref())?;
    crate::engine::info_with_rule_sizes!(engine.summary(), "rules loaded");
    // After the rules are loaded, so that the old agent serves until this one can.
    let mut sockets = Sockets::new(&config.path).await;
    let server_settings = &config.startup.server;
    let backlog = server_settings.backlog();
    let listener = sockets.listen("server.listen", &server_settings.listen, || {
        Listener::bind(&server_settings.listen, backlog)
    })?;
    let spop_addr = listener.local_addr();
    let settings = AgentSettings {
        deny_lines_per_second: config.startup.log.deny_lines_per_second,
        insight: Some(config.startup.insight.clone()),
        bans: config.startup.bans.clone(),
    };
    let agent = Arc::new(Agent::new(engine, &settings)?);
    agent.auto_bans.install(&config.rules.auto_ban);
    // After a takeover, the old agent has saved its bans for this one to read.
    restore_bans(&agent);
    let (shutdown, ops_stop) = (CancellationToken::new(), CancellationToken::new());
    let tasks = TaskTracker::new();
    let (reload_requests, reload_queue) = mpsc::channel(4);
    let admin_addr = start_admin(
        &config,
        &agent,
        &mut sockets,
        reload_requests,
        &tasks,
        &ops_stop,
    )?;
    let (ops_addr, endpoints) = start_metrics(&config, &agent, &mut sockets, &tasks, &ops_stop)?;
    agent.spawn_tasks(&tasks, &shutdown);
    if let Some(fleet) = fleet {
        info!(fleet = %config.startup.fleet.as_ref().map_or("", |f| f.name.as_str()), id = fleet.id(), "fleet mode: reading the fleet's bans");
        // Before serving: the fleet's bans first (bounded by [fleet] startup_wait).
        fleet.start(agent.clone(), &tasks, &shutdown).await?;
    }
    let reload = Arc::new(Notify::new());
    let service = Arc::new(Service::new(agent.clone(), server_settings));
    let (max_connections, grace) = (
        server_settings.max_connections,
        server_settings.shutdown_timeout(),
    );
    info!(listen = %server_settings.listen, version = env!("CARGO_PKG_VERSION"), "spoa-guard listening");
    let reloader = Reloader::new(config, stamps, agent.clone());
    let dirs: Vec<String> = reloader
        .watched_dirs()
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    info!(dirs = %dirs.join(", "), "watching rule files");
    tasks.spawn(reloader.run(reload.clone(), reload_queue, shutdown.clone()));
    if let Some(endpoints) = &endpoints {
        endpoints.set_ready(true);
        let (endpoints, stopping) = (endpoints.clone(), shutdown.clone());
        tasks.spawn(async move {
            stopping.cancelled().await;
            endpoints.set_ready(false);
        });
    }
    let server = tokio::spawn(server::run(
        listener,
        service.clone(),
        max_connections,
        shutdown.clone(),
        grace,
    ));
    sockets.accepting();
    let handing = Handing {
        agent: agent.clone(),
        service: service.clone(),
        shutdown: shutdown.clone(),
    };
    let handed = std::mem::take(&mut sockets.handed);
    tasks.spawn(handover::serve(
        sockets.name,
        handed,
        handing,
        shutdown.clone(),
    ));
    Ok(Running {
        agent,
        spop_addr,
        ops_addr,
        admin_addr,
        shutdown,
        ops_stop,
        reload,
        tasks,
        server,
    })
}

/// What this agent does when a new one takes its sockets over: save the bans for it,
/// then drain and stop as on SIGTERM.
#[derive(Debug)]
struct Handing {
    agent: Arc<Agent>,
    service: Arc<Service>,
    shutdown: CancellationToken,
}

impl handover::Handing for Handing {
    fn save(&self) {
        self.agent.save_bans_now();
    }

    fn stop(&self) {
        // The successor read the bans this agent saved; the file is its to write now.
        self.agent.controls.stop_saving();
        self.service.drain_for_takeover();
        self.shutdown.cancel();
    }
}

/// Starts the admin listener, if `[admin] listen` is set; its TCP address.
fn start_admin(
    config: &Config,
    agent: &Arc<Agent>,
    sockets: &mut Sockets,
    reload_requests: mpsc::Sender<crate::agent::ReloadRequest>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Result<Option<SocketAddr>, StartError> {
    let settings = &config.startup.admin;
    let Some(listen) = &settings.listen else {
        return Ok(None);
    };
    let token = admin_token(settings, listen)?;
    let access = admin_access(settings)?;
    let listener = sockets.listen("admin.listen", listen, || {
        Listener::bind_with(listen, OPS_BACKLOG, Some(access))
    })?;
    let bound = listener.local_addr();
    let admin = Admin::new(agent.clone(), token, reload_requests);
    tasks.spawn(ops::http::serve(listener, admin, stop.clone()));
    info!(listen = %listen, "admin API (bans, rules, reload, dry-run)");
    Ok(bound)
}

/// Starts the metrics listener, if `[metrics] listen` is set; its address and endpoints.
fn start_metrics(
    config: &Config,
    agent: &Arc<Agent>,
    sockets: &mut Sockets,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Result<(Option<SocketAddr>, Option<Arc<Endpoints>>), StartError> {
    let Some(addr) = config.startup.metrics.listen else {
        return Ok((None, None));
    };
    let listen = Listen::Tcp(addr);
    let listener = sockets.listen("metrics.listen", &listen, || {
        Listener::bind(&listen, OPS_BACKLOG)
    })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let endpoints = Endpoints::new(agent.clone());
    tasks.spawn(ops::http::serve(listener, endpoints.clone(), stop.clone()));
    info!(listen = %bound, "metrics, health and traffic insight on http://{bound}/");
    Ok((Some(bound), Some(endpoints)))
}

/// Listen backlog of the operations listeners.
const OPS_BACKLOG: u32 = 1024;

/// Puts the bans of `[bans] state_file` back, before anything is served. A file that
/// cannot be used is logged and set aside, never a reason not to start.
fn restore_bans(agent: &Agent) {
    let Some(path) = agent.controls.settings().state_file.clone() else {
        return;
    };
    let loaded = crate::bans::state::load(&path, unix_now_u32());
    for problem in &loaded.problems {
        error!(target: "spoa_guard::bans", "{problem}");
    }
    let (count, expired) = (loaded.bans.len(), loaded.expired);
    agent.auto_bans.restore(loaded.offences);
    let refused = agent.controls.restore(loaded.bans);
    if refused > 0 {
        warn!(target: "spoa_guard::bans", refused, "bans from the state file refused ([bans] max_entries reached)");
    }
    info!(target: "spoa_guard::bans", file = %path.display(), restored = count - refused, expired, "bans restored");
}

/// Who may use the admin unix socket: its configured mode and group.
fn admin_access(settings: &AdminSettings) -> Result<SocketAccess, StartError> {
    let gid = settings
        .socket_group
        .as_deref()
        .map(ops::admin::group_id)
        .transpose()
        .map_err(StartError::Admin)?;
    Ok(SocketAccess {
        mode: settings.mode(),
        gid,
    })
}

/// The bearer token TCP admin clients must send; `None` on a unix socket.
fn admin_token(settings: &AdminSettings, listen: &Listen) -> Result<Option<String>, StartError> {
    match (listen, &settings.token_file) {
        (Listen::Unix(_), _) => Ok(None),
        (Listen::Tcp(_), Some(path)) => ops::admin::read_token(path)
            .map(Some)
            .map_err(StartError::Admin),
        (Listen::Tcp(addr), None) => Err(StartError::Admin(format!(
            "listen = {addr} is TCP and no token_file is set; refusing to start"
        ))),
    }
}

/// Loads the rules of `config`, logging each error.
///
/// On the calling thread, not the blocking pool: at start-up there is nothing else to
/// serve yet, and the rules then live in the malloc arena of the thread that serves
/// requests. Built on a blocking-pool thread they cost 7 MB more resident memory under
/// load (agent at 3.5M requests: 43 against 36 MiB), the request path growing an arena
/// of its own. Reloads build on the blocking pool, as they must.
fn load_rules(config: &Config, fleet: Option<&Fleet>) -> Result<Engine, StartError> {
    let loaded = Engine::load(&config.rules, &config.path, None, fleet.map(Fleet::link));
    loaded.map_err(|errors| {
        for err in &errors.0 {
            error!("{err}");
        }
        StartError::Rules(errors)
    })
}

/// Runs the agent of the configuration at `path` until SIGTERM or SIGINT: what
/// `spoa-guard serve` does. Logging is set up from the configuration's `[log]`.
///
/// # Errors
///
/// Anything that stops the agent from starting.
pub fn run(path: &Path) -> Result<(), StartError> {
    // Stamped before being read, so that a change during the load is reloaded.
    let stamps = Stamps::of(&[path]);
    let config = Config::load(path)?;
    init_tracing(&config.startup.log);
    for warning in &config.warnings {
        warn!("{warning}");
    }
    let stamps = stamps.extended_to(&config.files());
    let runtime = runtime(config.startup.server.threads())
        .map_err(|e| StartError::Runtime(format!("starting the runtime: {e}")))?;
    runtime.block_on(async {
        let running = start_stamped(config, stamps).await?;
        process::notify_ready();
        tokio::spawn(handle_signals(
            running.reload_handle(),
            running.shutdown_token(),
        ));
        running.stopped().await;
        info!("stopped");
        Ok(())
    })
}

/// The runtime serving connections: one thread runs everything (tasks never move
/// between threads, so nothing is shared between cores: the cheapest per request); more
/// make a work-stealing pool. Rule builds run on the blocking pool either way.
///
/// # Errors
///
/// The operating system refused threads.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().thread_name("spoa-guard").build()
}

/// SIGTERM/SIGINT: graceful shutdown (a second one exits at once). SIGHUP: reload.
/// SIGUSR2: start a new agent that takes over (a restart without a gap).
async fn handle_signals(force_reload: Arc<Notify>, shutdown: CancellationToken) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr2)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined2()),
    ) else {
        error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {
                force_reload.notify_one();
                continue;
            }
            _ = usr2.recv() => {
                if !shutdown.is_cancelled() {
                    process::start_successor();
                }
                continue;
            }
        }
        if shutdown.is_cancelled() {
            warn!("second signal: exiting now");
            std::process::exit(1);
        }
        info!("shutting down: no new connections, answering in-flight frames");
        shutdown.cancel();
    }
}

/// Sets up logging on stderr from `[log]` (`RUST_LOG` wins when set): text, or one flat
/// JSON object per line ([`FlatJson`](crate::util::json_log::FlatJson), whose span
/// fields come from [`JsonFields`](tracing_subscriber::fmt::format::JsonFields)).
pub fn init_tracing(log: &LogSettings) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = from_env
        .as_deref()
        .and_then(|v| crate::config::log_filter(v).ok())
        .or_else(|| crate::config::log_filter(&log.level).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(crate::util::json_log::FlatJson)
            .init(),
    }
}
