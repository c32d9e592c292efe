//! Restarts without a gap, on the real binary: a second agent started with the same
//! configuration takes over the listeners (SPOP, metrics, admin socket) and the bans of
//! the running one, which drains and exits, while clients keep asking; no request goes
//! unanswered and none is allowed that should be denied.

mod common;

use common::agent;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::{guard_check, ipv4, AgentProcess};
use spoa_guard::spop::client::Client;
use spoa_guard::spop::{Action, TypedData};

const BIN: &str = env!("CARGO_BIN_EXE_spoa-guard");

/// The action the agent at `addr` answers for `src`, on a fresh connection; `None` if
/// the exchange failed.
async fn action(addr: std::net::SocketAddr, src: &str) -> Option<String> {
    let mut client = Client::connect(addr).await.ok()?;
    let actions = client
        .notify(1, 1, vec![guard_check(ipv4(src))])
        .await
        .ok()?;
    actions.into_iter().find_map(|a| match a {
        Action::SetVar {
            name,
            value: TypedData::String(v),
            ..
        } if &name[..] == b"action" => Some(String::from_utf8_lossy(&v).into_owned()),
        _ => None,
    })
}

#[tokio::test]
async fn a_second_agent_takes_over_without_a_gap() {
    let metrics = common::haproxy::free_port();
    let agent = AgentProcess::with_rules(
        &format!(
            "[admin]\nlisten = \"unix:admin.sock\"\n[bans]\nstate_file = \"bans.json\"\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n[lists]\nblock = [\"block.txt\"]\n"
        ),
        &[("block.txt", "198.51.100.9\n")],
    );
    let ban = Command::new(BIN)
        .args(["ban", "192.0.2.7", "--for", "1h", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    assert!(
        ban.status.success(),
        "{}",
        String::from_utf8_lossy(&ban.stderr)
    );

    // Clients: new connections all the time, from a banned and a blocklisted source.
    let stop = Arc::new(AtomicBool::new(false));
    let (asked, wrong) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let addr = agent.addr;
    let clients: Vec<_> = ["192.0.2.7", "198.51.100.9"]
        .into_iter()
        .map(|src| {
            let (stop, asked, wrong) = (stop.clone(), asked.clone(), wrong.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    asked.fetch_add(1, Ordering::Relaxed);
                    if action(addr, src).await.as_deref() != Some("deny") {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut second = agent.start_successor();
    let mut first = agent;
    // The first agent hands over, drains and exits by itself.
    let status = tokio::task::spawn_blocking(move || {
        let status = first.stop_wait();
        (status, first)
    })
    .await
    .unwrap();
    let (status, agent) = status;
    assert!(status.success(), "{status:?}:\n{}", agent.log());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let second_log = second.log();
    assert!(
        agent.log().contains("handed the listeners over"),
        "{}",
        agent.log()
    );
    assert!(
        second_log.contains("taking over from the running agent"),
        "{second_log}"
    );
    let (asked, wrong) = (asked.load(Ordering::Relaxed), wrong.load(Ordering::Relaxed));
    assert!(asked > 50, "only {asked} requests");
    assert_eq!(
        wrong, 0,
        "{wrong} of {asked} requests got no deny:\n{second_log}"
    );

    // The second agent serves everything: SPOP, the admin socket (the ban carried over),
    // metrics.
    assert_eq!(action(addr, "192.0.2.7").await.as_deref(), Some("deny"));
    let bans = Command::new(BIN)
        .args(["bans", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&bans.stdout);
    assert!(listed.contains("192.0.2.7"), "{listed}");
    let healthz = std::net::TcpStream::connect(("127.0.0.1", metrics));
    assert!(healthz.is_ok());
    // And hands over in turn.
    let started = Instant::now();
    assert!(second.stop().success());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        !agent.dir.path().join("admin.sock").exists(),
        "the last agent removes its socket"
    );
}

#[tokio::test]
async fn sigusr2_starts_a_successor_that_takes_over() {
    let mut agent = AgentProcess::with_rules(
        "[admin]\nlisten = \"unix:admin.sock\"\n[lists]\nblock = [\"block.txt\"]\n",
        &[("block.txt", "198.51.100.9\n")],
    );
    let addr = agent.addr;
    agent.signal("USR2");
    let (status, agent) = tokio::task::spawn_blocking(move || (agent.stop_wait(), agent))
        .await
        .unwrap();
    let log = agent.log();
    // The successor shares the log file (stderr inherited); kill it whatever happens next.
    let pid: Option<u32> = log
        .lines()
        .find(|l| l.contains("SIGUSR2: started a new agent"))
        .and_then(|l| l.split("pid=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok());
    let successor = KillOnDrop(pid);
    assert!(status.success(), "{status:?}\n{log}");
    assert!(successor.0.is_some(), "no successor started:\n{log}");
    assert_eq!(
        action(addr, "198.51.100.9").await.as_deref(),
        Some("deny"),
        "{log}"
    );
    assert!(agent.dir.path().join("admin.sock").exists());
}

/// Kills a process by pid when dropped.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}
