//! Live reloads at full size: how long a reload takes, and what reloads do to decision
//! latency while they run.
//!
//! The rule set: a generated 1M-entry IPv4 CIDR block list (/24 to /32, about 1 % of the
//! address space, so that most requests go through every step as with real lists), the
//! full ip-location-db IPv4 + IPv6 ASN tables (`benches/data/`) with 900 blocked ASNs,
//! the example bad-bot and AI-crawler lists (`examples/lists/`) plus two inline
//! user-agent rules, and three rate limits set high enough never to deny. The list and
//! the configuration are written to a temporary directory.
//!
//! **Part 1, reload time.** [`Reloader::reload`] with [`Cause::Signal`], the code path of
//! SIGHUP and of a file change: read the configuration and every file on the blocking
//! pool, build the engine carrying the previous engine's rate-limit state, swap it in.
//! Timed `RELOAD_BENCH_RELOADS` times for the full set, the 1M list alone and the ASN
//! tables alone, next to the first load and the time to free an engine. Each reload runs
//! alone: the next starts once the old engine has been freed. With the full set, the
//! first decisions on each just-swapped engine are timed too (cold matcher caches).
//!
//! **Part 2, decision latency with and without reloads.** The real server
//! ([`server::run`] on 127.0.0.1:0, on a multi-threaded runtime with one worker per CPU
//! as `spoa-guard serve` builds it) and, each on its own thread like HAProxy's,
//! `RELOAD_BENCH_CONNECTIONS` SPOP clients that keep one NOTIFY in flight and send
//! `RELOAD_BENCH_RATE` per second (0: back to back), recording NOTIFY→ACK round trips.
//! A probe thread times `engine.load().evaluate()` alone, one call every
//! `RELOAD_BENCH_PROBE_US` µs. Phases of `RELOAD_BENCH_PHASE_SECS` alternate,
//! `RELOAD_BENCH_ROUNDS` times: `idle` (no reload) and `reloading` (a task on the
//! server's runtime reloads back to back for the whole phase: the worst case).
//! `RELOAD_BENCH_PHASES=idle,reloading,hog` adds a control phase in which a thread only
//! spins, to tell CPU contention from anything reload-specific. Nothing is recorded for
//! half a second between phases, so the last old engine is freed before an idle phase.
//!
//! Every phase also reports how much CPU other processes and the hypervisor took (the
//! shared VM this runs on is noisy: phases where they took over `RELOAD_BENCH_MAX_OTHERS`
//! % are left out of a second, "clean" summary) and how long the server's workers and
//! the client threads waited for a CPU (`/proc/self/task/*/schedstat`).
//!
//! Other knobs: `RELOAD_BENCH_PART=1|2` (one part only), `RELOAD_BENCH_LIST` (entries),
//! `RELOAD_BENCH_MIN_PREFIX` (16 gives the /16–/32 list of `benches/engine.rs`, which
//! covers most of the address space), `RELOAD_BENCH_RELOAD_NICE` (experiment: build
//! engines on threads at that nice value).
//!
//! ```text
//! cargo bench --bench reload                                  # about 95 s
//! RELOAD_BENCH_PHASE_SECS=20 RELOAD_BENCH_ROUNDS=3 cargo bench --bench reload
//! RELOAD_BENCH_PART=2 RELOAD_BENCH_RATE=0 RELOAD_BENCH_PHASES=idle,reloading,hog \
//!     cargo bench --bench reload                              # saturating, with control
//! ```
//!
//! Without `--bench` (`cargo test --benches`) it runs a smoke test with a 20k list and
//! sub-second phases.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use bytes::Bytes;
use common::{asn_range_starts, lines, write_random_ipv4_list, BenchRng, CpuShares, CpuTimes};
use hdrhistogram::Histogram;
use spoa_guard::agent::Agent;
use spoa_guard::config::Config;
use spoa_guard::decision::Request;
use spoa_guard::engine::Engine;
use spoa_guard::reload::{Cause, Outcome, Reloader, Stamps};
use spoa_guard::server::{self, Listener, Service};
use spoa_guard::spop::client::Client;
use spoa_guard::spop::{Action, Arg, Message, TypedData};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// Settings, from the environment (`RELOAD_BENCH_*`).
struct Knobs {
    /// A real run (`--bench`), not the smoke test.
    bench: bool,
    /// Which parts run: `RELOAD_BENCH_PART=1`, `2`, or both (the default).
    part1: bool,
    part2: bool,
    /// Entries in the generated block list.
    list_size: usize,
    /// Shortest prefix in it (the longest is /32).
    min_prefix: u8,
    /// Timed reloads per rule set in part 1.
    reloads: usize,
    /// Length of one phase in part 2.
    phase: Duration,
    /// How many times the phase sequence runs.
    rounds: usize,
    /// The phase sequence of one round.
    kinds: Vec<Kind>,
    /// SPOP connections, one NOTIFY in flight each.
    connections: usize,
    /// NOTIFYs per second per connection; 0 sends the next as soon as the ACK is in.
    rate: u32,
    /// Pause between two calls of the engine-only probe.
    probe_every: Duration,
    /// Nice value of the threads that build engines in part 2 (0: as the server runs).
    reload_nice: i32,
    /// Phases in which other processes and the hypervisor (steal) took more of the CPUs
    /// than this (percent) are left out of the "clean" summary.
    max_others: f64,
    /// Unrecorded traffic before the first phase, and quiet time between phases.
    warm_up: Duration,
    settle: Duration,
}

impl Knobs {
    fn from_env() -> Knobs {
        // `cargo bench` passes --bench; `cargo test --benches` does not: a smoke run.
        let bench = std::env::args().any(|a| a == "--bench");
        let num = |name: &str, bench_default: f64, smoke_default: f64| -> f64 {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?}: not a number")),
                Err(_) if bench => bench_default,
                Err(_) => smoke_default,
            }
        };
        let kinds = std::env::var("RELOAD_BENCH_PHASES")
            .unwrap_or_else(|_| "idle,reloading".into())
            .split(',')
            .map(|k| match k.trim() {
                "idle" => Kind::Idle,
                "reloading" => Kind::Reloading,
                "hog" => Kind::Hog,
                other => panic!("RELOAD_BENCH_PHASES: unknown phase {other:?}"),
            })
            .collect();
        let part = std::env::var("RELOAD_BENCH_PART").unwrap_or_default();
        Knobs {
            bench,
            part1: part != "2",
            part2: part != "1",
            list_size: num("RELOAD_BENCH_LIST", 1_000_000.0, 20_000.0) as usize,
            min_prefix: num("RELOAD_BENCH_MIN_PREFIX", 24.0, 24.0) as u8,
            reloads: num("RELOAD_BENCH_RELOADS", 10.0, 1.0) as usize,
            phase: Duration::from_secs_f64(num("RELOAD_BENCH_PHASE_SECS", 6.0, 0.3)),
            rounds: num("RELOAD_BENCH_ROUNDS", 4.0, 1.0) as usize,
            kinds,
            connections: num("RELOAD_BENCH_CONNECTIONS", 2.0, 1.0) as usize,
            rate: num("RELOAD_BENCH_RATE", 2000.0, 2000.0) as u32,
            probe_every: Duration::from_micros(num("RELOAD_BENCH_PROBE_US", 200.0, 200.0) as u64),
            reload_nice: num("RELOAD_BENCH_RELOAD_NICE", 0.0, 0.0) as i32,
            max_others: num("RELOAD_BENCH_MAX_OTHERS", 10.0, 100.0),
            warm_up: Duration::from_secs_f64(if bench { 1.0 } else { 0.1 }),
            settle: Duration::from_secs_f64(if bench { 0.5 } else { 0.1 }),
        }
    }
}

/// What runs during a phase of part 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Traffic only.
    Idle,
    /// Traffic while reloads run back to back.
    Reloading,
    /// Traffic while a thread spins (control: CPU contention alone).
    Hog,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Idle => "idle",
            Kind::Reloading => "reloading",
            Kind::Hog => "hog",
        }
    }
}

fn main() {
    let knobs = Knobs::from_env();
    let dir = tempfile::tempdir().unwrap();
    let files = RuleFiles::write(dir.path(), knobs.list_size, knobs.min_prefix);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("server-rt")
        .build()
        .unwrap();
    // The workers start with the runtime; blocking-pool threads (same name) come later.
    std::thread::sleep(Duration::from_millis(50));
    let workers = threads_named("server-rt");
    println!(
        "reload bench: {} CPUs, {} tokio workers, {} block-list entries (/{} to /32)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        workers.len(),
        knobs.list_size,
        knobs.min_prefix,
    );
    // The numbers mean little if something else keeps the CPUs busy: say so.
    let before = CpuTimes::now();
    std::thread::sleep(Duration::from_secs(1));
    let quiet = CpuTimes::now().since(&before);
    println!(
        "before starting: other processes used {:.0} % of the CPUs, {:.0} % stolen",
        quiet.others, quiet.steal
    );

    let full = files.config(dir.path(), "full", true, true, true);
    let messages = Arc::new(request_mix(&files.block, 4096));
    if knobs.part1 {
        println!("\n== Part 1: reload time (Reloader::reload, Cause::Signal; each reload alone)");
        let list = format!("{} list", count(knobs.list_size));
        let mut sets = vec![(format!("{list} + ASN + UA + limits"), full.clone())];
        if knobs.bench {
            sets.push((
                format!("{list} alone"),
                files.config(dir.path(), "list", true, false, false),
            ));
            sets.push((
                "ASN tables alone".into(),
                files.config(dir.path(), "asn", false, true, false),
            ));
        }
        for (i, (label, config)) in sets.iter().enumerate() {
            // Decisions after a swap only with the full set (it has the user-agent rules).
            let mix: &[Message] = if i == 0 { &messages } else { &[] };
            reload_times(&runtime, label, config, knobs.reloads, mix);
        }
    }
    if knobs.part2 {
        println!(
            "\n== Part 2: decision latency, {} connection(s) at {} NOTIFY/s each \
             (0: back to back), engine probe every {} µs, phases of {:.1} s",
            knobs.connections,
            knobs.rate,
            knobs.probe_every.as_micros(),
            knobs.phase.as_secs_f64()
        );
        latency(&runtime, &workers, &full, &knobs, messages);
    }
}

/// The rule files, written once and shared by every configuration.
struct RuleFiles {
    block: PathBuf,
    asn_block: PathBuf,
}

impl RuleFiles {
    fn write(dir: &Path, list_size: usize, min_prefix: u8) -> RuleFiles {
        let block = dir.join("block.txt");
        write_random_ipv4_list(&block, list_size, min_prefix..=32, 2);
        let asn_block = dir.join("asn-block.txt");
        // Spread over the AS number space; most are real, routed ASNs (as benches/engine.rs).
        let asns: String = (1..=900u32)
            .map(|asn| format!("AS{}\n", asn * 73 + 1000))
            .collect();
        std::fs::write(&asn_block, asns).unwrap();
        RuleFiles { block, asn_block }
    }

    /// Writes `<name>.toml` with the parts asked for and returns its path.
    fn config(&self, dir: &Path, name: &str, list: bool, asn: bool, rest: bool) -> PathBuf {
        let manifest = Path::new(MANIFEST);
        let mut toml = String::from(
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [reload]\nwatch = false\npoll_secs = 0\n",
        );
        if list {
            toml += &format!(
                "[lists]\nblock = [{:?}]\n",
                self.block.display().to_string()
            );
        }
        if asn {
            let table = |f: &str| manifest.join("benches/data").join(f).display().to_string();
            toml += &format!(
                "[asn]\ndatabases = [{:?}, {:?}]\nblock_file = {:?}\n",
                table("ip-location-db-asn-ipv4.csv.gz"),
                table("ip-location-db-asn-ipv6.csv.gz"),
                self.asn_block.display().to_string()
            );
        }
        if rest {
            let lists = manifest.join("examples/lists");
            toml += &common::ua_and_limit_rules(
                &lists.join("bad-user-agents.list"),
                &lists.join("ai-crawlers.txt"),
                false,
            );
        }
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, toml).unwrap();
        path
    }
}

/// Loads `path` the way `spoa-guard serve` does: stamps, configuration, engine.
fn first_load(path: &Path) -> (Config, Stamps, Engine) {
    let stamps = Stamps::of(&[path]);
    let config = Config::load(path).unwrap();
    let stamps = stamps.extended_to(&config.files());
    let engine = Engine::load(&config.rules, &config.path, None).unwrap();
    (config, stamps, engine)
}

/// `1M`, `20k`, or the number.
fn count(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(sorted: &[Duration]) -> Duration {
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

/// Part 1 for one configuration.
fn reload_times(runtime: &Runtime, label: &str, path: &Path, reloads: usize, mix: &[Message]) {
    let cpu = CpuTimes::now();
    let started = Instant::now();
    let (_, _, engine) = first_load(path);
    let initial = started.elapsed();
    let started = Instant::now();
    drop(engine);
    let free = started.elapsed();

    let (config, stamps, engine) = first_load(path);
    let summary = engine.summary().to_string();
    let shared = Arc::new(Agent::with_engine(engine));
    let mut reloader = Reloader::new(config, stamps, shared.clone());
    // Decisions on a just-swapped engine, by a thread that used the previous one (as a
    // worker would): the first pass over the mix and the second.
    let mut passes = [Recorder::histogram(), Recorder::histogram()];
    let mut first_calls = Vec::with_capacity(reloads);
    let mut times: Vec<Duration> = runtime.block_on(async {
        let mut times = Vec::with_capacity(reloads);
        for _ in 0..reloads {
            let old = Arc::downgrade(&shared.engine());
            let started = Instant::now();
            expect_applied(reloader.reload(Cause::Signal).await);
            times.push(started.elapsed());
            for (pass, hist) in passes.iter_mut().enumerate() {
                for (i, message) in mix.iter().enumerate() {
                    let request = Request::from_message(message);
                    let started = Instant::now();
                    black_box(shared.in_force().engine.evaluate(&request, started));
                    let nanos = started.elapsed().as_nanos() as u64;
                    hist.saturating_record(nanos.max(1));
                    if pass == 0 && i == 0 {
                        first_calls.push(Duration::from_nanos(nanos));
                    }
                }
            }
            // Let the old engine be freed (on the blocking pool) before the next one.
            while old.strong_count() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(free * 2 + Duration::from_millis(20)).await;
        }
        times
    });
    times.sort();
    println!("{label}: {summary}");
    println!(
        "  first load {:.0} ms; reload ×{}: median {:.0} ms, min {:.0}, max {:.0}; freeing an engine {:.1} ms",
        ms(initial),
        times.len(),
        ms(median(&times)),
        ms(times.first().copied().unwrap_or_default()),
        ms(times.last().copied().unwrap_or_default()),
        ms(free),
    );
    if !mix.is_empty() {
        first_calls.sort();
        println!(
            "  decisions right after a swap, µs: first call median {:.1}, max {:.1}; first pass \
             over {} requests p99 {:.1}, p99.9 {:.1}, max {:.1}; second pass p99 {:.1}, \
             p99.9 {:.1}, max {:.1}",
            median(&first_calls).as_secs_f64() * 1e6,
            first_calls
                .last()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e6,
            mix.len(),
            us(passes[0].value_at_quantile(0.99)),
            us(passes[0].value_at_quantile(0.999)),
            us(passes[0].max()),
            us(passes[1].value_at_quantile(0.99)),
            us(passes[1].value_at_quantile(0.999)),
            us(passes[1].max()),
        );
    }
    let cpu = CpuTimes::now().since(&cpu);
    println!(
        "  meanwhile other processes used {:.0} % of the CPUs, {:.0} % stolen",
        cpu.others, cpu.steal
    );
}

fn expect_applied(outcome: Outcome) {
    if let Outcome::Failed { errors } = outcome {
        panic!("reload failed: {errors:?}");
    }
}

/// Which phase samples go to; switched by the coordinator, read by every recorder.
struct Recorder {
    slot: AtomicUsize,
    done: AtomicBool,
    phases: usize,
}

const OFF: usize = usize::MAX;

impl Recorder {
    fn new(phases: usize) -> Recorder {
        Recorder {
            slot: AtomicUsize::new(OFF),
            done: AtomicBool::new(false),
            phases,
        }
    }

    /// An empty histogram: nanoseconds, 1 ns to 60 s, 3 significant digits.
    fn histogram() -> Histogram<u64> {
        Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
    }

    /// One empty histogram per phase.
    fn histograms(&self) -> Vec<Histogram<u64>> {
        (0..self.phases).map(|_| Recorder::histogram()).collect()
    }

    fn slot(&self) -> usize {
        self.slot.load(Ordering::Acquire)
    }

    /// Records `nanos` in the phase that was current when the sample started, if it
    /// still is (samples straddling a phase change are dropped).
    fn record(&self, hists: &mut [Histogram<u64>], slot: usize, nanos: u64) {
        if slot != OFF && self.slot() == slot {
            hists[slot].saturating_record(nanos.max(1));
        }
    }

    fn done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// What one measuring thread saw.
struct Samples {
    hists: Vec<Histogram<u64>>,
    sent: u64,
    denied: u64,
}

/// One phase as it ran.
struct PhaseRun {
    kind: Kind,
    elapsed: Duration,
    cpu: CpuShares,
    /// Time spent runnable but waiting for a CPU, per second of the phase, by the
    /// server's workers and by the client and probe threads.
    waits: (Duration, Duration),
    /// Durations of the reloads that ran in it.
    reloads: Vec<Duration>,
}

/// Part 2.
fn latency(
    runtime: &Runtime,
    workers: &[u32],
    path: &Path,
    knobs: &Knobs,
    messages: Arc<Vec<Message>>,
) {
    let (config, stamps, engine) = first_load(path);
    let listener = {
        let _guard = runtime.enter();
        let server = &config.startup.server;
        Listener::bind(&server.listen, server.backlog()).unwrap()
    };
    let addr = listener.local_addr().unwrap();
    let shared = Arc::new(Agent::with_engine(engine));
    let shutdown = CancellationToken::new();
    let service = Arc::new(Service::new(shared.clone(), &config.startup.server));
    let server = runtime.spawn(server::run(
        listener,
        service,
        config.startup.server.max_connections,
        shutdown.clone(),
        Duration::from_secs(5),
    ));
    let mut reloader = Some(Reloader::new(config, stamps, shared.clone()));
    // RELOAD_BENCH_RELOAD_NICE: reloads on a runtime of their own whose blocking
    // threads (where the engine is built and the old one freed) run at that nice value.
    let low_priority = (knobs.reload_nice != 0).then(|| {
        let nice = knobs.reload_nice;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_start(move || renice_this_thread(nice))
            .build()
            .unwrap()
    });

    let phases: Vec<Kind> = (0..knobs.rounds)
        .flat_map(|_| knobs.kinds.iter().copied())
        .collect();
    let recorder = Arc::new(Recorder::new(phases.len()));
    let clients: Vec<_> = (0..knobs.connections)
        .map(|c| {
            let (messages, recorder, rate) = (messages.clone(), recorder.clone(), knobs.rate);
            std::thread::Builder::new()
                .name(format!("client-{c}"))
                .spawn(move || run_client(addr, &messages, c * 997, rate, &recorder))
                .unwrap()
        })
        .collect();
    let probe = {
        let (shared, messages, recorder) = (shared.clone(), messages.clone(), recorder.clone());
        let every = knobs.probe_every;
        std::thread::Builder::new()
            .name("probe".into())
            .spawn(move || run_probe(&shared, &messages, every, &recorder))
            .unwrap()
    };

    std::thread::sleep(knobs.warm_up);
    let clients_and_probe = [threads_named("client-"), threads_named("probe")].concat();
    let mut runs = Vec::with_capacity(phases.len());
    for (slot, &kind) in phases.iter().enumerate() {
        recorder.slot.store(slot, Ordering::Release);
        let cpu = CpuTimes::now();
        let waited = (run_queue_wait(workers), run_queue_wait(&clients_and_probe));
        let started = Instant::now();
        let end = started + knobs.phase;
        let mut reloads = Vec::new();
        match kind {
            Kind::Idle => std::thread::sleep(knobs.phase),
            Kind::Reloading => {
                let mut r = reloader.take().unwrap();
                let work = async move {
                    let mut times = Vec::new();
                    while Instant::now() < end {
                        let started = Instant::now();
                        expect_applied(r.reload(Cause::Signal).await);
                        times.push(started.elapsed());
                    }
                    (r, times)
                };
                // As in `spoa-guard serve`: a task on the server's runtime, whose
                // blocking pool builds the engine; or the low-priority experiment.
                let (r, times) = match &low_priority {
                    None => runtime.block_on(runtime.spawn(work)).unwrap(),
                    Some(other) => other.block_on(work),
                };
                reloader = Some(r);
                reloads = times;
            }
            Kind::Hog => {
                let hog = std::thread::Builder::new().name("hog".into());
                hog.spawn(move || {
                    let mut x = 0u64;
                    while Instant::now() < end {
                        for _ in 0..1000 {
                            x = black_box(
                                x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1),
                            );
                        }
                    }
                })
                .unwrap()
                .join()
                .unwrap();
            }
        }
        let elapsed = started.elapsed();
        recorder.slot.store(OFF, Ordering::Release);
        runs.push(PhaseRun {
            kind,
            elapsed,
            cpu: CpuTimes::now().since(&cpu),
            waits: (
                (run_queue_wait(workers) - waited.0).div_f64(elapsed.as_secs_f64()),
                (run_queue_wait(&clients_and_probe) - waited.1).div_f64(elapsed.as_secs_f64()),
            ),
            reloads,
        });
        std::thread::sleep(knobs.settle);
    }
    recorder.done.store(true, Ordering::Release);
    let clients: Vec<Samples> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let probe = probe.join().unwrap();
    shutdown.cancel();
    runtime.block_on(server).unwrap();

    let mut rtt = recorder.histograms();
    for c in &clients {
        for (all, one) in rtt.iter_mut().zip(&c.hists) {
            all.add(one).unwrap();
        }
    }
    let sent: u64 = clients.iter().map(|c| c.sent).sum();
    let denied: u64 = clients.iter().map(|c| c.denied).sum();
    println!(
        "{sent} NOTIFYs, {:.1} % denied (block list, blocked ASNs, bad bots)",
        100.0 * denied as f64 / sent.max(1) as f64
    );
    report("NOTIFY→ACK round trip", &runs, &rtt, knobs);
    report(
        "engine only: engine.load().evaluate()",
        &runs,
        &probe.hists,
        knobs,
    );
    let mut during: Vec<Duration> = runs.iter().flat_map(|r| r.reloads.clone()).collect();
    during.sort();
    if !during.is_empty() {
        println!(
            "reloads during the reloading phases: {}, median {:.0} ms, max {:.0} ms",
            during.len(),
            ms(median(&during)),
            ms(during.last().copied().unwrap_or_default())
        );
    }
    black_box(probe.sent + probe.denied);
}

/// Ids of this process's threads whose name starts with `prefix`.
fn threads_named(prefix: &str) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let task = task.ok()?;
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            comm.starts_with(prefix)
                .then(|| task.file_name().to_str()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// Total time `tids` have spent runnable but waiting for a CPU (the second field of
/// `/proc/self/task/<tid>/schedstat`, Linux).
fn run_queue_wait(tids: &[u32]) -> Duration {
    let nanos: u64 = tids
        .iter()
        .filter_map(|tid| {
            let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
            stat.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum();
    Duration::from_nanos(nanos)
}

/// Sets the nice value of the calling thread (Linux: `renice` on its thread id).
fn renice_this_thread(nice: i32) {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok())
        .expect("thread id from /proc/thread-self");
    let status = std::process::Command::new("renice")
        .args(["-n", &nice.to_string(), "-p", &tid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running renice");
    assert!(status.success(), "renice {nice} {tid}: {status}");
}

fn us(nanos: u64) -> f64 {
    nanos as f64 / 1e3
}

/// Prints one line per phase, the phases of each kind merged, and the p99 ratios.
fn report(title: &str, runs: &[PhaseRun], hists: &[Histogram<u64>], knobs: &Knobs) {
    println!("\n{title}, µs");
    println!(
        "  {:<15} {:>5} {:>7} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8} {:>5}   CPU % ours/others/steal; \
         waiting for a CPU, ms/s: workers, clients",
        "phase", "secs", "reloads", "samples", "p50", "p90", "p99", "p99.9", "max", ">1ms"
    );
    let line = |name: &str,
                secs: f64,
                reloads: usize,
                h: &Histogram<u64>,
                run: Option<&PhaseRun>| {
        let cpu = run.map_or(String::new(), |r| {
            let (c, (workers, clients)) = (r.cpu, r.waits);
            format!(
                "   {:.0} / {:.0} / {:.0}; {:.1}, {:.1}",
                c.own,
                c.others,
                c.steal,
                ms(workers),
                ms(clients)
            )
        });
        println!(
            "  {name:<15} {secs:>5.1} {reloads:>7} {:>8} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>8.1} {:>5}{cpu}",
            h.len(),
            us(h.value_at_quantile(0.5)),
            us(h.value_at_quantile(0.9)),
            us(h.value_at_quantile(0.99)),
            us(h.value_at_quantile(0.999)),
            us(h.max()),
            h.count_between(1_000_000, u64::MAX),
        );
    };
    for (i, (run, h)) in runs.iter().zip(hists).enumerate() {
        let round = i / knobs.kinds.len() + 1;
        let name = format!("{} {round}", run.kind.as_str());
        line(
            &name,
            run.elapsed.as_secs_f64(),
            run.reloads.len(),
            h,
            Some(run),
        );
    }
    let merged = |kind: Kind, max_others: f64| {
        let mut all = Recorder::histogram();
        let (mut secs, mut reloads) = (0.0, 0);
        for (run, h) in runs.iter().zip(hists) {
            if run.kind == kind && run.cpu.others + run.cpu.steal <= max_others {
                all.add(h).unwrap();
                secs += run.elapsed.as_secs_f64();
                reloads += run.reloads.len();
            }
        }
        (all, secs, reloads)
    };
    let noisy = runs
        .iter()
        .filter(|r| r.cpu.others + r.cpu.steal > knobs.max_others)
        .count();
    let mut summaries = vec![("all", f64::INFINITY)];
    if noisy > 0 {
        println!(
            "  {noisy} phase(s) where others + steal took more than {:.0} % of the CPUs: \
             \"clean\" leaves them out",
            knobs.max_others
        );
        summaries.push(("clean", knobs.max_others));
    }
    for (prefix, max_others) in summaries {
        let (idle, _, _) = merged(Kind::Idle, max_others);
        for kind in [Kind::Idle, Kind::Reloading, Kind::Hog] {
            let (all, secs, reloads) = merged(kind, max_others);
            if all.is_empty() {
                continue;
            }
            line(
                &format!("{prefix} {}", kind.as_str()),
                secs,
                reloads,
                &all,
                None,
            );
            if kind != Kind::Idle && !idle.is_empty() {
                println!(
                    "    {prefix}: p99 {} / p99 idle = {:.2}, p99.9 ratio {:.2}, p50 ratio {:.2}",
                    kind.as_str(),
                    ratio(&all, &idle, 0.99),
                    ratio(&all, &idle, 0.999),
                    ratio(&all, &idle, 0.5),
                );
            }
        }
    }
}

fn ratio(a: &Histogram<u64>, b: &Histogram<u64>, quantile: f64) -> f64 {
    a.value_at_quantile(quantile) as f64 / b.value_at_quantile(quantile).max(1) as f64
}

/// One SPOP connection on its own thread (like a HAProxy thread), one NOTIFY in flight.
fn run_client(
    addr: SocketAddr,
    messages: &[Message],
    first: usize,
    rate: u32,
    recorder: &Recorder,
) -> Samples {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = Client::connect(addr).await.expect("connect");
        let mut samples = Samples {
            hists: recorder.histograms(),
            sent: 0,
            denied: 0,
        };
        let interval = (rate > 0).then(|| Duration::from_secs_f64(1.0 / f64::from(rate)));
        let mut next = Instant::now();
        let mut i = first;
        while !recorder.done() {
            if let Some(interval) = interval {
                // A fixed schedule; after a stall, carry on from now rather than burst.
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else if now - next > interval {
                    next = now;
                }
                next += interval;
            }
            let message = messages[i % messages.len()].clone();
            i += 1;
            let slot = recorder.slot();
            let started = Instant::now();
            let actions = client
                .notify(i as u64, 1, vec![message])
                .await
                .expect("NOTIFY");
            let nanos = started.elapsed().as_nanos() as u64;
            recorder.record(&mut samples.hists, slot, nanos);
            samples.sent += 1;
            samples.denied += u64::from(is_deny(&actions));
        }
        samples
    })
}

fn is_deny(actions: &[Action]) -> bool {
    actions.iter().any(|a| {
        matches!(a, Action::SetVar { name, value: TypedData::String(v), .. }
            if name.as_ref() == b"action" && v.as_ref() == b"deny")
    })
}

/// The engine alone, as a connection calls it, one call every `every`.
fn run_probe(
    shared: &Agent,
    messages: &[Message],
    every: Duration,
    recorder: &Recorder,
) -> Samples {
    let mut samples = Samples {
        hists: recorder.histograms(),
        sent: 0,
        denied: 0,
    };
    let mut i = 0;
    while !recorder.done() {
        let request = Request::from_message(&messages[i % messages.len()]);
        i += 1;
        let slot = recorder.slot();
        let started = Instant::now();
        let verdict = shared.in_force().engine.evaluate(&request, started);
        let nanos = started.elapsed().as_nanos() as u64;
        recorder.record(&mut samples.hists, slot, nanos);
        samples.sent += 1;
        samples.denied += u64::from(black_box(verdict).status().is_some());
        std::thread::sleep(every);
    }
    samples
}

/// `n` guard-check messages: sources drawn from the ASN tables' ranges (85 % IPv4, 10 %
/// IPv6) and from the block list (5 %); user agents from real browsers (9 in 10), bots,
/// and none; a few login POSTs. Fixed seed.
fn request_mix(block: &Path, n: usize) -> Vec<Message> {
    let manifest = Path::new(MANIFEST);
    let data = manifest.join("benches/data");
    let starts_v4: Vec<Ipv4Addr> =
        asn_range_starts(&data.join("ip-location-db-asn-ipv4.csv.gz"), 97);
    let starts_v6: Vec<Ipv6Addr> =
        asn_range_starts(&data.join("ip-location-db-asn-ipv6.csv.gz"), 97);
    let blocked = lines(block);
    let ua = manifest.join("tests/fixtures/useragents");
    let browsers = lines(&ua.join("browsers-sample.txt"));
    let bots = lines(&ua.join("bots-sample.txt"));
    let mut rng = BenchRng::new(7);
    let mut pick = |n: usize| rng.below(n as u64) as usize;
    (0..n)
        .map(|_| {
            let roll = pick(100);
            let src = if roll < 5 {
                let entry = &blocked[pick(blocked.len())];
                let addr: Ipv4Addr = entry.split('/').next().unwrap().parse().unwrap();
                IpAddr::V4(addr)
            } else if roll < 15 {
                let base = u128::from(starts_v6[pick(starts_v6.len())]);
                IpAddr::V6(Ipv6Addr::from(base + pick(65_536) as u128))
            } else {
                let base = u32::from(starts_v4[pick(starts_v4.len())]);
                IpAddr::V4(Ipv4Addr::from(base.wrapping_add(pick(256) as u32)))
            };
            let ua = match pick(100) {
                0 => TypedData::Null,
                1..=9 => TypedData::String(Bytes::from(bots[pick(bots.len())].clone())),
                _ => TypedData::String(Bytes::from(browsers[pick(browsers.len())].clone())),
            };
            let (path, method) = match pick(20) {
                0 => ("/login", "POST"),
                1..=5 => ("/static/app.js", "GET"),
                _ => ("/", "GET"),
            };
            let src = match src {
                IpAddr::V4(a) => TypedData::Ipv4(a),
                IpAddr::V6(a) => TypedData::Ipv6(a),
            };
            Message {
                name: Bytes::from_static(b"guard-check"),
                args: vec![
                    arg("src", src),
                    arg("method", TypedData::str(method)),
                    arg("path", TypedData::str(path)),
                    arg("host", TypedData::str("www.example.com")),
                    arg("ua", ua),
                ],
            }
        })
        .collect()
}

fn arg(name: &'static str, value: TypedData) -> Arg {
    Arg {
        name: Bytes::from_static(name.as_bytes()),
        value,
    }
}
