//! `[[limit]]` as written in the configuration: [`LimitSpec`], read with serde (the key
//! already parsed into a [`KeySpec`]) and checked by [`LimitSpec::validate`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::key::KeySpec;
use crate::decision::RuleName;
use crate::util::{Invalid, KeyPath};

/// Default cap on keys per limit.
pub const DEFAULT_MAX_KEYS: usize = 500_000;

/// One `[[limit]]`: which requests it applies to, what a bucket is per, and the bucket.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// Reported as `txn.guard.rule` when the limit denies; identifies its state across
    /// reloads.
    pub name: RuleName,
    /// What a bucket is per: `src`, `src/N`, `src/N/M`, `asn`, `host`, `path`, `method`,
    /// `arg:NAME`, `global`, joined with `+`. Default `src`.
    #[serde(default = "KeySpec::src")]
    pub key: KeySpec,
    /// Tokens added per second (may be fractional: 0.1 is one every ten seconds).
    pub rate: f64,
    /// Bucket size: requests allowed at once after a quiet period. Default: `rate`
    /// rounded up, at least 1 ([`LimitSpec::burst`]).
    pub burst: Option<u32>,
    /// Only requests whose path starts with this.
    pub path_prefix: Option<String>,
    /// Only these methods (case-insensitive).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Only requests for this host (case-insensitive, port ignored).
    pub host: Option<String>,
    /// Most keys tracked; beyond it new keys are not limited (and counted). Default
    /// [`DEFAULT_MAX_KEYS`].
    pub max_keys: Option<usize>,
    /// Evaluate and count, never deny.
    #[serde(default)]
    pub dry_run: bool,
    /// Whose traffic the limit counts: this agent's (`local`, the default) or every agent
    /// of the `[fleet]`'s (`fleet`).
    #[serde(default)]
    pub scope: Scope,
}

/// Whose traffic a limit counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// This agent's own traffic.
    #[default]
    Local,
    /// The traffic of every agent of the fleet (`[fleet]`), shared through Redis.
    Fleet,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Local => "local",
            Scope::Fleet => "fleet",
        })
    }
}

/// Why a limit's numbers cannot make a bucket.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// `rate` is zero, negative or not a number.
    #[error("rate {0} must be a number of tokens per second above 0")]
    Rate(f64),
    /// `burst = 0`.
    #[error("burst must be at least 1")]
    Burst,
    /// `max_keys = 0`.
    #[error("max_keys must be at least 1")]
    MaxKeys,
    /// `scope = "fleet"` without a `[fleet]`.
    #[error("scope = \"fleet\" needs a [fleet] section")]
    NoFleet,
    /// The refill time does not fit nanosecond time.
    #[error("rate {rate} with burst {burst} is too low: refilling would take centuries")]
    TooLow {
        /// Tokens per second.
        rate: f64,
        /// Bucket size.
        burst: u32,
    },
}

impl LimitSpec {
    /// A limit with the defaults, for tests and tools: key `src`, burst from the rate.
    pub fn new(name: RuleName, rate: f64) -> LimitSpec {
        LimitSpec {
            name,
            key: KeySpec::src(),
            rate,
            burst: None,
            path_prefix: None,
            methods: Vec::new(),
            host: None,
            max_keys: None,
            dry_run: false,
            scope: Scope::Local,
        }
    }

    /// The bucket size: `burst`, or `rate` rounded up and at least 1 when not given.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or_else(|| default_burst(self.rate))
    }

    /// The key cap: `max_keys` or [`DEFAULT_MAX_KEYS`].
    pub fn max_keys(&self) -> usize {
        self.max_keys.unwrap_or(DEFAULT_MAX_KEYS)
    }

    /// The time to refill one token and the burst beyond the first token, in
    /// nanoseconds: what the buckets are made of.
    ///
    /// # Errors
    ///
    /// A rate that is not above 0, a burst or key cap of 0, or a rate so low that
    /// nanosecond time cannot hold the refill.
    pub fn periods(&self) -> Result<(u64, u64), SpecError> {
        let (rate, burst) = (self.rate, self.burst());
        if !(rate.is_finite() && rate > 0.0) {
            return Err(SpecError::Rate(rate));
        }
        if burst == 0 {
            return Err(SpecError::Burst);
        }
        if self.max_keys() == 0 {
            return Err(SpecError::MaxKeys);
        }
        let too_low = || SpecError::TooLow { rate, burst };
        let period = Duration::try_from_secs_f64(1.0 / rate).map_err(|_| too_low())?;
        // Faster than one token per nanosecond is one per nanosecond (as governor does).
        let t = u64::try_from(period.as_nanos())
            .map_err(|_| too_low())?
            .max(1);
        let tau = t.checked_mul(u64::from(burst - 1)).ok_or_else(too_low)?;
        Ok((t, tau))
    }

    /// Every problem with the values, keys relative to this `[[limit]]`; a warning for a
    /// `path_prefix` that cannot match (HAProxy's `path` always starts with `/`).
    pub fn validate(&self) -> Vec<Invalid> {
        let mut problems = Vec::new();
        let at = KeyPath::of;
        match self.periods() {
            Ok(_) => {}
            Err(SpecError::Rate(_)) => problems.push(Invalid::error(
                at("rate"),
                "must be a number of tokens per second above 0",
            )),
            Err(SpecError::Burst) => {
                problems.push(Invalid::error(at("burst"), "must be at least 1"))
            }
            Err(SpecError::MaxKeys) => {
                problems.push(Invalid::error(at("max_keys"), "must be at least 1"));
            }
            Err(err @ (SpecError::TooLow { .. } | SpecError::NoFleet)) => {
                problems.push(Invalid::error(at("rate"), err.to_string()));
            }
        }
        if let Some(prefix) = &self.path_prefix {
            if !prefix.starts_with('/') {
                problems.push(Invalid::warning(
                    at("path_prefix"),
                    format!(
                        "{prefix:?} does not start with \"/\": HAProxy's path always does, so \
                         this limit never applies (did you mean \"/{prefix}\"?)"
                    ),
                ));
            }
        }
        for (i, method) in self.methods.iter().enumerate() {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                problems.push(Invalid::error(
                    at("methods").index(i),
                    format!("{method:?} is not an HTTP method (GET, POST, …)"),
                ));
            }
        }
        if self.host.as_deref() == Some("") {
            problems.push(Invalid::error(
                at("host"),
                "must not be empty (leave it out to match every host)",
            ));
        }
        problems
    }
}

/// `rate` rounded up, at least 1: a bucket that holds one second's worth.
pub(crate) fn default_burst(rate: f64) -> u32 {
    let ceil = rate.ceil();
    if ceil >= f64::from(u32::MAX) {
        u32::MAX
    } else if ceil >= 1.0 {
        // In range and integral: the conversion is exact.
        format!("{ceil:.0}").parse::<u32>().unwrap_or(1).max(1)
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml: &str) -> Result<LimitSpec, String> {
        toml::from_str::<LimitSpec>(toml).map_err(|e| e.message().to_string())
    }

    #[test]
    fn defaults_and_derived_values() {
        let l = spec("name = \"login\"\nrate = 2.5\n").unwrap();
        assert_eq!(l.key, KeySpec::src());
        assert_eq!((l.burst(), l.max_keys()), (3, DEFAULT_MAX_KEYS));
        assert!(l.validate().is_empty());
        assert_eq!(default_burst(0.1), 1);
        assert_eq!(default_burst(50.0), 50);
        assert_eq!(default_burst(2.5), 3);
    }

    #[test]
    fn a_bad_key_is_refused_while_reading_naming_the_part() {
        let e = spec("name = \"login\"\nkey = \"src+pth\"\nrate = 1\n").unwrap_err();
        assert_eq!(
            e,
            "unknown key part \"pth\" (expected src, src/N, src/N/M, asn, host, path, \
             method, arg:NAME, global)"
        );
    }

    #[test]
    fn values_are_checked_by_key() {
        for (toml, key, needle) in [
            ("rate = 0", "rate", "above 0"),
            ("rate = -1", "rate", "above 0"),
            ("rate = 1e-300", "rate", "too low"),
            ("rate = 1\nburst = 0", "burst", "at least 1"),
            ("rate = 1\nmax_keys = 0", "max_keys", "at least 1"),
            (
                "rate = 1\nmethods = [\"GET\", \"P OST\"]",
                "methods[1]",
                "not an HTTP method",
            ),
            ("rate = 1\nhost = \"\"", "host", "must not be empty"),
        ] {
            let problems = spec(&format!("name = \"a\"\n{toml}\n")).unwrap().validate();
            assert_eq!(problems.len(), 1, "{toml}: {problems:?}");
            assert_eq!(problems[0].key.to_string(), key, "{toml}");
            assert!(problems[0].message.contains(needle), "{toml}: {problems:?}");
            assert!(problems[0].is_error());
        }
    }

    #[test]
    fn a_path_prefix_without_a_slash_is_a_warning() {
        let problems = spec("name = \"a\"\nrate = 1\npath_prefix = \"login\"\n")
            .unwrap()
            .validate();
        assert_eq!(problems.len(), 1);
        assert!(!problems[0].is_error());
        assert!(problems[0].message.contains("\"/login\""), "{problems:?}");
    }

    #[test]
    fn strict_types() {
        assert!(spec("name = \"a\"\nrate = 1\ndry_run = \"yes\"\n").is_err());
        assert!(spec("name = \"a b\"\nrate = 1\n")
            .unwrap_err()
            .contains("letters, digits"));
        assert!(spec("name = \"a\"\nrate = 1\nkeys = \"src\"\n")
            .unwrap_err()
            .contains("keys"));
    }
}
