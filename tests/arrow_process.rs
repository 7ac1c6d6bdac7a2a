//! Arrow batches between real processes: a gigabyte through a small arena
//! (copy and zero-copy receive), and a producer killed mid-stream.
#![cfg(feature = "arrow")]

mod common;

use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use common::process::helper_command;
use laminar_ring::arrow::{ArrowRingError, ArrowRingOptions, BatchConsumer, BatchProducer};

const WORDS: [&str; 8] = [
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
];

/// Batch `i` of a stream: every value derives from (i, row).
fn batch(i: u64, rows: usize) -> RecordBatch {
    let base = i as i64 * rows as i64;
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(
        (0..rows as i64).map(|j| base + j),
    ));
    let px: ArrayRef = Arc::new(Float64Array::from_iter_values(
        (0..rows).map(|j| (base + j as i64) as f64 * 0.5),
    ));
    let tag: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..rows).map(|j| WORDS[(i as usize + j) % 8]),
    ));
    RecordBatch::try_from_iter([("id", ids), ("px", px), ("tag", tag)]).unwrap()
}

fn ring_opts() -> ArrowRingOptions {
    ArrowRingOptions {
        slots: 256,
        arena_bytes: 16 << 20,
        max_leases: 8,
        ..ArrowRingOptions::default()
    }
}

struct Ring(String);
impl Ring {
    fn new(test: &str) -> Self {
        let name = format!("lr-arrowp-{}-{test}", std::process::id());
        let _ = laminar_ring::shm::remove(&name);
        Self(name)
    }
}
impl Drop for Ring {
    fn drop(&mut self) {
        let _ = laminar_ring::shm::remove(&self.0);
    }
}

fn spawn_helper(ring: &str, batches: u64, rows: usize) -> Child {
    spawn_producer("arrow-producer", ring, batches, rows)
}

/// A producer process in `role`: `arrow-producer` sends each batch by copy,
/// `arrow-loan-producer` builds it in the arena (`BatchProducer::loan`).
fn spawn_producer(role: &str, ring: &str, batches: u64, rows: usize) -> Child {
    helper_command(role, ring)
        .env("BATCHES", batches.to_string())
        .env("ROWS", rows.to_string())
        .spawn()
        .unwrap()
}

/// Batch `i` of a stream whose dictionary changes every fourth batch.
fn dict_batch(i: u64) -> RecordBatch {
    use arrow_array::builder::StringDictionaryBuilder;
    use arrow_array::types::Int32Type;
    let mut d = StringDictionaryBuilder::<Int32Type>::new();
    for j in 0..64 {
        d.append_value(WORDS[((i / 4) as usize + j % 3) % 8]);
    }
    let n: ArrayRef = Arc::new(Int64Array::from_iter_values(
        (0..64).map(|j| i as i64 * 64 + j),
    ));
    RecordBatch::try_from_iter([("d", Arc::new(d.finish()) as ArrayRef), ("n", n)]).unwrap()
}

/// Receives dict batches with zero-copy leases, writing each index to OUT
/// before dropping its lease (so it is released only once recorded).
fn arrow_consumer(ring: &str) {
    use std::io::Write;
    let mut out = std::fs::File::create(std::env::var("OUT").unwrap()).unwrap();
    let mut rx = BatchConsumer::open(ring, &ring_opts()).expect("open consumer");
    let mut expected: Option<u64> = None;
    while let Some(leased) = rx.recv_zero_copy().expect("recv") {
        let n = leased
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0) as u64
            / 64;
        if let Some(e) = expected {
            assert_eq!(n, e, "consecutive within a session");
        }
        assert_eq!(&*leased, &dict_batch(n), "batch {n} decodes right");
        out.write_all(&n.to_le_bytes()).unwrap();
        expected = Some(n + 1);
        drop(leased);
    }
    std::process::exit(0);
}

#[test]
fn helper() {
    match std::env::var("LAMINAR_HELPER").as_deref() {
        Ok("arrow-producer" | "arrow-loan-producer") => {}
        Ok("arrow-consumer") => arrow_consumer(&std::env::var("LAMINAR_RING").unwrap()),
        Ok("arrow-session") => arrow_session(&std::env::var("LAMINAR_RING").unwrap()),
        _ => return, // an ordinary test run: nothing to do
    }
    let ring = std::env::var("LAMINAR_RING").unwrap();
    let batches: u64 = std::env::var("BATCHES").unwrap().parse().unwrap();
    let rows: usize = std::env::var("ROWS").unwrap().parse().unwrap();
    let loan = std::env::var("LAMINAR_HELPER").as_deref() == Ok("arrow-loan-producer");
    let mut tx = BatchProducer::open(&ring, &ring_opts()).expect("open producer");
    if loan {
        tx.set_schema(batch(0, 0).schema()).expect("schema");
    }
    for i in 0..batches {
        if loan {
            loan_batch(&mut tx, i, rows);
        } else {
            tx.send(&batch(i, rows)).expect("send");
        }
    }
    tx.close().expect("close");
    std::process::exit(0);
}

/// Builds `batch(i, rows)` in the arena and sends it: the values are
/// written where the consumer reads them.
fn loan_batch(tx: &mut BatchProducer, i: u64, rows: usize) {
    let longest = WORDS.iter().map(|w| w.len()).max().unwrap();
    let mut loan = tx.loan(rows, &[rows * longest]).expect("loan");
    let base = i as i64 * rows as i64;
    let ids = loan.values_mut::<Int64Type>(0).expect("ids");
    for (j, v) in ids.iter_mut().enumerate() {
        *v = base + j as i64;
    }
    let px = loan.values_mut::<Float64Type>(1).expect("px");
    for (j, v) in px.iter_mut().enumerate() {
        *v = (base + j as i64) as f64 * 0.5;
    }
    loan.fill_bytes(2, (0..rows).map(|j| WORDS[(i as usize + j) % 8]))
        .expect("tags");
    loan.commit().expect("commit");
}

/// Receives until the end of the stream, checking every batch; returns
/// (batches, bytes of Arrow data).
fn receive_all(rx: &mut BatchConsumer, rows: usize, zero_copy: bool) -> (u64, u64) {
    let map = rx.mapped_range();
    let (mut i, mut bytes) = (0_u64, 0_u64);
    loop {
        let got = if zero_copy {
            rx.recv_zero_copy().unwrap().map(|leased| {
                let ids = leased.column(0).to_data();
                let p = ids.buffers()[0].as_ptr() as usize;
                assert!(
                    map.contains(&p),
                    "batch {i}: zero-copy buffer outside the mapping"
                );
                leased.into_inner()
            })
        } else {
            rx.recv().unwrap()
        };
        let Some(b) = got else { break };
        assert_eq!(b, batch(i, rows), "batch {i} differs");
        bytes += b
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().unwrap() as u64)
            .sum::<u64>();
        i += 1;
    }
    (i, bytes)
}

#[test]
fn a_gigabyte_of_batches_through_a_16_mib_arena_copy_and_zero_copy() {
    let rows = 65_536;
    // ~1.3 MiB of Arrow data per batch: 800 batches is over 1 GiB.
    let batches = if cfg!(debug_assertions) { 40 } else { 800 };
    for zero_copy in [false, true] {
        let ring = Ring::new(if zero_copy { "gib-zc" } else { "gib-copy" });
        let mut rx = BatchConsumer::create(&ring.0, &ring_opts()).unwrap();
        let mut child = spawn_helper(&ring.0, batches, rows);
        let start = Instant::now();
        let (n, bytes) = receive_all(&mut rx, rows, zero_copy);
        let secs = start.elapsed().as_secs_f64();
        assert!(child.wait().unwrap().success());
        assert_eq!(n, batches);
        if !cfg!(debug_assertions) {
            assert!(bytes >= 1 << 30, "only {bytes} bytes moved");
        }
        eprintln!(
            "{} path: {n} batches, {:.2} GiB checked in {secs:.2} s",
            if zero_copy { "zero-copy" } else { "copy" },
            bytes as f64 / (1u64 << 30) as f64
        );
    }
}

#[test]
fn batches_built_in_the_arena_arrive_whole_copy_and_zero_copy() {
    let rows = 65_536;
    let batches = if cfg!(debug_assertions) { 20 } else { 300 };
    for zero_copy in [false, true] {
        let ring = Ring::new(if zero_copy { "loan-zc" } else { "loan-copy" });
        let mut rx = BatchConsumer::create(&ring.0, &ring_opts()).unwrap();
        let mut child = spawn_producer("arrow-loan-producer", &ring.0, batches, rows);
        let (n, _) = receive_all(&mut rx, rows, zero_copy);
        assert!(child.wait().unwrap().success());
        assert_eq!(n, batches);
    }
}

#[test]
fn a_killed_producer_leaves_only_whole_batches() {
    let rows = 4096;
    let trials = [
        ("arrow-producer", false),
        ("arrow-producer", true),
        ("arrow-producer", false),
        ("arrow-producer", true),
        // Killed while it builds a batch in the arena, most likely: a loan
        // not committed is never seen.
        ("arrow-loan-producer", false),
        ("arrow-loan-producer", true),
        ("arrow-loan-producer", false),
        ("arrow-loan-producer", true),
    ];
    for (trial, (role, zero_copy)) in trials.into_iter().enumerate() {
        let ring = Ring::new(&format!("kill{trial}"));
        let mut rx = BatchConsumer::create(&ring.0, &ring_opts()).unwrap();
        #[allow(clippy::zombie_processes)] // killed and reaped inside the loop, before PeerGone
        let mut child = spawn_producer(role, &ring.0, u64::MAX, rows);
        let kill_at = Instant::now() + Duration::from_millis(30 + 20 * (trial % 4) as u64);
        let mut i = 0_u64;
        let mut killed = false;
        loop {
            if !killed && Instant::now() >= kill_at {
                child.kill().unwrap();
                child.wait().unwrap();
                killed = true;
            }
            let got = if zero_copy {
                rx.recv_zero_copy_timeout(Duration::from_secs(10))
                    .map(|b| b.map(|b| b.into_inner()))
            } else {
                rx.recv_timeout(Duration::from_secs(10))
            };
            match got {
                Ok(Some(b)) => {
                    assert_eq!(b, batch(i, rows), "trial {trial}: batch {i}");
                    i += 1;
                }
                Err(ArrowRingError::PeerGone) => {
                    assert!(killed, "PeerGone before the kill");
                    break;
                }
                other => panic!("trial {trial}: after {i} batches: {other:?}"),
            }
        }
        assert!(
            i > 0,
            "trial {trial}: nothing was committed before the kill"
        );
        eprintln!("trial {trial} ({role}): {i} whole batches, then PeerGone");
    }
}

#[test]
fn killed_consumers_resume_at_least_once_with_their_dictionaries() {
    let ring = Ring::new("ckill");
    let dir = std::env::temp_dir().join(format!("{}.sessions", ring.0));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let total: u64 = 12_000;
    let opts = ArrowRingOptions {
        slots: 64,
        arena_bytes: 1 << 20,
        ..ring_opts()
    };
    let mut tx = BatchProducer::create(&ring.0, &opts).unwrap();
    // The producer runs in this process; it retries while no consumer is
    // there. It closes only once the last consumer is attached: a consumer
    // reports the end of a session it was reading, and one that attached to
    // a closed and drained ring would wait for the next producer instead.
    let (last_attached, wait_last) = std::sync::mpsc::channel::<()>();
    let producer = std::thread::spawn(move || {
        for i in 0..total {
            let b = dict_batch(i);
            loop {
                match tx.send_timeout(&b, Duration::from_millis(50)) {
                    Ok(()) => break,
                    Err(ArrowRingError::ConsumerGone | ArrowRingError::Timeout) => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("send {i}: {e}"),
                }
            }
        }
        while !matches!(tx.flush(Duration::from_millis(50)), Ok(true)) {}
        wait_last.recv().unwrap();
        tx.close().unwrap();
    });
    let mut rng = common::Rng::from_env_or_time();
    for session in 0..10 {
        let out = dir.join(format!("{session:02}"));
        let mut c = helper_command("arrow-consumer", &ring.0)
            .env("OUT", &out)
            .spawn()
            .unwrap();
        // A random moment to kill the consumer at: a sleep on purpose.
        std::thread::sleep(Duration::from_millis(5 + rng.below(25)));
        c.kill().unwrap();
        c.wait().unwrap();
    }
    // The last consumer, in this process, takes the rest.
    let mut rx = BatchConsumer::open(&ring.0, &opts).unwrap();
    last_attached.send(()).unwrap();
    let mut last = Vec::new();
    while let Some(b) = rx.recv().unwrap() {
        let n = b
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0) as u64
            / 64;
        assert_eq!(b, dict_batch(n));
        last.push(n);
    }
    producer.join().unwrap();
    // Every index arrives; sessions are consecutive; none starts past the
    // previous ones' progress (a replay is fine, a gap is a loss).
    let mut next_new = 0;
    let mut sessions: Vec<Vec<u64>> = (0..10)
        .map(|s| {
            std::fs::read(dir.join(format!("{s:02}")))
                .unwrap_or_default()
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                .collect()
        })
        .collect();
    sessions.push(last);
    for (s, got) in sessions.iter().enumerate() {
        if let Some(&first) = got.first() {
            assert!(
                first <= next_new,
                "session {s} starts at {first}, after {next_new}: lost"
            );
        }
        for w in got.windows(2) {
            assert_eq!(w[1], w[0] + 1, "session {s}: gap");
        }
        if let Some(&l) = got.last() {
            next_new = next_new.max(l + 1);
        }
    }
    assert_eq!(next_new, total);
    let lens: Vec<usize> = sessions.iter().map(Vec::len).collect();
    eprintln!("batches per consumer session (last = after 10 kills): {lens:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends batches START..START+BATCHES of ROWS rows, then ends its session
/// as END says: `close`, `fail` (with REASON), or `hang` (waits to be
/// killed, having published everything).
fn arrow_session(ring: &str) {
    let var = |k: &str| std::env::var(k).unwrap();
    let start: u64 = var("START").parse().unwrap();
    let batches: u64 = var("BATCHES").parse().unwrap();
    let rows: usize = var("ROWS").parse().unwrap();
    let mut tx = BatchProducer::open(ring, &ring_opts()).expect("open producer");
    for i in start..start + batches {
        tx.send(&batch(i, rows)).expect("send");
    }
    match var("END").as_str() {
        "close" => tx.close().expect("close"),
        "fail" => tx.fail(&var("REASON")),
        "hang" => loop {
            std::thread::sleep(Duration::from_millis(50));
        },
        other => panic!("unknown END {other}"),
    }
    std::process::exit(0);
}

const A_REASON: &str = "bad row 3 in the input";

/// One producer session in a helper process, `end` being `close`, `fail`
/// or `kill`; returns once the helper has exited (killed, for `kill`, once
/// its schema and batches are all published).
fn run_arrow_session(ring: &str, start: u64, batches: u64, end: &str) {
    let before = laminar_ring::shm::inspect(ring, &Default::default())
        .unwrap()
        .write_seq;
    let mut child = helper_command("arrow-session", ring)
        .env("START", start.to_string())
        .env("BATCHES", batches.to_string())
        .env("ROWS", "100")
        .env("END", if end == "kill" { "hang" } else { end })
        .env("REASON", A_REASON)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    if end == "kill" {
        // The schema message and the batches.
        let target = before + 1 + batches;
        while laminar_ring::shm::inspect(ring, &Default::default())
            .unwrap()
            .write_seq
            < target
        {
            assert!(Instant::now() < deadline, "the helper never sent it all");
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap();
    }
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            if end != "kill" {
                assert!(status.success(), "helper: {status}");
            }
            return;
        }
        assert!(Instant::now() < deadline, "the helper never finished");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Producer A sends 5 batches and ends (closes, fails, or is killed)
/// before the consumer reads anything; producer B attaches, sends 3 and
/// closes. The consumer (copy and zero-copy receive) gets A's batches,
/// every value checked, then A's own end, then B's batches, then B's end.
#[test]
fn an_arrow_session_end_is_reported_even_when_the_next_producer_attached_before_the_consumer_got_there()
 {
    for zero_copy in [false, true] {
        for end in ["close", "fail", "kill"] {
            let ring = Ring::new(&format!("overlap-{end}-{zero_copy}"));
            let mut rx = BatchConsumer::create(&ring.0, &ring_opts()).unwrap();
            run_arrow_session(&ring.0, 0, 5, end);
            run_arrow_session(&ring.0, 100, 3, "close");
            let what = format!("{end}, zero-copy {zero_copy}");
            let recv = |rx: &mut BatchConsumer| {
                let t = Duration::from_secs(20);
                if zero_copy {
                    rx.recv_zero_copy_timeout(t)
                        .map(|b| b.map(|leased| (*leased).clone()))
                } else {
                    rx.recv_timeout(t)
                }
            };
            for i in 0..5 {
                let got = recv(&mut rx).unwrap().expect("a batch of A");
                assert_eq!(got, batch(i, 100), "{what}: A's batch {i}");
            }
            match (end, recv(&mut rx)) {
                ("close", Ok(None)) | ("kill", Err(ArrowRingError::PeerGone)) => {}
                ("fail", Err(ArrowRingError::ProducerFailed { reason })) => {
                    assert_eq!(reason, A_REASON, "{what}");
                }
                (_, other) => panic!("{what}: expected A's end, got {other:?}"),
            }
            for i in 100..103 {
                let got = recv(&mut rx).unwrap().expect("a batch of B");
                assert_eq!(got, batch(i, 100), "{what}: B's batch {i}");
            }
            assert!(recv(&mut rx).unwrap().is_none(), "{what}: B's end");
        }
    }
}
