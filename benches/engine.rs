//! Full decisions at realistic sizes: `Engine::evaluate` over a mix of real user agents
//! and addresses drawn from the ASN tables, with
//!
//! - a block list of ≈190k entries: the real FireHOL level 4 + X4B datacenter + Spamhaus
//!   DROP/DROPv6/EDROP lists when `SPOA_GUARD_DATA` points at the shared data directory,
//!   otherwise 190,000 generated CIDRs (the real lists are not shipped: FireHOL and
//!   Spamhaus terms);
//! - and a 1M-entry generated block list;
//! - the full ip-location-db IPv4 + IPv6 ASN tables (`benches/data/`) with 900 blocked ASNs;
//! - the 699-pattern bad-bot list, the 166-entry AI-crawler list (dry run) and three
//!   inline user-agent rules;
//! - three rate limits set high enough never to deny (per client, login, global).
//!
//! On the ≈190k set the decision is measured three ways: rules only (`evaluate`, what
//! `eval` does), and as the agent decides (`evaluate_in`) with an empty ban store
//! (`/bans_0`) and with 100k bans (`/bans_100k`): the difference is the ban step.
//!
//! Before measuring, each set-up prints its load time and the resident memory it added
//! (the 150 MB / 2 s targets are for the 1M set).
//!
//! ```text
//! cargo bench --bench engine
//! SPOA_GUARD_DATA=../shared/data cargo bench --bench engine
//! ```

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Instant;

mod common;

use common::{lines, rss_kib, BenchRng};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use spoa_guard::bans::BanStore;
use spoa_guard::config::Config;
use spoa_guard::decision::Request;
use spoa_guard::engine::{Context, Engine};

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// The shared generator, with indexes as `usize`.
struct Rng(BenchRng);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(BenchRng::new(seed))
    }

    fn next(&mut self) -> u64 {
        self.0.next()
    }

    fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }
}

/// Writes `n` random IPv4 CIDRs (/16 to /32) to `path`.
fn write_random_list(path: &Path, n: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut text = String::with_capacity(n * 18);
    for _ in 0..n {
        let addr = Ipv4Addr::from(rng.next() as u32);
        let prefix = 16 + rng.below(17);
        text.push_str(&format!("{addr}/{prefix}\n"));
    }
    std::fs::write(path, text).unwrap();
}

/// A loaded engine and what loading it cost.
struct Setup {
    engine: Engine,
    _dir: tempfile::TempDir,
}

fn setup(label: &str, block_files: Vec<PathBuf>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let manifest = Path::new(MANIFEST);
    let mut asn_block = String::new();
    for asn in 1..=900u32 {
        // Spread over the AS number space; most are real, routed ASNs.
        asn_block.push_str(&format!("AS{}\n", asn * 73 + 1000));
    }
    std::fs::write(dir.path().join("asn-block.txt"), asn_block).unwrap();
    std::fs::write(dir.path().join("allow.txt"), "192.0.2.10\n2001:db8::/48\n").unwrap();
    let quoted = |paths: &[PathBuf]| {
        paths
            .iter()
            .map(|p| format!("{:?}", p.display().to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let toml = format!(
        r#"
[lists]
allow = ["allow.txt"]
block = [{block}]
[asn]
databases = [{asn}]
block_file = "asn-block.txt"
{rules}"#,
        block = quoted(&block_files),
        asn = quoted(&[
            manifest.join("benches/data/ip-location-db-asn-ipv4.csv.gz"),
            manifest.join("benches/data/ip-location-db-asn-ipv6.csv.gz"),
        ]),
        rules = common::ua_and_limit_rules(
            &manifest.join("tests/fixtures/useragents/bad-user-agents.list"),
            &manifest.join("tests/fixtures/useragents/ai-robots-haproxy-block-ai-bots.txt"),
            true,
        ),
    );
    let path = dir.path().join("spoa-guard.toml");
    let config = Config::parse(&path, &toml, []).unwrap();
    let before = rss_kib().map_or(0, |(rss, _)| rss * 1024);
    let started = Instant::now();
    let engine = Engine::load(&config.rules, &path, None, None).unwrap();
    let elapsed = started.elapsed();
    let added = rss_kib()
        .map_or(0, |(rss, _)| rss * 1024)
        .saturating_sub(before);
    eprintln!(
        "engine/{label}: loaded in {:.0} ms, resident memory +{:.1} MiB ({})",
        elapsed.as_secs_f64() * 1e3,
        added as f64 / (1024.0 * 1024.0),
        engine.summary()
    );
    Setup { engine, _dir: dir }
}

/// Owned request data; a `Request` borrows from it.
struct Owned {
    src: IpAddr,
    ua: Option<String>,
    path: &'static str,
    method: &'static str,
}

/// 4096 requests: sources from the ASN tables' ranges (and some from the block lists),
/// user agents from real browsers (9 in 10) and bots, a few logins.
fn request_mix(block_lines: &[String]) -> Vec<Owned> {
    let manifest = Path::new(MANIFEST);
    let browsers = lines(&manifest.join("tests/fixtures/useragents/browsers-sample.txt"));
    let bots = lines(&manifest.join("tests/fixtures/useragents/bots-sample.txt"));
    let mut starts_v4 = Vec::new();
    let mut starts_v6 = Vec::new();
    for (file, v6) in [
        ("ip-location-db-asn-ipv4.csv.gz", false),
        ("ip-location-db-asn-ipv6.csv.gz", true),
    ] {
        let gz = std::fs::read(manifest.join("benches/data").join(file)).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text)
            .unwrap();
        for line in text.lines().step_by(97) {
            let start = line.split(',').next().unwrap_or_default();
            if v6 {
                starts_v6.extend(start.parse::<Ipv6Addr>().ok());
            } else {
                starts_v4.extend(start.parse::<Ipv4Addr>().ok());
            }
        }
    }
    let mut rng = Rng::new(7);
    (0..4096)
        .map(|_| {
            let roll = rng.below(100);
            let src = if roll < 5 && !block_lines.is_empty() {
                let entry = &block_lines[rng.below(block_lines.len())];
                let addr = entry.split(['/', ' ', ';', '#']).next().unwrap_or_default();
                addr.parse()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
            } else if roll < 15 {
                let base = u128::from(starts_v6[rng.below(starts_v6.len())]);
                IpAddr::V6(Ipv6Addr::from(base + u128::from(rng.next() as u16)))
            } else {
                let base = u32::from(starts_v4[rng.below(starts_v4.len())]);
                IpAddr::V4(Ipv4Addr::from(base.wrapping_add(rng.next() as u8 as u32)))
            };
            let ua = match rng.below(100) {
                0 => None,
                1..=9 => Some(bots[rng.below(bots.len())].clone()),
                _ => Some(browsers[rng.below(browsers.len())].clone()),
            };
            let (path, method) = match rng.below(20) {
                0 => ("/login", "POST"),
                1..=5 => ("/static/app.js", "GET"),
                _ => ("/", "GET"),
            };
            Owned {
                src,
                ua,
                path,
                method,
            }
        })
        .collect()
}

fn bench_decisions(c: &mut Criterion, label: &str, setup: &Setup, mix: &[Owned]) {
    bench_with_bans(c, label, setup, mix, None);
}

/// `Engine::evaluate` over `mix` (`bans` `None`: rules only, as `eval` does), or
/// `Engine::evaluate_in` with the bans of `bans` consulted, as the agent does.
fn bench_with_bans(
    c: &mut Criterion,
    label: &str,
    setup: &Setup,
    mix: &[Owned],
    bans: Option<&BanStore>,
) {
    let mut group = c.benchmark_group("decision");
    group.throughput(Throughput::Elements(1));
    group.bench_function(label, |b| {
        let mut i = 0usize;
        b.iter(|| {
            let o = &mix[i % mix.len()];
            i = i.wrapping_add(1);
            let request = Request {
                src: Some(o.src),
                method: Some(o.method.as_bytes()),
                path: Some(o.path.as_bytes()),
                host: Some(b"www.example.com"),
                ua: o.ua.as_deref().map(str::as_bytes),
                args: Default::default(),
            };
            let now = Instant::now();
            match bans {
                None => black_box(setup.engine.evaluate(black_box(&request), now)),
                Some(store) => {
                    let context = Context {
                        now,
                        unix_now: common::BAN_NOW + 30,
                        bans: Some(store),
                        dry_run_all: false,
                    };
                    black_box(setup.engine.evaluate_in(black_box(&request), &context))
                }
            }
        })
    });
    group.finish();
}

fn decisions(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    // ≈190k entries: real lists when available, else generated.
    let (label, block_files) = match std::env::var_os("SPOA_GUARD_DATA").map(PathBuf::from) {
        Some(data) => (
            "real_190k",
            [
                "firehol_level4.netset",
                "x4bnet-datacenter-ipv4.txt",
                "x4bnet-datacenter-ipv6.txt",
                "spamhaus-drop.txt",
                "spamhaus-dropv6.txt",
                "spamhaus-edrop-2023-12-01.txt",
            ]
            .iter()
            .map(|f| data.join("blocklists").join(f))
            .collect::<Vec<_>>(),
        ),
        None => {
            let path = dir.path().join("generated-190k.txt");
            write_random_list(&path, 190_000, 1);
            ("generated_190k", vec![path])
        }
    };
    let block_lines: Vec<String> = block_files.iter().flat_map(|p| lines(p)).collect();
    let mix = request_mix(&block_lines);
    let realistic = setup(label, block_files);
    bench_decisions(c, label, &realistic, &mix);
    // The ban step on the same requests: an empty store, and 100k bans (the sources of
    // the mix are not among them: every lookup is a miss, the common case).
    let empty = BanStore::new(1);
    bench_with_bans(
        c,
        &format!("{label}/bans_0"),
        &realistic,
        &mix,
        Some(&empty),
    );
    let banned = common::ban_store(&common::random_bans(100_000, 7));
    bench_with_bans(
        c,
        &format!("{label}/bans_100k"),
        &realistic,
        &mix,
        Some(&banned),
    );
    drop(realistic);

    let path = dir.path().join("generated-1m.txt");
    write_random_list(&path, 1_000_000, 2);
    let big_lines = lines(&path);
    let mix = request_mix(&big_lines);
    let big = setup("generated_1m", vec![path]);
    bench_decisions(c, "generated_1m", &big, &mix);
}

criterion_group!(benches, decisions);
criterion_main!(benches);
