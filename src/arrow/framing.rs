//! Framing of Arrow IPC messages (the encapsulated format): the prefix,
//! the flatbuffer metadata and the body, checked before any decoder sees
//! them.

use std::sync::Arc;

use arrow_schema::{ArrowError, SchemaRef};

use super::{MSG_DICTIONARY, MSG_RECORD_BATCH};

/// The verified metadata of the IPC message at the start of `bytes`, and
/// the offset where its body starts; the body itself lies within `bytes`.
pub(super) fn message_metadata(
    bytes: &[u8],
) -> Result<(arrow_ipc::Message<'_>, usize), ArrowError> {
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
    // The ring's producer never compresses (a message is read in place).
    // A decoder built with arrow-ipc's lz4 or zstd feature (which another
    // crate in the build may turn on) would inflate a compressed body to
    // whatever size it claims: a few bytes from a hostile peer could cost
    // gigabytes.
    if let Some(c) = batch.compression() {
        return Err(err(format!(
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
            return Err(err(format!(
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
