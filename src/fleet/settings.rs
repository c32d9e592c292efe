//! `[fleet]`: which store the agents of a fleet share, under which name, how often they
//! exchange, and the secret their key hash is keyed with.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::util::{parse_duration, Invalid, KeyPath};

/// Shortest and longest `sync_interval`.
const INTERVALS: (Duration, Duration) = (Duration::from_millis(20), Duration::from_secs(10));

/// `[fleet]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSettings {
    /// `redis://[user:password@]host:port/db`, `rediss://…` (TLS) or
    /// `redis+unix:///path/redis.sock`.
    pub redis: String,
    /// A file holding the password (the first line), instead of one in the URL.
    pub password_file: Option<PathBuf>,
    /// The fleet: agents with the same name share limits and bans. Letters, digits, `.`,
    /// `_`, `-`; at most 64.
    pub name: String,
    /// How often each agent exchanges counts with the store (`250ms`).
    #[serde(default = "default_interval")]
    pub sync_interval: String,
    /// A file holding the secret (the first line) every agent of the fleet keys its
    /// rate-limit key hash with. Without one the hash is keyed with the name alone.
    pub secret_file: Option<PathBuf>,
    /// Most rate-limit keys sent in one exchange, heaviest first; the rest wait for the
    /// next one.
    #[serde(default = "default_max_keys")]
    pub max_keys_per_sync: usize,
    /// How long a starting agent waits for the fleet's bans before it serves anyway.
    #[serde(default = "default_startup_wait")]
    pub startup_wait: String,
}

fn default_interval() -> String {
    "250ms".into()
}

fn default_max_keys() -> usize {
    20_000
}

fn default_startup_wait() -> String {
    "3s".into()
}

impl FleetSettings {
    /// `sync_interval` (the default if unreadable; `validate` reports it).
    pub fn interval(&self) -> Duration {
        parse_duration(&self.sync_interval).unwrap_or(Duration::from_millis(250))
    }

    /// `startup_wait` (the default if unreadable; `validate` reports it).
    pub fn startup_wait(&self) -> Duration {
        parse_duration(&self.startup_wait).unwrap_or(Duration::from_secs(3))
    }

    /// Every problem, keys relative to `[fleet]`.
    pub fn validate(&self) -> Vec<Invalid> {
        let mut problems = Vec::new();
        let at = KeyPath::of;
        match self.redis.split_once("://").map(|(scheme, _)| scheme) {
            Some("redis" | "rediss" | "redis+unix" | "unix" | "valkey" | "valkeys" | "valkey+unix") => {
                if let Err(e) = redis::Client::open(self.redis.as_str()) {
                    problems.push(Invalid::error(at("redis"), format!("not a usable URL: {e}")));
                }
            }
            _ => problems.push(Invalid::error(
                at("redis"),
                format!(
                    "{:?} is not a Redis URL (redis://host:6379/0, rediss://… for TLS, redis+unix:///path)",
                    self.redis
                ),
            )),
        }
        if self.password_file.is_some() && self.redis.contains('@') {
            problems.push(Invalid::error(
                at("password_file"),
                "the URL has credentials already; give the password in one place",
            ));
        }
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            problems.push(Invalid::error(
                at("name"),
                format!(
                    "{:?}: 1 to 64 letters, digits, '.', '_' or '-' (it names the fleet's keys in Redis)",
                    self.name
                ),
            ));
        }
        match parse_duration(&self.sync_interval) {
            Ok(d) if d >= INTERVALS.0 && d <= INTERVALS.1 => {}
            Ok(_) => problems.push(Invalid::error(
                at("sync_interval"),
                "must be between 20ms and 10s (250ms is a good start)",
            )),
            Err(e) => problems.push(Invalid::error(at("sync_interval"), e)),
        }
        match parse_duration(&self.startup_wait) {
            Ok(d) if d <= Duration::from_secs(60) => {}
            Ok(_) => problems.push(Invalid::error(at("startup_wait"), "at most 60s")),
            Err(e) => problems.push(Invalid::error(at("startup_wait"), e)),
        }
        if self.max_keys_per_sync == 0 {
            problems.push(Invalid::error(
                at("max_keys_per_sync"),
                "must be at least 1",
            ));
        }
        for (key, path) in [
            ("password_file", &self.password_file),
            ("secret_file", &self.secret_file),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                problems.push(Invalid::error(at(key), "empty path; leave the key out"));
            }
        }
        problems
    }

    /// Makes relative file paths relative to `base` (the configuration's directory).
    pub fn rebase(&mut self, base: &Path) {
        for path in [&mut self.password_file, &mut self.secret_file]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }
}

/// The first line of a secret file, without surrounding white space.
///
/// # Errors
///
/// The file cannot be read, or its first line is empty: `file: what is wrong`.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err(format!(
            "{}: empty; the secret is its first line",
            path.display()
        ));
    }
    Ok(line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> FleetSettings {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn defaults_and_checks() {
        let s = settings("redis = \"redis://127.0.0.1:6379/0\"\nname = \"prod-eu\"\n");
        assert_eq!(s.interval(), Duration::from_millis(250));
        assert_eq!(s.startup_wait(), Duration::from_secs(3));
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        for (toml, key) in [
            ("redis = \"http://x\"\nname = \"a\"", "redis"),
            ("redis = \"redis://h\"\nname = \"a b\"", "name"),
            ("redis = \"redis://h\"\nname = \"{a}\"", "name"),
            (
                "redis = \"redis://h\"\nname = \"a\"\nsync_interval = \"5ms\"",
                "sync_interval",
            ),
            (
                "redis = \"redis://h\"\nname = \"a\"\nsync_interval = \"5\"",
                "sync_interval",
            ),
            (
                "redis = \"redis://h\"\nname = \"a\"\nmax_keys_per_sync = 0",
                "max_keys_per_sync",
            ),
            (
                "redis = \"redis://:pw@h\"\nname = \"a\"\npassword_file = \"p\"",
                "password_file",
            ),
        ] {
            let problems = settings(toml).validate();
            assert_eq!(problems.len(), 1, "{toml}: {problems:?}");
            assert_eq!(problems[0].key.to_string(), key, "{toml}");
        }
    }

    #[test]
    fn a_secret_is_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "  s3cret \nrest\n").unwrap();
        assert_eq!(read_secret(&path).unwrap(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_secret(&path).unwrap_err().contains("empty"));
        assert!(read_secret(&dir.path().join("none")).is_err());
    }
}
