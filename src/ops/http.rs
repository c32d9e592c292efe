//! A small, bounded HTTP/1.1 server on hyper for the operations listeners (`[metrics]`
//! and `[admin]`), over TCP or a unix socket, and the deadlines of its connections; one
//! [`Handler`] answers each request from its [`Call`].
//!
//! Bounds, so that no client — a slowloris attacker holding hundreds of sockets
//! included — can keep `/healthz` or a scrape from answering:
//!
//! - One request per connection (`Connection: close`): no connection idles between
//!   requests holding a slot; probes and scrapers open one per request anyway.
//! - [`MAX_CONNECTIONS`] slots, and a new connection is always admitted: with every slot
//!   taken, the connection with the least progress is evicted (the oldest still waiting
//!   for its request head first; see [`super::slots`]). The accept loop never waits for a
//!   slot.
//! - Deadlines, each for a whole stage rather than between two bytes, so trickling
//!   does not extend them: the request head within [`HEADER_TIMEOUT`] of the accept
//!   (a connection that sends nothing included), the body within [`BODY_TIMEOUT`] of the
//!   head (else 408), the response handed to the kernel within [`WRITE_TIMEOUT`] of the
//!   handler's answer (a client that does not read is dropped). hyper's own header
//!   timer is off: `supervise` owns every deadline, so each drop is counted once, by
//!   why, in `spoa_guard_http_connections_dropped_total{listener, reason}`.
//! - Capped bodies ([`Handler::MAX_BODY`]) and, on TCP, a fixed send buffer
//!   ([`SEND_BUFFER`]): the kernel memory a connection that does not read can pin is
//!   bounded too.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::slots::{Slot, Slots, Stage};
use crate::metrics::{Label, Metrics, OpsDrop, OpsListener};
use crate::util::{Accepted, Listener};

/// Connections served at once; at the cap, a new one evicts the one with the least
/// progress (see [`super::slots`]).
pub const MAX_CONNECTIONS: usize = 64;
/// Time from the accept to the whole request head. A probe or a scraper sends its head
/// at once; only a stalled or hostile client needs more.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Time from the request head to the whole body (answered 408 past it).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(3);
/// Time from the handler's answer to the response written whole (into the kernel's
/// send buffer) and the connection shut: a client that does not read is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The send buffer of a TCP connection (the kernel doubles it for its bookkeeping):
/// without it, autotuning lets one connection that does not read hold megabytes (on
/// loopback) and the write deadline would never see it stall. Large enough for a scrape
/// at full speed on a LAN.
pub const SEND_BUFFER: usize = 64 * 1024;

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

/// `127.0.0.1:43210`, `unix uid 1000`, `unix`: one scalar for logs.
impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix { uid: Some(uid) } => write!(f, "unix uid {uid}"),
            Self::Unix { uid: None } => f.write_str("unix"),
        }
    }
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
    /// Which listener this handler serves, for the metric labels.
    const LISTENER: OpsListener;

    /// The agent's metrics, where the listener's dropped connections are counted.
    fn metrics(&self) -> &Metrics;

    /// The response to `call`.
    fn respond(self: Arc<Self>, call: Call) -> impl Future<Output = Response<Full<Bytes>>> + Send;
}

/// Serves `listener` with `handler` until `shutdown`.
pub async fn serve<H: Handler>(listener: Listener, handler: Arc<H>, shutdown: CancellationToken) {
    let slots = Slots::new(MAX_CONNECTIONS);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            // Waits for room only while every evicted connection is still closing.
            accepted = async {
                slots.room().await;
                listener.accept().await
            } => accepted,
        };
        let at = Instant::now();
        let handler = handler.clone();
        match accepted {
            Ok(Accepted::Tcp(stream, peer)) => {
                if let Err(err) = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER)
                {
                    debug!(error = %err, "operations connection: cannot set its send buffer");
                }
                // Every connection here may be evicted: after `room`, there is a slot.
                let Some((slot, _)) = slots.admit() else {
                    continue;
                };
                tokio::spawn(connection(stream, Peer::Tcp(peer), handler, slot, at));
            }
            Ok(Accepted::Unix(stream)) => {
                let uid = stream.peer_cred().ok().map(|cred| cred.uid());
                let Some((slot, _)) = slots.admit() else {
                    continue;
                };
                tokio::spawn(connection(stream, Peer::Unix { uid }, handler, slot, at));
            }
            Err(err) => {
                warn!(error = %err, "operations listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves one connection, accepted at `at`, holding `slot`; counts it if it is dropped.
async fn connection<S, H>(stream: S, peer: Peer, handler: Arc<H>, slot: Arc<Slot>, at: Instant)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let counts = handler.clone();
    let in_service = slot.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let (handler, slot) = (handler.clone(), in_service.clone());
        async move { Ok::<_, Infallible>(answer(handler, request, peer, &slot).await) }
    });
    let served = http1::Builder::new()
        .keep_alive(false)
        .header_read_timeout(None::<Duration>)
        .serve_connection(TokioIo::new(stream), service);
    if let Some(why) = supervise(served, &slot, at).await {
        debug!(%peer, reason = why.label(), "operations connection dropped");
        counts.metrics().ops_dropped.of(H::LISTENER, why).inc();
    }
}

/// Drives `served` (one connection) within its deadlines: the head by `at` +
/// [`HEADER_TIMEOUT`], the response by its answer + [`WRITE_TIMEOUT`] (the body's is
/// [`answer`]'s). Why it was dropped, or `None` when it ended on its own.
async fn supervise<F>(served: F, slot: &Slot, at: Instant) -> Option<OpsDrop>
where
    F: Future<Output = hyper::Result<()>>,
{
    tokio::pin!(served);
    let ended = |result: hyper::Result<()>| {
        if let Err(err) = result {
            debug!(error = %err, "operations connection ended with an error");
        }
        None
    };
    // A first read, before the connection counts as having had its chance to send.
    if let Poll::Ready(result) = poll_fn(|cx| Poll::Ready(served.as_mut().poll(cx))).await {
        return ended(result);
    }
    slot.polled();
    let (mut deadline, mut why) = (at + HEADER_TIMEOUT, Some(OpsDrop::HeaderTimeout));
    loop {
        tokio::select! {
            biased;
            () = slot.evicted() => return Some(OpsDrop::Evicted),
            result = served.as_mut() => return ended(result),
            () = slot.changed() => match slot.stage() {
                Some(Stage::Writing) => {
                    (deadline, why) = (Instant::now() + WRITE_TIMEOUT, Some(OpsDrop::WriteTimeout));
                }
                Some(Stage::Body | Stage::Handling) => why = None,
                Some(Stage::Head) | None => {}
            },
            () = tokio::time::sleep_until(deadline), if why.is_some() => return why,
        }
    }
}

/// Reads the body of `request` and asks the handler, moving `slot` through its stages.
async fn answer<H: Handler>(
    handler: Arc<H>,
    request: Request<Incoming>,
    peer: Peer,
    slot: &Slot,
) -> Response<Full<Bytes>> {
    let (parts, incoming) = request.into_parts();
    let body = if H::MAX_BODY == 0 {
        Bytes::new()
    } else {
        slot.enter(Stage::Body);
        match read_body(&*handler, incoming).await {
            Ok(body) => body,
            Err(refusal) => {
                slot.enter(Stage::Writing);
                return refusal;
            }
        }
    };
    slot.enter(Stage::Handling);
    let call = Call {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
        peer,
    };
    let response = handler.respond(call).await;
    slot.enter(Stage::Writing);
    response
}

/// The request body, at most [`Handler::MAX_BODY`] bytes within [`BODY_TIMEOUT`]; or the
/// refusal to send instead (413, or 408 counted as a body timeout).
async fn read_body<H: Handler>(
    handler: &H,
    incoming: Incoming,
) -> Result<Bytes, Response<Full<Bytes>>> {
    let read = Limited::new(incoming, H::MAX_BODY).collect();
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(_)) => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {} bytes (or broken)\n", H::MAX_BODY),
        )),
        Err(_) => {
            let dropped = &handler.metrics().ops_dropped;
            dropped.of(H::LISTENER, OpsDrop::BodyTimeout).inc();
            Err(text(StatusCode::REQUEST_TIMEOUT, "request body too slow\n"))
        }
    }
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
