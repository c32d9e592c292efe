//! IP allow/block lists: parsing list files and matching source addresses against them.
//!
//! This module owns the list-file format and [`IpMatcher`], the compiled lookup over an
//! ordered set of lists (the `[lists] allow` or `block` setting).
//!
//! # List files
//!
//! One IPv4 or IPv6 address or CIDR per line. FireHOL `.netset` files, Spamhaus DROP files
//! and plain CIDR dumps load as they are:
//!
//! ```text
//! # FireHOL-style header comment
//! 192.0.2.0/24
//! 198.51.100.7                 single address (/32, or /128 for IPv6)
//! 203.0.113.0/24 ; SBL000001   Spamhaus-style comment after the entry
//! 2001:db8::/32
//! ```
//!
//! - A comment starts at the first `#` or `;` anywhere on the line and runs to its end.
//! - Blank lines are ignored; spaces, tabs, a trailing CR (CRLF files) and a leading UTF-8
//!   byte-order mark are trimmed.
//! - A CIDR with host bits set (`10.1.2.3/8`) is accepted as its network (`10.0.0.0/8`),
//!   as most tools do.
//! - Anything else is an error naming the file and line. Loading carries on after a bad
//!   line so that `spoa-guard check` reports every bad line at once (up to
//!   [`MAX_ERRORS_PER_FILE`](super::MAX_ERRORS_PER_FILE) per file).
//! - A file is read line by line within the `[lists]` caps ([`FileCaps`]): a file over
//!   `max_file_bytes`, a line over `max_line_bytes` or more than `max_entries` entries
//!   (non-blank, non-comment lines) is an error and the list is not loaded.
//!
//! # IPv4-mapped IPv6
//!
//! An IPv4-mapped IPv6 address (`::ffff:192.0.2.7`) is the IPv4 address, everywhere: a
//! lookup of a mapped source is a lookup of its IPv4 address, and a list entry inside the
//! mapped block `::ffff:0:0/96` (`::ffff:192.0.2.0/120`) is stored as the IPv4 entry
//! (`192.0.2.0/24`).
//!
//! An IPv6 entry that is wider than the mapped block and contains it (`::/0`, `::/8`,
//! `::/80`) matches native IPv6 addresses only; it never matches IPv4 sources. Such entries
//! are about IPv6 space: Team Cymru's IPv6 full-bogons list contains `::/8`, and treating
//! it as covering `::ffff:0:0/96` would make that list block every IPv4 client. To list all
//! of IPv4, write `0.0.0.0/0`.
//!
//! # Costs
//!
//! Loading is linear in the file size. [`IpMatcher::new`] compiles all lists into two
//! [`IntervalMap`]s (IPv4 and IPv6) in `O(n log n)` for `n` entries; a lookup is a bucket
//! table, then a binary search within the bucket, `O(log s)` over `s <= 2n` disjoint
//! segments, whatever the number of lists. Memory is 12 bytes per IPv4 segment and 36
//! bytes per IPv6 segment, plus a bucket table of at most 256 KiB per family.

use std::fmt;
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use bytes::Bytes;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::interval::{IntervalMap, Range};
use super::{quote, FileCaps, FileErrors, LoadErrors};

/// One parsed IP list file: its name and its entries, not yet compiled for lookups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpList {
    /// The name reported as `txn.guard.rule` when this list decides: the file name
    /// without its extension (see [`list_name`]).
    pub name: String,
    /// IPv4 entries (mapped IPv6 entries included) as inclusive `(first, last)` address
    /// ranges, in file order.
    v4: Vec<(u32, u32)>,
    /// Native IPv6 entries as inclusive `(first, last)` address ranges, in file order.
    v6: Vec<(u128, u128)>,
}

impl IpList {
    /// Parses the text of the list file at `path` (used for the list's name and in errors)
    /// within the default caps.
    ///
    /// # Errors
    ///
    /// Every bad line, as `file:line: message` errors (at most [`MAX_ERRORS_PER_FILE`](super::MAX_ERRORS_PER_FILE),
    /// then one error counting the rest); a line or an entry count over the caps.
    pub fn parse(path: &Path, text: &str) -> Result<IpList, LoadErrors> {
        Self::read(path, text.as_bytes(), &FileCaps::defaults("lists"))
    }

    /// Reads and parses the list file at `path` within the default caps; see
    /// [`IpList::load_capped`].
    ///
    /// # Errors
    ///
    /// As for [`IpList::load_capped`].
    pub fn load(path: &Path) -> Result<IpList, LoadErrors> {
        Self::load_capped(path, &FileCaps::defaults("lists"))
    }

    /// Reads and parses the list file at `path`, streaming, within `caps`.
    ///
    /// Bytes that are not valid UTF-8 are replaced by U+FFFD before parsing, so they are
    /// reported as a bad entry on their line (or ignored inside a comment) rather than
    /// failing the whole file.
    ///
    /// # Errors
    ///
    /// A file-level error if the file cannot be read or is over `max_file_bytes`,
    /// `file:line: line longer than ...` for a line over `max_line_bytes`, a file-level
    /// error for more than `max_entries` entries, otherwise the errors of
    /// [`IpList::parse`].
    pub fn load_capped(path: &Path, caps: &FileCaps) -> Result<IpList, LoadErrors> {
        let input = caps.open(path)?;
        Self::read(path, input, caps)
    }

    /// Parses the lines of `input`, the list file at `path`, within `caps`.
    fn read(path: &Path, input: impl BufRead, caps: &FileCaps) -> Result<IpList, LoadErrors> {
        let mut list = IpList {
            name: list_name(path),
            v4: Vec::new(),
            v6: Vec::new(),
        };
        let mut errors = FileErrors::new(path);
        let mut lines = caps.lines(input);
        let mut entries: u64 = 0;
        while let Some((line_no, line)) = lines.next_or_record(&mut errors) {
            let line = String::from_utf8_lossy(line);
            let entry = strip_comment(&line).trim();
            if entry.is_empty() {
                continue;
            }
            entries = entries.saturating_add(1);
            if caps.too_many(entries) {
                errors.too_many(caps);
                break;
            }
            match parse_entry(entry) {
                Ok(net) => list.push(net),
                Err(message) => errors.line(line_no, message),
            }
        }
        errors.finish()?;
        list.v4.shrink_to_fit();
        list.v6.shrink_to_fit();
        Ok(list)
    }

    /// A list named `name` holding `nets`, for lists that do not come from a file
    /// (inline configuration, tests, benchmarks). Host bits are dropped as in files.
    pub fn from_nets(name: impl Into<String>, nets: impl IntoIterator<Item = IpNet>) -> IpList {
        let mut list = IpList {
            name: name.into(),
            v4: Vec::new(),
            v6: Vec::new(),
        };
        for net in nets {
            list.push(net.trunc());
        }
        list
    }

    /// Number of entries (addresses and CIDRs) in the list.
    pub fn len(&self) -> usize {
        self.v4.len().saturating_add(self.v6.len())
    }

    /// Whether the list has no entries (a file with only comments is a valid, empty list).
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Adds one entry; `net` must already be truncated to its network.
    fn push(&mut self, net: IpNet) {
        match net {
            IpNet::V4(net) => self.v4.push(v4_range(net)),
            IpNet::V6(net) => match mapped_v4(net) {
                Some(net) => self.v4.push(v4_range(net)),
                None => self
                    .v6
                    .push((u128::from(net.network()), u128::from(net.broadcast()))),
            },
        }
    }
}

/// The name a list file is reported under: its file name without the extension.
///
/// `lists/spamhaus-drop.txt` → `spamhaus-drop`, `firehol_level1.netset` →
/// `firehol_level1`. A path without a file name (`/`, `..`) is used whole.
pub fn list_name(path: &Path) -> String {
    match path.file_stem() {
        Some(stem) => stem.to_string_lossy().into_owned(),
        None => path.display().to_string(),
    }
}

/// The part of a list line before any `#` or `;` comment.
fn strip_comment(line: &str) -> &str {
    // A byte search: both markers are ASCII, so the cut is on a character boundary.
    match line.bytes().position(|b| b == b'#' || b == b';') {
        Some(at) => line.get(..at).unwrap_or(line),
        None => line,
    }
}

/// Why a list entry is not an address or CIDR; shown as the line's [`LoadError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum EntryError {
    /// Not an address.
    #[error(
        "invalid address or CIDR {0}: expected an IPv4/IPv6 address or CIDR such as 192.0.2.0/24"
    )]
    Address(String),
    /// A prefix length out of range for the family.
    #[error(
        "invalid prefix length in {entry}: expected a number from 0 to {max} for an {family} CIDR"
    )]
    Prefix {
        /// The entry, quoted.
        entry: String,
        /// The family's longest prefix.
        max: u8,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
    /// The network cannot be made.
    #[error("{entry}: {reason}")]
    Network {
        /// The entry, quoted.
        entry: String,
        /// Why.
        reason: ipnet::PrefixLenError,
    },
}

/// Parses one trimmed, non-empty entry: an address or `address/prefix`, truncated to its
/// network.
fn parse_entry(entry: &str) -> Result<IpNet, EntryError> {
    let (addr_text, prefix_text) = match entry.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (entry, None),
    };
    let Ok(addr) = addr_text.parse::<IpAddr>() else {
        return Err(EntryError::Address(quote(entry)));
    };
    let max = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let prefix = match prefix_text {
        None => max,
        Some(text) => match parse_prefix(text) {
            Some(prefix) if prefix <= max => prefix,
            _ => {
                let family = if max == 32 { "IPv4" } else { "IPv6" };
                return Err(EntryError::Prefix {
                    entry: quote(entry),
                    max,
                    family,
                });
            }
        },
    };
    IpNet::new(addr, prefix)
        .map(|net| net.trunc())
        .map_err(|reason| EntryError::Network {
            entry: quote(entry),
            reason,
        })
}

/// A prefix length: one to three ASCII digits (no sign, no spaces).
fn parse_prefix(text: &str) -> Option<u8> {
    if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The inclusive address range of an IPv4 network.
fn v4_range(net: Ipv4Net) -> (u32, u32) {
    (u32::from(net.network()), u32::from(net.broadcast()))
}

/// The IPv4 network an IPv6 network inside `::ffff:0:0/96` stands for, if it is one.
fn mapped_v4(net: Ipv6Net) -> Option<Ipv4Net> {
    let prefix = net.prefix_len().checked_sub(96)?;
    let addr = net.network().to_ipv4_mapped()?;
    Ipv4Net::new(addr, prefix).ok()
}

/// An ordered set of IP lists compiled for lookups: which list, if any, holds an address.
///
/// Built once per rule set and shared read-only. Where lists overlap the first list (in
/// the order given to [`IpMatcher::new`], i.e. configuration order) wins, so the reported
/// rule name does not depend on file contents elsewhere.
#[derive(Clone, Default)]
pub struct IpMatcher {
    /// IPv4 addresses (and mapped IPv6 entries) → index into `names` of the first list
    /// holding them.
    v4: IntervalMap<u32, u32>,
    /// Native IPv6 addresses → index into `names`.
    v6: IntervalMap<u128, u32>,
    /// List names in configuration order, reported by [`IpMatcher::lookup`].
    names: Vec<String>,
    /// The same names as `Bytes`, so a verdict can carry one without allocating.
    rule_names: Vec<Bytes>,
    /// Entries loaded per list, in list order.
    sizes: Vec<usize>,
    /// Entries loaded over all lists, for logs, metrics and `check` output.
    entries: usize,
}

impl IpMatcher {
    /// Compiles `lists`; an address found in several lists reports the first of them.
    /// `O(n log n)` in the total number of entries.
    pub fn new(lists: impl IntoIterator<Item = IpList>) -> IpMatcher {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut names = Vec::new();
        let mut sizes = Vec::new();
        let mut entries: usize = 0;
        // The index is both the priority (earlier lists win) and the value. Zipping with a
        // u32 counter stops after 2^32 lists, which could not fit in memory anyway.
        for (idx, list) in (0u32..).zip(lists) {
            entries = entries.saturating_add(list.len());
            sizes.push(list.len());
            v4.extend(list.v4.into_iter().map(|(s, e)| Range::new(s, e, idx, idx)));
            v6.extend(list.v6.into_iter().map(|(s, e)| Range::new(s, e, idx, idx)));
            names.push(list.name);
        }
        IpMatcher {
            v4: IntervalMap::build(v4),
            v6: IntervalMap::build(v6),
            rule_names: names.iter().map(|n| Bytes::from(n.clone())).collect(),
            names,
            sizes,
            entries,
        }
    }

    /// The name of the first list holding `addr`, or `None`.
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:192.0.2.7`) is looked up as its IPv4 address.
    /// `O(log n)`, no allocation.
    pub fn lookup(&self, addr: IpAddr) -> Option<&str> {
        self.names.get(self.index(addr)?).map(String::as_str)
    }

    /// Like [`IpMatcher::lookup`], with the name as `Bytes` (a reference-count increment
    /// away from a verdict's `rule`).
    pub fn lookup_rule(&self, addr: IpAddr) -> Option<&Bytes> {
        self.rule_names.get(self.index(addr)?)
    }

    /// Position (in list order) of the first list holding `addr`; `O(log n)`, no
    /// allocation.
    #[inline]
    pub fn lookup_index(&self, addr: IpAddr) -> Option<usize> {
        self.index(addr)
    }

    /// The name of list `index` as `Bytes`.
    pub fn rule_name(&self, index: usize) -> Option<&Bytes> {
        self.rule_names.get(index)
    }

    /// The lists: name and entries loaded, in list order.
    pub fn lists(&self) -> impl Iterator<Item = (&Bytes, usize)> + '_ {
        self.rule_names.iter().zip(self.sizes.iter().copied())
    }

    /// Number of lists.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no lists.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Index of the first list holding `addr`.
    #[inline]
    fn index(&self, addr: IpAddr) -> Option<usize> {
        let idx = match addr {
            IpAddr::V4(v4) => self.lookup_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.lookup_v4(v4),
                None => self.v6.get(u128::from(v6)),
            },
        }?;
        usize::try_from(*idx).ok()
    }

    fn lookup_v4(&self, addr: Ipv4Addr) -> Option<&u32> {
        self.v4.get(u32::from(addr))
    }

    /// Total entries over all lists, as loaded (before overlaps are resolved).
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Number of disjoint address ranges the lookup searches (IPv4 plus IPv6); a measure
    /// of the compiled size, at most about twice [`IpMatcher::entries`].
    pub fn segments(&self) -> usize {
        self.v4.len().saturating_add(self.v6.len())
    }

    /// The names of the lists, in priority order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.names.iter().map(String::as_str)
    }
}

impl fmt::Debug for IpMatcher {
    // The segment tables can hold millions of entries; show their sizes only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpMatcher")
            .field("names", &self.names)
            .field("entries", &self.entries)
            .field("v4_segments", &self.v4.len())
            .field("v6_segments", &self.v6.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{MAX_ERRORS_PER_FILE, QUOTE_CHARS};
    use proptest::prelude::*;
    use std::net::Ipv6Addr;
    use std::path::PathBuf;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn parse(text: &str) -> IpList {
        IpList::parse(Path::new("lists/test.txt"), text).unwrap()
    }

    /// The `file:line: message` lines `check` would print for `text`.
    fn errors(text: &str) -> Vec<String> {
        let err = IpList::parse(Path::new("lists/bad.txt"), text).unwrap_err();
        err.0.iter().map(ToString::to_string).collect()
    }

    fn matcher(texts: &[(&str, &str)]) -> IpMatcher {
        IpMatcher::new(texts.iter().map(|(name, text)| {
            IpList::parse(&PathBuf::from(format!("{name}.txt")), text).unwrap()
        }))
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/lists")
            .join(name)
    }

    #[test]
    fn list_name_drops_directory_and_extension() {
        assert_eq!(
            list_name(Path::new("lists/spamhaus-drop.txt")),
            "spamhaus-drop"
        );
        assert_eq!(
            list_name(Path::new("/etc/firehol_level1.netset")),
            "firehol_level1"
        );
        assert_eq!(
            list_name(Path::new("spamhaus-edrop-2023-12-01.txt")),
            "spamhaus-edrop-2023-12-01"
        );
        assert_eq!(list_name(Path::new("allow")), "allow");
        assert_eq!(list_name(Path::new("a.b.list")), "a.b");
        assert_eq!(list_name(Path::new("/")), "/");
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        let list = parse(
            "# whole-line hash comment\n\
             ; whole-line semicolon comment\n\
             \n   \t  \n\
             192.0.2.0/24 ; SBL000001\n\
             198.51.100.7#no space before the comment\n\
             \t203.0.113.0/25\t\n\
             2001:db8::/32 # trailing\n\
             #192.0.2.255 commented out\n",
        );
        assert_eq!(list.name, "test");
        assert_eq!(list.len(), 4);
        let m = IpMatcher::new([list]);
        assert_eq!(m.lookup(ip("192.0.2.255")), Some("test"));
        assert_eq!(m.lookup(ip("198.51.100.7")), Some("test"));
        assert_eq!(m.lookup(ip("198.51.100.8")), None);
        assert_eq!(m.lookup(ip("203.0.113.127")), Some("test"));
        assert_eq!(m.lookup(ip("203.0.113.128")), None);
        assert_eq!(m.lookup(ip("2001:db8:ffff::1")), Some("test"));
    }

    #[test]
    fn crlf_tabs_and_byte_order_mark() {
        let list = parse("\u{feff}192.0.2.1\r\n\t198.51.100.0/24\t\r\n\r\n2001:db8::1 ; x\r\n");
        assert_eq!(list.len(), 3);
        let m = IpMatcher::new([list]);
        assert_eq!(m.lookup(ip("192.0.2.1")), Some("test"));
        assert_eq!(m.lookup(ip("198.51.100.99")), Some("test"));
        assert_eq!(m.lookup(ip("2001:db8::1")), Some("test"));
        assert_eq!(m.lookup(ip("2001:db8::2")), None);
    }

    #[test]
    fn empty_and_comment_only_files_are_valid_and_empty() {
        assert!(parse("").is_empty());
        assert!(parse("# nothing\n; here\n\n").is_empty());
        let m = IpMatcher::new([parse("")]);
        assert_eq!(m.lookup(ip("192.0.2.1")), None);
        assert_eq!(m.entries(), 0);
        assert_eq!(IpMatcher::default().lookup(ip("::1")), None);
    }

    #[test]
    fn host_bits_are_truncated() {
        let m = matcher(&[("l", "10.1.2.3/8\n2001:db8:1:2::3/32\n")]);
        assert_eq!(m.lookup(ip("10.0.0.0")), Some("l"));
        assert_eq!(m.lookup(ip("10.255.255.255")), Some("l"));
        assert_eq!(m.lookup(ip("11.0.0.0")), None);
        assert_eq!(m.lookup(ip("9.255.255.255")), None);
        assert_eq!(m.lookup(ip("2001:db8::")), Some("l"));
        assert_eq!(m.lookup(ip("2001:db9::")), None);
    }

    #[test]
    fn ipv6_entries() {
        let m = matcher(&[("v6", "2001:db8::/32\n2001:db9::7\n")]);
        assert_eq!(m.lookup(ip("2001:db8::")), Some("v6"));
        assert_eq!(
            m.lookup(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")),
            Some("v6")
        );
        assert_eq!(m.lookup(ip("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff")), None);
        assert_eq!(m.lookup(ip("2001:db9::7")), Some("v6"));
        assert_eq!(m.lookup(ip("2001:db9::8")), None);
        // An IPv6 list says nothing about IPv4.
        assert_eq!(m.lookup(ip("192.0.2.1")), None);
    }

    #[test]
    fn ipv4_mapped_entries_become_ipv4() {
        let m = matcher(&[("mapped", "::ffff:192.0.2.7\n::ffff:198.51.100.0/120\n")]);
        for addr in [
            "192.0.2.7",
            "::ffff:192.0.2.7",
            "198.51.100.0",
            "::ffff:198.51.100.255",
        ] {
            assert_eq!(m.lookup(ip(addr)), Some("mapped"), "{addr}");
        }
        assert_eq!(m.lookup(ip("192.0.2.8")), None);
        assert_eq!(m.lookup(ip("198.51.101.0")), None);
        // The whole mapped block is all of IPv4.
        let m = matcher(&[("all4", "::ffff:0:0/96\n")]);
        assert_eq!(m.lookup(ip("0.0.0.0")), Some("all4"));
        assert_eq!(m.lookup(ip("255.255.255.255")), Some("all4"));
        assert_eq!(m.lookup(ip("2001:db8::1")), None);
    }

    #[test]
    fn ipv4_entries_match_mapped_sources() {
        let m = matcher(&[("v4", "192.0.2.0/24\n")]);
        assert_eq!(m.lookup(ip("::ffff:192.0.2.200")), Some("v4"));
        assert_eq!(m.lookup(ip("::ffff:192.0.3.0")), None);
        // IPv4-compatible (::a.b.c.d, deprecated) is not mapped: it is plain IPv6.
        assert_eq!(m.lookup(ip("::192.0.2.200")), None);
    }

    #[test]
    fn wide_ipv6_entries_do_not_cover_ipv4() {
        // Team Cymru's IPv6 bogons list has ::/8, which contains ::ffff:0:0/96.
        let m = matcher(&[("bogons6", "::/8\n"), ("all6", "::/0\n")]);
        assert_eq!(m.lookup(ip("::1")), Some("bogons6"));
        assert_eq!(m.lookup(ip("::ffff:192.0.2.1")), None);
        assert_eq!(m.lookup(ip("192.0.2.1")), None);
        assert_eq!(m.lookup(ip("2001:db8::1")), Some("all6"));
    }

    #[test]
    fn edges_slash_0_32_and_128() {
        let m = matcher(&[("all4", "0.0.0.0/0\n"), ("all6", "::/0\n")]);
        assert_eq!(m.lookup(ip("0.0.0.0")), Some("all4"));
        assert_eq!(m.lookup(ip("255.255.255.255")), Some("all4"));
        assert_eq!(m.lookup(ip("::")), Some("all6"));
        assert_eq!(
            m.lookup(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            Some("all6")
        );
        assert_eq!(m.lookup(ip("::ffff:1.2.3.4")), Some("all4"));

        let m = matcher(&[(
            "hosts",
            "0.0.0.0/32\n255.255.255.255/32\n::/128\nffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128\n",
        )]);
        assert_eq!(m.lookup(ip("0.0.0.0")), Some("hosts"));
        assert_eq!(m.lookup(ip("0.0.0.1")), None);
        assert_eq!(m.lookup(ip("255.255.255.255")), Some("hosts"));
        assert_eq!(m.lookup(ip("255.255.255.254")), None);
        assert_eq!(m.lookup(ip("::")), Some("hosts"));
        assert_eq!(m.lookup(ip("::1")), None);
        assert_eq!(
            m.lookup(IpAddr::V6(Ipv6Addr::from(u128::MAX))),
            Some("hosts")
        );
        assert_eq!(m.lookup(IpAddr::V6(Ipv6Addr::from(u128::MAX - 1))), None);
    }

    #[test]
    fn first_list_wins_where_lists_overlap() {
        let m = matcher(&[
            ("allow-office", "192.0.2.128/25\n"),
            ("drop", "192.0.2.0/24\n2001:db8::/32\n"),
            ("datacenter", "192.0.0.0/16\n2001:db8:1::/48\n"),
        ]);
        assert_eq!(m.lookup(ip("192.0.2.200")), Some("allow-office"));
        assert_eq!(m.lookup(ip("192.0.2.100")), Some("drop"));
        assert_eq!(m.lookup(ip("192.0.3.1")), Some("datacenter"));
        assert_eq!(m.lookup(ip("2001:db8:1::1")), Some("drop"));
        assert_eq!(m.lookup(ip("192.1.0.0")), None);
        assert_eq!(m.entries(), 5);
        assert_eq!(
            m.names().collect::<Vec<_>>(),
            ["allow-office", "drop", "datacenter"]
        );
        // Reversed order, reversed answers.
        let m = matcher(&[("datacenter", "192.0.0.0/16\n"), ("drop", "192.0.2.0/24\n")]);
        assert_eq!(m.lookup(ip("192.0.2.100")), Some("datacenter"));
    }

    #[test]
    fn duplicates_within_a_list_are_harmless() {
        let m = matcher(&[("dup", "192.0.2.1\n192.0.2.1\n192.0.2.0/24\n192.0.2.0/31\n")]);
        assert_eq!(m.entries(), 4);
        assert_eq!(m.segments(), 1);
        assert_eq!(m.lookup(ip("192.0.2.1")), Some("dup"));
    }

    #[test]
    fn bad_lines_name_file_line_and_expectation() {
        let got = errors("192.0.2.0/24\n1.2.3.999\n10.0.0.0/33 ; comment\n2001:db8::/129\n");
        assert_eq!(
            got,
            [
                "lists/bad.txt:2: invalid address or CIDR \"1.2.3.999\": expected an IPv4/IPv6 \
                 address or CIDR such as 192.0.2.0/24",
                "lists/bad.txt:3: invalid prefix length in \"10.0.0.0/33\": expected a number \
                 from 0 to 32 for an IPv4 CIDR",
                "lists/bad.txt:4: invalid prefix length in \"2001:db8::/129\": expected a \
                 number from 0 to 128 for an IPv6 CIDR",
            ]
        );
    }

    #[test]
    fn malformed_entries_are_rejected() {
        for bad in [
            "192.0.2.0/",
            "192.0.2.0/+8",
            "192.0.2.0/ 8",
            "192.0.2.0 /8",
            "192.0.2.0/0008",
            "192.0.2.0/8/8",
            "/8",
            "192.0.2",
            "192.0.2.01",
            "192.0.2.1 198.51.100.1",
            "192.0.2.1-192.0.2.9",
            "fe80::1%eth0",
            "2001:db8:::1",
            "example.com",
            "AS64496",
            "add blacklist 192.0.2.1",
        ] {
            let got = errors(bad);
            assert_eq!(got.len(), 1, "{bad}: {got:?}");
            assert!(
                got[0].starts_with("lists/bad.txt:1: invalid "),
                "{bad}: {got:?}"
            );
            assert!(got[0].contains(&format!("{bad:?}")), "{bad}: {got:?}");
        }
    }

    #[test]
    fn long_and_odd_entries_are_quoted_safely() {
        let long = "x".repeat(500);
        let got = errors(&long);
        let quoted = format!("\"{}…\"", "x".repeat(QUOTE_CHARS));
        assert!(got[0].contains(&quoted), "{got:?}");
        assert!(got[0].len() < 200);
        // Control characters are escaped, multi-byte characters never split.
        let got = errors(
            "192.0.2.\u{7}1\nééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé\n",
        );
        assert!(got[0].contains(r#""192.0.2.\u{7}1""#), "{got:?}");
        assert!(
            got[1].starts_with("lists/bad.txt:2: invalid address or CIDR \"éééé"),
            "{got:?}"
        );
    }

    #[test]
    fn every_bad_line_is_reported_up_to_the_cap() {
        let got = errors("bad1\n192.0.2.1\nbad2\n\nbad3\n");
        assert_eq!(got.len(), 3);
        assert!(got[0].starts_with("lists/bad.txt:1: "));
        assert!(got[1].starts_with("lists/bad.txt:3: "));
        assert!(got[2].starts_with("lists/bad.txt:5: "));

        let text = "nope\n".repeat(MAX_ERRORS_PER_FILE + 42);
        let got = errors(&text);
        assert_eq!(got.len(), MAX_ERRORS_PER_FILE + 1);
        assert!(got[MAX_ERRORS_PER_FILE - 1].starts_with("lists/bad.txt:100: "));
        assert_eq!(
            got[MAX_ERRORS_PER_FILE],
            "lists/bad.txt: 42 more invalid lines not shown (only the first 100 are reported)"
        );
    }

    #[test]
    fn load_reports_unreadable_files() {
        let err = IpList::load(Path::new("/nonexistent/spoa-guard/block.txt")).unwrap_err();
        assert_eq!(err.0.len(), 1);
        let msg = err.to_string();
        assert!(
            msg.starts_with("/nonexistent/spoa-guard/block.txt: cannot read: "),
            "{msg}"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = IpList::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("cannot read: "), "{err}");
    }

    #[test]
    fn load_reports_invalid_utf8_on_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latin1.txt");
        std::fs::write(
            &path,
            b"# caf\xe9 comment is fine\n192.0.2.1\n192.0.2.\xff\n",
        )
        .unwrap();
        let err = IpList::load(&path).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].line, Some(3));
        assert!(err.0[0].message.contains("\"192.0.2.\u{fffd}\""), "{err}");
    }

    #[test]
    fn fixtures_load() {
        let load = |name: &str| IpList::load(&fixture(name)).unwrap();

        let firehol = load("firehol-style.netset");
        assert_eq!((firehol.name.as_str(), firehol.len()), ("firehol-style", 5));
        let drop = load("drop-style.txt");
        assert_eq!((drop.name.as_str(), drop.len()), ("drop-style", 4));
        let mixed = load("mixed.txt");
        assert_eq!(mixed.len(), 5);
        let x4b4 = load("x4bnet-datacenter-ipv4.txt");
        let x4b6 = load("x4bnet-datacenter-ipv6.txt");
        assert_eq!((x4b4.len(), x4b6.len()), (30, 30));

        let m = IpMatcher::new([firehol, drop, mixed, x4b4, x4b6]);
        assert_eq!(m.entries(), 74);
        assert_eq!(m.lookup(ip("192.0.2.66")), Some("firehol-style"));
        assert_eq!(m.lookup(ip("192.0.2.68")), Some("drop-style"));
        assert_eq!(m.lookup(ip("192.0.2.200")), Some("mixed"));
        assert_eq!(m.lookup(ip("198.51.100.129")), Some("firehol-style"));
        assert_eq!(m.lookup(ip("203.0.113.100")), Some("drop-style"));
        assert_eq!(m.lookup(ip("::ffff:203.0.113.1")), Some("mixed"));
        assert_eq!(m.lookup(ip("10.9.8.7")), Some("mixed"));
        assert_eq!(m.lookup(ip("2001:db8:1::1")), Some("drop-style"));
        assert_eq!(m.lookup(ip("2001:db8:2::1")), Some("mixed"));
        assert_eq!(m.lookup(ip("1.12.3.4")), Some("x4bnet-datacenter-ipv4"));
        assert_eq!(
            m.lookup(ip("2001:470:5c::1")),
            Some("x4bnet-datacenter-ipv6")
        );
        assert_eq!(m.lookup(ip("192.0.2.254")), Some("mixed"));
        assert_eq!(m.lookup(ip("198.51.99.255")), None);
    }

    #[test]
    fn invalid_fixture_reports_every_bad_line() {
        let path = fixture("invalid.txt");
        let err = IpList::load(&path).unwrap_err();
        let lines: Vec<_> = err.0.iter().map(|e| e.line).collect();
        assert_eq!(lines, [Some(3), Some(4), Some(6)]);
        assert!(err.0.iter().all(|e| e.path == path));
    }

    fn shared_data() -> Option<PathBuf> {
        crate::rules::shared_data("blocklists")
    }

    #[test]
    fn real_lists_load_unchanged() {
        let Some(data) = shared_data() else {
            eprintln!(
                "skipped: no shared data (set SPOA_GUARD_DATA to a directory with blocklists/)"
            );
            return;
        };
        // (file, data lines, an address in it)
        let files = [
            ("firehol_level1.netset", 4_631, "10.1.2.3"),
            ("firehol_level2.netset", 17_924, "223.243.179.70"),
            ("firehol_level3.netset", 12_917, "223.204.223.116"),
            ("firehol_level4.netset", 131_420, "223.254.130.21"),
            ("spamhaus-drop.txt", 1_385, "1.10.31.255"),
            ("spamhaus-dropv6.txt", 78, "2001:678:6c4:ffff::1"),
            ("spamhaus-edrop-2023-12-01.txt", 289, "2.56.247.9"),
            ("x4bnet-datacenter-ipv4.txt", 42_566, "1.15.255.255"),
            ("x4bnet-datacenter-ipv6.txt", 8_752, "2001:4860:4860::8888"),
            ("team-cymru-fullbogons-ipv6.txt", 130_320, "::1"),
        ];
        for (file, count, inside) in files {
            let list = match IpList::load(&data.join("blocklists").join(file)) {
                Ok(list) => list,
                Err(err) => panic!("{file} failed to load:\n{err}"),
            };
            assert_eq!(list.len(), count, "{file}");
            let name = list.name.clone();
            let m = IpMatcher::new([list]);
            assert_eq!(
                m.lookup(ip(inside)),
                Some(name.as_str()),
                "{file}: {inside}"
            );
        }
        let load = |file: &str| IpList::load(&data.join("blocklists").join(file)).unwrap();
        // The IPv6 bogons include ::/8 but must not block IPv4 or mapped IPv4 sources.
        let bogons = IpMatcher::new([load("team-cymru-fullbogons-ipv6.txt")]);
        assert_eq!(bogons.lookup(ip("192.0.2.1")), None);
        assert_eq!(bogons.lookup(ip("::ffff:192.0.2.1")), None);
        assert_eq!(bogons.lookup(ip("2606:4700::1")), None);
        // FireHOL level 1 includes private space; Spamhaus DROP does not.
        let m = IpMatcher::new([load("spamhaus-drop.txt"), load("firehol_level1.netset")]);
        assert_eq!(m.lookup(ip("1.10.16.1")), Some("spamhaus-drop"));
        assert_eq!(m.lookup(ip("192.168.1.1")), Some("firehol_level1"));
        assert_eq!(m.lookup(ip("8.8.8.8")), None);
    }

    /// An IPv4-mapped IPv6 network as the IPv4 network it stands for; other networks as
    /// they are (the documented matching rule, written independently of the code).
    fn canonical(net: IpNet) -> IpNet {
        let net = net.trunc();
        if let IpNet::V6(v6) = net {
            if let (Some(v4), true) = (v6.network().to_ipv4_mapped(), v6.prefix_len() >= 96) {
                return IpNet::V4(Ipv4Net::new(v4, v6.prefix_len() - 96).unwrap());
            }
        }
        net
    }

    fn naive<'a>(lists: &'a [Vec<IpNet>], names: &'a [String], addr: IpAddr) -> Option<&'a str> {
        let addr = addr.to_canonical();
        lists
            .iter()
            .position(|nets| nets.iter().any(|n| canonical(*n).contains(&addr)))
            .map(|i| names[i].as_str())
    }

    /// Networks crowded into a few small areas so lists overlap, including mapped ones.
    fn net() -> impl Strategy<Value = IpNet> {
        let v4 = |c: u8, d: u8| Ipv4Addr::new(192, 0, c % 4, d);
        prop_oneof![
            4 => (any::<u8>(), any::<u8>(), 20u8..=32)
                .prop_map(move |(c, d, p)| IpNet::V4(Ipv4Net::new(v4(c, d), p).unwrap())),
            1 => (any::<u32>(), 0u8..=8)
                .prop_map(|(a, p)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), p).unwrap())),
            2 => (any::<u8>(), any::<u8>(), 116u8..=128).prop_map(move |(c, d, p)| {
                IpNet::V6(Ipv6Net::new(v4(c, d).to_ipv6_mapped(), p).unwrap())
            }),
            3 => (0u16..4, any::<u16>(), 108u8..=128).prop_map(|(c, d, p)| {
                let a = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, c, d);
                IpNet::V6(Ipv6Net::new(a, p).unwrap())
            }),
            1 => (0u8..=16).prop_map(|p| IpNet::V6(Ipv6Net::new(Ipv6Addr::UNSPECIFIED, p).unwrap())),
        ]
    }

    fn probe() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (any::<u8>(), any::<u8>()).prop_map(|(c, d)| IpAddr::from([192, 0, c % 4, d])),
            (any::<u8>(), any::<u8>())
                .prop_map(|(c, d)| IpAddr::V6(Ipv4Addr::new(192, 0, c % 4, d).to_ipv6_mapped())),
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            (0u16..4, any::<u16>())
                .prop_map(|(c, d)| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, c, d))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in ".{0,300}") {
            let _ = IpList::parse(Path::new("fuzz.txt"), &text);
        }

        #[test]
        fn parse_never_panics_on_near_misses(text in "[0-9a-fA-F:./#; \t\r\n%+-]{0,300}") {
            if let Err(errs) = IpList::parse(Path::new("fuzz.txt"), &text) {
                prop_assert!(!errs.0.is_empty() && errs.0.len() <= MAX_ERRORS_PER_FILE + 1);
            }
        }

        #[test]
        fn every_written_net_parses_back(n in net()) {
            let list = parse(&format!("{n}\n"));
            prop_assert_eq!(list, IpList::from_nets("test", [n]));
        }

        #[test]
        fn lookup_matches_naive_scan(
            lists in proptest::collection::vec(proptest::collection::vec(net(), 0..8), 1..5),
            probes in proptest::collection::vec(probe(), 0..32),
        ) {
            let names: Vec<String> = (0..lists.len()).map(|i| format!("list{i}")).collect();
            let m = IpMatcher::new(
                lists.iter().zip(&names).map(|(nets, name)| IpList::from_nets(name.clone(), nets.clone())),
            );
            // Probe the random addresses plus both edges of every net and their neighbours.
            let mut addrs = probes;
            for n in lists.iter().flatten() {
                let (first, last) = match canonical(*n) {
                    IpNet::V4(n) => (u128::from(u32::from(n.network())), u128::from(u32::from(n.broadcast()))),
                    IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
                };
                let v4 = matches!(canonical(*n), IpNet::V4(_));
                for a in [first.checked_sub(1), Some(first), Some(last), last.checked_add(1)].into_iter().flatten() {
                    match (v4, u32::try_from(a)) {
                        (true, Ok(a)) => addrs.push(IpAddr::V4(Ipv4Addr::from(a))),
                        (true, Err(_)) => {}
                        (false, _) => addrs.push(IpAddr::V6(Ipv6Addr::from(a))),
                    }
                }
            }
            for addr in addrs {
                prop_assert_eq!(m.lookup(addr), naive(&lists, &names, addr), "addr {}", addr);
            }
        }
    }
}
