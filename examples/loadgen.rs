//! A SPOP load generator: plays HAProxy towards any SPOE agent and reports throughput,
//! latency percentiles, errors and the mix of decisions seen in the ACKs.
//!
//! ```text
//! cargo run --release --example loadgen -- --agent 127.0.0.1:12345 \
//!     --connections 4 --pipeline 16 --duration 10s            # closed loop, max speed
//! cargo run --release --example loadgen -- --rate 20000 --pipeline 64   # open loop
//! ```
//!
//! Each connection does the HELLO exchange of [`Client::handshake`], then sends NOTIFY
//! frames carrying one message (`--message`, default `guard-check`) with the arguments
//! HAProxy sends for spoa-guard (`src` typed as an address, `method`, `path`, `host`,
//! `ua`), plus any `--arg NAME=VALUE`. Up to `--pipeline` NOTIFYs are in flight per
//! connection; ACKs are matched by stream-id and frame-id.
//!
//! Closed loop (`--rate 0`): a new NOTIFY goes out as soon as an ACK frees a slot.
//! Open loop (`--rate R`): NOTIFYs follow a fixed schedule of R per second in total, and
//! latency is measured from each request's *intended* send time, so a stall of the agent
//! (or a full pipeline) shows up in the percentiles instead of silently slowing the
//! generator down (coordinated omission).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use ipnet::IpNet;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use spoa_guard::spop::client::Client;
use spoa_guard::spop::{Action, Arg, Frame, Message, Payload, TypedData};
use tokio::time::{sleep, sleep_until, Instant};

/// Command-line options.
#[derive(Debug, Clone, Parser)]
#[command(about = "SPOP load generator: NOTIFY frames to an SPOE agent")]
struct Opts {
    /// Agent address.
    #[arg(long, default_value = "127.0.0.1:12345")]
    agent: String,
    /// TCP connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// NOTIFYs in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Measured time, after the warm-up (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Total NOTIFY/s on a fixed schedule (open loop); 0 = closed loop, max speed.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Time run before measuring (not counted).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// A NOTIFY without ACK after this long counts as a timeout.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    timeout: Duration,
    /// The message name.
    #[arg(long, default_value = "guard-check")]
    message: String,
    /// Extra constant string argument NAME=VALUE (repeatable).
    #[arg(long = "arg", value_parser = parse_kv)]
    args: Vec<(String, String)>,
    /// Send only the --arg arguments, not src/method/path/host/ua.
    #[arg(long)]
    no_default_args: bool,
    /// Source addresses or CIDRs, one per line (a block list works).
    #[arg(long)]
    sources: Option<PathBuf>,
    /// Without --sources: draw sources uniformly from N random addresses made once from
    /// --seed (80 % IPv4, 20 % IPv6); 0 = a fresh random address per request. Not used
    /// with --sources.
    #[arg(long, default_value_t = 100_000)]
    source_pool: usize,
    /// User agents, one per line, or JSONL with a "ua" or "user_agent" field.
    #[arg(long)]
    user_agents: Option<PathBuf>,
    /// Paths, one per line ("/p" or "POST /p"), or a combined access log (method, path, UA).
    #[arg(long)]
    paths: Option<PathBuf>,
    /// Addresses or CIDRs that should be denied, for --deny-share of the requests.
    #[arg(long)]
    deny_sources: Option<PathBuf>,
    /// Share of requests drawn from --deny-sources (0..=1).
    #[arg(long, default_value_t = 0.0)]
    deny_share: f64,
    /// The host argument.
    #[arg(long, default_value = "www.example.com")]
    host: String,
    /// Random seed (runs with the same seed draw the same requests).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Runtime worker threads of the generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let opts = Opts::parse();
    let mix = Arc::new(Mix::load(&opts)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads.max(1))
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&opts, mix))?;
    if opts.json {
        println!("{}", report.json(&opts));
    } else {
        print!("{}", report.text(&opts));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Running: one task per connection, each with its own statistics, merged at the end.

/// Runs the load and returns the merged statistics.
async fn run(opts: &Opts, mix: Arc<Mix>) -> anyhow::Result<Report> {
    if opts.connections == 0 || opts.pipeline == 0 {
        bail!("--connections and --pipeline must be at least 1");
    }
    if !(opts.rate >= 0.0 && opts.rate.is_finite()) {
        bail!("--rate must be a number >= 0");
    }
    let plan = Arc::new(Plan::new(opts, Instant::now()));
    let mut tasks = Vec::with_capacity(opts.connections);
    for id in 0..opts.connections {
        let (plan, mix) = (plan.clone(), mix.clone());
        let seed = opts.seed.wrapping_add(id as u64).wrapping_mul(0x9e37_79b9);
        tasks.push(tokio::spawn(connection(
            id,
            plan,
            mix,
            Rng::seed_from_u64(seed),
        )));
    }
    let mut total = Stats::new();
    for task in tasks {
        total.merge(task.await.context("a connection task panicked")?);
    }
    Ok(Report {
        stats: total,
        measured: opts.duration,
    })
}

/// What every connection task needs to know.
struct Plan {
    agent: String,
    connections: usize,
    pipeline: usize,
    timeout: Duration,
    /// Open loop: time between two NOTIFYs of one connection.
    interval: Option<Duration>,
    start: Instant,
    /// Requests intended before this are warm-up.
    measure_from: Instant,
    /// No request is intended at or after this.
    end: Instant,
}

impl Plan {
    fn new(opts: &Opts, start: Instant) -> Self {
        let measure_from = start + opts.warmup;
        let interval = (opts.rate > 0.0)
            .then(|| Duration::from_secs_f64(opts.connections as f64 / opts.rate))
            .filter(|d| !d.is_zero());
        Self {
            agent: opts.agent.clone(),
            connections: opts.connections,
            pipeline: opts.pipeline,
            timeout: opts.timeout,
            interval: interval.or((opts.rate > 0.0).then_some(Duration::from_nanos(1))),
            start,
            measure_from,
            end: measure_from + opts.duration,
        }
    }
}

/// Pause after a failed connection before trying again.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// One NOTIFY waiting for its ACK.
struct InFlight {
    /// When it should have been sent: latency is measured from here.
    intended: Instant,
    /// When it was sent: the timeout runs from here.
    sent: Instant,
}

/// One connection's life: connect, send and receive until the end of the plan, reconnect
/// after failures.
async fn connection(id: usize, plan: Arc<Plan>, mix: Arc<Mix>, mut rng: Rng) -> Stats {
    let mut stats = Stats::new();
    // Spread the connections' schedules evenly over one interval.
    let mut next_intended = match plan.interval {
        Some(iv) => plan.start + iv.mul_f64(id as f64 / plan.connections as f64),
        None => plan.start,
    };
    let mut stream_id: u64 = 0;
    'connect: while Instant::now() < plan.end {
        let mut client =
            match tokio::time::timeout(plan.timeout, Client::connect(&plan.agent)).await {
                Ok(Ok(client)) => client,
                Ok(Err(err)) => {
                    stats.error(format!("connect: {err}"));
                    sleep(RECONNECT_DELAY).await;
                    continue;
                }
                Err(_) => {
                    stats.error("connect: timed out".to_owned());
                    continue;
                }
            };
        let mut inflight: HashMap<u64, InFlight> = HashMap::with_capacity(plan.pipeline);
        loop {
            // Send whatever is due, up to the pipeline depth.
            let now = Instant::now();
            let mut fed = false;
            while inflight.len() < plan.pipeline {
                let intended = match plan.interval {
                    Some(iv) if next_intended <= now && next_intended < plan.end => {
                        next_intended += iv;
                        next_intended - iv
                    }
                    Some(_) => break,
                    None if now < plan.end => now,
                    None => break,
                };
                stream_id += 1;
                let frame = Frame::new(stream_id, 1, Payload::Notify(vec![mix.message(&mut rng)]));
                if let Err(err) = client.feed(frame).await {
                    stats.lost(inflight.len() as u64 + 1, format!("write: {err}"));
                    sleep(RECONNECT_DELAY).await;
                    continue 'connect;
                }
                inflight.insert(
                    stream_id,
                    InFlight {
                        intended,
                        sent: now,
                    },
                );
                stats.sent += 1;
                fed = true;
            }
            if fed {
                if let Err(err) = client.flush().await {
                    stats.lost(inflight.len() as u64, format!("write: {err}"));
                    sleep(RECONNECT_DELAY).await;
                    continue 'connect;
                }
            }
            if inflight.is_empty() {
                match plan.interval {
                    Some(_) if next_intended < plan.end => {
                        sleep_until(next_intended).await;
                        continue;
                    }
                    _ => break 'connect,
                }
            }

            // Wait for an ACK, the oldest NOTIFY's timeout, or the next scheduled send.
            let deadline = inflight
                .values()
                .map(|f| f.sent + plan.timeout)
                .min()
                .unwrap_or(now + plan.timeout);
            let next_send = (plan.interval.is_some()
                && inflight.len() < plan.pipeline
                && next_intended < plan.end)
                .then_some(next_intended);
            tokio::select! {
                frame = client.recv() => {
                    // This ACK and every one already received, then refill the pipeline
                    // with one write: what HAProxy 2.x does too.
                    let mut next = Some(frame);
                    while let Some(frame) = next {
                        let ended = match frame {
                            Ok(Some(frame)) => answer(frame, &mut inflight, &mut stats, &plan),
                            Ok(None) => Some("closed by the agent".to_owned()),
                            Err(err) => Some(format!("read: {err}")),
                        };
                        if let Some(why) = ended {
                            stats.lost(inflight.len() as u64, why);
                            sleep(RECONNECT_DELAY).await;
                            continue 'connect;
                        }
                        next = client.try_recv();
                    }
                }
                () = sleep_until(deadline) => {
                    let now = Instant::now();
                    let before = inflight.len();
                    inflight.retain(|_, f| f.sent + plan.timeout > now);
                    stats.timeouts += (before - inflight.len()) as u64;
                }
                () = sleep_until(next_send.unwrap_or(deadline)), if next_send.is_some() => {}
            }
        }
    }
    // Requests scheduled in the measured window but never sent (the generator or the
    // pipeline fell behind, or the connection was down): omitted from the latencies,
    // so they are reported.
    if let Some(iv) = plan.interval {
        let from = next_intended.max(plan.measure_from);
        if from < plan.end {
            stats.unsent += ((plan.end - from).as_nanos() / iv.as_nanos().max(1)) as u64;
        }
    }
    stats
}

/// Accounts for one frame from the agent; `Some(why)` when the connection is over.
fn answer(
    frame: Frame,
    inflight: &mut HashMap<u64, InFlight>,
    stats: &mut Stats,
    plan: &Plan,
) -> Option<String> {
    let now = Instant::now();
    match frame.payload {
        Payload::Ack(actions) => match (frame.frame_id, inflight.remove(&frame.stream_id)) {
            (1, Some(f)) => {
                if f.intended >= plan.measure_from {
                    stats.ack(now - f.intended, now - f.sent, &actions);
                }
            }
            _ => stats.late_acks += 1,
        },
        Payload::AgentDisconnect(d) => {
            let message = String::from_utf8_lossy(&d.message).into_owned();
            return Some(format!("disconnect: status {} ({message})", d.status.0));
        }
        other => stats.error(format!("unexpected {} frame", other.frame_type().as_str())),
    }
    None
}

// ---------------------------------------------------------------------------------------
// Statistics.

/// Counters of one connection, or of all after merging.
struct Stats {
    /// Latency of measured ACKs from their intended send time, in microseconds.
    latency: Histogram<u64>,
    /// The same from the actual send time: the agent's (and network's) share alone.
    service: Histogram<u64>,
    sent: u64,
    /// ACKs of requests intended in the measured window.
    acks: u64,
    timeouts: u64,
    /// NOTIFYs in flight when their connection died.
    lost: u64,
    /// ACKs for unknown ids (after their timeout, or never sent).
    late_acks: u64,
    /// Open loop: scheduled in the measured window but never sent.
    unsent: u64,
    /// Connection errors and disconnects, by description.
    errors: BTreeMap<String, u64>,
    /// `action/reason` values of measured ACKs.
    decisions: HashMap<(Option<Bytes>, Option<Bytes>), u64>,
}

impl Stats {
    fn new() -> Self {
        Self {
            // 1 µs .. 1 h, 3 significant digits.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant, valid histogram bounds"),
            service: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant, valid histogram bounds"),
            sent: 0,
            acks: 0,
            timeouts: 0,
            lost: 0,
            late_acks: 0,
            unsent: 0,
            errors: BTreeMap::new(),
            decisions: HashMap::new(),
        }
    }

    fn error(&mut self, what: String) {
        *self.errors.entry(what).or_default() += 1;
    }

    fn lost(&mut self, n: u64, what: String) {
        self.lost += n;
        self.error(what);
    }

    fn ack(&mut self, latency: Duration, service: Duration, actions: &[Action]) {
        self.acks += 1;
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(micros(latency));
        self.service.saturating_record(micros(service));
        *self.decisions.entry(decision(actions)).or_default() += 1;
    }

    fn merge(&mut self, other: Stats) {
        // Both histograms have the same bounds; add() only fails on a range mismatch.
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        self.sent += other.sent;
        self.acks += other.acks;
        self.timeouts += other.timeouts;
        self.lost += other.lost;
        self.late_acks += other.late_acks;
        self.unsent += other.unsent;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.decisions {
            *self.decisions.entry(k).or_default() += v;
        }
    }
}

/// The values of the `action` and `reason` variables an ACK sets (any scope, as the
/// prefix is not on the wire).
fn decision(actions: &[Action]) -> (Option<Bytes>, Option<Bytes>) {
    let mut out = (None, None);
    for action in actions {
        if let Action::SetVar { name, value, .. } = action {
            let slot = match name.as_ref() {
                b"action" => &mut out.0,
                b"reason" => &mut out.1,
                _ => continue,
            };
            *slot = Some(match value.as_bytes() {
                Some(b) => b.clone(),
                None => Bytes::from(format!("{value:?}")),
            });
        }
    }
    out
}

/// The merged statistics of a run.
struct Report {
    stats: Stats,
    measured: Duration,
}

impl Report {
    fn throughput(&self) -> f64 {
        self.stats.acks as f64 / self.measured.as_secs_f64().max(1e-9)
    }

    fn percentiles(h: &Histogram<u64>) -> Vec<(&'static str, u64)> {
        vec![
            ("p50", h.value_at_quantile(0.50)),
            ("p90", h.value_at_quantile(0.90)),
            ("p99", h.value_at_quantile(0.99)),
            ("p99.9", h.value_at_quantile(0.999)),
            ("max", h.max()),
        ]
    }

    /// Decisions as `action/reason` labels, most frequent first.
    fn decisions(&self) -> Vec<(String, u64)> {
        let label = |v: &Option<Bytes>| {
            v.as_ref()
                .map_or("-".to_owned(), |b| String::from_utf8_lossy(b).into_owned())
        };
        let mut out: Vec<(String, u64)> = self
            .stats
            .decisions
            .iter()
            .map(|((a, r), n)| (format!("{}/{}", label(a), label(r)), *n))
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    fn text(&self, opts: &Opts) -> String {
        use std::fmt::Write;
        let s = &self.stats;
        let mode = if opts.rate > 0.0 {
            format!("open loop, target {} NOTIFY/s", opts.rate)
        } else {
            "closed loop".to_owned()
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} connections x pipeline {}, {mode}, {:?} measured after {:?} warm-up",
            opts.agent, opts.connections, opts.pipeline, opts.duration, opts.warmup
        );
        let _ = writeln!(
            out,
            "throughput  {:.0} NOTIFY/s ({} ACKs measured, {} NOTIFYs sent in all)",
            self.throughput(),
            s.acks,
            s.sent
        );
        let line = |h: &Histogram<u64>| {
            Self::percentiles(h)
                .iter()
                .map(|(name, v)| format!("{name} {v}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let _ = writeln!(out, "latency µs  {}", line(&s.latency));
        if opts.rate > 0.0 {
            let _ = writeln!(
                out,
                "  from send {}  (without schedule lag)",
                line(&s.service)
            );
        }
        let _ = writeln!(
            out,
            "errors      timeouts {}  lost in flight {}  late ACKs {}  unsent (behind schedule) {}",
            s.timeouts, s.lost, s.late_acks, s.unsent
        );
        for (what, n) in &s.errors {
            let _ = writeln!(out, "            {n:>8}  {what}");
        }
        let _ = writeln!(out, "decisions");
        for (label, n) in self.decisions() {
            let share = 100.0 * n as f64 / s.acks.max(1) as f64;
            let _ = writeln!(out, "            {n:>8}  {share:5.1} %  {label}");
        }
        out
    }

    fn json(&self, opts: &Opts) -> serde_json::Value {
        let s = &self.stats;
        let percentiles = |h: &Histogram<u64>| {
            Self::percentiles(h)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
                .collect::<serde_json::Map<_, _>>()
        };
        let decisions: serde_json::Map<String, serde_json::Value> = self
            .decisions()
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        serde_json::json!({
            "agent": opts.agent,
            "connections": opts.connections,
            "pipeline": opts.pipeline,
            "rate": opts.rate,
            "source_pool": opts.sources.is_none().then_some(opts.source_pool),
            "duration_s": opts.duration.as_secs_f64(),
            "warmup_s": opts.warmup.as_secs_f64(),
            "throughput": self.throughput(),
            "acks": s.acks,
            "sent": s.sent,
            "latency_us": percentiles(&s.latency),
            "latency_from_send_us": percentiles(&s.service),
            "timeouts": s.timeouts,
            "lost": s.lost,
            "late_acks": s.late_acks,
            "unsent": s.unsent,
            "errors": s.errors,
            "decisions": decisions,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The request mix.

/// One request line: method, path and, from an access log, its user agent.
#[derive(Debug, Clone, PartialEq)]
struct RequestLine {
    method: Bytes,
    path: Bytes,
    ua: Option<Bytes>,
}

/// Where requests are drawn from.
struct Mix {
    name: Bytes,
    default_args: bool,
    extra: Vec<Arg>,
    host: Bytes,
    /// From --sources; empty: `pool`, or fresh random addresses.
    sources: Vec<IpNet>,
    /// The --source-pool addresses, when `sources` is empty. Drawing from a fixed set
    /// makes the agent see returning clients (warm rate-limit keys), as in real traffic;
    /// empty means a fresh random address per request.
    pool: Vec<IpAddr>,
    deny: Vec<IpNet>,
    deny_share: f64,
    uas: Vec<Bytes>,
    requests: Vec<RequestLine>,
}

impl Mix {
    fn load(opts: &Opts) -> anyhow::Result<Self> {
        if !(0.0..=1.0).contains(&opts.deny_share) {
            bail!("--deny-share must be between 0 and 1");
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))
        };
        let sources = match &opts.sources {
            Some(path) => nonempty(parse_sources(&read(path)?), path)?,
            None => Vec::new(),
        };
        let pool = if sources.is_empty() {
            // A stream of its own ("pool"), apart from the connections' streams.
            let mut rng = Rng::seed_from_u64(opts.seed ^ 0x706f_6f6c);
            (0..opts.source_pool)
                .map(|_| random_addr(&mut rng))
                .collect()
        } else {
            Vec::new()
        };
        let deny = match &opts.deny_sources {
            Some(path) => nonempty(parse_sources(&read(path)?), path)?,
            None if opts.deny_share > 0.0 => bail!("--deny-share needs --deny-sources"),
            None => Vec::new(),
        };
        let uas = match &opts.user_agents {
            Some(path) => nonempty(parse_user_agents(&read(path)?), path)?,
            None => DEFAULT_UAS
                .iter()
                .map(|s| Bytes::from_static(s.as_bytes()))
                .collect(),
        };
        let requests = match &opts.paths {
            Some(path) => nonempty(parse_paths(&read(path)?), path)?,
            None => DEFAULT_PATHS
                .iter()
                .map(|(m, p)| RequestLine {
                    method: Bytes::from_static(m.as_bytes()),
                    path: Bytes::from_static(p.as_bytes()),
                    ua: None,
                })
                .collect(),
        };
        Ok(Self {
            name: Bytes::from(opts.message.clone()),
            default_args: !opts.no_default_args,
            extra: opts
                .args
                .iter()
                .map(|(k, v)| Arg {
                    name: Bytes::from(k.clone()),
                    value: TypedData::String(Bytes::from(v.clone())),
                })
                .collect(),
            host: Bytes::from(opts.host.clone()),
            sources,
            pool,
            deny,
            deny_share: opts.deny_share,
            // A file of user agents wins over the ones of an access log.
            uas: if opts.user_agents.is_none() && requests.iter().any(|r| r.ua.is_some()) {
                Vec::new()
            } else {
                uas
            },
            requests,
        })
    }

    /// The next message to send.
    fn message(&self, rng: &mut Rng) -> Message {
        let mut args = Vec::with_capacity(5 + self.extra.len());
        if self.default_args {
            let src = if !self.deny.is_empty() && rng.random::<f64>() < self.deny_share {
                addr_in(pick(&self.deny, rng), rng)
            } else if !self.sources.is_empty() {
                addr_in(pick(&self.sources, rng), rng)
            } else if !self.pool.is_empty() {
                *pick(&self.pool, rng)
            } else {
                random_addr(rng)
            };
            let req = pick(&self.requests, rng);
            let ua = match (&req.ua, self.uas.is_empty()) {
                (Some(ua), true) => ua.clone(),
                _ => self
                    .uas
                    .get(below(rng, self.uas.len()))
                    .cloned()
                    .unwrap_or_default(),
            };
            let src = match src {
                IpAddr::V4(a) => TypedData::Ipv4(a),
                IpAddr::V6(a) => TypedData::Ipv6(a),
            };
            args.push(arg("src", src));
            args.push(arg("method", TypedData::String(req.method.clone())));
            args.push(arg("path", TypedData::String(req.path.clone())));
            args.push(arg("host", TypedData::String(self.host.clone())));
            args.push(arg("ua", TypedData::String(ua)));
        }
        args.extend(self.extra.iter().cloned());
        Message {
            name: self.name.clone(),
            args,
        }
    }
}

fn arg(name: &'static str, value: TypedData) -> Arg {
    Arg {
        name: Bytes::from_static(name.as_bytes()),
        value,
    }
}

/// A random element; the lists are never empty (checked at load).
fn pick<'a, T>(items: &'a [T], rng: &mut Rng) -> &'a T {
    let i = below(rng, items.len());
    &items[i % items.len().max(1)]
}

fn nonempty<T>(items: Vec<T>, path: &Path) -> anyhow::Result<Vec<T>> {
    if items.is_empty() {
        bail!("{}: no usable lines", path.display());
    }
    Ok(items)
}

/// A uniformly random address inside `net`.
fn addr_in(net: &IpNet, rng: &mut Rng) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let host_bits = 32 - u32::from(n.prefix_len());
            let mask = u32::MAX
                .checked_shr(32 - host_bits)
                .filter(|_| host_bits > 0);
            let offset = mask.map_or(0, |m| rng.random::<u32>() & m);
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | offset))
        }
        IpNet::V6(n) => {
            let host_bits = 128 - u32::from(n.prefix_len());
            let mask = u128::MAX
                .checked_shr(128 - host_bits)
                .filter(|_| host_bits > 0);
            let offset = mask.map_or(0, |m| rng.random::<u128>() & m);
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | offset))
        }
    }
}

/// A random global unicast-looking source: IPv4 80 % of the time, else 2000::/3.
fn random_addr(rng: &mut Rng) -> IpAddr {
    if below(rng, 5) < 4 {
        // Skip 0/8, 10/8, 127/8 and multicast and above, roughly what HAProxy sees.
        loop {
            let a = Ipv4Addr::from(rng.random::<u32>());
            let first = a.octets()[0];
            if !matches!(first, 0 | 10 | 127 | 224..=255) {
                return IpAddr::V4(a);
            }
        }
    } else {
        let bits = (rng.random::<u128>() >> 3) | (1u128 << 125);
        IpAddr::V6(Ipv6Addr::from(bits))
    }
}

/// Addresses and CIDRs, one per line; `#` and `;` start comments (Spamhaus, FireHOL),
/// only the first word counts, and other lines are skipped.
fn parse_sources(text: &str) -> Vec<IpNet> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next()?.trim();
            let word = line.split_whitespace().next()?;
            word.parse::<IpNet>()
                .ok()
                .or_else(|| word.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

/// User agents, one per line, or JSON lines with a `ua` or `user_agent` string field.
fn parse_user_agents(text: &str) -> Vec<Bytes> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            if line.starts_with('{') {
                let value: serde_json::Value = serde_json::from_str(line).ok()?;
                let ua = value.get("ua").or_else(|| value.get("user_agent"))?;
                Some(Bytes::from(ua.as_str()?.to_owned()))
            } else {
                Some(Bytes::from(line.to_owned()))
            }
        })
        .collect()
}

/// Paths (`/p` or `METHOD /p`), or Apache/nginx combined log lines.
fn parse_paths(text: &str) -> Vec<RequestLine> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            if line.contains('"') {
                return parse_log_line(line);
            }
            let mut words = line.split_whitespace();
            let (method, path) = match (words.next(), words.next()) {
                (Some(m), Some(p)) => (m, p),
                (Some(p), None) => ("GET", p),
                _ => return None,
            };
            Some(RequestLine {
                method: Bytes::from(method.to_owned()),
                path: Bytes::from(path.to_owned()),
                ua: None,
            })
        })
        .collect()
}

/// `host ident user [time] "METHOD PATH PROTO" status size "referer" "user-agent"`.
fn parse_log_line(line: &str) -> Option<RequestLine> {
    let quoted = quoted_fields(line);
    let request = quoted.first()?;
    let mut words = request.split_whitespace();
    let method = words.next()?;
    let path = words.next()?;
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    Some(RequestLine {
        method: Bytes::from(method.to_owned()),
        path: Bytes::from(path.to_owned()),
        ua: quoted
            .get(2)
            .filter(|ua| !ua.is_empty() && *ua != "-")
            .map(|ua| Bytes::from(ua.clone())),
    })
}

/// The double-quoted fields of a log line; `\"` and `\\` escapes are undone.
fn quoted_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut field = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => field.extend(chars.next()),
                '"' => break,
                c => field.push(c),
            }
        }
        fields.push(field);
    }
    fields
}

/// Browser and a few tool user agents for the default mix.
const DEFAULT_UAS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.5.0",
    "python-requests/2.32.3",
];

/// Methods and paths for the default mix.
const DEFAULT_PATHS: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/index.html"),
    ("GET", "/static/app.3f9a1c.js"),
    ("GET", "/static/style.css"),
    ("GET", "/images/logo.png"),
    ("GET", "/api/v1/items?page=2&sort=desc"),
    ("GET", "/products/12345"),
    ("GET", "/search?q=running+shoes"),
    ("GET", "/favicon.ico"),
    ("POST", "/api/v1/cart"),
    ("POST", "/login"),
];

// ---------------------------------------------------------------------------------------
// Small helpers.

/// The generator of every draw: a fixed, portable algorithm, so a seed gives the same
/// requests on every machine and every run.
type Rng = Xoshiro256PlusPlus;

/// Uniform in `0..n`; 0 when `n` is 0.
fn below(rng: &mut Rng, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        rng.random_range(0..n)
    }
}

/// `10s`, `500ms`, `2m`, `1h`, `250us`; a bare number is seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("bad duration unit {unit:?} (use us, ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("bad duration {text:?}: {e}"))
}

/// `NAME=VALUE`.
fn parse_kv(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn sources_and_addresses_inside_them() {
        let nets = parse_sources(
            "# comment\n1.2.3.0/24 ; SBL123\n203.0.113.7\n2001:db8::/32\n\nnot an address\n10.0.0.1/32\n",
        );
        assert_eq!(nets.len(), 4);
        let mut rng = Rng::seed_from_u64(7);
        for _ in 0..1000 {
            for net in &nets {
                assert!(net.contains(&addr_in(net, &mut rng)), "{net}");
            }
        }
        assert_eq!(
            addr_in(&nets[1], &mut rng),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        addr_in(&all, &mut rng);
        let all6: IpNet = "::/0".parse().unwrap();
        addr_in(&all6, &mut rng);
    }

    #[test]
    fn user_agents_plain_and_jsonl() {
        let uas = parse_user_agents(
            "curl/8\n{\"ua\": \"Mozilla/5.0 x\"}\n{\"user_agent\": \"bot/1\"}\n{\"other\": 1}\n",
        );
        assert_eq!(uas, vec!["curl/8", "Mozilla/5.0 x", "bot/1"]);
    }

    #[test]
    fn paths_and_combined_logs() {
        let lines = parse_paths(
            "/a\nPOST /login\n\
             203.0.113.9 - - [10/Oct/2000:13:55:36 -0700] \"GET /x?y=1 HTTP/1.1\" 200 12 \"-\" \"Mozilla/5.0 \\\"quoted\\\"\"\n\
             1.2.3.4 - - [t] \"\\x16\\x03\" 400 0 \"-\" \"-\"\n",
        );
        assert_eq!(lines.len(), 3);
        assert_eq!(
            (&lines[0].method[..], &lines[0].path[..]),
            (&b"GET"[..], &b"/a"[..])
        );
        assert_eq!(&lines[1].method[..], b"POST");
        assert_eq!(&lines[2].path[..], b"/x?y=1");
        assert_eq!(lines[2].ua.as_deref(), Some(&b"Mozilla/5.0 \"quoted\""[..]));
    }

    /// The `src` argument of `n` messages of a mix built from `extra` options.
    fn sources_drawn(extra: &[&str], n: usize) -> Vec<IpAddr> {
        let mix = Mix::load(&opts(extra)).unwrap();
        let mut rng = Rng::seed_from_u64(11);
        (0..n)
            .map(|_| match mix.message(&mut rng).args[0].value {
                TypedData::Ipv4(a) => IpAddr::V4(a),
                TypedData::Ipv6(a) => IpAddr::V6(a),
                ref other => panic!("src is {other:?}"),
            })
            .collect()
    }

    #[test]
    fn source_pool_draws_returning_clients() {
        use std::collections::HashSet;
        let distinct = |v: &[IpAddr]| v.iter().collect::<HashSet<_>>().len();

        // A pool of 50: every one of them comes back, nothing else appears.
        let drawn = sources_drawn(&["--source-pool", "50"], 5000);
        assert_eq!(distinct(&drawn), 50);
        // The pool depends on the seed only, not on the connection's stream.
        let mix = Mix::load(&opts(&["--source-pool", "50"])).unwrap();
        assert_eq!(
            mix.pool,
            Mix::load(&opts(&["--source-pool", "50"])).unwrap().pool
        );
        assert!(drawn.iter().all(|a| mix.pool.contains(a)));
        let other_seed = Mix::load(&opts(&["--source-pool", "50", "--seed", "2"])).unwrap();
        assert_ne!(mix.pool, other_seed.pool);

        // The default pool keeps today's mix: about 80 % IPv4, 20 % IPv6.
        let default = Mix::load(&opts(&[])).unwrap();
        assert_eq!(default.pool.len(), 100_000);
        let v6 = default.pool.iter().filter(|a| a.is_ipv6()).count();
        assert!((18_000..22_000).contains(&v6), "{v6} IPv6 of 100k");

        // 0: a fresh address per request (collisions are astronomically unlikely).
        assert_eq!(
            distinct(&sources_drawn(&["--source-pool", "0"], 5000)),
            5000
        );

        // --sources wins: no pool is built, addresses come from the file.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sources.txt");
        std::fs::write(&file, "192.0.2.7\n").unwrap();
        let with_file = ["--sources", file.to_str().unwrap(), "--source-pool", "50"];
        assert!(Mix::load(&opts(&with_file)).unwrap().pool.is_empty());
        let drawn = sources_drawn(&with_file, 100);
        assert!(drawn
            .iter()
            .all(|a| *a == "192.0.2.7".parse::<IpAddr>().unwrap()));
    }

    fn opts(extra: &[&str]) -> Opts {
        let mut argv = vec!["loadgen"];
        argv.extend_from_slice(extra);
        Opts::parse_from(argv)
    }

    /// Parses `args` as a command line and runs the generator to the end.
    async fn run_with(args: &[&str]) -> (Opts, Report) {
        let opts = opts(args);
        let report = run(&opts, Arc::new(Mix::load(&opts).unwrap()))
            .await
            .unwrap();
        (opts, report)
    }

    /// One connection to `addr` for 300 ms, no warm-up: enough to see how it ends.
    async fn one_connection_briefly(addr: &str) -> Report {
        let args = [
            "--agent",
            addr,
            "--connections",
            "1",
            "--duration",
            "300ms",
            "--warmup",
            "0s",
        ];
        run_with(&args).await.1
    }

    /// A real spoa-guard agent in this process, with a block list.
    async fn agent(dir: &Path) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
        use spoa_guard::config::Config;
        use spoa_guard::engine::Engine;
        use spoa_guard::server::{self, Listener, Shared};
        std::fs::write(dir.join("block.txt"), "203.0.113.0/24\n").unwrap();
        let config_path = dir.join("spoa-guard.toml");
        std::fs::write(
            &config_path,
            "[server]\nlisten = \"127.0.0.1:0\"\n[lists]\nblock = [\"block.txt\"]\n",
        )
        .unwrap();
        let config = Config::load(&config_path).unwrap();
        let engine = Engine::load(&config.rules, &config.path, None).unwrap();
        let listener = Listener::bind(&config.server.listen, config.server.backlog).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::new(engine, &config.server));
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(server::run(
            listener,
            shared,
            config.server.max_connections,
            shutdown.clone(),
            config.server.shutdown_timeout,
        ));
        (addr, shutdown)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_against_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, shutdown) = agent(dir.path()).await;
        std::fs::write(dir.path().join("deny.txt"), "203.0.113.0/24\n").unwrap();
        let deny = dir.path().join("deny.txt");
        let addr = addr.to_string();
        let (opts, report) = run_with(&[
            "--agent",
            &addr,
            "--connections",
            "2",
            "--pipeline",
            "8",
            "--duration",
            "500ms",
            "--warmup",
            "100ms",
            "--deny-share",
            "0.25",
            "--deny-sources",
            deny.to_str().unwrap(),
        ])
        .await;
        let s = &report.stats;
        assert!(s.acks > 100, "{}", report.text(&opts));
        assert_eq!(
            s.timeouts + s.lost + s.late_acks,
            0,
            "{}",
            report.text(&opts)
        );
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        let decisions: HashMap<String, u64> = report.decisions().into_iter().collect();
        let denied = decisions.get("deny/blocklist").copied().unwrap_or(0);
        let share = denied as f64 / s.acks as f64;
        assert!((0.15..0.35).contains(&share), "{decisions:?}");
        assert!(decisions.contains_key("allow/none"), "{decisions:?}");
        assert!(report.json(&opts)["latency_us"]["p99"].as_u64().unwrap() > 0);
        shutdown.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_keeps_the_rate() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, shutdown) = agent(dir.path()).await;
        let addr = addr.to_string();
        let (opts, report) = run_with(&[
            "--agent",
            &addr,
            "--rate",
            "2000",
            "--pipeline",
            "4",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
        ])
        .await;
        let s = &report.stats;
        assert!((1800..=2200).contains(&s.acks), "{}", report.text(&opts));
        assert_eq!(s.unsent + s.timeouts + s.lost, 0, "{}", report.text(&opts));
        shutdown.cancel();
    }

    /// An "agent" that answers the HELLO, then disconnects at the first NOTIFY.
    #[tokio::test]
    async fn a_disconnect_is_reported_with_its_status() {
        use futures_util::{SinkExt, StreamExt};
        use spoa_guard::spop::{Disconnect, KvList, SpopCodec, Status};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut framed = tokio_util::codec::Framed::new(stream, SpopCodec::new(16380));
                    let _hello = framed.next().await;
                    let mut kv = KvList::default();
                    kv.push("version", TypedData::str("2.0"));
                    kv.push("max-frame-size", TypedData::Uint32(16380));
                    kv.push("capabilities", TypedData::str("pipelining"));
                    framed
                        .send(Frame::new(0, 0, Payload::AgentHello(kv)))
                        .await
                        .unwrap();
                    let _notify = framed.next().await;
                    let mut bye = Disconnect::new(Status::RESOURCE);
                    bye.message = Bytes::from_static(b"go away");
                    let _ = framed
                        .send(Frame::new(0, 0, Payload::AgentDisconnect(bye)))
                        .await;
                });
            }
        });
        let report = one_connection_briefly(&addr).await;
        let s = &report.stats;
        assert_eq!(s.acks, 0);
        assert!(s.lost > 0);
        assert!(
            s.errors
                .keys()
                .any(|k| k == "disconnect: status 13 (go away)"),
            "{:?}",
            s.errors
        );
    }

    #[tokio::test]
    async fn connection_errors_are_counted() {
        // A port nobody listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let report = one_connection_briefly(&addr).await;
        assert!(report
            .stats
            .errors
            .keys()
            .any(|k| k.starts_with("connect:")));
        assert_eq!(report.stats.acks, 0);
    }
}
