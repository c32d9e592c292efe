//! Starting a real spoa-guard agent inside the test process, on 127.0.0.1:0, with rule
//! files written to a temporary directory (through `serve::start`, as `main` does); the
//! agent binary as a process of its own; and raw-frame helpers over TCP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use spoa_guard::config::Config;
use spoa_guard::serve::{self, Running};
use spoa_guard::spop::{Arg, Frame, Message, SpopCodec, TypedData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Framed};
use tokio_util::sync::CancellationToken;

/// An agent serving on a loopback port until dropped or [`Agent::stop`]ped.
pub struct Agent {
    pub addr: SocketAddr,
    /// The operations listener (`/metrics`, `/healthz`, `/readyz`, `/top`), if started
    /// with one.
    pub ops: Option<SocketAddr>,
    /// The running agent's state: rules in force, metrics, insight.
    pub state: Arc<spoa_guard::agent::Agent>,
    pub shutdown: CancellationToken,
    running: Option<Running>,
    pub dir: tempfile::TempDir,
}

/// Allow and block list contents used unless a test says otherwise.
pub const ALLOW: &str = "127.0.0.77\n192.0.2.10\n";
pub const BLOCK: &str = "# test block list\n127.0.0.66\n127.0.0.77\n127.0.1.0/24 ; a CIDR\n2001:db8:bad::/48\n203.0.113.7\n";

impl Agent {
    /// An agent with the default test lists.
    pub async fn start() -> Agent {
        Self::with_lists(ALLOW, BLOCK, "").await
    }

    /// An agent with the default test lists and its operations listener on a free
    /// loopback port.
    pub async fn with_ops() -> Agent {
        Self::configured(ALLOW, BLOCK, "", "[metrics]\nlisten = \"127.0.0.1:0\"\n").await
    }

    /// An agent with the given list contents and extra `[server]` lines.
    pub async fn with_lists(allow: &str, block: &str, server_extra: &str) -> Agent {
        Self::configured(allow, block, server_extra, "").await
    }

    /// An agent with the given list contents, extra `[server]` lines and extra sections.
    pub async fn configured(allow: &str, block: &str, server_extra: &str, sections: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("allow.txt"), allow).unwrap();
        std::fs::write(dir.path().join("blocklist.txt"), block).unwrap();
        let config_path = dir.path().join("spoa-guard.toml");
        std::fs::write(
            &config_path,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout_secs = 5\n{server_extra}\n\
                 [lists]\nallow = [\"allow.txt\"]\nblock = [\"blocklist.txt\"]\n{sections}"
            ),
        )
        .unwrap();
        let config = Config::load(&config_path).unwrap();
        let running = serve::start(config).await.unwrap();
        Agent {
            addr: running.spop_addr().unwrap(),
            ops: running.ops_addr(),
            state: running.agent().clone(),
            shutdown: running.shutdown_token(),
            running: Some(running),
            dir,
        }
    }

    /// Path of a file in the agent's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Cancels the agent and waits until it has stopped.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(10), running.stop())
                .await
                .expect("agent did not stop");
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A `guard-check` message with the given source and optional user agent/path.
pub fn guard_check(src: TypedData) -> Message {
    Message {
        name: Bytes::from_static(b"guard-check"),
        args: vec![
            arg("src", src),
            arg("method", TypedData::str("GET")),
            arg("path", TypedData::str("/")),
            arg("host", TypedData::str("www.example.com")),
            arg("ua", TypedData::str("curl/8.0")),
        ],
    }
}

pub fn arg(name: &'static str, value: TypedData) -> Arg {
    Arg {
        name: Bytes::from_static(name.as_bytes()),
        value,
    }
}

pub fn ipv4(text: &str) -> TypedData {
    TypedData::Ipv4(text.parse().unwrap())
}

pub fn ipv6(text: &str) -> TypedData {
    TypedData::Ipv6(text.parse().unwrap())
}

/// Reads a captured frame (hex) from tests/fixtures/captures.
pub fn capture(name: &str) -> Vec<u8> {
    super::captures::read_hex(name)
}

/// A raw TCP connection: write arbitrary bytes, read frames back.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    /// Connects and replays `version`'s captured HAPROXY-HELLO, consuming the answer.
    pub async fn after_captured_hello(addr: SocketAddr, version: &str) -> Raw {
        let mut raw = Raw::connect(addr).await;
        raw.write(&capture(&format!("{version}/03-haproxy-hello.hex")))
            .await;
        raw.recv().await.expect("no AGENT-HELLO");
        raw
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Encodes and writes a frame.
    pub async fn send(&mut self, frame: Frame) {
        let mut framed = Framed::new(&mut self.stream, SpopCodec::new(u32::MAX));
        framed.send(frame).await.unwrap();
    }

    /// The next frame from the agent, `None` on EOF; fails the test after 5 s.
    pub async fn recv(&mut self) -> Option<Frame> {
        let mut codec = SpopCodec::new(u32::MAX);
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(frame) = codec.decode(&mut self.buf).unwrap() {
                    return Some(frame);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) => return None,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                    Err(e) => panic!("read: {e}"),
                }
            }
        })
        .await
        .expect("no frame from the agent within 5 s")
    }

    /// The raw bytes of the next frame (length prefix included).
    pub async fn recv_raw(&mut self) -> Vec<u8> {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if self.buf.len() >= 4 {
                    let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                    if self.buf.len() >= 4 + len {
                        return self.buf.split_to(4 + len).to_vec();
                    }
                }
                let n = self.stream.read_buf(&mut self.buf).await.unwrap();
                assert!(n > 0, "EOF before a whole frame");
            }
        })
        .await
        .expect("no frame within 5 s")
    }

    /// Whether the agent closed the connection (EOF or reset) within 5 s.
    pub async fn closed(&mut self) -> bool {
        self.recv().await.is_none()
    }
}

/// The `spoa-guard` binary running as its own process (`serve`), as a user runs it.
pub struct AgentProcess {
    child: Option<std::process::Child>,
    pub addr: SocketAddr,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
}

impl AgentProcess {
    /// Writes `allow.txt` / `block.txt` (named after the rule each reports) and a config
    /// listening on a free loopback port, then starts the agent and waits until it accepts.
    pub fn start(allow_name: &str, allow: &str, block_name: &str, block: &str) -> AgentProcess {
        let rules =
            format!("[lists]\nallow = [\"{allow_name}.txt\"]\nblock = [\"{block_name}.txt\"]\n");
        let allow_file = format!("{allow_name}.txt");
        let block_file = format!("{block_name}.txt");
        Self::with_rules(&rules, &[(&allow_file, allow), (&block_file, block)])
    }

    /// Writes `files` and a config made of a `[server]` section on a free loopback port
    /// plus `rules` (TOML), then starts the agent and waits until it accepts.
    pub fn with_rules(rules: &str, files: &[(&str, &str)]) -> AgentProcess {
        Self::with_rules_prepared(rules, files, |_| {})
    }

    /// Like [`AgentProcess::with_rules`], with `prepare` run on the agent's directory
    /// after `files` are written and before the agent starts: for layouts `files` cannot
    /// express (subdirectories, symlinks).
    pub fn with_rules_prepared(
        rules: &str,
        files: &[(&str, &str)],
        prepare: impl FnOnce(&std::path::Path),
    ) -> AgentProcess {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        prepare(dir.path());
        let config = dir.path().join("spoa-guard.toml");
        std::fs::write(
            &config,
            format!("[server]\nlisten = \"{addr}\"\n[log]\nlevel = \"debug\"\n{rules}"),
        )
        .unwrap();
        let mut agent = AgentProcess {
            child: None,
            addr,
            config,
            dir,
        };
        agent.restart();
        agent
    }

    /// Starts the agent again after [`AgentProcess::stop`] (same port, same files).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        let log = std::fs::File::create(self.dir.path().join("agent.log")).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_spoa-guard"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "agent did not listen on {}:\n{}",
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the `spoa-guard` command with `args` and this agent's `--config` (the admin
    /// commands reach it through its `[admin] listen`), to completion.
    #[allow(dead_code)] // not every test crate runs the CLI
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_spoa-guard"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run spoa-guard")
    }

    /// Sends a signal (`TERM`, `HUP`, ...) to the agent.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("agent not running").id();
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// SIGTERM, then waits for the exit (at most 10 s).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.stop_wait()
    }

    /// Waits for the agent to exit after a signal (at most 10 s).
    pub fn stop_wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("agent did not exit within 10 s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }
}

/// A second agent process on the same configuration as an [`AgentProcess`]: a restart
/// without a gap takes the first one's listeners over. Killed when dropped.
pub struct Successor {
    pub child: std::process::Child,
    log: PathBuf,
}

impl AgentProcess {
    /// Starts a second agent on this one's configuration (it takes over).
    pub fn start_successor(&self) -> Successor {
        let log = self.dir.path().join("successor.log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_spoa-guard"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Successor { child, log }
    }
}

impl Successor {
    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
