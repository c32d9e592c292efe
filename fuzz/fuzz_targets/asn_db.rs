//! Arbitrary bytes as an `[asn] databases` file through [`AsnDb::parse`]: iptoasn TSV,
//! ip-location-db CSV and MaxMind DB, each plain or gzip-compressed. The format is
//! detected by content; the file name is only a hint (it words errors and makes a
//! `.mmdb.gz` stream a MaxMind DB), so the first input byte picks one of [`NAMES`] and
//! the rest is the file.
//!
//! Checks: never panics, and a table that loads answers lookups (including IPv4-mapped
//! addresses, which must answer as their IPv4 address).
//!
//! Seeds: `tests/fixtures/asn/`, `examples/data/`, and a small MaxMind DB (`fuzz/seeds/`),
//! each behind the byte that names it after its own extension.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use spoa_guard::rules::asn::AsnDb;

/// The file names the first byte chooses from (modulo their number).
const NAMES: [&str; 7] = [
    "asn",
    "asn.tsv",
    "asn.csv",
    "asn.mmdb",
    "asn.tsv.gz",
    "asn.csv.gz",
    "asn.mmdb.gz",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let name = NAMES[usize::from(pick) % NAMES.len()];
    let Ok(db) = AsnDb::parse(Path::new(name), bytes) else {
        return;
    };
    assert!(db.rows() > 0, "a table with no rows loaded");
    for v4 in [
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(1, 1, 1, 1),
        Ipv4Addr::new(192, 0, 2, 1),
        Ipv4Addr::BROADCAST,
    ] {
        let asn = db.lookup(IpAddr::V4(v4));
        assert_eq!(db.lookup(IpAddr::V6(v4.to_ipv6_mapped())), asn);
    }
    for v6 in [Ipv6Addr::UNSPECIFIED, Ipv6Addr::from(u128::MAX)] {
        let _ = db.lookup(IpAddr::V6(v6));
    }
});
