//! Single-producer, single-consumer channel over a [`RingBuffer`].
//!
//! [`channel`] returns a [`Producer`] and a [`Consumer`]; each may move to
//! its own thread. The protocol (cached positions, one Release store per item
//! or per batch) lives in the crate-private `protocol` module and is the same code
//! that runs over a shared-memory segment.
//!
//! # Examples
//!
//! ```
//! use laminar_ring::spsc;
//!
//! let (mut tx, mut rx) = spsc::channel::<u64>(1024);
//! let producer = std::thread::spawn(move || {
//!     for i in 0..10_000 {
//!         tx.push(i).unwrap(); // blocks while the ring is full
//!     }
//! }); // dropping `tx` disconnects
//! let mut expected = 0;
//! while let Ok(v) = rx.pop() {
//!     assert_eq!(v, expected);
//!     expected += 1;
//! }
//! assert_eq!(expected, 10_000);
//! producer.join().unwrap();
//! ```
//!
//! # Disconnection
//!
//! Dropping the [`Producer`] disconnects it: the consumer still drains every
//! item that was pushed, and only then gets [`TryPopError::Disconnected`] /
//! [`PopError::Disconnected`]. Dropping the [`Consumer`] makes `try_push` and
//! `push` fail with `Disconnected(value)`, handing the value back; the batch
//! calls do not check (see [`Producer::is_abandoned`]). Items left in the ring
//! are dropped with it, exactly once.
//!
//! # Blocking
//!
//! `push`/`pop` and their `_timeout` forms wait with the channel's
//! [`WaitStrategy`] ([`channel_with`]); see [`wait`](crate::wait) for what
//! each costs.
//!
//! # Batches
//!
//! [`Producer::push_slice`], [`Producer::push_iter`], [`Consumer::pop_slice`]
//! and [`Consumer::pop_into`] move many items with one sequence store;
//! [`Producer::write_chunk_uninit`] and [`Consumer::read_chunk`] expose the
//! slots themselves as up to two contiguous slices.

use std::fmt;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

#[cfg(not(loom))]
use crate::chunks::{ReadChunk, WriteChunkUninit};
use crate::error::{
    CapacityError, PopError, PopTimeoutError, PushError, PushTimeoutError, TryPopError,
    TryPushError,
};
use crate::protocol::{ConsumerCore, ProducerCore};
use crate::ring_buffer::{RingBuffer, SlotRing};
use crate::sync::{Arc, AtomicBool, AtomicU64, Ordering};
use crate::wait::{Blocking, Sharing, WaitCell, WaitStrategy, Waiter, retry_until};

/// State shared by the two halves: the ring, disconnection flags and the
/// cells where a parked side sleeps.
pub(crate) struct Shared<T> {
    ring: RingBuffer<T>,
    /// Written once each, read on every push (`consumer_gone`): their own
    /// line, so that they stay shared in both caches.
    gone: CachePadded<Gone>,
    /// The consumer sleeps here when the ring is empty.
    not_empty: CachePadded<WaitCell>,
    /// The producer sleeps here when the ring is full.
    not_full: CachePadded<WaitCell>,
    /// Whether either side may park, so publishes must look for sleepers.
    parking: bool,
}

struct Gone {
    producer: AtomicBool,
    consumer: AtomicBool,
}

// SAFETY: every method forwards to the RingBuffer, which upholds the contract.
unsafe impl<T> SlotRing for Shared<T> {
    type Item = T;
    const TRUSTED: bool = true;

    #[inline(always)]
    fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    #[inline(always)]
    fn write_seq_atomic(&self) -> &AtomicU64 {
        self.ring.write_seq_atomic()
    }

    #[inline(always)]
    fn read_seq_atomic(&self) -> &AtomicU64 {
        self.ring.read_seq_atomic()
    }

    #[inline(always)]
    unsafe fn slot_ptr(&self, seq: u64) -> *mut T {
        // SAFETY: requirements forwarded to the caller.
        unsafe { self.ring.slot_ptr(seq) }
    }

    #[inline(always)]
    unsafe fn write_slot(&self, seq: u64, value: T) {
        // SAFETY: requirements forwarded to the caller.
        unsafe { self.ring.write_slot(seq, value) }
    }

    #[inline(always)]
    unsafe fn read_slot(&self, seq: u64) -> T {
        // SAFETY: requirements forwarded to the caller.
        unsafe { self.ring.read_slot(seq) }
    }

    #[inline(always)]
    fn wakes(&self) -> bool {
        self.parking
    }

    #[inline(always)]
    fn on_publish(&self) {
        self.not_empty.notify(Sharing::ThisProcess);
    }

    #[inline(always)]
    fn on_release(&self) {
        self.not_full.notify(Sharing::ThisProcess);
    }
}

/// Creates a channel with `capacity` slots and the default wait strategy
/// ([`WaitStrategy::SpinYield`]).
///
/// # Panics
///
/// If `capacity` is zero or not a power of two (see [`channel_with`] for a
/// fallible form).
///
/// # Examples
///
/// ```
/// let (mut tx, mut rx) = laminar_ring::spsc::channel::<&str>(2);
/// tx.try_push("a").unwrap();
/// assert_eq!(rx.try_pop(), Ok("a"));
/// ```
pub fn channel<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    match channel_with(capacity, WaitStrategy::default()) {
        Ok(halves) => halves,
        Err(e) => panic!("spsc::channel: {e}"),
    }
}

/// Creates a channel whose blocking calls wait with `wait`.
///
/// # Errors
///
/// [`CapacityError`] if `capacity` is zero or not a power of two.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use laminar_ring::{WaitStrategy, spsc};
/// use std::time::Duration;
///
/// let (_tx, mut rx) = spsc::channel_with::<u32>(64, WaitStrategy::Park)?;
/// // Sleeps in the kernel, not on a core, until the timeout.
/// assert!(rx.pop_timeout(Duration::from_millis(5)).is_err());
/// # Ok(()) }
/// ```
pub fn channel_with<T>(
    capacity: usize,
    wait: WaitStrategy,
) -> Result<(Producer<T>, Consumer<T>), CapacityError> {
    let shared = Arc::new(Shared {
        ring: RingBuffer::try_new(capacity)?,
        gone: CachePadded::new(Gone {
            producer: AtomicBool::new(false),
            consumer: AtomicBool::new(false),
        }),
        not_empty: CachePadded::new(WaitCell::new()),
        not_full: CachePadded::new(WaitCell::new()),
        parking: wait == WaitStrategy::Park,
    });
    let producer = Producer {
        core: ProducerCore::new(shared.clone()),
        wait,
    };
    let consumer = Consumer {
        core: ConsumerCore::new(shared),
        wait,
    };
    Ok((producer, consumer))
}

/// The sending half of an SPSC channel.
pub struct Producer<T> {
    core: ProducerCore<Arc<Shared<T>>>,
    wait: WaitStrategy,
}

impl<T> Producer<T> {
    #[inline(always)]
    fn shared(&self) -> &Shared<T> {
        self.core.handle()
    }

    /// Pushes `value` if there is a free slot.
    ///
    /// # Errors
    ///
    /// [`TryPushError::Full`] when the ring is full, [`TryPushError::Disconnected`]
    /// when the consumer is gone; both hand `value` back.
    ///
    /// # Examples
    ///
    /// ```
    /// use laminar_ring::{TryPushError, spsc};
    /// let (mut tx, rx) = spsc::channel(1);
    /// assert!(tx.try_push(1).is_ok());
    /// assert_eq!(tx.try_push(2), Err(TryPushError::Full(2)));
    /// drop(rx);
    /// assert_eq!(tx.try_push(3), Err(TryPushError::Disconnected(3)));
    /// ```
    #[inline(always)]
    pub fn try_push(&mut self, value: T) -> Result<(), TryPushError<T>> {
        // Relaxed: the flag carries no data; a push that races with the
        // consumer's drop is dropped with the ring, like any unread item.
        if self.shared().gone.consumer.load(Ordering::Relaxed) {
            return Err(TryPushError::Disconnected(value));
        }
        self.core.try_push(value).map_err(TryPushError::Full)
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
    /// [`PushTimeoutError::Timeout`] or [`PushTimeoutError::Disconnected`],
    /// with the value.
    pub fn push_timeout(&mut self, value: T, timeout: Duration) -> Result<(), PushTimeoutError<T>> {
        let deadline = Instant::now().checked_add(timeout);
        retry_until(self, deadline, value, Self::try_push).map_err(TryPushError::into_timeout_error)
    }

    /// Pushes as many items of `items` as fit, with one publish; returns the
    /// count. Does not check for disconnection.
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut tx, mut rx) = laminar_ring::spsc::channel::<u8>(4);
    /// assert_eq!(tx.push_slice(&[1, 2, 3, 4, 5, 6]), 4);
    /// let mut buf = [0; 8];
    /// assert_eq!(rx.pop_slice(&mut buf), 4);
    /// assert_eq!(&buf[..4], &[1, 2, 3, 4]);
    /// ```
    pub fn push_slice(&mut self, items: &[T]) -> usize
    where
        T: Copy,
    {
        self.core.push_slice(items)
    }

    /// Pushes items taken from `iter` while there is room, with one publish;
    /// returns the count. Items that do not fit stay in the iterator. Does not
    /// check for disconnection.
    pub fn push_iter<I: Iterator<Item = T>>(&mut self, iter: &mut I) -> usize {
        self.core.push_iter(iter)
    }

    /// Up to `max` free slots as two `MaybeUninit` slices, to be written in
    /// place and published with one store by
    /// [`commit`](WriteChunkUninit::commit).
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut tx, mut rx) = laminar_ring::spsc::channel::<u32>(8);
    /// let chunk = tx.write_chunk_uninit(3);
    /// assert_eq!(chunk.fill_from_iter(10..), 3);
    /// let chunk = rx.read_chunk(8);
    /// assert_eq!(chunk.as_slices(), (&[10, 11, 12][..], &[][..]));
    /// chunk.commit_all();
    /// ```
    #[cfg(not(loom))]
    pub fn write_chunk_uninit(&mut self, max: usize) -> WriteChunkUninit<'_, T> {
        let (first, second) = self.core.free_runs(max);
        // SAFETY: free_runs returns free, unpublished slots of this producer,
        // the next sequences in order; the chunk borrows the producer mutably.
        unsafe { WriteChunkUninit::new(first, second, &mut self.core) }
    }

    /// Free slots right now (reloads the consumer's position if needed).
    pub fn slots(&mut self) -> usize {
        self.core.free(self.core.ring().capacity())
    }

    /// Capacity of the ring.
    pub fn capacity(&self) -> usize {
        self.core.ring().capacity()
    }

    /// `true` once the consumer has been dropped. A `true` is final.
    pub fn is_abandoned(&self) -> bool {
        self.shared().gone.consumer.load(Ordering::Acquire)
    }
}

impl<T> Blocking for Producer<T> {
    type Handle = Arc<Shared<T>>;

    fn waiter(&self) -> Waiter<Arc<Shared<T>>> {
        let shared = self.core.handle().clone();
        Waiter::new(self.wait, Sharing::ThisProcess, shared, |s| &s.not_full)
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire load in Consumer::try_pop, after
        // which the consumer's reload of write_seq sees our last publish.
        self.shared().gone.producer.store(true, Ordering::Release);
        self.shared().not_empty.notify(Sharing::ThisProcess);
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("spsc::Producer")
            .field("write_seq", &self.core.write_pos())
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

/// The receiving half of an SPSC channel.
pub struct Consumer<T> {
    core: ConsumerCore<Arc<Shared<T>>>,
    wait: WaitStrategy,
}

impl<T> Consumer<T> {
    #[inline(always)]
    fn shared(&self) -> &Shared<T> {
        self.core.handle()
    }

    /// Pops the oldest item if there is one.
    ///
    /// # Errors
    ///
    /// [`TryPopError::Empty`] when nothing is ready, [`TryPopError::Disconnected`]
    /// when the ring is empty and the producer is gone (never before every
    /// pushed item has been popped).
    #[inline(always)]
    pub fn try_pop(&mut self) -> Result<T, TryPopError> {
        match self.core.try_pop() {
            Some(v) => Ok(v),
            None => self.try_pop_empty(),
        }
    }

    /// The empty branch of [`try_pop`](Self::try_pop), out of line so that
    /// the common branch is small enough to inline into the caller's loop.
    #[cold]
    #[inline(never)]
    fn try_pop_empty(&mut self) -> Result<T, TryPopError> {
        // Acquire: pairs with the Release store in Producer::drop; the reload
        // of write_seq inside try_pop then sees the producer's last publish.
        if self.shared().gone.producer.load(Ordering::Acquire) {
            return self.core.try_pop().ok_or(TryPopError::Disconnected);
        }
        Err(TryPopError::Empty)
    }

    /// Pops the oldest item, waiting while the ring is empty.
    ///
    /// # Errors
    ///
    /// [`PopError::Disconnected`] once the ring is drained and the producer gone.
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

    /// Copies up to `out.len()` items into `out` with one release; returns the
    /// count (0 when empty, whether or not the producer is gone).
    pub fn pop_slice(&mut self, out: &mut [T]) -> usize
    where
        T: Copy,
    {
        self.core.pop_slice(out)
    }

    /// Moves up to `max` items to the end of `out` with one release; returns
    /// the count.
    ///
    /// # Examples
    ///
    /// ```
    /// let (mut tx, mut rx) = laminar_ring::spsc::channel::<String>(4);
    /// let mut words = ["a", "b", "c"].map(String::from).into_iter();
    /// assert_eq!(tx.push_iter(&mut words), 3);
    /// let mut out = Vec::new();
    /// assert_eq!(rx.pop_into(&mut out, 10), 3);
    /// assert_eq!(out, ["a", "b", "c"]);
    /// ```
    pub fn pop_into(&mut self, out: &mut Vec<T>, max: usize) -> usize {
        self.core.pop_into(out, max)
    }

    /// Up to `max` ready items as two slices, read in place and released with
    /// one store by [`commit`](ReadChunk::commit).
    #[cfg(not(loom))]
    pub fn read_chunk(&mut self, max: usize) -> ReadChunk<'_, T> {
        let (first, second) = self.core.ready_runs(max);
        // SAFETY: ready_runs returns published, unread items of this consumer,
        // the next sequences in order; the chunk borrows the consumer mutably.
        unsafe { ReadChunk::new(first, second, &mut self.core) }
    }

    /// Items ready to pop right now (reloads the producer's position if needed).
    pub fn len(&mut self) -> usize {
        self.core.available(self.core.ring().capacity())
    }

    /// `true` when nothing is ready right now. A `false` is stable (only this
    /// consumer removes items); a `true` may be outdated at once.
    pub fn is_empty(&mut self) -> bool {
        self.core.available(1) == 0
    }

    /// Capacity of the ring.
    pub fn capacity(&self) -> usize {
        self.core.ring().capacity()
    }

    /// `true` once the producer has been dropped. Items may still be ready.
    pub fn is_abandoned(&self) -> bool {
        self.shared().gone.producer.load(Ordering::Acquire)
    }
}

impl<T> Blocking for Consumer<T> {
    type Handle = Arc<Shared<T>>;

    fn waiter(&self) -> Waiter<Arc<Shared<T>>> {
        let shared = self.core.handle().clone();
        Waiter::new(self.wait, Sharing::ThisProcess, shared, |s| &s.not_empty)
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire load in Producer::is_abandoned (the
        // Relaxed check in try_push needs no data from us).
        self.shared().gone.consumer.store(true, Ordering::Release);
        self.shared().not_full.notify(Sharing::ThisProcess);
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("spsc::Consumer")
            .field("read_seq", &self.core.read_pos())
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn chunks_wrap_into_two_runs() {
        let (mut tx, mut rx) = channel::<u32>(4);
        assert_eq!(tx.push_slice(&[0, 1, 2]), 3);
        assert_eq!(rx.pop_slice(&mut [0; 3]), 3);
        // write position is 3: a 4-slot chunk is slot 3 then slots 0..3.
        let mut chunk = tx.write_chunk_uninit(10);
        assert_eq!(chunk.len(), 4);
        let (a, b) = chunk.as_mut_slices();
        assert_eq!((a.len(), b.len()), (1, 3));
        for (i, s) in a.iter_mut().chain(b.iter_mut()).enumerate() {
            s.write(100 + i as u32);
        }
        // SAFETY: all four slots were written above.
        unsafe { chunk.commit(4) };
        let chunk = rx.read_chunk(10);
        assert_eq!(chunk.as_slices(), (&[100][..], &[101, 102, 103][..]));
        chunk.commit(2);
        assert_eq!(rx.try_pop(), Ok(102));
        assert_eq!(rx.try_pop(), Ok(103));
        assert_eq!(rx.try_pop(), Err(TryPopError::Empty));
    }

    #[test]
    fn uncommitted_chunks_change_nothing() {
        let (mut tx, mut rx) = channel::<u32>(4);
        let _unused = tx.write_chunk_uninit(4);
        assert_eq!(rx.try_pop(), Err(TryPopError::Empty));
        tx.push_slice(&[1, 2]);
        let _unused = rx.read_chunk(4);
        assert_eq!(rx.len(), 2);
        assert_eq!(rx.try_pop(), Ok(1));
    }

    #[test]
    fn consumer_drains_after_producer_drop() {
        let (mut tx, mut rx) = channel::<u8>(8);
        tx.push_slice(&[1, 2, 3]);
        drop(tx);
        assert!(rx.is_abandoned());
        assert_eq!(rx.try_pop(), Ok(1));
        assert_eq!(rx.pop(), Ok(2));
        assert_eq!(rx.pop_timeout(Duration::from_secs(1)), Ok(3));
        assert_eq!(rx.try_pop(), Err(TryPopError::Disconnected));
        assert_eq!(rx.pop(), Err(PopError::Disconnected));
    }

    #[test]
    fn timeouts_hand_values_back() {
        for wait in [
            WaitStrategy::BusySpin,
            WaitStrategy::SpinYield,
            WaitStrategy::Park,
        ] {
            let (mut tx, mut rx) = channel_with::<u8>(1, wait).unwrap();
            tx.push(1).unwrap();
            let e = tx.push_timeout(2, Duration::from_millis(5));
            assert_eq!(e, Err(PushTimeoutError::Timeout(2)), "{wait:?}");
            assert_eq!(rx.pop(), Ok(1));
            let e = rx.pop_timeout(Duration::from_millis(5));
            assert_eq!(e, Err(PopTimeoutError::Timeout), "{wait:?}");
            drop(rx);
            assert_eq!(tx.push(3), Err(PushError::Disconnected(3)));
        }
    }

    #[test]
    fn a_parked_consumer_is_woken_by_a_push() {
        let (mut tx, mut rx) = channel_with::<u32>(4, WaitStrategy::Park).unwrap();
        let shared = rx.core.handle().clone();
        let t = std::thread::spawn(move || rx.pop());
        shared.not_empty.await_sleeper();
        tx.push(9).unwrap();
        assert_eq!(t.join().unwrap(), Ok(9));
    }

    #[test]
    fn a_parked_consumer_is_woken_by_the_producer_drop() {
        let (tx, mut rx) = channel_with::<u32>(4, WaitStrategy::Park).unwrap();
        let shared = rx.core.handle().clone();
        let t = std::thread::spawn(move || rx.pop());
        shared.not_empty.await_sleeper();
        drop(tx);
        assert_eq!(t.join().unwrap(), Err(PopError::Disconnected));
    }

    #[test]
    fn parked_producer_is_woken_by_consumer_drop() {
        let (mut tx, rx) = channel_with::<u8>(1, WaitStrategy::Park).unwrap();
        tx.push(1).unwrap();
        let shared = tx.core.handle().clone();
        let t = std::thread::spawn(move || tx.push(2));
        shared.not_full.await_sleeper();
        drop(rx);
        assert_eq!(t.join().unwrap(), Err(PushError::Disconnected(2)));
    }
}
