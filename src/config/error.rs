//! Configuration problems as the operator sees them: where (`file:line`, or the
//! environment variable that set the value), which key, and what is wrong.

use std::fmt;
use std::path::PathBuf;

use crate::util::settings::Severity;

/// Where a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// In the configuration file, on `line` (1-based) when known.
    File {
        /// The file.
        path: PathBuf,
        /// The line, when the problem is tied to one.
        line: Option<usize>,
    },
    /// In an environment override.
    Env {
        /// The variable, e.g. `SPOA_GUARD__SERVER__LISTEN`.
        var: String,
    },
}

/// One problem with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where it is.
    pub origin: Origin,
    /// The key at fault, as written in TOML (`limit "login".rate`), when there is one.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl ConfigError {
    /// An error with the file as a whole.
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: Origin::File {
                path: path.into(),
                line: None,
            },
            key: None,
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for ConfigError {
    /// `spoa-guard.toml:12: limit "login".rate: must be above 0`, or
    /// `environment SPOA_GUARD__SERVER__LISTN: unknown field ...`; warnings say so.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File {
                path,
                line: Some(line),
            } => write!(f, "{}:{line}: ", path.display())?,
            Origin::File { path, line: None } => write!(f, "{}: ", path.display())?,
            Origin::Env { var } => write!(f, "environment {var}: ")?,
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one configuration, errors first; never empty when returned
/// as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors (not the warnings).
    pub fn errors(&self) -> impl Iterator<Item = &ConfigError> + '_ {
        self.0.iter().filter(|e| e.is_error())
    }
}

impl fmt::Display for ConfigErrors {
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

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(err: ConfigError) -> Self {
        ConfigErrors(vec![err])
    }
}
