//! The producing side: `RecordBatch` -> IPC messages in the arena.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_ipc::MetadataVersion;
use arrow_ipc::writer::{DictionaryHandling, IpcWriteOptions, StreamEncoder};
use arrow_schema::SchemaRef;

use super::flat::FlatEncoder;
use super::framing::{EncodedMessage, split_messages};
use super::{
    ARENA_ALIGN, ArrowRingError, ArrowRingOptions, Descriptor, MSG_RECORD_BATCH, align_up,
};
use crate::shm::header::{Layout, RingKind, fingerprint};
mod loan;
pub use loan::BatchLoan;

use crate::shm::{
    MAX_LANES, OpenError, Segment, ShmProducer, ShmPushError, join_lane, lane_name, lane_of,
};

/// Sends `RecordBatch`es through an Arrow ring.
pub struct BatchProducer {
    inner: ShmProducer<Descriptor>,
    arena: *mut u8,
    arena_len: u64,
    /// Arena position where the next message goes (monotonic).
    head: u64,
    /// A position below which the consumer has released every byte: the
    /// start of the oldest unreleased message, as last seen (it only grows).
    floor: u64,
    schema: Option<SchemaRef>,
    encoder: Option<StreamEncoder>,
    /// Messages encoded but not yet in the ring (a timed-out send).
    pending: VecDeque<EncodedMessage>,
    /// Send a dictionary that only grew as a delta.
    deltas: bool,
    /// For flat schemas: the encoder that writes record batch messages
    /// straight into the arena (flat.rs), and whether its stream's schema
    /// message went out.
    flat: Option<FlatEncoder>,
    flat_started: bool,
    /// The next arena position at which to look whether everything is
    /// released (see `drained_past`).
    next_rewind_check: u64,
    /// The columns of the last loan (loan.rs), kept to reuse.
    loan_slots: Vec<loan::Slot>,
}

// SAFETY: `arena` points into the mapping owned by `inner`, which moves with
// it; only this producer writes the free part of the arena.
unsafe impl Send for BatchProducer {}

pub(crate) fn arrow_layout(opts: &ArrowRingOptions) -> Result<Layout, OpenError> {
    crate::shm::check_consumers(opts.segment.max_consumers)?;
    crate::error::check_capacity(opts.slots as u64, crate::shm::header::MAX_CAPACITY)?;
    if opts.arena_bytes < 4096 || !opts.arena_bytes.is_multiple_of(ARENA_ALIGN) {
        return Err(OpenError::Geometry(format!(
            "arena of {} bytes: must be at least 4096 and a multiple of 64",
            opts.arena_bytes
        )));
    }
    let consumers = u64::from(opts.segment.max_consumers);
    if opts.arena_bytes / consumers < 4096 {
        return Err(OpenError::Geometry(format!(
            "arena of {} bytes for {consumers} consumers: each consumer's save area is a share \
             of the arena's last eighth, so the arena must be at least 4096 bytes per consumer \
             ({} here); use a larger arena or fewer consumers",
            opts.arena_bytes,
            4096 * consumers
        )));
    }
    Layout::plan(
        RingKind::Arrow,
        opts.slots as u64,
        size_of::<Descriptor>() as u64,
        align_of::<Descriptor>() as u32,
        fingerprint::<Descriptor>(),
        opts.arena_bytes,
        opts.segment.max_consumers,
    )
    .ok_or_else(|| OpenError::Geometry("ring size overflows".into()))
}

impl BatchProducer {
    /// Creates the Arrow ring `name` and attaches as its producer.
    ///
    /// # Errors
    ///
    /// [`ArrowRingError::Open`].
    pub fn create(name: &str, opts: &ArrowRingOptions) -> Result<Self, ArrowRingError> {
        let seg = Segment::create(name, arrow_layout(opts)?, &opts.segment)?;
        Self::attach(seg)
    }

    /// Attaches as the producer of the existing Arrow ring `name`.
    ///
    /// # Errors
    ///
    /// [`ArrowRingError::Open`] (`RoleTaken` when a live producer is attached).
    pub fn open(name: &str, opts: &ArrowRingOptions) -> Result<Self, ArrowRingError> {
        Self::attach(Segment::open(name, &opts.segment)?)
    }

    /// Joins the Arrow stream `name` as one of its producers, sending
    /// batches of `schema` only, so that several processes may produce
    /// into one stream at once: takes a lane of its own, as
    /// [`ShmProducer::join`] does (lane 0 made with `opts` if the stream
    /// does not exist; other lanes made as lane 0 is). Its batches reach a
    /// [`BatchFanIn`](super::BatchFanIn) in the order sent.
    ///
    /// Refused before taking a lane when a lane with a live producer
    /// carries another schema (as a consumer attaching now would decode
    /// it): the stream under way has one schema. A lane whose producer has
    /// gone does not count, so that a stream may follow one that ended
    /// with another schema (a consumer that requires one schema, such as
    /// `laminar-ring consume`, refuses it). Two producers with different
    /// schemas joining at the same instant may both pass this check; the
    /// consumer then refuses the second schema it meets
    /// (`SchemaMismatch`, naming the lane).
    ///
    /// # Errors
    ///
    /// `SchemaMismatch`; [`ArrowRingError::Open`] as for
    /// [`create`](Self::create) and [`open`](Self::open), with
    /// `NoFreeLane` when every lane has a producer.
    pub fn join(
        name: &str,
        schema: SchemaRef,
        opts: &ArrowRingOptions,
    ) -> Result<Self, ArrowRingError> {
        for lane in 0..MAX_LANES {
            let lane_name = lane_name(name, lane);
            match crate::shm::inspect(&lane_name, &opts.segment) {
                // A lane whose producer is gone has no stream to join: a
                // stream that ended may be followed by one of any schema.
                Ok(info) if !info.producer.alive => continue,
                Ok(_) => {}
                Err(OpenError::NotFound { .. }) => break,
                Err(_) => continue,
            }
            match super::stream_schema(&lane_name, &opts.segment) {
                Ok(Some(theirs)) if theirs != schema => {
                    return Err(ArrowRingError::SchemaMismatch {
                        expected: theirs,
                        found: schema,
                    });
                }
                Ok(_) => {}
                Err(ArrowRingError::Open(OpenError::NotFound { .. })) => break,
                // Being made, or made half by a creator that died: no
                // stream to compare with yet.
                Err(ArrowRingError::Open(OpenError::NotReady { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        let mut producer = join_lane(
            name,
            &opts.segment,
            || arrow_layout(opts),
            Self::attach,
            |e| match e {
                ArrowRingError::Open(o) => Some(o),
                _ => None,
            },
        )?;
        producer.flat = FlatEncoder::new(&schema);
        producer.schema = Some(schema);
        Ok(producer)
    }

    /// The lane of its stream this producer writes (see
    /// [`ShmProducer::lane`]).
    pub fn lane(&self) -> u32 {
        lane_of(self.inner.segment())
    }

    fn attach(seg: Segment) -> Result<Self, ArrowRingError> {
        // Resume after whatever a previous producer wrote (arena_head).
        let (inner, head) =
            ShmProducer::<Descriptor>::attach_with_arena_head(seg, RingKind::Arrow)?;
        let seg = inner.segment();
        let layout = *seg.layout();
        // SAFETY: validate() checked arena_offset + arena_len <= total_len,
        // which lies within the mapping.
        let arena = unsafe { seg.ptr_at(layout.arena_offset) };
        Ok(Self {
            inner,
            arena,
            arena_len: super::split_arena(layout.arena_len).0,
            head,
            floor: 0,
            schema: None,
            encoder: None,
            pending: VecDeque::new(),
            deltas: false,
            flat: None,
            flat_started: false,
            next_rewind_check: 0,
            loan_slots: Vec::new(),
        })
    }

    /// Sends `batch`, waiting while the arena or the slots are full.
    ///
    /// `Ok` means the batch was taken: its messages are in the ring, or (if
    /// the consumer went away meanwhile) pending in this producer, which
    /// delivers them first on the next call; see [`pending`](Self::pending).
    /// An error means the batch was not taken.
    ///
    /// # Errors
    ///
    /// `SchemaMismatch` (another schema than the stream's first batch),
    /// `BatchTooLarge`, `ConsumerGone`, `Encode`.
    pub fn send(&mut self, batch: &RecordBatch) -> Result<(), ArrowRingError> {
        self.send_until(batch, None)
    }

    /// Sends `batch` if its messages fit now, without waiting. Messages that
    /// do not fit stay in this producer and go first on the next call (or at
    /// `close`).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send), and `Timeout` when earlier messages are still
    /// pending (the batch is then not taken).
    pub fn try_send(&mut self, batch: &RecordBatch) -> Result<(), ArrowRingError> {
        self.send_until(batch, Some(Instant::now()))
    }

    /// Sends `batch`, waiting at most `timeout` for room. On `Timeout` the
    /// batch was not taken.
    ///
    /// # Errors
    ///
    /// As [`try_send`](Self::try_send).
    pub fn send_timeout(
        &mut self,
        batch: &RecordBatch,
        timeout: Duration,
    ) -> Result<(), ArrowRingError> {
        self.send_until(batch, Instant::now().checked_add(timeout))
    }

    /// Sets how blocking calls wait (default [`WaitStrategy::Park`](crate::WaitStrategy::Park):
    /// spin up to 50 µs, then sleep on a futex in the segment).
    pub fn set_wait_strategy(&mut self, wait: crate::WaitStrategy) {
        self.inner.set_wait_strategy(wait);
    }

    /// Sends a dictionary that grew by appending values as a *delta* (a
    /// dictionary batch of the new values only) instead of sending it whole
    /// again, which is the default. Consumers apply deltas, and a consumer
    /// that resumes after a restart gets the merged dictionary from the
    /// save area. Takes effect at the next batch, which starts a new stream
    /// state (its schema message is sent again) if one had begun.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use laminar_ring::arrow::{ArrowRingOptions, BatchProducer};
    /// let mut tx = BatchProducer::create("categories", &ArrowRingOptions::default())?;
    /// tx.set_dictionary_deltas(true);
    /// # Ok(()) }
    /// ```
    pub fn set_dictionary_deltas(&mut self, deltas: bool) {
        if self.deltas != deltas {
            self.deltas = deltas;
            self.encoder = None;
            self.flat_started = false;
        }
    }

    /// Sets the stream's schema before its first batch, as sending that
    /// batch would; a [`loan`](Self::loan) needs it. Its schema message
    /// goes with the first batch (for a loan: when the loan is taken).
    ///
    /// # Errors
    ///
    /// `SchemaMismatch` when the stream already has another schema.
    pub fn set_schema(&mut self, schema: SchemaRef) -> Result<(), ArrowRingError> {
        self.check_schema_of(schema)
    }

    /// The schema of the stream, once the first batch has been sent (or
    /// [`set_schema`](Self::set_schema) set it).
    pub fn schema(&self) -> Option<&SchemaRef> {
        self.schema.as_ref()
    }

    fn send_until(
        &mut self,
        batch: &RecordBatch,
        deadline: Option<Instant>,
    ) -> Result<(), ArrowRingError> {
        // An error from here on means the batch was not taken.
        if !self.flush_until(deadline)? {
            return Err(ArrowRingError::Timeout);
        }
        self.check_schema(batch)?;
        if self.flat.is_some() {
            return self.send_flat(batch, deadline);
        }
        let messages = self.encode(batch)?;
        self.pending.extend(messages);
        // Taken: what does not fit (or cannot go while the consumer is gone)
        // stays pending, and the next call reports any problem.
        match self.flush_until(deadline) {
            Ok(_) | Err(ArrowRingError::ConsumerGone) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Checks that `batch` has the stream's schema; the first batch sets it
    /// (and, for a flat schema, the encoder that writes into the arena).
    fn check_schema(&mut self, batch: &RecordBatch) -> Result<(), ArrowRingError> {
        self.check_schema_of(batch.schema())
    }

    fn check_schema_of(&mut self, schema: SchemaRef) -> Result<(), ArrowRingError> {
        match &self.schema {
            Some(s) if s != &schema => Err(ArrowRingError::SchemaMismatch {
                expected: s.clone(),
                found: schema,
            }),
            Some(_) => Ok(()),
            None => {
                self.flat = FlatEncoder::new(&schema);
                self.schema = Some(schema);
                Ok(())
            }
        }
    }

    /// Sends `batch` of a flat schema: its record batch message is planned,
    /// then written straight into the arena (flat.rs). Called with nothing
    /// pending; a message that cannot go now is made an owned one and waits
    /// in `pending`, as the general path's do.
    fn send_flat(
        &mut self,
        batch: &RecordBatch,
        deadline: Option<Instant>,
    ) -> Result<(), ArrowRingError> {
        let flat = self.flat.as_mut().expect("checked by the caller");
        let planned = flat.plan(batch).map_err(ArrowRingError::Encode)?;
        if planned.len > self.arena_len {
            flat.forget();
            // A stream not begun yet stays so: the schema goes with the
            // first batch that fits.
            return Err(ArrowRingError::BatchTooLarge {
                needed: planned.len,
                arena: self.arena_len,
            });
        }
        if !self.flat_started {
            let schema = self.schema.as_ref().expect("set by check_schema");
            let message = FlatEncoder::schema_message(schema);
            let message = match message {
                Ok(m) if m.len <= self.arena_len => m,
                Ok(m) => {
                    self.flat.as_mut().expect("set").forget();
                    return Err(ArrowRingError::BatchTooLarge {
                        needed: align_up(m.len).unwrap_or(u64::MAX),
                        arena: self.arena_len,
                    });
                }
                Err(e) => {
                    self.flat.as_mut().expect("set").forget();
                    return Err(ArrowRingError::Encode(e));
                }
            };
            self.pending.push_back(message);
            self.flat_started = true;
        }
        // Taken from here on: what cannot go now stays pending, behind the
        // schema message if that could not go either.
        let placed = match self.flush_until(deadline) {
            Ok(true) => match self.reserve(planned.len, deadline) {
                Ok(pos) => pos,
                Err(ArrowRingError::ConsumerGone) => None,
                Err(e) => {
                    self.flat.as_mut().expect("set").forget();
                    return Err(e);
                }
            },
            Ok(false) | Err(ArrowRingError::ConsumerGone) => None,
            Err(e) => {
                self.flat.as_mut().expect("set").forget();
                return Err(e);
            }
        };
        let flat = self.flat.as_mut().expect("set");
        match placed {
            Some(pos) => {
                let start = (pos % self.arena_len) as usize;
                // reserve() made pos..pos+len free (the consumer released
                // it) and contiguous (start + len <= arena_len), inside the
                // arena. The batch's buffers do not overlap it: they are
                // this process's memory, or (a batch received in place from
                // this very ring and sent again) bytes of a message its live
                // lease keeps unreleased, which reserve() never hands out.
                // SAFETY: `len` free bytes at `start`, overlapping no source.
                let streamed = unsafe { flat.write(self.arena.add(start)) };
                if streamed {
                    // As in write_message: streaming stores before the
                    // Release stores that publish the message.
                    store_fence();
                }
                self.publish(pos, planned.len, planned.len, MSG_RECORD_BATCH);
            }
            None => {
                let message = flat.owned_message(planned);
                self.pending.push_back(message);
            }
        }
        Ok(())
    }

    /// Encodes `batch` (of the stream's schema) into its messages, checking
    /// sizes first.
    fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<EncodedMessage>, ArrowRingError> {
        let schema = self.schema.clone().expect("set above");
        if self.encoder.is_none() {
            // Alignment 64: every buffer in a body starts 64-aligned relative
            // to the message, and messages start 64-aligned in the arena.
            let handling = if self.deltas {
                DictionaryHandling::Delta
            } else {
                DictionaryHandling::Resend
            };
            let opts = IpcWriteOptions::try_new(64, false, MetadataVersion::V5)
                .map_err(ArrowRingError::Encode)?
                .with_dictionary_handling(handling);
            self.encoder = Some(
                StreamEncoder::try_new_with_options(&schema, opts)
                    .map_err(ArrowRingError::Encode)?,
            );
        }
        let encoder = self.encoder.as_mut().expect("set above");
        let parts = encoder.encode(batch).map_err(ArrowRingError::Encode)?;
        let messages = split_messages(parts).map_err(ArrowRingError::Encode)?;
        if let Some(big) = messages.iter().map(|m| m.len).max() {
            let needed = align_up(big).unwrap_or(u64::MAX);
            if needed > self.arena_len {
                // The encoder believes these dictionaries were sent: start a
                // fresh stream state (the consumer accepts a repeated schema).
                self.encoder = None;
                return Err(ArrowRingError::BatchTooLarge {
                    needed,
                    arena: self.arena_len,
                });
            }
        }
        Ok(messages)
    }

    /// Writes pending messages until none is left (`true`) or the deadline
    /// passes (`false`).
    fn flush_until(&mut self, deadline: Option<Instant>) -> Result<bool, ArrowRingError> {
        while let Some(msg) = self.pending.front() {
            let size = align_up(msg.len).expect("checked against the arena");
            let Some(pos) = self.reserve(size, deadline)? else {
                return Ok(false);
            };
            let msg = self.pending.pop_front().expect("front exists");
            self.write_message(pos, size, &msg);
        }
        Ok(true)
    }

    /// Arena position for `size` bytes plus a free slot, waiting as needed;
    /// `None` at the deadline.
    fn reserve(
        &mut self,
        size: u64,
        deadline: Option<Instant>,
    ) -> Result<Option<u64>, ArrowRingError> {
        let (head, len) = (self.head, self.arena_len);
        // Skip the arena's tail if the message would wrap, or start the
        // next lap early when the consumer has released everything.
        let early = REWIND_MIN.max(len / REWIND_SHARE);
        let pos = if head % len + size > len || self.drained_past(early) {
            head + (len - head % len)
        } else {
            head
        };
        let floor = &mut self.floor;
        let mut fits = |p: &mut ShmProducer<Descriptor>| {
            if pos + size - (*floor).min(pos) > len || p.slots() == 0 {
                *floor = release_point(p, head, pos).max(*floor);
            }
            pos + size - (*floor).min(pos) <= len && p.slots() > 0
        };
        if fits(&mut self.inner) {
            return Ok(Some(pos));
        }
        match self.inner.wait_until(deadline, fits) {
            Ok(()) => Ok(Some(pos)),
            Err(ShmPushError::Full(())) => Ok(None),
            Err(ShmPushError::ConsumerGone(())) => Err(ArrowRingError::ConsumerGone),
        }
    }

    /// Whether the next message should start the next lap of the arena
    /// early: `head` is at least `min` bytes into its lap and the consumer
    /// has released every message. Looked at most once per `min` bytes
    /// written, which keeps the read of the consumer's line (`read_seq`)
    /// off the path of small messages.
    fn drained_past(&mut self, min: u64) -> bool {
        let head = self.head;
        if head % self.arena_len < min || head < self.next_rewind_check {
            return false;
        }
        let drained = matches!(self.inner.oldest_unreleased(), Some(None));
        if !drained {
            self.next_rewind_check = head + min;
        }
        drained
    }

    fn write_message(&mut self, pos: u64, size: u64, msg: &EncodedMessage) {
        let start = pos % self.arena_len;
        let mut at = start as usize;
        let mut streamed = false;
        for part in &msg.parts {
            // SAFETY: reserve() made pos..pos+size free (the consumer released
            // it) and contiguous (start + size <= arena_len); the parts sum to
            // msg.len <= size, and the source buffers do not overlap the arena.
            streamed |= unsafe { copy_to_arena(self.arena.add(at), part) };
            at += part.len();
        }
        if streamed {
            // Streaming stores are weakly ordered even on x86, and a Release
            // store does not order them; the fence makes them visible before
            // the Release stores below: arena_head, and write_seq in try_push
            // (SYNC POINT write_seq), whose Acquire load by the consumer
            // publishes these bytes.
            store_fence();
        }
        self.publish(pos, size, msg.len, msg.kind);
    }

    /// Publishes the message of `len` bytes of `kind` written at `pos`, in
    /// `size` bytes of the arena.
    fn publish(&mut self, pos: u64, size: u64, len: u64, kind: u32) {
        let end = pos + size;
        let desc = Descriptor {
            pos,
            len,
            end,
            kind,
            reserved: 0,
        };
        // Stored before the publish, so that a new producer resumes after
        // this message and a crash in between only wastes the space.
        self.inner.store_arena_head(end);
        self.head = end;
        // The slot is free (reserve checked, and we are the only producer):
        // this publishes the descriptor, and with it the arena bytes.
        let pushed = self.inner.try_push(desc);
        debug_assert!(pushed.is_ok());
    }

    /// Sends what is pending and ends the stream: the consumer drains what
    /// is left, then sees the end of the stream.
    ///
    /// # Errors
    ///
    /// `ConsumerGone` if pending messages cannot be delivered. The stream
    /// then ends as [`abandon`](Self::abandon) ends it (the consumer gets
    /// `PeerGone` after what was delivered), never cleanly: a clean end
    /// says that every batch this producer took is in the ring.
    pub fn close(mut self) -> Result<(), ArrowRingError> {
        match self.flush_until(None) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.give_up();
                Err(e)
            }
        }
    }

    /// Ends the stream as abandoned: pending messages will never be
    /// delivered, so the stream must not end cleanly.
    fn give_up(&mut self) {
        self.pending.clear();
        self.inner.abandon_on_drop();
    }

    /// Detaches *without* ending the stream, dropping pending messages: for
    /// a producer that failed half-way (its input broke), so that the
    /// consumer does not take a partial stream for a whole one. The
    /// consumer drains what was committed, then gets
    /// [`PeerGone`](ArrowRingError::PeerGone), as if this process had
    /// crashed.
    pub fn abandon(mut self) {
        self.give_up();
    }

    /// Detaches and ends the stream *in error*, dropping pending messages:
    /// for a producer that gave up (its input is bad) and wants the consumer
    /// to know it failed, not died. The consumer drains what was committed,
    /// then gets [`ProducerFailed`](ArrowRingError::ProducerFailed) with
    /// `reason` (cut to
    /// [`FAILURE_REASON_LEN`](crate::shm::header::FAILURE_REASON_LEN) bytes
    /// at a character boundary). A new producer may attach and continue.
    pub fn fail(mut self, reason: &str) {
        self.pending.clear();
        self.inner.fail_on_drop(reason);
    }

    /// Delivers pending messages, waiting at most `timeout`; `Ok(true)` when
    /// none is left.
    ///
    /// # Errors
    ///
    /// `ConsumerGone` when the ring is full and its consumer is gone.
    pub fn flush(&mut self, timeout: Duration) -> Result<bool, ArrowRingError> {
        self.flush_until(Instant::now().checked_add(timeout))
    }

    /// Messages encoded but not yet in the ring (after a `try_send` or
    /// `send_timeout` that found no room for all of them).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// The consumer's release point for a message to be placed at `pos`: the
/// arena position below which no byte is in use. It is derived from
/// `read_seq`, never from `arena_released`, which is information only (a
/// consumer killed between its release stores leaves it behind
/// `read_seq`): the start of the descriptor at `read_seq`, or, when every
/// published message is released, `pos` itself. Then the whole message
/// area is free, the tail skipped before `pos` included, so every message
/// that fits the area fits a drained ring, wherever `head` is. A `read_seq`
/// that does not fit this producer's position gives 0 (no room is assumed
/// free).
fn release_point(p: &ShmProducer<Descriptor>, head: u64, pos: u64) -> u64 {
    match p.oldest_unreleased() {
        // Nothing is in use: `pos` is at or after every byte written.
        Some(None) => pos,
        // Messages lie in the arena in sequence order: everything before
        // the oldest unreleased one is free. (A descriptor is this
        // producer's own, or an earlier producer's of this ring; the min
        // keeps a broken one from freeing more than was written.)
        Some(Some(d)) => d.pos.min(head),
        None => 0,
    }
}

/// How far into a lap of the arena the producer starts the next lap early
/// when the consumer has released everything (`drained_past`): the next
/// message then goes where the lap's first one went, in memory both sides
/// touched recently and likely still in cache, rather than in bytes last
/// written a whole arena ago, which cost a trip to memory to overwrite and
/// to read. The consumer accepts the skip as it accepts the skipped tail of
/// a lap.
///
/// Each early start moves positions past the rest of the lap, so positions
/// grow faster than bytes written; starting no earlier than
/// `arena_len / REWIND_SHARE` into a lap bounds that to `REWIND_SHARE` times
/// (positions are u64s: at 16 times 10 GB/s they last 1.8 years of nonstop
/// streaming; docs/FORMAT.md).
const REWIND_MIN: u64 = 64 << 10;
const REWIND_SHARE: u64 = 16;

/// Parts at least this long are copied into the arena with streaming
/// (non-temporal) stores, on x86_64: a large batch would only evict the
/// producer's caches, and the stores skip reading each arena line before
/// overwriting it. Smaller parts (and all parts elsewhere) use `memcpy`,
/// which leaves them in cache for a consumer on a nearby core.
const STREAM_MIN: usize = 64 << 10;

/// Copies `src` to `dst`; `true` if it used streaming stores, which must be
/// fenced with [`store_fence`] before the bytes are published.
///
/// # Safety
///
/// `dst` is valid for writes of `src.len()` bytes that do not overlap `src`.
pub(super) unsafe fn copy_to_arena(dst: *mut u8, src: &[u8]) -> bool {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    if src.len() >= STREAM_MIN {
        // SAFETY: forwarded from the caller.
        unsafe { stream_copy(dst, src) };
        return true;
    }
    // SAFETY: forwarded from the caller.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
    false
}

/// `memcpy` with SSE2 streaming stores (SSE2 is part of x86_64).
///
/// # Safety
///
/// As [`copy_to_arena`].
#[cfg(all(target_arch = "x86_64", not(loom)))]
unsafe fn stream_copy(dst: *mut u8, src: &[u8]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
    let len = src.len();
    let head = dst.align_offset(16).min(len);
    let body_end = head + (len - head) / 64 * 64;
    // SAFETY: every access below is within dst..dst+len and src (the
    // caller's contract); the streamed stores go to 16-aligned addresses
    // (dst + head is aligned, and steps are multiples of 16).
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, head);
        let mut i = head;
        while i < body_end {
            for k in [0, 16, 32, 48] {
                let v = _mm_loadu_si128(src.as_ptr().add(i + k).cast::<__m128i>());
                _mm_stream_si128(dst.add(i + k).cast::<__m128i>(), v);
            }
            i += 64;
        }
        std::ptr::copy_nonoverlapping(
            src.as_ptr().add(body_end),
            dst.add(body_end),
            len - body_end,
        );
    }
}

/// Orders earlier streaming stores before later stores (`sfence`).
pub(super) fn store_fence() {
    // SAFETY: sfence needs SSE, which every x86_64 CPU has; it touches no
    // memory.
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    unsafe {
        std::arch::x86_64::_mm_sfence();
    }
}

impl Drop for BatchProducer {
    /// Delivers messages still pending (after a `try_send` or
    /// `send_timeout`), waiting at most one second; `close` waits as long as
    /// it takes. If all are delivered, the inner producer's drop ends the
    /// stream cleanly; if not, it ends abandoned (the consumer gets
    /// `PeerGone` after what was delivered), since batches this producer
    /// took never reached the ring.
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let deadline = Instant::now().checked_add(Duration::from_secs(1));
            if !matches!(self.flush_until(deadline), Ok(true)) {
                self.give_up();
            }
        }
    }
}

impl std::fmt::Debug for BatchProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchProducer")
            .field("write_seq", &self.inner.write_seq())
            .field("arena_head", &self.head)
            .field("pending", &self.pending.len())
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte arrives, whatever the destination's alignment and the
    /// length's remainder, on both sides of the streaming threshold.
    #[test]
    fn copies_into_the_arena_are_exact() {
        let src: Vec<u8> = (0..STREAM_MIN * 2 + 200)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        let mut dst = vec![0_u8; src.len() + 64];
        for len in [
            0,
            1,
            63,
            64,
            65,
            STREAM_MIN - 1,
            STREAM_MIN,
            STREAM_MIN + 37,
            STREAM_MIN * 2 + 200,
        ] {
            for skew in [0, 1, 8, 15, 16, 33] {
                for src_skew in [0, 3] {
                    let part = &src[src_skew..][..len.min(src.len() - src_skew)];
                    dst.fill(0xee);
                    // SAFETY: dst has room for skew + part.len() bytes, and
                    // the two vectors do not overlap.
                    let streamed = unsafe { copy_to_arena(dst.as_mut_ptr().add(skew), part) };
                    store_fence();
                    assert_eq!(&dst[skew..skew + part.len()], part, "len {len} skew {skew}");
                    assert!(
                        dst[..skew].iter().all(|&b| b == 0xee),
                        "before, skew {skew}"
                    );
                    assert!(dst[skew + part.len()..].iter().all(|&b| b == 0xee), "after");
                    assert_eq!(
                        streamed,
                        cfg!(target_arch = "x86_64") && part.len() >= STREAM_MIN
                    );
                }
            }
        }
    }
}
