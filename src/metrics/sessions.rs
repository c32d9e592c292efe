//! Why the agent itself ended SPOP connections that had not broken the protocol: the
//! session deadlines and the admission policy of [`crate::server`].

use strum::{EnumCount, EnumIter};

use super::Label;

/// Why the agent dropped a connection, for `spoa_guard_connections_dropped_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumCount, EnumIter)]
pub enum ConnectionDrop {
    /// No complete HAPROXY-HELLO within `hello_timeout_secs` of the accept.
    HelloTimeout,
    /// No complete frame within `idle_timeout_secs`.
    Idle,
    /// The peer did not read what the agent wrote within `write_timeout_secs`.
    WriteTimeout,
    /// Closed before its HELLO to make room for a new connection at `max_connections`.
    Evicted,
}

impl Label for ConnectionDrop {
    fn index(self) -> usize {
        self as usize
    }
    fn label(self) -> &'static str {
        match self {
            Self::HelloTimeout => "hello-timeout",
            Self::Idle => "idle",
            Self::WriteTimeout => "write-timeout",
            Self::Evicted => "evicted",
        }
    }
}
