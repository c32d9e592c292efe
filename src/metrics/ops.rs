//! What the operations listeners (`[metrics]` and `[admin]`, served by `ops::http`) count:
//! the connections they dropped, by listener and why, for
//! `spoa_guard_http_connections_dropped_total{listener, reason}`.

use strum::{EnumCount, EnumIter};

use super::Label;

/// Which operations listener, for the `listener` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumCount, EnumIter)]
pub enum OpsListener {
    /// `[metrics] listen`: `/metrics`, `/healthz`, `/readyz`, `/top`, `/rules`.
    Metrics,
    /// `[admin] listen`: the admin API.
    Admin,
}

impl Label for OpsListener {
    fn index(self) -> usize {
        self as usize
    }
    fn label(self) -> &'static str {
        match self {
            Self::Metrics => "metrics",
            Self::Admin => "admin",
        }
    }
}

impl OpsListener {
    /// Whether this listener can drop a connection for `why`: the metrics listener
    /// reads no request body (its handler's `MAX_BODY` is 0), so it has no body timeout.
    pub fn can_drop(self, why: OpsDrop) -> bool {
        !(self == Self::Metrics && why == OpsDrop::BodyTimeout)
    }
}

/// Why an operations listener dropped a connection, for the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumCount, EnumIter)]
pub enum OpsDrop {
    /// The request head was not complete within its deadline of the accept.
    HeaderTimeout,
    /// The request body was not complete within its deadline of the head (answered 408).
    BodyTimeout,
    /// The response was not taken within its deadline: a client not reading.
    WriteTimeout,
    /// Closed to make room for a new connection with every slot taken.
    Evicted,
}

impl Label for OpsDrop {
    fn index(self) -> usize {
        self as usize
    }
    fn label(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header-timeout",
            Self::BodyTimeout => "body-timeout",
            Self::WriteTimeout => "write-timeout",
            Self::Evicted => "evicted",
        }
    }
}

#[cfg(test)]
mod tests {
    use strum::IntoEnumIterator;

    use super::*;

    #[test]
    fn the_labels_are_fixed_words() {
        let words: Vec<_> = OpsDrop::iter().map(Label::label).collect();
        assert_eq!(
            words,
            ["header-timeout", "body-timeout", "write-timeout", "evicted"]
        );
    }
}
