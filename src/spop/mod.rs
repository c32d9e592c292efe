//! The Stream Processing Offload Protocol (SPOP), version 2.0, as spoken by HAProxy 2.x
//! and 3.1+ (HAProxy `doc/SPOE.txt` section 3).
//!
//! Everything under this module is pure: functions over byte buffers, no sockets, no
//! clocks. The layers, bottom up:
//!
//! * [`varint`] — HAProxy's variable-length integers (not LEB128).
//! * [`types`] — typed data, frame types, variable scopes and DISCONNECT status codes.
//! * [`frame`] — one frame body parsed into a [`Frame`], and written back.
//! * [`notify`] — the hot path's reading of a NOTIFY in place: the arguments of one
//!   message, borrowed, without allocating. `parse` holds the parsers both share.
//! * [`codec`] — the 4-byte length prefix and the max-frame-size limit, as a
//!   `tokio_util` codec.
//! * [`ack`] — the hot path's writing of an ACK: header, set-var actions and length,
//!   straight into the output buffer.
//! * [`hello`] — the HELLO negotiation (version, max-frame-size, capabilities).
//! * [`client`] — a small HAProxy-side client for tests, benchmarks and the load
//!   generator (it is the only part that does I/O, through a caller-supplied stream).
//!
//! A frame on the wire (SPOE.txt §3.2):
//!
//! ```text
//! +----------+------+----------+-----------+----------+---------------------+
//! | LENGTH   | TYPE | FLAGS    | STREAM-ID | FRAME-ID | PAYLOAD             |
//! | u32 BE   | u8   | u32 BE   | varint    | varint   | LENGTH - header     |
//! +----------+------+----------+-----------+----------+---------------------+
//!            <------------------------ LENGTH bytes ------------------------>
//! ```

pub mod ack;
pub mod client;
pub mod codec;
mod error;
pub mod frame;
pub mod hello;
pub mod notify;
mod parse;
pub mod types;
pub mod varint;

pub use ack::AckWriter;
pub use codec::SpopCodec;
pub use error::{Error, ErrorKind};
pub use frame::{Action, Arg, Disconnect, Frame, KvList, Message, Payload};
pub use notify::{ArgRef, Args};
pub use parse::{header, Header};
pub use types::{Data, Flags, FrameType, Scope, Status, TypedData, Value};
