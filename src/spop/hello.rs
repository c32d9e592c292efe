//! The HELLO exchange (SPOE.txt §3.2.4, §3.2.5): what HAProxy offers, what the agent
//! answers. [`negotiate`] is a pure function so every version, size and capability case
//! is unit-tested without a socket.
//!
//! What we answer, and why (spop.md §7):
//! * `version` "2.0": the only version HAProxy 2.x and 3.x accept.
//! * `max-frame-size`: HAProxy's offer, capped by the agent's own limit, never below 256.
//!   Echoing the offer matters: a NOTIFY larger than the negotiated size is never sent
//!   (3.x) or sent fragmented / refused in a reconnect storm (2.x).
//! * `capabilities` "pipelining": several NOTIFY in flight per connection. Never
//!   `async` (2.x only, ignored by 3.1+) nor `fragmentation` (removed in 3.1).

use bytes::Bytes;

use super::error::Error;
use super::frame::{Frame, KvList, Payload};
use super::types::TypedData;

/// The only SPOP version in use (HAProxy accepts nothing else since 1.0 was dropped).
pub const VERSION: &str = "2.0";

/// The smallest max-frame-size the protocol allows.
pub const MIN_FRAME_SIZE: u32 = 256;

/// HAProxy's default offer: `tune.bufsize` (16384) minus the 4-byte length prefix.
pub const DEFAULT_FRAME_SIZE: u32 = 16380;

/// The capabilities the agent announces.
pub const CAPABILITIES: &str = "pipelining";

/// The outcome of a successful HELLO exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The max-frame-size both sides now use.
    pub max_frame_size: u32,
    /// Whether this HELLO is a health check: answer, then close.
    pub healthcheck: bool,
    /// HAProxy's engine-id, for logs (one per thread in 2.x, per engine in 3.x).
    pub engine_id: Option<Bytes>,
}

impl Negotiated {
    /// The AGENT-HELLO frame announcing this outcome: exactly the three keys both
    /// HAProxy versions accept, stream-id and frame-id 0, FIN set.
    pub fn agent_hello(&self) -> Frame {
        let mut kv = KvList::default();
        kv.push("version", TypedData::str(VERSION));
        kv.push("max-frame-size", TypedData::Uint32(self.max_frame_size));
        kv.push("capabilities", TypedData::str(CAPABILITIES));
        Frame::new(0, 0, Payload::AgentHello(kv))
    }
}

/// Checks a HAPROXY-HELLO and decides the session parameters.
///
/// ```
/// use spoa_guard::spop::hello::{haproxy_hello, negotiate};
/// use spoa_guard::spop::Payload;
///
/// let Payload::HaproxyHello(offer) = haproxy_hello(65532, false).payload else { unreachable!() };
/// // HAProxy offers 65532 (tune.bufsize 65536); the agent's limit is 16380.
/// assert_eq!(negotiate(&offer, 16380).unwrap().max_frame_size, 16380);
/// ```
///
/// `agent_max_frame_size` is the agent's own limit (config `server.max_frame_size`); the
/// result is the smaller of it and HAProxy's offer.
///
/// # Errors
///
/// Each maps to the DISCONNECT status HAProxy itself would use: no `supported-versions`
/// (5), no integer `max-frame-size` (6), no `capabilities` (7), no "2.0" among the
/// versions (8), an offer below 256 (9).
pub fn negotiate(hello: &KvList, agent_max_frame_size: u32) -> Result<Negotiated, Error> {
    let versions = hello
        .get("supported-versions")
        .and_then(TypedData::as_bytes)
        .ok_or(Error::NoVersion)?;
    if !versions
        .split(|&b| b == b',')
        .any(|v| v.trim_ascii() == VERSION.as_bytes())
    {
        return Err(Error::BadVersion);
    }
    let offer = hello
        .get("max-frame-size")
        .and_then(TypedData::as_u64)
        .ok_or(Error::NoFrameSize)?;
    if offer < u64::from(MIN_FRAME_SIZE) {
        return Err(Error::BadFrameSize(offer));
    }
    // Capabilities are only checked for presence: pipelining is the one we use, and it
    // is harmless to announce even when HAProxy did not offer it (it then never has more
    // than one NOTIFY in flight). Health-check HELLOs carry an empty list.
    hello
        .get("capabilities")
        .and_then(TypedData::as_bytes)
        .ok_or(Error::NoCapabilities)?;
    let healthcheck = matches!(hello.get("healthcheck"), Some(TypedData::Bool(true)));
    let engine_id = hello
        .get("engine-id")
        .and_then(TypedData::as_bytes)
        .cloned();
    let agent_max = agent_max_frame_size.max(MIN_FRAME_SIZE);
    let max_frame_size = u32::try_from(offer).unwrap_or(u32::MAX).min(agent_max);
    Ok(Negotiated {
        max_frame_size,
        healthcheck,
        engine_id,
    })
}

/// A HAPROXY-HELLO as HAProxy 3.x sends it; for clients, tests and the load generator.
pub fn haproxy_hello(max_frame_size: u32, healthcheck: bool) -> Frame {
    let mut kv = KvList::default();
    kv.push("supported-versions", TypedData::str(VERSION));
    kv.push("max-frame-size", TypedData::Uint32(max_frame_size));
    if healthcheck {
        kv.push("capabilities", TypedData::str(""));
        kv.push("healthcheck", TypedData::Bool(true));
    } else {
        kv.push("capabilities", TypedData::str(CAPABILITIES));
        kv.push(
            "engine-id",
            TypedData::str("00000000-0000-4000-8000-000000000000"),
        );
    }
    Frame::new(0, 0, Payload::HaproxyHello(kv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spop::Status;

    fn hello(entries: &[(&'static str, TypedData)]) -> KvList {
        let mut kv = KvList::default();
        for (name, value) in entries {
            kv.push(name, value.clone());
        }
        kv
    }

    fn standard() -> Vec<(&'static str, TypedData)> {
        vec![
            ("supported-versions", TypedData::str("2.0")),
            ("max-frame-size", TypedData::Uint32(16380)),
            ("capabilities", TypedData::str("pipelining,async")),
            (
                "engine-id",
                TypedData::str("f34228c7-9576-42d6-b097-5ec3da260b67"),
            ),
        ]
    }

    #[test]
    fn echoes_haproxy_offer() {
        let n = negotiate(&hello(&standard()), 16380).unwrap();
        assert_eq!(n.max_frame_size, 16380);
        assert!(!n.healthcheck);
        assert_eq!(
            n.engine_id.as_deref(),
            Some(&b"f34228c7-9576-42d6-b097-5ec3da260b67"[..])
        );
    }

    #[test]
    fn never_above_the_offer_nor_the_agent_limit() {
        let mut entries = standard();
        entries[1].1 = TypedData::Uint32(65532);
        assert_eq!(
            negotiate(&hello(&entries), 16380).unwrap().max_frame_size,
            16380
        );
        entries[1].1 = TypedData::Uint32(1024);
        assert_eq!(
            negotiate(&hello(&entries), 16380).unwrap().max_frame_size,
            1024
        );
        // A misconfigured agent limit is raised to the protocol minimum.
        entries[1].1 = TypedData::Uint32(16380);
        assert_eq!(negotiate(&hello(&entries), 10).unwrap().max_frame_size, 256);
    }

    #[test]
    fn accepts_any_integer_type_for_the_size() {
        let mut entries = standard();
        entries[1].1 = TypedData::Int64(4096);
        assert_eq!(
            negotiate(&hello(&entries), 16380).unwrap().max_frame_size,
            4096
        );
    }

    #[test]
    fn picks_2_0_from_a_list_with_spaces() {
        let mut entries = standard();
        entries[0].1 = TypedData::str("1.0, 2.0 ,3.0");
        assert!(negotiate(&hello(&entries), 16380).is_ok());
    }

    #[test]
    fn rejections_carry_haproxy_status_codes() {
        let cases: Vec<(usize, Option<TypedData>, Status)> = vec![
            (0, None, Status::NO_VERSION),
            (0, Some(TypedData::str("1.0,2.1")), Status::BAD_VERSION),
            (0, Some(TypedData::str("")), Status::BAD_VERSION),
            (0, Some(TypedData::Uint32(2)), Status::NO_VERSION),
            (1, None, Status::NO_FRAME_SIZE),
            (1, Some(TypedData::str("16380")), Status::NO_FRAME_SIZE),
            (1, Some(TypedData::Uint32(255)), Status::BAD_FRAME_SIZE),
            (2, None, Status::NO_CAPABILITIES),
        ];
        for (index, replacement, status) in cases {
            let mut entries = standard();
            match replacement {
                Some(value) => entries[index].1 = value,
                None => {
                    entries.remove(index);
                }
            }
            let err = negotiate(&hello(&entries), 16380).unwrap_err();
            assert_eq!(err.status(), status, "{err}");
        }
    }

    #[test]
    fn healthcheck() {
        let entries = vec![
            ("supported-versions", TypedData::str("2.0")),
            ("max-frame-size", TypedData::Uint32(16380)),
            ("capabilities", TypedData::str("")),
            ("healthcheck", TypedData::Bool(true)),
        ];
        let n = negotiate(&hello(&entries), 16380).unwrap();
        assert!(n.healthcheck);
        assert_eq!(n.engine_id, None);
    }

    #[test]
    fn agent_hello_has_exactly_three_keys() {
        let n = negotiate(&hello(&standard()), 16380).unwrap();
        let frame = n.agent_hello();
        assert_eq!((frame.stream_id, frame.frame_id, frame.flags.0), (0, 0, 1));
        let Payload::AgentHello(kv) = frame.payload else {
            panic!("not an AGENT-HELLO")
        };
        let names: Vec<&[u8]> = kv.0.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(
            names,
            vec![&b"version"[..], b"max-frame-size", b"capabilities"]
        );
    }
}
