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
//! Inputs:
//! - `--user-agents FILE`, told apart by the first character of its first line that is
//!   neither blank nor a `#` comment: `[` a JSON array of strings or of objects, `{` JSON
//!   lines (one object per line), anything else plain text (one user agent per line).
//!   Objects carry the user agent in a string field `useragent`, `ua` or `user_agent`
//!   (the first present wins; other fields are ignored). Any bad line or element is an
//!   error naming file and line (`ua.jsonl:3: no user-agent field: …`), and so is an
//!   empty file.
//! - Durations (`--duration`, `--warmup`, `--timeout`) need a unit: `us`, `ms`, `s`, `m`
//!   or `h`, fractions allowed (`1.5s`); a bare number such as `3` is an error.
//!
//! Output: the report on stdout (text, or one JSON object with `--json`): throughput,
//! latency percentiles, errors, the `action/reason` pairs of the measured ACKs, and the
//! dry-run hits: ACKs that set `dry_run` (spoa-guard's `txn.guard.dry_run`, the name of
//! the first dry-run rule that would have denied), counted in all (`dry_run_hits`) and
//! by that rule (`dry_run_rules`).
//!
//! Exit status: 0 when ACKs came back; 1 with one line `error: …` on stderr for a bad
//! input file or value, or when the run failed as a whole (no connection got through
//! the HELLO, or not one ACK came back; the report is printed first); 2 for command-line
//! usage errors (clap's). Never a backtrace, whatever `RUST_BACKTRACE` says.
//!
//! The code: this file holds the command line and `run`, which starts one task per
//! connection and merges their statistics. The modules:
//! - `connection.rs`: one pipelined SPOP connection (sending on schedule, matching ACKs,
//!   timeouts, reconnecting);
//! - `report.rs`: what came back, counted and printed as text or JSON, and whether the
//!   run failed as a whole;
//! - `mix.rs`: the requests drawn (sources, user agents, paths, access-log lines);
//! - `user_agents.rs`: reading the `--user-agents` file.
//!
//! [`Client::handshake`]: spoa_guard::spop::client::Client::handshake

#![forbid(unsafe_code)]

mod connection;
mod mix;
mod report;
mod user_agents;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::io::Write;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use rand::SeedableRng;
use spoa_guard::util::parse_duration;
use tokio::time::Instant;

use crate::connection::{connection, Plan};
use crate::mix::{Mix, Rng};
use crate::report::{Report, Stats};

/// Command-line options.
#[derive(Debug, Clone, Parser)]
#[command(
    about = "SPOP load generator: NOTIFY frames to an SPOE agent",
    after_help = "Exit status: 0 when ACKs came back; 1 on a bad input or when no connection \
                  could be made or no ACK came back at all (after the report); 2 on \
                  command-line usage errors."
)]
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
    /// Measured time, after the warm-up (with a unit: 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Total NOTIFY/s on a fixed schedule (open loop); 0 = closed loop, max speed.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Time run before measuring (not counted; with a unit: 1s, 0s).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// A NOTIFY without ACK after this long counts as a timeout (with a unit: 1s, 200ms).
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
    /// User agents: one per line, JSON lines, or a JSON array (of strings, or of objects);
    /// objects carry it in a "useragent", "ua" or "user_agent" field.
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
    /// Check every ACK (warm-up included): a request drawn from --deny-sources must be
    /// answered `action` deny, every other one allow; mismatches are reported as wrong
    /// verdicts and fail the run. For rule sets made so that this holds (fault suites,
    /// reloads under load).
    #[arg(long)]
    check_verdicts: bool,
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

/// Exit status 0 after a run that got ACKs, 1 on any error (one line on stderr, never a
/// backtrace), 2 for command-line usage errors (clap's own).
fn main() -> ExitCode {
    let opts = Opts::parse();
    match generate(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}`: the whole chain of causes on one line, and no backtrace, whatever
            // RUST_BACKTRACE says (anyhow prints one only with `{:?}`).
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the inputs, runs the load and prints the report; an error when the run could
/// not start, or when it failed as a whole ([`Report::failure`], after the report).
fn generate(opts: &Opts) -> anyhow::Result<()> {
    let mix = Arc::new(Mix::load(opts)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.threads.max(1))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = runtime.block_on(run(opts, mix))?;
    let text = if opts.json {
        format!("{}\n", report.json(opts))
    } else {
        report.text(opts)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing the report")?;
    match report.failure(opts) {
        Some(why) => Err(anyhow!(why)),
        None => Ok(()),
    }
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
    if opts.duration.is_zero() || opts.timeout.is_zero() {
        bail!("--duration and --timeout must be more than 0s");
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

    /// A fake agent on a free port that answers every HELLO as spoa-guard does, then
    /// hands the connection to `then`; returns its address.
    pub(crate) async fn fake_agent<F, Fut>(then: F) -> String
    where
        F: Fn(tokio_util::codec::Framed<tokio::net::TcpStream, spoa_guard::spop::SpopCodec>) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        use futures_util::{SinkExt, StreamExt};
        use spoa_guard::spop::hello::{Negotiated, DEFAULT_FRAME_SIZE};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let then = Arc::new(then);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let then = Arc::clone(&then);
                tokio::spawn(async move {
                    let codec = spoa_guard::spop::SpopCodec::new(DEFAULT_FRAME_SIZE);
                    let mut framed = tokio_util::codec::Framed::new(stream, codec);
                    let _hello = framed.next().await;
                    let hello = Negotiated {
                        max_frame_size: DEFAULT_FRAME_SIZE,
                        healthcheck: false,
                        engine_id: None,
                    }
                    .agent_hello();
                    if framed.send(hello).await.is_ok() {
                        then(framed).await;
                    }
                });
            }
        });
        addr
    }

    /// A real spoa-guard agent in this process, with a block list.
    async fn agent(dir: &Path) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
        agent_with(dir, "").await
    }

    /// A real spoa-guard agent in this process, with a block list and `more` config.
    async fn agent_with(
        dir: &Path,
        more: &str,
    ) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
        std::fs::write(dir.join("block.txt"), "203.0.113.0/24\n").unwrap();
        let config_path = dir.join("spoa-guard.toml");
        std::fs::write(
            &config_path,
            format!("[server]\nlisten = \"127.0.0.1:0\"\n[lists]\nblock = [\"block.txt\"]\n{more}"),
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

    /// `--check-verdicts` against a real agent blocking 203.0.113.0/24: with that range as
    /// the deny sources every ACK is right; with a range it does not block, the denied
    /// share is wrong and the run fails, naming the first mismatch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verdicts_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, shutdown) = agent(dir.path()).await;
        let addr = addr.to_string();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let allowed = file("allowed.txt", "198.51.100.0/24\n");
        for (deny, wrong) in [("203.0.113.0/24\n", false), ("192.0.2.0/24\n", true)] {
            let deny = file("deny.txt", deny);
            let (opts, report) = run_with(&[
                "--agent",
                &addr,
                "--connections",
                "2",
                "--pipeline",
                "4",
                "--duration",
                "300ms",
                "--warmup",
                "100ms",
                "--sources",
                &allowed,
                "--deny-sources",
                &deny,
                "--deny-share",
                "0.5",
                "--check-verdicts",
            ])
            .await;
            let s = &report.stats;
            assert!(s.checked >= s.acks && s.acks > 50, "{}", report.text(&opts));
            let failure = report.failure(&opts);
            if wrong {
                assert!(s.wrong_verdicts > 10, "{}", report.text(&opts));
                assert!(
                    failure
                        .as_deref()
                        .is_some_and(|f| f.contains("wrong verdict")
                            && f.ends_with("(first: expected deny, got allow/none)")),
                    "{failure:?}"
                );
            } else {
                assert_eq!(
                    (s.wrong_verdicts, failure),
                    (0, None),
                    "{}",
                    report.text(&opts)
                );
            }
        }
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

    /// User agents from a JSON array, an agent with a dry-run rule matching half of them:
    /// the report counts the hits and names the rule, and the run is no failure.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dry_run_hits_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let rule = "[[user_agent]]\nname = \"shadow-curl\"\npattern = \"^curl/\"\n\
                    action = \"deny\"\ndry_run = true\n";
        let (addr, shutdown) = agent_with(dir.path(), rule).await;
        let uas = dir.path().join("ua.json");
        std::fs::write(
            &uas,
            "[\"curl/8.5.0\", {\"useragent\": \"Mozilla/5.0 x\"}]\n",
        )
        .unwrap();
        let addr = addr.to_string();
        let (opts, report) = run_with(&[
            "--agent",
            &addr,
            "--connections",
            "1",
            "--pipeline",
            "4",
            "--duration",
            "300ms",
            "--warmup",
            "0s",
            "--user-agents",
            uas.to_str().unwrap(),
        ])
        .await;
        let s = &report.stats;
        let text = report.text(&opts);
        assert!(s.acks > 50, "{text}");
        let share = s.dry_run_hits as f64 / s.acks as f64;
        assert!((0.3..0.7).contains(&share), "{text}");
        assert_eq!(
            report.dry_run_rules(),
            vec![("shadow-curl".to_owned(), s.dry_run_hits)]
        );
        // A dry-run rule never denies.
        let decisions: HashMap<String, u64> = report.decisions().into_iter().collect();
        assert_eq!(decisions.get("allow/none"), Some(&s.acks), "{decisions:?}");
        let json = report.json(&opts);
        assert_eq!(json["dry_run_hits"].as_u64(), Some(s.dry_run_hits));
        assert_eq!(
            json["dry_run_rules"]["shadow-curl"].as_u64(),
            Some(s.dry_run_hits)
        );
        let line = format!("dry run     {} hits (", s.dry_run_hits);
        assert!(text.contains(&line), "{text}");
        assert!(text.contains("%  shadow-curl\n"), "{text}");
        assert_eq!(report.failure(&opts), None);
        shutdown.cancel();
    }

    /// An "agent" that answers the HELLO and then never ACKs: the run fails as a whole.
    #[tokio::test]
    async fn no_ack_at_all_is_a_failure() {
        use futures_util::StreamExt;
        let addr =
            fake_agent(|mut framed| async move { while let Some(Ok(_)) = framed.next().await {} })
                .await;
        let (opts, report) = run_with(&[
            "--agent",
            &addr,
            "--connections",
            "2",
            "--pipeline",
            "2",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
            "--timeout",
            "50ms",
        ])
        .await;
        let s = &report.stats;
        assert_eq!((s.connects, s.replies), (2, 0));
        assert!(s.timeouts > 0);
        let failure = report.failure(&opts).unwrap();
        let expected = format!(
            "no ACK came back in 400ms (sent {} NOTIFYs, {} timed out)",
            s.sent, s.timeouts
        );
        assert_eq!(failure, expected);
    }

    #[test]
    fn zero_duration_or_timeout_is_refused() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for args in [["--duration", "0s"], ["--timeout", "0ms"]] {
            let opts = opts(&args);
            let mix = Arc::new(Mix::load(&opts).unwrap());
            let err = runtime.block_on(run(&opts, mix)).err().unwrap();
            assert_eq!(
                err.to_string(),
                "--duration and --timeout must be more than 0s"
            );
        }
    }
}
