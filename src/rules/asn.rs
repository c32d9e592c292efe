//! IP-to-ASN databases and the set of blocked autonomous systems: the `asn` step of the
//! request path.
//!
//! This module owns two compiled structures: [`AsnDb`], which maps a source address to
//! its autonomous system number (`[asn] databases`), and [`AsnBlock`], the set of ASNs
//! that step denies (`[asn] block` and `block_file`).
//!
//! # Database formats
//!
//! Three layouts load, each plain or gzip-compressed. Compression is detected by the gzip
//! magic bytes (`1f 8b`), never by the file name.
//!
//! ```text
//! iptoasn TSV          range_start ⇥ range_end ⇥ AS_number ⇥ country ⇥ description  (⇥ = TAB)
//!                      1.1.1.1 ⇥ 1.1.1.1 ⇥ 7497 ⇥ CN ⇥ CSTNET-AS-AP Computer Network Inf…
//!
//! ip-location-db CSV   range_start,range_end,asn,organization
//!                      1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc."
//!
//! MaxMind DB (.mmdb)   GeoLite2-ASN or compatible (DB-IP ASN Lite): every network whose
//!                      record has autonomous_system_number
//! ```
//!
//! - Ranges are inclusive, written as addresses (IPv4 or IPv6; both ends of a row in the
//!   same family). Only the first three fields are read; the rest of a row may hold
//!   anything, including tabs and commas inside a quoted organization.
//! - The AS number may be written `64496` or `AS64496`.
//! - A MaxMind DB is converted into the same tables at load, by walking every network in
//!   it, so lookups cost the same whatever the source.
//! - Blank lines and lines starting with `#` are skipped in the text formats, as are a
//!   UTF-8 byte-order mark and CR line endings.
//!
//! ## How the format is chosen
//!
//! By content; the file name is only a hint.
//!
//! 1. Plain bytes holding the MaxMind metadata marker (`\xAB\xCD\xEFMaxMind.com`) within
//!    their last 128 KiB (the format's limit for the metadata section) are a MaxMind DB.
//! 2. A gzip stream is a MaxMind DB when its decompressed bytes start with binary data (a
//!    NUL byte in the first block) or the name ends in `.mmdb.gz`; it is then decompressed
//!    whole, since a MaxMind DB needs random access. Other gzip streams are text and are
//!    parsed as they are decompressed, never held in memory whole.
//! 3. Text: the first data line decides, by the first separator after the start address:
//!    a TAB means iptoasn TSV, a comma means ip-location-db CSV (addresses contain neither).
//!    Every later line must have the same layout.
//! 4. A name ending in `.mmdb` (or `.mmdb.gz`) whose content is not a MaxMind DB is an
//!    error; `.tsv` and `.csv` only word the error for a first line that is neither.
//! 5. A tar archive (MaxMind ships `GeoLite2-ASN_<date>.tar.gz`) is an error asking for
//!    the `.mmdb` inside it.
//!
//! A file with no range at all (empty, comments only, or a MaxMind DB without networks)
//! is an error: it is far more likely a failed download than an intended empty table.
//!
//! ## Errors
//!
//! A bad row (bad address, start after end, IPv4 and IPv6 mixed, AS number not a number,
//! too few fields) is a `file:line: message` error; loading carries on so that
//! `spoa-guard check` reports every bad row (up to [`MAX_ERRORS_PER_FILE`](super::MAX_ERRORS_PER_FILE) per file). A
//! problem with a file as a whole (unreadable, corrupt gzip, unknown format, invalid
//! MaxMind DB) is a `file: message` error.
//!
//! # Overlaps and AS 0
//!
//! All files of `[asn] databases` are merged into one table per address family, and where
//! ranges overlap, within a file or across files, **the most specific (narrowest) range
//! wins**; between ranges of equal width the one loaded first (earlier file, then earlier
//! row) wins. The real iptoasn IPv6 table needs this: 5,589 of its rows start inside an
//! earlier, wider row, e.g. smaller AS28220 ranges inside an AS28270 one.
//!
//! AS 0 means "not routed" (iptoasn writes such rows with country `None`). It is kept in
//! the table like any other number, so an AS 0 row punches a hole into any wider range
//! around it, and [`AsnDb::lookup`] reports `None` for it, exactly as for an address no
//! range covers. A MaxMind record without `autonomous_system_number` carries no
//! information and is skipped rather than stored as a hole.
//!
//! A MaxMind DB cannot hold overlapping networks: its writer has already split a wide
//! allocation around the narrower ones inside it. Merged with other files, its networks
//! compete with the widths they are stored with (a /24 around a /26 comes out as a /26,
//! /27s and a /25, among others), not with the width of the original allocation.
//!
//! # IPv4-mapped IPv6
//!
//! As everywhere in spoa-guard, `::ffff:192.0.2.7` is the IPv4 address `192.0.2.7`: such
//! a source is looked up in the IPv4 table, and a database row lying entirely inside the
//! mapped block `::ffff:0:0/96` is stored as the IPv4 range it stands for. A row that only
//! partly covers the mapped block, or contains it, stays IPv6 and never matches IPv4.
//!
//! # Costs
//!
//! - Load: linear in the file size for parsing, then one [`IntervalMap::build`] per
//!   family, `O(n log n)` for `n` rows. Text is streamed from the (compressed) file bytes;
//!   only those bytes and the parsed rows are held while loading. A MaxMind DB is held
//!   whole while its networks are walked.
//! - Lookup: one binary search, `O(log s)` over `s <= 2n` disjoint segments, no
//!   allocation.
//! - Memory: 12 bytes per IPv4 segment, 36 bytes per IPv6 segment (see [`IntervalMap`]).
//!
//! Measured (2 vCPU EPYC VM, release build, `benches/asn.rs`): the full ip-location-db
//! tables (412k IPv4 + 103k IPv6 rows, 7.8 MB of gzip) load in about 0.25–0.3 s, of which
//! decompression is about a quarter and the two builds about 50 ms; they compile to
//! 515k segments, 8.6 MB, with a transient peak of about 35 MB while loading. A lookup
//! takes about 100 ns.

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use ipnet::IpNet;
use maxminddb::{PathElement, Reader, WithinOptions};

use super::interval::{IntervalMap, Range};
use super::{quote, FileErrors, LoadError, LoadErrors};
use crate::config::parse_asn;

/// The two bytes every gzip member starts with (RFC 1952, section 2.3.1).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The marker in front of a MaxMind DB's metadata section.
const MMDB_MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";

/// The metadata section, marker included, is at most this long (MaxMind DB spec), so the
/// marker sits within this many bytes of the end of the file.
const MMDB_METADATA_MAX: usize = 128 * 1024;

/// The key of the AS number in GeoLite2-ASN (and DB-IP's compatible) records.
const MMDB_ASN_KEY: &str = "autonomous_system_number";

/// The AS number iptoasn uses for address space that is not routed.
const NOT_ROUTED: u32 = 0;

/// First and last address of the IPv4-mapped block `::ffff:0:0/96`, as integers.
const MAPPED_FIRST: u128 = 0xffff_0000_0000;
const MAPPED_LAST: u128 = 0xffff_ffff_ffff;

/// Read buffer for text tables: large enough that decompression runs in big blocks.
const READ_BUFFER: usize = 64 * 1024;

/// An IP-to-ASN table, compiled for lookups: which autonomous system announces an address.
///
/// Built once per rule set from every file of `[asn] databases` and shared read-only.
/// See the [module documentation](self) for the formats, the overlap rule and costs.
#[derive(Clone, Default)]
pub struct AsnDb {
    /// IPv4 addresses (and rows inside the IPv4-mapped block) → AS number, `0` for not
    /// routed. One binary search per lookup, 12 bytes per segment.
    v4: IntervalMap<u32, u32>,
    /// Native IPv6 addresses → AS number, `0` for not routed. 36 bytes per segment.
    v6: IntervalMap<u128, u32>,
    /// Rows (ranges, networks) loaded over all files, before overlaps were resolved; for
    /// logs, metrics and `check` output.
    rows: usize,
}

impl AsnDb {
    /// Loads every database in `paths` and merges them into one table.
    ///
    /// Where ranges overlap, within a file or across files, the narrowest wins; between
    /// equally wide ranges the one from the earlier file (then the earlier row) wins. No
    /// paths give an empty table.
    ///
    /// # Errors
    ///
    /// Every problem in every file: `file:line: message` for a bad row (at most
    /// [`MAX_ERRORS_PER_FILE`](super::MAX_ERRORS_PER_FILE) per file, then one error counting the rest), `file: message`
    /// for a file that cannot be read, is corrupt, is empty or has an unknown format.
    pub fn load(paths: &[PathBuf]) -> Result<AsnDb, LoadErrors> {
        let mut tables = Tables::default();
        let mut errors = Vec::new();
        for path in paths {
            match std::fs::read(path) {
                Ok(bytes) => errors.append(&mut tables.add_file(path, &bytes)),
                Err(e) => errors.push(LoadError::file(path, format!("cannot read: {e}"))),
            }
        }
        if errors.is_empty() {
            Ok(tables.build())
        } else {
            Err(LoadErrors(errors))
        }
    }

    /// Compiles one database from its content, `bytes` (in any of the formats, plain or
    /// gzip-compressed); `path` names it in errors and its extension serves as the format
    /// hint. For tests and tools that hold a table in memory.
    ///
    /// # Errors
    ///
    /// As for [`AsnDb::load`].
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<AsnDb, LoadErrors> {
        let mut tables = Tables::default();
        let errors = tables.add_file(path, bytes);
        if errors.is_empty() {
            Ok(tables.build())
        } else {
            Err(LoadErrors(errors))
        }
    }

    /// The AS number announcing `addr`, or `None` when no range covers it or the most
    /// specific range covering it is AS 0 ("not routed").
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:192.0.2.7`) is looked up as its IPv4 address.
    /// `O(log s)` for `s` segments, no allocation.
    pub fn lookup(&self, addr: IpAddr) -> Option<u32> {
        let asn = match addr {
            IpAddr::V4(v4) => self.v4.get(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.v4.get(u32::from(v4)),
                None => self.v6.get(u128::from(v6)),
            },
        }?;
        (*asn != NOT_ROUTED).then_some(*asn)
    }

    /// Number of disjoint segments the lookup searches (IPv4 plus IPv6, not-routed holes
    /// included), after overlaps were resolved and adjacent segments of the same AS merged.
    pub fn ranges(&self) -> usize {
        self.v4.len().saturating_add(self.v6.len())
    }

    /// Rows loaded over all files (text rows, or networks of a MaxMind DB), as loaded.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Whether the table is empty (no database configured): every lookup gives `None`.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

impl fmt::Debug for AsnDb {
    // The tables hold hundreds of thousands of segments; show their sizes only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsnDb")
            .field("rows", &self.rows)
            .field("v4_segments", &self.v4.len())
            .field("v6_segments", &self.v6.len())
            .finish()
    }
}

/// The blocked autonomous systems: `[asn] block` plus the numbers in `[asn] block_file`.
///
/// Stored as a sorted, deduplicated `Vec<u32>`: membership is a binary search, `O(log n)`,
/// about 10 comparisons within 4 KiB for a thousand ASNs, 4 bytes per ASN. A block list is
/// small (the X4B datacenter list has 906 entries), so this beats a hash set on both
/// memory and lookup time, and it iterates in order for `check` output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AsnBlock {
    /// Sorted, no duplicates.
    asns: Vec<u32>,
}

impl AsnBlock {
    /// The union of `inline` (the `[asn] block` setting) and the ASNs listed in `file`.
    ///
    /// The file holds one AS number per line, as `AS64496` or `64496`; `#` starts a
    /// comment, also after the number (`AS3223 # VOXILITY, RO`, with a space or a TAB
    /// before the `#`); blank lines, surrounding whitespace, CR line endings and a UTF-8
    /// byte-order mark are ignored. Bytes that are not UTF-8 are replaced by U+FFFD, so
    /// they are reported on their line (or ignored inside a comment).
    ///
    /// AS 0 is accepted but never matches: [`AsnDb::lookup`] never reports it.
    ///
    /// # Errors
    ///
    /// `file: cannot read: ...`, or every bad line as `file:line: message` quoting the
    /// text (at most [`MAX_ERRORS_PER_FILE`](super::MAX_ERRORS_PER_FILE), then one error counting the rest).
    pub fn load(inline: &[u32], file: Option<&Path>) -> Result<AsnBlock, LoadErrors> {
        let mut asns = inline.to_vec();
        if let Some(path) = file {
            let bytes = std::fs::read(path)
                .map_err(|e| LoadError::file(path, format!("cannot read: {e}")))?;
            asns.extend(parse_block_file(path, &String::from_utf8_lossy(&bytes))?);
        }
        asns.sort_unstable();
        asns.dedup();
        asns.shrink_to_fit();
        Ok(AsnBlock { asns })
    }

    /// Whether `asn` is blocked. `O(log n)`, no allocation.
    pub fn contains(&self, asn: u32) -> bool {
        self.asns.binary_search(&asn).is_ok()
    }

    /// Number of distinct blocked ASNs.
    pub fn len(&self) -> usize {
        self.asns.len()
    }

    /// Whether nothing is blocked.
    pub fn is_empty(&self) -> bool {
        self.asns.is_empty()
    }

    /// The blocked ASNs in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.asns.iter().copied()
    }
}

/// Parses the text of an ASN block file; see [`AsnBlock::load`].
fn parse_block_file(path: &Path, text: &str) -> Result<Vec<u32>, LoadErrors> {
    let mut asns = Vec::new();
    let mut errors = FileErrors::new(path);
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (line_no, line) in (1usize..).zip(text.lines()) {
        let entry = match line.find('#') {
            Some(at) => line.get(..at).unwrap_or(line),
            None => line,
        }
        .trim();
        if entry.is_empty() {
            continue;
        }
        match parse_asn(entry) {
            Some(asn) => asns.push(asn),
            None => errors.line(
                line_no,
                format!(
                    "invalid AS number {}: expected one per line, as AS64496 or 64496",
                    quote(entry)
                ),
            ),
        }
    }
    errors.finish()?;
    Ok(asns)
}

/// The database formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// iptoasn: `start<TAB>end<TAB>asn<TAB>country<TAB>description`.
    Tsv,
    /// ip-location-db: `start,end,asn,organization`.
    Csv,
    /// MaxMind DB (`.mmdb`).
    Mmdb,
}

impl Format {
    /// The format a file name suggests (`.tsv`, `.csv`, `.mmdb`, each optionally followed
    /// by `.gz`), if any.
    fn hinted_by(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        let (_, ext) = name.rsplit_once('.')?;
        match ext {
            "tsv" => Some(Format::Tsv),
            "csv" => Some(Format::Csv),
            "mmdb" => Some(Format::Mmdb),
            _ => None,
        }
    }

    /// The layout of a row, for error messages.
    fn layout(self) -> &'static str {
        match self {
            Format::Tsv => {
                "iptoasn TSV: range_start<TAB>range_end<TAB>AS_number<TAB>country<TAB>description"
            }
            Format::Csv => "ip-location-db CSV: range_start,range_end,asn,organization",
            Format::Mmdb => "MaxMind DB",
        }
    }
}

/// Rows collected from every file, not yet compiled. The position of a row in its vector
/// is its load order, which breaks ties between equally wide ranges.
#[derive(Default)]
struct Tables {
    /// IPv4 rows; priority is the width `end - start`, so the narrowest range wins.
    v4: Vec<Range<u32, u32, u32>>,
    /// Native IPv6 rows; same priority rule.
    v6: Vec<Range<u128, u128, u32>>,
}

impl Tables {
    /// Adds the rows of one database file with content `bytes`; returns its errors.
    fn add_file(&mut self, path: &Path, bytes: &[u8]) -> Vec<LoadError> {
        let hint = Format::hinted_by(path);
        let before = self.rows();
        let result = if bytes.starts_with(&GZIP_MAGIC) {
            self.add_gzip(path, bytes, hint)
        } else if is_tar(bytes) {
            Err(vec![LoadError::file(path, TAR_MESSAGE)])
        } else if is_mmdb(bytes) {
            self.add_mmdb(path, bytes)
        } else if hint == Some(Format::Mmdb) {
            Err(vec![LoadError::file(
                path,
                "not a MaxMind DB: no metadata marker in the last 128 KiB \
                 (truncated or not an .mmdb file)",
            )])
        } else {
            self.add_text(path, bytes, hint)
        };
        match result {
            Ok(()) if self.rows() == before => vec![LoadError::file(
                path,
                "no IP ranges found: the database is empty (or holds only comments)",
            )],
            Ok(()) => Vec::new(),
            Err(errors) => errors,
        }
    }

    /// A gzip-compressed table: text is streamed; a MaxMind DB is decompressed whole.
    fn add_gzip(
        &mut self,
        path: &Path,
        bytes: &[u8],
        hint: Option<Format>,
    ) -> Result<(), Vec<LoadError>> {
        let corrupt =
            |e: std::io::Error| vec![LoadError::file(path, format!("bad gzip data: {e}"))];
        let mut stream = BufReader::with_capacity(READ_BUFFER, MultiGzDecoder::new(bytes));
        let binary = stream.fill_buf().map_err(corrupt)?.contains(&0);
        if !binary && hint != Some(Format::Mmdb) {
            return self.add_text(path, stream, hint);
        }
        let mut whole = Vec::new();
        stream.read_to_end(&mut whole).map_err(corrupt)?;
        if is_tar(&whole) {
            Err(vec![LoadError::file(path, TAR_MESSAGE)])
        } else if is_mmdb(&whole) {
            self.add_mmdb(path, &whole)
        } else if hint == Some(Format::Mmdb) {
            Err(vec![LoadError::file(
                path,
                "not a MaxMind DB: no metadata marker in the last 128 KiB of the \
                 decompressed data",
            )])
        } else {
            Err(vec![LoadError::file(
                path,
                format!("{} (binary data)", unknown_format(hint)),
            )])
        }
    }

    /// An iptoasn TSV or ip-location-db CSV table, read line by line from `input`.
    fn add_text(
        &mut self,
        path: &Path,
        mut input: impl BufRead,
        hint: Option<Format>,
    ) -> Result<(), Vec<LoadError>> {
        let mut errors = FileErrors::new(path);
        let mut format = None;
        let mut buf = Vec::new();
        let mut line_no: usize = 0;
        loop {
            buf.clear();
            match input.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    errors.file(format!("cannot read past line {line_no}: {e}"));
                    break;
                }
            }
            line_no = line_no.saturating_add(1);
            let mut line = buf.as_slice();
            if line_no == 1 {
                line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
            }
            let line = trim_line_end(line);
            if line.trim_ascii().is_empty() || line.trim_ascii_start().starts_with(b"#") {
                continue;
            }
            let format = match format {
                Some(format) => format,
                None => match sniff(line) {
                    Some(found) => *format.insert(found),
                    None => {
                        errors.line(
                            line_no,
                            format!(
                                "{}; the first row is {}",
                                unknown_format(hint),
                                quote_bytes(line)
                            ),
                        );
                        break;
                    }
                },
            };
            match parse_row(format, line).and_then(|(s, e, asn)| self.push(s, e, asn)) {
                Ok(()) => {}
                Err(message) => errors.line(line_no, message),
            }
        }
        errors.finish().map_err(|LoadErrors(errors)| errors)
    }

    /// A MaxMind DB: every network with an `autonomous_system_number` becomes a row.
    fn add_mmdb(&mut self, path: &Path, bytes: &[u8]) -> Result<(), Vec<LoadError>> {
        let invalid =
            |e: &dyn fmt::Display| vec![LoadError::file(path, format!("invalid MaxMind DB: {e}"))];
        let reader = Reader::from_source(bytes).map_err(|e| invalid(&e))?;
        // Default options: skip the IPv4 aliases (::ffff:0:0/96, 2002::/16) of an IPv6
        // database's IPv4 subtree, and networks without data.
        let networks = reader
            .networks(WithinOptions::default())
            .map_err(|e| invalid(&e))?;
        // Records are shared by many networks; decode each one once.
        let mut decoded: HashMap<usize, Option<u32>> = HashMap::new();
        let key = [PathElement::Key(MMDB_ASN_KEY)];
        let (mut with_data, mut with_asn) = (0usize, 0usize);
        for item in networks {
            let found = item.map_err(|e| invalid(&e))?;
            let net = found.network().map_err(|e| invalid(&e))?;
            let asn = match found.offset() {
                Some(offset) => match decoded.get(&offset) {
                    Some(asn) => *asn,
                    None => {
                        let asn = found.decode_path::<u32>(&key).map_err(|e| {
                            invalid(&format_args!("record of {net}: {MMDB_ASN_KEY}: {e}"))
                        })?;
                        decoded.insert(offset, asn);
                        asn
                    }
                },
                None => None,
            };
            with_data = with_data.saturating_add(1);
            let Some(asn) = asn else { continue };
            with_asn = with_asn.saturating_add(1);
            let net = IpNet::new(net.network(), net.prefix())
                .map_err(|e| invalid(&format_args!("network {net}: {e}")))?;
            self.push(net.network(), net.broadcast(), asn)
                .map_err(|e| invalid(&format_args!("network {net}: {e}")))?;
        }
        if with_data > 0 && with_asn == 0 {
            return Err(vec![LoadError::file(
                path,
                format!(
                    "not an IP-to-ASN database: no record has {MMDB_ASN_KEY} \
                     (database_type {:?})",
                    reader.metadata().database_type
                ),
            )]);
        }
        Ok(())
    }

    /// Adds the inclusive range `start..=end` of AS `asn`.
    fn push(&mut self, start: IpAddr, end: IpAddr, asn: u32) -> Result<(), String> {
        match (start, end) {
            (IpAddr::V4(s), IpAddr::V4(e)) if s <= e => {
                self.push_v4(u32::from(s), u32::from(e), asn);
            }
            (IpAddr::V6(s), IpAddr::V6(e)) if s <= e => {
                let (s, e) = (u128::from(s), u128::from(e));
                match (mapped_v4(s), mapped_v4(e)) {
                    // Inside ::ffff:0:0/96: the IPv4 range it stands for.
                    (Some(s), Some(e)) => self.push_v4(s, e, asn),
                    _ => self.v6.push(Range::new(s, e, e.saturating_sub(s), asn)),
                }
            }
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                return Err(format!("range start {start} is after range end {end}"));
            }
            _ => {
                return Err(format!(
                    "range {start} - {end} mixes IPv4 and IPv6: both ends must be of one family"
                ));
            }
        }
        Ok(())
    }

    /// Adds the IPv4 range `start..=end` (`start <= end`); its width is its priority.
    fn push_v4(&mut self, start: u32, end: u32, asn: u32) {
        self.v4
            .push(Range::new(start, end, end.saturating_sub(start), asn));
    }

    /// Rows collected so far.
    fn rows(&self) -> usize {
        self.v4.len().saturating_add(self.v6.len())
    }

    /// Compiles the collected rows.
    fn build(self) -> AsnDb {
        let rows = self.rows();
        AsnDb {
            v4: IntervalMap::build(self.v4),
            v6: IntervalMap::build(self.v6),
            rows,
        }
    }
}

/// The IPv4 address an integer IPv6 address inside `::ffff:0:0/96` stands for.
fn mapped_v4(addr: u128) -> Option<u32> {
    if (MAPPED_FIRST..=MAPPED_LAST).contains(&addr) {
        u32::try_from(addr.checked_sub(MAPPED_FIRST)?).ok()
    } else {
        None
    }
}

/// The error for a tar archive, the way MaxMind distributes its databases.
const TAR_MESSAGE: &str = "a tar archive, not a database: extract the .mmdb file from it \
                           (tar -xzf) and name that file";

/// Whether `bytes` is a tar archive (POSIX `ustar` magic at offset 257).
fn is_tar(bytes: &[u8]) -> bool {
    bytes.get(257..262) == Some(b"ustar".as_slice())
}

/// Whether `bytes` is a MaxMind DB: the metadata marker within the last 128 KiB.
fn is_mmdb(bytes: &[u8]) -> bool {
    let tail = bytes
        .get(bytes.len().saturating_sub(MMDB_METADATA_MAX)..)
        .unwrap_or(bytes);
    tail.windows(MMDB_MARKER.len()).any(|w| w == MMDB_MARKER)
}

/// The text format of a first data row: the first TAB or comma after the start address
/// decides. `None` for binary data or a row with neither.
fn sniff(line: &[u8]) -> Option<Format> {
    if line.contains(&0) {
        return None;
    }
    match line.iter().find(|&&b| b == b'\t' || b == b',') {
        Some(b'\t') => Some(Format::Tsv),
        Some(_) => Some(Format::Csv),
        None => None,
    }
}

/// The message for content that is none of the formats; `hint` is what the name suggests.
fn unknown_format(hint: Option<Format>) -> String {
    let hinted = match hint {
        Some(format) => format!(" (the file name suggests {})", format.layout()),
        None => String::new(),
    };
    format!(
        "unknown IP-to-ASN database format{hinted}: expected {}, {} or a {} file",
        Format::Tsv.layout(),
        Format::Csv.layout(),
        Format::Mmdb.layout()
    )
}

/// `line` without its line terminator (`\n`, `\r\n`, or a stray final `\r`).
fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses the first three fields of a row (`format` is [`Format::Tsv`] or
/// [`Format::Csv`]): start, end and AS number.
fn parse_row(format: Format, line: &[u8]) -> Result<(IpAddr, IpAddr, u32), String> {
    let split = if format == Format::Tsv {
        split_tsv(line)
    } else {
        split_csv(line)
    };
    let [start, end, asn] = match split {
        Split::Fields(fields) => fields,
        Split::TooFew(found) => {
            return Err(format!(
                "expected at least 3 fields ({}), found {found} in {}",
                format.layout(),
                quote_bytes(line)
            ))
        }
        Split::Bad(problem) => return Err(format!("{problem} in {}", quote_bytes(line))),
    };
    let start = parse_addr(start).ok_or_else(|| invalid_addr("range start", start))?;
    let end = parse_addr(end).ok_or_else(|| invalid_addr("range end", end))?;
    let asn = std::str::from_utf8(asn)
        .ok()
        .and_then(parse_asn)
        .ok_or_else(|| {
            format!(
                "invalid AS number {}: expected a number from 0 to 4294967295 (or AS64496)",
                quote_bytes(asn)
            )
        })?;
    Ok((start, end, asn))
}

/// The first three fields of a row, split off the rest.
enum Split<'a> {
    /// Start, end and AS number, as written.
    Fields([&'a [u8]; 3]),
    /// The row has only this many fields.
    TooFew(usize),
    /// The row cannot be split (bad CSV quoting).
    Bad(&'static str),
}

/// Splits the first three TAB-separated fields off an iptoasn row.
fn split_tsv(line: &[u8]) -> Split<'_> {
    let mut fields = line.splitn(4, |&b| b == b'\t');
    match (fields.next(), fields.next(), fields.next()) {
        (Some(start), Some(end), Some(asn)) => Split::Fields([start, end, asn]),
        (_, Some(_), None) => Split::TooFew(2),
        _ => Split::TooFew(1),
    }
}

/// Splits the first three fields off an ip-location-db CSV row, honouring RFC 4180 quotes
/// (`"…"`, with `""` for a quote inside) so that a fully quoted row also parses. The rest
/// of the row (the organization, quoted when it holds a comma) is not examined.
fn split_csv(line: &[u8]) -> Split<'_> {
    let mut fields: [&[u8]; 3] = [&[]; 3];
    let mut rest = Some(line);
    for (count, slot) in fields.iter_mut().enumerate() {
        let Some(text) = rest else {
            return Split::TooFew(count);
        };
        match csv_field(text) {
            Ok((field, after)) => {
                *slot = field;
                rest = after;
            }
            Err(problem) => return Split::Bad(problem),
        }
    }
    Split::Fields(fields)
}

/// The first CSV field of `text` (quotes removed, `""` left as is) and what follows its
/// comma, or `None` when it was the last field.
fn csv_field(text: &[u8]) -> Result<(&[u8], Option<&[u8]>), &'static str> {
    let Some(quoted) = text.strip_prefix(b"\"") else {
        return Ok(match text.iter().position(|&b| b == b',') {
            Some(at) => (
                text.get(..at).unwrap_or_default(),
                text.get(at.saturating_add(1)..),
            ),
            None => (text, None),
        });
    };
    // The closing quote is the first quote not doubled.
    let mut from = 0usize;
    loop {
        let close = quoted
            .get(from..)
            .and_then(|t| t.iter().position(|&b| b == b'"'))
            .map(|at| from.saturating_add(at))
            .ok_or("unterminated quoted field")?;
        let field = quoted.get(..close).unwrap_or_default();
        let after = close.saturating_add(1);
        match quoted.get(after) {
            Some(b'"') => from = after.saturating_add(1),
            Some(b',') => return Ok((field, quoted.get(after.saturating_add(1)..))),
            None => return Ok((field, None)),
            Some(_) => return Err("text after the closing quote of a quoted field"),
        }
    }
}

/// An address field (surrounding spaces allowed).
fn parse_addr(field: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(field.trim_ascii()).ok()?.parse().ok()
}

/// The message for an address field that does not parse.
fn invalid_addr(what: &str, field: &[u8]) -> String {
    format!(
        "invalid {what} {}: expected an IPv4 or IPv6 address such as {} or 2001:db8::",
        quote_bytes(field),
        Ipv4Addr::new(192, 0, 2, 0)
    )
}

/// [`quote`] for raw bytes; invalid UTF-8 shows as U+FFFD.
fn quote_bytes(bytes: &[u8]) -> String {
    quote(&String::from_utf8_lossy(bytes))
}
