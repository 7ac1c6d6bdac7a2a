//! The consuming side: IPC messages in the arena -> `RecordBatch`es, copied
//! or leased in place.

use std::collections::{BTreeSet, VecDeque};
use std::ops::{Deref, Range};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{RecordBatch, make_array};
use arrow_buffer::Buffer;
use arrow_data::transform::MutableArrayData;
use arrow_ipc::reader::FileDecoder;
use arrow_ipc::{Block, MetadataVersion};
use arrow_schema::{ArrowError, SchemaRef};

use super::check::FlatSchema;
use super::{
    ARENA_ALIGN, ArrowRingError, ArrowRingOptions, Descriptor, MSG_DICTIONARY, MSG_RECORD_BATCH,
    MSG_SCHEMA,
};
use crate::shm::header::RingKind;
use crate::shm::{MappedRing, Segment, ShmConsumer, ShmPopError};
use crate::sync::Ordering;

/// What leases share with their consumer: which sequences are done.
struct LeaseBook {
    done: Mutex<BTreeSet<u64>>,
    /// Keeps the mapping alive while any leased buffer points into it, and
    /// lets a lease wake a consumer that sleeps waiting for room.
    ring: Arc<MappedRing<Descriptor>>,
}

/// Owner of a leased message's memory: dropped when the last Arrow buffer
/// of the batch is dropped.
struct Lease {
    seq: u64,
    book: Arc<LeaseBook>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut done = self.book.done.lock().unwrap_or_else(|p| p.into_inner());
        done.insert(self.seq);
        drop(done);
        // The consumer releases in FIFO order on its next call; wake it in
        // case it sleeps while a producer waits for this space.
        self.book.ring.seg.header().not_empty.cell.notify(true);
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
pub struct LeasedBatch {
    batch: RecordBatch,
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

/// Where a message read but not yet released lies in the arena.
struct Unreleased {
    pos: u64,
    end: u64,
}

/// Messages a resuming consumer needs: the schema, and per dictionary id
/// the last replacement and any deltas after it.
#[derive(Default)]
struct SavedState {
    schema: Vec<u8>,
    dictionaries: std::collections::BTreeMap<i64, Vec<Vec<u8>>>,
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
    /// Each message read but not yet released, oldest first; the oldest has
    /// sequence `inner.read_seq()`.
    outstanding: VecDeque<Unreleased>,
    /// End of the last message read (descriptors must not go backwards).
    last_end: u64,
    /// The save area (after the message ring) and its size.
    save: *mut u8,
    save_len: u64,
    /// The decoder state as saved there.
    saved: SavedState,
    max_leases: usize,
    /// Set when resuming a stream whose saved state had overflowed the save
    /// area: the size of one half of that area, for the error that explains
    /// why the next data message cannot be decoded.
    unsaved_state: Option<u64>,
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
        let book = Arc::new(LeaseBook {
            done: Mutex::new(BTreeSet::new()),
            ring: inner.ring_handle(),
        });
        let (arena_len, save_len) = super::split_arena(layout.arena_len);
        // SAFETY: the save area is the arena's last `save_len` bytes, inside
        // the validated arena.
        let save = unsafe { arena.add(arena_len as usize) }.cast_mut();
        let mut me = Self {
            inner,
            arena,
            arena_len,
            save,
            save_len,
            saved: SavedState::default(),
            map: map_start..map_end,
            decoder: None,
            schema: None,
            expected: None,
            book,
            outstanding: VecDeque::new(),
            // Nothing read yet: the first message may start anywhere. (Not
            // arena_released: it is information, and a consumer killed
            // between its release stores leaves it behind read_seq.)
            last_end: 0,
            max_leases: opts.max_leases.max(1),
            unsaved_state: None,
        };
        me.restore_saved_state()?;
        Ok(me)
    }

    /// The saved-state word: bit 63 overflow, bit 62 half, low bits length.
    fn saved_word(&self) -> u64 {
        // Acquire: pairs with the Release in save_message (possibly by a
        // previous consumer process).
        (self.inner.segment().header().consumer)
            .saved_state
            .load(Ordering::Acquire)
    }

    /// Keeps a copy of the decoder state (the schema message and, per
    /// dictionary id, the messages since its last replacement) in the save
    /// area, before the message that changed it is released. The new state
    /// is written to the half not in use and then switched to, so a crash at
    /// any point leaves one complete state.
    fn save_message(&mut self, kind: u32, bytes: Vec<u8>) {
        const OVERFLOW: u64 = 1 << 63;
        const HALF: u64 = 1 << 62;
        if kind == MSG_SCHEMA {
            self.saved.schema = bytes;
            self.saved.dictionaries.clear();
        } else {
            let Some((id, delta)) = dictionary_id(&bytes) else {
                return;
            };
            let entry = self.saved.dictionaries.entry(id).or_default();
            if !delta {
                entry.clear();
            }
            entry.push(bytes);
        }
        let word = self.saved_word();
        let half = (word & HALF) ^ HALF;
        let half_len = (self.save_len / 2) & !(ARENA_ALIGN - 1);
        let parts =
            std::iter::once(&self.saved.schema).chain(self.saved.dictionaries.values().flatten());
        let total: u64 = parts.clone().map(|p| p.len() as u64).sum();
        let new_word = if total > half_len {
            OVERFLOW
        } else {
            let mut at = if half != 0 { half_len } else { 0 };
            for p in parts {
                // SAFETY: at + p.len() <= base + total <= 2 * half_len <=
                // save_len: inside the save area, which only the consumer
                // writes, in the half that the saved word does not name.
                unsafe {
                    std::ptr::copy_nonoverlapping(p.as_ptr(), self.save.add(at as usize), p.len());
                }
                at += p.len() as u64;
            }
            half | total
        };
        // Release: publishes the saved bytes to a restarted consumer's Acquire.
        (self.inner.segment().header().consumer)
            .saved_state
            .store(new_word, Ordering::Release);
    }

    /// A consumer that resumes a stream replays the schema and dictionaries
    /// its predecessor saved, so that it can decode the messages that follow.
    fn restore_saved_state(&mut self) -> Result<(), ArrowRingError> {
        const OVERFLOW: u64 = 1 << 63;
        const HALF: u64 = 1 << 62;
        let word = self.saved_word();
        let seq = self.inner.read_seq();
        let corrupt = |why: String| ArrowRingError::CorruptMessage {
            seq,
            source: ArrowError::IpcError(format!("saved decoder state: {why}")),
        };
        if word & OVERFLOW != 0 {
            // Too many dictionaries to save: resuming works only if the next
            // message starts a stream; decode() reports it otherwise.
            self.unsaved_state = Some(self.save_len / 2);
            return Ok(());
        }
        let half_len = (self.save_len / 2) & !(ARENA_ALIGN - 1);
        let len = word & (HALF - 1);
        if len == 0 {
            return Ok(());
        }
        if len > half_len {
            return Err(corrupt(format!("{len} bytes in a {half_len}-byte area")));
        }
        let base = if word & HALF != 0 { half_len } else { 0 };
        // SAFETY: base + len <= 2 * half_len <= save_len, inside the arena;
        // copied out at once.
        let bytes =
            unsafe { std::slice::from_raw_parts(self.save.add(base as usize), len as usize) }
                .to_vec();
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            let msg_len = message_len(rest).map_err(|e| corrupt(e.to_string()))?;
            let kind = if at == 0 { MSG_SCHEMA } else { MSG_DICTIONARY };
            let buffer = Buffer::from(&rest[..msg_len]);
            self.decode(seq, kind, &buffer)?;
            at += msg_len;
        }
        Ok(())
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
        self.recv_until(None, false).map(|b| b.map(|b| b.batch))
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
            .map(|b| b.map(|b| b.batch))
    }

    /// Receives the next batch without copying: its buffers point into the
    /// mapping. `Ok(None)` at the end of the stream.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), and `TooManyLeases` when `max_leases` leased
    /// batches are alive.
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
            if zero_copy && self.outstanding.len() >= self.max_leases {
                return Err(ArrowRingError::TooManyLeases {
                    max: self.max_leases,
                });
            }
            let (book, outstanding) = (&self.book, &mut self.outstanding);
            let waited = self.inner.wait_until(deadline, |rx| {
                release_done_in(rx, book, outstanding);
                rx.len() > outstanding.len()
            });
            match waited {
                Ok(()) => {}
                Err(ShmPopError::EndOfStream) => return Ok(None),
                Err(ShmPopError::PeerGone) => return Err(ArrowRingError::PeerGone),
                Err(ShmPopError::Timeout) => {
                    return Err(ArrowRingError::Timeout);
                }
            }
            if let Some(batch) = self.next_message(zero_copy)? {
                return Ok(Some(batch));
            }
        }
    }

    /// Reads, validates and decodes the next unread descriptor's message.
    fn next_message(&mut self, zero_copy: bool) -> Result<Option<LeasedBatch>, ArrowRingError> {
        let index = self.outstanding.len();
        let seq = self.inner.read_seq() + index as u64;
        let desc = {
            let chunk = self.inner.read_chunk(index + 1);
            let (a, b) = chunk.as_slices();
            *a.iter()
                .chain(b)
                .nth(index)
                .expect("wait_until saw it ready")
        };
        let start = self.check(seq, &desc)?;
        let last_end = self.last_end;
        self.last_end = desc.end;
        self.outstanding.push_back(Unreleased {
            pos: desc.pos,
            end: desc.end,
        });
        let len = desc.len as usize;
        let lease_it = zero_copy && desc.kind == MSG_RECORD_BATCH;
        let buffer = if lease_it {
            let lease = Arc::new(Lease {
                seq,
                book: self.book.clone(),
            });
            // check() proved start..start+len lies inside the arena, which
            // lies inside the mapping; `lease` keeps the mapping alive (through
            // `book.ring`) for as long as any buffer refers to it.
            // SAFETY: in bounds and alive; the slot stays unreleased, so the
            // producer does not overwrite these bytes, until the lease drops.
            unsafe {
                let ptr = NonNull::new_unchecked(self.arena.add(start).cast_mut());
                Buffer::from_custom_allocation(ptr, len, lease)
            }
        } else {
            // SAFETY: as above for the range; copied out at once.
            let bytes = unsafe { std::slice::from_raw_parts(self.arena.add(start), len) };
            Buffer::from_vec(bytes.to_vec())
        };
        let decoded = self.decode(seq, desc.kind, &buffer);
        drop(buffer);
        if let Err(ArrowRingError::SchemaMismatch { .. }) = decoded {
            // Refused, not consumed: the message stays in the ring for a
            // consumer that accepts its schema (decode changed no state).
            self.outstanding.pop_back();
            self.last_end = last_end;
            return decoded.map(|_| None);
        }
        if !lease_it {
            self.mark_done(seq);
        }
        let batch = decoded?;
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
        if d.pos % ARENA_ALIGN != 0 {
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
        let oldest = self.outstanding.front().map_or(d.pos, |u| u.pos);
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
            self.save_message(kind, bytes.to_vec());
            return Ok(None);
        }
        let Some(decoder) = &mut self.decoder else {
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
        let (message, body_start) = data_message(bytes, kind).map_err(corrupt)?;
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
        let batch = result.map_err(corrupt)?;
        if kind == MSG_DICTIONARY {
            self.save_message(kind, bytes.to_vec());
        }
        Ok(batch)
    }

    fn mark_done(&self, seq: u64) {
        let mut done = self.book.done.lock().unwrap_or_else(|p| p.into_inner());
        done.insert(seq);
    }

    fn release_done(&mut self) {
        release_done_in(&mut self.inner, &self.book, &mut self.outstanding);
    }

    /// Leased batches (and messages) read but not yet released.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }
}

/// Releases, oldest first, every read message whose lease is done; stops at
/// the first one still leased (FIFO).
fn release_done_in(
    rx: &mut ShmConsumer<Descriptor>,
    book: &LeaseBook,
    outstanding: &mut VecDeque<Unreleased>,
) {
    let mut done = book.done.lock().unwrap_or_else(|p| p.into_inner());
    let mut seq = rx.read_seq();
    let mut n = 0;
    let mut end = None;
    while let Some(u) = outstanding.front() {
        if !done.remove(&seq) {
            break;
        }
        end = Some(u.end);
        outstanding.pop_front();
        seq += 1;
        n += 1;
    }
    drop(done);
    if let Some(end) = end {
        // read_seq first (Release, in ConsumerCore::release): the one store
        // that releases, for the producer derives the free arena from the
        // descriptor at read_seq (encode::release_point). We read every byte
        // of these messages before it (copies, and leases once dropped).
        rx.read_chunk(n).commit(n);
        // Then arena_released, for `laminar-ring info` only: a kill between
        // the two stores leaves it behind, which misleads no one. Release:
        // pairs with the Acquire load in shm::inspect.
        rx.segment()
            .header()
            .consumer
            .arena_released
            .store(end, Ordering::Release);
    }
}

impl Drop for BatchConsumer {
    fn drop(&mut self) {
        self.release_done();
    }
}

/// The verified metadata of the IPC message at the start of `bytes`, and
/// the offset where its body starts; the body itself lies within `bytes`.
fn message_metadata(bytes: &[u8]) -> Result<(arrow_ipc::Message<'_>, usize), ArrowError> {
    let err = |m: String| ArrowError::IpcError(m);
    if bytes.len() < 8 || bytes[..4] != [0xff; 4] {
        return Err(err("message without its prefix".into()));
    }
    let meta_len = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    let body_start = 8usize.saturating_add(meta_len);
    let meta = bytes
        .get(8..body_start)
        .ok_or_else(|| err("metadata longer than its message".into()))?;
    let message =
        arrow_ipc::root_as_message(meta).map_err(|e| err(format!("message metadata: {e}")))?;
    let body_len =
        usize::try_from(message.bodyLength()).map_err(|_| err("negative body length".into()))?;
    if body_len > bytes.len() - body_start {
        return Err(err(format!(
            "body of {body_len} bytes, but only {} follow the metadata",
            bytes.len() - body_start
        )));
    }
    Ok((message, body_start))
}

/// The schema in a schema message.
fn parse_schema(bytes: &[u8]) -> Result<SchemaRef, ArrowError> {
    let (message, _) = message_metadata(bytes)?;
    let schema = message
        .header_as_schema()
        .ok_or_else(|| ArrowError::IpcError("a schema slot that holds no schema".into()))?;
    Ok(Arc::new(arrow_ipc::convert::fb_to_schema(schema)))
}

/// The metadata of the dictionary or record batch message that is all of
/// `bytes`, and the offset of its body, after checking that the message is
/// of `kind`, ends where `bytes` ends, and declares every buffer inside its
/// body.
fn data_message(bytes: &[u8], kind: u32) -> Result<(arrow_ipc::Message<'_>, usize), ArrowError> {
    let err = |m: String| ArrowError::IpcError(m);
    let (message, body_start) = message_metadata(bytes)?;
    let body_len = message.bodyLength() as u64; // non-negative: checked there
    let left_over = (bytes.len() - body_start) as u64 - body_len;
    if left_over != 0 {
        return Err(err(format!(
            "{left_over} bytes left over after one message"
        )));
    }
    let batch = match (kind, message.header_type()) {
        (MSG_RECORD_BATCH, arrow_ipc::MessageHeader::RecordBatch) => {
            message.header_as_record_batch()
        }
        (MSG_DICTIONARY, arrow_ipc::MessageHeader::DictionaryBatch) => {
            message.header_as_dictionary_batch().and_then(|d| d.data())
        }
        (_, other) => {
            return Err(err(format!("a {other:?} message in a slot of kind {kind}")));
        }
    }
    .ok_or_else(|| err("message header missing".into()))?;
    for (i, b) in batch.buffers().into_iter().flatten().enumerate() {
        let ok = u64::try_from(b.offset())
            .ok()
            .zip(u64::try_from(b.length()).ok())
            .and_then(|(o, l)| o.checked_add(l))
            .is_some_and(|end| end <= body_len);
        if !ok {
            return Err(err(format!(
                "buffer {i} at {}+{} outside the {body_len}-byte body",
                b.offset(),
                b.length()
            )));
        }
    }
    Ok((message, body_start))
}

/// Decodes the dictionary and record batch messages of one stream (one
/// producer session, one schema).
struct SessionDecoder {
    /// arrow-ipc with its validation on: all dictionaries, and every batch
    /// that `fast` does not take.
    checked: FileDecoder,
    /// For flat schemas: arrow-ipc with its validation off, for the batches
    /// that [`FlatSchema::admits`], each checked by [`FlatSchema::validate`]
    /// before it is returned.
    fast: Option<(FileDecoder, FlatSchema)>,
}

impl SessionDecoder {
    fn new(schema: SchemaRef) -> Self {
        // Alignment required: a misaligned buffer is an error, never a
        // silent copy out of the mapping.
        let checked =
            FileDecoder::new(schema.clone(), MetadataVersion::V5).with_require_alignment(true);
        let fast = FlatSchema::new(&schema).map(|flat| {
            let decoder =
                FileDecoder::new(schema, MetadataVersion::V5).with_require_alignment(true);
            // `record_batch` gives this decoder only messages that
            // `flat.admits`: every buffer long enough and aligned for what
            // arrow's constructors slice from it, so that building the arrays
            // reads no byte and cannot panic.
            // SAFETY: and it returns a batch only after `flat.validate` ran
            // arrow's checks on it (check.rs); one that fails is dropped unread.
            let decoder = unsafe { decoder.with_skip_validation(true) };
            (decoder, flat)
        });
        Self { checked, fast }
    }

    fn record_batch(
        &self,
        message: &arrow_ipc::Message<'_>,
        body: &[u8],
        block: &Block,
        buffer: &Buffer,
    ) -> Result<Option<RecordBatch>, ArrowError> {
        if let Some((fast, flat)) = &self.fast
            && flat.admits(message, body)
        {
            let batch = fast.read_record_batch(block, buffer)?;
            if let Some(batch) = &batch {
                flat.validate(batch)?;
            }
            return Ok(batch);
        }
        self.checked.read_record_batch(block, buffer)
    }
}

/// Length of the IPC message at the start of `bytes`: prefix, metadata and
/// body.
fn message_len(bytes: &[u8]) -> Result<usize, ArrowError> {
    let (message, body_start) = message_metadata(bytes)?;
    Ok(body_start + message.bodyLength() as usize)
}

/// Id and delta flag of a dictionary batch message.
fn dictionary_id(bytes: &[u8]) -> Option<(i64, bool)> {
    let (message, _) = message_metadata(bytes).ok()?;
    let d = message.header_as_dictionary_batch()?;
    Some((d.id(), d.isDelta()))
}
