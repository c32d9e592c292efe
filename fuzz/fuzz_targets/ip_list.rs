//! Arbitrary text as an IP list file through [`IpList::parse`], then compiled into an
//! [`IpMatcher`] and looked up.
//!
//! Checks, besides "never panics": when the list loads and every entry line is also
//! accepted by a plain reading of the documented format (comment from the first `#` or
//! `;`, whitespace trimmed, `ipnet`'s address or CIDR syntax), the list equals the one
//! built from those networks, and the matcher finds the first and last address of each
//! network that is not an IPv4-mapped IPv6 address.
//!
//! Seeds: the list files of `tests/fixtures/lists/` and `examples/lists/`.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use spoa_guard::rules::ip::{IpList, IpMatcher};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(list) = IpList::parse(Path::new("fuzz.txt"), &text) else {
        return;
    };
    let matcher = IpMatcher::new([list.clone()]);
    for addr in [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::BROADCAST),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::from(u128::MAX)),
        IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
    ] {
        if let Some(name) = matcher.lookup(addr) {
            assert_eq!(name, "fuzz");
        }
    }

    let Some(nets) = plain_reading(&text) else {
        return;
    };
    assert_eq!(list, IpList::from_nets("fuzz", nets.iter().copied()));
    for net in nets {
        for addr in [net.network(), net.broadcast()] {
            if let IpAddr::V6(v6) = addr {
                // A mapped address is looked up as IPv4; a wide IPv6 entry holding the
                // mapped block never matches IPv4 (ip.rs, "IPv4-mapped IPv6").
                if v6.to_ipv4_mapped().is_some() {
                    continue;
                }
            }
            assert_eq!(matcher.lookup(addr), Some("fuzz"), "{addr} of {net}");
        }
    }
});

/// The networks of every entry line, or `None` if one of them is not plain
/// `address[/prefix]` syntax.
fn plain_reading(text: &str) -> Option<Vec<IpNet>> {
    let mut nets = Vec::new();
    for (index, line) in text.split('\n').enumerate() {
        let line = match index {
            0 => line.strip_prefix('\u{feff}').unwrap_or(line),
            _ => line,
        };
        let entry = match line.find(['#', ';']) {
            Some(at) => &line[..at],
            None => line,
        };
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let net = match entry.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => IpNet::from(entry.parse::<IpAddr>().ok()?),
        };
        nets.push(net.trunc());
    }
    Some(nets)
}
