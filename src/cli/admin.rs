//! The CLI's admin commands — `ban`, `unban`, `bans`, `rules`, `dry-run` — as clients of
//! a running agent's admin API (`[admin] listen` in `--config`; the token from its
//! `token_file` on TCP). The agent checks every request; a refusal is printed as its
//! one-line reason.
//!
//! Exit codes (design.md "Command line"): 0 done; 1 refused (a bad target or duration,
//! a network too wide without `--force`, an unknown ban, a failed reload); 2 usage (bad
//! arguments, no usable `--config`); 3 the agent could not be reached.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;

use super::client::{percent, Answer, Call};
use super::say;
use crate::agent::ReloadReport;
use crate::config::Config;
use crate::ops::admin::{self, BanRequest, BanView, DryRunRequest, DryRunState, RulesView};
use crate::util::Listen;

/// Exit code: refused.
const REFUSED: u8 = 1;
/// Exit code: usage error.
const USAGE: u8 = 2;
/// Exit code: the agent could not be reached.
const UNREACHABLE: u8 = 3;

/// `spoa-guard ban`.
#[derive(Debug, clap::Args)]
pub struct BanArgs {
    /// An address (203.0.113.7, 2001:db8::1), a CIDR (203.0.113.0/24) or an AS (AS64496).
    pub target: String,
    /// How long: 30m, 1h, 7d (a unit is required).
    #[arg(long = "for", value_name = "DURATION")]
    pub duration: String,
    /// Why (an incident or ticket), kept with the ban and logged.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Ban a network wider than `[bans]` max_prefix_v4 / max_prefix_v6.
    #[arg(long)]
    pub force: bool,
}

/// `spoa-guard unban`.
#[derive(Debug, clap::Args)]
pub struct UnbanArgs {
    /// Exactly the target banned (`spoa-guard bans` lists them).
    pub target: String,
}

/// `spoa-guard bans` and `spoa-guard rules`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// One line of JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// `spoa-guard dry-run`.
#[derive(Debug, clap::Args)]
pub struct DryRunArgs {
    /// `on` (needs --for) or `off`.
    pub state: Switch,
    /// How long the switch stays on before it turns itself off: 30m, 2h.
    #[arg(long = "for", value_name = "DURATION", required_if_eq("state", "on"))]
    pub duration: Option<String>,
}

/// The dry-run switch's two positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// Every rule and ban reports, none denies.
    On,
    /// Rules enforce again.
    Off,
}

/// The admin command to run.
#[derive(Debug)]
pub enum AdminCommand<'a> {
    /// `ban`.
    Ban(&'a BanArgs),
    /// `unban`.
    Unban(&'a UnbanArgs),
    /// `bans`.
    Bans(&'a ListArgs),
    /// `rules`.
    Rules(&'a ListArgs),
    /// `reload`.
    Reload,
    /// `dry-run`.
    DryRun(&'a DryRunArgs),
}

/// Runs `command` against the agent of the configuration at `config`.
pub fn run(config: &Path, command: &AdminCommand<'_>) -> ExitCode {
    let (listen, token) = match admin_address(config) {
        Ok(found) => found,
        Err((code, message)) => {
            eprintln!("spoa-guard: {message}");
            return ExitCode::from(code);
        }
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("spoa-guard: cannot start the runtime");
        return ExitCode::from(UNREACHABLE);
    };
    let call = Call {
        at: &listen,
        hint: " (is the agent running with this [admin] listen?)",
        token: token.as_deref(),
        timeout: match command {
            AdminCommand::Reload => Duration::from_secs(130),
            _ => super::client::TIMEOUT,
        },
    };
    let (method, path, body) = request(command);
    let answer = match runtime.block_on(call.send(method, &path, body)) {
        Ok(answer) => answer,
        Err(err) => {
            eprintln!("spoa-guard: {err}");
            return ExitCode::from(UNREACHABLE);
        }
    };
    match show(command, &answer) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("spoa-guard: {message}");
            ExitCode::from(match answer.status {
                StatusCode::UNAUTHORIZED => UNREACHABLE,
                s if s.is_server_error() && s != StatusCode::INSUFFICIENT_STORAGE => UNREACHABLE,
                _ => REFUSED,
            })
        }
    }
}

/// The admin listener and token of the configuration at `config`, or the exit code and
/// message.
fn admin_address(config: &Path) -> Result<(Listen, Option<String>), (u8, String)> {
    let loaded = Config::load(config).map_err(|errors| {
        let first = errors.errors().next().map(ToString::to_string);
        (
            USAGE,
            first.unwrap_or_else(|| format!("{}: invalid configuration", config.display())),
        )
    })?;
    let settings = &loaded.startup.admin;
    let Some(listen) = settings.listen.clone() else {
        return Err((
            UNREACHABLE,
            format!(
                "{}: no [admin] listen; set one (e.g. listen = \"unix:/run/spoa-guard/admin.sock\") \
                 and restart the agent",
                config.display()
            ),
        ));
    };
    let token = match (&listen, &settings.token_file) {
        (Listen::Tcp(_), Some(path)) => Some(admin::read_token(path).map_err(|e| (USAGE, e))?),
        _ => None,
    };
    Ok((listen, token))
}

/// The request for `command`: method, path and JSON body.
fn request(command: &AdminCommand<'_>) -> (Method, String, Option<Vec<u8>>) {
    match command {
        AdminCommand::Ban(args) => (
            Method::POST,
            "/bans".into(),
            serde_json::to_vec(&BanRequest {
                target: args.target.clone(),
                duration: args.duration.clone(),
                reason: args.reason.clone(),
                force: args.force,
            })
            .ok(),
        ),
        AdminCommand::Unban(args) => (
            Method::DELETE,
            format!("/bans/{}", percent(&args.target)),
            None,
        ),
        AdminCommand::Bans(_) => (Method::GET, "/bans".into(), None),
        AdminCommand::Rules(_) => (Method::GET, "/rules".into(), None),
        AdminCommand::Reload => (Method::POST, "/reload".into(), None),
        AdminCommand::DryRun(args) => match (args.state, &args.duration) {
            (Switch::On, Some(duration)) => (
                Method::POST,
                "/dry-run".into(),
                serde_json::to_vec(&DryRunRequest {
                    duration: duration.clone(),
                })
                .ok(),
            ),
            _ => (Method::DELETE, "/dry-run".into(), None),
        },
    }
}

/// Prints the answer to `command`, or says why it was refused.
fn show(command: &AdminCommand<'_>, answer: &Answer) -> Result<(), String> {
    if let AdminCommand::Reload = command {
        // A failed reload answers 422 with the report: show it either way.
        if let Ok(report) = serde_json::from_slice::<ReloadReport>(&answer.body) {
            return show_reload(&report);
        }
    }
    if !answer.status.is_success() {
        return Err(match answer.reason() {
            reason if reason.is_empty() => answer.status.to_string(),
            reason => reason,
        });
    }
    match command {
        AdminCommand::Ban(_) => {
            let ban: BanView = parse(answer)?;
            let verb = if answer.status == StatusCode::CREATED {
                "banned"
            } else {
                "ban replaced:"
            };
            say!(
                "{verb} {} until {} ({} s){}",
                ban.target,
                ban.expires_at,
                ban.expires_in,
                reason_suffix(&ban.reason)
            );
        }
        AdminCommand::Unban(_) => {
            let ban: BanView = parse(answer)?;
            say!(
                "lifted the ban on {} ({}{}; {} s were left)",
                ban.target,
                ban.origin,
                reason_suffix(&ban.reason),
                ban.expires_in
            );
        }
        AdminCommand::Bans(args) => {
            let bans: Vec<BanView> = parse(answer)?;
            if args.json {
                say!("{}", String::from_utf8_lossy(&answer.body));
            } else {
                say!("{}", bans_table(&bans));
            }
        }
        AdminCommand::Rules(args) => {
            let rules: RulesView = parse(answer)?;
            if args.json {
                say!("{}", String::from_utf8_lossy(&answer.body));
            } else {
                say!("{}", rules_table(&rules));
            }
        }
        AdminCommand::DryRun(_) => {
            let state: DryRunState = parse(answer)?;
            match (state.on, state.until) {
                (true, Some(until)) => {
                    say!("dry-run switch ON until {until}: every rule and ban reports, none denies")
                }
                _ => say!("dry-run switch off: rules enforce"),
            }
        }
        AdminCommand::Reload => {}
    }
    Ok(())
}

fn show_reload(report: &ReloadReport) -> Result<(), String> {
    if report.applied {
        say!("reloaded: the new rules are in force");
        for setting in &report.restart_needed {
            say!("  needs a restart to change: {setting}");
        }
        return Ok(());
    }
    for error in &report.errors {
        eprintln!("{error}");
    }
    Err(format!(
        "reload failed ({} error(s)); the previous rules stay in force",
        report.errors.len()
    ))
}

fn parse<T: DeserializeOwned>(answer: &Answer) -> Result<T, String> {
    serde_json::from_slice(&answer.body)
        .map_err(|e| format!("the agent's answer is not what this CLI expects: {e}"))
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(", reason: {reason}")
    }
}

/// The bans as a table, or a line saying there are none.
pub fn bans_table(bans: &[BanView]) -> String {
    if bans.is_empty() {
        return "no bans in force".to_string();
    }
    let width = bans
        .iter()
        .map(|b| b.target.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let origin = bans
        .iter()
        .map(|b| b.origin.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut lines = vec![format!(
        "{:<width$}  {:<origin$}  {:<20}  {:>9}  REASON",
        "TARGET", "ORIGIN", "EXPIRES (UTC)", "LEFT"
    )];
    for ban in bans {
        lines.push(format!(
            "{:<width$}  {:<origin$}  {:<20}  {:>9}  {}",
            ban.target,
            ban.origin,
            ban.expires_at,
            left(ban.expires_in),
            ban.reason
        ));
    }
    lines.join("\n")
}

/// `3h12m`, `45s`.
fn left(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        3600..=86_399 => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d{:02}h", seconds / 86_400, seconds % 86_400 / 3600),
    }
}

/// The rules in force as a table, with the reload state, the switch and the bans above.
pub fn rules_table(view: &RulesView) -> String {
    let mut lines = vec![format!("rules loaded at {}", view.loaded_at)];
    match &view.last_reload {
        Some(r) if r.applied => lines.push(format!("last reload ({}): applied", r.cause)),
        Some(r) => {
            lines.push(format!(
                "last reload ({}): FAILED, the rules below are the previous ones:",
                r.cause
            ));
            lines.extend(r.errors.iter().map(|e| format!("  {e}")));
        }
        None => lines.push("no reload since start".to_string()),
    }
    if let (true, Some(until)) = (view.dry_run.on, &view.dry_run.until) {
        lines.push(format!("DRY-RUN SWITCH ON until {until}: nothing denies"));
    }
    lines.push(format!("bans in force: {} (spoa-guard bans)", view.bans));
    if view.rules.is_empty() {
        lines.push("no rules".to_string());
        return lines.join("\n");
    }
    let name = view.name_width();
    lines.push(format!(
        "{:<10}  {:<name$}  {:<7}  {:<6}  {:<5}  {:>9}  {:>10}",
        "KIND", "NAME", "MODE", "ACTION", "SCOPE", "SIZE", "HITS"
    ));
    for rule in &view.rules {
        lines.push(format!(
            "{:<10}  {:<name$}  {:<7}  {:<6}  {:<5}  {:>9}  {:>10}",
            rule.kind,
            rule.name,
            rule.mode,
            rule.action,
            rule.scope.as_deref().unwrap_or("-"),
            rule.size,
            rule.hits
        ));
    }
    for rule in view.rules.iter().filter(|r| !r.hottest.is_empty()) {
        lines.push(format!(
            "fleet limit {}, heaviest keys as the fleet sees them:",
            rule.name
        ));
        for hot in &rule.hottest {
            let state = if hot.denied_for > 0.0 {
                format!("denied for {:.1}s", hot.denied_for)
            } else {
                "has tokens".to_string()
            };
            lines.push(format!(
                "  {:<39}  {:>8.1} tokens taken  {state}",
                hot.key, hot.tokens
            ));
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_left_read_at_a_glance() {
        assert_eq!(left(45), "45s");
        assert_eq!(left(3599), "59m59s");
        assert_eq!(left(3 * 3600 + 12 * 60), "3h12m");
        assert_eq!(left(2 * 86_400 + 3600), "2d01h");
    }

    #[test]
    fn an_empty_ban_list_says_so() {
        assert_eq!(bans_table(&[]), "no bans in force");
        let ban = BanView {
            target: "203.0.113.0/24".into(),
            origin: "manual".into(),
            reason: "INC-42".into(),
            since: "2026-12-06T03:00:00Z".into(),
            expires_at: "2026-12-06T04:00:00Z".into(),
            expires_in: 3600,
        };
        let table = bans_table(&[ban]);
        assert!(table.starts_with("TARGET"), "{table}");
        assert!(table.contains("203.0.113.0/24  manual"), "{table}");
        assert!(table.contains("1h00m  INC-42"), "{table}");
    }
}
