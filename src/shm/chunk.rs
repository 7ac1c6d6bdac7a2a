//! [`ShmReadChunk`]: published items of a shared-memory ring, copied out one
//! by one and released together.

use std::marker::PhantomData;

use crate::chunks::ReleaseRead;

use super::slot::ShmSlot;

/// Published items of a shared-memory ring, to be read and then released
/// with one store by [`commit`](Self::commit); nothing is released until
/// then, so a consumer killed before it commits gets the same items again
/// after a restart.
///
/// Items are copied out ([`get`](Self::get), [`iter`](Self::iter)) with a
/// volatile read each, because the slots are memory the producer's process
/// maps: safe code gets values, never a reference that another process's
/// writes could race with (see [`as_slices`](Self::as_slices)).
///
/// Obtained from [`ShmConsumer::read_chunk`](super::ShmConsumer::read_chunk).
///
/// The slices of the old API are now `unsafe`:
///
/// ```compile_fail,E0133
/// # fn f(rx: &mut laminar_ring::shm::ShmConsumer<u64>) {
/// let chunk = rx.read_chunk(8);
/// let (a, b) = chunk.as_slices();
/// # }
/// ```
pub struct ShmReadChunk<'a, T> {
    first: (*const T, usize),
    second: (*const T, usize),
    consumer: &'a mut dyn ReleaseRead,
    _items: PhantomData<&'a [T]>,
}

impl<'a, T: ShmSlot> ShmReadChunk<'a, T> {
    /// # Safety
    ///
    /// Both runs are published, unread slots owned by `consumer` until it
    /// releases them, valid for the chunk's lifetime, and together they are
    /// the next `first.1 + second.1` sequences.
    pub(crate) unsafe fn new(
        first: (*mut T, usize),
        second: (*mut T, usize),
        consumer: &'a mut dyn ReleaseRead,
    ) -> Self {
        Self {
            first: (first.0.cast_const(), first.1),
            second: (second.0.cast_const(), second.1),
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

    /// A copy of item `i` (0 is the oldest), or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        let p = if i < self.first.1 {
            // SAFETY: i is inside the first run (pointer arithmetic only).
            unsafe { self.first.0.add(i) }
        } else if i < self.len() {
            // SAFETY: i - first.1 is inside the second run.
            unsafe { self.second.0.add(i - self.first.1) }
        } else {
            return None;
        };
        // A producer that broke the protocol and wrote the slot now could
        // make this a data race in Rust's model, but not read anything other
        // than some bytes of the slot (see the typed module's docs).
        // SAFETY: `p` is an aligned, published slot in the mapping, which the
        // borrowed consumer keeps alive and unreleased; any bytes are a T.
        Some(unsafe { p.read_volatile() })
    }

    /// Copies of the items, oldest first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = T> + '_ {
        (0..self.len()).map(|i| self.get(i).expect("i < len"))
    }

    /// The items in place, as two runs (the second is non-empty when the
    /// chunk wraps around the end of the ring), without copying.
    ///
    /// # Safety
    ///
    /// The slices cover memory that the producer's process maps and can
    /// write. The caller trusts that process to keep the protocol: to write
    /// no slot that is published and not yet released, for as long as the
    /// slices live. A process that breaks this (a bug, or a user that the
    /// segment's permissions let write it) races with reads through the
    /// slices, which is undefined behaviour in Rust's model. Prefer
    /// [`get`](Self::get) and [`iter`](Self::iter), which copy.
    pub unsafe fn as_slices(&self) -> (&[T], &[T]) {
        // SAFETY: the runs are published, unread, aligned slots kept alive
        // and unreleased by the borrowed consumer; that no one writes them
        // while the slices live is the caller's promise.
        unsafe {
            (
                std::slice::from_raw_parts(self.first.0, self.first.1),
                std::slice::from_raw_parts(self.second.0, self.second.1),
            )
        }
    }

    /// Releases the first `n` items with one store.
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
        if n > 0 {
            // Pod values need no drop: releasing is all there is to do.
            self.consumer.release_read(n);
        }
    }

    /// Releases every item of the chunk.
    pub fn commit_all(self) {
        let n = self.len();
        self.commit(n);
    }
}

impl<T> std::fmt::Debug for ShmReadChunk<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmReadChunk")
            .field("len", &(self.first.1 + self.second.1))
            .finish_non_exhaustive()
    }
}
