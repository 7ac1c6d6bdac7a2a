//! The segment's `#[repr(C)]` header (layout version 5) and its validation.
//!
//! Byte layout, protocol and orderings are specified in `docs/FORMAT.md`;
//! the compile-time assertions at the bottom pin every offset given there.
//!
//! Everything in a segment is input from another process. [`validate`] takes
//! a copy of the header's fields (read once from the mapping) and the file's
//! length, and returns either a [`Layout`] whose every offset and length has
//! been checked to lie inside the file, or a [`HeaderError`] that says what is
//! wrong. It never panics, whatever the bytes.

use std::mem::{offset_of, size_of};

use bytemuck::{Pod, Zeroable};

use crate::error::check_capacity;
use crate::fanout::Policy;
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::wait::WaitCell;

pub use super::slot::fingerprint;

/// First 8 bytes of every segment.
pub const MAGIC: [u8; 8] = *b"LAMRING\0";
/// The layout this build writes and reads.
pub const LAYOUT_VERSION: u32 = 5;
/// Alignment and size of one header line: two 64-byte cache lines, because
/// adjacent-line prefetch pairs them (see `RingBuffer`).
pub const LINE: usize = 128;
/// Largest capacity accepted at open (2^32 slots).
pub const MAX_CAPACITY: u64 = 1 << 32;
/// Largest slot alignment accepted.
pub const MAX_SLOT_ALIGN: u32 = 4096;
/// Largest position a side resumes from when it attaches: `write_seq` and
/// `read_seq` (one per item) and an Arrow ring's `arena_head` (one per byte)
/// only grow, and none reaches 2^63 (29 years at 10^10 items or bytes a
/// second; `arena_head` grows up to 16 times as fast as bytes are written,
/// when the producer starts arena laps early: 1.8 years). One beyond it was set by another process, and advancing it
/// could wrap past `u64::MAX`.
pub const MAX_POSITION: u64 = 1 << 63;

/// Most consumer cursors a ring may have (`max_consumers`): each sleeps
/// as its own bit of the `not_empty` waiter word.
pub const MAX_CONSUMERS: u32 = 32;
/// Consumer cursors of a ring created without saying how many.
pub const DEFAULT_CONSUMERS: u32 = 8;
/// Longest subscription name, in bytes of UTF-8.
pub const MAX_SUBSCRIBER_NAME: usize = 32;

/// `saved_state` of an Arrow ring's cursor subscribed while a stream may
/// be running: nothing saved, and its consumer skips the messages before
/// the next schema message (it cannot decode them: their schema came
/// before its start).
pub const SAVED_JOINED: u64 = 3;

/// `state` before the creator has finished initialising the segment.
pub const STATE_INITIALIZING: u32 = 0;
/// `state` once every field of the header is final (stored with Release).
pub const STATE_READY: u32 = 0x5245_4459; // "READY" in spirit, unlikely by chance

/// What the slots hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RingKind {
    /// Fixed-size plain-data (`bytemuck::Pod`) values.
    Typed = 1,
    /// Descriptors of Arrow IPC messages in the arena.
    Arrow = 2,
}

impl RingKind {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Typed),
            2 => Some(Self::Arrow),
            _ => None,
        }
    }
}

/// `flags` bit: the ring is temporary; a consumer that reaches a clean end
/// of stream removes it when no other process holds a role in it.
pub(crate) const FLAG_TEMPORARY: u32 = 1;
/// `flags` bit: the ring's policy is [`Policy::Lag`]; `lag_bound` and
/// `lag_grace_ms` say with what.
pub(crate) const FLAG_LAG: u32 = 2;
/// Every `flags` bit this build knows.
pub(crate) const FLAGS_KNOWN: u32 = FLAG_TEMPORARY | FLAG_LAG;

/// `dropped_at` bit: the subscription, subscribed again, skips end records
/// it had not read (it was dropped more than half the end log behind).
pub(crate) const DROPPED_ENDS: u64 = 1 << 63;

/// Role states in `producer_state` / `consumer_state`.
pub(crate) const ROLE_NEVER: u32 = 0;
/// A process attached in this role (it may since have died: see the lock).
pub(crate) const ROLE_ATTACHED: u32 = 1;
/// The last process in this role detached cleanly (producer: end of stream).
pub(crate) const ROLE_CLOSED: u32 = 2;
/// Producer only: the last producer gave up with an error (its reason is in
/// [`ProducerLine::failure`]); the stream ends in error, not cleanly.
pub(crate) const ROLE_FAILED: u32 = 3;
/// Consumer cursors only: a process is subscribing the cursor (stored
/// before the subscription and replaced when it is complete). Found with
/// the cursor's lock free, the subscriber died part-way: the subscription
/// is made again.
pub(crate) const ROLE_SUBSCRIBING: u32 = 4;

/// Bytes of a producer's failure reason kept in the header (UTF-8, padded
/// with NULs, cut at a character boundary).
pub const FAILURE_REASON_LEN: usize = 64;

/// Records in the end log (`docs/FORMAT.md`): how many producer sessions may have
/// ended without the consumer having read their end.
pub const END_LOG_LEN: u64 = 16;
/// End record kind: the producer closed its stream (end of stream).
pub(crate) const END_CLOSED: u32 = 1;
/// End record kind: the producer failed; the record holds its reason.
pub(crate) const END_FAILED: u32 = 2;
/// End record kind: the producer died (appended by the next producer).
pub(crate) const END_DIED: u32 = 3;

/// The immutable part of line 0, written by the creator before `state`
/// becomes [`STATE_READY`] and never after.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct HeaderFields {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub layout_version: u32,
    /// Size of the header in bytes ([`HEADER_LEN`]).
    pub header_len: u32,
    /// [`RingKind`] as a `u32`.
    pub kind: u32,
    /// Alignment of one slot in bytes (a power of two).
    pub slot_align: u32,
    /// Number of slots (a power of two).
    pub capacity: u64,
    /// Size of one slot in bytes (a multiple of `slot_align`).
    pub slot_size: u64,
    /// Fingerprint of the slot type (typed rings), or of the descriptor.
    pub type_fingerprint: u64,
    /// Offset of slot 0 from the start of the segment.
    pub slots_offset: u64,
    /// Offset of the arena (Arrow rings), 0 for typed rings.
    pub arena_offset: u64,
    /// Length of the arena in bytes, 0 for typed rings.
    pub arena_len: u64,
    /// Length of the segment as created; the file must be at least this long.
    pub total_len: u64,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_unix_ns: u64,
}

/// Bytes of the header that this process never reads through a reference:
/// the immutable fields (copied out once, with a volatile read, at open),
/// reserved words and the rest of each line.
///
/// Another process may write them at any time (the creator while it
/// initialises the header, a misbehaving peer whenever it likes), so a
/// `&SegmentHeader` must not claim they stay unchanged: an `UnsafeCell`
/// makes the reference claim nothing about them.
#[repr(transparent)]
pub(crate) struct Opaque<T>(std::cell::UnsafeCell<T>);

/// Line 0: the immutable fields and the `state` word.
#[repr(C, align(128))]
pub(crate) struct InfoLine {
    /// Written by the creator before `state` is READY; read only by copying
    /// through a raw pointer (`Segment::open`).
    pub(crate) fields: Opaque<HeaderFields>,
    /// [`STATE_INITIALIZING`] or [`STATE_READY`].
    pub(crate) state: AtomicU32,
    /// `FLAG_*` bits, stored by the creator before `state` is READY and
    /// never after.
    pub(crate) flags: AtomicU32,
    /// With [`FLAG_LAG`]: the lag bound in items (0: none); stored by the
    /// creator before `state` is READY and never after.
    pub(crate) lag_bound: AtomicU64,
    /// With [`FLAG_LAG`]: the grace period of a dead subscriber, in
    /// milliseconds; stored as `lag_bound` is.
    pub(crate) lag_grace_ms: AtomicU64,
    _reserved: Opaque<[u8; 16]>,
}

/// Line 1: written by the producer.
#[repr(C, align(128))]
pub(crate) struct ProducerLine {
    /// Slots below it are written and published (Release by the producer).
    pub(crate) write_seq: AtomicU64,
    /// `ROLE_*`: whether a producer attached and whether it closed.
    pub(crate) producer_state: AtomicU32,
    _pad: Opaque<u32>,
    /// Number of producer attachments so far.
    pub(crate) producer_sessions: AtomicU64,
    /// Arrow rings: arena position after the last message the producer has
    /// written (stored before that message is published), where a new
    /// producer resumes.
    pub(crate) arena_head: AtomicU64,
    /// Process id of the last producer to attach (0: none yet), in the pid
    /// namespace of that producer; information only (`info`, `rm`).
    pub(crate) producer_pid: AtomicU32,
    _pad2: Opaque<u32>,
    /// When the producer began waiting for room in a full ring, as Unix
    /// nanoseconds; 0 while it is not waiting. Information only.
    pub(crate) blocked_since_ns: AtomicU64,
    /// End records appended to the [`EndLog`] so far (record `i` lives at
    /// index `i % END_LOG_LEN`); stored by producers only, with Release
    /// after the record's fields.
    pub(crate) ends_head: AtomicU64,
    /// Slots of sequences below it may be overwritten: the bound the
    /// producer last published before using it (`fanout::producer_floor`);
    /// stored by producers only.
    pub(crate) tail_seq: AtomicU64,
    /// With `producer_state == ROLE_FAILED`: why the producer gave up,
    /// stored before that state.
    pub(crate) failure: FailureReason,
}

/// A producer's failure reason: [`FAILURE_REASON_LEN`] bytes of UTF-8,
/// padded with NULs, in atomic words (another process reads them while the
/// next producer may write them).
#[repr(C)]
#[derive(Default)]
pub(crate) struct FailureReason([AtomicU64; FAILURE_REASON_LEN / 8]);

impl FailureReason {
    /// Stores `reason`; a longer one is cut at a character boundary and ends
    /// in "…", all within [`FAILURE_REASON_LEN`] bytes. Relaxed: the caller publishes it by storing
    /// `producer_state = ROLE_FAILED` with Release afterwards.
    pub(crate) fn store(&self, reason: &str) {
        const MORE: &str = "…";
        let mut bytes = [0u8; FAILURE_REASON_LEN];
        if reason.len() <= FAILURE_REASON_LEN {
            bytes[..reason.len()].copy_from_slice(reason.as_bytes());
        } else {
            // Cut, and say so: "…" takes the last bytes.
            let mut cut = FAILURE_REASON_LEN - MORE.len();
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            bytes[..cut].copy_from_slice(&reason.as_bytes()[..cut]);
            bytes[cut..cut + MORE.len()].copy_from_slice(MORE.as_bytes());
        }
        for (word, chunk) in self.0.iter().zip(bytes.chunks_exact(8)) {
            let chunk: [u8; 8] = chunk.try_into().unwrap_or([0; 8]);
            word.store(u64::from_ne_bytes(chunk), Ordering::Relaxed);
        }
    }

    /// The stored reason. Another process wrote it: invalid UTF-8 is
    /// replaced, the NUL padding dropped. Relaxed loads: the caller has
    /// loaded `producer_state == ROLE_FAILED` with Acquire, which pairs with
    /// the Release store that followed [`Self::store`].
    pub(crate) fn load(&self) -> String {
        let mut bytes = [0u8; FAILURE_REASON_LEN];
        for (word, chunk) in self.0.iter().zip(bytes.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        let end = bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(FAILURE_REASON_LEN);
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    }
}

/// Line 2: written by subscribers.
#[repr(C, align(128))]
pub(crate) struct SubscriptionLine {
    /// Subscriptions made so far (Release, after the cursor is written):
    /// what tells a producer computing its bound that a consumer subscribed
    /// meanwhile (`fanout`).
    pub(crate) epoch: AtomicU64,
    _reserved: Opaque<[u8; 120]>,
}

/// One consumer's cursor: 128 bytes after the end log, one per consumer
/// the ring was created for. Written by the consumer holding the cursor's
/// lock (and by the subscriber or unsubscriber holding the table lock).
#[repr(C, align(128))]
pub(crate) struct ConsumerCursor {
    /// Slots below it are released by this consumer (Release).
    pub(crate) read_seq: AtomicU64,
    /// `ROLE_*` of this cursor's consumer.
    pub(crate) consumer_state: AtomicU32,
    /// `fanout::CURSOR_FREE` or `CURSOR_SUBSCRIBED`.
    pub(crate) subscription: AtomicU32,
    /// Arrow rings: end of the last message released, stored after
    /// `read_seq`; information only (`info`), never used to decide anything.
    pub(crate) arena_released: AtomicU64,
    /// Arrow rings: which half of this cursor's save area holds its
    /// consumer's last saved decoder state: 0 none, 1 the first, 2 the
    /// second, [`SAVED_JOINED`] none, subscribed mid-stream (see
    /// `arrow/resume.rs`).
    pub(crate) saved_state: AtomicU64,
    /// Process id of the last consumer to attach (0: none yet); information
    /// only.
    pub(crate) consumer_pid: AtomicU32,
    _pad2: Opaque<u32>,
    /// When the consumer began waiting for an item in an empty ring, as
    /// Unix nanoseconds; 0 while it is not waiting. Information only.
    pub(crate) waiting_since_ns: AtomicU64,
    /// End records the consumer has read and is done with (it resumes
    /// there); stored by the consumer only, with Release.
    pub(crate) ends_seen: AtomicU64,
    /// 1 + the position a subscription the producer dropped
    /// ([`Policy::Lag`]) stood at when its consumer subscribed it again,
    /// with bit 63 ([`DROPPED_ENDS`]) set when it skips end records too; 0
    /// when it was not dropped, or its consumer has reported what it
    /// missed. Stored and cleared by the consumer (holding the cursor's
    /// lock).
    pub(crate) dropped_at: AtomicU64,
    /// The subscription's name: UTF-8, padded with NULs (stored before the
    /// subscription, Relaxed, published by its Release).
    pub(crate) name: [AtomicU64; MAX_SUBSCRIBER_NAME / 8],
    _reserved2: Opaque<[u8; 32]>,
}

impl ConsumerCursor {
    /// Stores `name` (at most [`MAX_SUBSCRIBER_NAME`] bytes: checked by the
    /// caller), padded with NULs.
    pub(crate) fn store_name(&self, name: &str) {
        let mut bytes = [0u8; MAX_SUBSCRIBER_NAME];
        let n = name.len().min(MAX_SUBSCRIBER_NAME);
        bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
        for (word, chunk) in self.name.iter().zip(bytes.chunks_exact(8)) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            // Relaxed: published by the subscription's Release store.
            word.store(u64::from_ne_bytes(w), Ordering::Relaxed);
        }
    }

    /// The name, or `None` when the bytes are no NUL-padded UTF-8 (a
    /// damaged cursor).
    pub(crate) fn load_name(&self) -> Option<String> {
        let mut bytes = [0u8; MAX_SUBSCRIBER_NAME];
        for (word, chunk) in self.name.iter().zip(bytes.chunks_exact_mut(8)) {
            // Relaxed: after the Acquire load of the subscription.
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        if bytes[end..].iter().any(|&b| b != 0) {
            return None;
        }
        String::from_utf8(bytes[..end].to_vec()).ok()
    }
}

impl crate::fanout::Cursor for ConsumerCursor {
    fn subscription(&self) -> &AtomicU32 {
        &self.subscription
    }

    fn read_seq(&self) -> &AtomicU64 {
        &self.read_seq
    }
}

/// One record of the end log: how producer session `session` ended, at
/// which position of the stream. Written by producers only (the one that
/// ended, or, for [`END_DIED`], the next one), field by field with Relaxed
/// stores, then published by the Release store of `ends_head`.
#[repr(C)]
pub(crate) struct EndRecord {
    /// The session that ended: `producer_sessions` after its attach.
    pub(crate) session: AtomicU64,
    /// Its final `write_seq`: the end comes after the items below it.
    pub(crate) at_seq: AtomicU64,
    /// [`END_CLOSED`], [`END_FAILED`] or [`END_DIED`].
    pub(crate) kind: AtomicU32,
    _pad: Opaque<u32>,
    /// With [`END_FAILED`]: the producer's reason.
    pub(crate) reason: FailureReason,
}

/// The end log: [`END_LOG_LEN`] records after the five lines of the
/// header, so that the end of a producer session is a record in the
/// stream, which the next producer's attach cannot overwrite before the
/// consumer has read it.
#[repr(C, align(128))]
pub(crate) struct EndLog {
    pub(crate) records: [EndRecord; END_LOG_LEN as usize],
}

impl EndLog {
    /// Record number `i` (any `u64`: taken modulo [`END_LOG_LEN`]).
    pub(crate) fn record(&self, i: u64) -> &EndRecord {
        &self.records[(i % END_LOG_LEN) as usize]
    }
}

/// Lines 3 and 4: where a side sleeps.
#[repr(C, align(128))]
pub(crate) struct WaitLine {
    pub(crate) cell: WaitCell,
    _reserved: Opaque<[u8; 120]>,
}

/// The whole header: five 128-byte lines.
///
/// Every byte of it is inside an atomic or an [`Opaque`] (the compile-time
/// assertions below check that the fields fill each line), so a shared
/// reference to it, which another process's writes may race with at any
/// time, claims nothing that those writes could break: the atomics are
/// read and written as atomics, and the opaque bytes are never read
/// through it.
#[repr(C)]
pub(crate) struct SegmentHeader {
    pub(crate) info: InfoLine,
    pub(crate) producer: ProducerLine,
    pub(crate) subscriptions: SubscriptionLine,
    /// The consumer sleeps here when the ring is empty.
    pub(crate) not_empty: WaitLine,
    /// The producer sleeps here when the ring is full (and when it waits,
    /// attaching, for room in the end log).
    pub(crate) not_full: WaitLine,
    /// How the last producer sessions ended.
    pub(crate) end_log: EndLog,
}

/// Size of the fixed part of the header: five 128-byte lines and the end
/// log. The consumers' cursors follow it, [`CURSOR_LEN`] bytes each.
pub const HEADER_LEN: usize = size_of::<SegmentHeader>();
/// Size of one consumer cursor.
pub const CURSOR_LEN: usize = size_of::<ConsumerCursor>();

/// `header_len` of a ring with `consumers` cursors.
pub const fn header_len(consumers: u32) -> u64 {
    HEADER_LEN as u64 + consumers as u64 * CURSOR_LEN as u64
}

const _: () = {
    assert!(size_of::<HeaderFields>() == 88);
    assert!(offset_of!(HeaderFields, magic) == 0);
    assert!(offset_of!(HeaderFields, layout_version) == 8);
    assert!(offset_of!(HeaderFields, header_len) == 12);
    assert!(offset_of!(HeaderFields, kind) == 16);
    assert!(offset_of!(HeaderFields, slot_align) == 20);
    assert!(offset_of!(HeaderFields, capacity) == 24);
    assert!(offset_of!(HeaderFields, slot_size) == 32);
    assert!(offset_of!(HeaderFields, type_fingerprint) == 40);
    assert!(offset_of!(HeaderFields, slots_offset) == 48);
    assert!(offset_of!(HeaderFields, arena_offset) == 56);
    assert!(offset_of!(HeaderFields, arena_len) == 64);
    assert!(offset_of!(HeaderFields, total_len) == 72);
    assert!(offset_of!(HeaderFields, created_unix_ns) == 80);
    assert!(offset_of!(InfoLine, state) == 88);
    assert!(offset_of!(SegmentHeader, info) == 0);
    assert!(offset_of!(SegmentHeader, producer) == LINE);
    assert!(offset_of!(SegmentHeader, subscriptions) == 2 * LINE);
    assert!(offset_of!(SegmentHeader, not_empty) == 3 * LINE);
    assert!(offset_of!(SegmentHeader, not_full) == 4 * LINE);
    assert!(offset_of!(ProducerLine, write_seq) == 0);
    assert!(offset_of!(ProducerLine, producer_state) == 8);
    assert!(offset_of!(ProducerLine, producer_sessions) == 16);
    assert!(offset_of!(ProducerLine, arena_head) == 24);
    assert!(offset_of!(ConsumerCursor, read_seq) == 0);
    assert!(offset_of!(ConsumerCursor, consumer_state) == 8);
    assert!(offset_of!(ConsumerCursor, subscription) == 12);
    assert!(offset_of!(ConsumerCursor, arena_released) == 16);
    assert!(offset_of!(ProducerLine, producer_pid) == 32);
    assert!(offset_of!(ProducerLine, blocked_since_ns) == 40);
    assert!(offset_of!(ProducerLine, failure) == 64);
    assert!(offset_of!(ConsumerCursor, saved_state) == 24);
    assert!(offset_of!(ConsumerCursor, consumer_pid) == 32);
    assert!(offset_of!(ConsumerCursor, waiting_since_ns) == 40);
    assert!(size_of::<WaitCell>() == 8);
    assert!(offset_of!(ProducerLine, ends_head) == 48);
    assert!(offset_of!(ConsumerCursor, ends_seen) == 48);
    assert!(offset_of!(ConsumerCursor, name) == 64);
    assert!(offset_of!(ConsumerCursor, _reserved2) == 96);
    assert!(CURSOR_LEN == LINE);
    assert!(offset_of!(ProducerLine, tail_seq) == 56);
    assert!(size_of::<EndRecord>() == 88);
    assert!(offset_of!(EndRecord, session) == 0);
    assert!(offset_of!(EndRecord, at_seq) == 8);
    assert!(offset_of!(EndRecord, kind) == 16);
    assert!(offset_of!(EndRecord, reason) == 24);
    assert!(offset_of!(SegmentHeader, end_log) == 5 * LINE);
    assert!(size_of::<EndLog>() == 11 * LINE);
    assert!(HEADER_LEN == 16 * LINE);
    // No padding anywhere: every byte belongs to a field, atomic or opaque.
    assert!(offset_of!(InfoLine, flags) == 92);
    assert!(offset_of!(InfoLine, lag_bound) == 96);
    assert!(offset_of!(InfoLine, lag_grace_ms) == 104);
    assert!(offset_of!(InfoLine, _reserved) + 16 == LINE);
    assert!(offset_of!(ProducerLine, tail_seq) + 8 == offset_of!(ProducerLine, failure));
    assert!(offset_of!(ProducerLine, failure) + FAILURE_REASON_LEN == LINE);
    assert!(offset_of!(ConsumerCursor, dropped_at) + 8 == offset_of!(ConsumerCursor, name));
    assert!(offset_of!(SubscriptionLine, _reserved) + 120 == LINE);
    assert!(offset_of!(EndRecord, _pad) + 4 == offset_of!(EndRecord, reason));
    assert!(offset_of!(WaitLine, _reserved) + 120 == LINE);
};

/// Offsets of everything in a segment, each one checked against the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// What the slots hold.
    pub kind: RingKind,
    /// Number of slots, a power of two.
    pub capacity: u64,
    /// Bytes per slot.
    pub slot_size: u64,
    /// Alignment of a slot.
    pub slot_align: u32,
    /// Fingerprint of the slot type.
    pub type_fingerprint: u64,
    /// Offset of slot 0.
    pub slots_offset: u64,
    /// Offset of the arena (0 when none).
    pub arena_offset: u64,
    /// Length of the arena (0 when none).
    pub arena_len: u64,
    /// Length of the segment as created.
    pub total_len: u64,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_unix_ns: u64,
    /// A temporary ring: removed by its consumer after a clean end of
    /// stream ([`SegmentOptions::temporary`](super::SegmentOptions::temporary)).
    pub temporary: bool,
    /// Consumer cursors: how many subscriptions the ring can hold.
    pub max_consumers: u32,
    /// What the producer does about a subscriber that holds it back.
    pub policy: Policy,
}

impl Layout {
    /// The layout of a new segment, or `None` if the sizes overflow.
    pub(crate) fn plan(
        kind: RingKind,
        capacity: u64,
        slot_size: u64,
        slot_align: u32,
        type_fingerprint: u64,
        arena_len: u64,
        max_consumers: u32,
    ) -> Option<Self> {
        if !(1..=MAX_CONSUMERS).contains(&max_consumers) {
            return None;
        }
        let slots_offset = align_up(
            header_len(max_consumers),
            (slot_align as u64).max(LINE as u64),
        )?;
        let slots_end = slots_offset.checked_add(capacity.checked_mul(slot_size)?)?;
        let (arena_offset, total_len) = if arena_len == 0 {
            (0, slots_end)
        } else {
            let off = align_up(slots_end, 4096)?;
            (off, off.checked_add(arena_len)?)
        };
        Some(Self {
            kind,
            capacity,
            slot_size,
            slot_align,
            type_fingerprint,
            slots_offset,
            arena_offset,
            arena_len,
            total_len,
            created_unix_ns: 0,
            temporary: false,
            max_consumers,
            policy: Policy::Block,
        })
    }

    /// The header fields that describe this layout.
    pub(crate) fn fields(&self) -> HeaderFields {
        HeaderFields {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            header_len: header_len(self.max_consumers) as u32,
            kind: self.kind as u32,
            slot_align: self.slot_align,
            capacity: self.capacity,
            slot_size: self.slot_size,
            type_fingerprint: self.type_fingerprint,
            slots_offset: self.slots_offset,
            arena_offset: self.arena_offset,
            arena_len: self.arena_len,
            total_len: self.total_len,
            created_unix_ns: self.created_unix_ns,
        }
    }
}

fn align_up(v: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    Some(v.checked_add(align - 1)? & !(align - 1))
}

/// What is wrong with a segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The file is shorter than a header.
    #[error("file is {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort {
        /// The file's length.
        len: u64,
    },
    /// Wrong magic bytes.
    #[error("not a laminar-ring ring (magic {found:02x?})")]
    BadMagic {
        /// The first 8 bytes.
        found: [u8; 8],
    },
    /// A layout version this build does not read.
    #[error("layout version {found}, this build reads {supported}")]
    VersionMismatch {
        /// Version in the file.
        found: u32,
        /// [`LAYOUT_VERSION`].
        supported: u32,
    },
    /// A field has a value no valid segment has.
    #[error("bad header field {field}: {value} ({why})")]
    BadField {
        /// Name of the field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What it should be.
        why: &'static str,
    },
    /// The header describes more bytes than the file has.
    #[error("file is {file_len} bytes but its header describes {needed}: truncated?")]
    Truncated {
        /// The file's length.
        file_len: u64,
        /// Bytes the header says the segment spans.
        needed: u64,
    },
    /// The header was never marked ready, and no process is making it (the
    /// creator's lock is free): its creator died while making it.
    #[error(
        "never finished initialising: its creator died while making it (remove it and create \
         it again)"
    )]
    NeverReady,
    /// An end log record, or the end log's counters, hold a value that no
    /// producer keeping the protocol writes.
    #[error("end log record {record}: bad {field} {value} ({why})")]
    BadEndRecord {
        /// The record's number (`ends_head` counts them).
        record: u64,
        /// Which field (`kind`, `session`, `at_seq`, `ends_head`).
        field: &'static str,
        /// Its value.
        value: u64,
        /// What it should be.
        why: &'static str,
    },
    /// `read_seq` and `write_seq` contradict each other.
    #[error(
        "inconsistent sequences: read_seq {read_seq}, write_seq {write_seq}, capacity {capacity}"
    )]
    InconsistentSequences {
        /// The consumer's position.
        read_seq: u64,
        /// The producer's position.
        write_seq: u64,
        /// Slots in the ring.
        capacity: u64,
    },
}

fn bad(field: &'static str, value: u64, why: &'static str) -> HeaderError {
    HeaderError::BadField { field, value, why }
}

/// Checks a copy of a header against the file's length; never panics.
///
/// # Errors
///
/// The first problem found, as a [`HeaderError`].
pub fn validate(h: &HeaderFields, file_len: u64) -> Result<Layout, HeaderError> {
    if file_len < HEADER_LEN as u64 {
        return Err(HeaderError::TooShort { len: file_len });
    }
    if h.magic != MAGIC {
        return Err(HeaderError::BadMagic { found: h.magic });
    }
    if h.layout_version != LAYOUT_VERSION {
        return Err(HeaderError::VersionMismatch {
            found: h.layout_version,
            supported: LAYOUT_VERSION,
        });
    }
    let cursor_bytes = u64::from(h.header_len).wrapping_sub(HEADER_LEN as u64);
    let max_consumers = cursor_bytes / CURSOR_LEN as u64;
    if u64::from(h.header_len) < header_len(1)
        || !cursor_bytes.is_multiple_of(CURSOR_LEN as u64)
        || max_consumers > u64::from(MAX_CONSUMERS)
    {
        return Err(bad(
            "header_len",
            h.header_len.into(),
            "2048 + 128 per consumer cursor, 1 to 32 cursors",
        ));
    }
    let kind = RingKind::from_u32(h.kind).ok_or(bad("kind", h.kind.into(), "1 or 2"))?;
    if check_capacity(h.capacity, MAX_CAPACITY).is_err() {
        return Err(bad("capacity", h.capacity, "a power of two up to 2^32"));
    }
    if !h.slot_align.is_power_of_two() || h.slot_align > MAX_SLOT_ALIGN {
        return Err(bad(
            "slot_align",
            h.slot_align.into(),
            "a power of two up to 4096",
        ));
    }
    if h.slot_size == 0 || !h.slot_size.is_multiple_of(u64::from(h.slot_align)) {
        return Err(bad(
            "slot_size",
            h.slot_size,
            "non-zero multiple of slot_align",
        ));
    }
    let line_align = u64::from(h.slot_align).max(LINE as u64);
    if h.slots_offset < u64::from(h.header_len) || !h.slots_offset.is_multiple_of(line_align) {
        return Err(bad(
            "slots_offset",
            h.slots_offset,
            "aligned, after the header",
        ));
    }
    let slots_end = h
        .capacity
        .checked_mul(h.slot_size)
        .and_then(|b| b.checked_add(h.slots_offset))
        .ok_or(bad(
            "slot_size",
            h.slot_size,
            "capacity * slot_size overflows",
        ))?;
    match kind {
        RingKind::Typed if h.arena_len != 0 || h.arena_offset != 0 => {
            return Err(bad("arena_len", h.arena_len, "0 for a typed ring"));
        }
        RingKind::Arrow => {
            if h.arena_offset < slots_end || !h.arena_offset.is_multiple_of(64) {
                return Err(bad(
                    "arena_offset",
                    h.arena_offset,
                    "64-aligned, after the slots",
                ));
            }
            if h.arena_len == 0 {
                return Err(bad("arena_len", 0, "non-zero for an Arrow ring"));
            }
            if h.arena_len / max_consumers < 4096 {
                return Err(bad(
                    "arena_len",
                    h.arena_len,
                    "at least 4096 per consumer cursor (each saves its decoder state in a share)",
                ));
            }
        }
        RingKind::Typed => {}
    }
    let end = if h.arena_len == 0 {
        slots_end
    } else {
        h.arena_offset.checked_add(h.arena_len).ok_or(bad(
            "arena_len",
            h.arena_len,
            "arena end overflows",
        ))?
    };
    if h.total_len < end {
        return Err(bad("total_len", h.total_len, "covers slots and arena"));
    }
    if h.total_len > file_len {
        return Err(HeaderError::Truncated {
            file_len,
            needed: h.total_len,
        });
    }
    Ok(Layout {
        kind,
        capacity: h.capacity,
        slot_size: h.slot_size,
        slot_align: h.slot_align,
        type_fingerprint: h.type_fingerprint,
        slots_offset: h.slots_offset,
        arena_offset: h.arena_offset,
        arena_len: h.arena_len,
        total_len: h.total_len,
        created_unix_ns: h.created_unix_ns,
        temporary: false,
        max_consumers: max_consumers as u32,
        policy: Policy::Block,
    })
}

/// Checks that two positions read from a segment can belong to one ring.
///
/// # Errors
///
/// [`HeaderError::InconsistentSequences`] when `read_seq > write_seq` or
/// they are more than `capacity` apart.
pub fn check_sequences(read_seq: u64, write_seq: u64, capacity: u64) -> Result<(), HeaderError> {
    if read_seq > write_seq || write_seq - read_seq > capacity {
        return Err(HeaderError::InconsistentSequences {
            read_seq,
            write_seq,
            capacity,
        });
    }
    Ok(())
}

/// Checks a position that a side is about to resume from and advance
/// (see [`MAX_POSITION`]).
///
/// # Errors
///
/// [`HeaderError::BadField`] naming `field` when `value > MAX_POSITION`.
pub(crate) fn check_position(field: &'static str, value: u64) -> Result<(), HeaderError> {
    if value > MAX_POSITION {
        return Err(bad(
            field,
            value,
            "beyond 2^63, which no ring reaches: set by another process",
        ));
    }
    Ok(())
}

/// Loads `read_seq`, then `write_seq`, then `read_seq` again, and checks
/// them as the positions of a ring whose producer and consumer may both be
/// running; returns the first `read_seq` and the `write_seq`.
///
/// No order of two loads gives a pair that can be checked exactly: loaded
/// read first, the producer may lap the old `read_seq` before `write_seq` is
/// loaded (`write - read > capacity`); loaded write first, the consumer may
/// pass the old `write_seq` (`read > write`). With `read_seq` loaded on
/// both sides of `write_seq`, a ring whose two sides keep the protocol
/// always has `read_before <= write <= read_after + capacity`: the consumer
/// releases only what it saw published, and the producer overwrites only
/// what it saw released. The loads must be Acquire, so that each one sees
/// at least what the store it reads from had seen.
///
/// # Errors
///
/// [`HeaderError::InconsistentSequences`] when the positions break that.
pub(crate) fn snapshot_sequences(
    mut load_read: impl FnMut() -> u64,
    load_write: impl FnOnce() -> u64,
    capacity: u64,
) -> Result<(u64, u64), HeaderError> {
    let read_before = load_read();
    let write = load_write();
    let read_after = load_read();
    if read_before > write {
        check_sequences(read_before, write, capacity)?;
    }
    if write > read_after.saturating_add(capacity) {
        check_sequences(read_after, write, capacity)?;
    }
    Ok((read_before, write))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(kind: RingKind) -> (HeaderFields, u64) {
        let arena = if kind == RingKind::Arrow { 1 << 16 } else { 0 };
        let l = Layout::plan(kind, 1024, 24, 8, 42, arena, 8).unwrap();
        (l.fields(), l.total_len)
    }

    #[test]
    fn valid_headers_pass() {
        for kind in [RingKind::Typed, RingKind::Arrow] {
            let (h, len) = valid(kind);
            let l = validate(&h, len).unwrap();
            assert_eq!(l.capacity, 1024);
            assert_eq!(l.slots_offset, header_len(8));
            assert_eq!(l.max_consumers, 8);
            assert!(validate(&h, len + 10).is_ok(), "longer file is fine");
        }
    }

    #[test]
    fn each_defect_has_its_error() {
        let (h, len) = valid(RingKind::Typed);
        let with = |f: &dyn Fn(&mut HeaderFields)| {
            let mut h = h;
            f(&mut h);
            validate(&h, len)
        };
        assert!(matches!(
            with(&|h| h.magic[0] = b'X'),
            Err(HeaderError::BadMagic { .. })
        ));
        assert!(matches!(
            with(&|h| h.layout_version = 9),
            Err(HeaderError::VersionMismatch { found: 9, .. })
        ));
        assert!(matches!(
            with(&|h| h.capacity = 1000),
            Err(HeaderError::BadField {
                field: "capacity",
                ..
            })
        ));
        assert!(matches!(
            with(&|h| h.slot_size = 12),
            Err(HeaderError::BadField {
                field: "slot_size",
                ..
            })
        ));
        assert!(matches!(
            with(&|h| h.capacity = 1 << 31),
            Err(HeaderError::BadField {
                field: "total_len",
                ..
            })
        ));
        assert_eq!(
            validate(&h, len - 1),
            Err(HeaderError::Truncated {
                file_len: len - 1,
                needed: len
            })
        );
        assert_eq!(validate(&h, 100), Err(HeaderError::TooShort { len: 100 }));
        assert!(check_sequences(5, 4, 8).is_err());
        assert!(check_sequences(0, 9, 8).is_err());
        assert!(check_sequences(3, 11, 8).is_ok());
        let msg = with(&|h| h.layout_version = 1).unwrap_err().to_string();
        assert_eq!(msg, "layout version 1, this build reads 5");
        let msg = with(&|h| h.layout_version = 4).unwrap_err().to_string();
        assert_eq!(msg, "layout version 4, this build reads 5");
        // A cursor table of no cursor, of a part of one, or of more than
        // 32, and slots that overlap the cursors.
        for bad_len in [2048, 2048 + 64, 2048 + 33 * 128] {
            assert!(matches!(
                with(&|h| h.header_len = bad_len),
                Err(HeaderError::BadField {
                    field: "header_len",
                    ..
                })
            ));
        }
        assert!(matches!(
            with(&|h| h.header_len = 2048 + 16 * 128),
            Err(HeaderError::BadField {
                field: "slots_offset",
                ..
            })
        ));
    }

    #[test]
    fn a_failure_reason_round_trips_and_a_long_one_is_cut_with_an_ellipsis() {
        let reason = FailureReason::default();
        reason.store("cannot read trades.csv: row 17");
        assert_eq!(reason.load(), "cannot read trades.csv: row 17");
        // Longer than 64 bytes: cut, and "…" (3 bytes) says so.
        let long = format!("{}é and more", "x".repeat(63));
        reason.store(&long);
        assert_eq!(reason.load(), format!("{}…", "x".repeat(61)));
        // The cut falls inside a 2-byte character: before it.
        let long = format!("{}é and more", "x".repeat(60));
        reason.store(&long);
        assert_eq!(reason.load(), format!("{}…", "x".repeat(60)));
        // Exactly 64 bytes: whole.
        reason.store(&"y".repeat(64));
        assert_eq!(reason.load(), "y".repeat(64));
        reason.store("short");
        assert_eq!(reason.load(), "short", "a shorter reason clears the rest");
        // Bytes another process wrote: not UTF-8, no NUL.
        for w in &reason.0 {
            w.store(u64::MAX, Ordering::Relaxed);
        }
        assert_eq!(reason.load().chars().count(), FAILURE_REASON_LEN);
    }

    /// 100,000 random and mutated headers through validation: never a
    /// panic, and every accepted layout lies inside the file.
    #[test]
    fn random_and_mutated_headers_never_panic() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut accepted = 0;
        for i in 0..100_000 {
            let (mut h, len) = valid(if i % 2 == 0 {
                RingKind::Typed
            } else {
                RingKind::Arrow
            });
            let bytes: &mut [u8] = bytemuck::bytes_of_mut(&mut h);
            if i % 10 == 0 {
                // Entirely random bytes.
                for b in bytes.iter_mut() {
                    *b = next() as u8;
                }
            } else {
                // A few random byte or bit mutations of a valid header.
                for _ in 0..(1 + next() % 3) {
                    let at = (next() % bytes.len() as u64) as usize;
                    if next() % 2 == 0 {
                        bytes[at] = next() as u8;
                    } else {
                        bytes[at] ^= 1 << (next() % 8);
                    }
                }
            }
            let file_len = match next() % 4 {
                0 => next() % (2 * len),
                _ => len,
            };
            if let Ok(l) = validate(&h, file_len) {
                accepted += 1;
                let slots_end = l.slots_offset + l.capacity * l.slot_size;
                assert!(slots_end <= file_len && l.total_len <= file_len);
                assert!(l.arena_offset + l.arena_len <= file_len);
                assert!(l.capacity.is_power_of_two());
            }
        }
        // Mutations of unchecked bytes (fingerprint, time) are accepted.
        assert!(accepted > 0);
    }

    /// Scripted loads of a running ring (each load returns what the
    /// producer and consumer had reached by then): a snapshot taken while
    /// both move is accepted, whichever of them moves between the loads;
    /// positions no running ring can have are refused.
    #[test]
    fn sequences_of_a_running_ring_are_never_reported_inconsistent() {
        let snapshot = |reads: [u64; 2], write: u64, capacity: u64| {
            let mut reads = reads.into_iter();
            let mut log = Vec::new();
            let r = snapshot_sequences(
                || {
                    log.push("read");
                    reads.next().expect("read_seq loaded at most twice")
                },
                || write,
                capacity,
            );
            (r, log.len())
        };
        // Quiet ring.
        assert_eq!(snapshot([3, 3], 7, 4).0, Ok((3, 7)));
        // The consumer released 0..4 and the producer published up to 6
        // between the first read_seq load and the write_seq load: two
        // loads, read first, would see read 0 and write 6 on a 4-slot ring.
        assert_eq!(snapshot([0, 4], 6, 4).0, Ok((0, 6)));
        // The consumer passed the write_seq we loaded: read after > write.
        assert_eq!(snapshot([5, 9], 6, 4).0, Ok((5, 6)));
        assert_eq!(snapshot([0, 0], 0, 1), (Ok((0, 0)), 2));
        // Impossible for a running ring.
        assert!(matches!(
            snapshot([7, 7], 6, 4).0,
            Err(HeaderError::InconsistentSequences { read_seq: 7, .. })
        ));
        assert!(matches!(
            snapshot([0, 1], 6, 4).0,
            Err(HeaderError::InconsistentSequences {
                read_seq: 1,
                write_seq: 6,
                capacity: 4
            })
        ));
    }
}
