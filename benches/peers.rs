//! Every single-item workload of BENCHMARKS.md's peer table, ours and the
//! peers' measured in the same run: one `try_push`/`try_pop` per item,
//! threads or processes pinned one per core (CPU 0 produces, CPU 1
//! consumes), the consumer checking every value, the rows of a group
//! interleaved round by round (the first row rotates), medians over the
//! rounds with min..max, ratios as the median of each round's ratio, and
//! each round's cross-core round trip (an atomic ping-pong between the two
//! CPUs), since every cross-core figure follows where the machine placed
//! the two vCPUs.
//!
//! ```text
//! cargo bench --bench peers                        # 9 rounds, every group
//! cargo bench --bench peers -- --rounds 7 --only xproc,spsc
//! cargo bench --bench peers -- --regime near     # each row waits for near vCPUs
//! ```
//!
//! Groups (`--only`): `uncontended`, `spsc`, `xproc`, `pingpong`,
//! `pingpong-xproc`, `mpsc`, `fanin1`, `fanin2`, `fanin4` (`fanin`: all
//! three). Without `--bench` (as under
//! `cargo test --benches`) it runs one tiny round as a smoke test. Child
//! processes are this binary re-executed with `LAMINAR_BENCH_CHILD` set.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::{Backoff, CachePadded};
use laminar_ring::shm::{
    FanInError, SegmentOptions, ShmConsumer, ShmFanIn, ShmProducer, ShmTryPopError,
};
use laminar_ring::{mpsc, spsc};

/// Slots of every ring (the peer harness's capacity).
const CAP: usize = 65_536;
/// Slots of the ping-pong rings.
const PING_CAP: usize = 1024;

#[path = "support/runs.rs"]
mod runs;
use runs::{median, spawn_child};

#[path = "support/cores.rs"]
mod cores;
use cores::{pin, probe_rtt_ns, unpin};

/// Pins to `cpu`, or says once that the figures are of unpinned threads.
fn pin_or_warn(cpu: usize) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if !pin(cpu) {
        WARNED.call_once(|| eprintln!("warning: cannot pin to CPU {cpu}: threads run unpinned"));
    }
}

// ------------------------------------------------------------------ queues

/// A single-producer, single-consumer queue as the benches drive it: one
/// non-blocking call per item.
trait Spsc {
    type Tx: Send + 'static;
    type Rx: Send + 'static;
    fn make(cap: usize) -> (Self::Tx, Self::Rx);
    fn try_push(tx: &mut Self::Tx, v: u64) -> bool;
    fn try_pop(rx: &mut Self::Rx) -> Option<u64>;
}

struct Laminar;
impl Spsc for Laminar {
    type Tx = spsc::Producer<u64>;
    type Rx = spsc::Consumer<u64>;
    fn make(cap: usize) -> (Self::Tx, Self::Rx) {
        spsc::channel(cap)
    }
    #[inline(always)]
    fn try_push(tx: &mut Self::Tx, v: u64) -> bool {
        tx.try_push(v).is_ok()
    }
    #[inline(always)]
    fn try_pop(rx: &mut Self::Rx) -> Option<u64> {
        rx.try_pop().ok()
    }
}

struct Rtrb;
impl Spsc for Rtrb {
    type Tx = rtrb::Producer<u64>;
    type Rx = rtrb::Consumer<u64>;
    fn make(cap: usize) -> (Self::Tx, Self::Rx) {
        rtrb::RingBuffer::new(cap)
    }
    #[inline(always)]
    fn try_push(tx: &mut Self::Tx, v: u64) -> bool {
        tx.push(v).is_ok()
    }
    #[inline(always)]
    fn try_pop(rx: &mut Self::Rx) -> Option<u64> {
        rx.pop().ok()
    }
}

struct Naive;
impl Spsc for Naive {
    type Tx = naive::Producer;
    type Rx = naive::Consumer;
    fn make(cap: usize) -> (Self::Tx, Self::Rx) {
        naive::anonymous(cap)
    }
    #[inline(always)]
    fn try_push(tx: &mut Self::Tx, v: u64) -> bool {
        tx.try_push(v)
    }
    #[inline(always)]
    fn try_pop(rx: &mut Self::Rx) -> Option<u64> {
        rx.try_pop()
    }
}

impl Spsc for ShmQueue {
    type Tx = ShmProducer<u64>;
    type Rx = ShmConsumer<u64>;
    fn make(_cap: usize) -> (Self::Tx, Self::Rx) {
        unreachable!("shared-memory rings are made per process")
    }
    #[inline(always)]
    fn try_push(tx: &mut Self::Tx, v: u64) -> bool {
        tx.try_push(v).is_ok()
    }
    #[inline(always)]
    fn try_pop(rx: &mut Self::Rx) -> Option<u64> {
        match rx.try_pop() {
            Ok(v) => Some(v),
            Err(ShmTryPopError::Empty) => None,
            Err(e) => panic!("shm consumer: {e}"),
        }
    }
}
struct ShmQueue;

mod naive {
    //! The "naive 60-line ring" the table compares with: two cached
    //! positions, one Release store per item, no checks, no wake-ups, no
    //! crash handling; over an anonymous mapping (threads) or a file in
    //! `/dev/shm` (processes).

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use crossbeam_utils::CachePadded;
    use memmap2::{MmapMut, MmapRaw};

    /// Header: head, tail, each on its own 128 bytes; slots after.
    const HEADER: usize = 256;

    #[repr(C)]
    struct Header {
        head: CachePadded<AtomicU64>,
        tail: CachePadded<AtomicU64>,
    }

    /// Bytes of a ring of `cap` slots.
    pub fn len(cap: usize) -> usize {
        HEADER + cap * 8
    }

    /// The pages of one ring and where its parts are.
    struct Pages {
        _map: Arc<MmapRaw>,
        header: *const Header,
        slots: *mut u64,
        mask: u64,
    }

    impl Pages {
        #[allow(unsafe_code)]
        fn of(map: Arc<MmapRaw>, cap: usize) -> Self {
            assert!(map.len() >= len(cap) && cap.is_power_of_two());
            // A raw mapping's pointer, which may be written through.
            let base = map.as_mut_ptr();
            Self {
                header: base.cast(),
                // SAFETY: the mapping is at least HEADER + cap * 8 bytes.
                slots: unsafe { base.add(HEADER) }.cast(),
                _map: map,
                mask: cap as u64 - 1,
            }
        }

        #[allow(unsafe_code)]
        fn header(&self) -> &Header {
            // SAFETY: the header lies at the start of the live, page-aligned
            // mapping; its atomics are only ever accessed as atomics.
            unsafe { &*self.header }
        }
    }

    pub struct Producer {
        pages: Pages,
        cap: u64,
        head: u64,
        cached_tail: u64,
    }

    pub struct Consumer {
        pages: Pages,
        tail: u64,
        cached_head: u64,
    }

    // SAFETY: each end is used by one thread at a time and reaches the
    // shared pages only through raw pointers, ordered by the protocol below.
    #[allow(unsafe_code)]
    unsafe impl Send for Producer {}
    // SAFETY: as for Producer.
    #[allow(unsafe_code)]
    unsafe impl Send for Consumer {}

    pub fn producer(map: Arc<MmapRaw>, cap: usize) -> Producer {
        Producer {
            pages: Pages::of(map, cap),
            cap: cap as u64,
            head: 0,
            cached_tail: 0,
        }
    }

    pub fn consumer(map: Arc<MmapRaw>, cap: usize) -> Consumer {
        Consumer {
            pages: Pages::of(map, cap),
            tail: 0,
            cached_head: 0,
        }
    }

    /// Both ends over one anonymous mapping (for threads).
    pub fn anonymous(cap: usize) -> (Producer, Consumer) {
        let map = MmapMut::map_anon(len(cap)).expect("anonymous mapping");
        let map = Arc::new(MmapRaw::from(map));
        (producer(map.clone(), cap), consumer(map, cap))
    }

    impl Producer {
        #[inline(always)]
        #[allow(unsafe_code)]
        pub fn try_push(&mut self, v: u64) -> bool {
            if self.head - self.cached_tail == self.cap {
                self.cached_tail = self.pages.header().tail.load(Ordering::Acquire);
                if self.head - self.cached_tail == self.cap {
                    return false;
                }
            }
            let slot = (self.head & self.pages.mask) as usize;
            // SAFETY: the slot is in the mapping and free (head - tail < cap).
            unsafe { self.pages.slots.add(slot).write(v) };
            self.head += 1;
            self.pages.header().head.store(self.head, Ordering::Release);
            true
        }
    }

    impl Consumer {
        #[inline(always)]
        #[allow(unsafe_code)]
        pub fn try_pop(&mut self) -> Option<u64> {
            if self.tail == self.cached_head {
                self.cached_head = self.pages.header().head.load(Ordering::Acquire);
                if self.tail == self.cached_head {
                    return None;
                }
            }
            let slot = (self.tail & self.pages.mask) as usize;
            // SAFETY: the slot is in the mapping and published.
            let v = unsafe { self.pages.slots.add(slot).read() };
            self.tail += 1;
            self.pages.header().tail.store(self.tail, Ordering::Release);
            Some(v)
        }
    }
}

// ------------------------------------------------------------------ runs

/// Sizes of one run.
#[derive(Clone, Copy)]
struct Sizes {
    items: u64,
    pairs: u64,
    trips: u64,
}

/// Pushes `0..n` one item per call, spinning while full.
#[inline(always)]
fn produce<Q: Spsc>(tx: &mut Q::Tx, n: u64) {
    for i in 0..n {
        while !Q::try_push(tx, i) {
            std::hint::spin_loop();
        }
    }
}

/// Pops `n` items one per call, spinning while empty; counts those that are
/// not the next in `0..n`.
#[inline(always)]
fn consume<Q: Spsc>(rx: &mut Q::Rx, n: u64) -> u64 {
    let mut bad = 0;
    let mut expected = 0;
    while expected < n {
        if let Some(v) = Q::try_pop(rx) {
            bad += u64::from(v != expected);
            expected += 1;
        } else {
            std::hint::spin_loop();
        }
    }
    bad
}

/// Two threads, producer on CPU 0 and consumer on CPU 1; M items/s from
/// the moment both are ready to the consumer's last item.
fn spsc_threads<Q: Spsc>(n: u64) -> f64 {
    let (mut tx, mut rx) = Q::make(CAP);
    let ready = Arc::new(Barrier::new(2));
    let consumer = {
        let ready = ready.clone();
        thread::spawn(move || {
            pin_or_warn(1);
            ready.wait();
            let bad = consume::<Q>(&mut rx, n);
            (Instant::now(), bad)
        })
    };
    pin_or_warn(0);
    ready.wait();
    let start = Instant::now();
    produce::<Q>(&mut tx, n);
    let (end, bad) = consumer.join().expect("consumer thread");
    assert_eq!(bad, 0, "values out of sequence");
    n as f64 / end.duration_since(start).as_secs_f64() / 1e6
}

/// One thread: push then pop, `pairs` times; ns per pair.
fn uncontended<Q: Spsc>(pairs: u64) -> f64 {
    pin_or_warn(0);
    let (mut tx, mut rx) = Q::make(CAP);
    let mut bad = 0u64;
    let start = Instant::now();
    for i in 0..pairs {
        bad += u64::from(!Q::try_push(&mut tx, black_box(i)));
        bad += u64::from(Q::try_pop(&mut rx) != Some(i));
    }
    let ns = start.elapsed().as_nanos() as f64 / pairs as f64;
    black_box((&mut tx, &mut rx));
    assert_eq!(bad, 0, "bad push/pop");
    ns
}

/// Round trips through two queues (`send i`, wait for `i` back), the echo
/// on CPU 1; median ns per trip (each trip timed).
fn pingpong_threads<Q: Spsc>(trips: u64) -> f64 {
    let (mut ping_tx, mut ping_rx) = Q::make(PING_CAP);
    let (mut pong_tx, mut pong_rx) = Q::make(PING_CAP);
    let echo = thread::spawn(move || {
        pin_or_warn(1);
        echo::<Q>(&mut ping_rx, &mut pong_tx, trips);
    });
    pin_or_warn(0);
    let p50 = bounce::<Q>(&mut ping_tx, &mut pong_rx, trips);
    echo.join().expect("echo thread");
    p50
}

fn echo<Q: Spsc>(rx: &mut Q::Rx, tx: &mut Q::Tx, trips: u64) {
    for _ in 0..trips {
        let v = loop {
            if let Some(v) = Q::try_pop(rx) {
                break v;
            }
            std::hint::spin_loop();
        };
        while !Q::try_push(tx, v) {
            std::hint::spin_loop();
        }
    }
}

/// Sends `0..trips` and waits for each back; median ns per round trip.
fn bounce<Q: Spsc>(tx: &mut Q::Tx, rx: &mut Q::Rx, trips: u64) -> f64 {
    let mut samples = Vec::with_capacity(trips as usize);
    for i in 0..trips {
        let t = Instant::now();
        while !Q::try_push(tx, i) {
            std::hint::spin_loop();
        }
        let v = loop {
            if let Some(v) = Q::try_pop(rx) {
                break v;
            }
            std::hint::spin_loop();
        };
        samples.push(t.elapsed().as_nanos() as f64);
        assert_eq!(v, i, "echo out of sequence");
    }
    median(&mut samples)
}

/// The floor of a round trip: two cache lines, each written by one side.
fn pingpong_floor(trips: u64) -> f64 {
    let lines = Arc::new([
        CachePadded::new(AtomicU64::new(0)),
        CachePadded::new(AtomicU64::new(0)),
    ]);
    let echo = {
        let lines = lines.clone();
        thread::spawn(move || {
            pin_or_warn(1);
            for i in 1..=trips {
                // Acquire/Release: a ping-pong, each side waits for the
                // other's store.
                while lines[0].load(Ordering::Acquire) != i {
                    std::hint::spin_loop();
                }
                lines[1].store(i, Ordering::Release);
            }
        })
    };
    pin_or_warn(0);
    let mut samples = Vec::with_capacity(trips as usize);
    for i in 1..=trips {
        let t = Instant::now();
        lines[0].store(i, Ordering::Release);
        while lines[1].load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        samples.push(t.elapsed().as_nanos() as f64);
    }
    echo.join().expect("echo thread");
    median(&mut samples)
}

/// `producers` producers (each with its own tag) and a consumer, unpinned
/// threads (the peer table's MPSC row is 2 producers on 2 cores, spin then
/// yield); the consumer checks each producer's order and the count; M
/// items/s in all.
fn mpsc_run<Q: Mpsc>(n: u64, producers: u64) -> f64 {
    // The other groups pinned this thread; here the scheduler places all.
    unpin();
    let (tx, mut rx) = Q::make(CAP);
    let per = n / producers;
    let ready = Arc::new(Barrier::new(producers as usize + 1));
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let mut tx = Q::clone_tx(&tx);
            let ready = ready.clone();
            thread::spawn(move || {
                ready.wait();
                for i in 0..per {
                    let v = (p << TAG_SHIFT) | i;
                    let backoff = Backoff::new();
                    while !Q::try_push(&mut tx, v) {
                        backoff.snooze();
                    }
                }
            })
        })
        .collect();
    drop(tx);
    ready.wait();
    let start = Instant::now();
    let mut next = vec![0u64; producers as usize];
    for _ in 0..producers * per {
        let backoff = Backoff::new();
        let v = loop {
            if let Some(v) = Q::try_pop(&mut rx) {
                break v;
            }
            backoff.snooze();
        };
        take_tagged(&mut next, v);
    }
    let secs = start.elapsed().as_secs_f64();
    for t in threads {
        t.join().expect("producer thread");
    }
    assert!(next.iter().all(|&k| k == per), "lost items: {next:?}");
    (producers * per) as f64 / secs / 1e6
}

/// Where a producer's tag sits in its values.
const TAG_SHIFT: u32 = 56;

/// Checks `v` (tag and sequence number) against what its producer sent
/// before.
fn take_tagged(next: &mut [u64], v: u64) {
    let p = (v >> TAG_SHIFT) as usize;
    assert!(p < next.len(), "no producer {p}");
    assert_eq!(
        v & ((1 << TAG_SHIFT) - 1),
        next[p],
        "producer {p} out of order"
    );
    next[p] += 1;
}

/// `producers` producer processes joined to one stream (a lane each), the
/// consumer (`ShmFanIn`) here; unpinned, spin then yield, one item per
/// call, every value checked; M items/s in all, from the moment every
/// producer has joined and is told to start.
fn fanin_xproc(n: u64, producers: u64) -> f64 {
    unpin();
    let dir = RunDir::new();
    let mut rx = ShmFanIn::<u64>::create_with("fan", CAP, &dir.opts()).expect("create stream");
    let per = n / producers;
    let children: Vec<_> = (0..producers)
        .map(|p| {
            spawn_child(
                "fanin-producer",
                &[
                    ("N", per.to_string()),
                    ("ID", p.to_string()),
                    ("DIR", dir.0.display().to_string()),
                ],
            )
        })
        .collect();
    // Every producer joined (and the consumer found its lane) before the
    // start, as the threads' barrier does.
    while rx.lanes() < producers as usize {
        match rx.try_pop() {
            Err(FanInError::Empty) => thread::sleep(std::time::Duration::from_micros(200)),
            other => panic!("before the start: {other:?}"),
        }
    }
    std::fs::write(dir.0.join("go"), b"").expect("start flag");
    let start = Instant::now();
    let mut next = vec![0u64; producers as usize];
    for _ in 0..producers * per {
        let backoff = Backoff::new();
        let v = loop {
            match rx.try_pop() {
                Ok(v) => break v,
                Err(FanInError::Empty) => backoff.snooze(),
                Err(e) => panic!("fan-in: {e}"),
            }
        };
        take_tagged(&mut next, v);
    }
    let secs = start.elapsed().as_secs_f64();
    for mut c in children {
        assert!(
            c.wait().expect("child").success(),
            "a fan-in producer failed"
        );
    }
    assert!(next.iter().all(|&k| k == per), "lost items: {next:?}");
    (producers * per) as f64 / secs / 1e6
}

/// A multi-producer queue as the MPSC row drives it.
trait Mpsc {
    type Tx: Send + 'static;
    type Rx: Send + 'static;
    fn make(cap: usize) -> (Self::Tx, Self::Rx);
    fn clone_tx(tx: &Self::Tx) -> Self::Tx;
    fn try_push(tx: &mut Self::Tx, v: u64) -> bool;
    fn try_pop(rx: &mut Self::Rx) -> Option<u64>;
}

struct LaminarMpsc;
impl Mpsc for LaminarMpsc {
    type Tx = mpsc::Producer<u64>;
    type Rx = mpsc::Consumer<u64>;
    fn make(cap: usize) -> (Self::Tx, Self::Rx) {
        mpsc::channel(cap)
    }
    fn clone_tx(tx: &Self::Tx) -> Self::Tx {
        tx.clone()
    }
    #[inline(always)]
    fn try_push(tx: &mut Self::Tx, v: u64) -> bool {
        tx.try_push(v).is_ok()
    }
    #[inline(always)]
    fn try_pop(rx: &mut Self::Rx) -> Option<u64> {
        rx.try_pop().ok()
    }
}

struct CrossbeamArrayQueue;
impl Mpsc for CrossbeamArrayQueue {
    type Tx = Arc<ArrayQueue<u64>>;
    type Rx = Arc<ArrayQueue<u64>>;
    fn make(cap: usize) -> (Self::Tx, Self::Rx) {
        let q = Arc::new(ArrayQueue::new(cap));
        (q.clone(), q)
    }
    fn clone_tx(tx: &Self::Tx) -> Self::Tx {
        tx.clone()
    }
    #[inline(always)]
    fn try_push(tx: &mut Self::Tx, v: u64) -> bool {
        tx.push(v).is_ok()
    }
    #[inline(always)]
    fn try_pop(rx: &mut Self::Rx) -> Option<u64> {
        rx.pop()
    }
}

// ------------------------------------------------------------------ processes

/// The directory of this run's rings (removed at the end).
struct RunDir(PathBuf);

impl RunDir {
    fn new() -> Self {
        let dir = PathBuf::from("/dev/shm").join(format!("lr-bench-peers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("run directory");
        Self(dir)
    }

    fn opts(&self) -> SegmentOptions {
        SegmentOptions {
            dir: self.0.clone(),
            ..SegmentOptions::default()
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A file-backed naive ring of `CAP` slots at `path`, mapped.
fn naive_map(path: &std::path::Path, create: bool) -> Arc<memmap2::MmapRaw> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(create)
        .open(path)
        .expect("naive ring file");
    if create {
        file.set_len(naive::len(CAP) as u64).expect("size");
    }
    // Both processes reach the shared pages through the ring's raw pointers
    // and atomics only (no references to the bytes), which a raw mapping
    // is for.
    Arc::new(memmap2::MmapRaw::map_raw(&file).expect("map"))
}

/// Child process roles; each pins itself to CPU 0.
fn child(role: &str) {
    let arg = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}"));
    let n: u64 = arg("N").parse().expect("N");
    let dir = PathBuf::from(arg("DIR"));
    let opts = SegmentOptions {
        dir: dir.clone(),
        ..SegmentOptions::default()
    };
    pin_or_warn(0);
    match role {
        "shm-producer" => {
            let mut tx = ShmProducer::<u64>::open_with("tp", &opts).expect("open producer");
            produce::<ShmQueue>(&mut tx, n);
            tx.close();
        }
        "naive-producer" => {
            let mut tx = naive::producer(naive_map(&dir.join("naive"), false), CAP);
            produce::<Naive>(&mut tx, n);
        }
        "fanin-producer" => {
            let id: u64 = arg("ID").parse().expect("ID");
            let mut tx = ShmProducer::<u64>::join("fan", CAP, &opts).expect("join");
            // Not pinned: the scheduler places every producer, as for the
            // threads it is compared with.
            unpin();
            while !dir.join("go").exists() {
                thread::sleep(std::time::Duration::from_micros(50));
            }
            for i in 0..n {
                let backoff = Backoff::new();
                while tx.try_push((id << TAG_SHIFT) | i).is_err() {
                    backoff.snooze();
                }
            }
            tx.close();
        }
        "shm-echo" => {
            let mut rx = ShmConsumer::<u64>::open_with("ping", &opts).expect("open ping");
            let mut tx = ShmProducer::<u64>::open_with("pong", &opts).expect("open pong");
            echo::<ShmQueue>(&mut rx, &mut tx, n);
        }
        other => panic!("unknown child role {other}"),
    }
}

/// The consumer here (CPU 1), the producer in a child process (CPU 0);
/// M items/s from the consumer's first item to its last.
fn xproc<Q: Spsc>(mut rx: Q::Rx, role: &str, dir: &RunDir, n: u64) -> f64 {
    pin_or_warn(1);
    let mut child = spawn_child(
        role,
        &[("N", n.to_string()), ("DIR", dir.0.display().to_string())],
    );
    let first = loop {
        if let Some(v) = Q::try_pop(&mut rx) {
            break v;
        }
        std::hint::spin_loop();
    };
    let start = Instant::now();
    assert_eq!(first, 0);
    let mut bad = 0;
    let mut expected = 1;
    while expected < n {
        if let Some(v) = Q::try_pop(&mut rx) {
            bad += u64::from(v != expected);
            expected += 1;
        } else {
            std::hint::spin_loop();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(child.wait().expect("child").success(), "{role} failed");
    assert_eq!(bad, 0, "values out of sequence");
    (n - 1) as f64 / secs / 1e6
}

fn xproc_shm(n: u64) -> f64 {
    let dir = RunDir::new();
    let rx = ShmConsumer::<u64>::create_with("tp", CAP, &dir.opts()).expect("create ring");
    xproc::<ShmQueue>(rx, "shm-producer", &dir, n)
}

fn xproc_naive(n: u64) -> f64 {
    let dir = RunDir::new();
    let rx = naive::consumer(naive_map(&dir.0.join("naive"), true), CAP);
    xproc::<Naive>(rx, "naive-producer", &dir, n)
}

fn pingpong_shm(trips: u64) -> f64 {
    let dir = RunDir::new();
    let mut ping = ShmProducer::<u64>::create_with("ping", PING_CAP, &dir.opts()).expect("ping");
    let mut pong = ShmConsumer::<u64>::create_with("pong", PING_CAP, &dir.opts()).expect("pong");
    pin_or_warn(1);
    let mut child = spawn_child(
        "shm-echo",
        &[
            ("N", trips.to_string()),
            ("DIR", dir.0.display().to_string()),
        ],
    );
    let p50 = bounce::<ShmQueue>(&mut ping, &mut pong, trips);
    assert!(child.wait().expect("child").success(), "echo failed");
    p50
}

// ------------------------------------------------------------------ table

/// One row: a name, the run, and what its figure is.
struct Row {
    name: &'static str,
    run: Box<dyn Fn(Sizes) -> f64>,
    figures: Vec<f64>,
}

/// Rows measured against each other; the first is the reference of the
/// ratios.
struct Group {
    key: &'static str,
    title: &'static str,
    unit: &'static str,
    /// Whether more is better (throughput) or less (time).
    higher_is_better: bool,
    rows: Vec<Row>,
}

fn row(name: &'static str, run: impl Fn(Sizes) -> f64 + 'static) -> Row {
    Row {
        name,
        run: Box::new(run),
        figures: Vec::new(),
    }
}

fn groups() -> Vec<Group> {
    vec![
        Group {
            key: "uncontended",
            title: "push + pop on one thread (CPU 0)",
            unit: "ns per pair",
            higher_is_better: false,
            rows: vec![
                row("rtrb", |s| uncontended::<Rtrb>(s.pairs)),
                row("laminar spsc", |s| uncontended::<Laminar>(s.pairs)),
                row("naive ring", |s| uncontended::<Naive>(s.pairs)),
            ],
        },
        Group {
            key: "spsc",
            title: "SPSC, 2 threads, one item per call",
            unit: "M items/s",
            higher_is_better: true,
            rows: vec![
                row("rtrb", |s| spsc_threads::<Rtrb>(s.items)),
                row("laminar spsc", |s| spsc_threads::<Laminar>(s.items)),
                row("naive ring", |s| spsc_threads::<Naive>(s.items)),
            ],
        },
        Group {
            key: "xproc",
            title: "u64 across 2 processes, one item per call",
            unit: "M items/s",
            higher_is_better: true,
            rows: vec![
                row("naive shm ring, 2 processes", |s| xproc_naive(s.items)),
                row("laminar shm, 2 processes", |s| xproc_shm(s.items)),
                row("laminar spsc, 2 threads", |s| {
                    spsc_threads::<Laminar>(s.items)
                }),
            ],
        },
        Group {
            key: "pingpong",
            title: "round trip between 2 threads (p50)",
            unit: "ns",
            higher_is_better: false,
            rows: vec![
                row("rtrb", |s| pingpong_threads::<Rtrb>(s.trips)),
                row("laminar spsc", |s| pingpong_threads::<Laminar>(s.trips)),
                row("atomic pair (floor)", |s| pingpong_floor(s.trips)),
            ],
        },
        Group {
            key: "pingpong-xproc",
            title: "round trip between 2 processes (p50)",
            unit: "ns",
            higher_is_better: false,
            rows: vec![
                row("atomic pair (floor, threads)", |s| pingpong_floor(s.trips)),
                row("laminar shm, 2 processes", |s| pingpong_shm(s.trips)),
            ],
        },
        Group {
            key: "mpsc",
            title: "MPSC, 2 producer threads + 1 consumer, spin then yield",
            unit: "M items/s",
            higher_is_better: true,
            rows: vec![
                row("crossbeam ArrayQueue", |s| {
                    mpsc_run::<CrossbeamArrayQueue>(s.items, 2)
                }),
                row("laminar mpsc", |s| mpsc_run::<LaminarMpsc>(s.items, 2)),
            ],
        },
        fanin_group("fanin1", 1),
        fanin_group("fanin2", 2),
        fanin_group("fanin4", 4),
    ]
}

/// Fan-in with `p` producers: the in-process queues with `p` producer
/// threads, the shared-memory stream with `p` producer processes, and (for
/// `p` > 1) one producer process through one ring, the same total; all
/// unpinned, spin then yield, one item per call.
fn fanin_group(key: &'static str, p: u64) -> Group {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut rows = vec![
        row("crossbeam ArrayQueue, threads", move |s| {
            mpsc_run::<CrossbeamArrayQueue>(s.items, p)
        }),
        row("laminar mpsc, threads", move |s| {
            mpsc_run::<LaminarMpsc>(s.items, p)
        }),
        row(
            leak(format!(
                "laminar fan-in, {p} producer process{}",
                if p == 1 { "" } else { "es" }
            )),
            move |s| fanin_xproc(s.items, p),
        ),
    ];
    if p > 1 {
        rows.push(row("laminar shm ring, 1 producer process", |s| {
            fanin_xproc(s.items, 1)
        }));
    }
    Group {
        key,
        title: leak(format!(
            "fan-in, {p} producer{} + 1 consumer, unpinned, spin then yield",
            if p == 1 { "" } else { "s" }
        )),
        unit: "M items/s in all",
        higher_is_better: true,
        rows,
    }
}

fn main() {
    if let Ok(role) = std::env::var("LAMINAR_BENCH_CHILD") {
        child(&role);
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let rounds: usize = value("--rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 9 } else { 1 });
    let only: Option<Vec<&str>> = value("--only").map(|v| v.split(',').collect());
    // `--regime near|far`: run each row only once the cross-core round
    // trip says the vCPUs are placed so (near: at most 250 ns), waiting up
    // to 30 s for it; `any` (default) runs at once.
    let regime = value("--regime").map_or("any", String::as_str);
    let placed = |rtt: f64| match regime {
        "near" => rtt <= 250.0,
        "far" => rtt > 250.0,
        _ => true,
    };
    let sizes = if full {
        Sizes {
            items: 10_000_000,
            pairs: 20_000_000,
            trips: 100_000,
        }
    } else {
        Sizes {
            items: 100_000,
            pairs: 100_000,
            trips: 1_000,
        }
    };
    let mut groups: Vec<Group> = groups()
        .into_iter()
        .filter(|g| {
            only.as_ref().is_none_or(|o| {
                o.contains(&g.key) || o.contains(&"fanin") && g.key.starts_with("fanin")
            })
        })
        .collect();
    println!(
        "laminar-ring peers bench: {rounds} rounds; {} items per throughput run, {} pairs, {} round trips; producer CPU 0, consumer CPU 1",
        sizes.items, sizes.pairs, sizes.trips
    );
    let mut probes = Vec::new();
    for round in 0..rounds {
        for g in &mut groups {
            let n = g.rows.len();
            for k in 0..n {
                // Rotate the first row each round, so that no row always
                // meets the same phase of the machine's core placement.
                let r = &mut g.rows[(k + round) % n];
                if regime != "any" {
                    let waited = Instant::now();
                    while !placed(probe_rtt_ns()) && waited.elapsed().as_secs() < 30 {
                        thread::sleep(std::time::Duration::from_millis(200));
                    }
                }
                let figure = (r.run)(sizes);
                r.figures.push(figure);
            }
        }
        let probe = probe_rtt_ns();
        probes.push(probe);
        eprintln!(
            "round {}/{rounds}: cross-core round trip {probe:.0} ns",
            round + 1
        );
    }
    let mut sorted = probes.clone();
    println!(
        "cross-core round trip: median {:.0} ns [{:.0}..{:.0}] (~100 near, 300-500 far)",
        median(&mut sorted),
        sorted[0],
        sorted[sorted.len() - 1]
    );
    for g in &mut groups {
        println!();
        println!("### {} ({})", g.title, g.unit);
        println!();
        println!("| | median [min..max] | vs {} |", g.rows[0].name);
        println!("|---|---:|---:|");
        // The ratio is the median of each round's ratio: the rows of one
        // round ran within a second or two of each other, mostly under one
        // placement of the vCPUs, while the rounds may not have been.
        let reference = g.rows[0].figures.clone();
        for r in &mut g.rows {
            let mut ratios: Vec<f64> = r
                .figures
                .iter()
                .zip(&reference)
                .map(|(f, base)| f / base)
                .collect();
            let ratio = median(&mut ratios);
            let m = median(&mut r.figures);
            let (lo, hi) = (r.figures[0], r.figures[r.figures.len() - 1]);
            let better = if g.higher_is_better {
                ratio
            } else {
                1.0 / ratio
            };
            println!(
                "| {} | {m:.2} [{lo:.2}..{hi:.2}] | {ratio:.2}x ({}) |",
                r.name,
                if (better - 1.0).abs() < 0.005 {
                    "same".to_string()
                } else if better > 1.0 {
                    format!("{:.0}% better", (better - 1.0) * 100.0)
                } else {
                    format!("{:.0}% worse", (1.0 - better) * 100.0)
                }
            );
        }
    }
}
