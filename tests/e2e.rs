//! End to end: a real HTTP client → real HAProxy (2.6 and 3.2) → the real `spoa-guard`
//! binary, on loopback. Source addresses are varied by binding the client to different
//! 127.0.0.0/8 addresses (and ::1).
//!
//! A missing HAProxy prints `SKIPPED:`; under `CI=true` it fails the test instead.

#[macro_use]
mod common;

use common::{agent, haproxy};

use std::time::Duration;

use agent::AgentProcess;
use haproxy::{get, require, v4, v6_loopback, Haproxy, Response, Version};

/// `office` is the allow list, `e2e-block` the block list: the rule names HAProxy sees.
const ALLOW: &str = "# allow list\n127.0.0.77\n";
const BLOCK: &str = "# block list\n127.0.0.66          # a single address\n127.0.1.0/24 ; a CIDR\n127.0.0.77\n::1/128\n";

async fn start(v: Version) -> Option<(AgentProcess, Haproxy)> {
    start_with(v, AgentProcess::start("office", ALLOW, "e2e-block", BLOCK)).await
}

async fn start_with(v: Version, agent: AgentProcess) -> Option<(AgentProcess, Haproxy)> {
    let binary = require(v)?;
    let hap = Haproxy::start(&binary, agent.addr.port(), &[]).await;
    assert!(
        hap.wait_agent_status("UP", Duration::from_secs(10)).await,
        "agent never UP\n{}",
        hap.log()
    );
    Some((agent, hap))
}

fn context(v: Version, hap: &Haproxy, agent: &AgentProcess, r: &Response) -> String {
    format!(
        "HAProxy {}: {r:?}\n--- haproxy ---\n{}\n--- agent ---\n{}",
        v.label(),
        hap.log(),
        agent.log()
    )
}

fn assert_verdict(
    r: &Response,
    status: u16,
    action: &str,
    reason: &str,
    rule: &str,
    ctx: impl Fn() -> String,
) {
    assert_eq!(r.status, status, "{}", ctx());
    assert_eq!(r.guard("action"), action, "{}", ctx());
    assert_eq!(r.guard("reason"), reason, "{}", ctx());
    assert_eq!(r.guard("rule"), rule, "{}", ctx());
    let expected_status = if action == "deny" { "403" } else { "" };
    assert_eq!(r.guard("status"), expected_status, "{}", ctx());
    assert_eq!(r.guard("error"), "", "{}", ctx());
}

async fn lists_decide(v: Version) {
    let Some((agent, hap)) = start(v).await else {
        return;
    };
    let cases = [
        (v4(1), 200, "allow", "none", ""),
        (v4(66), 403, "deny", "blocklist", "e2e-block"),
        (
            std::net::IpAddr::from([127, 0, 1, 200]),
            403,
            "deny",
            "blocklist",
            "e2e-block",
        ),
        (v4(77), 200, "allow", "allowlist", "office"),
    ];
    for (src, status, action, reason, rule) in cases {
        let r = get(hap.http_port, src, "/", Some("curl/8.0")).await;
        assert_verdict(&r, status, action, reason, rule, || {
            format!("src {src}: {}", context(v, &hap, &agent, &r))
        });
    }
    if hap.ipv6 {
        let r = get(hap.http_port, v6_loopback(), "/v6", Some("curl/8.0")).await;
        assert_verdict(&r, 403, "deny", "blocklist", "e2e-block", || {
            context(v, &hap, &agent, &r)
        });
    } else {
        eprintln!("SKIPPED: IPv6 part, ::1 cannot be bound on this machine");
    }
}

async fn fail_open_then_recovery(v: Version) {
    let Some((mut agent, hap)) = start(v).await else {
        return;
    };
    let r = get(hap.http_port, v4(66), "/", None).await;
    assert_eq!(r.status, 403, "{}", context(v, &hap, &agent, &r));

    // Agent down: HAProxy lets traffic through, with the SPOE error variable set.
    assert!(agent.stop().success(), "agent exit status\n{}", agent.log());
    let r = get(hap.http_port, v4(66), "/", None).await;
    assert_eq!(r.status, 200, "fail-open: {}", context(v, &hap, &agent, &r));
    assert_eq!(r.guard("action"), "", "{}", context(v, &hap, &agent, &r));
    assert_ne!(r.guard("error"), "", "{}", context(v, &hap, &agent, &r));

    // Agent back: filtering resumes once HAProxy's health check sees it.
    agent.restart();
    let resumed = haproxy::wait_for(Duration::from_secs(15), || async {
        get(hap.http_port, v4(66), "/", None).await.status == 403
    })
    .await;
    assert!(
        resumed,
        "filtering did not resume\n{}\n{}",
        hap.log(),
        agent.log()
    );
    let r = get(hap.http_port, v4(1), "/", None).await;
    assert_verdict(&r, 200, "allow", "none", "", || {
        context(v, &hap, &agent, &r)
    });
}

/// Many concurrent requests: HAProxy 3.2 opens about one agent connection per request,
/// 2.6 pipelines; every request must get its own, correct verdict.
async fn concurrent_requests(v: Version) {
    let Some((agent, hap)) = start(v).await else {
        return;
    };
    let port = hap.http_port;
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            tokio::spawn(async move {
                let (src, status) = if i % 4 == 0 {
                    (v4(66), 403)
                } else {
                    (v4(10 + (i % 50) as u8), 200)
                };
                (
                    i,
                    status,
                    get(port, src, &format!("/req/{i}"), Some("load/1.0")).await,
                )
            })
        })
        .collect();
    for task in tasks {
        let (i, status, r) = task.await.unwrap();
        assert_eq!(
            r.status,
            status,
            "request {i}: {}",
            context(v, &hap, &agent, &r)
        );
        assert_eq!(
            r.guard("error"),
            "",
            "request {i}: {}",
            context(v, &hap, &agent, &r)
        );
    }
}

/// ASN, user-agent, rate-limit and dry-run rules. 127.0.0.64/26 is "AS64500" (blocked),
/// the rest of 127.0.0.0/24 "AS64501".
const RULES: &str = r#"
[asn]
databases = ["asn.csv"]
block = ["AS64500"]
[[user_agent]]
name = "scanners"
pattern = "(?i)sqlmap|nikto"
action = "deny"
[[user_agent]]
name = "empty-ua"
empty = true
action = "deny"
[[limit]]
name = "burst"
key = "src+path"
path_prefix = "/limited"
rate = 0.2
burst = 3
[[limit]]
name = "shadow"
key = "src"
path_prefix = "/shadow"
rate = 0.2
burst = 1
dry_run = true
"#;
const ASN_CSV: &str = "127.0.0.0,127.0.0.63,64501,\"Loopback, low\"\n127.0.0.64,127.0.0.127,64500,Blocked net\n127.0.0.128,127.0.0.255,64501,\"Loopback, high\"\n";

async fn rules_decide(v: Version) {
    let agent = AgentProcess::with_rules(RULES, &[("asn.csv", ASN_CSV)]);
    let Some((agent, hap)) = start_with(v, agent).await else {
        return;
    };
    let ctx = |r: &Response| context(v, &hap, &agent, r);
    let firefox = Some("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0");

    // A source in a blocked AS.
    let r = get(hap.http_port, v4(70), "/", firefox).await;
    assert_verdict(&r, 403, "deny", "asn", "AS64500", || ctx(&r));
    assert_eq!(r.guard("asn"), "64500", "{}", ctx(&r));

    // Bad and empty user agents; the ASN is reported on every verdict.
    let r = get(
        hap.http_port,
        v4(5),
        "/",
        Some("sqlmap/1.7.2#stable (https://sqlmap.org)"),
    )
    .await;
    assert_verdict(&r, 403, "deny", "user-agent", "scanners", || ctx(&r));
    assert_eq!(r.guard("asn"), "64501", "{}", ctx(&r));
    let r = get(hap.http_port, v4(5), "/", None).await;
    assert_verdict(&r, 403, "deny", "user-agent", "empty-ua", || ctx(&r));
    let r = get(hap.http_port, v4(5), "/", firefox).await;
    assert_verdict(&r, 200, "allow", "none", "", || ctx(&r));

    // A burst over a limit: 3 pass, the 4th gets 429 with a retry-after hint.
    for i in 0..3 {
        let r = get(hap.http_port, v4(6), "/limited/page", firefox).await;
        assert_eq!(r.status, 200, "request {i}: {}", ctx(&r));
    }
    let r = get(hap.http_port, v4(6), "/limited/page", firefox).await;
    assert_eq!(r.status, 429, "{}", ctx(&r));
    assert_eq!(
        (r.guard("action"), r.guard("reason"), r.guard("rule")),
        ("deny", "rate-limit", "burst"),
        "{}",
        ctx(&r)
    );
    assert_eq!(r.guard("status"), "429", "{}", ctx(&r));
    let retry: u32 = r
        .guard("retry-after")
        .parse()
        .unwrap_or_else(|_| panic!("{}", ctx(&r)));
    assert!((1..=5).contains(&retry), "retry_after {retry}: {}", ctx(&r));
    assert_eq!(
        r.header("retry-after"),
        Some(retry.to_string().as_str()),
        "{}",
        ctx(&r)
    );
    // Another source is not affected.
    assert_eq!(
        get(hap.http_port, v4(8), "/limited/page", firefox)
            .await
            .status,
        200
    );

    // A dry-run limit never denies, and says when it would have.
    let r = get(hap.http_port, v4(9), "/shadow", firefox).await;
    assert_eq!((r.status, r.guard("dry-run")), (200, ""), "{}", ctx(&r));
    for _ in 0..3 {
        let r = get(hap.http_port, v4(9), "/shadow", firefox).await;
        assert_verdict(&r, 200, "allow", "none", "", || ctx(&r));
        assert_eq!(r.guard("dry-run"), "shadow", "{}", ctx(&r));
    }
}

/// An attack from one network through real HAProxy: within seconds `spoa-guard top`
/// names the network, its ASN and the path it hits; the deny log has one line per deny
/// (up to its rate), with source, ASN, reason and rule; the metrics count every request.
async fn top_and_deny_logs_show_an_attack(v: Version) {
    let metrics_port = haproxy::free_port();
    // Deny lines at the default rate (10 a second).
    let agent = AgentProcess::with_rules(
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
             [asn]\ndatabases = [\"asn.csv\"]\nblock = [\"AS64500\"]\n"
        ),
        &[("asn.csv", ASN_CSV)],
    );
    let Some((agent, hap)) = start_with(v, agent).await else {
        return;
    };
    // 40 requests from the blocked network (127.0.0.64/26 is AS64500), 10 from others.
    for i in 0..40u8 {
        let r = get(
            hap.http_port,
            v4(70 + i % 8),
            "/wp-login.php",
            Some("attack/1.0"),
        )
        .await;
        assert_eq!(r.status, 403, "{}", context(v, &hap, &agent, &r));
    }
    for i in 0..10u8 {
        let r = get(hap.http_port, v4(10 + i), "/", Some("curl/8.0")).await;
        assert_eq!(r.status, 200, "{}", context(v, &hap, &agent, &r));
    }
    let addr = format!("127.0.0.1:{metrics_port}");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_spoa-guard"))
            .args(["top", "--once", "--denied", "-n", "3", "--addr", &addr])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{shown}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // HAProxy's own health checks are not requests: exactly the 50 sent.
    assert!(shown.contains("50 requests, 40 denied"), "{shown}");
    assert!(shown.contains("        40 100.0%  127.0.0.0/24"), "{shown}");
    assert!(shown.contains("        40 100.0%  AS64500"), "{shown}");
    assert!(
        shown.contains("        40 100.0%  /wp-login.php"),
        "{shown}"
    );
    assert!(shown.contains("        40 100.0%  attack/1.0"), "{shown}");

    let log = agent.log();
    let deny_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("spoa_guard::deny"))
        .collect();
    assert!(!deny_lines.is_empty() && deny_lines.len() < 40, "{log}");
    let first = deny_lines[0];
    for field in [
        "src=127.0.0.7",
        "asn=64500",
        "reason=\"asn\"",
        "rule=AS64500",
        "path=/wp-login.php",
    ] {
        assert!(first.contains(field), "{field} not in {first}");
    }
}

on_both_versions!(
    lists_decide,
    rules_decide,
    fail_open_then_recovery,
    concurrent_requests,
    top_and_deny_logs_show_an_attack,
);
