//! The database file formats of `[asn] databases`: recognising a file's format, parsing
//! its rows, and collecting the rows of every file into [`Tables`], which compile into
//! an [`AsnDb`].
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
//!   it ([`MaxMindDb::for_each_network`]), so lookups cost the same whatever the source.
//! - Blank lines and lines starting with `#` are skipped in the text formats, as are a
//!   UTF-8 byte-order mark and CR line endings.
//!
//! ## How the format is chosen
//!
//! By content; the file name is only a hint.
//!
//! 1. Content that starts with binary data (a NUL byte in the first block, after
//!    decompression for a gzip stream), or whose name ends in `.mmdb` or `.mmdb.gz`, is
//!    read whole (a MaxMind DB needs random access) and is a MaxMind DB when it holds the
//!    metadata marker (`\xAB\xCD\xEFMaxMind.com`) within its last 128 KiB (the format's
//!    limit for the metadata section; [`is_mmdb`]). Plain binary content that is not one
//!    is then read as text, so the first bad line says what is wrong.
//! 2. Everything else is text, parsed line by line as it is read (and decompressed),
//!    never held in memory whole.
//! 3. Text: the first data line decides, by the first separator after the start address:
//!    a TAB means iptoasn TSV, a comma means ip-location-db CSV (addresses contain neither).
//!    Every later line must have the same layout.
//! 4. A name ending in `.mmdb` (or `.mmdb.gz`) whose content is not a MaxMind DB is an
//!    error; `.tsv` and `.csv` only word the error for a first line that is neither.
//! 5. A tar archive (MaxMind ships `GeoLite2-ASN_<date>.tar.gz`) is an error asking for
//!    the `.mmdb` inside it ([`is_tar`]).
//!
//! A file with no range at all (empty, comments only, or a MaxMind DB without networks)
//! is an error: it is far more likely a failed download than an intended empty table.
//!
//! ## Errors
//!
//! A bad row (bad address, start after end, IPv4 and IPv6 mixed, AS number not a number,
//! too few fields) is a `file:line: message` error; loading carries on so that
//! `spoa-guard check` reports every bad row (up to
//! [`MAX_ERRORS_PER_FILE`](crate::rules::MAX_ERRORS_PER_FILE) per file). A problem with a
//! file as a whole (unreadable, corrupt gzip, unknown format, invalid MaxMind DB) is a
//! `file: message` error.
//!
//! Every file is read within the `[asn]` caps ([`FileCaps`]): more than `max_file_bytes`
//! (of the file, and of its decompressed content), a line longer than `max_line_bytes`,
//! or more than `max_entries` rows (or MaxMind networks) stops the file with one error
//! saying which cap it hit; a bomb costs at most `max_file_bytes` of memory (the whole
//! read of step 1) and the time to decompress that much.

use std::io::{self, BufRead, BufReader};
use std::net::IpAddr;
use std::path::Path;

use flate2::read::MultiGzDecoder;
use ipnet::IpNet;

use super::AsnDb;
use crate::rules::interval::{IntervalMap, Range};
use crate::rules::mmdb::{is_mmdb, is_tar, MaxMindDb, MmdbError, TAR_MESSAGE};
use crate::rules::settings::parse_asn;
use crate::rules::source::{io_message, READ_BUFFER};
use crate::rules::{quote, FileCaps, FileErrors, LoadError, LoadErrors};

/// The two bytes every gzip member starts with (RFC 1952, section 2.3.1).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The key of the AS number in GeoLite2-ASN (and DB-IP's compatible) records.
const MMDB_ASN_KEY: &str = "autonomous_system_number";

/// First and last address of the IPv4-mapped block `::ffff:0:0/96`, as integers.
const MAPPED_FIRST: u128 = 0xffff_0000_0000;
const MAPPED_LAST: u128 = 0xffff_ffff_ffff;

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
pub(super) struct Tables {
    /// IPv4 rows; priority is the width `end - start`, so the narrowest range wins.
    v4: Vec<Range<u32, u32, u32>>,
    /// Native IPv6 rows; same priority rule.
    v6: Vec<Range<u128, u128, u32>>,
}

impl Tables {
    /// Adds the rows of one database file read from `input` (already capped at
    /// `max_file_bytes`), within `caps`; returns its errors.
    pub(super) fn add_source(
        &mut self,
        path: &Path,
        mut input: impl BufRead,
        caps: &FileCaps,
    ) -> Vec<LoadError> {
        let hint = Format::hinted_by(path);
        let before = self.rows();
        let gzip = match input.fill_buf() {
            Ok(head) => head.starts_with(&GZIP_MAGIC),
            Err(e) => return vec![LoadError::file(path, io_message(&e, "cannot read"))],
        };
        let result = if gzip {
            let decoded = caps.capped(MultiGzDecoder::new(input), true);
            let decoded = BufReader::with_capacity(READ_BUFFER, decoded);
            self.add_stream(path, decoded, hint, caps, true)
        } else {
            self.add_stream(path, input, hint, caps, false)
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

    /// The (decompressed, capped) content of one file: a MaxMind DB or binary data is
    /// read whole, text is streamed (see the module docs, "How the format is chosen").
    fn add_stream(
        &mut self,
        path: &Path,
        mut input: impl BufRead,
        hint: Option<Format>,
        caps: &FileCaps,
        compressed: bool,
    ) -> Result<(), Vec<LoadError>> {
        let failed = |e: io::Error| {
            let context = if compressed {
                "bad gzip data"
            } else {
                "cannot read"
            };
            vec![LoadError::file(path, io_message(&e, context))]
        };
        let binary = input.fill_buf().map_err(failed)?.contains(&0);
        if !binary && hint != Some(Format::Mmdb) {
            return self.add_text(path, input, hint, caps);
        }
        // Held whole, but never more than max_file_bytes: `input` is capped.
        let mut whole = Vec::new();
        input.read_to_end(&mut whole).map_err(failed)?;
        if is_tar(&whole) {
            Err(vec![LoadError::file(path, TAR_MESSAGE)])
        } else if is_mmdb(&whole) {
            self.add_mmdb(path, &whole, caps)
        } else if hint == Some(Format::Mmdb) {
            let message = if compressed {
                "not a MaxMind DB: no metadata marker in the last 128 KiB of the \
                 decompressed data"
            } else {
                "not a MaxMind DB: no metadata marker in the last 128 KiB \
                 (truncated or not an .mmdb file)"
            };
            Err(vec![LoadError::file(path, message)])
        } else if compressed {
            Err(vec![LoadError::file(
                path,
                format!("{} (binary data)", unknown_format(hint)),
            )])
        } else {
            self.add_text(path, whole.as_slice(), hint, caps)
        }
    }

    /// An iptoasn TSV or ip-location-db CSV table, read line by line from `input`.
    fn add_text(
        &mut self,
        path: &Path,
        input: impl BufRead,
        hint: Option<Format>,
        caps: &FileCaps,
    ) -> Result<(), Vec<LoadError>> {
        let mut errors = FileErrors::new(path);
        let mut format = None;
        let mut lines = caps.lines(input);
        let mut entries: u64 = 0;
        while let Some((line_no, line)) = lines.next_or_record(&mut errors) {
            let line = trim_line_end(line);
            if line.trim_ascii().is_empty() || line.trim_ascii_start().starts_with(b"#") {
                continue;
            }
            entries = entries.saturating_add(1);
            if caps.too_many(entries) {
                errors.too_many(caps);
                break;
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

    /// A MaxMind DB: every network with an `autonomous_system_number` becomes a row, up
    /// to `max_entries`.
    fn add_mmdb(
        &mut self,
        path: &Path,
        bytes: &[u8],
        caps: &FileCaps,
    ) -> Result<(), Vec<LoadError>> {
        let invalid = |e: MmdbError| vec![LoadError::file(path, e.to_string())];
        let db = MaxMindDb::open(bytes).map_err(invalid)?;
        let mut entries: u64 = 0;
        let walked = db.for_each_network(&[MMDB_ASN_KEY], |net: IpNet, asn: u32| {
            entries = entries.saturating_add(1);
            if caps.too_many(entries) {
                return Err(RowError::TooMany);
            }
            self.push(net.network(), net.broadcast(), asn)
        });
        if caps.too_many(entries) {
            return Err(vec![LoadError::file(path, caps.too_many_message())]);
        }
        let walked = walked.map_err(invalid)?;
        if walked.networks > 0 && walked.with_field == 0 {
            return Err(vec![LoadError::file(
                path,
                format!(
                    "not an IP-to-ASN database: no record has {MMDB_ASN_KEY} \
                     (database_type {:?})",
                    db.database_type()
                ),
            )]);
        }
        Ok(())
    }

    /// Adds the inclusive range `start..=end` of AS `asn`.
    fn push(&mut self, start: IpAddr, end: IpAddr, asn: u32) -> Result<(), RowError> {
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
                return Err(RowError::Backwards { start, end });
            }
            _ => {
                return Err(RowError::MixedFamilies { start, end });
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
    pub(super) fn build(self) -> AsnDb {
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
fn parse_row(format: Format, line: &[u8]) -> Result<(IpAddr, IpAddr, u32), RowError> {
    let split = if format == Format::Tsv {
        split_tsv(line)
    } else {
        split_csv(line)
    };
    let [start, end, asn] = match split {
        Split::Fields(fields) => fields,
        Split::TooFew(found) => {
            return Err(RowError::TooFew {
                layout: format.layout(),
                found,
                row: quote_bytes(line),
            })
        }
        Split::Bad(problem) => {
            return Err(RowError::Quoting {
                problem,
                row: quote_bytes(line),
            })
        }
    };
    let invalid_addr = |what, field: &[u8]| RowError::Address {
        what,
        field: quote_bytes(field),
    };
    let start = parse_addr(start).ok_or_else(|| invalid_addr("range start", start))?;
    let end = parse_addr(end).ok_or_else(|| invalid_addr("range end", end))?;
    let asn = std::str::from_utf8(asn)
        .ok()
        .and_then(parse_asn)
        .ok_or_else(|| RowError::Asn(quote_bytes(asn)))?;
    Ok((start, end, asn))
}

/// What is wrong with one row of a text database; shown as the line's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum RowError {
    /// Fewer than three fields.
    #[error("expected at least 3 fields ({layout}), found {found} in {row}")]
    TooFew {
        /// The format's fields, in words.
        layout: &'static str,
        /// Fields found.
        found: usize,
        /// The row, quoted.
        row: String,
    },
    /// Bad CSV quoting.
    #[error("{problem} in {row}")]
    Quoting {
        /// What is wrong.
        problem: &'static str,
        /// The row, quoted.
        row: String,
    },
    /// A field that is not an address.
    #[error(
        "invalid {what} {field}: expected an IPv4 or IPv6 address such as 192.0.2.0 or 2001:db8::"
    )]
    Address {
        /// `range start` or `range end`.
        what: &'static str,
        /// The field, quoted.
        field: String,
    },
    /// A field that is not an AS number.
    #[error("invalid AS number {0}: expected a number from 0 to 4294967295 (or AS64496)")]
    Asn(String),
    /// The range ends before it starts.
    #[error("range start {start} is after range end {end}")]
    Backwards {
        /// The start.
        start: IpAddr,
        /// The end.
        end: IpAddr,
    },
    /// One end IPv4, the other IPv6.
    #[error("range {start} - {end} mixes IPv4 and IPv6: both ends must be of one family")]
    MixedFamilies {
        /// The start.
        start: IpAddr,
        /// The end.
        end: IpAddr,
    },
    /// More rows than `max_entries` (stops a MaxMind DB walk; reported on its own).
    #[error("more rows than max_entries")]
    TooMany,
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

/// [`quote`] for raw bytes; invalid UTF-8 shows as U+FFFD.
fn quote_bytes(bytes: &[u8]) -> String {
    quote(&String::from_utf8_lossy(bytes))
}

#[cfg(test)]
mod tests;
