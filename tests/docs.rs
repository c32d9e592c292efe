//! The documentation runs as written. Every command block of `README.md`,
//! `haproxy/README.md`, `examples/README.md`, `deploy/README.md` and `docs/incident.md`
//! either runs from the repository root of a fresh clone on a Debian machine with Rust,
//! HAProxy, curl and promtool (with `spoa-guard` installed as the README's "Install"
//! says), or is marked with what it needs, and this test runs every block that can run.
//!
//! How each fenced block is taken (the reader: `tests/common/markdown.rs`):
//!
//! - `sh`, `bash`, `shell`: run with `bash -euo pipefail -c BLOCK` from the repository
//!   root, one block after the other in file order, each within 120 s, in a process
//!   group of its own; a block must exit 0 and leave nothing running. `PATH` starts with
//!   the directory of the release `spoa-guard` (the test builds it first with `cargo
//!   build --release --bins`), which stands for the README's `cargo install --path .`;
//!   every `cargo run ARGS -- ...` of a block is built first too (`cargo build ARGS`), so
//!   no block compiles inside its timeout.
//! - In such a block, a `curl -i` line with a comment that starts with an HTTP status
//!   (`curl -i http://127.0.0.1:8080/   # 403: ...`) must get that status: the block's
//!   output must show the statuses of its `curl -i` lines in order (then every `curl -i`
//!   line of the block needs one).
//! - `console` with `$ command` lines: a transcript. Each command runs as above and must
//!   print exactly the lines after it (trailing blanks aside). Without `$` lines, a
//!   `console` block runs like `sh`.
//! - Any other info string (`text` for synopses and output samples, `toml`, `yaml`, ...)
//!   is not run. An unlabelled block whose first word is a command (`spoa-guard`, `cargo`,
//!   `curl`, `haproxy`, `sudo`, `kubectl`, `systemctl`, `scripts/...`, `$`, ...) fails
//!   the test: label it `sh` or `text`.
//!
//! Directives, an HTML comment on the line right before the fence (readers do not see
//! it, so the text before the block must say the same; the test looks for one of the
//! words listed in [`SKIP_REASONS`] in the text since the previous block):
//!
//! - `<!-- docs-test: skip (REASON) -->`: not run. REASON is one of `needs root`
//!   (installs packages or changes the system), `needs a Kubernetes cluster`, `needs a
//!   deployed agent` (commands for a production agent and its `/etc` configuration),
//!   `needs other hosts` (servers that are not on this machine), `interactive` (runs
//!   until the user quits it), `this is the test suite itself` (`scripts/test`).
//! - `<!-- docs-test: background (ready when 127.0.0.1:12345 accepts) -->`, or `(ready
//!   when A and B accept)`: a command that keeps running. Started in the background (the
//!   addresses must not accept before), ready when every address accepts TCP
//!   connections (within 30 s), kept for the following blocks of the same file, and
//!   stopped (SIGTERM to its process group, SIGKILL after 10 s) at the end of the file,
//!   or when the test fails.
//!
//! The documents' fixed ports (12345, 9464, 8080) are why all files run in one test,
//! one after the other. Needs bash, `haproxy` on `PATH`, HAProxy 3.x in
//! `.cache/haproxy-3.2/haproxy` (`haproxy/install-haproxy-3.2.sh`), curl and promtool:
//! without one of them the run prints `SKIPPED:` and passes, except under `CI=true`,
//! where it fails. Runs for about a minute after the build (three 11 s load-generator
//! runs of the README among it).

mod common;

use std::ffi::OsString;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::haproxy::in_ci;
use common::markdown::{self, Block};
use regex::Regex;
use rustix::process::{kill_process_group, Pid, Signal};
use tempfile::TempDir;

/// The documents, run in this order.
const DOCUMENTS: &[&str] = &[
    "README.md",
    "haproxy/README.md",
    "examples/README.md",
    "deploy/README.md",
    "docs/incident.md",
];

/// Info strings of blocks that hold commands.
const SHELL_INFO: &[&str] = &["sh", "bash", "shell", "console"];

/// First words that make an unlabelled block a block of commands.
const COMMANDS: &[&str] = &[
    "$",
    "spoa-guard",
    "spoa-guard-loadgen",
    "cargo",
    "curl",
    "haproxy",
    "sudo",
    "kubectl",
    "helm",
    "systemctl",
    "apt-get",
    "dpkg",
    "promtool",
    "podman",
    "buildah",
];

/// Directory prefixes of scripts that make an unlabelled block a block of commands.
const COMMAND_DIRS: &[&str] = &["scripts/", "benches/", "haproxy/", "deploy/", ".cache/"];

/// The reasons a block may be skipped for, each with the words of which the text before
/// the block must hold one (case-insensitive), so that readers learn what it needs.
const SKIP_REASONS: &[(&str, &[&str])] = &[
    ("needs root", &["root", "sudo"]),
    ("needs a Kubernetes cluster", &["kubernetes", "cluster"]),
    (
        "needs a deployed agent",
        &[
            "deployed",
            "running agent",
            "production",
            "/etc/spoa-guard/",
        ],
    ),
    ("needs other hosts", &["server", "host"]),
    ("interactive", &["ctrl-c", "until you", "interactive"]),
    ("this is the test suite itself", &["test"]),
];

const BLOCK_TIMEOUT: Duration = Duration::from_secs(120);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------
// What to do with each block

/// What the test does with a block.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    /// Not commands: configuration, synopses, output samples.
    Ignore,
    /// Run as a script.
    Run,
    /// A `console` transcript: each command and the output it must print.
    Transcript(Vec<(String, String)>),
    /// Start in the background; ready when these addresses accept.
    Background(Vec<SocketAddr>),
    /// Not run, for this reason.
    Skip(&'static str),
}

/// The plan for `block`, or what is wrong with its marking.
fn plan(block: &Block) -> Result<Plan, String> {
    let info = block.info.as_str();
    if !SHELL_INFO.contains(&info) {
        if block.directive.is_some() {
            return Err(format!(
                "a docs-test directive before a `{info}` block: only command blocks \
                 ({SHELL_INFO:?}) are run or skipped"
            ));
        }
        if info.is_empty() && looks_like_commands(&block.body) {
            return Err(
                "an unlabelled block that starts with a command: fence it as ```sh \
                 (it then runs, or needs a docs-test directive), or as ```text if it is a \
                 synopsis or an output sample"
                    .to_string(),
            );
        }
        return Ok(Plan::Ignore);
    }
    let has_prompts = block.body.lines().any(|l| l.starts_with("$ "));
    match &block.directive {
        Some((_, text)) => directive(text, &block.prose),
        None if info == "console" && has_prompts => transcript(&block.body).map(Plan::Transcript),
        None if has_prompts => Err(format!(
            "`$ ` prompts in a ```{info} block, which runs as a script: fence a transcript \
             as ```console"
        )),
        None => Ok(Plan::Run),
    }
}

fn looks_like_commands(body: &str) -> bool {
    let Some(first) = body.split_whitespace().next() else {
        return false;
    };
    COMMANDS.contains(&first) || COMMAND_DIRS.iter().any(|dir| first.starts_with(dir))
}

fn vocabulary() -> String {
    let reasons: Vec<String> = SKIP_REASONS
        .iter()
        .map(|(reason, _)| format!("`skip ({reason})`"))
        .collect();
    format!(
        "{}, `background (ready when HOST:PORT accepts)`",
        reasons.join(", ")
    )
}

/// The plan a directive's text asks for; `prose` is what the reader sees before the block.
fn directive(text: &str, prose: &str) -> Result<Plan, String> {
    let unknown = || format!("unknown directive `{text}`; known: {}", vocabulary());
    if let Some(reason) = text
        .strip_prefix("skip (")
        .and_then(|r| r.strip_suffix(')'))
    {
        let (reason, cues) = SKIP_REASONS
            .iter()
            .find(|(known, _)| *known == reason)
            .ok_or_else(unknown)?;
        let seen = prose.to_lowercase();
        if !cues.iter().any(|cue| seen.contains(cue)) {
            return Err(format!(
                "a block skipped because it {reason} must say so in the text before it \
                 (readers do not see the comment); expected one of {cues:?} there"
            ));
        }
        return Ok(Plan::Skip(reason));
    }
    let addresses = text
        .strip_prefix("background (ready when ")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|r| {
            r.strip_suffix(" accepts")
                .or_else(|| r.strip_suffix(" accept"))
        })
        .ok_or_else(unknown)?;
    addresses
        .split(" and ")
        .map(|a| {
            a.trim()
                .parse::<SocketAddr>()
                .map_err(|e| format!("`{a}` in `{text}` is not an address:port: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Plan::Background)
}

/// The commands of a `console` block and the output expected of each.
fn transcript(body: &str) -> Result<Vec<(String, String)>, String> {
    let mut steps: Vec<(String, String)> = Vec::new();
    for line in body.lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push((command.to_string(), String::new()));
        } else if let Some((_, output)) = steps.last_mut() {
            output.push_str(line);
            output.push('\n');
        } else {
            return Err(format!(
                "a ```console transcript must start with a `$ command` line, not `{line}`"
            ));
        }
    }
    Ok(steps)
}

/// The block's lines with `\`-continued lines joined.
fn logical_lines(body: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in body.lines() {
        match line.strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// The statuses the block's `curl -i` lines announce in their comments, in order; empty
/// when none does.
fn expected_statuses(body: &str) -> Result<Vec<u16>, String> {
    let comment = Regex::new(r"(?:^|\s)#\s*([1-5][0-9]{2})\b").unwrap();
    let mut statuses = Vec::new();
    let mut unannounced = Vec::new();
    for line in logical_lines(body) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let include = words.iter().any(|w| *w == "-i" || *w == "--include");
        if words.first() != Some(&"curl") || !include {
            continue;
        }
        match comment.captures(&line) {
            Some(c) => statuses.push(c[1].parse().unwrap()),
            None => unannounced.push(line),
        }
    }
    if !statuses.is_empty() && !unannounced.is_empty() {
        return Err(format!(
            "some `curl -i` lines announce a status in their comment and some do not: \
             {unannounced:?}; give each one (`# 200 ...`)"
        ));
    }
    Ok(statuses)
}

/// The HTTP statuses `curl -i` printed.
fn statuses_in(stdout: &str) -> Vec<u16> {
    let status = Regex::new(r"(?m)^HTTP/[0-9.]+ ([0-9]{3})\b").unwrap();
    status
        .captures_iter(stdout)
        .map(|c| c[1].parse().unwrap())
        .collect()
}

/// The `cargo build` arguments of each `cargo run ARGS -- ...` line of the block.
fn cargo_runs(body: &str) -> Vec<Vec<String>> {
    logical_lines(body)
        .iter()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("cargo") && words.next() == Some("run")).then(|| {
                words
                    .take_while(|w| *w != "--" && !w.starts_with('#'))
                    .map(str::to_string)
                    .collect()
            })
        })
        .collect()
}

/// A document: its path and its blocks with their plans.
type Document = (&'static str, Vec<(Block, Plan)>);

/// Every document's blocks with their plans; `Err` lists every problem as `file:line: ...`.
fn plans() -> Result<Vec<Document>, Vec<String>> {
    let mut documents = Vec::new();
    let mut problems = Vec::new();
    for &doc in DOCUMENTS {
        let text = fs::read_to_string(root().join(doc)).unwrap_or_else(|e| panic!("{doc}: {e}"));
        let blocks = match markdown::read(&text) {
            Ok(blocks) => blocks,
            Err(found) => {
                problems.extend(found.into_iter().map(|p| format!("{doc}: {p}")));
                continue;
            }
        };
        let mut planned = Vec::new();
        for block in blocks {
            let line = block.directive.as_ref().map_or(block.line, |(l, _)| *l);
            match plan(&block).and_then(|p| match &p {
                Plan::Run => expected_statuses(&block.body).map(|_| p),
                _ => Ok(p),
            }) {
                Ok(p) => planned.push((block, p)),
                Err(why) => problems.push(format!("{doc}:{line}: {why}")),
            }
        }
        documents.push((doc, planned));
    }
    if problems.is_empty() {
        Ok(documents)
    } else {
        Err(problems)
    }
}

#[test]
fn every_command_block_is_runnable_or_marked() {
    if let Err(problems) = plans() {
        panic!(
            "documentation blocks not marked as the docs test needs (see tests/docs.rs):\n{}",
            problems.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------
// Processes

/// A shell started in a process group of its own, with everything it starts; stopped
/// (the whole group) when dropped.
struct Group {
    child: Child,
    pgid: Pid,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Where it comes from: `file:line`.
    label: String,
    stopped: bool,
}

impl Group {
    fn spawn(run: &Runner, label: &str, script: &str) -> Group {
        let n = run.spawned.get();
        run.spawned.set(n + 1);
        let stdout = run.logs.path().join(format!("{n}.stdout"));
        let stderr = run.logs.path().join(format!("{n}.stderr"));
        let child = Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(root())
            .env("PATH", &run.path)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{label}: cannot start bash: {e}"));
        let pgid = Pid::from_child(&child);
        Group {
            child,
            pgid,
            stdout,
            stderr,
            label: label.to_string(),
            stopped: false,
        }
    }

    /// The processes of the group still alive (zombies aside), as `pid name`.
    fn members(&self) -> Vec<String> {
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let alive = !matches!(fields.first(), Some(&"Z") | Some(&"X"));
            let pgrp = fields.get(2).and_then(|g| g.parse::<i32>().ok());
            if alive && pgrp == Some(self.pgid.as_raw_pid()) {
                found.push(format!(
                    "{} {}",
                    &stat[..open].trim(),
                    &stat[open + 1..close]
                ));
            }
        }
        found
    }

    /// The shell's exit status once it has ended.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Stops the whole group: SIGTERM, then SIGKILL after [`STOP_GRACE`]. Signals only a
    /// group that still has members (its id is not reused while one lives).
    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if !self.members().is_empty() {
            let _ = kill_process_group(self.pgid, Signal::TERM);
            let deadline = Instant::now() + STOP_GRACE;
            while !self.members().is_empty() && Instant::now() < deadline {
                let _ = self.exited();
                std::thread::sleep(POLL);
            }
            if !self.members().is_empty() {
                let _ = kill_process_group(self.pgid, Signal::KILL);
            }
        }
        let _ = self.child.wait();
    }

    fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// The last `lines` lines of its stdout and stderr, for a failure message.
    fn logs(&self, lines: usize) -> String {
        let stderr = fs::read_to_string(&self.stderr).unwrap_or_default();
        format!(
            "  stdout (end):\n{}\n  stderr (end):\n{}",
            tail(&self.stdout(), lines),
            tail(&stderr, lines)
        )
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..]
        .iter()
        .map(|l| format!("    | {l}\n"))
        .collect::<String>()
        .trim_end()
        .to_string()
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

// ---------------------------------------------------------------------------------------
// Running the documents

/// What the blocks run with.
struct Runner {
    /// `PATH` with the release binaries first.
    path: OsString,
    /// Every block's output.
    logs: TempDir,
    spawned: std::cell::Cell<usize>,
}

/// The failure of one block: where, what happened, the command, then `details`.
fn failure(label: &str, what: &str, command: &str, details: &str) -> String {
    let command: String = command.lines().map(|l| format!("    $ {l}\n")).collect();
    format!("{label}: {what}\n  command:\n{command}{details}")
        .trim_end()
        .to_string()
}

impl Runner {
    /// Runs a script to its end (at most [`BLOCK_TIMEOUT`]); its stdout, or why it failed.
    fn run(&self, label: &str, script: &str) -> Result<String, String> {
        let mut group = Group::spawn(self, label, script);
        let deadline = Instant::now() + BLOCK_TIMEOUT;
        let status = loop {
            if let Some(status) = group.exited() {
                break status;
            }
            if Instant::now() > deadline {
                let running = group.members();
                group.stop();
                let what = format!("still running after {BLOCK_TIMEOUT:?}: {running:?}");
                return Err(failure(label, &what, script, &group.logs(40)));
            }
            std::thread::sleep(POLL);
        };
        let left = group.members();
        group.stop();
        if !status.success() {
            return Err(failure(label, &status.to_string(), script, &group.logs(40)));
        }
        if !left.is_empty() {
            let what = format!(
                "left processes running: {left:?}; a block that starts something that keeps \
                 running needs `<!-- docs-test: background (ready when HOST:PORT accepts) -->`"
            );
            return Err(failure(label, &what, script, ""));
        }
        Ok(group.stdout())
    }

    /// Starts a background block and waits until every address accepts.
    fn start(&self, label: &str, script: &str, ready: &[SocketAddr]) -> Result<Group, String> {
        if let Some(busy) = ready.iter().find(|a| accepts(**a)) {
            let what = format!(
                "{busy} accepts connections before the block started: something else listens \
                 there (left over from an earlier run?)"
            );
            return Err(failure(label, &what, script, ""));
        }
        let mut group = Group::spawn(self, label, script);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ready.iter().all(|a| accepts(*a)) {
                return Ok(group);
            }
            let ended = group.exited();
            let what = match ended {
                Some(status) if !status.success() => Some(format!("exited with {status}")),
                Some(_) if group.members().is_empty() => {
                    Some("ended with nothing left running".to_string())
                }
                _ if Instant::now() > deadline => Some(format!("not ready in {READY_TIMEOUT:?}")),
                _ => None,
            };
            if let Some(what) = what {
                let waiting: Vec<_> = ready.iter().filter(|a| !accepts(**a)).collect();
                group.stop();
                let what = format!("{what}: {waiting:?} did not accept");
                return Err(failure(label, &what, script, &group.logs(40)));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs one block that is not in the background.
    fn block(&self, label: &str, block: &Block, plan: &Plan) -> Result<(), String> {
        match plan {
            Plan::Run => {
                let stdout = self.run(label, &block.body)?;
                let expected =
                    expected_statuses(&block.body).map_err(|e| format!("{label}: {e}"))?;
                let got = statuses_in(&stdout);
                if !expected.is_empty() && got != expected {
                    let what = format!("HTTP statuses {got:?}, the comments say {expected:?}");
                    let details = format!("  stdout:\n{}", tail(&stdout, 200));
                    return Err(failure(label, &what, &block.body, &details));
                }
                Ok(())
            }
            Plan::Transcript(steps) => {
                for (command, expected) in steps {
                    let stdout = self.run(label, command)?;
                    let (got, want) = (normalized(&stdout), normalized(expected));
                    if got != want {
                        let n = (0..).find(|&i| got.get(i) != want.get(i)).unwrap_or(0);
                        let what = format!(
                            "printed something else than the block shows, from output line \
                             {}: the block has {:?}, it printed {:?}",
                            n + 1,
                            want.get(n).copied().unwrap_or("(nothing)"),
                            got.get(n).copied().unwrap_or("(nothing)")
                        );
                        let details = format!("  printed:\n{}", tail(&stdout, 200));
                        return Err(failure(label, &what, command, &details));
                    }
                }
                Ok(())
            }
            Plan::Ignore | Plan::Skip(_) | Plan::Background(_) => Ok(()),
        }
    }

    /// Runs one document's blocks in order, up to its first failure (the blocks after it
    /// may need it). Returns the failure and a one-line summary.
    fn document(&self, doc: &str, blocks: &[(Block, Plan)]) -> (Option<String>, String) {
        let started = Instant::now();
        let mut background: Vec<Group> = Vec::new();
        let mut failed = None;
        for (block, plan) in blocks {
            let label = format!("{doc}:{}", block.line);
            let result = match plan {
                Plan::Background(ready) => self
                    .start(&label, &block.body, ready)
                    .map(|g| background.push(g)),
                _ => self.block(&label, block, plan),
            };
            if let Err(why) = result {
                let logs: Vec<String> = background
                    .iter()
                    .map(|g| format!("  background block {}:\n{}", g.label, g.logs(10)))
                    .collect();
                failed = Some([why].into_iter().chain(logs).collect::<Vec<_>>().join("\n"));
                break;
            }
        }
        while let Some(mut group) = background.pop() {
            group.stop();
        }
        let count = |f: fn(&Plan) -> bool| blocks.iter().filter(|(_, p)| f(p)).count();
        let summary = format!(
            "{doc}: {} run, {} in the background, {} skipped; {:.1} s{}",
            count(|p| matches!(p, Plan::Run | Plan::Transcript(_))),
            count(|p| matches!(p, Plan::Background(_))),
            count(|p| matches!(p, Plan::Skip(_))),
            started.elapsed().as_secs_f64(),
            if failed.is_some() { " (FAILED)" } else { "" }
        );
        (failed, summary)
    }
}

fn normalized(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    while lines.last() == Some(&"") {
        lines.pop();
    }
    lines
}

/// What the blocks need and is missing, with how to get it.
fn missing_tools() -> Vec<String> {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    let mut missing: Vec<String> = [
        ("bash", "apt-get install bash"),
        ("haproxy", "apt-get install haproxy"),
        ("curl", "apt-get install curl"),
        (
            "promtool",
            "apt-get install --no-install-recommends prometheus",
        ),
    ]
    .iter()
    .filter(|(tool, _)| !on_path(tool))
    .map(|(tool, hint)| format!("{tool} on PATH ({hint})"))
    .collect();
    let haproxy3 = root().join(".cache/haproxy-3.2/haproxy");
    if common::haproxy::binary_version(&haproxy3).is_none() {
        missing.push(format!(
            "{} (haproxy/install-haproxy-3.2.sh)",
            haproxy3.display()
        ));
    }
    missing
}

/// Builds the release binaries, and what each `cargo run` of the blocks runs; returns
/// the directory of the release `spoa-guard`.
fn build(documents: &[Document]) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("docs: cargo build --release --bins");
    let out = Command::new(&cargo)
        .args(["build", "--release", "--bins", "--message-format=json"])
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo");
    assert!(out.status.success(), "cargo build --release --bins failed");
    let binary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "spoa-guard")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo build --release --bins named no spoa-guard executable");
    let mut runs: Vec<Vec<String>> = documents
        .iter()
        .flat_map(|(_, blocks)| blocks)
        .filter(|(_, p)| matches!(p, Plan::Run | Plan::Background(_)))
        .flat_map(|(b, _)| cargo_runs(&b.body))
        .collect();
    runs.sort();
    runs.dedup();
    for args in runs {
        eprintln!("docs: cargo build {} (for cargo run)", args.join(" "));
        let status = Command::new(&cargo)
            .arg("build")
            .args(&args)
            .current_dir(root())
            .status()
            .expect("run cargo");
        assert!(status.success(), "cargo build {} failed", args.join(" "));
    }
    binary.parent().unwrap().to_path_buf()
}

#[test]
fn runnable_blocks_run_as_written() {
    let documents = plans().unwrap_or_else(|problems| {
        panic!(
            "cannot run the blocks; fix their marking first:\n{}",
            problems.join("\n")
        )
    });
    let missing = missing_tools();
    if !missing.is_empty() {
        assert!(
            !in_ci(),
            "the docs test needs (CI=true): {}",
            missing.join(", ")
        );
        eprintln!("SKIPPED: the docs test needs {}", missing.join(", "));
        return;
    }
    let bin = build(&documents);
    let mut path = OsString::from(bin.as_os_str());
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let runner = Runner {
        path,
        logs: tempfile::tempdir().unwrap(),
        spawned: std::cell::Cell::new(0),
    };
    let started = Instant::now();
    let mut failures = Vec::new();
    for (doc, blocks) in &documents {
        let (failed, summary) = runner.document(doc, blocks);
        eprintln!("docs: {summary}");
        failures.extend(failed);
    }
    eprintln!(
        "docs: all documents in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "documentation blocks that do not run as written:\n\n{}",
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------
// The reader and the plans

fn blocks(text: &str) -> Vec<Block> {
    markdown::read(text).unwrap()
}

#[test]
fn fences_are_found_in_list_items_with_backticks_and_tildes() {
    let text = "intro\n\n1. Step:\n\n   ```sh\n   echo one\n     indented\n   ```\n\n\
                ~~~~\n```\nnot a fence\n~~~~\n\n```inline``` code is no fence\n";
    let found = blocks(text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].line, 5);
    assert_eq!(found[0].info, "sh");
    assert_eq!(found[0].body, "echo one\n  indented\n");
    assert_eq!(found[0].prose, "intro\n\n1. Step:\n");
    assert_eq!(found[1].line, 10);
    assert_eq!(found[1].info, "");
    assert_eq!(found[1].body, "```\nnot a fence\n");
}

#[test]
fn directives_belong_to_the_fence_right_after_them() {
    let text = "Needs root:\n\n<!-- docs-test: skip (needs root) -->\n```sh\nsudo true\n```\n";
    let found = blocks(text);
    assert_eq!(
        found[0].directive,
        Some((3, "skip (needs root)".to_string()))
    );
    assert_eq!(found[0].prose, "Needs root:\n");
    assert_eq!(plan(&found[0]), Ok(Plan::Skip("needs root")));

    let misplaced = "<!-- docs-test: skip (needs root) -->\n\n```sh\nsudo true\n```\n";
    let problems = markdown::read(misplaced).unwrap_err();
    assert!(problems[0].starts_with("line 1:"), "{problems:?}");
    let malformed = "<!-- docs-test skip -->\n```sh\ntrue\n```\n";
    assert!(markdown::read(malformed).is_err());
    assert!(
        markdown::read("```sh\ntrue\n").is_err(),
        "an unclosed fence"
    );
}

fn block(info: &str, body: &str, directive: Option<&str>, prose: &str) -> Block {
    Block {
        line: 1,
        info: info.to_string(),
        body: body.to_string(),
        directive: directive.map(|d| (1, d.to_string())),
        prose: prose.to_string(),
    }
}

#[test]
fn blocks_are_planned_from_info_string_and_directive() {
    assert_eq!(plan(&block("sh", "true\n", None, "")), Ok(Plan::Run));
    assert_eq!(
        plan(&block("toml", "[server]\n", None, "")),
        Ok(Plan::Ignore)
    );
    assert_eq!(
        plan(&block("text", "spoa-guard check\n", None, "")),
        Ok(Plan::Ignore)
    );
    assert_eq!(
        plan(&block("", "# haproxy.cfg\nglobal\n", None, "")),
        Ok(Plan::Ignore)
    );
    for body in ["spoa-guard ban X\n", "$ cargo test\n", "scripts/test\n"] {
        assert!(plan(&block("", body, None, "")).is_err(), "{body}");
    }
    assert!(plan(&block("toml", "a = 1\n", Some("skip (needs root)"), "root")).is_err());
    assert_eq!(
        plan(&block(
            "sh",
            "x\n",
            Some("background (ready when 127.0.0.1:1 and [::1]:2 accept)"),
            ""
        )),
        Ok(Plan::Background(vec![
            "127.0.0.1:1".parse().unwrap(),
            "[::1]:2".parse().unwrap()
        ]))
    );
    let unknown = plan(&block("sh", "x\n", Some("skip (too slow)"), "slow")).unwrap_err();
    assert!(unknown.contains("needs root"), "{unknown}");
    let silent = plan(&block(
        "sh",
        "x\n",
        Some("skip (needs root)"),
        "Install it:",
    ))
    .unwrap_err();
    assert!(silent.contains("must say so"), "{silent}");
    assert!(
        plan(&block("sh", "$ true\n", None, "")).is_err(),
        "prompts in sh"
    );
    assert_eq!(
        plan(&block("console", "$ echo a\na\n$ true\n", None, "")),
        Ok(Plan::Transcript(vec![
            ("echo a".to_string(), "a\n".to_string()),
            ("true".to_string(), String::new())
        ]))
    );
}

#[test]
fn curl_lines_announce_statuses_and_cargo_runs_are_built() {
    let body = "curl -i http://x/   # 200: fine\ncurl -s http://x/\n\
                curl -i -A 'a \\\n  b' http://x/   # 403 blocked\n";
    assert_eq!(expected_statuses(body), Ok(vec![200, 403]));
    assert_eq!(expected_statuses("curl -i http://x/\n"), Ok(vec![]));
    assert!(expected_statuses("curl -i http://x/ # 200\ncurl -i http://y/\n").is_err());
    let out = "HTTP/1.1 200 OK\r\nx: y\r\n\r\n<h1>HTTP/1.1 500</h1>\nHTTP/2 403 \r\n";
    assert_eq!(statuses_in(out), vec![200, 403]);
    let runs =
        "cargo run --release -- serve\ncargo run --release -p loadgen -- \\\n  --x 1\ncargo test\n";
    assert_eq!(
        cargo_runs(runs),
        vec![
            vec!["--release".to_string()],
            vec!["--release".into(), "-p".into(), "loadgen".into()]
        ]
    );
}
