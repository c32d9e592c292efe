//! A frame body through both ways the agent reads a NOTIFY: in place, as the serving
//! loop does (`spop::header`, then `notify::find_message` on the payload), and owned
//! (`Frame::decode`), which every other frame goes through.
//!
//! They must agree: the same accept or refuse (with the same reason), and for an accepted
//! NOTIFY the same first message of the wanted name, with the same argument names and
//! values in the same order. Two names are looked for: spoa-guard's default message
//! `guard-check`, and the name of the first message the owned decoder found (so that
//! inputs with mutated names still compare found messages).
//!
//! Seeds: the captured frame bodies of `tests/fixtures/captures/` (length prefix removed).

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spoa_guard::spop::notify::{args_of, find_message};
use spoa_guard::spop::{header, Frame, FrameType, Payload};

/// The message spoa-guard evaluates by default (`[server] message`).
const GUARD_CHECK: &[u8] = b"guard-check";

fuzz_target!(|data: &[u8]| {
    let owned = Frame::decode(&Bytes::copy_from_slice(data));
    let (head, payload) = match header(data) {
        Ok(split) => split,
        Err(e) => {
            // The header is read by the same parser in both: both refuse, alike.
            let owned = owned.expect_err("the owned decoder accepted a bad header");
            assert_eq!(owned.to_string(), e.to_string());
            return;
        }
    };
    if head.code != FrameType::Notify as u8 || !head.flags.fin() {
        // The serving loop hands anything but a whole NOTIFY to the owned decoder.
        return;
    }
    let messages = match owned {
        Ok(Frame {
            payload: Payload::Notify(messages),
            ..
        }) => messages,
        Ok(other) => panic!("a whole NOTIFY decoded as {other:?}"),
        Err(owned) => {
            for wanted in [GUARD_CHECK, b"".as_slice()] {
                let inplace = find_message(payload, wanted)
                    .expect_err("the in-place reader accepted what the owned decoder refused");
                assert_eq!(owned.to_string(), inplace.to_string());
            }
            return;
        }
    };
    let first_name = messages.first().map(|m| m.name.clone()).unwrap_or_default();
    for wanted in [GUARD_CHECK, &first_name[..]] {
        let inplace = find_message(payload, wanted)
            .expect("the in-place reader refused what the owned decoder accepted");
        let owned = messages.iter().find(|m| m.name[..] == *wanted).map(args_of);
        assert_eq!(inplace, owned, "different arguments for message {wanted:?}");
    }
});
