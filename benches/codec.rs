//! SPOP codec benchmarks on real HAProxy frames (`tests/fixtures/captures/`).
//!
//! - `decode/notify_r1`: the 3.2 NOTIFY of `GET /` (120 bytes, 9 arguments), through
//!   `SpopCodec::decode` as the connection task sees it.
//! - `decode/notify_r6_long`: the 3.2 NOTIFY with the 306-byte path and 2510-byte
//!   User-Agent (2936 bytes): strings are sliced out of the body, not copied, so this
//!   should cost about the same as r1.
//! - `decode/pipelined_20_notify`: one buffer holding 20 NOTIFYs back to back (the 3.2
//!   main-session NOTIFYs except r6, cycled), decoded until the codec wants more bytes;
//!   what a pipelining HAProxy delivers in one read. Throughput is per frame.
//! - `encode/ack_4_set_vars`: the ACK of a deny verdict, built by
//!   `engine::Verdict::actions` (txn `action`, `reason`, `rule`, `status`), written with its
//!   length prefix into a reused buffer.
//!
//! - `in_place/notify_r1`, `in_place/pipelined_20_notify`: the hot path's reading of the
//!   same frames: header, the `guard-check` message's arguments borrowed from the buffer
//!   (`spop::notify::find_message`) and the `Request` built from them; no allocation.
//! - `in_place/ack_4_set_vars`: the hot path's ACK: header and set-vars written straight
//!   from the verdict (`Verdict::each_action`), length prefix patched.
//!
//! Inputs are rebuilt outside the timed section (`iter_batched`), so the decode numbers
//! do not include copying the wire bytes into a fresh `BytesMut`.
//!
//! ```text
//! cargo bench --bench codec
//! cargo bench --bench codec -- --quick
//! ```

use std::hint::black_box;
use std::path::Path;

use bytes::{Buf, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use spoa_guard::decision::{Decision, Reason, Request, Verdict};
use spoa_guard::spop::frame::{put_header, put_set_var};
use spoa_guard::spop::notify::find_message;
use spoa_guard::spop::{header, Flags, Frame, FrameType, Payload, Scope, SpopCodec};
use tokio_util::codec::{Decoder, Encoder};

/// HAProxy's default offer, the limit the captures were made under.
const MAX_FRAME_SIZE: u32 = 16380;

/// NOTIFYs in the pipelined buffer: HAProxy's default `max-waiting-frames`, and the 3.x
/// per-connection stream limit.
const PIPELINED: usize = 20;

/// Reads one `.hex` capture: length prefix and body.
fn capture(file: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/captures")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    hex::decode(text.trim_end()).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The 3.2 main-session NOTIFYs (r1..r11 and the soft-stop one), without the long r6.
const NOTIFIES: [&str; 13] = [
    "haproxy-3.2/05-notify-r1-get-root.hex",
    "haproxy-3.2/07-notify-r2-post-login.hex",
    "haproxy-3.2/09-notify-r3-admin-badbot.hex",
    "haproxy-3.2/11-notify-r4-src-127.0.0.7.hex",
    "haproxy-3.2/13-notify-r5-ipv6-src.hex",
    "haproxy-3.2/17-notify-r7-head-http10-no-host-no-ua.hex",
    "haproxy-3.2/19-notify-r8a-keepalive-first.hex",
    "haproxy-3.2/21-notify-r8b-keepalive-second.hex",
    "haproxy-3.2/23-notify-r9-slow.hex",
    "haproxy-3.2/25-notify-r10-agent-disconnect.hex",
    "haproxy-3.2/28-notify-r11-after-error.hex",
    "haproxy-3.2/29-notify-before-soft-stop.hex",
    "haproxy-3.2/34-notify-negative-and-large-int.hex",
];

fn bench_decode_one(c: &mut Criterion, name: &str, file: &str) {
    let wire = capture(file);
    let mut codec = SpopCodec::new(MAX_FRAME_SIZE);
    // Sanity: the input is one whole frame that decodes.
    let frame = codec.decode(&mut BytesMut::from(&wire[..])).unwrap();
    assert!(matches!(
        frame,
        Some(Frame {
            payload: Payload::Notify(_),
            ..
        })
    ));

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| codec.decode(black_box(&mut buf)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn decode_notify_r1(c: &mut Criterion) {
    bench_decode_one(c, "notify_r1", "haproxy-3.2/05-notify-r1-get-root.hex");
}

fn decode_notify_r6_long(c: &mut Criterion) {
    bench_decode_one(
        c,
        "notify_r6_long",
        "haproxy-3.2/15-notify-r6-long-path-ua-xff.hex",
    );
}

fn decode_pipelined(c: &mut Criterion) {
    let mut wire = Vec::new();
    for file in NOTIFIES.iter().cycle().take(PIPELINED) {
        wire.extend_from_slice(&capture(file));
    }
    let mut codec = SpopCodec::new(MAX_FRAME_SIZE);
    let decode_all = |codec: &mut SpopCodec, mut buf: BytesMut| {
        let mut frames = Vec::with_capacity(PIPELINED);
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
        frames
    };
    assert_eq!(
        decode_all(&mut codec, BytesMut::from(&wire[..])).len(),
        PIPELINED
    );

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(PIPELINED as u64));
    group.bench_function("pipelined_20_notify", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |buf| decode_all(&mut codec, black_box(buf)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn encode_ack(c: &mut Criterion) {
    let verdict = Verdict::new(
        Decision::Deny,
        Reason::Blocklist,
        Bytes::from_static(b"spamhaus-drop"),
    );
    let ack = Frame::new(17, 1, Payload::Ack(verdict.actions()));
    let mut codec = SpopCodec::new(MAX_FRAME_SIZE);
    let mut buf = BytesMut::with_capacity(256);
    codec.encode(ack.clone(), &mut buf).unwrap();
    let Some(Frame {
        payload: Payload::Ack(actions),
        ..
    }) = codec.decode(&mut buf).unwrap()
    else {
        panic!("the ACK does not decode")
    };
    assert_eq!(actions.len(), 4);

    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ack_4_set_vars", |b| {
        b.iter_batched(
            || ack.clone(),
            |frame| {
                buf.clear();
                codec.encode(black_box(frame), &mut buf).unwrap();
                black_box(buf.len())
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// What the connection does with one frame body on the hot path, up to the request.
fn read_in_place(body: &[u8]) -> Option<Request<'_>> {
    let (_, payload) = header(body).ok()?;
    let args = find_message(payload, b"guard-check").ok()??;
    Some(Request::from_args(args))
}

fn in_place(c: &mut Criterion) {
    let one = capture("haproxy-3.2/05-notify-r1-get-root.hex");
    assert!(read_in_place(&one[4..]).is_some_and(|r| r.src.is_some()));
    let mut wire = Vec::new();
    for file in NOTIFIES.iter().cycle().take(PIPELINED) {
        wire.extend_from_slice(&capture(file));
    }
    let codec = SpopCodec::new(MAX_FRAME_SIZE);
    let read_all = |buf: &mut BytesMut| {
        let mut n = 0;
        while let Some(len) = codec.body_len(buf).unwrap() {
            n += usize::from(read_in_place(&buf[4..4 + len]).is_some());
            buf.advance(4 + len);
        }
        n
    };
    assert_eq!(read_all(&mut BytesMut::from(&wire[..])), PIPELINED);

    let mut group = c.benchmark_group("in_place");
    group.throughput(Throughput::Elements(1));
    group.bench_function("notify_r1", |b| {
        b.iter(|| read_in_place(black_box(&one[4..])).map(|r| r.args.len()))
    });
    group.throughput(Throughput::Elements(PIPELINED as u64));
    group.bench_function("pipelined_20_notify", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&wire[..]),
            |buf| read_all(black_box(buf)),
            BatchSize::SmallInput,
        )
    });

    let verdict = Verdict::new(
        Decision::Deny,
        Reason::Blocklist,
        Bytes::from_static(b"spamhaus-drop"),
    );
    let mut buf = BytesMut::with_capacity(256);
    let write_ack = |buf: &mut BytesMut, verdict: &Verdict| {
        let start = SpopCodec::begin_frame(buf);
        put_header(FrameType::Ack, Flags::FIN, 17, 1, buf);
        verdict.each_action(|name, value| put_set_var(Scope::Txn, name.as_bytes(), value, buf));
        codec.end_frame(start, buf).unwrap();
    };
    write_ack(&mut buf, &verdict);
    let mut encoded = BytesMut::new();
    SpopCodec::new(MAX_FRAME_SIZE)
        .encode(
            Frame::new(17, 1, Payload::Ack(verdict.actions())),
            &mut encoded,
        )
        .unwrap();
    assert_eq!(buf, encoded, "the in-place ACK differs from the owned one");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ack_4_set_vars", |b| {
        b.iter(|| {
            buf.clear();
            write_ack(&mut buf, black_box(&verdict));
            black_box(buf.len())
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    decode_notify_r1,
    decode_notify_r6_long,
    decode_pipelined,
    encode_ack,
    in_place
);
criterion_main!(benches);
