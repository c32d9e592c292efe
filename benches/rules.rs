//! Rule lookup benchmarks: building and querying the IP list matcher (`rules::ip`).
//!
//! - `ip_build/N`: compiling `N` random IPv4 CIDRs into an `IpMatcher` (1k, 100k, 1M).
//! - `ip_lookup/{hit,miss}/N`: one lookup of an address inside / outside every list,
//!   cycling through 4096 pre-drawn addresses so the caches see realistic spread.
//! - `ip_lookup/linear_{hit,miss}/1000`: the naive baseline, a linear scan over a
//!   `Vec<Ipv4Net>`, for the 1k case only (it is hopeless beyond that).
//! - `ip_lookup/files/{1,20}`: the same 100k CIDRs as one list and split over 20 lists
//!   (20 block-list files): every list goes into one matcher, so the lookup should not
//!   care (issue 12's target: 20 files ≥ 0.9 × one file).
//! - `real_lists/*`: only when `SPOA_GUARD_DATA` names a directory shaped like the shared
//!   data set (with `blocklists/`): loading FireHOL level 4 + X4B datacenter (v4, v6) +
//!   Spamhaus DROP/DROPv6/EDROP (about 185k entries) from disk, and lookups against it.
//!
//! The CIDRs come from a fixed-seed generator (`common::BenchRng`), so every run benches
//! the same data. The prefix mix imitates FireHOL level 4: mostly single addresses, some small
//! networks, a few large ones.
//!
//! ```text
//! cargo bench --bench rules                       # synthetic groups
//! SPOA_GUARD_DATA=../shared/data cargo bench --bench rules -- real_lists
//! ```

mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::BenchRng;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use ipnet::{IpNet, Ipv4Net};
use spoa_guard::rules::ip::{IpList, IpMatcher};

/// Sizes of the synthetic lists.
const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];

/// Addresses cycled through by each lookup bench.
const PROBES: usize = 4096;

/// `n` random IPv4 networks: 85% /32, 10% /24../31, 5% /16../23.
fn random_nets(n: usize, seed: u64) -> Vec<Ipv4Net> {
    let mut rng = BenchRng::new(seed);
    (0..n)
        .map(|_| {
            let prefix = match rng.below(100) {
                0..=84 => 32,
                85..=94 => 24 + rng.below(8) as u8,
                _ => 16 + rng.below(8) as u8,
            };
            Ipv4Net::new(rng.ipv4(), prefix).unwrap().trunc()
        })
        .collect()
}

/// Addresses inside random members of `nets`.
fn hits(nets: &[Ipv4Net], rng: &mut BenchRng) -> Vec<IpAddr> {
    (0..PROBES)
        .map(|_| {
            let net = nets[rng.below(nets.len() as u64) as usize];
            let size = 1u64 << (32 - net.prefix_len());
            let addr = u32::from(net.network()) + rng.below(size) as u32;
            IpAddr::V4(Ipv4Addr::from(addr))
        })
        .collect()
}

/// Random addresses in no list of `matcher`.
fn misses(matcher: &IpMatcher, rng: &mut BenchRng) -> Vec<IpAddr> {
    std::iter::repeat_with(|| IpAddr::V4(rng.ipv4()))
        .filter(|&a| matcher.lookup(a).is_none())
        .take(PROBES)
        .collect()
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("ip_build");
    group.sample_size(10);
    for n in SIZES {
        let nets = random_nets(n, 0x5eed);
        group.bench_with_input(BenchmarkId::from_parameter(n), &nets, |b, nets| {
            b.iter_batched(
                || IpList::from_nets("bench", nets.iter().copied().map(IpNet::V4)),
                |list| IpMatcher::new([list]),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

/// Benches one lookup per iteration, cycling through `probes`.
fn bench_lookups(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    probes: &[IpAddr],
    lookup: impl Fn(IpAddr) -> bool,
) {
    group.bench_function(id, |b| {
        let mut it = probes.iter().copied().cycle();
        b.iter(|| lookup(black_box(it.next().unwrap())));
    });
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("ip_lookup");
    group.measurement_time(Duration::from_secs(3));
    for n in SIZES {
        let nets = random_nets(n, 0x5eed);
        let matcher = IpMatcher::new([IpList::from_nets(
            "bench",
            nets.iter().copied().map(IpNet::V4),
        )]);
        eprintln!("ip_lookup: {n} CIDRs -> {} segments", matcher.segments());
        let mut rng = BenchRng::new(0xfeed);
        let hit = hits(&nets, &mut rng);
        let miss = misses(&matcher, &mut rng);
        let m = &matcher;
        bench_lookups(&mut group, BenchmarkId::new("hit", n), &hit, |a| {
            m.lookup(a).is_some()
        });
        bench_lookups(&mut group, BenchmarkId::new("miss", n), &miss, |a| {
            m.lookup(a).is_some()
        });

        if n == 1_000 {
            // The naive baseline: what a lookup costs without a compiled structure.
            let linear = |a: IpAddr| match a {
                IpAddr::V4(a) => nets.iter().any(|net| net.contains(&a)),
                IpAddr::V6(_) => false,
            };
            bench_lookups(&mut group, BenchmarkId::new("linear_hit", n), &hit, linear);
            bench_lookups(
                &mut group,
                BenchmarkId::new("linear_miss", n),
                &miss,
                linear,
            );
        }
    }
    group.finish();
}

/// One lookup (a mix of hits and misses) against 100k CIDRs given as 1 list and as 20.
fn files(c: &mut Criterion) {
    let mut group = c.benchmark_group("ip_lookup/files");
    group.measurement_time(Duration::from_secs(3));
    let nets = random_nets(100_000, 0x5eed);
    let as_lists = |n: usize| {
        IpMatcher::new(
            nets.chunks(nets.len().div_ceil(n))
                .enumerate()
                .map(|(i, chunk)| {
                    IpList::from_nets(format!("file-{i}"), chunk.iter().copied().map(IpNet::V4))
                }),
        )
    };
    let one = as_lists(1);
    let mut rng = BenchRng::new(0xf11e);
    let mut probes = hits(&nets, &mut rng);
    probes.extend(misses(&one, &mut rng));
    for n in [1, 20] {
        let matcher = as_lists(n);
        assert_eq!(matcher.len(), n);
        bench_lookups(&mut group, BenchmarkId::from_parameter(n), &probes, |a| {
            matcher.lookup(a).is_some()
        });
    }
    group.finish();
}

/// The real lists: FireHOL level 4, X4B datacenter v4 + v6, Spamhaus DROP, DROPv6, EDROP.
const REAL_LISTS: [&str; 6] = [
    "firehol_level4.netset",
    "x4bnet-datacenter-ipv4.txt",
    "x4bnet-datacenter-ipv6.txt",
    "spamhaus-drop.txt",
    "spamhaus-dropv6.txt",
    "spamhaus-edrop-2023-12-01.txt",
];

fn load_real(dir: &Path) -> IpMatcher {
    IpMatcher::new(
        REAL_LISTS
            .iter()
            .map(|f| IpList::load(&dir.join(f)).unwrap()),
    )
}

/// The first address of every entry of the real IPv4 lists, read independently of the
/// parser under test.
fn real_v4_addresses(dir: &Path) -> Vec<IpAddr> {
    let mut addrs = Vec::new();
    for file in REAL_LISTS {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for line in text.lines() {
            let entry = line.split(['#', ';']).next().unwrap_or("").trim();
            let addr = entry.split('/').next().unwrap_or("");
            if let Ok(IpAddr::V4(a)) = addr.parse::<IpAddr>() {
                addrs.push(IpAddr::V4(a));
            }
        }
    }
    addrs
}

fn real_lists(c: &mut Criterion) {
    let Some(data) = std::env::var_os("SPOA_GUARD_DATA").map(PathBuf::from) else {
        eprintln!("real_lists: skipped (set SPOA_GUARD_DATA to the shared data directory)");
        return;
    };
    let dir = data.join("blocklists");
    if !dir.is_dir() {
        eprintln!("real_lists: skipped ({} is not a directory)", dir.display());
        return;
    }

    let mut group = c.benchmark_group("real_lists");
    group.sample_size(10);
    group.bench_function("load_and_build", |b| b.iter(|| load_real(black_box(&dir))));

    let matcher = load_real(&dir);
    eprintln!(
        "real_lists: {} entries -> {} segments",
        matcher.entries(),
        matcher.segments()
    );
    let mut rng = BenchRng::new(0xdada);
    let all = real_v4_addresses(&dir);
    let hit: Vec<IpAddr> = (0..PROBES)
        .map(|_| all[rng.below(all.len() as u64) as usize])
        .collect();
    let miss = misses(&matcher, &mut rng);
    // Random addresses inside 2000::/3 (global unicast), mostly misses.
    let v6: Vec<IpAddr> = (0..PROBES)
        .map(|_| {
            let a = (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 3 | (1u128 << 125);
            IpAddr::V6(Ipv6Addr::from(a))
        })
        .collect();
    let m = &matcher;
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(100);
    bench_lookups(
        &mut group,
        BenchmarkId::from_parameter("hit_v4"),
        &hit,
        |a| m.lookup(a).is_some(),
    );
    bench_lookups(
        &mut group,
        BenchmarkId::from_parameter("miss_v4"),
        &miss,
        |a| m.lookup(a).is_some(),
    );
    bench_lookups(
        &mut group,
        BenchmarkId::from_parameter("random_v6"),
        &v6,
        |a| m.lookup(a).is_some(),
    );
    group.finish();
}

criterion_group!(benches, build, lookup, files, real_lists);
criterion_main!(benches);
