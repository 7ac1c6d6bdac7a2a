//! SPSC channel across two threads: every item checked in order, with each
//! wait strategy and each batch API, plus drop accounting.
#![cfg(not(loom))] // chunks are compiled out under loom (tests/loom.rs models the ring)

mod common;

use std::thread;
use std::time::Duration;

use common::{DropLedger, fnv};
use laminar_ring::{PopError, TryPopError, TryPushError, WaitStrategy, spsc};

const N: u64 = if cfg!(debug_assertions) {
    200_000
} else {
    2_000_000
};

fn strategies() -> [WaitStrategy; 3] {
    [
        WaitStrategy::BusySpin,
        WaitStrategy::SpinYield,
        WaitStrategy::Park,
    ]
}

#[test]
fn two_threads_single_items_in_order() {
    for wait in strategies() {
        for cap in [1, 2, 64, 4096] {
            let (mut tx, mut rx) = spsc::channel_with::<u64>(cap, wait).unwrap();
            let n = if cap == 1 { N / 10 } else { N };
            let t = thread::spawn(move || {
                for i in 0..n {
                    tx.push(i).unwrap();
                }
            });
            for i in 0..n {
                assert_eq!(rx.pop(), Ok(i), "{wait:?} cap {cap}");
            }
            assert_eq!(rx.pop(), Err(PopError::Disconnected));
            t.join().unwrap();
        }
    }
}

#[test]
fn two_threads_batches_and_chunks() {
    let (mut tx, mut rx) = spsc::channel::<u64>(256);
    let t = thread::spawn(move || {
        let mut next = 0_u64;
        let mut round = 0_usize;
        while next < N {
            let want = (1 + round % 300).min((N - next) as usize);
            round += 1;
            let pushed = match round % 3 {
                0 => {
                    let batch: Vec<u64> = (next..next + want as u64).collect();
                    tx.push_slice(&batch)
                }
                1 => {
                    let mut it = next..next + want as u64;
                    tx.push_iter(&mut it)
                }
                _ => tx
                    .write_chunk_uninit(want)
                    .fill_from_iter(next..next + want as u64),
            };
            next += pushed as u64;
            if pushed == 0 {
                thread::yield_now();
            }
        }
    });
    let mut expected = 0_u64;
    let mut sum = 0_u64;
    let mut round = 0_usize;
    let mut buf = vec![0_u64; 97];
    let mut vec = Vec::new();
    while expected < N {
        round += 1;
        match round % 3 {
            0 => {
                let n = rx.pop_slice(&mut buf);
                for &v in &buf[..n] {
                    assert_eq!(v, expected);
                    sum = fnv(sum, v);
                    expected += 1;
                }
            }
            1 => {
                vec.clear();
                rx.pop_into(&mut vec, 50);
                for &v in &vec {
                    assert_eq!(v, expected);
                    sum = fnv(sum, v);
                    expected += 1;
                }
            }
            _ => {
                let chunk = rx.read_chunk(200);
                let (a, b) = chunk.as_slices();
                for &v in a.iter().chain(b) {
                    assert_eq!(v, expected);
                    sum = fnv(sum, v);
                    expected += 1;
                }
                chunk.commit_all();
            }
        }
    }
    t.join().unwrap();
    assert_eq!(sum, (0..N).fold(0, fnv));
    assert_eq!(rx.try_pop(), Err(TryPopError::Disconnected));
}

#[test]
fn disconnection_both_ways() {
    let (mut tx, rx) = spsc::channel::<String>(4);
    drop(rx);
    assert!(tx.is_abandoned());
    match tx.try_push("lost?".into()) {
        Err(TryPushError::Disconnected(s)) => assert_eq!(s, "lost?"),
        other => panic!("expected Disconnected, got {other:?}"),
    }

    let (mut tx, mut rx) = spsc::channel_with::<u32>(4, WaitStrategy::Park).unwrap();
    let t = thread::spawn(move || rx.pop());
    // Only a chance for the consumer to park first: the assertion holds
    // whether or not it did (the unit tests in src/spsc.rs wake a consumer
    // that is known to be asleep).
    thread::sleep(Duration::from_millis(20));
    tx.push(9).unwrap();
    assert_eq!(t.join().unwrap(), Ok(9));

    let (tx, mut rx) = spsc::channel_with::<u32>(4, WaitStrategy::Park).unwrap();
    let t = thread::spawn(move || rx.pop());
    // Only a chance to park first, as above.
    thread::sleep(Duration::from_millis(20));
    drop(tx);
    assert_eq!(t.join().unwrap(), Err(PopError::Disconnected));
}

#[test]
fn drops_each_item_once_when_dropped_half_full_after_wraparound() {
    for (cap, pushed_first, popped_first, pushed_then) in
        [(8, 6, 6, 5), (8, 8, 3, 3), (4, 4, 4, 4), (16, 0, 0, 7)]
    {
        let total = pushed_first + pushed_then;
        let ledger = DropLedger::new(total);
        let (mut tx, mut rx) = spsc::channel(cap);
        for id in 0..pushed_first {
            assert!(tx.try_push(ledger.item(id)).is_ok());
        }
        for id in 0..popped_first {
            let v = rx.try_pop().unwrap();
            assert_eq!(v.id, id);
        }
        for id in pushed_first..total {
            assert!(tx.try_push(ledger.item(id)).is_ok());
        }
        // Read two in place and commit one of them: dropped in the ring.
        let chunk = rx.read_chunk(2);
        let first = chunk.as_slices().0.first().map(|t| t.id);
        chunk.commit(1);
        if let Some(id) = first {
            assert_eq!(ledger.drops(id), 1);
        }
        drop(tx);
        drop(rx);
        ledger.assert_each_dropped_once();
    }
}

#[test]
fn drops_on_the_consumer_thread_are_counted_too() {
    let ledger = DropLedger::new(10_000);
    let (mut tx, mut rx) = spsc::channel(16);
    let l2 = ledger.clone();
    let t = thread::spawn(move || {
        for id in 0..10_000 {
            let mut v = l2.item(id);
            loop {
                match tx.try_push(v) {
                    Ok(()) => break,
                    Err(TryPushError::Full(back)) => v = back,
                    Err(TryPushError::Disconnected(_back)) => break, // dropped here
                }
            }
        }
    });
    let mut seen = 0;
    while seen < 5_000 {
        if let Ok(v) = rx.try_pop() {
            assert_eq!(v.id, seen);
            seen += 1;
        }
    }
    // Let the producer fill the ring, then drop the consumer with items in it;
    // the producer's remaining pushes fail with Disconnected and hand values back.
    drop(rx);
    t.join().unwrap();
    ledger.assert_each_dropped_once();
}

/// `fill_from_iter` on a chunk that wraps around the end of the ring
/// writes the first run, then the second, and stops where the iterator
/// ends: in the first run, in the second, or not before the chunk does.
#[test]
fn fill_from_iter_across_the_wrap_stops_where_the_iterator_ends() {
    for (given, written) in [(2_u64, 2_usize), (3, 3), (6, 6), (8, 8), (11, 8)] {
        let (mut tx, mut rx) = spsc::channel::<u64>(8);
        // Move both positions to 5: the 8 free slots are 5..8 then 0..5.
        assert_eq!(tx.push_slice(&[0; 5]), 5);
        assert_eq!(rx.pop_slice(&mut [0; 5]), 5);
        let chunk = tx.write_chunk_uninit(8);
        assert_eq!(chunk.len(), 8);
        assert_eq!(chunk.fill_from_iter(100..100 + given), written);
        let mut out = [0_u64; 8];
        assert_eq!(rx.pop_slice(&mut out), written, "given {given}");
        let want: Vec<u64> = (100..100 + written as u64).collect();
        assert_eq!(out[..written], want[..], "given {given}");
    }
}
