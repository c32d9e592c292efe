//! `[bans]`: where bans are saved, how many may be held, and how wide an operator ban may
//! be without `--force`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Target;
use crate::util::{Invalid, KeyPath};

/// `[bans]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BanSettings {
    /// Bans (and the offence counts of `[[auto_ban]]`) are saved here, atomically, so
    /// that they survive a restart. Absent: bans live in memory only.
    pub state_file: Option<PathBuf>,
    /// Most bans held; beyond it a new ban is refused with a clear error.
    pub max_entries: usize,
    /// An operator ban of an IPv4 network wider than this prefix needs `--force`.
    pub max_prefix_v4: u8,
    /// An operator ban of an IPv6 network wider than this prefix needs `--force`.
    pub max_prefix_v6: u8,
}

impl Default for BanSettings {
    fn default() -> Self {
        BanSettings {
            state_file: None,
            max_entries: 1_000_000,
            max_prefix_v4: 16,
            max_prefix_v6: 32,
        }
    }
}

impl BanSettings {
    /// Every problem, keys relative to `[bans]`.
    pub fn validate(&self) -> Vec<Invalid> {
        let mut problems = Vec::new();
        if self.max_entries == 0 {
            problems.push(Invalid::error(
                KeyPath::of("max_entries"),
                "0 would refuse every ban; leave it out for the default (1000000)",
            ));
        }
        if self.max_prefix_v4 > 32 {
            problems.push(Invalid::error(
                KeyPath::of("max_prefix_v4"),
                format!("{} is not an IPv4 prefix length (0–32)", self.max_prefix_v4),
            ));
        }
        if self.max_prefix_v6 > 128 {
            problems.push(Invalid::error(
                KeyPath::of("max_prefix_v6"),
                format!(
                    "{} is not an IPv6 prefix length (0–128)",
                    self.max_prefix_v6
                ),
            ));
        }
        if self
            .state_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            problems.push(Invalid::error(
                KeyPath::of("state_file"),
                "empty path; leave the key out to keep bans in memory only",
            ));
        }
        problems
    }

    /// Makes a relative `state_file` relative to `base` (the configuration's directory).
    pub fn rebase(&mut self, base: &Path) {
        if let Some(path) = &mut self.state_file {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// Why an operator ban of `target` needs `--force`: a network wider than
    /// `max_prefix_v4`/`max_prefix_v6`. `None` for anything narrower and for an AS.
    pub fn too_wide(&self, target: &Target) -> Option<String> {
        let (len, max, key) = match *target {
            Target::V4 { len, .. } => (len, self.max_prefix_v4, "max_prefix_v4"),
            Target::V6 { len, .. } => (len, self.max_prefix_v6, "max_prefix_v6"),
            Target::Asn(_) => return None,
        };
        (len < max).then(|| {
            format!("{target} is wider than /{max} ([bans] {key}); add --force if you mean it")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounds_are_checked() {
        assert!(BanSettings::default().validate().is_empty());
        let bad = BanSettings {
            max_entries: 0,
            max_prefix_v4: 33,
            max_prefix_v6: 129,
            state_file: Some(PathBuf::new()),
        };
        let keys: Vec<String> = bad.validate().iter().map(|p| p.key.to_string()).collect();
        assert_eq!(
            keys,
            [
                "max_entries",
                "max_prefix_v4",
                "max_prefix_v6",
                "state_file"
            ]
        );
    }

    #[test]
    fn wide_networks_need_force_but_addresses_and_asns_never() {
        let s = BanSettings::default();
        let wide = |t: &str| s.too_wide(&t.parse().unwrap());
        assert_eq!(wide("203.0.113.7"), None);
        assert_eq!(wide("10.0.0.0/16"), None);
        assert!(wide("10.0.0.0/15").unwrap().contains("max_prefix_v4"));
        assert_eq!(wide("2001:db8::/32"), None);
        assert!(wide("2001:db8::/31").unwrap().contains("--force"));
        assert_eq!(wide("AS64496"), None);
    }
}
