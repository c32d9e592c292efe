//! The agent over real loopback TCP: handshake, NOTIFY → ACK decisions, pipelining,
//! protocol errors with their DISCONNECT status codes, shutdown and connection bursts.

mod common;

use common::agent;

use std::time::Duration;

use agent::{capture, guard_check, ipv4, ipv6, Agent, Raw};
use bytes::Bytes;
use spoa_guard::decision::Decision;
use spoa_guard::spop::client::Client;
use spoa_guard::spop::hello::haproxy_hello;
use spoa_guard::spop::{Action, Flags, Frame, KvList, Message, Payload, Scope, Status, TypedData};

/// The txn-scope variables of an ACK as (name, value) pairs.
fn vars(actions: &[Action]) -> Vec<(String, TypedData)> {
    actions
        .iter()
        .map(|a| match a {
            Action::SetVar {
                scope: Scope::Txn,
                name,
                value,
            } => (String::from_utf8(name.to_vec()).unwrap(), value.clone()),
            other => panic!("unexpected action {other:?}"),
        })
        .collect()
}

fn var<'a>(vars: &'a [(String, TypedData)], name: &str) -> Option<&'a TypedData> {
    vars.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

async fn decide(
    client: &mut Client<tokio::net::TcpStream>,
    src: TypedData,
) -> Vec<(String, TypedData)> {
    vars(&client.notify(1, 1, vec![guard_check(src)]).await.unwrap())
}

fn disconnect(frame: Option<Frame>) -> (Status, String) {
    match frame {
        Some(Frame {
            payload: Payload::AgentDisconnect(d),
            stream_id: 0,
            frame_id: 0,
            flags,
            ..
        }) => {
            assert_eq!(flags, Flags::FIN);
            (d.status, String::from_utf8(d.message.to_vec()).unwrap())
        }
        other => panic!("expected AGENT-DISCONNECT, got {other:?}"),
    }
}

#[tokio::test]
async fn answers_captured_hello_with_the_bytes_haproxy_accepted() {
    let agent = Agent::start().await;
    for version in ["haproxy-2.6", "haproxy-3.2"] {
        let mut raw = Raw::connect(agent.addr).await;
        raw.write(&capture(&format!("{version}/03-haproxy-hello.hex")))
            .await;
        assert_eq!(
            raw.recv_raw().await,
            capture(&format!("{version}/04-agent-hello.hex")),
            "{version}"
        );
    }
}

#[tokio::test]
async fn healthcheck_is_answered_then_closed() {
    let agent = Agent::start().await;
    let mut raw = Raw::connect(agent.addr).await;
    raw.write(&capture("haproxy-3.2/01-haproxy-hello-healthcheck.hex"))
        .await;
    assert_eq!(
        raw.recv_raw().await,
        capture("haproxy-3.2/02-agent-hello-healthcheck-reply.hex")
    );
    assert!(
        raw.closed().await,
        "connection must close after a health check"
    );
    assert_eq!(agent.state.metrics.healthchecks.get(), 1);
}

#[tokio::test]
async fn captured_notify_gets_an_ack_with_the_same_ids() {
    let agent = Agent::start().await;
    for version in ["haproxy-2.6", "haproxy-3.2"] {
        let mut raw = Raw::after_captured_hello(agent.addr, version).await;
        // 2.6's first NOTIFY has stream-id 0; 3.2's has stream-id 1.
        raw.write(&capture(&format!("{version}/05-notify-r1-get-root.hex")))
            .await;
        let ack = raw.recv().await.unwrap();
        let expected_stream = if version == "haproxy-2.6" { 0 } else { 1 };
        assert_eq!(
            (ack.stream_id, ack.frame_id, ack.flags),
            (expected_stream, 1, Flags::FIN)
        );
        let Payload::Ack(actions) = ack.payload else {
            panic!("not an ACK")
        };
        let vars = vars(&actions);
        assert_eq!(var(&vars, "action"), Some(&TypedData::str("allow")));
        assert_eq!(var(&vars, "reason"), Some(&TypedData::str("none")));
    }
}

#[tokio::test]
async fn decisions_follow_the_lists() {
    let agent = Agent::start().await;
    let mut client = Client::connect(agent.addr).await.unwrap();
    let cases = [
        (ipv4("127.0.0.1"), "allow", "none", ""),
        (ipv4("127.0.0.66"), "deny", "blocklist", "blocklist"),
        (ipv4("127.0.1.200"), "deny", "blocklist", "blocklist"),
        (ipv4("127.0.0.77"), "allow", "allowlist", "allow"),
        (ipv6("2001:db8:bad::1"), "deny", "blocklist", "blocklist"),
        (ipv6("2001:db8:600d::1"), "allow", "none", ""),
        (ipv6("::ffff:203.0.113.7"), "deny", "blocklist", "blocklist"),
        (
            TypedData::str("203.0.113.7"),
            "deny",
            "blocklist",
            "blocklist",
        ),
    ];
    for (src, action, reason, rule) in cases {
        let vars = decide(&mut client, src.clone()).await;
        assert_eq!(
            var(&vars, "action"),
            Some(&TypedData::str(action)),
            "{src:?}"
        );
        assert_eq!(
            var(&vars, "reason"),
            Some(&TypedData::str(reason)),
            "{src:?}"
        );
        assert_eq!(
            var(&vars, "rule"),
            Some(&TypedData::String(Bytes::from(rule))),
            "{src:?}"
        );
        let status = if action == "deny" {
            Some(&TypedData::Int32(403))
        } else {
            None
        };
        assert_eq!(var(&vars, "status"), status, "{src:?}");
    }
    assert_eq!(agent.state.metrics.decisions_of(Decision::Deny), 5);
    assert_eq!(agent.state.metrics.decisions_of(Decision::Allow), 3);
}

#[tokio::test]
async fn missing_or_bad_src_is_allowed_and_counted() {
    let agent = Agent::start().await;
    let mut client = Client::connect(agent.addr).await.unwrap();
    for src in [
        TypedData::Null,
        TypedData::str("garbage"),
        TypedData::Int64(5),
    ] {
        let vars = decide(&mut client, src).await;
        assert_eq!(var(&vars, "action"), Some(&TypedData::str("allow")));
        assert_eq!(var(&vars, "reason"), Some(&TypedData::str("none")));
    }
    let no_src = Message {
        name: Bytes::from_static(b"guard-check"),
        args: vec![],
    };
    let vars = vars(&client.notify(3, 1, vec![no_src]).await.unwrap());
    assert_eq!(var(&vars, "action"), Some(&TypedData::str("allow")));
    assert_eq!(agent.state.metrics.invalid_src.get(), 4);
}

#[tokio::test]
async fn unknown_messages_get_an_empty_ack() {
    let agent = Agent::start().await;
    let mut client = Client::connect(agent.addr).await.unwrap();
    let other = Message {
        name: Bytes::from_static(b"something-else"),
        args: vec![agent::arg("x", TypedData::Null)],
    };
    assert_eq!(client.notify(9, 2, vec![other]).await.unwrap(), vec![]);
    assert_eq!(
        client.notify(10, 1, vec![]).await.unwrap(),
        vec![],
        "a NOTIFY with no message"
    );
    // The guard message is found among several.
    let other = Message {
        name: Bytes::from_static(b"something-else"),
        args: vec![],
    };
    let actions = client
        .notify(11, 1, vec![other, guard_check(ipv4("127.0.0.66"))])
        .await
        .unwrap();
    assert_eq!(
        var(&vars(&actions), "action"),
        Some(&TypedData::str("deny"))
    );
}

#[tokio::test]
async fn pipelined_notifies_are_all_answered_with_their_ids() {
    let agent = Agent::start().await;
    let mut client = Client::connect(agent.addr).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..40u64 {
        // 3.x-style odd stream-ids, and 2.x-style stream-id 0 with a frame counter.
        let (sid, fid) = if i % 2 == 0 { (2 * i + 1, 1) } else { (0, i) };
        let src = if i % 3 == 0 {
            ipv4("127.0.0.66")
        } else {
            ipv4("127.0.0.1")
        };
        client
            .feed(Frame::new(
                sid,
                fid,
                Payload::Notify(vec![guard_check(src)]),
            ))
            .await
            .unwrap();
        expected.push((sid, fid, if i % 3 == 0 { "deny" } else { "allow" }));
    }
    client.flush().await.unwrap();
    for (sid, fid, action) in expected {
        let frame = client.recv().await.unwrap().unwrap();
        assert_eq!((frame.stream_id, frame.frame_id), (sid, fid));
        let Payload::Ack(actions) = frame.payload else {
            panic!("not an ACK")
        };
        assert_eq!(
            var(&vars(&actions), "action"),
            Some(&TypedData::str(action))
        );
    }
}

/// Each case: what to send after (or instead of) the HELLO, and the status expected.
#[tokio::test]
async fn protocol_errors_disconnect_with_their_status() {
    let agent = Agent::start().await;
    let notify = Frame::new(1, 1, Payload::Notify(vec![guard_check(ipv4("127.0.0.1"))]));
    let mut fragment = notify.clone();
    fragment.flags = Flags(0);

    // Before any HELLO.
    let mut raw = Raw::connect(agent.addr).await;
    raw.send(notify.clone()).await;
    let (status, message) = disconnect(raw.recv().await);
    assert_eq!(status, Status::INVALID, "{message}");
    assert!(message.contains("HAPROXY-HELLO"), "{message}");
    assert!(raw.closed().await);

    // Bad HELLOs.
    let mut bad_version = KvList::default();
    bad_version.push("supported-versions", TypedData::str("1.0"));
    bad_version.push("max-frame-size", TypedData::Uint32(16380));
    bad_version.push("capabilities", TypedData::str(""));
    let mut small = bad_version.clone();
    small.0[0].1 = TypedData::str("2.0");
    small.0[1].1 = TypedData::Uint32(100);
    let mut no_size = small.clone();
    no_size.0.remove(1);
    for (kv, expected) in [
        (bad_version, Status::BAD_VERSION),
        (small, Status::BAD_FRAME_SIZE),
        (no_size, Status::NO_FRAME_SIZE),
    ] {
        let mut raw = Raw::connect(agent.addr).await;
        raw.send(Frame::new(0, 0, Payload::HaproxyHello(kv))).await;
        assert_eq!(disconnect(raw.recv().await).0, expected);
        assert!(raw.closed().await);
    }

    // After a good HELLO.
    let after_hello: Vec<(Vec<u8>, Status)> = vec![
        (frame_bytes(fragment), Status::FRAG_NOT_SUPPORTED),
        // HAProxy 2.6's real first fragment, cut inside the User-Agent string.
        (
            capture("haproxy-2.6/37-notify-fragment1-nofin.hex"),
            Status::FRAG_NOT_SUPPORTED,
        ),
        (
            frame_bytes(Frame {
                flags: Flags::FIN,
                stream_id: 1,
                frame_id: 1,
                payload: Payload::Unset(Bytes::from_static(b"x")),
            }),
            Status::FRAG_NOT_SUPPORTED,
        ),
        (vec![0, 0, 0, 7, 42, 0, 0, 0, 1, 0, 0], Status::INVALID), // unknown frame type 42
        (
            vec![0, 0, 0, 9, 3, 0, 0, 0, 1, 1, 1, 0x05, b'g'],
            Status::INVALID,
        ), // message name cut short
        (vec![0, 0, 0, 3, 3, 0, 0], Status::INVALID),              // body shorter than a header
        (vec![0, 0, 0x40, 0], Status::TOO_BIG), // 16384 > 16380, sent as a prefix only
        (frame_bytes(haproxy_hello(16380, false)), Status::INVALID), // a second HELLO
        (
            frame_bytes(Frame::new(1, 1, Payload::Ack(vec![]))),
            Status::INVALID,
        ), // an agent frame type
    ];
    for (bytes, expected) in after_hello {
        let mut raw = Raw::connect(agent.addr).await;
        raw.send(haproxy_hello(16380, false)).await;
        raw.recv().await.unwrap();
        raw.write(&bytes).await;
        let (status, message) = disconnect(raw.recv().await);
        assert_eq!(status, expected, "{bytes:02x?}: {message}");
        assert!(message.len() <= 255);
        assert!(raw.closed().await, "closed after {bytes:02x?}");
    }
    assert_eq!(agent.state.metrics.protocol_errors.total(), 13);
}

fn frame_bytes(frame: Frame) -> Vec<u8> {
    use tokio_util::codec::Encoder;
    let mut buf = bytes::BytesMut::new();
    spoa_guard::spop::SpopCodec::new(u32::MAX)
        .encode(frame, &mut buf)
        .unwrap();
    buf.to_vec()
}

#[tokio::test]
async fn negotiated_frame_size_is_enforced() {
    let agent = Agent::start().await;
    let mut raw = Raw::connect(agent.addr).await;
    raw.send(haproxy_hello(1024, false)).await;
    let Some(Frame {
        payload: Payload::AgentHello(kv),
        ..
    }) = raw.recv().await
    else {
        panic!("no AGENT-HELLO")
    };
    assert_eq!(kv.get("max-frame-size"), Some(&TypedData::Uint32(1024)));
    let mut big = guard_check(ipv4("127.0.0.1"));
    big.args.push(agent::arg(
        "pad",
        TypedData::String(Bytes::from(vec![b'x'; 1100])),
    ));
    raw.send(Frame::new(1, 1, Payload::Notify(vec![big]))).await;
    assert_eq!(disconnect(raw.recv().await).0, Status::TOO_BIG);
}

#[tokio::test]
async fn haproxy_disconnect_is_answered_with_status_0() {
    let agent = Agent::start().await;
    for version in ["haproxy-2.6", "haproxy-3.2"] {
        let mut raw = Raw::after_captured_hello(agent.addr, version).await;
        let file = if version == "haproxy-2.6" {
            "29-haproxy-disconnect-idle-timeout.hex"
        } else {
            "31-haproxy-disconnect-unsupported-version.hex"
        };
        raw.write(&capture(&format!("{version}/{file}"))).await;
        assert_eq!(disconnect(raw.recv().await).0, Status::NORMAL);
        assert!(raw.closed().await);
    }
    assert_eq!(agent.state.metrics.protocol_errors.total(), 0);
}

#[tokio::test]
async fn peer_reset_is_a_normal_close() {
    let agent = Agent::start().await;
    let client = Client::connect(agent.addr).await.unwrap();
    let stream = client.into_inner().into_inner();
    // Close with RST, like HAProxy 3.x purging an idle connection.
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(agent.state.metrics.protocol_errors.total(), 0);
    assert_eq!(agent.state.metrics.connections_active.get(), 0);
}

#[tokio::test]
async fn shutdown_answers_then_disconnects_with_status_0() {
    let mut agent = Agent::start().await;
    let mut client = Client::connect(agent.addr).await.unwrap();
    decide(&mut client, ipv4("127.0.0.1")).await;
    agent.stop().await;
    let frame = client.recv().await.unwrap();
    let Some(Frame {
        payload: Payload::AgentDisconnect(d),
        ..
    }) = frame
    else {
        panic!("expected DISCONNECT, got {frame:?}")
    };
    assert_eq!(d.status, Status::NORMAL);
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(agent.addr).await.is_err());
}

/// HAProxy 3.2 opens about one connection per concurrent request: a burst of 200
/// simultaneous connections must all be served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_200_connections_is_served() {
    let agent = Agent::start().await;
    let addr = agent.addr;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await.unwrap();
                let src = if i % 2 == 0 {
                    "127.0.0.66"
                } else {
                    "127.0.0.1"
                };
                let vars = vars(
                    &client
                        .notify(1, 1, vec![guard_check(ipv4(src))])
                        .await
                        .unwrap(),
                );
                (i, var(&vars, "action").cloned())
            })
        })
        .collect();
    for task in tasks {
        let (i, action) = task.await.unwrap();
        let expected = if i % 2 == 0 { "deny" } else { "allow" };
        assert_eq!(action, Some(TypedData::str(expected)), "connection {i}");
    }
    assert_eq!(agent.state.metrics.connections.get(), 200);
}

#[tokio::test]
async fn connection_cap_queues_instead_of_refusing() {
    let agent = Agent::with_lists(agent::ALLOW, agent::BLOCK, "max_connections = 2").await;
    let mut first = Client::connect(agent.addr).await.unwrap();
    let _second = Client::connect(agent.addr).await.unwrap();
    // The third waits in the backlog until a slot frees up.
    let addr = agent.addr;
    let third = tokio::spawn(async move { Client::connect(addr).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !third.is_finished(),
        "third connection served beyond the cap"
    );
    decide(&mut first, ipv4("127.0.0.1")).await;
    drop(first);
    let mut third = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    decide(&mut third, ipv4("127.0.0.1")).await;
}

#[tokio::test]
async fn silent_sockets_at_the_cap_cannot_keep_haproxy_out() {
    let agent = Agent::with_lists(agent::ALLOW, agent::BLOCK, "max_connections = 20").await;
    // More silent sockets than slots: before, the 21st and later waited in the backlog
    // and a real HELLO behind them got no answer for idle_timeout_secs (300 s).
    let mut silent = Vec::new();
    for _ in 0..30 {
        silent.push(tokio::net::TcpStream::connect(agent.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut client = tokio::time::timeout(Duration::from_secs(2), Client::connect(agent.addr))
        .await
        .expect("a HELLO behind silent sockets got no AGENT-HELLO")
        .unwrap();
    decide(&mut client, ipv4("127.0.0.1")).await;
    let evicted = agent
        .state
        .metrics
        .connections_dropped
        .of(spoa_guard::metrics::ConnectionDrop::Evicted)
        .get();
    assert!(evicted >= 10, "evicted {evicted}");
    // The established connection is never evicted by more silent sockets.
    for _ in 0..30 {
        silent.push(tokio::net::TcpStream::connect(agent.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    decide(&mut client, ipv4("127.0.0.1")).await;
}

#[tokio::test]
async fn unix_socket_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let listen = spoa_guard::server::Listen::Unix(path.clone());
    let listener = spoa_guard::server::Listener::bind(&listen, 16).unwrap();
    // A second bind on a live socket is refused rather than stealing it.
    assert!(spoa_guard::server::Listener::bind(&listen, 16).is_err());
    let agent = Agent::start().await; // borrow its state
    let service = spoa_guard::server::Service::new(
        agent.state.clone(),
        &spoa_guard::server::ServerSettings::default(),
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(spoa_guard::server::run(
        listener,
        std::sync::Arc::new(service),
        8,
        shutdown.clone(),
        Duration::from_secs(1),
    ));
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let mut client = Client::handshake(stream, 16380).await.unwrap();
    let actions = client
        .notify(1, 1, vec![guard_check(ipv4("127.0.0.66"))])
        .await
        .unwrap();
    assert_eq!(
        var(&vars(&actions), "action"),
        Some(&TypedData::str("deny"))
    );
    shutdown.cancel();
    task.await.unwrap();
    assert!(!path.exists(), "socket file removed on shutdown");
}

#[tokio::test]
async fn protocol_error_logs_are_rate_limited() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let agent = agent::AgentProcess::with_rules("", &[]);
    // A reconnecting garbage sender: HTTP on the SPOP port, 50 times.
    for _ in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = agent.log();
    let lines = log.lines().filter(|l| l.contains("protocol error")).count();
    // One a second at most: the run takes well under 3 s.
    assert!(
        (1..=3).contains(&lines),
        "{lines} protocol-error lines for 50 bad connections:\n{log}"
    );
}
