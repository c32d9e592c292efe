//! HAPROXY-HELLO key/value lists through [`negotiate`], the pure half of the handshake.
//!
//! The input is read twice: as a whole frame body (the seeds are the captured HELLOs),
//! and as a bare KV-list payload behind a HAPROXY-HELLO header, so that mutations of
//! the entries are not lost to a mutated frame type. Every KV-list that decodes is
//! negotiated against several agent limits.
//!
//! Checks, besides "never panics":
//! - an accepted HELLO gives a max-frame-size between the protocol minimum (256) and
//!   both the offer and the agent's limit (itself raised to 256), reports a health check
//!   exactly when `healthcheck` is the boolean true, and yields an AGENT-HELLO that
//!   encodes and decodes to the same three entries;
//! - a refused one maps to one of the HELLO status codes (5 to 9, SPOE.txt §3.5).
//!
//! Seeds: the HAPROXY-HELLO bodies of `tests/fixtures/captures/`. A dictionary of the
//! HELLO keys is in `fuzz/dicts/spop.dict`.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use spoa_guard::spop::hello::{negotiate, MIN_FRAME_SIZE};
use spoa_guard::spop::{Frame, KvList, Payload, TypedData};

/// HAPROXY-HELLO (type 1), FIN, stream-id 0, frame-id 0.
const HELLO_HEADER: [u8; 7] = [1, 0, 0, 0, 1, 0, 0];

/// Agent limits (`[server] max_frame_size`) to negotiate against: below the protocol
/// minimum, the minimum, the default, and the largest.
const AGENT_LIMITS: [u32; 4] = [0, MIN_FRAME_SIZE, 16380, u32::MAX];

fuzz_target!(|data: &[u8]| {
    let mut payload = BytesMut::from(&HELLO_HEADER[..]);
    payload.extend_from_slice(data);
    for body in [Bytes::copy_from_slice(data), payload.freeze()] {
        if let Ok(Frame {
            payload: Payload::HaproxyHello(kv),
            ..
        }) = Frame::decode(&body)
        {
            for limit in AGENT_LIMITS {
                check(&kv, limit);
            }
        }
    }
});

fn check(kv: &KvList, agent_limit: u32) {
    let negotiated = match negotiate(kv, agent_limit) {
        Ok(negotiated) => negotiated,
        Err(e) => {
            assert!((5..=9).contains(&e.status().0), "HELLO refused with {e:?}");
            return;
        }
    };
    let size = negotiated.max_frame_size;
    let offer = kv
        .get("max-frame-size")
        .and_then(TypedData::as_u64)
        .expect("accepted without an integer max-frame-size");
    assert!(size >= MIN_FRAME_SIZE, "max-frame-size {size} below 256");
    assert!(
        u64::from(size) <= offer,
        "max-frame-size {size} above the offer {offer}"
    );
    assert!(
        size <= agent_limit.max(MIN_FRAME_SIZE),
        "max-frame-size {size} above the agent's limit {agent_limit}"
    );
    assert_eq!(
        negotiated.healthcheck,
        kv.get("healthcheck") == Some(&TypedData::Bool(true))
    );

    let answer = negotiated.agent_hello();
    let mut body = BytesMut::new();
    answer.encode_body(&mut body);
    let decoded = Frame::decode(&body.freeze()).expect("the AGENT-HELLO decodes");
    let Payload::AgentHello(entries) = &decoded.payload else {
        panic!("the AGENT-HELLO decoded as {decoded:?}");
    };
    assert_eq!(entries.get("version"), Some(&TypedData::str("2.0")));
    assert_eq!(
        entries.get("max-frame-size"),
        Some(&TypedData::Uint32(size))
    );
    assert!(entries.get("capabilities").is_some());
    assert_eq!(decoded, answer);
}
