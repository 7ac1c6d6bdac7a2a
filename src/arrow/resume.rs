//! What a restarted consumer needs to decode the messages it resumes at:
//! the decoder state (the schema and the dictionaries) *as of `read_seq`*,
//! kept in the save area at the end of the arena.
//!
//! # State follows releases, not reads
//!
//! A zero-copy consumer reads ahead of `read_seq`: it may have decoded a
//! newer schema or dictionary while older batches are still leased. A
//! consumer that restarts resumes at `read_seq` and decodes those older
//! batches again, so the state it replays must be the one they were encoded
//! against. The consumer therefore keeps two states: its decoder's (which
//! runs ahead) and the *released* state here, to which a schema or
//! dictionary message is applied only when that message is released, in
//! release (FIFO) order. Whenever a release applies a change, the released
//! state is saved, tagged with the `read_seq` it holds from, before that
//! `read_seq` is stored. A schema or dictionary message is never a barrier:
//! reading goes on while older leases are out.
//!
//! # Saved form
//!
//! The schema message, then per dictionary id one *replacement* dictionary
//! message: a replacement as received, or, once deltas have been applied to
//! it, the merged dictionary encoded as one replacement. So nothing is
//! replayed twice (a delta below `read_seq` is already in the merged
//! dictionary; one at or after it is read again and applied once), and the
//! saved state is as large as the dictionaries themselves, not the history
//! of their deltas. State that does not fit a half of the save area is
//! saved as "overflowed": a consumer that resumes there can continue only
//! from the next schema message.
//!
//! The save area has two halves; each starts with a 64-byte header
//! (`from_seq`, `len`) followed by the messages. The `saved_state` word
//! names the half written last (0: none, 1: the first, 2: the second; 3: none, subscribed mid-stream). A new
//! state goes into the half the word does not name, then the word is stored
//! (Release), then `read_seq` (Release). A consumer killed between the word
//! and `read_seq` leaves a named half whose `from_seq` is past `read_seq`:
//! the next one takes the other half, which was named until then and has
//! not been written since, and names it again before writing anything.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_buffer::Buffer;
use arrow_ipc::writer::{IpcWriteOptions, StreamEncoder};
use arrow_ipc::{MessageHeader, MetadataVersion};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

use super::ARENA_ALIGN;
use super::framing::{encapsulate, message_body, message_len, message_metadata};
use crate::sync::{AtomicU64, Ordering};

/// Bytes of a half's header: `from_seq` (u64), `len` (u64), zeros.
const HALF_HEADER: u64 = 64;
/// `len` of a half whose state did not fit.
const OVERFLOWED: u64 = u64::MAX;
/// `len` of a half that says "subscribed mid-stream, nothing saved" (the
/// state [`SAVED_JOINED`] names): written into the other half by the first
/// save of such a consumer, so that a consumer killed between that save's
/// naming store and its `read_seq` falls back to it, not to whatever an
/// earlier subscription of the cursor left there.
const JOINED_LEN: u64 = u64::MAX - 1;

/// A change of decoder state that a message makes, applied to the released
/// state when the message is released.
pub(super) enum Change {
    /// A schema message: a new stream, no dictionaries yet.
    Schema(Buffer, SchemaRef),
    /// A dictionary batch message (replacement or delta).
    Dictionary(Buffer),
}

/// The decoder state as of the consumer's `read_seq`.
#[derive(Default)]
pub(super) struct ReleasedState {
    /// `false` when unknown: resumed from an overflowed state, or a change
    /// that did not apply. Then only a schema message makes it known again.
    known: bool,
    schema: Option<(Buffer, SchemaRef)>,
    /// Each dictionary, decoded (to apply deltas to).
    dictionaries: HashMap<i64, ArrayRef>,
    /// Per dictionary id, the replacement message to save: `None` once a
    /// delta was applied, until the merged dictionary is encoded.
    messages: BTreeMap<i64, Option<Buffer>>,
}

impl ReleasedState {
    /// Applies the change of a message being released.
    pub(super) fn apply(&mut self, change: Change) {
        match change {
            Change::Schema(bytes, schema) => {
                *self = Self {
                    known: true,
                    schema: Some((bytes, schema)),
                    ..Self::default()
                };
            }
            Change::Dictionary(bytes) => {
                if self.known && self.apply_dictionary(&bytes).is_err() {
                    // The consumer's own decoder refused it too: a resuming
                    // consumer cannot be given the state, only told so.
                    self.known = false;
                }
            }
        }
    }

    fn apply_dictionary(&mut self, bytes: &Buffer) -> Result<(), ArrowError> {
        let err = |m: &str| ArrowError::IpcError(m.into());
        let (_, schema) = self.schema.as_ref().ok_or_else(|| err("no schema"))?;
        let (message, body_start) = message_metadata(bytes)?;
        let batch = message
            .header_as_dictionary_batch()
            .ok_or_else(|| err("not a dictionary batch"))?;
        let (id, delta) = (batch.id(), batch.isDelta());
        let body = bytes.slice(body_start);
        let version = message.version();
        // Validation on (read_dictionary_impl with skip_validation unset):
        // these bytes came from the arena.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            arrow_ipc::reader::read_dictionary(
                &body,
                batch,
                schema,
                &mut self.dictionaries,
                &version,
            )
        }))
        .unwrap_or_else(|_| Err(err("dictionary decoder panicked")))?;
        self.messages.insert(id, (!delta).then(|| bytes.clone()));
        Ok(())
    }

    /// The messages to save, encoding merged dictionaries as needed; `None`
    /// when the state is unknown or cannot be encoded.
    fn messages(&mut self) -> Option<Vec<Buffer>> {
        if !self.known {
            return None;
        }
        let (schema, _) = self.schema.as_ref()?;
        let mut out = vec![schema.clone()];
        for (id, message) in &mut self.messages {
            if message.is_none() {
                let merged = self.dictionaries.get(id)?;
                *message = Some(Buffer::from_vec(replacement_message(*id, merged).ok()?));
            }
            out.push(message.clone()?);
        }
        Some(out)
    }
}

/// The consumer's save area: two halves after the message part of the
/// arena, named by the `saved_state` word of the header.
pub(super) struct SaveArea {
    base: *mut u8,
    half_len: u64,
}

// SAFETY: `base` points into the mapping, which the consumer that owns this
// area keeps alive and moves with it.
unsafe impl Send for SaveArea {}

/// What [`SaveArea::peek_schema_message`] found.
pub(super) enum Peeked {
    /// Nothing saved.
    Nothing,
    /// A copy of the saved schema message (or why it cannot be read), and
    /// the `(word, from_seq, len)` the copy was taken under.
    Message {
        named: (u64, u64, u64),
        bytes: Result<Vec<u8>, String>,
    },
}

/// What a consumer attaching at `read_seq` restores.
pub(super) use crate::shm::header::SAVED_JOINED;

pub(super) enum Restored {
    /// Nothing saved (or nothing before the first schema was released).
    Nothing,
    /// The state did not fit when it was saved.
    Overflowed {
        /// Bytes a half holds, for the error message.
        half: u64,
    },
    /// The schema message, then one replacement message per dictionary.
    Messages(Vec<Buffer>),
    /// A subscription made mid-stream (`saved_state` [`SAVED_JOINED`]):
    /// nothing saved, and the messages before the next schema message
    /// cannot be decoded; they are skipped.
    Joined,
}

impl SaveArea {
    /// The save area of `save_len` bytes at `base`.
    ///
    /// # Safety
    ///
    /// `base..base + save_len` lies in the mapping and stays mapped while
    /// this value lives. Either this process holds the consumer role (the
    /// only writer of the area), or it only reads through this value with
    /// [`peek_schema_message`](Self::peek_schema_message) and
    /// [`named_state`](Self::named_state), whose copies are checked, never
    /// trusted, since the consumer may write the area meanwhile.
    pub(super) unsafe fn new(base: *mut u8, save_len: u64) -> Self {
        Self {
            base,
            half_len: (save_len / 2) & !(ARENA_ALIGN - 1),
        }
    }

    fn half_ptr(&self, half: u64) -> *mut u8 {
        // SAFETY: half < 2 and 2 * half_len <= save_len: inside the area.
        unsafe { self.base.add((half * self.half_len) as usize) }
    }

    /// Copies the header of `half`: (`from_seq`, `len`).
    fn header(&self, half: u64) -> (u64, u64) {
        let mut h = [0_u8; 16];
        // SAFETY: 16 <= HALF_HEADER <= half_len bytes of the half (a save
        // area too small for a header is never read: see restore).
        unsafe { std::ptr::copy_nonoverlapping(self.half_ptr(half), h.as_mut_ptr(), 16) };
        let word = |k: usize| u64::from_ne_bytes(h[k..k + 8].try_into().expect("8 bytes"));
        (word(0), word(8))
    }

    /// Saves `state` as holding from `from_seq` into the half that
    /// `saved_state` does not name, then names it (Release). The caller
    /// stores `read_seq = from_seq` after this.
    pub(super) fn save(&self, state: &mut ReleasedState, from_seq: u64, word: &AtomicU64) {
        if self.half_len < HALF_HEADER {
            return; // no room even for a header (arenas below 1 KiB)
        }
        // Relaxed: our own last store (or a predecessor's, read at attach
        // with Acquire); only this consumer stores the word.
        let named = word.load(Ordering::Relaxed);
        let half = if named == 1 { 1 } else { 0 };
        if named != 1 && named != 2 {
            // Nothing named yet (a subscription made mid-stream, or none
            // saved): the other half must say so, for a consumer that falls
            // back to it (see `restore`). From 0: it holds at any read_seq.
            let mut header = [0_u8; 16];
            header[8..].copy_from_slice(&JOINED_LEN.to_ne_bytes());
            // SAFETY: 16 bytes at the start of half 1 (half_len >=
            // HALF_HEADER, checked above), which no word names.
            unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), self.half_ptr(1), 16) };
        }
        let messages = state.messages();
        let room = self.half_len - HALF_HEADER;
        let len = messages
            .as_ref()
            .map(|m| m.iter().map(|b| b.len() as u64).sum::<u64>())
            .filter(|&total| total <= room);
        let dst = self.half_ptr(half);
        if let (Some(_), Some(messages)) = (len, &messages) {
            let mut at = HALF_HEADER as usize;
            for m in messages {
                // SAFETY: the messages total at most half_len - HALF_HEADER
                // bytes: inside this half, which the word does not name, so
                // no resuming consumer reads it until the store below.
                unsafe { std::ptr::copy_nonoverlapping(m.as_ptr(), dst.add(at), m.len()) };
                at += m.len();
            }
        }
        let mut header = [0_u8; 16];
        header[..8].copy_from_slice(&from_seq.to_ne_bytes());
        header[8..].copy_from_slice(&len.unwrap_or(OVERFLOWED).to_ne_bytes());
        // SAFETY: 16 bytes at the start of this half, as above.
        unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), dst, 16) };
        // SYNC POINT saved: Release publishes the half's bytes to the Acquire
        // load in `restore` (of a consumer that attaches later).
        word.store(half + 1, Ordering::Release);
    }

    /// A copy of the `len` bytes of messages in `half`; the caller checked
    /// `len <= half_len - HALF_HEADER`.
    fn copy_half(&self, half: u64, len: u64) -> Vec<u8> {
        assert!(len <= self.half_len - HALF_HEADER, "checked by the caller");
        let mut bytes = vec![0_u8; len as usize];
        // SAFETY: HALF_HEADER + len <= half_len (asserted): inside the half,
        // in the mapping; any bytes are valid u8s. A writer racing with the
        // copy (see peek_schema_message) yields bytes that are only parsed.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.half_ptr(half).add(HALF_HEADER as usize),
                bytes.as_mut_ptr(),
                bytes.len(),
            );
        }
        bytes
    }

    /// `(word, from_seq, len)` of the half the `saved_state` word names
    /// now, or `None` when it names none.
    pub(super) fn named_state(&self, word: &AtomicU64) -> Option<(u64, u64, u64)> {
        // SYNC POINT saved: Acquire pairs with the Release store in `save`.
        let named = word.load(Ordering::Acquire);
        if !(1..=2).contains(&named) || self.half_len < HALF_HEADER {
            return None;
        }
        let (from, len) = self.header(named - 1);
        Some((named, from, len))
    }

    /// A copy of the schema message of the state saved for `read_seq`,
    /// read without writing anything, for a process that inspects the ring
    /// without the consumer role. The consumer may be rewriting a half
    /// meanwhile: the caller checks afterwards that the half named is
    /// unchanged ([`named_state`](Self::named_state)), and parses the copy
    /// with checks only.
    pub(super) fn peek_schema_message(&self, read_seq: u64, word: &AtomicU64) -> Peeked {
        let Some((named, from, len)) = self.named_state(word) else {
            return Peeked::Nothing;
        };
        let message = |bytes| Peeked::Message {
            named: (named, from, len),
            bytes,
        };
        // A consumer killed between naming a half and storing read_seq left
        // the state at read_seq in the other half; `restore` takes that
        // half, and the next consumer names it again: the peek reads it.
        let (half, from, len) = if from > read_seq {
            let (f, l) = self.header(2 - named);
            (2 - named, f, l)
        } else {
            (named - 1, from, len)
        };
        if len == 0 || len == JOINED_LEN {
            // Nothing released before the first schema, or subscribed
            // mid-stream with nothing saved yet.
            return Peeked::Nothing;
        }
        if from > read_seq {
            return message(Err(format!(
                "saved state: both halves hold state from after read_seq {read_seq}"
            )));
        }
        if len == OVERFLOWED {
            return message(Err(format!(
                "saved state: the schema and dictionaries did not fit the save area's \
                 {}-byte halves",
                self.half_len
            )));
        }
        if len > self.half_len - HALF_HEADER {
            return message(Err(format!(
                "saved state: {len} bytes in a {}-byte half",
                self.half_len
            )));
        }
        let mut bytes = self.copy_half(half, len);
        message(match message_len(&bytes) {
            Ok(n) => {
                bytes.truncate(n);
                Ok(bytes)
            }
            Err(e) => Err(format!("saved state: {e}")),
        })
    }

    /// The state saved for a consumer resuming at `read_seq`.
    pub(super) fn restore(&self, read_seq: u64, word: &AtomicU64) -> Result<Restored, String> {
        // SYNC POINT saved: Acquire pairs with the Release store in `save`.
        let named = word.load(Ordering::Acquire);
        if named == SAVED_JOINED {
            return Ok(Restored::Joined);
        }
        if named == 0 || self.half_len < HALF_HEADER {
            return Ok(Restored::Nothing);
        }
        if named > 2 {
            return Err(format!("saved_state word {named}"));
        }
        let mut half = named - 1;
        let (mut from, mut len) = self.header(half);
        if from > read_seq {
            // Killed between naming this half and storing read_seq: the other
            // half was named until then and holds the state at read_seq.
            half ^= 1;
            (from, len) = self.header(half);
            if from > read_seq {
                return Err(format!(
                    "both halves hold state from after read_seq {read_seq}"
                ));
            }
            // Name it again, so that the next save may overwrite the half
            // that is ahead of read_seq. SYNC POINT saved: as in `save`.
            word.store(half + 1, Ordering::Release);
        }
        if len == JOINED_LEN {
            return Ok(Restored::Joined);
        }
        if len == OVERFLOWED {
            return Ok(Restored::Overflowed {
                half: self.half_len,
            });
        }
        if len > self.half_len - HALF_HEADER {
            return Err(format!("{len} bytes in a {}-byte half", self.half_len));
        }
        let bytes = self.copy_half(half, len);
        let mut messages = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let n = message_len(&bytes[at..]).map_err(|e| e.to_string())?;
            // Each in its own buffer: arrow allocates them 64-byte aligned,
            // so the bodies are aligned as in the arena.
            messages.push(Buffer::from(&bytes[at..at + n]));
            at += n;
        }
        Ok(if messages.is_empty() {
            Restored::Nothing
        } else {
            Restored::Messages(messages)
        })
    }
}

/// Whether `t` holds a dictionary anywhere (nested in lists, maps,
/// structs, unions or run-end encoded values): a stream of it carries
/// dictionary messages.
pub fn has_dictionary(t: &DataType) -> bool {
    match t {
        DataType::Dictionary(..) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => has_dictionary(f.data_type()),
        DataType::Struct(fs) => fs.iter().any(|f| has_dictionary(f.data_type())),
        DataType::Union(fs, _) => fs.iter().any(|(_, f)| has_dictionary(f.data_type())),
        DataType::RunEndEncoded(a, b) => {
            has_dictionary(a.data_type()) || has_dictionary(b.data_type())
        }
        _ => false,
    }
}

/// A replacement dictionary batch message for dictionary `id` with
/// `values`. arrow-ipc encodes dictionary messages only inside its stream
/// writer, so this encodes `values` as a one-column record batch and
/// rewrites its metadata as a dictionary batch (the body is the same).
fn replacement_message(id: i64, values: &ArrayRef) -> Result<Vec<u8>, ArrowError> {
    let err = |m: &str| ArrowError::IpcError(format!("encoding a merged dictionary: {m}"));
    if has_dictionary(values.data_type()) {
        // Its own dictionaries would need ids of the stream's.
        return Err(err("dictionary values that hold dictionaries"));
    }
    let field = Field::new("values", values.data_type().clone(), true);
    let schema = Arc::new(Schema::new(vec![field]));
    let batch = RecordBatch::try_new(schema.clone(), vec![values.clone()])?;
    let opts = IpcWriteOptions::try_new(64, false, MetadataVersion::V5)?;
    let mut encoder = StreamEncoder::try_new_with_options(&schema, opts)?;
    let mut bytes = Vec::new();
    for part in encoder.encode(&batch)? {
        bytes.extend_from_slice(&part);
    }
    // The schema message, then the record batch message.
    let batch_at = message_len(&bytes)?;
    let (message, body) = message_body(&bytes[batch_at..])?;
    let rb = message
        .header_as_record_batch()
        .filter(|_| message.header_type() == MessageHeader::RecordBatch)
        .ok_or_else(|| err("no record batch"))?;

    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let nodes: Vec<_> = rb
        .nodes()
        .map(|v| v.iter().copied().collect())
        .unwrap_or_default();
    let buffers: Vec<_> = rb
        .buffers()
        .map(|v| v.iter().copied().collect())
        .unwrap_or_default();
    let variadic: Option<Vec<i64>> = rb.variadicBufferCounts().map(|v| v.iter().collect());
    let nodes = fbb.create_vector(&nodes);
    let buffers = fbb.create_vector(&buffers);
    let variadic = variadic.map(|v| fbb.create_vector(&v));
    let data = arrow_ipc::RecordBatch::create(
        &mut fbb,
        &arrow_ipc::RecordBatchArgs {
            length: rb.length(),
            nodes: Some(nodes),
            buffers: Some(buffers),
            compression: None,
            variadicBufferCounts: variadic,
        },
    );
    let dictionary = arrow_ipc::DictionaryBatch::create(
        &mut fbb,
        &arrow_ipc::DictionaryBatchArgs {
            id,
            data: Some(data),
            isDelta: false,
        },
    );
    let root = arrow_ipc::Message::create(
        &mut fbb,
        &arrow_ipc::MessageArgs {
            version: MetadataVersion::V5,
            header_type: MessageHeader::DictionaryBatch,
            header: Some(dictionary.as_union_value()),
            bodyLength: message.bodyLength(),
            custom_metadata: None,
        },
    );
    fbb.finish(root, None);
    encapsulate(fbb.finished_data(), body)
}
