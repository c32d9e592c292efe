//! `[log] format = "json"` on the real binary: every line the agent writes on stderr —
//! start-up, a denied request, a ban, a protocol error, a reload, the shutdown, debug
//! lines included — is one flat JSON object (no value is an object or an array) with
//! the four standard keys first, the SPOP connection's span fields at the top level, and
//! only keys the README's `[log]` table documents.

mod common;

use common::agent;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use agent::{guard_check, ipv4, AgentProcess, Raw};
use serde_json::{Map, Value};
use spoa_guard::spop::client::Client;

/// Goes into `[log]` (after `level = "debug"`), then the rules.
const CONFIG: &str = r#"format = "json"
[admin]
listen = "unix:admin.sock"
[lists]
block = ["block.txt"]
"#;

/// Every line of `log`, parsed; fails on a line that is not a flat JSON object.
fn parse(log: &str) -> Vec<Map<String, Value>> {
    log.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n\nwhole log:\n{log}"));
            let Value::Object(object) = value else {
                panic!("not an object: {line}");
            };
            for (key, value) in &object {
                assert!(
                    !value.is_object() && !value.is_array(),
                    "{key} is not a scalar: {line}"
                );
            }
            // The standard keys first, in order (written before any value, so their
            // first occurrences are the keys).
            assert!(line.starts_with("{\"timestamp\":"), "{line}");
            let at = |key: &str| line.find(&format!(",\"{key}\":"));
            let (level, target, message) = (at("level"), at("target"), at("message"));
            assert!(
                level.is_some() && level < target && target < message,
                "standard keys out of order: {line}"
            );
            object
        })
        .collect()
}

/// The field names the README's `[log]` section documents (first column of its tables).
fn documented() -> BTreeSet<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("### `[log]`")
        .expect("README has a [log] section");
    let section = &readme[start..];
    let end = section[4..].find("\n### ").map_or(section.len(), |e| e + 4);
    let mut names = BTreeSet::new();
    for row in section[..end].lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap();
        for name in first.split('`').skip(1).step_by(2) {
            names.insert(name.to_string());
        }
    }
    names
}

/// The lines whose message is `message`.
fn with_message<'a>(lines: &'a [Map<String, Value>], message: &str) -> Vec<&'a Map<String, Value>> {
    lines.iter().filter(|l| l["message"] == message).collect()
}

/// Waits until the agent has logged `needle` (10 s at most).
fn wait_for(agent: &AgentProcess, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.log().contains(needle) {
        assert!(Instant::now() < deadline, "no {needle} in\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_of_a_json_log_is_a_flat_object_with_documented_keys() {
    let mut agent = AgentProcess::with_rules(CONFIG, &[("block.txt", "203.0.113.7\n")]);
    wait_for(&agent, "watching rule files");

    // A denied request, inside the SPOP connection's span.
    let mut client = Client::connect(agent.addr).await.unwrap();
    client
        .notify(1, 1, vec![guard_check(ipv4("203.0.113.7"))])
        .await
        .unwrap();
    drop(client);
    // A ban (its target is a field named like a standard key).
    let out = agent.cli(&["ban", "198.51.100.0/24", "--for", "1h", "--reason", "INC-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A protocol error: a frame of an unknown type as the first frame.
    let mut raw = Raw::connect(agent.addr).await;
    raw.write(&[0, 0, 0, 7, 0x63, 0, 0, 0, 0, 0, 0]).await;
    while raw.recv().await.is_some() {} // the AGENT-DISCONNECT, then the close
                                        // A reload.
    std::fs::write(
        agent.dir.path().join("block.txt"),
        "203.0.113.7\n203.0.113.8\n",
    )
    .unwrap();
    agent.signal("HUP");
    wait_for(&agent, "rules reloaded");
    wait_for(&agent, "protocol error; disconnecting");
    assert!(agent.stop().success());

    let log = agent.log();
    let lines = parse(&log);
    let documented = documented();
    for line in &lines {
        if !line["target"].as_str().unwrap().starts_with("spoa_guard") {
            continue; // a dependency's debug line: its own fields
        }
        for key in line.keys() {
            assert!(
                documented.contains(key),
                "{key} is not in the README's [log] table: {line:?}"
            );
        }
    }

    let [loaded] = &with_message(&lines, "rules loaded")[..] else {
        panic!("one \"rules loaded\" expected:\n{log}")
    };
    assert_eq!(loaded["level"], "INFO");
    assert_eq!(loaded["blocklist_entries"], 1);
    assert_eq!(loaded["rate_limits"], 0);
    let [watching] = &with_message(&lines, "watching rule files")[..] else {
        panic!("{log}")
    };
    assert!(watching["dirs"].is_string(), "{watching:?}");

    let [denied] = &with_message(&lines, "denied")[..] else {
        panic!("one deny line expected:\n{log}")
    };
    assert_eq!(denied["target"], "spoa_guard::deny");
    assert_eq!(denied["src"], "203.0.113.7");
    assert_eq!(denied["reason"], "blocklist");
    assert_eq!(denied["rule"], "block");
    assert_eq!(denied["status"], 403);
    assert_eq!(denied["asn"], 0);
    // The connection's span, flattened.
    assert!(
        denied["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{denied:?}"
    );
    assert!(denied["max_frame_size"].is_u64(), "{denied:?}");

    let [ban] = &with_message(&lines, "ban set")[..] else {
        panic!("{log}")
    };
    assert_eq!(ban["target"], "spoa_guard::bans");
    assert_eq!(ban["field_target"], "198.51.100.0/24");
    assert_eq!(ban["reason"], "INC-1");
    assert_eq!(ban["replaced"], false);

    let [error] = &with_message(&lines, "protocol error; disconnecting")[..] else {
        panic!("{log}")
    };
    assert_eq!(error["level"], "WARN");
    assert!(
        error["kind"].is_string() && error["status"].is_u64(),
        "{error:?}"
    );
    assert!(
        error["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{error:?}"
    );

    let [reloaded] = &with_message(&lines, "rules reloaded")[..] else {
        panic!("{log}")
    };
    assert_eq!(reloaded["cause"], "signal");
    assert_eq!(reloaded["blocklist_entries"], 2);
    assert!(reloaded["ms"].is_u64(), "{reloaded:?}");
}
