//! The per-request path: whether a request is sampled (a thread-local countdown), and
//! the sharded buffers that sampled requests are copied into until aggregation drains
//! them.
//!
//! # Sampling
//!
//! Allowed and denied requests are two streams, each with its own *interval* `I` (an
//! `AtomicU32` that aggregation sets and the hot path reads with `Relaxed`: one load of a
//! line that changes once a second). Every thread keeps, per stream, a countdown of the
//! requests still to skip and the number of requests since its last sample; a request
//! that finds the countdown at 0 is sampled with that number as its *weight*, and the
//! next countdown is drawn uniformly from `0..2I−1` (gaps of 1 to `2I−1` requests, `I` on
//! average; the jitter keeps a periodic request pattern from aliasing with the sampling).
//!
//! - `I = 1`: every request is sampled with weight 1: exact counting.
//! - Every request is in exactly one sample's weight, so the weights of one thread add up
//!   to its request count, less fewer than `2I` requests not yet followed by a sample.
//! - A key's estimate, the weights of its samples, is unbiased: for request `i`,
//!   `P(sampled) · E[weight | sampled] = (1 / I) · I`, whatever the gap that ended at it.
//!
//! The countdown lives in a `thread_local!` `Cell` tagged with the [`Buffers`]'s id (so
//! that two instances in one process, as in tests, do not share a countdown); no
//! request touches a shared cache line for writing unless it is sampled.
//!
//! # Buffers
//!
//! A sampled request is encoded (format below) into the current 64 KiB chunk of its
//! thread's shard: a `Mutex` that only its own thread and the aggregation take (threads
//! are spread over `shards` round-robin, on first use). Chunks are counted in one atomic
//! shared by all shards and capped at `buffer_bytes / 64 KiB`: a sample that needs a
//! new chunk at the cap is dropped, and its weight is added to the shard's `dropped`
//! count instead, so totals stay right. Aggregation takes every shard's chunks (a
//! pointer swap under the lock), decodes them, and gives them back to the shard, empty,
//! as spares for the next period; spares still unused at the next drain are freed.
//! Chunks are counted from allocation to free, so the buffers never exceed the cap.
//!
//! Reusing the chunks keeps the request path out of the kernel: with a fresh allocation
//! per chunk, the allocator gave freed chunks back to the kernel, and a profile of two
//! threads recording every request showed them spending most of their time faulting
//! that memory in again, one page fault per 4 KiB.
//!
//! # Record format
//!
//! Native-endian, one record after the other inside a chunk:
//!
//! ```text
//!   0      8       12     13
//!   +------+-------+------+-----------+---------+----------+----------+----------+
//!   | time | weight| flags| src 0/4/16| asn 0/4 | path     | host     | ua       |
//!   | u64  | u32   | u8   |           |         | u16 len  | u16 len  | u16 len  |
//!   +------+-------+------+-----------+---------+ + bytes  + + bytes  + + bytes  +
//!
//!   time  nanoseconds since the epoch of the Insight
//!   flags bit 0 denied, bit 1 src present, bit 2 src is IPv6, bit 3 asn present
//!   len   0 means absent (empty and absent are the same, as in `Request`)
//! ```
//!
//! A key longer than `key_bytes` is stored as its first `key_bytes` bytes followed by
//! one `0xFF` byte, so a truncated key (`key_bytes + 1` long) never equals a key that was
//! not truncated, and keys sharing a long prefix count together.

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::Observation;

/// Bytes of one buffer chunk.
pub(super) const CHUNK_BYTES: usize = 64 * 1024;

/// The largest sampling interval: beyond it a stream is sampled less than its budget
/// (a million requests per sample is far beyond any traffic an agent sees).
pub(super) const MAX_INTERVAL: u32 = 1 << 20;

/// The largest `key_bytes`: a record must fit in a chunk many times over.
pub(super) const MAX_KEY_BYTES: usize = 4096;

/// Appended to a truncated key (see the module docs).
const TRUNCATED: u8 = 0xFF;

const DENIED: u8 = 1;
const SRC: u8 = 2;
const SRC_V6: u8 = 4;
const ASN: u8 = 8;

/// Bytes of a record before its variable parts: time, weight, flags.
const HEADER: usize = 8 + 4 + 1;

/// Identifies a [`Buffers`] in the thread-local countdowns; 0 is "none yet".
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's countdowns, for the [`Buffers`] whose id is `owner`.
    static LOCAL: Cell<Local> = const { Cell::new(Local::UNSET) };
}

/// Sampling state and sample buffers.
pub(super) struct Buffers {
    /// Tags the thread-local countdowns as this instance's.
    id: u64,
    /// Time origin of the record times.
    epoch: Instant,
    /// Longest key kept; longer ones are truncated.
    key_bytes: usize,
    /// Cap on `chunks`.
    max_chunks: usize,
    /// Chunks allocated, in shards or being aggregated.
    chunks: AtomicUsize,
    /// Round-robin assignment of threads to shards.
    next_shard: AtomicUsize,
    /// Sampling interval of allowed requests.
    interval_allowed: AtomicU32,
    /// Sampling interval of denied requests.
    interval_denied: AtomicU32,
    /// The buffers.
    shards: Box<[Shard]>,
}

/// One shard, alone on its cache lines so that threads on different shards do not
/// contend on the lock word.
#[derive(Default)]
#[repr(align(128))]
struct Shard(Mutex<Pending>);

/// What a shard holds between two aggregations.
#[derive(Default)]
struct Pending {
    /// Full chunks, then the one being filled (last).
    chunks: Vec<Vec<u8>>,
    /// Empty chunks that the last drain gave back, used before allocating new ones.
    spare: Vec<Vec<u8>>,
    /// Weight of the samples dropped at the cap.
    dropped: Weights,
}

/// A weight per stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Weights {
    /// Allowed requests.
    pub(super) allowed: u64,
    /// Denied requests.
    pub(super) denied: u64,
}

impl Weights {
    /// Adds `weight` to the stream of `denied`.
    pub(super) fn add(&mut self, denied: bool, weight: u64) {
        let stream = if denied {
            &mut self.denied
        } else {
            &mut self.allowed
        };
        *stream = stream.saturating_add(weight);
    }

    /// Both streams.
    pub(super) fn sum(&self) -> u64 {
        self.allowed.saturating_add(self.denied)
    }
}

/// One sampled request, decoded.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sample<'a> {
    /// Nanoseconds since the epoch.
    pub(super) nanos: u64,
    /// Requests this sample stands for.
    pub(super) weight: u32,
    /// Whether the request was denied.
    pub(super) denied: bool,
    /// Source address, as observed.
    pub(super) src: Option<IpAddr>,
    /// Source ASN.
    pub(super) asn: Option<u32>,
    /// Path, host and user agent; empty when absent.
    pub(super) path: &'a [u8],
    /// See `path`.
    pub(super) host: &'a [u8],
    /// See `path`.
    pub(super) ua: &'a [u8],
}

impl Buffers {
    /// Empty buffers with every interval at 1.
    pub(super) fn new(
        epoch: Instant,
        key_bytes: usize,
        buffer_bytes: usize,
        shards: usize,
    ) -> Buffers {
        Buffers {
            id: NEXT_ID.fetch_add(1, Relaxed),
            epoch,
            key_bytes: key_bytes.clamp(1, MAX_KEY_BYTES),
            max_chunks: (buffer_bytes / CHUNK_BYTES).max(1),
            chunks: AtomicUsize::new(0),
            next_shard: AtomicUsize::new(0),
            interval_allowed: AtomicU32::new(1),
            interval_denied: AtomicU32::new(1),
            shards: (0..shards.max(1)).map(|_| Shard::default()).collect(),
        }
    }

    /// Samples `obs` or not (see the module docs); a sampled request is copied into its
    /// thread's shard.
    #[inline]
    pub(super) fn record(&self, obs: &Observation<'_>) {
        let interval = if obs.denied {
            &self.interval_denied
        } else {
            &self.interval_allowed
        }
        .load(Relaxed);
        let sampled = LOCAL
            .try_with(|cell| {
                let mut local = cell.get();
                if local.owner != self.id {
                    local = self.local();
                }
                let weight = local.countdown(obs.denied, interval);
                cell.set(local);
                weight.map(|w| (local.shard, w))
            })
            .ok()
            .flatten();
        if let Some((shard, weight)) = sampled {
            self.push(shard, weight, obs);
        }
    }

    /// The current sampling intervals: allowed, denied.
    pub(super) fn intervals(&self) -> (u32, u32) {
        (
            self.interval_allowed.load(Relaxed),
            self.interval_denied.load(Relaxed),
        )
    }

    /// Sets the sampling intervals (clamped to `1..=MAX_INTERVAL`).
    pub(super) fn set_intervals(&self, allowed: u32, denied: u32) {
        self.interval_allowed
            .store(allowed.clamp(1, MAX_INTERVAL), Relaxed);
        self.interval_denied
            .store(denied.clamp(1, MAX_INTERVAL), Relaxed);
    }

    /// Takes every buffered sample, calls `each` on it, and returns the weight dropped at
    /// the cap since the last drain.
    pub(super) fn drain(&self, mut each: impl FnMut(&Sample<'_>)) -> Weights {
        let mut dropped = Weights::default();
        for shard in self.shards.iter() {
            let Pending {
                mut chunks,
                spare: unused,
                dropped: lost,
            } = std::mem::take(&mut *lock(&shard.0));
            dropped.add(false, lost.allowed);
            dropped.add(true, lost.denied);
            for chunk in &mut chunks {
                let mut rest = chunk.as_slice();
                while let Some((sample, tail)) = decode(rest) {
                    each(&sample);
                    rest = tail;
                }
                chunk.clear();
            }
            // The chunks used since the last drain go back to the shard; the spares it
            // did not need are freed, so an idle shard holds nothing after two drains.
            lock(&shard.0).spare = chunks;
            let freed = unused.len();
            drop(unused);
            self.chunks.fetch_sub(freed, Relaxed);
        }
        dropped
    }

    /// Bytes of the chunks allocated now.
    pub(super) fn heap_bytes(&self) -> usize {
        self.chunks.load(Relaxed).saturating_mul(CHUNK_BYTES)
    }

    /// A fresh countdown for this thread, on the next shard.
    #[cold]
    fn local(&self) -> Local {
        let n = self.next_shard.fetch_add(1, Relaxed);
        let mut seed = self.id ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        seed ^= seed >> 31;
        Local {
            owner: self.id,
            shard: n % self.shards.len().max(1),
            rng: seed | 1,
            allowed: Countdown::default(),
            denied: Countdown::default(),
        }
    }

    /// Copies a sampled request into shard `shard`, or counts it as dropped at the cap.
    fn push(&self, shard: usize, weight: u32, obs: &Observation<'_>) {
        let Some(shard) = self.shards.get(shard) else {
            return;
        };
        let len = self.encoded_len(obs);
        let mut pending = lock(&shard.0);
        let room = pending
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= len);
        if !room {
            let chunk = match pending.spare.pop() {
                Some(chunk) => chunk,
                None if self.reserve_chunk() => Vec::with_capacity(CHUNK_BYTES),
                None => {
                    pending.dropped.add(obs.denied, u64::from(weight));
                    return;
                }
            };
            pending.chunks.push(chunk);
        }
        if let Some(chunk) = pending.chunks.last_mut() {
            self.encode(chunk, weight, obs);
        }
    }

    /// Counts one more chunk, unless at the cap. The load keeps the counter's cache line
    /// shared while a burst holds the cap.
    fn reserve_chunk(&self) -> bool {
        if self.chunks.load(Relaxed) >= self.max_chunks {
            return false;
        }
        if self.chunks.fetch_add(1, Relaxed) >= self.max_chunks {
            self.chunks.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }

    /// Bytes of the record of `obs`.
    fn encoded_len(&self, obs: &Observation<'_>) -> usize {
        let src = match obs.src {
            None => 0,
            Some(IpAddr::V4(_)) => 4,
            Some(IpAddr::V6(_)) => 16,
        };
        let asn = if obs.asn.is_some() { 4 } else { 0 };
        let key = |k: Option<&[u8]>| {
            let len = k.map_or(0, <[u8]>::len);
            2 + if len > self.key_bytes {
                self.key_bytes + 1
            } else {
                len
            }
        };
        HEADER + src + asn + key(obs.path) + key(obs.host) + key(obs.ua)
    }

    fn encode(&self, out: &mut Vec<u8>, weight: u32, obs: &Observation<'_>) {
        let since = obs.now.saturating_duration_since(self.epoch);
        let nanos = since
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(since.subsec_nanos()));
        let mut flags = 0;
        if obs.denied {
            flags |= DENIED;
        }
        match obs.src {
            Some(IpAddr::V4(_)) => flags |= SRC,
            Some(IpAddr::V6(_)) => flags |= SRC | SRC_V6,
            None => {}
        }
        if obs.asn.is_some() {
            flags |= ASN;
        }
        out.extend_from_slice(&nanos.to_ne_bytes());
        out.extend_from_slice(&weight.to_ne_bytes());
        out.push(flags);
        match obs.src {
            Some(IpAddr::V4(a)) => out.extend_from_slice(&a.octets()),
            Some(IpAddr::V6(a)) => out.extend_from_slice(&a.octets()),
            None => {}
        }
        if let Some(asn) = obs.asn {
            out.extend_from_slice(&asn.to_ne_bytes());
        }
        for key in [obs.path, obs.host, obs.ua] {
            let key = key.unwrap_or_default();
            let (head, truncated) = match key.get(..self.key_bytes) {
                Some(head) if key.len() > self.key_bytes => (head, true),
                _ => (key, false),
            };
            let len = head.len() + usize::from(truncated);
            out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
            out.extend_from_slice(head);
            if truncated {
                out.push(TRUNCATED);
            }
        }
    }
}

/// Decodes the first record of `bytes`: the sample and the bytes after it; `None` at
/// the end (or on a malformed record, which `encode` never writes).
fn decode(bytes: &[u8]) -> Option<(Sample<'_>, &[u8])> {
    let mut r = Reader(bytes);
    let nanos = u64::from_ne_bytes(r.array()?);
    let weight = u32::from_ne_bytes(r.array()?);
    let [flags] = r.array()?;
    let src = if flags & SRC == 0 {
        None
    } else if flags & SRC_V6 == 0 {
        Some(IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)))
    } else {
        Some(IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)))
    };
    let asn = if flags & ASN == 0 {
        None
    } else {
        Some(u32::from_ne_bytes(r.array()?))
    };
    let path = r.key()?;
    let host = r.key()?;
    let ua = r.key()?;
    let sample = Sample {
        nanos,
        weight,
        denied: flags & DENIED != 0,
        src,
        asn,
        path,
        host,
        ua,
    };
    Some((sample, r.0))
}

/// A cursor over a record.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn key(&mut self) -> Option<&'a [u8]> {
        let len = u16::from_ne_bytes(self.array()?);
        self.take(usize::from(len))
    }
}

/// A thread's sampling state for one [`Buffers`].
#[derive(Debug, Clone, Copy)]
struct Local {
    /// The id of the [`Buffers`] this state belongs to.
    owner: u64,
    /// This thread's shard.
    shard: usize,
    /// xorshift64 state (never 0), for the jitter of the gaps.
    rng: u64,
    /// Allowed requests.
    allowed: Countdown,
    /// Denied requests.
    denied: Countdown,
}

/// One stream's countdown.
#[derive(Debug, Default, Clone, Copy)]
struct Countdown {
    /// Requests to skip before the next sample.
    left: u32,
    /// Requests since the last sample, this one included: the next sample's weight.
    since: u32,
}

impl Local {
    const UNSET: Local = Local {
        owner: 0,
        shard: 0,
        rng: 1,
        allowed: Countdown { left: 0, since: 0 },
        denied: Countdown { left: 0, since: 0 },
    };

    /// Counts one request of the stream of `denied` at `interval`: its weight if it is
    /// sampled.
    #[inline]
    fn countdown(&mut self, denied: bool, interval: u32) -> Option<u32> {
        let mut c = if denied { self.denied } else { self.allowed };
        // Gaps are 1..=spread requests long, `interval` on average.
        let spread = interval.clamp(1, MAX_INTERVAL) * 2 - 1;
        c.since = c.since.saturating_add(1);
        if c.left >= spread {
            // The interval went down since this countdown was drawn.
            c.left = self.draw(spread);
        }
        let weight = if c.left == 0 {
            let weight = c.since;
            c.since = 0;
            c.left = self.draw(spread);
            Some(weight)
        } else {
            c.left -= 1;
            None
        };
        if denied {
            self.denied = c;
        } else {
            self.allowed = c;
        }
        weight
    }

    /// Uniform in `0..spread` (0 when `spread` is 1).
    fn draw(&mut self, spread: u32) -> u32 {
        if spread <= 1 {
            return 0;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        // Multiply-shift: the high 32 bits times `spread`, divided by 2³².
        u32::try_from(((self.rng >> 32) * u64::from(spread)) >> 32).unwrap_or(0)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a buffer was held leaves it consistent enough for statistics.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn obs<'a>(src: &str, path: &'a [u8], denied: bool, now: Instant) -> Observation<'a> {
        Observation {
            src: Some(src.parse().unwrap()),
            asn: Some(64500),
            path: Some(path),
            host: None,
            ua: Some(b"curl/8.5.0"),
            denied,
            now,
        }
    }

    /// Time, weight, denied, source and path of a drained sample.
    type Drained = (u64, u32, bool, Option<IpAddr>, Vec<u8>);

    fn drain_all(b: &Buffers) -> (Vec<Drained>, Weights) {
        let mut out = Vec::new();
        let dropped = b.drain(|s| {
            out.push((s.nanos, s.weight, s.denied, s.src, s.path.to_vec()));
            assert_eq!(s.asn, Some(64500));
            assert_eq!(s.host, b"");
            assert_eq!(s.ua, b"curl/8.5.0");
        });
        (out, dropped)
    }

    #[test]
    fn records_round_trip_and_long_keys_are_truncated() {
        let epoch = Instant::now();
        let b = Buffers::new(epoch, 10, 1 << 20, 2);
        b.record(&obs(
            "192.0.2.1",
            b"/a",
            false,
            epoch + Duration::from_nanos(5),
        ));
        b.record(&obs("2001:db8::1", b"/0123456789", true, epoch));
        let (got, dropped) = drain_all(&b);
        assert_eq!(dropped, Weights::default());
        assert_eq!(
            got,
            vec![
                (
                    5,
                    1,
                    false,
                    Some("192.0.2.1".parse().unwrap()),
                    b"/a".to_vec()
                ),
                (
                    0,
                    1,
                    true,
                    Some("2001:db8::1".parse().unwrap()),
                    b"/012345678\xff".to_vec()
                ),
            ]
        );
        assert_eq!(b.heap_bytes(), CHUNK_BYTES, "kept as a spare");
        b.record(&obs("192.0.2.1", b"/a", false, epoch));
        assert_eq!(b.heap_bytes(), CHUNK_BYTES, "the spare is used");
        drain_all(&b);
        drain_all(&b);
        assert_eq!(b.heap_bytes(), 0, "an unused spare is freed");
    }

    #[test]
    fn sampling_weights_add_up_to_the_requests() {
        let epoch = Instant::now();
        let b = Buffers::new(epoch, 64, 1 << 22, 1);
        b.set_intervals(10, 1);
        for _ in 0..10_000 {
            b.record(&obs("192.0.2.1", b"/", false, epoch));
        }
        for _ in 0..100 {
            b.record(&obs("192.0.2.1", b"/", true, epoch));
        }
        let (got, _) = drain_all(&b);
        let allowed: Vec<u32> = got.iter().filter(|s| !s.2).map(|s| s.1).collect();
        let denied: u64 = got.iter().filter(|s| s.2).map(|s| u64::from(s.1)).sum();
        let sum: u64 = allowed.iter().map(|&w| u64::from(w)).sum();
        assert!(
            (10_000 - 19..=10_000).contains(&sum),
            "{sum}: at most 2I − 1 pending"
        );
        assert!(allowed.iter().all(|&w| (1..=19).contains(&w)));
        assert!((900..=1_100).contains(&allowed.len()), "{}", allowed.len());
        assert_eq!(denied, 100, "the denied stream is not sampled");
    }

    #[test]
    fn lowering_the_interval_takes_effect_at_once() {
        let epoch = Instant::now();
        let b = Buffers::new(epoch, 64, 1 << 22, 1);
        b.set_intervals(1_000, 1);
        for _ in 0..10 {
            b.record(&obs("192.0.2.1", b"/", false, epoch));
        }
        drain_all(&b);
        b.set_intervals(1, 1);
        b.record(&obs("192.0.2.1", b"/", false, epoch));
        let (got, _) = drain_all(&b);
        assert_eq!(
            got.len(),
            1,
            "the pending countdown was cut to the new interval"
        );
    }

    #[test]
    fn the_cap_drops_samples_but_keeps_their_weight() {
        let epoch = Instant::now();
        let b = Buffers::new(epoch, 64, CHUNK_BYTES, 1);
        let path = [b'p'; 60];
        let per_chunk = CHUNK_BYTES / b.encoded_len(&obs("192.0.2.1", &path, false, epoch));
        for _ in 0..per_chunk + 10 {
            b.record(&obs("192.0.2.1", &path, false, epoch));
        }
        assert_eq!(b.heap_bytes(), CHUNK_BYTES);
        let (got, dropped) = drain_all(&b);
        assert_eq!(got.len(), per_chunk);
        assert_eq!(dropped.allowed, 10);
    }

    #[test]
    fn countdowns_are_per_instance() {
        let epoch = Instant::now();
        let a = Buffers::new(epoch, 64, 1 << 20, 1);
        let b = Buffers::new(epoch, 64, 1 << 20, 1);
        a.set_intervals(1_000, 1_000);
        for _ in 0..5 {
            a.record(&obs("192.0.2.1", b"/", false, epoch));
        }
        for _ in 0..5 {
            b.record(&obs("192.0.2.1", b"/", false, epoch));
        }
        assert_eq!(drain_all(&b).0.len(), 5);
    }
}
