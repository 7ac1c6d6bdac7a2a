//! Loom models of the SPSC and MPSC protocols: every interleaving (up to the
//! preemption bound) of small schedules on capacities 2 and 4.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --test loom
//! ```
//!
//! The SPSC models run `protocol::{ProducerCore, ConsumerCore}`, the one copy
//! of the algorithm that the shared-memory rings run too. Slots are loom
//! `UnsafeCell`s, so a missing happens-before edge between a slot write and
//! its read is reported as a data race, not just a wrong value.
//!
//! The fan-out models (one producer, two consumers with their own cursors)
//! run the same cores through `fanout::model`, bounded by
//! `fanout::producer_floor` and subscribing with `fanout::subscribe`, the
//! code the shared-memory rings run.
//!
//! The Arrow ring models (release vs. restart, at the end) are abstract: the
//! arrow code is compiled out under loom, so they restate its stores and
//! loads, orderings included, over model cells.
#![cfg(loom)]
#![allow(unsafe_code)] // one model drives the raw RingBuffer API; model cells

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use loom::thread;

use laminar_ring::fanout::Start;
use laminar_ring::fanout::model::{Model, ModelConsumer, ModelProducer};
use laminar_ring::{RingBuffer, TryPopError, TryPushError, mpsc, spsc};

fn model(f: impl Fn() + Sync + Send + 'static) {
    model_bounded(3, f);
}

/// A model whose preemption bound is at most `bound`.
fn model_bounded(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    let env = builder.preemption_bound;
    builder.preemption_bound = Some(env.map_or(bound, |e| e.min(bound)));
    // Spin-with-yield loops branch at every retry.
    builder.max_branches = 100_000;
    builder.check(f);
}

/// Pushes `v`, yielding to the model while the ring is full.
fn push_spin(tx: &mut spsc::Producer<u32>, mut v: u32) {
    loop {
        match tx.try_push(v) {
            Ok(()) => return,
            Err(TryPushError::Full(back)) => v = back,
            Err(TryPushError::Disconnected(_)) => panic!("consumer vanished"),
        }
        thread::yield_now();
    }
}

/// Pops until the producer is gone and the ring drained.
fn drain(rx: &mut spsc::Consumer<u32>) -> Vec<u32> {
    let mut got = Vec::new();
    loop {
        match rx.try_pop() {
            Ok(v) => got.push(v),
            Err(TryPopError::Empty) => thread::yield_now(),
            Err(TryPopError::Disconnected) => return got,
        }
    }
}

#[test]
fn spsc_wraparound_on_capacity_2() {
    model(|| {
        let (mut tx, mut rx) = spsc::channel::<u32>(2);
        let p = thread::spawn(move || {
            for v in 0..3 {
                push_spin(&mut tx, v);
            }
        });
        assert_eq!(drain(&mut rx), [0, 1, 2]);
        p.join().unwrap();
    });
}

#[test]
fn spsc_full_and_empty_edges() {
    model(|| {
        let (mut tx, mut rx) = spsc::channel::<u32>(2);
        let p = thread::spawn(move || {
            tx.try_push(1).unwrap();
            tx.try_push(2).unwrap();
            // Full unless the consumer already took something.
            match tx.try_push(3) {
                Ok(()) => true,
                Err(TryPushError::Full(3)) => false,
                Err(e) => panic!("unexpected {e:?}"),
            }
        });
        let first = rx.try_pop();
        let third_pushed = p.join().unwrap();
        let mut got: Vec<u32> = first.into_iter().collect();
        got.extend(drain(&mut rx));
        if third_pushed {
            assert_eq!(got, [1, 2, 3]);
        } else {
            assert_eq!(got, [1, 2]);
        }
    });
}

#[test]
fn spsc_batches_publish_once() {
    model(|| {
        let (mut tx, mut rx) = spsc::channel::<u32>(4);
        let p = thread::spawn(move || {
            let mut sent = 0;
            while sent < 6 {
                let batch: Vec<u32> = (sent..6).collect();
                let n = tx.push_slice(&batch) as u32;
                sent += n;
                if n == 0 {
                    thread::yield_now();
                }
            }
        });
        let mut got = Vec::new();
        let mut buf = [0; 3];
        while got.len() < 6 {
            let n = rx.pop_slice(&mut buf);
            got.extend_from_slice(&buf[..n]);
            if n == 0 {
                thread::yield_now();
            }
        }
        assert_eq!(got, [0, 1, 2, 3, 4, 5]);
        p.join().unwrap();
    });
}

#[test]
fn spsc_disconnect_after_last_push_loses_nothing() {
    model(|| {
        let (mut tx, mut rx) = spsc::channel::<u32>(2);
        let p = thread::spawn(move || {
            push_spin(&mut tx, 7);
            push_spin(&mut tx, 8);
            drop(tx);
        });
        assert_eq!(drain(&mut rx), [7, 8]);
        p.join().unwrap();
    });
}

#[test]
fn spsc_consumer_drop_drops_each_item_once() {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut tx, mut rx) = spsc::channel::<Counted>(2);
        let d = drops.clone();
        let p = thread::spawn(move || {
            for _ in 0..2 {
                // Full or disconnected: the value comes back and is dropped here.
                let _ = tx.try_push(Counted(d.clone()));
            }
        });
        drop(rx.try_pop());
        drop(rx);
        p.join().unwrap();
        // Both halves are gone, so the ring is too: every value made was dropped once.
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    });
}

#[test]
fn ring_len_stays_within_capacity_under_races() {
    model(|| {
        let ring = Arc::new(RingBuffer::<u32>::new(2));
        let r2 = ring.clone();
        // Producer and consumer in one thread (so the protocol is trivially
        // respected); len() observed concurrently from another.
        let worker = thread::spawn(move || {
            for seq in 0..3 {
                // SAFETY: this thread is the only producer and consumer.
                unsafe {
                    r2.write_slot(seq, seq as u32);
                    r2.advance_write_seq(seq + 1);
                    let _ = r2.read_slot(seq);
                    r2.advance_read_seq(seq + 1);
                }
            }
        });
        for _ in 0..2 {
            let len = ring.len();
            assert!(len <= 2, "len {len} exceeds capacity");
        }
        worker.join().unwrap();
        assert_eq!(ring.len(), 0);
    });
}

// ---------------------------------------------------------------- wake-ups
//
// Both sides of these channels park (WaitStrategy::Park): under loom a
// parked thread sleeps on a modelled futex with no time limit, so a wake-up
// the protocol loses (publisher and sleeper each missing the other's
// store) leaves a thread asleep for good, and loom fails the model with a
// deadlock. The barrier pair is the crate's own code: its light half is
// modelled by what `membarrier` guarantees it (see `wait::barrier`).

/// The consumer sleeps on an empty ring and the producer on a full one,
/// alternately: every item arrives, in order, and nobody sleeps for ever.
#[test]
fn spsc_park_loses_no_wakeup() {
    model(|| {
        let (mut tx, mut rx) =
            spsc::channel_with::<u32>(1, laminar_ring::WaitStrategy::Park).unwrap();
        let producer = thread::spawn(move || {
            for v in 0..2 {
                tx.push(v).unwrap();
            }
        });
        assert_eq!(rx.pop(), Ok(0));
        assert_eq!(rx.pop(), Ok(1));
        assert_eq!(rx.pop(), Err(laminar_ring::PopError::Disconnected));
        producer.join().unwrap();
    });
}

/// Two producers and a parking consumer on the smallest MPSC ring; three
/// items for two slots, so a producer may sleep on a full ring too.
#[test]
fn mpsc_park_loses_no_wakeup() {
    model_bounded(2, || {
        let (tx, mut rx) = mpsc::channel_with::<u32>(2, laminar_ring::WaitStrategy::Park).unwrap();
        let mut tx2 = tx.clone();
        let mut tx1 = tx;
        let a = thread::spawn(move || {
            tx1.push(1).unwrap();
            tx1.push(3).unwrap();
        });
        let b = thread::spawn(move || tx2.push(2).unwrap());
        let mut got = [rx.pop().unwrap(), rx.pop().unwrap(), rx.pop().unwrap()];
        // Producer 1's items in its order.
        let first = got.iter().position(|&v| v == 1).unwrap();
        let third = got.iter().position(|&v| v == 3).unwrap();
        assert!(first < third, "producer 1's items out of order: {got:?}");
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3]);
        a.join().unwrap();
        b.join().unwrap();
    });
}

/// Pushes `v` into an MPSC ring, yielding to the model while it is full.
fn mpsc_push_spin(tx: &mut mpsc::Producer<u32>, mut v: u32) {
    loop {
        match tx.try_push(v) {
            Ok(()) => return,
            Err(TryPushError::Full(back)) => v = back,
            Err(e) => panic!("unexpected {e:?}"),
        }
        thread::yield_now();
    }
}

/// Pops `n` items from an MPSC ring, yielding while it is empty.
fn mpsc_pop_n(rx: &mut mpsc::Consumer<u32>, n: usize) -> Vec<u32> {
    let mut got = Vec::new();
    while got.len() < n {
        match rx.try_pop() {
            Ok(v) => got.push(v),
            Err(TryPopError::Empty) => thread::yield_now(),
            Err(TryPopError::Disconnected) => panic!("disconnected before all items"),
        }
    }
    got
}

#[test]
fn mpsc_two_producers_race_for_slots() {
    model(|| {
        let (tx, mut rx) = mpsc::channel::<u32>(2);
        let handles: Vec<_> = (0..2_u32)
            .map(|p| {
                let mut tx = tx.clone();
                thread::spawn(move || mpsc_push_spin(&mut tx, p))
            })
            .collect();
        drop(tx);
        let mut got = mpsc_pop_n(&mut rx, 2);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(rx.try_pop(), Err(TryPopError::Disconnected));
        got.sort_unstable();
        assert_eq!(got, [0, 1]);
    });
}

#[test]
fn mpsc_wraparound_on_capacity_2() {
    model(|| {
        let (mut tx, mut rx) = mpsc::channel::<u32>(2);
        let p = thread::spawn(move || {
            for v in 0..3 {
                mpsc_push_spin(&mut tx, v);
            }
        });
        assert_eq!(mpsc_pop_n(&mut rx, 3), [0, 1, 2]);
        p.join().unwrap();
        assert_eq!(rx.try_pop(), Err(TryPopError::Disconnected));
    });
}

#[test]
fn mpsc_slice_claims_do_not_overlap() {
    model(|| {
        let (mut tx, mut rx) = mpsc::channel::<u32>(4);
        let mut tx2 = tx.clone();
        let p = thread::spawn(move || tx2.push_slice(&[10, 11]));
        let a = tx.push_slice(&[0, 1]);
        let b = p.join().unwrap();
        drop(tx);
        assert_eq!((a, b), (2, 2), "four slots fit both");
        let mut got = Vec::new();
        assert_eq!(rx.pop_into(&mut got, 8), 4);
        got.sort_unstable();
        assert_eq!(got, [0, 1, 10, 11]);
    });
}

// Arrow ring: release vs. restart.
//
// An abstract model of the Arrow ring's release protocol (the arrow code is
// compiled out under loom): descriptors `(pos, len, end, kind)` in ring
// slots, message bytes in an arena of a few cells, the save area's two
// halves, and the header words `read_seq`, `write_seq`, `saved_state` and
// `arena_released`. Positions count cells, not bytes. Every slot, arena cell
// and save-area word is a loom `UnsafeCell`, so a write that is not ordered
// after a read of the same bytes (or a read not ordered after their write)
// is reported as a data race; every message the consumers read is also
// checked cell by cell, and every state they resume with is checked against
// the stream.
//
// A consumer is killed by stopping it before one of its stores (every
// prefix of its stores is run, one model per prefix). The consumer that
// attaches next runs on the same model thread: the role lock it takes after
// the kill orders it after every store the killed one made, and the kill
// keeps the rest from happening.
// The producer is never killed here (`arena_head` is not modelled).

/// Message kinds, as in a descriptor's `kind`.
const MSG_SCHEMA: u64 = 1;
const MSG_DICTIONARY: u64 = 2;
const MSG_BATCH: u64 = 3;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Desc {
    pos: u64,
    len: u64,
    end: u64,
    kind: u64,
}

/// The messages a producer sends: `(kind, cells)` each.
type Stream = &'static [(u64, u64)];

/// The decoder state as of `seq` (what the messages from `seq` on were
/// encoded against): the last schema or dictionary message before `seq`,
/// as its sequence + 1; 0 before the first.
fn state_as_of(stream: Stream, seq: u64) -> u64 {
    (0..seq)
        .rev()
        .find(|&s| stream[s as usize].0 != MSG_BATCH)
        .map_or(0, |s| s + 1)
}

/// What cell `j` of message `seq` holds.
fn cell_tag(seq: u64, j: u64) -> u64 {
    (seq << 4 | j) + 1
}

/// The shared segment.
struct ArrowSeg {
    write_seq: AtomicU64,
    read_seq: AtomicU64,
    /// End of the last message released: information only.
    arena_released: AtomicU64,
    /// 0 none, 1 the first half, 2 the second.
    saved_state: AtomicU64,
    slots: Vec<UnsafeCell<Desc>>,
    arena: Vec<UnsafeCell<u64>>,
    /// Per half: `[from_seq, state]` (the header word and the messages).
    halves: [[UnsafeCell<u64>; 2]; 2],
}

impl ArrowSeg {
    fn new(capacity: usize, arena_cells: usize) -> Self {
        let cell = || UnsafeCell::new(0);
        Self {
            write_seq: AtomicU64::new(0),
            read_seq: AtomicU64::new(0),
            arena_released: AtomicU64::new(0),
            saved_state: AtomicU64::new(0),
            slots: (0..capacity)
                .map(|_| UnsafeCell::new(Desc::default()))
                .collect(),
            arena: (0..arena_cells).map(|_| cell()).collect(),
            halves: [[cell(), cell()], [cell(), cell()]],
        }
    }

    fn capacity(&self) -> u64 {
        self.slots.len() as u64
    }

    fn arena_len(&self) -> u64 {
        self.arena.len() as u64
    }

    fn slot(&self, seq: u64) -> &UnsafeCell<Desc> {
        &self.slots[(seq % self.capacity()) as usize]
    }

    fn load(cell: &UnsafeCell<u64>) -> u64 {
        // SAFETY: a model cell; loom reports an access that races a write.
        cell.with(|p| unsafe { *p })
    }

    fn store(cell: &UnsafeCell<u64>, v: u64) {
        // SAFETY: as in `load`.
        cell.with_mut(|p| unsafe { *p = v })
    }
}

/// The producer (`ShmProducer::reserve`, `write_message`): each message at
/// the arena head (skipping the tail when it would wrap), once the release
/// point derived from `read_seq` leaves room and a slot is free.
fn arrow_produce(seg: &ArrowSeg, stream: Stream) {
    let (cap, len) = (seg.capacity(), seg.arena_len());
    let (mut head, mut floor, mut cached_read) = (0_u64, 0_u64, 0_u64);
    for (w, &(kind, size)) in stream.iter().enumerate() {
        let w = w as u64;
        let pos = if head % len + size > len {
            head + (len - head % len)
        } else {
            head
        };
        loop {
            // ProducerCore::free: reloads read_seq only when the cache shows
            // no free slot. SYNC POINT read_seq: Acquire pairs with the
            // Release store in the consumer's `release`.
            if w - cached_read >= cap {
                cached_read = seg.read_seq.load(Ordering::Acquire);
            }
            let slot_free = w - cached_read < cap;
            // The floor is kept, and recomputed only when the message does
            // not fit (it only grows).
            if pos + size - floor.min(pos) > len || !slot_free {
                floor = arrow_release_point(seg, w, head, pos).max(floor);
            }
            if pos + size - floor.min(pos) <= len && slot_free {
                break;
            }
            thread::yield_now();
        }
        for j in 0..size {
            ArrowSeg::store(&seg.arena[((pos + j) % len) as usize], cell_tag(w, j));
        }
        let desc = Desc {
            pos,
            len: size,
            end: pos + size,
            kind,
        };
        // SAFETY: a model cell, as in `ArrowSeg::load`.
        seg.slot(w).with_mut(|p| unsafe { *p = desc });
        head = desc.end;
        // SYNC POINT write_seq: Release publishes the descriptor and the
        // arena cells; pairs with the Acquire load in `ArrowConsumer::run`.
        seg.write_seq.store(w + 1, Ordering::Release);
    }
}

/// `encode::release_point` over `ShmProducer::oldest_unreleased`: no cell
/// before the descriptor at `read_seq` is in use; nothing is when
/// `read_seq == write_seq`.
fn arrow_release_point(seg: &ArrowSeg, write: u64, head: u64, pos: u64) -> u64 {
    // SYNC POINT read_seq: Acquire pairs with the Release store in the
    // consumer's `release`: it is done with every message below `read`.
    let read = seg.read_seq.load(Ordering::Acquire);
    assert!(
        read <= write && write - read <= seg.capacity(),
        "read_seq {read}"
    );
    if read == write {
        return pos;
    }
    // SAFETY: a model cell, as in `ArrowSeg::load`; the producer writes this
    // slot again only for `read + capacity`.
    let desc = seg.slot(read).with(|p| unsafe { *p });
    desc.pos.min(head)
}

/// A consumer stopped before one of its stores.
#[derive(Debug)]
struct Killed;

/// One consumer process: attaches at `read_seq`, reads ahead up to two
/// messages, releases them as `Releaser::release_done` does.
struct ArrowConsumer<'a> {
    seg: &'a ArrowSeg,
    stream: Stream,
    /// Next sequence to read.
    read: u64,
    /// Our `read_seq`.
    released: u64,
    /// The decoder's state: runs ahead of `released` by the messages read.
    decoder: u64,
    /// The state as of `released`: what is saved.
    released_state: u64,
    /// Stores left before the kill; `None`: never killed.
    stores_left: Option<usize>,
}

impl<'a> ArrowConsumer<'a> {
    /// Counts one store; `Err` when the kill comes first.
    fn store_step(&mut self) -> Result<(), Killed> {
        match &mut self.stores_left {
            Some(0) => Err(Killed),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// `BatchConsumer::attach` with `SaveArea::restore`: resumes at
    /// `read_seq` with the state saved for it, and checks that this state
    /// is the one the messages from `read_seq` were encoded against.
    fn attach(
        seg: &'a ArrowSeg,
        stream: Stream,
        stores_left: Option<usize>,
    ) -> Result<Self, Killed> {
        let mut me = Self {
            seg,
            stream,
            read: 0,
            released: 0,
            decoder: 0,
            released_state: 0,
            stores_left,
        };
        // ConsumerCore::new. Acquire: pairs with the Release stores of
        // read_seq by an earlier consumer.
        let read = seg.read_seq.load(Ordering::Acquire);
        // SYNC POINT saved: Acquire pairs with the Release store in `save`.
        let named = seg.saved_state.load(Ordering::Acquire);
        let state = if named == 0 {
            0
        } else {
            assert!(named <= 2, "saved_state {named}");
            let mut half = (named - 1) as usize;
            let mut from = ArrowSeg::load(&seg.halves[half][0]);
            if from > read {
                // Killed between naming this half and storing read_seq: the
                // other half holds the state at read_seq.
                half ^= 1;
                from = ArrowSeg::load(&seg.halves[half][0]);
                assert!(from <= read, "both halves ahead of read_seq {read}");
                // Named again before anything is written. SYNC POINT saved:
                // as in `save`.
                me.store_step()?;
                seg.saved_state.store(half as u64 + 1, Ordering::Release);
            }
            ArrowSeg::load(&seg.halves[half][1])
        };
        assert_eq!(
            state,
            state_as_of(stream, read),
            "resumed at read_seq {read} with the state of another sequence"
        );
        me.read = read;
        me.released = read;
        me.decoder = state;
        me.released_state = state;
        Ok(me)
    }

    /// Reads and releases every message to the end of the stream. Like a
    /// zero-copy consumer, it reads on while older messages are leased: once
    /// it holds three it releases the two oldest (the decoder is then ahead
    /// of the state released), and when nothing more is published it
    /// releases all it holds.
    fn run(&mut self) -> Result<(), Killed> {
        let n = self.stream.len() as u64;
        // Ends of the messages read and not released, oldest first.
        let mut held = Vec::new();
        while self.released < n {
            // SYNC POINT write_seq: Acquire pairs with the producer's Release
            // store, so the descriptors and cells below `write` are written.
            let write = self.seg.write_seq.load(Ordering::Acquire);
            if self.read < write {
                held.push(self.read_message(self.read));
                self.read += 1;
                if held.len() == 3 {
                    self.release(self.read - 1, held[1])?;
                    held.drain(..2);
                }
            } else if let Some(&end) = held.last() {
                self.release(self.read, end)?;
                held.clear();
            } else {
                thread::yield_now();
            }
        }
        Ok(())
    }

    /// Reads message `seq` and decodes it; returns its end.
    fn read_message(&mut self, seq: u64) -> u64 {
        let (kind, size) = self.stream[seq as usize];
        // SAFETY: a model cell, as in `ArrowSeg::load`.
        let desc = self.seg.slot(seq).with(|p| unsafe { *p });
        assert_eq!((desc.kind, desc.len), (kind, size), "descriptor {seq}");
        assert_eq!(desc.end, desc.pos + desc.len, "descriptor {seq}");
        let len = self.seg.arena_len();
        for j in 0..size {
            let got = ArrowSeg::load(&self.seg.arena[((desc.pos + j) % len) as usize]);
            assert_eq!(
                got,
                cell_tag(seq, j),
                "cell {j} of message {seq} overwritten"
            );
        }
        if kind == MSG_BATCH {
            assert_eq!(self.decoder, state_as_of(self.stream, seq), "batch {seq}");
        } else {
            self.decoder = seq + 1;
        }
        desc.end
    }

    /// `Releaser::release_done`: the state as of the new `read_seq` saved (save
    /// area half, then `saved_state`) if a released message changed it;
    /// `read_seq`; `arena_released`. Releases the messages below `to`, the
    /// last of which ends at `end`.
    fn release(&mut self, to: u64, end: u64) -> Result<(), Killed> {
        let mut changed = false;
        for seq in self.released..to {
            if self.stream[seq as usize].0 != MSG_BATCH {
                self.released_state = seq + 1;
                changed = true;
            }
        }
        if changed {
            self.save(to)?;
        }
        self.store_step()?;
        // SYNC POINT read_seq: Release tells the producer we are done with
        // the messages below `to` (the slots and, through the release point,
        // their cells); pairs with the Acquire loads in `arrow_produce` and
        // `arrow_release_point`.
        self.seg.read_seq.store(to, Ordering::Release);
        self.released = to;
        self.store_step()?;
        // Information only (`laminar-ring info`). Release: pairs with the
        // Acquire load in shm::inspect.
        self.seg.arena_released.store(end, Ordering::Release);
        Ok(())
    }

    /// `SaveArea::save`: the half `saved_state` does not name (messages,
    /// then the header), then `saved_state`.
    fn save(&mut self, from_seq: u64) -> Result<(), Killed> {
        // Relaxed: our own last store, or a predecessor's read at attach
        // with Acquire; only this consumer stores the word.
        let named = self.seg.saved_state.load(Ordering::Relaxed);
        let half = usize::from(named == 1);
        let cells = &self.seg.halves[half];
        self.store_step()?;
        ArrowSeg::store(&cells[1], self.released_state);
        self.store_step()?;
        ArrowSeg::store(&cells[0], from_seq);
        self.store_step()?;
        // SYNC POINT saved: Release publishes the half to the Acquire load
        // in `attach` of a consumer that attaches later.
        self.seg
            .saved_state
            .store(half as u64 + 1, Ordering::Release);
        Ok(())
    }
}

/// Consumers one after the other, each killed after `kills[i]` stores
/// (`None`: runs to the end of the stream), while a producer sends
/// `stream`. Checks, besides every message and resumed state, that each
/// consumer resumes at or before the first message no consumer has read
/// (at least once, nothing lost) and that the last one reads to the end.
/// Returns a mask of the consumers (bit `i` for `kills[i]`) that were
/// killed in at least one execution: a kill point past the last store of
/// every execution adds nothing.
fn release_restart_model(
    preemptions: usize,
    capacity: usize,
    arena_cells: usize,
    stream: Stream,
    kills: Vec<Option<usize>>,
) -> usize {
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mask = killed.clone();
    model_bounded(preemptions, move || {
        let seg = Arc::new(ArrowSeg::new(capacity, arena_cells));
        let p = {
            let seg = seg.clone();
            thread::spawn(move || arrow_produce(&seg, stream))
        };
        // The first sequence no consumer has read yet.
        let mut unread = 0;
        let mut finished = false;
        for (i, &kill) in kills.iter().enumerate() {
            let done = ArrowConsumer::attach(&seg, stream, kill).and_then(|mut c| {
                assert!(c.read <= unread, "resumed at {} past {unread}", c.read);
                let done = c.run();
                unread = unread.max(c.read);
                done
            });
            if done.is_ok() {
                finished = true;
                break;
            }
            // Not a loom atomic: bookkeeping across executions, outside the model.
            mask.fetch_or(1 << i, std::sync::atomic::Ordering::Relaxed);
        }
        assert!(finished, "the last consumer is never killed");
        assert_eq!(unread, stream.len() as u64);
        p.join().unwrap();
    });
    killed.load(std::sync::atomic::Ordering::Relaxed)
}

/// Messages of one and two cells in an arena of four: the producer waits
/// for the release point, and skips the arena's tail for the third and the
/// fifth message.
const TIGHT: Stream = &[
    (MSG_SCHEMA, 2),
    (MSG_BATCH, 1),
    (MSG_DICTIONARY, 2),
    (MSG_BATCH, 1),
    (MSG_BATCH, 2),
];

/// The first consumer killed before each of its stores in turn (and, the
/// last time, not at all), the next one resuming at `read_seq` while the
/// producer fills the arena from the release point. A cell the producer
/// overwrites before the message holding it is released through
/// `read_seq` is a race with a consumer's read, or a wrong cell in it.
/// Preemption bound 2: about 20 000 executions per kill point.
#[test]
fn the_producer_overwrites_no_cell_of_a_message_at_or_after_read_seq() {
    for kill in 0.. {
        if release_restart_model(2, 4, 4, TIGHT, vec![Some(kill), None]) == 0 {
            break; // no execution made `kill` stores: every prefix is done
        }
    }
}

/// Three state changes (two of them adjacent, so that a consumer releases
/// one while it has decoded the next), so that both halves of the save area
/// are written.
const STATEFUL: Stream = &[
    (MSG_SCHEMA, 1),
    (MSG_DICTIONARY, 1),
    (MSG_BATCH, 1),
    (MSG_DICTIONARY, 1),
    (MSG_BATCH, 1),
];

/// Two consumers killed, then a third that runs to the end: the first
/// before each of its stores in turn, the second before each of its first
/// seven (naming a half again at attach, and its first release with a
/// save), so that a consumer that resumed from the other half is killed
/// again while saving. Each one checks at attach that the state it resumes
/// with is the one for `read_seq`, and every batch it decodes. The ring is
/// roomy and the bound is 0 (the two kill points multiply the models): the
/// schedules explored are the values the consumer's loads may see, which
/// vary how many messages each release takes.
#[test]
fn a_consumer_killed_between_release_stores_resumes_with_the_state_at_read_seq() {
    for first in 0.. {
        let mut first_killed = false;
        for second in 0..=6 {
            let kills = vec![Some(first), Some(second), None];
            let killed = release_restart_model(0, 8, 8, STATEFUL, kills);
            first_killed |= killed & 1 != 0;
            if killed & 2 == 0 {
                break;
            }
        }
        if !first_killed {
            break;
        }
    }
}

// ---------------------------------------------------------------------------
// The end log: how a producer session ended is a record in the stream.
//
// Abstract, like the Arrow models (the shared-memory layer is compiled out
// under loom): the stores and loads of `ShmProducer` (attach's `make_room`,
// `append_end`, drop) and `ShmConsumer` (`read_limit` after a reload of
// `write_seq`, `producer_gone`), orderings included, over model cells. The
// slots and the records' fields are plain cells, so a read not ordered
// after its write by the protocol is reported as a race.
//
// Producer 1 (session 1) publishes one item and then closes, dies before
// appending anything, or dies between its record and its state store;
// producer 2 attaches (appending a DIED record for session 1 when it died
// without one), publishes one item and closes. The two producers run in one
// model thread: the role lock hands over from one to the next (the kernel
// orders the first's stores before the second's), and `alive` stands for
// that lock as the consumer's probe sees it.

const ROLE_ATTACHED: u64 = 1;
const ROLE_CLOSED: u64 = 2;
const END_CLOSED: u64 = 1;
const END_DIED: u64 = 3;

/// How producer 1 goes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum P1 {
    Closes,
    DiesBeforeItsRecord,
    DiesBetweenRecordAndState,
}

/// One end record: session, at_seq, kind.
struct ModelRecord([UnsafeCell<u64>; 3]);

struct EndSeg {
    write_seq: AtomicU64,
    producer_state: AtomicU64,
    producer_sessions: AtomicU64,
    ends_head: AtomicU64,
    ends_seen: AtomicU64,
    /// The producer's role lock, held (true) or free.
    alive: AtomicU64,
    slots: Vec<UnsafeCell<u64>>,
    records: Vec<ModelRecord>,
}

impl EndSeg {
    fn new() -> Self {
        let cell = || UnsafeCell::new(0);
        Self {
            write_seq: AtomicU64::new(0),
            producer_state: AtomicU64::new(0),
            producer_sessions: AtomicU64::new(0),
            ends_head: AtomicU64::new(0),
            ends_seen: AtomicU64::new(0),
            alive: AtomicU64::new(0),
            slots: (0..4).map(|_| cell()).collect(),
            records: (0..4)
                .map(|_| ModelRecord([cell(), cell(), cell()]))
                .collect(),
        }
    }

    fn record(&self, i: u64) -> &ModelRecord {
        &self.records[(i % 4) as usize]
    }

    /// A producer attaching (`attach_checked` and `make_room`): the room
    /// check passes at once in this model (at most 2 of 4 records).
    fn attach(&self, write: u64) -> u64 {
        self.alive.store(1, Ordering::Release); // the lock taken
        let sessions = self.producer_sessions.load(Ordering::Acquire);
        let state = self.producer_state.load(Ordering::Acquire);
        let head = self.ends_head.load(Ordering::Acquire);
        let newest = head
            .checked_sub(1)
            .map(|i| ArrowSeg::load(&self.record(i).0[0]));
        let seen = self.ends_seen.load(Ordering::Acquire);
        assert!(head - seen <= 2, "room for a DIED record and an end");
        if state == ROLE_ATTACHED && sessions > 0 && newest != Some(sessions) {
            self.append(sessions, write, END_DIED);
        }
        self.producer_state.store(ROLE_ATTACHED, Ordering::Release);
        self.producer_sessions.fetch_add(1, Ordering::Release) + 1
    }

    /// `append_end`: the fields, then `ends_head` (Release).
    fn append(&self, session: u64, at: u64, kind: u64) {
        let head = self.ends_head.load(Ordering::Relaxed);
        let r = self.record(head);
        ArrowSeg::store(&r.0[0], session);
        ArrowSeg::store(&r.0[1], at);
        ArrowSeg::store(&r.0[2], kind);
        self.ends_head.store(head + 1, Ordering::Release);
    }

    fn publish(&self, seq: u64, value: u64) {
        ArrowSeg::store(&self.slots[seq as usize], value);
        self.write_seq.store(seq + 1, Ordering::Release);
    }
}

/// What the consumer reports: an item (its value) or an end (session, kind).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Seen {
    Item(u64),
    End(u64, u64),
}

/// The consumer: reads items up to its cached `write_seq`, clamped after
/// each reload to the oldest unreported record's `at_seq`; at that
/// position it reports the record (skipping a DIED record for a session it
/// reported dead already); with no record ahead, a repeat of the latest
/// session's recorded end is no report, and a free lock with state
/// ATTACHED is a death (reported once per session). Until session 2 ends.
fn end_log_consumer(seg: &EndSeg) -> Vec<Seen> {
    let (mut read, mut cached, mut reported) = (0_u64, 0_u64, 0_u64);
    let mut died_reported = None;
    let mut seen = Vec::new();
    loop {
        if read < cached {
            seen.push(Seen::Item(ArrowSeg::load(&seg.slots[read as usize])));
            read += 1;
            continue;
        }
        // ConsumerCore::available: write_seq, then (read_limit) ends_head.
        let write = seg.write_seq.load(Ordering::Acquire);
        let head = seg.ends_head.load(Ordering::Acquire);
        cached = if head > reported {
            ArrowSeg::load(&seg.record(reported).0[1]).min(write)
        } else {
            write
        };
        if read < cached {
            continue;
        }
        // producer_gone(read).
        let sessions = seg.producer_sessions.load(Ordering::Acquire);
        let state = seg.producer_state.load(Ordering::Acquire);
        let head = seg.ends_head.load(Ordering::Acquire);
        if head > reported {
            let r = seg.record(reported);
            let (session, at, kind) = (
                ArrowSeg::load(&r.0[0]),
                ArrowSeg::load(&r.0[1]),
                ArrowSeg::load(&r.0[2]),
            );
            let write = seg.write_seq.load(Ordering::Acquire);
            assert!(
                at <= write && at >= read,
                "a record the protocol never writes"
            );
            if at > read {
                thread::yield_now();
                continue;
            }
            reported += 1;
            seg.ends_seen.store(reported, Ordering::Release);
            if kind == END_DIED && died_reported == Some(session) {
                died_reported = None;
                continue;
            }
            seen.push(Seen::End(session, kind));
            if session == 2 {
                return seen;
            }
            continue;
        }
        let newest = head
            .checked_sub(1)
            .map(|i| ArrowSeg::load(&seg.record(i).0[0]));
        if newest != Some(sessions)
            && state == ROLE_ATTACHED
            && seg.alive.load(Ordering::Acquire) == 0
            && seg.ends_head.load(Ordering::Acquire) == head
            && seg.producer_sessions.load(Ordering::Acquire) == sessions
            && seg.write_seq.load(Ordering::Acquire) == read
            && died_reported != Some(sessions)
        {
            died_reported = Some(sessions);
            seen.push(Seen::End(sessions, END_DIED));
        }
        thread::yield_now();
    }
}

fn end_log_model(p1: P1) {
    model(move || {
        let seg = Arc::new(EndSeg::new());
        let session = seg.attach(0);
        assert_eq!(session, 1);
        let producers = {
            let seg = seg.clone();
            thread::spawn(move || {
                seg.publish(0, 10);
                match p1 {
                    P1::Closes => {
                        seg.append(1, 1, END_CLOSED);
                        seg.producer_state.store(ROLE_CLOSED, Ordering::Release);
                    }
                    P1::DiesBeforeItsRecord => {}
                    P1::DiesBetweenRecordAndState => seg.append(1, 1, END_CLOSED),
                }
                seg.alive.store(0, Ordering::Release); // the lock released
                let session = seg.attach(1);
                assert_eq!(session, 2);
                seg.publish(1, 20);
                seg.append(2, 2, END_CLOSED);
                seg.producer_state.store(ROLE_CLOSED, Ordering::Release);
                seg.alive.store(0, Ordering::Release);
            })
        };
        let seen = end_log_consumer(&seg);
        producers.join().unwrap();
        let first_end = if p1 == P1::DiesBeforeItsRecord {
            END_DIED
        } else {
            END_CLOSED
        };
        assert_eq!(
            seen,
            [
                Seen::Item(10),
                Seen::End(1, first_end),
                Seen::Item(20),
                Seen::End(2, END_CLOSED)
            ],
            "{p1:?}: session 1's items, its end once, then session 2's"
        );
    });
}

/// Producer 1 closes; producer 2 attaches and publishes, perhaps before
/// the consumer has read anything: the consumer never delivers session
/// 2's item before session 1's end, and reports that end once.
#[test]
fn a_session_end_comes_between_its_items_and_the_next_sessions() {
    end_log_model(P1::Closes);
}

/// Producer 1 dies without a record: the consumer reports its death once,
/// whether it sees the free lock first or producer 2's DIED record.
#[test]
fn a_dead_producers_end_is_reported_once_whoever_records_it() {
    end_log_model(P1::DiesBeforeItsRecord);
}

/// Producer 1 dies after its record and before its state store: it ended
/// as recorded (closed), never reported dead, and producer 2 appends no
/// DIED record for it.
#[test]
fn a_producer_killed_after_its_end_record_ended_as_recorded() {
    end_log_model(P1::DiesBetweenRecordAndState);
}

/// Reads what `rx` has from its position up to `to`, checking that every
/// item is the one of its sequence (an overwritten slot holds a later one).
fn fan_check(rx: &mut ModelConsumer, to: u64) {
    while rx.position() < to {
        let at = rx.position();
        assert_eq!(rx.try_pop(), Some(at), "the item of sequence {at}");
    }
}

/// A ring of 4 slots with consumer 0 subscribed at 0, holding items 0..4,
/// of which consumer 0 has read 0..3: the producer's next bound is 3.
fn fan_setup() -> (Model, ModelProducer, ModelConsumer) {
    let ring = Model::new(4, 2);
    let mut a = ring.subscribe(0, Start::Earliest);
    let mut p = ring.producer();
    for v in 0..4 {
        assert!(p.try_push(v));
    }
    fan_check(&mut a, 3);
    (ring, p, a)
}

/// The Dekker pair: a consumer subscribing from a start the producer may
/// already have passed (0, where the producer's next bound is 3) while the
/// producer computes that bound and writes over the slots below it. Either
/// the subscriber sees the producer's `tail` and moves its start up, or
/// the producer sees the subscription and bounds itself by it: the items
/// from the subscriber's final start on are intact, in every interleaving.
#[test]
fn fanout_a_subscriber_starts_at_or_after_every_slot_the_producer_overwrites() {
    model(|| {
        let (ring, mut p, _a) = fan_setup();
        let late = ring.clone();
        let s = thread::spawn(move || late.subscribe_from(1, 0));
        let mut pushed = 0;
        for _ in 0..3 {
            // Each item is its sequence number, so a failed push is retried
            // with the same value.
            if p.try_push(p.position()) {
                pushed += 1;
            }
        }
        let from = s.join().unwrap();
        let mut b = ring.attach(1);
        assert_eq!(b.position(), from);
        fan_check(&mut b, 4 + pushed);
    });
}

/// As above with a producer that attaches (its first bound: the pattern
/// runs whatever `tail` its predecessor left) while the consumer
/// subscribes.
#[test]
fn fanout_a_new_producer_and_a_subscriber_at_once_overwrite_nothing_it_reads() {
    model(|| {
        let (ring, p, _a) = fan_setup();
        drop(p);
        let late = ring.clone();
        let s = thread::spawn(move || late.subscribe_from(1, 0));
        let mut p = ring.producer();
        let mut pushed = 0;
        for _ in 0..3 {
            // Each item is its sequence number, so a failed push is retried
            // with the same value.
            if p.try_push(p.position()) {
                pushed += 1;
            }
        }
        let from = s.join().unwrap();
        let mut b = ring.attach(1);
        assert_eq!(b.position(), from);
        fan_check(&mut b, 4 + pushed);
    });
}

/// One producer, two consumers, one of which restarts mid-stream (detached
/// without a word, as a killed one): it resumes at its first unreleased
/// item, the other reads on, and the producer overwrites no slot either
/// has not released (loom reports a write racing a read of a slot).
#[test]
fn fanout_a_consumer_restarting_mid_stream_resumes_at_its_first_unreleased_item() {
    model(|| {
        let (ring, mut p, mut a) = fan_setup();
        assert_eq!(ring.subscribe_from(1, 0), 0);
        let mut b = ring.attach(1);
        fan_check(&mut b, 2);
        let again = ring.clone();
        let restarter = thread::spawn(move || {
            fan_check(&mut a, 4);
            drop(a);
            let a = again.attach(0);
            assert_eq!(a.position(), 4, "resumes after what it released");
        });
        let reader = thread::spawn(move || {
            fan_check(&mut b, 4);
        });
        let mut pushed = 0;
        for _ in 0..3 {
            // Each item is its sequence number, so a failed push is retried
            // with the same value.
            if p.try_push(p.position()) {
                pushed += 1;
            }
        }
        restarter.join().unwrap();
        reader.join().unwrap();
        let mut a = ring.attach(0);
        let mut b = ring.attach(1);
        fan_check(&mut a, 4 + pushed);
        fan_check(&mut b, 4 + pushed);
    });
}

/// Under a lag bound (here 1, on 2 slots) the producer drops a live
/// consumer that falls behind and overwrites what it was reading. The
/// consumer copies, checks (`fanout::copies_intact`) and only then releases
/// (`LagModel` runs `producer_floor` with the bound, and the SPSC cores):
/// every item it accepts is the one published at its position, and it
/// finds a copy overwritten only when its cursor was dropped.
#[test]
fn lag_a_consumer_accepts_no_overwritten_item_and_is_lapped_only_when_dropped() {
    use laminar_ring::fanout::model::{LagModel, LagPop};
    model(|| {
        let ring = LagModel::new(2, 2, 1);
        let mut p = ring.producer();
        let mut fast = ring.consumer(1);
        let mut slow = ring.consumer(0);
        let reader = thread::spawn(move || {
            for _ in 0..2 {
                let at = slow.position();
                match slow.pop_checked() {
                    LagPop::Item(v) => assert_eq!(v, at, "an item not published at {at}"),
                    LagPop::Lapped => {
                        assert!(slow.dropped(), "lapped at {at} while subscribed");
                        return;
                    }
                    LagPop::Empty => thread::yield_now(),
                }
            }
        });
        for _ in 0..4 {
            let v = p.position();
            if p.try_push(v) {
                assert_eq!(fast.pop_checked(), LagPop::Item(v));
            }
        }
        reader.join().unwrap();
    });
}

// ------------------------------------------------------------------ fan-in

/// A lane's file, as the fan-in protocol sees it: `made` is the `O_EXCL`
/// create (NONE to MAKING: one creator wins) and the READY store that
/// publishes the header and the subscriptions made before it
/// (`Segment::create_subscribed`); `geometry` a header field written before
/// READY; `role` the producer's role lock (the kernel frees it when its
/// holder dies; a lock and its probe are system calls, modelled as Release
/// and Acquire); `attached` the producer state a producer stores once it
/// holds the lock; `closed` its end record. The slots and positions are a
/// [`Model`] ring (the SPSC cores the shared-memory rings run), its cursor
/// 0 subscribed by the lane's creator before READY.
struct Lane {
    made: AtomicU64,
    geometry: UnsafeCell<u64>,
    role: AtomicU64,
    attached: AtomicU64,
    closed: AtomicU64,
    ring: Model,
}

const LANE_NONE: u64 = 0;
const LANE_MAKING: u64 = 1;
const LANE_READY: u64 = 2;
/// The header field a lane's creator writes before READY.
const GEOMETRY: u64 = 2;

impl Lane {
    fn new() -> Self {
        Self {
            made: AtomicU64::new(LANE_NONE),
            geometry: UnsafeCell::new(0),
            role: AtomicU64::new(0),
            attached: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            ring: Model::new(2, 1),
        }
    }
}

/// `join_lane`: the first lane whose role lock this producer takes, making
/// a lane that does not exist (waiting for a lane another process is
/// making, as `Segment::open` waits for READY). Returns the lane and the
/// lane's producer.
fn fanin_join(lanes: &[Lane]) -> (usize, ModelProducer) {
    for (i, lane) in lanes.iter().enumerate() {
        let won = lane
            .made
            .compare_exchange(LANE_NONE, LANE_MAKING, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if won {
            // SAFETY (model cell): written before READY, read after it.
            lane.geometry.with_mut(|g| unsafe { *g = GEOMETRY });
            lane.ring.subscribe_from(0, 0);
            lane.made.store(LANE_READY, Ordering::Release);
        } else {
            while lane.made.load(Ordering::Acquire) != LANE_READY {
                thread::yield_now();
            }
        }
        if lane
            .role
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            lane.attached.store(1, Ordering::Release);
            return (i, lane.ring.producer());
        }
    }
    panic!("no free lane");
}

/// How a lane ended, as the consumer saw it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum LaneEnd {
    Closed,
    Died,
}

/// The fan-in consumer's scan: attaches to every lane made READY that it
/// has not attached to, and finds the header written.
fn fanin_scan(lanes: &[Lane], rx: &mut [Option<ModelConsumer>]) {
    for (i, lane) in lanes.iter().enumerate() {
        if rx[i].is_none() && lane.made.load(Ordering::Acquire) == LANE_READY {
            // SAFETY (model cell): READY (Acquire) was seen.
            let g = lane.geometry.with(|g| unsafe { *g });
            assert_eq!(g, GEOMETRY, "lane {i} open before its header");
            rx[i] = Some(lane.ring.attach(0));
        }
    }
}

/// The fan-in consumer: scans for lanes, reads them round robin, and ends
/// a lane once it is drained and its producer closed it or died (the lock
/// probed first, then the end record: a producer that closes stores its
/// end before it lets the lock go). Ends when `producers` lanes have ended
/// (the linger time, which a model cannot have, stands for "until every
/// producer has come").
fn fanin_consume(
    lanes: &[Lane],
    mut rx: Vec<Option<ModelConsumer>>,
    producers: usize,
) -> (Vec<Vec<u64>>, Vec<Option<LaneEnd>>) {
    let n = lanes.len();
    let mut got = vec![Vec::new(); n];
    let mut ended = vec![None; n];
    while ended.iter().flatten().count() < producers {
        fanin_scan(lanes, &mut rx);
        let mut moved = false;
        for (i, lane) in lanes.iter().enumerate() {
            let Some(r) = rx[i].as_mut() else { continue };
            if ended[i].is_some() {
                continue;
            }
            if let Some(v) = r.try_pop() {
                got[i].push(v);
                moved = true;
                continue;
            }
            if lane.attached.load(Ordering::Acquire) == 0 || lane.role.load(Ordering::Acquire) != 0
            {
                continue;
            }
            let end = if lane.closed.load(Ordering::Acquire) == 1 {
                LaneEnd::Closed
            } else {
                LaneEnd::Died
            };
            // Everything published before the end is visible now.
            match r.try_pop() {
                Some(v) => {
                    got[i].push(v);
                    moved = true;
                }
                None => ended[i] = Some(end),
            }
        }
        if !moved {
            thread::yield_now();
        }
    }
    (got, ended)
}

/// Two producers join one stream at once (racing for lane 0, one making
/// lane 1) while the consumer scans for lanes; then the first sends
/// `dies_after` items and dies (its next publish never happens), the
/// other sends 2 and closes, while the consumer reads.
/// Whichever lanes they take, the consumer reads every committed item
/// exactly once, each producer's in order and from one lane, never a lane
/// before its header and subscription, and is told which lane died.
///
/// The two phases keep the model small enough to check every
/// interleaving of each: both producers hold their lanes before either
/// ends (a lane let go of before the other producer looks would be taken
/// again, a second session of one lane: the single-producer protocol's
/// sessions, modelled above), and the consumer's scan races the joins in
/// the first phase as its reads race the sends in the second. That a
/// lane is subscribed before any producer can publish in it is checked by
/// `tests/fanin_process.rs`, which kills lane makers: here every send
/// follows the joins.
fn fanin_model(dies_after: u64) {
    model_bounded(2, move || {
        let lanes = Arc::new([Lane::new(), Lane::new()]);
        let join = || {
            let lanes = lanes.clone();
            thread::spawn(move || fanin_join(&lanes[..]))
        };
        let (a, b) = (join(), join());
        let mut rx: Vec<Option<ModelConsumer>> = vec![None, None];
        fanin_scan(&lanes[..], &mut rx);
        let (victim, steady) = (a.join().unwrap(), b.join().unwrap());
        assert_ne!(victim.0, steady.0, "two producers in one lane");
        let send = |id: u64, (lane, mut tx): (usize, ModelProducer), dies: Option<u64>| {
            let lanes = lanes.clone();
            thread::spawn(move || {
                for k in 0..dies.unwrap_or(2) {
                    let v = id << 8 | k;
                    while !tx.try_push(v) {
                        thread::yield_now();
                    }
                }
                if dies.is_none() {
                    lanes[lane].closed.store(1, Ordering::Release);
                }
                // Closing lets the lock go after the end record; dying lets
                // it go (the kernel) with no record.
                lanes[lane].role.store(0, Ordering::Release);
            })
        };
        let (v, s) = (victim.0, steady.0);
        let senders = [send(1, victim, Some(dies_after)), send(2, steady, None)];
        let (got, ended) = fanin_consume(&lanes[..], rx, 2);
        for t in senders {
            t.join().unwrap();
        }
        assert_eq!(
            got[v],
            (0..dies_after).map(|k| 1 << 8 | k).collect::<Vec<_>>()
        );
        assert_eq!(got[s], vec![2 << 8, 2 << 8 | 1]);
        assert_eq!(ended[v], Some(LaneEnd::Died));
        assert_eq!(ended[s], Some(LaneEnd::Closed));
    });
}

#[test]
fn fanin_a_producer_dying_before_its_first_commit_harms_no_other_lane() {
    fanin_model(0);
}

#[test]
fn fanin_a_producer_dying_between_two_commits_loses_only_the_uncommitted() {
    fanin_model(1);
}
