//! Framing of Arrow IPC messages (the encapsulated format), the one place
//! that knows it: an 8-byte prefix (the continuation marker `0xFFFFFFFF`,
//! then the metadata length, a little-endian 32-bit integer), the
//! flatbuffer `Message` metadata (padded), then `bodyLength` bytes of body.
//! The producer splits arrow-ipc's output into messages here
//! ([`split_messages`]), the consumer checks every message here before any
//! decoder sees it, and the save area's replacement dictionaries are framed
//! here ([`encapsulate`]).
//!
//! Every length is read from bytes another process wrote: each is checked
//! against the bytes that are there, and a message that does not add up is
//! an `ArrowError`, never a panic.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow_buffer::Buffer;
use arrow_ipc::MessageHeader;
use arrow_schema::{ArrowError, SchemaRef};

use super::{ARENA_ALIGN, MSG_DICTIONARY, MSG_RECORD_BATCH, MSG_SCHEMA};

/// The continuation marker that opens every message's prefix.
const CONTINUATION: [u8; 4] = [0xff; 4];
/// Bytes of the prefix: the marker, then the metadata length.
const PREFIX_LEN: usize = 8;

fn ipc_error(m: impl Into<String>) -> ArrowError {
    ArrowError::IpcError(m.into())
}

/// The metadata length that the prefix at the start of `bytes` declares.
fn metadata_len(bytes: &[u8]) -> Result<usize, ArrowError> {
    let prefix = bytes
        .get(..PREFIX_LEN)
        .filter(|p| p[..4] == CONTINUATION)
        .ok_or_else(|| ipc_error("message without its prefix"))?;
    let len = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    usize::try_from(len).map_err(|_| ipc_error(format!("metadata length {len}")))
}

/// The verified flatbuffer metadata `meta`, and the body length it declares.
fn parse_metadata(meta: &[u8]) -> Result<(arrow_ipc::Message<'_>, usize), ArrowError> {
    parse_metadata_known(meta, None)
}

/// [`parse_metadata`], skipping the flatbuffer verifier for metadata that
/// `known` says has the shape of metadata verified before, and remembering
/// the shape of record batch metadata it verifies.
fn parse_metadata_known<'a>(
    meta: &'a [u8],
    known: Option<&mut KnownShape>,
) -> Result<(arrow_ipc::Message<'a>, usize), ArrowError> {
    let message = match known {
        Some(k) if k.matches(meta) => {
            // `meta` equals metadata that passed the verifier but
            // for bytes that hold only values: the elements of the `nodes`
            // and `buffers` vectors (structs of i64s) and the `length` and
            // `bodyLength` fields (i64s), none of which overlaps a byte the
            // verifier or an accessor navigates by (`KnownShape::of`; it
            // counts `version` among those on purpose: in a crafted buffer
            // where the record batch shares the message's vtable, `length`
            // falls on `version`'s slot). The
            // verifier's checks depend on those bytes and on the buffer's
            // length only, so it would pass `meta` as well; and any bytes
            // are a valid i64.
            // SAFETY: `meta` would pass the verifier, as argued above.
            unsafe { arrow_ipc::root_as_message_unchecked(meta) }
        }
        known => {
            let message = arrow_ipc::root_as_message(meta)
                .map_err(|e| ipc_error(format!("message metadata: {e}")))?;
            if let Some(k) = known {
                k.remember(meta, &message);
            }
            message
        }
    };
    let body_len = usize::try_from(message.bodyLength())
        .map_err(|_| ipc_error(format!("negative body length {}", message.bodyLength())))?;
    Ok((message, body_len))
}

/// The metadata of the last record batch message that passed the
/// flatbuffer verifier, and where in it lie the bytes that hold only values.
///
/// Verifying a record batch's metadata (arrow-ipc's generic flatbuffer
/// verifier) costs a third of a consumer's time on one-row batches, and a
/// stream's record batches mostly share one shape: the same tables, vtables
/// and vectors at the same places, differing only in row counts, null
/// counts and buffer offsets and lengths. Metadata equal to a verified one
/// except in those values passes the verifier as surely, so it is read
/// without it.
#[derive(Debug, Default)]
pub(super) struct KnownShape {
    meta: Vec<u8>,
    /// Disjoint byte ranges of `meta`, sorted, that hold only values.
    values: Vec<std::ops::Range<usize>>,
}

impl KnownShape {
    /// Whether `meta` equals the remembered metadata outside its value
    /// bytes (and something is remembered).
    fn matches(&self, meta: &[u8]) -> bool {
        if self.meta.is_empty() || meta.len() != self.meta.len() {
            return false;
        }
        let mut at = 0;
        for r in &self.values {
            if meta[at..r.start] != self.meta[at..r.start] {
                return false;
            }
            at = r.end;
        }
        meta[at..] == self.meta[at..]
    }

    /// Remembers the shape of `message`, just verified from `meta`, if it
    /// is a record batch of the plain shape this ring's producer writes;
    /// otherwise forgets any shape.
    fn remember(&mut self, meta: &[u8], message: &arrow_ipc::Message<'_>) {
        match Self::of(meta, message) {
            Some(values) => {
                self.meta.clear();
                self.meta.extend_from_slice(meta);
                self.values = values;
            }
            None => {
                self.meta.clear();
                self.values.clear();
            }
        }
    }

    /// The value ranges of a verified record batch's metadata: its
    /// `bodyLength`, its batch's `length`, and the elements of its `nodes`
    /// and `buffers` vectors. `None` for any other shape: another header,
    /// custom metadata, compression, variadic buffer counts, or a value
    /// range that overlaps another one or any byte that the verifier or an
    /// accessor navigates by (the root offset, each table's vtable offset,
    /// vtable, offset fields, `version` and `header_type`, and the two
    /// vectors' length prefixes). Sharing bytes is legal in a flatbuffer,
    /// so a crafted one could make a "value" steer navigation: such a shape
    /// is verified every time instead.
    fn of(meta: &[u8], message: &arrow_ipc::Message<'_>) -> Option<Vec<std::ops::Range<usize>>> {
        use arrow_ipc::{Message, RecordBatch};
        if message.custom_metadata().is_some() {
            return None;
        }
        let batch = message.header_as_record_batch()?;
        if batch.compression().is_some() || batch.variadicBufferCounts().is_some() {
            return None;
        }
        let base = meta.as_ptr() as usize;
        let at = |bytes: &[u8]| {
            let start = bytes.as_ptr() as usize - base;
            start..start + bytes.len()
        };
        // A vtable's bytes, at least its two leading sizes (which the
        // verifier reads even when they say the vtable is shorter).
        let vtable = |t: &flatbuffers::Table<'_>| {
            let r = at(t.vtable().as_bytes());
            r.start..r.end.max(r.start + 4)
        };
        // A field's bytes, when the vtable has it.
        let field = |t: &flatbuffers::Table<'_>, slot: flatbuffers::VOffsetT, size: usize| {
            let off = usize::from(t.vtable().get(slot));
            (off != 0).then(|| t.loc() + off..t.loc() + off + size)
        };
        let (m, b) = (&message._tab, &batch._tab);
        let nodes = at(batch.nodes()?.bytes());
        let buffers = at(batch.buffers()?.bytes());
        let mut values: Vec<std::ops::Range<usize>> = [
            field(m, Message::VT_BODYLENGTH, 8),
            field(b, RecordBatch::VT_LENGTH, 8),
            Some(nodes.clone()),
            Some(buffers.clone()),
        ]
        .into_iter()
        .flatten()
        .filter(|r| !r.is_empty())
        .collect();
        let structure = [
            Some(0..4),
            Some(m.loc()..m.loc() + 4),
            Some(vtable(m)),
            field(m, Message::VT_VERSION, 2),
            field(m, Message::VT_HEADER_TYPE, 1),
            field(m, Message::VT_HEADER, 4),
            Some(b.loc()..b.loc() + 4),
            Some(vtable(b)),
            field(b, RecordBatch::VT_NODES, 4),
            field(b, RecordBatch::VT_BUFFERS, 4),
            Some(nodes.start.checked_sub(4)?..nodes.start),
            Some(buffers.start.checked_sub(4)?..buffers.start),
        ];
        let overlap = |a: &std::ops::Range<usize>, b: &std::ops::Range<usize>| {
            a.start < b.end && b.start < a.end
        };
        values.sort_by_key(|r| r.start);
        let disjoint = values.windows(2).all(|w| w[0].end <= w[1].start)
            && values
                .iter()
                .all(|v| v.end <= meta.len() && structure.iter().flatten().all(|s| !overlap(v, s)));
        disjoint.then_some(values)
    }
}

/// The ring's kind ([`MSG_SCHEMA`], ...) of a message of type `header`.
fn kind_of(header: MessageHeader) -> Option<u32> {
    match header {
        MessageHeader::Schema => Some(MSG_SCHEMA),
        MessageHeader::DictionaryBatch => Some(MSG_DICTIONARY),
        MessageHeader::RecordBatch => Some(MSG_RECORD_BATCH),
        _ => None,
    }
}

/// The verified metadata of the IPC message at the start of `bytes`, and
/// the offset where its body starts; the body itself lies within `bytes`.
pub(super) fn message_metadata(
    bytes: &[u8],
) -> Result<(arrow_ipc::Message<'_>, usize), ArrowError> {
    message_metadata_known(bytes, None)
}

/// [`message_metadata`] with a [`KnownShape`] of record batch metadata.
fn message_metadata_known<'a>(
    bytes: &'a [u8],
    known: Option<&mut KnownShape>,
) -> Result<(arrow_ipc::Message<'a>, usize), ArrowError> {
    let meta_len = metadata_len(bytes)?;
    let body_start = PREFIX_LEN.saturating_add(meta_len);
    let meta = bytes
        .get(PREFIX_LEN..body_start)
        .ok_or_else(|| ipc_error("metadata longer than its message"))?;
    let (message, body_len) = parse_metadata_known(meta, known)?;
    // body_start <= bytes.len(): `meta` ends there.
    let after = bytes.len() - body_start;
    if body_len > after {
        return Err(ipc_error(format!(
            "body of {body_len} bytes, but only {after} follow the metadata"
        )));
    }
    Ok((message, body_start))
}

/// The IPC message at the start of `bytes` (its metadata) and its body.
pub(super) fn message_body(bytes: &[u8]) -> Result<(arrow_ipc::Message<'_>, &[u8]), ArrowError> {
    let (message, body_start) = message_metadata(bytes)?;
    // message_metadata checked that the body lies within `bytes`.
    let body_len = message.bodyLength() as usize;
    Ok((message, &bytes[body_start..][..body_len]))
}

/// The schema in a schema message.
pub(super) fn parse_schema(bytes: &[u8]) -> Result<SchemaRef, ArrowError> {
    let (message, _) = message_metadata(bytes)?;
    let schema = message
        .header_as_schema()
        .ok_or_else(|| ArrowError::IpcError("a schema slot that holds no schema".into()))?;
    Ok(Arc::new(arrow_ipc::convert::try_fb_to_schema(schema)?))
}

/// The metadata of the dictionary or record batch message that is all of
/// `bytes`, and the offset of its body, after checking that the message is
/// of `kind`, ends where `bytes` ends, is not compressed, and declares
/// every buffer inside its body.
pub(super) fn data_message<'a>(
    bytes: &'a [u8],
    kind: u32,
    known: &mut KnownShape,
) -> Result<(arrow_ipc::Message<'a>, usize), ArrowError> {
    let known = (kind == MSG_RECORD_BATCH).then_some(known);
    let (message, body_start) = message_metadata_known(bytes, known)?;
    let body_len = message.bodyLength() as u64; // non-negative: checked there
    let left_over = (bytes.len() - body_start) as u64 - body_len;
    if left_over != 0 {
        return Err(ipc_error(format!(
            "{left_over} bytes left over after one message"
        )));
    }
    let batch = match (kind, message.header_type()) {
        (MSG_RECORD_BATCH, MessageHeader::RecordBatch) => message.header_as_record_batch(),
        (MSG_DICTIONARY, MessageHeader::DictionaryBatch) => {
            message.header_as_dictionary_batch().and_then(|d| d.data())
        }
        (_, other) => {
            return Err(ipc_error(format!(
                "a {other:?} message in a slot of kind {kind}"
            )));
        }
    }
    .ok_or_else(|| ipc_error("message header missing"))?;
    // The ring's producer never compresses (a message is read in place).
    // A decoder built with arrow-ipc's lz4 or zstd feature (which another
    // crate in the build may turn on) would inflate a compressed body to
    // whatever size it claims: a few bytes from a hostile peer could cost
    // gigabytes.
    if let Some(c) = batch.compression() {
        return Err(ipc_error(format!(
            "a {:?}-compressed message: ring messages are never compressed",
            c.codec()
        )));
    }
    for (i, b) in batch.buffers().into_iter().flatten().enumerate() {
        let ok = u64::try_from(b.offset())
            .ok()
            .zip(u64::try_from(b.length()).ok())
            .and_then(|(o, l)| o.checked_add(l))
            .is_some_and(|end| end <= body_len);
        if !ok {
            return Err(ipc_error(format!(
                "buffer {i} at {}+{} outside the {body_len}-byte body",
                b.offset(),
                b.length()
            )));
        }
    }
    Ok((message, body_start))
}

/// Length of the IPC message at the start of `bytes`: prefix, metadata and
/// body.
pub(super) fn message_len(bytes: &[u8]) -> Result<usize, ArrowError> {
    let (message, body_start) = message_metadata(bytes)?;
    Ok(body_start + message.bodyLength() as usize)
}

/// The message with metadata `meta` and body `body`, framed: the prefix,
/// the metadata padded so that the body starts 64-byte aligned (as the
/// producer writes messages), then the body.
pub(super) fn encapsulate(meta: &[u8], body: &[u8]) -> Result<Vec<u8>, ArrowError> {
    let padded = (PREFIX_LEN + meta.len()).next_multiple_of(ARENA_ALIGN as usize) - PREFIX_LEN;
    // The format's metadata length is a signed 32-bit integer.
    let meta_len = i32::try_from(padded)
        .map_err(|_| ipc_error(format!("metadata of {} bytes", meta.len())))?;
    let mut out = Vec::with_capacity(PREFIX_LEN + padded + body.len());
    out.extend_from_slice(&CONTINUATION);
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(meta);
    out.resize(PREFIX_LEN + padded, 0);
    out.extend_from_slice(body);
    Ok(out)
}

/// One IPC message of arrow-ipc's output, as zero-copy slices of its
/// buffers (whose body parts still point at the batch's own memory).
#[derive(Debug)]
pub(super) struct EncodedMessage {
    /// [`MSG_SCHEMA`], [`MSG_DICTIONARY`] or [`MSG_RECORD_BATCH`].
    pub(super) kind: u32,
    pub(super) parts: Vec<Buffer>,
    /// Bytes of all parts.
    pub(super) len: u64,
}

/// Splits arrow-ipc's output for one batch into its IPC messages.
pub(super) fn split_messages(parts: Vec<Buffer>) -> Result<Vec<EncodedMessage>, ArrowError> {
    let bad = |m: &str| ipc_error(format!("encoder output: {m}"));
    let context = |e: ArrowError| match e {
        ArrowError::IpcError(m) => bad(&m),
        other => other,
    };
    let mut cursor = Parts {
        parts: parts.into_iter().filter(|p| !p.is_empty()).collect(),
    };
    let mut out = Vec::new();
    while cursor.remaining() > 0 {
        let mut msg_parts = Vec::new();
        if !cursor.take(PREFIX_LEN, &mut msg_parts) {
            return Err(bad("message prefix cut short"));
        }
        let meta_len = metadata_len(&concat(&msg_parts)).map_err(context)?;
        let mut meta_parts = Vec::new();
        if !cursor.take(meta_len, &mut meta_parts) {
            return Err(bad("metadata cut short"));
        }
        let meta = concat(&meta_parts);
        msg_parts.extend(meta_parts);
        let (message, body_len) = parse_metadata(&meta).map_err(context)?;
        let kind = kind_of(message.header_type()).ok_or_else(|| bad("unexpected message type"))?;
        if !cursor.take(body_len, &mut msg_parts) {
            return Err(bad("body cut short"));
        }
        let len = msg_parts.iter().map(|p| p.len() as u64).sum();
        out.push(EncodedMessage {
            kind,
            parts: msg_parts,
            len,
        });
    }
    Ok(out)
}

/// A cursor over arrow-ipc's output buffers, handing out byte ranges as
/// zero-copy slices of them.
struct Parts {
    parts: VecDeque<Buffer>,
}

impl Parts {
    fn remaining(&self) -> usize {
        self.parts.iter().map(Buffer::len).sum()
    }

    /// The next `n` bytes, as slices of the underlying buffers; `false` if
    /// fewer are left.
    fn take(&mut self, mut n: usize, out: &mut Vec<Buffer>) -> bool {
        while n > 0 {
            let Some(front) = self.parts.pop_front() else {
                return false;
            };
            if front.len() <= n {
                n -= front.len();
                out.push(front);
            } else {
                out.push(front.slice_with_length(0, n));
                self.parts.push_front(front.slice(n));
                n = 0;
            }
        }
        true
    }
}

fn concat(parts: &[Buffer]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(Buffer::len).sum());
    for p in parts {
        out.extend_from_slice(p.as_slice());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int32Array, RecordBatch};
    use arrow_ipc::MetadataVersion;
    use arrow_ipc::writer::{IpcWriteOptions, StreamEncoder};
    use arrow_schema::{DataType, Field, Schema};

    /// arrow-ipc's output for one batch: a schema message, then a record
    /// batch message.
    fn encoder_output() -> Vec<Buffer> {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let column = Arc::new(Int32Array::from(vec![1, 2, 3]));
        let batch = RecordBatch::try_new(schema.clone(), vec![column]).expect("batch");
        let opts = IpcWriteOptions::try_new(64, false, MetadataVersion::V5).expect("options");
        let mut encoder = StreamEncoder::try_new_with_options(&schema, opts).expect("encoder");
        encoder.encode(&batch).expect("encode")
    }

    fn messages() -> Vec<EncodedMessage> {
        split_messages(encoder_output()).expect("split")
    }

    /// The metadata of the record batch message arrow-ipc writes for
    /// `strings` (a nullable Utf8 column) and a Int32 column of as many rows.
    fn batch_metadata(strings: &[Option<&str>]) -> Vec<u8> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int32, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let n = strings.len() as i32;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int32Array::from_iter_values(0..n)),
                Arc::new(arrow_array::StringArray::from(strings.to_vec())),
            ],
        )
        .expect("batch");
        let opts = IpcWriteOptions::try_new(64, false, MetadataVersion::V5).expect("options");
        let mut encoder = StreamEncoder::try_new_with_options(&schema, opts).expect("encoder");
        let messages = split_messages(encoder.encode(&batch).expect("encode")).expect("split");
        let bytes = concat(&messages[1].parts);
        let meta_len = metadata_len(&bytes).expect("prefix");
        bytes[PREFIX_LEN..PREFIX_LEN + meta_len].to_vec()
    }

    /// The values a record batch's metadata holds, as its accessors read
    /// them.
    #[allow(clippy::type_complexity)]
    fn read(m: &arrow_ipc::Message<'_>) -> (i16, i64, i64, Vec<(i64, i64)>, Vec<(i64, i64)>) {
        let b = m.header_as_record_batch().expect("a record batch");
        let nodes = b.nodes().expect("nodes").iter();
        let buffers = b.buffers().expect("buffers").iter();
        (
            m.version().0,
            m.bodyLength(),
            b.length(),
            nodes.map(|n| (n.length(), n.null_count())).collect(),
            buffers.map(|x| (x.offset(), x.length())).collect(),
        )
    }

    /// A xorshift generator of test bytes and positions.
    fn xorshift(mut state: u64) -> impl FnMut() -> usize {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        }
    }

    /// The soundness claim of `KnownShape`: metadata it lets through
    /// unverified is metadata the verifier passes. 20,000 corruptions of 1
    /// to 3 bytes of a record batch's metadata, after the shape of another
    /// batch's metadata was remembered: whenever the shape matches, the
    /// verifier must pass the bytes too, and read them the same.
    #[test]
    fn metadata_of_a_known_shape_is_metadata_the_verifier_passes() {
        let first = batch_metadata(&[Some("a"), None, Some("bcd")]);
        let second = batch_metadata(&[Some("efgh"), Some("i"), None]);
        let mut known = KnownShape::default();
        let (message, _) = parse_metadata_known(&first, Some(&mut known)).expect("valid");
        assert!(message.header_as_record_batch().is_some());
        assert!(known.matches(&second), "same shape, other values");
        assert!(!known.values.is_empty());
        let (message, body) = parse_metadata_known(&second, Some(&mut known)).expect("known");
        assert_eq!(body, message.bodyLength() as usize);
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let (mut matched, mut verified) = (0, 0);
        for _ in 0..20_000 {
            let mut bytes = second.clone();
            for _ in 0..1 + next() % 3 {
                let at = next() % bytes.len();
                bytes[at] ^= 1 << (next() % 8);
            }
            if known.matches(&bytes) {
                matched += 1;
                let checked = arrow_ipc::root_as_message(&bytes).expect("the verifier passes it");
                let Ok((unchecked, _)) = parse_metadata_known(&bytes, Some(&mut known)) else {
                    assert!(checked.bodyLength() < 0, "refused only for its body length");
                    continue;
                };
                assert_eq!(read(&checked), read(&unchecked));
            } else {
                verified += 1;
                let theirs = arrow_ipc::root_as_message(&bytes).is_ok();
                let ours = parse_metadata_known(&bytes, Some(&mut known)).is_ok();
                // A negative body length is ours to refuse as well.
                assert!(!ours || theirs, "accepted what the verifier refuses");
                // Keep the remembered shape that of the valid batches.
                known.remember(&first, &arrow_ipc::root_as_message(&first).expect("valid"));
            }
        }
        assert!(
            matched > 1_000 && verified > 1_000,
            "{matched} matched, {verified} verified"
        );
    }

    /// The same claim for remembered shapes that are not arrow-ipc's: bytes
    /// of a record batch's metadata corrupted at random until the verifier
    /// passes them, so that tables, vtables and vectors lie in odd places
    /// (or share bytes). Whenever such a shape is remembered, metadata
    /// with random bytes in all its value ranges must pass the verifier
    /// and read the same.
    #[test]
    fn any_remembered_shape_admits_only_metadata_the_verifier_passes() {
        let base = batch_metadata(&[Some("efgh"), Some("i"), None]);
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let (mut shapes, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut shape = base.clone();
            for _ in 0..1 + next() % 4 {
                let at = next() % shape.len();
                shape[at] = next() as u8;
            }
            let Ok(message) = arrow_ipc::root_as_message(&shape) else {
                continue;
            };
            let mut known = KnownShape::default();
            known.remember(&shape, &message);
            if known.meta.is_empty() {
                refused += 1;
                continue;
            }
            shapes += 1;
            for _ in 0..4 {
                let mut bytes = shape.clone();
                for r in &known.values {
                    for b in &mut bytes[r.clone()] {
                        *b = next() as u8;
                    }
                }
                assert!(known.matches(&bytes));
                let checked = arrow_ipc::root_as_message(&bytes).expect("the verifier passes it");
                // SAFETY: what is under test; the verifier just passed it.
                let unchecked = unsafe { arrow_ipc::root_as_message_unchecked(&bytes) };
                assert_eq!(read(&checked), read(&unchecked));
            }
        }
        assert!(
            shapes > 500 && refused > 0,
            "{shapes} shapes, {refused} refused"
        );
    }

    #[test]
    fn a_shape_with_custom_metadata_or_another_header_is_not_remembered() {
        let schema = Schema::new(vec![Field::new("x", DataType::Int32, false)]);
        let schema_meta = arrow_ipc::writer::IpcDataGenerator::default()
            .schema_to_bytes_with_dictionary_tracker(
                &schema,
                &mut arrow_ipc::writer::DictionaryTracker::new(false),
                &IpcWriteOptions::default(),
            )
            .ipc_message;
        let mut known = KnownShape::default();
        parse_metadata_known(&schema_meta, Some(&mut known)).expect("a schema");
        assert!(
            !known.matches(&schema_meta),
            "a schema message is always verified"
        );
    }

    #[test]
    fn the_encoders_output_splits_into_a_schema_and_a_record_batch_message() {
        let messages = messages();
        let kinds: Vec<u32> = messages.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, [MSG_SCHEMA, MSG_RECORD_BATCH]);
        for m in &messages {
            let bytes = concat(&m.parts);
            assert_eq!(bytes.len() as u64, m.len);
            assert_eq!(message_len(&bytes).expect("framed"), bytes.len());
        }
        let record = concat(&messages[1].parts);
        data_message(&record, MSG_RECORD_BATCH, &mut KnownShape::default())
            .expect("a record batch message");
    }

    #[test]
    fn every_cut_of_a_message_is_an_error_never_a_panic() {
        for m in messages() {
            let bytes = concat(&m.parts);
            for n in 0..bytes.len() {
                assert!(message_metadata(&bytes[..n]).is_err(), "cut at {n}");
            }
            let mut parts = m.parts.clone();
            let last = parts.pop().expect("a part");
            parts.push(last.slice_with_length(0, last.len() - 1));
            assert!(split_messages(parts).is_err(), "encoder output cut short");
        }
    }

    #[test]
    fn a_wrong_marker_or_a_metadata_length_past_the_end_is_refused() {
        let bytes = concat(&messages()[0].parts);
        let mut no_marker = bytes.clone();
        no_marker[0] = 0;
        let e = message_metadata(&no_marker).expect_err("no marker");
        assert!(e.to_string().contains("without its prefix"), "{e}");
        for len in [u32::MAX, i32::MAX as u32 + 1, bytes.len() as u32] {
            let mut long = bytes.clone();
            long[4..8].copy_from_slice(&len.to_le_bytes());
            let e = message_metadata(&long).expect_err("metadata length past the end");
            assert!(e.to_string().contains("metadata longer"), "{len}: {e}");
            let e = split_messages(vec![Buffer::from(long)]).expect_err("split");
            assert!(e.to_string().contains("encoder output"), "{len}: {e}");
        }
    }

    #[test]
    fn a_body_length_past_the_end_is_refused() {
        let bytes = concat(&messages()[1].parts);
        let (message, body_start) = message_metadata(&bytes).expect("framed");
        let meta = &bytes[PREFIX_LEN..body_start];
        let body = &bytes[body_start..];
        assert!(!body.is_empty());
        let framed = encapsulate(meta, &body[..body.len() - 1]).expect("encapsulate");
        let e = message_metadata(&framed).expect_err("body cut short");
        assert!(e.to_string().contains("follow the metadata"), "{e}");
        assert_eq!(message.bodyLength() as usize, body.len());
    }

    #[test]
    fn encapsulate_frames_a_message_whose_body_starts_aligned() {
        let bytes = concat(&messages()[1].parts);
        let (_, body_start) = message_metadata(&bytes).expect("framed");
        let (meta, body) = (&bytes[PREFIX_LEN..body_start], &bytes[body_start..]);
        // Metadata of a length that needs padding (a flatbuffer may be
        // followed by bytes it does not use).
        let mut odd_meta = meta.to_vec();
        odd_meta.push(0);
        assert_ne!((PREFIX_LEN + odd_meta.len()) % ARENA_ALIGN as usize, 0);
        let framed = encapsulate(&odd_meta, body).expect("encapsulate");
        let (message, at) = message_metadata(&framed).expect("framed again");
        assert_eq!(at % ARENA_ALIGN as usize, 0);
        assert_eq!(&framed[at..], body);
        assert_eq!(message.header_type(), MessageHeader::RecordBatch);
    }
}
