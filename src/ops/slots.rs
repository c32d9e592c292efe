//! Who holds one of the connection slots of an operations listener, how far each
//! connection has got ([`Stage`]), and which one gives its slot up when a new connection
//! arrives with every slot taken.
//!
//! A new connection is always admitted: at the cap, the connection that has made the
//! least progress is evicted (closed) and the newcomer takes its place — first the oldest
//! still waiting for its request head that has had a chance to send it (its task has
//! read at least once), then the oldest waiting for its head at all, then the oldest
//! still sending its body, then the oldest whose response is not taken, and only when
//! every slot is held by a handler at work, the oldest of those. So an attacker holding
//! any number of sockets that send nothing, or a head a byte at a time, cannot keep
//! `/healthz` out: a probe sends its head at once and is past [`Stage::Head`] before
//! the slots have turned over; the attacker's sockets hold slots only until someone else
//! needs them.
//!
//! The registry itself (eviction, the bound on connections still closing) is
//! [`crate::util::slots`], which the SPOP listener uses too; this module maps an HTTP
//! connection's progress to its eviction rank.

use std::sync::{Arc, Mutex, PoisonError};

use crate::util::slots;

/// How far a connection has got with its one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for the request head (since the accept).
    Head,
    /// The head is in; reading the body.
    Body,
    /// The handler is working on the answer.
    Handling,
    /// The response is being written.
    Writing,
}

/// The slots of one listener.
#[derive(Debug)]
pub struct Slots {
    slots: Arc<slots::Slots>,
}

/// One connection's slot and progress: the slot is given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slot: slots::Slot,
    /// The stage, and whether its task has read at least once.
    progress: Mutex<(Stage, bool)>,
}

/// The eviction order: lowest first (the least progress, or the least worth keeping).
fn rank(stage: Stage, polled: bool) -> u8 {
    match (stage, polled) {
        (Stage::Head, true) => 0,
        (Stage::Head, false) => 1,
        (Stage::Body, _) => 2,
        (Stage::Writing, _) => 3,
        (Stage::Handling, _) => 4,
    }
}

impl Slots {
    /// Slots for at most `max` connections (at least 1).
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            slots: slots::Slots::new(max),
        })
    }

    /// Waits until a new connection may be admitted: at once unless `max` evicted
    /// connections are still closing.
    pub async fn room(&self) {
        self.slots.room().await;
    }

    /// A slot for a new connection, evicting the connection with the least progress if
    /// every slot is taken (see the module docs); whether one was evicted. `None` only
    /// if called without waiting for [`Slots::room`].
    pub fn admit(&self) -> Option<(Arc<Slot>, bool)> {
        let admitted = self.slots.admit(Some(rank(Stage::Head, false)))?;
        let slot = Slot {
            slot: admitted.slot,
            progress: Mutex::new((Stage::Head, false)),
        };
        Some((Arc::new(slot), admitted.evicted_another))
    }

    /// Connections holding a slot now, evicted ones still closing included.
    pub fn held(&self) -> usize {
        self.slots.held()
    }
}

impl Slot {
    /// Resolves when the connection is evicted.
    pub async fn evicted(&self) {
        self.slot.evicted().await;
    }

    /// Resolves after the next stage change (at once if one happened since the last
    /// call).
    pub async fn changed(&self) {
        self.slot.changed().await;
    }

    fn update(&self, change: impl FnOnce(&mut (Stage, bool))) {
        let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut progress);
        let (stage, polled) = *progress;
        drop(progress);
        self.slot.set_rank(Some(rank(stage, polled)));
    }

    /// The connection's task has read at least once.
    pub fn polled(&self) {
        self.update(|progress| progress.1 = true);
    }

    /// The connection is now at `stage`.
    pub fn enter(&self, stage: Stage) {
        self.update(|progress| progress.0 = stage);
    }

    /// The connection's stage (`None` once evicted).
    pub fn stage(&self) -> Option<Stage> {
        if !self.slot.is_held() {
            return None;
        }
        Some(
            self.progress
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn evicted(slot: &Slot) -> bool {
        slot.slot.eviction().is_cancelled()
    }

    #[test]
    fn below_the_cap_nobody_is_evicted() {
        let slots = Slots::new(2);
        let (a, ea) = slots.admit().unwrap();
        let (b, eb) = slots.admit().unwrap();
        assert!(!ea && !eb && !evicted(&a) && !evicted(&b));
        assert_eq!(slots.held(), 2);
        drop(a);
        assert_eq!(slots.held(), 1);
    }

    #[test]
    fn at_the_cap_the_oldest_waiting_for_its_head_goes() {
        let slots = Slots::new(3);
        let (a, _) = slots.admit().unwrap();
        let (b, _) = slots.admit().unwrap();
        let (c, _) = slots.admit().unwrap();
        for slot in [&a, &b, &c] {
            slot.polled();
        }
        a.enter(Stage::Handling);
        let (d, evicted_one) = slots.admit().unwrap();
        assert!(evicted_one);
        assert!(!evicted(&a), "a handler at work is kept");
        assert!(evicted(&b), "the oldest still waiting for its head goes");
        assert!(!evicted(&c));
        assert_eq!(b.stage(), None);
        // b holds its slot until it has closed.
        assert_eq!(slots.held(), 4);
        drop(b);
        assert_eq!(slots.held(), 3);
        drop((a, c, d));
        assert_eq!(slots.held(), 0);
    }

    #[test]
    fn a_connection_not_yet_read_from_is_spared_while_another_waits_for_its_head() {
        let slots = Slots::new(2);
        let (fresh, _) = slots.admit().unwrap();
        let (silent, _) = slots.admit().unwrap();
        silent.polled();
        let (_new, _) = slots.admit().unwrap();
        assert!(evicted(&silent) && !evicted(&fresh));
    }

    #[test]
    fn the_least_progress_goes_first_and_handlers_last() {
        let slots = Slots::new(4);
        let stages = [Stage::Handling, Stage::Writing, Stage::Body, Stage::Head];
        let held: Vec<_> = stages
            .iter()
            .map(|&stage| {
                let (slot, _) = slots.admit().unwrap();
                slot.polled();
                slot.enter(stage);
                (slot, stage)
            })
            .collect();
        let expected = [Stage::Head, Stage::Body, Stage::Writing, Stage::Handling];
        let mut newcomers = Vec::new();
        for (round, want) in expected.iter().enumerate() {
            let (slot, evicted_one) = slots.admit().unwrap();
            assert!(evicted_one);
            // Newcomers at work too, but younger: the held handler still goes first.
            slot.enter(Stage::Handling);
            newcomers.push(slot);
            let gone: Vec<Stage> = held
                .iter()
                .filter(|(slot, _)| evicted(slot))
                .map(|(_, stage)| *stage)
                .collect();
            assert_eq!(gone.len(), round + 1, "{gone:?}");
            assert!(gone.contains(want), "round {round}: {gone:?}");
        }
    }

    #[tokio::test]
    async fn a_stage_change_wakes_the_connection() {
        let slots = Slots::new(1);
        let (slot, _) = slots.admit().unwrap();
        slot.enter(Stage::Writing);
        tokio::time::timeout(Duration::from_secs(1), slot.changed())
            .await
            .unwrap();
        assert_eq!(slot.stage(), Some(Stage::Writing));
    }

    #[tokio::test]
    async fn room_waits_only_while_the_evicted_are_still_closing() {
        let slots = Slots::new(1);
        let (a, _) = slots.admit().unwrap();
        tokio::time::timeout(Duration::from_secs(1), slots.room())
            .await
            .unwrap();
        let (_b, evicted_one) = slots.admit().unwrap();
        assert!(evicted_one && evicted(&a));
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(a);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
    }
}
