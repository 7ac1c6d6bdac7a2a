//! Arrow `RecordBatch`es through the shared ring, as Arrow IPC messages in an
//! arena inside the segment.
//!
//! An Arrow ring is a shared-memory segment of kind
//! [`RingKind::Arrow`](crate::shm::RingKind): its slots hold [`Descriptor`]s
//! and beside them lies an arena, a FIFO byte ring. The producer encodes each
//! batch with arrow-ipc's `StreamEncoder` (the schema first, dictionary
//! batches when they appear or change, then the record batch), copies each
//! message into the arena with its body 64-byte aligned, and publishes one
//! descriptor per message. Batches whose columns are all booleans,
//! fixed-width primitives or Utf8/Binary (the schemas without nested types or
//! dictionaries) are written straight into the arena instead, in the bytes
//! `StreamEncoder` would write, without its per-message bookkeeping. The consumer decodes either into owned memory
//! ([`BatchConsumer::recv`]) or in place ([`BatchConsumer::recv_zero_copy`]):
//! then the batch's buffers point into the mapping, and its slot and arena
//! space are released when the last of them is dropped.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! // The arrow crates this API speaks, re-exported (arrow 60):
//! use laminar_ring::arrow::array::{Int64Array, RecordBatch};
//! use laminar_ring::arrow::schema::{DataType, Field, Schema};
//! use laminar_ring::arrow::{ArrowRingOptions, BatchConsumer, BatchProducer};
//!
//! let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
//! let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))])?;
//!
//! // Process A
//! let mut tx = BatchProducer::create("batches", &ArrowRingOptions::default())?;
//! tx.send(&batch)?;
//! tx.close()?;
//!
//! // Process B
//! let mut rx = BatchConsumer::open("batches", &ArrowRingOptions::default())?;
//! while let Some(leased) = rx.recv_zero_copy()? {
//!     println!("{} rows, buffers in shared memory", leased.num_rows());
//! } // end of stream
//! # Ok(()) }
//! ```
//!
//! # Leases
//!
//! A [`LeasedBatch`] pins its message's slot and arena bytes. Releases are
//! FIFO: a lease dropped early is held until every older one is dropped too.
//! A consumer reads at most [`ArrowRingOptions::max_leases`] messages ahead
//! of what it has released; `recv_zero_copy` past that returns
//! [`ArrowRingError::TooManyLeases`] when that many leases are alive, or
//! [`ArrowRingError::OldestLeaseHeld`] when the oldest lease holds back
//! later ones that were dropped (it does not block, since only the caller
//! can drop a lease).
//!
//! **Pinning hazard.** Any column, or slice of one, kept from a leased batch
//! keeps the whole message's arena space, and with FIFO release everything
//! after it (arrow-rs #10392 describes the same effect for IPC buffers).
//! Code you hand a batch to may keep a column too: arrow-ipc's stream
//! writer keeps the last dictionary column it wrote, keys included. Keep
//! leases short, or copy out what you keep with
//! [`LeasedBatch::to_owned_batch`], or use [`BatchConsumer::recv`].
//!
//! # End of a stream
//!
//! Each producer attachment is a *session*; its stream is its messages.
//! [`BatchProducer::close`] (or dropping it with nothing pending) ends the
//! session cleanly: the consumer receives everything, then `Ok(None)`. A
//! producer that dies, [`BatchProducer::abandon`]s, fails to `close`, or is
//! dropped with batches it cannot deliver ends it abandoned: the consumer
//! receives everything committed, then [`ArrowRingError::PeerGone`]. A clean
//! end always means that every batch the producer took is in the ring.
//!
//! Each session's end is a record in the ring's end log, after its last
//! message and before the next session's first: a consumer receives a
//! session's batches, then its end (`Ok(None)`, `PeerGone`, or
//! `ProducerFailed` with its reason), then the next session's batches, even
//! when the next producer attached before the consumer had drained the
//! previous session (`docs/FORMAT.md`, "End of stream and peer death").
//! After reporting an end, the next receive goes on with the next session,
//! or waits for it.
//!
//! So either side may start first, on a new ring or on one that already
//! carried streams: a consumer that attaches after a producer wrote
//! everything and closed still receives that stream and its end, and one
//! that attaches to a ring whose last stream ended and was fully consumed
//! waits for the next producer instead of ending at once. A producer that
//! died is reported dead for a session the consumer was reading (its
//! producer was alive when the consumer attached, it began later, or it
//! sent a message the consumer received), once.
//!
//! # Crash and restart
//!
//! A consumer that goes away (dropped, or killed) leaves every message it
//! had not released in the ring; the next one resumes at the first of them
//! (at-least-once). To decode them it replays the schema and dictionaries
//! they were sent with, which its predecessor saved in the segment as it
//! released messages (not as it read them: a zero-copy consumer reads ahead
//! of what it releases). Delta dictionaries are saved merged, so nothing is
//! applied twice. A consumer killed between any two of its stores, or a
//! producer killed between its own, leaves a state the next one resumes
//! from; `docs/FORMAT.md` lists them.
//!
//! # A hostile or broken producer
//!
//! Every descriptor is checked against the arena before any byte is read,
//! and messages are decoded with arrow's validation on and alignment
//! required, so a corrupt descriptor or message is an error naming its
//! sequence number, never a panic or an out-of-bounds read. (Record batches
//! of flat schemas take a faster check of the same strictness: booleans,
//! fixed-width primitives and Utf8/Binary columns; see `check.rs`.) `recv` decodes a
//! private copy. `recv_zero_copy` validates the bytes in place and then hands
//! out arrays over shared memory: a producer that *rewrites* a message after
//! publishing it could break the arrays' invariants behind the consumer's
//! back. Use `recv` when the producer is not trusted.

mod check;
mod decode;
mod encode;
mod fanin;
mod flat;
mod framing;
mod lease;
mod mismatch;
mod peek;
mod release;
mod resume;

use arrow_schema::{ArrowError, SchemaRef};
use bytemuck::{Pod, Zeroable};

pub use decode::BatchConsumer;
pub use encode::{BatchLoan, BatchProducer};
pub use fanin::{BatchFanIn, BatchFanInError};
pub use lease::LeasedBatch;
pub use mismatch::schema_difference;
pub use peek::stream_schema;
pub use resume::has_dictionary;

// The arrow-rs crates whose types this API takes and returns (arrow 60), so
// that a caller passes batches of the very same arrow version without
// naming it in its own Cargo.toml (as arrow-flight and datafusion do):
//
//     use laminar_ring::arrow::array::{Int64Array, RecordBatch};
//     use laminar_ring::arrow::schema::{DataType, Field, Schema};
#[doc(inline)]
pub use arrow_array as array;
#[doc(inline)]
pub use arrow_buffer as buffer;
#[doc(inline)]
pub use arrow_data as data;
#[doc(inline)]
pub use arrow_ipc as ipc;
#[doc(inline)]
pub use arrow_schema as schema;

use crate::shm::{OpenError, SegmentOptions};

/// One IPC message in the arena, as a slot holds it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct Descriptor {
    /// Arena position of the message's first byte (monotonic; the byte
    /// offset in the arena is `pos % arena_len`).
    pub pos: u64,
    /// Length of the message in bytes.
    pub len: u64,
    /// Arena position after the message and its padding: the arena is free
    /// up to here once this slot is released.
    pub end: u64,
    /// [`MSG_SCHEMA`], [`MSG_DICTIONARY`] or [`MSG_RECORD_BATCH`].
    pub kind: u32,
    /// Zero.
    pub reserved: u32,
}

impl crate::shm::ShmSlot for Descriptor {
    const TYPE_NAME: &'static str = "laminar_ring::arrow::Descriptor";
}

/// A schema message.
pub const MSG_SCHEMA: u32 = 1;
/// A dictionary batch message.
pub const MSG_DICTIONARY: u32 = 2;
/// A record batch message.
pub const MSG_RECORD_BATCH: u32 = 3;
/// Alignment of every message (and so of every message body) in the arena.
pub const ARENA_ALIGN: u64 = 64;

/// Geometry and behaviour of an Arrow ring.
#[derive(Debug, Clone)]
pub struct ArrowRingOptions {
    /// Descriptor slots (a power of two). Default 1024.
    pub slots: usize,
    /// Arena bytes. Default 64 MiB.
    pub arena_bytes: u64,
    /// Directory, mode and open timeout of the segment.
    pub segment: SegmentOptions,
    /// Most leased batches a consumer may hold at once. Default 64.
    pub max_leases: usize,
}

impl Default for ArrowRingOptions {
    fn default() -> Self {
        Self {
            slots: 1024,
            arena_bytes: 64 << 20,
            segment: SegmentOptions::default(),
            max_leases: 64,
        }
    }
}

/// Errors of the Arrow layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArrowRingError {
    /// Creating or attaching to the segment failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Encoding a batch failed.
    #[error("encoding a batch: {0}")]
    Encode(#[source] ArrowError),
    /// One message of the batch needs more than the ring's message area
    /// (the arena less the consumer's save area). Any message up to that
    /// size goes in once the consumer has drained the ring.
    #[error(
        "a message of this batch needs {needed} bytes, more than the {arena} bytes of the \
         ring's message area (its arena less the save area)"
    )]
    BatchTooLarge {
        /// Bytes of the largest message, with alignment.
        needed: u64,
        /// Bytes of the message area: the largest message that fits.
        arena: u64,
    },
    /// A batch or stream with another schema than expected. The message
    /// names the first difference ([`schema_difference`]); the fields hold
    /// both schemas whole.
    #[error("schema mismatch: {}", schema_difference(.expected, .found))]
    SchemaMismatch {
        /// The schema of the stream (or the one the consumer requires).
        expected: SchemaRef,
        /// The other one.
        found: SchemaRef,
    },
    /// A descriptor that does not describe a message inside the arena.
    #[error("slot {seq}: corrupt descriptor: {why}")]
    CorruptDescriptor {
        /// Sequence number of the slot.
        seq: u64,
        /// What is wrong.
        why: String,
    },
    /// A message that does not decode.
    #[error("slot {seq}: corrupt message: {source}")]
    CorruptMessage {
        /// Sequence number of the slot.
        seq: u64,
        /// The decoder's error.
        #[source]
        source: ArrowError,
    },
    /// The deadline passed (for `try_send`/`send_timeout`: earlier messages
    /// are still pending and the batch was not taken).
    #[error("timed out")]
    Timeout,
    /// The consumer is gone, and messages it did not release leave no room
    /// for the next one (a drained ring always has room for any message
    /// that fits its message area).
    #[error("the consumer is gone and the messages it did not release leave no room for the next")]
    ConsumerGone,
    /// The producer died; every batch it committed was delivered.
    #[error("the producer died; every committed batch was delivered")]
    PeerGone,
    /// The producer gave up with an error ([`BatchProducer::fail`]); every
    /// batch it committed was delivered.
    #[error("the producer failed: {reason}")]
    ProducerFailed {
        /// What the producer said (at most
        /// [`FAILURE_REASON_LEN`](crate::shm::header::FAILURE_REASON_LEN)
        /// bytes).
        reason: String,
    },
    /// The ring's end log holds a value no producer keeping the protocol
    /// writes: another process damaged the ring.
    #[error("damaged ring: {0}")]
    BadHeader(#[source] crate::shm::HeaderError),
    /// The producer dropped this consumer's subscription: it had no
    /// consumer attached for the ring's lag grace
    /// ([`Policy::Lag`](crate::shm::Policy::Lag)), and the producer
    /// overwrote `missed` messages it had not read. It is subscribed again
    /// at the oldest message the ring holds, and reads from the next
    /// producer session's schema on (the batches of a session under way
    /// cannot be decoded without the schema and dictionaries it missed).
    #[error(
        "this consumer was dropped while it was away: it missed {missed} messages, and reads on \
         from the next producer session"
    )]
    Lagged {
        /// Messages (schemas, dictionaries and batches) the producer
        /// overwrote before this consumer came back. The rest of the
        /// session under way, which it skips as it reads on, is not in the
        /// count: those messages may still be arriving when it is told.
        missed: u64,
    },
    /// `recv_zero_copy` with `max_leases` leased batches alive.
    #[error("{max} leased batches are alive; drop some (or copy them out) first")]
    TooManyLeases {
        /// The limit.
        max: usize,
    },
    /// `recv_zero_copy` with `max_leases` messages read and not released,
    /// fewer of them leases still alive: the oldest leased batch is alive
    /// (or an array or slice kept from it is), and since messages are
    /// released in order it holds back the ones after it, dropped or not.
    #[error(
        "the leased batch in slot {seq} (or an array or slice of it kept somewhere) is still \
         alive and holds back the release of {held_back} later messages already dropped; \
         drop it (or copy out what you keep)"
    )]
    OldestLeaseHeld {
        /// Sequence number of the oldest unreleased message.
        seq: u64,
        /// Messages read after it, done with, and waiting for it.
        held_back: usize,
    },
}

/// Splits an arena of `arena_len` bytes into the message ring (first) and
/// the consumer's save area (the last eighth, rounded down to 64 bytes),
/// where the consumer keeps the schema and dictionary messages it has
/// applied, so that a restarted consumer can decode what follows.
pub(crate) fn split_arena(arena_len: u64) -> (u64, u64) {
    let save = (arena_len / 8) & !(ARENA_ALIGN - 1);
    (arena_len - save, save)
}

/// The part of the save area (`save_len` bytes) that is cursor `cursor`'s
/// in a ring of `consumers` cursors: `(offset in the save area, length)`,
/// an equal share each, rounded down to 64 bytes.
pub(crate) fn save_share(save_len: u64, consumers: u32, cursor: u32) -> (u64, u64) {
    let share = (save_len / u64::from(consumers.max(1))) & !(ARENA_ALIGN - 1);
    (u64::from(cursor) * share, share)
}

/// Rounds `n` up to [`ARENA_ALIGN`].
fn align_up(n: u64) -> Option<u64> {
    Some(n.checked_add(ARENA_ALIGN - 1)? & !(ARENA_ALIGN - 1))
}

/// Creates the Arrow ring `name`, ready and empty, without attaching to it
/// (what `laminar-ring create` does): a producer and a consumer attach
/// later with `open`.
///
/// # Errors
///
/// [`ArrowRingError::Open`]: `AlreadyExists`, `Geometry`, I/O.
pub fn create(name: &str, opts: &ArrowRingOptions) -> Result<(), ArrowRingError> {
    crate::shm::Segment::create(name, encode::arrow_layout(opts)?, &opts.segment)?;
    Ok(())
}
