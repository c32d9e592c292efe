//! Fleet limits without a network: several agents' limits built alike, a model of the
//! fleet store's bucket (the arithmetic of the fleet's script, in Rust), and virtual time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::decision::{Request, RuleName};
use crate::limits::{KeySpec, Limits, Scope, Take};

fn spec(name: &str, rate: f64, burst: u32) -> LimitSpec {
    LimitSpec {
        key: KeySpec::parse("src").unwrap(),
        burst: Some(burst),
        scope: Scope::Fleet,
        ..LimitSpec::new(RuleName::new(name).unwrap(), rate)
    }
}

fn link(secret: &str, marks: Option<MarkSender>) -> FleetLink {
    FleetLink {
        seed: FleetSeed::derive("prod", secret.as_bytes()),
        marks,
    }
}

fn from(src: &str) -> Request<'static> {
    Request {
        src: Some(src.parse::<IpAddr>().unwrap()),
        ..Request::default()
    }
}

fn fleet(limits: &Limits) -> &FleetBuckets {
    limits.iter().next().unwrap().fleet().unwrap()
}

#[test]
fn every_agent_names_a_key_alike_and_another_secret_does_not() {
    let a = Limits::build(&[spec("l", 1.0, 1)], None, Some(&link("s", None))).unwrap();
    let b = Limits::build(&[spec("l", 1.0, 1)], None, Some(&link("s", None))).unwrap();
    let c = Limits::build(&[spec("l", 1.0, 1)], None, Some(&link("t", None))).unwrap();
    let key = |l: &Limits| l.iter().next().unwrap().key_of(&from("192.0.2.7"), None);
    assert_eq!(key(&a), key(&b));
    assert_ne!(key(&a), key(&c));
    assert_eq!(fleet(&a).id(), fleet(&b).id());
    assert_ne!(fleet(&a).id(), fleet(&c).id());
    // A limit with another rate is another bucket in the fleet.
    let d = Limits::build(&[spec("l", 2.0, 1)], None, Some(&link("s", None))).unwrap();
    assert_ne!(fleet(&a).id(), fleet(&d).id());
}

#[test]
fn a_fleet_limit_needs_a_fleet() {
    let err = Limits::build(&[spec("l", 1.0, 1)], None, None).unwrap_err();
    assert!(err.to_string().contains("[fleet]"), "{err}");
}

#[test]
fn a_reload_keeps_the_fleet_and_the_buckets() {
    let first = Limits::build(&[spec("l", 1.0, 1)], None, Some(&link("s", None))).unwrap();
    let now = Instant::now();
    let limit = first.iter().next().unwrap();
    assert_eq!(limit.take(&from("192.0.2.7"), None, now), Take::Allowed);
    let second =
        Limits::build(&[spec("l", 1.0, 1), spec("m", 1.0, 1)], Some(&first), None).unwrap();
    assert_eq!(fleet(&second).unreported().len(), 1);
    assert!(second.iter().nth(1).unwrap().fleet().is_some());
}

#[test]
fn alone_an_agent_enforces_its_share() {
    let limits = Limits::build(&[spec("l", 30.0, 30)], None, Some(&link("s", None))).unwrap();
    let limit = limits.iter().next().unwrap();
    let start = Instant::now();
    fleet(&limits).set_agents(3, true);
    let admitted = |from_ms: u64, to_ms: u64| {
        (from_ms..to_ms)
            .filter(|ms| {
                limit.take(&from("192.0.2.7"), None, start + Duration::from_millis(*ms))
                    == Take::Allowed
            })
            .count()
    };
    // Burst 30 ÷ 3 at once, then one every 100 ms: 10 + 9 in the first second.
    assert_eq!(admitted(0, 1000), 19);
    // Back in step with the fleet: the whole rate (30 a second) and burst again.
    fleet(&limits).set_agents(3, false);
    let after = admitted(1000, 2000);
    assert!((30..=35).contains(&after), "{after}");
}

#[test]
fn a_new_key_takes_its_share_of_the_burst_until_the_fleet_answers() {
    let limits = Limits::build(&[spec("l", 1.0, 9)], None, Some(&link("s", None))).unwrap();
    let limit = limits.iter().next().unwrap();
    let f = fleet(&limits);
    f.set_agents(3, false);
    let now = Instant::now();
    let takes = |n| {
        (0..n)
            .filter(|_| limit.take(&from("192.0.2.7"), None, now) == Take::Allowed)
            .count()
    };
    assert_eq!(takes(10), 3);
    // The fleet has seen 3 tokens of this key in all (ours): the rest of the burst.
    let key = limit.key_of(&from("192.0.2.7"), None);
    assert_eq!(f.unreported(), vec![(key, 3)]);
    f.reported(key, 3);
    f.fold(key, (3 * 1_000_000_000) - 1_000_000_000, now);
    assert_eq!(takes(10), 6);
}

#[test]
fn a_mark_denies_a_key_never_seen_here() {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let a = Limits::build(&[spec("l", 1.0, 2)], None, Some(&link("s", Some(tx)))).unwrap();
    let b = Limits::build(&[spec("l", 1.0, 2)], None, Some(&link("s", None))).unwrap();
    let now = Instant::now();
    let (la, lb) = (a.iter().next().unwrap(), b.iter().next().unwrap());
    let r = from("192.0.2.7");
    assert_eq!(la.take(&r, None, now), Take::Allowed);
    assert_eq!(la.take(&r, None, now), Take::Allowed);
    assert!(matches!(la.take(&r, None, now), Take::Denied { .. }));
    // Only the first denial is published.
    assert!(matches!(la.take(&r, None, now), Take::Denied { .. }));
    let mark = rx.try_recv().unwrap();
    assert!(rx.try_recv().is_err());
    assert_eq!(
        (mark.limit, mark.key),
        (fleet(&a).id(), la.key_of(&r, None))
    );
    assert_eq!(mark.wait, 1_000_000_000);
    fleet(&b).mark(mark.key, mark.wait, now);
    assert_eq!(
        lb.take(&r, None, now),
        Take::Denied {
            retry_after: Duration::from_secs(1)
        }
    );
    assert_eq!(
        lb.take(&r, None, now + Duration::from_secs(1)),
        Take::Allowed
    );
}

/// The fleet store's bucket of one key, as the fleet's script keeps it: `tat` in
/// microseconds of the store's clock.
#[derive(Default)]
struct Store {
    tats: HashMap<(u64, u64), f64>,
}

impl Store {
    /// Adds `count` tokens taken over the last `span_us`; the `tat` ahead of now.
    fn add(&mut self, key: (u64, u64), count: u32, t_us: f64, span_us: f64, now_us: f64) -> i64 {
        let tat = self.tats.entry(key).or_insert(0.0);
        *tat = tat.max(now_us - span_us) + f64::from(count) * t_us;
        // As the script answers: whole microseconds.
        format!("{:.0}", (*tat - now_us).floor()).parse().unwrap()
    }
}

/// Agents that exchange every `interval` (staggered), under a flood of one key spread
/// evenly over them at `per_ms` requests per millisecond for `secs`; marks travel at
/// once. Returns the requests admitted in all.
fn flood(agents: usize, scope_fleet: bool, interval_ms: u64, per_ms: usize, secs: u64) -> usize {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let mut limits = Vec::new();
    for _ in 0..agents {
        let mut s = spec("l", 50.0, 100);
        if !scope_fleet {
            s.scope = Scope::Local;
        }
        let l = Limits::build(&[s], None, Some(&link("s", Some(tx.clone())))).unwrap();
        if let Some(f) = l.iter().next().unwrap().fleet() {
            f.set_agents(u32::try_from(agents).unwrap(), false);
        }
        limits.push(l);
    }
    let start = Instant::now();
    let mut store = Store::default();
    let r = from("192.0.2.7");
    let mut admitted = 0;
    let mut last_sync = vec![0_u64; agents];
    let mut next = 0;
    for ms in 0..secs * 1000 {
        let now = start + Duration::from_millis(ms);
        for _ in 0..per_ms {
            let limit = limits[next % agents].iter().next().unwrap();
            next += 1;
            if limit.take(&r, None, now) == Take::Allowed {
                admitted += 1;
            }
        }
        while let Ok(mark) = rx.try_recv() {
            for l in &limits {
                let f = l.iter().next().unwrap().fleet().unwrap();
                if f.id() == mark.limit {
                    f.mark(mark.key, mark.wait, now);
                }
            }
        }
        for (i, l) in limits.iter().enumerate() {
            let Some(f) = l.iter().next().unwrap().fleet() else {
                continue;
            };
            // Agent i syncs at its own phase of the interval.
            if ms % interval_ms != (i as u64 * interval_ms / agents as u64) {
                continue;
            }
            let span = (ms - last_sync[i]) as f64 * 1000.0;
            last_sync[i] = ms;
            let t_us = f.period() as f64 / 1000.0;
            for (key, count) in f.unreported() {
                f.reported(key, count);
                let ahead = store.add((f.id(), key), count, t_us, span, ms as f64 * 1000.0);
                f.fold(key, ahead * 1000, now);
            }
        }
    }
    admitted
}

#[test]
fn a_fleet_limit_holds_across_agents_within_its_bound() {
    // 50/s, burst 100, over 10 s: one agent alone admits B + R·T = 600.
    let alone = flood(1, true, 250, 2, 10);
    assert!((595..=605).contains(&alone), "{alone}");
    let local = flood(3, false, 250, 2, 10);
    let fleet = flood(3, true, 250, 2, 10);
    eprintln!("one agent {alone}, three local {local}, three fleet {fleet}");
    assert!(local >= 1700, "local limits admit about 3×: {local}");
    // The stated bound: B + R·T·(1 + ε), ε = 0.1 for 3 agents at 250 ms over 10 s.
    assert!(fleet <= 100 + 550, "{fleet}");
    assert!(
        fleet >= 580,
        "the fleet limit does not starve the key: {fleet}"
    );
}
