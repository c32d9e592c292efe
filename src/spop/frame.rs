//! One SPOP frame body, parsed into a [`Frame`] and written back (SPOE.txt §3.2–§3.4).
//!
//! The framing layer ([`super::codec`]) hands this module exactly one complete body, so
//! every parser here is a nom `complete` parser: running out of bytes inside a body, or
//! bytes left over after the payload, means the frame is invalid (status 4), never that
//! more data is needed. Strings and binaries are zero-copy slices of the body
//! ([`Bytes::slice_ref`]).
//!
//! ```text
//! BODY      = TYPE:u8 FLAGS:u32 STREAM-ID:varint FRAME-ID:varint PAYLOAD
//! KV-LIST   = *( NAME:string VALUE:typed-data )                 HELLO, DISCONNECT
//! NOTIFY    = *( NAME:string NB-ARGS:u8 *( NAME:string VALUE:typed-data ) )
//! ACK       = *( ACTION-TYPE:u8 NB-ARGS:u8 SCOPE:u8 NAME:string [VALUE:typed-data] )
//! string    = LENGTH:varint BYTES
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, Bytes, BytesMut};
use nom::bytes::complete::take;
use nom::error::{ErrorKind, ParseError};
use nom::number::complete::{be_u32, be_u8};
use nom::IResult;

use super::error::Error;
use super::types::{Flags, FrameType, Scope, Status, TypedData};
use super::varint::{self, VarintError};

/// One frame: header fields and a typed payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FLAGS word; the agent always sends FIN.
    pub flags: Flags,
    /// Stream the frame belongs to; 0 in HELLO and DISCONNECT frames.
    pub stream_id: u64,
    /// Frame within the stream; 0 in HELLO and DISCONNECT frames.
    pub frame_id: u64,
    /// The payload, which also determines the frame type.
    pub payload: Payload,
}

/// The payload of each frame type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The first fragment of a NOTIFY (FIN clear), kept raw: HAProxy 2.x cuts fragments
    /// anywhere, even inside a string, so the payload cannot be parsed on its own. The
    /// agent never announces fragmentation, so receiving one is an error (status 10).
    NotifyFragment(Bytes),
    /// A 2.x NOTIFY continuation fragment (frame type UNSET), kept raw.
    Unset(Bytes),
    /// HAPROXY-HELLO key/values; see [`super::hello::negotiate`].
    HaproxyHello(KvList),
    /// HAPROXY-DISCONNECT: status and message.
    HaproxyDisconnect(Disconnect),
    /// NOTIFY: the messages that fired for one event.
    Notify(Vec<Message>),
    /// AGENT-HELLO key/values.
    AgentHello(KvList),
    /// AGENT-DISCONNECT: status and message.
    AgentDisconnect(Disconnect),
    /// ACK: actions for HAProxy to apply, in order.
    Ack(Vec<Action>),
}

impl Payload {
    /// The frame type this payload travels in.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Self::NotifyFragment(_) => FrameType::Notify,
            Self::Unset(_) => FrameType::Unset,
            Self::HaproxyHello(_) => FrameType::HaproxyHello,
            Self::HaproxyDisconnect(_) => FrameType::HaproxyDisconnect,
            Self::Notify(_) => FrameType::Notify,
            Self::AgentHello(_) => FrameType::AgentHello,
            Self::AgentDisconnect(_) => FrameType::AgentDisconnect,
            Self::Ack(_) => FrameType::Ack,
        }
    }
}

/// A KV-list (SPOE.txt §3.2.3): names with typed values, in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KvList(pub Vec<(Bytes, TypedData)>);

impl KvList {
    /// The value of the first entry named exactly `name`.
    pub fn get(&self, name: &str) -> Option<&TypedData> {
        self.0
            .iter()
            .find(|(key, _)| key.as_ref() == name.as_bytes())
            .map(|(_, value)| value)
    }

    /// Appends an entry.
    pub fn push(&mut self, name: &'static str, value: TypedData) {
        self.0.push((Bytes::from_static(name.as_bytes()), value));
    }
}

/// One SPOE message of a NOTIFY: its name and arguments (SPOE.txt §3.2.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The `spoe-message` name, e.g. `guard-check`.
    pub name: Bytes,
    /// Arguments in the order of the `args` line; unnamed ones have an empty name.
    pub args: Vec<Arg>,
}

impl Message {
    /// The value of the first argument named exactly `name`.
    pub fn arg(&self, name: &str) -> Option<&TypedData> {
        self.args
            .iter()
            .find(|arg| arg.name.as_ref() == name.as_bytes())
            .map(|arg| &arg.value)
    }
}

/// One argument of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    /// The name given in `args name=sample`; empty for an unnamed argument.
    pub name: Bytes,
    /// The sample's value.
    pub value: TypedData,
}

/// One action of an ACK (SPOE.txt §3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set `<scope>.<var-prefix>.<name>`; a NULL value unsets it.
    SetVar {
        /// Variable scope.
        scope: Scope,
        /// Name without scope and prefix; keep the full name under 64 bytes.
        name: Bytes,
        /// The value.
        value: TypedData,
    },
    /// Unset `<scope>.<var-prefix>.<name>`.
    UnsetVar {
        /// Variable scope.
        scope: Scope,
        /// Name without scope and prefix.
        name: Bytes,
    },
}

impl Action {
    /// A set-var action with a static name, in the scope spoa-guard uses.
    pub fn set_txn(name: &'static str, value: TypedData) -> Self {
        Self::SetVar {
            scope: Scope::Txn,
            name: Bytes::from_static(name.as_bytes()),
            value,
        }
    }
}

/// The payload of a DISCONNECT frame (SPOE.txt §3.2.8, §3.2.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Why the session ends.
    pub status: Status,
    /// Human-readable detail. HAProxy 2.6 rejects messages over 255 bytes, so
    /// [`Frame::encode_body`] cuts longer ones.
    pub message: Bytes,
}

impl Disconnect {
    /// The longest message HAProxy accepts.
    pub const MAX_MESSAGE: usize = 255;

    /// A DISCONNECT with HAProxy's own message text for `status`.
    pub fn new(status: Status) -> Self {
        Self {
            status,
            message: Bytes::from_static(status.message().as_bytes()),
        }
    }

    /// Reads `status-code` and `message` from a KV-list; missing or ill-typed entries
    /// read as status 99 and an empty message, which is how HAProxy treats them.
    fn from_kv(kv: &KvList) -> Self {
        let status = kv
            .get("status-code")
            .and_then(TypedData::as_u64)
            .and_then(|code| u32::try_from(code).ok())
            .map_or(Status::UNKNOWN, Status);
        let message = kv
            .get("message")
            .and_then(TypedData::as_bytes)
            .cloned()
            .unwrap_or_default();
        Self { status, message }
    }
}

/// The smallest body: type, flags and two one-byte varints.
const MIN_BODY: usize = 7;

impl Frame {
    /// A frame with FIN set, as the agent always sends them.
    pub fn new(stream_id: u64, frame_id: u64, payload: Payload) -> Self {
        Self {
            flags: Flags::FIN,
            stream_id,
            frame_id,
            payload,
        }
    }

    /// The frame type.
    pub fn frame_type(&self) -> FrameType {
        self.payload.frame_type()
    }

    /// Parses one complete frame body (the bytes after the length prefix).
    ///
    /// ```
    /// use bytes::{Bytes, BytesMut};
    /// use spoa_guard::spop::{Action, Frame, Payload, TypedData};
    ///
    /// let ack = Frame::new(3, 1, Payload::Ack(vec![Action::set_txn("action", TypedData::str("deny"))]));
    /// let mut body = BytesMut::new();
    /// ack.encode_body(&mut body);
    /// // 103 = ACK, FIN, stream-id 3, frame-id 1, then set-var txn "action" = "deny".
    /// assert_eq!(&body[..], b"\x67\x00\x00\x00\x01\x03\x01\x01\x03\x02\x06action\x08\x04deny");
    /// assert_eq!(Frame::decode(&Bytes::from(body.to_vec())).unwrap(), ack);
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when the body is not a well-formed frame of a known type:
    /// truncated, with trailing bytes, an unknown frame/data/action type, a bad scope or
    /// an out-of-range integer. Fragments (a NOTIFY without FIN, an UNSET frame) are not
    /// parsed but returned raw; the connection decides what they mean.
    pub fn decode(body: &Bytes) -> Result<Frame, Error> {
        if body.len() < MIN_BODY {
            return Err(Error::Invalid("frame shorter than its header"));
        }
        let p = Parser { body };
        match p.frame(body) {
            Ok(([], frame)) => Ok(frame),
            Ok(_) => Err(Error::Invalid("trailing bytes after payload")),
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(Error::Invalid(e.0)),
            Err(nom::Err::Incomplete(_)) => Err(Error::Invalid("truncated frame")),
        }
    }

    /// Appends the frame body (without the length prefix) to `dst`.
    pub fn encode_body(&self, dst: &mut BytesMut) {
        dst.put_u8(self.frame_type() as u8);
        dst.put_u32(self.flags.0);
        varint::encode(self.stream_id, dst);
        varint::encode(self.frame_id, dst);
        match &self.payload {
            Payload::NotifyFragment(raw) | Payload::Unset(raw) => dst.put_slice(raw),
            Payload::HaproxyHello(kv) | Payload::AgentHello(kv) => put_kv(kv, dst),
            Payload::HaproxyDisconnect(d) | Payload::AgentDisconnect(d) => {
                put_str(b"status-code", dst);
                put_typed(&TypedData::Uint32(d.status.0), dst);
                put_str(b"message", dst);
                let message = d
                    .message
                    .get(..Disconnect::MAX_MESSAGE)
                    .unwrap_or(&d.message);
                dst.put_u8(TypedData::String(Bytes::new()).code());
                put_str(message, dst);
            }
            Payload::Notify(messages) => {
                for message in messages {
                    put_str(&message.name, dst);
                    // NB-ARGS is one byte: a message cannot carry more than 255 arguments.
                    let args = message.args.get(..255).unwrap_or(&message.args);
                    dst.put_u8(u8::try_from(args.len()).unwrap_or(u8::MAX));
                    for arg in args {
                        put_str(&arg.name, dst);
                        put_typed(&arg.value, dst);
                    }
                }
            }
            Payload::Ack(actions) => {
                for action in actions {
                    put_action(action, dst);
                }
            }
        }
    }
}

fn put_kv(kv: &KvList, dst: &mut BytesMut) {
    for (name, value) in &kv.0 {
        put_str(name, dst);
        put_typed(value, dst);
    }
}

fn put_action(action: &Action, dst: &mut BytesMut) {
    match action {
        Action::SetVar { scope, name, value } => {
            dst.put_slice(&[1, 3, *scope as u8]);
            put_str(name, dst);
            put_typed(value, dst);
        }
        Action::UnsetVar { scope, name } => {
            dst.put_slice(&[2, 2, *scope as u8]);
            put_str(name, dst);
        }
    }
}

/// Writes a length-prefixed string (names, STRING and BINARY values).
fn put_str(bytes: &[u8], dst: &mut BytesMut) {
    varint::encode(bytes.len() as u64, dst);
    dst.put_slice(bytes);
}

/// Writes a typed value. Signed integers are sign-extended to 64 bits first, which is
/// what HAProxy sends and accepts (spop.md §3).
fn put_typed(value: &TypedData, dst: &mut BytesMut) {
    match value {
        TypedData::Bool(b) => dst.put_u8(value.code() | if *b { 0x10 } else { 0 }),
        _ => dst.put_u8(value.code()),
    }
    match value {
        TypedData::Null | TypedData::Bool(_) => {}
        TypedData::Int32(v) => varint::encode(i64::from(*v) as u64, dst),
        TypedData::Uint32(v) => varint::encode(u64::from(*v), dst),
        TypedData::Int64(v) => varint::encode(*v as u64, dst),
        TypedData::Uint64(v) => varint::encode(*v, dst),
        TypedData::Ipv4(a) => dst.put_slice(&a.octets()),
        TypedData::Ipv6(a) => dst.put_slice(&a.octets()),
        TypedData::String(b) | TypedData::Binary(b) => put_str(b, dst),
    }
}

/// The parse error: a fixed description of what was wrong, never a formatted string.
#[derive(Debug)]
struct Malformed(&'static str);

impl<I> ParseError<I> for Malformed {
    fn from_error_kind(_: I, _: ErrorKind) -> Self {
        Malformed("truncated frame")
    }

    fn append(_: I, _: ErrorKind, other: Self) -> Self {
        other
    }
}

type PResult<'a, O> = IResult<&'a [u8], O, Malformed>;

fn fail<O>(what: &'static str) -> PResult<'static, O> {
    Err(nom::Err::Failure(Malformed(what)))
}

/// The parsers, bound to the body they slice strings out of.
struct Parser<'b> {
    body: &'b Bytes,
}

impl<'b> Parser<'b> {
    fn frame(&self, input: &'b [u8]) -> PResult<'b, Frame> {
        let (input, code) = be_u8(input)?;
        let (input, flags) = be_u32(input)?;
        let (input, stream_id) = varint_(input)?;
        let (input, frame_id) = varint_(input)?;
        let Some(frame_type) = FrameType::from_code(code) else {
            return fail("unknown frame type");
        };
        let (input, payload) = match frame_type {
            FrameType::Unset => (&[][..], Payload::Unset(self.body.slice_ref(input))),
            FrameType::Notify if !Flags(flags).fin() => {
                (&[][..], Payload::NotifyFragment(self.body.slice_ref(input)))
            }
            FrameType::HaproxyHello => map(self.kv_list(input)?, Payload::HaproxyHello)?,
            FrameType::AgentHello => map(self.kv_list(input)?, Payload::AgentHello)?,
            FrameType::HaproxyDisconnect => map(self.kv_list(input)?, |kv| {
                Payload::HaproxyDisconnect(Disconnect::from_kv(&kv))
            })?,
            FrameType::AgentDisconnect => map(self.kv_list(input)?, |kv| {
                Payload::AgentDisconnect(Disconnect::from_kv(&kv))
            })?,
            FrameType::Notify => map(self.many(input, Self::message)?, Payload::Notify)?,
            FrameType::Ack => map(self.many(input, Self::action)?, Payload::Ack)?,
        };
        Ok((
            input,
            Frame {
                flags: Flags(flags),
                stream_id,
                frame_id,
                payload,
            },
        ))
    }

    /// Applies `item` until the input is used up.
    fn many<T>(
        &self,
        mut input: &'b [u8],
        item: fn(&Self, &'b [u8]) -> PResult<'b, T>,
    ) -> PResult<'b, Vec<T>> {
        let mut items = Vec::new();
        while !input.is_empty() {
            let (rest, value) = item(self, input)?;
            items.push(value);
            input = rest;
        }
        Ok((input, items))
    }

    fn kv_list(&self, input: &'b [u8]) -> PResult<'b, KvList> {
        let (input, entries) = self.many(input, |p, input| {
            let (input, name) = p.string(input)?;
            let (input, value) = p.typed(input)?;
            Ok((input, (name, value)))
        })?;
        Ok((input, KvList(entries)))
    }

    fn message(&self, input: &'b [u8]) -> PResult<'b, Message> {
        let (mut input, name) = self.string(input)?;
        let (rest, nb_args) = be_u8(input)?;
        input = rest;
        let mut args = Vec::with_capacity(usize::from(nb_args));
        for _ in 0..nb_args {
            let (rest, name) = self.string(input)?;
            let (rest, value) = self.typed(rest)?;
            args.push(Arg { name, value });
            input = rest;
        }
        Ok((input, Message { name, args }))
    }

    fn action(&self, input: &'b [u8]) -> PResult<'b, Action> {
        let (input, action_type) = be_u8(input)?;
        let (input, nb_args) = be_u8(input)?;
        let (input, scope) = be_u8(input)?;
        let Some(scope) = Scope::from_code(scope) else {
            return fail("unknown variable scope");
        };
        match (action_type, nb_args) {
            (1, 3) => {
                let (input, name) = self.string(input)?;
                let (input, value) = self.typed(input)?;
                Ok((input, Action::SetVar { scope, name, value }))
            }
            (2, 2) => {
                let (input, name) = self.string(input)?;
                Ok((input, Action::UnsetVar { scope, name }))
            }
            (1 | 2, _) => fail("wrong number of action arguments"),
            _ => fail("unknown action type"),
        }
    }

    /// A varint length followed by that many bytes, sliced out of the body.
    fn string(&self, input: &'b [u8]) -> PResult<'b, Bytes> {
        let (input, len) = varint_(input)?;
        let Ok(len) = usize::try_from(len) else {
            return fail("string length out of range");
        };
        let (input, bytes) = take(len)(input).map_err(|_: nom::Err<Malformed>| {
            nom::Err::Failure(Malformed("string longer than the frame"))
        })?;
        Ok((input, self.body.slice_ref(bytes)))
    }

    fn typed(&self, input: &'b [u8]) -> PResult<'b, TypedData> {
        let (input, type_byte) = be_u8(input)?;
        // Low nibble: type; high nibble: flags, only meaningful for BOOL.
        match type_byte & 0x0f {
            0 => Ok((input, TypedData::Null)),
            1 => Ok((input, TypedData::Bool(type_byte & 0x10 != 0))),
            2 => {
                let (input, v) = varint_(input)?;
                match i32::try_from(v as i64) {
                    Ok(v) => Ok((input, TypedData::Int32(v))),
                    Err(_) => fail("INT32 value out of range"),
                }
            }
            3 => {
                let (input, v) = varint_(input)?;
                match u32::try_from(v) {
                    Ok(v) => Ok((input, TypedData::Uint32(v))),
                    Err(_) => fail("UINT32 value out of range"),
                }
            }
            4 => map(varint_(input)?, |v| TypedData::Int64(v as i64)),
            5 => map(varint_(input)?, TypedData::Uint64),
            6 => {
                let (input, octets) = take(4usize)(input)?;
                let octets: [u8; 4] = octets
                    .try_into()
                    .map_err(|_| nom::Err::Failure(Malformed("truncated IPV4")))?;
                Ok((input, TypedData::Ipv4(Ipv4Addr::from(octets))))
            }
            7 => {
                let (input, octets) = take(16usize)(input)?;
                let octets: [u8; 16] = octets
                    .try_into()
                    .map_err(|_| nom::Err::Failure(Malformed("truncated IPV6")))?;
                Ok((input, TypedData::Ipv6(Ipv6Addr::from(octets))))
            }
            8 => map(self.string(input)?, TypedData::String),
            9 => map(self.string(input)?, TypedData::Binary),
            _ => fail("unknown typed data type"),
        }
    }
}

fn map<'a, T, U>((input, value): (&'a [u8], T), f: impl FnOnce(T) -> U) -> PResult<'a, U> {
    Ok((input, f(value)))
}

fn varint_(input: &[u8]) -> PResult<'_, u64> {
    match varint::decode(input) {
        Ok((value, used)) => Ok((input.get(used..).unwrap_or_default(), value)),
        Err(VarintError::Truncated) => Err(nom::Err::Failure(Malformed("truncated varint"))),
        Err(VarintError::Overflow) => Err(nom::Err::Failure(Malformed("varint overflow"))),
    }
}
