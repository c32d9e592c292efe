//! The `spoa-guard` command: `serve` (the default) runs the agent, `check` validates a
//! configuration and every rule file it names.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use spoa_guard::config::{Config, LogFormat, LogSettings};
use spoa_guard::engine::Engine;
use spoa_guard::rules::RuleSet;
use spoa_guard::server::{self, Listener, Shared};

/// HAProxy SPOE agent that filters HTTP traffic: IP allow/block lists (more to come).
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Check => check(&cli.config),
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

fn check(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    match RuleSet::load(&config.rules) {
        Ok(rules) => {
            println!("{}: OK", path.display());
            println!("  listen: {}", config.server.listen);
            println!(
                "  allow lists: {} ({} entries)",
                config.rules.allow.len(),
                rules.allow.entries()
            );
            println!(
                "  block lists: {} ({} entries)",
                config.rules.block.len(),
                rules.block.entries()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    init_tracing(&config.log);
    let rules = RuleSet::load(&config.rules).map_err(|errors| {
        for err in &errors.0 {
            error!("{err}");
        }
        anyhow::anyhow!("{} error(s) in rule files; not starting", errors.0.len())
    })?;
    info!(
        allow_entries = rules.allow.entries(),
        block_entries = rules.block.entries(),
        "rules loaded"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let listener = Listener::bind(&config.server.listen, config.server.backlog)
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        info!(listen = %config.server.listen, version = env!("CARGO_PKG_VERSION"), "spoa-guard listening");
        let shared = Arc::new(Shared::new(Engine::new(rules), &config.server));
        let shutdown = CancellationToken::new();
        tokio::spawn(handle_signals(path.to_path_buf(), config.clone(), shared.clone(), shutdown.clone()));
        server::run(listener, shared, config.server.max_connections, shutdown, config.server.shutdown_timeout).await;
        info!("stopped");
        Ok(())
    })
}

/// SIGTERM/SIGINT: graceful shutdown (a second one exits at once). SIGHUP: reload.
async fn handle_signals(
    path: PathBuf,
    config: Config,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
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
                info!("SIGHUP: reloading rules");
                spoa_guard::reload::reload(&path, &config, &shared).await;
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
