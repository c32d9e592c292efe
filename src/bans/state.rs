//! The ban state file (`[bans] state_file`): the bans in force, and the offences that make
//! `[[auto_ban]]` bans of repeat offenders longer, saved so that they survive a restart.
//!
//! The file is JSON (`{"version": 1, "saved_at": …, "bans": [{"target": "203.0.113.0/24",
//! "origin": "manual", "reason": "INC-42", "since": …, "expires_at": …}], "offences":
//! [{"rule": "login-abuse", "key": "192.0.2.7", "bans": 2, "last": …}]}`, times in Unix
//! seconds), readable by an operator and by `jq`. It is replaced atomically: written to a
//! temporary file in the same directory, flushed to disk, renamed over the old one, and
//! the directory flushed, so a crash leaves either the old state or the new one.
//!
//! Reading never stops the agent: bans are not worth an outage. A missing file is an
//! empty state; an unreadable or corrupt one is moved aside (`bans.json.corrupt-UNIX`) for
//! inspection and the agent starts without bans, saying why. Expired bans are dropped
//! on reading, and a line that does not parse drops that ban only.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Ban, Offences, Target};

/// The format version written; a file of another version is set aside like a corrupt one.
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct File1 {
    version: u32,
    /// When it was written, Unix seconds (for the operator).
    #[serde(default)]
    saved_at: u64,
    #[serde(default)]
    bans: Vec<SavedBan>,
    #[serde(default)]
    offences: Vec<SavedOffence>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedOffence {
    rule: String,
    key: String,
    bans: u32,
    last: u32,
}

/// What an `[[auto_ban]]` rule remembers of one key: the rule, the key, its offences.
pub type Offence = (Arc<str>, Target, Offences);

#[derive(Debug, Serialize, Deserialize)]
struct SavedBan {
    target: String,
    origin: String,
    reason: String,
    since: u32,
    expires_at: u32,
}

/// What reading the state file gave.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The bans still in force at the time given.
    pub bans: Vec<Ban>,
    /// Bans in the file that had expired.
    pub expired: usize,
    /// The offences of `[[auto_ban]]` keys.
    pub offences: Vec<Offence>,
    /// Problems worth an operator's attention, one line each (a ban that did not parse,
    /// a corrupt file and where it was moved).
    pub problems: Vec<String>,
}

/// Reads `path` at `now` (Unix seconds); see the module docs for what never fails.
pub fn load(path: &Path, now: u32) -> Loaded {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::default(),
        Err(e) => {
            return Loaded {
                problems: vec![format!(
                    "{}: cannot read the ban state ({e}); starting without saved bans",
                    path.display()
                )],
                ..Loaded::default()
            }
        }
    };
    let file: File1 = match serde_json::from_slice(&text) {
        Ok(
            file @ File1 {
                version: VERSION, ..
            },
        ) => file,
        Ok(other) => {
            return set_aside(
                path,
                now,
                &format!("version {} is not {VERSION}", other.version),
            )
        }
        Err(e) => return set_aside(path, now, &e.to_string()),
    };
    let mut loaded = Loaded::default();
    for (n, saved) in file.bans.into_iter().enumerate() {
        let target = match saved.target.parse::<Target>() {
            Ok(target) => target,
            Err(e) => {
                loaded
                    .problems
                    .push(format!("{}: ban {} dropped: {e}", path.display(), n + 1));
                continue;
            }
        };
        if saved.expires_at <= now {
            loaded.expired += 1;
            continue;
        }
        loaded.bans.push(Ban {
            target,
            origin: Arc::from(saved.origin),
            reason: Arc::from(saved.reason),
            since: saved.since,
            expires_at: saved.expires_at,
        });
    }
    for (n, saved) in file.offences.into_iter().enumerate() {
        match saved.key.parse::<Target>() {
            Ok(key) => loaded.offences.push((
                Arc::from(saved.rule),
                key,
                Offences {
                    bans: saved.bans,
                    last: saved.last,
                },
            )),
            Err(e) => loaded.problems.push(format!(
                "{}: offence {} dropped: {e}",
                path.display(),
                n + 1
            )),
        }
    }
    loaded
}

/// Moves a file that cannot be used out of the way and says so.
fn set_aside(path: &Path, now: u32, why: &str) -> Loaded {
    let aside = sibling(path, &format!("corrupt-{now}"));
    let moved = match fs::rename(path, &aside) {
        Ok(()) => format!("moved to {}", aside.display()),
        Err(e) => format!("could not be moved aside: {e}"),
    };
    Loaded {
        problems: vec![format!(
            "{}: not a ban state file ({why}); starting without saved bans; the file {moved}",
            path.display()
        )],
        ..Loaded::default()
    }
}

/// `path` with `.suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// Replaces `path` with `bans` and `offences` atomically (see the module docs); `now` is
/// written as `saved_at`.
///
/// # Errors
///
/// Any I/O error, with the file it concerns; the previous file is then unchanged.
pub fn save(path: &Path, bans: &[Ban], offences: &[Offence], now: u32) -> Result<(), String> {
    let file = File1 {
        version: VERSION,
        saved_at: u64::from(now),
        bans: bans
            .iter()
            .map(|b| SavedBan {
                target: b.target.to_string(),
                origin: b.origin.to_string(),
                reason: b.reason.to_string(),
                since: b.since,
                expires_at: b.expires_at,
            })
            .collect(),
        offences: offences
            .iter()
            .map(|(rule, key, o)| SavedOffence {
                rule: rule.to_string(),
                key: key.to_string(),
                bans: o.bans,
                last: o.last,
            })
            .collect(),
    };
    let text = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
    let temp = sibling(path, &format!("tmp-{}", std::process::id()));
    let written = (|| {
        let mut out = File::create(&temp)?;
        out.write_all(&text)?;
        out.write_all(b"\n")?;
        out.sync_all()?;
        fs::rename(&temp, path)?;
        // The rename itself is durable once the directory is flushed.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok::<(), std::io::Error>(())
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&temp);
        format!("{}: cannot save the bans: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u32 = 1_800_000_000;

    fn ban(target: &str, expires_at: u32) -> Ban {
        Ban {
            target: target.parse().unwrap(),
            origin: Arc::from("manual"),
            reason: Arc::from("INC-42"),
            since: NOW - 10,
            expires_at,
        }
    }

    #[test]
    fn bans_survive_a_save_and_a_load_with_their_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        let bans = vec![ban("203.0.113.0/24", NOW + 3600), ban("AS64496", NOW + 60)];
        let offences = vec![(
            Arc::from("login-abuse"),
            "192.0.2.7".parse().unwrap(),
            Offences {
                bans: 2,
                last: NOW - 100,
            },
        )];
        save(&path, &bans, &offences, NOW).unwrap();
        let loaded = load(&path, NOW + 1);
        assert_eq!(loaded.bans, bans);
        assert_eq!(loaded.offences, offences);
        assert!(loaded.problems.is_empty());
        // Only the state file is left: the temporary one was renamed.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn expired_bans_are_dropped_on_reading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        save(
            &path,
            &[ban("192.0.2.1", NOW + 5), ban("192.0.2.2", NOW + 50)],
            &[],
            NOW,
        )
        .unwrap();
        let loaded = load(&path, NOW + 5);
        assert_eq!(loaded.expired, 1);
        assert_eq!(loaded.bans.len(), 1);
        assert_eq!(loaded.bans[0].target.to_string(), "192.0.2.2");
    }

    #[test]
    fn a_missing_file_is_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&dir.path().join("none.json"), NOW);
        assert!(loaded.bans.is_empty() && loaded.problems.is_empty());
    }

    #[test]
    fn a_corrupt_file_is_set_aside_and_the_agent_starts_without_bans() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        fs::write(&path, b"{\"version\": 1, \"bans\": [tru").unwrap();
        let loaded = load(&path, NOW);
        assert!(loaded.bans.is_empty());
        assert_eq!(loaded.problems.len(), 1, "{:?}", loaded.problems);
        assert!(loaded.problems[0].contains("not a ban state file"));
        let aside = dir.path().join(format!("bans.json.corrupt-{NOW}"));
        assert!(aside.exists(), "{:?}", loaded.problems);
        assert!(!path.exists());
        // A file of another version is set aside too.
        fs::write(&path, b"{\"version\": 2}").unwrap();
        assert!(load(&path, NOW + 1).problems[0].contains("version 2 is not 1"));
    }

    #[test]
    fn a_ban_that_does_not_parse_drops_that_ban_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        let text = format!(
            r#"{{"version": 1, "bans": [
                {{"target": "999.0.0.1", "origin": "manual", "reason": "x", "since": 1, "expires_at": {e}}},
                {{"target": "192.0.2.7", "origin": "manual", "reason": "y", "since": 1, "expires_at": {e}}}
            ]}}"#,
            e = NOW + 10
        );
        fs::write(&path, text).unwrap();
        let loaded = load(&path, NOW);
        assert_eq!(loaded.bans.len(), 1);
        assert_eq!(loaded.problems.len(), 1);
        assert!(
            loaded.problems[0].contains("ban 1 dropped"),
            "{:?}",
            loaded.problems
        );
    }

    #[test]
    fn a_failed_save_leaves_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bans.json");
        save(&path, &[ban("192.0.2.1", NOW + 10)], &[], NOW).unwrap();
        // A directory where the file should go: the rename fails.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::create_dir(blocked.join("x")).unwrap();
        let err = save(&blocked, &[], &[], NOW).unwrap_err();
        assert!(err.contains("cannot save the bans"), "{err}");
        assert_eq!(load(&path, NOW).bans.len(), 1);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
