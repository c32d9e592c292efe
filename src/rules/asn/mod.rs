//! IP-to-ASN databases and the set of blocked autonomous systems: the `asn` step of the
//! request path.
//!
//! This module owns two compiled structures: [`AsnDb`], which maps a source address to
//! its autonomous system number (`[asn] databases`), and [`AsnBlock`], the set of ASNs
//! that step denies (`[asn] block` and `block_file`).
//!
//! Where the rest lives:
//!
//! - `formats`: the database files (iptoasn TSV, ip-location-db CSV, MaxMind DB, each
//!   plain or gzip-compressed), how a file's format is recognised, how its rows are
//!   parsed and collected, and the errors a bad file gives.
//! - [`super::mmdb`]: reading MaxMind DB files, shared with other rule inputs.
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
//!   family, `O(n log n)` for `n` rows. Text is streamed from the file, decompressed on
//!   the way; only the parsed rows are held while loading. A MaxMind DB is held whole
//!   while its networks are walked. Every file is read within the `[asn]` caps
//!   ([`FileCaps`]: decompressed size, line length, rows per file), so a gzip bomb stops
//!   at `max_file_bytes` of output.
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

mod formats;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::interval::IntervalMap;
use super::{quote, FileCaps, FileErrors, LoadErrors};
use crate::rules::settings::parse_asn;
use formats::Tables;

/// The AS number iptoasn uses for address space that is not routed.
const NOT_ROUTED: u32 = 0;

/// An IP-to-ASN table, compiled for lookups: which autonomous system announces an address.
///
/// Built once per rule set from every file of `[asn] databases` and shared read-only.
/// See the [module documentation](self) for the overlap rule and costs; the file
/// formats are described in the `formats` module.
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
    /// Loads every database in `paths` within the default caps; see
    /// [`AsnDb::load_capped`].
    ///
    /// # Errors
    ///
    /// As for [`AsnDb::load_capped`].
    pub fn load(paths: &[PathBuf]) -> Result<AsnDb, LoadErrors> {
        Self::load_capped(paths, &FileCaps::defaults("asn"))
    }

    /// Loads every database in `paths`, each streamed within `caps`, and merges them into
    /// one table.
    ///
    /// Where ranges overlap, within a file or across files, the narrowest wins; between
    /// equally wide ranges the one from the earlier file (then the earlier row) wins. No
    /// paths give an empty table.
    ///
    /// # Errors
    ///
    /// Every problem in every file: `file:line: message` for a bad row (at most
    /// [`MAX_ERRORS_PER_FILE`](super::MAX_ERRORS_PER_FILE) per file, then one error counting the rest), `file: message`
    /// for a file that cannot be read, is corrupt, is empty, has an unknown format, or is
    /// over `max_file_bytes` (decompressed) or `max_entries`, and `file:line: line
    /// longer than ...` for a line over `max_line_bytes`.
    pub fn load_capped(paths: &[PathBuf], caps: &FileCaps) -> Result<AsnDb, LoadErrors> {
        let mut tables = Tables::default();
        let mut errors = Vec::new();
        for path in paths {
            match caps.open(path) {
                Ok(input) => errors.append(&mut tables.add_source(path, input, caps)),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(tables.build())
        } else {
            Err(LoadErrors(errors))
        }
    }

    /// Compiles one database from its content, `bytes` (in any of the formats, plain or
    /// gzip-compressed), within the default caps; `path` names it in errors and its
    /// extension serves as the format hint. For tests and tools that hold a table in
    /// memory.
    ///
    /// # Errors
    ///
    /// As for [`AsnDb::load`].
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<AsnDb, LoadErrors> {
        let caps = FileCaps::defaults("asn");
        let mut tables = Tables::default();
        let errors = tables.add_source(path, BufReader::new(caps.capped(bytes, false)), &caps);
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
    /// [`AsnBlock::load_capped`] within the default caps.
    ///
    /// # Errors
    ///
    /// As for [`AsnBlock::load_capped`].
    pub fn load(inline: &[u32], file: Option<&Path>) -> Result<AsnBlock, LoadErrors> {
        Self::load_capped(inline, file, &FileCaps::defaults("asn"))
    }

    /// The union of `inline` (the `[asn] block` setting) and the ASNs listed in `file`,
    /// read within `caps`.
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
    /// text (at most [`MAX_ERRORS_PER_FILE`](super::MAX_ERRORS_PER_FILE), then one error counting the rest); a file,
    /// a line or an entry count over `caps`.
    pub fn load_capped(
        inline: &[u32],
        file: Option<&Path>,
        caps: &FileCaps,
    ) -> Result<AsnBlock, LoadErrors> {
        let mut asns = inline.to_vec();
        if let Some(path) = file {
            asns.extend(read_block_file(path, caps.open(path)?, caps)?);
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

/// Parses the lines of `input`, the ASN block file at `path`, within `caps`; see
/// [`AsnBlock::load_capped`].
fn read_block_file(
    path: &Path,
    input: impl BufRead,
    caps: &FileCaps,
) -> Result<Vec<u32>, LoadErrors> {
    let mut asns = Vec::new();
    let mut errors = FileErrors::new(path);
    let mut lines = caps.lines(input);
    let mut entries: u64 = 0;
    while let Some((line_no, line)) = lines.next_or_record(&mut errors) {
        let text = String::from_utf8_lossy(line);
        let line: &str = &text;
        let entry = match line.find('#') {
            Some(at) => line.get(..at).unwrap_or(line),
            None => line,
        }
        .trim();
        if entry.is_empty() {
            continue;
        }
        entries = entries.saturating_add(1);
        if caps.too_many(entries) {
            errors.too_many(caps);
            break;
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
