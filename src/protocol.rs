//! The single-producer, single-consumer ring protocol, written once.
//!
//! [`ProducerCore`] and [`ConsumerCore`] run over any [`SlotRing`]: a
//! [`RingBuffer`](crate::RingBuffer) owned by the process (the
//! [`spsc`](crate::spsc) channel) or a view of a ring inside a shared-memory
//! segment. Everything the algorithm does is here:
//!
//! * each side keeps its own position in a local `u64` (it is the only writer
//!   of it) and a cached copy of the other side's position;
//! * the cache is reloaded (Acquire) only when it says the ring is full
//!   (producer) or empty (consumer), so in steady state each side touches the
//!   other's cache line once per lap rather than once per item;
//! * a slot is written (read) before its sequence is published (released) with
//!   a Release store; a batch costs one store.
//!
//! Positions loaded from the ring are checked (`read <= write <= read +
//! capacity`) before they replace the cache, so a ring whose other side is
//! corrupt or hostile (shared memory) makes this side see "full" or "empty",
//! never index outside the slots or read twice.

use std::ops::Deref;

use crate::ring_buffer::SlotRing;
use crate::sync::{AtomicU64, Ordering};

/// A run of the slots of the ring behind `H`.
#[cfg(not(loom))]
type Run<H> = crate::ring_buffer::Run<<<H as Deref>::Target as SlotRing>::Item>;

/// The producing side of the SPSC protocol.
pub(crate) struct ProducerCore<H: Deref<Target: SlotRing>> {
    ring: H,
    /// Our own position; `write_seq` in the ring equals it between calls.
    write: u64,
    /// Last `read_seq` we loaded; the consumer may be further along.
    cached_read: u64,
    capacity: u64,
    /// The ring's slots, so that writing one is no load through the handle.
    slots: Slots<H>,
    /// `ring.write_seq_atomic()`, asked once (see [`Own`]).
    own: Own<H>,
    /// `ring.wakes()`, asked once.
    wakes: bool,
}

/// The position atomic a core stores to on every call (`write_seq` for
/// the producer, `read_seq` for the consumer), asked of the ring once: in
/// a shared-memory ring, reaching a consumer's cursor through the handle
/// is a chain of loads and a bounds check on every release. Like
/// [`Slots`], it relies on the atomic lying outside the handle itself: in
/// an `Arc`'s allocation, a mapping, or behind a reference, which stay
/// where they are when the core (and its handle) moves. No core runs on a
/// `Box` of a ring whose atomics are the box's own fields.
struct Own<H> {
    seq: std::ptr::NonNull<AtomicU64>,
    _ring: std::marker::PhantomData<H>,
}

impl<H: Deref<Target: SlotRing>> Own<H> {
    fn of(seq: &AtomicU64) -> Self {
        Self {
            seq: std::ptr::NonNull::from(seq),
            _ring: std::marker::PhantomData,
        }
    }

    /// The atomic, borrowed from the core that holds the handle.
    #[inline(always)]
    fn get<'a>(&self, _ring: &'a H) -> &'a AtomicU64 {
        // The pointer came from the ring behind the core's handle, which
        // returns the same atomic for as long as it lives
        // (SlotRing::write_seq_atomic, read_seq_atomic), and the atomic lies
        // outside the handle (an Arc's allocation, a mapping, a borrowed
        // ring; the loom views are boxes of an Arc).
        // SAFETY: so moving the core moves nothing it points to, and the
        // handle is borrowed for 'a, so the ring lives that long.
        unsafe { self.seq.as_ref() }
    }
}

// SAFETY: the pointer is to an atomic in the ring the core's handle keeps
// alive, used only through `get`, as a shared reference to an atomic; moving
// or sharing it is as sound as moving or sharing the handle.
unsafe impl<H: Send> Send for Own<H> {}
// SAFETY: as for Send.
unsafe impl<H: Sync> Sync for Own<H> {}

/// A ring's slot 0 and index mask, copied out of the ring when a core is
/// made: the slot of `seq` is `base + (seq & mask)`, reached without
/// loading anything through the core's handle (a `Box` or `Arc` of the
/// ring, or a mapping). Under loom slots are model cells, reached through
/// the ring.
struct Slots<H: Deref<Target: SlotRing>> {
    #[cfg(not(loom))]
    base: *mut <H::Target as SlotRing>::Item,
    #[cfg(not(loom))]
    mask: u64,
    #[cfg(loom)]
    _ring: std::marker::PhantomData<H>,
}

impl<H: Deref<Target: SlotRing>> Slots<H> {
    fn of(ring: &H::Target) -> Self {
        #[cfg(not(loom))]
        {
            Self {
                // SAFETY: computing slot 0's pointer touches nothing.
                base: unsafe { ring.slot_ptr(0) },
                mask: ring.capacity() as u64 - 1,
            }
        }
        #[cfg(loom)]
        {
            let _ = ring;
            Self {
                _ring: std::marker::PhantomData,
            }
        }
    }

    /// Writes `value` into the slot of `seq`, as `ring.write_slot` would.
    ///
    /// # Safety
    ///
    /// As [`SlotRing::write_slot`], on the ring these slots were copied from.
    #[inline(always)]
    unsafe fn write(&self, ring: &H::Target, seq: u64, value: <H::Target as SlotRing>::Item) {
        #[cfg(not(loom))]
        {
            let _ = ring;
            // SAFETY: slots are contiguous (SlotRing's contract), so slot
            // `seq & mask` is `base` plus that; the caller's promise is
            // write_slot's, which write_to shares.
            unsafe { H::Target::write_to(self.base.add((seq & self.mask) as usize), value) }
        }
        // SAFETY: the caller's promise.
        #[cfg(loom)]
        unsafe {
            ring.write_slot(seq, value)
        }
    }

    /// Moves the value out of the slot of `seq`, as `ring.read_slot` would.
    ///
    /// # Safety
    ///
    /// As [`SlotRing::read_slot`], on the ring these slots were copied from.
    #[inline(always)]
    unsafe fn read(&self, ring: &H::Target, seq: u64) -> <H::Target as SlotRing>::Item {
        #[cfg(not(loom))]
        {
            let _ = ring;
            // SAFETY: as in `write`, for read_slot and read_from.
            unsafe { H::Target::read_from(self.base.add((seq & self.mask) as usize)) }
        }
        // SAFETY: the caller's promise.
        #[cfg(loom)]
        unsafe {
            ring.read_slot(seq)
        }
    }
}

// SAFETY: `base` points into the ring that the core's handle `H` keeps
// alive, and is used only as the ring's own `slot_ptr` would be, by the one
// side that owns the core; moving the core to another thread moves the
// handle with it, which needs `H: Send`.
unsafe impl<H: Deref<Target: SlotRing> + Send> Send for Slots<H> {}

// SAFETY: a shared `&Slots` permits no access: its pointer is used only by
// the `unsafe` `read`/`write`, which the cores call from their `&mut self`
// methods. So sharing a core between threads is as sound as sharing its
// handle, which needs `H: Sync`.
unsafe impl<H: Deref<Target: SlotRing> + Sync> Sync for Slots<H> {}

impl<H> ProducerCore<H>
where
    H: Deref,
    H::Target: SlotRing,
{
    /// Attaches to `ring`, continuing from its current `write_seq`.
    pub(crate) fn new(ring: H) -> Self {
        // Acquire (both): pair with the Release stores of a previous producer
        // (resume after a restart) and of the consumer.
        let write = ring.write_seq_atomic().load(Ordering::Acquire);
        let cached_read = ring.read_floor(write);
        let capacity = ring.capacity() as u64;
        let cached_read = if let Some(read) =
            cached_read.filter(|&read| read <= write && write - read <= capacity)
        {
            read
        } else {
            // Inconsistent positions: behave as "full" until the consumer's
            // position makes sense. (When `write < capacity` this wraps; the
            // distance `write - cached_read` is therefore always taken with
            // wrapping_sub, and is exactly `capacity`.)
            write.wrapping_sub(capacity)
        };
        let slots = Slots::<H>::of(&ring);
        let own = Own::of(ring.write_seq_atomic());
        let wakes = ring.wakes();
        Self {
            ring,
            write,
            cached_read,
            capacity,
            slots,
            own,
            wakes,
        }
    }

    /// The ring this core runs on.
    #[inline(always)]
    pub(crate) fn ring(&self) -> &H::Target {
        &self.ring
    }

    /// The handle this core runs on.
    #[inline(always)]
    pub(crate) fn handle(&self) -> &H {
        &self.ring
    }

    /// Next sequence this producer will write.
    #[inline(always)]
    pub(crate) fn write_pos(&self) -> u64 {
        self.write
    }

    /// Free slots, reloading `read_seq` only when the cache shows fewer than
    /// `wanted`.
    #[inline(always)]
    pub(crate) fn free(&mut self, wanted: usize) -> usize {
        let mut free = self.capacity - self.write.wrapping_sub(self.cached_read);
        if free < wanted as u64 {
            // SYNC POINT read_seq: the floor is loaded with Acquire, pairing
            // with the Release store in ConsumerCore::release, so every
            // consumer has finished with every slot below it before we
            // overwrite it (SlotRing::read_floor).
            let read = self.ring.read_floor(self.write);
            // A position that contradicts ours is the other side's bug or
            // malice (shared memory), not ours: keep the cache, so the ring
            // looks full, and reload next time. Never a panic, not even a
            // debug assertion, on what another process wrote.
            debug_assert!(
                !<H::Target as SlotRing>::TRUSTED
                    || read.is_some_and(
                        |read| read <= self.write && self.write - read <= self.capacity
                    ),
                "a trusted ring's read_seq {read:?} contradicts write {}",
                self.write
            );
            if let Some(read) = read.filter(|&read| {
                <H::Target as SlotRing>::TRUSTED
                    || (read <= self.write && self.write - read <= self.capacity)
            }) {
                self.cached_read = read;
            }
            free = self.capacity - self.write.wrapping_sub(self.cached_read);
        }
        free as usize
    }

    /// Pushes one value, or hands it back when the ring is full.
    #[inline(always)]
    pub(crate) fn try_push(
        &mut self,
        value: <H::Target as SlotRing>::Item,
    ) -> Result<(), <H::Target as SlotRing>::Item> {
        if self.free(1) == 0 {
            return Err(value);
        }
        // SAFETY: we are the only producer, `write` is unpublished, and
        // free() >= 1 means the consumer has released the slot's previous item.
        unsafe { self.slots.write(&self.ring, self.write, value) };
        self.publish(1);
        Ok(())
    }

    /// Pushes items from `iter` while there is room; one publish for all.
    /// Takes from the iterator only the items it pushes.
    pub(crate) fn push_iter<I>(&mut self, iter: &mut I) -> usize
    where
        I: Iterator<Item = <H::Target as SlotRing>::Item>,
    {
        let free = self.free(self.capacity as usize);
        let mut n = 0;
        while n < free {
            let Some(value) = iter.next() else { break };
            // SAFETY: as in try_push, for each of the `free` unpublished,
            // released slots from `write` on. (If `next()` panics, the slots
            // written so far are never published and their values leak.)
            unsafe { self.ring.write_slot(self.write + n as u64, value) };
            n += 1;
        }
        if n > 0 {
            self.publish(n);
        }
        n
    }

    /// Copies as many of `items` as fit, with one publish; returns the count.
    pub(crate) fn push_slice(&mut self, items: &[<H::Target as SlotRing>::Item]) -> usize
    where
        <H::Target as SlotRing>::Item: Copy,
    {
        // Under loom the slots are not contiguous memory: go item by item.
        #[cfg(loom)]
        return self.push_iter(&mut items.iter().copied());
        #[cfg(not(loom))]
        {
            let ((a, a_len), (b, b_len)) = self.free_runs(items.len());
            // SAFETY: free_runs gives at most items.len() free, unpublished
            // slots that only this producer may write, as two valid runs; the
            // source slice does not overlap the ring.
            unsafe {
                self.ring.copy_into_slots(items.as_ptr(), a, a_len);
                self.ring
                    .copy_into_slots(items.as_ptr().add(a_len), b, b_len);
            }
            let n = a_len + b_len;
            if n > 0 {
                self.publish(n);
            }
            n
        }
    }

    /// Makes the next `n` written slots visible to the consumer.
    #[inline(always)]
    pub(crate) fn publish(&mut self, n: usize) {
        debug_assert!(n as u64 <= self.capacity - self.write.wrapping_sub(self.cached_read));
        self.write += n as u64;
        // SYNC POINT write_seq: Release publishes the slot writes; pairs with
        // the Acquire load in ConsumerCore::available.
        self.own
            .get(&self.ring)
            .store(self.write, Ordering::Release);
        if self.wakes {
            self.ring.on_publish();
        }
    }

    /// Raw pointers to up to `max` free slots as (at most) two contiguous
    /// runs, without publishing anything.
    #[cfg(not(loom))]
    pub(crate) fn free_runs(&mut self, max: usize) -> (Run<H>, Run<H>) {
        let n = self.free(max).min(max);
        self.ring.runs(self.write, n)
    }
}

/// The consuming side of the SPSC protocol.
pub(crate) struct ConsumerCore<H: Deref<Target: SlotRing>> {
    ring: H,
    /// Our own position; `read_seq` in the ring equals it between calls.
    read: u64,
    /// Last `write_seq` we loaded; the producer may be further along.
    cached_write: u64,
    capacity: u64,
    /// The ring's slots (see [`ProducerCore`]'s).
    slots: Slots<H>,
    /// `ring.read_seq_atomic()`, asked once (see [`Own`]).
    own: Own<H>,
    /// `ring.wakes()`, asked once.
    wakes: bool,
}

impl<H> ConsumerCore<H>
where
    H: Deref,
    H::Target: SlotRing,
{
    /// Attaches to `ring`, continuing from its current `read_seq`: the first
    /// item not yet released (at-least-once after a consumer restart).
    pub(crate) fn new(ring: H) -> Self {
        let own = Own::of(ring.read_seq_atomic());
        // Acquire: pairs with the Release stores of the producer and of a
        // previous consumer.
        let read = own.get(&ring).load(Ordering::Acquire);
        let capacity = ring.capacity() as u64;
        let slots = Slots::<H>::of(&ring);
        let wakes = ring.wakes();
        Self {
            ring,
            read,
            cached_write: read,
            capacity,
            slots,
            own,
            wakes,
        }
    }

    /// The ring this core runs on.
    #[inline(always)]
    pub(crate) fn ring(&self) -> &H::Target {
        &self.ring
    }

    /// The handle this core runs on.
    #[inline(always)]
    pub(crate) fn handle(&self) -> &H {
        &self.ring
    }

    /// Next sequence this consumer will read.
    #[inline(always)]
    pub(crate) fn read_pos(&self) -> u64 {
        self.read
    }

    /// Moves this consumer to `seq`, where its cursor was subscribed again
    /// (a subscription the producer dropped), forgetting what it had seen
    /// of the producer's position.
    #[cfg(not(loom))]
    pub(crate) fn reposition(&mut self, seq: u64) {
        self.read = seq;
        self.cached_write = seq;
        // SYNC POINT read_seq: Release, as in release.
        self.own.get(&self.ring).store(seq, Ordering::Release);
    }

    /// Published, unread items, reloading `write_seq` only when the cache
    /// shows fewer than `wanted`.
    #[inline(always)]
    pub(crate) fn available(&mut self, wanted: usize) -> usize {
        let mut avail = self.cached_write - self.read;
        if avail < wanted as u64 {
            // SYNC POINT write_seq: Acquire pairs with the Release store in
            // ProducerCore::publish, so the slots below `write` are written.
            let write = self.ring.write_seq_atomic().load(Ordering::Acquire);
            // Loaded after write_seq: an end recorded at a position at or
            // before `write` is seen here (SYNC POINT ends_head).
            let write = self.ring.read_limit(write);
            // As in ProducerCore::free: ignore a contradicting position (the
            // ring looks empty) and reload next time; never panic on it.
            debug_assert!(
                !<H::Target as SlotRing>::TRUSTED
                    || (write >= self.read && write - self.read <= self.capacity),
                "a trusted ring's write_seq {write} contradicts read {}",
                self.read
            );
            if <H::Target as SlotRing>::TRUSTED
                || (write >= self.read && write - self.read <= self.capacity)
            {
                self.cached_write = write;
            }
            avail = self.cached_write - self.read;
        }
        avail as usize
    }

    /// Pops the oldest item, or `None` when the ring is empty.
    #[inline(always)]
    pub(crate) fn try_pop(&mut self) -> Option<<H::Target as SlotRing>::Item> {
        if self.available(1) == 0 {
            return None;
        }
        // SAFETY: `read < cached_write`, so the slot was published (Acquire in
        // available) and we, the only consumer, have not read it yet.
        let value = unsafe { self.slots.read(&self.ring, self.read) };
        self.release(1);
        Some(value)
    }

    /// Moves up to `max` items into `out`; one release for all.
    pub(crate) fn pop_into(
        &mut self,
        out: &mut Vec<<H::Target as SlotRing>::Item>,
        max: usize,
    ) -> usize {
        let n = self.available(max).min(max);
        // Reserve first: after this, `push` cannot reallocate or panic, so no
        // item is ever moved out of a slot without being released.
        out.reserve(n);
        for i in 0..n as u64 {
            // SAFETY: as in try_pop, for each of the `n` published slots.
            out.push(unsafe { self.ring.read_slot(self.read + i) });
        }
        if n > 0 {
            self.release(n);
        }
        n
    }

    /// Copies up to `out.len()` items into `out`; one release for all.
    pub(crate) fn pop_slice(&mut self, out: &mut [<H::Target as SlotRing>::Item]) -> usize
    where
        <H::Target as SlotRing>::Item: Copy,
    {
        self.pop_slice_if(out, |_, _| true)
    }

    /// [`pop_slice`](Self::pop_slice), releasing the items only if `keep`,
    /// given the sequence of the first, says the copies are good (checked
    /// after the copy, before the release); otherwise 0, and nothing is
    /// released.
    #[inline]
    pub(crate) fn pop_slice_if(
        &mut self,
        out: &mut [<H::Target as SlotRing>::Item],
        keep: impl FnOnce(&H::Target, u64) -> bool,
    ) -> usize
    where
        <H::Target as SlotRing>::Item: Copy,
    {
        #[cfg(not(loom))]
        let n = {
            let ((a, a_len), (b, b_len)) = self.ready_runs(out.len());
            // SAFETY: ready_runs gives at most out.len() published, unread
            // items as two valid runs; `out` does not overlap the ring.
            unsafe {
                self.ring.copy_from_slots(a, out.as_mut_ptr(), a_len);
                self.ring
                    .copy_from_slots(b, out.as_mut_ptr().add(a_len), b_len);
            }
            a_len + b_len
        };
        // Under loom the slots are not contiguous memory: go item by item.
        #[cfg(loom)]
        let n = {
            let n = self.available(out.len()).min(out.len());
            for (i, dst) in out[..n].iter_mut().enumerate() {
                // SAFETY: as in try_pop, for each of the `n` published slots.
                *dst = unsafe { self.ring.read_slot(self.read + i as u64) };
            }
            n
        };
        if n == 0 || !keep(&self.ring, self.read) {
            return 0;
        }
        self.release(n);
        n
    }

    /// A copy of the oldest item, not released (`release(1)` does), or
    /// `None` when the ring is empty. Plain data only: the slot keeps its
    /// value.
    #[inline]
    pub(crate) fn read_next(&mut self) -> Option<<H::Target as SlotRing>::Item>
    where
        <H::Target as SlotRing>::Item: Copy,
    {
        if self.available(1) == 0 {
            return None;
        }
        // SAFETY: as in try_pop; the item is Copy, so the copy owns nothing
        // the slot still holds.
        Some(unsafe { self.slots.read(&self.ring, self.read) })
    }

    /// Moves up to `max` items to the end of `out`, as
    /// [`pop_into`](Self::pop_into), releasing them only if `keep` (as in
    /// [`pop_slice_if`](Self::pop_slice_if)); otherwise `out` is left as it
    /// was and 0 is returned.
    #[cfg(not(loom))]
    pub(crate) fn pop_into_if(
        &mut self,
        out: &mut Vec<<H::Target as SlotRing>::Item>,
        max: usize,
        keep: impl FnOnce(&H::Target, u64) -> bool,
    ) -> usize
    where
        <H::Target as SlotRing>::Item: Copy,
    {
        let n = self.available(max).min(max);
        let len = out.len();
        out.reserve(n);
        for i in 0..n as u64 {
            // SAFETY: as in try_pop, for each of the `n` published slots.
            out.push(unsafe { self.ring.read_slot(self.read + i) });
        }
        if n == 0 || !keep(&self.ring, self.read) {
            out.truncate(len);
            return 0;
        }
        self.release(n);
        n
    }

    /// Hands the next `n` read slots back to the producer.
    #[inline(always)]
    pub(crate) fn release(&mut self, n: usize) {
        debug_assert!(n as u64 <= self.cached_write - self.read);
        self.read += n as u64;
        // SYNC POINT read_seq: Release tells the producer we are done with the
        // slots below `read`; pairs with the Acquire load in ProducerCore::free.
        self.own.get(&self.ring).store(self.read, Ordering::Release);
        if self.wakes {
            self.ring.on_release();
        }
    }

    /// Raw pointers to up to `max` published items as (at most) two
    /// contiguous runs, without releasing anything.
    #[cfg(not(loom))]
    pub(crate) fn ready_runs(&mut self, max: usize) -> (Run<H>, Run<H>) {
        let n = self.available(max).min(max);
        self.ring.runs(self.read, n)
    }
}

#[cfg(not(loom))]
impl<H> crate::chunks::CommitWritten for ProducerCore<H>
where
    H: Deref,
    H::Target: SlotRing,
{
    fn commit_written(&mut self, n: usize) {
        self.publish(n);
    }
}

#[cfg(not(loom))]
impl<H> crate::chunks::ReleaseRead for ConsumerCore<H>
where
    H: Deref,
    H::Target: SlotRing,
{
    fn release_read(&mut self, n: usize) {
        self.release(n);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The halves keep the auto traits they had before they cached a slot
    /// pointer: each may move to another thread, and be shared (`&self`
    /// methods only) between threads.
    #[test]
    fn the_halves_are_send_and_sync() {
        fn send_sync<X: Send + Sync>() {}
        send_sync::<crate::spsc::Producer<String>>();
        send_sync::<crate::spsc::Consumer<String>>();
        #[cfg(target_os = "linux")]
        {
            send_sync::<crate::shm::ShmProducer<u64>>();
            send_sync::<crate::shm::ShmConsumer<u64>>();
        }
    }
    use crate::RingBuffer;
    use crate::sync::AtomicU64;

    /// A ring whose other side is not trusted, as one in shared memory is:
    /// an in-process `RingBuffer` with `TRUSTED = false`.
    struct Untrusted(RingBuffer<u64>);

    // SAFETY: every method forwards to the RingBuffer, which upholds the
    // contract.
    unsafe impl SlotRing for Untrusted {
        type Item = u64;
        const TRUSTED: bool = false;

        fn capacity(&self) -> usize {
            self.0.capacity()
        }

        fn write_seq_atomic(&self) -> &AtomicU64 {
            self.0.write_seq_atomic()
        }

        fn read_seq_atomic(&self) -> &AtomicU64 {
            self.0.read_seq_atomic()
        }

        unsafe fn slot_ptr(&self, seq: u64) -> *mut u64 {
            // SAFETY: requirements forwarded to the caller.
            unsafe { self.0.slot_ptr(seq) }
        }

        unsafe fn write_slot(&self, seq: u64, value: u64) {
            // SAFETY: requirements forwarded to the caller.
            unsafe { self.0.write_slot(seq, value) }
        }

        unsafe fn read_slot(&self, seq: u64) -> u64 {
            // SAFETY: requirements forwarded to the caller.
            unsafe { self.0.read_slot(seq) }
        }
    }

    /// Positions the other side stores are input (in shared memory, from
    /// another process): a contradicting one makes this side see a full or
    /// empty ring, and a later consistent one is picked up. Neither side
    /// panics, in a debug build either (`cargo test`): before, a debug
    /// assertion let the peer panic it.
    #[test]
    fn positions_that_contradict_ours_are_ignored_without_panicking() {
        let ring = Untrusted(RingBuffer::<u64>::new(4));
        let mut tx = ProducerCore::new(&ring);
        let mut rx = ConsumerCore::new(&ring);
        assert_eq!(tx.push_slice(&[1, 2]), 2);
        // The "consumer" claims to be past the producer.
        ring.read_seq_atomic().store(100, Ordering::Relaxed);
        assert_eq!(tx.free(4), 2, "keeps its cached read_seq 0");
        // The "producer" claims more than a ring's worth ahead.
        ring.write_seq_atomic().store(100, Ordering::Relaxed);
        assert_eq!(rx.available(4), 0, "keeps its cached write_seq 0");
        // Consistent again: both sides pick the positions up.
        ring.write_seq_atomic().store(2, Ordering::Relaxed);
        ring.read_seq_atomic().store(0, Ordering::Relaxed);
        let mut out = [0; 4];
        assert_eq!(rx.pop_slice(&mut out), 2);
        assert_eq!(out[..2], [1, 2]);
        assert_eq!(tx.free(4), 4);
    }

    /// A producer that attaches while `read_seq` is ahead of `write_seq`
    /// sees a full ring, also when `write_seq < capacity` (the "full" cache
    /// wraps below zero), and recovers once the positions agree.
    #[test]
    fn a_producer_attaching_to_contradicting_positions_sees_a_full_ring() {
        let ring = Untrusted(RingBuffer::<u64>::new(4));
        ring.write_seq_atomic().store(2, Ordering::Relaxed);
        ring.read_seq_atomic().store(10, Ordering::Relaxed);
        let mut tx = ProducerCore::new(&ring);
        assert_eq!(tx.free(1), 0);
        assert_eq!(tx.try_push(7), Err(7));
        ring.read_seq_atomic().store(2, Ordering::Relaxed);
        assert_eq!(tx.free(1), 4);
        assert_eq!(tx.try_push(7), Ok(()));
    }
}
