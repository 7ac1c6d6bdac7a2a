//! What the Arrow layer (`crate::arrow`) needs of a ring beyond the typed
//! API: the header words only an Arrow ring uses (`arena_head`,
//! `arena_released`, `saved_state`), the producer session counter, and the
//! consumer's wait cell. Each method is one access with its ordering, so
//! the Arrow layer never reaches into the header, and the header can change
//! behind these methods.

use std::time::Instant;

use crate::sync::{AtomicU64, Ordering};
use crate::wait::{Sharing, WaitStrategy, Waiter};

use super::error::OpenError;
use super::header::{RingKind, check_position};
use super::segment::Segment;
use super::slot::ShmSlot;
use super::typed::{MappedRing, ShmConsumer, ShmProducer};

impl Segment {
    /// Producer attachments so far (line 1 of the header).
    fn producer_sessions(&self) -> u64 {
        // SYNC POINT producer_sessions: Acquire pairs with the Release
        // increment in ShmProducer::attach_checked, which follows that
        // producer's `producer_state = ATTACHED`: a load of producer_state
        // after this one sees that session's state, not the previous end.
        // It tells whether a session began since a point the caller noted;
        // the ends come through the end log, the data through write_seq.
        self.header()
            .producer
            .producer_sessions
            .load(Ordering::Acquire)
    }
}

impl<T: ShmSlot> ShmProducer<T> {
    /// Attaches as the producer of a ring of `kind` that has an arena, and
    /// returns the arena position to resume at: after whatever a previous
    /// producer wrote (`arena_head`, checked before anything is stored).
    ///
    /// # Errors
    ///
    /// As [`attach_checked`](Self::attach_checked), and `BadHeader` when
    /// `arena_head` is beyond 2^63 (later positions could wrap).
    pub(crate) fn attach_with_arena_head(
        seg: Segment,
        kind: RingKind,
    ) -> Result<(Self, u64), OpenError> {
        // arena_head is stored before each publish, so it is at or past the
        // end of every published message. Loaded with the role held (no
        // other producer stores it now) and checked before this producer
        // stores anything: positions after one beyond 2^63 could wrap.
        Self::attach_checked(seg, kind, |seg| {
            // SYNC POINT arena_head: Acquire pairs with the Release store in
            // `store_arena_head` (by an earlier producer).
            let head = seg.header().producer.arena_head.load(Ordering::Acquire);
            check_position("arena_head", head).map_err(|source| OpenError::BadHeader {
                path: seg.path().to_owned(),
                source,
            })?;
            Ok(head)
        })
    }

    /// Stores `arena_head`: the arena position after the last message
    /// written. Store it before publishing the message, so that a crash in
    /// between only wastes the space.
    pub(crate) fn store_arena_head(&self, head: u64) {
        // SYNC POINT arena_head: Release, so that a new producer that loads
        // it (Acquire in `attach_with_arena_head`) resumes after this
        // message; also read (Acquire) by shm::inspect, for `info`.
        self.segment()
            .header()
            .producer
            .arena_head
            .store(head, Ordering::Release);
    }

    /// Makes this producer detach, when dropped, *without* ending the
    /// stream, as [`abandon`](Self::abandon) does: the consumer drains what
    /// was committed, then gets `PeerGone`.
    pub(crate) fn abandon_on_drop(&mut self) {
        self.ending = super::typed::Ending::Abandon;
    }

    /// Makes this producer detach, when dropped, ending the stream *in
    /// error*, as [`fail`](Self::fail) does.
    pub(crate) fn fail_on_drop(&mut self, reason: &str) {
        self.ending = super::typed::Ending::Fail(reason.to_owned());
    }
}

impl<T: ShmSlot> ShmConsumer<T> {
    /// Whether `producer_state` says a producer is attached (it may have
    /// died since: see the lock).
    pub(crate) fn producer_attached(&self) -> bool {
        // Acquire: pairs with the Release store of ROLE_ATTACHED in
        // ShmProducer::attach_checked.
        self.segment()
            .header()
            .producer
            .producer_state
            .load(Ordering::Acquire)
            == super::header::ROLE_ATTACHED
    }

    /// Producer attachments so far.
    pub(crate) fn producer_sessions(&self) -> u64 {
        self.segment().producer_sessions()
    }

    /// The `saved_state` word, which names the half of the save area that
    /// holds the consumer's saved decoder state. Only the consumer stores
    /// it; its loads and stores, and their orderings, are in
    /// `arrow/resume.rs` (SYNC POINT saved).
    pub(crate) fn saved_state_word(&self) -> &AtomicU64 {
        &self.mapped().cursor().saved_state
    }

    /// Stores `arena_released`: the end of the last message released. For
    /// `laminar-ring info` only; store it after `read_seq`, and never use it
    /// to decide anything (a consumer killed between the two stores leaves
    /// it behind).
    pub(crate) fn store_arena_released(&self, end: u64) {
        // Release: pairs with the Acquire load in shm::inspect.
        self.mapped()
            .cursor()
            .arena_released
            .store(end, Ordering::Release);
    }
}

impl<T: ShmSlot> MappedRing<T> {
    /// Producer attachments so far.
    pub(crate) fn producer_sessions(&self) -> u64 {
        self.seg.producer_sessions()
    }

    /// Wakes a consumer that may sleep on the ring's `not_empty` cell, so
    /// that it re-checks its condition (call after the store that may make
    /// it true).
    pub(crate) fn wake_consumer(&self) {
        self.seg
            .header()
            .not_empty
            .cell
            .notify(Sharing::AcrossProcesses);
    }

    /// Runs `attempt` until it returns `Some`, sleeping (as `wait` says) on
    /// the ring's `not_empty` cell in between, which the producer's
    /// publishes, its detach and [`wake_consumer`](Self::wake_consumer)
    /// wake; `None` at the deadline. For a consumer only, which sleeps there
    /// as its cursor's bit.
    pub(crate) fn wait_as_consumer<R>(
        &self,
        wait: WaitStrategy,
        deadline: Option<Instant>,
        attempt: impl FnMut() -> Option<R>,
    ) -> Option<R> {
        Waiter::new(wait, Sharing::AcrossProcesses, self, |r| {
            &r.seg.header().not_empty.cell
        })
        .marking(|r| &r.cursor().waiting_since_ns)
        .sleeping_as(self.cursor_index().unwrap_or(0))
        .wait_until(deadline, attempt)
    }
}
