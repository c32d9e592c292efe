//! A lab of Linux network namespaces for multi-host tests (fleet mode): `N` nodes, a
//! Redis host and a client, wired through two bridges, all created by the test (as root)
//! and removed when the [`Lab`] is dropped, panics included.
//!
//! ```text
//!                  switch namespace (bridges only, no addresses)
//!   client ──────────── front ─────────────┐        ┌──────── back ─────────── redis
//!   10.201.0.100        bridge             │        │         bridge         10.202.0.100
//!                                          │        │
//!                        node I: front 10.201.0.(10+I)   back 10.202.0.(10+I)
//! ```
//!
//! What a lab owns: the namespaces `<prefix>switch`, `<prefix>node1..N`, `<prefix>redis`
//! and `<prefix>client` (prefix `sglab<pid>-<n>-`, so parallel test binaries and parallel
//! labs in one binary never collide), the veth pairs and bridges inside them (the root
//! namespace is never touched), every process running in its namespaces (killed on drop,
//! whoever started it), and a temporary directory of configurations and logs (kept, and
//! its path printed, when the test panics). Namespaces left by a test process that no
//! longer exists (killed with SIGKILL) are removed by the next `Lab::new`.
//!
//! Every lab uses the same addresses: nothing is routed between a lab and the root
//! namespace or another lab, so two labs at once cannot see each other. In each host
//! namespace the interfaces are `lo`, `front` and/or `back`; each host has only its own
//! subnets' connected routes (no default route), so no packet can leave the lab.
//!
//! Inside a namespace: [`Lab::spawn`] (a program, as `ip netns exec NAME prog args…`),
//! [`Lab::output`] (a command to completion), [`Lab::in_ns`] (a closure on a thread moved
//! into the namespace with `setns`), [`Lab::thread`] (a long-lived thread with a tokio
//! runtime, for HTTP clients). HAProxy and the agent: [`Lab::haproxy_options`] and
//! [`Lab::start_agent`]; Redis: [`Lab::start_redis`].

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
use tempfile::TempDir;

use super::haproxy::{in_ci, Options};

mod thread;
pub use thread::{NsThread, Sent};

/// Start of every lab namespace's name; then `<pid>-<n>-`.
pub const NAME_PREFIX: &str = "sglab";
/// Port of the agent's SPOP listener on each node's loopback (`127.0.0.1`).
pub const AGENT_PORT: u16 = 12345;
/// Port of HAProxy's frontend on each node's front address.
pub const HTTP_PORT: u16 = 8080;
/// Port of the agent's operations listener (`/metrics`) on each node's front address.
pub const METRICS_PORT: u16 = 9464;
/// Port of the lab's Redis on [`Lab::redis_ip`].
pub const REDIS_PORT: u16 = 6379;
/// Most nodes a lab can have (node addresses are `.11` to `.60`).
pub const MAX_NODES: usize = 50;

const FRONT_NET: [u8; 3] = [10, 201, 0];
const BACK_NET: [u8; 3] = [10, 202, 0];
const HOST_OCTET: u8 = 100;

/// Serializes namespace creation and removal inside this test binary (`ip netns` sets
/// up `/run/netns` on first use; two at once are best avoided).
static SETUP: Mutex<()> = Mutex::new(());
/// Labs made by this process so far: the `<n>` of the prefix.
static LABS: AtomicUsize = AtomicUsize::new(0);

fn setup_lock() -> MutexGuard<'static, ()> {
    SETUP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A host of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// Node `1..=nodes`: a front and a back interface.
    Node(usize),
    /// The Redis host: back only.
    Redis,
    /// The client: front only.
    Client,
}

/// Namespaces and links of one test, removed on drop. See the module documentation.
pub struct Lab {
    prefix: String,
    nodes: usize,
    /// `None` once handed over to be kept (a panicking test).
    dir: Option<TempDir>,
}

impl Lab {
    /// A lab of `nodes` nodes (1 to [`MAX_NODES`]), or `None` after a `SKIPPED:` line on
    /// stderr when this is not root, `ip` is missing or namespaces cannot be made. Under
    /// `CI=true` those panic instead: tests never skip silently in CI.
    pub fn new(nodes: usize) -> Option<Lab> {
        assert!((1..=MAX_NODES).contains(&nodes), "1 to {MAX_NODES} nodes");
        if let Err(why) = usable() {
            assert!(!in_ci(), "the netns lab is required in CI (CI=true): {why}");
            eprintln!("SKIPPED: network-namespace lab unavailable: {why}");
            return None;
        }
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let lab = Lab {
            prefix: format!("{NAME_PREFIX}{}-{n}-", std::process::id()),
            nodes,
            dir: Some(
                tempfile::Builder::new()
                    .prefix("spoa-guard-netns-")
                    .tempdir()
                    .expect("tempdir"),
            ),
        };
        let adds: Vec<String> = lab
            .namespaces()
            .iter()
            .map(|ns| format!("netns add {ns}"))
            .collect();
        // The lock is released before `lab` can drop (its drop takes the lock too).
        let made = {
            let _guard = setup_lock();
            remove_stale();
            ip_batch(None, &adds).map(|()| lab.wire())
        };
        match made {
            Ok(Ok(())) => {}
            Err(why) => {
                assert!(!in_ci(), "cannot create network namespaces in CI: {why}");
                eprintln!("SKIPPED: cannot create network namespaces: {why}");
                return None;
            }
            // A bug: `lab`'s drop removes what was made.
            Ok(Err(why)) => panic!("netns lab setup: {why}"),
        }
        Some(lab)
    }

    /// Bridges, veth pairs, addresses, `lo` up everywhere.
    fn wire(&self) -> Result<(), String> {
        let mut switch = vec!["link set lo up".to_string()];
        for bridge in ["front", "back"] {
            switch.push(format!(
                "link add {bridge} type bridge stp_state 0 forward_delay 0"
            ));
            switch.push(format!("link set {bridge} up"));
        }
        let mut per_host: Vec<(Host, Vec<String>)> = Vec::new();
        for host in self.hosts() {
            let mut lines = vec!["link set lo up".to_string()];
            for (side, ip) in self.interfaces(host) {
                let port = self.switch_port(host, side);
                switch.push(format!(
                    "link add {port} type veth peer name {side} netns {}",
                    self.ns(host)
                ));
                switch.push(format!("link set {port} master {side} up"));
                lines.push(format!("addr add {ip}/24 dev {side}"));
                lines.push(format!("link set {side} up"));
            }
            per_host.push((host, lines));
        }
        ip_batch(Some(&self.switch_ns()), &switch)?;
        for (host, lines) in per_host {
            ip_batch(Some(&self.ns(host)), &lines)?;
        }
        Ok(())
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Every host: the nodes, then Redis, then the client.
    pub fn hosts(&self) -> Vec<Host> {
        let mut hosts: Vec<Host> = (1..=self.nodes).map(Host::Node).collect();
        hosts.extend([Host::Redis, Host::Client]);
        hosts
    }

    /// `sglab<pid>-<n>-`: the start of each of this lab's namespace names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespace name of `host`, as `ip netns` knows it.
    pub fn ns(&self, host: Host) -> String {
        match host {
            Host::Node(i) => {
                self.check_node(i);
                format!("{}node{i}", self.prefix)
            }
            Host::Redis => format!("{}redis", self.prefix),
            Host::Client => format!("{}client", self.prefix),
        }
    }

    fn switch_ns(&self) -> String {
        format!("{}switch", self.prefix)
    }

    /// All of the lab's namespace names, the switch's included.
    pub fn namespaces(&self) -> Vec<String> {
        let mut names: Vec<String> = self.hosts().into_iter().map(|h| self.ns(h)).collect();
        names.push(self.switch_ns());
        names
    }

    /// The directory holding the lab's configurations and logs.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("lab dir").path()
    }

    fn check_node(&self, i: usize) {
        assert!(
            (1..=self.nodes).contains(&i),
            "node {i}: the lab has nodes 1..={}",
            self.nodes
        );
    }

    /// Node `i`'s address on the front network (clients): 10.201.0.(10+i).
    pub fn node_front_ip(&self, i: usize) -> Ipv4Addr {
        self.check_node(i);
        addr(FRONT_NET, 10 + i as u8)
    }

    /// Node `i`'s address on the back network (Redis): 10.202.0.(10+i).
    pub fn node_back_ip(&self, i: usize) -> Ipv4Addr {
        self.check_node(i);
        addr(BACK_NET, 10 + i as u8)
    }

    /// The Redis host's address (back network): 10.202.0.100.
    pub fn redis_ip(&self) -> Ipv4Addr {
        addr(BACK_NET, HOST_OCTET)
    }

    /// The client's address (front network): 10.201.0.100. HAProxy sees it as `src`.
    pub fn client_ip(&self) -> Ipv4Addr {
        addr(FRONT_NET, HOST_OCTET)
    }

    /// `host`'s interfaces: ("front" | "back", address).
    fn interfaces(&self, host: Host) -> Vec<(&'static str, Ipv4Addr)> {
        match host {
            Host::Node(i) => vec![
                ("front", self.node_front_ip(i)),
                ("back", self.node_back_ip(i)),
            ],
            Host::Redis => vec![("back", self.redis_ip())],
            Host::Client => vec![("front", self.client_ip())],
        }
    }

    /// The switch's end of `host`'s veth on `side` ("f-node1", "b-redis", …).
    fn switch_port(&self, host: Host, side: &str) -> String {
        let name = match host {
            Host::Node(i) => format!("node{i}"),
            Host::Redis => "redis".to_string(),
            Host::Client => "client".to_string(),
        };
        format!("{}-{name}", &side[..1])
    }

    /// Partitions node `i` from the back network (`up == false`) or heals it. The
    /// switch's end of the node's back veth goes down: the node keeps its address and
    /// routes, its packets go nowhere (connections time out, open ones stall), as with
    /// a pulled cable; it does not get an immediate "network unreachable".
    pub fn set_back_link(&self, i: usize, up: bool) {
        let port = self.switch_port(Host::Node(i), "back");
        let state = if up { "up" } else { "down" };
        ip_batch(
            Some(&self.switch_ns()),
            &[format!("link set {port} {state}")],
        )
        .unwrap_or_else(|e| panic!("set_back_link({i}, {up}): {e}"));
    }

    /// `command` wrapped as `ip netns exec NAME program args…`: same environment changes
    /// and working directory (`env_clear` does not carry over).
    fn wrap(&self, host: Host, command: &Command) -> Command {
        let mut wrapped = Command::new("ip");
        wrapped
            .args(["netns", "exec", &self.ns(host)])
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(v) => wrapped.env(key, v),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped
    }

    /// Starts `command` in `host`'s namespace (`ip netns exec` execs, so the PID is the
    /// program's), stdin from /dev/null, stdout and stderr to `<label>.stdout` and
    /// `<label>.stderr` in the lab's directory. Killed when the handle or the lab drops.
    pub fn spawn(&self, host: Host, label: &str, command: Command) -> NsChild {
        let stdout = self.dir().join(format!("{label}.stdout"));
        let stderr = self.dir().join(format!("{label}.stderr"));
        let child = self
            .wrap(host, &command)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {label} in {}: {e}", self.ns(host)));
        // `ip netns exec` enters the namespace, then execs the program: until it has, the
        // lab's cleanup would not find it there (and it would outlive the lab).
        let inside = format!("net:[{}]", inode(&ns_path(&self.ns(host))));
        let link = PathBuf::from(format!("/proc/{}/ns/net", child.id()));
        let entered = Instant::now();
        while fs::read_link(&link).is_ok_and(|l| l.as_os_str() != inside.as_str())
            && entered.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        NsChild {
            child,
            label: label.to_string(),
            stdout,
            stderr,
        }
    }

    /// Runs `command` to completion in `host`'s namespace and returns its output.
    pub fn output(&self, host: Host, command: Command) -> Output {
        self.wrap(host, &command)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {:?} in {}: {e}", command, self.ns(host)))
    }

    /// Runs `f` on a new thread moved into `host`'s network namespace and returns its
    /// result: sockets it opens belong to that namespace. Panics in `f` propagate.
    pub fn in_ns<T: Send>(&self, host: Host, f: impl FnOnce() -> T + Send) -> T {
        let path = ns_path(&self.ns(host));
        std::thread::scope(|s| {
            let worker = s.spawn(move || {
                enter(&path).unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
                f()
            });
            worker
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Whether a TCP connection from `host` to `addr` succeeds within `timeout`.
    pub fn can_connect(&self, host: Host, addr: SocketAddr, timeout: Duration) -> bool {
        self.in_ns(host, || TcpStream::connect_timeout(&addr, timeout).is_ok())
    }

    /// Whether the lab's Redis answers `PING` from `host` within `timeout`.
    pub fn redis_ping(&self, host: Host, timeout: Duration) -> bool {
        let addr = SocketAddr::from((self.redis_ip(), REDIS_PORT));
        self.in_ns(host, || redis_ping(addr, timeout))
    }

    /// Sends one command to the lab's Redis from `host` and returns the first line of
    /// the answer (`:1`, `+OK` …), `None` when nothing answers.
    pub fn redis_command(&self, host: Host, args: &[&str]) -> Option<String> {
        let addr = SocketAddr::from((self.redis_ip(), REDIS_PORT));
        self.in_ns(host, || super::redis::command_at(addr, args))
    }

    /// A long-lived thread in `host`'s namespace running a tokio current-thread runtime;
    /// see [`NsThread`].
    pub fn thread(&self, host: Host) -> NsThread {
        NsThread::start(&self.ns(host))
    }

    /// Starts `redis-server` in the Redis namespace on [`Lab::redis_ip`]:[`REDIS_PORT`]
    /// (no persistence, protected mode off) and waits until it answers `PING`. `None`
    /// after a `SKIPPED:` line without `redis-server` (a panic under `CI=true`).
    pub fn start_redis(&self) -> Option<NsChild> {
        let Some(binary) = super::redis::binary() else {
            assert!(!in_ci(), "redis-server is required in CI (CI=true)");
            eprintln!("SKIPPED: redis-server not found (apt-get install redis-server)");
            return None;
        };
        let mut command = Command::new(binary);
        command
            .args(["--bind", &self.redis_ip().to_string()])
            .args(["--port", &REDIS_PORT.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir());
        let mut redis = self.spawn(Host::Redis, "redis", command);
        let ready = || self.redis_ping(Host::Redis, Duration::from_millis(200));
        redis.wait_ready(Duration::from_secs(10), ready);
        Some(redis)
    }

    /// Starts the `spoa-guard` binary on node `i` with `[server] listen =
    /// "127.0.0.1:`[`AGENT_PORT`]`"` (the node's own loopback), `[metrics] listen` on the
    /// node's front address ([`METRICS_PORT`]), `[log] level = "info"`, then `rules`
    /// (TOML); `files` are written next to the config first. Waits until it accepts.
    pub fn start_agent(&self, i: usize, rules: &str, files: &[(&str, &str)]) -> NodeAgent {
        let dir = self.dir().join(format!("node{i}-agent"));
        fs::create_dir_all(&dir).expect("agent dir");
        for (name, text) in files {
            fs::write(dir.join(name), text).expect("agent file");
        }
        let spop = SocketAddr::from((Ipv4Addr::LOCALHOST, AGENT_PORT));
        let metrics = SocketAddr::from((self.node_front_ip(i), METRICS_PORT));
        let config = dir.join("spoa-guard.toml");
        let text = format!(
            "[server]\nlisten = \"{spop}\"\n[metrics]\nlisten = \"{metrics}\"\n\
             [log]\nlevel = \"info\"\n{rules}"
        );
        fs::write(&config, text).expect("agent config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_spoa-guard"));
        command.args(["serve", "--config"]).arg(&config);
        let mut child = self.spawn(Host::Node(i), &format!("node{i}-agent"), command);
        let ready = || self.can_connect(Host::Node(i), spop, Duration::from_millis(200));
        child.wait_ready(Duration::from_secs(10), ready);
        NodeAgent {
            child,
            spop,
            metrics,
            config,
        }
    }

    /// HAProxy options for node `i`: runs in the node's namespace, frontend on its front
    /// address ([`HTTP_PORT`]), agent at `127.0.0.1:`[`AGENT_PORT`] (the node's own). For
    /// `Haproxy::start_with` / `start_blocking`.
    pub fn haproxy_options(&self, i: usize) -> Options {
        let mut options = Options::new(AGENT_PORT);
        options.bind = Some(SocketAddr::from((self.node_front_ip(i), HTTP_PORT)));
        options.command_prefix = ["ip", "netns", "exec", &self.ns(Host::Node(i))]
            .map(OsString::from)
            .to_vec();
        options
    }

    /// `http://<node i front>:`[`HTTP_PORT`]`<path>`.
    pub fn node_url(&self, i: usize, path: &str) -> String {
        format!("http://{}:{HTTP_PORT}{path}", self.node_front_ip(i))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _guard = setup_lock();
        let names = self.namespaces();
        for ns in &names {
            kill_all_in(ns);
        }
        let dels: Vec<String> = names.iter().map(|ns| format!("netns del {ns}")).collect();
        // `-force`: go on past a namespace that was never made (a failed setup).
        if let Err(e) = ip_batch_force(&dels) {
            eprintln!("netns lab {}: cleanup: {e}", self.prefix);
        }
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "netns lab {}: logs kept in {}",
                    self.prefix,
                    dir.keep().display()
                );
            }
        }
    }
}

/// A program started by [`Lab::spawn`]: SIGKILLed and reaped on drop.
pub struct NsChild {
    child: Child,
    label: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl NsChild {
    /// The program's PID (`ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Its stdout and stderr so far, for failure messages.
    pub fn log(&self) -> String {
        format!(
            "--- {} stdout ---\n{}--- {} stderr ---\n{}",
            self.label,
            fs::read_to_string(&self.stdout).unwrap_or_default(),
            self.label,
            fs::read_to_string(&self.stderr).unwrap_or_default(),
        )
    }

    /// SIGTERM, then SIGKILL after `grace`; reaps it and returns how it ended.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        signal(self.pid(), Signal::TERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    /// Polls `ready` every 20 ms; panics with the log if the program exits first or
    /// `timeout` passes.
    fn wait_ready(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !ready() {
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited during startup ({status}):\n{}",
                    self.label,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {timeout:?}:\n{}",
                self.label,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `spoa-guard` started by [`Lab::start_agent`].
pub struct NodeAgent {
    pub child: NsChild,
    /// SPOP listener, on the node's loopback.
    pub spop: SocketAddr,
    /// Operations listener (`/metrics`), on the node's front address.
    pub metrics: SocketAddr,
    pub config: PathBuf,
}

impl NodeAgent {
    /// What the agent logged (stderr) so far.
    pub fn log(&self) -> String {
        self.child.log()
    }
}

fn addr(net: [u8; 3], host: u8) -> Ipv4Addr {
    Ipv4Addr::new(net[0], net[1], net[2], host)
}

/// The inode of a namespace file: what `/proc/PID/ns/net` names as `net:[INODE]`.
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).map_or(0, |m| m.ino())
}

fn ns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

/// Moves the calling thread into the network namespace bound at `path`.
fn enter(path: &Path) -> std::io::Result<()> {
    let file = File::open(path)?;
    move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))?;
    Ok(())
}

/// `PING` → `+PONG` over RESP, from the calling thread's namespace.
fn redis_ping(addr: SocketAddr, timeout: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

/// Why a lab cannot be made here, if it cannot.
fn usable() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("not root".to_string());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("`ip -V` failed: {}", out.status)),
        Err(e) => Err(format!("`ip` (iproute2) not found: {e}")),
    }
}

/// `ip [-n NS] -batch -` with `lines` on stdin.
fn ip_batch(ns: Option<&str>, lines: &[String]) -> Result<(), String> {
    let mut command = Command::new("ip");
    if let Some(ns) = ns {
        command.args(["-n", ns]);
    }
    command.args(["-batch", "-"]);
    batch(command, lines)
}

/// `ip -force -batch -`: every line runs even after one failed.
fn ip_batch_force(lines: &[String]) -> Result<(), String> {
    let mut command = Command::new("ip");
    command.args(["-force", "-batch", "-"]);
    batch(command, lines)
}

fn batch(mut command: Command, lines: &[String]) -> Result<(), String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn ip: {e}"))?;
    let mut input = lines.join("\n");
    input.push('\n');
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .map_err(|e| format!("write to ip: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}):\n{}\ninput:\n{input}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn signal(pid: u32, signal: Signal) {
    let own = std::process::id();
    if pid != own {
        if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
            let _ = kill_process(pid, signal);
        }
    }
}

/// SIGKILLs every process in namespace `ns` (never this test process).
fn kill_all_in(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<u32>() {
            signal(pid, Signal::KILL);
        }
    }
}

/// Removes lab namespaces whose test process is gone (it was SIGKILLed before its labs
/// dropped), with whatever still runs in them.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let stale: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| {
            name.strip_prefix(NAME_PREFIX)
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(str::to_string)
        .collect();
    if stale.is_empty() {
        return;
    }
    for ns in &stale {
        kill_all_in(ns);
    }
    let dels: Vec<String> = stale.iter().map(|ns| format!("netns del {ns}")).collect();
    let _ = ip_batch_force(&dels);
}
