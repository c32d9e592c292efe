//! The operations endpoint of a real in-process agent: `/metrics` counts exactly what was
//! sent, with the right labels and never a label taken from a request; it keeps
//! answering while SPOP traffic flows; `/healthz` and `/readyz` say what they should.

mod common;

use common::agent;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::{arg, guard_check, ipv4, Agent};
use bytes::Bytes;
use spoa_guard::spop::client::Client;
use spoa_guard::spop::{Message, TypedData};

/// An agent with its operations endpoint on a free loopback port.
struct Ops {
    agent: Agent,
    url: String,
}

async fn start() -> Ops {
    let agent = Agent::with_ops().await;
    let addr: SocketAddr = agent.ops.unwrap();
    Ops {
        agent,
        url: format!("http://{addr}"),
    }
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// `name{labels}` → value, for every sample of an exposition.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

async fn scrape(ops: &Ops) -> BTreeMap<String, f64> {
    let (status, text) = get(&format!("{}/metrics", ops.url)).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    samples(&text)
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in\n{samples:#?}"))
}

/// A guard-check whose request fields carry strings that must never become labels.
fn hostile(src: &str, n: usize) -> Message {
    let mut message = guard_check(ipv4(src));
    message.args = vec![
        arg("src", ipv4(src)),
        arg("method", TypedData::str("GET")),
        arg(
            "path",
            TypedData::String(Bytes::from(format!("/LABEL-PATH-{n}\"}} 1"))),
        ),
        arg("host", TypedData::str("LABEL-HOST.example")),
        arg("ua", TypedData::str("LABEL-UA/1.0")),
    ];
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_what_was_sent() {
    let ops = start().await;
    let before = scrape(&ops).await;
    let mut client = Client::connect(ops.agent.addr).await.unwrap();
    // 5 denied by the block list (rule "blocklist"), 3 allowed by nothing, 2 by the
    // allow list (rule "allow").
    let sources = [("127.0.0.66", 5), ("127.0.0.1", 3), ("127.0.0.77", 2)];
    let mut n = 0;
    for (src, count) in sources {
        for _ in 0..count {
            n += 1;
            client
                .notify(1, n, vec![hostile(src, n as usize)])
                .await
                .unwrap();
        }
    }
    let after = scrape(&ops).await;
    let delta = |series: &str| value(&after, series) - before.get(series).copied().unwrap_or(0.0);
    assert_eq!(
        delta(r#"spoa_guard_decisions_total{action="deny",reason="blocklist"}"#),
        5.0
    );
    assert_eq!(
        delta(r#"spoa_guard_decisions_total{action="allow",reason="none"}"#),
        3.0
    );
    assert_eq!(
        delta(r#"spoa_guard_decisions_total{action="allow",reason="allowlist"}"#),
        2.0
    );
    assert_eq!(
        delta(r#"spoa_guard_rule_hits_total{reason="blocklist",rule="blocklist",mode="enforce"}"#),
        5.0
    );
    assert_eq!(
        delta(r#"spoa_guard_rule_hits_total{reason="allowlist",rule="allow",mode="enforce"}"#),
        2.0
    );
    assert_eq!(delta(r#"spoa_guard_frames_total{type="notify"}"#), 10.0);
    assert_eq!(delta(r#"spoa_guard_frames_total{type="ack"}"#), 10.0);
    assert_eq!(
        delta(r#"spoa_guard_frames_total{type="haproxy-hello"}"#),
        1.0
    );
    assert_eq!(delta(r#"spoa_guard_frames_total{type="agent-hello"}"#), 1.0);
    assert_eq!(delta("spoa_guard_evaluation_duration_seconds_count"), 10.0);
    assert_eq!(
        value(
            &after,
            r#"spoa_guard_evaluation_duration_seconds_bucket{le="+Inf"}"#
        ),
        value(&after, "spoa_guard_evaluation_duration_seconds_count")
    );
    assert_eq!(value(&after, "spoa_guard_connections_active"), 1.0);
    assert_eq!(delta("spoa_guard_connections_total"), 1.0);
    assert_eq!(value(&after, "spoa_guard_blocklist_entries"), 5.0);
    assert!(value(&after, "process_resident_memory_bytes") > 1e6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dry_run_rule_that_matches_is_counted_from_a_series_that_starts_at_0() {
    // Two dry-run rules behind one another: a user-agent rule and a login limit (burst
    // 1). Both must show their own hits; the first names txn.guard.dry_run.
    let sections = "[metrics]\nlisten = \"127.0.0.1:0\"\n\
        [[user_agent]]\nname = \"probe\"\npattern = \"curl\"\naction = \"deny\"\ndry_run = true\n\
        [[limit]]\nname = \"login\"\nkey = \"src\"\nrate = 0.001\nburst = 1\ndry_run = true\n\
        [[limit]]\nname = \"never\"\nkey = \"src\"\nrate = 1000\nburst = 1000\n";
    let agent = Agent::configured(agent::ALLOW, agent::BLOCK, "", sections).await;
    let ops = Ops {
        url: format!("http://{}", agent.ops.unwrap()),
        agent,
    };
    let hits = |rule: &str, reason: &str, mode: &str| {
        format!(r#"spoa_guard_rule_hits_total{{reason="{reason}",rule="{rule}",mode="{mode}"}}"#)
    };
    let before = scrape(&ops).await;
    for (rule, reason, mode) in [
        ("probe", "user-agent", "dry-run"),
        ("login", "rate-limit", "dry-run"),
        ("never", "rate-limit", "enforce"),
        ("blocklist", "blocklist", "enforce"),
    ] {
        assert_eq!(
            value(&before, &hits(rule, reason, mode)),
            0.0,
            "{rule} before any request"
        );
    }
    let mut client = Client::connect(ops.agent.addr).await.unwrap();
    let mut dry_runs = Vec::new();
    for n in 1..=3u64 {
        // guard_check's user agent is curl/8.0.
        let actions = client
            .notify(1, n, vec![guard_check(ipv4("127.0.0.5"))])
            .await
            .unwrap();
        let dry_run = actions.iter().find_map(|a| match a {
            spoa_guard::spop::Action::SetVar { name, value, .. } if &name[..] == b"dry_run" => {
                Some(value.clone())
            }
            _ => None,
        });
        dry_runs.push(dry_run);
    }
    let after = scrape(&ops).await;
    assert_eq!(value(&after, &hits("probe", "user-agent", "dry-run")), 3.0);
    // The first request took the only token; the next two would have been limited.
    assert_eq!(value(&after, &hits("login", "rate-limit", "dry-run")), 2.0);
    assert_eq!(value(&after, &hits("never", "rate-limit", "enforce")), 0.0);
    assert!(
        dry_runs.iter().all(|d| d == &Some(TypedData::str("probe"))),
        "txn.guard.dry_run names the first: {dry_runs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_label_value_comes_from_a_request() {
    let ops = start().await;
    let mut client = Client::connect(ops.agent.addr).await.unwrap();
    for n in 1..=20u64 {
        let src = if n % 2 == 0 {
            "127.0.0.66"
        } else {
            "127.0.0.5"
        };
        client
            .notify(1, n, vec![hostile(src, n as usize)])
            .await
            .unwrap();
    }
    let (_, text) = get(&format!("{}/metrics", ops.url)).await;
    for needle in ["LABEL-", "127.0.0.", "example"] {
        assert!(!text.contains(needle), "{needle:?} leaked into\n{text}");
    }
    // Every label value is a fixed word or a configured name.
    let configured = ["blocklist", "allow"];
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(labels) = line.split_once('{').map(|(_, rest)| rest) else {
            continue;
        };
        let labels = labels.rsplit_once('}').unwrap().0;
        for pair in labels.split("\",") {
            let (key, value) = pair.split_once("=\"").unwrap();
            let value = value.trim_end_matches('"');
            let fixed = value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.+eInf".contains(c));
            assert!(
                fixed || configured.contains(&value),
                "label {key}={value:?} in {line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_keeps_answering_under_load() {
    let ops = start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for c in 0..4u64 {
        let addr = ops.agent.addr;
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await.unwrap();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                sent += 1;
                let src = format!("127.0.{}.{}", c, sent % 250);
                client
                    .notify(1, sent, vec![hostile(&src, 0)])
                    .await
                    .unwrap();
            }
            sent
        }));
    }
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        let (status, text) = get(&format!("{}/metrics", ops.url)).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, 200);
        assert!(text.contains("spoa_guard_decisions_total"));
    }
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for task in load {
        sent += task.await.unwrap();
    }
    eprintln!("50 scrapes during {sent} requests; slowest {slowest:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "slowest scrape {slowest:?}"
    );
    let after = scrape(&ops).await;
    assert_eq!(
        value(&after, "spoa_guard_evaluation_duration_seconds_count"),
        sent as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_other_paths() {
    let ops = start().await;
    assert_eq!(
        get(&format!("{}/healthz", ops.url)).await,
        (200, "ok\n".into())
    );
    assert_eq!(get(&format!("{}/readyz", ops.url)).await.0, 200);
    // Shutting down: not ready any more, still alive while connections drain.
    ops.agent.shutdown.cancel();
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&format!("{}/readyz", ops.url)).await.0 != 503 {
        assert!(
            Instant::now() < deadline,
            "/readyz still 200 after shutdown began"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(&format!("{}/healthz", ops.url)).await.0, 200);
    assert_eq!(get(&format!("{}/nope", ops.url)).await.0, 404);
    let posted = reqwest::Client::new()
        .post(format!("{}/metrics", ops.url))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_ranks_the_heaviest_source_first_after_a_skewed_burst() {
    let ops = start().await;
    let mut client = Client::connect(ops.agent.addr).await.unwrap();
    let mut n = 0u64;
    // 60 requests from one blocked source, 2 each from ten others in another /24.
    for _ in 0..60 {
        n += 1;
        client
            .notify(1, n, vec![hostile("127.0.0.66", 1)])
            .await
            .unwrap();
    }
    for i in 0..10u8 {
        for _ in 0..2 {
            n += 1;
            let src = format!("127.0.5.{}", 10 + i);
            client.notify(1, n, vec![hostile(&src, 2)]).await.unwrap();
        }
    }
    let (status, body) = get(&format!("{}/top?window=1m&n=3", ops.url)).await;
    assert_eq!(status, 200, "{body}");
    let top: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(top["totals"]["requests"], 80, "{top:#}");
    assert_eq!(top["totals"]["denied"], 60, "{top:#}");
    assert_eq!(top["all"]["src"][0]["key"], "127.0.0.66", "{top:#}");
    assert_eq!(top["all"]["src"][0]["count"], 60, "{top:#}");
    assert_eq!(top["all"]["src"][0]["share"], 0.75, "{top:#}");
    assert_eq!(top["all"]["src"].as_array().unwrap().len(), 3, "n=3");
    assert_eq!(top["all"]["src_net"][0]["key"], "127.0.0.0/24", "{top:#}");
    assert_eq!(top["all"]["src_net"][1]["key"], "127.0.5.0/24", "{top:#}");
    assert_eq!(top["denied"]["src"][0]["key"], "127.0.0.66", "{top:#}");
    assert_eq!(top["denied"]["src"][0]["share"], 1.0, "{top:#}");
    assert_eq!(
        top["all"]["path"][0]["key"], "/LABEL-PATH-1\"} 1",
        "{top:#}"
    );

    // The metric alerts read: the heaviest source network's share, without its name.
    let metrics = scrape(&ops).await;
    assert_eq!(
        value(
            &metrics,
            r#"spoa_guard_top_share{dimension="src_net",class="all",window="1m"}"#
        ),
        0.75
    );

    assert_eq!(get(&format!("{}/top?window=1h", ops.url)).await.0, 400);
}

/// The label sets of `family` in `samples`, as `a=x,b=y` (label order as exposed).
fn label_sets(samples: &BTreeMap<String, f64>, family: &str) -> BTreeSet<String> {
    samples
        .keys()
        .filter_map(|series| series.strip_prefix(family)?.strip_prefix('{'))
        .map(|labels| labels.trim_end_matches('}').replace('"', ""))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_agent_shows_every_possible_series_and_no_impossible_one() {
    let ops = start().await;
    let fresh = scrape(&ops).await;
    let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();

    // Decisions: an action with the reasons that can give it, nothing else (no
    // allow/blocklist, deny/none, deny/allowlist, ...).
    assert_eq!(
        label_sets(&fresh, "spoa_guard_decisions_total"),
        set(&[
            "action=allow,reason=allowlist",
            "action=allow,reason=user-agent",
            "action=allow,reason=none",
            "action=deny,reason=ban",
            "action=deny,reason=blocklist",
            "action=deny,reason=asn",
            "action=deny,reason=user-agent",
            "action=deny,reason=rate-limit",
        ])
    );
    // Admin requests: 401 only before routing (route other), which is never ok.
    let mut admin = BTreeSet::new();
    for route in ["list-bans", "rules", "dry-run-state"] {
        for result in ["ok", "error"] {
            admin.insert(format!("route={route},result={result}"));
        }
    }
    for route in ["ban", "unban", "reload", "dry-run-switch"] {
        for result in ["ok", "refused", "error"] {
            admin.insert(format!("route={route},result={result}"));
        }
    }
    for result in ["refused", "unauthorized"] {
        admin.insert(format!("route=other,result={result}"));
    }
    assert_eq!(label_sets(&fresh, "spoa_guard_admin_requests_total"), admin);
    // The metrics listener reads no body: no body timeout there.
    let mut dropped = BTreeSet::new();
    for reason in ["header-timeout", "write-timeout", "evicted"] {
        dropped.insert(format!("listener=metrics,reason={reason}"));
        dropped.insert(format!("listener=admin,reason={reason}"));
    }
    dropped.insert("listener=admin,reason=body-timeout".to_string());
    assert_eq!(
        label_sets(&fresh, "spoa_guard_http_connections_dropped_total"),
        dropped
    );
    // A broken socket is not a protocol error.
    let kinds = label_sets(&fresh, "spoa_guard_protocol_errors_total");
    assert!(!kinds.contains("kind=io"), "{kinds:?}");
    assert_eq!(kinds.len(), 9, "{kinds:?}");

    // One gauge per rule kind, with what it counts in its name; no spoa_guard_rules.
    for gauge in [
        "spoa_guard_allowlist_entries",
        "spoa_guard_allowlist_dry_run_entries",
        "spoa_guard_blocklist_entries",
        "spoa_guard_blocklist_dry_run_entries",
        "spoa_guard_asn_blocked_asns",
        "spoa_guard_asn_database_ranges",
        "spoa_guard_user_agent_rules",
        "spoa_guard_user_agent_patterns",
        "spoa_guard_rate_limits",
    ] {
        assert!(fresh.contains_key(gauge), "no {gauge}");
    }
    assert_eq!(value(&fresh, "spoa_guard_allowlist_entries"), 2.0);
    assert!(
        !fresh.keys().any(|s| s.starts_with("spoa_guard_rules{")),
        "spoa_guard_rules is gone"
    );

    // The standard process metrics, under their conventional names.
    assert!(value(&fresh, "process_cpu_seconds_total") >= 0.0); // ticks of 10 ms: may be 0
    assert!(value(&fresh, "process_open_fds") >= 3.0);
    assert!(value(&fresh, "process_max_fds") >= value(&fresh, "process_open_fds"));
    let started = value(&fresh, "process_start_time_seconds");
    let now = spoa_guard::util::unix_now() as f64;
    assert!(started > now - 3600.0 && started <= now + 1.0, "{started}");
    assert!(value(&fresh, "process_resident_memory_bytes") > 1e6);
    assert!(
        value(&fresh, "process_virtual_memory_bytes")
            >= value(&fresh, "process_resident_memory_bytes")
    );
    assert!(!fresh.contains_key("spoa_guard_process_resident_memory_bytes"));
}
