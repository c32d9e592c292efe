//! `spoa-guard top`: a terminal view of who is hitting us, refreshed like `top`. It
//! reads `GET /top` from a running agent's operations listener (`[metrics] listen`) and
//! prints, for every dimension (source, source network, ASN, path, host, user agent),
//! the heaviest keys with their request count and share, for all traffic or for denied
//! traffic.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The dimensions in display order: JSON key and title.
const DIMENSIONS: [(&str, &str); 6] = [
    ("src_net", "SOURCE NETWORK"),
    ("src", "SOURCE"),
    ("asn", "ASN"),
    ("path", "PATH"),
    ("host", "HOST"),
    ("ua", "USER AGENT"),
];

/// Fetches `GET /top?window=…&n=…` from the agent at `addr`.
///
/// # Errors
///
/// Connection refused, timeout, a non-200 answer or a body that is not JSON, each
/// explained for the operator.
pub async fn fetch(addr: SocketAddr, window: &str, n: usize) -> Result<Value, String> {
    let fetch = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e} (is [metrics] listen set?)"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        tokio::spawn(connection);
        let request = Request::get(format!("/top?window={window}&n={n}"))
            .header(HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{addr}: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "{addr}/top: {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{addr}/top: not JSON: {e}"))
    };
    tokio::time::timeout(FETCH_TIMEOUT, fetch)
        .await
        .map_err(|_| format!("{addr}: no answer within {FETCH_TIMEOUT:?}"))?
}

/// Renders a `/top` report for `class` (`all` or `denied`), `width` columns wide.
pub fn render(report: &Value, class: &str, width: usize) -> String {
    let number = |value: Option<&Value>| value.and_then(Value::as_u64).unwrap_or(0);
    let at = |pointer: &str| number(report.pointer(pointer));
    let mut out = String::new();
    let requests = at("/totals/requests");
    let denied = at("/totals/denied");
    let ratio = if requests == 0 {
        0.0
    } else {
        denied as f64 / requests as f64 * 100.0
    };
    let _ = writeln!(
        out,
        "spoa-guard top — last {}s (covering {:.0}s): {requests} requests, {denied} denied ({ratio:.1}%)",
        at("/window_secs"),
        report
            .pointer("/covered_secs")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
    );
    let exact = report
        .pointer("/sampling/exact")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let counts = if exact {
        "exact (every request counted)".to_string()
    } else {
        let interval = at("/sampling/interval").max(at("/sampling/interval_denied"));
        format!("estimated (1 in {interval} sampled; ±error shown)")
    };
    let _ = writeln!(out, "showing {class} traffic; counts {counts}");
    let key_width = width.saturating_sub(24).max(20);
    for (key, title) in DIMENSIONS {
        let _ = writeln!(out);
        let _ = writeln!(out, "{:>10} {:>6}  {title}", "REQUESTS", "SHARE");
        let entries = report
            .get(class)
            .and_then(|c| c.get(key))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if entries.is_empty() {
            let _ = writeln!(out, "{:>10} {:>6}  -", "", "");
        }
        for entry in entries {
            let count = number(entry.get("count"));
            let error = number(entry.get("error"));
            let share = entry.get("share").and_then(Value::as_f64).unwrap_or(0.0) * 100.0;
            let name: String = entry
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .chars()
                .take(key_width)
                .collect();
            let count = if error > 0 {
                format!("{count}±{error}")
            } else {
                count.to_string()
            };
            let _ = writeln!(out, "{count:>10} {share:>5.1}%  {name}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_dimension_with_counts_and_shares() {
        let report: Value = serde_json::json!({
            "window_secs": 60, "covered_secs": 55.0, "slot_secs": 10, "counters": 100,
            "totals": { "requests": 1000, "denied": 250 },
            "sampling": { "exact": true, "interval": 1, "interval_denied": 1, "dropped": 0 },
            "all": {
                "src": [{ "key": "203.0.113.9", "count": 800, "share": 0.8, "error": 0 }],
                "src_net": [{ "key": "203.0.113.0/24", "count": 900, "share": 0.9, "error": 3 }],
                "asn": [], "path": [], "host": [], "ua": []
            },
            "denied": { "src": [], "src_net": [], "asn": [], "path": [], "host": [], "ua": [] }
        });
        let text = render(&report, "all", 100);
        assert!(text.contains("1000 requests, 250 denied (25.0%)"), "{text}");
        assert!(text.contains("       800  80.0%  203.0.113.9"), "{text}");
        assert!(text.contains("     900±3  90.0%  203.0.113.0/24"), "{text}");
        assert!(text.find("SOURCE NETWORK") < text.find("USER AGENT"));
        let denied = render(&report, "denied", 100);
        assert!(!denied.contains("203.0.113.9"), "{denied}");
    }
}
