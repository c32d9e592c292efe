//! Bans as the fleet stores them: one record per target, a ban or a lift, each with the
//! time it was written (Unix ms); the later record wins. This module decides, for a
//! record read from the store or received as an event, what this agent does — apply it,
//! lift its own ban, or send its own ban back because it is the later one — and
//! reconciles a full read of the store with the bans held here.
//!
//! Lifts are kept (until the lifted ban would have expired) so that an agent that missed
//! the event, or was away, does not put the ban back on its next full exchange; a store
//! restarted empty has no records at all, and every agent then sends its bans back.
//! Expiry is absolute time, the same on every agent.

use serde::{Deserialize, Serialize};

use crate::bans::{Ban, Target};

/// One target's record in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When it was written, Unix milliseconds: the later record wins.
    pub at: u64,
    /// A ban: when it stops denying. A lift: when the lifted ban would have (the record
    /// is kept until then). Unix seconds.
    pub until: u32,
    /// A lift rather than a ban.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lifted: bool,
    /// A ban: when it was set, Unix seconds.
    #[serde(default)]
    pub since: u32,
    /// A ban: `manual` or the auto-ban rule that set it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    /// A ban: why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl Record {
    /// The record of `ban`, written at `at_ms`.
    pub fn of_ban(ban: &Ban, at_ms: u64) -> Record {
        Record {
            at: at_ms,
            until: ban.expires_at,
            lifted: false,
            since: ban.since,
            origin: ban.origin.to_string(),
            reason: ban.reason.to_string(),
        }
    }

    /// The record of lifting `ban` at `at_ms`.
    pub fn lift(ban: &Ban, at_ms: u64) -> Record {
        Record {
            at: at_ms,
            until: ban.expires_at,
            lifted: true,
            since: 0,
            origin: String::new(),
            reason: String::new(),
        }
    }

    /// The ban of `target` this record holds (`None` for a lift).
    pub fn ban(&self, target: Target) -> Option<Ban> {
        (!self.lifted).then(|| Ban {
            target,
            origin: if self.origin.is_empty() {
                "manual".into()
            } else {
                self.origin.as_str().into()
            },
            reason: self.reason.as_str().into(),
            since: self.since,
            expires_at: self.until,
        })
    }

    /// The record as stored.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// When `ban` was written, as records count it: the start of its second (a ban set here
/// and a lift received within the same second: the lift wins only if written later).
fn written(ban: &Ban) -> u64 {
    u64::from(ban.since) * 1000
}

/// What this agent does about one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Hold this ban (new here, or replacing an older one).
    Apply(Ban),
    /// Lift the ban held here on this target.
    Lift(Target),
    /// The ban held here is the later one: write it to the store.
    Push(Ban),
}

/// What to do about `record` of `target` given the ban held here on it, if any, at
/// `now` (Unix seconds). `None`: nothing.
pub fn decide(target: Target, record: &Record, local: Option<&Ban>, now: u32) -> Option<Step> {
    let local = local.filter(|b| b.expires_at > now);
    let ours_later = local.is_some_and(|b| written(b) > record.at);
    match (record.ban(target), local) {
        (None, None) => None,
        (None, Some(_)) if ours_later => local.cloned().map(Step::Push),
        (None, Some(_)) => Some(Step::Lift(target)),
        (Some(ban), _) if ban.expires_at <= now => None,
        (Some(ban), Some(held)) if *held == ban => None,
        (Some(_), Some(held)) if ours_later => Some(Step::Push(held.clone())),
        (Some(ban), _) => Some(Step::Apply(ban)),
    }
}

/// A full read of the store, reconciled with `local` (the bans held here) at `now`:
/// the steps for this agent, and the records that have expired (target and the record
/// as read, for the store's `CLEAN` script). Records that cannot be read are
/// skipped and counted.
pub fn reconcile(
    local: &[Ban],
    remote: &[(String, String)],
    now: u32,
) -> (Vec<Step>, Vec<(String, String)>, usize) {
    let mut steps = Vec::new();
    let mut expired = Vec::new();
    let mut unreadable = 0;
    let mut seen = std::collections::HashSet::new();
    for (field, raw) in remote {
        let (Ok(target), Ok(record)) =
            (field.parse::<Target>(), serde_json::from_str::<Record>(raw))
        else {
            unreadable += 1;
            continue;
        };
        seen.insert(target);
        if record.until <= now {
            expired.push((field.clone(), raw.clone()));
        }
        let held = local.iter().find(|b| b.target == target);
        steps.extend(decide(target, &record, held, now));
    }
    for ban in local {
        if ban.expires_at > now && !seen.contains(&ban.target) {
            steps.push(Step::Push(ban.clone()));
        }
    }
    (steps, expired, unreadable)
}

/// A message on the fleet's channel.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Message {
    /// A ban or a lift, written with version `v`.
    Ban {
        /// The bans' version after this change.
        v: u64,
        /// The writer's agent id.
        from: String,
        /// The target.
        target: String,
        /// The record written.
        record: Record,
    },
    /// Keys found over their limit: `(limit, key, wait µs)`.
    Marks {
        /// The sender's agent id.
        from: String,
        /// The marks.
        marks: Vec<(u64, u64, u64)>,
    },
}

/// A [`Message::Marks`] as sent.
#[derive(Debug, Serialize)]
pub struct MarksOut<'a> {
    /// This agent's id.
    pub from: &'a str,
    /// `(limit, key, wait µs)`.
    pub marks: &'a [(u64, u64, u64)],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(target: &str, since: u32, until: u32) -> Ban {
        Ban {
            target: target.parse().unwrap(),
            origin: "manual".into(),
            reason: "INC-1".into(),
            since,
            expires_at: until,
        }
    }

    #[test]
    fn the_later_record_wins() {
        let t: Target = "192.0.2.7".parse().unwrap();
        let held = ban("192.0.2.7", 100, 1000);
        // A lift written after our ban lifts it; one written before is answered with ours.
        assert_eq!(
            decide(t, &Record::lift(&held, 100_500), Some(&held), 200),
            Some(Step::Lift(t))
        );
        assert_eq!(
            decide(t, &Record::lift(&held, 99_000), Some(&held), 200),
            Some(Step::Push(held.clone()))
        );
        // A newer ban replaces ours; our own record changes nothing.
        let newer = ban("192.0.2.7", 150, 2000);
        assert_eq!(
            decide(t, &Record::of_ban(&newer, 150_000), Some(&held), 200),
            Some(Step::Apply(newer.clone()))
        );
        assert_eq!(
            decide(t, &Record::of_ban(&held, 100_020), Some(&held), 200),
            None
        );
        // Expired records do nothing; a lift of what we do not hold neither.
        assert_eq!(decide(t, &Record::of_ban(&held, 100_000), None, 1000), None);
        assert_eq!(decide(t, &Record::lift(&held, 1), None, 200), None);
    }

    #[test]
    fn a_full_read_applies_lifts_pushes_and_cleans() {
        let kept = ban("192.0.2.1", 100, 1000);
        let lifted = ban("192.0.2.2", 100, 1000);
        let unknown_to_store = ban("198.51.100.0/24", 100, 1000);
        let remote_only = ban("AS64496", 120, 900);
        let old = ban("192.0.2.9", 10, 50);
        let remote = vec![
            (
                "192.0.2.1".to_string(),
                Record::of_ban(&kept, 100_001).to_json(),
            ),
            (
                "192.0.2.2".to_string(),
                Record::lift(&lifted, 150_000).to_json(),
            ),
            (
                "AS64496".to_string(),
                Record::of_ban(&remote_only, 120_000).to_json(),
            ),
            (
                "192.0.2.9".to_string(),
                Record::of_ban(&old, 10_000).to_json(),
            ),
            ("garbage".to_string(), "{".to_string()),
        ];
        let local = vec![kept, lifted.clone(), unknown_to_store.clone()];
        let (steps, expired, unreadable) = reconcile(&local, &remote, 200);
        assert_eq!(
            steps,
            vec![
                Step::Lift(lifted.target),
                Step::Apply(remote_only),
                Step::Push(unknown_to_store),
            ]
        );
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].0, "192.0.2.9");
        assert_eq!(unreadable, 1);
    }

    #[test]
    fn messages_read_both_ways() {
        let m: Message = serde_json::from_str(
            r#"{"v":3,"from":"a","target":"192.0.2.7","record":{"at":5,"until":9,"since":1,"origin":"manual","reason":"x"}}"#,
        )
        .unwrap();
        assert!(matches!(m, Message::Ban { v: 3, .. }));
        let out = serde_json::to_string(&MarksOut {
            from: "b",
            marks: &[(1, u64::MAX, 7)],
        })
        .unwrap();
        let back: Message = serde_json::from_str(&out).unwrap();
        assert_eq!(
            back,
            Message::Marks {
                from: "b".into(),
                marks: vec![(1, u64::MAX, 7)]
            }
        );
    }
}
