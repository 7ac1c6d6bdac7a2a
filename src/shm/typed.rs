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

use std::marker::PhantomData;
use std::time::{Duration, Instant};

#[cfg(not(loom))]
use crate::chunks::WriteChunkUninit;
use crate::error::check_capacity;
use crate::protocol::{ConsumerCore, ProducerCore};
use crate::ring_buffer::SlotRing;
use crate::sync::{Arc, AtomicU64, Ordering};
use crate::wait::{Blocking, Sharing, WaitStrategy, Waiter, retry_until};

use super::chunk::ShmReadChunk;
use super::error::{OpenError, Role, ShmPopError, ShmPushError, ShmTryPopError};
use super::header::{
    Layout, MAX_CAPACITY, MAX_SLOT_ALIGN, ROLE_ATTACHED, ROLE_CLOSED, ROLE_FAILED, ROLE_NEVER,
    RingKind, check_position, fingerprint,
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
    _slots: PhantomData<T>,
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
        Ok(Self {
            seg,
            slots,
            mask: l.capacity - 1,
            capacity,
            _slots: PhantomData,
        })
    }
}

// SAFETY: capacity is a validated power of two; slot_ptr masks the sequence
// into the validated slots region, contiguous and aligned for T; the atomics
// are the header's, shared by every process attached to the segment.
unsafe impl<T: ShmSlot> SlotRing for MappedRing<T> {
    type Item = T;

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
        &self.seg.header().consumer.read_seq
    }

    #[inline(always)]
    unsafe fn slot_ptr(&self, seq: u64) -> *mut T {
        // SAFETY: (seq & mask) < capacity, inside the validated slots region.
        unsafe { self.slots.add((seq & self.mask) as usize) }
    }

    #[inline(always)]
    unsafe fn write_slot(&self, seq: u64, value: T) {
        // A volatile write, not a reference: see "Memory another process
        // writes" above for what that does and does not promise.
        // SAFETY: in bounds and aligned (slot_ptr); the caller owns the slot,
        // so a consumer keeping the protocol does not touch it now.
        unsafe { self.slot_ptr(seq).write_volatile(value) }
    }

    #[inline(always)]
    unsafe fn read_slot(&self, seq: u64) -> T {
        // A producer breaking the protocol can race with this read: in
        // Rust's model a data race even when volatile; in practice it can
        // only yield some bytes (see "Memory another process writes" above).
        // SAFETY: in bounds and aligned (slot_ptr), and published, so a
        // producer keeping the protocol does not write it; any bytes are a T.
        unsafe { self.slot_ptr(seq).read_volatile() }
    }

    #[inline(always)]
    unsafe fn copy_into_slots(&self, src: *const T, dst: *mut T, n: usize) {
        for i in 0..n {
            // SAFETY: the caller gives n valid values at src and n owned free
            // slots at dst; each is written once, volatile (as write_slot).
            unsafe { dst.add(i).write_volatile(src.add(i).read()) }
        }
    }

    #[inline(always)]
    unsafe fn copy_from_slots(&self, src: *const T, dst: *mut T, n: usize) {
        for i in 0..n {
            // SAFETY: the caller gives n published slots at src and n
            // writable places at dst; each slot is read once, volatile, into
            // a value (as read_slot).
            unsafe { dst.add(i).write(src.add(i).read_volatile()) }
        }
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
fn typed_layout<T: ShmSlot>(capacity: usize) -> Result<Layout, OpenError> {
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
    )
    .ok_or_else(|| OpenError::Geometry(format!("{capacity} slots overflow the address space")))
}

/// Rate-limited check of a peer's role lock.
struct PeerProbe {
    last: Option<Instant>,
}

impl PeerProbe {
    /// `Some(alive)` when it is time to ask the kernel again, else `None`.
    fn probe(&mut self, seg: &Segment, role: Role) -> Option<bool> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < PROBE_INTERVAL)
        {
            return None;
        }
        self.last = Some(now);
        Some(seg.role_alive(role))
    }
}

/// The producing process's end of a typed shared-memory ring.
pub struct ShmProducer<T: ShmSlot> {
    core: ProducerCore<Arc<MappedRing<T>>>,
    wait: WaitStrategy,
    probe: PeerProbe,
    /// How the stream ends when this producer detaches.
    pub(super) ending: Ending,
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
        let seg = Segment::create(name, typed_layout::<T>(capacity)?, opts)?;
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
        line.producer_sessions.fetch_add(1, Ordering::Release);
        Ok((
            Self {
                core,
                wait: WaitStrategy::Park,
                probe: PeerProbe { last: None },
                ending: Ending::Close,
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
    #[inline]
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

    #[cfg(feature = "arrow")] // used by the Arrow layer only
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

    /// Whether a consumer had attached and is no longer there (rate-limited).
    fn consumer_gone(&mut self) -> bool {
        let seg = &self.core.ring().seg;
        // Acquire: pairs with the Release stores of consumer_state.
        let state = seg.header().consumer.consumer_state.load(Ordering::Acquire);
        state != ROLE_NEVER && self.probe.probe(seg, Role::Consumer) == Some(false)
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
        // SYNC POINT read_seq: Acquire pairs with the Release store in
        // ConsumerCore::release: the consumer is done with the items below
        // `read` (as for ProducerCore::free).
        let read = ring.read_seq_atomic().load(Ordering::Acquire);
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

    /// Whether a consumer process is attached and alive right now.
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
        Waiter::new(self.wait, Sharing::AcrossProcesses, ring, |r| {
            &r.seg.header().not_full.cell
        })
        .marking(|r| &r.seg.header().producer.blocked_since_ns)
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
        let state = match ending {
            Ending::Close => Some(ROLE_CLOSED),
            Ending::Abandon => None,
            Ending::Fail(reason) => {
                // Relaxed stores, published by the Release store below.
                h.producer.failure.store(reason);
                Some(ROLE_FAILED)
            }
        };
        if let Some(state) = state {
            // Release: orders every publish (and the failure reason) before
            // the end; pairs with the Acquire load in
            // ShmConsumer::producer_gone.
            h.producer.producer_state.store(state, Ordering::Release);
        }
        // Either way, a sleeping consumer re-checks: it sees the close, or
        // (abandoned) the role lock gone once the descriptor closes below.
        h.not_empty.cell.notify(Sharing::AcrossProcesses);
        // The role lock goes with the file descriptor, after this.
    }
}

/// The consuming process's end of a typed shared-memory ring.
pub struct ShmConsumer<T: ShmSlot> {
    core: ConsumerCore<Arc<MappedRing<T>>>,
    wait: WaitStrategy,
    probe: PeerProbe,
    /// The reason of the last `ProducerFailed` this consumer saw, read right
    /// after the state that said so (a next producer may overwrite both).
    failure: Option<String>,
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
        let seg = Segment::create(name, typed_layout::<T>(capacity)?, opts)?;
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
        let ring = MappedRing::<T>::new(seg, kind)?;
        ring.seg.lock_role(Role::Consumer)?;
        let core = ConsumerCore::new(Arc::new(ring));
        let ring = core.handle().clone();
        check_position("read_seq", core.read_pos()).map_err(|source| OpenError::BadHeader {
            path: ring.seg.path().to_owned(),
            source,
        })?;
        // The consumer is the only sleeper on not_empty (see the producer's).
        ring.seg.header().not_empty.cell.reset_waiters();
        let line = &ring.seg.header().consumer;
        // Relaxed: information for `info`, ordered with nothing.
        line.consumer_pid
            .store(std::process::id(), Ordering::Relaxed);
        line.waiting_since_ns.store(0, Ordering::Relaxed);
        // Release: pairs with the Acquire load in ShmProducer::consumer_gone.
        ring.seg
            .header()
            .consumer
            .consumer_state
            .store(ROLE_ATTACHED, Ordering::Release);
        Ok(Self {
            core,
            wait: WaitStrategy::Park,
            probe: PeerProbe { last: None },
            failure: None,
        })
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
    #[inline]
    pub fn try_pop(&mut self) -> Result<T, ShmTryPopError> {
        if let Some(v) = self.core.try_pop() {
            return Ok(v);
        }
        match self.producer_gone() {
            None => Err(ShmTryPopError::Empty),
            // The producer's last publish happened before its close store
            // (Release/Acquire), or before its death released the lock (the
            // kernel orders both): one more look finds anything committed.
            Some(gone) => self.core.try_pop().ok_or(gone),
        }
    }

    #[cfg(feature = "arrow")] // used by the Arrow layer only
    /// The segment this consumer is attached to.
    pub(crate) fn segment(&self) -> &Segment {
        &self.core.ring().seg
    }

    #[cfg(feature = "arrow")] // used by the Arrow layer only
    /// A handle that keeps the mapping alive (for leases of its memory).
    pub(crate) fn ring_handle(&self) -> Arc<MappedRing<T>> {
        self.core.handle().clone()
    }

    #[cfg(feature = "arrow")] // used by the Arrow layer only
    /// Waits, with this consumer's strategy, until `ready(self)` is true;
    /// `ready` is called again after the producer is seen gone, so it sees
    /// everything committed. Errors: `Timeout`, `EndOfStream`, `PeerGone`.
    pub(crate) fn wait_until(
        &mut self,
        deadline: Option<Instant>,
        mut ready: impl FnMut(&mut Self) -> bool,
    ) -> Result<(), ShmPopError> {
        self.waiter()
            .wait_until(deadline, || {
                if ready(self) {
                    return Some(Ok(()));
                }
                match self.producer_gone()? {
                    _ if ready(self) => Some(Ok(())),
                    ShmTryPopError::EndOfStream => Some(Err(ShmPopError::EndOfStream)),
                    ShmTryPopError::ProducerFailed => Some(Err(ShmPopError::ProducerFailed)),
                    _ => Some(Err(ShmPopError::PeerGone)),
                }
            })
            .unwrap_or(Err(ShmPopError::Timeout))
    }

    /// `EndOfStream`, `ProducerFailed` or `PeerGone` when the producer
    /// closed, failed or died; `None` while one is attached and alive, or
    /// none has attached yet.
    #[cold]
    fn producer_gone(&mut self) -> Option<ShmTryPopError> {
        let seg = &self.core.ring().seg;
        // Acquire: pairs with the Release stores in ShmProducer::attach/drop.
        let state = seg.header().producer.producer_state.load(Ordering::Acquire);
        let line = &seg.header().producer;
        let mut failure = None;
        let mut ended = |state| match state {
            ROLE_CLOSED => Some(ShmTryPopError::EndOfStream),
            ROLE_FAILED => {
                // After the Acquire load that saw FAILED, which pairs with
                // the Release store that followed the reason's stores.
                failure = Some(line.failure.load());
                Some(ShmTryPopError::ProducerFailed)
            }
            _ => None,
        };
        let gone = match state {
            ROLE_ATTACHED => match self.probe.probe(seg, Role::Producer) {
                Some(false) => {
                    // Re-read: it may have ended its stream just before exiting.
                    let s = line.producer_state.load(Ordering::Acquire);
                    Some(ended(s).unwrap_or(ShmTryPopError::PeerGone))
                }
                _ => None,
            },
            other => ended(other),
        };
        if gone.is_some() {
            self.failure = failure;
        }
        gone
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
        self.core.ring().seg.unlink_if_unused(Some(Role::Consumer))
    }

    /// Why the producer failed, when the last end of stream this consumer
    /// saw was `ProducerFailed` (the reason given to [`ShmProducer::fail`],
    /// as read when the failure was seen); `None` after any other end, or
    /// before the first.
    pub fn producer_failure(&self) -> Option<String> {
        self.failure.clone()
    }

    /// Pops the oldest item, waiting while the ring is empty.
    ///
    /// # Errors
    ///
    /// [`ShmPopError::EndOfStream`] or [`ShmPopError::PeerGone`] once drained.
    pub fn pop(&mut self) -> Result<T, ShmPopError> {
        retry_until(self, None, (), |rx, ()| rx.try_pop()).map_err(ShmTryPopError::into_pop_error)
    }

    /// Pops the oldest item, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`ShmPopError::Timeout`], `EndOfStream` or `PeerGone`.
    pub fn pop_timeout(&mut self, timeout: Duration) -> Result<T, ShmPopError> {
        let deadline = Instant::now().checked_add(timeout);
        retry_until(self, deadline, (), |rx, ()| rx.try_pop())
            .map_err(ShmTryPopError::into_pop_error)
    }

    /// Copies up to `out.len()` ready items with one release; returns the count.
    pub fn pop_slice(&mut self, out: &mut [T]) -> usize {
        self.core.pop_slice(out)
    }

    /// Moves up to `max` ready items to the end of `out`; returns the count.
    pub fn pop_into(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        self.core.pop_into(out, max)
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
    #[cfg(not(loom))]
    pub fn read_chunk(&mut self, max: usize) -> ShmReadChunk<'_, T> {
        let (first, second) = self.core.ready_runs(max);
        // SAFETY: ready_runs returns published, unread items of this consumer,
        // the next sequences in order; the chunk borrows the consumer mutably.
        unsafe { ShmReadChunk::new(first, second, &mut self.core) }
    }

    /// Why the ring is empty right now, if it is: `Ok(())` when items are
    /// ready, else the `try_pop` error a caller would get.
    ///
    /// # Errors
    ///
    /// As [`try_pop`](Self::try_pop).
    pub fn status(&mut self) -> Result<(), ShmTryPopError> {
        if self.core.available(1) > 0 {
            return Ok(());
        }
        match self.producer_gone() {
            None => Err(ShmTryPopError::Empty),
            Some(_) if self.core.available(1) > 0 => Ok(()),
            Some(gone) => Err(gone),
        }
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
        Waiter::new(self.wait, Sharing::AcrossProcesses, ring, |r| {
            &r.seg.header().not_empty.cell
        })
        .marking(|r| &r.seg.header().consumer.waiting_since_ns)
    }
}

impl<T: ShmSlot> Drop for ShmConsumer<T> {
    fn drop(&mut self) {
        let h = self.core.ring().seg.header();
        // Release: pairs with the Acquire load in ShmProducer::consumer_gone.
        h.consumer
            .consumer_state
            .store(ROLE_CLOSED, Ordering::Release);
        h.not_full.cell.notify(Sharing::AcrossProcesses);
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
    Segment::create(name, typed_layout::<T>(capacity)?, opts)?;
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
