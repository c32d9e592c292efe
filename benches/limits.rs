//! Rate-limit benchmarks: taking a token (`spoa_guard::limits`), against two baselines.
//!
//! - `take/hot_key/*`: one source over and over (the allowed path: time advances by
//!   1 µs per take at a rate of 10⁶/s).
//! - `take/cold_keys_{100k,1m}/*`: cycling through 100k / 1M random source addresses,
//!   all already tracked, so every take is a cache-missing lookup in a large map.
//! - `take/three_limits/ours`: what one request costs with three limits: `src`,
//!   `src+path` with `path_prefix = "/login"` and `methods = ["POST"]` (matching), and
//!   `global`; `applies` included, cold sources from a 100k set.
//! - `limit_count/{1,200}/{indexed,scan}`: one request against 1 limit (per client) and
//!   against that limit plus 199 limits on distinct path prefixes (`/api/v1/endpoint-N`)
//!   that the requests (`/`, `/static/app.js`, `/api/v1/items`, `/login`) never hit:
//!   `indexed` asks only the limits `Limits::candidates` finds, as the engine does;
//!   `scan` asks every limit whether it applies (the engine before issue 12). Target:
//!   200 limits ≥ 0.9 × one.
//! - `take/at_cap/ours`: a limit full at its 100k-key cap, every take a new source
//!   (the flood case: limited approximately in the overflow sketch).
//! - `retain_recent/{100k,1m}/ours`: one eviction pass over a limit with that many keys,
//!   none of them idle (the periodic task's cost).
//! - `ours-fleet` in the `take` groups: the same limit with `scope = "fleet"` (keys
//!   hashed with the fleet's key, a slot that also counts unreported tokens, the mark
//!   queue). Target: at most 50 ns more than `ours`.
//! - `fleet_sync/{10k,1m}`: what the fleet's sync task does per interval on this side
//!   of the network with that many keys active: collect the unreported counts, mark
//!   them reported, fold an answer back into each (the Redis round trip is measured by
//!   `benches/scripts/fleet.sh`).
//!
//! Baselines, all with explicit time like ours:
//!
//! - `governor`: governor 0.10's keyed limiter (`DashMapStateStore`, no key cap) with a
//!   clock that reads a thread-local set just before each `check_key`, keyed by the
//!   same kind of 64-bit SipHash of the address (the map then hashes nothing again).
//! - `naive`: `Mutex<HashMap<IpAddr, (tokens: f64, last: Instant)>>`, the textbook token
//!   bucket (pingora-limits' benches compare against the same kind of map).
//!
//! ```text
//! cargo bench --bench limits -- --warm-up-time 1 --measurement-time 3
//! ```

mod common;

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::BenchRng;
use criterion::{criterion_group, criterion_main, Criterion};
use governor::clock::Clock;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use spoa_guard::decision::Request;
use spoa_guard::decision::RuleName;
use spoa_guard::limits::{FleetLink, FleetSeed, Limit, Limits, Scope, Take};
use spoa_guard::limits::{KeySpec, LimitSpec as LimitConfig};

/// Tokens per second and burst of the benched limits: high enough that every take in
/// the `take` groups is allowed (the longer, writing path).
const RATE: f64 = 1e6;
const BURST: u32 = 1_000;

/// `n` distinct random IPv4 sources, in a random order.
fn sources(n: usize, seed: u64) -> Vec<IpAddr> {
    let mut rng = BenchRng::new(seed);
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let addr = (rng.next() >> 32) as u32;
        if seen.insert(addr) {
            out.push(IpAddr::V4(Ipv4Addr::from(addr)));
        }
    }
    out
}

fn config(name: &str, key: &str, max_keys: usize) -> LimitConfig {
    LimitConfig {
        key: KeySpec::parse(key).unwrap(),
        burst: Some(BURST),
        max_keys: Some(max_keys),
        ..LimitConfig::new(RuleName::new(name).unwrap(), RATE)
    }
}

fn request(src: IpAddr) -> Request<'static> {
    Request {
        src: Some(src),
        ..Request::default()
    }
}

/// A time that advances by 1 µs per call.
struct Ticker {
    start: Instant,
    micros: u64,
}

impl Ticker {
    fn new() -> Self {
        Ticker {
            start: Instant::now(),
            micros: 0,
        }
    }

    fn tick(&mut self) -> Instant {
        self.micros += 1;
        self.start + Duration::from_micros(self.micros)
    }
}

// ---- the alternatives ----

trait Limiter {
    fn take(&self, src: IpAddr, now: Instant) -> bool;
}

struct Ours(Limits);

impl Ours {
    fn new(max_keys: usize) -> Self {
        Ours(Limits::build(&[config("l", "src", max_keys)], None, None).unwrap())
    }

    /// The limit with `scope = "fleet"`, its marks going to a queue nobody reads (every
    /// take here is allowed: no mark is sent).
    fn fleet(max_keys: usize) -> Self {
        let (marks, receiver) = tokio::sync::mpsc::channel(16);
        std::mem::forget(receiver);
        let link = FleetLink {
            seed: FleetSeed::derive("bench", b"secret"),
            marks: Some(marks),
        };
        let spec = LimitConfig {
            scope: Scope::Fleet,
            ..config("l", "src", max_keys)
        };
        Ours(Limits::build(&[spec], None, Some(&link)).unwrap())
    }

    fn limit(&self) -> &Limit {
        self.0.iter().next().unwrap()
    }
}

impl Limiter for Ours {
    fn take(&self, src: IpAddr, now: Instant) -> bool {
        self.limit().take(&request(src), None, now) == Take::Allowed
    }
}

thread_local! {
    /// The `now` of the current `check_key` call on this thread, in nanoseconds.
    static NOW: Cell<u64> = const { Cell::new(0) };
}

/// governor's time source, made explicit: each thread sets its `now` before calling.
#[derive(Debug, Clone, Copy, Default)]
struct InjectedClock;

impl Clock for InjectedClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(NOW.with(Cell::get))
    }
}

/// The map's keys are already SipHash outputs.
#[derive(Default, Clone)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("u64 keys only")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type GovernorLimiter = RateLimiter<
    u64,
    DashMapStateStore<u64, BuildHasherDefault<Prehashed>>,
    InjectedClock,
    governor::middleware::NoOpMiddleware<Nanos>,
>;

struct Governor {
    limiter: GovernorLimiter,
    seed: RandomState,
    epoch: Instant,
}

impl Governor {
    fn new() -> Self {
        let period = Duration::from_secs_f64(1.0 / RATE);
        let quota = Quota::with_period(period)
            .unwrap()
            .allow_burst(NonZeroU32::new(BURST).unwrap());
        Governor {
            limiter: RateLimiter::dashmap_with_clock_and_hasher(
                quota,
                InjectedClock,
                BuildHasherDefault::default(),
            ),
            seed: RandomState::new(),
            epoch: Instant::now() - Duration::from_secs(86_400),
        }
    }
}

impl Limiter for Governor {
    fn take(&self, src: IpAddr, now: Instant) -> bool {
        let key = self.seed.hash_one(src);
        let nanos =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        NOW.with(|cell| cell.set(nanos));
        self.limiter.check_key(&key).is_ok()
    }
}

/// The textbook token bucket: tokens as a float, refilled from the elapsed time.
struct Naive(Mutex<HashMap<IpAddr, (f64, Instant)>>);

impl Limiter for Naive {
    fn take(&self, src: IpAddr, now: Instant) -> bool {
        let mut map = self.0.lock().unwrap();
        let (tokens, last) = map.entry(src).or_insert((f64::from(BURST), now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * RATE).min(f64::from(BURST));
        *last = (*last).max(now);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn alternatives() -> Vec<(&'static str, Box<dyn Limiter>)> {
    vec![
        ("ours", Box::new(Ours::new(2_000_000))),
        ("ours-fleet", Box::new(Ours::fleet(2_000_000))),
        ("governor", Box::new(Governor::new())),
        ("naive", Box::new(Naive(Mutex::new(HashMap::new())))),
    ]
}

// ---- benches ----

fn hot_key(c: &mut Criterion) {
    let mut group = c.benchmark_group("take/hot_key");
    let src: IpAddr = "192.0.2.7".parse().unwrap();
    for (name, limiter) in alternatives() {
        let mut time = Ticker::new();
        group.bench_function(name, |b| {
            b.iter(|| black_box(limiter.take(black_box(src), time.tick())))
        });
    }
    group.finish();
}

fn cold_keys(c: &mut Criterion) {
    for (label, n) in [("cold_keys_100k", 100_000), ("cold_keys_1m", 1_000_000)] {
        let mut group = c.benchmark_group(format!("take/{label}"));
        let sources = sources(n, 7);
        for (name, limiter) in alternatives() {
            let mut time = Ticker::new();
            for &src in &sources {
                assert!(limiter.take(src, time.tick()));
            }
            let mut next = sources.iter().copied().cycle();
            group.bench_function(name, |b| {
                b.iter(|| black_box(limiter.take(next.next().unwrap_or(sources[0]), time.tick())))
            });
        }
        group.finish();
    }
}

fn three_limits(c: &mut Criterion) {
    let configs = [
        config("per-client", "src", 500_000),
        LimitConfig {
            path_prefix: Some("/login".into()),
            methods: vec!["POST".into()],
            ..config("login", "src+path", 500_000)
        },
        config("all", "global", 500_000),
    ];
    let limits = Limits::build(&configs, None, None).unwrap();
    let sources = sources(100_000, 11);
    let login = |src| Request {
        method: Some(b"POST"),
        path: Some(b"/login/form"),
        ..request(src)
    };
    let mut time = Ticker::new();
    let take_all = |r: &Request<'_>, now| {
        let mut denied = 0;
        for limit in limits.iter() {
            if limit.applies(r) && matches!(limit.take(r, None, now), Take::Denied { .. }) {
                denied += 1;
            }
        }
        denied
    };
    for &src in &sources {
        take_all(&login(src), time.tick());
    }
    let mut next = sources.iter().copied().cycle();
    c.bench_function("take/three_limits/ours", |b| {
        b.iter(|| {
            black_box(take_all(
                &login(next.next().unwrap_or(sources[0])),
                time.tick(),
            ))
        })
    });
}

fn limit_count(c: &mut Criterion) {
    let mut group = c.benchmark_group("limit_count");
    let sources = sources(100_000, 23);
    let paths: [&[u8]; 4] = [b"/", b"/static/app.js", b"/api/v1/items", b"/login"];
    for n in [1, 200] {
        let mut configs = vec![config("per-client", "src", 500_000)];
        configs.extend((1..n).map(|i| LimitConfig {
            path_prefix: Some(format!("/api/v1/endpoint-{i}")),
            ..config(&format!("endpoint-{i}"), "src+path", 500_000)
        }));
        let limits = Limits::build(&configs, None, None).unwrap();
        let mut time = Ticker::new();
        let mut i = 0usize;
        let mut next_request = || {
            i = i.wrapping_add(1);
            Request {
                path: Some(paths[i % paths.len()]),
                ..request(sources[i % sources.len()])
            }
        };
        for _ in 0..sources.len() {
            let r = next_request();
            limits.iter().next().map(|l| l.take(&r, None, time.tick()));
        }
        group.bench_function(format!("{n}/indexed"), |b| {
            b.iter(|| {
                let r = next_request();
                let now = time.tick();
                let mut taken = 0;
                for position in limits.candidates(black_box(&r)) {
                    let limit = limits.get(position).unwrap();
                    if limit.applies(&r) && limit.take(&r, None, now) == Take::Allowed {
                        taken += 1;
                    }
                }
                black_box(taken)
            })
        });
        group.bench_function(format!("{n}/scan"), |b| {
            b.iter(|| {
                let r = next_request();
                let now = time.tick();
                let mut taken = 0;
                for limit in limits.iter() {
                    if limit.applies(black_box(&r)) && limit.take(&r, None, now) == Take::Allowed {
                        taken += 1;
                    }
                }
                black_box(taken)
            })
        });
    }
    group.finish();
}

fn at_cap(c: &mut Criterion) {
    let ours = Ours::new(100_000);
    let now = Instant::now();
    for &src in &sources(100_000, 13) {
        ours.take(src, now);
    }
    assert_eq!(ours.limit().key_count(), 100_000);
    let mut rng = BenchRng::new(17);
    c.bench_function("take/at_cap/ours", |b| {
        b.iter(|| {
            let src = IpAddr::V4(Ipv4Addr::from((rng.next() >> 32) as u32));
            black_box(ours.limit().take(&request(src), None, now))
        })
    });
}

fn retain_recent(c: &mut Criterion) {
    let mut group = c.benchmark_group("retain_recent");
    group.sample_size(20);
    for (label, n) in [("100k", 100_000), ("1m", 1_000_000)] {
        // A slow refill, so that nothing becomes idle during the bench: every pass walks
        // every key and keeps it.
        let limits = Limits::build(
            &[LimitConfig {
                rate: 0.001,
                burst: Some(1),
                ..config("l", "src", n)
            }],
            None,
            None,
        )
        .unwrap();
        let now = Instant::now();
        for &src in &sources(n, 19) {
            limits.iter().next().unwrap().take(&request(src), None, now);
        }
        assert_eq!(limits.key_count(), n);
        group.bench_function(format!("{label}/ours"), |b| {
            b.iter(|| limits.retain_recent(black_box(now)))
        });
        assert_eq!(limits.key_count(), n);
    }
    group.finish();
}

fn fleet_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("fleet_sync");
    group.sample_size(10);
    for (label, n) in [("10k", 10_000), ("1m", 1_000_000)] {
        let ours = Ours::fleet(2_000_000);
        let limit = ours.limit();
        let fleet = limit.fleet().unwrap();
        let sources = sources(n, 11);
        let mut time = Ticker::new();
        group.bench_function(label, |b| {
            b.iter_custom(|iterations| {
                let mut spent = Duration::ZERO;
                for _ in 0..iterations {
                    // Untimed: every key takes a token, so every key has one to report.
                    for &src in &sources {
                        limit.take(&request(src), None, time.tick());
                    }
                    let start = Instant::now();
                    let keys = fleet.unreported();
                    for &(key, count) in &keys {
                        fleet.reported(key, count);
                        fleet.fold(key, -1_000, start);
                    }
                    black_box(keys.len());
                    spent += start.elapsed();
                }
                spent
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    hot_key,
    cold_keys,
    three_limits,
    limit_count,
    at_cap,
    retain_recent,
    fleet_sync
);
criterion_main!(benches);
