//! Tests of the compiled table (overlaps, AS 0, IPv4-mapped rows, merging files), of
//! block files, and of the real data set.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::test_support::*;
use super::*;
use crate::rules::MAX_ERRORS_PER_FILE;

#[test]
fn nested_ranges_most_specific_wins_in_any_order() {
    let rows = [
        "192.0.2.0\t192.0.2.255\t64496\n",
        "192.0.2.64\t192.0.2.127\t64497\n",
        "192.0.2.96\t192.0.2.103\t0\n",
        "192.0.2.100\t192.0.2.100\t64498\n",
    ];
    // Every order of the rows gives the same table.
    for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]] {
        let text: String = order.iter().map(|&i| rows[i]).collect();
        let db = parse("n.tsv", &text);
        assert_lookups(&db, SYNTHETIC_TSV.get(..14).unwrap());
        // 0-63 | 64-95 | 96-99 hole | 100 | 101-103 hole | 104-127 | 128-255
        assert_eq!(db.ranges(), 7);
    }
}

#[test]
fn not_routed_hole_shadows_wider_ranges_in_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let routed = dir.path().join("routed.csv");
    std::fs::write(&routed, "192.0.2.0,192.0.2.255,64496,Wide\n").unwrap();
    let holes = dir.path().join("holes.tsv");
    std::fs::write(&holes, "192.0.2.128\t192.0.2.255\t0\tNone\tNot routed\n").unwrap();
    for paths in [[&routed, &holes], [&holes, &routed]] {
        let db = AsnDb::load(&paths.map(|p| p.clone())).unwrap();
        assert_lookups(&db, &[("192.0.2.127", Some(64496)), ("192.0.2.128", None)]);
    }
    // An address covered by AS 0 only is the same as one not covered at all.
    let db = parse("z.tsv", "0.0.0.0\t255.255.255.255\t0\tNone\tNot routed\n");
    assert_eq!(db.lookup(ip("8.8.8.8")), None);
    assert!(!db.is_empty());
}

#[test]
fn several_files_merge_most_specific_first_then_file_order() {
    let db = load(&["synthetic.tsv", "synthetic.csv.gz", "ip2asn-v4-excerpt.tsv"]);
    assert_eq!(db.rows(), 11 + 6 + 30);
    assert_lookups(
        &db,
        &[
            // The CSV's /25 is narrower than the TSV's /24 ...
            ("192.0.2.0", Some(64504)),
            // ... but the TSV's /26 is narrower than the CSV's /25.
            ("192.0.2.64", Some(64497)),
            ("192.0.2.97", None),
            ("192.0.2.100", Some(64498)),
            ("192.0.2.200", Some(64505)),
            // The CSV's routed /26 inside the TSV's not-routed /24.
            ("198.51.100.1", Some(64506)),
            ("198.51.100.64", None),
            ("198.51.100.130", Some(64499)),
            ("203.0.113.7", Some(64507)),
            ("203.0.113.8", Some(64502)),
            ("2001:db8:a::1", Some(64508)),
            ("2001:db8:b::1", Some(64509)),
            ("2001:db8:c::1", Some(64500)),
            ("1.1.1.1", Some(7497)),
            ("8.8.8.8", Some(15169)),
        ],
    );
    // Equally wide ranges: the earlier file wins, whatever the formats.
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.tsv");
    std::fs::write(&a, "192.0.2.0\t192.0.2.255\t64510\tZZ\tA\n").unwrap();
    let b = dir.path().join("b.csv");
    std::fs::write(
        &b,
        "192.0.2.0,192.0.2.255,64511,B\n192.0.2.0,192.0.2.255,64509,B2\n",
    )
    .unwrap();
    let ab = AsnDb::load(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(ab.lookup(ip("192.0.2.1")), Some(64510));
    let ba = AsnDb::load(&[b, a]).unwrap();
    assert_eq!(ba.lookup(ip("192.0.2.1")), Some(64511));
    assert_eq!(ba.rows(), 3);
    assert_eq!(ba.ranges(), 1);
}

#[test]
fn ipv4_mapped_sources_and_rows() {
    let db = parse(
        "m.tsv",
        "192.0.2.0\t192.0.2.255\t64496\n\
         ::ffff:198.51.100.0\t::ffff:198.51.100.255\t64497\n\
         ::ffff:0:0\t::ffff:255.255.255.255\t0\n\
         ::\t::ffff:ffff:ffff\t64498\n\
         ::fffe:0:0\t::ffff:0:0\t64499\n",
    );
    assert_lookups(
        &db,
        &[
            ("::ffff:192.0.2.1", Some(64496)),
            ("192.0.2.1", Some(64496)),
            ("198.51.100.1", Some(64497)),
            ("::ffff:198.51.100.1", Some(64497)),
            // The whole mapped block as AS 0 is all of IPv4, not routed, and loses to
            // the narrower rows.
            ("203.0.113.1", None),
            // Rows reaching outside the mapped block stay IPv6: they never match IPv4.
            ("0.0.0.0", None),
            ("::1", Some(64498)),
            ("::fffe:0:1", Some(64499)),
        ],
    );
}

#[test]
fn errors_of_every_file_are_collected() {
    let missing = fixture("no-such-file.tsv");
    let paths = [
        fixture("invalid.tsv"),
        missing.clone(),
        fixture("invalid.csv"),
    ];
    let err = AsnDb::load(&paths).unwrap_err();
    assert_eq!(err.0.len(), 5 + 1 + 4);
    let missing_err = err.0.iter().find(|e| e.path == missing).unwrap();
    assert_eq!(missing_err.line, None);
    assert!(
        missing_err.message.starts_with("cannot read: "),
        "{missing_err}"
    );
}

#[test]
fn debug_shows_sizes_only() {
    let db = load(&["synthetic.tsv"]);
    let text = format!("{db:?}");
    assert!(
        text.starts_with("AsnDb { rows: 11, v4_segments: "),
        "{text}"
    );
}

// ---- Block files --------------------------------------------------------------------

fn block_errors(text: &str) -> Vec<String> {
    let caps = FileCaps::defaults("asn");
    let err = read_block_file(Path::new("asn-block.txt"), text.as_bytes(), &caps).unwrap_err();
    err.0.iter().map(ToString::to_string).collect()
}

#[test]
fn block_fixture_x4b_layout() {
    let block = AsnBlock::load(&[], Some(&fixture("asn-block.txt"))).unwrap();
    assert_eq!(
        block.iter().collect::<Vec<_>>(),
        [64496, 64497, 64498, 64499, 64500, 64511]
    );
    assert!(block.contains(64497));
    assert!(!block.contains(64501));
    assert_eq!(block.len(), 6);

    let x4b = AsnBlock::load(&[], Some(&fixture("x4bnet-datacenter-asn-excerpt.txt"))).unwrap();
    assert_eq!(x4b.len(), 16);
    for asn in [202448, 55286, 6698, 60253, 398787] {
        assert!(x4b.contains(asn), "{asn}");
    }
}

#[test]
fn block_inline_and_file_are_merged() {
    let block = AsnBlock::load(&[64511, 13335, 64496], Some(&fixture("asn-block.txt"))).unwrap();
    assert_eq!(block.len(), 7);
    assert!(block.contains(13335));
    let inline = AsnBlock::load(&[7, 7, 3], None).unwrap();
    assert_eq!(inline.iter().collect::<Vec<_>>(), [3, 7]);
    let none = AsnBlock::load(&[], None).unwrap();
    assert!(none.is_empty());
    assert!(!none.contains(0));
    assert_eq!(none, AsnBlock::default());
}

#[test]
fn block_bad_lines_are_reported_with_their_text() {
    assert_eq!(
        block_errors(
            "AS64496 # ok\n\
             AS3223 VOXILITY, RO\n\
             \n\
             AS-1\t# negative\n\
             ASN64497\n\
             64498 ; semicolons are not comments here\n\
             99999999999\n"
        ),
        [
            "asn-block.txt:2: invalid AS number \"AS3223 VOXILITY, RO\": expected one per \
             line, as AS64496 or 64496",
            "asn-block.txt:4: invalid AS number \"AS-1\": expected one per line, as AS64496 \
             or 64496",
            "asn-block.txt:5: invalid AS number \"ASN64497\": expected one per line, as \
             AS64496 or 64496",
            "asn-block.txt:6: invalid AS number \"64498 ; semicolons are not comments \
             here\": expected one per line, as AS64496 or 64496",
            "asn-block.txt:7: invalid AS number \"99999999999\": expected one per line, as \
             AS64496 or 64496",
        ]
    );
    let many = block_errors(&"bad\n".repeat(MAX_ERRORS_PER_FILE + 5));
    assert_eq!(many.len(), MAX_ERRORS_PER_FILE + 1);
    assert_eq!(
        many.last().unwrap(),
        "asn-block.txt: 5 more invalid lines not shown (only the first 100 are reported)"
    );
}

#[test]
fn block_file_errors_and_odd_bytes() {
    let missing = fixture("missing-block.txt");
    let err = AsnBlock::load(&[], Some(&missing)).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(
        err.0[0]
            .to_string()
            .contains("missing-block.txt: cannot read: "),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.txt");
    std::fs::write(&path, b"\xef\xbb\xbfAS64496 # caf\xe9\r\nAS6449\xff\n").unwrap();
    let err = AsnBlock::load(&[], Some(&path)).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].line, Some(2));
    assert!(err.0[0].message.contains("\"AS6449\u{fffd}\""), "{err}");
}

// ---- Real data ----------------------------------------------------------------------

/// The `asn/` directory of the shared data set.
fn shared_data() -> Option<PathBuf> {
    crate::rules::shared_data("asn").map(|dir| dir.join("asn"))
}

#[test]
fn real_tables_load_without_errors() {
    let Some(data) = shared_data() else {
        eprintln!("skipped: no shared data (set SPOA_GUARD_DATA to a directory with asn/)");
        return;
    };
    let load = |names: &[&str]| {
        let paths: Vec<PathBuf> = names.iter().map(|n| data.join(n)).collect();
        match AsnDb::load(&paths) {
            Ok(db) => db,
            Err(err) => panic!("{names:?} failed to load:\n{err}"),
        }
    };

    let sample = load(&["ip2asn-v4-sample.tsv"]);
    assert_eq!(sample.rows(), 1_427);
    assert_lookups(
        &sample,
        &[("1.1.1.1", Some(7497)), ("8.8.8.8", Some(15169))],
    );

    let iptoasn6 = load(&["ip2asn-v6.tsv.gz"]);
    assert_eq!(iptoasn6.rows(), 167_928);
    assert_lookups(
        &iptoasn6,
        &[
            ("::", None),
            ("::1", None),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("200:1900:5203::1", Some(3356)),
            // Nested, same AS as the enclosing range.
            ("2804:204:18a::1", Some(28186)),
            // Nested, a different AS than the enclosing AS28270 range.
            ("2804:880:1001::1", Some(28270)),
            ("2804:880:1002::1", Some(28220)),
            // An AS 0 hole inside an AS28613 range.
            ("2804:490:8801::1", Some(28613)),
            ("2804:490:8880::1", None),
            ("2001:4860:4860::8888", Some(15169)),
        ],
    );

    let ipl = load(&[
        "ip-location-db-asn-ipv4.csv.gz",
        "ip-location-db-asn-ipv6.csv.gz",
    ]);
    assert_eq!(ipl.rows(), 411_961 + 103_197);
    assert_lookups(
        &ipl,
        &[
            ("1.0.0.1", Some(13335)),
            ("1.0.64.1", Some(18144)),
            ("8.8.8.8", Some(15169)),
            ("::ffff:8.8.8.8", Some(15169)),
            ("10.0.0.1", None),
            ("2001:200:1ba::1", Some(24047)),
            ("2001:4860:4860::8888", Some(15169)),
            ("::1", None),
        ],
    );

    let block = AsnBlock::load(&[], Some(&data.join("x4bnet-datacenter-asn.txt"))).unwrap();
    // 906 lines, 892 distinct ASNs (14 are listed twice).
    assert_eq!(block.len(), 892);
    assert!(block.contains(3223) && block.contains(55286));
}

// ---- Properties ---------------------------------------------------------------------

/// One generated row: inclusive range and AS number (0 = not routed).
#[derive(Debug, Clone)]
struct Row {
    start: IpAddr,
    end: IpAddr,
    asn: u32,
}

impl Row {
    fn new(a: IpAddr, b: IpAddr, asn: u32) -> Row {
        let (start, end) = if a <= b { (a, b) } else { (b, a) };
        Row { start, end, asn }
    }

    fn tsv(&self) -> String {
        format!(
            "{}\t{}\t{}\tZZ\tEXAMPLE, Inc.\n",
            self.start, self.end, self.asn
        )
    }

    fn csv(&self) -> String {
        format!(
            "{},{},AS{},\"Example, Inc.\"\n",
            self.start, self.end, self.asn
        )
    }

    /// `(is IPv4, start, end)` by the documented rule: mapped rows are IPv4.
    fn canonical(&self) -> (bool, u128, u128) {
        match (self.start, self.end) {
            (IpAddr::V4(s), IpAddr::V4(e)) => {
                (true, u128::from(u32::from(s)), u128::from(u32::from(e)))
            }
            (IpAddr::V6(s), IpAddr::V6(e)) => match (s.to_ipv4_mapped(), e.to_ipv4_mapped()) {
                (Some(s), Some(e)) => (true, u128::from(u32::from(s)), u128::from(u32::from(e))),
                _ => (false, u128::from(s), u128::from(e)),
            },
            _ => unreachable!(),
        }
    }
}

fn canonical_addr(addr: IpAddr) -> (bool, u128) {
    match addr.to_canonical() {
        IpAddr::V4(v4) => (true, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (false, u128::from(v6)),
    }
}

/// The narrowest covering row's AS (earliest among equals), `None` for AS 0 or none.
fn naive(rows: &[Row], addr: IpAddr) -> Option<u32> {
    let (v4, a) = canonical_addr(addr);
    rows.iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let (rv4, s, e) = r.canonical();
            (rv4 == v4 && s <= a && a <= e).then_some((e - s, i, r.asn))
        })
        .min()
        .and_then(|(_, _, asn)| (asn != 0).then_some(asn))
}

fn asn() -> impl Strategy<Value = u32> {
    prop_oneof![1 => Just(0u32), 4 => 64496u32..64500]
}

/// Rows crowded into a few small areas so they nest and overlap, plus a few wide ones.
fn row() -> impl Strategy<Value = Row> {
    let v4 = |x: u8| IpAddr::V4(Ipv4Addr::new(192, 0, 2, x));
    let mapped = |x: u8| IpAddr::V6(Ipv4Addr::new(192, 0, 2, x).to_ipv6_mapped());
    let v6 = doc_v6;
    prop_oneof![
        5 => (0u8..48, 0u8..48, asn()).prop_map(move |(a, b, n)| Row::new(v4(a), v4(b), n)),
        2 => (0u8..48, 0u8..48, asn())
            .prop_map(move |(a, b, n)| Row::new(mapped(a), mapped(b), n)),
        3 => (0u16..48, 0u16..48, asn()).prop_map(move |(a, b, n)| Row::new(v6(a), v6(b), n)),
        1 => asn().prop_map(|n| Row::new(ip("0.0.0.0"), ip("255.255.255.255"), n)),
        1 => asn().prop_map(|n| Row::new(ip("::"), IpAddr::V6(Ipv6Addr::from(u128::MAX)), n)),
    ]
}

/// `2001:db8::x`.
fn doc_v6(x: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, x))
}

fn probes(rows: &[Row]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for x in 0u8..50 {
        out.push(IpAddr::V4(Ipv4Addr::new(192, 0, 2, x)));
        out.push(IpAddr::V6(Ipv4Addr::new(192, 0, 2, x).to_ipv6_mapped()));
        out.push(doc_v6(u16::from(x)));
    }
    for r in rows {
        out.extend([r.start, r.end]);
    }
    out.extend([ip("0.0.0.0"), ip("255.255.255.255"), ip("::"), ip("::1")]);
    out
}

proptest! {
    #[test]
    fn lookup_matches_naive_narrowest_range(
        files in proptest::collection::vec(
            (proptest::collection::vec(row(), 1..8), any::<bool>()), 1..4),
    ) {
        let mut tables = Tables::default();
        let mut all = Vec::new();
        for (i, (rows, csv)) in files.iter().enumerate() {
            let text: String =
                rows.iter().map(|r| if *csv { r.csv() } else { r.tsv() }).collect();
            let name = format!("file{i}.{}", if *csv { "csv" } else { "tsv" });
            let caps = FileCaps::defaults("asn");
            let errs = tables.add_source(Path::new(&name), text.as_bytes(), &caps);
            prop_assert!(errs.is_empty(), "{:?}", errs);
            all.extend(rows.iter().cloned());
        }
        let db = tables.build();
        prop_assert_eq!(db.rows(), all.len());
        for addr in probes(&all) {
            prop_assert_eq!(db.lookup(addr), naive(&all, addr), "addr {}", addr);
        }
    }

    #[test]
    fn block_files_never_panic(text in "[0-9ASas#\t \r\n;x-]{0,200}") {
        let caps = FileCaps::defaults("asn");
        let _ = read_block_file(Path::new("fuzz.txt"), text.as_bytes(), &caps);
    }
}
