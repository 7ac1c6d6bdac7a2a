//! The ring in a shared-memory segment, so that separate processes exchange
//! slots with no lock and no system call on the hot path.
//!
//! A segment is a file (in `/dev/shm` unless told otherwise) holding a
//! `#[repr(C)]` [`header`] of five 128-byte lines, then the slots. The
//! producer and consumer halves run the same SPSC protocol as
//! [`spsc`](crate::spsc), pointed at the mapping. `docs/FORMAT.md` gives the
//! byte layout and the protocol precisely enough to write a reader in C.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use laminar_ring::shm::{ShmConsumer, ShmPopError, ShmProducer};
//!
//! // Process A
//! let mut tx = ShmProducer::<u64>::create("prices", 1 << 16)?;
//! tx.push(42)?;
//! tx.close(); // end of stream
//!
//! // Process B
//! let mut rx = ShmConsumer::<u64>::open("prices")?;
//! loop {
//!     match rx.pop() {
//!         Ok(v) => println!("{v}"),
//!         Err(ShmPopError::EndOfStream) => break,
//!         Err(e) => return Err(e.into()),
//!     }
//! }
//! laminar_ring::shm::remove("prices")?;
//! # Ok(()) }
//! ```
//!
//! # Roles
//!
//! One producer and one consumer may be attached at a time; a second gets
//! [`OpenError::RoleTaken`]. A role is a kernel lock on the segment file, which
//! the kernel releases when the holder's process dies, so a crashed peer never
//! keeps its role. Either side may create the segment, and either may start
//! first; opening a segment whose creator has not finished initialising it
//! waits up to [`SegmentOptions::ready_timeout`], then fails with
//! [`OpenError::NotReady`].
//!
//! # Shutdown
//!
//! [`ShmProducer::close`] (or dropping the producer) ends the stream: the
//! consumer drains what is left, then gets `EndOfStream`. A new producer may
//! attach later and continue at `write_seq`. A producer that fails half-way
//! must not look finished: [`ShmProducer::abandon`] detaches without ending
//! the stream, and a producer dropped while its thread unwinds from a panic
//! does the same; the consumer then gets `PeerGone`, as after a crash.
//! [`ShmProducer::fail`] ends it in error (`ProducerFailed`).
//!
//! Each session's end is a record in the segment's end log, placed after
//! the session's last item: a consumer gets a session's items, then its
//! end, then the next session's items, even when the next producer attached
//! before the consumer had drained the previous session. With nothing left
//! to read, a pop repeats the latest session's end. A producer attaches only
//! while the consumer has fewer than 15 ends unread; otherwise it waits, at
//! most [`SegmentOptions::attach_timeout`], and fails with
//! [`OpenError::EndLogFull`].
//!
//! # Crash and restart
//!
//! * Producer killed: everything it committed (written and published) is
//!   delivered, exactly once and in order; then the consumer gets `PeerGone`
//!   (within about 60 ms of draining: an idle consumer asks the kernel about
//!   the producer's lock every 10 ms and sleeps at most 50 ms). A half-written
//!   slot was never published, so it does not exist. A new producer may
//!   attach and continue at `write_seq`.
//! * Consumer killed: `read_seq` lives in the segment and advances only when
//!   the consumer releases items, so a restarted consumer resumes at the first
//!   item it had not released. Delivery is **at-least-once**: items read but
//!   not released before the crash are delivered again. Use
//!   [`ShmConsumer::read_chunk`] and commit after processing to make
//!   "processed" and "released" coincide; `try_pop`/`pop` release at once.
//!
//! # Blocking
//!
//! Blocking calls spin (up to 50 µs), then sleep on a futex word in the segment
//! (a shared futex, keyed by the page, so it works across processes). The
//! other side wakes it only when the word's waiter count says someone sleeps.
//! An idle consumer uses no CPU; every sleep is bounded so that it re-checks
//! its peer's lock. Publishing costs no fence for it: see [`wait`](crate::wait)
//! for the asymmetric barrier that the sleeper pays instead.
//!
//! # Untrusted segments
//!
//! `open` refuses a segment that another user owns or that others may write
//! ([`OpenError::Untrusted`]), unless [`SegmentOptions::allow_shared`] says
//! to trust its group: `/dev/shm` is world-writable, so anyone may create a
//! file under a ring's name first.
//!
//! Everything in the mapping is input from another process. The header is
//! copied once at open and validated ([`header::validate`]); positions loaded
//! later are checked before use; slots are masked into the validated region,
//! and only [`ShmSlot`] types (plain data, `bytemuck::Pod`, with a declared
//! name) may be slots, for which any bytes are a valid value. A segment can make this side see a full or empty ring, never
//! read outside the mapping.

#[cfg(feature = "arrow")]
mod arrow_api;
#[allow(unsafe_code)] // copies out of slots in the mapping
mod chunk;
mod error;
mod fanin;
pub mod header;
mod inspect;
#[allow(unsafe_code)] // the mapping, raw header access, fcntl locks
mod segment;
mod slot;
#[allow(unsafe_code)] // slots in the mapping
mod typed;

pub use crate::fanout::{Policy, Start};
pub use chunk::ShmReadChunk;
pub use error::{OpenError, Role, ShmPopError, ShmPushError, ShmTryPopError};
pub use fanin::{
    DEFAULT_BURST, FanInError, MAX_LANES, ShmFanIn, check_stream_name, lane_name, parse_lane_name,
};
#[cfg(feature = "arrow")]
pub(crate) use fanin::{
    LaneReader, LaneSet, Pause, Round, Take, join_lane, lane_of, validate_stream,
};
pub use header::{DEFAULT_CONSUMERS, HeaderError, Layout, MAX_CONSUMERS, RingKind};
pub use inspect::{RingInfo, RoleInfo, RoleState, SubscriberInfo, inspect, list_candidates};
pub(crate) use segment::Segment;
pub use segment::{
    DEFAULT_DIR, DEFAULT_SUBSCRIBER, MAX_NAME_LEN, SegmentOptions, validate_name,
    validate_subscriber,
};
pub use slot::{ShmSlot, fingerprint};
#[cfg(feature = "arrow")]
pub(crate) use typed::EndSource;
#[cfg(feature = "arrow")]
pub(crate) use typed::MappedRing;
#[cfg(feature = "arrow")]
pub(crate) use typed::check_consumers;
pub use typed::{ShmConsumer, ShmProducer, create};

/// Removes the subscription `subscriber` of ring `name` (in `opts.dir`):
/// the producer no longer keeps items for it, and its cursor is free for
/// another. Refused while its consumer is attached.
///
/// # Errors
///
/// [`OpenError::NotSubscribed`], [`OpenError::SubscriberAttached`],
/// `BadSubscriber`, or as opening the ring.
pub fn unsubscribe(name: &str, subscriber: &str, opts: &SegmentOptions) -> Result<(), OpenError> {
    Segment::open(name, opts)?.unsubscribe(subscriber)
}

/// The directory of rings for programs that take it from their
/// environment, as the `laminar-ring` command and the Python package do:
/// `$LAMINAR_RING_DIR` when it is set and not empty, else `/dev/shm`.
/// ([`SegmentOptions::default`] does not read the environment.)
pub fn ring_dir() -> std::path::PathBuf {
    std::env::var_os("LAMINAR_RING_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| DEFAULT_DIR.into(), Into::into)
}

/// Removes the segment `name` from `/dev/shm`. Processes attached to it keep
/// their mapping until they detach.
///
/// # Errors
///
/// [`OpenError::NotFound`], `PermissionDenied`, `BadName`, I/O.
pub fn remove(name: &str) -> Result<(), OpenError> {
    segment::Segment::remove(name, std::path::Path::new(DEFAULT_DIR))
}

/// Removes the ring `name` from directory `dir` unless a process is
/// attached to it or still creating it, without a race with a process that
/// attaches at the same moment: that process either attached first (and
/// this returns [`OpenError::InUse`]) or gets [`OpenError::Removed`] and
/// opens or creates the ring anew. Works on a damaged file too (it locks
/// the file, it does not read the header).
///
/// # Errors
///
/// [`OpenError::InUse`] naming the roles held; `NotFound`,
/// `PermissionDenied`, `BadName`, I/O.
pub fn remove_unused(name: &str, dir: &std::path::Path) -> Result<(), OpenError> {
    segment::Segment::remove_unused(name, dir, None)
}

/// [`remove_unused`], and only if no producer has attached or written
/// since `seen` was inspected (its `write_seq` and `producer_sessions`,
/// read again while no process can attach): for removing a ring because of
/// what an inspection showed (its stream ended and was read, say) without
/// removing what a producer sent in between.
///
/// # Errors
///
/// As [`remove_unused`], and [`OpenError::Changed`] when the ring changed.
pub fn remove_unused_as_seen(
    name: &str,
    dir: &std::path::Path,
    seen: &RingInfo,
) -> Result<(), OpenError> {
    segment::Segment::remove_unused(name, dir, Some((seen.write_seq, seen.producer_sessions)))
}

/// Removes the segment `name` from directory `dir`.
///
/// # Errors
///
/// As [`remove`].
pub fn remove_in(name: &str, dir: &std::path::Path) -> Result<(), OpenError> {
    segment::Segment::remove(name, dir)
}
