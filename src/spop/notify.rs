//! Reading a NOTIFY in place, for the hot path: the arguments of the one message the
//! agent evaluates, borrowed from the read buffer, with no heap allocation for up to
//! [`INLINE_ARGS`] arguments.
//!
//! Every message of the frame is still parsed, so a NOTIFY is accepted or refused (with
//! the same reason) exactly as [`Frame::decode`](super::Frame::decode) would.

use nom::number::complete::be_u8;
use smallvec::SmallVec;

use super::error::Error;
use super::frame::{Arg, Message};
use super::parse::{self, PResult};
use super::types::Value;

/// Arguments kept inline before a message's arguments spill to the heap; spoa-guard's
/// own message has five.
pub const INLINE_ARGS: usize = 8;

/// One argument of a message, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgRef<'a> {
    /// The name given in `args name=sample`; empty for an unnamed argument.
    pub name: &'a [u8],
    /// The sample's value.
    pub value: Value<'a>,
}

/// The arguments of one message, in wire order.
pub type Args<'a> = SmallVec<[ArgRef<'a>; INLINE_ARGS]>;

/// Borrows the arguments of an owned message.
pub fn args_of(message: &Message) -> Args<'_> {
    message.args.iter().map(ArgRef::of).collect()
}

impl<'a> ArgRef<'a> {
    /// Borrows an owned argument.
    pub fn of(arg: &'a Arg) -> Self {
        Self {
            name: &arg.name,
            value: arg.value.as_value(),
        }
    }
}

/// Reads the messages of a NOTIFY `payload` (the bytes after the frame header) and
/// returns the arguments of the first message named `wanted`; `None` when no message
/// has that name.
///
/// # Errors
///
/// [`Error::Invalid`] when any message of the payload is malformed.
pub fn find_message<'a>(payload: &'a [u8], wanted: &[u8]) -> Result<Option<Args<'a>>, Error> {
    let mut found = None;
    let mut input = payload;
    while !input.is_empty() {
        let (rest, ()) = parse::finish(message(input, wanted, &mut found))?;
        input = rest;
    }
    Ok(found)
}

/// One message; its arguments go to `found` if it is the first one named `wanted`.
fn message<'a>(input: &'a [u8], wanted: &[u8], found: &mut Option<Args<'a>>) -> PResult<'a, ()> {
    let (input, name) = parse::string(input)?;
    let (mut input, nb_args) = be_u8(input)?;
    let keep = found.is_none() && name == wanted;
    let mut args = Args::new();
    for _ in 0..nb_args {
        let (rest, name) = parse::string(input)?;
        let (rest, value) = parse::typed(rest)?;
        if keep {
            args.push(ArgRef { name, value });
        }
        input = rest;
    }
    if keep {
        *found = Some(args);
    }
    Ok((input, ()))
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use proptest::prelude::*;

    use super::*;
    use crate::spop::{Frame, Payload, TypedData};

    fn typed() -> impl Strategy<Value = TypedData> {
        prop_oneof![
            Just(TypedData::Null),
            any::<bool>().prop_map(TypedData::Bool),
            any::<i32>().prop_map(TypedData::Int32),
            any::<u64>().prop_map(TypedData::Uint64),
            any::<[u8; 4]>().prop_map(|o| TypedData::Ipv4(o.into())),
            any::<[u8; 16]>().prop_map(|o| TypedData::Ipv6(o.into())),
            proptest::collection::vec(any::<u8>(), 0..20)
                .prop_map(|v| TypedData::String(Bytes::from(v))),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        let name = prop_oneof![Just("guard-check"), Just("other"), Just("")];
        let arg = (prop_oneof![Just("src"), Just("ua"), Just("x")], typed());
        (name, proptest::collection::vec(arg, 0..12)).prop_map(|(name, args)| Message {
            name: Bytes::from_static(name.as_bytes()),
            args: args
                .into_iter()
                .map(|(n, value)| Arg {
                    name: Bytes::from_static(n.as_bytes()),
                    value,
                })
                .collect(),
        })
    }

    /// The payload of a NOTIFY body (after type, flags and two one-byte ids).
    fn payload(body: &[u8]) -> &[u8] {
        let (_, payload) = parse::header(body).unwrap();
        payload
    }

    proptest! {
        #[test]
        fn reads_what_the_owned_decoder_reads(messages in proptest::collection::vec(message(), 0..4)) {
            let mut body = BytesMut::new();
            Frame::new(1, 1, Payload::Notify(messages.clone())).encode_body(&mut body);
            let got = find_message(payload(&body), b"guard-check").unwrap();
            let want = messages.iter().find(|m| &m.name[..] == b"guard-check");
            prop_assert_eq!(got, want.map(args_of));
        }

        #[test]
        fn accepts_and_refuses_like_the_owned_decoder(
            messages in proptest::collection::vec(message(), 1..3),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let mut body = BytesMut::new();
            Frame::new(1, 1, Payload::Notify(messages)).encode_body(&mut body);
            let mut body = body.to_vec();
            let (at, byte) = flip;
            let at = at.index(body.len());
            if at >= 7 {
                body[at] ^= byte;
            }
            body.truncate(7.max(cut.index(body.len() + 1)));
            let owned = Frame::decode(&Bytes::from(body.clone()));
            let borrowed = find_message(payload(&body), b"guard-check").map(|_| ());
            match (owned, borrowed) {
                (Ok(_), Ok(_)) => {}
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                (a, b) => prop_assert!(false, "owned {:?}, borrowed {:?}", a, b),
            }
        }
    }

    #[test]
    fn up_to_eight_arguments_stay_inline() {
        let message = Message {
            name: Bytes::from_static(b"guard-check"),
            args: (0..8)
                .map(|_| Arg {
                    name: Bytes::from_static(b"a"),
                    value: TypedData::Null,
                })
                .collect(),
        };
        let mut body = BytesMut::new();
        Frame::new(1, 1, Payload::Notify(vec![message])).encode_body(&mut body);
        let args = find_message(payload(&body), b"guard-check")
            .unwrap()
            .unwrap();
        assert_eq!(args.len(), 8);
        assert!(!args.spilled());
    }
}
