//! Connection slots with eviction: the bound every listener puts on its connections
//! (SPOP in `server`, the operations and admin listeners in `ops`).
//!
//! A listener has `max` slots. Each connection holding one has a *rank*: how little it
//! has done so far, or `None` when it must never be evicted. When every slot is taken
//! and a new connection arrives, the connection with the lowest rank (the oldest of
//! those) is evicted — its task sees [`Slot::evicted`] and closes it — and the newcomer
//! takes its place; when no connection may be evicted, the newcomer is refused
//! ([`Slots::admit`] gives `None`) and [`Slots::room`] waits for a slot. So an attacker
//! holding sockets that send nothing, or send a byte at a time, cannot keep out a client
//! that makes progress: its sockets hold slots only until someone else needs them.
//!
//! An evicted connection leaves the registry at once but its slot counts until its task
//! has dropped its [`Slot`] (a moment later): at most `max` evicted connections may be
//! closing, so the open sockets stay bounded by twice `max`; [`Slots::room`] waits
//! while that many are.
//!
//! Cost: one short lock per accept, per rank change and per close; choosing whom to
//! evict scans the open connections, so `max` is meant to be modest or evictions rare
//! (the SPOP listener's eviction only happens under attack).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The slots of one listener.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    state: Mutex<State>,
    /// Signalled when a slot frees, an evicted connection has closed, or a connection
    /// becomes evictable.
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Connections holding a slot, by accept order (ids only grow).
    open: BTreeMap<u64, Entry>,
    /// Evicted connections still closing: they hold a slot until they have.
    closing: usize,
    next: u64,
}

#[derive(Debug)]
struct Entry {
    /// Eviction order, lowest first; `None`: never.
    rank: Option<u8>,
    evict: CancellationToken,
}

/// One connection's slot: given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    evicted: CancellationToken,
    /// Signalled on every rank change, for the connection's own deadlines.
    changed: Notify,
}

/// A new connection's slot, and whether another connection was evicted for it.
#[derive(Debug)]
pub struct Admitted {
    /// The slot.
    pub slot: Slot,
    /// Another connection was evicted to make room.
    pub evicted_another: bool,
}

impl Slots {
    /// Slots for at most `max` connections (at least 1).
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max: max.max(1),
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent, whatever panicked holding the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn has_room(&self, state: &State) -> bool {
        state.closing < self.max
            && (state.open.len() < self.max || state.open.values().any(|e| e.rank.is_some()))
    }

    /// Waits until a new connection would be admitted: a slot is free or held by an
    /// evictable connection, and fewer than `max` evicted ones are still closing.
    pub async fn room(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.has_room(&self.lock()) {
                return;
            }
            changed.await;
        }
    }

    /// A slot for a new connection of `rank`, evicting the lowest-ranked (oldest first)
    /// connection if every slot is taken; `None` when none may be evicted.
    pub fn admit(self: &Arc<Self>, rank: Option<u8>) -> Option<Admitted> {
        let mut state = self.lock();
        let mut evicted_another = false;
        if state.open.len() >= self.max {
            let victim = state.victim()?;
            if let Some(entry) = state.open.remove(&victim) {
                entry.evict.cancel();
                state.closing += 1;
                evicted_another = true;
            }
        }
        let id = state.next;
        state.next += 1;
        let evicted = CancellationToken::new();
        state.open.insert(
            id,
            Entry {
                rank,
                evict: evicted.clone(),
            },
        );
        drop(state);
        Some(Admitted {
            slot: Slot {
                slots: self.clone(),
                id,
                evicted,
                changed: Notify::new(),
            },
            evicted_another,
        })
    }

    /// Connections holding a slot now, evicted ones still closing included.
    pub fn held(&self) -> usize {
        let state = self.lock();
        state.open.len() + state.closing
    }
}

impl State {
    /// The connection to evict: the lowest rank, the oldest of those.
    fn victim(&self) -> Option<u64> {
        let mut best: Option<(u8, u64)> = None;
        for (&id, entry) in &self.open {
            let Some(rank) = entry.rank else { continue };
            // Ids come in increasing order: a later one of equal rank is younger.
            if best.is_none_or(|(lowest, _)| rank < lowest) {
                best = Some((rank, id));
            }
        }
        best.map(|(_, id)| id)
    }
}

impl Slot {
    /// Cancelled when the connection is evicted.
    pub fn eviction(&self) -> &CancellationToken {
        &self.evicted
    }

    /// Resolves when the connection is evicted.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await;
    }

    /// Resolves after the next rank change (at once if one happened since the last
    /// call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The connection's rank is now `rank` (`None`: never evict it).
    pub fn set_rank(&self, rank: Option<u8>) {
        if let Some(entry) = self.slots.lock().open.get_mut(&self.id) {
            entry.rank = rank;
        }
        self.changed.notify_one();
        if rank.is_some() {
            self.slots.changed.notify_waiters();
        }
    }

    /// Whether the connection still holds its slot (not evicted).
    pub fn is_held(&self) -> bool {
        self.slots.lock().open.contains_key(&self.id)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.slots.lock();
        if state.open.remove(&self.id).is_none() {
            // Evicted: it was counted among the closing.
            state.closing = state.closing.saturating_sub(1);
        }
        drop(state);
        self.slots.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn admit(slots: &Arc<Slots>, rank: Option<u8>) -> Slot {
        slots.admit(rank).unwrap().slot
    }

    #[test]
    fn at_the_cap_the_lowest_rank_goes_oldest_first() {
        let slots = Slots::new(3);
        let a = admit(&slots, Some(1));
        let b = admit(&slots, Some(0));
        let c = admit(&slots, Some(0));
        let d = slots.admit(Some(0)).unwrap();
        assert!(d.evicted_another);
        assert!(b.eviction().is_cancelled(), "the oldest of the lowest rank");
        assert!(!a.eviction().is_cancelled() && !c.eviction().is_cancelled());
        assert!(!b.is_held());
        // b holds its slot until it has closed.
        assert_eq!(slots.held(), 4);
        drop(b);
        assert_eq!(slots.held(), 3);
    }

    #[test]
    fn connections_that_may_not_be_evicted_are_not() {
        let slots = Slots::new(2);
        let a = admit(&slots, None);
        let b = admit(&slots, Some(0));
        b.set_rank(None);
        assert!(slots.admit(Some(0)).is_none());
        assert!(a.is_held() && b.is_held());
        drop(b);
        assert!(!slots.admit(Some(0)).unwrap().evicted_another);
    }

    #[tokio::test]
    async fn room_waits_for_a_slot_or_an_evictable_connection() {
        let slots = Slots::new(1);
        let a = admit(&slots, None);
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        a.set_rank(Some(0));
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn room_waits_while_the_evicted_are_still_closing() {
        let slots = Slots::new(1);
        let a = admit(&slots, Some(0));
        assert!(slots.admit(Some(0)).unwrap().evicted_another);
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "one evicted still closing, max 1");
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_rank_change_wakes_the_connection() {
        let slots = Slots::new(1);
        let a = admit(&slots, Some(0));
        a.set_rank(Some(3));
        tokio::time::timeout(Duration::from_secs(1), a.changed())
            .await
            .unwrap();
    }
}
