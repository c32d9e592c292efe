//! Checks the HAProxy end-to-end harness (`tests/common/haproxy.rs`) and the shipped
//! `haproxy/` configuration on both HAProxy generations, without any agent:
//! - `haproxy/haproxy.cfg` + `spoe-guard.conf` pass `haproxy -c`;
//! - with no agent listening, requests pass (fail-open) with `txn.guard.error` set, from
//!   127.0.0.1, 127.0.0.7 and ::1, and the source address really is the requested one;
//! - the fail-closed rule from haproxy/README.md turns the same situation into 503.
//!
//! A missing HAProxy skips with a `SKIPPED:` line, or fails under `CI=true`.

mod common;

use common::haproxy;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use haproxy::{check_config, free_port, get, require, v4, v6_loopback, Haproxy, Version};

fn sources(h: &Haproxy) -> Vec<IpAddr> {
    let mut s = vec![v4(1), v4(7)];
    if h.ipv6 {
        s.push(v6_loopback());
    } else {
        eprintln!("SKIPPED: IPv6 part, ::1 cannot be bound on this machine");
    }
    s
}

fn repo_config_is_valid(v: Version) {
    let Some(bin) = require(v) else { return };
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("haproxy/haproxy.cfg");
    if let Err(out) = check_config(&bin, &cfg) {
        panic!(
            "haproxy {} -c -f {} failed:\n{out}",
            v.label(),
            cfg.display()
        );
    }
}

async fn fail_open_without_agent(v: Version) {
    let Some(bin) = require(v) else { return };
    // A port nobody listens on: the agent is "down".
    let h = Haproxy::start(&bin, free_port(), &[]).await;
    for src in sources(&h) {
        let r = get(h.http_port, src, "/fail-open", Some("harness-test/1.0")).await;
        assert_eq!(
            r.status,
            200,
            "HAProxy {} from {src}: {r:?}\n{}",
            v.label(),
            h.log()
        );
        let err = r.guard("error");
        assert!(
            !err.is_empty() && err.parse::<u32>().is_ok(),
            "HAProxy {} from {src}: X-Guard-Error should hold an error code, got {err:?}\n{}",
            v.label(),
            h.log()
        );
        assert_eq!(r.guard("action"), "", "no verdict without an agent: {r:?}");
        assert!(
            r.body.contains(&format!("src={src} ")),
            "HAProxy {} should see the request coming from {src}: body {:?}\n{}",
            v.label(),
            r.body,
            h.log()
        );
    }
    assert!(
        h.wait_agent_status("DOWN", Duration::from_secs(5)).await,
        "HAProxy {} should mark the missing agent DOWN: status {:?}\n{}",
        v.label(),
        h.agent_status(),
        h.log()
    );
}

async fn fail_closed_rule_without_agent(v: Version) {
    let Some(bin) = require(v) else { return };
    let h = Haproxy::start(
        &bin,
        free_port(),
        &["http-request deny deny_status 503 if { var(txn.guard.error) -m found }"],
    )
    .await;
    let r = get(h.http_port, v4(1), "/fail-closed", None).await;
    assert_eq!(r.status, 503, "HAProxy {}: {r:?}\n{}", v.label(), h.log());
    assert!(!r.guard("error").is_empty(), "{r:?}");
}

#[test]
fn repo_config_is_valid_on_2_6() {
    repo_config_is_valid(Version::V2_6);
}

#[test]
fn repo_config_is_valid_on_3_2() {
    repo_config_is_valid(Version::V3_2);
}

#[tokio::test]
async fn fail_open_without_agent_on_2_6() {
    fail_open_without_agent(Version::V2_6).await;
}

#[tokio::test]
async fn fail_open_without_agent_on_3_2() {
    fail_open_without_agent(Version::V3_2).await;
}

#[tokio::test]
async fn fail_closed_rule_without_agent_on_2_6() {
    fail_closed_rule_without_agent(Version::V2_6).await;
}

#[tokio::test]
async fn fail_closed_rule_without_agent_on_3_2() {
    fail_closed_rule_without_agent(Version::V3_2).await;
}
