//! spoa-guard: a HAProxy Stream Processing Offload Agent that filters HTTP traffic inline.
//!
//! HAProxy's SPOE filter sends the agent a few facts about every request (source address,
//! method, path, host, user agent) in a NOTIFY frame; the agent evaluates them against its
//! rules and answers with an ACK that sets `txn.guard.*` variables, which the HAProxy
//! configuration turns into a 403, a 429 or nothing.
//!
//! # Layout
//!
//! The file tree follows the data flow of one request:
//!
//! ```text
//!  bytes ──► spop::SpopCodec ──► spop::Frame ──► server::conn ──► engine::Request
//!                                                      │               │
//!                                                      │       engine::Engine::evaluate
//!                                                      │               │
//!  bytes ◄── spop::SpopCodec ◄── spop::Frame (ACK) ◄───┴──── engine::Verdict
//! ```
//!
//! * [`spop`] — the protocol: varints, typed data, frames, the length-prefixed codec and
//!   the HELLO negotiation. Pure functions over buffers; no I/O.
//! * [`server`] — listeners, the accept loop, one task per connection with its
//!   Hello → Serving → Closing states, graceful shutdown.
//! * [`engine`] — the decision: a synchronous function of (request, rule set) to verdict,
//!   and the one place that knows the names of the variables sent back.
//! * [`request`] — the facts about one request, as every rule sees them.
//! * [`rules`] — rule files (IP/CIDR lists) compiled into immutable lookup structures.
//! * [`config`] — the TOML configuration: parsed, validated, then frozen.
//! * [`reload`] — rebuilding the rules off the request path and swapping them in.
//! * [`metrics`] — counters shared by the connection tasks; [`throttle`] keeps logs of
//!   repeated problems to one line per interval.
//!
//! Dependencies run one way: `server` uses `spop` and `engine`; `engine` uses `rules`;
//! `spop` knows nothing about rules and `engine` nothing about sockets or frames.

#![forbid(unsafe_code)]
#![warn(missing_docs, rust_2018_idioms)]
// Everything here handles bytes from the network or lines from rule files: no panicking
// accessors, no silently truncating casts (tests are exempt, see clippy.toml).
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

pub mod admin;
pub mod config;
pub mod engine;
pub mod insight;
pub mod limits;
pub mod metrics;
pub mod prehashed;
pub mod reload;
pub mod request;
pub mod rules;
pub mod server;
pub mod spop;
pub mod throttle;
pub mod top;
