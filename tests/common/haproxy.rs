//! End-to-end harness: runs a real HAProxy (2.6 from Debian, 3.x from
//! `haproxy/install-haproxy-3.2.sh`) in front of an agent, and sends HTTP requests through
//! it from chosen source addresses.
//!
//! Part of `tests/common` (`mod common;` in a test, then `common::haproxy`).
//!
//! The configuration is `haproxy/haproxy.cfg` and `haproxy/spoe-guard.conf` as shipped,
//! edited line by line where a test needs it (a test fails if a line it edits is no
//! longer there): free ports, the agent's address, fast health checks (`check inter
//! 500ms rise 1 fall 1`), `timeout processing 500ms`, and response headers echoing every
//! guard variable:
//!
//! | header | variable |
//! |---|---|
//! | `X-Guard-Action` | `txn.guard.action` |
//! | `X-Guard-Reason` | `txn.guard.reason` |
//! | `X-Guard-Rule` | `txn.guard.rule` |
//! | `X-Guard-Status` | `txn.guard.status` |
//! | `X-Guard-Retry-After` | `txn.guard.retry_after` |
//! | `X-Guard-Asn` | `txn.guard.asn` |
//! | `X-Guard-Dry-Run` | `txn.guard.dry_run` |
//! | `X-Guard-Error` | `txn.guard.error` (set by HAProxy when the agent failed) |
//!
//! An unset variable gives an empty header value. Denies: 429 (with `Retry-After`) when
//! the agent says `deny` with status 429, 403 for any other `deny`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Which HAProxy generation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// HAProxy 2.x (Debian bookworm's 2.6): SPOE applets, `mode tcp` agent backend.
    V2_6,
    /// HAProxy 3.x (3.2 from Debian sid, any >= 3.1 accepted): SPOP multiplexer.
    V3_2,
}

impl Version {
    pub const ALL: [Version; 2] = [Version::V2_6, Version::V3_2];

    /// Human-readable name for messages: "2.6" / "3.2".
    pub fn label(self) -> &'static str {
        match self {
            Version::V2_6 => "2.6",
            Version::V3_2 => "3.2",
        }
    }

    /// Environment variable that overrides the binary's location.
    pub fn env_var(self) -> &'static str {
        match self {
            Version::V2_6 => "SPOA_GUARD_HAPROXY26",
            Version::V3_2 => "SPOA_GUARD_HAPROXY32",
        }
    }

    fn default_path(self) -> PathBuf {
        match self {
            Version::V2_6 => PathBuf::from("/usr/sbin/haproxy"),
            Version::V3_2 => {
                Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/haproxy-3.2/haproxy")
            }
        }
    }

    fn accepts(self, major: u32, minor: u32) -> bool {
        match self {
            Version::V2_6 => major == 2,
            Version::V3_2 => major > 3 || (major == 3 && minor >= 1),
        }
    }
}

/// Runs `<binary> -v` and returns the version string, e.g. "2.6.12-1+deb12u4".
pub fn binary_version(binary: &Path) -> Option<String> {
    let out = Command::new(binary)
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let rest = &text[text.find("version ")? + "version ".len()..];
    Some(rest.split_whitespace().next()?.to_string())
}

fn parse_major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn locate(v: Version) -> Result<PathBuf, String> {
    let (path, origin) = match std::env::var_os(v.env_var()) {
        Some(p) if !p.is_empty() => (PathBuf::from(p), format!("${}", v.env_var())),
        _ => (v.default_path(), "default location".to_string()),
    };
    if !path.exists() {
        return Err(format!("{} ({origin}) does not exist", path.display()));
    }
    let version = binary_version(&path)
        .ok_or_else(|| format!("{} ({origin}) does not run `-v`", path.display()))?;
    match parse_major_minor(&version) {
        Some((major, minor)) if v.accepts(major, minor) => Ok(path),
        _ => Err(format!(
            "{} ({origin}) is HAProxy {version}, not {}",
            path.display(),
            v.label()
        )),
    }
}

fn located(v: Version) -> &'static Result<PathBuf, String> {
    static CELLS: [OnceLock<Result<PathBuf, String>>; 2] = [OnceLock::new(), OnceLock::new()];
    let i = match v {
        Version::V2_6 => 0,
        Version::V3_2 => 1,
    };
    CELLS[i].get_or_init(|| locate(v))
}

/// The HAProxy binary for `v`, if present and of the right major version:
/// 2.x from `$SPOA_GUARD_HAPROXY26` or `/usr/sbin/haproxy`; 3.x (>= 3.1) from
/// `$SPOA_GUARD_HAPROXY32` or `<crate>/.cache/haproxy-3.2/haproxy`.
pub fn haproxy_binary(v: Version) -> Option<PathBuf> {
    located(v).as_ref().ok().cloned()
}

/// Whether this run must not skip: the environment variable `CI` is `true`.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v.eq_ignore_ascii_case("true"))
        .unwrap_or(false)
}

/// The binary for `v`, or `None` after printing a loud `SKIPPED:` line on stderr.
/// Under `CI=true` a missing binary panics instead: tests never skip silently in CI.
pub fn require(v: Version) -> Option<PathBuf> {
    match located(v) {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            let hint = match v {
                Version::V2_6 => "apt-get install haproxy",
                Version::V3_2 => "run haproxy/install-haproxy-3.2.sh",
            };
            if in_ci() {
                panic!(
                    "HAProxy {} is required in CI (CI=true) but was not found: {why}; {hint} \
                     or set {}",
                    v.label(),
                    v.env_var()
                );
            }
            eprintln!(
                "SKIPPED: haproxy {} not found, {hint} (or set {}): {why}",
                v.label(),
                v.env_var()
            );
            None
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1 (and on ::1 when IPv6 works).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        if !ipv6_available() || TcpListener::bind((Ipv6Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1");
}

/// Whether `::1` can be bound (containers without IPv6 cannot).
pub fn ipv6_available() -> bool {
    static V6: OnceLock<bool> = OnceLock::new();
    *V6.get_or_init(|| TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok())
}

/// How to build the HAProxy configuration. `Options::new(agent_port)` gives the standard
/// test setup; the fields tune it.
#[derive(Debug, Clone)]
pub struct Options {
    /// `server` address of the agent, e.g. "127.0.0.1:12345" or "unix@/path/agent.sock".
    pub agent_addr: String,
    /// Extra lines for the frontend, inserted after the standard 429/403 deny rules and
    /// before `default_backend` (e.g. a fail-closed rule).
    pub frontend_lines: Vec<String>,
    /// Extra `name=<sample>` arguments of the `guard-check` message.
    pub extra_args: Vec<String>,
    /// Replaces `src=src` (e.g. `"src=req.hdr_ip(x-forwarded-for,-1)"`).
    pub src_arg: String,
    /// spoe-agent `timeout processing`.
    pub processing_timeout: String,
    /// Health checks on the agent server (`option spop-check`, `check inter 500ms rise 1 fall 1`).
    pub health_check: bool,
    /// Extra lines in the `spoe-agent` section (e.g. "option dontlog-normal").
    pub agent_lines: Vec<String>,
    /// `nbthread` (None: HAProxy's default).
    pub nbthread: Option<u32>,
    /// The frontend's one address (None: a free port on 127.0.0.1, and on [::1] when
    /// available), e.g. a node's address in a network namespace (`tests/common/netns.rs`).
    pub bind: Option<SocketAddr>,
    /// Program and arguments run before HAProxy's own command line, e.g.
    /// `ip netns exec NAME` (empty: HAProxy runs directly). With a prefix, startup waits
    /// on the admin socket (a file, reachable from any network namespace) instead of
    /// connecting to the frontend.
    pub command_prefix: Vec<OsString>,
}

impl Options {
    pub fn new(agent_port: u16) -> Options {
        Options {
            agent_addr: format!("127.0.0.1:{agent_port}"),
            frontend_lines: Vec::new(),
            extra_args: Vec::new(),
            src_arg: "src=src".to_string(),
            processing_timeout: "500ms".to_string(),
            health_check: true,
            agent_lines: Vec::new(),
            nbthread: Some(2),
            bind: None,
            command_prefix: Vec::new(),
        }
    }
}

/// A running HAProxy, killed (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Haproxy {
    child: Child,
    /// Frontend port, bound on 127.0.0.1 and (when available) [::1].
    pub http_port: u16,
    /// The frontend's IPv4 (or `Options::bind`) address: 127.0.0.1:`http_port` by default.
    pub http_addr: SocketAddr,
    /// Whether the frontend also listens on [::1].
    pub ipv6: bool,
    binary: PathBuf,
    dir: TempDir,
}

const STDOUT_FILE: &str = "haproxy.stdout";
const STDERR_FILE: &str = "haproxy.stderr";
const CFG_FILE: &str = "haproxy.cfg";
const SPOE_FILE: &str = "spoe-guard.conf";
const STATS_SOCKET: &str = "admin.sock";

/// Name of the agent backend and server in the generated configuration.
pub const AGENT_BACKEND: &str = "spoa-guard";
pub const AGENT_SERVER: &str = "guard1";

/// The shipped configuration files: the harness runs them, edited only where a test
/// needs to (ports, the agent's address, faster health checks, headers that echo every
/// variable), so a change to them is tested end to end.
const SHIPPED_CFG: &str = include_str!("../../haproxy/haproxy.cfg");
const SHIPPED_SPOE: &str = include_str!("../../haproxy/spoe-guard.conf");

/// `text` with each line whose trimmed content is an edit's key replaced by the edit's
/// lines (indented like the original); panics naming the line when the shipped file no
/// longer has it, so the harness cannot silently drift from what users run.
fn edit(file: &str, text: &str, edits: &[(&str, Vec<String>)]) -> String {
    for (line, _) in edits {
        assert!(
            text.lines().any(|l| l.trim() == *line),
            "haproxy/{file} no longer has the line {line:?} the test harness edits; update tests/common/haproxy.rs"
        );
    }
    let mut out = String::with_capacity(text.len() + 2048);
    for l in text.lines() {
        match edits.iter().find(|(line, _)| l.trim() == *line) {
            Some((_, replacement)) => {
                let indent = &l[..l.len() - l.trim_start().len()];
                for r in replacement {
                    let _ = writeln!(out, "{indent}{r}");
                }
            }
            None => {
                let _ = writeln!(out, "{l}");
            }
        }
    }
    out
}

fn render_haproxy_cfg(dir: &Path, http_addr: SocketAddr, ipv6: bool, o: &Options) -> String {
    let http_port = http_addr.port();
    let mut global = vec!["log stdout format raw local0 info".to_string()];
    if let Some(n) = o.nbthread {
        global.push(format!("nbthread {n}"));
    }
    global.push(format!(
        "stats socket {}/{STATS_SOCKET} mode 600 level admin",
        dir.display()
    ));
    let v6_bind = if ipv6 {
        vec![format!("bind [::1]:{http_port}")]
    } else {
        Vec::new()
    };
    let mut after_deny = vec![
        "http-request deny deny_status 403 if { var(txn.guard.action) -m str deny }".to_string(),
    ];
    after_deny.extend(o.frontend_lines.iter().cloned());
    after_deny.extend(
        [
            r#"http-after-response set-header X-Guard-Action "%[var(txn.guard.action)]""#,
            r#"http-after-response set-header X-Guard-Reason "%[var(txn.guard.reason)]""#,
            r#"http-after-response set-header X-Guard-Rule "%[var(txn.guard.rule)]""#,
            r#"http-after-response set-header X-Guard-Status "%[var(txn.guard.status)]""#,
            r#"http-after-response set-header X-Guard-Retry-After "%[var(txn.guard.retry_after)]""#,
            r#"http-after-response set-header X-Guard-Asn "%[var(txn.guard.asn)]""#,
            r#"http-after-response set-header X-Guard-Dry-Run "%[var(txn.guard.dry_run)]""#,
            r#"http-after-response set-header X-Guard-Error "%[var(txn.guard.error)]""#,
            r#"log-format "REQ %ci %HM %HU st=%ST action=%[var(txn.guard.action)] reason=%[var(txn.guard.reason)] rule=%[var(txn.guard.rule)] status=%[var(txn.guard.status)] retry=%[var(txn.guard.retry_after)] asn=%[var(txn.guard.asn)] dry=%[var(txn.guard.dry_run)] err=%[var(txn.guard.error)] ptime=%[var(txn.guard.ptime)]""#,
        ]
        .map(String::from),
    );
    let server = if o.health_check {
        vec![format!(
            "server {AGENT_SERVER} {} check inter 500ms rise 1 fall 1",
            o.agent_addr
        )]
    } else {
        vec![format!("server {AGENT_SERVER} {}", o.agent_addr)]
    };
    let spop_check = if o.health_check {
        vec!["option spop-check".to_string()]
    } else {
        Vec::new()
    };
    edit(
        "haproxy.cfg",
        SHIPPED_CFG,
        &[
            ("log stdout format raw local0 info", global),
            ("bind 127.0.0.1:8080", vec![format!("bind {http_addr}")]),
            ("bind [::1]:8080", v6_bind),
            ("http-request deny deny_status 403 if { var(txn.guard.action) -m str deny }", after_deny),
            (
                r#"http-request return status 200 content-type text/plain string "hello from behind spoa-guard\n""#,
                vec![r#"http-request return status 200 content-type text/plain lf-string "ok src=%[src] action=%[var(txn.guard.action)]\n""#.to_string()],
            ),
            ("option spop-check", spop_check),
            ("server guard1 127.0.0.1:12345 check inter 2s", server),
        ],
    )
}

fn render_spoe_conf(o: &Options) -> String {
    let mut log = vec!["log global".to_string()];
    log.extend(o.agent_lines.iter().cloned());
    let mut args = format!(
        "args {} method=method path=path host=req.hdr(host) ua=req.fhdr(user-agent)",
        o.src_arg
    );
    for a in &o.extra_args {
        let _ = write!(args, " {a}");
    }
    edit(
        "spoe-guard.conf",
        SHIPPED_SPOE,
        &[
            (
                "timeout processing 100ms",
                vec![format!("timeout processing {}", o.processing_timeout)],
            ),
            ("log global", log),
            (
                "args src=src method=method path=path host=req.hdr(host) ua=req.fhdr(user-agent)",
                vec![args],
            ),
        ],
    )
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

enum StartError {
    /// The frontend port was taken between choosing and binding it: try another.
    PortRace(String),
    Fatal(String),
}

impl Haproxy {
    /// Starts `binary` with the standard test configuration, agent on `127.0.0.1:agent_port`,
    /// `extra_frontend_lines` added to the frontend after the deny rules. Waits (at most
    /// 10 s) until the frontend accepts connections; panics with HAProxy's output if it
    /// exits or never listens.
    pub async fn start(binary: &Path, agent_port: u16, extra_frontend_lines: &[&str]) -> Haproxy {
        let mut o = Options::new(agent_port);
        o.frontend_lines = extra_frontend_lines.iter().map(|s| s.to_string()).collect();
        Haproxy::start_with(binary, o).await
    }

    /// Like `start`, with every knob of `Options`.
    pub async fn start_with(binary: &Path, options: Options) -> Haproxy {
        let mut last = String::new();
        for _ in 0..5 {
            match Haproxy::try_start(binary, &options).await {
                Ok(h) => return h,
                Err(StartError::PortRace(log)) => last = log,
                Err(StartError::Fatal(msg)) => panic!("{msg}"),
            }
        }
        panic!(
            "HAProxy {} could not bind a free port 5 times:\n{last}",
            binary.display()
        );
    }

    /// Blocking variant of `start_with`, for code outside an async runtime. Do not call it
    /// from a single-threaded runtime that also runs the agent (it would stall the agent).
    pub fn start_blocking(binary: &Path, options: Options) -> Haproxy {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(Haproxy::start_with(binary, options))
    }

    async fn try_start(binary: &Path, o: &Options) -> Result<Haproxy, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("spoa-guard-haproxy-")
            .tempdir()
            .map_err(|e| StartError::Fatal(format!("tempdir: {e}")))?;
        let (http_addr, ipv6) = match o.bind {
            Some(addr) => (addr, false),
            None => (
                SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())),
                ipv6_available(),
            ),
        };
        let cfg = render_haproxy_cfg(dir.path(), http_addr, ipv6, o);
        let spoe = render_spoe_conf(o);
        let write = |name: &str, text: &str| {
            fs::write(dir.path().join(name), text)
                .map_err(|e| StartError::Fatal(format!("write {name}: {e}")))
        };
        write(CFG_FILE, &cfg)?;
        write(SPOE_FILE, &spoe)?;
        let out = File::create(dir.path().join(STDOUT_FILE))
            .map_err(|e| StartError::Fatal(format!("create stdout file: {e}")))?;
        let err = File::create(dir.path().join(STDERR_FILE))
            .map_err(|e| StartError::Fatal(format!("create stderr file: {e}")))?;
        let mut command = match o.command_prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let child = command
            .arg("-db")
            .arg("-f")
            .arg(dir.path().join(CFG_FILE))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| StartError::Fatal(format!("spawn {}: {e}", binary.display())))?;
        let mut h = Haproxy {
            child,
            http_port: http_addr.port(),
            http_addr,
            ipv6,
            binary: binary.to_path_buf(),
            dir,
        };

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = h.child.try_wait() {
                let log = h.log();
                // Dropping `h` is fine: the child is already gone.
                return if log.contains("cannot bind socket")
                    || log.contains("Address already in use")
                {
                    Err(StartError::PortRace(log))
                } else {
                    Err(StartError::Fatal(format!(
                        "HAProxy {} exited during startup ({status}):\n{log}",
                        binary.display()
                    )))
                };
            }
            let ready = if o.command_prefix.is_empty() {
                TcpStream::connect_timeout(&http_addr, Duration::from_millis(200)).is_ok()
            } else {
                h.admin("show info").is_ok()
            };
            if ready {
                return Ok(h);
            }
            if Instant::now() > deadline {
                return Err(StartError::Fatal(format!(
                    "HAProxy {} did not accept connections on {http_addr} within 10 s:\n{}",
                    binary.display(),
                    h.log()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// HAProxy's stdout (its log lines, one `REQ ...` line per request with every guard
    /// variable) and stderr (warnings, alerts), plus the configuration, for failure messages.
    pub fn log(&self) -> String {
        format!(
            "--- haproxy {} ({}) stdout ---\n{}--- stderr ---\n{}--- {} ---\n{}--- {} ---\n{}",
            self.binary.display(),
            self.dir.path().display(),
            read_lossy(&self.dir.path().join(STDOUT_FILE)),
            read_lossy(&self.dir.path().join(STDERR_FILE)),
            CFG_FILE,
            read_lossy(&self.dir.path().join(CFG_FILE)),
            SPOE_FILE,
            read_lossy(&self.dir.path().join(SPOE_FILE)),
        )
    }

    /// Only HAProxy's stdout (log lines).
    pub fn stdout(&self) -> String {
        read_lossy(&self.dir.path().join(STDOUT_FILE))
    }

    /// The temporary directory holding the configuration, logs and stats socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Base URL for requests from `src`'s address family: `http://127.0.0.1:PORT` or
    /// `http://[::1]:PORT`.
    pub fn url(&self, src: IpAddr, path: &str) -> String {
        url(self.http_port, src, path)
    }

    /// Sends one command to HAProxy's admin socket and returns the answer.
    pub fn admin(&self, command: &str) -> std::io::Result<String> {
        let mut s = UnixStream::connect(self.dir.path().join(STATS_SOCKET))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(command.as_bytes())?;
        s.write_all(b"\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// Health-check status of the agent server as HAProxy sees it ("UP", "DOWN", "no check",
    /// "UP 1/2", ...), from `show stat`.
    pub fn agent_status(&self) -> Option<String> {
        let csv = self.admin("show stat").ok()?;
        let mut lines = csv.lines();
        let header = lines.next()?.trim_start_matches("# ");
        let col = header.split(',').position(|f| f == "status")?;
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.len() > col && f[0] == AGENT_BACKEND && f[1] == AGENT_SERVER)
            .map(|f| f[col].to_string())
    }

    /// Waits until the agent server's health-check status starts with `want` ("UP" or
    /// "DOWN"); false on timeout.
    pub async fn wait_agent_status(&self, want: &str, timeout: Duration) -> bool {
        wait_for(timeout, || async move {
            self.agent_status().is_some_and(|s| s.starts_with(want))
        })
        .await
    }

    /// Stops HAProxy now (SIGTERM, then SIGKILL after 3 s) and reaps it. Also done on drop.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        terminate(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGTERM without `unsafe` or a libc dependency: the shell's `kill` builtin.
fn terminate(pid: u32) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -TERM {pid}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// An HTTP response, headers keyed by lower-case name (repeated headers joined by ", ").
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Response {
    /// A header's value, `None` when absent (`Some("")` when present but empty, which is
    /// what an unset guard variable gives).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The `X-Guard-<name>` header, empty string when absent or empty.
    pub fn guard(&self, name: &str) -> &str {
        self.header(&format!("x-guard-{name}")).unwrap_or("")
    }
}

/// `http://127.0.0.1:PORT/path` for an IPv4 source, `http://[::1]:PORT/path` for IPv6.
pub fn url(port: u16, src: IpAddr, path: &str) -> String {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    match src {
        IpAddr::V4(_) => format!("http://127.0.0.1:{port}{path}"),
        IpAddr::V6(_) => format!("http://[::1]:{port}{path}"),
    }
}

/// A request to send through HAProxy. `Request::get(src, path)` then adjust.
#[derive(Debug, Clone)]
pub struct Request {
    /// Source address the connection comes from: any 127.0.0.0/8 address, or ::1.
    pub src: IpAddr,
    pub method: String,
    pub path: String,
    /// `None`: no User-Agent header at all.
    pub ua: Option<String>,
    /// `None`: reqwest's default Host (the URL's authority).
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

impl Request {
    pub fn get(src: IpAddr, path: &str) -> Request {
        Request {
            src,
            method: "GET".to_string(),
            path: path.to_string(),
            ua: None,
            host: None,
            headers: Vec::new(),
            body: None,
        }
    }
}

/// Sends `req` to HAProxy's frontend on `port`; errors are returned as text.
pub async fn try_send(port: u16, req: &Request) -> Result<Response, String> {
    let client = reqwest::Client::builder()
        .local_address(req.src)
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("reqwest client: {e}"))?;
    let method = reqwest::Method::from_bytes(req.method.as_bytes())
        .map_err(|e| format!("method {}: {e}", req.method))?;
    let url = url(port, req.src, &req.path);
    let mut b = client.request(method, &url);
    if let Some(ua) = &req.ua {
        b = b.header(reqwest::header::USER_AGENT, ua.as_str());
    }
    if let Some(host) = &req.host {
        b = b.header(reqwest::header::HOST, host.as_str());
    }
    for (k, v) in &req.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    if let Some(body) = &req.body {
        b = b.body(body.clone());
    }
    let resp = b
        .send()
        .await
        .map_err(|e| format!("{} {url} from {}: {e:?}", req.method, req.src))?;
    let status = resp.status().as_u16();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in resp.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers
            .entry(k.as_str().to_string())
            .and_modify(|old| {
                old.push_str(", ");
                old.push_str(&v);
            })
            .or_insert(v);
    }
    let body = resp
        .text()
        .await
        .map_err(|e| format!("reading body of {url}: {e}"))?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Sends `req`; panics if the request fails at the HTTP level.
pub async fn send(port: u16, req: &Request) -> Response {
    match try_send(port, req).await {
        Ok(r) => r,
        Err(e) => panic!("request through HAProxy failed: {e}"),
    }
}

/// GET `path` from source address `src` (IPv4 sources go to 127.0.0.1, IPv6 to [::1]),
/// with the given User-Agent (`None`: no header). Panics if the request fails.
pub async fn get(port: u16, src: IpAddr, path: &str, ua: Option<&str>) -> Response {
    let mut req = Request::get(src, path);
    req.ua = ua.map(str::to_string);
    send(port, &req).await
}

/// Polls `check` every 50 ms until it returns true (→ true) or `timeout` passes (→ false).
/// For "eventually" assertions: `assert!(wait_for(secs(5), || async { ... }).await, "...")`.
pub async fn wait_for<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like `wait_for`, but returns the first `Some` value produced, or `None` on timeout.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Source addresses used by the tests: 127.0.0.1, another loopback address, and ::1.
pub fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

pub fn v6_loopback() -> IpAddr {
    IpAddr::V6(Ipv6Addr::LOCALHOST)
}

/// `haproxy -c -f <cfg>` with the given binary; Err(output) when the check fails.
pub fn check_config(binary: &Path, cfg: &Path) -> Result<String, String> {
    let out = Command::new(binary)
        .arg("-c")
        .arg("-f")
        .arg(cfg)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// Defines, for each named `async fn(Version)`, one test per HAProxy version
/// (`haproxy_2_6::name` and `haproxy_3_2::name`). The test file must have `Version` in
/// scope.
#[allow(unused_macros)]
macro_rules! on_both_versions {
    ($($name:ident),* $(,)?) => {
        mod haproxy_2_6 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Version::V2_6).await })*
        }
        mod haproxy_3_2 {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Version::V3_2).await })*
        }
    };
}
