//! Traffic-insight benchmarks (`spoa_guard::insight`): what [`Insight::record`] adds to
//! every request, and what the periodic aggregation and a `/top` report cost.
//!
//! The request mix (4096 requests, cycled): 20 % from 10 hot sources, 75 % from random
//! IPv4 sources, 5 % from random IPv6 ones; an ASN for 90 % of them; paths from a dozen
//! real-looking templates with ids; four hosts; user agents from real browsers (85 %) and
//! bots (`tests/fixtures/useragents/*-sample.txt`); 5 % denied. Time is virtual: request
//! `i` happens `i · spacing` after the start, and aggregation runs every virtual second,
//! outside the timed sections.
//!
//! - `record/baseline`: the loop alone (picking the request, computing its time): to be
//!   subtracted from the others.
//! - `record/every_request`: below the sample budget, every request is copied into the
//!   buffers (interval 1).
//! - `record/sampled_500k`: 500k requests/s against the default 20,000 samples/s: the
//!   475k allowed requests/s get half the budget (interval 48), the 25k denied ones the
//!   other half (interval 3), see `insight` "Per-request cost".
//! - `record/two_threads/{every_request,sampled_500k}`: the same from two threads at
//!   once (the machine's two CPUs); per request, the time each thread spent recording,
//!   in rounds of 50,000 requests per thread with aggregation between rounds.
//! - `aggregate/20k_samples`: draining one second of the full sample budget (20,000
//!   samples, 6 dimensions, 2 classes) into full summaries.
//! - `top/{1m,5m}`: a report of the top 10 of every dimension and class over 1 and 5
//!   minutes of the mix at 20,000 requests/s (every summary full).
//!
//! ```text
//! cargo bench --bench insight
//! ```
//!
//! Medians on the 2-vCPU VM of `BENCHMARKS.md` (2026-11-24, a quiet run; runs while
//! other builds ran came out up to 25 % higher):
//!
//! | bench | median |
//! |---|---|
//! | `record/baseline` | 3.5 ns |
//! | `record/every_request` | 39.2 ns (36 ns added) |
//! | `record/sampled_500k` | 8.4 ns (5 ns added) |
//! | `record/two_threads/every_request` | 43.2 ns |
//! | `record/two_threads/sampled_500k` | 8.4 ns |
//! | `aggregate/20k_samples` | 8.46 ms (423 ns a sample) |
//! | `top/1m`, `top/5m` | 0.20 ms, 1.07 ms |
//!
//! The set-up of `record/sampled_500k` shows the first second of a surge: at interval 1
//! the buffers fill within it (about 90 % of that second's requests are dropped from
//! the keys, counted in the totals) until the first aggregation adapts the interval.

mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::{lines, BenchRng};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use spoa_guard::insight::{Insight, InsightConfig, Observation};

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");
const MIX: usize = 4096;

/// One request of the mix, owning its strings.
struct Owned {
    src: IpAddr,
    asn: Option<u32>,
    path: String,
    host: &'static str,
    ua: String,
    denied: bool,
}

fn mix(seed: u64) -> Vec<Owned> {
    let fixtures = Path::new(MANIFEST).join("tests/fixtures/useragents");
    let browsers = lines(&fixtures.join("browsers-sample.txt"));
    let bots = lines(&fixtures.join("bots-sample.txt"));
    let mut rng = BenchRng::new(seed);
    let hot: Vec<IpAddr> = (0..10).map(|_| IpAddr::V4(rng.ipv4())).collect();
    let hosts = [
        "example.com",
        "www.example.com",
        "api.example.com",
        "static.example.com",
    ];
    let mut pick = |n: usize| rng.below(n as u64) as usize;
    let mut out = Vec::with_capacity(MIX);
    let mut rng2 = BenchRng::new(seed ^ 0xabcd);
    for _ in 0..MIX {
        let src = match pick(100) {
            0..=19 => hot[pick(hot.len())],
            20..=94 => IpAddr::V4(Ipv4Addr::from(rng2.next() as u32)),
            _ => IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8_u128 << 96) | u128::from(rng2.next()),
            )),
        };
        let id = pick(100_000);
        let path = match pick(12) {
            0 => "/".to_string(),
            1 => "/index.html".to_string(),
            2 => format!("/api/v1/items/{id}"),
            3 => format!("/api/v1/users/{id}/orders"),
            4 => format!("/static/js/app.{:08x}.js", id * 2_654_435_761 % 0xffff_ffff),
            5 => "/static/css/main.css".to_string(),
            6 => "/login".to_string(),
            7 => "/search".to_string(),
            8 => format!("/product/{id}/reviews"),
            9 => "/wp-login.php".to_string(),
            10 => format!("/blog/2024/{:02}/some-article-title-{id}", id % 12 + 1),
            _ => "/favicon.ico".to_string(),
        };
        let ua = if pick(100) < 85 {
            browsers[pick(browsers.len())].clone()
        } else {
            bots[pick(bots.len())].clone()
        };
        out.push(Owned {
            src,
            asn: (pick(10) != 0).then(|| 1_000 + pick(1_000) as u32),
            path,
            host: hosts[pick(hosts.len())],
            ua,
            denied: pick(100) < 5,
        });
    }
    out
}

fn observations(mix: &[Owned], now: Instant) -> Vec<Observation<'_>> {
    mix.iter()
        .map(|r| Observation {
            src: Some(r.src),
            asn: r.asn,
            path: Some(r.path.as_bytes()),
            host: Some(r.host.as_bytes()),
            ua: Some(r.ua.as_bytes()),
            denied: r.denied,
            now,
        })
        .collect()
}

/// Nanoseconds between two requests; `spacing * n` is the time of request `n`.
#[derive(Clone, Copy)]
struct Spacing(u64);

impl std::ops::Mul<u64> for Spacing {
    type Output = Duration;

    fn mul(self, n: u64) -> Duration {
        Duration::from_nanos(self.0 * n)
    }
}

/// An `Insight` fed in virtual time: request `n` at `t0 + n · spacing`, aggregation at
/// each virtual second (called by the benches between timed sections).
struct Driver {
    insight: Insight,
    t0: Instant,
    spacing: Spacing,
    /// Requests so far.
    n: u64,
    /// Requests at the last aggregation.
    aggregated_at: u64,
}

impl Driver {
    fn new(config: InsightConfig, requests_per_sec: u64) -> Driver {
        let t0 = Instant::now();
        Driver {
            insight: Insight::new(&config, t0).unwrap(),
            t0,
            spacing: Spacing(1_000_000_000 / requests_per_sec),
            n: 0,
            aggregated_at: 0,
        }
    }

    fn at(&self, n: u64) -> Instant {
        self.t0 + self.spacing * n
    }

    fn per_sec(&self) -> u64 {
        1_000_000_000 / self.spacing.0
    }

    /// Aggregates when a virtual second has passed since the last time.
    fn maybe_aggregate(&mut self) {
        if self.n - self.aggregated_at >= self.per_sec() {
            self.insight.aggregate(self.at(self.n));
            self.aggregated_at = self.n;
        }
    }

    /// Records `count` requests of `obs` untimed, aggregating every virtual second.
    fn feed(&mut self, obs: &[Observation<'_>], count: u64) {
        for _ in 0..count {
            let o = &obs[self.n as usize % MIX];
            self.insight.record(&Observation {
                now: self.at(self.n),
                ..*o
            });
            self.n += 1;
            self.maybe_aggregate();
        }
    }
}

fn default_config() -> InsightConfig {
    InsightConfig::default()
}

fn unsampled_config() -> InsightConfig {
    InsightConfig {
        samples_per_sec: 1 << 40,
        buffer_bytes: 256 << 20,
        ..InsightConfig::default()
    }
}

/// Times `iters` records on one thread, in batches of at most a virtual second with
/// aggregation between them (untimed).
fn timed_records(d: &mut Driver, obs: &[Observation<'_>], iters: u64, record: bool) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let batch = left.min(d.per_sec() - (d.n - d.aggregated_at)).max(1);
        let start = Instant::now();
        for i in d.n..d.n + batch {
            let o = Observation {
                now: d.at(i),
                ..obs[i as usize % MIX]
            };
            if record {
                d.insight.record(&o);
            } else {
                black_box(&o);
            }
        }
        elapsed += start.elapsed();
        d.n += batch;
        left -= batch;
        d.maybe_aggregate();
    }
    elapsed
}

fn record(c: &mut Criterion) {
    let owned = mix(1);
    let obs = observations(&owned, Instant::now());
    let mut group = c.benchmark_group("record");

    let mut d = Driver::new(unsampled_config(), 20_000);
    group.bench_function("baseline", |b| {
        b.iter_custom(|iters| timed_records(&mut d, &obs, iters, false))
    });

    let mut d = Driver::new(unsampled_config(), 20_000);
    group.bench_function("every_request", |b| {
        b.iter_custom(|iters| timed_records(&mut d, &obs, iters, true))
    });
    assert_eq!(
        d.insight
            .top(Duration::from_secs(10), 1, d.at(d.n))
            .sampling
            .interval,
        1
    );

    let mut d = Driver::new(default_config(), 500_000);
    d.feed(&obs, 2 * 500_000); // two virtual seconds, for the interval to adapt
    let report = d.insight.top(Duration::from_secs(10), 1, d.at(d.n));
    eprintln!("record/sampled_500k: {:?}", report.sampling);
    assert_eq!(
        (report.sampling.interval, report.sampling.interval_denied),
        (48, 3)
    );
    group.bench_function("sampled_500k", |b| {
        b.iter_custom(|iters| timed_records(&mut d, &obs, iters, true))
    });
    group.finish();
}

/// What the bench's main thread tells the two recording threads.
struct Control {
    /// Both threads and the main thread meet here before a round...
    start: Barrier,
    /// ... and here after it.
    end: Barrier,
    /// The number of the first request of the round.
    base: AtomicU64,
    /// Nanoseconds the threads spent recording, summed.
    nanos: AtomicU64,
    /// Set before a last `start` to end the threads.
    stop: AtomicBool,
}

/// Two threads recording at once, in rounds of `ROUND` requests each with aggregation
/// between rounds (every virtual second of both threads' requests). The threads live as
/// long as the bench, as tokio's workers do (a new thread starts on another shard, which
/// has no spare chunks yet); each times its own part of a round, so that waking it is
/// not counted, and the rounds are long enough (milliseconds) for the two parts to
/// overlap almost entirely.
fn two_threads(c: &mut Criterion) {
    const THREADS: u64 = 2;
    const ROUND: u64 = 50_000;
    let owned = mix(2);
    let mut group = c.benchmark_group("record/two_threads");
    for (name, config, rate) in [
        ("every_request", unsampled_config(), 20_000_u64),
        ("sampled_500k", default_config(), 500_000),
    ] {
        let mut d = Driver::new(config, rate);
        d.feed(&observations(&owned, d.t0), 2 * rate);
        let ctl = Control {
            start: Barrier::new(THREADS as usize + 1),
            end: Barrier::new(THREADS as usize + 1),
            base: AtomicU64::new(d.n),
            nanos: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        };
        let (insight, t0, spacing) = (&d.insight, d.t0, d.spacing);
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let (ctl, owned) = (&ctl, &owned);
                scope.spawn(move || {
                    let obs = observations(owned, t0);
                    loop {
                        ctl.start.wait();
                        if ctl.stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let started = Instant::now();
                        let first = ctl.base.load(Ordering::Relaxed);
                        for i in 0..ROUND {
                            let n = first + i * THREADS + t;
                            insight.record(&Observation {
                                now: t0 + spacing * n,
                                ..obs[n as usize % MIX]
                            });
                        }
                        let took = started.elapsed().as_nanos() as u64;
                        ctl.nanos.fetch_add(took, Ordering::Relaxed);
                        ctl.end.wait();
                    }
                });
            }
            let (mut n, mut aggregated_at) = (d.n, d.aggregated_at);
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let rounds = iters.div_ceil(ROUND * THREADS);
                    ctl.nanos.store(0, Ordering::Relaxed);
                    for _ in 0..rounds {
                        ctl.start.wait();
                        ctl.end.wait();
                        n += ROUND * THREADS;
                        ctl.base.store(n, Ordering::Relaxed);
                        if n - aggregated_at >= rate {
                            insight.aggregate(t0 + spacing * n);
                            aggregated_at = n;
                        }
                    }
                    // Thread time per request, scaled to the iterations asked for.
                    let per_request = ctl.nanos.load(Ordering::Relaxed) as f64
                        / (rounds * ROUND * THREADS) as f64;
                    Duration::from_nanos((per_request * iters as f64) as u64)
                })
            });
            ctl.stop.store(true, Ordering::Relaxed);
            ctl.start.wait();
        });
    }
    group.finish();
}

fn aggregate(c: &mut Criterion) {
    let owned = mix(3);
    let obs = observations(&owned, Instant::now());
    let mut group = c.benchmark_group("aggregate");
    // 20,000 requests a second, all sampled: one aggregation drains 20,000 samples.
    let mut d = Driver::new(default_config(), 20_000);
    d.feed(&obs, 60 * 20_000); // a minute, so that every summary is full
    let (insight, t0, spacing, mut n) = (&d.insight, d.t0, d.spacing, d.n);
    group.bench_function("20k_samples", |b| {
        b.iter_batched(
            || {
                // One virtual second of requests, not aggregated yet.
                for _ in 0..20_000 {
                    insight.record(&Observation {
                        now: t0 + spacing * n,
                        ..obs[n as usize % MIX]
                    });
                    n += 1;
                }
                t0 + spacing * n
            },
            |now| insight.aggregate(now),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn top(c: &mut Criterion) {
    let owned = mix(4);
    let obs = observations(&owned, Instant::now());
    let mut group = c.benchmark_group("top");
    let mut d = Driver::new(default_config(), 20_000);
    d.feed(&obs, 300 * 20_000);
    let now = d.at(d.n);
    d.insight.aggregate(now);
    eprintln!(
        "top: {} bytes held after 5 minutes at 20,000 requests/s",
        d.insight.memory_bytes()
    );
    for (name, window) in [("1m", 60), ("5m", 300)] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(d.insight.top(Duration::from_secs(window), 10, now)))
        });
    }
    group.finish();
}

criterion_group!(benches, record, two_threads, aggregate, top);
criterion_main!(benches);
