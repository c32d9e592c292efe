//! The operations HTTP listener (`[metrics] listen`): `GET /metrics` (Prometheus),
//! `GET /healthz` (the process answers), `GET /readyz` (rules loaded and the SPOP
//! listener accepting; 503 otherwise, e.g. while shutting down).
//!
//! Plain HTTP/1.1 on hyper, for scrapers and probes on a trusted network: bind it to
//! loopback or a private address. It is bounded like the SPOP side: at most
//! [`MAX_CONNECTIONS`] at once, a deadline to send the request head, GET only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

    /// Answers one request.
    pub fn respond(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        match path {
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
                "not found: try /metrics, /healthz, /readyz\n",
            ),
        }
    }
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
                let response = admin.respond(request.method(), request.uri().path());
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
