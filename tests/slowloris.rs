//! The operations listeners (`[metrics]` and `[admin]`) of the real binary under a
//! slowloris attack: 200 sockets (more than the listener's 64 slots) that send nothing,
//! or a partial request head and then one byte every 500 ms, reconnecting whenever the
//! agent closes them, must not keep `/healthz`, `/metrics` or the admin API from
//! answering within a second. The head and body deadlines are deadlines for the whole
//! head or body, however slowly it trickles in; a client that never reads its response
//! is dropped; a served connection is closed after its response rather than left idle.

mod common;

use common::agent::AgentProcess;
use common::haproxy::free_port;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UnixStream};
use tokio_util::sync::CancellationToken;

/// Sockets the attacker holds: more than the listener's 64 slots.
const ATTACKERS: usize = 200;
/// How long a probe may take: the bound the attack must not break.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// How long a probe is waited for before it counts as lost.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// A byte stream to either kind of listener.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where a listener is.
#[derive(Clone)]
enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Target {
    async fn connect(&self) -> std::io::Result<Pin<Box<dyn Io>>> {
        Ok(match self {
            Target::Tcp(addr) => Box::pin(TcpStream::connect(addr).await?),
            Target::Unix(path) => Box::pin(UnixStream::connect(path).await?),
        })
    }
}

/// 200 slowloris sockets against `target` until `stop`: even ones send nothing, odd ones
/// a partial request head then one byte every 500 ms. Whenever the agent closes one, it
/// connects again (after 50 ms), as an attacker would. Counts the connections made.
fn attack(target: &Target, stop: &CancellationToken) -> Arc<AtomicUsize> {
    let connects = Arc::new(AtomicUsize::new(0));
    for n in 0..ATTACKERS {
        let (target, stop, connects) = (target.clone(), stop.clone(), connects.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                if let Ok(stream) = target.connect().await {
                    connects.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = hold(stream, n % 2 == 1) => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    connects
}

/// Holds one slowloris socket until the agent closes it.
async fn hold(mut stream: Pin<Box<dyn Io>>, trickle: bool) {
    if trickle
        && stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .is_err()
    {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            _ = tick.tick(), if trickle => {
                if stream.write_all(b"a").await.is_err() {
                    return;
                }
            }
        }
    }
}

/// `GET path` on a new connection to `target` (with `headers`): the status, the body and
/// how long it took, connection included; panics past [`PROBE_TIMEOUT`].
async fn get(target: &Target, path: &str, headers: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let exchange = async {
        let mut stream = target.connect().await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answer
    };
    let answer = tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no answer within {PROBE_TIMEOUT:?}"));
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body, took)
}

/// The value of `series` in the agent's `/metrics` (0 when absent).
async fn sample(metrics: &Target, series: &str) -> f64 {
    let (status, body, _) = get(metrics, "/metrics", "").await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// `spoa_guard_http_connections_dropped_total{listener, reason}`.
fn dropped(listener: &str, reason: &str) -> String {
    format!(
        "spoa_guard_http_connections_dropped_total{{listener=\"{listener}\",reason=\"{reason}\"}}"
    )
}

/// An agent with its metrics listener on TCP and its admin API on a unix socket, plus
/// `extra` configuration; returns once both listeners accept.
fn agent(extra: &str) -> (AgentProcess, SocketAddr, Target, Target) {
    let port = free_port();
    let agent = AgentProcess::with_rules(
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nlisten = \"unix:admin.sock\"\n\
             [lists]\nblock = [\"block.txt\"]\n{extra}"
        ),
        &[("block.txt", "198.51.100.9\n")],
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let socket = agent.dir.path().join("admin.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() || !socket.exists() {
        assert!(Instant::now() < deadline, "the listeners did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    (agent, addr, Target::Tcp(addr), Target::Unix(socket))
}

/// Probes `path` on `target` every 250 ms for `during`, while an attack runs: every probe
/// must answer 200 within [`ANSWER_WITHIN`]; returns the slowest.
async fn probe_during(target: &Target, paths: &[&str], during: Duration) -> Duration {
    let mut slowest = Duration::ZERO;
    let until = Instant::now() + during;
    while Instant::now() < until {
        for path in paths {
            let (status, body, took) = get(target, path, "").await;
            eprintln!("GET {path}: {status} in {took:?}");
            assert_eq!(status, 200, "GET {path}: {body}");
            assert!(
                took < ANSWER_WITHIN,
                "GET {path} took {took:?} under attack"
            );
            slowest = slowest.max(took);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_answers_while_200_slowloris_sockets_are_held() {
    let (_agent, _, metrics, _admin) = agent("");
    let stop = CancellationToken::new();
    let connects = attack(&metrics, &stop);
    // Let the attack fill the slots and the backlog.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slowest = probe_during(&metrics, &["/healthz", "/metrics"], Duration::from_secs(4)).await;
    stop.cancel();
    let made = connects.load(Ordering::Relaxed);
    eprintln!("{made} slowloris connections; slowest answer {slowest:?}");
    assert!(made >= ATTACKERS, "only {made} attack connections");
    // Room was made by evicting the attacker's sockets.
    assert!(sample(&metrics, &dropped("metrics", "evicted")).await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_answers_while_200_slowloris_sockets_are_held() {
    let (_agent, _, metrics, admin) = agent("");
    let stop = CancellationToken::new();
    let connects = attack(&admin, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slowest = probe_during(&admin, &["/bans", "/rules"], Duration::from_secs(4)).await;
    stop.cancel();
    let made = connects.load(Ordering::Relaxed);
    eprintln!("{made} slowloris connections; slowest answer {slowest:?}");
    assert!(made >= ATTACKERS, "only {made} attack connections");
    assert!(sample(&metrics, &dropped("admin", "evicted")).await > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_deadline_holds_for_a_silent_and_a_trickling_socket_alike() {
    let (_agent, _, metrics, _) = agent("");
    let started = Instant::now();
    let silent = tokio::spawn(hold(metrics.connect().await.unwrap(), false));
    let trickling = tokio::spawn(hold(metrics.connect().await.unwrap(), true));
    for socket in [silent, trickling] {
        tokio::time::timeout(Duration::from_secs(10), socket)
            .await
            .expect("a socket without a whole head was kept")
            .unwrap();
        let took = started.elapsed();
        // 2 s from the accept, however many bytes trickle in.
        assert!(
            took > Duration::from_millis(1500) && took < Duration::from_secs(3),
            "closed after {took:?}"
        );
    }
    assert_eq!(
        sample(&metrics, &dropped("metrics", "header-timeout")).await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_not_sent_within_its_deadline_is_answered_408() {
    let (_agent, _, metrics, admin) = agent("");
    let (mut read, mut write) = tokio::io::split(admin.connect().await.unwrap());
    write
        .write_all(
            b"POST /dry-run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\nConnection: close\r\n\r\n{",
        )
        .await
        .unwrap();
    let started = Instant::now();
    // The body trickles in, a byte every 300 ms: the deadline is for all of it.
    let trickle = tokio::spawn(async move {
        while write.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut answer))
        .await
        .expect("a body that never came was waited for")
        .unwrap();
    let took = started.elapsed();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // 3 s from the head.
    assert!(
        took > Duration::from_millis(2500) && took < Duration::from_secs(4),
        "answered after {took:?}"
    );
    assert_eq!(
        sample(&metrics, &dropped("admin", "body-timeout")).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_response_is_dropped() {
    // 2000 limits make /metrics about 430 KB: more than the socket buffers hold.
    let limits: String = (0..2000)
        .map(|i| {
            format!(
                "[[limit]]\nname = \"limit-{i}\"\nkey = \"src\"\npath_prefix = \"/p{i}\"\n\
                 rate = 10.0\nburst = 10\n"
            )
        })
        .collect();
    let (_agent, addr, metrics, _admin) = agent(&limits);
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket.connect(addr).await.unwrap();
    // Asks (several times, pipelined) and reads nothing.
    let ask = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(20);
    reader.write_all(ask.as_bytes()).await.unwrap();
    let series = dropped("metrics", "write-timeout");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample(&metrics, &series).await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "a client not reading its response was not dropped within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // What the kernel still held arrives, then the end: the response was cut short.
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut received));
    let _ = read.await.expect("the dropped connection did not end");
    let whole: usize = sample_len(&metrics).await;
    assert!(
        received.len() < whole,
        "received {} bytes of a {whole}-byte response",
        received.len()
    );
}

/// The length of a whole `/metrics` response.
async fn sample_len(metrics: &Target) -> usize {
    get(metrics, "/metrics", "").await.1.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_connection_is_closed_after_its_response() {
    let (_agent, addr, _, _) = agent("");
    // Keep-alive asked for: the agent answers, then closes rather than keep the slot.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the connection was not closed")
        .unwrap();
    let took = started.elapsed();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(took < ANSWER_WITHIN, "closed after {took:?}");
}
