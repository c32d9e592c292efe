//! The command line: `serve` (the default, in [`crate::serve`]) runs the agent; the
//! other commands are tools around it, each in its own module — [`check`] validates a
//! configuration and every rule file, [`eval`] explains the decision for one request,
//! [`top`] shows who is hitting a running agent.
//!
//! Output goes to stdout through `say!`, which ignores a closed pipe
//! (`spoa-guard check | head`); problems go to stderr. Exit codes: 0 success, 1 a check
//! failed (or, with `eval --exit-code`, the request would be denied), 2 a usage error.

pub mod check;
pub mod eval;
pub mod top;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` that ignores a closed stdout instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
pub(crate) use say;

/// HAProxy SPOE agent that filters HTTP traffic: IP lists, ASNs, user agents, rate limits.
#[derive(Debug, Parser)]
#[command(name = "spoa-guard", version, about)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short, global = true, default_value = "spoa-guard.toml")]
    pub config: PathBuf,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (the default).
    Serve,
    /// Validate the configuration and every rule file; exit 1 with file:line errors.
    Check,
    /// Evaluate one request offline and explain each step.
    Eval(eval::EvalArgs),
    /// Show who is hitting a running agent (sources, networks, ASNs, paths, hosts, user
    /// agents), refreshed like top; reads GET /top from its operations listener (metrics.listen).
    Top(top::TopArgs),
}

impl Cli {
    /// Runs a tool command; `None` for `serve`, which `main` runs itself.
    pub fn run_tool(&self) -> Option<ExitCode> {
        match &self.command {
            None | Some(Command::Serve) => None,
            Some(Command::Check) => Some(check::run(&self.config)),
            Some(Command::Eval(args)) => Some(eval::run(&self.config, args)),
            Some(Command::Top(args)) => Some(top::run(&self.config, args)),
        }
    }
}

/// Loads the configuration and every rule input, printing problems on stderr: what
/// `check` and `eval` start from.
pub(crate) fn load(
    path: &std::path::Path,
) -> Option<(crate::config::Config, crate::engine::Engine)> {
    let config = match crate::config::Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            let count = errors.errors().count();
            eprintln!("{}: {count} error(s)", path.display());
            return None;
        }
    };
    for warning in &config.warnings {
        eprintln!("{warning}");
    }
    match crate::engine::Engine::load(&config.rules, &config.path, None) {
        Ok(engine) => Some((config, engine)),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            None
        }
    }
}
