//! Four producer threads, one consumer: every item is checked for
//! per-producer order, and the rate is printed.
//!
//! ```text
//! cargo run --release --example mpsc_threads
//! ```

mod support;

use std::thread;
use std::time::Instant;

use laminar_ring::mpsc;

const PRODUCERS: u64 = 4;
const PER_PRODUCER: u64 = 2_000_000;

fn main() {
    support::no_arguments(
        "Four producer threads, one consumer, through an MPSC ring: checks per-producer order and prints the rate.",
    );
    let (tx, mut rx) = mpsc::channel::<u64>(4096);
    let start = Instant::now();
    let handles: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let mut tx = tx.clone();
            thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    tx.push((p << 56) | i).expect("consumer alive");
                }
            })
        })
        .collect();
    drop(tx);
    let mut next = [0_u64; PRODUCERS as usize];
    while let Ok(v) = rx.pop() {
        let (p, i) = ((v >> 56) as usize, v & ((1 << 56) - 1));
        assert_eq!(i, next[p], "producer {p}: item lost or out of order");
        next[p] += 1;
    }
    for h in handles {
        h.join().expect("producer thread");
    }
    let total = PRODUCERS * PER_PRODUCER;
    assert_eq!(next.iter().sum::<u64>(), total);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{PRODUCERS} producers x {PER_PRODUCER} items: {:.1} M items/s, all in per-producer order",
        total as f64 / secs / 1e6
    );
}
