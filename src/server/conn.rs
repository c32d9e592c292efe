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
//! Frames are answered in batches: every frame already received is evaluated and its
//! ACK queued before one flush, so a pipelining HAProxy gets many ACKs per write.
//! EOF or a TCP reset at any point is a normal close (HAProxy 3.x resets idle
//! connections without a DISCONNECT).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, field, info, info_span, trace, warn, Instrument};

use super::Shared;
use crate::engine::{Decision, Request, Verdict};
use crate::insight::Observation;
use crate::metrics::Metrics;
use crate::spop::hello::negotiate;
use crate::spop::{
    Action, Disconnect, Error, Frame, FrameType, Message, Payload, SpopCodec, Status,
};

/// How long to keep reading (and discarding) after our DISCONNECT, so that unread input
/// does not turn our close into a reset that could destroy the DISCONNECT in flight.
const LINGER: Duration = Duration::from_millis(500);

/// Runs one SPOP session over `stream` to completion: HELLO, NOTIFY/ACK, DISCONNECT.
///
/// Never returns an error: every ending is logged here, at the level it deserves. `peer`
/// labels the connection's tracing span. Works over any byte stream (TCP, unix socket,
/// an in-memory pipe in tests).
pub async fn serve_stream<S>(
    stream: S,
    peer: String,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let span =
        info_span!("conn", peer = %peer, engine_id = field::Empty, max_frame_size = field::Empty);
    async move {
        let _active = Gauge::up(&shared.metrics.connections_active);
        Metrics::inc(&shared.metrics.connections_total);
        let codec = SpopCodec::new(shared.settings.max_frame_size);
        let mut conn = Connection {
            framed: Framed::new(stream, codec),
            shared: &shared,
        };
        let ending = conn.run(&shutdown).await;
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
    /// The agent is shutting down.
    Shutdown,
    /// The peer broke the protocol.
    Protocol(Error),
}

/// What waiting for the next frame produced.
enum Next {
    Frame(Frame),
    End(Ending),
}

struct Connection<'a, S> {
    framed: Framed<S, SpopCodec>,
    shared: &'a Shared,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<'_, S> {
    async fn run(&mut self, shutdown: &CancellationToken) -> Ending {
        // Hello: only HAPROXY-HELLO (or HAPROXY-DISCONNECT) is valid.
        let first = self.next(shutdown).await;
        if let Next::Frame(frame) = &first {
            self.shared.metrics.frame(frame.payload.frame_type());
        }
        let hello = match first {
            Next::Frame(Frame {
                payload: Payload::HaproxyHello(kv),
                ..
            }) => kv,
            Next::Frame(Frame {
                payload: Payload::HaproxyDisconnect(d),
                ..
            }) => return Ending::PeerDisconnect(d),
            Next::Frame(_) => {
                return Ending::Protocol(Error::Unexpected(
                    "expected HAPROXY-HELLO as the first frame",
                ))
            }
            Next::End(ending) => return ending,
        };
        let negotiated = match negotiate(&hello, self.shared.settings.max_frame_size) {
            Ok(negotiated) => negotiated,
            Err(err) => return Ending::Protocol(err),
        };
        let span = tracing::Span::current();
        span.record("max_frame_size", negotiated.max_frame_size);
        if let Some(id) = &negotiated.engine_id {
            span.record("engine_id", String::from_utf8_lossy(id).as_ref());
        }
        if let Err(err) = self.framed.send(negotiated.agent_hello()).await {
            return Ending::Protocol(err);
        }
        self.shared.metrics.frame(FrameType::AgentHello);
        if negotiated.healthcheck {
            Metrics::inc(&self.shared.metrics.healthchecks_total);
            return Ending::Healthcheck;
        }
        self.framed
            .codec_mut()
            .set_max_frame_size(negotiated.max_frame_size);
        debug!("session established");

        // Serving: answer every frame already received, then flush once.
        loop {
            let frame = match self.next(shutdown).await {
                Next::Frame(frame) => frame,
                Next::End(Ending::Shutdown) => return self.drain_then(Ending::Shutdown).await,
                Next::End(ending) => return ending,
            };
            if let Err(ending) = self.handle(frame).await {
                return ending;
            }
            while let Some(Some(ready)) = self.framed.next().now_or_never() {
                let handled = match ready {
                    Ok(frame) => self.handle(frame).await,
                    Err(err) => Err(self.ending_for(err)),
                };
                if let Err(ending) = handled {
                    let _ = self.framed.flush().await;
                    return ending;
                }
            }
            if let Err(err) = self.framed.flush().await {
                return self.ending_for(err);
            }
        }
    }

    /// Waits for the next frame, the idle timeout or shutdown.
    async fn next(&mut self, shutdown: &CancellationToken) -> Next {
        let idle = self.shared.settings.idle_timeout;
        tokio::select! {
            biased;
            () = shutdown.cancelled() => Next::End(Ending::Shutdown),
            read = tokio::time::timeout(idle, self.framed.next()) => match read {
                Err(_) => Next::End(Ending::Idle),
                Ok(None) => Next::End(Ending::PeerGone),
                Ok(Some(Ok(frame))) => Next::Frame(frame),
                Ok(Some(Err(err))) => Next::End(self.ending_for(err)),
            },
        }
    }

    /// On shutdown, answers the frames already received before saying goodbye.
    async fn drain_then(&mut self, ending: Ending) -> Ending {
        while let Some(Some(Ok(frame))) = self.framed.next().now_or_never() {
            if let Err(ending) = self.handle(frame).await {
                return ending;
            }
        }
        let _ = self.framed.flush().await;
        ending
    }

    /// Handles one frame in the Serving state; `Err` ends the session.
    async fn handle(&mut self, frame: Frame) -> Result<(), Ending> {
        self.shared.metrics.frame(frame.payload.frame_type());
        match frame.payload {
            Payload::Notify(messages) => {
                let actions = self.evaluate(&messages);
                trace!(
                    stream_id = frame.stream_id,
                    frame_id = frame.frame_id,
                    actions = actions.len(),
                    "ACK"
                );
                let ack = Frame::new(frame.stream_id, frame.frame_id, Payload::Ack(actions));
                self.shared.metrics.frame(FrameType::Ack);
                self.framed
                    .feed(ack)
                    .await
                    .map_err(|err| self.ending_for(err))
            }
            Payload::NotifyFragment(_) | Payload::Unset(_) => {
                Err(Ending::Protocol(Error::Fragmented))
            }
            Payload::HaproxyDisconnect(d) => Err(Ending::PeerDisconnect(d)),
            Payload::HaproxyHello(_) => Err(Ending::Protocol(Error::Unexpected(
                "HAPROXY-HELLO after the handshake",
            ))),
            Payload::AgentHello(_) | Payload::AgentDisconnect(_) | Payload::Ack(_) => Err(
                Ending::Protocol(Error::Unexpected("agent frame type sent to the agent")),
            ),
        }
    }

    /// Evaluates the guard message of a NOTIFY; any other message gets no action.
    fn evaluate(&self, messages: &[Message]) -> Vec<Action> {
        let shared = self.shared;
        let metrics = &shared.metrics;
        let Some(message) = messages.iter().find(|m| m.name == shared.settings.message) else {
            Metrics::inc(&metrics.unknown_message_total);
            return Vec::new();
        };
        let request = Request::from_message(message);
        let now = Instant::now();
        if request.src.is_none() {
            Metrics::inc(&metrics.invalid_src_total);
            if let Some(suppressed) = shared.invalid_src_log.check(now) {
                warn!(
                    suppressed,
                    "guard-check message without a usable `src` argument (IPv4/IPv6 sample expected, \
                     e.g. `args src=src ...`); request allowed"
                );
            }
        }
        let verdict = shared.engine.load().evaluate(&request, now);
        metrics.evaluation.observe(now.elapsed());
        metrics.verdict(&verdict);
        if let Some(insight) = &shared.insight {
            insight.record(&Observation::of(&request, &verdict, now));
        }
        if let (Decision::Deny, Some(log)) = (verdict.decision, &shared.deny_log) {
            match log.check(now) {
                Some(suppressed) => log_deny(&request, &verdict, suppressed),
                None => Metrics::inc(&metrics.deny_logs_suppressed_total),
            }
        }
        verdict.actions()
    }

    /// Classifies a codec error: the peer going away is an ordinary ending.
    fn ending_for(&self, err: Error) -> Ending {
        if err.is_peer_gone() {
            Ending::PeerGone
        } else {
            Ending::Protocol(err)
        }
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
                let _ = self.framed.close().await;
                return;
            }
            Ending::PeerDisconnect(d) => {
                debug!(status = %d.status, message = %String::from_utf8_lossy(&d.message), "HAProxy disconnected");
                Disconnect::new(Status::NORMAL)
            }
            Ending::Idle => {
                debug!(
                    idle_timeout_secs = self.shared.settings.idle_timeout.as_secs(),
                    "idle timeout"
                );
                Disconnect::new(Status::TIMEOUT)
            }
            Ending::Shutdown => {
                debug!("shutting down");
                Disconnect {
                    status: Status::NORMAL,
                    message: bytes::Bytes::from_static(b"agent shutting down"),
                }
            }
            Ending::Protocol(Error::Io(err)) => {
                debug!(error = %err, "i/o error");
                return;
            }
            Ending::Protocol(err) => {
                self.shared.metrics.protocol_error(&err);
                warn!(error = %err, kind = err.kind(), status = err.status().0, "protocol error; disconnecting");
                Disconnect {
                    status: err.status(),
                    message: bytes::Bytes::from(err.to_string()),
                }
            }
        };
        let frame = Frame::new(0, 0, Payload::AgentDisconnect(disconnect));
        self.shared.metrics.frame(FrameType::AgentDisconnect);
        if self.framed.send(frame).await.is_err() || self.framed.close().await.is_err() {
            return;
        }
        // Read and discard until HAProxy closes too (or briefly), so our close is a FIN.
        let mut sink = [0u8; 4096];
        let io = self.framed.get_mut();
        let _ = tokio::time::timeout(LINGER, async {
            while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

/// Holds a gauge up for as long as it lives.
struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    fn up(counter: &'a AtomicU64) -> Self {
        Metrics::inc(counter);
        Self(counter)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        Metrics::dec(self.0);
    }
}

/// Longest request field written in a deny log line, in bytes.
const LOGGED_FIELD_MAX: usize = 256;

/// One log line for a denied request: who, what and why. `suppressed` denies were not
/// logged since the previous line ([`crate::config::LogSettings::deny_lines_per_second`]).
fn log_deny(request: &Request<'_>, verdict: &Verdict, suppressed: u64) {
    let field = |value: Option<&[u8]>| -> String {
        value.map_or_else(String::new, |v| {
            let cut = v.get(..LOGGED_FIELD_MAX).unwrap_or(v);
            String::from_utf8_lossy(cut).into_owned()
        })
    };
    info!(
        target: "spoa_guard::deny",
        src = %request.src.map_or_else(String::new, |s| s.to_string()),
        asn = verdict.asn.unwrap_or(0),
        reason = verdict.reason.as_str(),
        rule = %String::from_utf8_lossy(&verdict.rule),
        status = verdict.status().unwrap_or(0),
        method = %field(request.method),
        host = %field(request.host),
        path = %field(request.path),
        ua = %field(request.ua),
        suppressed,
        "denied"
    );
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::Ordering;
    use std::task::{Context, Poll};

    use super::*;
    use crate::config::Settings;
    use crate::engine::Engine;
    use crate::rules::RuleSet;
    use crate::spop::client::Client;
    use crate::spop::{Arg, TypedData};
    use bytes::Bytes;
    use tokio::io::{DuplexStream, ReadBuf};

    fn shared(server_toml: &str) -> Arc<Shared> {
        let config = Settings::from_toml(server_toml)
            .unwrap()
            .validate(std::path::Path::new("/t.toml"))
            .unwrap();
        let engine = Engine::new(RuleSet::empty(), crate::limits::Limits::default());
        Arc::new(Shared::new(engine, &config.server))
    }

    fn notify(stream_id: u64) -> Frame {
        let message = Message {
            name: Bytes::from_static(b"guard-check"),
            args: vec![Arg {
                name: Bytes::from_static(b"src"),
                value: TypedData::Ipv4([192, 0, 2, 1].into()),
            }],
        };
        Frame::new(stream_id, 1, Payload::Notify(vec![message]))
    }

    /// Counts the write calls that reach the socket.
    struct CountingStream {
        inner: DuplexStream,
        writes: Arc<AtomicU64>,
    }

    impl AsyncRead for CountingStream {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for CountingStream {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::Relaxed);
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn acks_of_pipelined_notifies_go_out_in_one_write() {
        let shared = shared("");
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicU64::new(0));
        let server = CountingStream {
            inner: server_io,
            writes: writes.clone(),
        };
        let session = tokio::spawn(serve_stream(
            server,
            "test".into(),
            shared.clone(),
            CancellationToken::new(),
        ));
        let mut client = Client::handshake(client_io, 16380).await.unwrap();
        let after_hello = writes.load(Ordering::Relaxed);
        for i in 0..50 {
            client.feed(notify(2 * i + 1)).await.unwrap();
        }
        client.flush().await.unwrap(); // all 50 NOTIFYs arrive together
        for i in 0..50 {
            let ack = client.recv().await.unwrap().unwrap();
            assert_eq!(ack.stream_id, 2 * i + 1);
        }
        let ack_writes = writes.load(Ordering::Relaxed) - after_hello;
        assert!(ack_writes <= 2, "50 ACKs took {ack_writes} writes");
        drop(client);
        session.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_get_disconnect_status_2() {
        let shared = shared("[server]\nidle_timeout_secs = 30\n");
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let session = tokio::spawn(serve_stream(
            server_io,
            "test".into(),
            shared,
            CancellationToken::new(),
        ));
        let mut client = Client::handshake(client_io, 16380).await.unwrap();
        let started = tokio::time::Instant::now();
        let frame = client.recv().await.unwrap();
        let Some(Frame {
            payload: Payload::AgentDisconnect(d),
            ..
        }) = frame
        else {
            panic!("got {frame:?}")
        };
        assert_eq!(d.status, Status::TIMEOUT);
        assert!(started.elapsed() >= Duration::from_secs(30));
        drop(client);
        session.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_before_hello_is_dropped_after_the_idle_timeout() {
        let shared = shared("[server]\nidle_timeout_secs = 5\n");
        let (_client_io, server_io) = tokio::io::duplex(1 << 16);
        let session = tokio::spawn(serve_stream(
            server_io,
            "test".into(),
            shared.clone(),
            CancellationToken::new(),
        ));
        tokio::time::timeout(Duration::from_secs(10), session)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(Metrics::get(&shared.metrics.connections_active), 0);
    }
}
