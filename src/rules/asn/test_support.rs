//! Fixtures, tables and assertions shared by the tests of `asn` and `formats`.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::AsnDb;

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(super) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/asn")
        .join(name)
}

pub(super) fn load(names: &[&str]) -> AsnDb {
    let paths: Vec<PathBuf> = names.iter().map(|n| fixture(n)).collect();
    match AsnDb::load(&paths) {
        Ok(db) => db,
        Err(err) => panic!("{names:?} failed to load:\n{err}"),
    }
}

pub(super) fn parse(name: &str, text: &str) -> AsnDb {
    match AsnDb::parse(Path::new(name), text.as_bytes()) {
        Ok(db) => db,
        Err(err) => panic!("{name} failed to parse:\n{err}"),
    }
}

/// The `file:line: message` lines `check` would print for `bytes` named `name`.
pub(super) fn errors(name: &str, bytes: &[u8]) -> Vec<String> {
    let err = AsnDb::parse(Path::new(name), bytes).unwrap_err();
    err.0.iter().map(ToString::to_string).collect()
}

pub(super) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Asserts `db.lookup(addr) == want` for every `(addr, want)`.
pub(super) fn assert_lookups(db: &AsnDb, cases: &[(&str, Option<u32>)]) {
    for &(addr, want) in cases {
        assert_eq!(db.lookup(ip(addr)), want, "{addr}");
    }
}

/// What `synthetic.tsv` promises (see the fixture README).
pub(super) const SYNTHETIC_TSV: &[(&str, Option<u32>)] = &[
    ("192.0.1.255", None),
    ("192.0.2.0", Some(64496)),
    ("192.0.2.63", Some(64496)),
    ("192.0.2.64", Some(64497)),
    ("192.0.2.95", Some(64497)),
    // AS 0 inside 64497 inside 64496: not routed.
    ("192.0.2.96", None),
    ("192.0.2.99", None),
    // A single address routed again inside the hole.
    ("192.0.2.100", Some(64498)),
    ("192.0.2.101", None),
    ("192.0.2.103", None),
    ("192.0.2.104", Some(64497)),
    ("192.0.2.127", Some(64497)),
    ("192.0.2.128", Some(64496)),
    ("192.0.2.255", Some(64496)),
    ("192.0.3.0", None),
    // A routed range inside a not-routed one.
    ("198.51.100.0", None),
    ("198.51.100.127", None),
    ("198.51.100.128", Some(64499)),
    ("198.51.100.191", Some(64499)),
    ("198.51.100.192", None),
    // A row written as IPv4-mapped IPv6 is IPv4; a narrower row overlaps its end.
    ("203.0.113.0", Some(64502)),
    ("203.0.113.99", Some(64502)),
    ("203.0.113.100", Some(64503)),
    ("203.0.113.127", Some(64503)),
    ("203.0.113.200", Some(64503)),
    ("203.0.113.201", None),
    ("::ffff:203.0.113.1", Some(64502)),
    ("::ffff:192.0.2.100", Some(64498)),
    ("::ffff:192.0.2.97", None),
    // IPv4-compatible (deprecated) is plain IPv6.
    ("::203.0.113.1", None),
    ("2001:db8::", Some(64500)),
    ("2001:db8:0:ffff::1", Some(64500)),
    ("2001:db8:1::1", Some(64501)),
    ("2001:db8:1:2::", None),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", None),
    ("2001:db8:1:3::", Some(64501)),
    ("2001:db8:2::", Some(64500)),
    ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Some(64500)),
    ("2001:db9::", None),
    ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
];

pub(super) const SYNTHETIC_CSV: &[(&str, Option<u32>)] = &[
    ("192.0.2.0", Some(64504)),
    ("192.0.2.127", Some(64504)),
    ("192.0.2.128", Some(64505)),
    ("192.0.2.255", Some(64505)),
    ("198.51.100.0", Some(64506)),
    ("198.51.100.64", None),
    ("203.0.113.6", None),
    ("203.0.113.7", Some(64507)),
    ("::ffff:203.0.113.7", Some(64507)),
    ("203.0.113.8", None),
    ("2001:db8:a::", Some(64508)),
    ("2001:db8:a:ffff:ffff:ffff:ffff:ffff", Some(64508)),
    ("2001:db8:b::ffff", Some(64509)),
    ("2001:db8:b::1:0", None),
];
