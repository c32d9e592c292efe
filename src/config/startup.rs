//! The start-up sections that belong to the layers above `config` — `[log]` (read by
//! `serve` to set up logging) and `[reload]` (read by the reloader) — and [`Startup`],
//! every section that only takes effect at start. The sections of the layers below
//! (`[server]`, `[metrics]`, `[admin]`, `[insight]`, `[bans]`) are owned by those layers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bans::BanSettings;
use crate::fleet::FleetSettings;
use crate::insight::InsightConfig;
use crate::ops::{AdminSettings, MetricsSettings};
use crate::server::ServerSettings;
use crate::util::{Invalid, KeyPath};

/// Every setting that needs a restart to change. A reload keeps the `Startup` the agent
/// started with and only logs the keys that differ ([`super::Config::restart_changes`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Startup {
    /// `[server]`: the SPOP listener and connection limits.
    pub server: ServerSettings,
    /// `[metrics]`: the operations HTTP listener.
    pub metrics: MetricsSettings,
    /// `[log]`: log level and format, deny log rate.
    pub log: LogSettings,
    /// `[reload]`: how rule changes are noticed.
    pub reload: ReloadSettings,
    /// `[insight]`: the traffic-insight windows behind `/top`.
    pub insight: InsightConfig,
    /// `[bans]`: the ban state file and limits on bans.
    pub bans: BanSettings,
    /// `[admin]`: the admin listener.
    pub admin: AdminSettings,
    /// `[fleet]`: the store shared with the other agents of the fleet; `None`: alone.
    pub fleet: Option<FleetSettings>,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a `tracing` filter directive;
    /// the `RUST_LOG` environment variable wins when set.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
    /// At most this many denied requests are logged per second (one line each, with
    /// source, ASN, reason and rule); the rest are counted. 0 logs none.
    pub deny_lines_per_second: u32,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
            deny_lines_per_second: 10,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One flat JSON object per line, with stable keys (`util::json_log`).
    Json,
}

impl LogSettings {
    /// Every problem, keys relative to `[log]`.
    pub fn validate(&self) -> Vec<Invalid> {
        let mut problems = Vec::new();
        if let Err(error) = check_log_level(&self.level) {
            problems.push(Invalid::error(KeyPath::of("level"), error.to_string()));
        }
        if self.deny_lines_per_second > 1000 {
            problems.push(Invalid::error(
                KeyPath::of("deny_lines_per_second"),
                format!(
                    "{} is more than 1000; the point is to bound the log",
                    self.deny_lines_per_second
                ),
            ));
        }
        problems
    }
}

/// The level names a bare word may be.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Why a log level was refused.
#[derive(Debug, thiserror::Error)]
enum LevelError {
    /// A bare word that is not a level.
    #[error("{0:?} is not one of off, error, warn, info, debug, trace")]
    NotALevel(String),
    /// Not ASCII: target names and levels are, and `tracing`'s directive parser panics
    /// on some non-ASCII text (tokio-rs/tracing#3297), so it is refused before.
    #[error("{0:?}: only ASCII characters (targets and levels are ASCII)")]
    NotAscii(String),
    /// A filter directive `tracing` refuses.
    #[error("{level:?}: {source}")]
    Directive {
        /// As written.
        level: String,
        /// Why.
        source: tracing_subscriber::filter::ParseError,
    },
}

/// A bare word must be a level name (a typo would otherwise silently become a target
/// filter); anything with `=` or `,` is a full `tracing` filter directive.
fn check_log_level(level: &str) -> Result<(), LevelError> {
    let is_directive = level.contains(['=', ',', '[']);
    if !is_directive && !LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
        return Err(LevelError::NotALevel(level.to_string()));
    }
    filter(level).map(drop)
}

/// The `tracing` filter of `directives` (`[log] level` or `RUST_LOG`), refusing what its
/// parser would panic on.
///
/// # Errors
///
/// Non-ASCII text, or a directive `tracing` refuses: why, in one line.
pub fn log_filter(directives: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    filter(directives).map_err(|e| e.to_string())
}

fn filter(directives: &str) -> Result<tracing_subscriber::EnvFilter, LevelError> {
    if !directives.is_ascii() {
        return Err(LevelError::NotAscii(directives.to_string()));
    }
    tracing_subscriber::EnvFilter::try_new(directives).map_err(|source| LevelError::Directive {
        level: directives.to_string(),
        source,
    })
}

/// `[reload]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadSettings {
    /// Watch the configuration and every rule file (inotify) and reload on change.
    pub watch: bool,
    /// Reload once no watched file has changed for this long, so that an editor's or a
    /// deployment's burst of events is one reload.
    pub debounce_ms: u64,
    /// Also compare the files' stamps (inode, size, modification time) this often, which
    /// catches what events miss (a replaced directory, a full event queue, network file
    /// systems). 0 turns it off.
    pub poll_secs: u64,
}

impl Default for ReloadSettings {
    fn default() -> Self {
        Self {
            watch: true,
            debounce_ms: 200,
            poll_secs: 5,
        }
    }
}

impl ReloadSettings {
    /// Quiet time after the last change before reloading.
    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }

    /// Stamp comparison interval, if any.
    pub fn poll(&self) -> Option<Duration> {
        (self.poll_secs > 0).then(|| Duration::from_secs(self.poll_secs))
    }

    /// Every problem, keys relative to `[reload]`.
    pub fn validate(&self) -> Vec<Invalid> {
        if self.debounce_ms > 60_000 {
            return vec![Invalid::error(
                KeyPath::of("debounce_ms"),
                format!(
                    "{} is over a minute; changes would wait that long",
                    self.debounce_ms
                ),
            )];
        }
        Vec::new()
    }
}
