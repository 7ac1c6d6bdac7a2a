//! [`ShmReadChunk`]: published items of a shared-memory ring, copied out one
//! by one and released together.

use std::marker::PhantomData;

use crate::chunks::{ReleaseRead, Runs};
use crate::ring_buffer::Run;
use crate::sync::{AtomicU32, AtomicU64, Ordering};

use super::slot::ShmSlot;

/// What a chunk of a ring with a lag bound checks at its commit.
#[derive(Clone, Copy)]
pub(crate) struct Lap<'a> {
    /// The producer's `tail_seq`.
    pub(crate) tail: &'a AtomicU64,
    /// The consumer's cursor's subscription word.
    pub(crate) subscription: &'a AtomicU32,
    /// The chunk's first sequence.
    pub(crate) first: u64,
    /// Stored `first` when the commit found the chunk overwritten.
    pub(crate) lapped_at: &'a AtomicU64,
}

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
/// It has the shape of [`ReadChunk`](crate::ReadChunk) (both are a
/// `chunks::Runs` of published items, released by one store on commit) but
/// is a type of its own, because the two promise different things: a
/// `ReadChunk` lends `&[T]` from safe code and drops the items it commits,
/// while this one lends nothing from safe code (the slots are memory that
/// another process may write) and has nothing to drop (`T` is plain data).
///
/// The slices of the old API are now `unsafe`:
///
/// ```compile_fail,E0133
/// # fn f(rx: &mut laminar_ring::shm::ShmConsumer<u64>) {
/// let chunk = rx.read_chunk(8).unwrap();
/// let (a, b) = chunk.as_slices();
/// # }
/// ```
pub struct ShmReadChunk<'a, T> {
    runs: Runs<'a, T, dyn ReleaseRead + 'a>,
    /// In a ring with a lag bound: the producer's `tail_seq`, the chunk's
    /// first sequence ([`intact`](Self::intact)), and where to say that the
    /// commit found the chunk overwritten (the consumer's word).
    lap: Option<Lap<'a>>,
    _items: PhantomData<&'a [T]>,
}

impl<'a, T: ShmSlot> ShmReadChunk<'a, T> {
    /// # Safety
    ///
    /// Both runs are published, unread slots owned by `consumer` until it
    /// releases them, valid for the chunk's lifetime, and together they are
    /// the next `first.1 + second.1` sequences. With `lap`, they start at
    /// its sequence and its atomic is the ring's `tail_seq`.
    pub(crate) unsafe fn new(
        first: Run<T>,
        second: Run<T>,
        consumer: &'a mut dyn ReleaseRead,
        lap: Option<Lap<'a>>,
    ) -> Self {
        Self {
            // SAFETY: the caller's promise is Runs::new's.
            runs: unsafe { Runs::new(first, second, consumer) },
            lap,
            _items: PhantomData,
        }
    }

    /// Whether every item of the chunk is still what was published: always
    /// in a ring without a lag bound. In a ring with one
    /// ([`Policy::Lag`](super::Policy::Lag)), the producer may drop a
    /// consumer that falls the bound behind and overwrite the items it
    /// holds, this chunk's among them: check `intact()` after reading the
    /// items and before acting on them (a seqlock's check). A commit makes
    /// the check too: it releases nothing of a chunk found overwritten, and
    /// the consumer's next call reports the loss
    /// (`ShmTryPopError::Lagged`).
    #[inline]
    pub fn intact(&self) -> bool {
        self.lap
            .is_none_or(|lap| crate::fanout::copies_intact(lap.tail, lap.subscription, lap.first))
    }

    /// Number of items in the chunk.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// `true` when there was nothing to read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of item `i` (0 is the oldest), or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        let p = self.runs.ptr(i)?;
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
    ///
    /// In a ring with a lag bound ([`Policy::Lag`](super::Policy::Lag)),
    /// the producer keeping the protocol may overwrite a consumer's
    /// unreleased slots once it has dropped that consumer: there the
    /// caller must also know that this consumer cannot be dropped while the
    /// slices live (it stays less than the bound behind), or not use them.
    pub unsafe fn as_slices(&self) -> (&[T], &[T]) {
        // SAFETY: published, unread, aligned slots the borrowed consumer
        // keeps unreleased; any bytes are a T; no writer meanwhile: caller.
        unsafe { self.runs.slices() }
    }

    /// Releases the first `n` items with one store.
    ///
    /// # Panics
    ///
    /// If `n > self.len()`.
    #[inline]
    pub fn commit(self, n: usize) {
        let intact = self.intact();
        let lap = self.lap;
        let (_, _, consumer) = self.runs.commit(n, "item");
        if let Some(lap) = lap.filter(|_| n > 0 && !intact) {
            // Relaxed: the consumer's own word, read by it after this
            // borrow ends.
            lap.lapped_at.store(lap.first, Ordering::Relaxed);
            return;
        }
        if n > 0 {
            // Pod values need no drop: releasing is all there is to do.
            consumer.release_read(n);
        }
    }

    /// Releases every item of the chunk.
    #[inline]
    pub fn commit_all(self) {
        let n = self.len();
        self.commit(n);
    }
}

impl<T> std::fmt::Debug for ShmReadChunk<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.runs.debug("ShmReadChunk", f)
    }
}
