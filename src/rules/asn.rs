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
//! - Lookup: a bucket table, then a binary search within the bucket, `O(log s)` over
//!   `s <= 2n` disjoint segments, no allocation (see [`IntervalMap`]).
//! - Memory: 12 bytes per IPv4 segment, 36 bytes per IPv6 segment, plus a bucket table of
//!   at most 256 KiB per family.
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

use bytes::Bytes;
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
    /// routed. Bucket table plus binary search per lookup, 12 bytes per segment.
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
    /// `AS<n>` for each of `asns`, made once so that a deny allocates nothing.
    names: Vec<Bytes>,
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
        let names = asns.iter().map(|n| Bytes::from(format!("AS{n}"))).collect();
        Ok(AsnBlock { asns, names })
    }

    /// Whether `asn` is blocked. `O(log n)`, no allocation.
    pub fn contains(&self, asn: u32) -> bool {
        self.asns.binary_search(&asn).is_ok()
    }

    /// The rule name (`AS<n>`) of `asn` if it is blocked. `O(log n)`, no allocation.
    pub fn rule(&self, asn: u32) -> Option<&Bytes> {
        self.names.get(self.asns.binary_search(&asn).ok()?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::MAX_ERRORS_PER_FILE;
    use proptest::prelude::*;
    use std::io::Write;
    use std::net::Ipv6Addr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/asn")
            .join(name)
    }

    fn load(names: &[&str]) -> AsnDb {
        let paths: Vec<PathBuf> = names.iter().map(|n| fixture(n)).collect();
        match AsnDb::load(&paths) {
            Ok(db) => db,
            Err(err) => panic!("{names:?} failed to load:\n{err}"),
        }
    }

    fn parse(name: &str, text: &str) -> AsnDb {
        match AsnDb::parse(Path::new(name), text.as_bytes()) {
            Ok(db) => db,
            Err(err) => panic!("{name} failed to parse:\n{err}"),
        }
    }

    /// The `file:line: message` lines `check` would print for `bytes` named `name`.
    fn errors(name: &str, bytes: &[u8]) -> Vec<String> {
        let err = AsnDb::parse(Path::new(name), bytes).unwrap_err();
        err.0.iter().map(ToString::to_string).collect()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// Asserts `db.lookup(addr) == want` for every `(addr, want)`.
    fn assert_lookups(db: &AsnDb, cases: &[(&str, Option<u32>)]) {
        for &(addr, want) in cases {
            assert_eq!(db.lookup(ip(addr)), want, "{addr}");
        }
    }

    /// What `synthetic.tsv` promises (see the fixture README).
    const SYNTHETIC_TSV: &[(&str, Option<u32>)] = &[
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

    const SYNTHETIC_CSV: &[(&str, Option<u32>)] = &[
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

    #[test]
    fn debug_shows_sizes_only() {
        let db = load(&["synthetic.tsv"]);
        let text = format!("{db:?}");
        assert!(
            text.starts_with("AsnDb { rows: 11, v4_segments: "),
            "{text}"
        );
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

    // ---- Block files --------------------------------------------------------------------

    fn block_errors(text: &str) -> Vec<String> {
        let err = parse_block_file(Path::new("asn-block.txt"), text).unwrap_err();
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
        let block =
            AsnBlock::load(&[64511, 13335, 64496], Some(&fixture("asn-block.txt"))).unwrap();
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
                    (Some(s), Some(e)) => {
                        (true, u128::from(u32::from(s)), u128::from(u32::from(e)))
                    }
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
                let errs = tables.add_file(Path::new(&name), text.as_bytes());
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

        #[test]
        fn block_files_never_panic(text in "[0-9ASas#\t \r\n;x-]{0,200}") {
            let _ = parse_block_file(Path::new("fuzz.txt"), &text);
        }
    }
}
