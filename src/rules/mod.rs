//! Rule inputs: loading rule files and compiling them into immutable lookup structures.
//!
//! Everything here is built off the request path (at start-up, by `check`, and later by
//! reloads) and then shared read-only. Loading never panics on file contents: every
//! problem becomes a [`LoadError`] that names the file and, where there is one, the line.
//! Every file is read within caps on its size, line length and entries ([`source`]), so
//! a bad download costs bounded memory and fails the load like any other error.

pub mod asn;
pub mod interval;
pub mod ip;
pub mod loaded;
pub mod mmdb;
pub mod settings;
pub mod source;
pub mod user_agent;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::util::Stamps;
use asn::{AsnBlock, AsnDb};
use ip::{IpList, IpMatcher};
pub use loaded::Loaded;
pub use settings::{AsnSettings, ListFile, ListsSettings, UaSource, UserAgentSpec};
pub use source::FileCaps;
use user_agent::UaRules;

/// Every compiled rule, immutable once built. A reload builds a new one and swaps it in.
/// Rate-limit state lives beside it, in the engine.
///
/// The lists and the ASN tables are [`Loaded`]: a reload whose files did not change
/// keeps the structures in force instead of parsing them again.
#[derive(Debug, Default)]
pub struct RuleSet {
    /// `[lists] allow`: a match allows and skips every other step.
    pub allow: Loaded<IpMatcher>,
    /// Allow lists marked `dry_run`: reported, never decisive.
    pub allow_dry_run: Loaded<IpMatcher>,
    /// `[lists] block`: a match denies with reason `blocklist`.
    pub block: Loaded<IpMatcher>,
    /// Block lists marked `dry_run`: reported, never decisive. Kept apart from `block` so
    /// that a dry-run list never hides an enforcing one (first list wins within a matcher).
    pub block_dry_run: Loaded<IpMatcher>,
    /// `[asn] databases`: address → autonomous system.
    pub asn_db: Loaded<AsnDb>,
    /// `[asn] block` and `block_file`.
    pub asn_block: AsnBlock,
    /// `[asn] dry_run`.
    pub asn_dry_run: bool,
    /// `[[user_agent]]` rules, in order.
    pub user_agents: UaRules,
}

impl RuleSet {
    /// An empty rule set: every request is allowed with reason `none`.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Loads and compiles every rule input named by the rule sections; `config_path`
    /// locates errors in inline settings such as user-agent patterns. Lists and ASN tables
    /// whose files are unchanged since `previous` was loaded, and whose caps
    /// (`max_file_bytes`, `max_line_bytes`, `max_entries`) are the same, are kept from it.
    ///
    /// At start-up (no `previous`) the ASN tables load on a thread of their own while the
    /// calling thread reads the lists and compiles the user-agent rules: the two largest
    /// inputs in parallel, as nothing is answering requests yet. A reload builds on the
    /// calling thread alone, so that on a small machine a core stays free for requests
    /// (two builder threads on two cores delayed requests by 3 ms at p99.9).
    ///
    /// # Errors
    ///
    /// Every problem in every file (not just the first), each with its file and line; a
    /// file over one of its section's caps is one error naming the file and the cap.
    pub fn load(
        lists: &ListsSettings,
        asn: &AsnSettings,
        user_agents: &[UserAgentSpec],
        config_path: &Path,
        previous: Option<&RuleSet>,
    ) -> Result<RuleSet, LoadErrors> {
        let (list_caps, asn_caps) = (lists.caps(), asn.caps());
        let asn_stamps = Stamps::of(&asn.databases);
        let kept_asn_db = Loaded::kept(previous.map(|p| &p.asn_db), &asn_stamps, &asn_caps);
        let load_asn_db = || match &kept_asn_db {
            Some(kept) => Ok(kept.clone()),
            None => AsnDb::load_capped(&asn.databases, &asn_caps)
                .map(|db| Loaded::from_files(db, asn_stamps.clone(), asn_caps)),
        };
        let (loaded_lists, loaded_asn_db, loaded_user_agents) = std::thread::scope(|scope| {
            let asn_thread = (previous.is_none() && !asn.databases.is_empty())
                .then(|| {
                    std::thread::Builder::new()
                        .name("load-asn".into())
                        .spawn_scoped(scope, load_asn_db)
                        .ok()
                })
                .flatten();
            let previous_lists = previous.map(RuleSet::lists);
            let loaded_lists = [
                (&lists.allow, false, previous_lists.map(|[l, ..]| l)),
                (&lists.allow, true, previous_lists.map(|[_, l, ..]| l)),
                (&lists.block, false, previous_lists.map(|[.., l, _]| l)),
                (&lists.block, true, previous_lists.map(|[.., l]| l)),
            ]
            .map(|(files, dry_run, previous)| load_lists(files, dry_run, previous, &list_caps));
            let loaded_user_agents = UaRules::load(user_agents, config_path);
            let loaded_asn_db = match asn_thread {
                Some(thread) => thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                // A reload, no database, or no thread to be had: here.
                None => load_asn_db(),
            };
            (loaded_lists, loaded_asn_db, loaded_user_agents)
        });
        let mut errors = Vec::new();
        let [allow, allow_dry_run, block, block_dry_run] =
            loaded_lists.map(|loaded| keep(&mut errors, loaded));
        let asn_db = keep(&mut errors, loaded_asn_db);
        let asn_block = keep(
            &mut errors,
            AsnBlock::load_capped(&asn.blocked(), asn.block_file.as_deref(), &asn_caps),
        );
        let user_agents = keep(&mut errors, loaded_user_agents);
        match (
            allow,
            allow_dry_run,
            block,
            block_dry_run,
            asn_db,
            asn_block,
            user_agents,
        ) {
            (
                Some(allow),
                Some(allow_dry_run),
                Some(block),
                Some(block_dry_run),
                Some(asn_db),
                Some(asn_block),
                Some(user_agents),
            ) if errors.is_empty() => Ok(RuleSet {
                allow,
                allow_dry_run,
                block,
                block_dry_run,
                asn_db,
                asn_block,
                asn_dry_run: asn.dry_run,
                user_agents,
            }),
            _ => Err(LoadErrors(errors)),
        }
    }

    /// The four list matchers: allow, allow dry run, block, block dry run.
    fn lists(&self) -> [&Loaded<IpMatcher>; 4] {
        [
            &self.allow,
            &self.allow_dry_run,
            &self.block,
            &self.block_dry_run,
        ]
    }
}

/// Most errors reported for one rule file; the rest are summed up in one final error.
///
/// A file in the wrong format (say, a CSV given as a list) would otherwise produce one
/// error per line, burying every other problem in `check` output.
pub const MAX_ERRORS_PER_FILE: usize = 100;

/// How much of an offending entry an error message quotes, in characters.
pub(crate) const QUOTE_CHARS: usize = 60;

/// `text` in double quotes with control characters escaped, cut to [`QUOTE_CHARS`].
pub(crate) fn quote(text: &str) -> String {
    if text.chars().count() <= QUOTE_CHARS {
        format!("{text:?}")
    } else {
        let cut: String = text.chars().take(QUOTE_CHARS).collect();
        format!("{:?}", format!("{cut}…"))
    }
}

/// Collects one file's errors: every bad line up to [`MAX_ERRORS_PER_FILE`], then one
/// error counting the rest; problems with the file as a whole are always kept.
pub(crate) struct FileErrors<'a> {
    path: &'a Path,
    errors: Vec<LoadError>,
    unreported: usize,
}

impl<'a> FileErrors<'a> {
    /// No errors yet for `path`.
    pub(crate) fn new(path: &'a Path) -> Self {
        Self {
            path,
            errors: Vec::new(),
            unreported: 0,
        }
    }

    /// Records a problem on line `line_no` (1-based).
    pub(crate) fn line(&mut self, line_no: usize, message: impl fmt::Display) {
        if self.errors.len() < MAX_ERRORS_PER_FILE {
            self.errors
                .push(LoadError::line(self.path, line_no, message.to_string()));
        } else {
            self.unreported = self.unreported.saturating_add(1);
        }
    }

    /// Records a problem with the file as a whole.
    pub(crate) fn file(&mut self, message: String) {
        self.errors.push(LoadError::file(self.path, message));
    }

    /// Records why reading the file stopped (a line over the cap, the file over its
    /// size cap, an I/O error): always kept, on its line when it has one.
    pub(crate) fn read_failed(&mut self, caps: &FileCaps, error: &source::LineError) {
        let (line, message) = caps.line_error(error);
        self.errors.push(match line {
            Some(line) => LoadError::line(self.path, line, message),
            None => LoadError::file(self.path, message),
        });
    }

    /// Records that the file has more entries than `caps` allow.
    pub(crate) fn too_many(&mut self, caps: &FileCaps) {
        self.file(caps.too_many_message());
    }

    /// `Ok` when nothing was recorded, otherwise every error plus the count of the rest.
    pub(crate) fn finish(mut self) -> Result<(), LoadErrors> {
        if self.unreported > 0 {
            let message = format!(
                "{} more invalid lines not shown (only the first {MAX_ERRORS_PER_FILE} are reported)",
                self.unreported
            );
            self.file(message);
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(LoadErrors(self.errors))
        }
    }
}

/// The shared data set used by tests over real data: `$SPOA_GUARD_DATA`, else
/// `../shared/data` next to the repository, if it has `subdir`. Tests skip without it.
#[cfg(test)]
pub(crate) fn shared_data(subdir: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("SPOA_GUARD_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    };
    dir.join(subdir).is_dir().then_some(dir)
}

/// The value of `result`, or `None` with its errors added to `errors`.
fn keep<T>(errors: &mut Vec<LoadError>, result: Result<T, LoadErrors>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(LoadErrors(mut errs)) => {
            errors.append(&mut errs);
            None
        }
    }
}

/// Loads the lists of `files` whose `dry_run` flag equals `dry_run`, in order, within
/// `caps`, or keeps the matcher of `previous` when those files and caps did not change.
fn load_lists(
    files: &[ListFile],
    dry_run: bool,
    previous: Option<&Loaded<IpMatcher>>,
    caps: &FileCaps,
) -> Result<Loaded<IpMatcher>, LoadErrors> {
    let files: Vec<&ListFile> = files.iter().filter(|f| f.dry_run == dry_run).collect();
    let paths: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    let stamps = Stamps::of(&paths);
    if let Some(kept) = Loaded::kept(previous, &stamps, caps) {
        return Ok(kept);
    }
    let mut lists = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match IpList::load_capped(&file.path, caps) {
            Ok(list) => lists.push(list),
            Err(LoadErrors(mut errs)) => errors.append(&mut errs),
        }
    }
    if errors.is_empty() {
        Ok(Loaded::from_files(IpMatcher::new(lists), stamps, *caps))
    } else {
        Err(LoadErrors(errors))
    }
}

/// One problem found while loading a rule input, located as precisely as possible.
///
/// Displayed as `file:line: message` (or `file: message` when the problem is not tied
/// to a line, e.g. a missing file), the format editors and CI annotators understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file the problem is in.
    pub path: PathBuf,
    /// 1-based line number, when the problem is on a particular line.
    pub line: Option<usize>,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl LoadError {
    /// A problem with the file as a whole (unreadable, missing, ...).
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            line: None,
            message: message.into(),
        }
    }

    /// A problem on one line of a file.
    pub fn line(path: &Path, line: usize, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            line: Some(line),
            message: message.into(),
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for LoadError {}

/// Every problem found while loading a set of rule inputs.
///
/// Loading keeps going after the first bad line so that `spoa-guard check` can report
/// all of them at once; the list is never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

impl From<LoadError> for LoadErrors {
    fn from(err: LoadError) -> Self {
        Self(vec![err])
    }
}
