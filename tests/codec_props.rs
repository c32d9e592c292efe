//! Property tests of the SPOP codec (`spop::frame`, `spop::codec`).
//!
//! * Every frame the strategies can build (every payload variant, every typed-data type,
//!   every scope, named and unnamed arguments, varint boundary values) survives
//!   encode -> decode unchanged, whole, split anywhere, or pipelined with others.
//! * Garbage never panics: arbitrary bytes through `SpopCodec::decode`, arbitrary bodies
//!   and valid headers followed by garbage through `Frame::decode`, and valid frames with
//!   one byte changed. Whatever does decode re-encodes to a frame that decodes the same.
//!
//! Two encoder cuts are deliberate and excluded from the round trip (tested below as
//! plain tests): a DISCONNECT message longer than 255 bytes, and a NOTIFY message with
//! more than 255 arguments (NB-ARGS is one byte).

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use spoa_guard::spop::{
    Action, Arg, Disconnect, Error, Flags, Frame, KvList, Message, Payload, Scope, SpopCodec,
    Status, TypedData,
};
use tokio_util::codec::{Decoder, Encoder};

/// Large enough for anything the strategies build.
const BIG_LIMIT: u32 = 1 << 20;

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// Integers around every varint length boundary (spop.md §3), plus anything.
fn varint_value() -> impl Strategy<Value = u64> {
    const EDGES: [u64; 13] = [
        0,
        239,
        240,
        2287,
        2288,
        264_431,
        264_432,
        33_818_863,
        33_818_864,
        u32::MAX as u64,
        1 << 32,
        i64::MAX as u64,
        u64::MAX,
    ];
    prop_oneof![
        select(&EDGES[..]),
        select(&EDGES[..]).prop_map(|v| v.wrapping_add(1)),
        select(&EDGES[..]).prop_map(|v| v.wrapping_sub(1)),
        any::<u64>(),
        0u64..300,
    ]
}

fn raw_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

/// Names: usually short ASCII, sometimes empty (an unnamed argument), sometimes any bytes,
/// sometimes long enough for a multi-byte varint length.
fn name() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        4 => "[a-z_.-]{1,12}".prop_map(Bytes::from),
        1 => Just(Bytes::new()),
        1 => raw_bytes(16),
        1 => raw_bytes(300),
    ]
}

fn typed_data() -> impl Strategy<Value = TypedData> {
    prop_oneof![
        Just(TypedData::Null),
        any::<bool>().prop_map(TypedData::Bool),
        any::<i32>().prop_map(TypedData::Int32),
        prop_oneof![Just(i32::MIN), Just(-1), Just(239), Just(240)].prop_map(TypedData::Int32),
        any::<u32>().prop_map(TypedData::Uint32),
        varint_value().prop_map(|v| TypedData::Int64(v as i64)),
        varint_value().prop_map(TypedData::Uint64),
        any::<[u8; 4]>().prop_map(|o| TypedData::Ipv4(Ipv4Addr::from(o))),
        any::<[u8; 16]>().prop_map(|o| TypedData::Ipv6(Ipv6Addr::from(o))),
        raw_bytes(40).prop_map(TypedData::String),
        raw_bytes(2600).prop_map(TypedData::String),
        raw_bytes(40).prop_map(TypedData::Binary),
    ]
}

fn scope() -> impl Strategy<Value = Scope> {
    select(&[Scope::Proc, Scope::Sess, Scope::Txn, Scope::Req, Scope::Res][..])
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (scope(), name(), typed_data()).prop_map(|(scope, name, value)| Action::SetVar {
            scope,
            name,
            value
        }),
        (scope(), name()).prop_map(|(scope, name)| Action::UnsetVar { scope, name }),
    ]
}

fn arg() -> impl Strategy<Value = Arg> {
    (name(), typed_data()).prop_map(|(name, value)| Arg { name, value })
}

/// Messages with 0..12 arguments, and now and then the 255 maximum.
fn message() -> impl Strategy<Value = Message> {
    let args = prop_oneof![
        20 => vec(arg(), 0..12),
        1 => vec((Just(Bytes::new()), any::<u8>()), 255).prop_map(|args| {
            args.into_iter()
                .map(|(name, b)| Arg { name, value: TypedData::Binary(Bytes::from(vec![b])) })
                .collect()
        }),
    ];
    (name(), args).prop_map(|(name, args)| Message { name, args })
}

fn kv_list() -> impl Strategy<Value = KvList> {
    vec((name(), typed_data()), 0..8).prop_map(KvList)
}

/// DISCONNECT messages up to the 255 bytes that survive encoding.
fn disconnect() -> impl Strategy<Value = Disconnect> {
    (any::<u32>(), raw_bytes(Disconnect::MAX_MESSAGE)).prop_map(|(status, message)| Disconnect {
        status: Status(status),
        message,
    })
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        raw_bytes(64).prop_map(Payload::Unset),
        raw_bytes(64).prop_map(Payload::NotifyFragment),
        kv_list().prop_map(Payload::HaproxyHello),
        disconnect().prop_map(Payload::HaproxyDisconnect),
        vec(message(), 0..4).prop_map(Payload::Notify),
        kv_list().prop_map(Payload::AgentHello),
        disconnect().prop_map(Payload::AgentDisconnect),
        vec(action(), 0..10).prop_map(Payload::Ack),
    ]
}

/// Frames with any flags, except that FIN decides what a NOTIFY is: with it, a list of
/// messages; without it, the raw first fragment of a 2.x fragmented NOTIFY, cut anywhere
/// (captures `haproxy-2.6/37..39`).
fn frame() -> impl Strategy<Value = Frame> {
    let flags = prop_oneof![
        Just(Flags::FIN),
        Just(Flags(0)),
        any::<u32>().prop_map(Flags)
    ];
    (flags, varint_value(), varint_value(), payload()).prop_map(
        |(flags, stream_id, frame_id, payload)| {
            let flags = match payload {
                Payload::Notify(_) => Flags(flags.0 | Flags::FIN.0),
                Payload::NotifyFragment(_) => Flags(flags.0 & !Flags::FIN.0),
                _ => flags,
            };
            Frame {
                flags,
                stream_id,
                frame_id,
                payload,
            }
        },
    )
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn body_of(frame: &Frame) -> Bytes {
    let mut body = BytesMut::new();
    frame.encode_body(&mut body);
    body.freeze()
}

fn wire_of(frames: &[Frame]) -> BytesMut {
    let mut codec = SpopCodec::new(BIG_LIMIT);
    let mut wire = BytesMut::new();
    for frame in frames {
        codec.encode(frame.clone(), &mut wire).unwrap();
    }
    wire
}

/// Feeds `input` to a codec the way a socket would, `chunk` bytes at a time, decoding
/// until it wants more bytes or fails. Returns the frames and the error, if any.
fn decode_stream(codec: &mut SpopCodec, input: &[u8], chunk: usize) -> (Vec<Frame>, Option<Error>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    // Progress: at least a prefix and the 7-byte minimal header went.
                    assert!(
                        before - buf.len() >= 11,
                        "a frame consumed {} bytes",
                        before - buf.len()
                    );
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// A frame that decoded from untrusted bytes encodes to a body that decodes to the same
/// frame (the decoder's view is stable), unless it is a DISCONNECT whose message the
/// encoder must cut.
fn assert_re_decodes(frame: &Frame) -> Result<(), TestCaseError> {
    if let Payload::HaproxyDisconnect(d) | Payload::AgentDisconnect(d) = &frame.payload {
        if d.message.len() > Disconnect::MAX_MESSAGE {
            return Ok(());
        }
    }
    let again = Frame::decode(&body_of(frame));
    prop_assert!(
        again.is_ok(),
        "re-encoded {:?} fails: {:?}",
        frame,
        again.err()
    );
    prop_assert_eq!(&again.unwrap(), frame);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn encode_body_then_decode_gives_the_same_frame(frame in frame()) {
        let body = body_of(&frame);
        prop_assert_eq!(Frame::decode(&body).unwrap(), frame);
    }

    #[test]
    fn codec_round_trip_consumes_exactly_one_frame(frame in frame()) {
        let mut wire = wire_of(std::slice::from_ref(&frame));
        let len = u32::from_be_bytes(wire[..4].try_into().unwrap());
        prop_assert_eq!(len as usize, wire.len() - 4);
        wire.extend_from_slice(b"\x00\x00");
        let decoded = SpopCodec::new(BIG_LIMIT).decode(&mut wire).unwrap();
        prop_assert_eq!(decoded, Some(frame));
        prop_assert_eq!(&wire[..], b"\x00\x00");
    }

    #[test]
    fn frame_split_anywhere_decodes_the_same(frame in frame(), at in any::<prop::sample::Index>()) {
        let wire = wire_of(std::slice::from_ref(&frame));
        let at = at.index(wire.len() + 1);
        let mut codec = SpopCodec::new(BIG_LIMIT);
        let mut buf = BytesMut::from(&wire[..at]);
        if at < wire.len() {
            prop_assert!(codec.decode(&mut buf).unwrap().is_none());
            buf.extend_from_slice(&wire[at..]);
        }
        prop_assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn pipelined_frames_decode_in_order_in_any_chunking(
        frames in vec(frame(), 1..6),
        chunk in prop_oneof![1usize..8, 8usize..4096],
    ) {
        let wire = wire_of(&frames);
        let (decoded, err) = decode_stream(&mut SpopCodec::new(BIG_LIMIT), &wire, chunk);
        prop_assert!(err.is_none(), "{:?}", err);
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn encoder_limit_matches_decoder_limit(frame in frame()) {
        let body_len = body_of(&frame).len();
        let limit = u32::try_from(body_len).unwrap();
        let mut wire = BytesMut::new();
        prop_assert!(SpopCodec::new(limit).encode(frame.clone(), &mut wire).is_ok());
        prop_assert!(SpopCodec::new(limit).decode(&mut wire.clone()).unwrap().is_some());
        if limit > 0 {
            let mut out = BytesMut::new();
            let too_big = SpopCodec::new(limit - 1).encode(frame, &mut out);
            prop_assert!(matches!(too_big, Err(Error::TooBig { .. })), "{:?}", too_big);
            prop_assert!(out.is_empty());
            let rejected = SpopCodec::new(limit - 1).decode(&mut wire);
            prop_assert!(matches!(rejected, Err(Error::TooBig { .. })), "{:?}", rejected);
        }
    }

    #[test]
    fn arbitrary_bytes_into_the_codec_never_panic(
        input in vec(any::<u8>(), 0..512),
        max in select(&[0u32, 6, 7, 256, 16380, BIG_LIMIT][..]),
        chunk in 1usize..64,
    ) {
        let (frames, _) = decode_stream(&mut SpopCodec::new(max), &input, chunk);
        for frame in &frames {
            assert_re_decodes(frame)?;
        }
    }

    /// Mostly-valid prefixes reach deeper into the parser than pure noise.
    #[test]
    fn plausible_prefixes_into_the_codec_never_panic(
        len in 0u32..64,
        type_byte in select(&[0u8, 1, 2, 3, 101, 102, 103, 4, 255][..]),
        rest in vec(any::<u8>(), 0..80),
    ) {
        let mut input = BytesMut::new();
        input.put_u32(len);
        input.put_u8(type_byte);
        input.put_slice(&rest);
        let _ = decode_stream(&mut SpopCodec::new(16380), &input, 7);
    }

    #[test]
    fn arbitrary_body_into_frame_decode_never_panics(body in vec(any::<u8>(), 0..512)) {
        if let Ok(frame) = Frame::decode(&Bytes::from(body)) {
            assert_re_decodes(&frame)?;
        }
    }

    /// A valid header (known type, flags, ids) followed by noise, so the payload parsers
    /// see the garbage rather than the frame-type check.
    #[test]
    fn garbage_payload_after_a_valid_header_never_panics(
        type_byte in select(&[0u8, 1, 2, 3, 101, 102, 103][..]),
        payload in prop_oneof![
            vec(any::<u8>(), 0..256),
            // Type bytes, small lengths and printable names are what the parsers branch on.
            vec(select(&[0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x11, 0xf0, 0xfe, 0xff, b'a'][..]), 0..256),
        ],
    ) {
        let mut body = BytesMut::new();
        body.put_u8(type_byte);
        body.put_u32(1);
        body.put_slice(&[0, 1]);
        body.put_slice(&payload);
        if let Ok(frame) = Frame::decode(&body.freeze()) {
            assert_re_decodes(&frame)?;
        }
    }

    #[test]
    fn one_mutated_byte_in_a_valid_frame_never_panics(
        frame in frame(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut wire = wire_of(std::slice::from_ref(&frame));
        let at = at.index(wire.len());
        wire[at] = byte;
        // Through the codec (the prefix may now be wrong in either direction)...
        let (frames, _) = decode_stream(&mut SpopCodec::new(BIG_LIMIT), &wire, wire.len());
        for frame in &frames {
            assert_re_decodes(frame)?;
        }
        // ...and the body alone.
        if let Ok(frame) = Frame::decode(&Bytes::copy_from_slice(&wire[4..])) {
            assert_re_decodes(&frame)?;
        }
    }

    #[test]
    fn truncated_body_never_panics(frame in frame(), cut in any::<prop::sample::Index>()) {
        let body = body_of(&frame);
        let cut = cut.index(body.len());
        if let Ok(frame) = Frame::decode(&body.slice(..cut)) {
            assert_re_decodes(&frame)?;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The two deliberate encoder cuts
// ---------------------------------------------------------------------------------------

/// NB-ARGS is one byte: the encoder sends the first 255 arguments and drops the rest
/// rather than writing a count that disagrees with the arguments.
#[test]
fn notify_message_with_more_than_255_args_is_cut_to_255() {
    let args: Vec<Arg> = (0..300u32)
        .map(|i| Arg {
            name: Bytes::from(format!("a{i}")),
            value: TypedData::Uint32(i),
        })
        .collect();
    let message = |args: Vec<Arg>| Message {
        name: Bytes::from_static(b"m"),
        args,
    };
    let frame = Frame::new(1, 1, Payload::Notify(vec![message(args.clone())]));
    let decoded = Frame::decode(&body_of(&frame)).unwrap();
    let want = Frame::new(1, 1, Payload::Notify(vec![message(args[..255].to_vec())]));
    assert_eq!(decoded, want);
}

/// HAProxy 2.6 rejects DISCONNECT messages over 255 bytes, so the encoder cuts them.
#[test]
fn disconnect_message_over_255_bytes_is_cut_to_255() {
    let long = Bytes::from(vec![b'x'; 300]);
    let frame = Frame::new(
        0,
        0,
        Payload::AgentDisconnect(Disconnect {
            status: Status(99),
            message: long.clone(),
        }),
    );
    let decoded = Frame::decode(&body_of(&frame)).unwrap();
    assert_eq!(
        decoded.payload,
        Payload::AgentDisconnect(Disconnect {
            status: Status(99),
            message: long.slice(..255)
        })
    );
}
