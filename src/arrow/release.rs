//! The release side of a consumer: the messages it has read and not yet
//! released, released oldest first once done with (FIFO), and the decoder
//! state as of `read_seq`, saved (`resume.rs`) before `read_seq` moves.

use std::collections::VecDeque;

use super::Descriptor;
use super::lease::LeaseBook;
use super::resume::{Change, ReleasedState, SaveArea};
use crate::shm::ShmConsumer;

/// A message read but not yet released: where it lies in the arena, and
/// the change of decoder state its release makes (schema and dictionary
/// messages).
pub(super) struct Unreleased {
    pub(super) pos: u64,
    pub(super) end: u64,
    pub(super) change: Option<Change>,
}

/// What a consumer has read and not released, the decoder state as of
/// `read_seq`, and where that state is saved.
pub(super) struct Releaser {
    /// Oldest first; the oldest has sequence `read_seq`.
    pub(super) outstanding: VecDeque<Unreleased>,
    pub(super) state: ReleasedState,
    pub(super) save: SaveArea,
}

impl Releaser {
    /// Nothing read yet; the state is saved in `save`.
    pub(super) fn new(save: SaveArea) -> Self {
        Self {
            outstanding: VecDeque::new(),
            state: ReleasedState::default(),
            save,
        }
    }

    /// Releases, oldest first, every read message whose lease is done;
    /// stops at the first one still leased (FIFO). Stores, in this order
    /// (FORMAT.md, "Intermediate states"): the released state, if a schema
    /// or dictionary message is among them (save area, then `saved_state`);
    /// `read_seq`; `arena_released`.
    pub(super) fn release_done(&mut self, rx: &mut ShmConsumer<Descriptor>, book: &LeaseBook) {
        let mut done = book.done();
        let mut seq = rx.read_seq();
        let mut n = 0;
        let mut end = None;
        let mut changes = Vec::new();
        while self.outstanding.front().is_some() && done.remove(&seq) {
            let u = self.outstanding.pop_front().expect("front exists");
            end = Some(u.end);
            changes.extend(u.change);
            seq += 1;
            n += 1;
        }
        drop(done);
        let Some(end) = end else { return };
        if !changes.is_empty() {
            for change in changes {
                self.state.apply(change);
            }
            // The state as of the new read_seq, saved before read_seq moves:
            // a consumer killed in between resumes at the old read_seq with
            // the old state (resume.rs).
            self.save.save(&mut self.state, seq, rx.saved_state_word());
        }
        // read_seq (Release, in ConsumerCore::release): the one store that
        // releases, for the producer derives the free arena from the
        // descriptor at read_seq (encode::release_point). We read every byte
        // of these messages before it (copies, and leases once dropped).
        rx.chunk(n).commit(n);
        // Then ends_seen, for the ends reported at positions read_seq has
        // now reached (after read_seq: see ShmConsumer::store_ends_seen).
        rx.store_ends_seen();
        // Then arena_released, for `laminar-ring info` only: a kill between
        // the two stores leaves it behind, which misleads no one.
        rx.store_arena_released(end);
    }
}
