//! The instruments: [`Counter`] and [`Gauge`] newtypes over atomics, a [`Hold`] that keeps
//! a gauge up while it lives, and counters indexed by one or two label enums
//! ([`Counters`], [`Matrix`]) so that a new variant is a new series without touching the
//! counting code.
//!
//! Every operation is one relaxed atomic instruction: no lock, no allocation. Readers
//! (the exposition, tests) see each value exactly; values read together are not a
//! consistent snapshot, which Prometheus does not expect either.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use strum::{EnumCount, IntoEnumIterator};

use crate::decision::{Decision, Reason};
use crate::spop::{ErrorKind, FrameType};

/// A count that only goes up.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

/// A value that goes up and down, or is set.
#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Subtracts one.
    #[inline]
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sets the value.
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Sets the value from an unsigned one (saturating).
    pub fn set_u64(&self, value: u64) {
        self.set(i64::try_from(value).unwrap_or(i64::MAX));
    }

    /// The value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Adds one now and subtracts it again when the returned guard is dropped: `let _open
    /// = metrics.connections_active.hold();`.
    #[must_use = "the gauge goes back down when the guard is dropped"]
    pub fn hold(&self) -> Hold<'_> {
        self.inc();
        Hold(self)
    }
}

impl fmt::Debug for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

/// Keeps a [`Gauge`] one higher for as long as it lives ([`Gauge::hold`]).
#[derive(Debug)]
pub struct Hold<'a>(&'a Gauge);

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A set of values that label a family of counters: an enum whose variants are numbered
/// 0 to `COUNT − 1` ([`Label::index`]) and iterated in that order.
pub trait Label: Copy + EnumCount + IntoEnumIterator + 'static {
    /// The variant's position, below `Self::COUNT`.
    fn index(self) -> usize;
    /// The label value exposed.
    fn label(self) -> &'static str;
}

impl Label for Decision {
    fn index(self) -> usize {
        self as usize
    }
    fn label(self) -> &'static str {
        self.as_str()
    }
}

impl Label for Reason {
    fn index(self) -> usize {
        self as usize
    }
    fn label(self) -> &'static str {
        self.as_str()
    }
}

impl Label for ErrorKind {
    fn index(self) -> usize {
        self as usize
    }
    fn label(self) -> &'static str {
        self.as_str()
    }
}

impl Label for FrameType {
    fn index(self) -> usize {
        FrameType::index(self)
    }
    fn label(self) -> &'static str {
        self.as_str()
    }
}

/// One counter per value of `L`.
pub struct Counters<L: Label> {
    counters: Box<[Counter]>,
    labels: std::marker::PhantomData<L>,
}

impl<L: Label> Default for Counters<L> {
    fn default() -> Self {
        Self {
            counters: (0..L::COUNT).map(|_| Counter::default()).collect(),
            labels: std::marker::PhantomData,
        }
    }
}

impl<L: Label> Counters<L> {
    /// The counter of `label`.
    #[inline]
    pub fn of(&self, label: L) -> &Counter {
        // In range by the `Label` contract (checked by tests for every implementation);
        // a broken implementation counts into the first counter rather than panicking.
        let index = label.index();
        self.counters
            .get(index)
            .or_else(|| self.counters.first())
            .unwrap_or(&NOWHERE)
    }

    /// Every label with its count, in label order.
    pub fn iter(&self) -> impl Iterator<Item = (L, u64)> + '_ {
        L::iter().map(|label| (label, self.of(label).get()))
    }

    /// The sum over all labels.
    pub fn total(&self) -> u64 {
        self.counters.iter().map(Counter::get).sum()
    }
}

impl<L: Label> fmt::Debug for Counters<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(l, n)| (l.label(), n)))
            .finish()
    }
}

/// One counter per pair of values of `A` and `B`.
pub struct Matrix<A: Label, B: Label> {
    rows: Box<[Counters<B>]>,
    labels: std::marker::PhantomData<A>,
}

impl<A: Label, B: Label> Default for Matrix<A, B> {
    fn default() -> Self {
        Self {
            rows: (0..A::COUNT).map(|_| Counters::default()).collect(),
            labels: std::marker::PhantomData,
        }
    }
}

impl<A: Label, B: Label> Matrix<A, B> {
    /// The counter of `(a, b)`.
    #[inline]
    pub fn of(&self, a: A, b: B) -> &Counter {
        match self.rows.get(a.index()).or_else(|| self.rows.first()) {
            Some(row) => row.of(b),
            None => &NOWHERE,
        }
    }

    /// The counters of `a`, by `B`.
    pub fn row(&self, a: A) -> impl Iterator<Item = (B, u64)> + '_ {
        B::iter().map(move |b| (b, self.of(a, b).get()))
    }

    /// Every pair with its count, `A` major.
    pub fn iter(&self) -> impl Iterator<Item = (A, B, u64)> + '_ {
        A::iter().flat_map(move |a| self.row(a).map(move |(b, n)| (a, b, n)))
    }
}

impl<A: Label, B: Label> fmt::Debug for Matrix<A, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.rows.iter()).finish()
    }
}

/// Where counts of a label with no counter go (an empty label enum); never exposed.
static NOWHERE: Counter = Counter(AtomicU64::new(0));

#[cfg(test)]
mod tests {
    use super::*;

    fn dense<L: Label>() {
        for (i, label) in L::iter().enumerate() {
            assert_eq!(label.index(), i, "{}", label.label());
        }
        assert_eq!(L::iter().count(), L::COUNT);
    }

    #[test]
    fn every_label_enum_is_numbered_densely_in_iteration_order() {
        dense::<Decision>();
        dense::<Reason>();
        dense::<ErrorKind>();
        dense::<FrameType>();
        dense::<crate::metrics::ReloadResult>();
        dense::<crate::metrics::BanChange>();
        dense::<crate::metrics::AdminRoute>();
        dense::<crate::metrics::AdminResult>();
        dense::<crate::metrics::FleetError>();
        dense::<crate::metrics::ConnectionDrop>();
        dense::<crate::metrics::OpsListener>();
        dense::<crate::metrics::OpsDrop>();
    }

    #[test]
    fn counters_by_label_and_by_pair() {
        let frames = Counters::<FrameType>::default();
        frames.of(FrameType::Ack).inc();
        frames.of(FrameType::Ack).add(2);
        assert_eq!(frames.of(FrameType::Ack).get(), 3);
        assert_eq!(frames.total(), 3);
        let decisions = Matrix::<Decision, Reason>::default();
        decisions.of(Decision::Deny, Reason::Asn).inc();
        assert_eq!(decisions.of(Decision::Deny, Reason::Asn).get(), 1);
        assert_eq!(decisions.of(Decision::Allow, Reason::Asn).get(), 0);
        assert_eq!(decisions.iter().map(|(_, _, n)| n).sum::<u64>(), 1);
    }

    #[test]
    fn a_hold_keeps_the_gauge_up_until_dropped() {
        let gauge = Gauge::default();
        {
            let _a = gauge.hold();
            let _b = gauge.hold();
            assert_eq!(gauge.get(), 2);
        }
        assert_eq!(gauge.get(), 0);
    }
}
