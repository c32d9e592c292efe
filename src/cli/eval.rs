//! `spoa-guard eval`: evaluates one request offline against the configured rules and
//! explains every step — the ones that decided and, marked `(not reached)`, what the
//! later steps would have said (no rate-limit token is taken for those). `--json` prints
//! the same as one JSON object for scripts; `--exit-code` exits 1 when the request would
//! be denied.

use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Map, Value as Json};

use super::say;
use crate::decision::{canonical, Decision, Request, Verdict};
use crate::engine::{Context, Explanation};
use crate::spop::{Arg, ArgRef, TypedData, Value};

/// The request to evaluate.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Source address (IPv4 or IPv6).
    #[arg(long)]
    pub src: String,
    /// User-Agent header (omit for a request without one).
    #[arg(long)]
    pub ua: Option<String>,
    /// Request path.
    #[arg(long)]
    pub path: Option<String>,
    /// HTTP method.
    #[arg(long)]
    pub method: Option<String>,
    /// Host header.
    #[arg(long)]
    pub host: Option<String>,
    /// An extra SPOE argument, for `arg:NAME` limit keys; repeatable.
    #[arg(long = "arg", value_name = "NAME=VALUE")]
    pub args: Vec<String>,
    /// Evaluate the same request this many times at the same instant and explain the
    /// last one (shows when a burst hits a rate limit).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub repeat: u32,
    /// Print one JSON object (request, steps with their notes, decision, variables).
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when the request would be denied (0 when allowed), for scripts.
    #[arg(long)]
    pub exit_code: bool,
}

/// Evaluates and explains; exit 2 for a bad argument, 1 for a bad configuration.
pub fn run(path: &Path, args: &EvalArgs) -> ExitCode {
    let src = match args.src.trim().parse::<IpAddr>() {
        Ok(src) => canonical(src),
        Err(_) => {
            eprintln!("--src {:?}: not an IPv4 or IPv6 address", args.src);
            return ExitCode::from(2);
        }
    };
    let mut extra = Vec::with_capacity(args.args.len());
    for pair in &args.args {
        let Some((name, value)) = pair.split_once('=') else {
            eprintln!("--arg {pair:?}: expected NAME=VALUE");
            return ExitCode::from(2);
        };
        extra.push(Arg {
            name: Bytes::from(name.to_string()),
            value: TypedData::String(Bytes::from(value.to_string())),
        });
    }
    let Some((_config, engine)) = super::load(path) else {
        return ExitCode::FAILURE;
    };
    let request = Request {
        src: Some(src),
        method: bytes(&args.method),
        path: bytes(&args.path),
        host: bytes(&args.host),
        ua: bytes(&args.ua),
        args: extra.iter().map(ArgRef::of).collect(),
    };
    // Offline, every bucket starts full; --repeat replays the request at one instant.
    let now = Instant::now();
    for _ in 1..args.repeat {
        engine.evaluate(&request, now);
    }
    let (verdict, explanation) = engine.explain(&request, &Context::rules_only(now));
    if args.json {
        say!("{}", as_json(&request, args.repeat, &explanation, &verdict));
    } else {
        print_text(&request, args.repeat, &explanation, &verdict);
    }
    match (args.exit_code, verdict.decision) {
        (true, Decision::Deny) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

/// A non-empty option as bytes.
fn bytes(value: &Option<String>) -> Option<&[u8]> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(str::as_bytes)
}

fn print_text(request: &Request<'_>, repeat: u32, explanation: &Explanation, verdict: &Verdict) {
    let show = |value: Option<&[u8]>| {
        value.map_or("-".to_string(), |v| {
            format!("{:?}", String::from_utf8_lossy(v))
        })
    };
    say!(
        "request: src={} method={} path={} host={} ua={}",
        request.src.map_or_else(|| "-".into(), |s| s.to_string()),
        show(request.method),
        show(request.path),
        show(request.host),
        show(request.ua)
    );
    if repeat > 1 {
        say!(
            "(after {} identical requests at the same instant)",
            repeat - 1
        );
    }
    for line in explanation.lines() {
        say!("  {line}");
    }
    say!(
        "decision: {} (reason {}, rule {})",
        verdict.decision.as_str(),
        verdict.reason.as_str(),
        if verdict.rule.is_empty() {
            "-".into()
        } else {
            String::from_utf8_lossy(&verdict.rule)
        }
    );
    say!("variables (with option var-prefix guard):");
    verdict.each_action(|name, value| {
        say!("  txn.guard.{name:<12} = {}", text(value));
    });
}

/// A variable's value as `eval` prints it: strings quoted, numbers plain.
fn text(value: Value<'_>) -> String {
    match value {
        Value::String(s) => format!("{:?}", String::from_utf8_lossy(s)),
        Value::Int32(v) => v.to_string(),
        Value::Uint32(v) => v.to_string(),
        other => format!("{other:?}"),
    }
}

/// A variable's value as JSON.
fn value_json(value: Value<'_>) -> Json {
    match value {
        Value::String(s) | Value::Binary(s) => Json::from(String::from_utf8_lossy(s)),
        Value::Int32(v) => Json::from(v),
        Value::Uint32(v) => Json::from(v),
        Value::Int64(v) => Json::from(v),
        Value::Uint64(v) => Json::from(v),
        Value::Bool(b) => Json::from(b),
        Value::Null => Json::Null,
        Value::Ipv4(a) => Json::from(a.to_string()),
        Value::Ipv6(a) => Json::from(a.to_string()),
    }
}

fn as_json(
    request: &Request<'_>,
    repeat: u32,
    explanation: &Explanation,
    verdict: &Verdict,
) -> Json {
    let field = |value: Option<&[u8]>| value.map(|v| String::from_utf8_lossy(v).into_owned());
    let args: Map<String, Json> = request
        .args
        .iter()
        .map(|arg| {
            (
                String::from_utf8_lossy(arg.name).into_owned(),
                value_json(arg.value),
            )
        })
        .collect();
    let mut variables = Map::new();
    verdict.each_action(|name, value| {
        variables.insert(name.to_string(), value_json(value));
    });
    json!({
        "request": {
            "src": request.src.map(|s| s.to_string()),
            "method": field(request.method),
            "path": field(request.path),
            "host": field(request.host),
            "ua": field(request.ua),
            "args": args,
        },
        "repeat": repeat,
        "source": explanation.source,
        "steps": explanation.steps,
        "decision": {
            "action": verdict.decision.as_str(),
            "reason": verdict.reason.as_str(),
            "rule": String::from_utf8_lossy(&verdict.rule),
            "status": verdict.status(),
            "retry_after": verdict.retry_after,
            "asn": verdict.asn,
            "dry_run": verdict.dry_run.as_ref().map(|d| String::from_utf8_lossy(&d.rule).into_owned()),
        },
        "variables": variables,
    })
}
