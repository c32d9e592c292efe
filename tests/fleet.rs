//! Fleet mode against a real Redis (started by the test on a free loopback port): agents
//! in this process, each started as `main` starts one, sharing limits and bans.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::agent::Agent;
use common::haproxy::eventually;
use common::redis::Redis;
use spoa_guard::agent::Actor;
use spoa_guard::bans::Ban;
use spoa_guard::decision::{Decision, Request};

/// The `[fleet]` section and a fleet limit of `rate`/s, burst `burst`.
fn sections(redis: &Redis, rate: u32, burst: u32) -> String {
    format!(
        "[fleet]\nredis = \"redis://{}/0\"\nname = \"test\"\nsync_interval = \"100ms\"\n\
         [[limit]]\nname = \"per-client\"\nkey = \"src\"\nrate = {rate}\nburst = {burst}\nscope = \"fleet\"\n",
        redis.addr
    )
}

async fn agent(redis: &Redis, rate: u32, burst: u32) -> Agent {
    Agent::configured("", "", "", &sections(redis, rate, burst)).await
}

fn request(src: &str) -> Request<'static> {
    Request {
        src: Some(src.parse::<IpAddr>().unwrap()),
        ..Request::default()
    }
}

fn decide(agent: &Agent, src: &str) -> Decision {
    agent
        .state
        .decider()
        .decide(&request(src), Instant::now())
        .decision
}

fn ban(target: &str, secs: u32) -> Ban {
    let now = spoa_guard::util::unix_now_u32();
    Ban {
        target: target.parse().unwrap(),
        origin: "manual".into(),
        reason: "fleet test".into(),
        since: now,
        expires_at: now + secs,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_set_on_one_agent_reaches_the_others_and_so_does_its_lift() {
    let Some(redis) = Redis::start() else { return };
    let a = agent(&redis, 100, 100).await;
    let b = agent(&redis, 100, 100).await;
    assert_eq!(decide(&b, "192.0.2.7"), Decision::Allow);
    let set = Instant::now();
    a.state
        .controls
        .ban(ban("192.0.2.7", 600), &Actor::Token, &a.state.metrics)
        .unwrap();
    let arrived = eventually(Duration::from_secs(3), || async {
        (decide(&b, "192.0.2.7") == Decision::Deny).then_some(())
    })
    .await;
    assert!(arrived.is_some(), "the ban did not reach the other agent");
    eprintln!("ban reached the other agent in {:?}", set.elapsed());
    assert!(set.elapsed() < Duration::from_millis(1500));
    assert!(b.state.metrics.fleet.bans_received.get() >= 1);
    // The rule is the ban's origin, as on the agent that set it.
    let lifted = Instant::now();
    let target = "192.0.2.7".parse().unwrap();
    b.state
        .controls
        .unban(
            &target,
            spoa_guard::util::unix_now_u32(),
            &Actor::Uid(0),
            &b.state.metrics,
        )
        .unwrap();
    let gone = eventually(Duration::from_secs(3), || async {
        (decide(&a, "192.0.2.7") == Decision::Allow).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the lift did not reach the agent that set the ban"
    );
    eprintln!("lift reached the other agent in {:?}", lifted.elapsed());
    // A third agent starting now reads the fleet's bans before it serves.
    a.state
        .controls
        .ban(ban("198.51.100.0/24", 600), &Actor::Token, &a.state.metrics)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = agent(&redis, 100, 100).await;
    assert_eq!(
        decide(&c, "198.51.100.9"),
        Decision::Deny,
        "a new agent starts with the fleet's bans"
    );
    assert_eq!(
        decide(&c, "192.0.2.7"),
        Decision::Allow,
        "and without the lifted one"
    );
}

/// Requests from one source spread over `agents`, `per_round` per agent every 10 ms, for
/// `duration`; how many were admitted.
async fn spread(agents: &[&Agent], src: &str, duration: Duration) -> usize {
    let start = Instant::now();
    let mut admitted = 0;
    while start.elapsed() < duration {
        for agent in agents {
            if decide(agent, src) == Decision::Allow {
                admitted += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_limit_holds_over_agents_and_falls_back_to_a_share_without_redis() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let (a, b) = (agent(&redis, 10, 10).await, agent(&redis, 10, 10).await);
    // Both agents see each other before the flood starts.
    let seen = eventually(Duration::from_secs(3), || async {
        (a.state.metrics.fleet.agents.get() == 2 && b.state.metrics.fleet.agents.get() == 2)
            .then_some(())
    })
    .await;
    assert!(
        seen.is_some(),
        "agents seen: {}",
        a.state.metrics.fleet.agents.get()
    );
    // 10/s burst 10 over 3 s: B + R·T = 40 for the fleet; two local limits would admit 80.
    let admitted = spread(&[&a, &b], "192.0.2.50", Duration::from_secs(3)).await;
    eprintln!("fleet limit 10/s burst 10, two agents, 3 s: {admitted} admitted");
    assert!((30..=48).contains(&admitted), "{admitted}");
    assert!(a.state.metrics.fleet.keys_sent.get() > 0);
    assert!(a.state.metrics.fleet.marks_sent.get() + b.state.metrics.fleet.marks_sent.get() > 0);
    // Redis gone: requests are decided as fast as ever, the agents degrade to their share.
    redis.stop();
    let degraded = eventually(Duration::from_secs(5), || async {
        (a.state.metrics.fleet.degraded.get() == 1).then_some(())
    })
    .await;
    assert!(degraded.is_some(), "the agent did not say it is degraded");
    let timed = Instant::now();
    for _ in 0..1000 {
        decide(&a, "192.0.2.99");
    }
    assert!(
        timed.elapsed() < Duration::from_millis(500),
        "{:?}",
        timed.elapsed()
    );
    // Each agent's share: 5/s, burst 5 — over 2 s about 5 + 10 from agent a alone.
    let share = spread(&[&a], "192.0.2.51", Duration::from_secs(2)).await;
    eprintln!("agent a alone, share of 10/s among 2: {share} admitted in 2 s");
    assert!((10..=20).contains(&share), "{share}");
    // Redis back (empty): in step again, and the limit is whole again.
    redis.restart();
    let back = eventually(Duration::from_secs(45), || async {
        (a.state.metrics.fleet.degraded.get() == 0).then_some(())
    })
    .await;
    assert!(back.is_some(), "the agent did not recover");
    assert!(a.state.metrics.fleet.degradations.get() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_empty_gets_the_bans_back_from_the_agents() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let a = agent(&redis, 100, 100).await;
    a.state
        .controls
        .ban(ban("203.0.113.0/24", 600), &Actor::Token, &a.state.metrics)
        .unwrap();
    let stored = eventually(Duration::from_secs(3), || async {
        redis
            .command(&["HLEN", "{sg:test}:bans"])
            .unwrap_or_default()
            .contains(":1")
            .then_some(())
    })
    .await;
    assert!(
        stored.is_some(),
        "{:?}",
        redis.command(&["HLEN", "{sg:test}:bans"])
    );
    redis.stop();
    redis.restart();
    assert!(redis
        .command(&["HLEN", "{sg:test}:bans"])
        .unwrap_or_default()
        .contains(":0"));
    let refilled = eventually(Duration::from_secs(45), || async {
        redis
            .command(&["HLEN", "{sg:test}:bans"])
            .unwrap_or_default()
            .contains(":1")
            .then_some(())
    })
    .await;
    assert!(refilled.is_some(), "the agent did not send its bans back");
    // Every key the fleet keeps expires.

    for key in ["{sg:test}:bans", "{sg:test}:agents"] {
        let ttl = redis.command(&["PTTL", key]).unwrap_or_default();
        assert!(!ttl.contains(":-1"), "{key} has no TTL: {ttl}");
    }
}
