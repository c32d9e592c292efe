//! The time slots: a ring of `slots` slots of `slot` each, every slot holding one
//! Space-Saving summary per dimension and class, and the totals.
//!
//! Slot `i` covers `[epoch + i·slot, epoch + (i+1)·slot)`. A sample goes into the slot of
//! its own time (not the time it is aggregated), so a window's edges are exact to the
//! sample. The ring holds slots `current − slots + 1 ..= current`, where `current` is the
//! latest slot any sample or aggregation time fell in; moving `current` forward clears
//! the slots that fall out (keeping their allocations). A sample older than the ring is
//! ignored: it could only be reported by a window longer than the ring (it can only
//! happen when aggregation stalls for longer than the ring).

use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use super::buffer::{Sample, Weights};
use super::summary::{KeyRef, Summary};
use super::Dimension;
use crate::decision::canonical;

/// Number of dimensions.
pub(super) const DIMENSIONS: usize = Dimension::ALL.len();

/// The ring of slots.
pub(super) struct Window {
    /// Start of slot 0.
    epoch: Instant,
    /// Length of a slot, in nanoseconds (≥ 1).
    slot_nanos: u64,
    /// `slots` slots; slot `i` is at `i % slots`.
    ring: Vec<Slot>,
    /// The latest slot.
    current: u64,
    /// Secret seed of the key hashes (see `summary`).
    seed: RandomState,
}

/// One slot.
pub(super) struct Slot {
    /// Which slot this is; `u64::MAX` for a slot never used.
    index: u64,
    /// Every request.
    pub(super) all: Class,
    /// Denied requests.
    pub(super) denied: Class,
    /// Whether some requests here were sampled with an interval above 1, or dropped:
    /// the counts are then estimates.
    pub(super) sampled: bool,
    /// Requests dropped at the buffer cap (counted in the totals, not in any key).
    pub(super) dropped: u64,
}

/// The summaries of one class in one slot.
pub(super) struct Class {
    /// Requests, including those dropped at the buffer cap.
    pub(super) total: u64,
    /// One summary per dimension, in [`Dimension::ALL`] order.
    pub(super) dims: [Summary; DIMENSIONS],
}

impl Class {
    fn new(counters: usize) -> Class {
        Class {
            total: 0,
            dims: std::array::from_fn(|_| Summary::new(counters)),
        }
    }

    fn add(&mut self, keys: &[(u64, KeyRef<'_>); DIMENSIONS], weight: u64) {
        self.total = self.total.saturating_add(weight);
        for (summary, &(hash, key)) in self.dims.iter_mut().zip(keys) {
            summary.add(hash, key, weight);
        }
    }

    fn clear(&mut self) {
        self.total = 0;
        for summary in &mut self.dims {
            summary.clear();
        }
    }
}

impl Slot {
    fn reset(&mut self, index: u64) {
        self.index = index;
        self.all.clear();
        self.denied.clear();
        self.sampled = false;
        self.dropped = 0;
    }
}

impl Window {
    /// An empty ring of `slots` (≥ 1) slots of `slot` (≥ 1 ns) starting at `epoch`, with
    /// summaries of `counters` counters.
    pub(super) fn new(epoch: Instant, slot: Duration, slots: usize, counters: usize) -> Window {
        let mut ring: Vec<Slot> = (0..slots.max(1))
            .map(|_| Slot {
                index: u64::MAX,
                all: Class::new(counters),
                denied: Class::new(counters),
                sampled: false,
                dropped: 0,
            })
            .collect();
        if let Some(first) = ring.first_mut() {
            first.index = 0;
        }
        Window {
            epoch,
            slot_nanos: u64::try_from(slot.as_nanos()).unwrap_or(u64::MAX).max(1),
            ring,
            current: 0,
            seed: RandomState::new(),
        }
    }

    /// The slot `now` falls in (0 before the epoch).
    pub(super) fn index_of(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch);
        u64::try_from(since.as_nanos() / u128::from(self.slot_nanos)).unwrap_or(u64::MAX)
    }

    /// When slot `index` starts.
    pub(super) fn start_of(&self, index: u64) -> Instant {
        let nanos = u128::from(index) * u128::from(self.slot_nanos);
        let since = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.epoch.checked_add(since).unwrap_or(self.epoch)
    }

    /// Number of slots in the ring.
    pub(super) fn len(&self) -> u64 {
        self.ring.len() as u64
    }

    /// Moves the ring forward so that slot `index` is in it.
    pub(super) fn advance(&mut self, index: u64) {
        if index <= self.current {
            return;
        }
        let len = self.len();
        let from = self
            .current
            .saturating_add(1)
            .max(index.saturating_sub(len - 1));
        for i in from..=index {
            if let Some(slot) = self.ring.get_mut(position(i, len)) {
                slot.reset(i);
            }
        }
        self.current = self.current.max(index);
    }

    /// Adds one sample to the slot of its time.
    pub(super) fn add<'a>(&mut self, sample: &Sample<'a>) {
        let index = sample.nanos / self.slot_nanos;
        let weight = u64::from(sample.weight);
        if index > self.current {
            self.advance(index);
        }
        let src = sample.src.map(canonical);
        let seed = &self.seed;
        let key = |k: KeyRef<'a>| (seed.hash_one(k), k);
        let keys: [(u64, KeyRef<'a>); DIMENSIONS] = [
            key(src.map_or(KeyRef::Missing, KeyRef::Addr)),
            key(src.map_or(KeyRef::Missing, |a| KeyRef::Net(network(a)))),
            key(sample.asn.map_or(KeyRef::Missing, KeyRef::Asn)),
            key(bytes(sample.path)),
            key(bytes(sample.host)),
            key(bytes(sample.ua)),
        ];
        let Some(slot) = self.slot_mut(index) else {
            return; // older than the ring
        };
        slot.all.add(&keys, weight);
        if sample.denied {
            slot.denied.add(&keys, weight);
        }
        if weight > 1 {
            slot.sampled = true;
        }
    }

    /// Adds requests dropped at the buffer cap to the totals of slot `index`.
    pub(super) fn add_dropped(&mut self, index: u64, dropped: Weights) {
        if dropped.sum() == 0 {
            return;
        }
        self.advance(index);
        if let Some(slot) = self.slot_mut(index) {
            slot.all.total = slot.all.total.saturating_add(dropped.sum());
            slot.denied.total = slot.denied.total.saturating_add(dropped.denied);
            slot.dropped = slot.dropped.saturating_add(dropped.sum());
            slot.sampled = true;
        }
    }

    /// Slot `index`, if the ring holds it.
    pub(super) fn slot(&self, index: u64) -> Option<&Slot> {
        self.ring
            .get(position(index, self.len()))
            .filter(|s| s.index == index)
    }

    fn slot_mut(&mut self, index: u64) -> Option<&mut Slot> {
        let len = self.len();
        self.ring
            .get_mut(position(index, len))
            .filter(|s| s.index == index)
    }

    /// Heap bytes of the summaries.
    pub(super) fn heap_bytes(&self) -> usize {
        self.ring.capacity() * std::mem::size_of::<Slot>()
            + self
                .ring
                .iter()
                .flat_map(|s| s.all.dims.iter().chain(&s.denied.dims))
                .map(Summary::heap_bytes)
                .sum::<usize>()
    }
}

/// Position of slot `index` in a ring of `len` slots.
fn position(index: u64, len: u64) -> usize {
    // `index % len < len`, and `len` came from a `usize`.
    usize::try_from(index % len.max(1)).unwrap_or(0)
}

/// The source network of an address: its /24 (IPv4) or /48 (IPv6).
pub(super) fn network(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & 0xffff_ff00)),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & !(u128::MAX >> 48))),
    }
}

/// A path, host or user agent as a key: empty means absent.
fn bytes(b: &[u8]) -> KeyRef<'_> {
    if b.is_empty() {
        KeyRef::Missing
    } else {
        KeyRef::Bytes(b)
    }
}
