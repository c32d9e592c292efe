//! [`Request`]: the facts about one HTTP request that HAProxy sent, as the rules see them.
//!
//! A plain borrowed view of one `guard-check` message, shared by the engine, the rule
//! matchers and the rate limiters, so that none of them needs to know about frames.

use std::net::IpAddr;

use crate::spop::notify::args_of;
use crate::spop::{Args, Message, Value};

/// The facts about one HTTP request that HAProxy sent, borrowed from the NOTIFY frame.
///
/// Absent and empty values are both `None`: HAProxy sends NULL when a sample fetch
/// fails (no Host header) and an empty string when the header is there but empty, and
/// the rules treat both the same way.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// Source address, IPv4-mapped IPv6 already turned into IPv4; `None` when the `src`
    /// argument is missing or not an address (a configuration error on the HAProxy side).
    pub src: Option<IpAddr>,
    /// HTTP method.
    pub method: Option<&'a [u8]>,
    /// Request path, without the query string (HAProxy's `path` sample).
    pub path: Option<&'a [u8]>,
    /// Host header.
    pub host: Option<&'a [u8]>,
    /// User-Agent header.
    pub ua: Option<&'a [u8]>,
    /// Every argument of the message, for rate-limit keys `arg:NAME`.
    pub args: Args<'a>,
}

impl<'a> Request<'a> {
    /// Reads the well-known arguments (`src`, `method`, `path`, `host`, `ua`) of a message.
    ///
    /// `src` may be IPV4/IPV6 typed data (the `src` sample) or a STRING holding an
    /// address (e.g. `req.hdr(x-forwarded-for,-1)`).
    pub fn from_message(message: &'a Message) -> Self {
        Self::from_args(args_of(message))
    }

    /// Reads the well-known arguments out of a message's arguments, which it keeps for
    /// [`Request::arg`]; see [`Request::from_message`].
    pub fn from_args(args: Args<'a>) -> Self {
        let mut request = Request::default();
        for arg in &args {
            match arg.name {
                b"src" => request.src = address(arg.value),
                b"method" => request.method = text(arg.value),
                b"path" => request.path = text(arg.value),
                b"host" => request.host = text(arg.value),
                b"ua" => request.ua = text(arg.value),
                _ => {}
            }
        }
        request.args = args;
        request
    }
}

/// Canonical form of an address: an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) is
/// the IPv4 address, everywhere (lists, ASN, rate-limit keys).
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl Request<'_> {
    /// The value of argument `name` as bytes, for rate-limit keys: STRING and BINARY as
    /// they are, integers in decimal, addresses in canonical text; `None` when absent,
    /// NULL or empty.
    pub fn arg(&self, name: &str) -> Option<ArgValue<'_>> {
        let arg = self.args.iter().find(|arg| arg.name == name.as_bytes())?;
        match arg.value {
            Value::String(b) | Value::Binary(b) if !b.is_empty() => Some(ArgValue::Bytes(b)),
            Value::Null | Value::String(_) | Value::Binary(_) => None,
            Value::Bool(b) => Some(ArgValue::Int(i128::from(b))),
            Value::Int32(v) => Some(ArgValue::Int(i128::from(v))),
            Value::Uint32(v) => Some(ArgValue::Int(i128::from(v))),
            Value::Int64(v) => Some(ArgValue::Int(i128::from(v))),
            Value::Uint64(v) => Some(ArgValue::Int(i128::from(v))),
            Value::Ipv4(a) => Some(ArgValue::Addr(IpAddr::V4(a))),
            Value::Ipv6(a) => Some(ArgValue::Addr(canonical(IpAddr::V6(a)))),
        }
    }
}

/// The value of an extra argument, for building keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgValue<'a> {
    /// STRING or BINARY bytes.
    Bytes(&'a [u8]),
    /// Any integer type (and BOOL as 0/1).
    Int(i128),
    /// An IPV4/IPV6 value.
    Addr(IpAddr),
}

fn address(value: Value<'_>) -> Option<IpAddr> {
    let addr = match value {
        Value::Ipv4(a) => IpAddr::V4(a),
        Value::Ipv6(a) => IpAddr::V6(a),
        Value::String(s) | Value::Binary(s) => {
            let text = std::str::from_utf8(s).ok()?.trim();
            text.parse::<IpAddr>().ok()?
        }
        _ => return None,
    };
    Some(canonical(addr))
}

fn text(value: Value<'_>) -> Option<&[u8]> {
    match value {
        Value::String(s) | Value::Binary(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spop::{Arg, TypedData};
    use bytes::Bytes;
    use std::net::Ipv4Addr;

    fn message(args: Vec<(&'static str, TypedData)>) -> Message {
        Message {
            name: Bytes::from_static(b"guard-check"),
            args: args
                .into_iter()
                .map(|(name, value)| Arg {
                    name: Bytes::from_static(name.as_bytes()),
                    value,
                })
                .collect(),
        }
    }

    #[test]
    fn reads_typed_arguments() {
        let m = message(vec![
            ("src", TypedData::Ipv4(Ipv4Addr::new(192, 0, 2, 1))),
            ("method", TypedData::str("GET")),
            ("path", TypedData::str("/")),
            ("host", TypedData::Null),
            ("ua", TypedData::str("")),
        ]);
        let r = Request::from_message(&m);
        assert_eq!(r.src, Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));
        assert_eq!(r.method, Some(&b"GET"[..]));
        assert_eq!(r.path, Some(&b"/"[..]));
        assert_eq!(r.host, None, "NULL is absent");
        assert_eq!(r.ua, None, "empty is absent");
    }

    #[test]
    fn mapped_ipv6_is_ipv4() {
        let mapped = Ipv4Addr::new(203, 0, 113, 7).to_ipv6_mapped();
        let m = message(vec![("src", TypedData::Ipv6(mapped))]);
        assert_eq!(
            Request::from_message(&m).src,
            Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)))
        );
    }

    #[test]
    fn src_from_a_string_sample() {
        let m = message(vec![("src", TypedData::str(" 2001:db8::1 "))]);
        assert_eq!(
            Request::from_message(&m).src,
            Some("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn extra_arguments_by_name() {
        let m = message(vec![
            ("tenant", TypedData::str("acme")),
            ("port", TypedData::Int64(-7)),
            ("xff", TypedData::Null),
            (
                "peer",
                TypedData::Ipv6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
            ),
        ]);
        let r = Request::from_message(&m);
        assert_eq!(r.arg("tenant"), Some(ArgValue::Bytes(b"acme")));
        assert_eq!(r.arg("port"), Some(ArgValue::Int(-7)));
        assert_eq!(r.arg("xff"), None);
        assert_eq!(r.arg("missing"), None);
        assert_eq!(
            r.arg("peer"),
            Some(ArgValue::Addr("192.0.2.1".parse().unwrap()))
        );
    }

    #[test]
    fn bad_src_is_none() {
        for value in [
            TypedData::Null,
            TypedData::str("not-an-ip"),
            TypedData::Int64(7),
            TypedData::Binary(Bytes::from_static(&[0xff, 0xfe])),
        ] {
            assert_eq!(
                Request::from_message(&message(vec![("src", value.clone())])).src,
                None,
                "{value:?}"
            );
        }
        assert_eq!(Request::from_message(&message(vec![])).src, None);
    }
}
