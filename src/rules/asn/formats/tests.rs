//! Tests of the database formats: text tables plain and compressed, format detection,
//! errors, and MaxMind DB files.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use proptest::prelude::*;

use super::*;
use crate::rules::asn::test_support::*;
use crate::rules::mmdb::{MARKER as MMDB_MARKER, TAR_MESSAGE};
use crate::rules::MAX_ERRORS_PER_FILE;

#[test]
fn iptoasn_tsv_plain_and_gzip() {
    for name in ["synthetic.tsv", "synthetic.tsv.gz"] {
        let db = load(&[name]);
        assert_eq!(db.rows(), 11, "{name}");
        assert!(!db.is_empty());
        assert_lookups(&db, SYNTHETIC_TSV);
    }
}

#[test]
fn ip_location_db_csv_plain_and_gzip() {
    for name in ["synthetic.csv", "synthetic.csv.gz"] {
        let db = load(&[name]);
        assert_eq!((db.rows(), db.ranges()), (6, 6), "{name}");
        assert_lookups(&db, SYNTHETIC_CSV);
    }
}

#[test]
fn real_iptoasn_excerpt() {
    let db = load(&["ip2asn-v4-excerpt.tsv"]);
    assert_eq!(db.rows(), 30);
    assert_lookups(
        &db,
        &[
            ("1.1.1.0", Some(13335)),
            ("1.1.1.1", Some(7497)),
            ("1.1.1.2", Some(13335)),
            ("1.1.1.255", Some(13335)),
            ("1.1.2.0", None),
            ("8.8.8.8", Some(15169)),
            ("::ffff:8.8.4.4", Some(15169)),
            ("34.112.0.1", Some(19527)),
            ("23.228.128.1", Some(16591)),
            ("9.9.9.9", None),
        ],
    );
}

#[test]
fn gzip_is_detected_by_content_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read(fixture("synthetic.csv")).unwrap();
    // Compressed, named as plain text; and plain, named as compressed.
    let compressed = dir.path().join("table.csv");
    std::fs::write(&compressed, gzip(&text)).unwrap();
    let plain = dir.path().join("table.csv.gz");
    std::fs::write(&plain, &text).unwrap();
    for path in [compressed, plain] {
        let db = AsnDb::load(&[path]).unwrap();
        assert_lookups(&db, SYNTHETIC_CSV);
    }
    // Concatenated gzip members (what `cat a.gz b.gz` gives) are one stream.
    let mut two = gzip(b"192.0.2.0,192.0.2.255,64496,A\n");
    two.extend(gzip(b"198.51.100.0,198.51.100.255,64497,B\n"));
    let db = AsnDb::parse(Path::new("two.gz"), &two).unwrap();
    assert_lookups(
        &db,
        &[("192.0.2.1", Some(64496)), ("198.51.100.1", Some(64497))],
    );
}

#[test]
fn format_is_sniffed_from_the_first_row_not_the_name() {
    // A TSV named .csv and a CSV named .tsv load by content.
    let db = parse("wrong.csv", "192.0.2.0\t192.0.2.255\t64496\tZZ\tA, B\n");
    assert_eq!(db.lookup(ip("192.0.2.9")), Some(64496));
    let db = parse("wrong.tsv", "192.0.2.0,192.0.2.255,64496,\"A\tB\"\n");
    assert_eq!(db.lookup(ip("192.0.2.9")), Some(64496));
    // After the first row, the layout is fixed.
    let errs = errors(
        "t.tsv",
        b"192.0.2.0\t192.0.2.255\t1\n198.51.100.0,198.51.100.255,2,X\n",
    );
    assert_eq!(
        errs,
        ["t.tsv:2: expected at least 3 fields (iptoasn TSV: \
             range_start<TAB>range_end<TAB>AS_number<TAB>country<TAB>description), \
             found 1 in \"198.51.100.0,198.51.100.255,2,X\""]
    );
}

#[test]
fn csv_quoting() {
    let db = parse(
        "q.csv",
        "1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n\
         1.0.64.0,1.0.127.255,18144,\"Enecom,Inc.\"\n\
         \"192.0.2.0\",\"192.0.2.255\",\"64496\",\"Fully \"\"quoted\"\", row\"\n\
         198.51.100.0,198.51.100.255,64497,Unquoted \"odd\" organization, with comma\n\
         203.0.113.0,203.0.113.255,64498,\"Unterminated organization\n\
         2001:db8::,2001:db8::ffff,64499,\n\
         2001:db8:1::,2001:db8:1::ffff,AS64500\n",
    );
    assert_lookups(
        &db,
        &[
            ("1.0.0.1", Some(13335)),
            ("1.0.100.1", Some(18144)),
            ("192.0.2.1", Some(64496)),
            ("198.51.100.1", Some(64497)),
            ("203.0.113.1", Some(64498)),
            ("2001:db8::1", Some(64499)),
            ("2001:db8:1::1", Some(64500)),
        ],
    );
    assert_eq!(
        csv_field(b"\"a\"\"b\",c").unwrap(),
        (&b"a\"\"b"[..], Some(&b"c"[..]))
    );
    assert_eq!(csv_field(b"\"\"").unwrap(), (&b""[..], None));
    assert_eq!(csv_field(b"").unwrap(), (&b""[..], None));
    assert_eq!(csv_field(b"a,").unwrap(), (&b"a"[..], Some(&b""[..])));
    assert!(csv_field(b"\"a\"\"").is_err());
}

#[test]
fn comments_blank_lines_crlf_bom_and_spaces() {
    let db = parse(
        "c.tsv",
        "\u{feff}# a comment before the first row\r\n\
         \r\n\
         \x20\x20# indented comment\r\n\
         192.0.2.0\t192.0.2.255\t64496\tZZ\tA\r\n\
         \t \r\n\
         198.51.100.0 \t 198.51.100.255 \t AS64497\tZZ\tB\r\n",
    );
    assert_eq!(db.rows(), 2);
    assert_lookups(
        &db,
        &[("192.0.2.7", Some(64496)), ("198.51.100.7", Some(64497))],
    );
}

#[test]
fn invalid_tsv_fixture_reports_every_bad_line_exactly() {
    let path = fixture("invalid.tsv");
    let err = AsnDb::load(std::slice::from_ref(&path)).unwrap_err();
    let p = path.display();
    let want = [
        format!(
            "{p}:2: invalid range start \"192.0.2.\": expected an IPv4 or IPv6 address \
             such as 192.0.2.0 or 2001:db8::"
        ),
        format!("{p}:3: range start 198.51.100.9 is after range end 198.51.100.1"),
        format!(
            "{p}:4: range 198.51.100.0 - 2001:db8:: mixes IPv4 and IPv6: both ends must \
             be of one family"
        ),
        format!(
            "{p}:5: invalid AS number \"AS-X\": expected a number from 0 to 4294967295 \
             (or AS64496)"
        ),
        format!(
            "{p}:6: expected at least 3 fields (iptoasn TSV: \
             range_start<TAB>range_end<TAB>AS_number<TAB>country<TAB>description), \
             found 2 in \"203.0.113.0\\t203.0.113.255\""
        ),
    ];
    let got: Vec<String> = err.0.iter().map(ToString::to_string).collect();
    assert_eq!(got, want);
    assert!(err.0.iter().all(|e| e.path == path));
}

#[test]
fn invalid_csv_fixture_reports_every_bad_line_exactly() {
    let path = fixture("invalid.csv");
    let err = AsnDb::load(std::slice::from_ref(&path)).unwrap_err();
    let p = path.display();
    let want = [
        format!(
            "{p}:2: unterminated quoted field in \
             \"\\\"192.0.2.0,192.0.2.255,64496,Unterminated quote\""
        ),
        format!(
            "{p}:3: expected at least 3 fields (ip-location-db CSV: \
             range_start,range_end,asn,organization), found 1 in \
             \"192.0.2.0;192.0.2.255;64496;Wrong separator\""
        ),
        format!(
            "{p}:4: text after the closing quote of a quoted field in \
             \"\\\"192.0.2.1\\\"x,192.0.2.255,64496,Text after the closing quote\""
        ),
        format!(
            "{p}:6: invalid AS number \"4294967296\": expected a number from 0 to \
             4294967295 (or AS64496)"
        ),
    ];
    let got: Vec<String> = err.0.iter().map(ToString::to_string).collect();
    assert_eq!(got, want);
}

#[test]
fn error_count_is_capped_per_file() {
    let text = "192.0.2.0\t192.0.2.1\t1\n".to_string() + &"x\ty\tz\n".repeat(250);
    let errs = errors("many.tsv", text.as_bytes());
    assert_eq!(errs.len(), MAX_ERRORS_PER_FILE + 1);
    assert_eq!(
        errs.last().unwrap(),
        "many.tsv: 150 more invalid lines not shown (only the first 100 are reported)"
    );
    assert!(
        errs[0].starts_with("many.tsv:2: invalid range start \"x\""),
        "{}",
        errs[0]
    );
}

#[test]
fn unknown_formats_and_empty_files() {
    assert_eq!(
        errors("a.txt", b"# header\n192.0.2.0/24 64496\n"),
        [
            "a.txt:2: unknown IP-to-ASN database format: expected iptoasn TSV: \
             range_start<TAB>range_end<TAB>AS_number<TAB>country<TAB>description, \
             ip-location-db CSV: range_start,range_end,asn,organization or a MaxMind DB \
             file; the first row is \"192.0.2.0/24 64496\""
        ]
    );
    // Spamhaus ASN-DROP (NDJSON) has commas, so it reads as a (broken) CSV.
    let errs = errors("asndrop.json", b"{\"asn\":932,\"rir\":\"arin\"}\n");
    assert_eq!(
        errs,
        [
            "asndrop.json:1: text after the closing quote of a quoted field in \
             \"{\\\"asn\\\":932,\\\"rir\\\":\\\"arin\\\"}\""
        ]
    );
    let errs = errors("c.tsv", b"\x00\x01\x02,\t\n");
    assert!(
        errs[0].starts_with(
            "c.tsv:1: unknown IP-to-ASN database format (the file name suggests iptoasn TSV"
        ),
        "{errs:?}"
    );
    for (name, bytes) in [
        ("empty.tsv", &b""[..]),
        ("comments.csv", &b"# nothing\n\n"[..]),
    ] {
        assert_eq!(
            errors(name, bytes),
            [format!(
                "{name}: no IP ranges found: the database is empty (or holds only comments)"
            )]
        );
    }
    assert_eq!(
        errors("empty.gz", &gzip(b"")),
        ["empty.gz: no IP ranges found: the database is empty (or holds only comments)"]
    );
    // Binary inside gzip that is not a MaxMind DB.
    let errs = errors("bin.gz", &gzip(b"\x00\x01\x02\x03 not a database"));
    assert!(
        errs[0].ends_with("or a MaxMind DB file (binary data)"),
        "{errs:?}"
    );
    // Broken gzip: a file-level error, after the rows read so far.
    let mut broken = gzip(&b"192.0.2.0\t192.0.2.255\t64496\n".repeat(2000));
    broken.truncate(broken.len() / 2);
    let errs = errors("broken.tsv.gz", &broken);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("broken.tsv.gz: "), "{errs:?}");
    // No paths: an empty table, every lookup misses.
    let db = AsnDb::load(&[]).unwrap();
    assert!(db.is_empty());
    assert_eq!((db.ranges(), db.rows()), (0, 0));
    assert_eq!(db.lookup(ip("192.0.2.1")), None);
    assert_eq!(AsnDb::default().lookup(ip("::1")), None);
}

// ---- MaxMind DB ---------------------------------------------------------------------

mod mmdb {
    use super::*;
    use maxminddb_writer::metadata::IpVersion;
    use maxminddb_writer::paths::IpAddrWithMask;
    use maxminddb_writer::Database;
    use serde::Serialize;

    /// A GeoLite2-ASN record.
    #[derive(Serialize)]
    struct AsnRecord {
        autonomous_system_number: u32,
        autonomous_system_organization: &'static str,
    }

    /// A record without an AS number (a country database, say).
    #[derive(Serialize)]
    struct OtherRecord {
        country: &'static str,
    }

    /// A writer for an IPv6 (`v6`) or IPv4 database, with GeoLite2-ASN metadata.
    fn database(v6: bool) -> Database {
        let mut db = Database::default();
        db.metadata.ip_version = if v6 { IpVersion::V6 } else { IpVersion::V4 };
        db.metadata.binary_format_major_version = 2;
        db.metadata.database_type = "GeoLite2-ASN".to_string();
        db.metadata.languages = vec!["en".to_string()];
        db.metadata.build_epoch = 1_700_000_000;
        db
    }

    /// `net` as a tree path; in an IPv6 database IPv4 networks live under `::/96`, as
    /// in MaxMind's own databases.
    fn path(net: &str, v6: bool) -> IpAddrWithMask {
        match net.parse::<IpNet>().unwrap() {
            IpNet::V4(n) if v6 => IpAddrWithMask::new(
                IpAddr::V6(n.network().to_ipv6_compatible()),
                n.prefix_len() + 96,
            ),
            n => IpAddrWithMask::new(n.network(), n.prefix_len()),
        }
    }

    /// A database holding `nets` (wider networks must come before the ones nested in
    /// them: the writer splits a network to insert a narrower one).
    fn write(v6: bool, nets: &[(&str, Option<u32>)]) -> Vec<u8> {
        let mut db = database(v6);
        for &(net, asn) in nets {
            let data = match asn {
                Some(asn) => db.insert_value(AsnRecord {
                    autonomous_system_number: asn,
                    autonomous_system_organization: "Example Networks, Inc.",
                }),
                None => db.insert_value(OtherRecord { country: "ZZ" }),
            }
            .unwrap();
            db.insert_node(path(net, v6), data);
        }
        db.write_to(Vec::new()).unwrap()
    }

    /// Networks for both database kinds: a nested network and holes.
    const NETS: &[(&str, Option<u32>)] = &[
        ("192.0.2.0/24", Some(64496)),
        ("192.0.2.64/26", Some(64497)),
        ("192.0.2.100/32", Some(64498)),
        ("198.51.100.0/25", None),
        ("198.51.100.128/25", Some(64499)),
        ("203.0.113.7/32", Some(64500)),
    ];

    const V4_CASES: &[(&str, Option<u32>)] = &[
        ("192.0.2.0", Some(64496)),
        ("192.0.2.64", Some(64497)),
        ("192.0.2.99", Some(64497)),
        ("192.0.2.100", Some(64498)),
        ("192.0.2.101", Some(64497)),
        ("192.0.2.128", Some(64496)),
        ("198.51.100.1", None),
        ("198.51.100.128", Some(64499)),
        ("::ffff:198.51.100.128", Some(64499)),
        ("203.0.113.7", Some(64500)),
        ("203.0.113.8", None),
        ("8.8.8.8", None),
    ];

    #[test]
    fn ipv4_database() {
        let bytes = write(false, NETS);
        // The content decides, whatever the name.
        for name in ["GeoLite2-ASN.mmdb", "asn.dat", "asn.csv"] {
            let db = AsnDb::parse(Path::new(name), &bytes).unwrap();
            assert_lookups(&db, V4_CASES);
            assert_eq!(db.lookup(ip("2001:db8::1")), None);
        }
    }

    #[test]
    fn ipv6_database_with_ipv4_subtree() {
        let mut nets = NETS.to_vec();
        nets.extend([
            ("2001:db8::/32", Some(64501)),
            ("2001:db8:1::/48", Some(64502)),
            // A network inside the mapped block is IPv4.
            ("::ffff:198.51.100.0/121", Some(64503)),
        ]);
        let bytes = write(true, &nets);
        let db = AsnDb::parse(Path::new("asn.mmdb"), &bytes).unwrap();
        assert_lookups(&db, V4_CASES.get(..5).unwrap());
        assert_lookups(
            &db,
            &[
                ("198.51.100.1", Some(64503)),
                ("::ffff:198.51.100.127", Some(64503)),
                ("2001:db8::1", Some(64501)),
                ("2001:db8:1::1", Some(64502)),
                ("2001:db8:2::1", Some(64501)),
                ("2001:db9::1", None),
                // IPv4 lives under ::/96 inside the file, but that is not an IPv6
                // address anyone is looked up by.
                ("::192.0.2.1", None),
            ],
        );
    }

    #[test]
    fn compressed_and_merged_with_text() {
        let bytes = write(true, NETS);
        let dir = tempfile::tempdir().unwrap();
        let mmdb = dir.path().join("GeoLite2-ASN.mmdb.gz");
        std::fs::write(&mmdb, gzip(&bytes)).unwrap();
        // Also without the hint: binary content inside the gzip stream.
        let unnamed = dir.path().join("asn.gz");
        std::fs::write(&unnamed, gzip(&bytes)).unwrap();
        for path in [&mmdb, &unnamed] {
            let db = AsnDb::load(std::slice::from_ref(path)).unwrap();
            assert_lookups(&db, V4_CASES);
        }
        // Merged with a text table: most specific wins across formats. A MaxMind DB
        // stores disjoint networks, so the /24 with a /26 inside comes out as 0/26,
        // the pieces of 64/26 and 128/25: those are the widths that compete.
        let db = AsnDb::load(&[mmdb, fixture("synthetic.csv")]).unwrap();
        assert_lookups(
            &db,
            &[
                // .0/26 of the database beats the CSV's .0/25.
                ("192.0.2.0", Some(64496)),
                ("192.0.2.64", Some(64497)),
                ("192.0.2.100", Some(64498)),
                // .128/25 in both: the earlier file wins.
                ("192.0.2.200", Some(64496)),
                // The database's record without an AS number says nothing.
                ("198.51.100.1", Some(64506)),
                ("198.51.100.128", Some(64499)),
                ("2001:db8:a::1", Some(64508)),
            ],
        );
    }

    #[test]
    fn records_without_asn_are_skipped_and_a_non_asn_database_is_an_error() {
        let db = AsnDb::parse(Path::new("a.mmdb"), &write(false, NETS)).unwrap();
        // Rows are the networks the tree stores: the /24 around the /26 around the
        // /32 is stored as 9 disjoint networks (0/26; 64/27, 96/30, 100/32, 101/32,
        // 102/31, 104/29, 112/28; 128/25), then 198.51.100.128/25 and 203.0.113.7/32.
        // 198.51.100.0/25 has a record without an AS number and is skipped.
        assert_eq!(db.rows(), 9 + 2);
        let other = write(false, &[("192.0.2.0/24", None), ("198.51.100.0/24", None)]);
        assert_eq!(
            errors("GeoLite2-Country.mmdb", &other),
            [
                "GeoLite2-Country.mmdb: not an IP-to-ASN database: no record has \
                 autonomous_system_number (database_type \"GeoLite2-ASN\")"
            ]
        );
        // A database without any network.
        let empty = write(false, &[]);
        let errs = errors("empty.mmdb", &empty);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("empty.mmdb: "), "{errs:?}");
    }

    #[test]
    fn networks_count_against_max_entries() {
        // 11 networks with an AS number (see above): 11 load, 10 do not.
        let bytes = write(false, NETS);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("GeoLite2-ASN.mmdb");
        std::fs::write(&path, &bytes).unwrap();
        let caps = |entries| FileCaps::new("asn", 1 << 20, 1024, entries);
        let db = AsnDb::load_capped(std::slice::from_ref(&path), &caps(11)).unwrap();
        assert_eq!(db.rows(), 11);
        let err = AsnDb::load_capped(std::slice::from_ref(&path), &caps(10)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: more than 10 entries (asn.max_entries)", path.display())
        );
    }

    #[test]
    fn wrongly_typed_asn_is_an_error() {
        #[derive(Serialize)]
        struct Stringly {
            autonomous_system_number: &'static str,
        }
        let mut db = database(false);
        let data = db
            .insert_value(Stringly {
                autonomous_system_number: "AS64496",
            })
            .unwrap();
        db.insert_node(path("192.0.2.0/24", false), data);
        let bytes = db.write_to(Vec::new()).unwrap();
        let errs = errors("s.mmdb", &bytes);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with(
                "s.mmdb: invalid MaxMind DB: record of 192.0.2.0/24: autonomous_system_number: "
            ),
            "{errs:?}"
        );
    }

    #[test]
    fn corrupt_or_misnamed_files() {
        let errs = errors("text.mmdb", b"192.0.2.0,192.0.2.255,64496,A\n");
        assert_eq!(
            errs,
            [
                "text.mmdb: not a MaxMind DB: no metadata marker in the last 128 KiB \
                 (truncated or not an .mmdb file)"
            ]
        );
        // Truncated: the marker survives, the tree does not.
        let bytes = write(false, NETS);
        let mut cut = bytes.get(..3).unwrap().to_vec();
        cut.extend(bytes.get(bytes.len() - 200..).unwrap());
        let errs = errors("cut.mmdb", &cut);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("cut.mmdb: invalid MaxMind DB: "),
            "{errs:?}"
        );
        // MaxMind ships tar.gz archives; a tar header is recognised.
        let mut tar = vec![0u8; 1024];
        tar.splice(..20, b"GeoLite2-ASN_2026/ab".iter().copied());
        tar.splice(257..263, b"ustar\0".iter().copied());
        tar.extend(&bytes);
        for bytes in [gzip(&tar), tar] {
            assert_eq!(
                errors("GeoLite2-ASN.tar.gz", &bytes),
                [format!("GeoLite2-ASN.tar.gz: {TAR_MESSAGE}")]
            );
        }
    }
}

proptest! {
    #[test]
    fn text_parsers_never_panic(
        text in ".{0,300}",
        name in prop_oneof![Just("f.tsv"), Just("f.csv"), Just("f"), Just("f.mmdb")],
    ) {
        let _ = AsnDb::parse(Path::new(name), text.as_bytes());
    }

    #[test]
    fn text_parsers_never_panic_on_near_misses(
        text in "[0-9a-fA-F:.,\t\" #ASas\r\n-]{0,400}",
        gz in any::<bool>(),
    ) {
        let bytes = if gz { gzip(text.as_bytes()) } else { text.into_bytes() };
        if let Err(errs) = AsnDb::parse(Path::new("fuzz.tsv"), &bytes) {
            prop_assert!(!errs.0.is_empty() && errs.0.len() <= MAX_ERRORS_PER_FILE + 2);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        prefix in prop_oneof![Just(&b""[..]), Just(&GZIP_MAGIC[..])],
        marker in any::<bool>(),
    ) {
        let mut data = prefix.to_vec();
        data.extend(&bytes);
        if marker {
            data.extend(MMDB_MARKER);
            data.extend(bytes.iter().take(40));
        }
        let _ = AsnDb::parse(Path::new("fuzz"), &data);
    }
}
