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
    let message = arrow_ipc::root_as_message(meta)
        .map_err(|e| ipc_error(format!("message metadata: {e}")))?;
    let body_len = usize::try_from(message.bodyLength())
        .map_err(|_| ipc_error(format!("negative body length {}", message.bodyLength())))?;
    Ok((message, body_len))
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
    let meta_len = metadata_len(bytes)?;
    let body_start = PREFIX_LEN.saturating_add(meta_len);
    let meta = bytes
        .get(PREFIX_LEN..body_start)
        .ok_or_else(|| ipc_error("metadata longer than its message"))?;
    let (message, body_len) = parse_metadata(meta)?;
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
pub(super) fn data_message(
    bytes: &[u8],
    kind: u32,
) -> Result<(arrow_ipc::Message<'_>, usize), ArrowError> {
    let (message, body_start) = message_metadata(bytes)?;
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
        data_message(&record, MSG_RECORD_BATCH).expect("a record batch message");
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
