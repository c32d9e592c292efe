//! The `spoa-guard` command: `serve` (the default) runs the agent, `check` validates a
//! configuration and every rule file it names.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use bytes::Bytes;
use spoa_guard::admin::Admin;
use spoa_guard::config::{Config, LogFormat, LogSettings};
use spoa_guard::engine::{canonical, Engine, Request, Summary};
use spoa_guard::reload::{Reloader, Stamps};
use spoa_guard::server::{self, Listener, Shared};
use spoa_guard::spop::{Arg, ArgRef, TypedData};

/// `println!` that ignores a closed stdout (`spoa-guard check | head`) instead of
/// panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// HAProxy SPOE agent that filters HTTP traffic: IP lists, ASNs, user agents, rate limits.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short, global = true, default_value = "spoa-guard.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the default).
    Serve,
    /// Validate the configuration and every rule file; exit 1 with file:line errors.
    Check,
    /// Evaluate one request offline and explain each step.
    Eval(EvalArgs),
    /// Show who is hitting a running agent (sources, networks, ASNs, paths, hosts, user
    /// agents), refreshed like top; reads GET /top from its [metrics] listener.
    Top(TopArgs),
}

/// What `top` shows and where it reads it.
#[derive(Debug, clap::Args)]
struct TopArgs {
    /// The agent's operations listener (`[metrics] listen`); default: read from --config,
    /// else 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR:PORT")]
    addr: Option<std::net::SocketAddr>,
    /// Window: 30s, 1m, 5m (at most the agent's insight window).
    #[arg(long, default_value = "1m")]
    window: String,
    /// Entries per dimension.
    #[arg(short, long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=100))]
    n: u16,
    /// Show denied traffic only.
    #[arg(long)]
    denied: bool,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    interval: u64,
    /// Print once and exit (for scripts); exit 1 if the agent cannot be read.
    #[arg(long)]
    once: bool,
}

/// The request to evaluate.
#[derive(Debug, clap::Args)]
struct EvalArgs {
    /// Source address (IPv4 or IPv6).
    #[arg(long)]
    src: String,
    /// User-Agent header (omit for a request without one).
    #[arg(long)]
    ua: Option<String>,
    /// Request path.
    #[arg(long)]
    path: Option<String>,
    /// HTTP method.
    #[arg(long)]
    method: Option<String>,
    /// Host header.
    #[arg(long)]
    host: Option<String>,
    /// An extra SPOE argument, for `arg:NAME` limit keys; repeatable.
    #[arg(long = "arg", value_name = "NAME=VALUE")]
    args: Vec<String>,
    /// Evaluate the same request this many times at the same instant and explain the
    /// last one (shows when a burst hits a rate limit).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    repeat: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Check => check(&cli.config),
        Command::Eval(args) => eval(&cli.config, &args),
        Command::Top(args) => top(&cli.config, &args),
        Command::Serve => match serve(&cli.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                // Logging may not be up yet: say it on stderr either way.
                eprintln!("spoa-guard: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Loads the configuration and every rule input, printing errors on stderr.
fn load(path: &Path) -> Option<(Config, Engine)> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return None;
        }
    };
    match Engine::load(&config.rules, &config.path, None) {
        Ok(engine) => Some((config, engine)),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            None
        }
    }
}

fn check(path: &Path) -> ExitCode {
    let started = Instant::now();
    let Some((config, engine)) = load(path) else {
        return ExitCode::FAILURE;
    };
    let elapsed = started.elapsed();
    let s = Summary::of(&engine);
    say!("{}: OK", path.display());
    say!(
        "  listen:       {} ({} thread{})",
        config.server.listen,
        config.server.threads,
        if config.server.threads == 1 { "" } else { "s" }
    );
    match config.metrics_listen {
        Some(addr) => say!("  metrics:      http://{addr}/metrics, /healthz, /readyz"),
        None => say!("  metrics:      off ([metrics] listen not set)"),
    }
    say!(
        "  allow lists:  {} ({} entries)",
        config.rules.allow.len(),
        s.allow_entries
    );
    say!(
        "  block lists:  {} ({} entries)",
        config.rules.block.len(),
        s.block_entries
    );
    if s.dry_run_entries > 0 {
        say!("  dry-run lists: {} entries", s.dry_run_entries);
    }
    say!(
        "  asn:          {} ranges, {} blocked ASNs",
        s.asn_ranges,
        s.asn_blocked
    );
    say!(
        "  user agents:  {} rules ({} patterns)",
        s.ua_rules,
        s.ua_patterns
    );
    say!("  limits:       {}", s.limits);
    let r = &config.reload;
    let poll = r.poll.map_or_else(
        || "no stamp poll".to_string(),
        |p| format!("stamp poll every {} s", p.as_secs()),
    );
    if r.watch {
        let watched = config.files().len();
        say!(
            "  reload:       watching {watched} files (debounce {} ms, {poll}), SIGHUP",
            r.debounce.as_millis()
        );
    } else {
        say!("  reload:       not watching ({poll}), SIGHUP");
    }
    let memory = memory_mib().map_or_else(String::new, |(rss, peak)| {
        format!(", resident memory {rss:.1} MiB (peak {peak:.1} MiB)")
    });
    say!("  loaded in {:.0} ms{memory}", elapsed.as_secs_f64() * 1e3);
    ExitCode::SUCCESS
}

/// Current and peak resident memory of this process, from /proc (Linux only).
fn memory_mib() -> Option<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A non-empty option as bytes.
fn bytes(value: &Option<String>) -> Option<&[u8]> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(str::as_bytes)
}

fn eval(path: &Path, args: &EvalArgs) -> ExitCode {
    let src = match args.src.trim().parse::<IpAddr>() {
        Ok(src) => canonical(src),
        Err(_) => {
            eprintln!("--src {:?}: not an IPv4 or IPv6 address", args.src);
            return ExitCode::from(2);
        }
    };
    let mut extra = Vec::with_capacity(args.args.len());
    for pair in &args.args {
        let Some((name, value)) = pair.split_once('=') else {
            eprintln!("--arg {pair:?}: expected NAME=VALUE");
            return ExitCode::from(2);
        };
        extra.push(Arg {
            name: Bytes::from(name.to_string()),
            value: TypedData::String(Bytes::from(value.to_string())),
        });
    }
    let Some((_config, engine)) = load(path) else {
        return ExitCode::FAILURE;
    };
    let request = Request {
        src: Some(src),
        method: bytes(&args.method),
        path: bytes(&args.path),
        host: bytes(&args.host),
        ua: bytes(&args.ua),
        args: extra.iter().map(ArgRef::of).collect(),
    };
    let show = |value: Option<&[u8]>| {
        value.map_or("-".to_string(), |v| {
            format!("{:?}", String::from_utf8_lossy(v))
        })
    };
    say!(
        "request: src={src} method={} path={} host={} ua={}",
        show(request.method),
        show(request.path),
        show(request.host),
        show(request.ua)
    );
    // Offline, every bucket starts full; --repeat replays the request at one instant.
    let now = Instant::now();
    for _ in 1..args.repeat {
        engine.evaluate(&request, now);
    }
    if args.repeat > 1 {
        say!(
            "(after {} identical requests at the same instant)",
            args.repeat - 1
        );
    }
    let (verdict, steps) = engine.explain(&request, now);
    for step in steps {
        say!("  {step}");
    }
    say!(
        "decision: {} (reason {}, rule {})",
        verdict.decision.as_str(),
        verdict.reason.as_str(),
        if verdict.rule.is_empty() {
            "-".into()
        } else {
            String::from_utf8_lossy(&verdict.rule)
        }
    );
    say!("variables (with option var-prefix guard):");
    for action in verdict.actions() {
        if let spoa_guard::spop::Action::SetVar { scope, name, value } = action {
            let value = match value {
                TypedData::String(s) => format!("{:?}", String::from_utf8_lossy(&s)),
                TypedData::Int32(v) => v.to_string(),
                TypedData::Uint32(v) => v.to_string(),
                other => format!("{other:?}"),
            };
            say!(
                "  {}.guard.{:<12} = {value}",
                scope.as_str(),
                String::from_utf8_lossy(&name)
            );
        }
    }
    ExitCode::SUCCESS
}

fn top(config: &Path, args: &TopArgs) -> ExitCode {
    let addr = args.addr.unwrap_or_else(|| {
        Config::load(config)
            .ok()
            .and_then(|c| c.metrics_listen)
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 9464)))
    });
    let class = if args.denied { "denied" } else { "all" };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("cannot start the runtime");
        return ExitCode::FAILURE;
    };
    let tty = std::io::stdout().is_terminal();
    runtime.block_on(async {
        loop {
            match spoa_guard::top::fetch(addr, &args.window, usize::from(args.n)).await {
                Ok(report) => {
                    let text = spoa_guard::top::render(&report, class, 120);
                    if tty && !args.once {
                        // Clear the screen and go home, as top does.
                        say!("\x1b[2J\x1b[H{text}");
                    } else {
                        say!("{text}");
                    }
                }
                Err(message) => {
                    eprintln!("spoa-guard top: {message}");
                    if args.once {
                        return ExitCode::FAILURE;
                    }
                }
            }
            if args.once {
                return ExitCode::SUCCESS;
            }
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
                () = tokio::time::sleep(std::time::Duration::from_secs(args.interval)) => {}
            }
        }
    })
}

fn serve(path: &Path) -> anyhow::Result<()> {
    // Stamped before being read, so that a change during the load is reloaded.
    let stamps = Stamps::of(&[path]);
    let config = Config::load(path)?;
    init_tracing(&config.log);
    let stamps = stamps.extended_to(&config.files());
    let engine = Engine::load(&config.rules, &config.path, None).map_err(|errors| {
        for err in &errors.0 {
            error!("{err}");
        }
        anyhow::anyhow!("{} error(s) in rule files; not starting", errors.0.len())
    })?;
    info!(rules = %Summary::of(&engine), "rules loaded");
    let runtime = runtime(config.server.threads).context("starting the runtime")?;
    runtime.block_on(async {
        let listener = Listener::bind(&config.server.listen, config.server.backlog)
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        info!(listen = %config.server.listen, version = env!("CARGO_PKG_VERSION"), "spoa-guard listening");
        let shared = Arc::new(
            Shared::new(engine, &config.server)
                .with_deny_log(config.log.deny_lines_per_second)
                .with_insight(&config.insight)
                .map_err(|m| anyhow::anyhow!("insight: {m}"))?,
        );
        let shutdown = CancellationToken::new();
        let force_reload = Arc::new(Notify::new());
        if let Some(addr) = config.metrics_listen {
            let listener = spoa_guard::admin::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?;
            let admin = Admin::new(shared.clone());
            admin.set_ready(true);
            info!(listen = %addr, "metrics, health and traffic insight on http://{addr}/");
            // Served until the process exits: /readyz answers 503 while connections drain.
            tokio::spawn(spoa_guard::admin::serve(listener, admin.clone(), CancellationToken::new()));
            let stopping = shutdown.clone();
            tokio::spawn(async move {
                stopping.cancelled().await;
                admin.set_ready(false);
            });
        }
        let reloader = Reloader::new(config.clone(), stamps, shared.clone());
        info!(dirs = ?reloader.watched_dirs(), "watching rule files");
        tokio::spawn(reloader.run(force_reload.clone(), shutdown.clone()));
        tokio::spawn(handle_signals(force_reload, shutdown.clone()));
        server::run(listener, shared, config.server.max_connections, shutdown, config.server.shutdown_timeout).await;
        info!("stopped");
        Ok(())
    })
}

/// The runtime serving connections: one thread runs everything (tasks never move
/// between threads, so nothing is shared between cores: the cheapest per request); more
/// make a work-stealing pool. Rule builds run on the blocking pool either way.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
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
async fn handle_signals(force_reload: Arc<Notify>, shutdown: CancellationToken) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
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
        }
        if shutdown.is_cancelled() {
            warn!("second signal: exiting now");
            std::process::exit(1);
        }
        info!("shutting down: no new connections, answering in-flight frames");
        shutdown.cancel();
    }
}

fn init_tracing(log: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
