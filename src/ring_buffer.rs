//! [`RingBuffer<T>`]: pre-allocated slots and two cache-padded, free-running
//! sequences (spec F-STREAM-001).
//!
//! The ring itself only stores; who may touch which slot is decided by the
//! protocol on top of it ([`spsc`](crate::spsc), [`mpsc`](crate::mpsc)). The
//! low-level methods are `unsafe` for that reason and state their contract.
//!
//! # Sequences
//!
//! `write_seq` and `read_seq` are `u64`s that only ever increase; the slot of
//! sequence `s` is `s & mask`. At 10^10 items per second a `u64` wraps after 58
//! years, so no wrap-around handling exists anywhere in the crate.
//!
//! # Padding
//!
//! Each sequence sits in its own [`CachePadded`], which is 128 bytes on x86_64
//! and aarch64, not the spec's 64: Intel's spatial prefetcher pulls cache lines
//! in adjacent pairs, so two counters 64 bytes apart still ping-pong between
//! cores (crossbeam-utils documents the same choice). `bench_cache_line_isolation`
//! measures the difference.

use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use crate::error::{CapacityError, check_capacity};
use crate::sync::{AtomicU64, Ordering, UnsafeCell};

/// Pre-allocated, lock-free ring buffer with power-of-two capacity.
///
/// This is the storage layer: the safe halves in [`spsc`](crate::spsc) and
/// [`mpsc`](crate::mpsc) are what most code wants.
///
/// # Examples
///
/// ```
/// use laminar_ring::RingBuffer;
///
/// let ring: RingBuffer<u64> = RingBuffer::new(8);
/// assert!(ring.is_empty());
/// assert_eq!(ring.capacity(), 8);
///
/// // Single-threaded use of the raw protocol: write, publish, read, release.
/// // SAFETY: one thread plays both roles; slot 0 is free and then published.
/// unsafe {
///     ring.write_slot(0, 42);
///     ring.advance_write_seq(1);
///     assert_eq!(ring.len(), 1);
///     assert_eq!(ring.read_slot(0), 42);
///     ring.advance_read_seq(1);
/// }
/// assert!(ring.is_empty());
/// ```
pub struct RingBuffer<T> {
    /// Producer's position: every slot below it has been written and published.
    write_seq: CachePadded<AtomicU64>,
    /// Consumer's position: every slot below it has been read and released.
    read_seq: CachePadded<AtomicU64>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: u64,
    capacity: usize,
}

// SAFETY: the ring moves `T`s between threads (written by one, read by another),
// which is sound exactly when `T: Send`. It never hands out `&T` to two threads.
unsafe impl<T: Send> Send for RingBuffer<T> {}
// SAFETY: shared access only reaches slots through the `unsafe` methods, whose
// contracts make the caller's protocol give each slot one owner at a time; the
// sequences are atomics. Values cross threads, hence `T: Send`.
unsafe impl<T: Send> Sync for RingBuffer<T> {}

impl<T> RingBuffer<T> {
    /// Creates a ring with `capacity` pre-allocated slots.
    ///
    /// # Panics
    ///
    /// If `capacity` is zero or not a power of two; the message names the value.
    /// Use [`try_new`](Self::try_new) when the capacity comes from configuration.
    ///
    /// # Examples
    ///
    /// ```
    /// use laminar_ring::RingBuffer;
    /// let buffer: RingBuffer<u64> = RingBuffer::new(65536);
    /// assert!(buffer.is_empty());
    /// assert_eq!(buffer.capacity(), 65536);
    /// ```
    pub fn new(capacity: usize) -> Self {
        match Self::try_new(capacity) {
            Ok(ring) => ring,
            Err(e) => panic!("RingBuffer::new: {e}"),
        }
    }

    /// Creates a ring, or says why `capacity` is unusable.
    ///
    /// # Errors
    ///
    /// [`CapacityError::Zero`] or [`CapacityError::NotPowerOfTwo`].
    ///
    /// # Examples
    ///
    /// ```
    /// use laminar_ring::{CapacityError, RingBuffer};
    /// assert_eq!(RingBuffer::<u8>::try_new(12).err(), Some(CapacityError::NotPowerOfTwo(12)));
    /// assert!(RingBuffer::<u8>::try_new(16).is_ok());
    /// ```
    pub fn try_new(capacity: usize) -> Result<Self, CapacityError> {
        // No limit of its own: any usize that is a power of two.
        check_capacity(capacity as u64, u64::MAX)?;
        let slots = (0..capacity)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect();
        Ok(Self {
            write_seq: CachePadded::new(AtomicU64::new(0)),
            read_seq: CachePadded::new(AtomicU64::new(0)),
            slots,
            mask: capacity as u64 - 1,
            capacity,
        })
    }

    /// Number of slots.
    #[inline(always)]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of items written and not yet released.
    ///
    /// Exact when no other thread is working on the ring; otherwise a snapshot
    /// that is always in `0..=capacity`. The spec loaded `write_seq` first, so a
    /// consumer could overtake the stale value and the subtraction underflow.
    /// Here `read_seq` is loaded first: it never passes `write_seq`, so
    /// `write - read` cannot underflow, and the result is clamped because the
    /// producer may have moved on by more than `capacity` between the loads.
    #[inline]
    pub fn len(&self) -> usize {
        // Acquire (both): a snapshot of positions only; the pairing Release
        // stores are in advance_read_seq/advance_write_seq. Load order matters,
        // the orderings do not make it exact.
        let read = self.read_seq.load(Ordering::Acquire);
        let write = self.write_seq.load(Ordering::Acquire);
        let len = write.saturating_sub(read);
        len.min(self.capacity as u64) as usize
    }

    /// `true` when [`len`](Self::len) is zero.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `true` when [`len`](Self::len) equals the capacity.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len() >= self.capacity
    }

    /// Free slots: `capacity - len()`.
    #[inline]
    pub fn available(&self) -> usize {
        self.capacity - self.len()
    }

    // ------------------------------------------------------------------
    // Low-level access, used by the channel protocols.
    // ------------------------------------------------------------------

    /// Current write sequence (Acquire load).
    #[inline(always)]
    pub fn write_seq(&self) -> u64 {
        // Acquire: pairs with the Release store in advance_write_seq, so the
        // slots below the returned value are visible to the caller.
        self.write_seq.load(Ordering::Acquire)
    }

    /// Current read sequence (Acquire load).
    #[inline(always)]
    pub fn read_seq(&self) -> u64 {
        // Acquire: pairs with the Release store in advance_read_seq, so the
        // reader is done with the slots below the returned value.
        self.read_seq.load(Ordering::Acquire)
    }

    /// Pointer to the slot of sequence `seq` (index `seq & mask`).
    ///
    /// # Safety
    ///
    /// The pointer is always in bounds, but reading or writing through it is
    /// only sound while the caller's protocol gives it sole access to that slot
    /// (a producer between claim and publish, a consumer between observing the
    /// publish and releasing), and reads need the slot to be initialised.
    #[inline(always)]
    pub unsafe fn slot_ptr(&self, seq: u64) -> *mut T {
        #[cfg(not(loom))]
        {
            let index = (seq & self.mask) as usize;
            debug_assert!(index < self.slots.len());
            // Derived from the whole slice's pointer, not from one slot's
            // reference: callers step from it to the next slots of a run
            // (`slot_ptr(s).add(k)`, see `SlotRing::runs`), which a pointer
            // made from a one-slot reference may not reach (its provenance
            // would cover that slot only).
            // The crate's UnsafeCell, std's UnsafeCell and MaybeUninit are
            // all `repr(transparent)`: the cast below keeps the layout, and
            // `raw_get` gives a pointer the cell's contents may be written
            // through while only shared references to it exist.
            // SAFETY: `index <= mask == slots.len() - 1`: in bounds.
            let cell = unsafe { self.slots.as_ptr().add(index) }
                .cast::<std::cell::UnsafeCell<MaybeUninit<T>>>();
            std::cell::UnsafeCell::raw_get(cell).cast::<T>()
        }
        #[cfg(loom)]
        self.slot(seq).with_mut(|p| p.cast::<T>())
    }

    /// Writes `value` into the slot of `seq`, without dropping what was there.
    ///
    /// # Safety
    ///
    /// Only the producer that owns slot `seq` calls this, and the slot is free:
    /// `read_seq <= seq < read_seq + capacity` and `seq` is not yet published.
    #[inline(always)]
    pub unsafe fn write_slot(&self, seq: u64, value: T) {
        self.slot(seq).with_mut(|p| {
            // SAFETY: the caller owns this free slot until it publishes `seq`;
            // the index is in bounds because `mask < capacity`.
            unsafe { p.cast::<T>().write(value) }
        });
    }

    /// Moves the value out of the slot of `seq`; the slot is uninitialised after.
    ///
    /// # Safety
    ///
    /// Only the consumer calls this, once per sequence, for a `seq` that has been
    /// published (`read_seq <= seq < write_seq`) and not yet read.
    #[inline(always)]
    pub unsafe fn read_slot(&self, seq: u64) -> T {
        self.slot(seq).with_mut(|p| {
            // SAFETY: the caller observed the publish of `seq` (so the slot is
            // initialised and the write happened-before) and reads it only once.
            unsafe { p.cast::<T>().read() }
        })
    }

    /// The cell of sequence `seq`.
    #[inline(always)]
    fn slot(&self, seq: u64) -> &UnsafeCell<MaybeUninit<T>> {
        let index = (seq & self.mask) as usize;
        debug_assert!(index < self.slots.len());
        // SAFETY: `index <= mask == capacity - 1 == slots.len() - 1`.
        unsafe { self.slots.get_unchecked(index) }
    }

    /// Publishes every slot below `new_seq` to the consumer (Release store).
    ///
    /// # Safety
    ///
    /// The caller is the producer and has written every slot in
    /// `write_seq..new_seq`; `new_seq` does not decrease.
    #[inline(always)]
    pub unsafe fn advance_write_seq(&self, new_seq: u64) {
        // Release: publishes the slot writes; pairs with the Acquire loads of
        // write_seq in write_seq(), len() and the consumers' reload.
        self.write_seq.store(new_seq, Ordering::Release);
    }

    /// Hands every slot below `new_seq` back to the producer (Release store).
    ///
    /// # Safety
    ///
    /// The caller is the consumer and has moved out (or dropped) every value in
    /// `read_seq..new_seq`; `new_seq <= write_seq` and does not decrease.
    #[inline(always)]
    pub unsafe fn advance_read_seq(&self, new_seq: u64) {
        // Release: the consumer is done with the slots below new_seq; pairs
        // with the Acquire loads of read_seq in read_seq(), len() and the
        // producer's reload before it overwrites them.
        self.read_seq.store(new_seq, Ordering::Release);
    }

    /// Compare-and-swap on `write_seq` (AcqRel on success, Acquire on failure),
    /// for producers that claim slots concurrently.
    ///
    /// Returns the previous value on success and the current one on failure.
    ///
    /// # Safety
    ///
    /// `write_seq` says which slots hold values: [`Drop`] drops every slot in
    /// `read_seq..write_seq`. So the caller, on success:
    ///
    /// * claims only free slots: `expected <= new` and
    ///   `new - read_seq <= capacity`;
    /// * writes every claimed slot (`expected..new`) before the ring is
    ///   dropped or any of them is read, and has them read only after that
    ///   write is published to the reader (in [`mpsc`](crate::mpsc), by the
    ///   slot's stamp).
    ///
    /// A safe call such as `cas_write_seq(0, 100)` on a 2-slot ring would make
    /// `Drop` run on 100 never-written slots, which is why this is `unsafe`:
    ///
    /// ```compile_fail,E0133
    /// let ring: laminar_ring::RingBuffer<String> = laminar_ring::RingBuffer::new(2);
    /// let _ = ring.cas_write_seq(0, 100);
    /// ```
    #[inline(always)]
    pub unsafe fn cas_write_seq(&self, expected: u64, new: u64) -> Result<u64, u64> {
        // AcqRel/Acquire: the claim orders after what the claimer saw of the
        // slot (its stamp) and is seen by the next claimer; the slot contents
        // themselves are published by a separate Release (see mpsc).
        self.write_seq
            .compare_exchange(expected, new, Ordering::AcqRel, Ordering::Acquire)
    }

    /// The `write_seq` atomic itself, for protocols that need other orderings.
    #[inline(always)]
    pub(crate) fn write_seq_atomic(&self) -> &AtomicU64 {
        &self.write_seq
    }

    /// The `read_seq` atomic itself.
    #[inline(always)]
    pub(crate) fn read_seq_atomic(&self) -> &AtomicU64 {
        &self.read_seq
    }
}

impl<T> Drop for RingBuffer<T> {
    /// Drops every item in `read_seq..write_seq` exactly once.
    fn drop(&mut self) {
        // `&mut self`: no other thread can touch the ring any more, and the
        // last handle's drop synchronised with every other handle's (Arc).
        let write = self.write_seq.load(Ordering::Acquire);
        let read = self.read_seq.load(Ordering::Acquire);
        // Every method that moves a sequence is `unsafe`, and its contract
        // keeps `read <= write <= read + capacity`.
        for seq in read..write {
            let index = (seq & self.mask) as usize;
            self.slots[index].with_mut(|p| {
                // SAFETY: every sequence in read..write was written and never
                // read; each index in the range is distinct because
                // write - read <= capacity.
                unsafe { p.cast::<T>().drop_in_place() }
            });
        }
    }
}

impl<T> std::fmt::Debug for RingBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingBuffer")
            .field("capacity", &self.capacity)
            .field("write_seq", &self.write_seq())
            .field("read_seq", &self.read_seq())
            .finish_non_exhaustive()
    }
}

/// A run of contiguous slots: first slot and length.
pub(crate) type Run<T> = (*mut T, usize);

/// Storage that the SPSC protocol in [`protocol`](crate::protocol) runs on.
///
/// This is the seam between the one copy of the ring algorithm and the places a
/// ring can live. In process the storage is a [`RingBuffer<T>`] in a `Box`;
/// the shared-memory layer implements the same trait for a view of a mapped
/// segment: `write_seq_atomic`/`read_seq_atomic` return `&AtomicU64`s that sit
/// at fixed, 128-byte-aligned offsets of the segment header, and `slot_ptr`
/// computes `slots_base + (seq & mask) * size_of::<T>()` inside the mapping.
/// The algorithm never learns which home it runs in, so the loom models of
/// the in-process ring cover the cross-process one too.
///
/// # Safety
///
/// Implementors guarantee that `capacity()` is a non-zero power of two that
/// never changes, that `slot_ptr` returns a valid, aligned pointer for every
/// `seq` (distinct slots for sequences less than `capacity` apart), that slots
/// are contiguous (`slot_ptr(s + k) == slot_ptr(s).add(k)` while
/// `(s & mask) + k < capacity`; not relied on under loom), that the two
/// atomics are the ones every party of this ring uses and are the same
/// atomics every time they are asked for as long as the ring lives (a core
/// keeps pointers to them), and that
/// [`TRUSTED`](Self::TRUSTED) is `true` only for a ring whose positions
/// only one producer core and one consumer core store.
pub(crate) unsafe trait SlotRing {
    /// What one slot holds.
    type Item;

    /// Whether both sides of this ring are this process's own code (an
    /// in-process ring), so that the positions it loads need no check. A
    /// ring in shared memory is `false`: the other side's positions are
    /// input, checked before use.
    ///
    /// A safety promise, part of the trait's: `true` only where every
    /// store to both positions comes from one `ProducerCore` and one
    /// `ConsumerCore` of this ring, which keep `read <= write <= read +
    /// capacity`. With the check skipped, positions that broke it would
    /// make the cores compute more free or ready slots than there are.
    const TRUSTED: bool;

    /// Number of slots, a power of two.
    fn capacity(&self) -> usize;

    /// The producer's published position: the same atomic every time it
    /// is asked, for as long as the ring lives (a core keeps a pointer to
    /// it).
    fn write_seq_atomic(&self) -> &AtomicU64;

    /// The consumer's released position: the same atomic every time it is
    /// asked, for as long as the ring lives (a core keeps a pointer to it).
    fn read_seq_atomic(&self) -> &AtomicU64;

    /// The producer's bound, for a producer at `write`: the slots below it
    /// are released by every consumer. `None` keeps the producer's cached
    /// bound (a peer's position contradicts `write`). One consumer: its
    /// `read_seq`, loaded with Acquire (SYNC POINT read_seq, pairing with
    /// the Release store in `ConsumerCore::release`). A ring with several
    /// consumers returns their minimum (`fanout::producer_floor`).
    #[inline(always)]
    fn read_floor(&self, write: u64) -> Option<u64> {
        let _ = write;
        Some(self.read_seq_atomic().load(crate::sync::Ordering::Acquire))
    }

    /// Pointer to the slot of `seq`.
    ///
    /// # Safety
    ///
    /// As [`RingBuffer::slot_ptr`].
    #[cfg_attr(loom, allow(dead_code))] // only the chunk API uses it
    unsafe fn slot_ptr(&self, seq: u64) -> *mut Self::Item;

    /// Writes a value into the free slot of `seq`.
    ///
    /// # Safety
    ///
    /// As [`RingBuffer::write_slot`].
    unsafe fn write_slot(&self, seq: u64, value: Self::Item);

    /// Moves the value out of the published slot of `seq`.
    ///
    /// # Safety
    ///
    /// As [`RingBuffer::read_slot`].
    unsafe fn read_slot(&self, seq: u64) -> Self::Item;

    /// Writes `value` through a slot pointer of this ring, as
    /// [`write_slot`](Self::write_slot) writes: what the protocol uses with
    /// the slot pointers it computes itself.
    ///
    /// # Safety
    ///
    /// `slot` is `slot_ptr(seq)` of a `seq` for which `write_slot` would be
    /// sound.
    #[cfg(not(loom))]
    #[inline(always)]
    unsafe fn write_to(slot: *mut Self::Item, value: Self::Item) {
        // SAFETY: requirements forwarded to the caller.
        unsafe { slot.write(value) }
    }

    /// Moves the value out through a slot pointer of this ring, as
    /// [`read_slot`](Self::read_slot) does.
    ///
    /// # Safety
    ///
    /// `slot` is `slot_ptr(seq)` of a `seq` for which `read_slot` would be
    /// sound.
    #[cfg(not(loom))]
    #[inline(always)]
    unsafe fn read_from(slot: *const Self::Item) -> Self::Item {
        // SAFETY: requirements forwarded to the caller.
        unsafe { slot.read() }
    }

    /// The `n` slots from `seq` on (`n <= capacity`), as (at most) two
    /// contiguous runs of (first slot, length): up to the end of the slots,
    /// then on from slot 0. Pointers only; what the caller may do with them
    /// is as for [`slot_ptr`](Self::slot_ptr).
    #[cfg(not(loom))]
    #[inline]
    fn runs(&self, seq: u64, n: usize) -> (Run<Self::Item>, Run<Self::Item>) {
        let capacity = self.capacity();
        debug_assert!(n <= capacity);
        // Never more than one lap, whatever the caller computed: the second
        // run must end before the first begins.
        let n = n.min(capacity);
        let start = (seq & (capacity as u64 - 1)) as usize;
        let first = n.min(capacity - start);
        // SAFETY: computing the pointers touches no slot; slots are
        // contiguous within one lap (the trait's contract), so the first run
        // ends at the last slot at the latest and the second starts at slot 0.
        unsafe {
            (
                (self.slot_ptr(seq), first),
                (self.slot_ptr(seq + first as u64), n - first),
            )
        }
    }

    /// Copies `n` values from `src`, outside the ring, into the ring's slots
    /// at `dst` (what `push_slice` does with a free run).
    ///
    /// # Safety
    ///
    /// `dst..dst+n` are free slots of this ring that the caller owns (as
    /// from `slot_ptr`), and `src..src+n` are valid values that do not
    /// overlap them.
    #[cfg(not(loom))]
    #[inline(always)]
    unsafe fn copy_into_slots(&self, src: *const Self::Item, dst: *mut Self::Item, n: usize) {
        // SAFETY: requirements forwarded to the caller.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, n) }
    }

    /// Copies `n` published values out of the ring's slots at `src` into
    /// `dst`, outside the ring (what `pop_slice` does with a ready run).
    ///
    /// # Safety
    ///
    /// `src..src+n` are published, unread slots of this ring (as from
    /// `slot_ptr`), and `dst..dst+n` is writable and does not overlap them.
    #[cfg(not(loom))]
    #[inline(always)]
    unsafe fn copy_from_slots(&self, src: *const Self::Item, dst: *mut Self::Item, n: usize) {
        // SAFETY: requirements forwarded to the caller.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, n) }
    }

    /// Whether the hooks below do anything: asked once, when a side
    /// attaches, so that a ring whose sides never sleep (an in-process
    /// channel that does not park) pays not even a load for them.
    #[inline(always)]
    fn wakes(&self) -> bool {
        false
    }

    /// Called by the producer right after each Release store of `write_seq`
    /// (if [`wakes`](Self::wakes)): the hook where a home that supports
    /// sleeping consumers wakes them.
    #[inline(always)]
    fn on_publish(&self) {}

    /// Called by the consumer right after each Release store of `read_seq`
    /// (if [`wakes`](Self::wakes)).
    #[inline(always)]
    fn on_release(&self) {}

    /// Called by the consumer right after it reloaded `write_seq` (Acquire)
    /// and found `write`: the position up to which it may read. A ring
    /// whose stream records where a producer session ended (a shared ring's
    /// end log) returns that position while the consumer has not reported
    /// that end, so that it never reads the next session's items first.
    #[inline(always)]
    fn read_limit(&self, write: u64) -> u64 {
        write
    }
}

// SAFETY: RingBuffer's capacity is a fixed power of two (checked in try_new),
// slot_ptr masks the sequence into its boxed slice, and the atomics are fields.
unsafe impl<T> SlotRing for RingBuffer<T> {
    type Item = T;
    const TRUSTED: bool = true;

    #[inline(always)]
    fn capacity(&self) -> usize {
        self.capacity
    }

    #[inline(always)]
    fn write_seq_atomic(&self) -> &AtomicU64 {
        &self.write_seq
    }

    #[inline(always)]
    fn read_seq_atomic(&self) -> &AtomicU64 {
        &self.read_seq
    }

    #[inline(always)]
    unsafe fn slot_ptr(&self, seq: u64) -> *mut T {
        // SAFETY: requirements forwarded to the caller.
        unsafe { RingBuffer::slot_ptr(self, seq) }
    }

    #[inline(always)]
    unsafe fn write_slot(&self, seq: u64, value: T) {
        // SAFETY: requirements forwarded to the caller.
        unsafe { RingBuffer::write_slot(self, seq, value) }
    }

    #[inline(always)]
    unsafe fn read_slot(&self, seq: u64) -> T {
        // SAFETY: requirements forwarded to the caller.
        unsafe { RingBuffer::read_slot(self, seq) }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Pushes `value` at the current write position (single-threaded use).
    fn push<T>(ring: &RingBuffer<T>, value: T) {
        let w = ring.write_seq();
        assert!(w - ring.read_seq() < ring.capacity() as u64, "ring full");
        // SAFETY: single thread; slot `w` is free (checked above).
        unsafe {
            ring.write_slot(w, value);
            ring.advance_write_seq(w + 1);
        }
    }

    /// Pops the oldest value (single-threaded use).
    fn pop<T>(ring: &RingBuffer<T>) -> Option<T> {
        let r = ring.read_seq();
        if r == ring.write_seq() {
            return None;
        }
        // SAFETY: single thread; slot `r` was published and is read once.
        unsafe {
            let v = ring.read_slot(r);
            ring.advance_read_seq(r + 1);
            Some(v)
        }
    }

    #[test]
    fn test_new_creates_empty_buffer() {
        let ring: RingBuffer<u64> = RingBuffer::new(16);
        assert_eq!(ring.len(), 0);
        assert_eq!(ring.write_seq(), 0);
        assert_eq!(ring.read_seq(), 0);
        assert_eq!(ring.available(), 16);
        assert!(ring.is_empty());
    }

    #[test]
    #[should_panic(expected = "must be a power of two, got 12")]
    fn test_new_panics_on_non_power_of_two() {
        let _ = RingBuffer::<u64>::new(12);
    }

    #[test]
    #[should_panic(expected = "capacity must be non-zero")]
    fn test_new_panics_on_zero_capacity() {
        let _ = RingBuffer::<u64>::new(0);
    }

    #[test]
    fn test_capacity_returns_correct_value() {
        for shift in 0..16 {
            let ring: RingBuffer<u8> = RingBuffer::new(1 << shift);
            assert_eq!(ring.capacity(), 1 << shift);
        }
    }

    #[test]
    fn test_len_empty_buffer_returns_zero() {
        let ring: RingBuffer<u32> = RingBuffer::new(4);
        assert_eq!(ring.len(), 0);
        push(&ring, 1);
        assert_eq!(ring.len(), 1);
        pop(&ring);
        assert_eq!(ring.len(), 0);
    }

    #[test]
    fn test_is_empty_true_on_new_buffer() {
        let ring: RingBuffer<String> = RingBuffer::new(2);
        assert!(ring.is_empty());
        push(&ring, "x".to_owned());
        assert!(!ring.is_empty());
    }

    #[test]
    fn test_is_full_false_on_new_buffer() {
        let ring: RingBuffer<u8> = RingBuffer::new(1);
        assert!(!ring.is_full());
        push(&ring, 1);
        assert!(ring.is_full());
    }

    #[test]
    fn test_single_write_read_roundtrip() {
        let ring: RingBuffer<String> = RingBuffer::new(8);
        push(&ring, "hello".to_owned());
        assert_eq!(pop(&ring).as_deref(), Some("hello"));
        assert_eq!(pop(&ring), None);
        assert_eq!((ring.write_seq(), ring.read_seq()), (1, 1));
    }

    #[test]
    fn test_fill_to_capacity() {
        let ring: RingBuffer<u64> = RingBuffer::new(64);
        for i in 0..64 {
            assert_eq!(ring.available(), 64 - i as usize);
            push(&ring, i);
        }
        assert!(ring.is_full());
        assert_eq!(ring.len(), 64);
        assert_eq!(ring.available(), 0);
        for i in 0..64 {
            assert_eq!(pop(&ring), Some(i));
        }
        assert!(ring.is_empty());
    }

    #[test]
    fn test_wrap_around_sequence_numbers() {
        let ring: RingBuffer<u64> = RingBuffer::new(4);
        // Many laps: the sequences keep growing while indices wrap.
        for lap in 0..100_u64 {
            for i in 0..3 {
                push(&ring, lap * 10 + i);
            }
            for i in 0..3 {
                assert_eq!(pop(&ring), Some(lap * 10 + i));
            }
        }
        assert_eq!(ring.write_seq(), 300);
        assert_eq!(ring.read_seq(), 300);
        // Sequences far from zero index the same slots as their low bits.
        let far = u64::MAX - 2;
        // SAFETY: only the pointer values are compared, nothing is accessed.
        unsafe { assert_eq!(ring.slot_ptr(far), ring.slot_ptr(far & 3)) };
    }

    #[test]
    fn test_drop_cleans_up_remaining_items() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        struct Counted(#[allow(dead_code)] u32); // the payload only gives the value a size
        impl Drop for Counted {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Ordering::Relaxed);
            }
        }
        let ring: RingBuffer<Counted> = RingBuffer::new(8);
        // Wrap around first so that the unread items straddle the end.
        for i in 0..6 {
            push(&ring, Counted(i));
        }
        for _ in 0..6 {
            drop(pop(&ring));
        }
        assert_eq!(DROPS.load(Ordering::Relaxed), 6);
        for i in 0..5 {
            push(&ring, Counted(i));
        }
        drop(ring);
        assert_eq!(
            DROPS.load(Ordering::Relaxed),
            11,
            "5 unread items dropped once each"
        );
    }

    /// The claim path that `mpsc` uses (`cas_write_seq`, then write): every
    /// value it put in the ring is dropped exactly once, by a reader or by
    /// `Drop`, across a wrap, and no slot it did not write is dropped.
    #[test]
    fn drop_runs_once_for_each_value_claimed_by_cas_and_written() {
        static DROPPED: [AtomicUsize; 16] = [const { AtomicUsize::new(0) }; 16];
        struct Tracked(usize);
        impl Drop for Tracked {
            fn drop(&mut self) {
                DROPPED[self.0].fetch_add(1, Ordering::Relaxed);
            }
        }
        let ring: RingBuffer<Tracked> = RingBuffer::new(4);
        let mut next = 0;
        let mut claim = |ring: &RingBuffer<Tracked>, k: u64| {
            let w = ring.write_seq();
            // SAFETY: single thread; `w..w+k` are free (the caller keeps
            // k <= free slots) and each is written right after the claim.
            unsafe {
                assert_eq!(ring.cas_write_seq(w, w + k), Ok(w));
                for s in w..w + k {
                    ring.write_slot(s, Tracked(next));
                    next += 1;
                }
            }
        };
        claim(&ring, 3); // values 0, 1, 2
        assert_eq!(pop(&ring).map(|t| t.0), Some(0));
        assert_eq!(pop(&ring).map(|t| t.0), Some(1));
        claim(&ring, 3); // values 3, 4, 5: wraps past the end
        // A CAS with a stale expectation claims nothing.
        // SAFETY: it fails (write_seq is 6), so nothing is claimed.
        assert_eq!(unsafe { ring.cas_write_seq(0, 100) }, Err(6));
        drop(ring);
        for (value, count) in DROPPED.iter().enumerate() {
            let expected = usize::from(value < 6);
            assert_eq!(count.load(Ordering::Relaxed), expected, "value {value}");
        }
    }

    #[test]
    fn test_bitwise_modulo_matches_regular_modulo() {
        for shift in 0..12 {
            let cap = 1_u64 << shift;
            let ring: RingBuffer<u8> = RingBuffer::new(cap as usize);
            // SAFETY: only pointer arithmetic, nothing is dereferenced.
            let base = unsafe { ring.slot_ptr(0) };
            for seq in (0..5000).chain(u64::MAX - 5000..=u64::MAX) {
                assert_eq!(seq & ring.mask, seq % cap);
                // SAFETY: as above.
                let p = unsafe { ring.slot_ptr(seq) };
                assert_eq!(p as usize - base as usize, (seq % cap) as usize);
            }
        }
    }

    #[test]
    fn len_is_clamped_and_never_underflows() {
        let ring: RingBuffer<u8> = RingBuffer::new(4);
        // A torn snapshot as a racing reader could see it: write far ahead.
        ring.write_seq.store(100, Ordering::Relaxed);
        ring.read_seq.store(3, Ordering::Relaxed);
        assert_eq!(ring.len(), 4);
        // And read apparently ahead of write (impossible in a correct
        // protocol, but len must still not panic).
        ring.read_seq.store(200, Ordering::Relaxed);
        assert_eq!(ring.len(), 0);
        ring.read_seq.store(100, Ordering::Relaxed);
    }

    #[test]
    fn try_new_rejects_bad_capacities() {
        assert_eq!(
            RingBuffer::<u8>::try_new(0).err(),
            Some(CapacityError::Zero)
        );
        assert_eq!(
            RingBuffer::<u8>::try_new(6).err(),
            Some(CapacityError::NotPowerOfTwo(6))
        );
    }
}
