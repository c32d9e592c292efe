//! The operations HTTP listener (`[metrics] listen`): `GET /metrics` (Prometheus),
//! `GET /healthz` (the process answers), `GET /readyz` (rules loaded and the SPOP
//! listener accepting; 503 otherwise, e.g. while shutting down), `GET /top` (the
//! heaviest sources, networks, ASNs, paths, hosts and user agents, as JSON).
//!
//! Plain HTTP/1.1 on hyper, for scrapers and probes on a trusted network: bind it to
//! loopback or a private address. It is bounded like the SPOP side: at most
//! [`MAX_CONNECTIONS`] at once, a deadline to send the request head, GET only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::exposition;
use crate::server::Shared;

/// Connections served at once; more wait in the backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoints read.
#[derive(Debug)]
pub struct Admin {
    shared: Arc<Shared>,
    registry: Registry,
    /// Set while the SPOP listener accepts connections.
    ready: AtomicBool,
}

impl Admin {
    /// The endpoints of the agent sharing `shared`; not ready until [`Admin::set_ready`].
    pub fn new(shared: Arc<Shared>) -> Arc<Admin> {
        Arc::new(Admin {
            registry: exposition::registry(shared.clone()),
            shared,
            ready: AtomicBool::new(false),
        })
    }

    /// Marks the agent ready (listener up, rules loaded) or not (shutting down).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The state the endpoints report on.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Answers one request (`query`: the URL's query string, if any).
    pub fn respond(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
    ) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        match path {
            "/top" => self.top(query.unwrap_or("")),
            "/metrics" => match exposition::encode(&self.registry) {
                Ok(body) => {
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    response.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(exposition::CONTENT_TYPE),
                    );
                    response
                }
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
            },
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                if self.ready.load(Ordering::Relaxed) {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz, /readyz, /top\n",
            ),
        }
    }
}

impl Admin {
    /// `GET /top?window=1m&n=10`: the heaviest hitters as JSON ([`crate::insight::TopReport`]).
    fn top(&self, query: &str) -> Response<Full<Bytes>> {
        let Some(insight) = &self.shared.insight else {
            return text(StatusCode::NOT_FOUND, "traffic insight is off\n");
        };
        let query = match TopQuery::parse(query, insight.max_window()) {
            Ok(query) => query,
            Err(message) => {
                let mut response = text(StatusCode::BAD_REQUEST, "");
                *response.body_mut() = Full::new(Bytes::from(format!("{message}\n")));
                return response;
            }
        };
        let report = insight.top(query.window, query.n, Instant::now());
        match serde_json::to_vec(&report) {
            Ok(body) => {
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
        }
    }
}

/// The parameters of `GET /top`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopQuery {
    /// `window=`: `30s`, `1m`, `5m` or plain seconds; default 1 minute.
    pub window: Duration,
    /// `n=`: entries per dimension, 1 to 100; default 10.
    pub n: usize,
}

impl TopQuery {
    /// Parses a query string; windows longer than `max_window` are refused.
    ///
    /// # Errors
    ///
    /// A malformed value, or one out of range, explained.
    pub fn parse(query: &str, max_window: Duration) -> Result<TopQuery, String> {
        let mut top = TopQuery {
            window: Duration::from_secs(60).min(max_window),
            n: 10,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "window" => {
                    top.window = parse_window(value)
                        .filter(|w| !w.is_zero() && *w <= max_window)
                        .ok_or_else(|| {
                            format!(
                                "window={value:?}: expected 30s, 1m, 5m or seconds, up to {}s",
                                max_window.as_secs()
                            )
                        })?;
                }
                "n" => {
                    top.n = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| format!("n={value:?}: expected 1 to 100"))?;
                }
                _ => return Err(format!("unknown parameter {key:?}: use window= and n=")),
            }
        }
        Ok(top)
    }
}

/// `30s`, `1m`, `5m`, `90` (seconds).
pub fn parse_window(text: &str) -> Option<Duration> {
    let (number, unit) = match text.strip_suffix('m') {
        Some(minutes) => (minutes, 60),
        None => (text.strip_suffix('s').unwrap_or(text), 1),
    };
    number
        .parse::<u64>()
        .ok()
        .map(|n| Duration::from_secs(n.saturating_mul(unit)))
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Binds the operations listener.
///
/// # Errors
///
/// Address in use, permission denied.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(error = %err, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let uri = request.uri();
                let response = admin.respond(request.method(), uri.path(), uri.query());
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(err) = served {
                debug!(%peer, error = %err, "metrics connection ended with an error");
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_query() {
        let max = Duration::from_secs(300);
        let parse = |q: &str| TopQuery::parse(q, max);
        assert_eq!(
            parse("").unwrap(),
            TopQuery {
                window: Duration::from_secs(60),
                n: 10
            }
        );
        assert_eq!(
            parse("window=5m&n=3").unwrap(),
            TopQuery { window: max, n: 3 }
        );
        assert_eq!(parse("window=30s").unwrap().window, Duration::from_secs(30));
        assert_eq!(parse("window=90").unwrap().window, Duration::from_secs(90));
        for bad in [
            "window=10m",
            "window=0",
            "window=x",
            "n=0",
            "n=101",
            "n=",
            "top=1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
