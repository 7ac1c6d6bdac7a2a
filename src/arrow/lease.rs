//! Leases: a batch decoded in place ([`LeasedBatch`]) keeps its message's
//! slot and arena bytes until the last of its buffers is dropped, and then
//! marks the message done in the [`LeaseBook`] it shares with its
//! consumer, which releases done messages in order (`release.rs`).

use std::collections::BTreeSet;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use arrow_array::{RecordBatch, make_array};
use arrow_buffer::Buffer;
use arrow_data::transform::MutableArrayData;
use arrow_schema::ArrowError;

use super::{ArrowRingError, Descriptor};
use crate::shm::MappedRing;

/// What leases share with their consumer: which sequences are done.
pub(super) struct LeaseBook {
    done: Mutex<BTreeSet<u64>>,
    /// Keeps the mapping alive while any leased buffer points into it, and
    /// lets a lease wake a consumer that sleeps waiting for room.
    pub(super) ring: Arc<MappedRing<Descriptor>>,
}

impl LeaseBook {
    /// An empty book for the consumer of `ring`.
    pub(super) fn new(ring: Arc<MappedRing<Descriptor>>) -> Self {
        Self {
            done: Mutex::new(BTreeSet::new()),
            ring,
        }
    }

    /// The sequences done with (leases dropped, copies decoded) and not
    /// yet released.
    pub(super) fn done(&self) -> MutexGuard<'_, BTreeSet<u64>> {
        self.done.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks message `seq` done with: it may be released.
    pub(super) fn mark_done(&self, seq: u64) {
        self.done().insert(seq);
    }

    /// Why the `read` messages from `first` on are read and not released,
    /// `max` being the limit: as many leases alive, or the oldest one alive
    /// and the rest dropped but held back (releases are in order).
    pub(super) fn limit_error(&self, first: u64, read: usize, max: usize) -> ArrowRingError {
        let done = self.done();
        let alive = (first..first + read as u64)
            .filter(|s| !done.contains(s))
            .count();
        if alive >= max {
            ArrowRingError::TooManyLeases { max }
        } else {
            ArrowRingError::OldestLeaseHeld {
                seq: first,
                held_back: read - alive,
            }
        }
    }
}

/// Owner of a leased message's memory: dropped when the last Arrow buffer
/// of the batch is dropped.
struct Lease {
    seq: u64,
    book: Arc<LeaseBook>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.book.mark_done(self.seq);
        // The consumer releases in FIFO order on its next call; wake it in
        // case it sleeps while a producer waits for this space.
        self.book.ring.wake_consumer();
    }
}

/// A buffer over the `len` bytes at `ptr`, message `seq`'s, that leases
/// them: the message is marked done in `book` when the buffer's last clone
/// (or slice) is dropped, and until then `book.ring` keeps the mapping
/// alive.
///
/// # Safety
///
/// `ptr..ptr + len` lies inside the mapping of `book.ring`, and message
/// `seq` stays unreleased (so the producer does not overwrite its bytes)
/// until it is marked done.
pub(super) unsafe fn leased_buffer(
    book: &Arc<LeaseBook>,
    seq: u64,
    ptr: *const u8,
    len: usize,
) -> Buffer {
    let lease = Arc::new(Lease {
        seq,
        book: book.clone(),
    });
    // SAFETY: in bounds and unreleased (the caller's contract), so non-null
    // and not overwritten until the lease drops; `lease` keeps the mapping
    // alive (through `book.ring`) for as long as any buffer refers to it.
    unsafe {
        let ptr = NonNull::new_unchecked(ptr.cast_mut());
        Buffer::from_custom_allocation(ptr, len, lease)
    }
}

/// A `RecordBatch` whose buffers point into the shared mapping. Its slot and
/// arena space are released when the last of its buffers is dropped (in
/// FIFO order with the other leases). Derefs to [`RecordBatch`].
///
/// A lease keeps the mapping, and with it the segment's file descriptor and
/// so the consumer role, alive: after the [`BatchConsumer`] is dropped, a
/// new consumer cannot attach (`RoleTaken`) until every lease is dropped
/// too, and a lease dropped after its consumer is never released, so the
/// next consumer receives that batch again (at-least-once). Drop leases (or
/// copy them out) before the consumer.
///
/// [`BatchConsumer`]: super::BatchConsumer
pub struct LeasedBatch {
    pub(super) batch: RecordBatch,
}

impl Deref for LeasedBatch {
    type Target = RecordBatch;
    fn deref(&self) -> &RecordBatch {
        &self.batch
    }
}

impl LeasedBatch {
    /// The batch, still leased: its buffers keep the lease alive.
    pub fn into_inner(self) -> RecordBatch {
        self.batch
    }

    /// A deep copy into process memory; the lease is dropped with `self`.
    ///
    /// # Errors
    ///
    /// Only if the copied arrays fail to form a batch (they cannot, short of
    /// a bug in arrow).
    pub fn to_owned_batch(&self) -> Result<RecordBatch, ArrowError> {
        let columns = self
            .batch
            .columns()
            .iter()
            .map(|c| {
                let data = c.to_data();
                let mut copy = MutableArrayData::new(vec![&data], false, data.len());
                copy.try_extend(0, 0, data.len())?;
                Ok(make_array(copy.freeze()))
            })
            .collect::<Result<_, ArrowError>>()?;
        RecordBatch::try_new(self.batch.schema(), columns)
    }
}

impl std::fmt::Debug for LeasedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeasedBatch")
            .field("num_rows", &self.batch.num_rows())
            .field("schema", &self.batch.schema())
            .finish_non_exhaustive()
    }
}
