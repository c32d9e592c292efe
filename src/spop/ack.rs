//! Writing one ACK frame (SPOE.txt §3.2.6 and §3.4) straight into an output buffer:
//! [`AckWriter::begin`] writes a placeholder length and the header, [`AckWriter::set_var`]
//! appends one action, [`AckWriter::finish`] writes the length and checks it against the
//! negotiated max-frame-size. No [`Frame`](super::Frame) or action list is built.
//!
//! ```text
//! | LENGTH | ACK | FIN | STREAM-ID | FRAME-ID | set-var(txn, name, value) ... |
//!   ^ finish()  ^------ begin() -----------^    ^----- set_var() each -----^
//! ```

use bytes::BytesMut;

use super::codec::SpopCodec;
use super::frame::{put_header, put_set_var};
use super::types::{Flags, FrameType, Scope, Value};
use super::Error;

/// One ACK being written at the end of a buffer.
#[derive(Debug)]
pub struct AckWriter<'a> {
    out: &'a mut BytesMut,
    /// Where the frame's length prefix is.
    start: usize,
}

impl<'a> AckWriter<'a> {
    /// Starts the ACK of NOTIFY `stream_id`/`frame_id` at the end of `out`.
    pub fn begin(out: &'a mut BytesMut, stream_id: u64, frame_id: u64) -> AckWriter<'a> {
        let start = SpopCodec::begin_frame(out);
        put_header(FrameType::Ack, Flags::FIN, stream_id, frame_id, out);
        AckWriter { out, start }
    }

    /// Appends a set-var action.
    pub fn set_var(&mut self, scope: Scope, name: &[u8], value: Value<'_>) {
        put_set_var(scope, name, value, self.out);
    }

    /// Ends the frame.
    ///
    /// # Errors
    ///
    /// [`Error::TooBig`] when the ACK is longer than `codec`'s max-frame-size; the frame
    /// is then removed from the buffer.
    pub fn finish(self, codec: &SpopCodec) -> Result<(), Error> {
        codec.end_frame(self.start, self.out)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio_util::codec::Decoder;

    use super::*;
    use crate::spop::{Action, Frame, Payload, TypedData};

    #[test]
    fn writes_the_same_bytes_as_an_encoded_ack() {
        let mut out = BytesMut::new();
        let mut ack = AckWriter::begin(&mut out, 7, 3);
        ack.set_var(Scope::Txn, b"action", Value::String(b"deny"));
        ack.set_var(Scope::Txn, b"status", Value::Int32(403));
        ack.finish(&SpopCodec::new(16380)).unwrap();

        let expected = Frame::new(
            7,
            3,
            Payload::Ack(vec![
                Action::set_txn("action", TypedData::String(Bytes::from_static(b"deny"))),
                Action::set_txn("status", TypedData::Int32(403)),
            ]),
        );
        let mut encoded = BytesMut::new();
        tokio_util::codec::Encoder::encode(
            &mut SpopCodec::new(16380),
            expected.clone(),
            &mut encoded,
        )
        .unwrap();
        assert_eq!(out, encoded);
        assert_eq!(
            SpopCodec::new(16380).decode(&mut out).unwrap(),
            Some(expected)
        );
    }

    #[test]
    fn an_ack_over_max_frame_size_is_refused_and_removed() {
        let mut out = BytesMut::from(&b"earlier"[..]);
        let mut ack = AckWriter::begin(&mut out, 1, 1);
        ack.set_var(Scope::Txn, b"rule", Value::String(&[b'x'; 300]));
        let err = ack.finish(&SpopCodec::new(256)).unwrap_err();
        assert!(matches!(err, Error::TooBig { .. }), "{err}");
        assert_eq!(&out[..], b"earlier");
    }
}
