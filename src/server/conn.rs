//! One SPOP session, from HELLO to DISCONNECT (SPOE.txt §3.2), as explicit states:
//!
//! ```text
//!   Hello ──HAPROXY-HELLO──► Serving ──NOTIFY──► ACK (batched) ──┐
//!     │  (healthcheck: AGENT-HELLO, close)  ▲                    │
//!     │                                     └────────────────────┘
//!     └──► Closing: AGENT-DISCONNECT(status, message), close
//!          on protocol error (its status), HAPROXY-DISCONNECT (0), idle (2), shutdown (0)
//! ```
//!
//! Shutting down, a session is drained rather than cut: it holds its answers until
//! HAProxy has nothing more in flight on it, then writes them with the DISCONNECT in one
//! write, so that no NOTIFY HAProxy sends meets a closed session (see [`DRAIN_QUIET`]).
//!
//! The hot path (Serving) works on two buffers per connection, reused for its whole
//! life: one read fills `input` with everything the socket has; every complete frame in
//! it is answered in place (a NOTIFY is read without copying,
//! [`crate::spop::notify`], decided by the [`Agent`](crate::agent::Agent), and its ACK
//! written straight into `output` from the verdict by an [`AckWriter`]); then one write
//! sends every ACK. Nothing is allocated per frame
//! for messages of up to [`INLINE_ARGS`](crate::spop::notify::INLINE_ARGS)
//! arguments. Other frames (HELLO, DISCONNECT, errors) take the owned
//! [`Frame`] path. EOF or a TCP reset at any point is a normal close (HAProxy 3.x
//! resets idle connections without a DISCONNECT).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::{debug, field, info_span, trace, warn, Instrument};

use super::Service;
use crate::agent::Decider;
use crate::decision::Request;
use crate::metrics::ConnectionDrop;
use crate::spop::codec::PREFIX;
use crate::spop::hello::negotiate;
use crate::spop::notify::find_message;
use crate::spop::{
    header, AckWriter, Disconnect, Error, Frame, FrameType, Payload, Scope, SpopCodec, Status,
};
use crate::util::slots::Slot;

/// How long to keep reading (and discarding) after our DISCONNECT, so that unread input
/// does not turn our close into a reset that could destroy the DISCONNECT in flight.
const LINGER: Duration = Duration::from_millis(500);

/// Draining a connection when the agent shuts down.
///
/// SPOP has no "go away": a DISCONNECT that crosses a NOTIFY in flight fails that
/// request in HAProxy (`txn.guard.error`). So a draining connection holds its answers
/// instead of writing them: with its frames unanswered, HAProxy sends no more on it than
/// its window (`max-waiting-frames`, 20) and puts new requests on other connections (the
/// new agent's). Once nothing has arrived for [`DRAIN_QUIET`] — everything in flight is
/// in — it writes the held ACKs and the DISCONNECT in one write; HAProxy reads the ACKs
/// before the DISCONNECT, so no request fails. Answers are held [`DRAIN_HOLD`] at most.
/// An idle connection is kept open for its next frame (HAProxy may pick it from its pool
/// of idle connections at any moment, so a DISCONNECT alone could cross a NOTIFY) for
/// half the shutdown grace when a new agent takes over
/// ([`Service::drain_for_takeover`](super::Service::drain_for_takeover)), briefly when
/// the agent just stops; only then is it
/// disconnected alone. What can still cross — HAProxy sending on a connection in the
/// instant its DISCONNECT is on the way — is retried by the shipped haproxy.cfg
/// (`send-spoe-group guard guard-retry`), which lands on another connection.
///
/// This is the silence after which a draining connection has received all HAProxy sent
/// it.
pub const DRAIN_QUIET: Duration = Duration::from_millis(5);

/// The longest a draining connection holds an answer: well below HAProxy's
/// `timeout processing` (100 ms in the example configuration).
pub const DRAIN_HOLD: Duration = Duration::from_millis(25);

/// Free space asked of the input buffer before each read: a read takes whatever the
/// socket holds, up to this, so a pipelining HAProxy's burst is answered in one batch.
const READ_SPACE: usize = 32 * 1024;

/// Runs one SPOP session over `stream` to completion: HELLO, NOTIFY/ACK, DISCONNECT.
///
/// Never returns an error: every ending is logged here, at the level it deserves. `peer`
/// labels the connection's tracing span. Works over any byte stream (TCP, unix socket,
/// an in-memory pipe in tests). `slot` is the connection's place among
/// `max_connections`: it is marked established after the HELLO, and its eviction before
/// that ends the session.
pub async fn serve_stream<S>(
    stream: S,
    peer: String,
    service: Arc<Service>,
    shutdown: CancellationToken,
    slot: Slot,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let span =
        info_span!("conn", peer = %peer, engine_id = field::Empty, max_frame_size = field::Empty);
    async move {
        let metrics = &service.agent.metrics;
        let _active = metrics.connections_active.hold();
        metrics.connections.inc();
        let hello_deadline = tokio::time::Instant::now() + service.hello_timeout;
        let mut conn = Connection {
            io: stream,
            input: BytesMut::new(),
            output: BytesMut::new(),
            codec: SpopCodec::new(service.max_frame_size),
            service: &service,
            stopping: Box::pin(shutdown.cancelled_owned()),
            evicted: Box::pin(slot.eviction().clone().cancelled_owned()),
            slot,
            established: false,
            idle_timer: Box::pin(tokio::time::sleep_until(hello_deadline)),
            last_read: tokio::time::Instant::now(),
            last_frame: hello_deadline,
            draining: None,
            held_since: None,
        };
        let ending = conn.run().await;
        conn.close(ending).await;
    }
    .instrument(span)
    .await
}

/// Why a session ends, and so what (if anything) to send before closing.
#[derive(Debug)]
enum Ending {
    /// The peer closed or reset the connection: nothing to send.
    PeerGone,
    /// A health check was answered.
    Healthcheck,
    /// HAProxy sent HAPROXY-DISCONNECT: answer with status 0.
    PeerDisconnect(Disconnect),
    /// No frame within the idle timeout.
    Idle,
    /// No complete HAPROXY-HELLO within the handshake deadline.
    HelloTimeout,
    /// Evicted before its HELLO, to admit a new connection at `max_connections`.
    Evicted,
    /// The peer did not take what was written within the write deadline.
    WriteTimeout,
    /// The agent is shutting down and the connection has been idle since (for
    /// [`Service::drain_wait`](super::Service::drain_wait)).
    Shutdown,
    /// The agent is shutting down; the last answers went out with a DISCONNECT.
    Drained,
    /// The peer broke the protocol.
    Protocol(Error),
}

impl From<Error> for Ending {
    /// Classifies a codec error: the peer going away is an ordinary ending.
    fn from(err: Error) -> Self {
        if err.is_peer_gone() {
            Ending::PeerGone
        } else {
            Ending::Protocol(err)
        }
    }
}

struct Connection<'a, S> {
    io: S,
    /// Bytes received and not yet handled.
    input: BytesMut,
    /// Frames encoded and not yet written.
    output: BytesMut,
    /// Frame lengths and the negotiated max-frame-size.
    codec: SpopCodec,
    service: &'a Service,
    /// Resolves when the agent shuts down; made once, so that waiting costs no
    /// registration per read.
    stopping: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Resolves when the connection is evicted (see [`crate::util::slots`]); only
    /// listened to before the HELLO.
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The connection's slot among `max_connections`.
    slot: Slot,
    /// The HELLO is done: the idle timeout applies instead of the handshake deadline,
    /// and eviction no longer.
    established: bool,
    /// Fires at or before the idle (or handshake) deadline; pushed back lazily (only
    /// when it fires early), so that a read costs no timer operation.
    idle_timer: Pin<Box<Sleep>>,
    /// When the last bytes arrived.
    last_read: tokio::time::Instant,
    /// Before the HELLO, the handshake deadline; after it, when the last complete frame
    /// arrived: the idle deadline is this plus the idle timeout (bytes of a frame still
    /// coming do not push it back, so a trickling peer cannot hold its slot).
    last_frame: tokio::time::Instant,
    /// Set when the agent starts shutting down: until when the connection waits for
    /// its last batch, to answer it with the DISCONNECT (see [`DRAIN_QUIET`]).
    draining: Option<tokio::time::Instant>,
    /// While draining: since when answers are held in `output`.
    held_since: Option<tokio::time::Instant>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<'_, S> {
    fn metrics(&self) -> &crate::metrics::Metrics {
        &self.service.agent.metrics
    }

    async fn run(&mut self) -> Ending {
        // Hello: only HAPROXY-HELLO (or HAPROXY-DISCONNECT) is valid.
        let first = match self.next_frame().await {
            Ok(frame) => frame,
            Err(ending) => return ending,
        };
        self.metrics().frames.of(first.payload.frame_type()).inc();
        let hello = match first.payload {
            Payload::HaproxyHello(kv) => kv,
            Payload::HaproxyDisconnect(d) => return Ending::PeerDisconnect(d),
            _ => {
                return Ending::Protocol(Error::Unexpected(
                    "expected HAPROXY-HELLO as the first frame",
                ))
            }
        };
        let negotiated = match negotiate(&hello, self.service.max_frame_size) {
            Ok(negotiated) => negotiated,
            Err(err) => return Ending::Protocol(err),
        };
        let span = tracing::Span::current();
        span.record("max_frame_size", negotiated.max_frame_size);
        if let Some(id) = &negotiated.engine_id {
            span.record("engine_id", String::from_utf8_lossy(id).as_ref());
        }
        if let Err(ending) = self.send(negotiated.agent_hello()).await {
            return ending;
        }
        self.metrics().frames.of(FrameType::AgentHello).inc();
        self.established = true;
        self.slot.set_rank(None);
        self.last_frame = self.last_read;
        if negotiated.healthcheck {
            self.metrics().healthchecks.inc();
            return Ending::Healthcheck;
        }
        self.codec.set_max_frame_size(negotiated.max_frame_size);
        debug!("session established");

        // Serving: answer every frame received so far, write all the answers at once,
        // read again.
        loop {
            let answered = self.answer_received();
            if self.draining.is_some() {
                // Hold the answers (see DRAIN_QUIET).
                if let Err(ending) = answered {
                    return ending;
                }
                if !self.output.is_empty() && self.held_since.is_none() {
                    self.held_since = Some(tokio::time::Instant::now());
                }
            } else {
                let written = self.write_output().await;
                if let Err(ending) = answered.and(written) {
                    return ending;
                }
            }
            match self.read().await {
                Ok(()) => {}
                Err(Ending::Shutdown) => {
                    // Answer what has already arrived, with the DISCONNECT.
                    if let Some(Ok(n)) = self.io.read_buf(&mut self.input).now_or_never() {
                        trace!(bytes = n, "read at shutdown");
                    }
                    if let Err(ending) = self.answer_received() {
                        return ending;
                    }
                    return self.answer_and_disconnect().await;
                }
                Err(ending) => return ending,
            }
        }
    }

    /// Writes the answers in `output` with a DISCONNECT behind them, in one write, while
    /// draining.
    async fn answer_and_disconnect(&mut self) -> Ending {
        let disconnect = Disconnect {
            status: Status::NORMAL,
            message: Bytes::from_static(b"agent shutting down"),
        };
        let frame = Frame::new(0, 0, Payload::AgentDisconnect(disconnect));
        if let Err(err) = self.codec.encode(frame, &mut self.output) {
            return err.into();
        }
        self.metrics().frames.of(FrameType::AgentDisconnect).inc();
        match self.write_output().await {
            Ok(()) => Ending::Drained,
            Err(ending) => ending,
        }
    }

    /// Reads what the socket has into `input`, waiting for the idle timeout at most;
    /// once the agent shuts down, see [`Connection::drain_deadline`].
    async fn read(&mut self) -> Result<(), Ending> {
        if self.input.capacity() - self.input.len() < READ_SPACE {
            self.input.reserve(READ_SPACE);
        }
        loop {
            let drained = self.drain_deadline().map(tokio::time::sleep_until);
            tokio::select! {
                biased;
                () = self.stopping.as_mut(), if self.draining.is_none() => {
                    let wait = self.service.drain_wait();
                    self.draining = Some(tokio::time::Instant::now() + wait);
                    continue;
                }
                () = async { if let Some(d) = drained { d.await } }, if self.draining.is_some() => {
                    return Err(Ending::Shutdown);
                }
                () = self.evicted.as_mut(), if !self.established => {
                    return Err(Ending::Evicted);
                }
                read = self.io.read_buf(&mut self.input) => {
                    self.last_read = tokio::time::Instant::now();
                    return match read {
                        // EOF, inside a frame or not: the peer is gone.
                        Ok(0) => Err(Ending::PeerGone),
                        Ok(_) => Ok(()),
                        Err(err) => Err(Error::Io(err).into()),
                    };
                }
                () = self.idle_timer.as_mut() => {
                    let deadline = self.idle_deadline();
                    if deadline <= tokio::time::Instant::now() {
                        return Err(if self.established { Ending::Idle } else { Ending::HelloTimeout });
                    }
                    self.idle_timer.as_mut().reset(deadline);
                }
            }
        }
    }

    /// When the connection is dropped if no (further) frame is complete: the handshake
    /// deadline before the HELLO, the idle timeout after the last frame since.
    fn idle_deadline(&self) -> tokio::time::Instant {
        if self.established {
            self.last_frame + self.service.idle_timeout
        } else {
            self.last_frame
        }
    }

    /// While draining, when to stop waiting for input: [`DRAIN_QUIET`] after the last
    /// read while answers are held or a frame is incomplete (at most [`DRAIN_HOLD`] after
    /// the first held answer), else after
    /// [`Service::drain_wait`](super::Service::drain_wait).
    fn drain_deadline(&self) -> Option<tokio::time::Instant> {
        let end = self.draining?;
        if self.output.is_empty() && self.input.is_empty() {
            return Some(end);
        }
        let quiet = self.last_read + DRAIN_QUIET;
        let held = self.held_since.map_or(quiet, |since| since + DRAIN_HOLD);
        Some(quiet.min(held).min(end))
    }

    /// Waits for one whole frame (the HELLO).
    async fn next_frame(&mut self) -> Result<Frame, Ending> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.input)? {
                return Ok(frame);
            }
            self.read().await?;
        }
    }

    /// Encodes `frame` and writes it with anything else pending.
    async fn send(&mut self, frame: Frame) -> Result<(), Ending> {
        self.codec.encode(frame, &mut self.output)?;
        self.write_output().await
    }

    /// Writes everything in `output`, within the write deadline. The usual write
    /// completes at once (the socket buffer has room) and arms no timer.
    async fn write_output(&mut self) -> Result<(), Ending> {
        if self.output.is_empty() {
            return Ok(());
        }
        let write = self.io.write_all(&self.output);
        tokio::pin!(write);
        let written = match write.as_mut().now_or_never() {
            Some(written) => written,
            None => match tokio::time::timeout(self.service.write_timeout, write).await {
                Ok(written) => written,
                Err(_) => {
                    self.output.clear();
                    return Err(Ending::WriteTimeout);
                }
            },
        };
        self.output.clear();
        written.map_err(|err| Error::Io(err).into())
    }

    /// Answers every complete frame in `input` into `output`; `Err` ends the session
    /// (the answers before it are still written).
    fn answer_received(&mut self) -> Result<(), Ending> {
        // One rule set for the batch: a reload swaps in the next one between batches.
        let decider = self.service.agent.decider();
        while let Some(body_len) = self.codec.body_len(&mut self.input)? {
            self.last_frame = self.last_read;
            let body = self
                .input
                .get(PREFIX..PREFIX + body_len)
                .unwrap_or_default();
            let answered = answer(body, &mut self.output, &self.codec, self.service, &decider);
            self.input.advance(PREFIX + body_len);
            answered?;
        }
        Ok(())
    }

    /// Sends what the ending calls for, then closes.
    async fn close(mut self, ending: Ending) {
        let disconnect = match ending {
            Ending::PeerGone => {
                debug!("connection closed by peer");
                return;
            }
            Ending::Healthcheck => {
                debug!("health check answered");
                let _ = self.io.shutdown().await;
                return;
            }
            Ending::PeerDisconnect(d) => {
                debug!(status = d.status.0, haproxy_message = %String::from_utf8_lossy(&d.message), "HAProxy disconnected");
                Disconnect::new(Status::NORMAL)
            }
            Ending::Idle => {
                debug!(
                    idle_timeout_secs = self.service.idle_timeout.as_secs(),
                    "idle timeout"
                );
                self.metrics()
                    .connections_dropped
                    .of(ConnectionDrop::Idle)
                    .inc();
                Disconnect::new(Status::TIMEOUT)
            }
            Ending::HelloTimeout => {
                debug!(
                    hello_timeout_secs = self.service.hello_timeout.as_secs(),
                    "no HAPROXY-HELLO in time"
                );
                self.metrics()
                    .connections_dropped
                    .of(ConnectionDrop::HelloTimeout)
                    .inc();
                Disconnect {
                    status: Status::TIMEOUT,
                    message: Bytes::from_static(b"no HAPROXY-HELLO in time"),
                }
            }
            Ending::Evicted => {
                debug!("evicted before its HELLO: max_connections reached");
                self.metrics()
                    .connections_dropped
                    .of(ConnectionDrop::Evicted)
                    .inc();
                Disconnect {
                    status: Status::RESOURCE,
                    message: Bytes::from_static(b"too many connections"),
                }
            }
            Ending::WriteTimeout => {
                self.metrics()
                    .connections_dropped
                    .of(ConnectionDrop::WriteTimeout)
                    .inc();
                if let Some(suppressed) = self.service.protocol_log.check(Instant::now()) {
                    warn!(
                        write_timeout_secs = self.service.write_timeout.as_secs(),
                        suppressed, "the peer does not read its answers; disconnecting"
                    );
                } else {
                    self.metrics().protocol_error_logs_suppressed.inc();
                }
                // The socket does not drain: nothing more can be sent.
                return;
            }
            Ending::Shutdown => {
                debug!("shutting down");
                Disconnect {
                    status: Status::NORMAL,
                    message: Bytes::from_static(b"agent shutting down"),
                }
            }
            Ending::Drained => {
                debug!("shutting down: last answers sent with the DISCONNECT");
                if self.io.shutdown().await.is_ok() {
                    self.linger().await;
                }
                return;
            }
            Ending::Protocol(Error::Io(err)) => {
                debug!(error = %err, "i/o error");
                return;
            }
            Ending::Protocol(err) => {
                self.metrics().protocol_errors.of(err.kind()).inc();
                if let Some(suppressed) = self.service.protocol_log.check(Instant::now()) {
                    warn!(error = %err, kind = err.kind().as_str(), status = err.status().0, suppressed, "protocol error; disconnecting");
                } else {
                    self.metrics().protocol_error_logs_suppressed.inc();
                }
                Disconnect {
                    status: err.status(),
                    message: Bytes::from(err.to_string()),
                }
            }
        };
        let frame = Frame::new(0, 0, Payload::AgentDisconnect(disconnect));
        self.metrics().frames.of(FrameType::AgentDisconnect).inc();
        if self.send(frame).await.is_err() || self.io.shutdown().await.is_err() {
            return;
        }
        self.linger().await;
    }

    /// Reads and discards until HAProxy closes too (or briefly), so our close is a FIN.
    async fn linger(&mut self) {
        let mut sink = [0u8; 4096];
        let io = &mut self.io;
        let _ = tokio::time::timeout(LINGER, async {
            while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

/// Answers one frame `body` of the Serving state into `output`; `Err` ends the session.
///
/// A NOTIFY is read in place, decided, and its ACK written from the verdict; any other
/// frame is decoded into a [`Frame`] (none of them is valid here but HAPROXY-DISCONNECT).
fn answer(
    body: &[u8],
    output: &mut BytesMut,
    codec: &SpopCodec,
    service: &Service,
    decider: &Decider<'_>,
) -> Result<(), Ending> {
    let (head, payload) = header(body)?;
    if head.code != FrameType::Notify as u8 || !head.flags.fin() {
        return other_frame(body, service);
    }
    let metrics = &service.agent.metrics;
    metrics.frames.of(FrameType::Notify).inc();
    let verdict = find_message(payload, &service.message)?
        .map(|args| decider.decide(&Request::from_args(args), Instant::now()));
    let mut ack = AckWriter::begin(output, head.stream_id, head.frame_id);
    match &verdict {
        Some(verdict) => verdict.each_action(|name, value| {
            ack.set_var(Scope::Txn, name.as_bytes(), value);
        }),
        None => metrics.unknown_messages.inc(),
    }
    ack.finish(codec)?;
    metrics.frames.of(FrameType::Ack).inc();
    trace!(stream_id = head.stream_id, frame_id = head.frame_id, "ACK");
    Ok(())
}

/// Any frame but a whole NOTIFY, in the Serving state: always the end of the session.
fn other_frame(body: &[u8], service: &Service) -> Result<(), Ending> {
    let frame = Frame::decode(&Bytes::copy_from_slice(body))?;
    service
        .agent
        .metrics
        .frames
        .of(frame.payload.frame_type())
        .inc();
    Err(match frame.payload {
        Payload::NotifyFragment(_) | Payload::Unset(_) => Ending::Protocol(Error::Fragmented),
        Payload::HaproxyDisconnect(d) => Ending::PeerDisconnect(d),
        Payload::HaproxyHello(_) => {
            Ending::Protocol(Error::Unexpected("HAPROXY-HELLO after the handshake"))
        }
        Payload::Notify(_) => Ending::Protocol(Error::Unexpected("NOTIFY read twice")),
        Payload::AgentHello(_) | Payload::AgentDisconnect(_) | Payload::Ack(_) => {
            Ending::Protocol(Error::Unexpected("agent frame type sent to the agent"))
        }
    })
}

#[cfg(test)]
mod tests;
