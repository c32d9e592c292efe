//! The `spoa-guard` binary: `check` exit codes and `file:line` errors, `serve` refusing
//! bad input, SIGTERM shutdown and SIGHUP reload.

mod common;

use common::agent;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use agent::{guard_check, ipv4, AgentProcess};
use spoa_guard::spop::client::Client;
use spoa_guard::spop::{Action, Frame, Payload, TypedData};

const BIN: &str = env!("CARGO_BIN_EXE_spoa-guard");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_config(dir: &Path, listen: &str, block: &str) -> String {
    std::fs::write(dir.join("block.txt"), block).unwrap();
    let config = dir.join("spoa-guard.toml");
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"{listen}\"\n[lists]\nblock = [\"block.txt\"]\n"),
    )
    .unwrap();
    config.display().to_string()
}

#[test]
fn check_accepts_the_bundled_example() {
    let out = run(&[
        "check",
        "--config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/spoa-guard.toml"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("OK"));
}

#[test]
fn check_reports_every_bad_line_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "127.0.0.1:0",
        "192.0.2.1\nnot-an-ip\n# fine\n10.0.0.0/33\n",
    );
    let out = run(&["check", "-c", &config]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let block = dir.path().join("block.txt").display().to_string();
    assert!(stderr.contains(&format!("{block}:2: ")), "{stderr}");
    assert!(stderr.contains("not-an-ip"), "{stderr}");
    assert!(stderr.contains(&format!("{block}:4: ")), "{stderr}");
    assert!(stderr.contains("2 error(s)"), "{stderr}");
}

#[test]
fn check_names_unknown_keys_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:1\"\nmax_frame = 1\n",
    )
    .unwrap();
    let out = run(&["check", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("max_frame"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(&config, "[lists]\nblock = [\"missing.txt\"]\n").unwrap();
    let out = run(&["check", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("missing.txt"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&["check", "-c", "/nonexistent/spoa-guard.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/spoa-guard.toml"));
}

#[test]
fn check_reports_every_configuration_error_at_once_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spoa-guard.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:1\"\nthreds = 2\n\n\
         [[user_agent]]\nname = \"bots\"\npattern = \"x\"\naction = \"block\"\n\n\
         [[limit]]\nname = \"login\"\nrate = 0\npath_prefix = \"login\"\ndry_run = \"yes\"\n",
    )
    .unwrap();
    let out = run(&["check", "-c", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let file = config.display().to_string();
    for needle in [
        format!("{file}:3: server.threds: unknown field `threds`"),
        format!(
            "{file}:8: user_agent \"bots\".action: must be \"allow\" or \"deny\", got \"block\""
        ),
        format!("{file}:12: limit \"login\".rate: must be a number of tokens per second above 0"),
        format!("{file}:13: warning: limit \"login\".path_prefix:"),
        format!("{file}:14: limit \"login\".dry_run: expected a boolean, got string \"yes\""),
        format!("{file}: 4 error(s)"),
    ] {
        assert!(
            stderr.contains(&needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }

    // A misspelt environment override is blamed on the variable, not on the file.
    std::fs::write(&config, "[server]\nlisten = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c", config.to_str().unwrap()])
        .env("SPOA_GUARD__SERVER__LISTN", "127.0.0.1:2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("environment SPOA_GUARD__SERVER__LISTN: server.listn: unknown field"),
        "{stderr}"
    );
    for line in ["1", "2"] {
        assert!(
            !stderr.contains(&format!("{file}:{line}:")),
            "blamed on the file: {stderr}"
        );
    }
}

#[test]
fn serve_refuses_to_start_with_broken_rules() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "127.0.0.1:0", "300.1.1.1\n");
    let out = run(&["serve", "-c", &config]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("block.txt:1:"),
        "{}",
        text(&out.stderr)
    );
}

async fn action_for(client: &mut Client<tokio::net::TcpStream>, src: &str) -> TypedData {
    let actions = client
        .notify(1, 1, vec![guard_check(ipv4(src))])
        .await
        .unwrap();
    actions
        .into_iter()
        .find_map(|a| match a {
            Action::SetVar { name, value, .. } if name.as_ref() == b"action" => Some(value),
            _ => None,
        })
        .unwrap()
}

#[tokio::test]
async fn sigterm_disconnects_clients_and_exits_0() {
    let mut agent = AgentProcess::start("allow", "", "block", "192.0.2.1\n");
    let mut client = Client::connect(agent.addr).await.unwrap();
    assert_eq!(
        action_for(&mut client, "192.0.2.1").await,
        TypedData::str("deny")
    );
    let started = Instant::now();
    agent.signal("TERM");
    let frame = client.recv().await.unwrap();
    assert!(
        matches!(
            frame,
            Some(Frame {
                payload: Payload::AgentDisconnect(_),
                ..
            })
        ),
        "{frame:?}"
    );
    let status = tokio::task::spawn_blocking(move || agent.stop_wait())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn sighup_reloads_and_a_broken_file_keeps_the_old_rules() {
    let agent = AgentProcess::start("allow", "", "block", "192.0.2.1\n");
    let mut client = Client::connect(agent.addr).await.unwrap();
    assert_eq!(
        action_for(&mut client, "192.0.2.2").await,
        TypedData::str("allow")
    );

    std::fs::write(agent.dir.path().join("block.txt"), "192.0.2.2\n").unwrap();
    agent.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while action_for(&mut client, "192.0.2.2").await != TypedData::str("deny") {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        action_for(&mut client, "192.0.2.1").await,
        TypedData::str("allow")
    );

    // A broken edit: the rules in force stay, and the log names the line.
    std::fs::write(
        agent.dir.path().join("block.txt"),
        "192.0.2.3\nbroken line\n",
    )
    .unwrap();
    agent.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.log().contains("block.txt:2:") {
        assert!(
            Instant::now() < deadline,
            "reload error not logged:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        action_for(&mut client, "192.0.2.2").await,
        TypedData::str("deny")
    );
    assert_eq!(
        action_for(&mut client, "192.0.2.3").await,
        TypedData::str("allow")
    );
}

#[test]
fn eval_explains_each_step_of_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/spoa-guard.toml");
    let out = run(&[
        "eval",
        "-c",
        example,
        "--src",
        "127.0.0.200",
        "--ua",
        "curl/8",
        "--path",
        "/",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for needle in [
        "source 127.0.0.200 is in AS64500",
        "allowlist: no match",
        "blocklist: no match",
        "asn: AS64500 is blocked → deny",
        "decision: deny (reason asn, rule AS64500)",
        "txn.guard.asn          = 64500",
        "txn.guard.status       = 403",
    ] {
        assert!(
            stdout.contains(needle),
            "{needle:?} missing from:\n{stdout}"
        );
    }

    // A burst at one instant: the login limit (burst 10) denies the 11th POST.
    let out = run(&[
        "eval",
        "-c",
        example,
        "--src",
        "127.0.0.9",
        "--ua",
        "Firefox/128",
        "--path",
        "/login",
        "--method",
        "POST",
        "--repeat",
        "11",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("decision: deny (reason rate-limit, rule login)"),
        "{stdout}"
    );
    assert!(stdout.contains("txn.guard.retry_after  = 2"), "{stdout}");

    let out = run(&["eval", "-c", example, "--src", "not-an-ip"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not-an-ip"));
}

#[test]
fn eval_shows_what_the_steps_after_the_decision_would_have_said() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/spoa-guard.toml");
    // Blocklisted, and a scanner too: the block list decides, the scanners rule is shown.
    let out = run(&[
        "eval",
        "-c",
        example,
        "--src",
        "127.0.0.66",
        "--ua",
        "sqlmap/1.7",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for needle in [
        "  blocklist: blocklist matches → deny",
        "  (not reached) user-agent: rule scanners matches",
        "  (not reached) limit per-client: a token is there (not taken) for src=127.0.0.66",
        "decision: deny (reason blocklist, rule blocklist)",
    ] {
        assert!(
            stdout.contains(needle),
            "{needle:?} missing from:\n{stdout}"
        );
    }
}

#[test]
fn eval_json_and_exit_code_are_for_scripts() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/spoa-guard.toml");
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "-c", example];
        args.extend_from_slice(extra);
        run(&args)
    };
    let out = eval(&["--src", "127.0.0.66", "--ua", "sqlmap/1.7", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["decision"]["action"], "deny");
    assert_eq!(json["decision"]["reason"], "blocklist");
    assert_eq!(json["decision"]["status"], 403);
    assert_eq!(json["variables"]["rule"], "blocklist");
    assert_eq!(json["request"]["src"], "127.0.0.66");
    let steps = json["steps"].as_array().unwrap();
    let step = |name: &str| steps.iter().find(|s| s["step"] == name).unwrap();
    assert_eq!(step("blocklist")["reached"], true);
    assert_eq!(step("user-agent")["reached"], false);
    assert_eq!(step("user-agent")["notes"][0]["note"], "user-agent-match");
    assert_eq!(step("user-agent")["notes"][0]["rule"], "scanners");
    assert_eq!(
        step("rate-limit")["notes"][0]["bucket"]["state"],
        "available"
    );

    // --exit-code: 1 when denied, 0 when allowed; without it, 0 either way.
    let denied = eval(&["--src", "127.0.0.66", "--exit-code"]);
    assert_eq!(denied.status.code(), Some(1), "{}", text(&denied.stderr));
    let allowed = eval(&["--src", "127.0.0.9", "--ua", "Firefox/128", "--exit-code"]);
    assert_eq!(allowed.status.code(), Some(0), "{}", text(&allowed.stderr));
    assert_eq!(eval(&["--src", "127.0.0.66"]).status.code(), Some(0));
}

/// `spoa-guard top --once` against a running agent: the heaviest source and its
/// network are listed first, with their share; an agent without the listener is a
/// clear error and exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_who_is_hitting_a_running_agent() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let agent = AgentProcess::with_rules(
        &format!("[metrics]\nlisten = \"{metrics}\"\n[lists]\nblock = [\"block.txt\"]\n"),
        &[("block.txt", "203.0.113.0/24\n")],
    );
    let mut client = Client::connect(agent.addr).await.unwrap();
    for _ in 0..30 {
        action_for(&mut client, "203.0.113.9").await;
    }
    for last in 1..=5 {
        action_for(&mut client, &format!("198.51.100.{last}")).await;
    }
    let config = agent.config.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        run(&["top", "--config", &config, "--once", "-n", "3"])
    })
    .await
    .unwrap();
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}\n{}", text(&out.stderr));
    assert!(shown.contains("35 requests, 30 denied"), "{shown}");
    assert!(
        shown.contains("        30  85.7%  203.0.113.0/24"),
        "{shown}"
    );
    assert!(shown.contains("        30  85.7%  203.0.113.9"), "{shown}");
    let out = tokio::task::spawn_blocking(move || {
        run(&["top", "--once", "--denied", "--addr", &metrics])
    })
    .await
    .unwrap();
    let shown = text(&out.stdout);
    assert!(shown.contains("       30 100.0%  203.0.113.9"), "{shown}");
    assert!(!shown.contains("198.51.100."), "{shown}");

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "127.0.0.1:1", "");
    let out = run(&[
        "top",
        "--config",
        &config,
        "--once",
        "--addr",
        "127.0.0.1:9",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot connect to 127.0.0.1:9"),
        "{}",
        text(&out.stderr)
    );
}

/// A valid iptoasn row (AS13335 for 1.0.0.0/24), 44 bytes with its newline.
const ASN_ROW: &[u8] = b"1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET\n";

/// `mib` MiB of `ASN_ROW`s once decompressed, as `mib` concatenated gzip members of
/// 1 MiB each (one stream to a reader): 2048 give a 2 GiB bomb in 6.4 MB, built in
/// milliseconds.
fn asn_bomb(mib: usize) -> Vec<u8> {
    use std::io::Write;
    let one = ASN_ROW.repeat((1 << 20) / ASN_ROW.len());
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&one).unwrap();
    enc.finish().unwrap().repeat(mib)
}

/// `check` against a 2 GiB gzip bomb under `[asn] max_file_bytes` = 8 MiB: refused in
/// moments, naming the file and the setting, and within a 256 MiB data limit (without
/// the cap the bomb took 2.1 GB).
#[test]
fn check_refuses_a_gzip_bomb_quickly_and_names_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("asn.tsv.gz");
    std::fs::write(&table, asn_bomb(2048)).unwrap();
    let config = dir.path().join("spoa-guard.toml");
    std::fs::write(
        &config,
        "[asn]\ndatabases = [\"asn.tsv.gz\"]\nmax_file_bytes = 8388608\n",
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new("sh")
        .args(["-c", "ulimit -d 262144 && exec \"$0\" check -c \"$1\""])
        .arg(BIN)
        .arg(&config)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let want = format!(
        "{}: decompressed size over 8 MiB (asn.max_file_bytes)",
        table.display()
    );
    assert!(stderr.contains(&want), "{want:?} missing from:\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// A reload that meets a gzip bomb fails, logs the file and the cap, and the rules in
/// force (the ASN table and the list) keep deciding.
#[tokio::test]
async fn a_reload_over_a_cap_keeps_the_rules_in_force() {
    let rules = "[lists]\nblock = [\"block.txt\"]\n\
                 [asn]\ndatabases = [\"asn.tsv.gz\"]\nblock = [13335]\nmax_file_bytes = 8388608\n";
    let agent = AgentProcess::with_rules_prepared(rules, &[("block.txt", "192.0.2.1\n")], |dir| {
        std::fs::write(dir.join("asn.tsv.gz"), asn_bomb(1)).unwrap();
    });
    let mut client = Client::connect(agent.addr).await.unwrap();
    let deny = TypedData::str("deny");
    assert_eq!(action_for(&mut client, "1.0.0.1").await, deny);
    assert_eq!(action_for(&mut client, "192.0.2.1").await, deny);
    assert_eq!(
        action_for(&mut client, "198.51.100.1").await,
        TypedData::str("allow")
    );

    std::fs::write(agent.dir.path().join("asn.tsv.gz"), asn_bomb(2048)).unwrap();
    agent.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent
        .log()
        .contains("asn.tsv.gz: decompressed size over 8 MiB (asn.max_file_bytes)")
    {
        assert!(
            Instant::now() < deadline,
            "reload error not logged:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(action_for(&mut client, "1.0.0.1").await, deny);
    assert_eq!(action_for(&mut client, "192.0.2.1").await, deny);
    assert_eq!(
        action_for(&mut client, "198.51.100.1").await,
        TypedData::str("allow")
    );
}
