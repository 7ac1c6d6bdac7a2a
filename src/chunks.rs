//! Batch access to the slots: up to two contiguous runs per batch (the ring
//! may wrap in the middle), committed with one sequence store.
//!
//! Modelled on rtrb's `chunks.rs`: a [`WriteChunkUninit`] exposes free slots
//! as `MaybeUninit<T>` slices to fill in place; a [`ReadChunk`] exposes
//! published items as `&[T]` slices to read in place. Nothing is published or
//! released until `commit`; dropping a chunk without committing leaves the
//! ring as it was. Every chunk, the shared-memory ring's `ShmReadChunk` too,
//! is a [`Runs`] plus what its kind does with the slots.

use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

use crate::ring_buffer::Run;

/// What a write chunk tells its producer on commit.
pub(crate) trait CommitWritten {
    /// Publishes the next `n` written slots.
    fn commit_written(&mut self, n: usize);
}

/// What a read chunk tells its consumer on commit.
pub(crate) trait ReleaseRead {
    /// Releases the next `n` slots, whose values have been dropped or copied.
    fn release_read(&mut self, n: usize);
}

/// The shape every chunk shares: up to two runs of slots (two when the
/// chunk wraps around the end of the ring), lent by one side of a ring, and
/// that side, told on commit how many it may publish or release.
pub(crate) struct Runs<'a, T, S: ?Sized> {
    first: Run<T>,
    second: Run<T>,
    side: &'a mut S,
}

impl<'a, T, S: ?Sized> Runs<'a, T, S> {
    /// # Safety
    ///
    /// Both runs are slots that `side` lends to the chunk until it publishes
    /// or releases them, valid for `'a`, and together they are the next
    /// `first.1 + second.1` sequences of `side`.
    #[cfg_attr(loom, allow(dead_code))] // chunks are not built under loom
    pub(crate) unsafe fn new(first: Run<T>, second: Run<T>, side: &'a mut S) -> Self {
        Self {
            first,
            second,
            side,
        }
    }

    /// Number of slots.
    pub(crate) fn len(&self) -> usize {
        self.first.1 + self.second.1
    }

    /// Pointer to slot `i` (0 is the oldest), or `None` past the end.
    #[cfg_attr(any(loom, not(target_os = "linux")), allow(dead_code))] // shm only
    pub(crate) fn ptr(&self, i: usize) -> Option<*mut T> {
        if i < self.first.1 {
            // SAFETY: i is inside the first run (pointer arithmetic only).
            Some(unsafe { self.first.0.add(i) })
        } else if i < self.len() {
            // SAFETY: i - first.1 is inside the second run.
            Some(unsafe { self.second.0.add(i - self.first.1) })
        } else {
            None
        }
    }

    /// The runs as slices.
    ///
    /// # Safety
    ///
    /// Every slot holds a valid `T`, and nothing writes the slots while the
    /// slices live.
    pub(crate) unsafe fn slices(&self) -> (&[T], &[T]) {
        // SAFETY: the runs are valid, aligned slots lent to this chunk; the
        // rest is the caller's promise.
        unsafe {
            (
                std::slice::from_raw_parts(self.first.0, self.first.1),
                std::slice::from_raw_parts(self.second.0, self.second.1),
            )
        }
    }

    /// The runs as slices of possibly uninitialised slots.
    ///
    /// # Safety
    ///
    /// Nothing else reads or writes the slots while the slices live.
    pub(crate) unsafe fn uninit_slices_mut(
        &mut self,
    ) -> (&mut [MaybeUninit<T>], &mut [MaybeUninit<T>]) {
        // SAFETY: the runs are valid, aligned slots lent to this chunk, and
        // MaybeUninit<T> has T's layout and is valid uninitialised; `&mut
        // self` and the caller's promise make these the only access.
        unsafe {
            (
                std::slice::from_raw_parts_mut(self.first.0.cast(), self.first.1),
                std::slice::from_raw_parts_mut(self.second.0.cast(), self.second.1),
            )
        }
    }

    /// The first `n` slots as two runs, and the side to tell about them.
    ///
    /// # Panics
    ///
    /// If `n > self.len()` (`slot` names the unit in the message).
    pub(crate) fn commit(self, n: usize, slot: &str) -> (Run<T>, Run<T>, &'a mut S) {
        let len = self.len();
        assert!(n <= len, "commit({n}) of a {len}-{slot} chunk");
        let in_first = n.min(self.first.1);
        (
            (self.first.0, in_first),
            (self.second.0, n - in_first),
            self.side,
        )
    }

    /// `Debug` of a chunk called `name`.
    pub(crate) fn debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// Free slots of a ring, to be written in place and then published.
///
/// Obtained from [`spsc::Producer::write_chunk_uninit`](crate::spsc::Producer::write_chunk_uninit).
pub struct WriteChunkUninit<'a, T> {
    runs: Runs<'a, T, dyn CommitWritten + 'a>,
    _slots: PhantomData<&'a mut [MaybeUninit<T>]>,
}

impl<'a, T> WriteChunkUninit<'a, T> {
    /// # Safety
    ///
    /// Both runs are free slots owned by `producer` until it publishes them,
    /// valid for the chunk's lifetime, and together they are the next
    /// `first.1 + second.1` sequences.
    #[cfg_attr(loom, allow(dead_code))] // chunks are not built under loom
    pub(crate) unsafe fn new(
        first: Run<T>,
        second: Run<T>,
        producer: &'a mut dyn CommitWritten,
    ) -> Self {
        Self {
            // SAFETY: the caller's promise is Runs::new's.
            runs: unsafe { Runs::new(first, second, producer) },
            _slots: PhantomData,
        }
    }

    /// Number of slots in the chunk.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// `true` when the ring had no free slot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The free slots in order: the second run is non-empty when the chunk
    /// wraps around the end of the ring.
    pub fn as_mut_slices(&mut self) -> (&mut [MaybeUninit<T>], &mut [MaybeUninit<T>]) {
        // SAFETY: the runs are free slots that this chunk owns exclusively
        // (it borrows the producer mutably).
        unsafe { self.runs.uninit_slices_mut() }
    }

    /// Publishes the first `n` slots to the consumer with one store.
    ///
    /// # Safety
    ///
    /// The first `n` slots (in the order of `as_mut_slices`) have been
    /// initialised.
    ///
    /// # Panics
    ///
    /// If `n > self.len()`.
    pub unsafe fn commit(self, n: usize) {
        let (_, _, producer) = self.runs.commit(n, "slot");
        if n > 0 {
            producer.commit_written(n);
        }
    }

    /// Fills the chunk from `iter` and publishes what it wrote; returns the
    /// count. Stops early when the iterator ends.
    pub fn fill_from_iter<I: IntoIterator<Item = T>>(mut self, iter: I) -> usize {
        let mut iter = iter.into_iter();
        let mut n = 0;
        let (a, b) = self.as_mut_slices();
        // One plain loop per run, not a chained iterator: a chain tests
        // which run it is in on every slot, which keeps the compiler from
        // turning a loop over a range into wide stores.
        'runs: for run in [a, b] {
            for slot in run {
                let Some(v) = iter.next() else { break 'runs };
                slot.write(v);
                n += 1;
            }
        }
        // SAFETY: exactly the first `n` slots were written above.
        unsafe { self.commit(n) };
        n
    }
}

/// Published items of a ring, to be read in place and then released.
///
/// Obtained from [`spsc::Consumer::read_chunk`](crate::spsc::Consumer::read_chunk)
/// or [`mpsc::Consumer::read_chunk`](crate::mpsc::Consumer::read_chunk).
pub struct ReadChunk<'a, T> {
    runs: Runs<'a, T, dyn ReleaseRead + 'a>,
    _items: PhantomData<&'a mut [T]>,
}

impl<'a, T> ReadChunk<'a, T> {
    /// # Safety
    ///
    /// Both runs are published, unread items owned by `consumer` until it
    /// releases them, valid for the chunk's lifetime, and together they are
    /// the next `first.1 + second.1` sequences.
    #[cfg_attr(loom, allow(dead_code))] // chunks are not built under loom
    pub(crate) unsafe fn new(
        first: Run<T>,
        second: Run<T>,
        consumer: &'a mut dyn ReleaseRead,
    ) -> Self {
        Self {
            // SAFETY: the caller's promise is Runs::new's.
            runs: unsafe { Runs::new(first, second, consumer) },
            _items: PhantomData,
        }
    }

    /// Number of items in the chunk.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// `true` when there was nothing to read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The items in FIFO order, as two runs (the second is non-empty when the
    /// chunk wraps around the end of the ring).
    pub fn as_slices(&self) -> (&[T], &[T]) {
        // SAFETY: the runs are initialised items that no one else touches
        // until this chunk releases them.
        unsafe { self.runs.slices() }
    }

    /// Drops the first `n` items and releases their slots with one store.
    ///
    /// # Panics
    ///
    /// If `n > self.len()`.
    pub fn commit(self, n: usize) {
        let (first, second, consumer) = self.runs.commit(n, "item");
        if n == 0 {
            return;
        }
        /// Releases the slots even if a value's `Drop` panics, so that no
        /// value is dropped twice (a panicking run leaks the rest instead).
        struct Release<'b>(&'b mut dyn ReleaseRead, usize);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.release_read(self.1);
            }
        }
        let guard = Release(consumer, n);
        // SAFETY: the first `n` items are initialised, owned by us, and
        // dropped exactly once here; the guard then releases their slots.
        unsafe {
            std::ptr::slice_from_raw_parts_mut(first.0, first.1).drop_in_place();
            std::ptr::slice_from_raw_parts_mut(second.0, second.1).drop_in_place();
        }
        drop(guard);
    }

    /// Drops every item of the chunk and releases their slots.
    pub fn commit_all(self) {
        let n = self.len();
        self.commit(n);
    }
}

impl<T> fmt::Debug for WriteChunkUninit<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.runs.debug("WriteChunkUninit", f)
    }
}

impl<T> fmt::Debug for ReadChunk<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.runs.debug("ReadChunk", f)
    }
}
