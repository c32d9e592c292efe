//! Fleet mode across hosts: three "hosts" made of network namespaces (`tests/common/netns.rs`),
//! each running HAProxy (2.6, 3.2, 2.6) and its own spoa-guard, Redis on a fourth, the
//! client on a fifth sending through all three nodes. One lab, phases in order:
//!
//! 1. a fleet limit of R/s from one source spread over the nodes admits within the stated
//!    bound over 10 s, while a local limit of the same numbers admits about three times;
//! 2. a ban through node 1's CLI turns 200 into 403 on nodes 2 and 3 within one interval
//!    plus one second; the unban likewise;
//! 3. Redis killed: every node answers at its usual latency (p99 measured), says it is
//!    degraded, and a fleet limit falls back to the node's share; Redis back: in step
//!    again within seconds;
//! 4. node 2 cut from Redis (its link down) while the others keep syncing: it degrades
//!    alone, the others count one agent less, and it rejoins when healed;
//! 5. Redis restarted empty: the bans come back from the agents.
//!
//! Needs root, `ip`, HAProxy 2.6 and 3.2 and `redis-server`; `SKIPPED:` without them, a
//! failure under `CI=true`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::haproxy::{require, Haproxy, Version};
use common::netns::{Host, Lab, NodeAgent, NsThread, Sent};

/// Sync interval of the agents.
const INTERVAL: Duration = Duration::from_millis(250);

/// The fleet limit (and the local one with the same numbers): rate and burst.
const RATE: f64 = 20.0;
const BURST: f64 = 20.0;

/// The stated accuracy bound for three agents at 250 ms (README, "Running many agents").
const EPSILON: f64 = 0.1;

fn rules(lab: &Lab) -> String {
    format!(
        r#"
[admin]
listen = "unix:admin.sock"
[fleet]
redis = "redis://{redis}:6379/0"
name = "lab"
sync_interval = "250ms"
[[limit]]
name = "fleet-limit"
path_prefix = "/fleet"
rate = {RATE}
burst = {BURST}
scope = "fleet"
[[limit]]
name = "local-limit"
path_prefix = "/local"
rate = {RATE}
burst = {BURST}
[[limit]]
name = "share-limit"
path_prefix = "/share"
rate = 30
burst = 30
scope = "fleet"
"#,
        redis = lab.redis_ip()
    )
}

/// Polls `check` every 20 ms until it holds; how long that took, `None` after `timeout`.
fn within(timeout: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A gauge or counter of node `i`'s agent, read from `/metrics` over the front network.
fn metric(client: &NsThread, agent: &NodeAgent, name: &str) -> Option<f64> {
    let text = client
        .get(&format!("http://{}/metrics", agent.metrics), &[])
        .ok()?
        .body;
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The 99th percentile of the latencies of `sent` to `target`.
fn p99(sent: &[Sent], target: usize) -> Duration {
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter(|s| s.target == target)
        .map(|s| s.latency)
        .collect();
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

fn admitted(sent: &[Sent], targets: &[usize]) -> usize {
    sent.iter()
        .filter(|s| targets.contains(&s.target) && s.status == 200)
        .count()
}

/// `spoa-guard ARGS --config <node i's config>` inside node `i`: its stdout.
fn cli(lab: &Lab, agent: &NodeAgent, i: usize, args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spoa-guard"));
    command.args(args).arg("--config").arg(&agent.config);
    let out = lab.output(Host::Node(i), command);
    assert!(out.status.success(), "spoa-guard {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn three_nodes_one_fleet() {
    let (Some(v26), Some(v32)) = (require(Version::V2_6), require(Version::V3_2)) else {
        return;
    };
    let Some(lab) = Lab::new(3) else { return };
    let Some(mut redis) = lab.start_redis() else {
        return;
    };
    let mut agents = Vec::new();
    let mut haproxies = Vec::new();
    for (n, binary) in [&v26, &v32, &v26].into_iter().enumerate() {
        agents.push(lab.start_agent(n + 1, &rules(&lab), &[]));
        haproxies.push(Haproxy::start_blocking(binary, lab.haproxy_options(n + 1)));
    }
    let logs = |agents: &[NodeAgent], haproxies: &[Haproxy]| {
        let mut text = String::new();
        for (agent, hap) in agents.iter().zip(haproxies) {
            text.push_str(&agent.log());
            text.push_str(&hap.log());
        }
        text
    };
    for hap in &haproxies {
        let up = within(Duration::from_secs(10), || {
            hap.agent_status().is_some_and(|s| s.starts_with("UP"))
        });
        assert!(
            up.is_some(),
            "agent never UP\n{}",
            logs(&agents, &haproxies)
        );
    }
    let client = lab.thread(Host::Client);
    let urls = |path: &str| -> Vec<String> { (1..=3).map(|i| lab.node_url(i, path)).collect() };
    let all_see = within(Duration::from_secs(5), || {
        agents
            .iter()
            .all(|a| metric(&client, a, "spoa_guard_fleet_agents") == Some(3.0))
    });
    assert!(
        all_see.is_some(),
        "agents do not see each other\n{}",
        logs(&agents, &haproxies)
    );

    // 1. Accuracy: one source through all three nodes, a fleet and a local limit at once.
    let mut both = urls("/fleet");
    both.extend(urls("/local"));
    let started = Instant::now();
    let sent = client.spread(&both, Duration::from_secs(10), Duration::from_millis(4));
    let t = started.elapsed().as_secs_f64();
    let (fleet, local) = (admitted(&sent, &[0, 1, 2]), admitted(&sent, &[3, 4, 5]));
    let ideal = BURST + RATE * t;
    let bound = BURST + RATE * t * (1.0 + EPSILON);
    eprintln!(
        "accuracy over {t:.1} s, {} requests per limit: fleet limit admitted {fleet} (B + R·T = {ideal:.0}, bound {bound:.0}); \
         local limit admitted {local} ({:.2} × B + R·T)",
        sent.len() / 2,
        local as f64 / ideal
    );
    assert!(
        (fleet as f64) <= bound,
        "fleet limit over its bound: {fleet} > {bound:.0}"
    );
    assert!(
        (fleet as f64) >= RATE * t * 0.9,
        "fleet limit starves the key: {fleet}"
    );
    assert!(
        local as f64 >= 2.5 * ideal,
        "local limits admit about 3×: {local}"
    );
    let marks: f64 = agents
        .iter()
        .filter_map(|a| metric(&client, a, "spoa_guard_fleet_marks_sent_total"))
        .sum();
    assert!(marks > 0.0, "no over-limit mark was published");
    // `spoa-guard rules` on another node: each limit's scope, the fleet view of the key.
    let rules = cli(&lab, &agents[1], 2, &["rules"]);
    eprintln!("{rules}");
    assert!(
        rules
            .lines()
            .any(|l| l.contains("fleet-limit") && l.contains("fleet")),
        "{rules}"
    );
    assert!(
        rules
            .lines()
            .any(|l| l.contains("local-limit") && l.contains("local")),
        "{rules}"
    );
    assert!(
        rules.contains(&format!("  {}", lab.client_ip())),
        "the client's key by name: {rules}"
    );

    // 2. A ban through node 1's CLI reaches nodes 2 and 3 within one interval plus 1 s.
    let source = lab.client_ip().to_string();
    let root = urls("/");
    assert!(root
        .iter()
        .all(|u| client.get(u, &[]).map(|r| r.status) == Ok(200)));
    cli(
        &lab,
        &agents[0],
        1,
        &["ban", &source, "--for", "10m", "--reason", "fleet-e2e"],
    );
    let banned = within(Duration::from_secs(3), || {
        root[1..]
            .iter()
            .all(|u| client.get(u, &[]).map(|r| r.status) == Ok(403))
    });
    eprintln!("ban through node 1 → 403 on nodes 2 and 3 after {banned:?}");
    assert!(
        banned.is_some_and(|d| d <= INTERVAL + Duration::from_secs(1)),
        "{banned:?}\n{}",
        logs(&agents, &haproxies)
    );
    let response = client.get(&root[2], &[]).unwrap();
    assert_eq!(
        (response.guard("reason"), response.guard("rule")),
        ("ban", "manual")
    );
    assert!(
        cli(&lab, &agents[2], 3, &["bans"]).contains(&source),
        "node 3 lists the fleet's ban"
    );
    cli(&lab, &agents[0], 1, &["unban", &source]);
    let lifted = within(Duration::from_secs(3), || {
        root[1..]
            .iter()
            .all(|u| client.get(u, &[]).map(|r| r.status) == Ok(200))
    });
    eprintln!("unban through node 1 → 200 on nodes 2 and 3 after {lifted:?}");
    assert!(
        lifted.is_some_and(|d| d <= INTERVAL + Duration::from_secs(1)),
        "{lifted:?}"
    );

    // 3. Redis killed: latency unchanged, degraded, each node enforces its share.
    let before = client.spread(&root, Duration::from_secs(3), Duration::from_millis(2));
    redis.stop(Duration::ZERO);
    let degraded = within(Duration::from_secs(5), || {
        agents
            .iter()
            .all(|a| metric(&client, a, "spoa_guard_fleet_degraded") == Some(1.0))
    });
    eprintln!("Redis killed: every node degraded after {degraded:?}");
    assert!(degraded.is_some(), "{}", logs(&agents, &haproxies));
    let after = client.spread(&root, Duration::from_secs(3), Duration::from_millis(2));
    for node in 0..3 {
        let (b, a) = (p99(&before, node), p99(&after, node));
        eprintln!("node {}: p99 {b:?} with Redis, {a:?} without", node + 1);
        assert!(
            a <= (b * 2).max(b + Duration::from_millis(5)),
            "node {}: p99 {b:?} → {a:?}",
            node + 1
        );
        assert!(after
            .iter()
            .filter(|s| s.target == node)
            .all(|s| s.status == 200));
    }
    // 30/s burst 30 shared by 3: node 1 alone admits about 10 + 10/s.
    let share = client.spread(
        &[lab.node_url(1, "/share")],
        Duration::from_secs(3),
        Duration::from_millis(4),
    );
    let share_admitted = admitted(&share, &[0]);
    eprintln!("degraded: node 1 alone admitted {share_admitted} of 30/s burst 30 in 3 s (its share: about 40)");
    assert!((30..=55).contains(&share_admitted), "{share_admitted}");
    redis = lab.start_redis().expect("redis again");
    let recovered = within(Duration::from_secs(15), || {
        agents
            .iter()
            .all(|a| metric(&client, a, "spoa_guard_fleet_degraded") == Some(0.0))
    });
    eprintln!("Redis back: every node in step again after {recovered:?}");
    assert!(recovered.is_some(), "{}", logs(&agents, &haproxies));

    // 4. Node 2 cut from Redis alone.
    lab.set_back_link(2, false);
    let alone = within(Duration::from_secs(6), || {
        metric(&client, &agents[1], "spoa_guard_fleet_degraded") == Some(1.0)
    });
    eprintln!("node 2 partitioned: degraded after {alone:?}");
    assert!(alone.is_some());
    let others = within(Duration::from_secs(6), || {
        [0, 2]
            .iter()
            .all(|&n| metric(&client, &agents[n], "spoa_guard_fleet_agents") == Some(2.0))
    });
    assert!(others.is_some(), "nodes 1 and 3 still count node 2");
    for n in [0, 2] {
        assert_eq!(
            metric(&client, &agents[n], "spoa_guard_fleet_degraded"),
            Some(0.0)
        );
    }
    lab.set_back_link(2, true);
    let rejoined = within(Duration::from_secs(15), || {
        metric(&client, &agents[1], "spoa_guard_fleet_degraded") == Some(0.0)
    });
    eprintln!("node 2 healed: in step again after {rejoined:?}");
    assert!(rejoined.is_some(), "{}", logs(&agents, &haproxies));

    // 5. Redis restarted empty: the bans come back from the agents.
    cli(&lab, &agents[2], 3, &["ban", "192.0.2.0/24", "--for", "1h"]);
    let stored = within(Duration::from_secs(3), || {
        lab.redis_command(Host::Node(1), &["HLEN", "{sg:lab}:bans"])
            .is_some_and(|n| n != ":0")
    });
    assert!(stored.is_some());
    redis.stop(Duration::ZERO);
    let _redis = lab.start_redis().expect("redis again");
    assert_eq!(
        lab.redis_command(Host::Node(1), &["HLEN", "{sg:lab}:bans"])
            .as_deref(),
        Some(":0")
    );
    let refilled = within(Duration::from_secs(20), || {
        lab.redis_command(Host::Node(1), &["HEXISTS", "{sg:lab}:bans", "192.0.2.0/24"])
            .as_deref()
            == Some(":1")
    });
    eprintln!("Redis restarted empty: the ban was back after {refilled:?}");
    assert!(refilled.is_some(), "{}", logs(&agents, &haproxies));
}
