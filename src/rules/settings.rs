//! The rule sections as written in the configuration — `[lists]`, `[asn]` and
//! `[[user_agent]]` — read with serde and checked here, by the layer that compiles them.
//! Paths are as written; `config` makes them absolute ([`ListsSettings::rebase`] and
//! friends) before anything is loaded.
//!
//! `[lists]` and `[asn]` each carry the caps their files are read within
//! (`max_file_bytes`, `max_line_bytes`, `max_entries`; see [`super::source`] for the
//! defaults and why): keys on the sections whose files they govern, so that an error
//! names the one setting that raises the cap (`asn.max_file_bytes`), and an ASN table of
//! 20 MB can have room without a block list getting the same. User-agent pattern files
//! have fixed caps ([`FileCaps::USER_AGENT_FILES`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::source::{
    FileCaps, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_LINE_BYTES, MIN_MAX_ENTRIES,
    MIN_MAX_FILE_BYTES, MIN_MAX_LINE_BYTES,
};
use crate::decision::{RuleAction, RuleName};
use crate::util::{Invalid, KeyPath};

/// `[lists]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListsSettings {
    /// Allow-list files: a match allows the request and skips every other rule.
    pub allow: Vec<ListFile>,
    /// Block-list files: a match denies with reason `blocklist`.
    pub block: Vec<ListFile>,
    /// Most bytes one list file may hold: a bigger one fails the load.
    pub max_file_bytes: u64,
    /// Longest line of a list file, in bytes.
    pub max_line_bytes: u64,
    /// Most entries (addresses and CIDRs) in one list file.
    pub max_entries: u64,
}

impl Default for ListsSettings {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            block: Vec::new(),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// One list file: a path, or `{ path = "...", dry_run = true }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "ListEntry", into = "ListEntry")]
pub struct ListFile {
    /// The file (absolute once the configuration is loaded).
    pub path: PathBuf,
    /// Evaluate and count, never decide.
    pub dry_run: bool,
}

impl ListFile {
    /// An enforcing list at `path`.
    pub fn new(path: impl Into<PathBuf>) -> ListFile {
        ListFile {
            path: path.into(),
            dry_run: false,
        }
    }
}

/// How a list entry may be written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(
    untagged,
    expecting = "a file path, or a table { path = \"...\", dry_run = true }"
)]
enum ListEntry {
    Path(PathBuf),
    Table(ListTable),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ListTable {
    path: PathBuf,
    #[serde(default)]
    dry_run: bool,
}

impl From<ListEntry> for ListFile {
    fn from(entry: ListEntry) -> ListFile {
        match entry {
            ListEntry::Path(path) => ListFile::new(path),
            ListEntry::Table(t) => ListFile {
                path: t.path,
                dry_run: t.dry_run,
            },
        }
    }
}

impl From<ListFile> for ListEntry {
    fn from(file: ListFile) -> ListEntry {
        if file.dry_run {
            ListEntry::Table(ListTable {
                path: file.path,
                dry_run: true,
            })
        } else {
            ListEntry::Path(file.path)
        }
    }
}

impl ListsSettings {
    /// Makes every path absolute against `base` (the configuration file's directory).
    pub fn rebase(&mut self, base: &Path) {
        for file in self.allow.iter_mut().chain(&mut self.block) {
            file.path = base.join(&file.path);
        }
    }

    /// Every list file, allow lists first.
    pub fn files(&self) -> impl Iterator<Item = &Path> + '_ {
        self.allow
            .iter()
            .chain(&self.block)
            .map(|f| f.path.as_path())
    }

    /// The caps every list file is read within.
    pub fn caps(&self) -> FileCaps {
        FileCaps::new(
            "lists",
            self.max_file_bytes,
            self.max_line_bytes,
            self.max_entries,
        )
    }

    /// Every problem, keys relative to `[lists]`.
    pub fn validate(&self) -> Vec<Invalid> {
        validate_caps(&self.caps())
    }
}

/// The problems with a section's caps, keys relative to the section.
fn validate_caps(caps: &FileCaps) -> Vec<Invalid> {
    [
        ("max_file_bytes", caps.max_file_bytes, MIN_MAX_FILE_BYTES),
        ("max_line_bytes", caps.max_line_bytes, MIN_MAX_LINE_BYTES),
        ("max_entries", caps.max_entries, MIN_MAX_ENTRIES),
    ]
    .into_iter()
    .filter(|&(_, value, min)| value < min)
    .map(|(key, _, min)| Invalid::error(KeyPath::of(key), format!("must be at least {min}")))
    .collect()
}

/// `[asn]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AsnSettings {
    /// IP-to-ASN databases (iptoasn TSV, ip-location-db CSV, MaxMind `.mmdb`; plain or
    /// gzip), all merged; the most specific range wins.
    pub databases: Vec<PathBuf>,
    /// Blocked ASNs: numbers or `"AS64496"` strings.
    pub block: Vec<Asn>,
    /// A file of blocked ASNs, one per line (`AS64496` or `64496`, `#` comments).
    pub block_file: Option<PathBuf>,
    /// Evaluate and count, never deny.
    pub dry_run: bool,
    /// Most bytes one database (after decompression) or the block file may hold.
    pub max_file_bytes: u64,
    /// Longest line of a text database or the block file, in bytes.
    pub max_line_bytes: u64,
    /// Most entries (rows, networks, AS numbers) in one file.
    pub max_entries: u64,
}

impl Default for AsnSettings {
    fn default() -> Self {
        Self {
            databases: Vec::new(),
            block: Vec::new(),
            block_file: None,
            dry_run: false,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// An autonomous system number as written in the configuration: `64496` or
/// `"AS64496"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(try_from = "AsnValue", into = "u32")]
pub struct Asn(pub u32);

#[derive(Deserialize)]
#[serde(untagged, expecting = "an AS number: 64496 or \"AS64496\"")]
enum AsnValue {
    Number(u32),
    Text(String),
}

/// Why an AS number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an AS number (64496 or \"AS64496\")")]
pub struct InvalidAsn(String);

impl TryFrom<AsnValue> for Asn {
    type Error = InvalidAsn;

    fn try_from(value: AsnValue) -> Result<Self, Self::Error> {
        match value {
            AsnValue::Number(n) => Ok(Asn(n)),
            AsnValue::Text(text) => parse_asn(&text).map(Asn).ok_or(InvalidAsn(text)),
        }
    }
}

impl From<Asn> for u32 {
    fn from(asn: Asn) -> u32 {
        asn.0
    }
}

/// Parses `64496`, `AS64496` or `as64496`.
pub fn parse_asn(text: &str) -> Option<u32> {
    let text = text.trim();
    let digits = text
        .strip_prefix("AS")
        .or_else(|| text.strip_prefix("as"))
        .or_else(|| text.strip_prefix("As"))
        .unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl AsnSettings {
    /// Makes every path absolute against `base`.
    pub fn rebase(&mut self, base: &Path) {
        for db in &mut self.databases {
            *db = base.join(&*db);
        }
        if let Some(file) = &mut self.block_file {
            *file = base.join(&*file);
        }
    }

    /// The blocked numbers given inline.
    pub fn blocked(&self) -> Vec<u32> {
        self.block.iter().map(|a| a.0).collect()
    }

    /// Every file: databases, then the block file.
    pub fn files(&self) -> impl Iterator<Item = &Path> + '_ {
        self.databases
            .iter()
            .map(PathBuf::as_path)
            .chain(self.block_file.as_deref())
    }

    /// The caps every database and the block file are read within.
    pub fn caps(&self) -> FileCaps {
        FileCaps::new(
            "asn",
            self.max_file_bytes,
            self.max_line_bytes,
            self.max_entries,
        )
    }

    /// Every problem, keys relative to `[asn]`.
    pub fn validate(&self) -> Vec<Invalid> {
        let mut problems = validate_caps(&self.caps());
        for (i, asn) in self.block.iter().enumerate() {
            if asn.0 == 0 {
                problems.push(Invalid::error(
                    KeyPath::of("block").index(i),
                    "AS 0 means \"not routed\" and never matches; remove it",
                ));
            }
        }
        if (!self.block.is_empty() || self.block_file.is_some()) && self.databases.is_empty() {
            problems.push(Invalid::error(
                KeyPath::of("databases"),
                "blocking ASNs needs at least one file in asn.databases",
            ));
        }
        problems
    }
}

/// One `[[user_agent]]` rule as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserAgentSpec {
    /// Reported as `txn.guard.rule` when the rule decides.
    pub name: RuleName,
    /// A regular expression (Rust `regex` syntax) searched in the user agent.
    pub pattern: Option<String>,
    /// A file of patterns, one per line (`#` comments); any line matching is a match.
    pub file: Option<PathBuf>,
    /// Matches a missing or empty user agent.
    #[serde(default)]
    pub empty: bool,
    /// `allow` or `deny`.
    pub action: RuleAction,
    /// Case-insensitive matching.
    #[serde(default)]
    pub ignore_case: bool,
    /// Patterns are plain substrings, not regular expressions.
    #[serde(default)]
    pub literal: bool,
    /// Evaluate and count, never decide.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a user-agent rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UaSource {
    /// One regular expression.
    Pattern(String),
    /// A file of patterns.
    File(PathBuf),
    /// A missing or empty user agent.
    Empty,
}

impl UserAgentSpec {
    /// What the rule matches; `None` unless exactly one of `pattern`, `file` and
    /// `empty = true` is given ([`UserAgentSpec::validate`] says so).
    pub fn source(&self) -> Option<UaSource> {
        match (&self.pattern, &self.file, self.empty) {
            (Some(pattern), None, false) => Some(UaSource::Pattern(pattern.clone())),
            (None, Some(file), false) => Some(UaSource::File(file.clone())),
            (None, None, true) => Some(UaSource::Empty),
            _ => None,
        }
    }

    /// Makes the pattern file's path absolute against `base`.
    pub fn rebase(&mut self, base: &Path) {
        if let Some(file) = &mut self.file {
            *file = base.join(&*file);
        }
    }

    /// Every problem, keys relative to this `[[user_agent]]`.
    pub fn validate(&self) -> Vec<Invalid> {
        let mut problems = Vec::new();
        if self.source().is_none() {
            problems.push(Invalid::error(
                KeyPath::default(),
                "give exactly one of pattern, file or empty = true",
            ));
        }
        if self.pattern.as_deref() == Some("") {
            problems.push(Invalid::error(
                KeyPath::of("pattern"),
                "empty pattern (it would match every user agent)",
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asn_numbers() {
        assert_eq!(parse_asn("AS64496"), Some(64496));
        assert_eq!(parse_asn(" as13335 "), Some(13335));
        assert_eq!(parse_asn("15169"), Some(15169));
        for bad in ["", "AS", "AS-1", "4294967296", "12a"] {
            assert_eq!(parse_asn(bad), None, "{bad}");
        }
    }

    #[test]
    fn list_entries_are_paths_or_tables() {
        let lists: ListsSettings = toml::from_str(
            "allow = [\"a.txt\"]\nblock = [\"b.txt\", { path = \"c.txt\", dry_run = true }]\n",
        )
        .unwrap();
        assert_eq!(lists.allow, vec![ListFile::new("a.txt")]);
        assert_eq!(
            lists.block[1],
            ListFile {
                path: "c.txt".into(),
                dry_run: true
            }
        );
        let err = toml::from_str::<ListsSettings>("block = [{ path = \"c\", dryrun = true }]\n")
            .unwrap_err();
        assert!(err.message().contains("a file path, or a table"), "{err}");
    }

    #[test]
    fn asn_settings() {
        let asn: AsnSettings =
            toml::from_str("databases = [\"a.csv\"]\nblock = [64496, \"AS64511\"]\n").unwrap();
        assert_eq!(asn.blocked(), vec![64496, 64511]);
        assert!(asn.validate().is_empty());
        let err = toml::from_str::<AsnSettings>("block = [\"ASX\"]\n").unwrap_err();
        assert!(
            err.message().contains("\"ASX\" is not an AS number"),
            "{err}"
        );
        let zero: AsnSettings = toml::from_str("databases = [\"a\"]\nblock = [0]\n").unwrap();
        assert_eq!(zero.validate()[0].key.to_string(), "block[0]");
        let no_db: AsnSettings = toml::from_str("block = [1]\n").unwrap();
        assert!(no_db.validate()[0].message.contains("asn.databases"));
    }

    #[test]
    fn caps_default_and_are_checked() {
        let lists: ListsSettings = toml::from_str("block = [\"b.txt\"]\n").unwrap();
        assert_eq!(lists.caps(), FileCaps::defaults("lists"));
        assert!(lists.validate().is_empty());
        let asn: AsnSettings =
            toml::from_str("max_file_bytes = 1048576\nmax_line_bytes = 2048\nmax_entries = 5\n")
                .unwrap();
        assert_eq!(asn.caps(), FileCaps::new("asn", 1 << 20, 2048, 5));
        assert!(asn.validate().is_empty());
        let low: ListsSettings =
            toml::from_str("max_file_bytes = 512\nmax_line_bytes = 64\nmax_entries = 0\n").unwrap();
        let found: Vec<String> = low.validate().iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "max_file_bytes: must be at least 65536",
                "max_line_bytes: must be at least 1024",
                "max_entries: must be at least 1",
            ]
        );
        let err = toml::from_str::<AsnSettings>("max_entries = -1\n").unwrap_err();
        assert!(err.message().contains("invalid value"), "{err}");
    }

    #[test]
    fn user_agent_rules_need_exactly_one_source() {
        for (toml, ok) in [
            ("name = \"a\"\npattern = \"x\"\naction = \"deny\"", true),
            ("name = \"a\"\naction = \"deny\"", false),
            (
                "name = \"a\"\npattern = \"x\"\nempty = true\naction = \"deny\"",
                false,
            ),
        ] {
            let spec: UserAgentSpec = toml::from_str(toml).unwrap();
            assert_eq!(spec.validate().is_empty(), ok, "{toml}");
        }
        let err =
            toml::from_str::<UserAgentSpec>("name = \"a\"\npattern = \"x\"\naction = \"block\"")
                .unwrap_err();
        assert!(err.message().contains("block"), "{err}");
    }
}
