//! Reading each section of a [`Document`] into the type of the layer that owns it, and
//! finding every error on the way, not just the first.
//!
//! Each section (and each entry of an array of tables) is read on its own, so a mistake
//! in one does not hide the others. Within one, serde stops at the first bad key; the
//! reader then reports it, removes that key (or array element) and reads again, until the
//! rest reads cleanly — so an unknown key and a wrong type in the same section are both
//! reported in one run. Every error keeps the span serde gives it, hence its line.

use serde::de::DeserializeOwned;
use toml::de::{DeValue, ValueDeserializer};

use super::document::{path_at, remove, Document, Node};
use super::error::ConfigError;
use crate::util::settings::Segment;
use crate::util::KeyPath;

/// Most bad keys reported in one section before giving up on it.
const MAX_ERRORS_PER_SECTION: usize = 20;

/// Reads sections, collecting errors.
pub(crate) struct Reader<'d, 'a> {
    doc: &'d Document<'a>,
    /// Every problem found so far.
    pub errors: Vec<ConfigError>,
}

impl<'d, 'a> Reader<'d, 'a> {
    pub fn new(doc: &'d Document<'a>) -> Self {
        Reader {
            doc,
            errors: Vec::new(),
        }
    }

    /// The table section `name` as a `T`; `T::default()` when it is absent or could not
    /// be read (its errors are recorded).
    pub fn table<T: DeserializeOwned + Default>(&mut self, name: &str) -> T {
        match self.doc.root.get(name) {
            None => T::default(),
            Some(node) => self.read(node, &KeyPath::of(name)).unwrap_or_default(),
        }
    }

    /// The array of tables `name`, each entry read on its own; entries with errors are
    /// left out (their errors are recorded).
    pub fn array<T: DeserializeOwned>(&mut self, name: &str) -> Vec<T> {
        let Some(node) = self.doc.root.get(name) else {
            return Vec::new();
        };
        let DeValue::Array(entries) = node.get_ref() else {
            self.errors.push(self.doc.error(
                Some(node.span()),
                Some(&KeyPath::of(name)),
                format!("expected [[{name}]] entries (an array of tables)"),
            ));
            return Vec::new();
        };
        entries
            .iter()
            .enumerate()
            .filter_map(|(i, entry)| self.read(entry, &KeyPath::of(name).index(i)))
            .collect()
    }

    /// Reads `node` (at `at`) as a `T`; see the module docs.
    fn read<T: DeserializeOwned>(&mut self, node: &Node<'a>, at: &KeyPath) -> Option<T> {
        let mut node = node.clone();
        let mut removed: Vec<String> = Vec::new();
        for _ in 0..MAX_ERRORS_PER_SECTION {
            let error = match T::deserialize(ValueDeserializer::from(node.clone())) {
                Ok(value) => return Some(value),
                Err(error) => error,
            };
            let message = error.message().to_string();
            // Having taken a bad required key out, serde now misses it: said already.
            if removed
                .iter()
                .any(|key| message == format!("missing field `{key}`"))
            {
                return None;
            }
            let span = error.span();
            let (inner, _is_key) = span.as_ref().map_or((KeyPath::default(), false), |s| {
                path_at(&node, s, KeyPath::default())
            });
            let key = inner.clone().within(at);
            self.errors
                .push(self.doc.error(span, Some(&key), readable(&message)));
            if inner.is_empty() || !remove(&mut node, inner.segments()) {
                return None;
            }
            if let Some(Segment::Key(last)) = inner.segments().last() {
                removed.push(last.clone());
            }
        }
        None
    }
}

/// serde's message, reworded where it reads like a compiler's: an unknown enum value
/// lists the allowed ones (`must be "allow" or "deny", got "block"`).
fn readable(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        if let Some((got, expected)) = rest.split_once("`, expected ") {
            let allowed: Vec<String> = expected
                .trim_start_matches("one of ")
                .split([',', ' '])
                .map(|w| w.trim_matches('`'))
                .filter(|w| !w.is_empty() && *w != "or")
                .map(|w| format!("{w:?}"))
                .collect();
            let list = match allowed.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => expected.to_string(),
            };
            return format!("must be {list}, got {got:?}");
        }
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((got, expected)) = rest.split_once(", expected ") {
            return format!("expected {expected}, got {got}");
        }
    }
    message.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_like_the_configuration() {
        assert_eq!(
            readable("unknown variant `block`, expected `allow` or `deny`"),
            "must be \"allow\" or \"deny\", got \"block\""
        );
        assert_eq!(
            readable("unknown variant `xml`, expected one of `text`, `json`, `logfmt`"),
            "must be \"text\", \"json\" or \"logfmt\", got \"xml\""
        );
        assert_eq!(
            readable("invalid type: string \"yes\", expected a boolean"),
            "expected a boolean, got string \"yes\""
        );
        assert_eq!(readable("anything else"), "anything else");
    }
}
