//! Rate-limit keys: which requests share a bucket.
//!
//! A key specification is one or more parts joined with `+`:
//!
//! | part | value of the part for one request |
//! |---|---|
//! | `src` | the source address: IPv4 as is (/32), IPv6 truncated to its /64 |
//! | `src/N` | N in 0..=32: IPv4 truncated to /N (IPv6 stays /64); N in 33..=128: IPv6 truncated to /N (IPv4 stays /32) |
//! | `src/N/M` | IPv4 truncated to /N (0..=32) and IPv6 to /M (0..=128) |
//! | `asn` | the source's autonomous system number |
//! | `host` | the Host header, lower-cased, without a `:port` suffix |
//! | `path` | the path, byte for byte |
//! | `method` | the method, byte for byte |
//! | `arg:NAME` | the message argument `NAME` ([`Request::arg`]) |
//! | `global` | nothing: every request shares one bucket (cannot be combined) |
//!
//! One IPv6 client usually owns a whole /64 (SLAAC, privacy addresses), so keying on the
//! full 128-bit address would hand every client 2^64 buckets; hence the /64 default.
//! IPv4-mapped IPv6 sources are already IPv4 here ([`Request::src`] is canonical).
//!
//! # Absent values
//!
//! A part whose value is missing (no source address, no Host header, an address outside
//! the ASN database, an absent or empty argument) takes one explicit *absent* value: all
//! such requests share one bucket per limit (per value of the other parts). The other
//! choices are worse: skipping the limit would let any client bypass a `host` or
//! `arg:NAME` limit by leaving the header out, and hashing the empty value together with
//! real ones would be the same thing without saying so.
//!
//! # Hashed keys
//!
//! A request's key is never materialised: its parts are fed, each with a type tag and
//! (for byte strings) a length prefix, into SipHash-1-3 keyed with a per-limit random
//! seed (std's `RandomState`), and the bucket map stores only the 64-bit result. The
//! tags and length prefixes make the encoding prefix-free, so two different keys only
//! share a bucket on a 64-bit hash collision: with `n` keys tracked, the chance that any
//! two of them collide is about `n² / 2^65` (7·10⁻⁹ at the default cap of 500,000 keys;
//! 3·10⁻⁸ at 1,000,000), and the chance that a given new key lands on a tracked one is
//! `n / 2^64` (3·10⁻¹⁴). A collision merges two clients' buckets, nothing worse. The
//! seed is secret and random per process, so collisions cannot be crafted offline.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::decision::{ArgValue, Request};

/// What the parser accepts, for error messages.
const EXPECTED: &str = "expected src, src/N, src/N/M, asn, host, path, method, arg:NAME, global";

/// What is shown for an absent value in [`KeySpec::describe`].
const ABSENT: &str = "(none)";

/// A parsed key specification such as `src/24+path`; read from and written as its text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeySpec {
    /// In the order written; never empty; `Global` only alone.
    parts: Vec<Part>,
}

/// One `+`-separated part of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// The source address truncated to a prefix length per family.
    Src {
        /// IPv4 prefix length, 0..=32.
        v4: u8,
        /// IPv6 prefix length, 0..=128.
        v6: u8,
    },
    /// The source's ASN.
    Asn,
    /// Host header, lower-cased, without port.
    Host,
    /// The path.
    Path,
    /// The method.
    Method,
    /// A message argument by name.
    Arg(String),
    /// One bucket for everything.
    Global,
}

/// Type tags written before each part's value, so that the byte stream fed to the
/// hasher is prefix-free.
mod tag {
    pub(super) const ABSENT: u8 = 0;
    pub(super) const PRESENT: u8 = 1;
    pub(super) const V4: u8 = 4;
    pub(super) const V6: u8 = 6;
    pub(super) const BYTES: u8 = 0x10;
    pub(super) const INT: u8 = 0x11;
    pub(super) const ADDR4: u8 = 0x14;
    pub(super) const ADDR6: u8 = 0x16;
    pub(super) const GLOBAL: u8 = 0xff;
}

/// Why a key specification does not parse; each message names the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Nothing at all.
    #[error("empty key ({EXPECTED})")]
    Empty,
    /// `src++path`.
    #[error("empty key part ({EXPECTED})")]
    EmptyPart,
    /// A word that is no part.
    #[error("unknown key part {0:?} ({EXPECTED})")]
    Unknown(String),
    /// `arg:` without a name.
    #[error("key part {0:?} needs an argument name (arg:NAME)")]
    ArgName(String),
    /// `src/1/2/3`.
    #[error("key part {0:?}: expected src/N or src/N/M")]
    SrcShape(String),
    /// Not a number.
    #[error("key part {part:?}: bad prefix length {text:?}")]
    BadLength {
        /// The part.
        part: String,
        /// The length as written.
        text: String,
    },
    /// `src/N` with N over 128.
    #[error("key part {part:?}: prefix length {text} is above 128")]
    TooLong {
        /// The part.
        part: String,
        /// The length as written.
        text: String,
    },
    /// `src/N/M` with N over 32.
    #[error("key part {0:?}: IPv4 prefix length {1} is above 32")]
    V4TooLong(String, u8),
    /// `src/N/M` with M over 128.
    #[error("key part {0:?}: IPv6 prefix length {1} is above 128")]
    V6TooLong(String, u8),
    /// The same part twice.
    #[error("key part {0:?} appears twice")]
    Twice(String),
    /// `global+src`.
    #[error("\"global\" cannot be combined with other key parts")]
    GlobalCombined,
}

impl KeySpec {
    /// `src`: the source address (IPv4 as is, IPv6 by /64), the default key.
    pub fn src() -> KeySpec {
        KeySpec {
            parts: vec![Part::Src { v4: 32, v6: 64 }],
        }
    }

    /// Parses `src+path`, `src/24`, `arg:tenant+host`, `global`…
    ///
    /// # Errors
    ///
    /// An empty specification or part, an unknown part, a bad prefix length, a part
    /// given twice, or `global` combined with something else; the message names the part.
    pub fn parse(spec: &str) -> Result<KeySpec, KeyError> {
        if spec.trim().is_empty() {
            return Err(KeyError::Empty);
        }
        let mut parts: Vec<Part> = Vec::new();
        for text in spec.split('+').map(str::trim) {
            let part = Part::parse(text)?;
            if parts.iter().any(|p| p.same_kind(&part)) {
                return Err(KeyError::Twice(text.to_string()));
            }
            parts.push(part);
        }
        if parts.len() > 1 && parts.contains(&Part::Global) {
            return Err(KeyError::GlobalCombined);
        }
        Ok(KeySpec { parts })
    }

    /// Whether a part is `asn` (the engine then needs an ASN database).
    pub fn uses_asn(&self) -> bool {
        self.parts.contains(&Part::Asn)
    }

    /// Whether this is `global`: one bucket, no hashing needed.
    pub fn is_global(&self) -> bool {
        self.parts == [Part::Global]
    }

    /// The request's key as a 64-bit keyed hash (see the module docs).
    #[inline]
    pub(crate) fn hash(
        &self,
        seed: &impl BuildHasher,
        request: &Request<'_>,
        asn: Option<u32>,
    ) -> u64 {
        let mut h = seed.build_hasher();
        for part in &self.parts {
            match part {
                Part::Src { v4, v6 } => match request.src {
                    None => h.write_u8(tag::ABSENT),
                    Some(IpAddr::V4(a)) => {
                        h.write_u8(tag::V4);
                        h.write_u32(u32::from(a) & mask_v4(*v4));
                    }
                    Some(IpAddr::V6(a)) => {
                        h.write_u8(tag::V6);
                        h.write_u128(u128::from(a) & mask_v6(*v6));
                    }
                },
                Part::Asn => match asn {
                    None => h.write_u8(tag::ABSENT),
                    Some(n) => {
                        h.write_u8(tag::PRESENT);
                        h.write_u32(n);
                    }
                },
                Part::Host => match request.host.map(host_without_port) {
                    None | Some([]) => h.write_u8(tag::ABSENT),
                    Some(host) => {
                        h.write_u8(tag::PRESENT);
                        write_lowercase(&mut h, host);
                    }
                },
                Part::Path => write_bytes(&mut h, request.path),
                Part::Method => write_bytes(&mut h, request.method),
                Part::Arg(name) => match request.arg(name) {
                    None => h.write_u8(tag::ABSENT),
                    Some(ArgValue::Bytes(b)) => {
                        h.write_u8(tag::BYTES);
                        h.write_usize(b.len());
                        h.write(b);
                    }
                    Some(ArgValue::Int(i)) => {
                        h.write_u8(tag::INT);
                        h.write_i128(i);
                    }
                    Some(ArgValue::Addr(IpAddr::V4(a))) => {
                        h.write_u8(tag::ADDR4);
                        h.write_u32(u32::from(a));
                    }
                    Some(ArgValue::Addr(IpAddr::V6(a))) => {
                        h.write_u8(tag::ADDR6);
                        h.write_u128(u128::from(a));
                    }
                },
                Part::Global => h.write_u8(tag::GLOBAL),
            }
        }
        h.finish()
    }

    /// The request's key in words, e.g. `src=192.0.2.7 path=/login`, for `eval`.
    pub fn describe(&self, request: &Request<'_>, asn: Option<u32>) -> String {
        let words: Vec<String> = self
            .parts
            .iter()
            .map(|part| match part {
                Part::Src { v4, v6 } => {
                    let value = request
                        .src
                        .map_or_else(|| ABSENT.to_string(), |a| describe_src(a, *v4, *v6));
                    format!("src={value}")
                }
                Part::Asn => match asn {
                    Some(n) => format!("asn=AS{n}"),
                    None => format!("asn={ABSENT}"),
                },
                Part::Host => match request.host.map(host_without_port) {
                    None | Some([]) => format!("host={ABSENT}"),
                    Some(host) => format!("host={}", host.to_ascii_lowercase().escape_ascii()),
                },
                Part::Path => format!("path={}", describe_bytes(request.path)),
                Part::Method => format!("method={}", describe_bytes(request.method)),
                Part::Arg(name) => {
                    let value = match request.arg(name) {
                        None => ABSENT.to_string(),
                        Some(ArgValue::Bytes(b)) => b.escape_ascii().to_string(),
                        Some(ArgValue::Int(i)) => i.to_string(),
                        Some(ArgValue::Addr(a)) => a.to_string(),
                    };
                    format!("arg:{name}={value}")
                }
                Part::Global => "global".to_string(),
            })
            .collect();
        words.join(" ")
    }
}

/// The canonical text: `src`, `src/24`, `src/48`, `src/24/48`, parts joined with `+`.
impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            match part {
                Part::Src { v4: 32, v6: 64 } => f.write_str("src")?,
                Part::Src { v4, v6: 64 } => write!(f, "src/{v4}")?,
                Part::Src { v4: 32, v6 } if *v6 > 32 => write!(f, "src/{v6}")?,
                Part::Src { v4, v6 } => write!(f, "src/{v4}/{v6}")?,
                Part::Asn => f.write_str("asn")?,
                Part::Host => f.write_str("host")?,
                Part::Path => f.write_str("path")?,
                Part::Method => f.write_str("method")?,
                Part::Arg(name) => write!(f, "arg:{name}")?,
                Part::Global => f.write_str("global")?,
            }
        }
        Ok(())
    }
}

impl Part {
    fn parse(text: &str) -> Result<Part, KeyError> {
        match text {
            "" => return Err(KeyError::EmptyPart),
            "src" => return Ok(Part::Src { v4: 32, v6: 64 }),
            "asn" => return Ok(Part::Asn),
            "host" => return Ok(Part::Host),
            "path" => return Ok(Part::Path),
            "method" => return Ok(Part::Method),
            "global" => return Ok(Part::Global),
            _ => {}
        }
        if let Some(name) = text.strip_prefix("arg:") {
            let name = name.trim();
            if name.is_empty() {
                return Err(KeyError::ArgName(text.to_string()));
            }
            return Ok(Part::Arg(name.to_string()));
        }
        if let Some(lengths) = text.strip_prefix("src/") {
            let mut numbers = lengths.split('/');
            let first = prefix_length(text, numbers.next())?;
            let second = numbers
                .next()
                .map(|n| prefix_length(text, Some(n)))
                .transpose()?;
            if numbers.next().is_some() {
                return Err(KeyError::SrcShape(text.to_string()));
            }
            return match second {
                None if first <= 32 => Ok(Part::Src { v4: first, v6: 64 }),
                None if first <= 128 => Ok(Part::Src { v4: 32, v6: first }),
                None => Err(KeyError::TooLong {
                    part: text.to_string(),
                    text: first.to_string(),
                }),
                Some(_) if first > 32 => Err(KeyError::V4TooLong(text.to_string(), first)),
                Some(v6) if v6 > 128 => Err(KeyError::V6TooLong(text.to_string(), v6)),
                Some(v6) => Ok(Part::Src { v4: first, v6 }),
            };
        }
        Err(KeyError::Unknown(text.to_string()))
    }

    /// Two parts of the same kind make a key that means nothing more than one.
    fn same_kind(&self, other: &Part) -> bool {
        match (self, other) {
            (Part::Arg(a), Part::Arg(b)) => a == b,
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

/// One prefix length of `src/N/M`: decimal digits, at most 255 (range checked by the caller).
fn prefix_length(part: &str, text: Option<&str>) -> Result<u8, KeyError> {
    let text = text.unwrap_or_default();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(KeyError::BadLength {
            part: part.to_string(),
            text: text.to_string(),
        });
    }
    text.parse::<u8>().map_err(|_| KeyError::TooLong {
        part: part.to_string(),
        text: text.to_string(),
    })
}

impl TryFrom<String> for KeySpec {
    type Error = KeyError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        KeySpec::parse(&text)
    }
}

impl From<KeySpec> for String {
    fn from(spec: KeySpec) -> String {
        spec.to_string()
    }
}

/// Netmask of an IPv4 prefix length (0..=32).
fn mask_v4(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32_u32.saturating_sub(u32::from(len)))
        .unwrap_or(0)
}

/// Netmask of an IPv6 prefix length (0..=128).
fn mask_v6(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128_u32.saturating_sub(u32::from(len)))
        .unwrap_or(0)
}

/// `192.0.2.7` for a full-length prefix, `192.0.2.0/24` or `2001:db8::/64` otherwise.
fn describe_src(addr: IpAddr, v4: u8, v6: u8) -> String {
    match addr {
        IpAddr::V4(a) if v4 >= 32 => a.to_string(),
        IpAddr::V4(a) => {
            let net = Ipv4Addr::from(u32::from(a) & mask_v4(v4));
            Ipv4Net::new(net, v4).map_or_else(|_| net.to_string(), |n| n.to_string())
        }
        IpAddr::V6(a) if v6 >= 128 => a.to_string(),
        IpAddr::V6(a) => {
            let net = Ipv6Addr::from(u128::from(a) & mask_v6(v6));
            Ipv6Net::new(net, v6).map_or_else(|_| net.to_string(), |n| n.to_string())
        }
    }
}

fn describe_bytes(value: Option<&[u8]>) -> String {
    value.map_or_else(|| ABSENT.to_string(), |v| v.escape_ascii().to_string())
}

/// An optional byte string: absent, or present with a length prefix.
fn write_bytes(h: &mut impl Hasher, value: Option<&[u8]>) {
    match value {
        None => h.write_u8(tag::ABSENT),
        Some(v) => {
            h.write_u8(tag::PRESENT);
            h.write_usize(v.len());
            h.write(v);
        }
    }
}

/// Length prefix, then the bytes lower-cased, through a stack buffer (no allocation;
/// SipHash is a streaming hash, so chunked writes equal one write).
fn write_lowercase(h: &mut impl Hasher, value: &[u8]) {
    h.write_usize(value.len());
    let mut buffer = [0_u8; 64];
    for chunk in value.chunks(buffer.len()) {
        let Some(out) = buffer.get_mut(..chunk.len()) else {
            return;
        };
        out.copy_from_slice(chunk);
        out.make_ascii_lowercase();
        h.write(out);
    }
}

/// The host part of a Host header value: `example.com:8080` → `example.com`,
/// `[2001:db8::1]:443` → `[2001:db8::1]`; a bare IPv6 address (several colons, no
/// brackets) is left as it is.
pub(crate) fn host_without_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => host.get(..=end).unwrap_or(host),
            None => host,
        };
    }
    let mut colons = host.iter().enumerate().filter(|(_, &b)| b == b':');
    match (colons.next(), colons.next()) {
        (Some((at, _)), None) => host.get(..at).unwrap_or(host),
        _ => host,
    }
}
