//! Multi-producer, single-consumer channel over a [`RingBuffer`], with a
//! sequence stamp per slot (Dmitry Vyukov's bounded MPMC queue, restricted to
//! one consumer).
//!
//! Producers claim a slot by CAS on `write_seq`
//! ([`RingBuffer::cas_write_seq`]); a slot's stamp says whether it is free for
//! the claimer's lap (`stamp == seq`), holds an item of sequence `seq`
//! (`stamp == seq + 1`), or still holds the previous lap's item (ring full).
//! The consumer reads a slot only once its stamp says it was written, so a
//! slot that was claimed but not yet written is never read, whatever order
//! the producers finish in.
//!
//! Source: D. Vyukov, "Bounded MPMC queue" (1024cores.net), as in crossbeam's
//! `ArrayQueue`.
//!
//! # Examples
//!
//! ```
//! use laminar_ring::mpsc;
//!
//! let (tx, mut rx) = mpsc::channel::<(usize, u32)>(64);
//! let handles: Vec<_> = (0..4)
//!     .map(|id| {
//!         let mut tx = tx.clone();
//!         std::thread::spawn(move || {
//!             for i in 0..1000 {
//!                 tx.push((id, i)).unwrap();
//!             }
//!         })
//!     })
//!     .collect();
//! drop(tx);
//! let mut next = [0; 4];
//! while let Ok((id, i)) = rx.pop() {
//!     assert_eq!(next[id], i, "per-producer order is kept");
//!     next[id] += 1;
//! }
//! assert_eq!(next, [1000; 4]);
//! for h in handles {
//!     h.join().unwrap();
//! }
//! ```
//!
//! # Disconnection
//!
//! The consumer gets `Disconnected` once every [`Producer`] clone is dropped
//! and every pushed item has been popped. Producers get `Disconnected(value)`
//! once the [`Consumer`] is dropped.

use std::fmt;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

#[cfg(not(loom))]
use crate::chunks::{ReadChunk, ReleaseRead};
use crate::error::{
    CapacityError, PopError, PopTimeoutError, PushError, PushTimeoutError, TryPopError,
    TryPushError,
};
use crate::ring_buffer::RingBuffer;
#[cfg(not(loom))]
use crate::ring_buffer::SlotRing;
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::wait::{Blocking, Sharing, WaitCell, WaitStrategy, Waiter, retry_until};

/// The smallest capacity of an MPSC channel (see [`CapacityError::TooSmall`]).
pub const MIN_CAPACITY: usize = 2;

pub(crate) struct Shared<T> {
    ring: RingBuffer<T>,
    /// `stamps[seq & mask]`: `seq` when free for the lap of `seq`, `seq + 1`
    /// once the item of `seq` is written, `seq + capacity` once it is read.
    stamps: Box<[AtomicU64]>,
    mask: u64,
    producers: CachePadded<AtomicUsize>,
    consumer_gone: CachePadded<AtomicBool>,
    not_empty: CachePadded<WaitCell>,
    not_full: CachePadded<WaitCell>,
    parking: bool,
}

impl<T> Shared<T> {
    #[inline(always)]
    fn stamp(&self, seq: u64) -> &AtomicU64 {
        &self.stamps[(seq & self.mask) as usize]
    }
}

/// Creates a channel with `capacity` slots and the default wait strategy.
///
/// # Panics
///
/// If `capacity` is zero, 1 or not a power of two (see [`channel_with`]).
pub fn channel<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    match channel_with(capacity, WaitStrategy::default()) {
        Ok(halves) => halves,
        Err(e) => panic!("mpsc::channel: {e}"),
    }
}

/// Creates a channel whose blocking calls wait with `wait`.
///
/// # Errors
///
/// [`CapacityError`] if `capacity` is zero, not a power of two, or 1
/// ([`CapacityError::TooSmall`]: see there why).
pub fn channel_with<T>(
    capacity: usize,
    wait: WaitStrategy,
) -> Result<(Producer<T>, Consumer<T>), CapacityError> {
    let ring = RingBuffer::try_new(capacity)?;
    if capacity < MIN_CAPACITY {
        return Err(CapacityError::TooSmall {
            capacity,
            min: MIN_CAPACITY,
        });
    }
    let stamps = (0..capacity as u64).map(AtomicU64::new).collect();
    let shared = Arc::new(Shared {
        ring,
        stamps,
        mask: capacity as u64 - 1,
        producers: CachePadded::new(AtomicUsize::new(1)),
        consumer_gone: CachePadded::new(AtomicBool::new(false)),
        not_empty: CachePadded::new(WaitCell::new()),
        not_full: CachePadded::new(WaitCell::new()),
        parking: wait == WaitStrategy::Park,
    });
    let producer = Producer {
        shared: shared.clone(),
        wait,
    };
    let consumer = Consumer {
        shared,
        read: 0,
        wait,
    };
    Ok((producer, consumer))
}

/// A sending half of an MPSC channel; clone it for more producers.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    wait: WaitStrategy,
}

impl<T> Producer<T> {
    /// Pushes `value` if there is a free slot.
    ///
    /// # Errors
    ///
    /// [`TryPushError::Full`] or [`TryPushError::Disconnected`], with the value.
    pub fn try_push(&mut self, value: T) -> Result<(), TryPushError<T>> {
        let shared = &*self.shared;
        // Relaxed: the flag carries no data (see spsc::Producer::try_push).
        if shared.consumer_gone.load(Ordering::Relaxed) {
            return Err(TryPushError::Disconnected(value));
        }
        let ring = &shared.ring;
        // Relaxed: only a starting guess; the CAS below validates it.
        let mut seq = ring.write_seq_atomic().load(Ordering::Relaxed);
        loop {
            // SYNC POINT stamp-free: Acquire pairs with the Release store of
            // the stamp in Consumer::release_one, so the consumer has moved
            // the previous lap's item out before we overwrite the slot.
            let stamp = shared.stamp(seq).load(Ordering::Acquire);
            let diff = stamp.wrapping_sub(seq) as i64;
            if diff == 0 {
                // SAFETY: the stamp of `seq` says its slot is free for this
                // lap (so `seq + 1 - read_seq <= capacity`), and on success we
                // write it at once and publish it by its stamp.
                match unsafe { ring.cas_write_seq(seq, seq + 1) } {
                    Ok(_) => {
                        // SAFETY: the CAS made us the only owner of `seq`, and
                        // its stamp says the slot is free for this lap.
                        unsafe { ring.write_slot(seq, value) };
                        // SYNC POINT stamp-written: Release publishes the slot
                        // write; pairs with the Acquire in Consumer::ready.
                        shared.stamp(seq).store(seq + 1, Ordering::Release);
                        if shared.parking {
                            shared.not_empty.notify(Sharing::ThisProcess);
                        }
                        return Ok(());
                    }
                    Err(current) => seq = current,
                }
            } else if diff < 0 {
                // The slot still holds the item of `seq - capacity`: full.
                return Err(TryPushError::Full(value));
            } else {
                // Another producer claimed `seq` already; catch up.
                seq = ring.write_seq_atomic().load(Ordering::Relaxed);
            }
        }
    }

    /// Pushes `value`, waiting while the ring is full.
    ///
    /// # Errors
    ///
    /// [`PushError::Disconnected`] (with the value) when the consumer is gone.
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        retry_until(self, None, value, Self::try_push).map_err(TryPushError::into_push_error)
    }

    /// Pushes `value`, waiting at most `timeout` for a free slot.
    ///
    /// # Errors
    ///
    /// [`PushTimeoutError::Timeout`] or [`PushTimeoutError::Disconnected`].
    pub fn push_timeout(&mut self, value: T, timeout: Duration) -> Result<(), PushTimeoutError<T>> {
        let deadline = Instant::now().checked_add(timeout);
        retry_until(self, deadline, value, Self::try_push).map_err(TryPushError::into_timeout_error)
    }

    /// Pushes as many items of `items` as fit, claiming their slots with one
    /// CAS, so they stay contiguous in the ring; returns the count (0 when the
    /// ring is full or the consumer is gone).
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut tx, mut rx) = laminar_ring::mpsc::channel::<u16>(4);
    /// assert_eq!(tx.push_slice(&[1, 2, 3, 4, 5]), 4);
    /// let mut out = Vec::new();
    /// assert_eq!(rx.pop_into(&mut out, 8), 4);
    /// assert_eq!(out, [1, 2, 3, 4]);
    /// ```
    pub fn push_slice(&mut self, items: &[T]) -> usize
    where
        T: Copy,
    {
        let shared = &*self.shared;
        if items.is_empty() || shared.consumer_gone.load(Ordering::Relaxed) {
            return 0;
        }
        let ring = &shared.ring;
        let want = items.len().min(ring.capacity()) as u64;
        // Relaxed: only a starting guess; the CAS below validates it.
        let mut seq = ring.write_seq_atomic().load(Ordering::Relaxed);
        loop {
            // Acquire (every stamp load here): as in try_push (stamp-free).
            let diff = shared.stamp(seq).load(Ordering::Acquire).wrapping_sub(seq) as i64;
            if diff < 0 {
                return 0;
            }
            if diff > 0 {
                seq = ring.write_seq_atomic().load(Ordering::Relaxed);
                continue;
            }
            // The consumer frees slots in order, so the free run from `seq`
            // ends at the first stamp that is not free for its lap.
            let mut k = 1;
            while k < want && shared.stamp(seq + k).load(Ordering::Acquire) == seq + k {
                k += 1;
            }
            // SAFETY: each of the k stamps from `seq` says its slot is free
            // for this lap, and on success every claimed slot is written and
            // then published by its stamp, below.
            match unsafe { ring.cas_write_seq(seq, seq + k) } {
                Ok(_) => {
                    for (i, item) in items[..k as usize].iter().enumerate() {
                        let s = seq + i as u64;
                        // SAFETY: the CAS made us the owner of seq..seq+k and
                        // each stamp said its slot was free for this lap.
                        unsafe { ring.write_slot(s, *item) };
                        // SYNC POINT stamp-written (as in try_push).
                        shared.stamp(s).store(s + 1, Ordering::Release);
                    }
                    if shared.parking {
                        shared.not_empty.notify(Sharing::ThisProcess);
                    }
                    return k as usize;
                }
                Err(current) => seq = current,
            }
        }
    }

    /// Capacity of the ring.
    pub fn capacity(&self) -> usize {
        self.shared.ring.capacity()
    }

    /// `true` once the consumer has been dropped.
    pub fn is_abandoned(&self) -> bool {
        self.shared.consumer_gone.load(Ordering::Acquire)
    }
}

impl<T> Blocking for Producer<T> {
    type Handle = Arc<Shared<T>>;

    fn waiter(&self) -> Waiter<Arc<Shared<T>>> {
        let shared = self.shared.clone();
        Waiter::new(self.wait, Sharing::ThisProcess, shared, |s| &s.not_full)
    }
}

impl<T> Clone for Producer<T> {
    fn clone(&self) -> Self {
        // Relaxed: a new producer is made from a live one, so the count cannot
        // reach zero concurrently (the same reasoning as Arc::clone).
        self.shared.producers.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: self.shared.clone(),
            wait: self.wait,
        }
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // AcqRel: Release publishes this producer's last stamp stores to the
        // consumer's Acquire load of `producers` in try_pop; Acquire orders
        // the other producers' drops before the last one's wake.
        if self.shared.producers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.not_empty.notify(Sharing::ThisProcess);
        }
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("mpsc::Producer")
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

/// The receiving half of an MPSC channel.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Next sequence to read; `read_seq` in the ring equals it between calls.
    read: u64,
    wait: WaitStrategy,
}

impl<T> Consumer<T> {
    /// Whether the item of `seq` has been written.
    #[inline(always)]
    fn ready(&self, seq: u64) -> bool {
        // SYNC POINT stamp-written: Acquire pairs with the Release store of
        // the stamp in Producer::try_push, so the slot write is visible.
        self.shared.stamp(seq).load(Ordering::Acquire) == seq.wrapping_add(1)
    }

    /// Frees the slots of `self.read..self.read + n` (already moved out or
    /// dropped) for the producers' next lap and advances `read_seq`.
    fn release(&mut self, n: usize) {
        let cap = self.shared.ring.capacity() as u64;
        for seq in self.read..self.read + n as u64 {
            // SYNC POINT stamp-free: Release pairs with the Acquire in
            // Producer::try_push: we are done with the slot.
            self.shared.stamp(seq).store(seq + cap, Ordering::Release);
        }
        self.read += n as u64;
        // SAFETY: every value below `read` was moved out or dropped (callers).
        unsafe { self.shared.ring.advance_read_seq(self.read) };
        if self.shared.parking {
            self.shared.not_full.notify(Sharing::ThisProcess);
        }
    }

    /// Pops the oldest item if it has been written.
    ///
    /// # Errors
    ///
    /// [`TryPopError::Empty`], or [`TryPopError::Disconnected`] once every
    /// producer is gone and the ring is drained.
    pub fn try_pop(&mut self) -> Result<T, TryPopError> {
        if let Some(v) = self.pop_ready() {
            return Ok(v);
        }
        // Acquire: pairs with the AcqRel decrement in Producer::drop, so every
        // stamp store of every producer is visible to the re-check below.
        if self.shared.producers.load(Ordering::Acquire) == 0 {
            return self.pop_ready().ok_or(TryPopError::Disconnected);
        }
        Err(TryPopError::Empty)
    }

    fn pop_ready(&mut self) -> Option<T> {
        if !self.ready(self.read) {
            return None;
        }
        // SAFETY: the stamp says the item of `read` was written (Acquire in
        // ready), and we are the only consumer.
        let v = unsafe { self.shared.ring.read_slot(self.read) };
        self.release(1);
        Some(v)
    }

    /// Pops the oldest item, waiting while the ring is empty.
    ///
    /// # Errors
    ///
    /// [`PopError::Disconnected`] once the ring is drained and every producer gone.
    pub fn pop(&mut self) -> Result<T, PopError> {
        retry_until(self, None, (), |rx, ()| rx.try_pop()).map_err(TryPopError::into_pop_error)
    }

    /// Pops the oldest item, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`PopTimeoutError::Timeout`] or [`PopTimeoutError::Disconnected`].
    pub fn pop_timeout(&mut self, timeout: Duration) -> Result<T, PopTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        retry_until(self, deadline, (), |rx, ()| rx.try_pop())
            .map_err(TryPopError::into_timeout_error)
    }

    /// Number of written items at the head of the ring, up to `max`.
    fn ready_count(&self, max: usize) -> usize {
        let max = max.min(self.shared.ring.capacity());
        (0..max as u64)
            .take_while(|&i| self.ready(self.read + i))
            .count()
    }

    /// Copies up to `out.len()` ready items into `out`; returns the count.
    pub fn pop_slice(&mut self, out: &mut [T]) -> usize
    where
        T: Copy,
    {
        let n = self.ready_count(out.len());
        for (i, dst) in out[..n].iter_mut().enumerate() {
            // SAFETY: ready_count saw each of these stamps written (Acquire).
            *dst = unsafe { self.shared.ring.read_slot(self.read + i as u64) };
        }
        if n > 0 {
            self.release(n);
        }
        n
    }

    /// Moves up to `max` ready items to the end of `out`; returns the count.
    pub fn pop_into(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        let n = self.ready_count(max);
        // Reserve first, so that no push below can panic after a move-out.
        out.reserve(n);
        for i in 0..n as u64 {
            // SAFETY: ready_count saw each of these stamps written (Acquire).
            out.push(unsafe { self.shared.ring.read_slot(self.read + i) });
        }
        if n > 0 {
            self.release(n);
        }
        n
    }

    /// Up to `max` ready items as two slices, read in place and released by
    /// [`commit`](ReadChunk::commit).
    #[cfg(not(loom))]
    pub fn read_chunk(&mut self, max: usize) -> ReadChunk<'_, T> {
        let n = self.ready_count(max);
        let (first, second) = self.shared.ring.runs(self.read, n);
        // SAFETY: the n items are written (ready_count, Acquire) and ours
        // until released; the chunk borrows the consumer mutably.
        unsafe { ReadChunk::new(first, second, self) }
    }

    /// Items claimed by producers and not yet popped (some may still be
    /// being written).
    pub fn len(&self) -> usize {
        self.shared.ring.len()
    }

    /// `true` when the next item is not ready.
    pub fn is_empty(&self) -> bool {
        !self.ready(self.read)
    }

    /// Capacity of the ring.
    pub fn capacity(&self) -> usize {
        self.shared.ring.capacity()
    }

    /// `true` once every producer has been dropped. Items may still be ready.
    pub fn is_abandoned(&self) -> bool {
        self.shared.producers.load(Ordering::Acquire) == 0
    }
}

#[cfg(not(loom))]
impl<T> ReleaseRead for Consumer<T> {
    fn release_read(&mut self, n: usize) {
        self.release(n);
    }
}

impl<T> Blocking for Consumer<T> {
    type Handle = Arc<Shared<T>>;

    fn waiter(&self) -> Waiter<Arc<Shared<T>>> {
        let shared = self.shared.clone();
        Waiter::new(self.wait, Sharing::ThisProcess, shared, |s| &s.not_empty)
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire load in Producer::is_abandoned.
        self.shared.consumer_gone.store(true, Ordering::Release);
        self.shared.not_full.notify(Sharing::ThisProcess);
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("mpsc::Consumer")
            .field("read_seq", &self.read)
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}
