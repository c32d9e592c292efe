//! A SPOP load generator: plays HAProxy towards any SPOE agent and reports throughput,
//! latency percentiles, errors and the mix of decisions seen in the ACKs.
//!
//! ```text
//! cargo run --release -p spoa-guard-loadgen -- --agent 127.0.0.1:12345 \
//!     --connections 4 --pipeline 16 --duration 10s            # closed loop, max speed
//! cargo run --release -p spoa-guard-loadgen -- --rate 20000 --pipeline 64   # open loop
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
//!
//! The code: this file holds the command line and `run`, which starts one task per
//! connection and merges their statistics. The modules:
//! - `connection.rs`: one pipelined SPOP connection (sending on schedule, matching ACKs,
//!   timeouts, reconnecting);
//! - `report.rs`: what came back, counted and printed as text or JSON;
//! - `mix.rs`: the requests drawn (sources, user agents, paths, access-log lines).
//!
//! [`Client::handshake`]: spoa_guard::spop::client::Client::handshake

#![forbid(unsafe_code)]

mod connection;
mod mix;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use rand::SeedableRng;
use tokio::time::Instant;

use crate::connection::{connection, Plan};
use crate::mix::{Mix, Rng};
use crate::report::{Report, Stats};

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

/// Runs the load (one task per connection, each with its own statistics) and returns the
/// merged statistics.
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

/// Tests of the command line and of whole runs against a real agent; the helpers `opts`
/// and `run_with` are shared with the other modules' tests.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

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

    /// The options of the command line `loadgen` followed by `extra`.
    pub(crate) fn opts(extra: &[&str]) -> Opts {
        let mut argv = vec!["loadgen"];
        argv.extend_from_slice(extra);
        Opts::parse_from(argv)
    }

    /// Parses `args` as a command line and runs the generator to the end.
    pub(crate) async fn run_with(args: &[&str]) -> (Opts, Report) {
        let opts = opts(args);
        let report = run(&opts, Arc::new(Mix::load(&opts).unwrap()))
            .await
            .unwrap();
        (opts, report)
    }

    /// A real spoa-guard agent in this process, with a block list.
    async fn agent(dir: &Path) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
        std::fs::write(dir.join("block.txt"), "203.0.113.0/24\n").unwrap();
        let config_path = dir.join("spoa-guard.toml");
        std::fs::write(
            &config_path,
            "[server]\nlisten = \"127.0.0.1:0\"\n[lists]\nblock = [\"block.txt\"]\n",
        )
        .unwrap();
        let running = spoa_guard::serve::start_file(&config_path).await.unwrap();
        let (addr, shutdown) = (running.spop_addr().unwrap(), running.shutdown_token());
        tokio::spawn(running.stopped());
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
}
