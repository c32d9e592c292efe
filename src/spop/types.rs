//! The small vocabulary of SPOP: typed data, frame types, flags, variable scopes and the
//! DISCONNECT status codes (SPOE.txt §3.1, §3.2.2, §3.4, §3.5).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::Bytes;

/// One typed value (SPOE.txt §3.1): a NOTIFY argument, a HELLO/DISCONNECT entry or the
/// value of a set-var action, with its strings and binaries held as `S`.
///
/// Two forms are used: [`TypedData`] owns its bytes (frames decoded for keeping, actions
/// built ahead of time) and [`Value`] borrows them from a frame body (the hot path, which
/// reads a NOTIFY and writes an ACK without copying or allocating).
///
/// Strings are bytes: HAProxy does not promise UTF-8. Integers of every width arrive as
/// varints; negative ones as 64-bit two's complement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data<S> {
    /// No value: HAProxy sends it when a sample fetch fails (absent header).
    Null,
    /// A boolean, carried in the flag bits of the type byte.
    Bool(bool),
    /// Signed 32-bit integer.
    Int32(i32),
    /// Unsigned 32-bit integer (HELLO and DISCONNECT use it).
    Uint32(u32),
    /// Signed 64-bit integer: every integer sample in a NOTIFY.
    Int64(i64),
    /// Unsigned 64-bit integer.
    Uint64(u64),
    /// IPv4 address, 4 bytes in network order.
    Ipv4(Ipv4Addr),
    /// IPv6 address, 16 bytes in network order.
    Ipv6(Ipv6Addr),
    /// Text bytes (no terminator, not guaranteed UTF-8).
    String(S),
    /// Opaque bytes.
    Binary(S),
}

/// A typed value that owns its bytes.
pub type TypedData = Data<Bytes>;

/// A typed value borrowed from a frame body (or from a [`TypedData`]).
pub type Value<'a> = Data<&'a [u8]>;

impl<S> Data<S> {
    /// The type code in the low nibble of the type byte.
    pub fn code(&self) -> u8 {
        match self {
            Self::Null => 0,
            Self::Bool(_) => 1,
            Self::Int32(_) => 2,
            Self::Uint32(_) => 3,
            Self::Int64(_) => 4,
            Self::Uint64(_) => 5,
            Self::Ipv4(_) => 6,
            Self::Ipv6(_) => 7,
            Self::String(_) => 8,
            Self::Binary(_) => 9,
        }
    }

    /// The value as an unsigned integer, whatever integer type carried it; `None` for
    /// negative numbers and non-integers.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::Int32(v) => u64::try_from(v).ok(),
            Self::Uint32(v) => Some(u64::from(v)),
            Self::Int64(v) => u64::try_from(v).ok(),
            Self::Uint64(v) => Some(v),
            _ => None,
        }
    }

    /// The same value with its bytes borrowed (as `Option::as_ref`).
    pub fn as_ref(&self) -> Data<&S> {
        match self {
            Self::Null => Data::Null,
            Self::Bool(b) => Data::Bool(*b),
            Self::Int32(v) => Data::Int32(*v),
            Self::Uint32(v) => Data::Uint32(*v),
            Self::Int64(v) => Data::Int64(*v),
            Self::Uint64(v) => Data::Uint64(*v),
            Self::Ipv4(a) => Data::Ipv4(*a),
            Self::Ipv6(a) => Data::Ipv6(*a),
            Self::String(s) => Data::String(s),
            Self::Binary(s) => Data::Binary(s),
        }
    }

    /// The same value with its bytes converted by `bytes` (the only part that differs
    /// between the owned and the borrowed form).
    fn map_bytes<T>(self, bytes: impl FnOnce(S) -> T) -> Data<T> {
        match self {
            Self::Null => Data::Null,
            Self::Bool(b) => Data::Bool(b),
            Self::Int32(v) => Data::Int32(v),
            Self::Uint32(v) => Data::Uint32(v),
            Self::Int64(v) => Data::Int64(v),
            Self::Uint64(v) => Data::Uint64(v),
            Self::Ipv4(a) => Data::Ipv4(a),
            Self::Ipv6(a) => Data::Ipv6(a),
            Self::String(s) => Data::String(bytes(s)),
            Self::Binary(s) => Data::Binary(bytes(s)),
        }
    }
}

impl TypedData {
    /// The bytes of a STRING or BINARY value.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Self::String(b) | Self::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// A STRING value from static text, without copying.
    pub const fn str(text: &'static str) -> Self {
        Self::String(Bytes::from_static(text.as_bytes()))
    }

    /// The value borrowed, as the hot path reads and writes it.
    pub fn as_value(&self) -> Value<'_> {
        self.as_ref().map_bytes(|b| &b[..])
    }
}

impl Value<'_> {
    /// An owned copy (strings and binaries are copied).
    pub fn to_typed_data(self) -> TypedData {
        self.map_bytes(Bytes::copy_from_slice)
    }
}

/// Frame types (SPOE.txt §3.2.2; `UNSET` is the 2.x continuation fragment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::EnumCount, strum::EnumIter)]
#[repr(u8)]
pub enum FrameType {
    /// Continuation of a fragmented NOTIFY (HAProxy 2.x only).
    Unset = 0,
    /// HAProxy opens the session.
    HaproxyHello = 1,
    /// HAProxy closes the session.
    HaproxyDisconnect = 2,
    /// HAProxy sends messages to evaluate.
    Notify = 3,
    /// The agent's answer to HAPROXY-HELLO.
    AgentHello = 101,
    /// The agent closes the session.
    AgentDisconnect = 102,
    /// The agent's answer to a NOTIFY.
    Ack = 103,
}

impl FrameType {
    /// The frame type for a type byte, if it is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Unset,
            1 => Self::HaproxyHello,
            2 => Self::HaproxyDisconnect,
            3 => Self::Notify,
            101 => Self::AgentHello,
            102 => Self::AgentDisconnect,
            103 => Self::Ack,
            _ => return None,
        })
    }

    /// Position in declaration order, 0 to [`FrameType::COUNT`](strum::EnumCount) − 1:
    /// an index for per-type counters.
    pub fn index(self) -> usize {
        match self {
            Self::Unset => 0,
            Self::HaproxyHello => 1,
            Self::HaproxyDisconnect => 2,
            Self::Notify => 3,
            Self::AgentHello => 4,
            Self::AgentDisconnect => 5,
            Self::Ack => 6,
        }
    }

    /// A label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "unset",
            Self::HaproxyHello => "haproxy-hello",
            Self::HaproxyDisconnect => "haproxy-disconnect",
            Self::Notify => "notify",
            Self::AgentHello => "agent-hello",
            Self::AgentDisconnect => "agent-disconnect",
            Self::Ack => "ack",
        }
    }
}

/// The FLAGS word of a frame header (SPOE.txt §3.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u32);

impl Flags {
    /// Last fragment of a frame. Every frame the agent sends carries it.
    pub const FIN: Flags = Flags(0x0000_0001);
    /// The sender aborts a fragmented frame.
    pub const ABORT: Flags = Flags(0x0000_0002);

    /// Whether FIN is set.
    pub fn fin(self) -> bool {
        self.0 & Self::FIN.0 != 0
    }

    /// Whether ABORT is set.
    pub fn abort(self) -> bool {
        self.0 & Self::ABORT.0 != 0
    }
}

/// Variable scope of a set-var / unset-var action (SPOE.txt §3.4), sent as a raw byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Scope {
    /// Whole process; HAProxy only sets pre-registered names.
    Proc = 0,
    /// Client session (all its transactions).
    Sess = 1,
    /// One HTTP transaction: request and response. The one spoa-guard uses.
    Txn = 2,
    /// Request processing only.
    Req = 3,
    /// Response processing only.
    Res = 4,
}

impl Scope {
    /// The scope for a scope byte, if it is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Proc,
            1 => Self::Sess,
            2 => Self::Txn,
            3 => Self::Req,
            4 => Self::Res,
            _ => return None,
        })
    }

    /// The scope's name as HAProxy writes it in `var(<scope>.<prefix>.<name>)`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Proc => "proc",
            Self::Sess => "sess",
            Self::Txn => "txn",
            Self::Req => "req",
            Self::Res => "res",
        }
    }
}

/// A DISCONNECT status code (SPOE.txt §3.5). Codes outside the table are allowed: HAProxy
/// reports them to the stream as 256 + code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u32);

impl Status {
    /// Normal end of the session.
    pub const NORMAL: Status = Status(0);
    /// I/O error.
    pub const IO: Status = Status(1);
    /// A timeout occurred.
    pub const TIMEOUT: Status = Status(2);
    /// Frame is too big.
    pub const TOO_BIG: Status = Status(3);
    /// Invalid frame received.
    pub const INVALID: Status = Status(4);
    /// Version value not found.
    pub const NO_VERSION: Status = Status(5);
    /// Max-frame-size value not found.
    pub const NO_FRAME_SIZE: Status = Status(6);
    /// Capabilities value not found.
    pub const NO_CAPABILITIES: Status = Status(7);
    /// Unsupported version.
    pub const BAD_VERSION: Status = Status(8);
    /// Max-frame-size too big or too small.
    pub const BAD_FRAME_SIZE: Status = Status(9);
    /// Fragmentation not supported.
    pub const FRAG_NOT_SUPPORTED: Status = Status(10);
    /// Invalid interlaced frames.
    pub const INTERLACED: Status = Status(11);
    /// Frame-id not found.
    pub const FRAME_ID_NOT_FOUND: Status = Status(12);
    /// Resource allocation error.
    pub const RESOURCE: Status = Status(13);
    /// An unknown error occurred.
    pub const UNKNOWN: Status = Status(99);

    /// HAProxy's message text for the code (`spoe_frm_err_reasons`).
    pub fn message(self) -> &'static str {
        match self.0 {
            0 => "normal",
            1 => "I/O error",
            2 => "a timeout occurred",
            3 => "frame is too big",
            4 => "invalid frame received",
            5 => "version value not found",
            6 => "max-frame-size value not found",
            7 => "capabilities value not found",
            8 => "unsupported version",
            9 => "max-frame-size too big or too small",
            10 => "fragmentation not supported",
            11 => "invalid interlaced frames",
            12 => "frame-id not found",
            13 => "resource allocation error",
            _ => "an unknown error occurred",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.message())
    }
}
