//! Arrow batches between two processes: the shared ring (copy and zero-copy
//! receive; a batch sent by copy, or built in the arena by a loan) against
//! Arrow IPC over a Unix domain socket (arrow-ipc StreamWriter/StreamReader),
//! with memcpy bandwidth as the floor, in interleaved rounds; medians and
//! ratios.
//!
//! The sends: `send` of one batch built once (what the harness measures),
//! `build + send` of a batch built for each send (a producer whose data is
//! new each time, as a real one's is), and `loan` (`BatchProducer::loan`),
//! which builds each batch's values where the consumer reads them.
//!
//! ```text
//! cargo bench --bench arrow                 # 5 rounds
//! cargo bench --bench arrow -- --rounds 9
//! ```
//!
//! Without `--bench` (as under `cargo test --benches`) one tiny round runs as
//! a smoke test. Children are this binary re-executed with
//! `LAMINAR_BENCH_CHILD` set.

use std::io::{BufReader, BufWriter};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use laminar_ring::arrow::{ArrowRingOptions, BatchConsumer, BatchProducer};

#[path = "support/runs.rs"]
mod runs;
use runs::{median, spawn_child};

const TAGS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

fn batch(rows: usize) -> RecordBatch {
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows as i64));
    let px: ArrayRef = Arc::new(Float64Array::from_iter_values(
        (0..rows).map(|j| j as f64 * 0.25),
    ));
    let tag: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..rows).map(|j| TAGS[j % 4]),
    ));
    RecordBatch::try_from_iter([("id", ids), ("px", px), ("tag", tag)]).unwrap()
}

fn data_bytes(b: &RecordBatch) -> u64 {
    b.columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap() as u64)
        .sum()
}

fn ring_opts() -> ArrowRingOptions {
    ArrowRingOptions {
        slots: 1024,
        arena_bytes: 64 << 20,
        max_leases: 16,
        ..ArrowRingOptions::default()
    }
}

fn child(role: &str) {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}"));
    let (rows, n): (usize, u64) = (var("ROWS").parse().unwrap(), var("N").parse().unwrap());
    let b = batch(rows);
    match role {
        "ring" => {
            let mut tx = BatchProducer::open(&var("RING"), &ring_opts()).unwrap();
            for _ in 0..n {
                tx.send(&b).unwrap();
            }
            tx.close().unwrap();
        }
        "ring-build" => {
            let mut tx = BatchProducer::open(&var("RING"), &ring_opts()).unwrap();
            for _ in 0..n {
                tx.send(&batch(rows)).unwrap();
            }
            tx.close().unwrap();
        }
        "ring-loan" => {
            let mut tx = BatchProducer::open(&var("RING"), &ring_opts()).unwrap();
            tx.set_schema(b.schema()).unwrap();
            let text: usize = (0..rows).map(|j| TAGS[j % 4].len()).sum();
            for _ in 0..n {
                let mut loan = tx.loan(rows, &[text]).unwrap();
                for (j, v) in loan
                    .values_mut::<Int64Type>(0)
                    .unwrap()
                    .iter_mut()
                    .enumerate()
                {
                    *v = j as i64;
                }
                let px = loan.values_mut::<Float64Type>(1).unwrap();
                for (j, v) in px.iter_mut().enumerate() {
                    *v = j as f64 * 0.25;
                }
                loan.fill_bytes(2, (0..rows).map(|j| TAGS[j % 4])).unwrap();
                loan.commit().unwrap();
            }
            tx.close().unwrap();
        }
        "uds" => {
            let stream = UnixStream::connect(var("SOCK")).unwrap();
            let mut w =
                StreamWriter::try_new(BufWriter::with_capacity(1 << 20, stream), &b.schema())
                    .unwrap();
            for _ in 0..n {
                w.write(&b).unwrap();
            }
            w.finish().unwrap();
        }
        other => panic!("unknown child {other}"),
    }
}

/// Seconds from the first batch received to the last; checks the first
/// batch and every row count.
fn ring_run(rows: usize, n: u64, zero_copy: bool, send: &str) -> f64 {
    let name = format!("lr-bench-arrow-{}", std::process::id());
    let _ = laminar_ring::shm::remove(&name);
    let mut rx = BatchConsumer::create(&name, &ring_opts()).unwrap();
    let mut c = spawn_child(
        send,
        &[
            ("RING", name.clone()),
            ("ROWS", rows.to_string()),
            ("N", n.to_string()),
        ],
    );
    let expected = batch(rows);
    let mut got = 0;
    let mut start = Instant::now();
    loop {
        let rows_here = if zero_copy {
            match rx.recv_zero_copy().unwrap() {
                Some(b) => {
                    if got == 0 {
                        assert_eq!(&*b, &expected);
                    }
                    b.num_rows()
                }
                None => break,
            }
        } else {
            match rx.recv().unwrap() {
                Some(b) => {
                    if got == 0 {
                        assert_eq!(b, expected);
                    }
                    b.num_rows()
                }
                None => break,
            }
        };
        assert_eq!(rows_here, rows);
        if got == 0 {
            start = Instant::now();
        }
        got += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(c.wait().unwrap().success());
    assert_eq!(got, n);
    laminar_ring::shm::remove(&name).unwrap();
    secs * n as f64 / (n - 1) as f64
}

fn uds_run(rows: usize, n: u64) -> f64 {
    let path = std::env::temp_dir().join(format!("lr-bench-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let mut c = spawn_child(
        "uds",
        &[
            ("SOCK", path.display().to_string()),
            ("ROWS", rows.to_string()),
            ("N", n.to_string()),
        ],
    );
    let (stream, _) = listener.accept().unwrap();
    let reader = StreamReader::try_new(BufReader::with_capacity(1 << 20, stream), None).unwrap();
    let expected = batch(rows);
    let mut got = 0;
    let mut start = Instant::now();
    for b in reader {
        let b = b.unwrap();
        if got == 0 {
            assert_eq!(b, expected);
            start = Instant::now();
        }
        assert_eq!(b.num_rows(), rows);
        got += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(c.wait().unwrap().success());
    assert_eq!(got, n);
    let _ = std::fs::remove_file(&path);
    secs * n as f64 / (n - 1) as f64
}

/// memcpy of `bytes` per batch, n times, between two large buffers (so the
/// copies miss the cache like the ring's do).
fn memcpy_run(bytes: usize, n: u64) -> f64 {
    let span = (bytes * 64).max(256 << 20);
    let src = vec![1_u8; span];
    let mut dst = vec![0_u8; span];
    let start = Instant::now();
    let mut at = 0;
    for _ in 0..n {
        if at + bytes > span {
            at = 0;
        }
        dst[at..at + bytes].copy_from_slice(&src[at..at + bytes]);
        at += bytes;
    }
    std::hint::black_box(&dst);
    start.elapsed().as_secs_f64()
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
        .unwrap_or(if full { 5 } else { 1 });
    println!("laminar-ring arrow bench: {rounds} rounds; schema Int64, Float64, Utf8");
    println!();
    println!("| rows/batch | path | GB/s | batches/s | vs Unix socket | vs memcpy |");
    println!("|---:|---|---:|---:|---:|---:|");
    for rows in [1024_usize, 65_536] {
        let bytes = data_bytes(&batch(rows));
        let n: u64 = if !full {
            20
        } else if rows == 1024 {
            20_000
        } else {
            400
        };
        const PATHS: [&str; 6] = [
            "ring, send, zero-copy recv",
            "ring, send, copy recv",
            "ring, build + send, zero-copy recv",
            "ring, loan, zero-copy recv",
            "Unix socket (arrow-ipc)",
            "memcpy",
        ];
        const SOCKET: usize = 4;
        const MEMCPY: usize = 5;
        let mut t: Vec<Vec<f64>> = vec![Vec::new(); PATHS.len()];
        for r in 0..rounds {
            let mut order: Vec<usize> = (0..PATHS.len()).collect();
            if r % 2 == 1 {
                order.reverse();
            }
            for k in order {
                let secs = match k {
                    0 => ring_run(rows, n, true, "ring"),
                    1 => ring_run(rows, n, false, "ring"),
                    2 => ring_run(rows, n, true, "ring-build"),
                    3 => ring_run(rows, n, true, "ring-loan"),
                    SOCKET => uds_run(rows, n),
                    _ => memcpy_run(bytes as usize, n),
                };
                t[k].push(secs);
            }
        }
        let secs: Vec<f64> = t.iter_mut().map(|v| median(v)).collect();
        let gbps = |s: f64| bytes as f64 * n as f64 / s / 1e9;
        for (k, name) in PATHS.into_iter().enumerate() {
            println!(
                "| {rows} | {name} | {:.2} | {:.0} | {:.2}x | {:.2}x |",
                gbps(secs[k]),
                n as f64 / secs[k],
                secs[SOCKET] / secs[k],
                secs[MEMCPY] / secs[k],
            );
        }
    }
    println!();
    println!(
        "(medians over rounds; GB/s of Arrow array data; ratios are speed relative to the Unix socket and to memcpy)"
    );
}
