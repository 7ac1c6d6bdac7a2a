//! Cross-process against in-process: u64 throughput and round-trip latency,
//! busy-spin and futex-blocking, the same code paths measured in the same
//! run, in interleaved rounds, with medians and ratios.
//!
//! ```text
//! cargo bench --bench shm                # 7 rounds
//! cargo bench --bench shm -- --rounds 3
//! ```
//!
//! The producer (thread or process) runs on CPU 0, the consumer on CPU 1,
//! as in `benches/peers.rs`. Without `--bench` (as under `cargo test
//! --benches`) it runs one tiny round as a smoke test. The child processes are this binary re-executed
//! with `LAMINAR_BENCH_CHILD` set.

use std::time::{Duration, Instant};

use laminar_ring::shm::{Policy, SegmentOptions, ShmConsumer, ShmProducer};
use laminar_ring::{WaitStrategy, spsc};

#[path = "support/runs.rs"]
mod runs;
use runs::{median, spawn_child};

#[path = "support/cores.rs"]
mod cores;
use cores::pin;

const CAP: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Spin,
    Block,
}

/// The four ends of two rings as the benches drive them.
trait Tx {
    fn send(&mut self, v: u64, mode: Mode);
}
trait Rx {
    fn recv(&mut self, mode: Mode) -> u64;
}

impl Tx for spsc::Producer<u64> {
    #[inline]
    fn send(&mut self, v: u64, mode: Mode) {
        match mode {
            Mode::Spin => {
                while self.try_push(v).is_err() {
                    std::hint::spin_loop();
                }
            }
            Mode::Block => self.push(v).expect("consumer alive"),
        }
    }
}
impl Rx for spsc::Consumer<u64> {
    #[inline]
    fn recv(&mut self, mode: Mode) -> u64 {
        match mode {
            Mode::Spin => loop {
                if let Ok(v) = self.try_pop() {
                    return v;
                }
                std::hint::spin_loop();
            },
            Mode::Block => self.pop().expect("producer alive"),
        }
    }
}
impl Tx for ShmProducer<u64> {
    #[inline]
    fn send(&mut self, v: u64, mode: Mode) {
        match mode {
            Mode::Spin => {
                while self.try_push(v).is_err() {
                    std::hint::spin_loop();
                }
            }
            Mode::Block => self.push(v).expect("consumer alive"),
        }
    }
}
impl Rx for ShmConsumer<u64> {
    #[inline]
    fn recv(&mut self, mode: Mode) -> u64 {
        match mode {
            Mode::Spin => loop {
                if let Ok(v) = self.try_pop() {
                    return v;
                }
                std::hint::spin_loop();
            },
            Mode::Block => self.pop().expect("producer alive"),
        }
    }
}

fn mode_from(s: &str) -> Mode {
    if s == "block" {
        Mode::Block
    } else {
        Mode::Spin
    }
}

fn wait_strategy(mode: Mode) -> WaitStrategy {
    match mode {
        Mode::Spin => WaitStrategy::BusySpin,
        Mode::Block => WaitStrategy::Park,
    }
}

/// Child process roles.
fn child(role: &str) {
    let arg = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}"));
    let n: u64 = arg("N").parse().expect("N");
    let mode = mode_from(&arg("MODE"));
    let _ = pin(0);
    match role {
        "producer" => {
            let mut tx = ShmProducer::<u64>::open(&arg("RING")).expect("open producer");
            tx.set_wait_strategy(wait_strategy(mode));
            for i in 0..n {
                tx.send(i, mode);
            }
        }
        "echo" => {
            let mut rx = ShmConsumer::<u64>::open(&arg("PING")).expect("open ping");
            let mut tx = ShmProducer::<u64>::open(&arg("PONG")).expect("open pong");
            rx.set_wait_strategy(wait_strategy(mode));
            tx.set_wait_strategy(wait_strategy(mode));
            for _ in 0..n {
                let v = rx.recv(mode);
                tx.send(v, mode);
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

fn ring_name(what: &str) -> String {
    format!("lr-bench-{}-{what}", std::process::id())
}

/// Consumer-side ns per item from the first item to the last (process or
/// thread start-up excluded); every value checked.
fn consume_all(rx: &mut impl Rx, n: u64, mode: Mode) -> f64 {
    assert_eq!(rx.recv(mode), 0);
    let start = Instant::now();
    for i in 1..n {
        assert_eq!(rx.recv(mode), i, "item lost or reordered");
    }
    start.elapsed().as_nanos() as f64 / (n - 1) as f64
}

fn throughput_in_process(n: u64, mode: Mode) -> f64 {
    let (mut tx, mut rx) = spsc::channel_with::<u64>(CAP, wait_strategy(mode)).unwrap();
    let t = std::thread::spawn(move || {
        let _ = pin(0);
        for i in 0..n {
            tx.send(i, mode);
        }
    });
    let _ = pin(1);
    let ns = consume_all(&mut rx, n, mode);
    t.join().unwrap();
    ns
}

/// ns per item through a shared ring in one thread (push 64, then pop 64
/// with one `try_pop` each, every value checked): the cost of the ring's
/// own code with no second core, under `policy`.
fn one_thread(n: u64, policy: Policy) -> f64 {
    let name = ring_name("one");
    let opts = SegmentOptions {
        policy,
        ..SegmentOptions::default()
    };
    let mut rx = ShmConsumer::<u64>::create_with(&name, CAP, &opts).expect("create ring");
    let mut tx = ShmProducer::<u64>::open(&name).expect("open producer");
    let start = Instant::now();
    let mut next = 0;
    while next < n {
        for v in next..next + 64 {
            tx.try_push(v).expect("room");
        }
        for v in next..next + 64 {
            assert_eq!(rx.try_pop(), Ok(v), "item lost or reordered");
        }
        next += 64;
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    drop((tx, rx));
    laminar_ring::shm::remove(&name).expect("remove ring");
    ns
}

fn throughput_cross_process(n: u64, mode: Mode, policy: Policy) -> f64 {
    let name = ring_name("tp");
    let opts = SegmentOptions {
        policy,
        ..SegmentOptions::default()
    };
    let mut rx = ShmConsumer::<u64>::create_with(&name, CAP, &opts).expect("create ring");
    rx.set_wait_strategy(wait_strategy(mode));
    let mut child = spawn_child(
        "producer",
        &[
            ("RING", name.clone()),
            ("N", n.to_string()),
            ("MODE", format!("{mode:?}").to_lowercase()),
        ],
    );
    let _ = pin(1);
    let ns = consume_all(&mut rx, n, mode);
    assert!(child.wait().expect("child").success());
    laminar_ring::shm::remove(&name).expect("remove ring");
    ns
}

/// Round trips: send i, wait for i back. Returns sorted per-trip ns.
fn ping(tx: &mut impl Tx, rx: &mut impl Rx, n: u64, mode: Mode) -> Vec<u64> {
    let mut samples = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t = Instant::now();
        tx.send(i, mode);
        assert_eq!(rx.recv(mode), i);
        samples.push(t.elapsed().as_nanos() as u64);
    }
    samples.sort_unstable();
    samples
}

fn rtt_in_process(n: u64, mode: Mode) -> Vec<u64> {
    let (mut ping_tx, mut ping_rx) = spsc::channel_with::<u64>(CAP, wait_strategy(mode)).unwrap();
    let (mut pong_tx, mut pong_rx) = spsc::channel_with::<u64>(CAP, wait_strategy(mode)).unwrap();
    let t = std::thread::spawn(move || {
        let _ = pin(0);
        for _ in 0..n {
            let v = ping_rx.recv(mode);
            pong_tx.send(v, mode);
        }
    });
    let _ = pin(1);
    let s = ping(&mut ping_tx, &mut pong_rx, n, mode);
    t.join().unwrap();
    s
}

fn rtt_cross_process(n: u64, mode: Mode) -> Vec<u64> {
    let (pn, qn) = (ring_name("ping"), ring_name("pong"));
    let mut ping_tx = ShmProducer::<u64>::create(&pn, CAP).expect("create ping");
    let mut pong_rx = ShmConsumer::<u64>::create(&qn, CAP).expect("create pong");
    ping_tx.set_wait_strategy(wait_strategy(mode));
    pong_rx.set_wait_strategy(wait_strategy(mode));
    let mut child = spawn_child(
        "echo",
        &[
            ("PING", pn.clone()),
            ("PONG", qn.clone()),
            ("N", n.to_string()),
            ("MODE", format!("{mode:?}").to_lowercase()),
        ],
    );
    let _ = pin(1);
    let s = ping(&mut ping_tx, &mut pong_rx, n, mode);
    assert!(child.wait().expect("child").success());
    laminar_ring::shm::remove(&pn).expect("remove");
    laminar_ring::shm::remove(&qn).expect("remove");
    s
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn main() {
    if let Ok(role) = std::env::var("LAMINAR_BENCH_CHILD") {
        child(&role);
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if full { 7 } else { 1 });
    let (n_tp, n_rtt) = if full {
        (20_000_000, 200_000)
    } else {
        (100_000, 2_000)
    };
    println!(
        "laminar-ring shm bench: {rounds} rounds, {n_tp} u64 per throughput run, {n_rtt} round trips"
    );

    // [mode][in=0 / cross=1]
    let mut tp = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    let mut rtt50 = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    let mut rtt99 = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    // Busy-spin across processes on a ring whose policy has a lag bound
    // (every read checked against tail_seq before its release), beside the
    // same on a `Block` ring.
    let lag = Policy::Lag {
        bound: Some(CAP as u64),
        grace: Duration::from_secs(3600),
    };
    let (mut tp_lag, mut tp_block1) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for (m, mode) in [Mode::Spin, Mode::Block].into_iter().enumerate() {
            // Alternate which side goes first, so neither always gets the
            // same phase of the machine's core placement.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let ns = if side == 0 {
                    throughput_in_process(n_tp, mode)
                } else {
                    throughput_cross_process(n_tp, mode, Policy::Block)
                };
                tp[m][side].push(ns);
                if side == 1 && mode == Mode::Spin {
                    tp_block1.push(one_thread(n_tp, Policy::Block));
                    tp_lag.push(one_thread(n_tp, lag));
                }
                let s = if side == 0 {
                    rtt_in_process(n_rtt, mode)
                } else {
                    rtt_cross_process(n_rtt, mode)
                };
                rtt50[m][side].push(pct(&s, 0.50) as f64);
                rtt99[m][side].push(pct(&s, 0.99) as f64);
            }
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }
    println!();
    println!("| mode | metric | in-process (threads) | cross-process | cross / in |");
    println!("|---|---|---:|---:|---:|");
    for (m, name) in ["busy-spin", "futex-blocking"].into_iter().enumerate() {
        let (a, b) = (median(&mut tp[m][0]), median(&mut tp[m][1]));
        println!(
            "| {name} | throughput, M items/s | {:.1} | {:.1} | {:.2}x |",
            1e3 / a,
            1e3 / b,
            a / b
        );
        let (a, b) = (median(&mut rtt50[m][0]), median(&mut rtt50[m][1]));
        println!(
            "| {name} | round trip p50, ns | {a:.0} | {b:.0} | {:.2}x |",
            b / a
        );
        let (a, b) = (median(&mut rtt99[m][0]), median(&mut rtt99[m][1]));
        println!(
            "| {name} | round trip p99, ns | {a:.0} | {b:.0} | {:.2}x |",
            b / a
        );
    }
    let (a, b) = (median(&mut tp_block1), median(&mut tp_lag));
    println!();
    println!("| one thread, shared ring, push 64 then pop 64 | ns per item |");
    println!("|---|---:|");
    println!("| policy block | {a:.2} |");
    println!("| policy lag with a bound (each pop checked) | {b:.2} |");
    println!("| lag / block | {:.2}x |", b / a);
    println!();
    println!("(medians over rounds; throughput ratio is cross-process / in-process rate)");
}
