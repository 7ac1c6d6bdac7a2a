//! The schema of a ring's stream, read without attaching (for
//! `laminar-ring info`): from the schema message at `read_seq`, else the
//! consumer's saved state (the schema as of `read_seq`), else the first
//! schema message the producer has published after it.

use arrow_schema::{ArrowError, SchemaRef};

use super::framing::parse_schema;
use super::resume::SaveArea;
use super::{ArrowRingError, Descriptor, MSG_SCHEMA, split_arena};
use crate::shm::{OpenError, RingKind, Segment, SegmentOptions};

/// Attempts before giving up on a ring whose consumer keeps moving while
/// the schema is copied out.
const TRIES: usize = 3;

/// The schema of the stream in the Arrow ring `name` as a consumer
/// attaching now would decode it: `None` when no producer has sent a
/// schema that is still in the ring (or in the consumer's saved state).
/// Opens the ring read-only and takes no role, so it never disturbs a
/// running pipe.
///
/// # Errors
///
/// [`ArrowRingError::Open`] as for opening (`Mismatch` for a typed ring);
/// [`ArrowRingError::CorruptMessage`] for a schema message that cannot be
/// read, or one that kept changing while it was copied.
pub fn stream_schema(
    name: &str,
    opts: &SegmentOptions,
) -> Result<Option<SchemaRef>, ArrowRingError> {
    let seg = Segment::open_read_only(name, opts)?;
    let layout = *seg.layout();
    if layout.kind != RingKind::Arrow {
        return Err(OpenError::Mismatch {
            path: seg.path().to_owned(),
            what: "a typed ring, not an Arrow one: it has no schema".into(),
        }
        .into());
    }
    let bad_header = |source| OpenError::BadHeader {
        path: seg.path().to_owned(),
        source,
    };
    let (arena_len, save_len) = split_arena(layout.arena_len);
    let mut last = ArrowError::IpcError("no schema".into());
    for _ in 0..TRIES {
        let (read_seq, write_seq) = seg.sequences().map_err(bad_header)?;
        let found = (|| {
            // The message at read_seq, when it starts a new stream.
            if read_seq < write_seq {
                let d = descriptor(&seg, read_seq);
                if d.kind == MSG_SCHEMA {
                    return Some(message(&seg, arena_len, &d));
                }
            }
            // The state the consumer saved for read_seq.
            // SAFETY: the arena's last save_len bytes, inside the validated
            // arena of a mapping that outlives `save`; it is only read.
            let save =
                unsafe { SaveArea::new(seg.ptr_at(layout.arena_offset + arena_len), save_len) };
            let word = &seg.header().consumer.saved_state;
            if let Some(bytes) = save.peek_schema_message(read_seq, word) {
                return Some(Ok(bytes));
            }
            // Nothing saved: read_seq is at or before the first schema.
            let unread = (write_seq - read_seq).min(layout.capacity);
            (read_seq..read_seq + unread)
                .map(|seq| descriptor(&seg, seq))
                .find(|d| d.kind == MSG_SCHEMA)
                .map(|d| message(&seg, arena_len, &d))
        })();
        let parsed = match found {
            None => None,
            Some(Err(e)) => Some(Err(e)),
            Some(Ok(bytes)) => Some(
                std::panic::catch_unwind(|| parse_schema(&bytes)).unwrap_or_else(|_| {
                    Err(ArrowError::IpcError("schema decoder panicked".into()))
                }),
            ),
        };
        // What was copied holds only if the consumer did not release (and
        // the producer reuse) it meanwhile.
        let (again, _) = seg.sequences().map_err(bad_header)?;
        match parsed {
            Some(Ok(schema)) if again == read_seq => return Ok(Some(schema)),
            None if again == read_seq => return Ok(None),
            Some(Err(e)) if again == read_seq => {
                return Err(ArrowRingError::CorruptMessage {
                    seq: read_seq,
                    source: e,
                });
            }
            Some(Err(e)) => last = e,
            _ => {}
        }
    }
    Err(ArrowRingError::CorruptMessage {
        seq: seg.sequences().map_err(bad_header)?.0,
        source: ArrowError::IpcError(format!(
            "the consumer kept moving while the schema was read ({last})"
        )),
    })
}

/// A copy of the descriptor in the slot of `seq`.
fn descriptor(seg: &Segment, seq: u64) -> Descriptor {
    let l = seg.layout();
    let offset = l.slots_offset + (seq & (l.capacity - 1)) * l.slot_size;
    // A producer breaking the protocol can race with this read; any bytes
    // are a Descriptor (Pod), and every field is checked before use.
    // SAFETY: the slot lies within the validated slots area, aligned for a
    // Descriptor (slot_align and slot_size were checked against its type
    // when the ring was made, and validate() checked the layout).
    unsafe { seg.ptr_at(offset).cast::<Descriptor>().read_volatile() }
}

/// A copy of the message `d` names, after checking that it lies within the
/// message part of the arena.
fn message(seg: &Segment, arena_len: u64, d: &Descriptor) -> Result<Vec<u8>, ArrowError> {
    let start = d.pos % arena_len;
    if start.checked_add(d.len).is_none_or(|e| e > arena_len) {
        return Err(ArrowError::IpcError(format!(
            "schema message at {start}..+{} outside the {arena_len}-byte arena",
            d.len
        )));
    }
    let mut bytes = vec![0_u8; d.len as usize];
    // SAFETY: start + len <= arena_len: inside the arena, in the mapping;
    // any bytes are valid u8s, and they are parsed with checks only.
    unsafe {
        std::ptr::copy_nonoverlapping(
            seg.ptr_at(seg.layout().arena_offset + start),
            bytes.as_mut_ptr(),
            bytes.len(),
        );
    }
    Ok(bytes)
}
