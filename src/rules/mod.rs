//! Rule inputs: loading rule files and compiling them into immutable lookup structures.
//!
//! Everything here is built off the request path (at start-up, by `check`, and later by
//! reloads) and then shared read-only. Loading never panics on file contents: every
//! problem becomes a [`LoadError`] that names the file and, where there is one, the line.

pub mod interval;
pub mod ip;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::{ListFile, RulesConfig};
use ip::{IpList, IpMatcher};

/// Every compiled rule, immutable once built. A reload builds a new one and swaps it in.
#[derive(Debug)]
pub struct RuleSet {
    /// `[lists] allow`: a match allows and skips every other step.
    pub allow: IpMatcher,
    /// `[lists] block`: a match denies with reason `blocklist`.
    pub block: IpMatcher,
}

impl RuleSet {
    /// An empty rule set: every request is allowed with reason `none`.
    pub fn empty() -> Self {
        Self {
            allow: IpMatcher::new(Vec::new()),
            block: IpMatcher::new(Vec::new()),
        }
    }

    /// Loads and compiles every rule input named by the configuration.
    ///
    /// # Errors
    ///
    /// Every problem in every file (not just the first), each with its file and line.
    pub fn load(config: &RulesConfig) -> Result<RuleSet, LoadErrors> {
        let mut errors = Vec::new();
        let mut load_all = |files: &[ListFile]| {
            let mut loaded = Vec::with_capacity(files.len());
            for file in files {
                match IpList::load(&file.path) {
                    Ok(list) => loaded.push(list),
                    Err(LoadErrors(mut errs)) => errors.append(&mut errs),
                }
            }
            loaded
        };
        let allow = load_all(&config.allow);
        let block = load_all(&config.block);
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        Ok(Self {
            allow: IpMatcher::new(allow),
            block: IpMatcher::new(block),
        })
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
