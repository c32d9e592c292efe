//! A real Redis for the tests (fleet mode): `redis-server` started on a free loopback
//! port in a temporary directory, never the system service, stopped by PID when dropped;
//! it can be stopped and started again on the same port (a Redis restarted empty).
//!
//! A missing `redis-server` prints `SKIPPED:`; under `CI=true` it fails the test instead
//! (`.ci/run` and `scripts/test` install Debian's `redis-server`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::haproxy::{free_port, in_ci};

/// A running `redis-server` of the test's own.
pub struct Redis {
    child: Option<Child>,
    binary: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// The `redis-server` binary: `$REDIS_SERVER`, else on `PATH`, else `/usr/bin`.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("REDIS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|p| p.is_file())
    });
    found.or_else(|| {
        let usr = PathBuf::from("/usr/bin/redis-server");
        usr.is_file().then_some(usr)
    })
}

impl Redis {
    /// A fresh Redis, or `None` after a `SKIPPED:` line when there is no
    /// `redis-server` (a panic under `CI=true`).
    pub fn start() -> Option<Redis> {
        let Some(binary) = binary() else {
            assert!(
                !in_ci(),
                "redis-server is required in CI (CI=true): apt-get install redis-server \
                 or set REDIS_SERVER"
            );
            eprintln!("SKIPPED: redis-server not found (apt-get install redis-server)");
            return None;
        };
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut redis = Redis {
            child: None,
            binary,
            addr,
            dir: tempfile::tempdir().unwrap(),
        };
        redis.restart();
        Some(redis)
    }

    /// Starts it again after [`Redis::stop`], on the same port, empty (no persistence).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis already running");
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let child = Command::new(&self.binary)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server never answered PING on {}:\n{}",
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it (SIGKILL: a crash, nothing saved) and waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends one command (RESP array of bulk strings) and returns the first line of the
    /// answer (`+PONG`, `:1`, `$5` …), or `None` when nothing answers.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        command_at(self.addr, args)
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends one command to the Redis at `addr` (from the calling thread's network
/// namespace) and returns the first line of the answer (`+PONG`, `:1`, `$5` …), or
/// `None` when nothing answers within 2 s.
pub fn command_at(addr: SocketAddr, args: &[&str]) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read(&mut byte).ok()? == 1 {
        if byte[0] == b'\n' {
            break;
        }
        answer.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&answer).trim_end().to_string();
    (!line.is_empty()).then_some(line)
}
