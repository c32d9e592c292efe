//! Protocol errors, each mapped to the DISCONNECT status code that reports it.

use std::io;

use super::types::Status;

/// Why a connection cannot go on. Every variant maps to a SPOE.txt §3.5 status code
/// ([`Error::status`]) sent in the AGENT-DISCONNECT, and to a fixed label
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

    /// A short fixed label for metrics and structured logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io(_) => "io",
            Self::TooBig { .. } => "too-big",
            Self::Invalid(_) => "invalid",
            Self::Unexpected(_) => "unexpected",
            Self::Fragmented => "fragmented",
            Self::NoVersion => "no-version",
            Self::NoFrameSize => "no-frame-size",
            Self::NoCapabilities => "no-capabilities",
            Self::BadVersion => "bad-version",
            Self::BadFrameSize(_) => "bad-frame-size",
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
