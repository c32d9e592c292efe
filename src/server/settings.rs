//! `[server]`: the SPOP listener, connection limits and the message evaluated. Every
//! setting here needs a restart to change.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spop::hello::{DEFAULT_FRAME_SIZE, MIN_FRAME_SIZE};
use crate::util::{Invalid, KeyPath, Listen};

/// Most `threads` accepted: far more than any machine this runs on has cores.
pub const MAX_THREADS: usize = 1024;

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// `"127.0.0.1:12345"`, `"[::1]:12345"` or `"unix:/run/spoa-guard.sock"`.
    pub listen: Listen,
    /// Largest frame body accepted and announced; HAProxy's offer is `tune.bufsize - 4`.
    pub max_frame_size: u32,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Listen backlog: HAProxy 3.x opens about one connection per concurrent request.
    pub backlog: u32,
    /// A connection with no complete frame for this long is closed with DISCONNECT
    /// status 2 (bytes of a frame still coming do not count).
    pub idle_timeout_secs: u64,
    /// A new connection must send its whole HAPROXY-HELLO within this long.
    pub hello_timeout_secs: u64,
    /// A peer that does not read the agent's answers for this long is disconnected.
    pub write_timeout_secs: u64,
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
            listen: Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 12345))),
            max_frame_size: DEFAULT_FRAME_SIZE,
            max_connections: 4096,
            backlog: 4096,
            idle_timeout_secs: 300,
            hello_timeout_secs: 5,
            write_timeout_secs: 10,
            shutdown_timeout_secs: 10,
            message: "guard-check".into(),
            threads: 1,
        }
    }
}

impl ServerSettings {
    /// Every problem, keys relative to `[server]`.
    pub fn validate(&self) -> Vec<Invalid> {
        let mut problems = Vec::new();
        let mut error = |key: &str, message: String| {
            problems.push(Invalid::error(KeyPath::of(key), message));
        };
        if self.max_frame_size < MIN_FRAME_SIZE {
            error(
                "max_frame_size",
                format!(
                    "{} is below the SPOP minimum of {MIN_FRAME_SIZE}",
                    self.max_frame_size
                ),
            );
        }
        if self.max_connections == 0 {
            error("max_connections", "must be at least 1".into());
        }
        for (key, value) in [
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("hello_timeout_secs", self.hello_timeout_secs),
            ("write_timeout_secs", self.write_timeout_secs),
        ] {
            if value == 0 {
                error(key, "must be at least 1".into());
            }
        }
        if self.message.is_empty() {
            error("message", "must not be empty".into());
        }
        if self.threads > MAX_THREADS {
            error(
                "threads",
                format!("{} is more than {MAX_THREADS}", self.threads),
            );
        }
        problems
    }

    /// Makes a relative unix socket path absolute against `base`.
    pub fn rebase(&mut self, base: &Path) {
        if let Listen::Unix(path) = &mut self.listen {
            *path = base.join(&*path);
        }
    }

    /// Threads serving connections, at least 1 (0 in the file: one per CPU).
    pub fn threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// The handshake deadline.
    pub fn hello_timeout(&self) -> Duration {
        Duration::from_secs(self.hello_timeout_secs)
    }

    /// The write deadline.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs)
    }

    /// The shutdown deadline.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// The listen backlog, at least 1.
    pub fn backlog(&self) -> u32 {
        self.backlog.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn settings(toml: &str) -> Result<ServerSettings, String> {
        toml::from_str(toml).map_err(|e| e.message().to_string())
    }

    #[test]
    fn defaults() {
        let s = settings("").unwrap();
        assert_eq!(s.listen, Listen::Tcp("127.0.0.1:12345".parse().unwrap()));
        assert_eq!((s.max_frame_size, s.threads()), (16380, 1));
        assert_eq!(s.message, "guard-check");
        assert!(s.validate().is_empty());
    }

    #[test]
    fn threads_zero_means_one_per_cpu_and_huge_counts_are_refused() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(settings("threads = 0").unwrap().threads(), cpus);
        assert_eq!(settings("threads = 4").unwrap().threads(), 4);
        let problems = settings("threads = 5000").unwrap().validate();
        assert_eq!(problems[0].to_string(), "threads: 5000 is more than 1024");
    }

    #[test]
    fn listen_addresses() {
        let unix = settings("listen = \"unix:run/guard.sock\"").unwrap();
        let mut rebased = unix.clone();
        rebased.rebase(Path::new("/etc/spoa-guard"));
        assert_eq!(
            rebased.listen,
            Listen::Unix(PathBuf::from("/etc/spoa-guard/run/guard.sock"))
        );
        assert_eq!(
            rebased.listen.to_string(),
            "unix:/etc/spoa-guard/run/guard.sock"
        );
        for (bad, needle) in [
            ("localhost", "not an address:port"),
            ("unix:", "socket path"),
        ] {
            let e = settings(&format!("listen = {bad:?}")).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn values_are_checked() {
        for (toml, key) in [
            ("max_frame_size = 100", "max_frame_size"),
            ("max_connections = 0", "max_connections"),
            ("idle_timeout_secs = 0", "idle_timeout_secs"),
            ("hello_timeout_secs = 0", "hello_timeout_secs"),
            ("write_timeout_secs = 0", "write_timeout_secs"),
            ("message = \"\"", "message"),
        ] {
            let problems = settings(toml).unwrap().validate();
            assert_eq!(problems.len(), 1, "{toml}");
            assert_eq!(problems[0].key.to_string(), key);
        }
        assert!(settings("max_frame_size = \"big\"")
            .unwrap_err()
            .contains("u32"));
    }
}
