//! The spec's five benchmarks, each with rtrb and crossbeam's `ArrayQueue`
//! (and our MPSC) beside our SPSC ring in the same group, same workload.
//!
//! ```text
//! cargo bench --bench ring_buffer -- --noplot
//! scripts/bench-rounds.sh 5          # interleaved rounds, medians, ratios
//! ```
//!
//! Ids are sortable paths (`group/0-laminar`, `group/1-rtrb`, ...). Each
//! implementation's output is checked before it is timed.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use laminar_ring::{mpsc, spsc};

#[path = "support/cores.rs"]
mod cores;
use cores::{pin, unpin};

const CAP: usize = 4096;
const BATCH: usize = 256;

/// A two-sided queue as the benches drive it.
trait Queue: Send + 'static {
    type Tx: Send;
    type Rx: Send;
    const NAME: &'static str;
    fn make(cap: usize) -> (Self::Tx, Self::Rx);
    fn push(tx: &mut Self::Tx, v: u64) -> bool;
    fn pop(rx: &mut Self::Rx) -> Option<u64>;
    fn push_batch(tx: &mut Self::Tx, vs: &[u64]) -> usize;
    fn pop_batch(rx: &mut Self::Rx, out: &mut [u64]) -> usize;
}

struct Laminar;
impl Queue for Laminar {
    type Tx = spsc::Producer<u64>;
    type Rx = spsc::Consumer<u64>;
    const NAME: &'static str = "0-laminar";
    fn make(cap: usize) -> (Self::Tx, Self::Rx) {
        spsc::channel(cap)
    }
    #[inline]
    fn push(tx: &mut Self::Tx, v: u64) -> bool {
        tx.try_push(v).is_ok()
    }
    #[inline]
    fn pop(rx: &mut Self::Rx) -> Option<u64> {
        rx.try_pop().ok()
    }
    #[inline]
    fn push_batch(tx: &mut Self::Tx, vs: &[u64]) -> usize {
        tx.push_slice(vs)
    }
    #[inline]
    fn pop_batch(rx: &mut Self::Rx, out: &mut [u64]) -> usize {
        rx.pop_slice(out)
    }
}

struct Rtrb;
impl Queue for Rtrb {
    type Tx = rtrb::Producer<u64>;
    type Rx = rtrb::Consumer<u64>;
    const NAME: &'static str = "1-rtrb";
    fn make(cap: usize) -> (Self::Tx, Self::Rx) {
        rtrb::RingBuffer::new(cap)
    }
    #[inline]
    fn push(tx: &mut Self::Tx, v: u64) -> bool {
        tx.push(v).is_ok()
    }
    #[inline]
    fn pop(rx: &mut Self::Rx) -> Option<u64> {
        rx.pop().ok()
    }
    #[inline]
    fn push_batch(tx: &mut Self::Tx, vs: &[u64]) -> usize {
        let n = vs.len().min(tx.slots());
        match tx.write_chunk_uninit(n) {
            Ok(chunk) => chunk.fill_from_iter(vs.iter().copied()),
            Err(_) => 0,
        }
    }
    #[inline]
    fn pop_batch(rx: &mut Self::Rx, out: &mut [u64]) -> usize {
        let n = out.len().min(rx.slots());
        match rx.read_chunk(n) {
            Ok(chunk) => {
                let (a, b) = chunk.as_slices();
                out[..a.len()].copy_from_slice(a);
                out[a.len()..a.len() + b.len()].copy_from_slice(b);
                chunk.commit_all();
                n
            }
            Err(_) => 0,
        }
    }
}

struct Crossbeam;
impl Queue for Crossbeam {
    type Tx = std::sync::Arc<ArrayQueue<u64>>;
    type Rx = std::sync::Arc<ArrayQueue<u64>>;
    const NAME: &'static str = "2-crossbeam-ArrayQueue";
    fn make(cap: usize) -> (Self::Tx, Self::Rx) {
        let q = std::sync::Arc::new(ArrayQueue::new(cap));
        (q.clone(), q)
    }
    #[inline]
    fn push(tx: &mut Self::Tx, v: u64) -> bool {
        tx.push(v).is_ok()
    }
    #[inline]
    fn pop(rx: &mut Self::Rx) -> Option<u64> {
        rx.pop()
    }
    #[inline]
    fn push_batch(tx: &mut Self::Tx, vs: &[u64]) -> usize {
        vs.iter().take_while(|&&v| tx.push(v).is_ok()).count()
    }
    #[inline]
    fn pop_batch(rx: &mut Self::Rx, out: &mut [u64]) -> usize {
        let mut n = 0;
        while n < out.len() {
            match rx.pop() {
                Some(v) => out[n] = v,
                None => break,
            }
            n += 1;
        }
        n
    }
}

struct LaminarMpsc;
impl Queue for LaminarMpsc {
    type Tx = mpsc::Producer<u64>;
    type Rx = mpsc::Consumer<u64>;
    const NAME: &'static str = "3-laminar-mpsc";
    fn make(cap: usize) -> (Self::Tx, Self::Rx) {
        mpsc::channel(cap)
    }
    #[inline]
    fn push(tx: &mut Self::Tx, v: u64) -> bool {
        tx.try_push(v).is_ok()
    }
    #[inline]
    fn pop(rx: &mut Self::Rx) -> Option<u64> {
        rx.try_pop().ok()
    }
    #[inline]
    fn push_batch(tx: &mut Self::Tx, vs: &[u64]) -> usize {
        tx.push_slice(vs)
    }
    #[inline]
    fn pop_batch(rx: &mut Self::Rx, out: &mut [u64]) -> usize {
        rx.pop_slice(out)
    }
}

/// Checks an implementation before it is timed: FIFO across two threads.
fn check<Q: Queue>() {
    let (mut tx, mut rx) = Q::make(64);
    let n = 100_000;
    thread::scope(|s| {
        s.spawn(move || {
            let mut i = 0;
            while i < n {
                if Q::push(&mut tx, i) {
                    i += 1;
                }
            }
        });
        let mut expected = 0;
        while expected < n {
            if let Some(v) = Q::pop(&mut rx) {
                assert_eq!(v, expected, "{} broke FIFO", Q::NAME);
                expected += 1;
            }
        }
    });
}

fn uncontended<Q: Queue>(c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    check::<Q>();
    let (mut tx, mut rx) = Q::make(CAP);
    c.bench_function(BenchmarkId::from_parameter(Q::NAME), |b| {
        b.iter(|| {
            assert!(Q::push(&mut tx, black_box(7)));
            black_box(Q::pop(&mut rx))
        })
    });
}

fn bench_push_pop_uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("bench_push_pop_uncontended");
    g.throughput(Throughput::Elements(1));
    uncontended::<Laminar>(&mut g);
    uncontended::<Rtrb>(&mut g);
    uncontended::<Crossbeam>(&mut g);
    uncontended::<LaminarMpsc>(&mut g);
    g.finish();
}

/// Producer thread (CPU 0) pushes `iters` items one by one; this thread
/// (CPU 1) pops them and checks each against the next expected value. The
/// pinning matters: unpinned, the scheduler sometimes runs both threads on
/// one core, where a ring is a different (and much noisier) workload.
fn contended<Q: Queue>(c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    c.bench_function(BenchmarkId::from_parameter(Q::NAME), |b| {
        b.iter_custom(|iters| {
            let (mut tx, mut rx) = Q::make(CAP);
            let barrier = Barrier::new(2);
            let elapsed = thread::scope(|s| {
                s.spawn(|| {
                    let _ = pin(0);
                    barrier.wait();
                    for i in 0..iters {
                        while !Q::push(&mut tx, i) {
                            std::hint::spin_loop();
                        }
                    }
                });
                let _ = pin(1);
                barrier.wait();
                let start = Instant::now();
                let mut bad = 0_u64;
                for i in 0..iters {
                    loop {
                        if let Some(v) = Q::pop(&mut rx) {
                            bad += u64::from(v != i);
                            break;
                        }
                        std::hint::spin_loop();
                    }
                }
                let elapsed = start.elapsed();
                assert_eq!(bad, 0, "{}: values out of sequence", Q::NAME);
                elapsed
            });
            // Criterion's own thread goes back to any CPU.
            unpin();
            elapsed
        })
    });
}

fn bench_push_pop_contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("bench_push_pop_contended");
    g.throughput(Throughput::Elements(1));
    contended::<Laminar>(&mut g);
    contended::<Rtrb>(&mut g);
    contended::<Crossbeam>(&mut g);
    contended::<LaminarMpsc>(&mut g);
    g.finish();
}

/// Times only the batch push (or only the batch pop) of BATCH items.
fn batch<Q: Queue>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    time_push: bool,
) {
    let (mut tx, mut rx) = Q::make(CAP);
    let input: Vec<u64> = (0..BATCH as u64).collect();
    let mut out = vec![0_u64; BATCH];
    // Check once: a full batch goes through in order.
    assert_eq!(Q::push_batch(&mut tx, &input), BATCH, "{}", Q::NAME);
    assert_eq!(Q::pop_batch(&mut rx, &mut out), BATCH, "{}", Q::NAME);
    assert_eq!(out, input, "{} batch order", Q::NAME);
    c.bench_function(BenchmarkId::from_parameter(Q::NAME), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let pushed = Q::push_batch(&mut tx, black_box(&input));
                if time_push {
                    total += t.elapsed();
                }
                let t = Instant::now();
                let popped = Q::pop_batch(&mut rx, black_box(&mut out));
                if !time_push {
                    total += t.elapsed();
                }
                assert_eq!((pushed, popped), (BATCH, BATCH));
            }
            total
        })
    });
}

fn bench_batch_push(c: &mut Criterion) {
    let mut g = c.benchmark_group("bench_batch_push");
    g.throughput(Throughput::Elements(BATCH as u64));
    batch::<Laminar>(&mut g, true);
    batch::<Rtrb>(&mut g, true);
    batch::<Crossbeam>(&mut g, true);
    batch::<LaminarMpsc>(&mut g, true);
    g.finish();
}

fn bench_batch_pop(c: &mut Criterion) {
    let mut g = c.benchmark_group("bench_batch_pop");
    g.throughput(Throughput::Elements(BATCH as u64));
    batch::<Laminar>(&mut g, false);
    batch::<Rtrb>(&mut g, false);
    batch::<Crossbeam>(&mut g, false);
    batch::<LaminarMpsc>(&mut g, false);
    g.finish();
}

/// Two counters written by two threads: on one line, 64 bytes apart, 128
/// bytes apart (`CachePadded`, what the ring uses).
#[repr(C)]
struct SameLine {
    a: AtomicU64,
    b: AtomicU64,
}
#[repr(C, align(64))]
struct Pad64(AtomicU64);
#[repr(C)]
struct Apart64 {
    a: Pad64,
    b: Pad64,
}
#[repr(C)]
struct Apart128 {
    a: CachePadded<AtomicU64>,
    b: CachePadded<AtomicU64>,
}

fn two_counters(iters: u64, a: &AtomicU64, b: &AtomicU64) -> Duration {
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            barrier.wait();
            for _ in 0..iters {
                b.fetch_add(1, Ordering::Relaxed);
            }
        });
        barrier.wait();
        let start = Instant::now();
        for _ in 0..iters {
            a.fetch_add(1, Ordering::Relaxed);
        }
        start.elapsed()
    })
}

fn bench_cache_line_isolation(c: &mut Criterion) {
    let mut g = c.benchmark_group("bench_cache_line_isolation");
    g.throughput(Throughput::Elements(1));
    g.bench_function("0-padded-128", |bch| {
        bch.iter_custom(|iters| {
            let x = Apart128 {
                a: CachePadded::new(AtomicU64::new(0)),
                b: CachePadded::new(AtomicU64::new(0)),
            };
            let d = two_counters(iters, &x.a, &x.b);
            assert_eq!(x.a.load(Ordering::Relaxed), iters);
            d
        })
    });
    g.bench_function("1-padded-64", |bch| {
        bch.iter_custom(|iters| {
            let x = Apart64 {
                a: Pad64(AtomicU64::new(0)),
                b: Pad64(AtomicU64::new(0)),
            };
            two_counters(iters, &x.a.0, &x.b.0)
        })
    });
    g.bench_function("2-unpadded", |bch| {
        bch.iter_custom(|iters| {
            let x = SameLine {
                a: AtomicU64::new(0),
                b: AtomicU64::new(0),
            };
            two_counters(iters, &x.a, &x.b)
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_push_pop_uncontended, bench_push_pop_contended, bench_batch_push,
        bench_batch_pop, bench_cache_line_isolation
}
criterion_main!(benches);
