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
    /// `[log]`: log level and format (restart to change).
    pub log: LogSettings,
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
        }
    }
}

/// `[lists]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListsSettings {
    /// Allow-list files: a match allows the request and skips every other rule.
    pub allow: Vec<PathBuf>,
    /// Block-list files: a match denies with reason `blocklist`.
    pub block: Vec<PathBuf>,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a `tracing` filter directive;
    /// the `RUST_LOG` environment variable wins when set.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
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
    /// Rule inputs, paths made absolute.
    pub lists: ListsConfig,
    /// Logging.
    pub log: LogSettings,
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
}

/// Validated `[lists]`: absolute paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListsConfig {
    /// Allow lists, in priority order.
    pub allow: Vec<PathBuf>,
    /// Block lists, in priority order (the first one matching names the rule).
    pub block: Vec<PathBuf>,
}

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
            .with_list_parse_key("lists.block");
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
        let server = ServerConfig {
            listen,
            max_frame_size: s.max_frame_size,
            max_connections: s.max_connections,
            backlog: s.backlog.max(1),
            idle_timeout: Duration::from_secs(s.idle_timeout_secs),
            shutdown_timeout: Duration::from_secs(s.shutdown_timeout_secs),
            message: s.message,
        };
        let resolve = |paths: Vec<PathBuf>| paths.into_iter().map(|p| base.join(p)).collect();
        let lists = ListsConfig {
            allow: resolve(self.lists.allow),
            block: resolve(self.lists.block),
        };
        check_log_level(&self.log.level).map_err(|m| error(format!("log.level: {m}")))?;
        Ok(Config {
            path: path.to_path_buf(),
            server,
            lists,
            log: self.log,
        })
    }
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
        assert!(c.lists.block.is_empty());
    }

    #[test]
    fn paths_are_relative_to_the_config_file() {
        let c = validate(
            "[lists]\nallow = [\"lists/allow.txt\"]\nblock = [\"/abs/block.txt\", \"b.txt\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.lists.allow,
            vec![PathBuf::from("/etc/spoa-guard/lists/allow.txt")]
        );
        assert_eq!(
            c.lists.block,
            vec![
                PathBuf::from("/abs/block.txt"),
                PathBuf::from("/etc/spoa-guard/b.txt")
            ]
        );
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
}
