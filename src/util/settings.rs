//! What validating settings reports: a problem at a key. Each layer checks its own
//! section and names keys relative to it (`rate`, `block[1]`); `config` prefixes the
//! section (`limit[2].rate`) and turns the key into `file:line` or the environment
//! variable that set it.

use std::fmt;

/// A path to a key inside the settings: `server.listen`, `limit[2].rate`, `asn.block[1]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct KeyPath(Vec<Segment>);

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A table key.
    Key(String),
    /// An element of an array (0-based).
    Index(usize),
}

impl KeyPath {
    /// The path of a top-level key (or of the section itself).
    pub fn of(key: &str) -> KeyPath {
        KeyPath(vec![Segment::Key(key.to_string())])
    }

    /// This path followed by `key`.
    #[must_use]
    pub fn key(mut self, key: &str) -> KeyPath {
        self.0.push(Segment::Key(key.to_string()));
        self
    }

    /// This path followed by array index `index`.
    #[must_use]
    pub fn index(mut self, index: usize) -> KeyPath {
        self.0.push(Segment::Index(index));
        self
    }

    /// `prefix` followed by this path.
    #[must_use]
    pub fn within(self, prefix: &KeyPath) -> KeyPath {
        let mut segments = prefix.0.clone();
        segments.extend(self.0);
        KeyPath(segments)
    }

    /// The steps, outermost first.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// Whether this is the empty path (the whole document or section).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Probably not what was meant, but valid: reported, nothing refused.
    Warning,
    /// The settings cannot be used.
    Error,
}

/// One problem found while checking settings: where and what.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Invalid {
    /// The key at fault, relative to whoever checked it (see [`Invalid::within`]).
    pub key: KeyPath,
    /// What is wrong, in words an operator can act on; does not repeat the key.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl Invalid {
    /// An error at `key`.
    pub fn error(key: KeyPath, message: impl Into<String>) -> Invalid {
        Invalid {
            key,
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// A warning at `key`.
    pub fn warning(key: KeyPath, message: impl Into<String>) -> Invalid {
        Invalid {
            key,
            message: message.into(),
            severity: Severity::Warning,
        }
    }

    /// The same problem with its key placed under `prefix`.
    #[must_use]
    pub fn within(mut self, prefix: &KeyPath) -> Invalid {
        self.key = self.key.within(prefix);
        self
    }

    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_as_written_in_toml() {
        let path = KeyPath::of("limit").index(2).key("rate");
        assert_eq!(path.to_string(), "limit[2].rate");
        let inner = Invalid::error(KeyPath::of("block").index(1), "not an AS number");
        assert_eq!(
            inner.within(&KeyPath::of("asn")).to_string(),
            "asn.block[1]: not an AS number"
        );
    }
}
