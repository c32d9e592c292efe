//! The TOML configuration: read with the `config` crate (file plus `SPOA_GUARD__*`
//! environment overrides) into [`Settings`], then checked by [`Settings::validate`] into
//! a frozen [`Config`] whose fields are already parsed (socket addresses, durations,
//! absolute paths).
//!
//! Section and key names are a user-facing contract (design.md "Configuration"). Unknown
//! keys are errors that name the key, so a typo never silently does nothing.
//!
//! Which settings apply when: everything under `[lists]` (and the rule sections that
//! follow) is reloadable; `[server]` and `[log]` need a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::spop::hello::{DEFAULT_FRAME_SIZE, MIN_FRAME_SIZE};

/// Prefix of environment overrides: `SPOA_GUARD__SERVER__LISTEN=127.0.0.1:9000`.
pub const ENV_PREFIX: &str = "SPOA_GUARD";

/// Most `[server] threads` accepted: far more than any machine this runs on has cores.
pub const MAX_THREADS: usize = 1024;

/// A configuration problem, reported with the file it is in.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The configuration file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// The configuration as written, before validation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `[server]`: the SPOP listener and connection limits (restart to change).
    pub server: ServerSettings,
    /// `[lists]`: IP/CIDR allow and block list files.
    pub lists: ListsSettings,
    /// `[asn]`: IP-to-ASN databases and blocked autonomous systems.
    pub asn: AsnSettings,
    /// `[[user_agent]]`: ordered user-agent rules.
    pub user_agent: Vec<UserAgentSettings>,
    /// `[[limit]]`: token-bucket rate limits.
    pub limit: Vec<LimitSettings>,
    /// `[log]`: log level and format (restart to change).
    pub log: LogSettings,
    /// `[reload]`: how rule changes are noticed (restart to change).
    pub reload: ReloadSettings,
    /// `[metrics]`: the operations HTTP listener (restart to change).
    pub metrics: MetricsSettings,
    /// `[insight]`: the traffic-insight windows behind `/top` (restart to change).
    pub insight: crate::insight::InsightConfig,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// `"127.0.0.1:9464"`: serve `/metrics`, `/healthz`, `/readyz` and `/top` there.
    /// Absent: no HTTP listener.
    pub listen: Option<String>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// `"127.0.0.1:12345"`, `"[::1]:12345"` or `"unix:/run/spoa-guard.sock"`.
    pub listen: String,
    /// Largest frame body accepted and announced; HAProxy's offer is `tune.bufsize - 4`.
    pub max_frame_size: u32,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Listen backlog: HAProxy 3.x opens about one connection per concurrent request.
    pub backlog: u32,
    /// A connection with no frame for this long is closed with DISCONNECT status 2.
    pub idle_timeout_secs: u64,
    /// On SIGTERM/SIGINT, how long open connections get to finish before exit.
    pub shutdown_timeout_secs: u64,
    /// The SPOE message to evaluate; others get an empty ACK.
    pub message: String,
    /// Threads serving connections: 1 runs everything on one thread (the cheapest per
    /// request), N > 1 a work-stealing pool of N, 0 one per CPU.
    pub threads: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:12345".into(),
            max_frame_size: DEFAULT_FRAME_SIZE,
            max_connections: 4096,
            backlog: 4096,
            idle_timeout_secs: 300,
            shutdown_timeout_secs: 10,
            message: "guard-check".into(),
            threads: 1,
        }
    }
}

/// `[lists]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListsSettings {
    /// Allow-list files: a match allows the request and skips every other rule.
    pub allow: Vec<ListEntry>,
    /// Block-list files: a match denies with reason `blocklist`.
    pub block: Vec<ListEntry>,
}

/// One list file: a path, or `{ path = "...", dry_run = true }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ListEntry {
    /// Just the path.
    Path(PathBuf),
    /// A path with options.
    Table(ListTable),
}

/// The table form of a list entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListTable {
    /// The list file.
    pub path: PathBuf,
    /// Evaluate and count, never decide.
    #[serde(default)]
    pub dry_run: bool,
}

/// `[asn]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AsnSettings {
    /// IP-to-ASN databases (iptoasn TSV, ip-location-db CSV, MaxMind `.mmdb`; plain or
    /// gzip), all merged; the most specific range wins.
    pub databases: Vec<PathBuf>,
    /// Blocked ASNs: numbers or `"AS64496"` strings.
    pub block: Vec<AsnValue>,
    /// A file of blocked ASNs, one per line (`AS64496` or `64496`, `#` comments).
    pub block_file: Option<PathBuf>,
    /// Evaluate and count, never deny.
    pub dry_run: bool,
}

/// An ASN as written in the config: `64496` or `"AS64496"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AsnValue {
    /// A number.
    Number(u32),
    /// Text such as `AS64496`.
    Text(String),
}

/// One `[[user_agent]]` rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserAgentSettings {
    /// Reported as `txn.guard.rule` when the rule decides.
    pub name: String,
    /// A regular expression (Rust `regex` syntax) searched in the user agent.
    pub pattern: Option<String>,
    /// A file of patterns, one per line (`#` comments); any line matching is a match.
    pub file: Option<PathBuf>,
    /// Matches a missing or empty user agent.
    #[serde(default)]
    pub empty: bool,
    /// `allow` or `deny`.
    pub action: RuleAction,
    /// Case-insensitive matching.
    #[serde(default)]
    pub ignore_case: bool,
    /// Patterns are plain substrings, not regular expressions.
    #[serde(default)]
    pub literal: bool,
    /// Evaluate and count, never decide.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a user-agent rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// No later user-agent rule applies (rate limits still do).
    Allow,
    /// Deny with reason `user-agent`.
    Deny,
}

/// One `[[limit]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Reported as `txn.guard.rule` when the limit denies; identifies its state across
    /// reloads.
    pub name: String,
    /// What a bucket is per: `src`, `src/N`, `src/N/M`, `asn`, `host`, `path`, `method`,
    /// `arg:NAME`, `global`, joined with `+`.
    #[serde(default = "default_limit_key")]
    pub key: String,
    /// Tokens added per second (may be fractional: 0.1 is one every ten seconds).
    pub rate: f64,
    /// Bucket size: requests allowed at once after a quiet period. Default: `rate`
    /// rounded up, at least 1.
    pub burst: Option<u32>,
    /// Only requests whose path starts with this.
    pub path_prefix: Option<String>,
    /// Only these methods (case-insensitive).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Only requests for this host (case-insensitive, port ignored).
    pub host: Option<String>,
    /// Most keys tracked; beyond it new keys are not limited (and counted).
    pub max_keys: Option<usize>,
    /// Evaluate and count, never deny.
    #[serde(default)]
    pub dry_run: bool,
}

fn default_limit_key() -> String {
    "src".into()
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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

/// `[reload]`.
#[derive(Debug, Clone, Deserialize)]
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

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A unix socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// Listener and connection settings.
    pub server: ServerConfig,
    /// Everything reloadable: rule inputs, paths made absolute.
    pub rules: RulesConfig,
    /// Logging.
    pub log: LogSettings,
    /// How rule changes are noticed.
    pub reload: ReloadConfig,
    /// The operations HTTP listener, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// Traffic-insight settings.
    pub insight: crate::insight::InsightConfig,
}

impl Config {
    /// The configuration file and every rule file it names: what a reload reads, and
    /// what is watched. Absolute when the configuration path is.
    pub fn files(&self) -> Vec<PathBuf> {
        std::iter::once(self.path.as_path())
            .chain(self.rules.files())
            .map(Path::to_path_buf)
            .collect()
    }

    /// The settings that differ between `self` (in force) and `new` but only take effect
    /// after a restart, as `key (old → new)`; empty when a reload can apply everything.
    pub fn restart_changes(&self, new: &Config) -> Vec<String> {
        let mut changes = Vec::new();
        let mut compare = |key: &str, value: &dyn Fn(&Config) -> String| {
            let (old, new) = (value(self), value(new));
            if old != new {
                changes.push(format!("{key} ({old} → {new})"));
            }
        };
        compare("server.listen", &|c| c.server.listen.to_string());
        compare("server.max_frame_size", &|c| {
            c.server.max_frame_size.to_string()
        });
        compare("server.max_connections", &|c| {
            c.server.max_connections.to_string()
        });
        compare("server.backlog", &|c| c.server.backlog.to_string());
        compare("server.idle_timeout_secs", &|c| secs(c.server.idle_timeout));
        compare("server.shutdown_timeout_secs", &|c| {
            secs(c.server.shutdown_timeout)
        });
        compare("server.message", &|c| format!("{:?}", c.server.message));
        compare("server.threads", &|c| c.server.threads.to_string());
        compare("log.level", &|c| format!("{:?}", c.log.level));
        compare("log.format", &|c| format!("{:?}", c.log.format));
        compare("log.deny_lines_per_second", &|c| {
            c.log.deny_lines_per_second.to_string()
        });
        compare("reload.watch", &|c| c.reload.watch.to_string());
        compare("reload.debounce_ms", &|c| {
            c.reload.debounce.as_millis().to_string()
        });
        compare("reload.poll_secs", &|c| {
            c.reload.poll.map_or("0".into(), secs)
        });
        compare("metrics.listen", &|c| {
            c.metrics_listen.map_or("none".into(), |a| a.to_string())
        });
        compare("insight", &|c| format!("{:?}", c.insight));
        changes
    }
}

/// Whole seconds, as the `_secs` settings are written.
fn secs(d: Duration) -> String {
    d.as_secs().to_string()
}

/// Validated `[reload]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Watch files for changes.
    pub watch: bool,
    /// Quiet time after the last change before reloading.
    pub debounce: Duration,
    /// Stamp comparison interval, if any.
    pub poll: Option<Duration>,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        let s = ReloadSettings::default();
        Self {
            watch: s.watch,
            debounce: Duration::from_millis(s.debounce_ms),
            poll: Some(Duration::from_secs(s.poll_secs)),
        }
    }
}

/// Validated `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listener address.
    pub listen: Listen,
    /// Max frame size, at least 256.
    pub max_frame_size: u32,
    /// Connection cap, at least 1.
    pub max_connections: usize,
    /// Listen backlog.
    pub backlog: u32,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Shutdown deadline.
    pub shutdown_timeout: Duration,
    /// SPOE message name evaluated.
    pub message: String,
    /// Threads serving connections, at least 1 (0 in the file: one per CPU).
    pub threads: usize,
}

/// The validated rule sections: everything a reload rebuilds. Paths are absolute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RulesConfig {
    /// Allow lists, in priority order.
    pub allow: Vec<ListFile>,
    /// Block lists, in priority order (the first one matching names the rule).
    pub block: Vec<ListFile>,
    /// ASN databases and the blocked set.
    pub asn: AsnConfig,
    /// User-agent rules, in order.
    pub user_agents: Vec<UserAgentRule>,
    /// Rate limits, in order.
    pub limits: Vec<LimitConfig>,
}

impl RulesConfig {
    /// Every file the rules are read from, for `check` output and file watching.
    pub fn files(&self) -> Vec<&Path> {
        let mut files: Vec<&Path> = Vec::new();
        files.extend(
            self.allow
                .iter()
                .chain(&self.block)
                .map(|l| l.path.as_path()),
        );
        files.extend(self.asn.databases.iter().map(PathBuf::as_path));
        files.extend(self.asn.block_file.as_deref());
        files.extend(self.user_agents.iter().filter_map(|r| match &r.source {
            UaSource::File(path) => Some(path.as_path()),
            _ => None,
        }));
        files
    }
}

/// One list file and whether it is a dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFile {
    /// Absolute path.
    pub path: PathBuf,
    /// Evaluate and count, never decide.
    pub dry_run: bool,
}

/// Validated `[asn]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AsnConfig {
    /// Database files, absolute paths.
    pub databases: Vec<PathBuf>,
    /// Blocked ASNs given inline.
    pub block: Vec<u32>,
    /// File of blocked ASNs.
    pub block_file: Option<PathBuf>,
    /// Evaluate and count, never deny.
    pub dry_run: bool,
}

/// A validated `[[user_agent]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAgentRule {
    /// Rule name.
    pub name: String,
    /// What it matches.
    pub source: UaSource,
    /// What it does.
    pub action: RuleAction,
    /// Case-insensitive.
    pub ignore_case: bool,
    /// Substrings rather than regular expressions.
    pub literal: bool,
    /// Evaluate and count, never decide.
    pub dry_run: bool,
}

/// What a user-agent rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UaSource {
    /// One regular expression.
    Pattern(String),
    /// A file of patterns (absolute path).
    File(PathBuf),
    /// A missing or empty user agent.
    Empty,
}

/// A validated `[[limit]]`; the key is parsed when the limits are built.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitConfig {
    /// Limit name.
    pub name: String,
    /// Key specification, e.g. `src+path`.
    pub key: String,
    /// Tokens per second, > 0.
    pub rate: f64,
    /// Bucket size, >= 1.
    pub burst: u32,
    /// Path prefix condition.
    pub path_prefix: Option<String>,
    /// Method condition, upper-case; empty means any.
    pub methods: Vec<String>,
    /// Host condition, lower-case without port.
    pub host: Option<String>,
    /// Key cap.
    pub max_keys: usize,
    /// Evaluate and count, never deny.
    pub dry_run: bool,
}

/// Default cap on keys per limit.
pub const DEFAULT_MAX_KEYS: usize = 500_000;

impl Config {
    /// Reads, merges environment overrides into, and validates the file at `path`.
    ///
    /// # Errors
    ///
    /// A missing or unreadable file, TOML syntax errors, unknown keys, values of the wrong
    /// type and values out of range, each with the file name.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let settings = Settings::read(path)?;
        settings.validate(path)
    }
}

impl Settings {
    /// Reads the file at `path` plus `SPOA_GUARD__SECTION__KEY` environment overrides.
    ///
    /// # Errors
    ///
    /// Unreadable file, syntax errors, unknown keys and wrong types.
    pub fn read(path: &Path) -> Result<Settings, ConfigError> {
        let error = |message: String| ConfigError {
            path: path.display().to_string(),
            message,
        };
        if !path.is_file() {
            return Err(error("no such file (pass --config FILE)".into()));
        }
        let source = config::File::from(path)
            .format(config::FileFormat::Toml)
            .required(true);
        let env = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("lists.allow")
            .with_list_parse_key("lists.block")
            .with_list_parse_key("asn.databases")
            .with_list_parse_key("asn.block");
        config::Config::builder()
            .add_source(source)
            .add_source(env)
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| error(e.to_string()))
    }

    /// Parses TOML text directly (tests, tools); relative paths resolve against `base`.
    ///
    /// # Errors
    ///
    /// As [`Settings::read`].
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| ConfigError {
                path: "<inline>".into(),
                message: e.to_string(),
            })
    }

    /// Checks every value and resolves paths relative to the directory of `path`.
    ///
    /// # Errors
    ///
    /// The first invalid value, naming its key.
    pub fn validate(self, path: &Path) -> Result<Config, ConfigError> {
        let error = |message: String| ConfigError {
            path: path.display().to_string(),
            message,
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let s = self.server;
        let listen =
            parse_listen(&s.listen, &base).map_err(|m| error(format!("server.listen: {m}")))?;
        if s.max_frame_size < MIN_FRAME_SIZE {
            return Err(error(format!(
                "server.max_frame_size: {} is below the SPOP minimum of {MIN_FRAME_SIZE}",
                s.max_frame_size
            )));
        }
        if s.max_connections == 0 {
            return Err(error("server.max_connections: must be at least 1".into()));
        }
        if s.idle_timeout_secs == 0 {
            return Err(error("server.idle_timeout_secs: must be at least 1".into()));
        }
        if s.message.is_empty() {
            return Err(error("server.message: must not be empty".into()));
        }
        if s.threads > MAX_THREADS {
            return Err(error(format!(
                "server.threads: {} is more than {MAX_THREADS}",
                s.threads
            )));
        }
        let threads = match s.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let server = ServerConfig {
            listen,
            max_frame_size: s.max_frame_size,
            max_connections: s.max_connections,
            backlog: s.backlog.max(1),
            idle_timeout: Duration::from_secs(s.idle_timeout_secs),
            shutdown_timeout: Duration::from_secs(s.shutdown_timeout_secs),
            message: s.message,
            threads,
        };
        let rules = validate_rules(self.lists, self.asn, self.user_agent, self.limit, &base)
            .map_err(error)?;
        check_log_level(&self.log.level).map_err(|m| error(format!("log.level: {m}")))?;
        if self.log.deny_lines_per_second > 1000 {
            return Err(error(format!(
                "log.deny_lines_per_second: {} is more than 1000; the point is to bound the log",
                self.log.deny_lines_per_second
            )));
        }
        let r = self.reload;
        if r.debounce_ms > 60_000 {
            return Err(error(format!(
                "reload.debounce_ms: {} is over a minute; changes would wait that long",
                r.debounce_ms
            )));
        }
        let reload = ReloadConfig {
            watch: r.watch,
            debounce: Duration::from_millis(r.debounce_ms),
            poll: (r.poll_secs > 0).then(|| Duration::from_secs(r.poll_secs)),
        };
        let metrics_listen = match &self.metrics.listen {
            None => None,
            Some(text) => Some(text.trim().parse::<SocketAddr>().map_err(|_| {
                error(format!(
                    "metrics.listen: {text:?} is not an address:port (\"127.0.0.1:9464\", \"[::1]:9464\")"
                ))
            })?),
        };
        if let (Some(metrics), Listen::Tcp(spop)) = (metrics_listen, &server.listen) {
            if metrics == *spop {
                return Err(error(format!(
                    "metrics.listen: {metrics} is also server.listen; use another port"
                )));
            }
        }
        self.insight
            .validate()
            .map_err(|m| error(format!("insight: {m}")))?;
        Ok(Config {
            path: path.to_path_buf(),
            server,
            rules,
            log: self.log,
            reload,
            metrics_listen,
            insight: self.insight,
        })
    }
}

fn validate_rules(
    lists: ListsSettings,
    asn: AsnSettings,
    user_agents: Vec<UserAgentSettings>,
    limits: Vec<LimitSettings>,
    base: &Path,
) -> Result<RulesConfig, String> {
    let list_file = |entry: ListEntry| match entry {
        ListEntry::Path(path) => ListFile {
            path: base.join(path),
            dry_run: false,
        },
        ListEntry::Table(t) => ListFile {
            path: base.join(t.path),
            dry_run: t.dry_run,
        },
    };
    let allow = lists.allow.into_iter().map(list_file).collect();
    let block = lists.block.into_iter().map(list_file).collect();

    let mut blocked = Vec::with_capacity(asn.block.len());
    for value in asn.block {
        blocked.push(match value {
            AsnValue::Number(n) => n,
            AsnValue::Text(text) => parse_asn(&text).ok_or_else(|| {
                format!("asn.block: {text:?} is not an AS number (64496 or \"AS64496\")")
            })?,
        });
    }
    if blocked.contains(&0) {
        return Err("asn.block: AS 0 means \"not routed\" and never matches; remove it".into());
    }
    if (!blocked.is_empty() || asn.block_file.is_some()) && asn.databases.is_empty() {
        return Err("asn: blocking ASNs needs at least one file in asn.databases".into());
    }
    let asn = AsnConfig {
        databases: asn.databases.into_iter().map(|p| base.join(p)).collect(),
        block: blocked,
        block_file: asn.block_file.map(|p| base.join(p)),
        dry_run: asn.dry_run,
    };

    let mut rules = Vec::with_capacity(user_agents.len());
    for (i, ua) in user_agents.into_iter().enumerate() {
        let at = format!("user_agent[{i}] ({:?})", ua.name);
        check_name(&ua.name).map_err(|m| format!("{at}: name: {m}"))?;
        if rules.iter().any(|r: &UserAgentRule| r.name == ua.name) {
            return Err(format!("{at}: another user_agent rule has the same name"));
        }
        let source = match (ua.pattern, ua.file, ua.empty) {
            (Some(pattern), None, false) => UaSource::Pattern(pattern),
            (None, Some(file), false) => UaSource::File(base.join(file)),
            (None, None, true) => UaSource::Empty,
            _ => {
                return Err(format!(
                    "{at}: give exactly one of pattern, file or empty = true"
                ))
            }
        };
        rules.push(UserAgentRule {
            name: ua.name,
            source,
            action: ua.action,
            ignore_case: ua.ignore_case,
            literal: ua.literal,
            dry_run: ua.dry_run,
        });
    }

    let mut validated: Vec<LimitConfig> = Vec::with_capacity(limits.len());
    for (i, limit) in limits.into_iter().enumerate() {
        let at = format!("limit[{i}] ({:?})", limit.name);
        check_name(&limit.name).map_err(|m| format!("{at}: name: {m}"))?;
        if validated.iter().any(|l| l.name == limit.name) {
            return Err(format!("{at}: another limit has the same name"));
        }
        if !(limit.rate.is_finite() && limit.rate > 0.0) {
            return Err(format!(
                "{at}: rate must be a number of tokens per second above 0"
            ));
        }
        let burst = match limit.burst {
            Some(0) => return Err(format!("{at}: burst must be at least 1")),
            Some(burst) => burst,
            None => default_burst(limit.rate),
        };
        let max_keys = match limit.max_keys {
            Some(0) => return Err(format!("{at}: max_keys must be at least 1")),
            Some(n) => n,
            None => DEFAULT_MAX_KEYS,
        };
        validated.push(LimitConfig {
            name: limit.name,
            key: limit.key,
            rate: limit.rate,
            burst,
            path_prefix: limit.path_prefix,
            methods: limit
                .methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            host: limit.host.map(|h| h.to_ascii_lowercase()),
            max_keys,
            dry_run: limit.dry_run,
        });
    }
    Ok(RulesConfig {
        allow,
        block,
        asn,
        user_agents: rules,
        limits: validated,
    })
}

/// `rate` rounded up, at least 1: a bucket that holds one second's worth.
fn default_burst(rate: f64) -> u32 {
    let ceil = rate.ceil();
    if ceil >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        // In range and integral: the conversion is exact.
        format!("{ceil:.0}").parse::<u32>().unwrap_or(1).max(1)
    }
}

/// Parses `64496`, `AS64496` or `as64496`.
pub fn parse_asn(text: &str) -> Option<u32> {
    let text = text.trim();
    let digits = text
        .strip_prefix("AS")
        .or_else(|| text.strip_prefix("as"))
        .or_else(|| text.strip_prefix("As"))
        .unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Rule names become `txn.guard.rule` values and metric labels: keep them short and plain.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err("may only use letters, digits and - _ . :".into());
    }
    Ok(())
}

/// A bare word must be a level name (a typo would otherwise silently become a target
/// filter); anything with `=` or `,` is a full `tracing` filter directive.
fn check_log_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let is_directive = level.contains(['=', ',', '[']);
    if !is_directive && !LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
        return Err(format!("{level:?} is not one of {}", LEVELS.join(", ")));
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(drop)
        .map_err(|e| format!("{level:?}: {e}"))
}

fn parse_listen(text: &str, base: &Path) -> Result<Listen, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("\"unix:\" needs a socket path, e.g. unix:/run/spoa-guard.sock".into());
        }
        return Ok(Listen::Unix(base.join(path)));
    }
    text.parse::<SocketAddr>().map(Listen::Tcp).map_err(|_| {
        format!("{text:?} is not an address:port (e.g. 127.0.0.1:12345) or unix:/path")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(text: &str) -> Result<Config, ConfigError> {
        Settings::from_toml(text)?.validate(Path::new("/etc/spoa-guard/spoa-guard.toml"))
    }

    #[test]
    fn defaults() {
        let c = validate("").unwrap();
        assert_eq!(
            c.server.listen,
            Listen::Tcp("127.0.0.1:12345".parse().unwrap())
        );
        assert_eq!(c.server.max_frame_size, 16380);
        assert_eq!(c.server.message, "guard-check");
        assert_eq!(c.server.threads, 1);
        assert!(c.rules.block.is_empty());
    }

    #[test]
    fn threads_zero_means_one_per_cpu_and_huge_counts_are_refused() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(
            validate("[server]\nthreads = 0\n").unwrap().server.threads,
            cpus
        );
        assert_eq!(
            validate("[server]\nthreads = 4\n").unwrap().server.threads,
            4
        );
        let err = validate("[server]\nthreads = 5000\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("server.threads: 5000 is more than 1024"),
            "{err}"
        );
    }

    #[test]
    fn paths_are_relative_to_the_config_file() {
        let c = validate(
            "[lists]\nallow = [\"lists/allow.txt\"]\nblock = [\"/abs/block.txt\", { path = \"b.txt\", dry_run = true }]\n\
             [asn]\ndatabases = [\"data/asn.csv.gz\"]\nblock_file = \"asn.txt\"\n\
             [[user_agent]]\nname = \"bots\"\nfile = \"bots.list\"\naction = \"deny\"\n",
        )
        .unwrap();
        let file = |path: &str, dry_run| ListFile {
            path: PathBuf::from(path),
            dry_run,
        };
        assert_eq!(
            c.rules.allow,
            vec![file("/etc/spoa-guard/lists/allow.txt", false)]
        );
        assert_eq!(
            c.rules.block,
            vec![
                file("/abs/block.txt", false),
                file("/etc/spoa-guard/b.txt", true)
            ]
        );
        assert_eq!(
            c.rules.asn.databases,
            vec![PathBuf::from("/etc/spoa-guard/data/asn.csv.gz")]
        );
        assert_eq!(
            c.rules.asn.block_file,
            Some(PathBuf::from("/etc/spoa-guard/asn.txt"))
        );
        assert_eq!(
            c.rules.user_agents[0].source,
            UaSource::File(PathBuf::from("/etc/spoa-guard/bots.list"))
        );
        assert_eq!(c.rules.files().len(), 6);
    }

    #[test]
    fn the_design_example_validates() {
        let c = validate(
            r#"
[asn]
databases = ["data/asn-ipv4.csv.gz", "data/asn-ipv6.csv.gz"]
block = [64496, "AS64511"]

[[user_agent]]
name = "scanners"
pattern = "(?i)sqlmap|nikto|masscan|zgrab"
action = "deny"

[[user_agent]]
name = "empty-ua"
empty = true
action = "deny"

[[limit]]
name = "per-client"
key = "src"
rate = 50
burst = 100

[[limit]]
name = "login"
key = "src+path"
path_prefix = "/login"
methods = ["post"]
rate = 0.5
dry_run = true
"#,
        )
        .unwrap();
        let r = c.rules;
        assert_eq!(r.asn.block, vec![64496, 64511]);
        assert_eq!(r.user_agents[1].source, UaSource::Empty);
        assert_eq!(r.limits[0].burst, 100);
        assert_eq!((r.limits[1].burst, r.limits[1].dry_run), (1, true));
        assert_eq!(r.limits[1].methods, vec!["POST".to_string()]);
    }

    #[test]
    fn rule_sections_are_checked() {
        for (text, needle) in [
            ("[asn]\nblock = [1]\n", "asn.databases"),
            ("[asn]\ndatabases = [\"a\"]\nblock = [\"ASX\"]\n", "ASX"),
            ("[asn]\ndatabases = [\"a\"]\nblock = [0]\n", "AS 0"),
            (
                "[[user_agent]]\nname = \"a\"\naction = \"deny\"\n",
                "exactly one of",
            ),
            (
                "[[user_agent]]\nname = \"a\"\npattern = \"x\"\nempty = true\naction = \"deny\"\n",
                "exactly one of",
            ),
            (
                "[[user_agent]]\nname = \"a b\"\npattern = \"x\"\naction = \"deny\"\n",
                "name",
            ),
            (
                "[[user_agent]]\nname = \"a\"\npattern = \"x\"\naction = \"block\"\n",
                "block",
            ),
            ("[[limit]]\nname = \"l\"\nrate = 0\n", "rate"),
            ("[[limit]]\nname = \"l\"\nrate = 1\nburst = 0\n", "burst"),
            (
                "[[limit]]\nname = \"l\"\nrate = 1\n[[limit]]\nname = \"l\"\nrate = 2\n",
                "same name",
            ),
            (
                "[[limit]]\nname = \"l\"\nrate = 1\nkeys = \"src\"\n",
                "keys",
            ),
        ] {
            let err = validate(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn asn_numbers() {
        assert_eq!(parse_asn("AS64496"), Some(64496));
        assert_eq!(parse_asn(" as13335 "), Some(13335));
        assert_eq!(parse_asn("15169"), Some(15169));
        for bad in ["", "AS", "AS-1", "4294967296", "12a"] {
            assert_eq!(parse_asn(bad), None, "{bad}");
        }
        assert_eq!(default_burst(0.1), 1);
        assert_eq!(default_burst(50.0), 50);
        assert_eq!(default_burst(2.5), 3);
    }

    #[test]
    fn unix_listener() {
        let c = validate("[server]\nlisten = \"unix:/run/spoa-guard.sock\"\n").unwrap();
        assert_eq!(
            c.server.listen,
            Listen::Unix(PathBuf::from("/run/spoa-guard.sock"))
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = validate("[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = validate("[surver]\n").unwrap_err().to_string();
        assert!(err.contains("surver"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("[server]\nlisten = \"localhost\"\n", "server.listen"),
            ("[server]\nmax_frame_size = 100\n", "server.max_frame_size"),
            ("[server]\nmax_connections = 0\n", "server.max_connections"),
            ("[log]\nlevel = \"loud!!\"\n", "log.level"),
            ("[reload]\ndebounce_ms = 600000\n", "reload.debounce_ms"),
            ("[metrics]\nlisten = \"localhost\"\n", "metrics.listen"),
            (
                "[metrics]\nlisten = \"127.0.0.1:12345\"\n",
                "metrics.listen",
            ),
        ] {
            let err = validate(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = validate("[log]\nformat = \"xml\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("xml"), "{err}");
        let err = validate("[server]\nmax_frame_size = \"big\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_frame_size"), "{err}");
    }

    #[test]
    fn reload_settings() {
        let c = validate("").unwrap();
        assert_eq!(c.reload, ReloadConfig::default());
        assert!(c.reload.watch);
        assert_eq!(c.reload.debounce, Duration::from_millis(200));
        assert_eq!(c.reload.poll, Some(Duration::from_secs(5)));
        let c = validate("[reload]\nwatch = false\ndebounce_ms = 0\npoll_secs = 0\n").unwrap();
        assert_eq!(
            c.reload,
            ReloadConfig {
                watch: false,
                debounce: Duration::ZERO,
                poll: None
            }
        );
        let err = validate("[reload]\nwatsh = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("watsh"), "{err}");
    }

    #[test]
    fn files_are_the_config_then_every_rule_file() {
        let c =
            validate("[lists]\nblock = [\"b.txt\"]\n[asn]\ndatabases = [\"asn.csv\"]\n").unwrap();
        assert_eq!(
            c.files(),
            vec![
                PathBuf::from("/etc/spoa-guard/spoa-guard.toml"),
                PathBuf::from("/etc/spoa-guard/b.txt"),
                PathBuf::from("/etc/spoa-guard/asn.csv"),
            ]
        );
    }

    #[test]
    fn restart_changes_name_each_start_time_setting() {
        let old = validate("").unwrap();
        assert!(old.restart_changes(&old).is_empty());
        let rules_only = validate("[lists]\nblock = [\"b.txt\"]\n").unwrap();
        assert!(
            old.restart_changes(&rules_only).is_empty(),
            "rules reload live"
        );
        let new = validate(
            "[server]\nlisten = \"unix:/run/guard.sock\"\nidle_timeout_secs = 60\n\
             [log]\nformat = \"json\"\n[reload]\npoll_secs = 0\n",
        )
        .unwrap();
        assert_eq!(
            old.restart_changes(&new),
            vec![
                "server.listen (127.0.0.1:12345 → unix:/run/guard.sock)",
                "server.idle_timeout_secs (300 → 60)",
                "log.format (Text → Json)",
                "reload.poll_secs (5 → 0)",
            ]
        );
        let metrics = validate("[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(
            old.restart_changes(&metrics),
            vec!["metrics.listen (none → 127.0.0.1:9464)"]
        );
    }
}
