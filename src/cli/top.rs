//! `spoa-guard top`: a terminal view of who is hitting us, refreshed like `top`. It
//! reads `GET /top` from a running agent's operations listener (`[metrics] listen`) as a
//! [`TopReport`] and prints, for every dimension (source network, source, ASN, path,
//! host, user agent), the heaviest keys with their request count and share, for all
//! traffic or for denied traffic. `--by rule` shows instead which rules decide, and
//! how often (`top/rules.rs`).

mod rules;

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use hyper::Method;

use super::client::{percent, Call, ClientError, TIMEOUT as FETCH_TIMEOUT};
use super::say;
use crate::config::Config;
use crate::insight::{ClassTop, Dimension, TopReport};
use crate::util::Listen;

/// The dimensions in display order, with their titles.
const DIMENSIONS: [(Dimension, &str); 6] = [
    (Dimension::SrcNet, "SOURCE NETWORK"),
    (Dimension::Src, "SOURCE"),
    (Dimension::Asn, "ASN"),
    (Dimension::Path, "PATH"),
    (Dimension::Host, "HOST"),
    (Dimension::Ua, "USER AGENT"),
];

/// What `top` shows and where it reads it.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// The agent's operations listener (`[metrics] listen`); default: read from --config,
    /// else 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR:PORT")]
    pub addr: Option<SocketAddr>,
    /// Window: 30s, 1m, 5m (at most the agent's insight window).
    #[arg(long, default_value = "1m")]
    pub window: String,
    /// Entries per dimension.
    #[arg(short, long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub n: u16,
    /// Show denied traffic only.
    #[arg(long)]
    pub denied: bool,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
    /// Print once and exit (for scripts); exit 1 if the agent cannot be read. With
    /// `--by rule`, two reads `--interval` apart give the rates.
    #[arg(long)]
    pub once: bool,
    /// What to show: `traffic` (who: sources, networks, ASNs, paths, hosts, user agents)
    /// or `rule` (which rules decide, dry-run ones included, per second).
    #[arg(long, value_enum, default_value = "traffic")]
    pub by: By,
}

/// The views of `top`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    /// Heavy hitters of the traffic (`GET /top`).
    Traffic,
    /// Hits per rule (`GET /rules`).
    Rule,
}

/// Which class of traffic to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Every request.
    All,
    /// Denied requests.
    Denied,
}

/// Shows the report until interrupted (or once, with `--once`).
pub fn run(config: &Path, args: &TopArgs) -> ExitCode {
    let addr = args.addr.unwrap_or_else(|| {
        Config::load(config)
            .ok()
            .and_then(|c| c.startup.metrics.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9464)))
    });
    let class = if args.denied {
        Class::Denied
    } else {
        Class::All
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("cannot start the runtime");
        return ExitCode::FAILURE;
    };
    let tty = std::io::stdout().is_terminal();
    if args.by == By::Rule {
        return runtime.block_on(by_rule(addr, args, tty));
    }
    runtime.block_on(async {
        loop {
            match fetch(addr, &args.window, usize::from(args.n)).await {
                Ok(report) => {
                    let text = render(&report, class, 120);
                    if tty && !args.once {
                        // Clear the screen and go home, as top does.
                        say!("\x1b[2J\x1b[H{text}");
                    } else {
                        say!("{text}");
                    }
                }
                Err(message) => {
                    eprintln!("spoa-guard top: {message}");
                    if args.once {
                        return ExitCode::FAILURE;
                    }
                }
            }
            if args.once {
                return ExitCode::SUCCESS;
            }
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
                () = tokio::time::sleep(Duration::from_secs(args.interval)) => {}
            }
        }
    })
}

/// `--by rule`: the rules view, refreshed.
async fn by_rule(addr: SocketAddr, args: &TopArgs, tty: bool) -> ExitCode {
    let mut previous = rules::Previous::default();
    let interval = Duration::from_secs(args.interval);
    loop {
        match rules::fetch(addr).await {
            Ok(view) => {
                let now = std::time::Instant::now();
                let first = previous.is_empty();
                if !(args.once && first) {
                    let text = rules::render(&view, &previous, now);
                    if tty && !args.once {
                        say!("\x1b[2J\x1b[H{text}");
                    } else {
                        say!("{text}");
                    }
                    if args.once {
                        return ExitCode::SUCCESS;
                    }
                }
                previous.remember(&view, now);
            }
            Err(message) => {
                eprintln!("spoa-guard top: {message}");
                if args.once {
                    return ExitCode::FAILURE;
                }
            }
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Why the report could not be read, in words for the operator.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No answer.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The agent answered with an error.
    #[error("{addr}: {status}: {body}")]
    Status {
        /// Where.
        addr: SocketAddr,
        /// The status.
        status: hyper::StatusCode,
        /// The answer's first line.
        body: String,
    },
    /// The answer is not a report.
    #[error("{addr}: not a report: {source}")]
    Json {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: serde_json::Error,
    },
}

/// Fetches `GET /top?window=…&n=…` from the agent at `addr`.
///
/// # Errors
///
/// Connection refused, timeout, a non-200 answer or a body that is not a report.
pub async fn fetch(addr: SocketAddr, window: &str, n: usize) -> Result<TopReport, FetchError> {
    fetch_json(addr, &format!("/top?window={}&n={n}", percent(window))).await
}

/// Fetches `GET uri` from the operations listener at `addr` as JSON.
///
/// # Errors
///
/// Connection refused, timeout, a non-200 answer or a body that is not a `T`.
async fn fetch_json<T: serde::de::DeserializeOwned>(
    addr: SocketAddr,
    uri: &str,
) -> Result<T, FetchError> {
    let at = Listen::Tcp(addr);
    let call = Call {
        at: &at,
        hint: " (is [metrics] listen set?)",
        token: None,
        timeout: FETCH_TIMEOUT,
    };
    let answer = call.send(Method::GET, uri, None).await?;
    if !answer.status.is_success() {
        return Err(FetchError::Status {
            addr,
            status: answer.status,
            body: answer.reason(),
        });
    }
    serde_json::from_slice(&answer.body).map_err(|source| FetchError::Json { addr, source })
}

/// Renders a report for `class`, `width` columns wide.
pub fn render(report: &TopReport, class: Class, width: usize) -> String {
    let mut out = String::new();
    let (requests, denied) = (report.totals.requests, report.totals.denied);
    let ratio = if requests == 0 {
        0.0
    } else {
        denied as f64 / requests as f64 * 100.0
    };
    let _ = writeln!(
        out,
        "spoa-guard top — last {}s (covering {:.0}s): {requests} requests, {denied} denied ({ratio:.1}%)",
        report.window_secs, report.covered_secs,
    );
    let sampling = &report.sampling;
    let counts = if sampling.exact {
        "exact (every request counted)".to_string()
    } else {
        let interval = sampling.interval.max(sampling.interval_denied);
        format!("estimated (1 in {interval} sampled; ±error shown)")
    };
    let shown = match class {
        Class::All => "all",
        Class::Denied => "denied",
    };
    let _ = writeln!(out, "showing {shown} traffic; counts {counts}");
    let top: &ClassTop = match class {
        Class::All => &report.all,
        Class::Denied => &report.denied,
    };
    let key_width = width.saturating_sub(24).max(20);
    for (dimension, title) in DIMENSIONS {
        let _ = writeln!(out);
        let _ = writeln!(out, "{:>10} {:>6}  {title}", "REQUESTS", "SHARE");
        let entries = top.get(dimension);
        if entries.is_empty() {
            let _ = writeln!(out, "{:>10} {:>6}  -", "", "");
        }
        for entry in entries {
            let name: String = entry.key.chars().take(key_width).collect();
            let count = if entry.error > 0 {
                format!("{}±{}", entry.count, entry.error)
            } else {
                entry.count.to_string()
            };
            let _ = writeln!(out, "{count:>10} {:>5.1}%  {name}", entry.share * 100.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_dimension_with_counts_and_shares() {
        let report: TopReport = serde_json::from_value(serde_json::json!({
            "window_secs": 60, "covered_secs": 55.0, "slot_secs": 10, "counters": 100,
            "totals": { "requests": 1000, "denied": 250 },
            "sampling": { "exact": true, "interval": 1, "interval_denied": 1, "dropped": 0 },
            "all": {
                "src": [{ "key": "203.0.113.9", "count": 800, "share": 0.8, "error": 0 }],
                "src_net": [{ "key": "203.0.113.0/24", "count": 900, "share": 0.9, "error": 3 }],
                "asn": [], "path": [], "host": [], "ua": []
            },
            "denied": { "src": [], "src_net": [], "asn": [], "path": [], "host": [], "ua": [] }
        }))
        .unwrap();
        let text = render(&report, Class::All, 100);
        assert!(text.contains("1000 requests, 250 denied (25.0%)"), "{text}");
        assert!(text.contains("       800  80.0%  203.0.113.9"), "{text}");
        assert!(text.contains("     900±3  90.0%  203.0.113.0/24"), "{text}");
        assert!(text.find("SOURCE NETWORK") < text.find("USER AGENT"));
        let denied = render(&report, Class::Denied, 100);
        assert!(!denied.contains("203.0.113.9"), "{denied}");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(percent("1m"), "1m");
        assert_eq!(percent("1m&n=5 x"), "1m%26n%3D5%20x");
    }
}
