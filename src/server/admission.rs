//! Who gets one of the `max_connections` SPOP connection slots.
//!
//! A slot taken by a connection that has not completed its HAPROXY-HELLO is only
//! borrowed: when every slot is taken and a new connection arrives, the oldest connection
//! still waiting for its HELLO is evicted (closed) and the newcomer takes its place. So
//! silent or trickling sockets — an attacker's, a port scanner's, a half-open connection —
//! can never keep HAProxy out: they hold slots only until someone else needs them, and at
//! most `hello_timeout_secs` anyway. Connections that completed their HELLO are never
//! evicted; when every slot is held by one, new connections wait in the listen backlog
//! as before, until a slot frees.
//!
//! An evicted connection keeps its slot until its task has closed it (a moment later),
//! so that the number of open connections stays bounded: at most `max_connections` plus
//! the evicted ones still closing (never more than `max_connections` of those).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The slots of one listener.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    state: Mutex<State>,
    /// Signalled when a slot frees or a connection starts waiting for its HELLO.
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Slots held, evicted connections still closing included.
    held: usize,
    /// Connections without a HELLO yet, oldest first: their eviction handles.
    waiting_hello: BTreeMap<u64, CancellationToken>,
    next: u64,
}

/// One connection's slot: given back when dropped.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    id: u64,
    evicted: CancellationToken,
}

/// A new connection's slot, and whether another connection was evicted to make room.
#[derive(Debug)]
pub struct Admitted {
    /// The slot.
    pub slot: Slot,
    /// A connection waiting for its HELLO was evicted for this one.
    pub evicted_another: bool,
}

impl Admission {
    /// Slots for at most `max` connections (at least 1).
    pub fn new(max: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max: max.max(1),
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn has_room(&self, state: &State) -> bool {
        state.held < self.max || !state.waiting_hello.is_empty()
    }

    /// Waits until a new connection would be admitted: a slot is free, or one is held by
    /// a connection still waiting for its HELLO.
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

    /// Takes a slot for a new connection, evicting the oldest connection still waiting
    /// for its HELLO if every slot is held; `None` when every slot is held by a
    /// connection past its HELLO.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut state = self.lock();
        let mut evicted_another = false;
        if state.held >= self.max {
            let (_, oldest) = state.waiting_hello.pop_first()?;
            oldest.cancel();
            evicted_another = true;
        }
        state.held += 1;
        let id = state.next;
        state.next += 1;
        let evicted = CancellationToken::new();
        state.waiting_hello.insert(id, evicted.clone());
        drop(state);
        Some(Admitted {
            slot: Slot {
                admission: self.clone(),
                id,
                evicted,
            },
            evicted_another,
        })
    }

    /// Slots held now (evicted connections still closing included).
    pub fn held(&self) -> usize {
        self.lock().held
    }
}

impl Slot {
    /// Cancelled when the connection is evicted (before its HELLO only).
    pub fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }

    /// The connection completed its HELLO: it can no longer be evicted.
    pub fn established(&self) {
        self.admission.lock().waiting_hello.remove(&self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        state.waiting_hello.remove(&self.id);
        state.held = state.held.saturating_sub(1);
        drop(state);
        self.admission.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn connections_without_hello_make_room_oldest_first() {
        let admission = Admission::new(2);
        let a = admission.admit().unwrap();
        let b = admission.admit().unwrap();
        assert!(!a.evicted_another && !b.evicted_another);
        // Full: the oldest waiting for its HELLO (a) goes.
        let c = admission.admit().unwrap();
        assert!(c.evicted_another);
        assert!(a.slot.evicted().is_cancelled());
        assert!(!b.slot.evicted().is_cancelled());
        // a still holds its slot until it has closed.
        assert_eq!(admission.held(), 3);
        drop(a);
        assert_eq!(admission.held(), 2);
    }

    #[test]
    fn established_connections_are_never_evicted() {
        let admission = Admission::new(2);
        let a = admission.admit().unwrap();
        let b = admission.admit().unwrap();
        a.slot.established();
        b.slot.established();
        assert!(admission.admit().is_none());
        assert!(!a.slot.evicted().is_cancelled());
        drop(b);
        let c = admission.admit().unwrap();
        assert!(!c.evicted_another);
    }

    #[tokio::test]
    async fn room_waits_for_a_slot_to_free() {
        let admission = Admission::new(1);
        let a = admission.admit().unwrap();
        a.slot.established();
        let waiting = tokio::spawn({
            let admission = admission.clone();
            async move { admission.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn room_is_there_while_a_slot_waits_for_its_hello() {
        let admission = Admission::new(1);
        let _a = admission.admit().unwrap();
        tokio::time::timeout(Duration::from_secs(1), admission.room())
            .await
            .unwrap();
    }
}
