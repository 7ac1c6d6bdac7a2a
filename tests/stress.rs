//! Multi-threaded stress: 10 million items in release builds (1 million in
//! debug), every item checked by sequence and by an order-sensitive checksum.

mod common;

use std::thread;

use common::fnv;
use laminar_ring::{mpsc, spsc};

const TOTAL: u64 = if cfg!(debug_assertions) {
    1_000_000
} else {
    10_000_000
};

#[test]
fn stress_spsc_every_item_in_order() {
    let (mut tx, mut rx) = spsc::channel::<u64>(1024);
    let producer = thread::spawn(move || {
        let mut h = 0;
        let mut i = 0;
        while i < TOTAL {
            // Alternate single pushes and batches of varying size.
            if i % 3 == 0 {
                let end = (i + 1 + i % 61).min(TOTAL);
                let mut it = i..end;
                let n = tx.push_iter(&mut it) as u64;
                for v in i..i + n {
                    h = fnv(h, v);
                }
                i += n;
            } else {
                tx.push(i).unwrap();
                h = fnv(h, i);
                i += 1;
            }
        }
        h
    });
    let mut h = 0;
    let mut expected = 0;
    let mut buf = [0_u64; 128];
    while expected < TOTAL {
        let n = rx.pop_slice(&mut buf);
        if n == 0 {
            std::hint::spin_loop();
        }
        for &v in &buf[..n] {
            assert_eq!(v, expected, "item out of order or lost");
            h = fnv(h, v);
            expected += 1;
        }
    }
    assert_eq!(h, producer.join().unwrap(), "checksums differ");
    assert!(rx.try_pop().is_err());
}

#[test]
fn stress_mpsc_per_producer_order_and_checksum() {
    const PRODUCERS: u64 = 4;
    let per = TOTAL / PRODUCERS;
    let (tx, mut rx) = mpsc::channel::<u64>(1024);
    let handles: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let mut tx = tx.clone();
            thread::spawn(move || {
                let mut h = 0;
                for i in 0..per {
                    let v = (p << 56) | i;
                    tx.push(v).unwrap();
                    h = fnv(h, v);
                }
                h
            })
        })
        .collect();
    drop(tx);
    let mut next = [0_u64; PRODUCERS as usize];
    let mut sums = [0_u64; PRODUCERS as usize];
    let mut count = 0_u64;
    while let Ok(v) = rx.pop() {
        let p = (v >> 56) as usize;
        let i = v & ((1 << 56) - 1);
        assert_eq!(i, next[p], "producer {p}: item out of order or lost");
        next[p] += 1;
        sums[p] = fnv(sums[p], v);
        count += 1;
    }
    assert_eq!(count, per * PRODUCERS);
    for (p, h) in handles.into_iter().enumerate() {
        assert_eq!(sums[p], h.join().unwrap(), "producer {p} checksum");
    }
}
