//! One pipelined SPOP connection: HELLO, then NOTIFYs sent on the plan's schedule (or as
//! fast as ACKs free pipeline slots), ACKs matched by stream-id, timeouts, and a new
//! connection after any failure, until the end of the plan.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use spoa_guard::spop::client::Client;
use spoa_guard::spop::hello::DEFAULT_FRAME_SIZE;
use spoa_guard::spop::{Action, Error, Frame, Payload};
use tokio::net::TcpStream;
use tokio::time::{sleep, sleep_until, Instant};

use crate::mix::{Mix, Rng};
use crate::report::{Stats, Verdict};
use crate::Opts;

/// What every connection task needs to know.
pub(crate) struct Plan {
    agent: String,
    connections: usize,
    pipeline: usize,
    timeout: Duration,
    /// Open loop: time between two NOTIFYs of one connection.
    interval: Option<Duration>,
    start: Instant,
    /// Requests intended before this are warm-up.
    measure_from: Instant,
    /// No request is intended at or after this.
    end: Instant,
    /// `--check-verdicts`.
    check_verdicts: bool,
}

impl Plan {
    /// The plan of a run of `opts` starting at `start`.
    pub(crate) fn new(opts: &Opts, start: Instant) -> Self {
        let measure_from = start + opts.warmup;
        let interval = (opts.rate > 0.0)
            .then(|| Duration::from_secs_f64(opts.connections as f64 / opts.rate))
            .filter(|d| !d.is_zero());
        Self {
            agent: opts.agent.clone(),
            connections: opts.connections,
            pipeline: opts.pipeline,
            timeout: opts.timeout,
            interval: interval.or((opts.rate > 0.0).then_some(Duration::from_nanos(1))),
            start,
            measure_from,
            end: measure_from + opts.duration,
            check_verdicts: opts.check_verdicts,
        }
    }
}

/// Pause after a failed connection before trying again.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// One NOTIFY waiting for its ACK.
struct InFlight {
    /// When it should have been sent: latency is measured from here.
    intended: Instant,
    /// When it was sent: the timeout runs from here.
    sent: Instant,
    /// Its source came from the deny sources (`--check-verdicts`: it must be denied).
    expect_deny: bool,
}

/// The NOTIFYs in flight on one connection, by stream-id.
type Pipeline = HashMap<u64, InFlight>;

/// One connection's life: connect, send and receive until the end of the plan, reconnect
/// after failures.
pub(crate) async fn connection(id: usize, plan: Arc<Plan>, mix: Arc<Mix>, rng: Rng) -> Stats {
    // Spread the connections' schedules evenly over one interval.
    let next_intended = match plan.interval {
        Some(iv) => plan.start + iv.mul_f64(id as f64 / plan.connections as f64),
        None => plan.start,
    };
    let mut task = Task {
        plan,
        mix,
        rng,
        stats: Stats::new(),
        next_intended,
        stream_id: 0,
    };
    while Instant::now() < task.plan.end {
        let mut client =
            match tokio::time::timeout(task.plan.timeout, connect(&task.plan.agent)).await {
                Ok(Ok(client)) => client,
                Ok(Err(why)) => {
                    task.stats.error(format!("connect: {why}"));
                    sleep(RECONNECT_DELAY).await;
                    continue;
                }
                Err(_) => {
                    task.stats.error("connect: timed out".to_owned());
                    continue;
                }
            };
        task.stats.connects += 1;
        match task.session(&mut client).await {
            Ended::Done => break,
            Ended::Failed { lost, why } => {
                task.stats.lost(lost, why);
                sleep(RECONNECT_DELAY).await;
            }
        }
    }
    task.count_unsent();
    task.stats
}

/// Connects to `agent` over TCP and does the HELLO exchange; the error says briefly
/// which step failed and why (`connection refused`, `HELLO failed: …`).
async fn connect(agent: &str) -> Result<Client<TcpStream>, String> {
    let stream = TcpStream::connect(agent).await.map_err(|e| io_error(&e))?;
    stream.set_nodelay(true).map_err(|e| io_error(&e))?;
    Client::handshake(stream, DEFAULT_FRAME_SIZE)
        .await
        .map_err(|err| match err {
            Error::Io(e) => format!("HELLO failed: {}", io_error(&e)),
            other => format!("HELLO failed: {other}"),
        })
}

/// An I/O error as a short phrase: `connection refused` rather than
/// `Connection refused (os error 111)`.
fn io_error(err: &std::io::Error) -> String {
    let text = err.to_string();
    let text = match err.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .unwrap_or(&text),
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("{:?}", err.kind()),
    }
}

/// What one connection task carries from one connection to the next.
struct Task {
    plan: Arc<Plan>,
    mix: Arc<Mix>,
    rng: Rng,
    stats: Stats,
    /// Open loop: when the next NOTIFY should be sent.
    next_intended: Instant,
    /// The stream-id of the last NOTIFY sent.
    stream_id: u64,
}

/// How a connection's session ended.
enum Ended {
    /// The plan is over and nothing is in flight.
    Done,
    /// The connection failed with `lost` NOTIFYs in flight (not yet counted).
    Failed { lost: u64, why: String },
}

impl Task {
    /// Sends and receives on one connection until it fails or the plan is over.
    async fn session(&mut self, client: &mut Client<TcpStream>) -> Ended {
        let mut inflight = Pipeline::with_capacity(self.plan.pipeline);
        loop {
            let now = Instant::now();
            if let Err(ended) = self.send_due(client, &mut inflight, now).await {
                return ended;
            }
            if inflight.is_empty() {
                match self.plan.interval {
                    Some(_) if self.next_intended < self.plan.end => {
                        sleep_until(self.next_intended).await;
                        continue;
                    }
                    _ => return Ended::Done,
                }
            }

            // Wait for an ACK, the oldest NOTIFY's timeout, or the next scheduled send.
            let deadline = inflight
                .values()
                .map(|f| f.sent + self.plan.timeout)
                .min()
                .unwrap_or(now + self.plan.timeout);
            let next_send = (self.plan.interval.is_some()
                && inflight.len() < self.plan.pipeline
                && self.next_intended < self.plan.end)
                .then_some(self.next_intended);
            tokio::select! {
                frame = client.recv() => {
                    if let Err(ended) = self.receive(frame, client, &mut inflight) {
                        return ended;
                    }
                }
                () = sleep_until(deadline) => {
                    let now = Instant::now();
                    let before = inflight.len();
                    inflight.retain(|_, f| f.sent + self.plan.timeout > now);
                    self.stats.timeouts += (before - inflight.len()) as u64;
                }
                () = sleep_until(next_send.unwrap_or(deadline)), if next_send.is_some() => {}
            }
        }
    }

    /// Sends whatever is due at `now`, up to the pipeline depth, with one write.
    async fn send_due(
        &mut self,
        client: &mut Client<TcpStream>,
        inflight: &mut Pipeline,
        now: Instant,
    ) -> Result<(), Ended> {
        let mut fed = false;
        while inflight.len() < self.plan.pipeline {
            let intended = match self.plan.interval {
                Some(iv) if self.next_intended <= now && self.next_intended < self.plan.end => {
                    self.next_intended += iv;
                    self.next_intended - iv
                }
                Some(_) => break,
                None if now < self.plan.end => now,
                None => break,
            };
            self.stream_id += 1;
            let (message, expect_deny) = self.mix.message(&mut self.rng);
            let frame = Frame::new(self.stream_id, 1, Payload::Notify(vec![message]));
            if let Err(err) = client.feed(frame).await {
                return Err(Ended::Failed {
                    lost: inflight.len() as u64 + 1,
                    why: format!("write: {err}"),
                });
            }
            inflight.insert(
                self.stream_id,
                InFlight {
                    intended,
                    sent: now,
                    expect_deny,
                },
            );
            self.stats.sent += 1;
            fed = true;
        }
        if fed {
            if let Err(err) = client.flush().await {
                return Err(Ended::Failed {
                    lost: inflight.len() as u64,
                    why: format!("write: {err}"),
                });
            }
        }
        Ok(())
    }

    /// Accounts for `first` and every frame already received after it, so that the
    /// pipeline is refilled with one write: what HAProxy 2.x does too.
    fn receive(
        &mut self,
        first: Result<Option<Frame>, Error>,
        client: &mut Client<TcpStream>,
        inflight: &mut Pipeline,
    ) -> Result<(), Ended> {
        let mut next = Some(first);
        while let Some(frame) = next {
            let ended = match frame {
                Ok(Some(frame)) => answer(frame, inflight, &mut self.stats, &self.plan),
                Ok(None) => Some("closed by the agent".to_owned()),
                Err(err) => Some(format!("read: {err}")),
            };
            if let Some(why) = ended {
                return Err(Ended::Failed {
                    lost: inflight.len() as u64,
                    why,
                });
            }
            next = client.try_recv();
        }
        Ok(())
    }

    /// Counts the requests scheduled in the measured window but never sent (the generator
    /// or the pipeline fell behind, or the connection was down): omitted from the
    /// latencies, so they are reported.
    fn count_unsent(&mut self) {
        if let Some(iv) = self.plan.interval {
            let from = self.next_intended.max(self.plan.measure_from);
            if from < self.plan.end {
                self.stats.unsent +=
                    ((self.plan.end - from).as_nanos() / iv.as_nanos().max(1)) as u64;
            }
        }
    }
}

/// Accounts for one frame from the agent; `Some(why)` when the connection is over.
fn answer(frame: Frame, inflight: &mut Pipeline, stats: &mut Stats, plan: &Plan) -> Option<String> {
    let now = Instant::now();
    match frame.payload {
        Payload::Ack(actions) => {
            stats.replies += 1;
            match (frame.frame_id, inflight.remove(&frame.stream_id)) {
                (1, Some(f)) => {
                    let verdict = verdict(&actions);
                    if plan.check_verdicts {
                        stats.check(f.expect_deny, &verdict);
                    }
                    if f.intended >= plan.measure_from {
                        stats.ack(now - f.intended, now - f.sent, verdict);
                    }
                }
                _ => stats.late_acks += 1,
            }
        }
        Payload::AgentDisconnect(d) => {
            let message = String::from_utf8_lossy(&d.message).into_owned();
            return Some(format!("disconnect: status {} ({message})", d.status.0));
        }
        other => stats.error(format!("unexpected {} frame", other.frame_type().as_str())),
    }
    None
}

/// The values of the `action`, `reason` and `dry_run` variables an ACK sets (any scope,
/// as the prefix is not on the wire).
fn verdict(actions: &[Action]) -> Verdict {
    let mut out = Verdict::default();
    for action in actions {
        if let Action::SetVar { name, value, .. } = action {
            let slot = match name.as_ref() {
                b"action" => &mut out.decision.0,
                b"reason" => &mut out.decision.1,
                b"dry_run" => &mut out.dry_run,
                _ => continue,
            };
            *slot = Some(match value.as_bytes() {
                Some(b) => b.clone(),
                None => Bytes::from(format!("{value:?}")),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use spoa_guard::spop::{Action, Frame, Payload, TypedData};

    use super::{io_error, verdict};
    use crate::report::{Report, Verdict};
    use crate::tests::{fake_agent, run_with};
    use crate::Opts;

    /// One connection to `addr` for 300 ms, no warm-up: enough to see how it ends.
    async fn one_connection_briefly(addr: &str) -> (Opts, Report) {
        let args = [
            "--agent",
            addr,
            "--connections",
            "1",
            "--duration",
            "300ms",
            "--warmup",
            "0s",
        ];
        run_with(&args).await
    }

    /// An "agent" that answers the HELLO, then disconnects at the first NOTIFY.
    #[tokio::test]
    async fn a_disconnect_is_reported_with_its_status() {
        use futures_util::{SinkExt, StreamExt};
        use spoa_guard::spop::{Disconnect, Status};
        let addr = fake_agent(|mut framed| async move {
            let _notify = framed.next().await;
            let mut bye = Disconnect::new(Status::RESOURCE);
            bye.message = Bytes::from_static(b"go away");
            let _ = framed
                .send(Frame::new(0, 0, Payload::AgentDisconnect(bye)))
                .await;
        })
        .await;
        let (_, report) = one_connection_briefly(&addr).await;
        let s = &report.stats;
        assert_eq!(s.acks, 0);
        assert!(s.lost > 0);
        assert!(
            s.errors
                .keys()
                .any(|k| k == "disconnect: status 13 (go away)"),
            "{:?}",
            s.errors
        );
    }

    #[tokio::test]
    async fn connection_errors_are_counted() {
        // A port nobody listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let (opts, report) = one_connection_briefly(&addr).await;
        let s = &report.stats;
        assert_eq!(
            s.errors.keys().collect::<Vec<_>>(),
            vec!["connect: connection refused"]
        );
        assert_eq!((s.acks, s.connects, s.replies), (0, 0, 0));
        assert_eq!(
            report.failure(&opts),
            Some(format!(
                "no connection to {addr} could be made (connection refused)"
            ))
        );
    }

    /// Something that is not an SPOE agent: the HELLO fails and no connection counts.
    #[tokio::test]
    async fn a_failed_hello_is_no_connection() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let (opts, report) = one_connection_briefly(&addr).await;
        let failure = report.failure(&opts).unwrap();
        let prefix = format!("no connection to {addr} could be made (HELLO failed: ");
        assert!(failure.starts_with(&prefix), "{failure}");
    }

    #[test]
    fn verdicts_read_action_reason_and_dry_run() {
        let actions = vec![
            Action::set_txn("action", TypedData::str("allow")),
            Action::set_txn("reason", TypedData::str("none")),
            Action::set_txn("rule", TypedData::str("")),
            Action::set_txn("dry_run", TypedData::str("new-bots")),
        ];
        assert_eq!(
            verdict(&actions),
            Verdict {
                decision: (
                    Some(Bytes::from_static(b"allow")),
                    Some(Bytes::from_static(b"none"))
                ),
                dry_run: Some(Bytes::from_static(b"new-bots")),
            }
        );
        assert_eq!(verdict(&actions[..2]).dry_run, None);
        assert_eq!(verdict(&[]), Verdict::default());
    }

    #[test]
    fn io_errors_are_short() {
        use std::io;
        let refused = io::Error::from_raw_os_error(111);
        assert_eq!(io_error(&refused), "connection refused");
        let custom = io::Error::other("Failed to lookup address");
        assert_eq!(io_error(&custom), "failed to lookup address");
    }
}
