//! Arbitrary bytes as a SPOP byte stream (length-prefixed frames, as they come off the
//! socket) through [`SpopCodec`], and as one frame body through [`Frame::decode`].
//!
//! Checks, besides "never panics":
//! - the codec reads the same frames and stops at the same error whether the stream
//!   arrives at once or one byte at a time (the `Decoder` contract: `Ok(None)` only ever
//!   means "need more bytes");
//! - a body that decodes encodes back to one that decodes to the same frame, through
//!   `encode_body` and through the codec's `Encoder`.
//!
//! Seeds: the captured frames of `tests/fixtures/captures/` (with their length prefix).

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use spoa_guard::spop::{Disconnect, Frame, Payload, SpopCodec};
use tokio_util::codec::{Decoder, Encoder};

/// HAProxy's default offer (tune.bufsize 16384 minus the prefix), the agent's default.
const MAX_FRAME_SIZE: u32 = 16380;

/// What the codec yields, in order, with errors as their text (`Error` has no `Eq`).
type Outcomes = Vec<Result<Frame, String>>;

fuzz_target!(|data: &[u8]| {
    let whole = decode_stream(data, data.len().max(1));
    let bytewise = decode_stream(data, 1);
    assert_eq!(
        whole, bytewise,
        "the stream read whole and byte by byte differ"
    );

    let body = Bytes::copy_from_slice(data);
    if let Ok(frame) = Frame::decode(&body) {
        round_trip(&frame);
    }
});

/// Feeds `data` to a codec `chunk` bytes at a time, decoding all it can after each
/// chunk, then ends the stream.
fn decode_stream(data: &[u8], chunk: usize) -> Outcomes {
    let mut codec = SpopCodec::new(MAX_FRAME_SIZE);
    let mut buffer = BytesMut::new();
    let mut outcomes = Vec::new();
    for piece in data.chunks(chunk) {
        buffer.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(frame)) => outcomes.push(Ok(frame)),
                Ok(None) => break,
                Err(e) => {
                    // A stream error ends the connection: nothing after it is read.
                    outcomes.push(Err(e.to_string()));
                    return outcomes;
                }
            }
        }
    }
    match codec.decode_eof(&mut buffer) {
        Ok(Some(frame)) => outcomes.push(Ok(frame)),
        Ok(None) => {}
        Err(e) => outcomes.push(Err(e.to_string())),
    }
    outcomes
}

/// Encodes a decoded frame and decodes it again.
fn round_trip(frame: &Frame) {
    let mut body = BytesMut::new();
    frame.encode_body(&mut body);
    let again = Frame::decode(&body.freeze()).expect("an encoded frame decodes");
    let want = as_written(frame);
    assert_eq!(again, want, "decode(encode(frame)) differs from frame");

    let mut codec = SpopCodec::new(MAX_FRAME_SIZE);
    let mut wire = BytesMut::new();
    if codec.encode(frame.clone(), &mut wire).is_ok() {
        let read = codec.decode(&mut wire).expect("an encoded frame decodes");
        assert_eq!(read, Some(want), "the codec's encode then decode differs");
        assert!(wire.is_empty(), "the codec left bytes after its own frame");
    } else {
        assert!(wire.is_empty(), "a refused frame left bytes in the buffer");
    }
}

/// `frame` as the encoder writes it: a DISCONNECT message is cut to the 255 bytes
/// HAProxy accepts (documented on [`Disconnect::message`]).
fn as_written(frame: &Frame) -> Frame {
    let mut frame = frame.clone();
    if let Payload::HaproxyDisconnect(d) | Payload::AgentDisconnect(d) = &mut frame.payload {
        d.message.truncate(Disconnect::MAX_MESSAGE);
    }
    frame
}
