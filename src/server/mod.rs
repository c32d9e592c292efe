//! The network side: listeners, the accept loop, and graceful shutdown. One task per
//! connection ([`serve_stream`]) runs the SPOP session and asks the
//! [`Agent`] for each verdict.
//!
//! Resource bounds: [`Slots`](crate::util::slots) cap open connections — a connection
//! that has not sent its HELLO yields its slot to a newcomer when all are taken (the
//! oldest first), so silent sockets cannot keep HAProxy out, and one past its HELLO is
//! never evicted; the rest wait in the listen backlog, which is large because HAProxy
//! 3.x opens about one connection per concurrent request. The codec caps frame size;
//! every connection has a handshake deadline (the whole HELLO), an idle timeout that only
//! complete frames push back, and a write deadline (a peer that does not read is
//! dropped). Protocol-error log lines are rate-limited, with a count of those left out.
//!
//! Shutdown: cancelling the token stops the accept loop at once; every connection answers
//! the frames it has already received, sends AGENT-DISCONNECT status 0 and closes; [`run`]
//! returns when all are done or when the deadline passes.

mod conn;
mod settings;

pub use crate::util::{Accepted, InvalidListen, Listen, Listener};
pub use conn::serve_stream;
pub use settings::{ServerSettings, MAX_THREADS};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::agent::Agent;
use crate::util::slots::{Admitted, Slots};
use crate::util::LogThrottle;

/// What every SPOP session serves: the agent that decides, and the session settings
/// from `[server]`.
#[derive(Debug)]
pub struct Service {
    /// Decides each request.
    pub agent: Arc<Agent>,
    /// The agent's max-frame-size; the negotiated one is never larger.
    pub max_frame_size: u32,
    /// Close a connection with no complete frame for this long.
    pub idle_timeout: Duration,
    /// A new connection's whole HELLO must arrive within this.
    pub hello_timeout: Duration,
    /// A peer must take what is written within this.
    pub write_timeout: Duration,
    /// One protocol-error (or unread-answers) log line per second at most.
    pub protocol_log: LogThrottle,
    /// Name of the SPOE message to evaluate.
    pub message: Bytes,
    /// Shutting down, how long an idle connection waits for a last frame before it is
    /// disconnected, in milliseconds (see [`conn::DRAIN_QUIET`]): briefly on SIGTERM
    /// (the agent goes away, nothing gains from waiting), half the shutdown grace when a
    /// new agent takes over ([`Service::drain_for_takeover`]).
    drain_wait_ms: AtomicU64,
    /// The shutdown grace, of which a takeover's drain waits half.
    grace: Duration,
}

/// How long an idle connection waits for a last frame when the agent simply stops.
pub const STOP_DRAIN_WAIT: Duration = Duration::from_millis(300);

impl Service {
    /// How long an idle connection waits for a last frame once shutting down.
    pub fn drain_wait(&self) -> Duration {
        Duration::from_millis(self.drain_wait_ms.load(Ordering::Relaxed))
    }

    /// A new agent takes over: idle connections wait half the shutdown grace for their
    /// next frame (HAProxy may still pick them from its pool), so that none is
    /// disconnected under a NOTIFY in flight.
    pub fn drain_for_takeover(&self) {
        let ms = u64::try_from((self.grace / 2).as_millis()).unwrap_or(u64::MAX);
        self.drain_wait_ms.store(ms, Ordering::Relaxed);
    }
}

impl Service {
    /// Sessions of `agent` with the settings of `[server]`.
    pub fn new(agent: Arc<Agent>, settings: &ServerSettings) -> Service {
        Service {
            agent,
            max_frame_size: settings.max_frame_size,
            idle_timeout: settings.idle_timeout(),
            hello_timeout: settings.hello_timeout(),
            write_timeout: settings.write_timeout(),
            protocol_log: LogThrottle::new(Duration::from_secs(1)),
            message: Bytes::from(settings.message.clone().into_bytes()),
            drain_wait_ms: AtomicU64::new(
                u64::try_from(STOP_DRAIN_WAIT.as_millis()).unwrap_or(u64::MAX),
            ),
            grace: settings.shutdown_timeout(),
        }
    }
}

/// A slot for a connection already accepted, as soon as there is one; `None` when
/// shutting down first.
async fn admit(admission: &Arc<Slots>, shutdown: &CancellationToken) -> Option<Admitted> {
    loop {
        // Before its HELLO a connection may be evicted (rank 0); after it, never.
        if let Some(admitted) = admission.admit(Some(0)) {
            return Some(admitted);
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            () = admission.room() => {}
        }
    }
}

/// Serves connections from `listener` until `shutdown` is cancelled, then drains open
/// connections for at most `grace`.
pub async fn run(
    listener: Listener,
    service: Arc<Service>,
    max_connections: usize,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let tracker = TaskTracker::new();
    let admission = Slots::new(max_connections);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = admission.room() => {}
        }
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // EMFILE and friends: back off briefly, never give up.
                warn!(error = %err, "accept failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        // Room was there before the accept; if the connection that made it (one without
        // a HELLO) has completed its HELLO since, this one waits for the next slot.
        let Some(Admitted {
            slot,
            evicted_another,
        }) = admit(&admission, &shutdown).await
        else {
            break;
        };
        if evicted_another {
            debug!(
                max_connections,
                "max_connections reached: evicted the oldest connection without a HELLO"
            );
        }
        let session = match accepted {
            Accepted::Tcp(stream, peer) => {
                let _ = stream.set_nodelay(true);
                serve_stream(
                    stream,
                    peer.to_string(),
                    service.clone(),
                    shutdown.clone(),
                    slot,
                )
                .boxed()
            }
            Accepted::Unix(stream) => serve_stream(
                stream,
                "unix".into(),
                service.clone(),
                shutdown.clone(),
                slot,
            )
            .boxed(),
        };
        tracker.spawn(session);
    }
    drop(listener);
    tracker.close();
    let open = tracker.len();
    if open > 0 {
        info!(
            connections = open,
            grace_secs = grace.as_secs_f64(),
            "stopped accepting; draining connections"
        );
    }
    let started = Instant::now();
    match tokio::time::timeout(grace, tracker.wait()).await {
        Ok(()) => info!(
            elapsed_secs = started.elapsed().as_secs_f64(),
            "all connections closed"
        ),
        Err(_) => warn!(
            connections = tracker.len(),
            "shutdown deadline reached; closing remaining connections"
        ),
    }
}
