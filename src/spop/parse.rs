//! The nom parsers shared by both ways of reading a frame body: into an owned
//! [`Frame`](super::Frame) ([`super::frame`]) and in place, for the hot path
//! ([`super::notify`]). Every parser is `complete`: running out of bytes inside a body is
//! an invalid frame, never a request for more.

use std::net::{Ipv4Addr, Ipv6Addr};

use nom::bytes::complete::take;
use nom::error::{ErrorKind, ParseError};
use nom::number::complete::{be_u32, be_u8};
use nom::IResult;

use super::error::Error;
use super::types::{Flags, Value};
use super::varint::{self, VarintError};

/// The parse error: a fixed description of what was wrong, never a formatted string.
#[derive(Debug)]
pub(super) struct Malformed(pub(super) &'static str);

impl<I> ParseError<I> for Malformed {
    fn from_error_kind(_: I, _: ErrorKind) -> Self {
        Malformed("truncated frame")
    }

    fn append(_: I, _: ErrorKind, other: Self) -> Self {
        other
    }
}

pub(super) type PResult<'a, O> = IResult<&'a [u8], O, Malformed>;

/// Fails the parse with `what` as the reason.
pub(super) fn fail<O>(what: &'static str) -> PResult<'static, O> {
    Err(nom::Err::Failure(Malformed(what)))
}

/// The smallest body: type, flags and two one-byte varints.
pub(super) const MIN_BODY: usize = 7;

/// The header fields of a frame body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The type byte (see [`super::FrameType::from_code`]).
    pub code: u8,
    /// The FLAGS word.
    pub flags: Flags,
    /// STREAM-ID.
    pub stream_id: u64,
    /// FRAME-ID.
    pub frame_id: u64,
}

/// Splits a frame body into its header and its payload.
///
/// # Errors
///
/// [`Error::Invalid`] when the body is too short for a header or a varint is malformed.
pub fn header(body: &[u8]) -> Result<(Header, &[u8]), Error> {
    if body.len() < MIN_BODY {
        return Err(Error::Invalid("frame shorter than its header"));
    }
    finish(header_(body)).map(|(payload, header)| (header, payload))
}

pub(super) fn header_(input: &[u8]) -> PResult<'_, Header> {
    let (input, code) = be_u8(input)?;
    let (input, flags) = be_u32(input)?;
    let (input, stream_id) = varint_(input)?;
    let (input, frame_id) = varint_(input)?;
    let header = Header {
        code,
        flags: Flags(flags),
        stream_id,
        frame_id,
    };
    Ok((input, header))
}

/// Turns a parse result into the codec's error type.
pub(super) fn finish<T>(result: PResult<'_, T>) -> Result<(&[u8], T), Error> {
    result.map_err(|err| match err {
        nom::Err::Error(e) | nom::Err::Failure(e) => Error::Invalid(e.0),
        nom::Err::Incomplete(_) => Error::Invalid("truncated frame"),
    })
}

/// A varint length followed by that many bytes.
pub(super) fn string(input: &[u8]) -> PResult<'_, &[u8]> {
    let (input, len) = varint_(input)?;
    let Ok(len) = usize::try_from(len) else {
        return fail("string length out of range");
    };
    take(len)(input).map_err(|_: nom::Err<Malformed>| {
        nom::Err::Failure(Malformed("string longer than the frame"))
    })
}

/// One typed value (SPOE.txt §3.1), borrowed from the input.
pub(super) fn typed(input: &[u8]) -> PResult<'_, Value<'_>> {
    let (input, type_byte) = be_u8(input)?;
    // Low nibble: type; high nibble: flags, only meaningful for BOOL.
    match type_byte & 0x0f {
        0 => Ok((input, Value::Null)),
        1 => Ok((input, Value::Bool(type_byte & 0x10 != 0))),
        2 => {
            let (input, v) = varint_(input)?;
            match i32::try_from(v as i64) {
                Ok(v) => Ok((input, Value::Int32(v))),
                Err(_) => fail("INT32 value out of range"),
            }
        }
        3 => {
            let (input, v) = varint_(input)?;
            match u32::try_from(v) {
                Ok(v) => Ok((input, Value::Uint32(v))),
                Err(_) => fail("UINT32 value out of range"),
            }
        }
        4 => map(varint_(input)?, |v| Value::Int64(v as i64)),
        5 => map(varint_(input)?, Value::Uint64),
        6 => {
            let (input, octets) = take(4usize)(input)?;
            let octets: [u8; 4] = octets
                .try_into()
                .map_err(|_| nom::Err::Failure(Malformed("truncated IPV4")))?;
            Ok((input, Value::Ipv4(Ipv4Addr::from(octets))))
        }
        7 => {
            let (input, octets) = take(16usize)(input)?;
            let octets: [u8; 16] = octets
                .try_into()
                .map_err(|_| nom::Err::Failure(Malformed("truncated IPV6")))?;
            Ok((input, Value::Ipv6(Ipv6Addr::from(octets))))
        }
        8 => map(string(input)?, Value::String),
        9 => map(string(input)?, Value::Binary),
        _ => fail("unknown typed data type"),
    }
}

/// Applies `f` to the value of a successful parse step.
pub(super) fn map<'a, T, U>(
    (input, value): (&'a [u8], T),
    f: impl FnOnce(T) -> U,
) -> PResult<'a, U> {
    Ok((input, f(value)))
}

pub(super) fn varint_(input: &[u8]) -> PResult<'_, u64> {
    match varint::decode(input) {
        Ok((value, used)) => Ok((input.get(used..).unwrap_or_default(), value)),
        Err(VarintError::Truncated) => Err(nom::Err::Failure(Malformed("truncated varint"))),
        Err(VarintError::Overflow) => Err(nom::Err::Failure(Malformed("varint overflow"))),
    }
}
