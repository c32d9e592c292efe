//! Tests of the traffic insight. Time is virtual: every `now` is a fixed `Instant` plus
//! an offset; nothing sleeps.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{RngExt, SeedableRng};

use super::*;
use crate::decision::Reason;

const MINUTE: Duration = Duration::from_secs(60);
const FIVE_MINUTES: Duration = Duration::from_secs(300);

/// Settings that never sample in these tests (a budget far above their rates).
fn exact_config() -> InsightConfig {
    InsightConfig {
        samples_per_sec: 1 << 40,
        buffer_bytes: 64 << 20,
        ..InsightConfig::default()
    }
}

fn insight(config: &InsightConfig) -> (Insight, Instant) {
    let t0 = Instant::now();
    (Insight::new(config, t0).unwrap(), t0)
}

fn secs(t0: Instant, s: f64) -> Instant {
    t0 + Duration::from_secs_f64(s)
}

fn obs(src: IpAddr, now: Instant) -> Observation<'static> {
    Observation {
        src: Some(src),
        asn: Some(64500),
        path: Some(b"/"),
        host: Some(b"example.com"),
        ua: Some(b"Mozilla/5.0"),
        denied: false,
        now,
    }
}

fn v4(a: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

/// A fixed, portable generator, for reproducible streams.
type Rng = rand::rngs::Xoshiro256PlusPlus;

fn entry<'a>(entries: &'a [TopEntry], key: &str) -> Option<&'a TopEntry> {
    entries.iter().find(|e| e.key == key)
}

#[test]
fn a_skewed_burst_ranks_the_heaviest_source_first() {
    let (insight, t0) = insight(&exact_config());
    let heavy = v4(0xcb00_7109); // 203.0.113.9
    let mut rng = Rng::seed_from_u64(1);
    // 5,000 requests from one source mixed into 1,000 from 1,000 others: more distinct
    // sources than counters, so the summary is full and the counts carry an error.
    let mut n = 0;
    for i in 0..6_000 {
        let src = if rng.random_range(0..6) == 0 {
            v4(0xc000_0200 + (n % 1_000)) // 192.0.2.0/24 .. 192.0.5.x
        } else {
            heavy
        };
        if src != heavy {
            n += 1;
        }
        insight.record(&obs(src, secs(t0, 1.0 + f64::from(i) / 1_000.0)));
    }
    let heavy_true = 6_000 - u64::from(n);
    let report = insight.top(MINUTE, 5, secs(t0, 10.0));
    assert_eq!(report.totals.requests, 6_000);
    let first = &report.all.src[0];
    assert_eq!(first.key, "203.0.113.9");
    assert!(first.count - first.error <= heavy_true && heavy_true <= first.count);
    assert!(first.error <= 6_000 / 100, "error {} > N/k", first.error);
    let true_share = heavy_true as f64 / 6_000.0;
    assert!(
        (first.share - true_share).abs() <= 0.01 + 1e-4,
        "{} vs {true_share}",
        first.share
    );
    assert!(report.all.src.windows(2).all(|w| w[0].count >= w[1].count));
    assert_eq!(report.all.src.len(), 5);
    assert!(report.sampling.exact);
}

#[test]
fn small_traffic_is_counted_exactly() {
    let (insight, t0) = insight(&exact_config());
    for (src, times) in [(1, 30_u64), (2, 20), (3, 10)] {
        for _ in 0..times {
            insight.record(&obs(v4(src), secs(t0, 1.0)));
        }
    }
    let report = insight.top(MINUTE, 10, secs(t0, 2.0));
    let got: Vec<(&str, u64, f64, u64)> = report
        .all
        .src
        .iter()
        .map(|e| (e.key.as_str(), e.count, e.share, e.error))
        .collect();
    assert_eq!(
        got,
        vec![
            ("0.0.0.1", 30, 0.5, 0),
            ("0.0.0.2", 20, 0.3333, 0),
            ("0.0.0.3", 10, 0.1667, 0)
        ]
    );
    assert_eq!(report.all.asn[0].key, "AS64500");
    assert_eq!(report.all.host[0].key, "example.com");
    assert_eq!(report.all.ua[0].count, 60);
    assert_eq!(report.covered_secs, 2.0);
    assert_eq!(report.window_secs, 60);
}

#[test]
fn networks_are_slash_24_and_slash_48_and_mapped_addresses_are_ipv4() {
    let (insight, t0) = insight(&exact_config());
    let now = secs(t0, 1.0);
    for last in 1..=50 {
        insight.record(&obs(v4(0xc633_6400 + last), now)); // 198.51.100.x
    }
    for last in 1..=5 {
        insight.record(&obs(v4(0xcb00_7100 + last), now)); // 203.0.113.x
    }
    let mapped = Ipv4Addr::new(203, 0, 113, 200).to_ipv6_mapped();
    insight.record(&obs(IpAddr::V6(mapped), now));
    for s in [
        "2001:db8:abcd:1::1",
        "2001:db8:abcd:ffff::2",
        "2001:db8:abce::1",
    ] {
        insight.record(&obs(s.parse().unwrap(), now));
    }
    let report = insight.top(MINUTE, 100, secs(t0, 2.0));
    let net = &report.all.src_net;
    assert_eq!(net[0].key, "198.51.100.0/24");
    assert_eq!(net[0].count, 50);
    assert_eq!(entry(net, "203.0.113.0/24").unwrap().count, 6);
    assert_eq!(entry(net, "2001:db8:abcd::/48").unwrap().count, 2);
    assert_eq!(entry(net, "2001:db8:abce::/48").unwrap().count, 1);
    assert_eq!(net.len(), 4);
    assert_eq!(entry(&report.all.src, "203.0.113.200").unwrap().count, 1);
    assert!(report.all.src.iter().all(|e| !e.key.contains("::ffff:")));
}

#[test]
fn the_denied_class_counts_only_denied_requests() {
    let (insight, t0) = insight(&exact_config());
    let now = secs(t0, 1.0);
    for _ in 0..100 {
        insight.record(&obs(v4(1), now));
    }
    for _ in 0..30 {
        insight.record(&Observation {
            denied: true,
            path: Some(b"/wp-login.php"),
            ..obs(v4(2), now)
        });
    }
    let report = insight.top(MINUTE, 10, secs(t0, 2.0));
    assert_eq!(report.totals.requests, 130);
    assert_eq!(report.totals.denied, 30);
    let src = &report.denied.src;
    assert_eq!(src.len(), 1);
    assert_eq!((src[0].key.as_str(), src[0].count), ("0.0.0.2", 30));
    assert_eq!(src[0].share, 1.0);
    assert_eq!(report.denied.path[0].key, "/wp-login.php");
    assert_eq!(entry(&report.all.src, "0.0.0.1").unwrap().count, 100);
    assert_eq!(entry(&report.all.src, "0.0.0.2").unwrap().share, 0.2308);
}

#[test]
fn the_window_slides() {
    let (insight, t0) = insight(&exact_config());
    // 10 requests at 5 s, 20 at 125 s (slot 12, which starts at 120 s).
    for _ in 0..10 {
        insight.record(&obs(v4(1), secs(t0, 5.0)));
    }
    for _ in 0..20 {
        insight.record(&obs(v4(2), secs(t0, 125.0)));
    }
    let count = |r: &TopReport, src: &str| entry(&r.all.src, src).map(|e| e.count);

    let r = insight.top(MINUTE, 10, secs(t0, 126.0));
    assert_eq!(
        (count(&r, "0.0.0.1"), count(&r, "0.0.0.2")),
        (None, Some(20))
    );
    assert_eq!(r.totals.requests, 20);
    assert_eq!(r.covered_secs, 56.0, "slots 7..=12: from 70 s to 126 s");

    let r = insight.top(FIVE_MINUTES, 10, secs(t0, 126.0));
    assert_eq!(
        (count(&r, "0.0.0.1"), count(&r, "0.0.0.2")),
        (Some(10), Some(20))
    );
    assert_eq!(r.covered_secs, 126.0, "from the start");
    assert_eq!(r.window_secs, 300);

    // 299.9 s: slot 29 is the current one, slot 0 still in the 5-minute window.
    let r = insight.top(FIVE_MINUTES, 10, secs(t0, 299.9));
    assert_eq!(count(&r, "0.0.0.1"), Some(10));
    // 300 s: slot 0 has left the window (and the ring).
    let r = insight.top(FIVE_MINUTES, 10, secs(t0, 300.0));
    assert_eq!(count(&r, "0.0.0.1"), None);
    assert_eq!(r.totals.requests, 20);
    // 1 minute after the second burst's slot, it has left the 1-minute window too.
    let r = insight.top(MINUTE, 10, secs(t0, 180.0));
    assert_eq!(count(&r, "0.0.0.2"), None);
    assert_eq!(r.totals.requests, 0);
    assert!(r.all.src.is_empty());
    // ... and 5 minutes after, everything is gone.
    let r = insight.top(FIVE_MINUTES, 10, secs(t0, 420.0));
    assert_eq!(r.totals.requests, 0);
}

#[test]
fn windows_round_down_to_slots_and_cap_at_the_ring() {
    let (insight, t0) = insight(&exact_config());
    let now = secs(t0, 1_000.0);
    assert_eq!(insight.top(Duration::from_secs(45), 1, now).window_secs, 40);
    assert_eq!(insight.top(Duration::from_secs(1), 1, now).window_secs, 10);
    assert_eq!(
        insight.top(Duration::from_secs(3_600), 1, now).window_secs,
        300
    );
    assert_eq!(insight.max_window(), FIVE_MINUTES);
}

#[test]
fn samples_go_to_the_slot_of_their_time_even_when_aggregated_late() {
    let (insight, t0) = insight(&exact_config());
    insight.record(&obs(v4(1), secs(t0, 5.0)));
    insight.record(&obs(v4(2), secs(t0, 95.0)));
    // Aggregated only at 100 s: the first request is in slot 0, out of the last minute.
    let r = insight.top(MINUTE, 10, secs(t0, 100.0));
    assert_eq!(r.totals.requests, 1);
    assert_eq!(r.all.src[0].key, "0.0.0.2");
    assert_eq!(
        insight
            .top(FIVE_MINUTES, 10, secs(t0, 100.0))
            .totals
            .requests,
        2
    );
}

#[test]
fn error_bounds_hold_against_exact_counts() {
    let config = InsightConfig {
        counters: 20,
        ..exact_config()
    };
    let (insight, t0) = insight(&config);
    let mut rng = Rng::seed_from_u64(7);
    let mut exact: HashMap<String, u64> = HashMap::new();
    let paths: Vec<String> = (0..3_000).map(|i| format!("/item/{i}")).collect();
    // 100,000 requests over 200 s (20 slots): 30 % to one path, the rest skewed (key i
    // with probability ∝ 1/(i+1)) with the heavy set drifting over time, so that keys
    // come and go between slots.
    let cumulative: Vec<f64> = (1..=paths.len())
        .scan(0.0, |acc, i| {
            *acc += 1.0 / i as f64;
            Some(*acc)
        })
        .collect();
    let harmonic = cumulative[cumulative.len() - 1];
    for i in 0..100_000_u32 {
        let t = f64::from(i) * 200.0 / 100_000.0;
        let period = usize::try_from(i / 5_000).unwrap(); // 10 s
        let u = rng.random::<f64>() * harmonic;
        let rank = cumulative.partition_point(|&c| c < u).min(paths.len() - 1);
        let path = if rng.random_range(0..10) < 3 {
            "/hot"
        } else {
            &paths[(rank + period * 13) % paths.len()]
        };
        *exact.entry(path.to_string()).or_default() += 1;
        insight.record(&Observation {
            path: Some(path.as_bytes()),
            ..obs(v4(1), secs(t0, t))
        });
        if i % 5_000 == 0 {
            insight.aggregate(secs(t0, t));
        }
    }
    let report = insight.top(FIVE_MINUTES, usize::MAX, secs(t0, 200.0));
    let n = report.totals.requests;
    assert_eq!(n, 100_000);
    let k = config.counters as u64;
    for e in &report.all.path {
        let truth = exact[&e.key];
        assert!(
            e.count - e.error <= truth && truth <= e.count,
            "{}: {} - {} vs {truth}",
            e.key,
            e.count,
            e.error
        );
        assert!(e.error <= n / k, "{}: error {} > N/k", e.key, e.error);
    }
    for (key, &truth) in &exact {
        if truth > n / k {
            assert!(
                entry(&report.all.path, key).is_some(),
                "{key} ({truth}) missing"
            );
        }
    }
    // A key far above N/k comes first.
    assert_eq!(report.all.path[0].key, "/hot");
}

#[test]
fn memory_stays_bounded_with_a_million_distinct_keys() {
    let config = InsightConfig {
        samples_per_sec: 1 << 40, // every key reaches the summaries
        ..InsightConfig::default()
    };
    let (insight, t0) = insight(&config);
    let long = "x".repeat(200);
    let mut peak = 0;
    for i in 0..1_000_000_u32 {
        let path = format!("/{i}/{long}");
        let ua = format!("bot-{i} {long}");
        let host = format!("{i}.example.com");
        insight.record(&Observation {
            src: Some(v4(i.wrapping_mul(2_654_435_761))),
            asn: Some(i),
            path: Some(path.as_bytes()),
            host: Some(host.as_bytes()),
            ua: Some(ua.as_bytes()),
            denied: i % 2 == 0,
            // 3,333 requests a second: 1M over 300 s, so that every slot fills up.
            now: secs(t0, f64::from(i) * 0.0003),
        });
        if i % 20_000 == 19_999 {
            peak = peak.max(insight.memory_bytes());
            insight.aggregate(secs(t0, f64::from(i) * 0.0003));
            peak = peak.max(insight.memory_bytes());
        }
    }
    let bound = config.max_memory_bytes();
    assert!(peak <= bound, "{peak} > {bound}");
    let report = insight.top(FIVE_MINUTES, 1_000, secs(t0, 300.0));
    // Every dimension has at most slots · k candidates, whatever the distinct keys.
    for class in [&report.all, &report.denied] {
        for d in Dimension::ALL {
            assert!(class.get(d).len() <= 30 * 100, "{d:?}");
        }
    }
    assert!(report.all.path[0].key.ends_with('…'));
    eprintln!("peak {peak} bytes, bound {bound} bytes");
}

#[test]
fn sampling_under_a_high_rate_keeps_estimates_close() {
    let config = InsightConfig {
        samples_per_sec: 4_000,
        ..InsightConfig::default()
    };
    let (insight, t0) = insight(&config);
    let mut rng = Rng::seed_from_u64(3);
    // 50,000 requests a second for 20 s: 30 % from one source, 10 % from another, the
    // rest from 100,000 sources; 2 % denied, from a third source.
    let rate: u32 = 50_000;
    let mut exact: HashMap<IpAddr, u64> = HashMap::new();
    let mut denied_true = 0;
    for i in 0..20 * rate {
        let now = secs(t0, f64::from(i) / f64::from(rate));
        let r = rng.random_range(0..100);
        let (src, denied) = match r {
            0..=29 => (v4(1), false),
            30..=39 => (v4(2), false),
            40..=41 => (v4(3), true),
            _ => (v4(1_000 + rng.random_range(0..100_000u32)), false),
        };
        *exact.entry(src).or_default() += 1;
        denied_true += u64::from(denied);
        insight.record(&Observation {
            denied,
            ..obs(src, now)
        });
        if i % rate == rate - 1 {
            insight.aggregate(now);
        }
    }
    let report = insight.top(MINUTE, 5, secs(t0, 20.0));
    assert!(!report.sampling.exact);
    assert!(report.sampling.interval > 10, "{:?}", report.sampling);
    assert_eq!(
        report.sampling.interval_denied, 1,
        "1,000/s denied fit the budget"
    );
    let total = 20 * u64::from(rate);
    // The first second was sampled at interval 1 and the rest at I ≈ 17: totals are
    // exact up to fewer than 2I pending requests.
    assert!(
        report.totals.requests.abs_diff(total) < 100,
        "{}",
        report.totals.requests
    );
    assert_eq!(report.totals.denied, denied_true);
    for (src, key) in [(v4(1), "0.0.0.1"), (v4(2), "0.0.0.2")] {
        let e = entry(&report.all.src, key).unwrap();
        let truth = exact[&src] as f64;
        let relative = (e.count as f64 - truth).abs() / truth;
        assert!(relative < 0.05, "{key}: {} vs {truth}", e.count);
    }
    assert_eq!(
        report.denied.src[0].count, denied_true,
        "exact: not sampled"
    );
    assert_eq!(report.sampling.dropped, 0);
}

#[test]
fn concurrent_records_lose_nothing_when_unsampled() {
    let (insight, t0) = insight(&exact_config());
    let insight = Arc::new(insight);
    let threads = 4;
    let per_thread = 25_000;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let insight = Arc::clone(&insight);
            thread::spawn(move || {
                for i in 0..per_thread {
                    insight.record(&obs(v4(t), secs(t0, f64::from(i) / 10_000.0)));
                }
            })
        })
        .collect();
    // Aggregations while the threads record.
    for i in 0..20 {
        insight.aggregate(secs(t0, f64::from(i) * 0.1));
    }
    for h in handles {
        h.join().unwrap();
    }
    let report = insight.top(MINUTE, 10, secs(t0, 3.0));
    assert_eq!(report.totals.requests, u64::from(threads * per_thread));
    assert_eq!(report.all.src.len(), threads as usize);
    for e in &report.all.src {
        assert_eq!((e.count, e.error), (u64::from(per_thread), 0), "{}", e.key);
    }
    assert!(report.sampling.exact);
}

#[test]
fn a_full_buffer_counts_dropped_requests_in_the_totals() {
    let config = InsightConfig {
        buffer_bytes: 64 << 10,
        ..exact_config()
    };
    let (insight, t0) = insight(&config);
    for _ in 0..10_000 {
        insight.record(&obs(v4(1), secs(t0, 1.0)));
    }
    let r = insight.top(MINUTE, 1, secs(t0, 2.0));
    assert_eq!(r.totals.requests, 10_000);
    assert!(r.sampling.dropped > 0);
    assert!(!r.sampling.exact);
    assert_eq!(r.all.src[0].count, 10_000 - r.sampling.dropped);
}

#[test]
fn absent_and_truncated_keys() {
    let config = InsightConfig {
        key_bytes: 8,
        ..exact_config()
    };
    let (insight, t0) = insight(&config);
    insight.record(&Observation {
        src: None,
        asn: None,
        path: Some(b""),
        host: None,
        ua: Some("Mozilla/5.0 (Ünïcode)".as_bytes()),
        denied: false,
        now: secs(t0, 1.0),
    });
    insight.record(&Observation {
        ua: Some(b"Mozilla/"),
        ..obs(v4(1), secs(t0, 1.0))
    });
    let r = insight.top(MINUTE, 10, secs(t0, 2.0));
    assert_eq!(entry(&r.all.src, "(none)").unwrap().count, 1);
    assert_eq!(entry(&r.all.src_net, "(none)").unwrap().count, 1);
    assert_eq!(entry(&r.all.asn, "unknown").unwrap().count, 1);
    assert_eq!(entry(&r.all.path, "(none)").unwrap().count, 1);
    assert_eq!(entry(&r.all.host, "(none)").unwrap().count, 1);
    // Cut at 8 bytes: "Mozilla/" and "Mozilla/…" are different keys.
    assert_eq!(entry(&r.all.ua, "Mozilla/…").unwrap().count, 1);
    assert_eq!(entry(&r.all.ua, "Mozilla/").unwrap().count, 1);
}

#[test]
fn observation_of_a_request_and_verdict() {
    let request = Request {
        src: Some(v4(7)),
        path: Some(b"/x"),
        host: Some(b"h"),
        ua: Some(b"u"),
        ..Request::default()
    };
    let now = Instant::now();
    let mut verdict = Verdict::new(Decision::Deny, Reason::Asn, Bytes::from_static(b"AS1"));
    verdict.asn = Some(1);
    let o = Observation::of(&request, &verdict, now);
    assert!(o.denied);
    assert_eq!(
        (o.src, o.asn, o.path, o.host, o.ua),
        (
            Some(v4(7)),
            Some(1),
            Some(&b"/x"[..]),
            Some(&b"h"[..]),
            Some(&b"u"[..])
        )
    );
    assert!(!Observation::of(&request, &Verdict::allow_none(), now).denied);
}

#[test]
fn intervals_share_the_budget() {
    let w = |allowed, denied| Weights { allowed, denied };
    let s = Duration::from_secs(1);
    assert_eq!(intervals(w(20_000, 0), s, 20_000), (1, 1));
    assert_eq!(intervals(w(500_000, 0), s, 20_000), (25, 1));
    // Denied traffic under half the budget stays exact; allowed gets the rest.
    assert_eq!(intervals(w(500_000, 5_000), s, 20_000), (34, 1));
    // Both above half: half each.
    assert_eq!(intervals(w(500_000, 100_000), s, 20_000), (50, 10));
    // Mostly denied (an attack): allowed stays exact.
    assert_eq!(intervals(w(2_000, 400_000), s, 20_000), (1, 23));
    // Over two seconds, the same rates.
    assert_eq!(
        intervals(w(1_000_000, 0), Duration::from_secs(2), 20_000),
        (25, 1)
    );
    assert_eq!(intervals(w(u64::MAX, 0), s, 1), (MAX_INTERVAL, 1), "capped");
}

#[test]
fn config_defaults_validation_and_bound() {
    let config = InsightConfig::default();
    assert_eq!(config.validate(), Vec::new());
    for bad in [
        InsightConfig {
            slot_secs: 0,
            ..InsightConfig::default()
        },
        InsightConfig {
            counters: 0,
            ..InsightConfig::default()
        },
        InsightConfig {
            key_bytes: 5_000,
            ..InsightConfig::default()
        },
        InsightConfig {
            buffer_bytes: 1_000,
            ..InsightConfig::default()
        },
    ] {
        assert!(Insight::new(&bad, Instant::now()).is_err(), "{bad:?}");
        assert_eq!(bad.validate().len(), 1, "{bad:?}");
    }
    let bound = config.max_memory_bytes();
    assert!((10_000_000..20_000_000).contains(&bound), "{bound}");
    eprintln!("max_memory_bytes with the defaults: {bound}");
}

#[test]
fn the_report_serializes_to_the_documented_json() {
    let (insight, t0) = insight(&exact_config());
    insight.record(&obs(v4(0xcb00_7109), secs(t0, 1.0)));
    let report = insight.top(MINUTE, 3, secs(t0, 2.5));
    let text = serde_json::to_string(&report).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Top-level fields in this order (`"denied":{` is the class, not the total).
    let at: Vec<usize> = [
        "{\"window_secs\":",
        "\"covered_secs\":",
        "\"slot_secs\":",
        "\"counters\":",
        "\"totals\":{",
        "\"sampling\":{",
        "\"all\":{",
        "\"denied\":{",
    ]
    .iter()
    .map(|n| text.find(n).unwrap())
    .collect();
    assert!(at[0] == 0 && at.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert_eq!(json.as_object().unwrap().len(), at.len());
    let names: Vec<&str> = Dimension::ALL.iter().map(|d| d.as_str()).collect();
    for d in &names {
        assert!(
            json["all"][d].is_array() && json["denied"][d].is_array(),
            "{d}"
        );
    }
    assert_eq!(json["all"].as_object().unwrap().len(), names.len());
    assert_eq!(
        json["all"]["src"][0],
        serde_json::json!({ "key": "203.0.113.9", "count": 1, "share": 1.0, "error": 0 })
    );
    assert_eq!(json["covered_secs"], serde_json::json!(2.5));
    assert_eq!(
        json["sampling"],
        serde_json::json!({ "exact": true, "interval": 1, "interval_denied": 1, "dropped": 0 })
    );
}

#[test]
fn network_masks() {
    assert_eq!(
        window::network("192.0.2.77".parse().unwrap()),
        "192.0.2.0".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        window::network("2001:db8:1:2:3::4".parse().unwrap()),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0))
    );
}
