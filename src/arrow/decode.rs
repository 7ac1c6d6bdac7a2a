//! The consuming side: IPC messages in the arena -> `RecordBatch`es, copied
//! or leased in place.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_data::UnsafeFlag;
use arrow_ipc::reader::{FileDecoder, RecordBatchDecoder};
use arrow_ipc::{Block, MetadataVersion};
use arrow_schema::{ArrowError, SchemaRef};

use super::check::FlatSchema;
use super::framing::{KnownShape, data_message, parse_schema};
use super::lease::{LeaseBook, LeasedBatch, leased_buffer};
use super::release::{Releaser, Unreleased};
use super::resume::{Change, Restored, SaveArea};
use super::{
    ARENA_ALIGN, ArrowRingError, ArrowRingOptions, Descriptor, MSG_DICTIONARY, MSG_RECORD_BATCH,
    MSG_SCHEMA,
};
use crate::shm::header::RingKind;
use crate::shm::{EndSource, Segment, ShmConsumer, ShmPopError};
use crate::wait::WaitStrategy;

/// Whether a consumer reports a producer's death seen without an end
/// record (recorded ends are always reported, once): only for a session it
/// was reading. A ring whose last stream ended and was consumed then serves
/// the next session to a new consumer, rather than ending it at once.
#[derive(Default)]
struct SessionWatch {
    /// `producer_sessions` when this consumer attached or last reported an
    /// end: a later session is one it was there for.
    baseline: u64,
    /// It was reading the session at `baseline`: a producer was alive when
    /// it attached, or it has consumed a message since (attached or last
    /// reported an end).
    reading: bool,
}

/// Receives `RecordBatch`es from an Arrow ring.
pub struct BatchConsumer {
    inner: ShmConsumer<Descriptor>,
    arena: *const u8,
    arena_len: u64,
    map: Range<usize>,
    /// Decodes the current stream's messages: set by its schema message.
    decoder: Option<SessionDecoder>,
    schema: Option<SchemaRef>,
    expected: Option<SchemaRef>,
    book: Arc<LeaseBook>,
    /// Messages read and not yet released, and the released state.
    rel: Releaser,
    /// End of the last message read (descriptors must not go backwards).
    last_end: u64,
    max_leases: usize,
    /// The wait strategy of `inner`, for waits of this layer's own.
    wait: WaitStrategy,
    /// Which producer session's end this consumer may report.
    session: SessionWatch,
    /// Set when resuming a stream whose saved state had overflowed the save
    /// area: the size of one half of that area, for the error that explains
    /// why the next data message cannot be decoded.
    unsaved_state: Option<u64>,
    /// Subscribed mid-stream with nothing saved: messages before the next
    /// schema message are skipped (released undecoded), not an error.
    joined: bool,
    /// Drained to the end of a producer session (reported now or before)
    /// and waiting for the next session: the ring's stream is over for now.
    between_sessions: bool,
}

// SAFETY: `arena` points into the mapping owned by `inner`, which moves with it.
unsafe impl Send for BatchConsumer {}

impl BatchConsumer {
    /// Creates the Arrow ring `name` and attaches as its consumer.
    ///
    /// # Errors
    ///
    /// [`ArrowRingError::Open`].
    pub fn create(name: &str, opts: &ArrowRingOptions) -> Result<Self, ArrowRingError> {
        let seg = Segment::create(name, super::encode::arrow_layout(opts)?, &opts.segment)?;
        Self::attach(seg, opts)
    }

    /// Attaches as the consumer of the existing Arrow ring `name`, resuming
    /// at the first message not yet released.
    ///
    /// # Errors
    ///
    /// [`ArrowRingError::Open`].
    pub fn open(name: &str, opts: &ArrowRingOptions) -> Result<Self, ArrowRingError> {
        Self::attach(Segment::open(name, &opts.segment)?, opts)
    }

    fn attach(seg: Segment, opts: &ArrowRingOptions) -> Result<Self, ArrowRingError> {
        let inner = ShmConsumer::<Descriptor>::attach_as(seg, RingKind::Arrow)?;
        let seg = inner.segment();
        let layout = *seg.layout();
        // SAFETY: validate() checked the arena lies within the mapping.
        let arena = unsafe { seg.ptr_at(layout.arena_offset) }.cast_const();
        // SAFETY: as above; one past the end of the validated segment.
        let map_end = unsafe { seg.ptr_at(layout.total_len) } as usize;
        // SAFETY: offset 0 is the start of the mapping.
        let map_start = unsafe { seg.ptr_at(0) } as usize;
        let book = Arc::new(LeaseBook::new(inner.ring_handle()));
        let (arena_len, save_len) = super::split_arena(layout.arena_len);
        let cursor = inner.mapped().cursor_index().unwrap_or(0);
        let (share_at, share_len) = super::save_share(save_len, layout.max_consumers, cursor);
        // The mapping lives as long as `inner`, which moves with the save
        // area; only this cursor's consumer writes its share of it.
        // SAFETY: cursor < max_consumers, so its share lies within the
        // arena's last `save_len` bytes, inside the validated arena; this
        // process holds the cursor's lock.
        let save = unsafe {
            SaveArea::new(
                arena.add((arena_len + share_at) as usize).cast_mut(),
                share_len,
            )
        };
        let mut me = Self {
            inner,
            arena,
            arena_len,
            rel: Releaser::new(save),
            map: map_start..map_end,
            decoder: None,
            schema: None,
            expected: None,
            book,
            // Nothing read yet: the first message may start anywhere. (Not
            // arena_released: it is information, and a consumer killed
            // between its release stores leaves it behind read_seq.)
            last_end: 0,
            max_leases: opts.max_leases.max(1),
            wait: WaitStrategy::Park,
            session: SessionWatch::default(),
            unsaved_state: None,
            joined: false,
            between_sessions: false,
        };
        me.restore_saved_state()?;
        // The session counter first, then the producer's lock and state: a
        // producer that attaches in between moves the counter, so it is not
        // missed. A producer that holds the lock but has not stored its
        // state yet is not read from: the state still says how the previous
        // session ended, which is not this consumer's to report.
        me.session.baseline = me.inner.producer_sessions();
        me.session.reading = me.inner.producer_alive() && me.inner.producer_attached();
        Ok(me)
    }

    /// A consumer that resumes a stream replays the state saved for its
    /// `read_seq` (see `resume.rs`), so that it can decode the messages that
    /// follow, and starts its released state from it.
    fn restore_saved_state(&mut self) -> Result<(), ArrowRingError> {
        let seq = self.inner.read_seq();
        let corrupt = |why: String| ArrowRingError::CorruptMessage {
            seq,
            source: ArrowError::IpcError(format!("saved decoder state: {why}")),
        };
        let word = self.inner.saved_state_word();
        match self.rel.save.restore(seq, word).map_err(corrupt)? {
            Restored::Nothing => {}
            Restored::Joined => self.joined = true,
            Restored::Overflowed { half } => {
                // Too many dictionaries to save: resuming works only if the
                // next message starts a stream; decode() reports it otherwise.
                self.unsaved_state = Some(half);
            }
            Restored::Messages(messages) => {
                for (i, m) in messages.into_iter().enumerate() {
                    let kind = if i == 0 { MSG_SCHEMA } else { MSG_DICTIONARY };
                    self.decode(seq, kind, &m)?;
                    let change = match self.schema.clone() {
                        Some(schema) if kind == MSG_SCHEMA => Change::Schema(m, schema),
                        _ => Change::Dictionary(m),
                    };
                    self.rel.state.apply(change);
                }
            }
        }
        Ok(())
    }

    /// Whether this consumer has drained its ring to the end of a producer
    /// session (one it reported, or one over before it attached) and has
    /// read nothing of a later one since: the stream is over for now.
    pub(crate) fn between_sessions(&self) -> bool {
        self.between_sessions
    }

    /// Requires every stream's schema to equal `schema`: a schema message
    /// that differs makes `recv` fail with `SchemaMismatch` and stays in
    /// the ring, unconsumed, for a consumer that accepts it. Without this,
    /// each producer session may bring its own schema, and
    /// [`schema`](Self::schema) follows it.
    pub fn expect_schema(&mut self, schema: SchemaRef) {
        self.expected = Some(schema);
    }

    /// Sets how blocking calls wait (default [`WaitStrategy::Park`](crate::WaitStrategy::Park):
    /// spin up to 50 µs, then sleep on a futex in the segment).
    pub fn set_wait_strategy(&mut self, wait: crate::WaitStrategy) {
        self.inner.set_wait_strategy(wait);
        self.wait = wait;
    }

    /// The stream's schema, once its schema message has been received.
    pub fn schema(&self) -> Option<&SchemaRef> {
        self.schema.as_ref()
    }

    /// Addresses of the mapping, to check that a leased batch's buffers lie
    /// inside it.
    pub fn mapped_range(&self) -> Range<usize> {
        self.map.clone()
    }

    /// Receives the next batch, decoded into process memory; its slot is
    /// released at once. `Ok(None)` at the end of the stream.
    ///
    /// # Errors
    ///
    /// `PeerGone` once drained after the producer died; `CorruptDescriptor`
    /// or `CorruptMessage` (naming the slot); `SchemaMismatch`.
    pub fn recv(&mut self) -> Result<Option<RecordBatch>, ArrowRingError> {
        self.recv_until(None, false)
            .map(|b| b.map(LeasedBatch::into_inner))
    }

    /// [`recv`](Self::recv) with a deadline.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), and `Timeout`.
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<RecordBatch>, ArrowRingError> {
        self.recv_until(Instant::now().checked_add(timeout), false)
            .map(|b| b.map(LeasedBatch::into_inner))
    }

    /// Receives the next batch without copying: its buffers point into the
    /// mapping. `Ok(None)` at the end of the stream.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), and, when `max_leases` messages are read and
    /// not yet released: `TooManyLeases` if that many leased batches are
    /// alive, or `OldestLeaseHeld` if fewer are and the oldest one (or an
    /// array or slice kept from it) holds back the release of the later
    /// ones, which were dropped.
    pub fn recv_zero_copy(&mut self) -> Result<Option<LeasedBatch>, ArrowRingError> {
        self.recv_until(None, true)
    }

    /// [`recv_zero_copy`](Self::recv_zero_copy) with a deadline.
    ///
    /// # Errors
    ///
    /// As [`recv_zero_copy`](Self::recv_zero_copy), and `Timeout`.
    pub fn recv_zero_copy_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<LeasedBatch>, ArrowRingError> {
        self.recv_until(Instant::now().checked_add(timeout), true)
    }

    fn recv_until(
        &mut self,
        deadline: Option<Instant>,
        zero_copy: bool,
    ) -> Result<Option<LeasedBatch>, ArrowRingError> {
        loop {
            self.release_done();
            if zero_copy && self.rel.outstanding.len() >= self.max_leases {
                return Err(self.book.limit_error(
                    self.inner.read_seq(),
                    self.rel.outstanding.len(),
                    self.max_leases,
                ));
            }
            // A message ready now needs no wait, and no look at the
            // producer's line beyond the one finding it.
            let waited = if self.inner.has_ready(self.rel.outstanding.len() + 1) {
                Ok(())
            } else {
                // The next sequence to read: constant during the wait (a
                // release moves read_seq and shortens `outstanding` alike).
                let pos = self.inner.read_seq() + self.rel.outstanding.len() as u64;
                let (book, rel) = (&self.book, &mut self.rel);
                self.inner.wait_until(deadline, pos, |rx| {
                    rel.release_done(rx, book);
                    rx.has_ready(rel.outstanding.len() + 1)
                })
            };
            let ended = match waited {
                Ok(()) => None,
                Err(ShmPopError::EndOfStream) => Some(Ok(None)),
                Err(ShmPopError::PeerGone) => Some(Err(ArrowRingError::PeerGone)),
                Err(ShmPopError::ProducerFailed) => Some(Err(ArrowRingError::ProducerFailed {
                    reason: self.inner.producer_failure().unwrap_or_default(),
                })),
                Err(ShmPopError::BadHeader(e)) => return Err(ArrowRingError::BadHeader(e)),
                Err(ShmPopError::Timeout) => return Err(ArrowRingError::Timeout),
                Err(ShmPopError::Lagged { missed }) => {
                    return Err(ArrowRingError::Lagged { missed });
                }
            };
            if let Some(end) = ended {
                // Drained up to a session's end. A recorded end comes in the
                // stream, after that session's messages and before the
                // next's: reported, once. A death without a record yet is
                // reported for a session this consumer was reading, or one
                // that began while it was attached; a repeat of an end
                // already reported (or a death of a session over before it
                // attached) is not: it waits for the next session.
                let sessions = self.inner.producer_sessions();
                self.between_sessions = true;
                let report = match self.inner.end_source() {
                    EndSource::Record => true,
                    EndSource::Death => self.session.reading || sessions != self.session.baseline,
                    EndSource::Repeat => {
                        self.session.baseline = sessions;
                        false
                    }
                };
                if report {
                    self.session = SessionWatch {
                        baseline: sessions,
                        reading: false,
                    };
                    return end;
                }
                if !self.wait_for_next_session(deadline) {
                    return Err(ArrowRingError::Timeout);
                }
                continue;
            }
            if let Some(batch) = self.next_message(zero_copy)? {
                if !zero_copy {
                    // A copy is done with its message: release it now, as
                    // `recv` promises, rather than at the next call.
                    self.release_done();
                }
                return Ok(Some(batch));
            }
        }
    }

    /// Reads, validates and decodes the next unread descriptor's message.
    fn next_message(&mut self, zero_copy: bool) -> Result<Option<LeasedBatch>, ArrowRingError> {
        let index = self.rel.outstanding.len();
        let seq = self.inner.read_seq() + index as u64;
        let desc = self
            .inner
            .chunk(index + 1)
            .get(index)
            .expect("wait_until saw it ready");
        let start = self.check(seq, &desc)?;
        let last_end = self.last_end;
        self.last_end = desc.end;
        self.rel.outstanding.push_back(Unreleased {
            pos: desc.pos,
            end: desc.end,
            change: None,
        });
        let len = desc.len as usize;
        let lease_it = zero_copy && desc.kind == MSG_RECORD_BATCH;
        let buffer = if lease_it {
            // check() proved start..start+len lies inside the arena, which
            // lies inside the mapping of `book.ring`.
            // SAFETY: in bounds; the slot stays unreleased, so the producer
            // does not overwrite these bytes, until the lease marks it done.
            unsafe { leased_buffer(&self.book, seq, self.arena.add(start), len) }
        } else {
            // SAFETY: as above for the range; copied out at once.
            let bytes = unsafe { std::slice::from_raw_parts(self.arena.add(start), len) };
            Buffer::from_vec(bytes.to_vec())
        };
        let decoded = self.decode(seq, desc.kind, &buffer);
        if let Err(ArrowRingError::SchemaMismatch { .. }) = decoded {
            // Refused, not consumed: the message stays in the ring for a
            // consumer that accepts its schema (decode changed no state).
            self.rel.outstanding.pop_back();
            self.last_end = last_end;
            return decoded.map(|_| None);
        }
        // Consumed (decoded or not): this consumer is reading a session.
        self.session.reading = true;
        self.between_sessions = false;
        if !lease_it {
            self.book.mark_done(seq);
        }
        let batch = decoded?;
        // A schema or dictionary the decoder took changes the saved state
        // when this message is released (not now: older batches may still
        // be leased, and a consumer that resumes decodes them again).
        let change = match desc.kind {
            MSG_SCHEMA => self.schema.clone().map(|s| Change::Schema(buffer, s)),
            // Not one skipped before the first schema (a subscription made
            // mid-stream): it changes no state this consumer has.
            MSG_DICTIONARY if self.decoder.is_some() => Some(Change::Dictionary(buffer)),
            _ => None,
        };
        if let Some(u) = self.rel.outstanding.back_mut() {
            u.change = change;
        }
        Ok(batch.map(|batch| LeasedBatch { batch }))
    }

    /// Checks a descriptor against the arena; returns the byte offset.
    fn check(&self, seq: u64, d: &Descriptor) -> Result<usize, ArrowRingError> {
        let bad = |why: String| ArrowRingError::CorruptDescriptor { seq, why };
        if !matches!(d.kind, MSG_SCHEMA | MSG_DICTIONARY | MSG_RECORD_BATCH) {
            return Err(bad(format!("unknown message kind {}", d.kind)));
        }
        if d.len < 8 {
            return Err(bad(format!(
                "message length {} is shorter than a prefix",
                d.len
            )));
        }
        if !d.pos.is_multiple_of(ARENA_ALIGN) {
            return Err(bad(format!("position {} is not 64-byte aligned", d.pos)));
        }
        if d.pos < self.last_end {
            return Err(bad(format!(
                "position {} is before the previous message's end {}",
                d.pos, self.last_end
            )));
        }
        let start = d.pos % self.arena_len;
        let fits = start
            .checked_add(d.len)
            .is_some_and(|e| e <= self.arena_len);
        if !fits {
            return Err(bad(format!(
                "bytes {start}..+{} outside the {}-byte arena",
                d.len, self.arena_len
            )));
        }
        let end_ok = d.pos.checked_add(d.len).is_some_and(|e| e <= d.end);
        // The bytes from the oldest message still unreleased (this one, if
        // none is) up to this one's end must fit in the arena, or this
        // message would overlap bytes that are still in use.
        let oldest = self.rel.outstanding.front().map_or(d.pos, |u| u.pos);
        let span_ok = d
            .end
            .checked_sub(oldest.min(d.pos))
            .is_some_and(|s| s <= self.arena_len);
        if !end_ok || !span_ok {
            return Err(bad(format!(
                "end {} inconsistent with position {} and length {}",
                d.end, d.pos, d.len
            )));
        }
        Ok(start as usize)
    }

    fn decode(
        &mut self,
        seq: u64,
        kind: u32,
        buffer: &Buffer,
    ) -> Result<Option<RecordBatch>, ArrowRingError> {
        let corrupt = |source| ArrowRingError::CorruptMessage { seq, source };
        let bytes = buffer.as_slice();
        if kind == MSG_SCHEMA {
            // A schema starts a stream (a new producer session): check it,
            // then give it a new decoder.
            let found = std::panic::catch_unwind(|| parse_schema(bytes))
                .unwrap_or_else(|_| Err(ArrowError::IpcError("schema decoder panicked".into())))
                .map_err(corrupt)?;
            if let Some(expected) = &self.expected
                && expected != &found
            {
                return Err(ArrowRingError::SchemaMismatch {
                    expected: expected.clone(),
                    found,
                });
            }
            self.decoder = Some(SessionDecoder::new(found.clone()));
            self.schema = Some(found);
            return Ok(None);
        }
        let Some(decoder) = &mut self.decoder else {
            if self.joined {
                // A subscription made mid-stream: this session's schema came
                // before its start; it reads from the next session on.
                return Ok(None);
            }
            let why = match self.unsaved_state {
                Some(half) => format!(
                    "cannot resume mid-stream: the previous consumer's schema and dictionaries \
                     did not fit the ring's save area ({half} bytes), so the messages it left \
                     cannot be decoded (a larger arena has a larger save area)"
                ),
                None => "a data message before any schema message".into(),
            };
            return Err(corrupt(ArrowError::IpcError(why)));
        };
        // arrow-ipc slices body buffers with asserting slices: check the
        // message's framing and every buffer's range against the body first.
        let (message, body_start) =
            data_message(bytes, kind, &mut decoder.known).map_err(corrupt)?;
        let block = i32::try_from(body_start)
            .map(|meta| Block::new(0, meta, (bytes.len() - body_start) as i64))
            .map_err(|_| corrupt(ArrowError::IpcError("metadata too long".into())))?;
        let body = &bytes[body_start..];
        // arrow-ipc validates what it decodes, or check.rs does; a panic
        // inside it on hostile bytes would still be a bug there, so turn one
        // into an error too.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if kind == MSG_DICTIONARY {
                decoder
                    .checked
                    .read_dictionary(&block, buffer)
                    .map(|()| None)
            } else {
                decoder.record_batch(&message, body, &block, buffer)
            }
        }))
        .unwrap_or_else(|_| Err(ArrowError::IpcError("decoder panicked".into())));
        result.map_err(corrupt)
    }

    /// Waits until a message is ready or another producer session has
    /// started; `false` at the deadline.
    fn wait_for_next_session(&mut self, deadline: Option<Instant>) -> bool {
        let ring = self.book.ring.clone();
        let baseline = self.session.baseline;
        let (inner, book, rel) = (&mut self.inner, &self.book, &mut self.rel);
        ring.wait_as_consumer(self.wait, deadline, || {
            rel.release_done(inner, book);
            // SYNC POINT producer_sessions (see Segment::producer_sessions):
            // the ordinary wait that follows a change loads producer_state
            // after this, and finds the new session attached, not the old end.
            let sessions = ring.producer_sessions();
            (inner.len() > rel.outstanding.len() || sessions != baseline).then_some(())
        })
        .is_some()
    }

    fn release_done(&mut self) {
        self.rel.release_done(&mut self.inner, &self.book);
    }

    /// Whether a live process holds the producer role now (one `fcntl`).
    pub(crate) fn producer_attached_now(&self) -> bool {
        self.inner.producer_alive()
    }

    /// Leased batches (and messages) read but not yet released.
    pub fn outstanding(&self) -> usize {
        self.rel.outstanding.len()
    }

    /// Releases every message read whose lease is already dropped (oldest
    /// first, up to the first one still leased, as the next receive would),
    /// and returns [`outstanding`](Self::outstanding): 0 when no leased
    /// batch is alive.
    pub fn release_dropped(&mut self) -> usize {
        self.release_done();
        self.outstanding()
    }

    /// Releases every message read whose lease is already dropped (oldest
    /// first, up to the first one still leased), then detaches without
    /// releasing anything more: every live lease's message, and every
    /// message read after the oldest of them, stays in the ring for the
    /// next consumer, even after those leases are dropped.
    ///
    /// For a consumer that could not write a batch where it goes: keep the
    /// batch's lease alive, `detach`, and the next consumer receives the
    /// batch again, where dropping the consumer would have released it.
    pub fn detach(mut self) {
        self.release_done();
        // Drop releases only what `outstanding` lists; leases dropped from
        // now on mark themselves done in a book that nobody reads.
        self.rel.outstanding.clear();
    }

    /// Whether the ring was created temporary
    /// ([`ArrowRingOptions`](super::ArrowRingOptions)' `segment.temporary`):
    /// its consumer is expected to remove it after a clean end of stream.
    pub fn is_temporary(&self) -> bool {
        self.inner.is_temporary()
    }

    /// Releases what was read (as dropping does) and removes the ring's
    /// file if no other process holds a role in it and every message
    /// published has been released, without a race with a producer
    /// attaching at that moment (see
    /// [`shm::remove_unused`](crate::shm::remove_unused)). Leases still alive
    /// keep their memory: only the name goes.
    ///
    /// # Errors
    ///
    /// [`ArrowRingError::Open`] with [`OpenError::InUse`](crate::shm::OpenError::InUse) when a producer is
    /// attached (or a creator is making the file anew), or with
    /// [`OpenError::Changed`](crate::shm::OpenError::Changed) when messages are left unreleased (a producer
    /// came, sent and left; or leases are still alive), removing nothing;
    /// `NotFound` when it is already gone; I/O.
    pub fn remove_if_unused(&mut self) -> Result<(), ArrowRingError> {
        self.release_done();
        self.inner.remove_if_unused().map_err(ArrowRingError::Open)
    }
}

impl Drop for BatchConsumer {
    fn drop(&mut self) {
        self.release_done();
    }
}

/// Decodes the dictionary and record batch messages of one stream (one
/// producer session, one schema).
struct SessionDecoder {
    /// arrow-ipc with its validation on: all dictionaries, and every batch
    /// that `fast` does not take.
    checked: FileDecoder,
    /// For flat schemas: the schema, for the batches that
    /// [`FlatSchema::admits`]. [`FlatSchema::decode`] builds them; where it
    /// declines, arrow-ipc's record batch decoder with its validation off
    /// does, and [`FlatSchema::validate`] checks the batch before it is
    /// returned.
    fast: Option<(SchemaRef, FlatSchema)>,
    /// The shape of this stream's last record batch metadata verified.
    known: KnownShape,
}

/// A flat schema has no dictionaries.
static NO_DICTIONARIES: std::sync::LazyLock<std::collections::HashMap<i64, arrow_array::ArrayRef>> =
    std::sync::LazyLock::new(std::collections::HashMap::new);

impl SessionDecoder {
    fn new(schema: SchemaRef) -> Self {
        // Alignment required: a misaligned buffer is an error, never a
        // silent copy out of the mapping.
        let checked =
            FileDecoder::new(schema.clone(), MetadataVersion::V5).with_require_alignment(true);
        let fast = FlatSchema::new(&schema).map(|flat| (schema, flat));
        Self {
            checked,
            fast,
            known: KnownShape::default(),
        }
    }

    /// Decodes the record batch `message` (verified, its buffers checked to
    /// lie within `body`), the message whose bytes are all of `buffer` and
    /// whose body starts at `block.metaDataLength()`.
    fn record_batch(
        &self,
        message: &arrow_ipc::Message<'_>,
        body: &[u8],
        block: &Block,
        buffer: &Buffer,
    ) -> Result<Option<RecordBatch>, ArrowError> {
        // The version check is FileDecoder's, which refuses a message of
        // another metadata version than the stream's.
        if let Some((schema, flat)) = &self.fast
            && message.version() == MetadataVersion::V5
            && let Some(header) = message.header_as_record_batch()
            && flat.admits(message, body)
        {
            // The metadata was verified once, by data_message: decode from
            // it rather than have arrow-ipc parse and verify it again.
            let body = buffer.slice(block.metaDataLength() as usize);
            if let Some(batch) = flat.decode(header, &body, schema)? {
                return Ok(Some(batch));
            }
            let version = MetadataVersion::V5;
            let mut skip = UnsafeFlag::new();
            // `flat.admits` holds: every buffer is long enough and aligned
            // for what arrow's constructors slice from it, so that building
            // the arrays reads no byte and cannot panic; and the batch is
            // returned only after `flat.validate` ran arrow's checks on it
            // (check.rs); one that fails is dropped unread.
            // SAFETY: the batch is validated before use, as said above.
            unsafe { skip.set(true) };
            let batch = RecordBatchDecoder::try_new(
                &body,
                header,
                schema.clone(),
                &NO_DICTIONARIES,
                &version,
            )?
            .with_require_alignment(true)
            .with_skip_validation(skip)
            .read_record_batch()?;
            flat.validate(&batch)?;
            return Ok(Some(batch));
        }
        self.checked.read_record_batch(block, buffer)
    }
}

impl std::fmt::Debug for BatchConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchConsumer")
            .field("read_seq", &self.inner.read_seq())
            .field("outstanding", &self.rel.outstanding.len())
            .field("max_leases", &self.max_leases)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}
