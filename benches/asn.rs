//! IP-to-ASN benchmarks: loading tables into an `AsnDb` (`rules::asn`) and looking
//! addresses up.
//!
//! - `asn_load/ip-location-db-v4+v6`: reading, decompressing, parsing and compiling the two
//!   full ip-location-db tables in `benches/data/` (412k IPv4 + 103k IPv6 rows) into one
//!   `AsnDb`, as a rule-set reload does.
//! - `asn_build/interval_map-v4` and `asn_build/interval_map-v6`: the compile step alone,
//!   `IntervalMap::build` over the same rows already parsed (sorted and disjoint, as these
//!   tables are), to tell parsing cost from build cost.
//! - `asn_lookup/{v4,v6}_{hit,miss}`: one lookup, cycling through 4096 pre-drawn addresses:
//!   hits are random addresses inside random rows of the tables, misses random addresses
//!   between the first and last row that no row covers.
//! - `asn_load/ip2asn-v6` and `asn_lookup/ip2asn-v6_hit`: only when `SPOA_GUARD_DATA` names
//!   the shared data directory (with `asn/ip2asn-v6.tsv.gz`): the iptoasn IPv6 table, whose
//!   168k rows nest and overlap.
//!
//! Before the benchmarks run, each table is loaded once more and the wall time, the number
//! of segments and the memory it took are printed: the resident set size (RSS) kept after
//! loading, and the peak RSS during the load, both relative to the RSS before, read from
//! `/proc/self/status` (Linux; elsewhere the memory figures are skipped).
//!
//! The addresses come from a fixed-seed generator (`common::BenchRng`), so every run
//! benches the same probes.
//!
//! ```text
//! cargo bench --bench asn
//! SPOA_GUARD_DATA=../shared/data cargo bench --bench asn
//! ```

mod common;

use std::hint::black_box;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{rss_kib, BenchRng};
use criterion::{BatchSize, Criterion};
use flate2::read::MultiGzDecoder;
use spoa_guard::rules::asn::AsnDb;
use spoa_guard::rules::interval::{IntervalMap, Range};

/// Addresses cycled through by each lookup bench.
const PROBES: usize = 4096;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data")
}

fn ip_location_db() -> [PathBuf; 2] {
    [
        data_dir().join("ip-location-db-asn-ipv4.csv.gz"),
        data_dir().join("ip-location-db-asn-ipv6.csv.gz"),
    ]
}

/// `$SPOA_GUARD_DATA/asn/ip2asn-v6.tsv.gz`, if it exists.
fn ip2asn_v6() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("SPOA_GUARD_DATA")?).join("asn/ip2asn-v6.tsv.gz");
    path.is_file().then_some(path)
}

fn load(paths: &[PathBuf]) -> AsnDb {
    match AsnDb::load(paths) {
        Ok(db) => db,
        Err(err) => panic!("loading {paths:?} failed:\n{err}"),
    }
}

/// The rows of a gzip-compressed ip-location-db CSV or iptoasn TSV table, as inclusive
/// integer ranges with their AS number: a throwaway parser for drawing probes, independent
/// of the one under test.
fn rows(path: &Path) -> Vec<(u128, u128, u32)> {
    let file = std::fs::File::open(path).unwrap();
    let reader = BufReader::new(MultiGzDecoder::new(file));
    let int = |s: &str| match s.parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    reader
        .lines()
        .map(|line| {
            let line = line.unwrap();
            let mut f = line.split([',', '\t']);
            let (s, e, asn) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            (int(s), int(e), asn.parse().unwrap())
        })
        .collect()
}

fn v4(a: u128) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::try_from(a).unwrap()))
}

fn v6(a: u128) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(a))
}

/// Addresses inside random rows with an AS number other than 0.
fn hits(rows: &[(u128, u128, u32)], addr: fn(u128) -> IpAddr, rng: &mut BenchRng) -> Vec<IpAddr> {
    let routed: Vec<_> = rows.iter().filter(|r| r.2 != 0).collect();
    (0..PROBES)
        .map(|_| {
            let r = routed[(rng.next() % routed.len() as u64) as usize];
            addr(rng.between(r.0, r.1))
        })
        .collect()
}

/// Addresses between the first and the last row that `db` has no AS number for.
fn misses(
    db: &AsnDb,
    rows: &[(u128, u128, u32)],
    addr: fn(u128) -> IpAddr,
    rng: &mut BenchRng,
) -> Vec<IpAddr> {
    let lo = rows.iter().map(|r| r.0).min().unwrap();
    let hi = rows.iter().map(|r| r.1).max().unwrap();
    let mut out = Vec::with_capacity(PROBES);
    while out.len() < PROBES {
        let a = addr(rng.between(lo, hi));
        if db.lookup(a).is_none() {
            out.push(a);
        }
    }
    out
}

/// Loads `paths` once and prints time, size and memory.
fn report(label: &str, paths: &[PathBuf]) {
    // Reset the peak-RSS counter so the peak is this load's (Linux >= 4.0; ignored elsewhere).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = rss_kib();
    let started = Instant::now();
    let db = load(paths);
    let took = started.elapsed();
    let after = rss_kib();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let memory = match (before, after) {
        (Some((rss0, _)), Some((rss1, peak))) => format!(
            ", RSS +{:.1} MiB kept, peak +{:.1} MiB during the load",
            mib(rss1.saturating_sub(rss0)),
            mib(peak.saturating_sub(rss0)),
        ),
        _ => String::new(),
    };
    println!(
        "asn load {label}: {:.0} ms, {} rows -> {} segments{memory}",
        took.as_secs_f64() * 1e3,
        db.rows(),
        db.ranges(),
    );
    black_box(db);
}

fn bench_load(c: &mut Criterion) {
    let mut group = c.benchmark_group("asn_load");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    let paths = ip_location_db();
    group.bench_function("ip-location-db-v4+v6", |b| {
        b.iter(|| load(black_box(&paths)))
    });
    if let Some(path) = ip2asn_v6() {
        let paths = [path];
        group.bench_function("ip2asn-v6", |b| b.iter(|| load(black_box(&paths))));
    }
    group.finish();
}

fn bench_build(c: &mut Criterion) {
    let [v4_path, v6_path] = ip_location_db();
    let ranges = |rows: Vec<(u128, u128, u32)>| -> Vec<Range<u128, u128, u32>> {
        rows.into_iter()
            .map(|(s, e, asn)| Range::new(s, e, e - s, asn))
            .collect()
    };
    let v4: Vec<Range<u32, u32, u32>> = ranges(rows(&v4_path))
        .into_iter()
        .map(|r| {
            let (s, e) = (
                u32::try_from(r.start).unwrap(),
                u32::try_from(r.end).unwrap(),
            );
            Range::new(s, e, e - s, r.value)
        })
        .collect();
    let v6 = ranges(rows(&v6_path));

    let mut group = c.benchmark_group("asn_build");
    group.sample_size(20);
    group.bench_function("interval_map-v4", |b| {
        b.iter_batched(|| v4.clone(), IntervalMap::build, BatchSize::LargeInput)
    });
    group.bench_function("interval_map-v6", |b| {
        b.iter_batched(|| v6.clone(), IntervalMap::build, BatchSize::LargeInput)
    });
    group.finish();
}

/// One lookup per iteration, cycling through `addrs`.
fn bench_lookups(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    db: &AsnDb,
    addrs: &[IpAddr],
) {
    let mut i = 0usize;
    group.bench_function(name, |b| {
        b.iter(|| {
            i = (i + 1) % addrs.len();
            db.lookup(black_box(addrs[i]))
        })
    });
}

fn bench_lookup(c: &mut Criterion) {
    let [v4_path, v6_path] = ip_location_db();
    let db = load(&ip_location_db());
    let (v4_rows, v6_rows) = (rows(&v4_path), rows(&v6_path));
    let mut rng = BenchRng::new(0x5eed_a5a5_0000_0001);
    let v4_hits = hits(&v4_rows, v4, &mut rng);
    let v4_misses = misses(&db, &v4_rows, v4, &mut rng);
    let v6_hits = hits(&v6_rows, v6, &mut rng);
    let v6_misses = misses(&db, &v6_rows, v6, &mut rng);
    // The probes are what they claim to be.
    assert!(v4_hits
        .iter()
        .chain(&v6_hits)
        .all(|&a| db.lookup(a).is_some()));

    let mut group = c.benchmark_group("asn_lookup");
    bench_lookups(&mut group, "v4_hit", &db, &v4_hits);
    bench_lookups(&mut group, "v4_miss", &db, &v4_misses);
    bench_lookups(&mut group, "v6_hit", &db, &v6_hits);
    bench_lookups(&mut group, "v6_miss", &db, &v6_misses);
    if let Some(path) = ip2asn_v6() {
        let db = load(std::slice::from_ref(&path));
        let hits: Vec<IpAddr> = hits(&rows(&path), v6, &mut rng)
            .into_iter()
            .filter(|&a| db.lookup(a).is_some())
            .collect();
        bench_lookups(&mut group, "ip2asn-v6_hit", &db, &hits);
    }
    group.finish();
}

fn main() {
    report("ip-location-db v4+v6 (csv.gz)", &ip_location_db());
    if let Some(path) = ip2asn_v6() {
        report("ip2asn-v6 (tsv.gz)", &[path]);
    } else {
        println!("asn: ip2asn-v6 skipped (set SPOA_GUARD_DATA to the shared data directory)");
    }
    let mut c = Criterion::default().configure_from_args();
    bench_load(&mut c);
    bench_build(&mut c);
    bench_lookup(&mut c);
    c.final_summary();
}
