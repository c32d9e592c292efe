//! Environment overrides: `SPOA_GUARD__<SECTION>__<KEY>=value` sets `[section] key`, and
//! `SPOA_GUARD__<ARRAY>__<N>__<KEY>` sets `key` of the N-th `[[array]]` entry (from 0),
//! e.g. `SPOA_GUARD__LIMIT__0__RATE=100`. Names are case-insensitive; a value is read as
//! TOML when it is TOML (`8080`, `true`, `0.5`, `["a.txt", "b.txt"]`, `"123"`) and as a
//! string otherwise; the list keys in [`COMMA_LISTS`] also take `a.txt,b.txt`.
//!
//! An override that names no key the configuration has is an error that names the
//! variable, never the file.

use crate::util::settings::Segment;

/// Prefix of every override: `SPOA_GUARD__SERVER__LISTEN=127.0.0.1:9000`.
pub const ENV_PREFIX: &str = "SPOA_GUARD__";

/// Keys whose override may be a comma-separated list (as the first release accepted).
pub const COMMA_LISTS: [&str; 5] = [
    "lists.allow",
    "lists.block",
    "asn.databases",
    "asn.block",
    "methods",
];

/// One override read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The variable, as it was named.
    pub var: String,
    /// The key it sets: sections and keys lower-cased, numbers as array indices.
    pub path: Vec<Segment>,
    /// The value, as given.
    pub value: String,
}

impl Override {
    /// Whether the value may be a comma-separated list.
    pub fn comma_list(&self) -> bool {
        let keys: Vec<&str> = self
            .path
            .iter()
            .filter_map(|s| match s {
                Segment::Key(k) => Some(k.as_str()),
                Segment::Index(_) => None,
            })
            .collect();
        let dotted = keys.join(".");
        COMMA_LISTS
            .iter()
            .any(|key| dotted == *key || (*key == "methods" && dotted == "limit.methods"))
    }
}

/// The overrides among `vars`, sorted by variable name (so that their order, and which
/// one wins when two name the same key, does not depend on the environment's order).
pub fn overrides(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Override> {
    let mut found: Vec<Override> = vars
        .into_iter()
        .filter_map(|(var, value)| {
            let rest = var
                .get(..ENV_PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
                .and_then(|_| var.get(ENV_PREFIX.len()..))?;
            let path = rest
                .split("__")
                .map(|part| match part.parse::<usize>() {
                    Ok(index) => Segment::Index(index),
                    Err(_) => Segment::Key(part.to_ascii_lowercase()),
                })
                .collect();
            Some(Override {
                var: var.clone(),
                path,
                value,
            })
        })
        .collect();
    found.sort_by(|a, b| a.var.cmp(&b.var));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_become_key_paths() {
        let found = overrides([
            ("PATH".to_string(), "/bin".to_string()),
            (
                "SPOA_GUARD__SERVER__LISTEN".to_string(),
                "127.0.0.1:9".to_string(),
            ),
            ("SPOA_GUARD__LIMIT__0__RATE".to_string(), "5".to_string()),
            ("spoa_guard__lists__block".to_string(), "a,b".to_string()),
        ]);
        let paths: Vec<(&str, &[Segment], bool)> = found
            .iter()
            .map(|o| (o.var.as_str(), o.path.as_slice(), o.comma_list()))
            .collect();
        let key = |k: &str| Segment::Key(k.into());
        assert_eq!(
            paths,
            [
                (
                    "SPOA_GUARD__LIMIT__0__RATE",
                    &[key("limit"), Segment::Index(0), key("rate")][..],
                    false
                ),
                (
                    "SPOA_GUARD__SERVER__LISTEN",
                    &[key("server"), key("listen")][..],
                    false
                ),
                (
                    "spoa_guard__lists__block",
                    &[key("lists"), key("block")][..],
                    true
                ),
            ]
        );
    }
}
