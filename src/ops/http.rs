//! A small, bounded HTTP/1.1 server on hyper for the operations listeners (`[metrics]`
//! and `[admin]`), over TCP or a unix socket: at most [`MAX_CONNECTIONS`] at once, a
//! deadline to send the request head, a capped request body read within a deadline, and
//! one [`Handler`] that answers each request from its [`Call`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::util::{Accepted, Listener};

/// Connections served at once; more wait in the backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to send its request body, once the head is in.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP client.
    Tcp(SocketAddr),
    /// A process on this host, through a unix socket: its user id, when the kernel
    /// says.
    Unix {
        /// The peer process's user id (`SO_PEERCRED`).
        uid: Option<u32>,
    },
}

/// One request, read whole.
#[derive(Debug)]
pub struct Call {
    /// The method.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The request headers.
    pub headers: HeaderMap,
    /// The body, at most [`Handler::MAX_BODY`] bytes.
    pub body: Bytes,
    /// Who sent it.
    pub peer: Peer,
}

/// Answers requests: one call per request.
pub trait Handler: Send + Sync + 'static {
    /// Largest request body accepted; a larger one is answered 413 without calling the
    /// handler. 0: bodies are not read (nor expected).
    const MAX_BODY: usize = 0;
    /// Whether a connection may carry more than one request. Off, each response closes
    /// its connection, so no idle connection holds a slot.
    const KEEP_ALIVE: bool = true;

    /// The response to `call`.
    fn respond(self: Arc<Self>, call: Call) -> impl Future<Output = Response<Full<Bytes>>> + Send;
}

/// Serves `listener` with `handler` until `shutdown`.
pub async fn serve<H: Handler>(listener: Listener, handler: Arc<H>, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let handler = handler.clone();
        match accepted {
            Ok(Accepted::Tcp(stream, peer)) => {
                tokio::spawn(async move {
                    connection(stream, Peer::Tcp(peer), handler).await;
                    drop(permit);
                });
            }
            Ok(Accepted::Unix(stream)) => {
                let uid = stream.peer_cred().ok().map(|cred| cred.uid());
                tokio::spawn(async move {
                    connection(stream, Peer::Unix { uid }, handler).await;
                    drop(permit);
                });
            }
            Err(err) => {
                warn!(error = %err, "operations listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves one connection.
async fn connection<S, H>(stream: S, peer: Peer, handler: Arc<H>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(answer(handler, request, peer).await) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(H::KEEP_ALIVE)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(err) = served {
        debug!(?peer, error = %err, "operations connection ended with an error");
    }
}

/// Reads the body of `request` (capped, within [`BODY_TIMEOUT`]) and asks the handler.
async fn answer<H: Handler>(
    handler: Arc<H>,
    request: Request<Incoming>,
    peer: Peer,
) -> Response<Full<Bytes>> {
    let (parts, incoming) = request.into_parts();
    let body = if H::MAX_BODY == 0 {
        Bytes::new()
    } else {
        let read = Limited::new(incoming, H::MAX_BODY).collect();
        match tokio::time::timeout(BODY_TIMEOUT, read).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(_)) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body over {} bytes (or broken)\n", H::MAX_BODY),
                )
            }
            Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "request body too slow\n"),
        }
    };
    let call = Call {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
        peer,
    };
    handler.respond(call).await
}

/// A response with `body` of `content_type`.
pub fn body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A plain-text response.
pub fn text(status: StatusCode, text: impl Into<Bytes>) -> Response<Full<Bytes>> {
    body(status, "text/plain; charset=utf-8", text)
}
