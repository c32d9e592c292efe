//! What a ban applies to: an IPv4 or IPv6 network (a single address is a /32 or /128) or
//! an autonomous system, parsed from what an operator types and printed back the same way.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The target of a ban. Networks are stored with their host bits cleared; an
/// IPv4-mapped IPv6 network (`::ffff:192.0.2.0/120`) is the IPv4 network it maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// An IPv4 network: `net` has no bits beyond `len`.
    V4 {
        /// The network address as a number.
        net: u32,
        /// Prefix length, 0–32.
        len: u8,
    },
    /// An IPv6 network: `net` has no bits beyond `len`.
    V6 {
        /// The network address as a number.
        net: u128,
        /// Prefix length, 0–128.
        len: u8,
    },
    /// An autonomous system number.
    Asn(u32),
}

/// Why a string is not a ban target; displayed as one line for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError(String);

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TargetError {}

impl Target {
    /// The single address `addr` (an IPv4-mapped IPv6 address is its IPv4 address).
    pub fn address(addr: IpAddr) -> Target {
        match canonical(addr) {
            IpAddr::V4(a) => Target::V4 {
                net: u32::from(a),
                len: 32,
            },
            IpAddr::V6(a) => Target::V6 {
                net: u128::from(a),
                len: 128,
            },
        }
    }

    /// The network of `len` bits holding `addr`, host bits cleared (`len` beyond the
    /// family's width is the single address). For an IPv4-mapped IPv6 address `len`
    /// counts IPv4 bits, as the network is an IPv4 one.
    pub fn network_of(addr: IpAddr, len: u8) -> Target {
        match canonical(addr) {
            IpAddr::V4(a) => {
                let len = len.min(32);
                Target::V4 {
                    net: u32::from(a) & mask_v4(len),
                    len,
                }
            }
            IpAddr::V6(a) => {
                let len = len.min(128);
                Target::V6 {
                    net: u128::from(a) & mask_v6(len),
                    len,
                }
            }
        }
    }

    /// The prefix length of a network target; `None` for an AS number.
    pub fn prefix_len(&self) -> Option<u8> {
        match *self {
            Target::V4 { len, .. } | Target::V6 { len, .. } => Some(len),
            Target::Asn(_) => None,
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it maps; others unchanged.
pub(crate) fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// The netmask of an IPv4 prefix of `len` bits (at most 32).
pub(crate) fn mask_v4(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

/// The netmask of an IPv6 prefix of `len` bits (at most 128).
pub(crate) fn mask_v6(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0)
}

impl FromStr for Target {
    type Err = TargetError;

    /// `203.0.113.7`, `203.0.113.0/24`, `2001:db8::/48`, `AS64496` (or `as64496`, or
    /// `64496` is refused as ambiguous). A network with host bits set is refused with
    /// the network it probably means.
    fn from_str(text: &str) -> Result<Target, TargetError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TargetError(
                "empty target: give an address, a CIDR or an AS number (AS64496)".into(),
            ));
        }
        if let Some(number) = text
            .strip_prefix("AS")
            .or_else(|| text.strip_prefix("as"))
            .or_else(|| text.strip_prefix("As"))
        {
            return number.parse::<u32>().map(Target::Asn).map_err(|_| {
                TargetError(format!(
                    "{text:?} is not an AS number (AS followed by 0–4294967295)"
                ))
            });
        }
        let (addr_text, len_text) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            let hint = if text.bytes().all(|b| b.is_ascii_digit()) {
                format!(" (an AS number is written AS{text})")
            } else {
                String::new()
            };
            TargetError(format!(
                "{text:?} is not an IP address, a CIDR or an AS number{hint}"
            ))
        })?;
        let Some(len_text) = len_text else {
            return Ok(Target::address(addr));
        };
        let width: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let len = len_text
            .parse::<u8>()
            .ok()
            .filter(|&len| len <= width)
            .ok_or_else(|| {
                TargetError(format!(
                    "{text:?}: the prefix length must be 0–{width}, not {len_text:?}"
                ))
            })?;
        let (target, full) = match addr {
            // ::ffff:0:0/96 and longer are IPv4 networks; shorter ones stay IPv6.
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => match len.checked_sub(96) {
                Some(v4_len) => (Target::network_of(addr, v4_len), Target::address(addr)),
                None => {
                    let net = u128::from(v6);
                    let target = Target::V6 {
                        net: net & mask_v6(len),
                        len,
                    };
                    (target, Target::V6 { net, len: 128 })
                }
            },
            _ => (Target::network_of(addr, len), Target::address(addr)),
        };
        if !host_bits_clear(full, target) {
            return Err(TargetError(format!(
                "{text:?} has host bits set: did you mean {target}?"
            )));
        }
        Ok(target)
    }
}

/// Whether the address `given` (a full-length target) is the network address of `net`.
fn host_bits_clear(given: Target, net: Target) -> bool {
    match (given, net) {
        (Target::V4 { net: a, .. }, Target::V4 { net: n, .. }) => a == n,
        (Target::V6 { net: a, .. }, Target::V6 { net: n, .. }) => a == n,
        _ => true,
    }
}

impl fmt::Display for Target {
    /// `203.0.113.7` for a single address, `203.0.113.0/24`, `2001:db8::/48`, `AS64496`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Target::V4 { net, len: 32 } => write!(f, "{}", Ipv4Addr::from(net)),
            Target::V4 { net, len } => write!(f, "{}/{len}", Ipv4Addr::from(net)),
            Target::V6 { net, len: 128 } => write!(f, "{}", Ipv6Addr::from(net)),
            Target::V6 { net, len } => write!(f, "{}/{len}", Ipv6Addr::from(net)),
            Target::Asn(asn) => write!(f, "AS{asn}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Target, String> {
        text.parse::<Target>().map_err(|e| e.to_string())
    }

    #[test]
    fn targets_parse_and_print_back() {
        for text in [
            "203.0.113.7",
            "203.0.113.0/24",
            "0.0.0.0/0",
            "2001:db8::1",
            "2001:db8::/48",
            "AS64496",
            "AS0",
            "AS4294967295",
        ] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
        assert_eq!(parse(" as64496 ").unwrap(), Target::Asn(64496));
        assert_eq!(parse("203.0.113.7/32").unwrap().to_string(), "203.0.113.7");
    }

    #[test]
    fn ipv4_mapped_ipv6_is_ipv4() {
        assert_eq!(
            parse("::ffff:203.0.113.7").unwrap().to_string(),
            "203.0.113.7"
        );
        assert_eq!(
            parse("::ffff:203.0.113.0/120").unwrap().to_string(),
            "203.0.113.0/24"
        );
        let mapped: IpAddr = "::ffff:198.51.100.9".parse().unwrap();
        assert_eq!(
            Target::network_of(mapped, 24).to_string(),
            "198.51.100.0/24"
        );
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        assert_eq!(
            parse("203.0.113.7/24").unwrap_err(),
            "\"203.0.113.7/24\" has host bits set: did you mean 203.0.113.0/24?"
        );
        assert_eq!(
            parse("2001:db8::/129").unwrap_err(),
            "\"2001:db8::/129\": the prefix length must be 0–128, not \"129\""
        );
        assert_eq!(
            parse("10.0.0.0/x").unwrap_err(),
            "\"10.0.0.0/x\": the prefix length must be 0–32, not \"x\""
        );
        assert_eq!(
            parse("64496").unwrap_err(),
            "\"64496\" is not an IP address, a CIDR or an AS number (an AS number is written AS64496)"
        );
        assert!(parse("AS-1").unwrap_err().contains("is not an AS number"));
        assert!(parse("AS4294967296")
            .unwrap_err()
            .contains("is not an AS number"));
        assert!(parse("example.com")
            .unwrap_err()
            .contains("is not an IP address"));
        assert!(parse("").unwrap_err().starts_with("empty target"));
    }

    #[test]
    fn networks_of_addresses_clear_host_bits() {
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(Target::network_of(v6, 64).to_string(), "2001:db8:1:2::/64");
        assert_eq!(Target::network_of(v6, 0).to_string(), "::/0");
        assert_eq!(Target::network_of(v6, 200).prefix_len(), Some(128));
        assert_eq!(parse("::ffff:0:0/96").unwrap().to_string(), "0.0.0.0/0");
        let v4: IpAddr = "198.51.100.77".parse().unwrap();
        assert_eq!(Target::network_of(v4, 0).to_string(), "0.0.0.0/0");
        assert_eq!(Target::address(v4).to_string(), "198.51.100.77");
        assert_eq!(Target::Asn(1).prefix_len(), None);
    }
}
