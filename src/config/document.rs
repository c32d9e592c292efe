//! The configuration as a TOML tree that remembers where every key and value came from:
//! a byte span into the file, or — for environment overrides — into a region after it
//! that maps back to the variable. [`Document::origin`] turns any span into `file:line`
//! or the variable's name; [`Document::locate`] does the same for a [`KeyPath`].
//!
//! The tree is the toml crate's own parse tree (`DeTable`, with spans), so a value read
//! from it by serde carries its span into any error.

use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use super::error::{ConfigError, ConfigErrors, Origin};
use crate::util::settings::{Segment, Severity};
use crate::util::KeyPath;

/// A value of the tree, with its span.
pub(crate) type Node<'a> = Spanned<DeValue<'a>>;

/// One environment override: its variable, where its value lies in the source buffer.
#[derive(Debug, Clone)]
pub(crate) struct EnvSpan {
    /// The variable's name.
    pub var: String,
    /// The value's bytes in the buffer the document was parsed from.
    pub range: Range<usize>,
}

/// The parsed configuration; see the module docs.
#[derive(Debug)]
pub(crate) struct Document<'a> {
    path: PathBuf,
    /// The buffer: the file's text, then each override's value on a line of its own.
    buffer: &'a str,
    /// Where the file's text ends in `buffer`.
    text_len: usize,
    /// Byte offset of every line start of the file.
    line_starts: Vec<usize>,
    /// The overrides whose values lie after the file's text.
    env: Vec<EnvSpan>,
    /// The top-level table.
    pub root: DeTable<'a>,
}

impl<'a> Document<'a> {
    /// Parses the first `text_len` bytes of `buffer` as the file at `path`.
    ///
    /// # Errors
    ///
    /// Every TOML syntax error, with its line.
    pub fn parse(path: &Path, buffer: &'a str, text_len: usize) -> Result<Self, ConfigErrors> {
        let text = buffer.get(..text_len).unwrap_or(buffer);
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let mut doc = Document {
            path: path.to_path_buf(),
            buffer,
            text_len: text.len(),
            line_starts,
            env: Vec::new(),
            root: DeTable::new(),
        };
        let (root, errors) = DeTable::parse_recoverable(text);
        if !errors.is_empty() {
            let errors = errors
                .iter()
                .map(|e| doc.error(e.span(), None, e.message().to_string()))
                .collect();
            return Err(ConfigErrors(errors));
        }
        doc.root = root.into_inner();
        Ok(doc)
    }

    /// The configuration file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where `span` points: a line of the file, or an environment variable.
    pub fn origin(&self, span: Option<Range<usize>>) -> Origin {
        let Some(span) = span else {
            return self.file_origin(None);
        };
        if span.start > self.text_len {
            if let Some(env) = self
                .env
                .iter()
                .find(|e| e.range.start <= span.start && span.start <= e.range.end)
            {
                return Origin::Env {
                    var: env.var.clone(),
                };
            }
        }
        let line = self
            .line_starts
            .partition_point(|&start| start <= span.start);
        self.file_origin(Some(line.max(1)))
    }

    fn file_origin(&self, line: Option<usize>) -> Origin {
        Origin::File {
            path: self.path.clone(),
            line,
        }
    }

    /// A problem at `span`, about `key`.
    pub fn error(
        &self,
        span: Option<Range<usize>>,
        key: Option<&KeyPath>,
        message: String,
    ) -> ConfigError {
        self.problem(span, key, message, Severity::Error)
    }

    /// A problem of `severity` at `span`, about `key`.
    pub fn problem(
        &self,
        span: Option<Range<usize>>,
        key: Option<&KeyPath>,
        message: String,
        severity: Severity,
    ) -> ConfigError {
        ConfigError {
            origin: self.origin(span),
            key: key.filter(|k| !k.is_empty()).map(|k| self.render(k)),
            message,
            severity,
        }
    }

    /// The span of the deepest node on `key`'s path that exists (the whole key when it
    /// is there, else the closest table that holds it).
    pub fn locate(&self, key: &KeyPath) -> Option<Range<usize>> {
        let mut span = None;
        let mut node: Option<&Node<'a>> = None;
        for segment in key.segments() {
            let next = match (segment, node) {
                (Segment::Key(k), None) => self.root.get(k.as_str()),
                (Segment::Key(k), Some(n)) => {
                    n.get_ref().as_table().and_then(|t| t.get(k.as_str()))
                }
                (Segment::Index(i), Some(n)) => n.get_ref().as_array().and_then(|a| a.get(*i)),
                (Segment::Index(_), None) => None,
            };
            match next {
                Some(next) => {
                    span = Some(next.span());
                    node = Some(next);
                }
                None => break,
            }
        }
        span
    }

    /// `key` as an operator reads it: `limit "login".rate` when the array element has a
    /// `name`, `limit[1].rate` otherwise.
    pub fn render(&self, key: &KeyPath) -> String {
        let mut text = String::new();
        let mut node: Option<&Node<'a>> = None;
        for (i, segment) in key.segments().iter().enumerate() {
            match segment {
                Segment::Key(k) => {
                    if i > 0 {
                        text.push('.');
                    }
                    text.push_str(k);
                    node = match node {
                        None => self.root.get(k.as_str()),
                        Some(n) => n.get_ref().as_table().and_then(|t| t.get(k.as_str())),
                    };
                }
                Segment::Index(index) => {
                    node = node
                        .and_then(|n| n.get_ref().as_array())
                        .and_then(|a| a.get(*index));
                    let name = node
                        .and_then(|n| n.get_ref().as_table())
                        .and_then(|t| t.get("name"))
                        .and_then(|n| n.get_ref().as_str());
                    match name {
                        Some(name) => text.push_str(&format!(" {name:?}")),
                        None => text.push_str(&format!("[{index}]")),
                    }
                }
            }
        }
        text
    }

    /// Sets the value at `path` to the override `var`'s value, which lies at `range` of
    /// the buffer: parsed as a TOML value when it is one (`8080`, `true`, `["a", "b"]`),
    /// else taken as a string; `comma_list`: a value that is not TOML becomes an array of
    /// its comma-separated parts. Tables on the way are made; array elements must
    /// exist.
    ///
    /// # Errors
    ///
    /// A path into something that is not a table, or to an array element the file does
    /// not have, explained.
    pub fn set(
        &mut self,
        var: &str,
        path: &[Segment],
        range: Range<usize>,
        comma_list: bool,
    ) -> Result<(), OverrideError> {
        self.env.push(EnvSpan {
            var: var.to_string(),
            range: range.clone(),
        });
        let value = self.env_value(range, comma_list);
        let Some((Segment::Key(last), parents)) = path.split_last() else {
            return Err(OverrideError::NoKey);
        };
        let mut table = &mut self.root;
        let mut at = KeyPath::default();
        let mut parents = parents.iter().peekable();
        while let Some(segment) = parents.next() {
            let Segment::Key(key) = segment else {
                return Err(OverrideError::NotAnArray(at.to_string()));
            };
            at = at.key(key);
            if !table.contains_key(key.as_str()) {
                let made = Spanned::new(value.span(), DeValue::Table(DeTable::new()));
                table.insert(Spanned::new(value.span(), key.clone().into()), made);
            }
            let Some(node) = table.get_mut(key.as_str()) else {
                return Err(OverrideError::NotATable(at.to_string()));
            };
            let is_array = matches!(node.get_ref(), DeValue::Array(_));
            let node = match (is_array, parents.peek()) {
                (true, Some(Segment::Index(i))) => {
                    let i = *i;
                    parents.next();
                    let DeValue::Array(array) = node.get_mut() else {
                        return Err(OverrideError::NotAnArray(at.to_string()));
                    };
                    let count = array.len();
                    at = at.index(i);
                    match array.get_mut(i) {
                        Some(element) => element,
                        None => {
                            return Err(OverrideError::NoEntry {
                                count,
                                array: key.clone(),
                            })
                        }
                    }
                }
                (true, _) => {
                    return Err(OverrideError::NoIndex {
                        array: at.to_string(),
                        var: var.to_string(),
                    })
                }
                (false, Some(Segment::Index(_))) => {
                    return Err(OverrideError::NotAnArray(at.to_string()))
                }
                (false, _) => node,
            };
            match node.get_mut() {
                DeValue::Table(inner) => table = inner,
                _ => return Err(OverrideError::NotATable(at.to_string())),
            }
        }
        let key = Spanned::new(value.span(), last.clone().into());
        table.insert(key, value);
        Ok(())
    }

    /// The override value at `range`, spans shifted to lie there.
    fn env_value(&self, range: Range<usize>, comma_list: bool) -> Node<'a> {
        let text: &'a str = self.buffer.get(range.clone()).unwrap_or_default();
        let parsed = DeValue::parse(text)
            .ok()
            // A bare word such as `yes` parses as nothing TOML; keep such text a string.
            .filter(|v| !matches!(v.get_ref(), DeValue::Datetime(_)));
        match parsed {
            Some(value) => shift(value, range.start),
            None if comma_list => {
                let mut array = DeArray::new();
                let mut offset = range.start;
                for part in text.split(',') {
                    let item = part.trim();
                    let start = offset + (part.len() - part.trim_start().len());
                    let span = start..start + item.len();
                    let value = match DeValue::parse(item) {
                        Ok(v) if !matches!(v.get_ref(), DeValue::Datetime(_)) => shift(v, start),
                        _ => Spanned::new(span, DeValue::String(item.into())),
                    };
                    array.push(value);
                    offset += part.len() + 1;
                }
                Spanned::new(range, DeValue::Array(array))
            }
            None => Spanned::new(range, DeValue::String(text.into())),
        }
    }
}

/// Why an environment override cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OverrideError {
    /// `SPOA_GUARD__SERVER` names a section, not a key.
    #[error("an override must name a key, e.g. SPOA_GUARD__SERVER__LISTEN")]
    NoKey,
    /// A number where there is no array.
    #[error("{0} is not an array")]
    NotAnArray(String),
    /// A key below something that is not a table.
    #[error("{0} is not a table")]
    NotATable(String),
    /// An array element the file does not have.
    #[error(
        "the file has {count} [[{array}]] entries (numbered from 0); an override can change an \
         entry, not add one"
    )]
    NoEntry {
        /// Entries in the file.
        count: usize,
        /// The array.
        array: String,
    },
    /// An array named without an element.
    #[error("{array} is an array: name an element by its number, e.g. {var}__0__...")]
    NoIndex {
        /// The array.
        array: String,
        /// The variable.
        var: String,
    },
}

/// `node` with every span moved `by` bytes later.
fn shift<'a>(node: Node<'a>, by: usize) -> Node<'a> {
    let span = node.span();
    let moved = span.start + by..span.end + by;
    let value = match node.into_inner() {
        DeValue::Array(items) => {
            let mut array = DeArray::new();
            for item in items.iter() {
                array.push(shift(item.clone(), by));
            }
            DeValue::Array(array)
        }
        DeValue::Table(table) => {
            let mut shifted = DeTable::new();
            for (key, value) in table {
                let key_span = key.span();
                shifted.insert(
                    Spanned::new(key_span.start + by..key_span.end + by, key.into_inner()),
                    shift(value, by),
                );
            }
            DeValue::Table(shifted)
        }
        other => other,
    };
    Spanned::new(moved, value)
}

/// The path, below `node`, of the deepest key or value whose span holds `span`; `true`
/// when that is a key itself (an unknown key), not its value.
pub(crate) fn path_at(node: &Node<'_>, span: &Range<usize>, path: KeyPath) -> (KeyPath, bool) {
    let holds = |s: Range<usize>| s.start <= span.start && span.end <= s.end.max(s.start + 1);
    match node.get_ref() {
        DeValue::Table(table) => {
            for (key, value) in table {
                if key.span() == *span {
                    return (path.key(key.get_ref()), true);
                }
                if holds(value.span()) {
                    return path_at(value, span, path.key(key.get_ref()));
                }
            }
            (path, false)
        }
        DeValue::Array(array) => {
            for (i, value) in array.iter().enumerate() {
                if holds(value.span()) {
                    return path_at(value, span, path.index(i));
                }
            }
            (path, false)
        }
        _ => (path, false),
    }
}

/// Removes the node at `path` below `node`; false when there is none.
pub(crate) fn remove(node: &mut Node<'_>, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = node;
    for segment in parents {
        let next = match (segment, node.get_mut()) {
            (Segment::Key(k), DeValue::Table(t)) => t.get_mut(k.as_str()),
            (Segment::Index(i), DeValue::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    match (last, node.get_mut()) {
        (Segment::Key(k), DeValue::Table(t)) => t.remove(k.as_str()).is_some(),
        (Segment::Index(i), DeValue::Array(a)) if *i < a.len() => {
            let mut kept = DeArray::new();
            for (j, item) in a.iter().enumerate() {
                if j != *i {
                    kept.push(item.clone());
                }
            }
            *a = kept;
            true
        }
        _ => false,
    }
}
