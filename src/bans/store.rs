//! The bans in force and their lookup.
//!
//! Networks are kept in one hash map per prefix length in use, so finding the bans that
//! cover an address is one hash lookup per *length* in use (most specific first) — at
//! most 33 for IPv4 and 129 for IPv6, in practice two or three — whatever the number of
//! bans. AS numbers are one more map. An entry is 12 bytes (origin-and-reason index,
//! start, expiry as Unix seconds), so a million single-address bans fit in tens of MB.
//!
//! Expiry needs no scan: a lookup ignores an entry whose expiry has passed (a ban stops
//! denying at its second exactly), and [`BanStore::expire`] pops the entries due from a
//! min-heap of expiries, to free them. A replaced or removed ban leaves its old heap
//! entry behind; it is recognised by its expiry no longer matching and skipped, and the
//! heap is rebuilt when such leftovers outnumber the bans.
//!
//! The maps hash with foldhash seeded per process (`foldhash::fast::RandomState`): about
//! three times faster than std's SipHash on these integer keys, and still keyed, so the
//! addresses an attacker gets banned cannot be chosen to collide.
//!
//! Unix seconds are `u32` (valid until 2106); expiries beyond are capped there.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use bytes::Bytes;
use foldhash::fast::RandomState;
use std::net::IpAddr;
use std::sync::Arc;

use super::target::{canonical, mask_v4, mask_v6, Target};

/// One ban as listed: what, by whom, why, and when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// What is banned.
    pub target: Target,
    /// `manual`, or the name of the `[[auto_ban]]` rule that set it.
    pub origin: Arc<str>,
    /// Free text given with the ban (`INC-42`), or what triggered an automatic one.
    pub reason: Arc<str>,
    /// When it was set, Unix seconds.
    pub since: u32,
    /// When it stops denying, Unix seconds: it denies while `now < expires_at`.
    pub expires_at: u32,
}

/// What a lookup found: enough for the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The ban's target (the network or AS that covers the request).
    pub target: Target,
    /// The ban's origin (`manual` or the auto-ban rule), the verdict's `rule`.
    pub origin: Bytes,
    /// When it stops denying, Unix seconds.
    pub expires_at: u32,
}

/// Why a ban was not added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddError {
    /// The store holds `max_entries` bans already (a new target; replacing one is fine).
    Full {
        /// The configured maximum.
        max_entries: usize,
    },
    /// The expiry is not after now.
    AlreadyExpired,
}

impl std::fmt::Display for AddError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddError::Full { max_entries } => write!(
                f,
                "the agent holds its maximum of {max_entries} bans ([bans] max_entries); lift some or raise it"
            ),
            AddError::AlreadyExpired => f.write_str("the ban would already have expired"),
        }
    }
}

impl std::error::Error for AddError {}

/// What adding a ban did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// A new target.
    New,
    /// The target was banned already; this ban replaced that one (returned).
    Replaced(Ban),
}

/// One stored ban: 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Index into [`BanStore::labels`].
    label: u32,
    since: u32,
    expires_at: u32,
}

/// An origin and reason shared by every ban that has them, with a count of those bans.
#[derive(Debug)]
struct Label {
    origin: Arc<str>,
    /// The origin as the verdict's `rule`, made once so a banned request copies nothing.
    rule: Bytes,
    reason: Arc<str>,
    bans: u32,
}

/// Networks of one family: a map per prefix length, and the lengths in use, longest
/// first.
#[derive(Debug)]
struct Networks<K> {
    by_len: Vec<HashMap<K, Entry, RandomState>>,
    lens: Vec<u8>,
}

impl<K: Copy + Eq + std::hash::Hash> Networks<K> {
    fn new(width: u8) -> Self {
        Networks {
            by_len: (0..=width).map(|_| HashMap::default()).collect(),
            lens: Vec::new(),
        }
    }

    fn map(&self, len: u8) -> Option<&HashMap<K, Entry, RandomState>> {
        self.by_len.get(usize::from(len))
    }

    fn map_mut(&mut self, len: u8) -> Option<&mut HashMap<K, Entry, RandomState>> {
        self.by_len.get_mut(usize::from(len))
    }

    /// The longest-prefix entry covering `addr` that has not expired at `now`.
    fn find(&self, addr: K, mask: impl Fn(K, u8) -> K, now: u32) -> Option<(K, u8, Entry)> {
        self.lens.iter().find_map(|&len| {
            let net = mask(addr, len);
            let entry = *self.map(len)?.get(&net)?;
            (entry.expires_at > now).then_some((net, len, entry))
        })
    }

    fn insert(&mut self, net: K, len: u8, entry: Entry) -> Option<Entry> {
        let old = self.map_mut(len)?.insert(net, entry);
        if !self.lens.contains(&len) {
            self.lens.push(len);
            self.lens.sort_unstable_by(|a, b| b.cmp(a));
        }
        old
    }

    fn remove(&mut self, net: K, len: u8) -> Option<Entry> {
        let map = self.map_mut(len)?;
        let old = map.remove(&net);
        if map.is_empty() {
            map.shrink_to_fit();
            self.lens.retain(|&l| l != len);
        }
        old
    }

    fn get(&self, net: K, len: u8) -> Option<Entry> {
        self.map(len)?.get(&net).copied()
    }
}

/// The bans in force; see the module docs. Not synchronised: the agent wraps it.
#[derive(Debug)]
pub struct BanStore {
    v4: Networks<u32>,
    v6: Networks<u128>,
    asn: HashMap<u32, Entry, RandomState>,
    labels: Vec<Label>,
    label_of: HashMap<(Arc<str>, Arc<str>), u32>,
    free_labels: Vec<u32>,
    expiries: BinaryHeap<Reverse<(u32, Target)>>,
    len: usize,
    max_entries: usize,
}

impl BanStore {
    /// An empty store that holds at most `max_entries` bans.
    pub fn new(max_entries: usize) -> BanStore {
        BanStore {
            v4: Networks::new(32),
            v6: Networks::new(128),
            asn: HashMap::default(),
            labels: Vec::new(),
            label_of: HashMap::new(),
            free_labels: Vec::new(),
            expiries: BinaryHeap::new(),
            len: 0,
            max_entries,
        }
    }

    /// Bans stored, expired ones not yet freed included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no ban is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ban in force at `now` (Unix seconds) on `addr` or, when given, on its AS
    /// `asn`: the most specific network first, then the AS. No allocation.
    pub fn lookup(&self, addr: IpAddr, asn: Option<u32>, now: u32) -> Option<Hit> {
        if self.len == 0 {
            return None;
        }
        let network = match canonical(addr) {
            IpAddr::V4(a) => self
                .v4
                .find(u32::from(a), |a, len| a & mask_v4(len), now)
                .map(|(net, len, e)| (Target::V4 { net, len }, e)),
            IpAddr::V6(a) => self
                .v6
                .find(u128::from(a), |a, len| a & mask_v6(len), now)
                .map(|(net, len, e)| (Target::V6 { net, len }, e)),
        };
        let found = network.or_else(|| {
            let asn = asn?;
            let entry = *self.asn.get(&asn)?;
            (entry.expires_at > now).then_some((Target::Asn(asn), entry))
        })?;
        let (target, entry) = found;
        let label = self.labels.get(usize::try_from(entry.label).ok()?)?;
        Some(Hit {
            target,
            origin: label.rule.clone(),
            expires_at: entry.expires_at,
        })
    }

    /// The ban on exactly `target`, if stored (expired or not).
    pub fn get(&self, target: &Target) -> Option<Ban> {
        let entry = self.entry(target)?;
        Some(self.ban(*target, entry))
    }

    /// Bans `target` until `expires_at`, replacing any ban of the same target.
    ///
    /// # Errors
    ///
    /// [`AddError::Full`] for a new target beyond `max_entries`;
    /// [`AddError::AlreadyExpired`] when `expires_at <= since`.
    pub fn add(&mut self, ban: Ban) -> Result<Added, AddError> {
        if ban.expires_at <= ban.since {
            return Err(AddError::AlreadyExpired);
        }
        let exists = self.entry(&ban.target).is_some();
        if !exists && self.len >= self.max_entries {
            return Err(AddError::Full {
                max_entries: self.max_entries,
            });
        }
        let entry = Entry {
            label: self.label(&ban.origin, &ban.reason),
            since: ban.since,
            expires_at: ban.expires_at,
        };
        let old = match ban.target {
            Target::V4 { net, len } => self.v4.insert(net, len, entry),
            Target::V6 { net, len } => self.v6.insert(net, len, entry),
            Target::Asn(asn) => self.asn.insert(asn, entry),
        };
        self.expiries.push(Reverse((ban.expires_at, ban.target)));
        self.compact_expiries();
        match old {
            Some(old) => {
                let replaced = self.ban(ban.target, old);
                self.release_label(old.label);
                Ok(Added::Replaced(replaced))
            }
            None => {
                self.len += 1;
                Ok(Added::New)
            }
        }
    }

    /// Lifts the ban on exactly `target` (not the bans of networks inside or around it).
    pub fn remove(&mut self, target: &Target) -> Option<Ban> {
        let old = match *target {
            Target::V4 { net, len } => self.v4.remove(net, len),
            Target::V6 { net, len } => self.v6.remove(net, len),
            Target::Asn(asn) => self.asn.remove(&asn),
        }?;
        let ban = self.ban(*target, old);
        self.release_label(old.label);
        self.len -= 1;
        Some(ban)
    }

    /// Frees up to `at_most` bans that have expired at `now` and returns them, in expiry
    /// order. Costs the number of bans freed (and stale heap entries), not the number
    /// stored; the bound lets a caller holding a lock free a burst of expiries in slices
    /// (about 1 µs per ban), as expired bans deny nothing meanwhile.
    pub fn expire(&mut self, now: u32, at_most: usize) -> Vec<Ban> {
        let mut expired = Vec::new();
        while let Some(&Reverse((at, target))) = self.expiries.peek() {
            if at > now || expired.len() >= at_most {
                break;
            }
            self.expiries.pop();
            // A leftover of a replaced or removed ban has another expiry, or no entry.
            if self.entry(&target).is_some_and(|e| e.expires_at == at) {
                if let Some(ban) = self.remove(&target) {
                    expired.push(ban);
                }
            }
        }
        expired
    }

    /// Every stored ban, sorted by target.
    pub fn list(&self) -> Vec<Ban> {
        let mut out: Vec<Ban> = Vec::with_capacity(self.len);
        for (len, map) in (0u8..).zip(&self.v4.by_len) {
            out.extend(
                map.iter()
                    .map(|(&net, &e)| self.ban(Target::V4 { net, len }, e)),
            );
        }
        for (len, map) in (0u8..).zip(&self.v6.by_len) {
            out.extend(
                map.iter()
                    .map(|(&net, &e)| self.ban(Target::V6 { net, len }, e)),
            );
        }
        out.extend(
            self.asn
                .iter()
                .map(|(&asn, &e)| self.ban(Target::Asn(asn), e)),
        );
        out.sort_unstable_by_key(|b| b.target);
        out
    }

    /// Bans stored per origin, for the metrics.
    pub fn count_by_origin(&self) -> Vec<(Arc<str>, u64)> {
        let mut counts: HashMap<&Arc<str>, u64> = HashMap::new();
        for label in self.labels.iter().filter(|l| l.bans > 0) {
            *counts.entry(&label.origin).or_default() += u64::from(label.bans);
        }
        let mut out: Vec<(Arc<str>, u64)> = counts
            .into_iter()
            .map(|(o, n)| (Arc::clone(o), n))
            .collect();
        out.sort_unstable();
        out
    }

    fn entry(&self, target: &Target) -> Option<Entry> {
        match *target {
            Target::V4 { net, len } => self.v4.get(net, len),
            Target::V6 { net, len } => self.v6.get(net, len),
            Target::Asn(asn) => self.asn.get(&asn).copied(),
        }
    }

    fn ban(&self, target: Target, entry: Entry) -> Ban {
        let label = usize::try_from(entry.label)
            .ok()
            .and_then(|i| self.labels.get(i));
        Ban {
            target,
            origin: label.map_or_else(|| Arc::from(""), |l| Arc::clone(&l.origin)),
            reason: label.map_or_else(|| Arc::from(""), |l| Arc::clone(&l.reason)),
            since: entry.since,
            expires_at: entry.expires_at,
        }
    }

    /// The label index for this origin and reason, counting one more ban on it.
    fn label(&mut self, origin: &Arc<str>, reason: &Arc<str>) -> u32 {
        let key = (Arc::clone(origin), Arc::clone(reason));
        if let Some(&index) = self.label_of.get(&key) {
            if let Some(label) = usize::try_from(index)
                .ok()
                .and_then(|i| self.labels.get_mut(i))
            {
                label.bans += 1;
            }
            return index;
        }
        let label = Label {
            origin: Arc::clone(origin),
            rule: Bytes::copy_from_slice(origin.as_bytes()),
            reason: Arc::clone(reason),
            bans: 1,
        };
        let index = match self.free_labels.pop() {
            Some(index) => {
                if let Some(slot) = usize::try_from(index)
                    .ok()
                    .and_then(|i| self.labels.get_mut(i))
                {
                    *slot = label;
                }
                index
            }
            None => {
                // More than 2^32 distinct labels cannot be stored in memory anyway.
                let index = u32::try_from(self.labels.len()).unwrap_or(u32::MAX);
                self.labels.push(label);
                index
            }
        };
        self.label_of.insert(key, index);
        index
    }

    /// One ban fewer on label `index`; an unused label is freed for reuse.
    fn release_label(&mut self, index: u32) {
        let Some(label) = usize::try_from(index)
            .ok()
            .and_then(|i| self.labels.get_mut(i))
        else {
            return;
        };
        label.bans = label.bans.saturating_sub(1);
        if label.bans == 0 {
            let key = (Arc::clone(&label.origin), Arc::clone(&label.reason));
            label.origin = Arc::from("");
            label.reason = Arc::from("");
            self.label_of.remove(&key);
            self.free_labels.push(index);
        }
    }

    /// Rebuilds the expiry heap from the stored bans when leftovers of replaced and
    /// removed bans outnumber them.
    fn compact_expiries(&mut self) {
        if self.expiries.len() <= 2 * self.len + 64 {
            return;
        }
        let live: Vec<Reverse<(u32, Target)>> = self
            .list()
            .into_iter()
            .map(|b| Reverse((b.expires_at, b.target)))
            .collect();
        self.expiries = BinaryHeap::from(live);
    }
}
