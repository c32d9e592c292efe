//! Runtime bans (`spoa_guard::bans::BanStore`):
//!
//! - `ban_lookup/{0,100k,1M}/{miss,hit}`: one source looked up with 0, 100k and 1M bans
//!   in force (90 % single IPv4 addresses, 9 % IPv4 /24s, 1 % IPv6 /64s; a random source
//!   is a miss, a banned address a hit). The target of issue 13: the ban step adds
//!   ≤ 30 ns per request with 100k bans, whatever the count.
//! - `ban_add`: adding a ban to a store of 100k (and lifting it again).
//! - `ban_expire/10k_due`: freeing 10k due bans out of 100k.
//! - `auto_ban/count_deny`, `auto_ban/allow`: an `[[auto_ban]]` rule counting a deny
//!   (its key's sliding window in the capped map), and passing over an allow.
//!
//! Before the groups run it prints how much resident memory 1M bans take (target
//! ≤ 100 MB) and how long adding them took.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use spoa_guard::bans::{AutoBanSettings, Ban, BanStore, Target};
use spoa_guard::decision::{Decision, Reason, Verdict};

mod common;

use common::{rss_kib, BenchRng};

const NOW: u32 = common::BAN_NOW;

fn bans(n: usize, seed: u64) -> Vec<Ban> {
    common::random_bans(n, seed)
}

fn store_of(bans: &[Ban]) -> BanStore {
    common::ban_store(bans)
}

/// Prints the memory and time 1M bans take.
fn report_million() {
    let bans = bans(1_000_000, 7);
    let before = rss_kib();
    let started = Instant::now();
    let store = store_of(&bans);
    let elapsed = started.elapsed();
    let after = rss_kib();
    let added = match (before, after) {
        (Some((b, _)), Some((a, _))) => {
            format!("+{:.1} MiB resident", (a.saturating_sub(b)) as f64 / 1024.0)
        }
        _ => "resident memory unknown".into(),
    };
    eprintln!(
        "bans: 1M bans ({} stored) added in {:.0} ms, {added}",
        store.len(),
        elapsed.as_secs_f64() * 1e3
    );
    black_box(store);
}

fn lookup(c: &mut Criterion) {
    report_million();
    let mut group = c.benchmark_group("ban_lookup");
    for (label, n) in [("0", 0), ("100k", 100_000), ("1M", 1_000_000)] {
        let bans = bans(n, 11);
        let store = store_of(&bans);
        let mut rng = BenchRng::new(3);
        let misses: Vec<IpAddr> = (0..4096).map(|_| IpAddr::V4(rng.ipv4())).collect();
        let hits: Vec<IpAddr> = bans
            .iter()
            .filter_map(|b| match b.target {
                Target::V4 { net, len: 32 } => Some(IpAddr::V4(Ipv4Addr::from(net))),
                _ => None,
            })
            .take(4096)
            .collect();
        let mut i = 0usize;
        group.bench_function(format!("{label}/miss"), |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(store.lookup(black_box(misses[i % misses.len()]), Some(64496), NOW))
            })
        });
        if !hits.is_empty() {
            group.bench_function(format!("{label}/hit"), |b| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    black_box(store.lookup(black_box(hits[i % hits.len()]), None, NOW))
                })
            });
        }
    }
    group.finish();
}

fn add_and_expire(c: &mut Criterion) {
    let base = bans(100_000, 13);
    let extra = bans(4096, 17);
    let mut store = store_of(&base);
    let mut i = 0usize;
    c.bench_function("ban_add/100k", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let ban = extra[i % extra.len()].clone();
            let target = ban.target;
            black_box(store.add(ban).ok());
            store.remove(&target);
        })
    });
    c.bench_function("ban_expire/10k_due", |b| {
        b.iter_batched(
            || {
                let mut bans = base.clone();
                for (n, ban) in bans.iter_mut().enumerate().take(10_000) {
                    ban.expires_at = NOW + 1 + (n % 10) as u32;
                }
                store_of(&bans)
            },
            |mut store| black_box(store.expire(NOW + 59, usize::MAX).len()),
            BatchSize::LargeInput,
        )
    });
}

/// What an `[[auto_ban]]` rule costs per deny it counts: the sliding-window count of the
/// deny's key in the rule's capped map (sources drawn from 10k addresses), and per
/// request it does not count (an allow: one compare).
fn auto_ban(c: &mut Criterion) {
    let settings: AutoBanSettings = toml::from_str(
        "name = \"login-abuse\"\nreasons = [\"rate-limit\"]\nhits = 1000000\n\
         window = \"1m\"\nduration = \"10m\"\n",
    )
    .unwrap();
    let rule = settings.compile().unwrap();
    let mut rng = BenchRng::new(11);
    let sources: Vec<IpAddr> = (0..10_000).map(|_| IpAddr::V4(rng.ipv4())).collect();
    let deny = Verdict::new(
        Decision::Deny,
        Reason::RateLimit,
        Bytes::from_static(b"login"),
    );
    let allow = Verdict::allow_none();
    let start = Instant::now();
    let mut i = 0usize;
    c.bench_function("auto_ban/count_deny", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let src = sources[i % sources.len()];
            black_box(rule.count(&deny, src, None, start))
        })
    });
    c.bench_function("auto_ban/allow", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let src = sources[i % sources.len()];
            black_box(rule.count(black_box(&allow), src, None, start))
        })
    });
}

criterion_group!(benches, lookup, add_and_expire, auto_ban);
criterion_main!(benches);
