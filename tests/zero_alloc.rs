//! Zero allocation after construction (spec dependency F071): a counting
//! global allocator sees no allocation during 1,000,000 push/pop pairs, nor
//! while an Arrow producer builds and sends batches in the arena (a loan).

#![allow(unsafe_code)] // a global allocator is an unsafe trait impl

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use laminar_ring::{WaitStrategy, mpsc, spsc};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's allocations are counted: only the test's own.
    /// The test harness's main thread allocates while the test runs (when
    /// it starts waiting for the result, which a loaded machine can delay
    /// into the measured loop), and that is not the rings' doing.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTED.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
    }
}

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: requirements forwarded to the caller.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: requirements forwarded to the caller.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: requirements forwarded to the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PAIRS: u64 = 1_000_000;

/// The only test in this binary; only its thread's allocations count.
#[test]
fn push_pop_pairs_allocate_nothing_after_construction() {
    // Every operation below runs on this thread.
    COUNTED.with(|c| c.set(true));
    // The counter itself works: a heap allocation is seen.
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    drop(std::hint::black_box(Vec::<u64>::with_capacity(4)));
    assert!(
        ALLOCATIONS.load(Ordering::SeqCst) > before,
        "counting allocator is live"
    );

    for wait in [WaitStrategy::SpinYield, WaitStrategy::Park] {
        let (mut tx, mut rx) = spsc::channel_with::<u64>(1024, wait).unwrap();
        let mut buf = [0_u64; 16];
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for i in 0..PAIRS {
            tx.push(i).unwrap();
            assert_eq!(rx.pop(), Ok(i));
            if i % 1000 == 0 {
                tx.push_slice(&[1, 2, 3]);
                assert_eq!(rx.pop_slice(&mut buf), 3);
            }
        }
        let spsc_allocs = ALLOCATIONS.load(Ordering::SeqCst) - before;
        assert_eq!(
            spsc_allocs, 0,
            "spsc ({wait:?}) allocated {spsc_allocs} times"
        );

        let (mut tx, mut rx) = mpsc::channel_with::<u64>(1024, wait).unwrap();
        let mut tx2 = tx.clone();
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for i in 0..PAIRS {
            if i % 2 == 0 {
                tx.push(i).unwrap();
            } else {
                tx2.try_push(i).unwrap();
            }
            assert_eq!(rx.pop(), Ok(i));
        }
        let mpsc_allocs = ALLOCATIONS.load(Ordering::SeqCst) - before;
        assert_eq!(
            mpsc_allocs, 0,
            "mpsc ({wait:?}) allocated {mpsc_allocs} times"
        );
    }

    #[cfg(feature = "arrow")]
    loans_allocate_nothing_after_the_first();
}

/// An Arrow producer's loans (`BatchProducer::loan`, filling, `commit`)
/// allocate nothing once the first has sized the producer's reused lists.
/// Only the producer's calls are counted: receiving builds arrays, which
/// allocates by design.
#[cfg(feature = "arrow")]
fn loans_allocate_nothing_after_the_first() {
    use std::sync::Arc;

    use arrow_array::types::{Float64Type, Int64Type};
    use arrow_schema::{DataType, Field, Schema};
    use laminar_ring::arrow::{ArrowRingOptions, BatchConsumer, BatchProducer};

    let name = format!("lr-zero-alloc-{}", std::process::id());
    let _ = laminar_ring::shm::remove(&name);
    let opts = ArrowRingOptions {
        slots: 64,
        arena_bytes: 4 << 20,
        ..ArrowRingOptions::default()
    };
    let mut tx = BatchProducer::create(&name, &opts).unwrap();
    let mut rx = BatchConsumer::open(&name, &opts).unwrap();
    tx.set_schema(Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("px", DataType::Float64, true),
        Field::new("tag", DataType::Utf8, true),
    ])))
    .unwrap();
    let mut counted = 0;
    for k in 0..2_000_i64 {
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        let mut loan = tx.loan(100, &[500]).unwrap();
        loan.values_mut::<Int64Type>(0).unwrap().fill(k);
        loan.values_mut::<Float64Type>(1).unwrap().fill(0.5);
        loan.validity_mut(1).unwrap()[0] = 0xfe;
        loan.fill_bytes(2, (0..100).map(|j| ["a", "bb", "ccc"][j % 3]))
            .unwrap();
        loan.commit().unwrap();
        if k > 0 {
            counted += ALLOCATIONS.load(Ordering::SeqCst) - before;
        }
        let b = rx.recv().unwrap().unwrap();
        assert_eq!(b.num_rows(), 100);
        assert_eq!(b.column(1).null_count(), 1);
    }
    assert_eq!(counted, 0, "loans allocated {counted} times");
    drop((tx, rx));
    let _ = laminar_ring::shm::remove(&name);
}
