//! The command line: `serve` (the default, in [`crate::serve`]) runs the agent; the
//! other commands are tools around it, each in its own module — [`check`] validates a
//! configuration and every rule file, [`eval`] explains the decision for one request,
//! [`top`] shows who is hitting a running agent, and the [`admin`] commands (`ban`,
//! `unban`, `bans`, `rules`, `reload`, `dry-run`) change and show what a running agent
//! has in force, through its admin API ([`client`] is the HTTP client of both).
//!
//! Output goes to stdout through `say!`, which ignores a closed pipe
//! (`spoa-guard check | head`); problems go to stderr. Exit codes: 0 success, 1 a check
//! failed or a request was refused (or, with `eval --exit-code`, the request would be
//! denied), 2 a usage error, 3 the agent could not be reached.

pub mod admin;
pub mod check;
pub mod client;
pub mod eval;
pub mod top;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use admin::AdminCommand;

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
    /// Configuration file (TOML). Default: spoa-guard.toml in the current directory when
    /// there is one, else /etc/spoa-guard/spoa-guard.toml (the Debian package's) when
    /// there is that one.
    #[arg(long, short, global = true, default_value_os_t = default_config())]
    pub config: PathBuf,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The configuration file installed by the Debian package.
pub const SYSTEM_CONFIG: &str = "/etc/spoa-guard/spoa-guard.toml";

/// `--config` when not given: `spoa-guard.toml` here if it exists, else
/// [`SYSTEM_CONFIG`] if it exists, else `spoa-guard.toml` (whose absence is then the
/// error reported).
fn default_config() -> PathBuf {
    let local = PathBuf::from("spoa-guard.toml");
    if !local.exists() && std::path::Path::new(SYSTEM_CONFIG).exists() {
        return PathBuf::from(SYSTEM_CONFIG);
    }
    local
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
    /// Ban an address, a network or an AS on the running agent, for a while.
    Ban(admin::BanArgs),
    /// Lift a ban on the running agent.
    Unban(admin::UnbanArgs),
    /// List the bans in force on the running agent.
    Bans(admin::ListArgs),
    /// Show the rules the running agent has in force, with their mode, size and hits.
    Rules(admin::ListArgs),
    /// Make the running agent reload its rules now, and show the result.
    Reload,
    /// The kill switch: every rule and ban reports but none denies, until off or expiry.
    DryRun(admin::DryRunArgs),
}

impl Cli {
    /// Runs a tool command; `None` for `serve`, which `main` runs itself.
    pub fn run_tool(&self) -> Option<ExitCode> {
        match &self.command {
            None | Some(Command::Serve) => None,
            Some(Command::Check) => Some(check::run(&self.config)),
            Some(Command::Eval(args)) => Some(eval::run(&self.config, args)),
            Some(Command::Top(args)) => Some(top::run(&self.config, args)),
            Some(Command::Ban(args)) => Some(self.admin(&AdminCommand::Ban(args))),
            Some(Command::Unban(args)) => Some(self.admin(&AdminCommand::Unban(args))),
            Some(Command::Bans(args)) => Some(self.admin(&AdminCommand::Bans(args))),
            Some(Command::Rules(args)) => Some(self.admin(&AdminCommand::Rules(args))),
            Some(Command::Reload) => Some(self.admin(&AdminCommand::Reload)),
            Some(Command::DryRun(args)) => Some(self.admin(&AdminCommand::DryRun(args))),
        }
    }
}

impl Cli {
    fn admin(&self, command: &AdminCommand<'_>) -> ExitCode {
        admin::run(&self.config, command)
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
    let fleet = match config
        .startup
        .fleet
        .as_ref()
        .map(crate::fleet::offline_link)
        .transpose()
    {
        Ok(fleet) => fleet,
        Err(error) => {
            eprintln!("{}: {error}", path.display());
            return None;
        }
    };
    match crate::engine::Engine::load(&config.rules, &config.path, None, fleet.as_ref()) {
        Ok(engine) => Some((config, engine)),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            None
        }
    }
}
