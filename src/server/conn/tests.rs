//! Sessions over in-memory pipes: batching, deadlines, eviction.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use super::*;
use crate::agent::Agent;
use crate::engine::Engine;
use crate::server::ServerSettings;
use crate::spop::client::Client;
use crate::spop::{Arg, Message, TypedData};
use crate::util::slots::Slots;
use std::sync::atomic::AtomicU64;
use tokio::io::{DuplexStream, ReadBuf};

/// A service with an empty rule set and `[server]` from `server_toml`.
fn service(server_toml: &str) -> Arc<Service> {
    let settings: ServerSettings = toml::from_str(server_toml).unwrap();
    let agent = Agent::with_engine(Engine::new(Default::default(), Default::default()));
    Arc::new(Service::new(Arc::new(agent), &settings))
}

/// Runs a session over `io` with `shared`, holding `slot`.
fn session<S>(io: S, shared: Arc<Service>, slot: Slot) -> tokio::task::JoinHandle<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(serve_stream(
        io,
        "test".into(),
        shared,
        CancellationToken::new(),
        slot,
    ))
}

/// A slot of its own, among plenty.
fn slot() -> Slot {
    Slots::new(16).admit(Some(0)).unwrap().slot
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
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn acks_of_pipelined_notifies_go_out_in_one_write() {
    let shared = service("");
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let writes = Arc::new(AtomicU64::new(0));
    let server = CountingStream {
        inner: server_io,
        writes: writes.clone(),
    };
    let session = session(server, shared.clone(), slot());
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
    let shared = service("idle_timeout_secs = 30\n");
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let session = session(server_io, shared, slot());
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

/// The bytes of a HAPROXY-HELLO, and of a NOTIFY, as HAProxy sends them.
fn encoded(frame: Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    SpopCodec::new(16380).encode(frame, &mut out).unwrap();
    out.to_vec()
}

/// Reads frames until the session's DISCONNECT, and returns its status.
async fn disconnect_status<T: AsyncRead + Unpin>(io: T) -> Status {
    use futures_util::StreamExt;
    let mut framed = tokio_util::codec::FramedRead::new(io, SpopCodec::new(16380));
    while let Some(frame) = framed.next().await {
        if let Payload::AgentDisconnect(d) = frame.unwrap().payload {
            return d.status;
        }
    }
    panic!("no DISCONNECT");
}

/// Writes `bytes` one at a time, `every` apart, until done or the peer is gone.
fn trickle<W>(mut io: W, bytes: Vec<u8>, every: Duration) -> tokio::task::JoinHandle<()>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        for byte in bytes {
            if io.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    })
}

fn dropped(service: &Service, why: ConnectionDrop) -> u64 {
    service.agent.metrics.connections_dropped.of(why).get()
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_dropped_at_the_hello_deadline_not_the_idle_timeout() {
    let shared = service("idle_timeout_secs = 300\nhello_timeout_secs = 5\n");
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let session = session(server_io, shared.clone(), slot());
    let started = tokio::time::Instant::now();
    assert_eq!(disconnect_status(client_io).await, Status::TIMEOUT);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    session.await.unwrap();
    assert_eq!(dropped(&shared, ConnectionDrop::HelloTimeout), 1);
    assert_eq!(shared.agent.metrics.connections_active.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hello_sent_one_byte_a_second_does_not_hold_the_slot() {
    let shared = service("hello_timeout_secs = 5\n");
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let session = session(server_io, shared.clone(), slot());
    let (read_half, write_half) = tokio::io::split(client_io);
    let hello = encoded(crate::spop::hello::haproxy_hello(16380, false));
    let trickle = trickle(write_half, hello, Duration::from_secs(1));
    let started = tokio::time::Instant::now();
    assert_eq!(disconnect_status(read_half).await, Status::TIMEOUT);
    assert!(started.elapsed() <= Duration::from_secs(6));
    session.await.unwrap();
    trickle.abort();
    assert_eq!(dropped(&shared, ConnectionDrop::HelloTimeout), 1);
}

#[tokio::test(start_paused = true)]
async fn only_complete_frames_push_the_idle_timeout_back() {
    let shared = service("idle_timeout_secs = 10\n");
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let session = session(server_io, shared.clone(), slot());
    let client = Client::handshake(client_io, 16380).await.unwrap();
    let (read_half, write_half) = tokio::io::split(client.into_inner().into_inner());
    // A NOTIFY, one byte every 2 s: 20 s for 10 bytes, never complete in time.
    let notify = encoded(notify(1));
    let trickle = trickle(write_half, notify, Duration::from_secs(2));
    let started = tokio::time::Instant::now();
    assert_eq!(disconnect_status(read_half).await, Status::TIMEOUT);
    assert!(started.elapsed() <= Duration::from_secs(10));
    session.await.unwrap();
    trickle.abort();
    assert_eq!(dropped(&shared, ConnectionDrop::Idle), 1);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_does_not_read_its_acks_is_dropped() {
    let shared = service("write_timeout_secs = 3\n");
    // Small pipe: the ACKs fill it as soon as the peer stops reading.
    let (client_io, server_io) = tokio::io::duplex(4096);
    let session = session(server_io, shared.clone(), slot());
    let client = Client::handshake(client_io, 16380).await.unwrap();
    let (_unread, mut write_half) = tokio::io::split(client.into_inner().into_inner());
    let flood = tokio::spawn(async move {
        for i in 0..100_000u64 {
            if write_half.write_all(&encoded(notify(i + 1))).await.is_err() {
                return;
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), session)
        .await
        .expect("the session outlived its write deadline")
        .unwrap();
    flood.abort();
    assert_eq!(dropped(&shared, ConnectionDrop::WriteTimeout), 1);
    assert_eq!(shared.agent.metrics.connections_active.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_connection_without_hello_yields_its_slot_and_hears_why() {
    let shared = service("");
    let admission = Slots::new(1);
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let first = admission.admit(Some(0)).unwrap();
    let session = session(server_io, shared.clone(), first.slot);
    tokio::task::yield_now().await;
    let second = admission.admit(Some(0)).unwrap();
    assert!(second.evicted_another);
    assert_eq!(disconnect_status(client_io).await, Status::RESOURCE);
    session.await.unwrap();
    assert_eq!(dropped(&shared, ConnectionDrop::Evicted), 1);
    assert_eq!(admission.held(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_connection_past_its_hello_keeps_its_slot() {
    let shared = service("");
    let admission = Slots::new(1);
    let (client_io, server_io) = tokio::io::duplex(1 << 16);
    let first = admission.admit(Some(0)).unwrap();
    let session = session(server_io, shared.clone(), first.slot);
    let mut client = Client::handshake(client_io, 16380).await.unwrap();
    assert!(admission.admit(Some(0)).is_none());
    client.send(notify(1)).await.unwrap();
    assert!(client.recv().await.unwrap().is_some());
    drop(client);
    session.await.unwrap();
    assert!(admission.admit(Some(0)).is_some());
}
