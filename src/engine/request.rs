//! [`Request`]: the typed view of one `guard-check` message that the rules look at.

use std::net::IpAddr;

use crate::spop::{Message, TypedData};

/// The facts about one HTTP request that HAProxy sent, borrowed from the NOTIFY frame.
///
/// Absent and empty values are both `None`: HAProxy sends NULL when a sample fetch
/// fails (no Host header) and an empty string when the header is there but empty, and
/// the rules treat both the same way.
#[derive(Debug, Clone, Copy, Default)]
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
}

impl<'a> Request<'a> {
    /// Reads the well-known arguments (`src`, `method`, `path`, `host`, `ua`) of a message.
    ///
    /// `src` may be IPV4/IPV6 typed data (the `src` sample) or a STRING holding an
    /// address (e.g. `req.hdr(x-forwarded-for,-1)`).
    pub fn from_message(message: &'a Message) -> Self {
        let mut request = Request::default();
        for arg in &message.args {
            match arg.name.as_ref() {
                b"src" => request.src = address(&arg.value),
                b"method" => request.method = text(&arg.value),
                b"path" => request.path = text(&arg.value),
                b"host" => request.host = text(&arg.value),
                b"ua" => request.ua = text(&arg.value),
                _ => {}
            }
        }
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

fn address(value: &TypedData) -> Option<IpAddr> {
    let addr = match value {
        TypedData::Ipv4(a) => IpAddr::V4(*a),
        TypedData::Ipv6(a) => IpAddr::V6(*a),
        TypedData::String(s) | TypedData::Binary(s) => {
            let text = std::str::from_utf8(s).ok()?.trim();
            text.parse::<IpAddr>().ok()?
        }
        _ => return None,
    };
    Some(canonical(addr))
}

fn text(value: &TypedData) -> Option<&[u8]> {
    match value {
        TypedData::String(s) | TypedData::Binary(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spop::Arg;
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
