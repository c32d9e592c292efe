//! Tests of the caps: the readers on their own, then each kind of rule file over each
//! cap (a gzip bomb among them), and a reload refused by one.

use super::*;

fn caps(file: u64, line: u64) -> FileCaps {
    FileCaps::new("lists", file, line, 10)
}

/// Every line of `text` read through `caps`, then the error that ended it, if any.
fn read_lines(caps: &FileCaps, text: &[u8]) -> (Vec<String>, Option<String>) {
    let mut lines = caps.lines(BufReader::new(caps.capped(text, false)));
    let mut got = Vec::new();
    loop {
        match lines.next_line() {
            Ok(Some((n, line))) => got.push(format!("{n}:{}", String::from_utf8_lossy(line))),
            Ok(None) => return (got, None),
            Err(e) => {
                let (line, message) = caps.line_error(&e);
                return (got, Some(format!("{line:?}: {message}")));
            }
        }
    }
}

#[test]
fn lines_up_to_the_cap_are_read_whole() {
    let caps = caps(1 << 20, 4);
    let (lines, error) = read_lines(&caps, b"abcd\n\nab\r\nabc");
    assert_eq!(lines, ["1:abcd", "2:", "3:ab\r", "4:abc"]);
    assert!(error.is_none());
    // A last line of exactly the cap, without a newline.
    let (lines, error) = read_lines(&caps, b"a\nabcd");
    assert_eq!((lines.len(), error), (2, None));
}

#[test]
fn a_line_over_the_cap_is_refused_with_its_number() {
    let caps = caps(1 << 20, 4);
    let (lines, error) = read_lines(&caps, b"ok\nabcde\nok\n");
    assert_eq!(lines, ["1:ok"]);
    assert_eq!(
        error.unwrap(),
        "Some(2): line longer than 4 bytes (lists.max_line_bytes)"
    );
    let (_, error) = read_lines(&caps, b"abcde");
    assert!(error.unwrap().starts_with("Some(1): "));
}

#[test]
fn a_line_without_end_is_not_buffered_whole() {
    // 64 MiB without a newline: refused after max_line_bytes + 1 bytes of buffer.
    let caps = caps(u64::MAX, 1024);
    let endless = io::repeat(b'x').take(64 << 20);
    let mut lines = caps.lines(BufReader::new(endless));
    assert!(matches!(
        lines.next_line(),
        Err(LineError::TooLong { line: 1 })
    ));
    assert!(lines.buf.capacity() < 64 * 1024, "{}", lines.buf.capacity());
}

#[test]
fn the_byte_past_the_cap_fails_the_read() {
    let caps = caps(10, 100);
    let mut exact = Vec::new();
    caps.capped(&[7u8; 10][..], false)
        .read_to_end(&mut exact)
        .unwrap();
    assert_eq!(exact.len(), 10);
    let mut over = Vec::new();
    let err = caps
        .capped(&[7u8; 11][..], true)
        .read_to_end(&mut over)
        .unwrap_err();
    assert_eq!(
        io_message(&err, "cannot read"),
        "decompressed size over 10 bytes (lists.max_file_bytes)"
    );
    assert!(over.len() <= 10);
    // Past the cap in the middle of a line: a read error, named as the cap.
    let (lines, error) = read_lines(&caps, b"12345\n12345\n");
    assert_eq!(lines, ["1:12345"]);
    assert_eq!(
        error.unwrap(),
        "None: size over 10 bytes (lists.max_file_bytes)"
    );
}

#[test]
fn sizes_and_settings_read_as_written() {
    assert_eq!(show_bytes(512 << 20), "512 MiB");
    assert_eq!(show_bytes(64 << 10), "64 KiB");
    assert_eq!(show_bytes(1000), "1000 bytes");
    let ua = FileCaps::USER_AGENT_FILES;
    assert_eq!(
        ua.too_many_message(),
        "more than 50000 entries (fixed for user-agent pattern files)"
    );
    assert_eq!(
        FileCaps::defaults("asn").too_many_message(),
        "more than 5000000 entries (asn.max_entries)"
    );
}

#[test]
fn a_file_over_the_cap_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.txt");
    std::fs::write(&path, vec![b'\n'; 100_000]).unwrap();
    let err = caps(65_536, 1024).open(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: size over 64 KiB (lists.max_file_bytes)",
            path.display()
        )
    );
    assert!(caps(100_000, 1024).open(&path).is_ok());
    let missing = caps(1, 1).open(&dir.path().join("missing")).unwrap_err();
    assert!(missing.message.starts_with("cannot read: "), "{missing}");
}

// ---- each kind of rule file over each cap ------------------------------------------

mod files {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::decision::{RuleAction, RuleName};
    use crate::rules::asn::{AsnBlock, AsnDb};
    use crate::rules::ip::IpList;
    use crate::rules::user_agent::UaRules;
    use crate::rules::{AsnSettings, ListFile, ListsSettings, RuleSet, UserAgentSpec};

    /// A valid iptoasn row, 44 bytes with its newline.
    const ROW: &[u8] = b"1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET\n";

    /// A gzip stream of `mib` members, each `block` repeated to 1 MiB: `mib` MiB once
    /// decompressed, built in milliseconds (concatenated members are one stream).
    fn gzip_bomb(block: &[u8], mib: usize) -> Vec<u8> {
        let mut one = Vec::with_capacity(1 << 20);
        while one.len() + block.len() <= 1 << 20 {
            one.extend_from_slice(block);
        }
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&one).unwrap();
        enc.finish().unwrap().repeat(mib)
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn asn_caps(file: u64, line: u64, entries: u64) -> FileCaps {
        FileCaps::new("asn", file, line, entries)
    }

    fn lines(err: &crate::rules::LoadErrors) -> Vec<String> {
        err.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_decompressed_cap() {
        let dir = tempfile::tempdir().unwrap();
        // 2 GiB of zeros (binary: read whole, as a MaxMind DB would be) and 2 GiB of
        // valid rows (text: streamed), from 2.1 and 6.4 MB of gzip: under a cap of
        // 8 MiB, which the decompressed bytes then hit.
        for (name, block) in [("zeros.tsv.gz", &[0u8; 4096][..]), ("rows.tsv.gz", ROW)] {
            let path = write(dir.path(), name, &gzip_bomb(block, 2048));
            let started = Instant::now();
            let err = AsnDb::load_capped(
                std::slice::from_ref(&path),
                &asn_caps(8 << 20, 1024, 10_000_000),
            )
            .unwrap_err();
            assert_eq!(
                lines(&err),
                [format!(
                    "{}: decompressed size over 8 MiB (asn.max_file_bytes)",
                    path.display()
                )]
            );
            assert!(started.elapsed() < Duration::from_secs(10), "{name}");
        }
    }

    #[test]
    fn a_gzip_bomb_of_rows_stops_at_max_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "rows.tsv.gz", &gzip_bomb(ROW, 2048));
        let caps = asn_caps(super::DEFAULT_MAX_FILE_BYTES, 1024, 1000);
        let err = AsnDb::load_capped(std::slice::from_ref(&path), &caps).unwrap_err();
        assert_eq!(
            lines(&err),
            [format!(
                "{}: more than 1000 entries (asn.max_entries)",
                path.display()
            )]
        );
    }

    #[test]
    fn an_endless_line_is_refused_on_its_line() {
        let dir = tempfile::tempdir().unwrap();
        // Plain, and 2 GiB without a newline behind gzip.
        let mut text = ROW.to_vec();
        text.extend(vec![b'x'; 1025]);
        text.push(b'\n');
        let plain = write(dir.path(), "long.tsv", &text);
        let endless = write(dir.path(), "endless.tsv.gz", &gzip_bomb(b"x", 2048));
        let caps = asn_caps(super::DEFAULT_MAX_FILE_BYTES, 1024, 10);
        for (path, line) in [(plain, 2), (endless, 1)] {
            let err = AsnDb::load_capped(std::slice::from_ref(&path), &caps).unwrap_err();
            assert_eq!(
                lines(&err),
                [format!(
                    "{}:{line}: line longer than 1024 bytes (asn.max_line_bytes)",
                    path.display()
                )]
            );
        }
    }

    #[test]
    fn lists_over_each_cap_are_refused_and_at_the_caps_load() {
        let dir = tempfile::tempdir().unwrap();
        let caps = FileCaps::new("lists", 64 * 1024, 1024, 3);
        // At every cap: 3 entries, a line of exactly 1024 bytes.
        let mut at = "# header\n192.0.2.1\n198.51.100.0/24\n203.0.113.7 ; ".to_string();
        at.push_str(&"x".repeat(1024 - "203.0.113.7 ; ".len()));
        at.push('\n');
        let path = write(dir.path(), "at.txt", at.as_bytes());
        assert_eq!(IpList::load_capped(&path, &caps).unwrap().len(), 3);

        let path = write(
            dir.path(),
            "many.txt",
            b"192.0.2.1\n192.0.2.2\n\n192.0.2.3\n192.0.2.4\n",
        );
        let err = IpList::load_capped(&path, &caps).unwrap_err();
        assert_eq!(
            lines(&err),
            [format!(
                "{}: more than 3 entries (lists.max_entries)",
                path.display()
            )]
        );

        let path = write(
            dir.path(),
            "long.txt",
            format!("192.0.2.1\n{}\n", "#".repeat(1025)).as_bytes(),
        );
        let err = IpList::load_capped(&path, &caps).unwrap_err();
        assert_eq!(
            lines(&err),
            [format!(
                "{}:2: line longer than 1024 bytes (lists.max_line_bytes)",
                path.display()
            )]
        );

        let path = write(dir.path(), "big.txt", "# padding\n".repeat(7000).as_bytes());
        let err = IpList::load_capped(&path, &caps).unwrap_err();
        assert_eq!(
            lines(&err),
            [format!(
                "{}: size over 64 KiB (lists.max_file_bytes)",
                path.display()
            )]
        );
    }

    #[test]
    fn an_asn_block_file_counts_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "asns.txt",
            b"# ASNs\nAS64496\n64497 # two\n64498\n",
        );
        let caps = |entries| asn_caps(1 << 20, 1024, entries);
        let block = AsnBlock::load_capped(&[1], Some(&path), &caps(3)).unwrap();
        assert_eq!(block.len(), 4);
        let err = AsnBlock::load_capped(&[1], Some(&path), &caps(2)).unwrap_err();
        assert_eq!(
            lines(&err),
            [format!(
                "{}: more than 2 entries (asn.max_entries)",
                path.display()
            )]
        );
    }

    fn ua_file_rule(path: PathBuf) -> UserAgentSpec {
        UserAgentSpec {
            name: RuleName::new("bots").unwrap(),
            pattern: None,
            file: Some(path),
            empty: false,
            action: RuleAction::Deny,
            ignore_case: false,
            literal: true,
            dry_run: false,
        }
    }

    #[test]
    fn user_agent_files_have_fixed_caps() {
        let dir = tempfile::tempdir().unwrap();
        let caps = FileCaps::USER_AGENT_FILES;
        let config = Path::new("spoa-guard.toml");
        let long = format!("AhrefsBot\n{}\n", "x".repeat(64 * 1024 + 1));
        let path = write(dir.path(), "long.list", long.as_bytes());
        let err = UaRules::load(&[ua_file_rule(path.clone())], config).unwrap_err();
        assert_eq!(
            lines(&err),
            [format!(
                "{}:2: line longer than 65536 bytes (fixed for user-agent pattern files)",
                path.display()
            )]
        );
        let many = "bot\n".repeat(usize::try_from(caps.max_entries).unwrap() + 1);
        let path = write(dir.path(), "many.list", many.as_bytes());
        let err = UaRules::load(&[ua_file_rule(path.clone())], config).unwrap_err();
        assert_eq!(
            lines(&err),
            [format!(
                "{}: more than 50000 entries (fixed for user-agent pattern files)",
                path.display()
            )]
        );
        // The real lists are far below the caps.
        if let Some(data) = crate::rules::shared_data("useragents") {
            let real = data.join("useragents/bad-user-agents.list");
            let rules = UaRules::load(&[ua_file_rule(real)], config).unwrap();
            assert_eq!(rules.patterns(), 699);
        }
    }

    #[test]
    fn a_rule_set_over_a_cap_fails_whole_and_a_higher_cap_loads_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("spoa-guard.toml");
        let block = write(dir.path(), "block.txt", b"192.0.2.1\n");
        let table = write(dir.path(), "asn.tsv.gz", &gzip_bomb(ROW, 1));
        let lists = ListsSettings {
            block: vec![ListFile::new(&block)],
            ..ListsSettings::default()
        };
        let mut asn = AsnSettings {
            databases: vec![table.clone()],
            max_file_bytes: 2 << 20,
            ..AsnSettings::default()
        };
        let first = RuleSet::load(&lists, &asn, &[], &config, None).unwrap();
        assert_eq!(first.asn_db.rows(), (1 << 20) / ROW.len());

        // The table is replaced by a bomb: the load fails, naming file and cap, and
        // the rules in force (`first`) are what a reload keeps.
        std::fs::write(&table, gzip_bomb(ROW, 256)).unwrap();
        let err = RuleSet::load(&lists, &asn, &[], &config, Some(&first)).unwrap_err();
        assert_eq!(
            lines(&err),
            [format!(
                "{}: decompressed size over 2 MiB (asn.max_file_bytes)",
                table.display()
            )]
        );
        assert_eq!(first.asn_db.lookup("1.0.0.1".parse().unwrap()), Some(13335));
        assert_eq!(
            first.block.lookup("192.0.2.1".parse().unwrap()),
            Some("block")
        );

        // A file of 3 MiB, under a cap raised to 4 MiB: loads, lists kept from `first`.
        std::fs::write(&table, gzip_bomb(ROW, 3)).unwrap();
        asn.max_file_bytes = 4 << 20;
        let next = RuleSet::load(&lists, &asn, &[], &config, Some(&first)).unwrap();
        assert_eq!(next.asn_db.lookup("1.0.0.1".parse().unwrap()), Some(13335));
        assert!(next.block.ptr_eq(&first.block));
    }
}
