//! The schema of a ring's stream, read without attaching (for
//! `laminar-ring info`): from the schema message at `read_seq`, else the
//! consumer's saved state (the schema as of `read_seq`), else the first
//! schema message the producer has published after it.
//!
//! Nothing here holds a role, so the consumer may release (and the
//! producer then reuse) what is being copied: every copy is checked
//! afterwards, seqlock-style, and only ever parsed with checks.

use arrow_schema::{ArrowError, SchemaRef};

use super::framing::parse_schema;
use super::resume::{Peeked, SaveArea};
use super::{ArrowRingError, Descriptor, MSG_SCHEMA, split_arena};
use crate::fanout::CURSOR_SUBSCRIBED;
use crate::shm::{OpenError, RingKind, Segment, SegmentOptions, ShmSlot, fingerprint};
use crate::sync::{Ordering, fence};

/// Attempts before giving up on a ring whose consumer keeps moving while
/// the schema is copied out.
const TRIES: usize = 8;

/// The largest schema message read (a schema of thousands of columns with
/// metadata is far smaller); a descriptor claiming more is not trusted
/// with an allocation of that size.
const MAX_SCHEMA_MESSAGE: u64 = 16 << 20;

/// Where a copied schema message came from, to check it is still valid.
enum Source {
    /// The descriptor of this sequence number: valid while `read_seq` has
    /// not passed it.
    Slot(u64),
    /// The save area, as this `(word, from_seq, len)` named it.
    Saved((u64, u64, u64)),
}

/// The schema of the stream in the Arrow ring `name` as a consumer
/// attaching now would decode it: `None` when no producer has sent a
/// schema that is still in the ring (or in the consumer's saved state).
/// Opens the ring read-only and takes no role, so it never disturbs a
/// running pipe.
///
/// # Errors
///
/// [`ArrowRingError::Open`] as for opening (`Mismatch` for a typed ring or
/// slots that are not descriptors); [`ArrowRingError::CorruptMessage`] for
/// a schema message or saved state that cannot be read, or when the
/// consumer moved on each time while the schema was copied.
pub fn stream_schema(
    name: &str,
    opts: &SegmentOptions,
) -> Result<Option<SchemaRef>, ArrowRingError> {
    let seg = Segment::open_read_only(name, opts)?;
    let layout = *seg.layout();
    let mismatch = |what: &str| OpenError::Mismatch {
        path: seg.path().to_owned(),
        what: what.to_owned(),
    };
    if layout.kind != RingKind::Arrow {
        return Err(mismatch("a typed ring, not an Arrow one: it has no schema").into());
    }
    if layout.slot_size != size_of::<Descriptor>() as u64
        || layout.slot_align != align_of::<Descriptor>() as u32
        || layout.type_fingerprint != fingerprint::<Descriptor>()
    {
        return Err(mismatch(&format!(
            "an Arrow ring whose slots are not {}",
            Descriptor::TYPE_NAME
        ))
        .into());
    }
    let bad_header = |source| OpenError::BadHeader {
        path: seg.path().to_owned(),
        source,
    };
    let corrupt = |seq, why: String| ArrowRingError::CorruptMessage {
        seq,
        source: ArrowError::IpcError(why),
    };
    let (arena_len, save_len) = split_arena(layout.arena_len);
    // The slowest subscriber's position and saved state: the schema as of
    // the oldest message the ring keeps for a consumer (cursor 0's when
    // none is subscribed: its state is then empty or stale, and only a
    // state saved for the position looked at is used).
    let cursors = seg.cursors();
    let slowest = cursors
        .iter()
        .enumerate()
        // Acquire: pairs with the Release stores of the subscription and
        // of read_seq; only numbers are read through them.
        .filter(|(_, c)| c.subscription.load(Ordering::Acquire) == CURSOR_SUBSCRIBED)
        .min_by_key(|(_, c)| c.read_seq.load(Ordering::Acquire))
        .map(|(i, _)| i);
    let (share_at, share_len) =
        super::save_share(save_len, layout.max_consumers, slowest.unwrap_or(0) as u32);
    // That cursor's share of the arena's last save_len bytes, inside the
    // validated arena of a mapping that outlives `save`; only read through
    // it, by copies that are checked afterwards (see
    // `SaveArea::peek_schema_message`).
    // SAFETY: the offset is within the validated layout (as above).
    let base = unsafe { seg.ptr_at(layout.arena_offset + arena_len + share_at) };
    // SAFETY: `base..base + share_len` lies in the mapping (as above).
    let save = unsafe { SaveArea::new(base, share_len) };
    let word = &cursors[slowest.unwrap_or(0)].saved_state;
    for _ in 0..TRIES {
        let (tail, write_seq) = seg.sequences().map_err(bad_header)?;
        let read_seq = slowest.map_or(tail, |i| {
            cursors[i]
                .read_seq
                .load(Ordering::Acquire)
                .clamp(tail, write_seq)
        });
        let found: Option<(Source, Result<Vec<u8>, String>)> = (|| {
            // The message at read_seq, when it starts a new stream.
            if read_seq < write_seq {
                let d = descriptor(&seg, read_seq);
                if d.kind == MSG_SCHEMA {
                    return Some((Source::Slot(read_seq), message(&seg, arena_len, &d)));
                }
            }
            // The state the consumer saved for read_seq.
            match save.peek_schema_message(read_seq, word) {
                Peeked::Nothing => {}
                Peeked::Message { named, bytes } => return Some((Source::Saved(named), bytes)),
            }
            // Nothing saved: read_seq is at or before the first schema.
            let unread = (write_seq - read_seq).min(layout.capacity);
            (read_seq..read_seq + unread).find_map(|seq| {
                let d = descriptor(&seg, seq);
                (d.kind == MSG_SCHEMA).then(|| (Source::Slot(seq), message(&seg, arena_len, &d)))
            })
        })();
        // The copies above are plain reads; the loads below decide whether
        // what they read still held. SYNC POINT peek: the Acquire fence
        // keeps the copies before those loads (a seqlock's read side).
        fence(Ordering::Acquire);
        let still = match &found {
            // The slots scanned (from read_seq on) not reused: the producer
            // overwrites only below the tail it published.
            None => seg.sequences().map_err(bad_header)?.0 <= read_seq,
            // Not released (so not reused) while read_seq has not passed it.
            Some((Source::Slot(seq), _)) => seg.sequences().map_err(bad_header)?.0 <= *seq,
            // Not rewritten while the word and the half's header are the same
            // (from_seq grows with every save: no ABA).
            Some((Source::Saved(named), _)) => save.named_state(word) == Some(*named),
        };
        if !still {
            continue;
        }
        return match found {
            None => Ok(None),
            Some((_, Err(why))) => Err(corrupt(read_seq, why)),
            Some((_, Ok(bytes))) => std::panic::catch_unwind(|| parse_schema(&bytes))
                .unwrap_or_else(|_| Err(ArrowError::IpcError("schema decoder panicked".into())))
                .map(Some)
                .map_err(|e| corrupt(read_seq, format!("schema message: {e}"))),
        };
    }
    Err(corrupt(
        seg.sequences().map_err(bad_header)?.0,
        "the consumer moved on each time the schema was read; try again".into(),
    ))
}

/// A copy of the descriptor in the slot of `seq`.
fn descriptor(seg: &Segment, seq: u64) -> Descriptor {
    let l = seg.layout();
    let offset = l.slots_offset + (seq & (l.capacity - 1)) * l.slot_size;
    // A producer breaking the protocol can race with this read; any bytes
    // are a Descriptor (Pod), and every field is checked before use.
    // SAFETY: stream_schema checked that the slots are Descriptors (size,
    // alignment, fingerprint), and validate() that the slots area lies in
    // the mapping and is aligned to slot_align: in bounds and aligned.
    unsafe { seg.ptr_at(offset).cast::<Descriptor>().read_volatile() }
}

/// A copy of the message `d` names, after checking that it lies within the
/// message part of the arena and is not implausibly large.
fn message(seg: &Segment, arena_len: u64, d: &Descriptor) -> Result<Vec<u8>, String> {
    let start = d.pos % arena_len;
    if start.checked_add(d.len).is_none_or(|e| e > arena_len) {
        return Err(format!(
            "schema message at {start}..+{} outside the {arena_len}-byte arena",
            d.len
        ));
    }
    if d.len > MAX_SCHEMA_MESSAGE {
        return Err(format!("a schema message of {} bytes", d.len));
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
