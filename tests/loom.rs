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
#![cfg(loom)]
#![allow(unsafe_code)] // one model drives the raw RingBuffer API

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

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
