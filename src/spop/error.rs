//! Protocol errors, each mapped to the DISCONNECT status code that reports it.

use std::io;

use super::types::Status;

/// Why a connection cannot go on. Every variant maps to a SPOE.txt §3.5 status code
/// ([`Error::status`]) sent in the AGENT-DISCONNECT, and to an [`ErrorKind`]
/// ([`Error::kind`]) for logs and metrics.
///
/// Rejecting a frame never formats a string: the details are `&'static str` so that a
/// flood of garbage costs no allocation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A frame longer than the negotiated max-frame-size.
    #[error("frame of {size} bytes exceeds max-frame-size {max}")]
    TooBig {
        /// Declared body length.
        size: u32,
        /// Limit in force.
        max: u32,
    },
    /// A frame that does not parse; the detail says where.
    #[error("invalid frame: {0}")]
    Invalid(&'static str),
    /// A frame that is valid but not allowed in the current state (e.g. NOTIFY before HELLO).
    #[error("unexpected frame: {0}")]
    Unexpected(&'static str),
    /// A fragmented frame, though the agent never announces fragmentation.
    #[error("fragmented frame received, fragmentation not supported")]
    Fragmented,
    /// HAPROXY-HELLO without `supported-versions`.
    #[error("supported-versions not found in HAPROXY-HELLO")]
    NoVersion,
    /// HAPROXY-HELLO without a usable `max-frame-size`.
    #[error("max-frame-size not found in HAPROXY-HELLO")]
    NoFrameSize,
    /// HAPROXY-HELLO without `capabilities`.
    #[error("capabilities not found in HAPROXY-HELLO")]
    NoCapabilities,
    /// HAProxy offers no version this agent speaks (only 2.0 exists).
    #[error("no supported version offered (the agent speaks 2.0)")]
    BadVersion,
    /// HAProxy's max-frame-size is below the protocol minimum of 256.
    #[error("max-frame-size {0} is below the minimum of 256")]
    BadFrameSize(u64),
}

impl Error {
    /// The DISCONNECT status code that reports this error to HAProxy.
    pub fn status(&self) -> Status {
        match self {
            Self::Io(_) => Status::IO,
            Self::TooBig { .. } => Status::TOO_BIG,
            Self::Invalid(_) | Self::Unexpected(_) => Status::INVALID,
            Self::Fragmented => Status::FRAG_NOT_SUPPORTED,
            Self::NoVersion => Status::NO_VERSION,
            Self::NoFrameSize => Status::NO_FRAME_SIZE,
            Self::NoCapabilities => Status::NO_CAPABILITIES,
            Self::BadVersion => Status::BAD_VERSION,
            Self::BadFrameSize(_) => Status::BAD_FRAME_SIZE,
        }
    }

    /// What kind of error this is, for metrics and structured logs.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Io(_) => ErrorKind::Io,
            Self::TooBig { .. } => ErrorKind::TooBig,
            Self::Invalid(_) => ErrorKind::Invalid,
            Self::Unexpected(_) => ErrorKind::Unexpected,
            Self::Fragmented => ErrorKind::Fragmented,
            Self::NoVersion => ErrorKind::NoVersion,
            Self::NoFrameSize => ErrorKind::NoFrameSize,
            Self::NoCapabilities => ErrorKind::NoCapabilities,
            Self::BadVersion => ErrorKind::BadVersion,
            Self::BadFrameSize(_) => ErrorKind::BadFrameSize,
        }
    }

    /// Whether this is the peer closing the connection (EOF mid-frame or a TCP reset):
    /// normal for HAProxy 3.x, which resets idle connections without a DISCONNECT.
    pub fn is_peer_gone(&self) -> bool {
        match self {
            Self::Io(err) => matches!(
                err.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// The kinds of [`Error`], without their details: one counter each. A new [`Error`]
/// variant must name its kind (the match in [`Error::kind`] is exhaustive), and the
/// counters follow a new kind by themselves ([`strum::EnumIter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::EnumCount, strum::EnumIter)]
pub enum ErrorKind {
    /// [`Error::Io`].
    Io,
    /// [`Error::TooBig`].
    TooBig,
    /// [`Error::Invalid`].
    Invalid,
    /// [`Error::Unexpected`].
    Unexpected,
    /// [`Error::Fragmented`].
    Fragmented,
    /// [`Error::NoVersion`].
    NoVersion,
    /// [`Error::NoFrameSize`].
    NoFrameSize,
    /// [`Error::NoCapabilities`].
    NoCapabilities,
    /// [`Error::BadVersion`].
    BadVersion,
    /// [`Error::BadFrameSize`].
    BadFrameSize,
}

impl ErrorKind {
    /// Whether the agent reports an error of this kind: answers it with an
    /// AGENT-DISCONNECT and counts it in `spoa_guard_protocol_errors_total`. Every kind
    /// but `io`: a broken socket can carry no DISCONNECT, and is logged at debug only.
    pub fn is_reported(self) -> bool {
        self != Self::Io
    }

    /// A short fixed label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Io => "io",
            Self::TooBig => "too-big",
            Self::Invalid => "invalid",
            Self::Unexpected => "unexpected",
            Self::Fragmented => "fragmented",
            Self::NoVersion => "no-version",
            Self::NoFrameSize => "no-frame-size",
            Self::NoCapabilities => "no-capabilities",
            Self::BadVersion => "bad-version",
            Self::BadFrameSize => "bad-frame-size",
        }
    }
}
