//! Smoke tests of the network-namespace lab (`tests/common/netns.rs`), the groundwork of
//! the multi-node fleet-mode tests: three nodes each running HAProxy (2.6, 3.2, 2.6) and
//! its own spoa-guard, a Redis on the back network, a client on the front one; and a
//! check that a lab leaves no namespace or process behind.
//!
//! Needs root and `ip` (iproute2), HAProxy 2.6 and 3.2 and `redis-server`; without them
//! the tests print `SKIPPED:`, except under `CI=true`, where they fail.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::haproxy::{require, Haproxy, Version};
use common::netns::{Host, Lab, NsThread, REDIS_PORT};

/// A local limit of 5 requests a second, burst 5, per client address.
const RULES: &str = r#"
[[limit]]
name = "per-src"
key = "src"
rate = 5
burst = 5
"#;
const RATE: f64 = 5.0;
const BURST: usize = 5;

/// Requests the client sends to each node.
const REQUESTS: usize = 20;

/// Polls `check` every 50 ms until it holds (true) or `timeout` passes (false).
fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends [`REQUESTS`] requests to node `i` from the client: the first [`BURST`] pass,
/// then the node's own agent answers 429, whatever the other nodes saw.
fn check_local_limit(lab: &Lab, client: &NsThread, i: usize, ctx: impl Fn() -> String) {
    let url = lab.node_url(i, "/");
    let started = Instant::now();
    // The first one alone, to see the address HAProxy saw.
    let first = client
        .get(&url, &[("user-agent", "netns-smoke/1.0")])
        .unwrap_or_else(|e| panic!("node{i}: {e}\n{}", ctx()));
    assert_eq!(first.status, 200, "node{i}: {first:?}\n{}", ctx());
    assert_eq!(
        first.body.trim(),
        format!("ok src={} action=allow", lab.client_ip()),
        "node{i}: HAProxy must see the client's own address\n{}",
        ctx()
    );
    let mut statuses = vec![first.status];
    statuses.extend(
        client
            .burst(&url, REQUESTS - 1)
            .unwrap_or_else(|e| panic!("node{i}: {e}\n{}", ctx())),
    );
    // Tokens refilled while the requests ran, plus one for rounding.
    let elapsed = started.elapsed();
    let refill = (elapsed.as_secs_f64() * RATE).ceil() as usize + 1;
    eprintln!("node{i}: {statuses:?} in {elapsed:?}");
    let passed = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert!(
        statuses[..BURST].iter().all(|&s| s == 200),
        "node{i}: the first {BURST} must pass: {statuses:?}\n{}",
        ctx()
    );
    assert_eq!(
        passed + limited,
        REQUESTS,
        "node{i}: only 200 and 429 expected: {statuses:?}\n{}",
        ctx()
    );
    assert!(
        limited > 0 && passed <= BURST + refill,
        "node{i}: {passed} passed (burst {BURST} + refill {refill}): {statuses:?}\n{}",
        ctx()
    );
    let denied = client
        .get(&url, &[])
        .unwrap_or_else(|e| panic!("node{i}: {e}\n{}", ctx()));
    assert_eq!(denied.status, 429, "node{i}: {denied:?}\n{}", ctx());
    assert_eq!(denied.guard("rule"), "per-src", "node{i}: {denied:?}");
    assert!(
        denied.header("retry-after").is_some(),
        "node{i}: {denied:?}"
    );
}

#[test]
fn three_nodes_local_limits_and_a_partition() {
    let (Some(v26), Some(v32)) = (require(Version::V2_6), require(Version::V3_2)) else {
        return;
    };
    let started = Instant::now();
    let Some(lab) = Lab::new(3) else {
        return;
    };
    let Some(redis) = lab.start_redis() else {
        return;
    };
    let binaries = [&v26, &v32, &v26];
    let mut agents = Vec::new();
    let mut haproxies = Vec::new();
    for (n, binary) in binaries.into_iter().enumerate() {
        let i = n + 1;
        agents.push(lab.start_agent(i, RULES, &[]));
        haproxies.push(Haproxy::start_blocking(binary, lab.haproxy_options(i)));
    }
    let ctx = || {
        let mut text = redis.log();
        for (agent, hap) in agents.iter().zip(&haproxies) {
            text.push_str(&agent.log());
            text.push_str(&hap.log());
        }
        text
    };
    for (n, hap) in haproxies.iter().enumerate() {
        let up = wait_until(Duration::from_secs(10), || {
            hap.agent_status().is_some_and(|s| s.starts_with("UP"))
        });
        assert!(up, "node{}: agent never UP\n{}", n + 1, ctx());
    }

    // Every node reaches Redis over the back network; the client cannot (front only).
    let redis_addr = SocketAddr::from((lab.redis_ip(), REDIS_PORT));
    for i in 1..=lab.nodes() {
        assert!(
            lab.redis_ping(Host::Node(i), Duration::from_secs(2)),
            "node{i} cannot PING Redis at {redis_addr}\n{}",
            ctx()
        );
    }
    if Command::new("redis-cli").arg("-v").output().is_ok() {
        let mut cli = Command::new("redis-cli");
        cli.args(["-h", &lab.redis_ip().to_string(), "ping"]);
        let out = lab.output(Host::Node(1), cli);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "PONG",
            "{out:?}"
        );
    }
    assert!(!lab.can_connect(Host::Client, redis_addr, Duration::from_millis(300)));

    // Each node limits on its own: 5 pass on node 1, then 5 again on node 2 and node 3.
    let client = lab.thread(Host::Client);
    for i in 1..=lab.nodes() {
        check_local_limit(&lab, &client, i, ctx);
    }
    // The agents' metrics listen on the front network.
    let metrics = client
        .get(&format!("http://{}/metrics", agents[0].metrics), &[])
        .expect("metrics");
    assert_eq!(metrics.status, 200, "{}", ctx());

    // Partition node 2 from the back network: it loses Redis, node 1 keeps it; heal.
    lab.set_back_link(2, false);
    assert!(
        !lab.redis_ping(Host::Node(2), Duration::from_millis(500)),
        "node2 still reaches Redis while partitioned"
    );
    assert!(lab.redis_ping(Host::Node(1), Duration::from_secs(2)));
    lab.set_back_link(2, true);
    assert!(
        wait_until(Duration::from_secs(5), || lab
            .redis_ping(Host::Node(2), Duration::from_millis(500))),
        "node2 did not reach Redis again after healing\n{}",
        ctx()
    );
    eprintln!("netns smoke test: {:?}", started.elapsed());
}

#[test]
fn a_dropped_lab_leaves_nothing_behind() {
    let Some(lab) = Lab::new(2) else {
        return;
    };
    let prefix = lab.prefix().to_string();
    let names = lab.namespaces();
    let listed = netns_list();
    for name in &names {
        assert!(listed.contains(name), "{name} missing from {listed:?}");
    }
    // A process the lab did not get back: the lab kills it all the same.
    let mut sleeper = lab.spawn(Host::Node(1), "sleeper", {
        let mut c = Command::new("sleep");
        c.arg("600");
        c
    });
    drop(lab);
    assert!(
        wait_until(Duration::from_secs(5), || sleeper.exited().is_some()),
        "a process in the lab survived it"
    );
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

/// Names from `ip netns list`.
fn netns_list() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}
