//! Batch access to the slots: up to two contiguous runs per batch (the ring
//! may wrap in the middle), committed with one sequence store.
//!
//! Modelled on rtrb's `chunks.rs`: a [`WriteChunkUninit`] exposes free slots
//! as `MaybeUninit<T>` slices to fill in place; a [`ReadChunk`] exposes
//! published items as `&[T]` slices to read in place. Nothing is published or
//! released until `commit`; dropping a chunk without committing leaves the
//! ring as it was.

use std::marker::PhantomData;
use std::mem::MaybeUninit;

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

/// Free slots of a ring, to be written in place and then published.
///
/// Obtained from [`spsc::Producer::write_chunk_uninit`](crate::spsc::Producer::write_chunk_uninit).
pub struct WriteChunkUninit<'a, T> {
    first: (*mut T, usize),
    second: (*mut T, usize),
    producer: &'a mut dyn CommitWritten,
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
        first: (*mut T, usize),
        second: (*mut T, usize),
        producer: &'a mut dyn CommitWritten,
    ) -> Self {
        Self {
            first,
            second,
            producer,
            _slots: PhantomData,
        }
    }

    /// Number of slots in the chunk.
    pub fn len(&self) -> usize {
        self.first.1 + self.second.1
    }

    /// `true` when the ring had no free slot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The free slots in order: the second run is non-empty when the chunk
    /// wraps around the end of the ring.
    pub fn as_mut_slices(&mut self) -> (&mut [MaybeUninit<T>], &mut [MaybeUninit<T>]) {
        // SAFETY: the runs are free slots that this chunk owns exclusively
        // (it borrows the producer mutably); MaybeUninit<T> has T's layout and
        // needs no initialisation.
        unsafe {
            (
                std::slice::from_raw_parts_mut(self.first.0.cast(), self.first.1),
                std::slice::from_raw_parts_mut(self.second.0.cast(), self.second.1),
            )
        }
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
        assert!(
            n <= self.len(),
            "commit({n}) of a {}-slot chunk",
            self.len()
        );
        if n > 0 {
            self.producer.commit_written(n);
        }
    }

    /// Fills the chunk from `iter` and publishes what it wrote; returns the
    /// count. Stops early when the iterator ends.
    pub fn fill_from_iter<I: IntoIterator<Item = T>>(mut self, iter: I) -> usize {
        let mut iter = iter.into_iter();
        let mut n = 0;
        let (a, b) = self.as_mut_slices();
        for slot in a.iter_mut().chain(b.iter_mut()) {
            let Some(v) = iter.next() else { break };
            slot.write(v);
            n += 1;
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
    first: (*mut T, usize),
    second: (*mut T, usize),
    consumer: &'a mut dyn ReleaseRead,
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
        first: (*mut T, usize),
        second: (*mut T, usize),
        consumer: &'a mut dyn ReleaseRead,
    ) -> Self {
        Self {
            first,
            second,
            consumer,
            _items: PhantomData,
        }
    }

    /// Number of items in the chunk.
    pub fn len(&self) -> usize {
        self.first.1 + self.second.1
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
        unsafe {
            (
                std::slice::from_raw_parts(self.first.0, self.first.1),
                std::slice::from_raw_parts(self.second.0, self.second.1),
            )
        }
    }

    /// Drops the first `n` items and releases their slots with one store.
    ///
    /// # Panics
    ///
    /// If `n > self.len()`.
    pub fn commit(self, n: usize) {
        assert!(
            n <= self.len(),
            "commit({n}) of a {}-item chunk",
            self.len()
        );
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
        let in_first = n.min(self.first.1);
        let guard = Release(self.consumer, n);
        // SAFETY: the first `n` items are initialised, owned by us, and
        // dropped exactly once here; the guard then releases their slots.
        unsafe {
            std::ptr::slice_from_raw_parts_mut(self.first.0, in_first).drop_in_place();
            std::ptr::slice_from_raw_parts_mut(self.second.0, n - in_first).drop_in_place();
        }
        drop(guard);
    }

    /// Drops every item of the chunk and releases their slots.
    pub fn commit_all(self) {
        let n = self.len();
        self.commit(n);
    }
}

impl<T> std::fmt::Debug for WriteChunkUninit<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteChunkUninit")
            .field("len", &(self.first.1 + self.second.1))
            .finish_non_exhaustive()
    }
}

impl<T> std::fmt::Debug for ReadChunk<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadChunk")
            .field("len", &(self.first.1 + self.second.1))
            .finish_non_exhaustive()
    }
}
