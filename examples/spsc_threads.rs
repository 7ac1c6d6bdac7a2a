//! Moves 20 million sequence numbers from a producer thread to a consumer
//! thread through an SPSC ring, checks every one, and prints the rate for
//! single-item and batched transfers.
//!
//! ```text
//! cargo run --release --example spsc_threads
//! ```

mod support;

use std::thread;
use std::time::Instant;

use laminar_ring::spsc;

const ITEMS: u64 = 20_000_000;

fn main() {
    support::no_arguments(
        "Moves 20 million sequence numbers from a producer thread to a consumer thread through an SPSC ring and prints the rate.",
    );
    println!("{ITEMS} u64 items, producer thread -> consumer thread, capacity 4096");
    for batched in [false, true] {
        let (mut tx, mut rx) = spsc::channel::<u64>(4096);
        let start = Instant::now();
        let producer = thread::spawn(move || {
            if batched {
                let mut next = 0;
                while next < ITEMS {
                    let mut it = next..(next + 256).min(ITEMS);
                    next += tx.push_iter(&mut it) as u64;
                }
            } else {
                for i in 0..ITEMS {
                    tx.push(i).expect("consumer alive");
                }
            }
        });
        let mut expected = 0;
        let mut buf = [0_u64; 256];
        while expected < ITEMS {
            let n = if batched {
                rx.pop_slice(&mut buf)
            } else {
                buf[0] = rx.pop().expect("producer alive until the end");
                1
            };
            for &v in &buf[..n] {
                assert_eq!(v, expected, "item lost or out of order");
                expected += 1;
            }
        }
        producer.join().expect("producer thread");
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{:<8} {:>7.1} M items/s  {:>5.2} ns/item  (all {ITEMS} checked in order)",
            if batched { "batched" } else { "single" },
            ITEMS as f64 / secs / 1e6,
            secs * 1e9 / ITEMS as f64,
        );
    }
}
