//! Incident controls against the real binary: bans set, listed and lifted through the
//! real CLI and the admin socket; what they do to verdicts over SPOP; expiry; the state
//! file across a restart; auto-ban escalation; the dry-run switch; and the admin
//! listener's guards (token, socket mode, GET never changes anything, body cap).

mod common;

use common::agent;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use agent::{arg, guard_check, ipv4, AgentProcess};
use spoa_guard::spop::client::Client;
use spoa_guard::spop::{Action, TypedData};

const BIN: &str = env!("CARGO_BIN_EXE_spoa-guard");

/// Rules of the agents here: a limit on /login and an auto-ban on its denies.
const RULES: &str = r#"
[admin]
listen = "unix:admin.sock"
[bans]
state_file = "state/bans.json"
[lists]
block = ["block.txt"]
[[limit]]
name = "login"
key = "src"
path_prefix = "/login"
rate = 0.01
burst = 1
[[auto_ban]]
name = "login-abuse"
reasons = ["rate-limit"]
rules = ["login"]
hits = 3
window = "1m"
duration = "2s"
factor = 2.0
max_duration = "1h"
"#;

fn agent() -> AgentProcess {
    AgentProcess::with_rules_prepared(RULES, &[("block.txt", "198.51.100.9\n")], |dir| {
        std::fs::create_dir(dir.join("state")).unwrap();
    })
}

/// Runs `spoa-guard ARGS --config CONFIG`: exit code, stdout, stderr.
fn cli(agent: &AgentProcess, args: &[&str]) -> (i32, String, String) {
    let out = agent.cli(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `txn.guard.*` variables the agent answers for `src` asking for `path`.
async fn verdict(agent: &AgentProcess, src: &str, path: &'static str) -> HashMap<String, String> {
    let mut client = Client::connect(agent.addr).await.unwrap();
    let mut message = guard_check(ipv4(src));
    message.args[2] = arg("path", TypedData::str(path));
    let actions = client.notify(1, 1, vec![message]).await.unwrap();
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::SetVar { name, value, .. } => Some((
                String::from_utf8_lossy(&name).into_owned(),
                match value {
                    TypedData::String(s) => String::from_utf8_lossy(&s).into_owned(),
                    TypedData::Int32(n) => n.to_string(),
                    TypedData::Uint32(n) => n.to_string(),
                    other => format!("{other:?}"),
                },
            )),
            _ => None,
        })
        .collect()
}

fn outcome(vars: &HashMap<String, String>) -> (String, String, String) {
    let get = |k: &str| vars.get(k).cloned().unwrap_or_default();
    (get("action"), get("reason"), get("rule"))
}

fn deny(reason: &str, rule: &str) -> (String, String, String) {
    ("deny".into(), reason.into(), rule.into())
}

fn allow() -> (String, String, String) {
    ("allow".into(), "none".into(), String::new())
}

/// The bans as `bans --json` lists them.
fn bans(agent: &AgentProcess) -> Vec<serde_json::Value> {
    let (code, out, err) = cli(agent, &["bans", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "one line: {out}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
async fn a_cli_ban_denies_at_once_and_an_unban_lifts_it() {
    let agent = agent();
    assert_eq!(outcome(&verdict(&agent, "192.0.2.50", "/").await), allow());
    let (code, out, err) = cli(
        &agent,
        &["ban", "192.0.2.0/24", "--for", "1h", "--reason", "INC-42"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("banned 192.0.2.0/24 until "), "{out}");
    let set = Instant::now();
    let vars = verdict(&agent, "192.0.2.50", "/").await;
    assert!(set.elapsed() < Duration::from_millis(100));
    assert_eq!(outcome(&vars), deny("ban", "manual"));
    assert_eq!(vars["status"], "403");
    let left: u32 = vars["retry_after"].parse().unwrap();
    assert!((3598..=3600).contains(&left), "{left}");
    let listed = bans(&agent);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["target"], "192.0.2.0/24");
    assert_eq!(listed[0]["origin"], "manual");
    assert_eq!(listed[0]["reason"], "INC-42");
    assert!(listed[0]["expires_at"].as_str().unwrap().ends_with('Z'));
    let (code, out, _) = cli(&agent, &["unban", "192.0.2.0/24"]);
    assert_eq!(code, 0);
    assert!(out.contains("lifted the ban on 192.0.2.0/24"), "{out}");
    assert_eq!(outcome(&verdict(&agent, "192.0.2.50", "/").await), allow());
    assert!(agent.log().contains("ban lifted"), "{}", agent.log());
}

#[tokio::test]
async fn bad_input_gets_one_line_and_exit_code_1_and_changes_nothing() {
    let agent = agent();
    for (args, needle) in [
        (
            vec!["ban", "not-an-address", "--for", "1h"],
            "not an IP address",
        ),
        (vec!["ban", "192.0.2.1", "--for", "0s"], "at least 1s"),
        (vec!["ban", "192.0.2.1", "--for", "10"], "needs a unit"),
        (vec!["ban", "10.0.0.0/8", "--for", "1h"], "--force"),
        (vec!["unban", "192.0.2.1"], "is not banned"),
    ] {
        let (code, out, err) = cli(&agent, &args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(out.is_empty(), "{out}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(bans(&agent).is_empty());
    // Usage errors are 2; --force allows the wide network.
    assert_eq!(cli(&agent, &["ban", "192.0.2.1"]).0, 2);
    assert_eq!(cli(&agent, &["dry-run", "on"]).0, 2);
    assert_eq!(
        cli(&agent, &["ban", "10.0.0.0/8", "--for", "1m", "--force"]).0,
        0
    );
    let (code, out, _) = cli(&agent, &["bans"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("10.0.0.0/8") && out.contains("manual"),
        "{out}"
    );
}

#[tokio::test]
async fn a_ban_expires_at_its_second() {
    let agent = agent();
    assert_eq!(cli(&agent, &["ban", "192.0.2.60", "--for", "2s"]).0, 0);
    let until = Instant::now() + Duration::from_secs(2);
    assert_eq!(
        outcome(&verdict(&agent, "192.0.2.60", "/").await),
        deny("ban", "manual")
    );
    tokio::time::sleep_until((until + Duration::from_millis(1100)).into()).await;
    assert_eq!(outcome(&verdict(&agent, "192.0.2.60", "/").await), allow());
    // Freed by the expiry task within a second, and logged.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(bans(&agent).is_empty());
    assert!(agent.log().contains("ban expired"), "{}", agent.log());
}

#[tokio::test]
async fn bans_survive_a_restart_with_their_expiry() {
    let mut agent = agent();
    // No ASN database in this agent: the AS ban needs --force.
    let (code, _, err) = cli(&agent, &["ban", "AS64496", "--for", "1h"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no ASN database"), "{err}");
    assert_eq!(
        cli(&agent, &["ban", "AS64496", "--for", "1h", "--force"]).0,
        0
    );
    assert_eq!(
        cli(
            &agent,
            &["ban", "2001:db8::/48", "--for", "2h", "--reason", "x"]
        )
        .0,
        0
    );
    let before = bans(&agent);
    // The state writer saves within a quarter second.
    tokio::time::sleep(Duration::from_millis(600)).await;
    agent.stop();
    agent.restart();
    let after = bans(&agent);
    let view = |bans: &[serde_json::Value]| -> Vec<(String, String)> {
        bans.iter()
            .map(|b| (b["target"].to_string(), b["expires_at"].to_string()))
            .collect()
    };
    assert_eq!(view(&after), view(&before));
    assert!(agent.log().contains("bans restored"), "{}", agent.log());
}

#[tokio::test]
async fn repeated_limit_denies_ban_the_source_and_the_second_ban_is_longer() {
    let agent = agent();
    let src = "192.0.2.70";
    // Burst 1: the first /login passes, the next three are 429s and trigger the ban.
    assert_eq!(outcome(&verdict(&agent, src, "/login").await).0, "allow");
    for _ in 0..3 {
        assert_eq!(
            outcome(&verdict(&agent, src, "/login").await),
            deny("rate-limit", "login")
        );
    }
    let banned = wait_for(
        || async { outcome(&verdict(&agent, src, "/").await) },
        |o| *o == deny("ban", "login-abuse"),
    )
    .await;
    assert!(banned, "no auto-ban:\n{}", agent.log());
    let first = bans(&agent);
    assert_eq!(first[0]["origin"], "login-abuse");
    assert_eq!(first[0]["reason"], "3 rate-limit denies within 1m");
    assert!(first[0]["expires_in"].as_u64().unwrap() <= 2);
    // After it expires, three more denies ban again, twice as long.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    for _ in 0..3 {
        assert_eq!(
            outcome(&verdict(&agent, src, "/login").await),
            deny("rate-limit", "login")
        );
    }
    let again = wait_for(|| async { bans(&agent) }, |b| !b.is_empty()).await;
    assert!(again, "no second ban:\n{}", agent.log());
    let second = bans(&agent);
    let left = second[0]["expires_in"].as_u64().unwrap();
    assert!((3..=4).contains(&left), "second ban lasts {left} s");
    let (_, rules, _) = cli(&agent, &["rules"]);
    assert!(rules.contains("auto-ban"), "{rules}");
}

#[tokio::test]
async fn the_dry_run_switch_stops_every_deny_until_turned_off() {
    let agent = agent();
    assert_eq!(cli(&agent, &["ban", "192.0.2.80", "--for", "1h"]).0, 0);
    let (code, out, _) = cli(&agent, &["dry-run", "on", "--for", "10m"]);
    assert_eq!(code, 0);
    assert!(out.contains("dry-run switch ON until"), "{out}");
    let banned = verdict(&agent, "192.0.2.80", "/").await;
    assert_eq!(banned["action"], "allow");
    assert_eq!(banned["dry_run"], "manual");
    let blocked = verdict(&agent, "198.51.100.9", "/").await;
    assert_eq!(
        (blocked["action"].as_str(), blocked["dry_run"].as_str()),
        ("allow", "block")
    );
    let (_, rules, _) = cli(&agent, &["rules"]);
    assert!(rules.contains("DRY-RUN SWITCH ON"), "{rules}");
    assert_eq!(cli(&agent, &["dry-run", "off"]).0, 0);
    assert_eq!(
        outcome(&verdict(&agent, "192.0.2.80", "/").await),
        deny("ban", "manual")
    );
    assert_eq!(
        outcome(&verdict(&agent, "198.51.100.9", "/").await),
        deny("blocklist", "block")
    );
}

#[tokio::test]
async fn rules_and_reload_show_what_is_in_force() {
    let agent = agent();
    let (code, out, err) = cli(&agent, &["rules", "--json"]);
    assert_eq!(code, 0, "{err}");
    let view: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<&str> = view["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ban", "blocklist", "rate-limit", "auto-ban"]);
    // A broken list: the reload is refused with file:line, the old rules stay.
    std::fs::write(
        agent.dir.path().join("block.txt"),
        "198.51.100.9\nnot-an-ip\n",
    )
    .unwrap();
    let (code, _, err) = cli(&agent, &["reload"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("block.txt:2:"), "{err}");
    let (_, out, _) = cli(&agent, &["rules"]);
    assert!(out.contains("FAILED"), "{out}");
    assert_eq!(
        outcome(&verdict(&agent, "198.51.100.9", "/").await),
        deny("blocklist", "block")
    );
}

#[test]
fn the_admin_socket_is_private_by_default_and_shared_on_request() {
    let agent = agent();
    let mode = |agent: &AgentProcess| {
        std::fs::metadata(agent.dir.path().join("admin.sock"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&agent), 0o600);
    let shared = AgentProcess::with_rules(
        "[admin]\nlisten = \"unix:admin.sock\"\nsocket_mode = \"0660\"\n",
        &[],
    );
    assert_eq!(mode(&shared), 0o660);
}

/// A raw HTTP/1.1 request to `addr`; the status code.
fn http(addr: std::net::SocketAddr, request: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn post(path: &str, token: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn tcp_admin_needs_a_token_and_a_wrong_one_changes_nothing() {
    // Without a token file the agent refuses to start.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spoa-guard.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token_file"), "{err}");

    let port = common::haproxy::free_port();
    let metrics = common::haproxy::free_port();
    let token = "0123456789abcdef0123456789abcdef";
    let agent = AgentProcess::with_rules(
        &format!(
            "[admin]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"token\"\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"
        ),
        &[("token", &format!("{token}\n"))],
    );
    let admin: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ban = r#"{"target":"192.0.2.90","duration":"1h"}"#;
    assert_eq!(http(admin, &post("/bans", "wrong", ban)), 401);
    assert_eq!(
        http(
            admin,
            "POST /bans HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        401
    );
    let (code, out, _) = cli(&agent, &["bans"]);
    assert_eq!((code, out.trim()), (0, "no bans in force"));
    // A body over 4 KiB is refused before anything reads it.
    let big = format!(
        r#"{{"target":"192.0.2.90","duration":"1h","reason":"{}"}}"#,
        "x".repeat(5000)
    );
    assert_eq!(http(admin, &post("/bans", token, &big)), 413);
    // GET never changes anything, on either listener; the metrics listener takes no POST.
    let get_with_body = format!(
        "GET /bans HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{ban}",
        ban.len()
    );
    assert_eq!(http(admin, &get_with_body), 200);
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{metrics}").parse().unwrap();
    assert_eq!(http(metrics, &post("/bans", token, ban)), 405);
    assert_eq!(cli(&agent, &["bans"]).1.trim(), "no bans in force");
    // The right token works, through the CLI (which reads token_file) too.
    assert_eq!(http(admin, &post("/bans", token, ban)), 201);
    assert_eq!(cli(&agent, &["unban", "192.0.2.90"]).0, 0);
}

#[test]
fn an_unreachable_agent_is_exit_code_3() {
    let mut agent = agent();
    agent.stop();
    let (code, _, err) = cli(&agent, &["bans"]);
    assert_eq!(code, 3);
    assert!(err.contains("cannot connect"), "{err}");
}

/// Polls `probe` until `done` (at most 3 s); whether it got there.
async fn wait_for<T, F, Fut>(probe: F, done: impl Fn(&T) -> bool) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if done(&probe().await) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn top_by_rule_shows_what_decides_and_what_dry_runs_would() {
    let metrics = common::haproxy::free_port();
    let agent = AgentProcess::with_rules_prepared(
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n{RULES}\n\
             [[user_agent]]\nname = \"curl-watch\"\npattern = \"curl\"\naction = \"deny\"\ndry_run = true\n"
        ),
        &[("block.txt", "198.51.100.9\n")],
        |dir| std::fs::create_dir(dir.join("state")).unwrap(),
    );
    assert_eq!(cli(&agent, &["ban", "192.0.2.40", "--for", "1h"]).0, 0);
    for _ in 0..3 {
        verdict(&agent, "192.0.2.40", "/").await;
    }
    let (code, out, err) = cli(
        &agent,
        &["top", "--by", "rule", "--once", "--interval", "1"],
    );
    assert_eq!(code, 0, "{err}");
    let line = |kind: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(kind))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("ban ").contains(" 3  denied"), "{out}");
    assert!(line("user-agent").contains("would deny"), "{out}");
    assert!(out.contains("per second over the last"), "{out}");
}
