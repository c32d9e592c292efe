//! Reading rule files within caps: how many bytes a file may hold (after decompression),
//! how long one of its lines may be, and how many entries it may have.
//!
//! This module owns [`FileCaps`], the caps and the setting that raises each, and the two
//! readers every rule-file loader goes through: `Capped`, which fails as soon as a byte
//! past `max_file_bytes` arrives, and `Lines`, which hands out one line at a time and
//! fails at the first line longer than `max_line_bytes`.
//!
//! Rule files are often fetched from third parties by cron, and the same loaders run on a
//! live reload inside the serving agent, so a bad download (a gzip bomb, a file with no
//! newline, a runaway export) must cost bounded memory and time, never the agent. Every
//! cap is therefore enforced while the file streams in, never by reading it whole and
//! checking afterwards:
//!
//! ```text
//! file ─▶ Capped (file bytes) ─▶ gzip decoder ─▶ Capped (decompressed bytes) ─▶ BufReader ─▶ Lines
//!                                 (ASN tables only)                                            │
//!                                                                     loader counts entries ◀──┘
//! ```
//!
//! - `Capped` counts the bytes it passes on and errors with `OverCap` on the first
//!   byte past the cap. Around a gzip decoder it counts decompressed bytes: a bomb stops
//!   after `max_file_bytes` of output, whatever its ratio.
//! - `Lines` reads a line through `take(max_line_bytes + 1)`, so an over-long line
//!   costs at most that much buffer before it is refused; loading stops there, since a
//!   file with such a line is not the file it claims to be.
//! - The loaders count the entries of each file (non-blank, non-comment lines; networks of
//!   a MaxMind DB) and stop at the first one past `max_entries`.
//!
//! A file over a cap is one error naming the file and the setting that raises the cap
//! (`lists/drop.txt: size over 256 MiB (lists.max_file_bytes)`). Like every load error
//! it fails the whole load, so at a reload the rules in force stay in force.
//!
//! # Defaults
//!
//! About ten times the largest real inputs (the public data set the tests use, measured
//! with `zcat | wc -c`, `wc -l` and `wc -L`), and no more, since the caps are also what a
//! bad file may cost:
//!
//! | cap | default | largest real input |
//! |---|---|---|
//! | `max_file_bytes` | 256 MiB | 23.8 MB: the ip-location-db ASN IPv4 CSV, decompressed from 6.1 MB of gzip (iptoasn IPv6 TSV: 13.9 MB; a RouteViews prefix table: 10.9 MB; a GeoLite-style country `.mmdb`: 7.8 MB; the largest list, Team Cymru's IPv6 full bogons: 2.1 MB) — 11× |
//! | `max_line_bytes` | 64 KiB | 263 bytes: an iptoasn IPv6 row with a long AS description (list lines ≤ 72 bytes, bad-bot patterns ≤ 46, real browser user agents ≤ 539) — 249× |
//! | `max_entries` | 5,000,000 | 512,626 rows: the RouteViews IPv4 prefix table (ip-location-db ASN IPv4: 411,961; FireHOL level 4: 131,420 CIDRs) — 9.8× |
//!
//! What that bounds, per file: a MaxMind DB (or binary data) is held whole, at most
//! `max_file_bytes`; a text table holds its parsed rows, at most `max_entries` (16 bytes
//! per IPv4 row, 64 per IPv6 row: 80 MB and 320 MB at the default); a line costs at most
//! `max_line_bytes`. A 9.4 MB gzip bomb that drove `spoa-guard check` to 2.1 GB of RSS
//! before these caps now stops at the first cap it meets. Line length is cheap to allow,
//! hence its wide margin.
//!
//! User-agent pattern files have fixed caps, [`FileCaps::USER_AGENT_FILES`] (16 MiB,
//! 64 KiB per line, 50,000 patterns): the largest real lists are 7.7 KB (the bad-bot
//! list's 699 patterns) and 1,498 patterns (crawler-user-agents), and each pattern is
//! compiled (about 3.8 KiB of memory per pattern at load for the bad-bot list), so a file
//! of millions of patterns would cost far more than its bytes. They are fixed because
//! `[[user_agent]]` has no table of its own to hold such keys, and a key on every rule
//! would change the rule type every tool builds.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use super::{FileErrors, LoadError};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Default `max_file_bytes` of `[lists]` and `[asn]`: see the [module docs](self).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 * MIB;
/// Default `max_line_bytes` of `[lists]` and `[asn]`: see the [module docs](self).
pub const DEFAULT_MAX_LINE_BYTES: u64 = 64 * KIB;
/// Default `max_entries` of `[lists]` and `[asn]`: see the [module docs](self).
pub const DEFAULT_MAX_ENTRIES: u64 = 5_000_000;

/// Smallest `max_file_bytes` accepted: a smaller value is far more likely a unit mistake
/// (`512` meant as MiB) than a wish to refuse every file over 64 KiB.
pub const MIN_MAX_FILE_BYTES: u64 = 64 * KIB;
/// Smallest `max_line_bytes` accepted: below it, real rows (263 bytes) are at risk and a
/// unit mistake (`64` meant as KiB) is likelier than intent.
pub const MIN_MAX_LINE_BYTES: u64 = KIB;
/// Smallest `max_entries` accepted.
pub const MIN_MAX_ENTRIES: u64 = 1;

/// Read buffer for rule files: large enough that decompression runs in big blocks.
pub(crate) const READ_BUFFER: usize = 64 * 1024;

/// The caps one rule file is read within, and where they are set (named in errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCaps {
    /// Most bytes the file may hold, counted after decompression (and before, for the
    /// compressed file itself).
    pub max_file_bytes: u64,
    /// Longest line, in bytes, not counting its `\n`.
    pub max_line_bytes: u64,
    /// Most entries (rows, addresses, networks, patterns) in one file.
    pub max_entries: u64,
    /// The configuration section whose keys set these caps (`lists`, `asn`), so that an
    /// error can say which setting raises a cap; `None` for fixed caps.
    section: Option<&'static str>,
}

impl FileCaps {
    /// The fixed caps of `[[user_agent]]` pattern files: see the [module docs](self).
    pub const USER_AGENT_FILES: FileCaps = FileCaps {
        max_file_bytes: 16 * MIB,
        max_line_bytes: 64 * KIB,
        max_entries: 50_000,
        section: None,
    };

    /// Caps set by the keys `max_file_bytes`, `max_line_bytes` and `max_entries` of
    /// `[section]`.
    pub const fn new(
        section: &'static str,
        max_file_bytes: u64,
        max_line_bytes: u64,
        max_entries: u64,
    ) -> FileCaps {
        FileCaps {
            max_file_bytes,
            max_line_bytes,
            max_entries,
            section: Some(section),
        }
    }

    /// The default caps, as set by `[section]`.
    pub const fn defaults(section: &'static str) -> FileCaps {
        FileCaps::new(
            section,
            DEFAULT_MAX_FILE_BYTES,
            DEFAULT_MAX_LINE_BYTES,
            DEFAULT_MAX_ENTRIES,
        )
    }

    /// Opens `path` for reading within `max_file_bytes`. A file already larger than the
    /// cap is refused at once; one that grows past it while read fails then.
    ///
    /// # Errors
    ///
    /// `path: cannot read: ...`, or `path: size over ...`.
    pub(crate) fn open(&self, path: &Path) -> Result<BufReader<Capped<File>>, LoadError> {
        let file =
            File::open(path).map_err(|e| LoadError::file(path, format!("cannot read: {e}")))?;
        if let Ok(meta) = file.metadata() {
            if meta.is_file() && meta.len() > self.max_file_bytes {
                return Err(LoadError::file(path, self.over(false).to_string()));
            }
        }
        Ok(BufReader::with_capacity(
            READ_BUFFER,
            self.capped(file, false),
        ))
    }

    /// `inner`, failing with [`OverCap`] past `max_file_bytes`; `decompressed` words the
    /// error for the output of a decoder.
    pub(crate) fn capped<R: Read>(&self, inner: R, decompressed: bool) -> Capped<R> {
        Capped {
            inner,
            left: self.max_file_bytes,
            over: self.over(decompressed),
            tripped: false,
        }
    }

    /// The lines of `input`, each at most `max_line_bytes`.
    pub(crate) fn lines<R: BufRead>(&self, input: R) -> Lines<R> {
        Lines {
            input,
            buf: Vec::new(),
            line_no: 0,
            caps: *self,
        }
    }

    /// Whether a file with `entries` entries is over `max_entries`.
    pub(crate) fn too_many(&self, entries: u64) -> bool {
        entries > self.max_entries
    }

    /// The error for a file with more than `max_entries` entries.
    pub(crate) fn too_many_message(&self) -> String {
        format!(
            "more than {} entries ({})",
            self.max_entries,
            self.setting("max_entries")
        )
    }

    /// The message for a line read that failed, and the line it is on (`None`: the file).
    pub(crate) fn line_error(&self, error: &LineError) -> (Option<usize>, String) {
        match error {
            LineError::TooLong { line } => (
                Some(*line),
                format!(
                    "line longer than {} bytes ({})",
                    self.max_line_bytes,
                    self.setting("max_line_bytes")
                ),
            ),
            LineError::Read { after: 0, error } => (None, io_message(error, "cannot read")),
            LineError::Read { after, error } => (
                None,
                io_message(error, &format!("cannot read past line {after}")),
            ),
        }
    }

    /// The error a [`Capped`] reader fails with.
    fn over(&self, decompressed: bool) -> OverCap {
        OverCap {
            cap: self.max_file_bytes,
            decompressed,
            setting: self.section,
        }
    }

    /// What sets the cap `key`, for errors: `lists.max_entries`.
    fn setting(&self, key: &str) -> String {
        setting(self.section, key)
    }
}

/// What sets the cap `key` of `section`, for errors: `lists.max_entries`, or that the
/// cap is fixed.
fn setting(section: Option<&str>, key: &str) -> String {
    match section {
        Some(section) => format!("{section}.{key}"),
        None => "fixed for user-agent pattern files".to_string(),
    }
}

/// `error` in words: an [`OverCap`] as it is, anything else after `context`.
pub(crate) fn io_message(error: &io::Error, context: &str) -> String {
    match error.get_ref().and_then(|e| e.downcast_ref::<OverCap>()) {
        Some(over) => over.to_string(),
        None => format!("{context}: {error}"),
    }
}

/// A file (or a decoder's output) that went past `max_file_bytes`; carried inside the
/// `io::Error` a `Capped` reader fails with. Displayed as `decompressed size over 256
/// MiB (asn.max_file_bytes)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverCap {
    /// The cap, in bytes.
    cap: u64,
    /// Whether the bytes counted came out of a decoder.
    decompressed: bool,
    /// The section whose `max_file_bytes` raises the cap; `None` for fixed caps.
    setting: Option<&'static str>,
}

impl fmt::Display for OverCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.decompressed {
            "decompressed size"
        } else {
            "size"
        };
        let setting = setting(self.setting, "max_file_bytes");
        write!(f, "{what} over {} ({setting})", show_bytes(self.cap))
    }
}

impl std::error::Error for OverCap {}

/// `bytes` the way an operator writes it: `512 MiB`, `64 KiB`, else `1000 bytes`.
fn show_bytes(bytes: u64) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// A reader that passes on at most a cap's worth of bytes and fails with [`OverCap`] as
/// soon as one more arrives (and on every read after that), without buffering anything.
#[derive(Debug)]
pub(crate) struct Capped<R> {
    /// The file, or a decoder over it.
    inner: R,
    /// Bytes still allowed.
    left: u64,
    /// The error to fail with.
    over: OverCap,
    /// Set once the cap was exceeded: the reader stays failed.
    tripped: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tripped {
            return Err(io::Error::other(self.over));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // At the cap: the file may end here, or one byte more puts it over.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.tripped = true;
                    Err(io::Error::other(self.over))
                }
            };
        }
        let room = usize::try_from(self.left).map_or(buf.len(), |left| left.min(buf.len()));
        let read = self.inner.read(buf.get_mut(..room).unwrap_or_default())?;
        self.left = self
            .left
            .saturating_sub(u64::try_from(read).unwrap_or(u64::MAX));
        Ok(read)
    }
}

/// The lines of a rule file, one at a time, none longer than a cap.
#[derive(Debug)]
pub(crate) struct Lines<R> {
    /// The (capped) file.
    input: R,
    /// The current line; at most `max_line_bytes + 1` bytes.
    buf: Vec<u8>,
    /// Lines read so far.
    line_no: usize,
    /// The caps, for `max_line_bytes` and for errors.
    caps: FileCaps,
}

impl<R: BufRead> Lines<R> {
    /// [`Lines::next_line`], with the error that ends the file recorded in `errors`.
    pub(crate) fn next_or_record(&mut self, errors: &mut FileErrors<'_>) -> Option<(usize, &[u8])> {
        let caps = self.caps;
        match self.next_line() {
            Ok(line) => line,
            Err(error) => {
                errors.read_failed(&caps, &error);
                None
            }
        }
    }

    /// The next line and its number (from 1), without its `\n` and, on the first line,
    /// without a UTF-8 byte-order mark; `None` at the end. A CR before the `\n` is left
    /// to the caller (it counts towards the cap).
    ///
    /// # Errors
    ///
    /// [`LineError::TooLong`] for a line over the cap, read no further than one byte past
    /// it; [`LineError::Read`] when reading fails (an [`OverCap`] among them). Either
    /// ends the file: later calls may not be meaningful.
    pub(crate) fn next_line(&mut self) -> Result<Option<(usize, &[u8])>, LineError> {
        self.buf.clear();
        let limit = self.caps.max_line_bytes.saturating_add(1);
        let read = match (&mut self.input)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
        {
            Ok(0) => return Ok(None),
            Ok(read) => read,
            Err(error) => {
                return Err(LineError::Read {
                    after: self.line_no,
                    error,
                })
            }
        };
        self.line_no = self.line_no.saturating_add(1);
        let line = match self.buf.strip_suffix(b"\n") {
            Some(line) => line,
            // `limit` bytes and no newline: longer than the cap (the last line of a file
            // may lack its newline, but then it is shorter than `limit`).
            None if u64::try_from(read).unwrap_or(u64::MAX) >= limit => {
                return Err(LineError::TooLong { line: self.line_no })
            }
            None => self.buf.as_slice(),
        };
        let line = match self.line_no {
            1 => line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line),
            _ => line,
        };
        Ok(Some((self.line_no, line)))
    }
}

/// Why [`Lines::next_line`] gave no line.
#[derive(Debug)]
pub(crate) enum LineError {
    /// Line `line` is longer than the cap.
    TooLong {
        /// Its number, from 1.
        line: usize,
    },
    /// Reading failed after line `after` (0: before the first line).
    Read {
        /// Lines read before the failure.
        after: usize,
        /// What failed: an [`OverCap`], bad gzip data, an I/O error.
        error: io::Error,
    },
}

#[cfg(test)]
mod tests;
