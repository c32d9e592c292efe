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

use bytes::{BufMut, Bytes, BytesMut};
use nom::number::complete::be_u8;

use super::error::Error;
use super::parse::{self, fail, map, PResult, MIN_BODY};
use super::types::{Flags, FrameType, Scope, Status, TypedData, Value};
use super::varint;

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
        match parse::finish(p.frame(body))? {
            ([], frame) => Ok(frame),
            _ => Err(Error::Invalid("trailing bytes after payload")),
        }
    }

    /// Appends the frame body (without the length prefix) to `dst`.
    pub fn encode_body(&self, dst: &mut BytesMut) {
        put_header(
            self.frame_type(),
            self.flags,
            self.stream_id,
            self.frame_id,
            dst,
        );
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

/// Appends a frame header (type, flags, stream-id, frame-id) to `dst`: the start of
/// every body, and all an ACK needs before its actions ([`put_set_var`]).
pub fn put_header(
    frame_type: FrameType,
    flags: Flags,
    stream_id: u64,
    frame_id: u64,
    dst: &mut BytesMut,
) {
    dst.put_u8(frame_type as u8);
    dst.put_u32(flags.0);
    varint::encode(stream_id, dst);
    varint::encode(frame_id, dst);
}

fn put_kv(kv: &KvList, dst: &mut BytesMut) {
    for (name, value) in &kv.0 {
        put_str(name, dst);
        put_typed(value, dst);
    }
}

fn put_action(action: &Action, dst: &mut BytesMut) {
    match action {
        Action::SetVar { scope, name, value } => put_set_var(*scope, name, value.as_value(), dst),
        Action::UnsetVar { scope, name } => {
            dst.put_slice(&[2, 2, *scope as u8]);
            put_str(name, dst);
        }
    }
}

/// Appends one set-var action (SPOE.txt §3.4) to an ACK payload: what
/// [`Payload::Ack`] writes for an [`Action::SetVar`], without building one.
pub fn put_set_var(scope: Scope, name: &[u8], value: Value<'_>, dst: &mut BytesMut) {
    dst.put_slice(&[1, 3, scope as u8]);
    put_str(name, dst);
    put_value(value, dst);
}

/// Writes a length-prefixed string (names, STRING and BINARY values).
fn put_str(bytes: &[u8], dst: &mut BytesMut) {
    varint::encode(bytes.len() as u64, dst);
    dst.put_slice(bytes);
}

/// Writes a typed value. Signed integers are sign-extended to 64 bits first, which is
/// what HAProxy sends and accepts (spop.md §3).
fn put_typed(value: &TypedData, dst: &mut BytesMut) {
    put_value(value.as_value(), dst);
}

/// Writes a borrowed typed value; see [`put_typed`].
fn put_value(value: Value<'_>, dst: &mut BytesMut) {
    match value {
        Value::Bool(b) => dst.put_u8(value.code() | if b { 0x10 } else { 0 }),
        _ => dst.put_u8(value.code()),
    }
    match value {
        Value::Null | Value::Bool(_) => {}
        Value::Int32(v) => varint::encode(i64::from(v) as u64, dst),
        Value::Uint32(v) => varint::encode(u64::from(v), dst),
        Value::Int64(v) => varint::encode(v as u64, dst),
        Value::Uint64(v) => varint::encode(v, dst),
        Value::Ipv4(a) => dst.put_slice(&a.octets()),
        Value::Ipv6(a) => dst.put_slice(&a.octets()),
        Value::String(b) | Value::Binary(b) => put_str(b, dst),
    }
}

/// The owned parsers, bound to the body they slice strings out of.
struct Parser<'b> {
    body: &'b Bytes,
}

impl<'b> Parser<'b> {
    fn frame(&self, input: &'b [u8]) -> PResult<'b, Frame> {
        let (input, header) = parse::header_(input)?;
        let Some(frame_type) = FrameType::from_code(header.code) else {
            return fail("unknown frame type");
        };
        let (input, payload) = match frame_type {
            FrameType::Unset => (&[][..], Payload::Unset(self.body.slice_ref(input))),
            FrameType::Notify if !header.flags.fin() => {
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
        let frame = Frame {
            flags: header.flags,
            stream_id: header.stream_id,
            frame_id: header.frame_id,
            payload,
        };
        Ok((input, frame))
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

    /// A string, sliced out of the body without copying.
    fn string(&self, input: &'b [u8]) -> PResult<'b, Bytes> {
        map(parse::string(input)?, |s| self.body.slice_ref(s))
    }

    /// A typed value; strings and binaries are sliced out of the body without copying.
    fn typed(&self, input: &'b [u8]) -> PResult<'b, TypedData> {
        map(parse::typed(input)?, |value| match value {
            Value::Null => TypedData::Null,
            Value::Bool(b) => TypedData::Bool(b),
            Value::Int32(v) => TypedData::Int32(v),
            Value::Uint32(v) => TypedData::Uint32(v),
            Value::Int64(v) => TypedData::Int64(v),
            Value::Uint64(v) => TypedData::Uint64(v),
            Value::Ipv4(a) => TypedData::Ipv4(a),
            Value::Ipv6(a) => TypedData::Ipv6(a),
            Value::String(s) => TypedData::String(self.body.slice_ref(s)),
            Value::Binary(s) => TypedData::Binary(self.body.slice_ref(s)),
        })
    }
}
