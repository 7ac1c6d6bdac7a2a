//! Typed rings across processes: [`ShmProducer<T>`] and [`ShmConsumer<T>`]
//! for plain-data `T`, running the in-process SPSC protocol
//! ([`ProducerCore`]/[`ConsumerCore`]) over the mapped segment.
//!
//! # Memory another process writes
//!
//! The slots are memory that another process maps. A peer that keeps the
//! protocol never writes a slot while this side reads it, nor reads one this
//! side writes; a peer that does not (a bug, or a process of a user the
//! segment trusts, see `SegmentOptions::allow_shared`) can race with us.
//! Rust's memory model does not know other processes: a racing non-atomic
//! access is a data race, undefined behaviour, volatile or not (the
//! standard library says so of `read_volatile`). What is standard for
//! shared memory, and what this module does, is to touch slots only with
//! volatile reads and writes of whole `T: Pod` values into and out of
//! locals, and never to hand out a reference to a slot from safe code. The
//! compiler then can neither assume a slot's bytes stay the same nor read
//! them twice, and any bytes are a valid `T`: a racing peer can make this
//! side see wrong values, never read outside the mapping. That is the
//! guarantee the kernel's `READ_ONCE`/`WRITE_ONCE` give, not one Rust's
//! abstract machine gives. The calls that do hand out references over slots
//! ([`ShmReadChunk::as_slices`], [`ShmProducer::write_chunk_uninit`]) say
//! that the peer must be trusted.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

#[cfg(not(loom))]
use crate::chunks::WriteChunkUninit;
use crate::error::check_capacity;
use crate::protocol::{ConsumerCore, ProducerCore};
use crate::ring_buffer::SlotRing;
use crate::sync::{Arc, AtomicU32, AtomicU64, Ordering};
use crate::wait::{Blocking, Sharing, WaitStrategy, Waiter, retry_until};

use super::chunk::{Lap, ShmReadChunk};
use super::error::{OpenError, Role, ShmPopError, ShmPushError, ShmTryPopError};
use crate::fanout::{
    CURSOR_DROPPED, CURSOR_SUBSCRIBED, Policy, Words, copies_intact, producer_floor,
};

use super::header::{
    ConsumerCursor, END_CLOSED, END_DIED, END_FAILED, END_LOG_LEN, HeaderError, Layout,
    MAX_CAPACITY, MAX_SLOT_ALIGN, ROLE_ATTACHED, ROLE_CLOSED, ROLE_FAILED, ROLE_NEVER, RingKind,
    SegmentHeader, check_position, fingerprint,
};
use super::segment::{Segment, SegmentOptions};
use super::slot::ShmSlot;

/// How often an idle side asks the kernel whether its peer still holds its
/// role lock (one `fcntl` each time).
const PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// A typed ring inside a mapped segment: the [`SlotRing`] the protocol runs on.
pub(crate) struct MappedRing<T> {
    pub(crate) seg: Segment,
    slots: *mut T,
    mask: u64,
    capacity: usize,
    /// Consumer only: end records this consumer has reported (or skipped),
    /// the number of the next one it reads. Process-local: only the
    /// consumer's thread stores it, and it loads it Relaxed.
    ends_reported: AtomicU64,
    /// Consumer only: the index of its cursor (whose lock it holds).
    own: Option<u32>,
    /// Producer only: the largest `tail_seq` it has published under the
    /// fan-out pattern (`fanout::producer_floor`). Process-local, as
    /// `ends_reported`.
    checked: std::sync::atomic::AtomicU64,
    /// The ring's lag bound ([`Policy::Lag`]), `None` for none.
    lag_bound: Option<u64>,
    /// The ring's grace for a dead subscriber ([`Policy::Lag`]), `None`
    /// under [`Policy::Block`].
    lag_grace: Option<Duration>,
    /// Producer only: the dead subscribers holding it back, and since when.
    dead: std::sync::Mutex<DeadWatch>,
    /// Consumer only: a `Lagged` error is to be reported before anything
    /// is read (`read_limit` lets nothing through meanwhile). Process-local,
    /// as `ends_reported`.
    lag_pending: std::sync::atomic::AtomicBool,
    _slots: PhantomData<T>,
}

/// Producer only, under [`Policy::Lag`]: which subscribers that hold the
/// producer back have had no consumer attached, since when.
#[derive(Debug, Default)]
struct DeadWatch {
    /// The last look at the cursors' locks.
    last: Option<Instant>,
    /// Per cursor: the position it held the producer at, and when it was
    /// first seen there with no consumer attached.
    since: Vec<Option<(u64, Instant)>>,
}

// SAFETY: `T: ShmSlot` values are plain bytes, and the segment is shared memory
// accessed through the SPSC protocol; the raw pointer is what makes it !Send.
unsafe impl<T: ShmSlot> Send for MappedRing<T> {}
// SAFETY: as above.
unsafe impl<T: ShmSlot> Sync for MappedRing<T> {}

impl<T: ShmSlot> MappedRing<T> {
    /// Checks that `seg` is a ring of `kind` whose slots are `T`, and wraps it.
    fn new(seg: Segment, kind: RingKind) -> Result<Self, OpenError> {
        check_slot_align::<T>()?;
        let l = *seg.layout();
        let mismatch = |what: String| OpenError::Mismatch {
            path: seg.path().to_owned(),
            what,
        };
        if l.kind != kind {
            let named = |k| match k {
                RingKind::Typed => "a typed",
                RingKind::Arrow => "an Arrow",
            };
            return Err(mismatch(format!(
                "{} ring, not {} one",
                named(l.kind),
                named(kind)
            )));
        }
        let (size, align) = (size_of::<T>() as u64, align_of::<T>() as u32);
        if l.slot_size != size || l.slot_align != align {
            return Err(mismatch(format!(
                "slots are {} bytes aligned to {}, {} is {size} aligned to {align}",
                l.slot_size,
                l.slot_align,
                T::TYPE_NAME
            )));
        }
        if l.type_fingerprint != fingerprint::<T>() {
            return Err(mismatch(format!(
                "slot type fingerprint {:#x} is not {}'s {:#x} (another type, or another \
                 version of it: ShmSlot::TYPE_NAME differs)",
                l.type_fingerprint,
                T::TYPE_NAME,
                fingerprint::<T>()
            )));
        }
        let capacity = usize::try_from(l.capacity).map_err(|_| mismatch("capacity".into()))?;
        // validate() checked slots_offset + capacity * slot_size <= total_len
        // <= the mapped length; slots_offset is a multiple of max(align, 128)
        // and the mapping is page-aligned.
        // SAFETY: so the slots region is in bounds and aligned for T.
        let slots = unsafe { seg.ptr_at(l.slots_offset) }.cast::<T>();
        let (lag_bound, lag_grace) = match l.policy {
            Policy::Block => (None, None),
            Policy::Lag { bound, grace } => (bound, Some(grace)),
        };
        Ok(Self {
            seg,
            slots,
            mask: l.capacity - 1,
            capacity,
            ends_reported: AtomicU64::new(0),
            own: None,
            checked: std::sync::atomic::AtomicU64::new(0),
            lag_bound,
            lag_grace,
            dead: std::sync::Mutex::new(DeadWatch::default()),
            lag_pending: std::sync::atomic::AtomicBool::new(false),
            _slots: PhantomData,
        })
    }

    /// This consumer's cursor (a producer has none: it gets cursor 0, which
    /// it never stores to).
    #[inline(always)]
    pub(crate) fn cursor(&self) -> &ConsumerCursor {
        &self.seg.cursors()[self.own.unwrap_or(0) as usize]
    }

    /// This consumer's cursor index.
    pub(crate) fn cursor_index(&self) -> Option<u32> {
        self.own
    }

    /// Whether nothing a consumer copied from `first` on can have been
    /// overwritten: the producer publishes `tail_seq` past a slot before it
    /// overwrites it, and `tail_seq` stays at or below every subscribed
    /// consumer's `read_seq`. Checked after the copy and before the release
    /// (a seqlock's check): once the items are released, the producer may
    /// move `tail_seq` past them rightly.
    #[inline(always)]
    fn intact(&self, first: u64) -> bool {
        copies_intact(
            &self.seg.header().producer.tail_seq,
            &self.cursor().subscription,
            first,
        )
    }

    /// How long a producer waiting for room sleeps at most: under
    /// [`Policy::Lag`] its attempts watch a dead subscriber's grace run
    /// out, which no one announces, so a tenth of the grace (at least
    /// [`DEAD_LOOK_INTERVAL`]); otherwise no limit.
    fn lag_nap(&self) -> Option<Duration> {
        self.lag_grace.map(|g| (g / 10).max(DEAD_LOOK_INTERVAL))
    }

    /// Whether the ring drops subscribers ([`Policy::Lag`]).
    pub(crate) fn lags(&self) -> bool {
        self.lag_grace.is_some()
    }

    /// The producer's bound for a producer at `write` that is held back
    /// (by the arena, in an Arrow ring, if not by the slots): as
    /// `read_floor`, dropping the dead subscribers whose grace is over.
    #[cfg(feature = "arrow")] // used by the Arrow layer only
    fn floor_held(&self, write: u64) -> Option<u64> {
        let floor = self.floor_once(write)?;
        // SYNC POINT read_seq: Acquire, as in fanout::min_read.
        if self.drop_dead(|c| c.read_seq.load(Ordering::Acquire) == floor) {
            return self.floor_once(write);
        }
        Some(floor)
    }

    /// The fan-out bound (`fanout::producer_floor`) for a producer at
    /// `write`, dropping the subscribers at least the lag bound behind.
    fn floor_once(&self, write: u64) -> Option<u64> {
        let h = self.seg.header();
        let words = Words {
            tail: &h.producer.tail_seq,
            epoch: &h.subscriptions.epoch,
        };
        // Relaxed: process-local, this producer's thread only.
        let checked = self.checked.load(std::sync::atomic::Ordering::Relaxed);
        let (floor, checked) = producer_floor(
            words,
            self.seg.cursors(),
            write,
            self.capacity as u64,
            checked,
            self.lag_bound,
        )?;
        self.checked
            .store(checked, std::sync::atomic::Ordering::Relaxed);
        Some(floor)
    }

    /// Under [`Policy::Lag`], with the producer held back: drops every
    /// subscriber that `holds` it back (at its bound, or holding end
    /// records back) and has had no consumer attached, and stayed where it
    /// is, for the grace period (looking at their locks at most once per
    /// [`DEAD_LOOK_INTERVAL`]); whether it dropped one. A dead subscriber
    /// that holds nothing back is kept: dropping it would free nothing.
    #[cold]
    fn drop_dead(&self, holds: impl Fn(&ConsumerCursor) -> bool) -> bool {
        let Some(grace) = self.lag_grace else {
            return false;
        };
        let Ok(mut watch) = self.dead.lock() else {
            return false;
        };
        if !once_per(&mut watch.last, DEAD_LOOK_INTERVAL) {
            return false;
        }
        let now = Instant::now();
        let cursors = self.seg.cursors();
        watch.since.resize(cursors.len(), None);
        let mut dropped = false;
        for (i, c) in cursors.iter().enumerate() {
            // SYNC POINT subscription, read_seq: Acquire, as in
            // fanout::min_read.
            if c.subscription.load(Ordering::Acquire) != CURSOR_SUBSCRIBED
                || !holds(c)
                || self.seg.cursor_alive(i as u32)
            {
                watch.since[i] = None;
                continue;
            }
            let pos = c.read_seq.load(Ordering::Acquire);
            match watch.since[i] {
                Some((at, t)) if at == pos => {
                    if now.duration_since(t) >= grace
                        && self.seg.drop_dead_subscriber(i as u32, pos)
                    {
                        watch.since[i] = None;
                        dropped = true;
                    }
                }
                _ => watch.since[i] = Some((pos, now)),
            }
        }
        dropped
    }
}

/// `ShmConsumer::chunk_lapped_at` when no chunk was found overwritten.
const NO_LAP: u64 = u64::MAX;

/// A consumer's `Lagged` report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LagReport {
    /// None to make.
    None,
    /// To make, with the items missed.
    Due(u64),
    /// Made; cleared from the cursor at the next call.
    Told,
}

/// How often a producer held back under [`Policy::Lag`] looks at the locks
/// of the subscribers holding it back (one `fcntl` each).
const DEAD_LOOK_INTERVAL: Duration = Duration::from_millis(1);

// SAFETY: capacity is a validated power of two; slot_ptr masks the sequence
// into the validated slots region, contiguous and aligned for T; the atomics
// are the header's, shared by every process attached to the segment.
unsafe impl<T: ShmSlot> SlotRing for MappedRing<T> {
    type Item = T;
    const TRUSTED: bool = false;

    #[inline(always)]
    fn capacity(&self) -> usize {
        self.capacity
    }

    #[inline(always)]
    fn write_seq_atomic(&self) -> &AtomicU64 {
        &self.seg.header().producer.write_seq
    }

    #[inline(always)]
    fn read_seq_atomic(&self) -> &AtomicU64 {
        &self.cursor().read_seq
    }

    /// The minimum of the subscribed consumers' positions, published as
    /// `tail_seq` under the fan-out pattern (`fanout::producer_floor`);
    /// under [`Policy::Lag`], without the subscribers it drops.
    #[inline]
    fn read_floor(&self, write: u64) -> Option<u64> {
        let floor = self.floor_once(write)?;
        if write.saturating_sub(floor) >= self.capacity as u64
            // SYNC POINT read_seq: Acquire, as in fanout::min_read.
            && self.drop_dead(|c| c.read_seq.load(Ordering::Acquire) == floor)
        {
            return self.floor_once(write);
        }
        Some(floor)
    }

    #[inline(always)]
    unsafe fn slot_ptr(&self, seq: u64) -> *mut T {
        // SAFETY: (seq & mask) < capacity, inside the validated slots region.
        unsafe { self.slots.add((seq & self.mask) as usize) }
    }

    #[inline(always)]
    unsafe fn write_slot(&self, seq: u64, value: T) {
        // SAFETY: in bounds and aligned (slot_ptr); the caller's promise is
        // write_slot's, which write_to shares.
        unsafe { Self::write_to(self.slot_ptr(seq), value) }
    }

    #[inline(always)]
    unsafe fn read_slot(&self, seq: u64) -> T {
        // SAFETY: in bounds and aligned (slot_ptr); the caller's promise is
        // read_slot's, which read_from shares.
        unsafe { Self::read_from(self.slot_ptr(seq)) }
    }

    #[inline(always)]
    unsafe fn write_to(slot: *mut T, value: T) {
        // A volatile write, not a reference: see "Memory another process
        // writes" above for what that does and does not promise.
        // SAFETY: the caller owns the free slot, so a consumer keeping the
        // protocol does not touch it now.
        unsafe { slot.write_volatile(value) }
    }

    #[inline(always)]
    unsafe fn read_from(slot: *const T) -> T {
        // A producer breaking the protocol can race with this read: in
        // Rust's model a data race even when volatile; in practice it can
        // only yield some bytes (see "Memory another process writes" above).
        // SAFETY: the slot is published, so a producer keeping the protocol
        // does not write it; any bytes are a T.
        unsafe { slot.read_volatile() }
    }

    #[inline(always)]
    unsafe fn copy_into_slots(&self, src: *const T, dst: *mut T, n: usize) {
        for i in 0..n {
            // SAFETY: the caller gives n valid values at src and n owned free
            // slots at dst; each is written once, as write_to writes.
            unsafe { Self::write_to(dst.add(i), src.add(i).read()) }
        }
    }

    #[inline(always)]
    unsafe fn copy_from_slots(&self, src: *const T, dst: *mut T, n: usize) {
        for i in 0..n {
            // SAFETY: the caller gives n published slots at src and n
            // writable places at dst; each slot is read once, as read_from
            // reads, into a value.
            unsafe { dst.add(i).write(Self::read_from(src.add(i))) }
        }
    }

    #[inline(always)]
    fn wakes(&self) -> bool {
        true // either side may park, in another process
    }

    #[inline(always)]
    fn on_publish(&self) {
        self.seg
            .header()
            .not_empty
            .cell
            .notify(Sharing::AcrossProcesses);
    }

    #[inline(always)]
    fn on_release(&self) {
        self.seg
            .header()
            .not_full
            .cell
            .notify(Sharing::AcrossProcesses);
    }

    /// The position of the oldest end record this consumer has not
    /// reported, when it is before `write`: the consumer reads no further
    /// until it has reported that end (`ShmConsumer::producer_gone`).
    #[inline]
    fn read_limit(&self, write: u64) -> u64 {
        // Relaxed: process-local, this consumer's thread only.
        if self.lag_pending.load(std::sync::atomic::Ordering::Relaxed) {
            return 0; // `Lagged` first (ShmConsumer::look)
        }
        let h = self.seg.header();
        // SYNC POINT ends_head: Acquire pairs with the Release store in
        // append_end. Loaded after write_seq (Acquire): session N's record
        // is appended before session N+1 publishes anything, so a write_seq
        // that includes N+1's items brings N's record with it.
        let head = h.producer.ends_head.load(Ordering::Acquire);
        // Relaxed: process-local, stored by this consumer's thread only.
        let next = self.ends_reported.load(Ordering::Relaxed);
        if head == next {
            return write;
        }
        if head < next || head - next > END_LOG_LEN {
            // A damaged log: read nothing; the end check says what is wrong.
            return 0;
        }
        // Relaxed: published by the Acquire load of ends_head above.
        let at = h.end_log.record(next).at_seq.load(Ordering::Relaxed);
        at.min(write)
    }
}

/// Appends an end record to the end log: its fields (Relaxed), then
/// `ends_head` (Release). The caller holds the producer role, so no other
/// process appends meanwhile, and has made sure at attach that the record
/// overwrites none the consumer has not read (`make_room`).
fn append_end(h: &SegmentHeader, session: u64, at_seq: u64, kind: u32, reason: &str) {
    // Relaxed: only a producer holding the role stores ends_head; this one
    // loaded it with Acquire when it attached, and stored it since if at
    // all.
    let head = h.producer.ends_head.load(Ordering::Relaxed);
    let rec = h.end_log.record(head);
    // Relaxed: published by the Release store of ends_head below.
    rec.session.store(session, Ordering::Relaxed);
    rec.at_seq.store(at_seq, Ordering::Relaxed);
    rec.kind.store(kind, Ordering::Relaxed);
    rec.reason.store(reason);
    // SYNC POINT ends_head: Release publishes the record; pairs with the
    // Acquire loads in MappedRing::read_limit, ShmConsumer::producer_gone,
    // and a later producer's make_room.
    h.producer
        .ends_head
        .store(head.wrapping_add(1), Ordering::Release);
}

/// What a consumer reports for an end record of `kind`.
fn end_error(kind: u32) -> ShmTryPopError {
    match kind {
        END_CLOSED => ShmTryPopError::EndOfStream,
        END_FAILED => ShmTryPopError::ProducerFailed,
        _ => ShmTryPopError::PeerGone,
    }
}

/// Refuses a slot type aligned beyond [`MAX_SLOT_ALIGN`]: the mapping is
/// page-aligned and slot 0 sits at a multiple of `max(align, 128)`, which
/// aligns slots for `T` only up to a page. Create and open both ask.
fn check_slot_align<T>() -> Result<(), OpenError> {
    if align_of::<T>() > MAX_SLOT_ALIGN as usize {
        return Err(OpenError::SlotAlignment {
            type_name: std::any::type_name::<T>(),
            align: align_of::<T>(),
            max: MAX_SLOT_ALIGN,
        });
    }
    Ok(())
}

/// Geometry of a new typed ring.
pub(crate) fn typed_layout<T: ShmSlot>(
    capacity: usize,
    consumers: u32,
) -> Result<Layout, OpenError> {
    check_consumers(consumers)?;
    check_slot_align::<T>()?;
    check_capacity(capacity as u64, MAX_CAPACITY)?;
    if size_of::<T>() == 0 {
        return Err(OpenError::Geometry("zero-sized slot type".into()));
    }
    Layout::plan(
        RingKind::Typed,
        capacity as u64,
        size_of::<T>() as u64,
        align_of::<T>() as u32,
        fingerprint::<T>(),
        0,
        consumers,
    )
    .ok_or_else(|| OpenError::Geometry(format!("{capacity} slots overflow the address space")))
}

/// Checks a number of consumer cursors for a new ring.
pub(crate) fn check_consumers(consumers: u32) -> Result<(), OpenError> {
    if (1..=super::header::MAX_CONSUMERS).contains(&consumers) {
        Ok(())
    } else {
        Err(OpenError::Geometry(format!(
            "{consumers} consumers: a ring has 1 to {} consumer cursors",
            super::header::MAX_CONSUMERS
        )))
    }
}

/// Non-blocking polls of an empty ring between two full looks at the
/// producer (its end log, and the clock for the liveness probe), while
/// polls come fast: an empty `try_pop` in between costs two loads, where
/// reading the clock alone would cost some 20 ns. When 64 polls take longer
/// than [`PROBE_INTERVAL`], every poll looks (the clock is then cheap next
/// to the caller's pace), so a dead producer is still noticed within about
/// the probe interval, however slowly the caller polls.
const POLLS_PER_LOOK: u32 = 64;

/// Rate-limited check of a peer's role lock.
#[derive(Default)]
struct PeerProbe {
    last: Option<Instant>,
    /// Non-blocking polls since the last full look.
    polls: u32,
    /// Polls between full looks: [`POLLS_PER_LOOK`] while polls come fast,
    /// 1 (every poll looks) while they come slowly; 0 until the first look.
    stride: u32,
    /// When the current stride of polls began.
    since: Option<Instant>,
}

impl PeerProbe {
    /// Counts one non-blocking poll; `true` when it is time for a full look.
    #[inline(always)]
    fn look_due(&mut self) -> bool {
        self.polls += 1;
        if self.polls < self.stride {
            return false;
        }
        self.rearm();
        true
    }

    /// Starts the next stride of polls, as long as the pace of the last one
    /// says.
    #[cold]
    fn rearm(&mut self) {
        let now = Instant::now();
        let slow = self
            .since
            .is_none_or(|t| now.duration_since(t) >= PROBE_INTERVAL);
        self.stride = if slow { 1 } else { POLLS_PER_LOOK };
        // A slow caller times each poll; a fast one each stride of them.
        if self.polls >= POLLS_PER_LOOK || slow {
            self.since = Some(now);
        }
        self.polls = 0;
    }

    /// `Some(alive)` when it is time to ask the kernel again, else `None`.
    fn probe(&mut self, seg: &Segment, role: Role) -> Option<bool> {
        self.due().then(|| seg.role_alive(role))
    }

    /// Whether a probe is due (at most one per [`PROBE_INTERVAL`]); if so,
    /// the next one is an interval away.
    fn due(&mut self) -> bool {
        once_per(&mut self.last, PROBE_INTERVAL)
    }
}

/// Whether `interval` has passed since `last` (or there is none); if so,
/// `last` becomes now: a rate limit.
fn once_per(last: &mut Option<Instant>, interval: Duration) -> bool {
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < interval) {
        return false;
    }
    *last = Some(now);
    true
}

/// Run by a producer attaching, with the role held and before it stores
/// anything else: waits (at most `attach_timeout`) until the end log has
/// room for a DIED record for its predecessor and for its own end, then
/// appends that DIED record if the predecessor died without one.
///
/// The predecessor died when `producer_state` still says ATTACHED (the role
/// lock was free, so it is not alive) and the newest record is not for its
/// session (`producer_sessions`). One killed after appending its record and
/// before storing its state has its record: it ended as it said.
fn make_room<T: ShmSlot>(ring: &Arc<MappedRing<T>>, write: u64) -> Result<(), OpenError> {
    let h = ring.seg.header();
    let line = &h.producer;
    let bad = |source| OpenError::BadHeader {
        path: ring.seg.path().to_owned(),
        source,
    };
    // Acquire (all three): pair with the Release stores of earlier
    // producers (SYNC POINT producer_sessions, ends_head).
    let sessions = line.producer_sessions.load(Ordering::Acquire);
    let state = line.producer_state.load(Ordering::Acquire);
    let head = line.ends_head.load(Ordering::Acquire);
    check_position("ends_head", head).map_err(bad)?;
    let newest = head
        .checked_sub(1)
        // Relaxed: published by the Acquire load of ends_head above.
        .map(|i| h.end_log.record(i).session.load(Ordering::Relaxed));
    let predecessor_died = state == ROLE_ATTACHED && sessions > 0 && newest != Some(sessions);
    let max_pending = END_LOG_LEN - 2;
    // SYNC POINT ends_seen: Acquire pairs with the Release store in
    // ShmConsumer::store_ends_seen: the consumer has read the records below
    // it, which the appends below may overwrite.
    let seen_by = |c: &ConsumerCursor| c.ends_seen.load(Ordering::Acquire);
    // The slowest subscribed consumer's count: every one of them reads
    // every end. With none subscribed, nothing holds records back.
    let slowest = || {
        ring.seg
            .cursors()
            .iter()
            // SYNC POINT subscription: Acquire, as in fanout::min_read.
            .filter(|c| c.subscription.load(Ordering::Acquire) == CURSOR_SUBSCRIBED)
            .map(seen_by)
            .min()
    };
    let pending = || -> Result<u64, HeaderError> {
        let seen = slowest().unwrap_or(head);
        if seen > head {
            return Err(HeaderError::BadEndRecord {
                record: seen,
                field: "ends_seen",
                value: seen,
                why: "beyond ends_head",
            });
        }
        Ok(head - seen)
    };
    let started = Instant::now();
    // Under Policy::Lag a dead subscriber holding the end log back is
    // dropped once this producer has seen it so for the grace: wait that
    // long at least.
    let patience = match ring.lag_grace {
        Some(grace) => ring
            .seg
            .attach_timeout()
            .max(grace.saturating_add(Duration::from_secs(1))),
        None => ring.seg.attach_timeout(),
    };
    let deadline = started.checked_add(patience);
    let waited = Waiter::new(
        WaitStrategy::Park,
        Sharing::AcrossProcesses,
        ring.clone(),
        |r| &r.seg.header().not_full.cell,
    )
    .napping(ring.lag_nap())
    .wait_until(deadline, || {
        let room = || match pending() {
            Ok(n) if n > max_pending => None,
            done => Some(done),
        };
        let found = room();
        // Under Policy::Lag a dead subscriber holding the end log back is
        // dropped after its grace, as one holding slots back; then look
        // again at once.
        if found.is_none() && ring.lags() {
            let holding = slowest();
            if ring.drop_dead(|c| Some(seen_by(c)) == holding) {
                return room();
            }
        }
        found
    });
    match waited {
        None => {
            return Err(OpenError::EndLogFull {
                path: ring.seg.path().to_owned(),
                pending: pending().map_err(bad)?,
                max: max_pending,
                waited: started.elapsed(),
            });
        }
        Some(Err(e)) => return Err(bad(e)),
        Some(Ok(_)) => {}
    }
    if predecessor_died {
        // Its write_seq is final: it is dead, and this process holds the
        // role. Appended before this producer publishes anything.
        append_end(h, sessions, write, END_DIED, "");
    }
    Ok(())
}

/// The producing process's end of a typed shared-memory ring.
pub struct ShmProducer<T: ShmSlot> {
    core: ProducerCore<Arc<MappedRing<T>>>,
    wait: WaitStrategy,
    probe: PeerProbe,
    /// How the stream ends when this producer detaches.
    pub(super) ending: Ending,
    /// This producer's session: `producer_sessions` after its attach.
    session: u64,
}

/// How a producer's stream ends when it detaches (in `Drop`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ending {
    /// Cleanly: the consumer drains what is left, then gets end of stream
    /// (`close`, or a drop outside a panic).
    Close,
    /// Not at all, as a crash would leave it: the consumer gets `PeerGone`
    /// (`abandon`, or a drop while the thread panics).
    Abandon,
    /// In error: the consumer gets `ProducerFailed` with this reason
    /// (`fail`).
    Fail(String),
}

impl<T: ShmSlot> ShmProducer<T> {
    /// Creates the segment `name` in `/dev/shm` with `capacity` slots of `T`
    /// and attaches as its producer.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: bad name or capacity, `AlreadyExists`, I/O;
    /// [`OpenError::SlotAlignment`] when `T` is aligned beyond a page (4096
    /// bytes), which slots in a segment cannot be.
    pub fn create(name: &str, capacity: usize) -> Result<Self, OpenError> {
        Self::create_with(name, capacity, &SegmentOptions::default())
    }

    /// [`create`](Self::create) with explicit options (directory, mode).
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create).
    pub fn create_with(
        name: &str,
        capacity: usize,
        opts: &SegmentOptions,
    ) -> Result<Self, OpenError> {
        let seg = Segment::create(name, typed_layout::<T>(capacity, opts.max_consumers)?, opts)?;
        Self::attach(seg)
    }

    /// Attaches as the producer of the existing segment `name` in `/dev/shm`,
    /// continuing at its `write_seq`.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: not found, not ready, bad header, another slot type,
    /// `SlotAlignment` as for [`create`](Self::create), `RoleTaken` when a
    /// live producer is attached.
    pub fn open(name: &str) -> Result<Self, OpenError> {
        Self::open_with(name, &SegmentOptions::default())
    }

    /// [`open`](Self::open) with explicit options.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_with(name: &str, opts: &SegmentOptions) -> Result<Self, OpenError> {
        Self::attach(Segment::open(name, opts)?)
    }

    fn attach(seg: Segment) -> Result<Self, OpenError> {
        Self::attach_as(seg, RingKind::Typed)
    }

    /// Attaches to a ring of `kind` whose slots are `T` (the Arrow layer's
    /// descriptor rings use this).
    pub(crate) fn attach_as(seg: Segment, kind: RingKind) -> Result<Self, OpenError> {
        Self::attach_checked(seg, kind, |_| Ok(())).map(|(p, ())| p)
    }

    /// [`attach_as`](Self::attach_as), running `check` once the role is
    /// taken and before anything is stored: an error from it leaves the
    /// segment as it was (the role is released with the descriptor).
    pub(crate) fn attach_checked<R>(
        seg: Segment,
        kind: RingKind,
        check: impl FnOnce(&Segment) -> Result<R, OpenError>,
    ) -> Result<(Self, R), OpenError> {
        let ring = MappedRing::<T>::new(seg, kind)?;
        ring.seg.lock_role(Role::Producer)?;
        let core = ProducerCore::new(Arc::new(ring));
        let ring = core.handle().clone();
        let bad = |source| OpenError::BadHeader {
            path: ring.seg.path().to_owned(),
            source,
        };
        check_position("write_seq", core.write_pos()).map_err(bad)?;
        let checked = check(&ring.seg)?;
        // The producer is the only sleeper on not_full, and the role lock
        // says no other producer is attached: a count left there is from a
        // predecessor killed while asleep.
        ring.seg.header().not_full.cell.reset_waiters();
        make_room(&ring, core.write_pos())?;
        let line = &ring.seg.header().producer;
        // Relaxed: information for `info`, ordered with nothing.
        line.producer_pid
            .store(std::process::id(), Ordering::Relaxed);
        line.blocked_since_ns.store(0, Ordering::Relaxed);
        // Release: pairs with the Acquire load of producer_state in
        // ShmConsumer::producer_gone.
        line.producer_state.store(ROLE_ATTACHED, Ordering::Release);
        // SYNC POINT producer_sessions: Release, after the state store, pairs
        // with the Acquire load in the Arrow consumer's session check: one
        // that sees this session then finds producer_state attached (or
        // later), never the previous session's end.
        let session = line
            .producer_sessions
            .fetch_add(1, Ordering::Release)
            .wrapping_add(1);
        // A consumer waiting for the next session (the Arrow layer's, after
        // an end) wakes now, not at the end of its sleep slice.
        ring.seg
            .header()
            .not_empty
            .cell
            .notify(Sharing::AcrossProcesses);
        Ok((
            Self {
                core,
                wait: WaitStrategy::Park,
                probe: PeerProbe::default(),
                ending: Ending::Close,
                session,
            },
            checked,
        ))
    }

    /// Sets how blocking calls wait (default [`WaitStrategy::Park`]).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    /// Pushes `value` if there is a free slot. No system call.
    ///
    /// # Errors
    ///
    /// [`ShmPushError::Full`] with the value.
    #[inline(always)]
    pub fn try_push(&mut self, value: T) -> Result<(), ShmPushError<T>> {
        self.core.try_push(value).map_err(ShmPushError::Full)
    }

    /// Pushes `value`, waiting while the ring is full.
    ///
    /// # Errors
    ///
    /// [`ShmPushError::ConsumerGone`] when the ring is full and the consumer
    /// that had attached is gone.
    pub fn push(&mut self, value: T) -> Result<(), ShmPushError<T>> {
        retry_until(self, None, value, Self::try_push_or_gone)
    }

    /// Pushes `value`, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`ShmPushError::Full`] at the deadline, or `ConsumerGone`.
    pub fn push_timeout(&mut self, value: T, timeout: Duration) -> Result<(), ShmPushError<T>> {
        let deadline = Instant::now().checked_add(timeout);
        retry_until(self, deadline, value, Self::try_push_or_gone)
    }

    /// [`try_push`](Self::try_push) that tells a full ring whose consumer
    /// is gone (`ConsumerGone`) from one that is only full: what a blocking
    /// push retries.
    fn try_push_or_gone(&mut self, value: T) -> Result<(), ShmPushError<T>> {
        match self.core.try_push(value) {
            Err(v) if self.consumer_gone() => Err(ShmPushError::ConsumerGone(v)),
            pushed => pushed.map_err(ShmPushError::Full),
        }
    }

    /// The segment this producer is attached to.
    pub(crate) fn segment(&self) -> &Segment {
        &self.core.ring().seg
    }

    #[cfg(feature = "arrow")] // used by the Arrow layer only
    /// Waits, with this producer's strategy, until `ready(self)` is true.
    /// `Err(ShmPushError::Full(()))` at the deadline, `ConsumerGone(())`
    /// when the consumer is gone.
    pub(crate) fn wait_until(
        &mut self,
        deadline: Option<Instant>,
        mut ready: impl FnMut(&mut Self) -> bool,
    ) -> Result<(), ShmPushError<()>> {
        self.waiter()
            .wait_until(deadline, || {
                if ready(self) {
                    Some(Ok(()))
                } else if self.consumer_gone() {
                    Some(Err(ShmPushError::ConsumerGone(())))
                } else {
                    None
                }
            })
            .unwrap_or(Err(ShmPushError::Full(())))
    }

    /// Whether a consumer that holds the producer back had attached and is
    /// no longer there (rate-limited): every subscribed cursor at the
    /// producer's bound had a consumer, and none of them is alive.
    fn consumer_gone(&mut self) -> bool {
        let seg = &self.core.ring().seg;
        // Under Policy::Lag a dead subscriber is dropped after its grace:
        // it holds nothing back for ever.
        if self.core.ring().lags() || !self.probe.due() {
            return false;
        }
        // SYNC POINT read_seq etc.: Acquire, as in fanout::min_read; and
        // pairs with the Release stores of consumer_state.
        let at_floor: Vec<(u32, u32)> = {
            let cursors = seg.cursors();
            let subscribed = || {
                cursors
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.subscription.load(Ordering::Acquire) == CURSOR_SUBSCRIBED)
            };
            let Some(floor) = subscribed()
                .map(|(_, c)| c.read_seq.load(Ordering::Acquire))
                .min()
            else {
                return false;
            };
            subscribed()
                .filter(|(_, c)| c.read_seq.load(Ordering::Acquire) == floor)
                .map(|(i, c)| (i as u32, c.consumer_state.load(Ordering::Acquire)))
                .collect()
        };
        !at_floor.is_empty()
            && at_floor
                .iter()
                .all(|&(i, state)| state != ROLE_NEVER && !seg.cursor_alive(i))
    }

    /// Copies as many of `items` as fit, with one publish; returns the count.
    pub fn push_slice(&mut self, items: &[T]) -> usize {
        self.core.push_slice(items)
    }

    /// Pushes items from `iter` while there is room, with one publish.
    pub fn push_iter<I: Iterator<Item = T>>(&mut self, iter: &mut I) -> usize {
        self.core.push_iter(iter)
    }

    /// Up to `max` free slots, written in place and published by `commit`.
    ///
    /// The chunk lends `&mut [MaybeUninit<T>]` over slots of the shared
    /// mapping. A consumer that keeps the protocol never touches a free
    /// slot, but another process that maps the segment could write it while
    /// it is borrowed, which Rust's model does not allow for a `&mut`: use
    /// this only with a consumer you trust (one of your own programs), and
    /// [`push_slice`](Self::push_slice) or [`push_iter`](Self::push_iter),
    /// which write through volatile stores and lend nothing, otherwise.
    #[cfg(not(loom))]
    pub fn write_chunk_uninit(&mut self, max: usize) -> WriteChunkUninit<'_, T> {
        let (first, second) = self.core.free_runs(max);
        // SAFETY: free_runs returns free, unpublished slots of this producer,
        // the next sequences in order; the chunk borrows the producer mutably.
        unsafe { WriteChunkUninit::new(first, second, &mut self.core) }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.core.ring().capacity
    }

    /// Free slots right now.
    pub fn slots(&mut self) -> usize {
        self.core.free(self.capacity())
    }

    /// The next sequence this producer writes (= items ever committed).
    pub fn write_seq(&self) -> u64 {
        self.core.write_pos()
    }

    #[cfg(feature = "arrow")] // used by the Arrow layer only
    /// Where the consumer stands among the items this producer (or an
    /// earlier one) published: `Some(None)` when it has released every one,
    /// `Some(Some(item))` with a copy of the oldest one it has not released,
    /// `None` when its `read_seq` does not fit this producer's position (a
    /// broken peer: nothing can be concluded).
    pub(crate) fn oldest_unreleased(&self) -> Option<Option<T>> {
        let ring = self.core.ring();
        let write = self.core.write_pos();
        // SYNC POINT read_seq: the floor is loaded with Acquire, pairing
        // with the Release store in ConsumerCore::release: every consumer
        // is done with the items below `read` (as for ProducerCore::free).
        // Asked when the producer is held back: dead subscribers past their
        // grace are dropped first.
        let read = ring.floor_held(write)?;
        if read > write || write - read > ring.capacity as u64 {
            return None;
        }
        if read == write {
            return Some(None);
        }
        // Only this producer writes slots (the role lock excludes any other),
        // and slot `read & mask` again only for `read + capacity`, after the
        // consumer released `read`. Volatile, as every slot access here.
        // SAFETY: slot_ptr is in bounds and aligned for T, `read` is
        // published and unwritten during this read; any bytes are a T (Pod).
        Some(Some(unsafe { ring.slot_ptr(read).read_volatile() }))
    }

    /// Whether a consumer process (any subscriber's) is attached and alive
    /// right now.
    pub fn consumer_alive(&self) -> bool {
        self.core.ring().seg.role_alive(Role::Consumer)
    }

    /// Ends the stream: the consumer drains what is left, then gets
    /// end-of-stream. Dropping the producer does the same, except while its
    /// thread unwinds from a panic: then it detaches as
    /// [`abandon`](Self::abandon) does, and the consumer gets `PeerGone`.
    ///
    /// Closing cannot lose an item: every push that returned `Ok` has
    /// already published its item, and a push that failed handed it back.
    pub fn close(self) {}

    /// Detaches *without* ending the stream, for a producer that failed
    /// half-way: the consumer drains what was committed, then gets
    /// `PeerGone`, as if this process had crashed. A new producer may
    /// attach and continue.
    pub fn abandon(mut self) {
        self.ending = Ending::Abandon;
    }

    /// Detaches and ends the stream *in error*, for a producer that gave up
    /// (bad input, say): the consumer drains what was committed, then gets
    /// [`ShmPopError::ProducerFailed`](super::ShmPopError::ProducerFailed),
    /// and [`ShmConsumer::producer_failure`] returns `reason` (cut to
    /// [`FAILURE_REASON_LEN`](super::header::FAILURE_REASON_LEN) bytes).
    /// Unlike [`abandon`](Self::abandon), the consumer learns that the
    /// producer failed rather than died. A new producer may attach and
    /// continue.
    pub fn fail(mut self, reason: &str) {
        self.ending = Ending::Fail(reason.to_owned());
    }
}

impl<T: ShmSlot> Blocking for ShmProducer<T> {
    type Handle = Arc<MappedRing<T>>;

    fn waiter(&self) -> Waiter<Arc<MappedRing<T>>> {
        let ring = self.core.handle().clone();
        // Under Policy::Lag the attempts watch a dead subscriber's grace
        // run out, which no one announces: a tenth of it at a time (at
        // least DEAD_LOOK_INTERVAL).
        let nap = ring.lag_grace.map(|g| (g / 10).max(DEAD_LOOK_INTERVAL));
        Waiter::new(self.wait, Sharing::AcrossProcesses, ring, |r| {
            &r.seg.header().not_full.cell
        })
        .marking(|r| &r.seg.header().producer.blocked_since_ns)
        .napping(nap)
    }
}

impl<T: ShmSlot> Drop for ShmProducer<T> {
    fn drop(&mut self) {
        let h = self.core.ring().seg.header();
        // A producer dropped by a panic's unwinding failed half-way: its
        // stream must not look finished, so it ends as abandoned.
        let ending = if std::thread::panicking() {
            &Ending::Abandon
        } else {
            &self.ending
        };
        let end = match ending {
            Ending::Close => Some((ROLE_CLOSED, END_CLOSED, "")),
            Ending::Abandon => None,
            Ending::Fail(reason) => {
                // Relaxed stores, published by the Release store below.
                h.producer.failure.store(reason);
                Some((ROLE_FAILED, END_FAILED, reason.as_str()))
            }
        };
        if let Some((state, kind, reason)) = end {
            // The record first, then the state: killed in between, this
            // producer leaves a ring whose end is recorded (the consumer
            // reports it, and the next producer appends no DIED record for
            // this session), never one that reads as died.
            append_end(h, self.session, self.core.write_pos(), kind, reason);
            // Release: orders every publish (and the failure reason) before
            // the state; pairs with the Acquire loads of producer_state
            // (`info`, the next producer's make_room).
            h.producer.producer_state.store(state, Ordering::Release);
        }
        // Either way, a sleeping consumer re-checks: it sees the close, or
        // (abandoned) the role lock gone once the descriptor closes below.
        h.not_empty.cell.notify(Sharing::AcrossProcesses);
        // The role lock goes with the file descriptor, after this.
    }
}

/// Where an end a consumer reports comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndSource {
    /// An end record, read now (reported once).
    Record,
    /// A producer that died before any record said so, reported the first
    /// time (its DIED record, appended by the next producer, is skipped).
    Death,
    /// The latest session's end again: already reported, by this consumer
    /// or an earlier one.
    Repeat,
}

/// The consuming process's end of a typed shared-memory ring.
pub struct ShmConsumer<T: ShmSlot> {
    core: ConsumerCore<Arc<MappedRing<T>>>,
    wait: WaitStrategy,
    probe: PeerProbe,
    /// `(producer_sessions, ends_head)` when the last full look at the
    /// producer found it attached (or not yet come) with no end to report:
    /// while both words still hold these values, no end has been recorded
    /// and no producer has come since, so an empty non-blocking poll may
    /// skip the full look ([`POLLS_PER_LOOK`]). Only a producer that dies
    /// without a record goes unseen in between, which the full look's
    /// liveness probe is for.
    quiet: Option<(u64, u64)>,
    /// The reason of the last `ProducerFailed` this consumer reported, read
    /// from its end record.
    failure: Option<String>,
    /// Where the last end reported came from.
    end_source: EndSource,
    /// The session this consumer reported dead before any record said so:
    /// the DIED record the next producer appends for it is skipped.
    died_reported: Option<u64>,
    /// `ends_seen` as this consumer last stored it.
    ends_stored: u64,
    /// `at_seq` of each end record reported and not yet counted in
    /// `ends_seen`, oldest first: counted once `read_seq` reaches it.
    unstored: VecDeque<u64>,
    /// The ring has a lag bound ([`Policy::Lag`]): the producer may drop
    /// this consumer while it reads, so each read is checked against the
    /// producer's `tail_seq` after its copy.
    lap_check: bool,
    /// The `Lagged` report of a dropped subscription.
    lagged: LagReport,
    /// With `lap_check`: the first sequence of the last chunk lent out when
    /// its commit found it overwritten (nothing released), else
    /// [`NO_LAP`]; stored by the chunk, reported at the next call.
    chunk_lapped_at: AtomicU64,
}

impl<T: ShmSlot> ShmConsumer<T> {
    /// Creates the segment `name` in `/dev/shm` and attaches as its consumer.
    ///
    /// # Errors
    ///
    /// As [`ShmProducer::create`].
    pub fn create(name: &str, capacity: usize) -> Result<Self, OpenError> {
        Self::create_with(name, capacity, &SegmentOptions::default())
    }

    /// [`create`](Self::create) with explicit options.
    ///
    /// # Errors
    ///
    /// As [`ShmProducer::create`].
    pub fn create_with(
        name: &str,
        capacity: usize,
        opts: &SegmentOptions,
    ) -> Result<Self, OpenError> {
        let seg = Segment::create(name, typed_layout::<T>(capacity, opts.max_consumers)?, opts)?;
        Self::attach(seg)
    }

    /// Attaches as the consumer of the existing segment `name`, resuming at
    /// the first item not yet released.
    ///
    /// # Errors
    ///
    /// As [`ShmProducer::open`].
    pub fn open(name: &str) -> Result<Self, OpenError> {
        Self::open_with(name, &SegmentOptions::default())
    }

    /// [`open`](Self::open) with explicit options.
    ///
    /// # Errors
    ///
    /// As [`ShmProducer::open`].
    pub fn open_with(name: &str, opts: &SegmentOptions) -> Result<Self, OpenError> {
        Self::attach(Segment::open(name, opts)?)
    }

    fn attach(seg: Segment) -> Result<Self, OpenError> {
        Self::attach_as(seg, RingKind::Typed)
    }

    /// Attaches to a ring of `kind` whose slots are `T`.
    pub(crate) fn attach_as(seg: Segment, kind: RingKind) -> Result<Self, OpenError> {
        let mut ring = MappedRing::<T>::new(seg, kind)?;
        let (name, start) = ring.seg.subscriber();
        let name = name.to_owned();
        ring.own = Some(ring.seg.attach_cursor(&name, start)?);
        let core = ConsumerCore::new(Arc::new(ring));
        let ring = core.handle().clone();
        check_position("read_seq", core.read_pos()).map_err(|source| OpenError::BadHeader {
            path: ring.seg.path().to_owned(),
            source,
        })?;
        let index = ring.own.unwrap_or(0);
        // Consumers sleep on not_empty as their cursor's bit: one killed
        // asleep left only its own bit set, which is ours now.
        ring.seg.header().not_empty.cell.clear_sleeper(index);
        let line = ring.cursor();
        // Relaxed: information for `info`, ordered with nothing.
        line.consumer_pid
            .store(std::process::id(), Ordering::Relaxed);
        line.waiting_since_ns.store(0, Ordering::Relaxed);
        // SYNC POINT ends_seen: Acquire pairs with the Release store of an
        // earlier consumer (store_ends_seen): it resumes after the ends that
        // one was done with. Checked against ends_head when an end is read.
        let ends_seen = line.ends_seen.load(Ordering::Acquire);
        // Relaxed: process-local (see MappedRing::ends_reported).
        ring.ends_reported.store(ends_seen, Ordering::Relaxed);
        // Release: pairs with the Acquire load in ShmProducer::consumer_gone.
        line.consumer_state.store(ROLE_ATTACHED, Ordering::Release);
        let mut me = Self {
            core,
            wait: WaitStrategy::Park,
            probe: PeerProbe::default(),
            quiet: None,
            failure: None,
            end_source: EndSource::Repeat,
            died_reported: None,
            ends_stored: ends_seen,
            unstored: VecDeque::new(),
            lap_check: matches!(ring.seg.layout().policy, Policy::Lag { bound: Some(_), .. }),
            lagged: LagReport::None,
            chunk_lapped_at: AtomicU64::new(NO_LAP),
        };
        // A subscription dropped while no consumer held it was subscribed
        // again by attach_cursor; what it missed is reported first.
        me.note_missed();
        Ok(me)
    }

    /// Reads this consumer's `dropped_at` (its subscription was dropped,
    /// and subscribed again at `read_seq`) into the `Lagged` report to
    /// make before anything is read.
    #[cold]
    fn note_missed(&mut self) {
        let ring = self.core.ring();
        let cursor = ring.cursor();
        // SYNC POINT dropped_at: Acquire pairs with the Release store in
        // Segment::resubscribe_dropped (by this process or a killed one).
        let word = cursor.dropped_at.load(Ordering::Acquire);
        if word == 0 {
            return;
        }
        let at = word & !super::header::DROPPED_ENDS;
        let missed = self.core.read_pos().saturating_sub(at.saturating_sub(1));
        // End records skipped: the ends of producer sessions it will not
        // see, a loss to report even when no item was overwritten.
        let ends = word & super::header::DROPPED_ENDS != 0;
        // An Arrow consumer that lost its decoder state skips to the next
        // session: a loss to report even when no message was overwritten.
        let joined = ring.seg.layout().kind == RingKind::Arrow
            // Relaxed: this consumer's own word.
            && cursor.saved_state.load(Ordering::Relaxed) == super::header::SAVED_JOINED;
        if missed == 0 && !joined && !ends {
            // Nothing was lost: nothing to report.
            // SYNC POINT dropped_at: Release, as in ack_lag.
            cursor.dropped_at.store(0, Ordering::Release);
            return;
        }
        self.lagged = LagReport::Due(missed);
        // Relaxed: process-local.
        ring.lag_pending
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The `Lagged` report, if one is due. Nothing is read meanwhile, and
    /// until the next call after it ([`ack_lag`](Self::ack_lag)): a
    /// consumer killed before it has dealt with the report gets it again
    /// when it restarts.
    #[cold]
    fn take_lagged(&mut self) -> Option<ShmTryPopError> {
        let LagReport::Due(missed) = self.lagged else {
            return None;
        };
        self.lagged = LagReport::Told;
        Some(ShmTryPopError::Lagged { missed })
    }

    /// The call after a `Lagged` report: clears it from the cursor, and
    /// reading goes on.
    #[cold]
    fn ack_lag(&mut self) {
        if self.lagged != LagReport::Told {
            return;
        }
        self.lagged = LagReport::None;
        let ring = self.core.ring();
        // SYNC POINT dropped_at: Release; reported, so a consumer attaching
        // after this one has nothing to report.
        ring.cursor().dropped_at.store(0, Ordering::Release);
        // Relaxed: process-local.
        ring.lag_pending
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether nothing this consumer read from `first` on can have been
    /// overwritten ([`MappedRing::intact`]).
    #[inline(always)]
    fn intact(&self, first: u64) -> bool {
        self.core.ring().intact(first)
    }

    /// This consumer's subscription was dropped (its copies from `first`
    /// on, not released, found overwritten; or its cursor marked
    /// dropped): subscribes it again, from `first` raised to the oldest
    /// item the ring holds, moves to where the subscription starts, and
    /// notes what was missed for the `Lagged` report. `Err` when the cursor
    /// was not dropped although its copies were overwritten, or the start
    /// contradicts the producer's position: a producer breaking the
    /// protocol.
    #[cold]
    #[inline(never)]
    fn rejoin(&mut self, first: u64) -> Result<(), ShmTryPopError> {
        let ring = self.core.handle().clone();
        let cursor = ring.cursor();
        let index = ring.own.unwrap_or(0);
        let h = ring.seg.header();
        // Acquire: pairs with the producer's AcqRel swap in
        // fanout::drop_lagging (or Release store in drop_dead_subscriber).
        if cursor.subscription.load(Ordering::Acquire) != CURSOR_DROPPED {
            // SYNC POINT tail: Acquire, as in intact.
            let tail = h.producer.tail_seq.load(Ordering::Acquire);
            return Err(ShmTryPopError::BadHeader(
                HeaderError::InconsistentSequences {
                    read_seq: first,
                    write_seq: tail,
                    capacity: ring.capacity as u64,
                },
            ));
        }
        // Relaxed/Release: this consumer is the cursor's writer; published
        // for a successor by the Release store (SYNC POINT dropped_at).
        if cursor.dropped_at.load(Ordering::Relaxed) == 0 {
            cursor
                .dropped_at
                .store(first.saturating_add(1), Ordering::Release);
        }
        if !ring.seg.resubscribe(index) {
            // The table lock stayed taken: the cursor is still dropped, and
            // the next look tries again.
            return Err(ShmTryPopError::Empty);
        }
        // Where the subscription starts: its `ends_seen` is counted for it.
        // SYNC POINT read_seq: Acquire, as in fanout (this process stored it).
        let start = cursor.read_seq.load(Ordering::Acquire);
        // SYNC POINT write_seq: Acquire, as in ConsumerCore::available.
        let write = h.producer.write_seq.load(Ordering::Acquire);
        if start > write {
            // Only a tail_seq past write_seq (a peer writing nonsense) gives
            // this.
            return Err(ShmTryPopError::BadHeader(
                HeaderError::InconsistentSequences {
                    read_seq: start,
                    write_seq: write,
                    capacity: ring.capacity as u64,
                },
            ));
        }
        self.core.reposition(start);
        // The subscription reset what `attach_as` stored: store it again.
        // Relaxed: information for `info`.
        cursor
            .consumer_pid
            .store(std::process::id(), Ordering::Relaxed);
        // SYNC POINT ends_seen: Acquire, as in attach_as.
        let ends_seen = cursor.ends_seen.load(Ordering::Acquire);
        ring.ends_reported.store(ends_seen, Ordering::Relaxed);
        self.ends_stored = ends_seen;
        self.unstored.clear();
        self.quiet = None;
        // Release: as in attach_as.
        cursor
            .consumer_state
            .store(ROLE_ATTACHED, Ordering::Release);
        self.note_missed();
        Ok(())
    }

    /// With a lag bound: the `Lagged` report when the last chunk lent out
    /// was found overwritten at its commit (nothing of it was released).
    #[inline(always)]
    fn check_chunk(&mut self) -> Result<(), ShmTryPopError> {
        if self.chunk_lapped_at.load(Ordering::Relaxed) == NO_LAP {
            return Ok(());
        }
        self.chunk_lapped()?;
        Err(self.take_lagged().unwrap_or(ShmTryPopError::Empty))
    }

    /// Subscribes again after a chunk found overwritten at its commit,
    /// leaving the report for the next call that returns errors.
    #[cold]
    fn chunk_lapped(&mut self) -> Result<(), ShmTryPopError> {
        // Relaxed (both): this consumer's own word (the chunk that stored
        // it borrowed this consumer).
        let first = self.chunk_lapped_at.swap(NO_LAP, Ordering::Relaxed);
        if first == NO_LAP {
            return Ok(());
        }
        self.rejoin(first)
    }

    /// With a lag bound: subscribes this consumer again if the producer
    /// dropped it (one the producer lapped sees an "empty" ring: its
    /// position contradicts `write_seq`).
    fn rejoin_if_dropped(&mut self) -> Result<(), ShmTryPopError> {
        if self.lap_check
            // Acquire: pairs with the producer's AcqRel swap in
            // fanout::drop_lagging.
            && self.core.ring().cursor().subscription.load(Ordering::Acquire) == CURSOR_DROPPED
        {
            self.rejoin(self.core.read_pos())?;
        }
        Ok(())
    }

    /// A pop on a ring with a lag bound: the oldest item copied, checked
    /// ([`intact`](Self::intact)), and only then released; a copy found
    /// overwritten is dropped, and `Lagged` reported.
    #[inline]
    fn pop_checked(&mut self, skim: bool) -> Result<T, ShmTryPopError> {
        self.check_chunk()?;
        let v = match self.core.read_next() {
            Some(v) => v,
            None => {
                self.why_empty(skim)?;
                // The full look saw items arrive meanwhile.
                self.core.read_next().ok_or(ShmTryPopError::Empty)?
            }
        };
        let first = self.core.read_pos();
        if !self.intact(first) {
            self.rejoin(first)?;
            return Err(self.take_lagged().unwrap_or(ShmTryPopError::Empty));
        }
        self.core.release(1);
        Ok(v)
    }

    /// Sets how blocking calls wait (default [`WaitStrategy::Park`]).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    /// Pops the oldest item. No system call while items are ready.
    ///
    /// # Errors
    ///
    /// [`ShmTryPopError::Empty`], or once drained `EndOfStream` (producer
    /// closed) or `PeerGone` (producer died).
    #[inline(always)]
    pub fn try_pop(&mut self) -> Result<T, ShmTryPopError> {
        self.pop_now(true)
    }

    /// One pop: an item, or why there is none ([`why_empty`](Self::why_empty),
    /// skimming as it says). The blocking calls do not skim: they poll
    /// slowly anyway, and must notice a dead producer within the probe
    /// interval even when each of their polls follows a sleep.
    #[inline(always)]
    fn pop_now(&mut self, skim: bool) -> Result<T, ShmTryPopError> {
        if self.lap_check {
            return self.pop_checked(skim);
        }
        if let Some(v) = self.core.try_pop() {
            return Ok(v);
        }
        self.why_empty(skim)?;
        // The full look saw items arrive meanwhile (a write_seq stored in
        // between, or an end record reported and skipped).
        self.core.try_pop().ok_or(ShmTryPopError::Empty)
    }

    /// Called when this consumer found nothing ready: why, or `Ok(())`
    /// when the full look at the producer saw items arrive meanwhile.
    /// With `skim`, an empty poll skips that look while
    /// [`nothing_new`](Self::nothing_new) says it may.
    #[inline(always)]
    fn why_empty(&mut self, skim: bool) -> Result<(), ShmTryPopError> {
        if skim && self.nothing_new() {
            return Err(ShmTryPopError::Empty);
        }
        self.look()
    }

    /// Whether an empty poll may skip the full look at the producer: not
    /// yet due, and nothing recorded and no producer come since the last
    /// look found nothing to report (see `quiet`). Two loads from the
    /// producer's line, which the empty poll has just read `write_seq` from.
    #[inline(always)]
    fn nothing_new(&mut self) -> bool {
        let Some((sessions, head)) = self.quiet else {
            return false;
        };
        if self.probe.look_due() {
            return false;
        }
        let line = &self.core.ring().seg.header().producer;
        // Relaxed (all): compared only; a changed value sends this
        // consumer to the full look, which loads them again with Acquire.
        line.producer_sessions.load(Ordering::Relaxed) == sessions
            && line.ends_head.load(Ordering::Relaxed) == head
            // With a lag bound: not dropped (a consumer lapped by the
            // producer sees an "empty" ring until the look finds it so).
            && (!self.lap_check
                || self.core.ring().cursor().subscription.load(Ordering::Relaxed)
                    == CURSOR_SUBSCRIBED)
    }

    /// The full look at the producer ([`producer_gone`](Self::producer_gone))
    /// at this consumer's position: the end to report, or `Ok(())` if items
    /// are ready after it, else `Empty`.
    #[cold]
    #[inline(never)]
    fn look(&mut self) -> Result<(), ShmTryPopError> {
        self.ack_lag();
        self.rejoin_if_dropped()?;
        if let Some(lagged) = self.take_lagged() {
            return Err(lagged);
        }
        match self.producer_gone(self.core.read_pos()) {
            Some(gone) => Err(gone),
            None if self.core.available(1) > 0 => Ok(()),
            None => Err(ShmTryPopError::Empty),
        }
    }

    #[cfg(feature = "arrow")] // used by the Arrow layer only
    /// The segment this consumer is attached to.
    pub(crate) fn segment(&self) -> &Segment {
        &self.core.ring().seg
    }

    #[cfg(feature = "arrow")] // used by the Arrow layer only
    /// The mapped ring this consumer reads.
    pub(crate) fn mapped(&self) -> &MappedRing<T> {
        self.core.ring()
    }

    #[cfg(feature = "arrow")] // used by the Arrow layer only
    /// A handle that keeps the mapping alive (for leases of its memory).
    pub(crate) fn ring_handle(&self) -> Arc<MappedRing<T>> {
        self.core.handle().clone()
    }

    #[cfg(feature = "arrow")] // used by the Arrow layer only
    /// Waits, with this consumer's strategy, until `ready(self)` is true,
    /// or until the end of a producer session comes at position `pos` (the
    /// next sequence this consumer reads, ahead of `read_seq` by what it
    /// has read and not released). Errors: `Timeout`, `EndOfStream`,
    /// `ProducerFailed`, `PeerGone`, `BadHeader`.
    pub(crate) fn wait_until(
        &mut self,
        deadline: Option<Instant>,
        pos: u64,
        mut ready: impl FnMut(&mut Self) -> bool,
    ) -> Result<(), ShmPopError> {
        self.waiter()
            .wait_until(deadline, || {
                self.ack_lag();
                if ready(self) {
                    return Some(Ok(()));
                }
                if let Some(lagged) = self.take_lagged() {
                    return Some(Err(lagged.into_pop_error()));
                }
                self.producer_gone(pos)
                    .map(|gone| Err(gone.into_pop_error()))
            })
            .unwrap_or(Err(ShmPopError::Timeout))
    }

    /// Where the end last reported came from.
    pub(crate) fn end_source(&self) -> EndSource {
        self.end_source
    }

    /// Whether the ring was created temporary ([`SegmentOptions::temporary`]).
    pub fn is_temporary(&self) -> bool {
        self.core.ring().seg.layout().temporary
    }

    /// Removes the ring's file if no other process holds a role in it
    /// (this consumer keeps its own until it is dropped) and every item
    /// published has been popped, without a race with a producer attaching
    /// at that moment: see [`remove_unused`](super::remove_unused). For a
    /// temporary ring, once its stream ended cleanly.
    ///
    /// # Errors
    ///
    /// [`OpenError::InUse`] when a producer is attached (or a creator is
    /// making the file anew), and [`OpenError::Changed`] when items are
    /// left to pop (a producer came, sent and left), removing nothing;
    /// `NotFound` when it is already gone; I/O.
    pub fn remove_if_unused(&self) -> Result<(), OpenError> {
        let ring = self.core.ring();
        ring.seg.unlink_if_unused(ring.cursor_index())
    }

    /// With nothing to read before position `pos`: `EndOfStream`,
    /// `ProducerFailed` or `PeerGone` when a producer session ends there;
    /// `None` while the producer is attached and alive, none has attached
    /// yet, or there is more to read.
    ///
    /// An end record at `pos` is reported once, and counted in `ends_seen`
    /// once `read_seq` reaches it. With none, the latest session's end is
    /// repeated if it was recorded; a producer that died without a record
    /// (the next producer appends its DIED record) is reported as
    /// `PeerGone`, and that record is skipped when it comes.
    #[cold]
    fn producer_gone(&mut self, pos: u64) -> Option<ShmTryPopError> {
        let ring = self.core.handle().clone();
        let h = ring.seg.header();
        let line = &h.producer;
        self.quiet = None;
        loop {
            // SYNC POINT producer_sessions: Acquire pairs with the Release
            // increment in ShmProducer::attach_checked.
            let sessions = line.producer_sessions.load(Ordering::Acquire);
            // Acquire: pairs with the Release stores in ShmProducer::attach
            // and drop.
            let state = line.producer_state.load(Ordering::Acquire);
            // SYNC POINT ends_head: Acquire pairs with the Release store in
            // append_end.
            let head = line.ends_head.load(Ordering::Acquire);
            // Relaxed: process-local (see MappedRing::ends_reported).
            let next = ring.ends_reported.load(Ordering::Relaxed);
            let bad = |record, field, value, why| {
                Some(ShmTryPopError::BadHeader(HeaderError::BadEndRecord {
                    record,
                    field,
                    value,
                    why,
                }))
            };
            if head < next {
                return bad(next, "ends_head", head, "behind ends_seen");
            }
            if head - next > END_LOG_LEN {
                return bad(
                    next,
                    "ends_head",
                    head,
                    "more than 16 records ahead of ends_seen",
                );
            }
            if head > next {
                let rec = h.end_log.record(next);
                // Relaxed: published by the Acquire load of ends_head.
                let session = rec.session.load(Ordering::Relaxed);
                let at = rec.at_seq.load(Ordering::Relaxed);
                let kind = rec.kind.load(Ordering::Relaxed);
                // After ends_head: the producer published everything below
                // `at` before appending the record, so write_seq is there.
                // SYNC POINT write_seq: Acquire, as in ConsumerCore.
                let write = line.write_seq.load(Ordering::Acquire);
                if !matches!(kind, END_CLOSED | END_FAILED | END_DIED) {
                    return bad(next, "kind", kind.into(), "1, 2 or 3");
                }
                if session == 0 {
                    return bad(next, "session", 0, "sessions count from 1");
                }
                if at > write {
                    return bad(next, "at_seq", at, "beyond write_seq");
                }
                if at < pos {
                    return bad(next, "at_seq", at, "before the consumer's position");
                }
                if at > pos {
                    return None; // items of that session first
                }
                let reason = (kind == END_FAILED).then(|| rec.reason.load());
                // Relaxed: process-local.
                ring.ends_reported.store(next + 1, Ordering::Relaxed);
                self.unstored.push_back(at);
                self.store_ends_seen();
                if kind == END_DIED && self.died_reported == Some(session) {
                    // Reported when it died, before this record existed.
                    self.died_reported = None;
                    continue;
                }
                self.end_source = EndSource::Record;
                self.failure = reason;
                return Some(end_error(kind));
            }
            // Nothing recorded ahead: the latest session's end, if it has
            // one. A producer killed between its record and its state
            // store ends here as recorded, not as died.
            if let Some(newest) = head.checked_sub(1).map(|i| h.end_log.record(i)) {
                // Relaxed: published by the Acquire load of ends_head.
                let kind = newest.kind.load(Ordering::Relaxed);
                if newest.session.load(Ordering::Relaxed) == sessions
                    && matches!(kind, END_CLOSED | END_FAILED | END_DIED)
                {
                    self.end_source = EndSource::Repeat;
                    self.failure = (kind == END_FAILED).then(|| newest.reason.load());
                    return Some(end_error(kind));
                }
            }
            if state == ROLE_ATTACHED
                && self.died_reported == Some(sessions)
                && line.write_seq.load(Ordering::Acquire) == pos
            {
                // Found dead already, and nothing moved since (a next
                // producer would have counted a session): dead still. Say
                // so again without waiting for the probe's next turn.
                self.end_source = EndSource::Repeat;
                self.failure = None;
                return Some(ShmTryPopError::PeerGone);
            }
            if state != ROLE_ATTACHED || self.probe.probe(&ring.seg, Role::Producer) != Some(false)
            {
                // Nothing to report until a record comes, a producer
                // attaches, or (the next full look's probe) this one dies.
                self.quiet = Some((sessions, head));
                return None;
            }
            // The lock is free: the producer of session `sessions` died
            // without a record, unless something moved since the loads
            // above: a last publish, its record on its way out, or a next
            // producer's attach. Then look again.
            if line.ends_head.load(Ordering::Acquire) != head
                || line.producer_sessions.load(Ordering::Acquire) != sessions
                || line.write_seq.load(Ordering::Acquire) != pos
            {
                return None;
            }
            self.end_source = if self.died_reported == Some(sessions) {
                EndSource::Repeat
            } else {
                EndSource::Death
            };
            self.died_reported = Some(sessions);
            self.failure = None;
            return Some(ShmTryPopError::PeerGone);
        }
    }

    /// Stores `ends_seen`, counting the end records reported whose
    /// position `read_seq` has reached, and wakes a producer that waits to
    /// attach for room in the end log.
    ///
    /// `ends_seen` passes a record only once `read_seq` is at its `at_seq`
    /// (a zero-copy consumer reports an end while it still holds leases of
    /// the items before it): a consumer killed before this store resumes
    /// at `read_seq`, reads the items before the end again and reports the
    /// end again (at least once, like the items), never skips it.
    pub(crate) fn store_ends_seen(&mut self) {
        let read = self.core.read_pos();
        let mut n = 0;
        while self.unstored.front().is_some_and(|&at| at <= read) {
            self.unstored.pop_front();
            n += 1;
        }
        if n == 0 {
            return;
        }
        self.ends_stored += n;
        let ring = self.core.ring();
        // SYNC POINT ends_seen: Release, after this consumer's last read of
        // those records; pairs with the Acquire loads in make_room (a
        // producer may overwrite them now) and of a consumer attaching.
        ring.cursor()
            .ends_seen
            .store(self.ends_stored, Ordering::Release);
        ring.seg
            .header()
            .not_full
            .cell
            .notify(Sharing::AcrossProcesses);
    }

    /// Why the producer failed, when the last end this consumer reported
    /// was `ProducerFailed` (the reason given to [`ShmProducer::fail`], from
    /// that session's end record); `None` after any other end, or before
    /// the first.
    pub fn producer_failure(&self) -> Option<String> {
        self.failure.clone()
    }

    /// Pops the oldest item, waiting while the ring is empty.
    ///
    /// # Errors
    ///
    /// [`ShmPopError::EndOfStream`] or [`ShmPopError::PeerGone`] once drained.
    pub fn pop(&mut self) -> Result<T, ShmPopError> {
        retry_until(self, None, (), |rx, ()| rx.pop_now(false))
            .map_err(ShmTryPopError::into_pop_error)
    }

    /// Pops the oldest item, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`ShmPopError::Timeout`], `EndOfStream` or `PeerGone`.
    pub fn pop_timeout(&mut self, timeout: Duration) -> Result<T, ShmPopError> {
        let deadline = Instant::now().checked_add(timeout);
        retry_until(self, deadline, (), |rx, ()| rx.pop_now(false))
            .map_err(ShmTryPopError::into_pop_error)
    }

    /// Copies up to `out.len()` ready items with one release; returns the count.
    ///
    /// In a ring under [`Policy::Lag`], 0 also while a `Lagged` report is
    /// due (this consumer was dropped; with a lag bound, also when the
    /// items read may have been overwritten meanwhile): the next
    /// [`try_pop`](Self::try_pop), [`status`](Self::status) or
    /// [`read_chunk`](Self::read_chunk) makes it.
    pub fn pop_slice(&mut self, out: &mut [T]) -> usize {
        if self.lagged != LagReport::None {
            self.ack_lag();
        }
        if !self.lap_check {
            return self.core.pop_slice(out);
        }
        self.pop_checked_with(|core| core.pop_slice_if(out, MappedRing::intact))
    }

    /// Moves up to `max` ready items to the end of `out`; returns the count
    /// (0 also as [`pop_slice`](Self::pop_slice) says).
    pub fn pop_into(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        if self.lagged != LagReport::None {
            self.ack_lag();
        }
        if !self.lap_check {
            return self.core.pop_into(out, max);
        }
        self.pop_checked_with(|core| core.pop_into_if(out, max, MappedRing::intact))
    }

    /// `pop_slice` or `pop_into` on a ring with a lag bound: `pop` copies,
    /// checks and releases (or not, returning 0); a loss found is left for
    /// the next call that returns errors to report (an error meanwhile, a
    /// producer breaking the protocol, too: that call finds it again).
    #[cold]
    #[inline(never)]
    fn pop_checked_with(
        &mut self,
        pop: impl FnOnce(&mut ConsumerCore<Arc<MappedRing<T>>>) -> usize,
    ) -> usize {
        if self.chunk_lapped_at.load(Ordering::Relaxed) != NO_LAP {
            let _ = self.chunk_lapped();
            return 0;
        }
        let first = self.core.read_pos();
        let n = pop(&mut self.core);
        if n > 0 {
            return n;
        }
        if self.core.available(1) > 0 && !self.intact(first) {
            // Copied and found overwritten: nothing was released.
            let _ = self.rejoin(first);
        } else {
            let _ = self.rejoin_if_dropped();
        }
        0
    }

    /// Up to `max` ready items, to be read (copied out) and then released by
    /// `commit`. This is the at-least-once path: process, then commit, and a
    /// consumer killed in between sees the same items again after a restart.
    ///
    /// The chunk copies each item out with a volatile read
    /// ([`get`](ShmReadChunk::get), [`iter`](ShmReadChunk::iter)) rather
    /// than lending `&[T]` over memory the producer's process maps: see
    /// [`ShmReadChunk::as_slices`] for reading in place from a trusted
    /// producer.
    ///
    /// # Errors
    ///
    /// When no item is ready, as [`try_pop`](Self::try_pop):
    /// [`ShmTryPopError::Empty`], or once drained `EndOfStream`,
    /// `ProducerFailed` or `PeerGone`. A chunk is never empty unless `max`
    /// is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use laminar_ring::shm::{SegmentOptions, ShmConsumer, ShmProducer, ShmTryPopError};
    ///
    /// let dir = std::env::temp_dir().join(format!("read-chunk-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let opts = SegmentOptions { dir: dir.clone(), ..SegmentOptions::default() };
    /// let mut rx = ShmConsumer::<u64>::create_with("ticks", 64, &opts)?;
    /// let mut tx = ShmProducer::<u64>::open_with("ticks", &opts)?;
    /// assert!(matches!(rx.read_chunk(8), Err(ShmTryPopError::Empty)));
    /// tx.push_slice(&[1, 2, 3]);
    /// tx.close();
    /// let chunk = rx.read_chunk(8)?;
    /// assert_eq!(chunk.iter().collect::<Vec<_>>(), [1, 2, 3]);
    /// chunk.commit_all();
    /// assert!(matches!(rx.read_chunk(8), Err(ShmTryPopError::EndOfStream)));
    /// # drop(rx);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    #[cfg(not(loom))]
    #[inline]
    pub fn read_chunk(&mut self, max: usize) -> Result<ShmReadChunk<'_, T>, ShmTryPopError> {
        self.check_chunk()?;
        if self.core.available(1) == 0 {
            self.why_empty(true)?;
        }
        Ok(self.chunk(max))
    }

    /// Up to `max` ready items as a chunk, possibly empty, without looking
    /// at the producer.
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn chunk(&mut self, max: usize) -> ShmReadChunk<'_, T> {
        let from = self.core.read_pos();
        let (first, second) = self.core.ready_runs(max);
        let tail: *const AtomicU64 = &self.core.ring().seg.header().producer.tail_seq;
        let subscription: *const AtomicU32 = &self.core.ring().cursor().subscription;
        let lap = self.lap_check.then(|| Lap {
            // SAFETY: the segment stays mapped while the Arc in `core` lives,
            // which the chunk's borrow of `core` keeps alive.
            tail: unsafe { &*tail },
            // SAFETY: as for `tail`.
            subscription: unsafe { &*subscription },
            first: from,
            lapped_at: &self.chunk_lapped_at,
        });
        // SAFETY: ready_runs returns published, unread items of this consumer,
        // the next sequences in order, from `from`; the chunk borrows the
        // consumer mutably.
        unsafe { ShmReadChunk::new(first, second, &mut self.core, lap) }
    }

    /// Why the ring is empty right now, if it is: `Ok(())` when items are
    /// ready, else the `try_pop` error a caller would get.
    ///
    /// # Errors
    ///
    /// As [`try_pop`](Self::try_pop).
    pub fn status(&mut self) -> Result<(), ShmTryPopError> {
        if self.lap_check {
            self.check_chunk()?;
        }
        if self.core.available(1) > 0 {
            return Ok(());
        }
        self.why_empty(false)
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.core.ring().capacity
    }

    /// The next sequence this consumer reads.
    pub fn read_seq(&self) -> u64 {
        self.core.read_pos()
    }

    /// Items ready right now.
    pub fn len(&mut self) -> usize {
        self.core.available(self.capacity())
    }

    #[cfg(feature = "arrow")] // used by the Arrow layer only
    /// Whether at least `n` items are ready, reloading `write_seq` only when
    /// the cached position shows fewer.
    pub(crate) fn has_ready(&mut self, n: usize) -> bool {
        self.core.available(n) >= n
    }

    /// `true` when nothing is ready right now.
    pub fn is_empty(&mut self) -> bool {
        self.core.available(1) == 0
    }

    /// Whether a producer process is attached and alive right now.
    pub fn producer_alive(&self) -> bool {
        self.core.ring().seg.role_alive(Role::Producer)
    }
}

impl<T: ShmSlot> Blocking for ShmConsumer<T> {
    type Handle = Arc<MappedRing<T>>;

    fn waiter(&self) -> Waiter<Arc<MappedRing<T>>> {
        let ring = self.core.handle().clone();
        let bit = ring.own.unwrap_or(0);
        Waiter::new(self.wait, Sharing::AcrossProcesses, ring, |r| {
            &r.seg.header().not_empty.cell
        })
        .marking(|r| &r.cursor().waiting_since_ns)
        .sleeping_as(bit)
    }
}

impl<T: ShmSlot> Drop for ShmConsumer<T> {
    fn drop(&mut self) {
        self.store_ends_seen();
        let ring = self.core.ring();
        // Release: pairs with the Acquire load in ShmProducer::consumer_gone.
        ring.cursor()
            .consumer_state
            .store(ROLE_CLOSED, Ordering::Release);
        ring.seg
            .header()
            .not_full
            .cell
            .notify(Sharing::AcrossProcesses);
    }
}

/// Creates the typed ring `name` of `capacity` slots of `T`, ready and
/// empty, without attaching to it: a producer and a consumer attach later
/// with `open_with`, in either order.
///
/// # Errors
///
/// [`OpenError`]: already exists, bad name, capacity, I/O.
pub fn create<T: ShmSlot>(
    name: &str,
    capacity: usize,
    opts: &SegmentOptions,
) -> Result<(), OpenError> {
    Segment::create(name, typed_layout::<T>(capacity, opts.max_consumers)?, opts)?;
    Ok(())
}

impl<T: ShmSlot> std::fmt::Debug for ShmProducer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmProducer")
            .field("slot_type", &T::TYPE_NAME)
            .field("write_seq", &self.write_seq())
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl<T: ShmSlot> std::fmt::Debug for ShmConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmConsumer")
            .field("slot_type", &T::TYPE_NAME)
            .field("read_seq", &self.read_seq())
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}
