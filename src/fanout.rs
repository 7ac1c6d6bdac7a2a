//! Several consumers of one ring, each with its own position: the
//! producer's bound and a new subscription's start, written once.
//!
//! Every consumer has a *cursor*: a subscription word and its `read_seq`.
//! The producer may overwrite the slot of a sequence once every subscribed
//! cursor is past it, so its bound is the minimum of their `read_seq`s
//! ([`producer_floor`]). It computes that minimum only when its cached room
//! runs out, as a single-consumer producer reloads `read_seq`; one consumer
//! costs what it did.
//!
//! A consumer that subscribes while the producer runs must start at a
//! sequence the producer has not overwritten and will not overwrite before
//! the consumer is done with it, although the producer may compute its
//! minimum without having seen the new cursor. The producer therefore
//! publishes each minimum it is about to use in `tail`, the sequence below
//! which it may overwrite slots, before it uses it, and the two sides meet
//! in the Dekker pattern:
//!
//! * producer: store `tail = m`; `SeqCst` fence; load `epoch`; if it moved
//!   since before the minimum was taken, take the minimum again and use the
//!   smaller of the two;
//! * subscriber ([`subscribe`]): store its start in `read_seq`, then
//!   `subscription = SUBSCRIBED`, then increment `epoch`; `SeqCst` fence;
//!   load `tail`; if `tail` is past its start, move its start up to `tail`.
//!
//! Of the two fences one comes first. If the producer's does, the
//! subscriber's load sees `m` or a later store (a later one is never below
//! a bound in use), and the subscriber starts at or after everything the
//! producer may overwrite. If the subscriber's does, the
//! producer sees the new `epoch` (Acquire, pairing with the subscriber's
//! Release increment, so its cursor too) and bounds itself by the
//! subscriber's position. Either way nothing at or after the subscriber's
//! start is overwritten before that subscriber releases it. The fences run
//! only when the producer's minimum moves (not per item) and once per
//! subscription. A minimum that did not move `tail` needs no fence: it is
//! no larger than a `tail` an earlier computation published under the same
//! pattern.
//!
//! The loom models in `tests/loom.rs` run this code ([`model`]) with one
//! producer and two consumers, one of them subscribing mid-stream or
//! restarting.

use crate::sync::{AtomicU32, AtomicU64, Ordering, fence};

/// A cursor nobody subscribed (or one unsubscribed): the producer ignores it.
pub const CURSOR_FREE: u32 = 0;
/// A subscribed cursor: the producer keeps every item from its `read_seq`
/// on until its consumer releases it, whether that consumer is attached,
/// detached or dead.
pub const CURSOR_SUBSCRIBED: u32 = 1;

/// A subscription the producer dropped ([`Policy::Lag`]): it no longer
/// bounds the producer, and keeps its name until its consumer comes back
/// (told how many items it missed, then reading from the oldest the ring
/// still holds) or the subscription is removed.
pub const CURSOR_DROPPED: u32 = 2;

/// What the producer does about a subscribed consumer that holds it back
/// (the ring is full and that consumer has not released the oldest item).
/// Chosen when the ring is created and recorded in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Wait for it, however long: nothing is lost for any subscriber
    /// (`ShmProducer::push` reports `ConsumerGone` when every subscriber
    /// holding it back is dead, and keeps the items).
    #[default]
    Block,
    /// Drop it from the producer's bound when it holds the producer back
    /// and either is `bound` items or more behind (a live consumer too), or
    /// has had no consumer attached for `grace`. A dropped subscription
    /// keeps its name; its consumer's next read reports how many items it
    /// missed (`ShmTryPopError::Lagged`) and it goes on from the oldest item
    /// the ring still holds.
    Lag {
        /// Drop a subscriber this many items behind, alive or not (1 to
        /// the capacity); `None`: only dead ones are dropped. Typed rings
        /// only: a live Arrow consumer may hold zero-copy batches in the
        /// arena, which the producer must not overwrite.
        bound: Option<u64>,
        /// Drop a subscriber that holds the producer back with no consumer
        /// attached for this long.
        grace: std::time::Duration,
    },
}

/// What the protocol needs of one consumer's cursor.
pub trait Cursor {
    /// [`CURSOR_FREE`] or [`CURSOR_SUBSCRIBED`] (anything else: free).
    fn subscription(&self) -> &AtomicU32;
    /// Items below it are released by this cursor's consumer.
    fn read_seq(&self) -> &AtomicU64;
}

/// The two words a ring with cursors adds for its producer and its
/// subscribers.
#[derive(Clone, Copy, Debug)]
pub struct Words<'a> {
    /// Stored by the producer only: the largest bound any producer
    /// published under the pattern (slots below a bound in use may be
    /// overwritten). It never moves back: a producer publishes the larger
    /// of its bound and what `tail` holds.
    pub tail: &'a AtomicU64,
    /// Incremented by every subscription (Release), after its cursor is
    /// written.
    pub epoch: &'a AtomicU64,
}

/// What the producer found among the cursors.
struct Found {
    /// The minimum `read_seq` of the subscribed cursors it waits for.
    min: Option<u64>,
    /// Whether a cursor is dropped ([`CURSOR_DROPPED`]).
    dropped: bool,
}

/// The minimum `read_seq` of the subscribed cursors, each checked against
/// the producer's position; with a lag `bound`, a cursor at least `bound`
/// items behind `write` is dropped first ([`drop_lagging`]). `Err(())`
/// when one holds a position that contradicts `write` (a peer's bug or
/// malice: the caller keeps its bound).
fn min_read<C: Cursor>(
    cursors: &[C],
    write: u64,
    capacity: u64,
    bound: Option<u64>,
) -> Result<Found, ()> {
    let mut found = Found {
        min: None,
        dropped: false,
    };
    for c in cursors {
        // SYNC POINT subscription: Acquire pairs with the Release store in
        // `subscribe`: the cursor's start is stored before it.
        match c.subscription().load(Ordering::Acquire) {
            CURSOR_SUBSCRIBED => {}
            CURSOR_DROPPED => {
                found.dropped = true;
                continue;
            }
            _ => continue,
        }
        // SYNC POINT read_seq: Acquire pairs with the Release store in
        // ConsumerCore::release: that consumer is done with the slots below.
        let mut r = c.read_seq().load(Ordering::Acquire);
        if r > write || write - r > capacity {
            return Err(());
        }
        if let Some(bound) = bound.filter(|&b| write - r >= b) {
            match drop_lagging(c, write, bound) {
                None => {
                    found.dropped = true;
                    continue;
                }
                Some(now) if now > write || write - now > capacity => return Err(()),
                Some(now) => r = now,
            }
        }
        found.min = Some(found.min.map_or(r, |m| m.min(r)));
    }
    Ok(found)
}

/// Drops the subscribed cursor `c`, found at least `bound` items behind
/// `write`: `None` when it is dropped, or `Some(read_seq)` when it stays
/// subscribed (it caught up meanwhile, or was unsubscribed and subscribed
/// again: see below).
///
/// The producer is the only process that drops a cursor, and a consumer
/// holding the cursor may be reading: that consumer finds out when it
/// checks `tail` after a read (every slot it may have read overwritten lies
/// below a `tail` published before the overwrite) or sees its cursor
/// dropped.
///
/// Between the load of `read_seq` and the compare-and-swap, the cursor may
/// have been unsubscribed and subscribed again (another consumer, another
/// start): so `read_seq` is loaded again after the swap, and a cursor that
/// is no longer `bound` behind is given back its subscription before the
/// producer uses a bound without it. A consumer that saw it dropped in
/// between subscribes it again itself, which is harmless.
fn drop_lagging<C: Cursor>(c: &C, write: u64, bound: u64) -> Option<u64> {
    // SYNC POINT subscription: AcqRel; the Release half pairs with the
    // consumer's Acquire loads (it sees itself dropped), the Acquire half
    // with the subscriber's Release store (a fresh start is seen below).
    if c.subscription()
        .compare_exchange(
            CURSOR_SUBSCRIBED,
            CURSOR_DROPPED,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // Unsubscribed, or dropped by an earlier producer: not ours to count.
        return None;
    }
    // SYNC POINT read_seq: Acquire, as in min_read.
    let r = c.read_seq().load(Ordering::Acquire);
    if r <= write && write - r < bound {
        // SYNC POINT subscription: as above. Fails only if its consumer
        // already subscribed it again, which also bounds the producer.
        let _ = c.subscription().compare_exchange(
            CURSOR_DROPPED,
            CURSOR_SUBSCRIBED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        return Some(r);
    }
    None
}

/// The producer's bound: the sequence below which every subscribed
/// consumer has released its items, for a producer at `write`, with the
/// largest `tail` this producer has published under the pattern so far
/// (`checked`, its own state: 0 when it attaches). Returns the bound and
/// the new `checked`, or `None` when a cursor's position contradicts
/// `write`: keep the previous bound.
///
/// With no cursor subscribed the bound is `tail` itself: what the ring
/// holds stays until a consumer subscribes and reads it, and a producer
/// that fills the ring waits.
///
/// A `tail` stored by an earlier producer that died before its fence is
/// not one published under the pattern: a subscriber may have missed it.
/// So a producer runs the pattern for every bound above its own `checked`,
/// the first one included, whatever `tail` already holds.
pub fn producer_floor<C: Cursor>(
    words: Words<'_>,
    cursors: &[C],
    write: u64,
    capacity: u64,
    checked: u64,
    bound: Option<u64>,
) -> Option<(u64, u64)> {
    // SYNC POINT epoch: Acquire pairs with the Release increment in
    // `subscribe`: a subscription counted here is seen by the loads below.
    let epoch = words.epoch.load(Ordering::Acquire);
    // SYNC POINT tail: Acquire pairs with the Release store of an earlier
    // producer (this one is the only one storing it now).
    let tail = words.tail.load(Ordering::Acquire);
    let m = match min_read(cursors, write, capacity, bound) {
        Err(()) => return None,
        // A tail that contradicts `write`: keep the bound.
        Ok(Found { min: None, .. }) if tail > write || write - tail > capacity => return None,
        // Every subscription dropped: nobody to wait for. Half the ring is
        // kept for them (a dropped consumer coming back, or a new one,
        // starts at the tail), half is room.
        Ok(Found {
            min: None,
            dropped: true,
        }) => tail.max(write.saturating_sub(capacity / 2)),
        Ok(Found { min: None, .. }) => tail,
        Ok(Found { min: Some(m), .. }) => m,
    };
    if m <= checked {
        // Not past a tail this producer published under the pattern (a
        // provisional start below it is raised by its subscriber).
        return Some((m, checked));
    }
    // Never publish less than `tail` holds: a predecessor may have used a
    // bound up to it (its arena reused up to there) without the pattern
    // reaching a subscriber that started below it; raised to `tail`, that
    // subscriber starts after what it may have overwritten.
    let published = m.max(tail);
    // SYNC POINT tail: Release pairs with the subscriber's Acquire load; the
    // SeqCst fence below orders this store before the epoch load (Dekker).
    words.tail.store(published, Ordering::Release);
    fence(Ordering::SeqCst);
    // SYNC POINT epoch (as above).
    if words.epoch.load(Ordering::Acquire) == epoch {
        return Some((m, published));
    }
    // A consumer subscribed meanwhile: it may start below `m`, at the tail it
    // loaded. Bound by it too (its own load of `tail` may have missed `m`).
    match min_read(cursors, write, capacity, bound) {
        Err(()) => None,
        Ok(Found { min: None, .. }) => Some((m, published)),
        Ok(Found { min: Some(m2), .. }) => Some((m.min(m2), published)),
    }
}

/// Whether nothing a consumer copied from sequence `first` on can have
/// been overwritten, checked after the copy and before its release (a
/// seqlock reader's check), in a ring whose producer may drop a live
/// consumer ([`Policy::Lag`] with a bound): `tail` is the producer's, and
/// `subscription` this consumer's cursor's.
///
/// The producer overwrites an unreleased slot of this consumer only after
/// it dropped the cursor (`subscription` 1 to 2, before it computes the
/// bound without it), then published a `tail` past the slot and ran a
/// `SeqCst` fence ([`producer_floor`]); only this consumer subscribes its
/// cursor again. The copy's loads come before these loads (the Acquire
/// fence): if the copy saw a byte the producer wrote after that fence, they
/// see the drop and that tail. So the copy is intact when `tail` is at or
/// before `first`, or the cursor is still subscribed (a `tail` past a
/// subscribed cursor is possible: a subscriber whose fence came first in
/// the pattern starts below a `tail` it did not see, and the producer
/// bounds itself by it). Before the release: once items are released, the
/// producer may rightly publish a tail past them.
#[inline(always)]
pub fn copies_intact(tail: &AtomicU64, subscription: &AtomicU32, first: u64) -> bool {
    fence(Ordering::Acquire);
    // SYNC POINT tail, subscription: see above (Relaxed: ordered by the
    // fence).
    tail.load(Ordering::Relaxed) <= first
        || subscription.load(Ordering::Relaxed) == CURSOR_SUBSCRIBED
}

/// Where a new subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The oldest item the ring still holds.
    Earliest,
    /// The next item published.
    Latest,
}

/// The provisional start of a subscription at `start`, for a ring whose
/// other subscriptions are `cursors`: [`Start::Earliest`], the oldest item
/// a subscribed consumer has not released (with none subscribed, `tail`:
/// what the ring has kept since the last bound); [`Start::Latest`],
/// `write_seq` (the next item published). Never before `tail`.
pub fn provisional_start<C: Cursor>(
    words: Words<'_>,
    write_seq: &AtomicU64,
    cursors: &[C],
    start: Start,
) -> u64 {
    // SYNC POINT tail: Acquire pairs with the Release store in
    // producer_floor.
    let tail = words.tail.load(Ordering::Acquire);
    // The cursors before write_seq: a consumer that moves on meanwhile is
    // still at or before the write_seq loaded after.
    let oldest = cursors
        .iter()
        // SYNC POINT subscription, read_seq: Acquire, as in min_read.
        .filter(|c| c.subscription().load(Ordering::Acquire) == CURSOR_SUBSCRIBED)
        .map(|c| c.read_seq().load(Ordering::Acquire))
        .min();
    // SYNC POINT write_seq: Acquire, as a consumer's reload.
    let write = write_seq.load(Ordering::Acquire);
    let from = match start {
        Start::Earliest => oldest.unwrap_or(tail),
        Start::Latest => write,
    };
    // A position that contradicts ours is clamped (the pattern then makes
    // the start safe anyway).
    from.clamp(tail, write.max(tail))
}

/// Subscribes the free `cursor`, which the caller owns (no other process
/// writes it meanwhile), from `provisional` ([`provisional_start`]).
/// Stores the cursor's start, which the pattern may move up to `tail`, and
/// returns it.
///
/// The caller has written the cursor's other fields; they are published
/// with the subscription (Release).
pub fn subscribe<C: Cursor>(words: Words<'_>, cursor: &C, provisional: u64) -> u64 {
    let mut from = provisional;
    // Relaxed: published by the Release store of the subscription.
    cursor.read_seq().store(from, Ordering::Relaxed);
    // SYNC POINT subscription: Release pairs with the Acquire load in
    // min_read.
    cursor
        .subscription()
        .store(CURSOR_SUBSCRIBED, Ordering::Release);
    // SYNC POINT epoch: Release pairs with the producer's Acquire loads.
    words.epoch.fetch_add(1, Ordering::Release);
    // Dekker with the producer's store of `tail` and its load of `epoch`.
    fence(Ordering::SeqCst);
    // SYNC POINT tail (as above).
    let tail = words.tail.load(Ordering::Acquire);
    if tail > from {
        from = tail;
        // SYNC POINT read_seq: Release, as ConsumerCore::release; the
        // producer bounds itself by the smaller start meanwhile, which only
        // holds it back.
        cursor.read_seq().store(from, Ordering::Release);
    }
    from
}

/// The protocol above with the SPSC cores, on a ring in this process, for
/// the loom models in `tests/loom.rs`: one producer and consumers with
/// their own cursors, exactly as a ring in shared memory runs them
/// (`ProducerCore` bounded by [`producer_floor`], each `ConsumerCore`
/// releasing through its cursor, [`subscribe`] for a new one).
#[cfg(loom)]
#[allow(unsafe_code)]
pub mod model {
    use super::{Cursor, Start, Words, producer_floor, provisional_start, subscribe};
    use crate::protocol::{ConsumerCore, ProducerCore};
    use crate::ring_buffer::SlotRing;
    use crate::sync::{Arc, AtomicU32, AtomicU64, Ordering, UnsafeCell};

    /// One cursor of the model.
    #[derive(Debug, Default)]
    pub struct ModelCursor {
        subscription: AtomicU32,
        read_seq: AtomicU64,
    }

    impl Cursor for ModelCursor {
        fn subscription(&self) -> &AtomicU32 {
            &self.subscription
        }

        fn read_seq(&self) -> &AtomicU64 {
            &self.read_seq
        }
    }

    /// Slots that several consumers read at once: a read is a shared
    /// access (a copy, as the shared-memory rings' volatile reads), a write
    /// an exclusive one, so that loom reports a write racing any read.
    #[derive(Debug)]
    struct Fan {
        slots: Vec<UnsafeCell<u64>>,
        write_seq: AtomicU64,
        tail: AtomicU64,
        epoch: AtomicU64,
        cursors: Vec<ModelCursor>,
    }

    impl Fan {
        fn words(&self) -> Words<'_> {
            Words {
                tail: &self.tail,
                epoch: &self.epoch,
            }
        }
    }

    /// One side's view: the producer's (`own` none) or a cursor's.
    #[derive(Debug)]
    struct View {
        fan: Arc<Fan>,
        own: Option<usize>,
        checked: AtomicU64,
    }

    // SAFETY: the slots are the RingBuffer's (capacity a power of two);
    // the positions are the model's atomics.
    unsafe impl SlotRing for View {
        type Item = u64;
        const TRUSTED: bool = false;

        fn capacity(&self) -> usize {
            self.fan.slots.len()
        }

        fn write_seq_atomic(&self) -> &AtomicU64 {
            &self.fan.write_seq
        }

        fn read_seq_atomic(&self) -> &AtomicU64 {
            &self.fan.cursors[self.own.unwrap_or(0)].read_seq
        }

        fn read_floor(&self, write: u64) -> Option<u64> {
            // Relaxed: this producer's own state.
            let checked = self.checked.load(Ordering::Relaxed);
            let (floor, checked) = producer_floor(
                self.fan.words(),
                &self.fan.cursors,
                write,
                self.capacity() as u64,
                checked,
                None,
            )?;
            self.checked.store(checked, Ordering::Relaxed);
            Some(floor)
        }

        unsafe fn slot_ptr(&self, seq: u64) -> *mut u64 {
            // Only the chunk API uses it, which loom builds leave out.
            self.slot(seq).with_mut(|p| p)
        }

        unsafe fn write_slot(&self, seq: u64, value: u64) {
            // SAFETY: the caller owns the free slot of `seq` (the
            // protocol's promise); loom checks it.
            self.slot(seq).with_mut(|p| unsafe { p.write(value) })
        }

        unsafe fn read_slot(&self, seq: u64) -> u64 {
            // SAFETY: the slot of `seq` is published and not written until
            // every consumer released it (the protocol's promise); loom
            // checks it.
            self.slot(seq).with(|p| unsafe { p.read() })
        }
    }

    impl View {
        fn slot(&self, seq: u64) -> &UnsafeCell<u64> {
            let slots = &self.fan.slots;
            &slots[(seq % slots.len() as u64) as usize]
        }
    }

    /// A ring of `capacity` slots with `cursors` consumer cursors.
    #[derive(Debug, Clone)]
    pub struct Model {
        fan: Arc<Fan>,
    }

    /// The producer of a [`Model`].
    #[allow(missing_debug_implementations)]
    pub struct ModelProducer(ProducerCore<Box<View>>);

    /// A consumer of a [`Model`], on its cursor.
    #[allow(missing_debug_implementations)]
    pub struct ModelConsumer(ConsumerCore<Box<View>>);

    impl Model {
        /// An empty ring; no cursor subscribed.
        pub fn new(capacity: usize, cursors: usize) -> Self {
            Self {
                fan: Arc::new(Fan {
                    slots: (0..capacity).map(|_| UnsafeCell::new(0)).collect(),
                    write_seq: AtomicU64::new(0),
                    tail: AtomicU64::new(0),
                    epoch: AtomicU64::new(0),
                    cursors: (0..cursors).map(|_| ModelCursor::default()).collect(),
                }),
            }
        }

        fn view(&self, own: Option<usize>) -> Box<View> {
            Box::new(View {
                fan: self.fan.clone(),
                own,
                checked: AtomicU64::new(0),
            })
        }

        /// Attaches a producer (a new one resumes at `write_seq`).
        pub fn producer(&self) -> ModelProducer {
            ModelProducer(ProducerCore::new(self.view(None)))
        }

        /// Subscribes the free cursor `cursor` at `start` and attaches its
        /// consumer.
        pub fn subscribe(&self, cursor: usize, start: Start) -> ModelConsumer {
            let words = self.fan.words();
            let from = provisional_start(words, &self.fan.write_seq, &self.fan.cursors, start);
            subscribe(words, &self.fan.cursors[cursor], from);
            self.attach(cursor)
        }

        /// Subscribes the free cursor `cursor` from the provisional start
        /// `from` (which may be one the producer has passed); returns where
        /// the subscription starts.
        pub fn subscribe_from(&self, cursor: usize, from: u64) -> u64 {
            subscribe(self.fan.words(), &self.fan.cursors[cursor], from)
        }

        /// Attaches a consumer to the subscribed `cursor`, resuming at its
        /// `read_seq` (a consumer restarting).
        pub fn attach(&self, cursor: usize) -> ModelConsumer {
            ModelConsumer(ConsumerCore::new(self.view(Some(cursor))))
        }
    }

    impl ModelProducer {
        /// Pushes `value`; `false` when the ring is full.
        pub fn try_push(&mut self, value: u64) -> bool {
            self.0.try_push(value).is_ok()
        }

        /// The next sequence written.
        pub fn position(&self) -> u64 {
            self.0.write_pos()
        }
    }

    impl ModelConsumer {
        /// Pops the oldest item of this cursor.
        pub fn try_pop(&mut self) -> Option<u64> {
            self.0.try_pop()
        }

        /// The next sequence this consumer reads.
        pub fn position(&self) -> u64 {
            self.0.read_pos()
        }
    }

    /// A ring under a lag bound, for the model of a live consumer dropped
    /// while it reads: its slots are atomics (the producer overwriting a
    /// slot the dropped consumer copies is a race by design, which the
    /// check after the copy, [`copies_intact`](super::copies_intact),
    /// catches), and the producer drops a cursor `bound` behind
    /// (`producer_floor` with the bound).
    #[derive(Debug, Clone)]
    pub struct LagModel {
        fan: Arc<LagFan>,
    }

    #[derive(Debug)]
    struct LagFan {
        slots: Vec<AtomicU64>,
        write_seq: AtomicU64,
        tail: AtomicU64,
        epoch: AtomicU64,
        cursors: Vec<ModelCursor>,
        bound: u64,
    }

    #[derive(Debug)]
    struct LagView {
        fan: Arc<LagFan>,
        own: Option<usize>,
        checked: AtomicU64,
    }

    // SAFETY: the slots are a power-of-two count of atomics, each read and
    // written whole; the positions are the model's atomics.
    unsafe impl SlotRing for LagView {
        type Item = u64;
        const TRUSTED: bool = false;

        fn capacity(&self) -> usize {
            self.fan.slots.len()
        }

        fn write_seq_atomic(&self) -> &AtomicU64 {
            &self.fan.write_seq
        }

        fn read_seq_atomic(&self) -> &AtomicU64 {
            &self.fan.cursors[self.own.unwrap_or(0)].read_seq
        }

        fn read_floor(&self, write: u64) -> Option<u64> {
            let f = &self.fan;
            // Relaxed: this producer's own state.
            let checked = self.checked.load(Ordering::Relaxed);
            let words = Words {
                tail: &f.tail,
                epoch: &f.epoch,
            };
            let (floor, checked) = producer_floor(
                words,
                &f.cursors,
                write,
                self.capacity() as u64,
                checked,
                Some(f.bound),
            )?;
            self.checked.store(checked, Ordering::Relaxed);
            Some(floor)
        }

        unsafe fn slot_ptr(&self, _seq: u64) -> *mut u64 {
            unreachable!("the chunk API is compiled out under loom")
        }

        unsafe fn write_slot(&self, seq: u64, value: u64) {
            // Relaxed: published by the producer's Release store of
            // write_seq, as a slot's bytes are.
            self.slot(seq).store(value, Ordering::Relaxed);
        }

        unsafe fn read_slot(&self, seq: u64) -> u64 {
            // Relaxed: as the shared-memory rings' volatile reads; checked
            // by copies_intact before it is used.
            self.slot(seq).load(Ordering::Relaxed)
        }
    }

    impl LagView {
        fn slot(&self, seq: u64) -> &AtomicU64 {
            let slots = &self.fan.slots;
            &slots[(seq % slots.len() as u64) as usize]
        }
    }

    /// The producer of a [`LagModel`].
    #[allow(missing_debug_implementations)]
    pub struct LagProducer(ProducerCore<Box<LagView>>);

    /// A consumer of a [`LagModel`].
    #[allow(missing_debug_implementations)]
    pub struct LagConsumer(ConsumerCore<Box<LagView>>, Arc<LagFan>, usize);

    /// What a checked pop of a [`LagConsumer`] found.
    #[derive(Debug, PartialEq, Eq)]
    pub enum LagPop {
        /// The next item, intact, released.
        Item(u64),
        /// Nothing published.
        Empty,
        /// The copy may have been overwritten: nothing released.
        Lapped,
    }

    impl LagModel {
        /// An empty ring whose `cursors` cursors are subscribed from 0.
        pub fn new(capacity: usize, cursors: usize, bound: u64) -> Self {
            let c: Vec<ModelCursor> = (0..cursors).map(|_| ModelCursor::default()).collect();
            for cursor in &c {
                cursor
                    .subscription
                    .store(super::CURSOR_SUBSCRIBED, Ordering::Relaxed);
            }
            Self {
                fan: Arc::new(LagFan {
                    slots: (0..capacity).map(|_| AtomicU64::new(u64::MAX)).collect(),
                    write_seq: AtomicU64::new(0),
                    tail: AtomicU64::new(0),
                    epoch: AtomicU64::new(0),
                    cursors: c,
                    bound,
                }),
            }
        }

        fn view(&self, own: Option<usize>) -> Box<LagView> {
            Box::new(LagView {
                fan: self.fan.clone(),
                own,
                checked: AtomicU64::new(0),
            })
        }

        /// The producer.
        pub fn producer(&self) -> LagProducer {
            LagProducer(ProducerCore::new(self.view(None)))
        }

        /// The consumer of `cursor`.
        pub fn consumer(&self, cursor: usize) -> LagConsumer {
            LagConsumer(
                ConsumerCore::new(self.view(Some(cursor))),
                self.fan.clone(),
                cursor,
            )
        }
    }

    impl LagProducer {
        /// Pushes `value`; `false` when the ring is full.
        pub fn try_push(&mut self, value: u64) -> bool {
            self.0.try_push(value).is_ok()
        }

        /// The next sequence written.
        pub fn position(&self) -> u64 {
            self.0.write_pos()
        }
    }

    impl LagConsumer {
        /// Copies the next item, checks it, and only then releases it, as
        /// `ShmConsumer` does in a ring with a lag bound.
        pub fn pop_checked(&mut self) -> LagPop {
            let first = self.0.read_pos();
            let Some(v) = self.0.read_next() else {
                return LagPop::Empty;
            };
            let cursor = &self.1.cursors[self.2];
            if !super::copies_intact(&self.1.tail, &cursor.subscription, first) {
                return LagPop::Lapped;
            }
            self.0.release(1);
            LagPop::Item(v)
        }

        /// The next sequence this consumer reads.
        pub fn position(&self) -> u64 {
            self.0.read_pos()
        }

        /// Whether the producer dropped this consumer's cursor.
        pub fn dropped(&self) -> bool {
            // Acquire: pairs with the producer's AcqRel swap.
            self.1.cursors[self.2].subscription.load(Ordering::Acquire) == super::CURSOR_DROPPED
        }
    }
}
