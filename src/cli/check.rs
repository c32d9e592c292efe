//! `spoa-guard check`: validates the configuration and loads every rule file, then
//! prints what the agent would run with — listeners, each step's rules (from the
//! engine's rule table), reload settings — and how long loading took.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use strum::IntoEnumIterator;

use super::say;
use crate::engine::Step;
use crate::util::Listen;

/// Runs the check; exit 1 with `file:line` errors on stderr.
pub fn run(path: &Path) -> ExitCode {
    let started = Instant::now();
    let Some((config, engine)) = super::load(path) else {
        return ExitCode::FAILURE;
    };
    let elapsed = started.elapsed();
    let summary = engine.summary();
    let server = &config.startup.server;
    say!("{}: OK", path.display());
    let threads = server.threads();
    let plural = if threads == 1 { "" } else { "s" };
    say!(
        "  listen:         {} ({threads} thread{plural})",
        server.listen
    );
    match config.startup.metrics.listen {
        Some(addr) => say!("  metrics:        http://{addr}/metrics, /healthz, /readyz"),
        None => say!("  metrics:        off ([metrics] listen not set)"),
    }
    match &config.startup.admin.listen {
        Some(Listen::Unix(path)) => say!(
            "  admin:          unix:{} (mode {:04o})",
            path.display(),
            config.startup.admin.mode()
        ),
        Some(listen) => say!("  admin:          http://{listen}/ (bearer token)"),
        None => say!("  admin:          off ([admin] listen not set: no ban/bans/rules/dry-run)"),
    }
    let bans = &config.startup.bans;
    match &bans.state_file {
        Some(path) => say!(
            "  bans:           saved to {} (at most {})",
            path.display(),
            bans.max_entries
        ),
        None => say!(
            "  bans:           in memory only, lost on restart (at most {})",
            bans.max_entries
        ),
    }
    for step in Step::iter().filter(|s| s.has_rules()) {
        let title = format!("{}:", step.info().title);
        say!("  {title:<15} {}", summary.step(step).describe());
    }
    say!("  asn database:   {} ranges", summary.asn_ranges);
    let auto_bans = &config.rules.auto_ban;
    if !auto_bans.is_empty() {
        let dry = auto_bans.iter().filter(|a| a.dry_run).count();
        let names: Vec<&str> = auto_bans.iter().map(|a| a.name.as_str()).collect();
        say!(
            "  auto bans:      {} ({}){}",
            auto_bans.len(),
            names.join(", "),
            if dry > 0 {
                format!(", {dry} in dry run")
            } else {
                String::new()
            }
        );
    }
    let reload = &config.startup.reload;
    let poll = reload.poll().map_or_else(
        || "no stamp poll".to_string(),
        |p| format!("stamp poll every {} s", p.as_secs()),
    );
    if reload.watch {
        let watched = config.files().len();
        say!(
            "  reload:         watching {watched} files (debounce {} ms, {poll}), SIGHUP",
            reload.debounce_ms
        );
    } else {
        say!("  reload:         not watching ({poll}), SIGHUP");
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
