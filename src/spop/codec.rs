//! The framing layer: a 4-byte big-endian length prefix in front of every frame body,
//! and the max-frame-size limit (SPOE.txt §3.2), as a `tokio_util` codec.
//!
//! The length is checked against the limit *before* the body is buffered, so a peer
//! announcing a huge frame costs nothing but an error (status 3). Decoding follows the
//! `Decoder` contract: `Ok(None)` means "need more bytes", `Ok(Some)` consumes exactly one
//! frame, `Err` means the stream is unusable.

use std::io;

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::error::Error;
use super::frame::Frame;

/// Size of the length prefix.
pub const PREFIX: usize = 4;

/// Length-prefixed SPOP frames, limited to `max_frame_size` body bytes in both directions.
#[derive(Debug, Clone)]
pub struct SpopCodec {
    max_frame_size: u32,
}

impl SpopCodec {
    /// A codec that accepts bodies of at most `max_frame_size` bytes.
    pub fn new(max_frame_size: u32) -> Self {
        Self { max_frame_size }
    }

    /// The limit in force.
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Changes the limit, e.g. once the HELLO exchange has negotiated it.
    pub fn set_max_frame_size(&mut self, max_frame_size: u32) {
        self.max_frame_size = max_frame_size;
    }

    /// The body length of the first frame in `src` once all of it is there: the body is
    /// `src[PREFIX..PREFIX + len]`. `Ok(None)` means "need more bytes"; `src` then has
    /// room reserved for the whole frame.
    ///
    /// # Errors
    ///
    /// [`Error::TooBig`] as soon as the length prefix announces more than the limit.
    pub fn body_len(&self, src: &mut BytesMut) -> Result<Option<usize>, Error> {
        let Some(mut prefix) = src.get(..PREFIX) else {
            return Ok(None);
        };
        let size = prefix.get_u32();
        let too_big = Error::TooBig {
            size,
            max: self.max_frame_size,
        };
        if size > self.max_frame_size {
            return Err(too_big);
        }
        // Lossless: size <= max_frame_size, a u32, and usize is at least 32 bits here.
        let body_len = usize::try_from(size).map_err(|_| too_big)?;
        let total = PREFIX + body_len;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        Ok(Some(body_len))
    }

    /// Starts a frame at the end of `dst`: a placeholder length prefix. Write the body,
    /// then call [`SpopCodec::end_frame`] with the returned position.
    pub fn begin_frame(dst: &mut BytesMut) -> usize {
        let start = dst.len();
        dst.put_u32(0);
        start
    }

    /// Ends the frame begun at `start`: writes its length prefix.
    ///
    /// # Errors
    ///
    /// [`Error::TooBig`] when the body exceeds max-frame-size; the frame is removed
    /// from `dst`.
    pub fn end_frame(&self, start: usize, dst: &mut BytesMut) -> Result<(), Error> {
        let body_len = dst.len().saturating_sub(start + PREFIX);
        match u32::try_from(body_len) {
            Ok(size) if size <= self.max_frame_size => {
                if let Some(prefix) = dst.get_mut(start..start + PREFIX) {
                    prefix.copy_from_slice(&size.to_be_bytes());
                }
                Ok(())
            }
            _ => {
                dst.truncate(start);
                Err(Error::TooBig {
                    size: u32::try_from(body_len).unwrap_or(u32::MAX),
                    max: self.max_frame_size,
                })
            }
        }
    }
}

impl Decoder for SpopCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        let Some(body_len) = self.body_len(src)? else {
            return Ok(None);
        };
        src.advance(PREFIX);
        let body = src.split_to(body_len).freeze();
        Frame::decode(&body).map(Some)
    }

    /// At end of stream, leftover bytes are a frame cut short by the peer closing: an
    /// `UnexpectedEof` I/O error, so the connection treats it as the peer going away.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a frame",
            ))),
        }
    }
}

impl Encoder<Frame> for SpopCodec {
    type Error = Error;

    /// Writes the length prefix and the body.
    ///
    /// # Errors
    ///
    /// [`Error::TooBig`] when the body exceeds max-frame-size; `dst` is left as it was.
    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Error> {
        let start = Self::begin_frame(dst);
        frame.encode_body(dst);
        self.end_frame(start, dst)
    }
}
