//! `bench` and `demo`: a producer process and a consumer process (this
//! binary re-executed as the hidden `__worker` subcommand) exchange the same
//! workload through a ring and, to compare, through a Unix domain socket.
//!
//! Each run has two phases. Throughput: the producer sends `messages`
//! messages as fast as it can; the clock runs from the producer's first send
//! to the consumer's receipt of the last one (CLOCK_MONOTONIC is one clock
//! for both processes). Latency: after the consumer has drained the first
//! phase, the producer sends `samples` small messages (one `u64`, or a
//! one-row batch) one at a time and waits for the consumer's acknowledgement
//! of each: a round trip, recorded in an HDR histogram.

use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use clap::ValueEnum;
use hdrhistogram::Histogram;
use laminar_ring::WaitStrategy;
use laminar_ring::arrow::{ArrowRingOptions, BatchConsumer, BatchProducer};
use laminar_ring::shm::{self, SegmentOptions, ShmConsumer, ShmProducer};
use serde_json::{Value, json};

use crate::Location;
use crate::failure::{Failure, fail};
use crate::pipe::data_bytes;
use crate::print::outln;
use crate::progress::Progress;
use crate::units::{fmt_bytes, fmt_count, fmt_ns, parse_count};

/// What one message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Payload {
    /// One `u64` per message, through a typed ring.
    U64,
    /// One Arrow batch per message (id Int64, x Float64, tag Utf8), through
    /// an Arrow ring.
    Arrow,
}

/// A peer to compare with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compare {
    /// A Unix domain socket between the same two processes: Arrow IPC
    /// (StreamWriter/StreamReader) for Arrow payloads, 8-byte values for u64.
    Uds,
}

/// How the ring's blocking calls wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Wait {
    /// Spin up to 50 µs, then sleep on a futex (the library's default).
    Park,
    /// Spin without sleeping: lowest latency, two busy cores.
    Spin,
}

impl Wait {
    fn strategy(self) -> WaitStrategy {
        match self {
            Self::Park => WaitStrategy::Park,
            Self::Spin => WaitStrategy::BusySpin,
        }
    }
}

/// How a worker talks to its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Ring,
    Uds,
}

/// Which end a worker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Side {
    Tx,
    Rx,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What one message is.
    #[arg(long, value_enum, default_value_t = Payload::Arrow)]
    pub payload: Payload,
    /// Messages in the throughput phase [default: 10,000,000 u64 values or
    /// 400 Arrow batches].
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub messages: Option<u64>,
    /// Rows per Arrow batch.
    #[arg(long, value_name = "N", default_value = "65536", value_parser = parse_count)]
    pub rows: u64,
    /// Round trips in the latency phase [default: 100,000 u64 values or
    /// 1,000 one-row batches].
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub samples: Option<u64>,
    /// Run the same workload through a Unix domain socket too, interleaved
    /// with the ring's runs, and print the ratios.
    #[arg(long, value_enum)]
    pub compare: Option<Compare>,
    /// How the ring's processes wait for each other (the socket always
    /// blocks in the kernel).
    #[arg(long, value_enum, default_value_t = Wait::Park)]
    pub wait: Wait,
    /// Arena of the Arrow ring (see `create --help`); a batch must fit in
    /// seven eighths of it.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = crate::units::parse_arena)]
    pub arena: u64,
    /// Runs of each transport; the figures are medians.
    #[arg(long, value_name = "N", default_value = "3", value_parser = parse_count)]
    pub rounds: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub location: Location,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Rows to move (at most 20,000,000: the producer builds them before the
    /// clock starts).
    #[arg(long, value_name = "N", default_value = "4000000", value_parser = parse_count)]
    pub rows: u64,
    /// Rows per batch.
    #[arg(long, value_name = "N", default_value = "65536", value_parser = parse_count)]
    pub batch_rows: u64,
    #[command(flatten)]
    pub location: Location,
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[arg(long, value_enum)]
    transport: Transport,
    #[arg(long, value_enum)]
    side: Side,
    #[arg(long, value_enum)]
    payload: Payload,
    #[arg(long)]
    messages: u64,
    #[arg(long)]
    rows: u64,
    #[arg(long)]
    total_rows: u64,
    #[arg(long)]
    distinct: u64,
    #[arg(long)]
    samples: u64,
    #[arg(long)]
    verify: bool,
    #[arg(long, value_enum)]
    wait: Wait,
    #[arg(long)]
    ring: Option<String>,
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    socket: Option<PathBuf>,
}

/// The workload both workers of a run agree on.
#[derive(Debug, Clone, Copy)]
struct Workload {
    payload: Payload,
    /// Messages in the throughput phase.
    messages: u64,
    /// Rows of a full batch.
    rows: u64,
    /// Distinct batches the producer builds; message `k` is batch
    /// `k % distinct`. Batch `d` holds rows `d * rows ..` up to
    /// `total_rows`.
    distinct: u64,
    total_rows: u64,
    /// Round trips in the latency phase.
    samples: u64,
    /// Check every row (else a batch's length and first and last id).
    verify: bool,
    wait: Wait,
    /// Arena bytes of the Arrow ring (the parent creates it).
    arena: u64,
}

impl Workload {
    fn from_worker(a: &WorkerArgs) -> Self {
        Self {
            payload: a.payload,
            messages: a.messages,
            rows: a.rows,
            distinct: a.distinct.max(1),
            total_rows: a.total_rows,
            samples: a.samples,
            verify: a.verify,
            wait: a.wait,
            arena: DEFAULT_ARENA,
        }
    }

    /// First row and length of batch `d`.
    fn batch_span(&self, d: u64) -> (u64, u64) {
        let base = d * self.rows;
        (base, self.rows.min(self.total_rows.saturating_sub(base)))
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    secs: f64,
    messages: u64,
    rows: u64,
    bytes: u64,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Figures {
    fn msgs_per_s(&self) -> f64 {
        self.messages as f64 / self.secs
    }
    fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.secs
    }
    fn gb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e9
    }
    fn json(&self) -> Value {
        json!({
            "seconds": self.secs,
            "messages": self.messages,
            "rows": self.rows,
            "bytes": self.bytes,
            "messages_per_s": self.msgs_per_s(),
            "rows_per_s": self.rows_per_s(),
            "gb_per_s": self.gb_per_s(),
            "rtt_ns": { "p50": self.p50, "p99": self.p99, "p99_9": self.p999, "max": self.max },
        })
    }
}

/// Per-field medians of several runs.
fn medians(runs: &[Figures]) -> Figures {
    fn med<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v[v.len() / 2]
    }
    let f = |g: fn(&Figures) -> u64| med(runs.iter().map(g).collect());
    Figures {
        // The median rate, as a duration for the same amount of data.
        secs: runs[0].bytes as f64 / med(runs.iter().map(|r| r.bytes as f64 / r.secs).collect()),
        messages: runs[0].messages,
        rows: runs[0].rows,
        bytes: runs[0].bytes,
        p50: f(|r| r.p50),
        p99: f(|r| r.p99),
        p999: f(|r| r.p999),
        max: f(|r| r.max),
    }
}

/// Arena of the Arrow ring (`open` takes the ring's own; this is for
/// `create`).
const DEFAULT_ARENA: u64 = 64 << 20;
const COLUMNS: &str = "id Int64, x Float64, tag Utf8";
const TAGS: [&str; 7] = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"];
/// Acknowledgement values on the way back.
const READY: u64 = u64::MAX;
const DRAINED: u64 = u64::MAX - 1;

fn arrow_batch(base: u64, len: u64) -> RecordBatch {
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(
        (base..base + len).map(|g| g as i64),
    ));
    let x: ArrayRef = Arc::new(Float64Array::from_iter_values(
        (base..base + len).map(|g| g as f64 * 0.25),
    ));
    let tag: ArrayRef = Arc::new(StringArray::from_iter_values(
        (base..base + len).map(|g| TAGS[(g % 7) as usize]),
    ));
    RecordBatch::try_from_iter([("id", ids), ("x", x), ("tag", tag)])
        .expect("three columns of equal length")
}

/// Checks message `k` of the throughput phase.
fn check_batch(w: &Workload, k: u64, b: &RecordBatch) -> Result<(), Failure> {
    let (base, len) = w.batch_span(k % w.distinct);
    let bad = |why: String| fail!("message {k}: {why}");
    if b.num_rows() as u64 != len || b.num_columns() != 3 {
        return Err(bad(format!(
            "{} rows and {} columns, expected {len} rows and 3 columns",
            b.num_rows(),
            b.num_columns()
        )));
    }
    let (Some(id), Some(x), Some(tag)) = (
        b.column(0).as_primitive_opt::<Int64Type>(),
        b.column(1).as_primitive_opt::<Float64Type>(),
        b.column(2).as_string_opt::<i32>(),
    ) else {
        return Err(bad(format!("unexpected column types: {}", b.schema())));
    };
    if w.verify {
        if b.columns().iter().any(|c| c.null_count() != 0) {
            return Err(bad("nulls where none were sent".into()));
        }
        for j in 0..len as usize {
            let g = base + j as u64;
            if id.value(j) != g as i64
                || x.value(j) != g as f64 * 0.25
                || tag.value(j) != TAGS[(g % 7) as usize]
            {
                return Err(bad(format!("row {g} differs from what was sent")));
            }
        }
    } else if len > 0
        && (id.value(0) != base as i64 || id.value(len as usize - 1) != (base + len - 1) as i64)
    {
        return Err(bad("ids differ from what was sent".into()));
    }
    Ok(())
}

fn now_ns() -> Result<u64, Failure> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_err(|e| fail!("clock_gettime: {e}"))?;
    Ok(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds")
}

fn record(h: &mut Histogram<u64>, since: Instant) {
    h.saturating_record(since.elapsed().as_nanos().max(1) as u64);
}

// ---------------------------------------------------------------- workers

fn ring_options(dir: &Path, arena: u64) -> ArrowRingOptions {
    ArrowRingOptions {
        slots: 1024,
        arena_bytes: arena,
        segment: seg_options(dir),
        max_leases: 16,
    }
}

fn seg_options(dir: &Path) -> SegmentOptions {
    SegmentOptions {
        dir: dir.to_owned(),
        ..SegmentOptions::default()
    }
}

fn ack_name(ring: &str) -> String {
    format!("{ring}-ack")
}

pub fn worker(a: &WorkerArgs) -> Result<(), Failure> {
    let w = Workload::from_worker(a);
    let out = match (a.transport, a.side) {
        (Transport::Ring, side) => {
            let ring = a.ring.as_deref().ok_or_else(|| fail!("--ring missing"))?;
            match side {
                Side::Tx => ring_tx(&w, ring, &a.dir)?,
                Side::Rx => ring_rx(&w, ring, &a.dir)?,
            }
        }
        (Transport::Uds, side) => {
            let sock = a
                .socket
                .as_deref()
                .ok_or_else(|| fail!("--socket missing"))?;
            match side {
                Side::Tx => uds_tx(&w, sock)?,
                Side::Rx => uds_rx(&w, sock)?,
            }
        }
    };
    outln!("{out}");
    Ok(())
}

fn tx_report(start_ns: u64, h: &Histogram<u64>) -> Value {
    json!({
        "start_ns": start_ns,
        "p50": h.value_at_quantile(0.5),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

fn rx_report(end_ns: u64, messages: u64, rows: u64, bytes: u64) -> Value {
    json!({ "end_ns": end_ns, "messages": messages, "rows": rows, "bytes": bytes })
}

fn make_batches(w: &Workload) -> Vec<RecordBatch> {
    (0..w.distinct)
        .map(|d| {
            let (base, len) = w.batch_span(d);
            arrow_batch(base, len)
        })
        .collect()
}

fn ring_tx(w: &Workload, ring: &str, dir: &Path) -> Result<Value, Failure> {
    let e = |e: &dyn std::fmt::Display| fail!("bench producer: {e}");
    let batches = match w.payload {
        Payload::Arrow => make_batches(w),
        Payload::U64 => Vec::new(),
    };
    let mut ack =
        ShmConsumer::<u64>::open_with(&ack_name(ring), &seg_options(dir)).map_err(|x| e(&x))?;
    ack.set_wait_strategy(w.wait.strategy());
    let mut h = histogram();
    let mut wait_ack = |want: Option<u64>| -> Result<(), Failure> {
        let v = ack.pop().map_err(|x| e(&x))?;
        match want {
            Some(want) if v != want => Err(e(&format!("acknowledgement {v}, expected {want}"))),
            _ => Ok(()),
        }
    };
    let start;
    match w.payload {
        Payload::Arrow => {
            let mut tx =
                BatchProducer::open(ring, &ring_options(dir, DEFAULT_ARENA)).map_err(|x| e(&x))?;
            tx.set_wait_strategy(w.wait.strategy());
            wait_ack(Some(READY))?;
            start = now_ns()?;
            for k in 0..w.messages {
                tx.send(&batches[(k % w.distinct) as usize])
                    .map_err(|x| e(&x))?;
            }
            wait_ack(Some(DRAINED))?;
            let one = batches[0].slice(0, 1);
            for i in 0..w.samples {
                let t0 = Instant::now();
                tx.send(&one).map_err(|x| e(&x))?;
                wait_ack(Some(i))?;
                record(&mut h, t0);
            }
            tx.close().map_err(|x| e(&x))?;
        }
        Payload::U64 => {
            let mut tx =
                ShmProducer::<u64>::open_with(ring, &seg_options(dir)).map_err(|x| e(&x))?;
            tx.set_wait_strategy(w.wait.strategy());
            wait_ack(Some(READY))?;
            start = now_ns()?;
            let mut buf = vec![0_u64; 4096];
            let mut k = 0;
            while k < w.messages {
                let n = (w.messages - k).min(buf.len() as u64) as usize;
                for (i, v) in buf[..n].iter_mut().enumerate() {
                    *v = k + i as u64;
                }
                let mut off = 0;
                while off < n {
                    match tx.push_slice(&buf[off..n]) {
                        // Full: wait for room with the ring's own strategy.
                        0 => {
                            tx.push(buf[off]).map_err(|x| e(&x))?;
                            off += 1;
                        }
                        p => off += p,
                    }
                }
                k += n as u64;
            }
            wait_ack(Some(DRAINED))?;
            for i in 0..w.samples {
                let t0 = Instant::now();
                tx.push(i).map_err(|x| e(&x))?;
                wait_ack(Some(i))?;
                record(&mut h, t0);
            }
            tx.close();
        }
    }
    Ok(tx_report(start, &h))
}

fn ring_rx(w: &Workload, ring: &str, dir: &Path) -> Result<Value, Failure> {
    let e = |e: &dyn std::fmt::Display| fail!("bench consumer: {e}");
    let mut ack =
        ShmProducer::<u64>::open_with(&ack_name(ring), &seg_options(dir)).map_err(|x| e(&x))?;
    ack.set_wait_strategy(w.wait.strategy());
    let (mut rows, mut bytes) = (0, 0);
    let end;
    match w.payload {
        Payload::Arrow => {
            let mut rx =
                BatchConsumer::open(ring, &ring_options(dir, DEFAULT_ARENA)).map_err(|x| e(&x))?;
            rx.set_wait_strategy(w.wait.strategy());
            ack.push(READY).map_err(|x| e(&x))?;
            for k in 0..w.messages {
                let b = rx
                    .recv_zero_copy()
                    .map_err(|x| e(&x))?
                    .ok_or_else(|| e(&format!("the stream ended after {k} messages")))?;
                check_batch(w, k, &b)?;
                rows += b.num_rows() as u64;
                bytes += data_bytes(&b);
            }
            end = now_ns()?;
            ack.push(DRAINED).map_err(|x| e(&x))?;
            for i in 0..w.samples {
                let b = rx.recv_zero_copy().map_err(|x| e(&x))?;
                if b.as_ref().map(|b| b.num_rows()) != Some(1) {
                    return Err(e(&format!("round trip {i}: no one-row batch")));
                }
                drop(b);
                ack.push(i).map_err(|x| e(&x))?;
            }
            if rx.recv().map_err(|x| e(&x))?.is_some() {
                return Err(e(&"a batch after the last one expected"));
            }
        }
        Payload::U64 => {
            let mut rx =
                ShmConsumer::<u64>::open_with(ring, &seg_options(dir)).map_err(|x| e(&x))?;
            rx.set_wait_strategy(w.wait.strategy());
            ack.push(READY).map_err(|x| e(&x))?;
            let mut buf = vec![0_u64; 4096];
            let mut k = 0;
            while k < w.messages {
                let want = (w.messages - k).min(buf.len() as u64) as usize;
                let n = rx.pop_slice(&mut buf[..want]);
                let got: &[u64] = if n == 0 {
                    // Empty: wait with the ring's own strategy.
                    buf[0] = rx.pop().map_err(|x| e(&x))?;
                    &buf[..1]
                } else {
                    &buf[..n]
                };
                check_sequence(got.iter().copied(), &mut k).map_err(|x| e(&x))?;
            }
            end = now_ns()?;
            rows = w.messages;
            bytes = 8 * w.messages;
            ack.push(DRAINED).map_err(|x| e(&x))?;
            for i in 0..w.samples {
                let v = rx.pop().map_err(|x| e(&x))?;
                if v != i {
                    return Err(e(&format!("round trip {i}: got {v}")));
                }
                ack.push(i).map_err(|x| e(&x))?;
            }
            match rx.pop() {
                Err(laminar_ring::shm::ShmPopError::EndOfStream) => {}
                other => return Err(e(&format!("expected the end of the stream, got {other:?}"))),
            }
        }
    }
    Ok(rx_report(end, w.messages, rows, bytes))
}

/// Checks that `values` continue the sequence at `*next`, advancing it.
fn check_sequence(values: impl Iterator<Item = u64>, next: &mut u64) -> Result<(), String> {
    for v in values {
        if v != *next {
            return Err(format!("item {next} is {v}"));
        }
        *next += 1;
    }
    Ok(())
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0_u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn uds_tx(w: &Workload, sock: &Path) -> Result<Value, Failure> {
    let e = |e: &dyn std::fmt::Display| fail!("bench producer (socket): {e}");
    let batches = match w.payload {
        Payload::Arrow => make_batches(w),
        Payload::U64 => Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match UnixStream::connect(sock) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(x) => return Err(e(&x)),
        }
    };
    let mut acks = stream.try_clone().map_err(|x| e(&x))?;
    let mut wait_ack = |want: u64| -> Result<(), Failure> {
        let v = read_u64(&mut acks).map_err(|x| e(&x))?;
        if v == want {
            Ok(())
        } else {
            Err(e(&format!("acknowledgement {v}, expected {want}")))
        }
    };
    let mut h = histogram();
    wait_ack(READY)?;
    let start = now_ns()?;
    match w.payload {
        Payload::Arrow => {
            let out = BufWriter::with_capacity(1 << 20, stream);
            let mut tx = StreamWriter::try_new(out, &batches[0].schema()).map_err(|x| e(&x))?;
            for k in 0..w.messages {
                tx.write(&batches[(k % w.distinct) as usize])
                    .map_err(|x| e(&x))?;
            }
            tx.flush().map_err(|x| e(&x))?;
            wait_ack(DRAINED)?;
            let one = batches[0].slice(0, 1);
            for i in 0..w.samples {
                let t0 = Instant::now();
                tx.write(&one).map_err(|x| e(&x))?;
                tx.flush().map_err(|x| e(&x))?;
                wait_ack(i)?;
                record(&mut h, t0);
            }
            tx.finish().map_err(|x| e(&x))?;
        }
        Payload::U64 => {
            let mut out = BufWriter::with_capacity(1 << 20, &mut stream);
            let mut buf = vec![0_u8; 8 * 4096];
            let mut k = 0;
            while k < w.messages {
                let n = (w.messages - k).min(4096) as usize;
                for (i, c) in buf[..8 * n].chunks_exact_mut(8).enumerate() {
                    c.copy_from_slice(&(k + i as u64).to_le_bytes());
                }
                out.write_all(&buf[..8 * n]).map_err(|x| e(&x))?;
                k += n as u64;
            }
            out.flush().map_err(|x| e(&x))?;
            drop(out);
            wait_ack(DRAINED)?;
            for i in 0..w.samples {
                let t0 = Instant::now();
                stream.write_all(&i.to_le_bytes()).map_err(|x| e(&x))?;
                wait_ack(i)?;
                record(&mut h, t0);
            }
            stream
                .shutdown(std::net::Shutdown::Write)
                .map_err(|x| e(&x))?;
        }
    }
    Ok(tx_report(start, &h))
}

fn uds_rx(w: &Workload, sock: &Path) -> Result<Value, Failure> {
    let e = |e: &dyn std::fmt::Display| fail!("bench consumer (socket): {e}");
    let listener = UnixListener::bind(sock).map_err(|x| e(&x))?;
    listener.set_nonblocking(true).map_err(|x| e(&x))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(x) if x.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(x) => return Err(e(&x)),
        }
    };
    stream.set_nonblocking(false).map_err(|x| e(&x))?;
    let mut acks = stream.try_clone().map_err(|x| e(&x))?;
    let mut ack = |v: u64| acks.write_all(&v.to_le_bytes()).map_err(|x| e(&x));
    ack(READY)?;
    let input = BufReader::with_capacity(1 << 20, stream);
    let (mut rows, mut bytes) = (0, 0);
    let end;
    match w.payload {
        Payload::Arrow => {
            let mut rx = StreamReader::try_new(input, None).map_err(|x| e(&x))?;
            for k in 0..w.messages {
                let b = rx
                    .next()
                    .ok_or_else(|| e(&format!("the stream ended after {k} messages")))?
                    .map_err(|x| e(&x))?;
                check_batch(w, k, &b)?;
                rows += b.num_rows() as u64;
                bytes += data_bytes(&b);
            }
            end = now_ns()?;
            ack(DRAINED)?;
            for i in 0..w.samples {
                let b = rx.next().transpose().map_err(|x| e(&x))?;
                if b.as_ref().map(|b| b.num_rows()) != Some(1) {
                    return Err(e(&format!("round trip {i}: no one-row batch")));
                }
                ack(i)?;
            }
            if rx.next().is_some() {
                return Err(e(&"a batch after the last one expected"));
            }
        }
        Payload::U64 => {
            let mut input = input;
            let mut buf = vec![0_u8; 8 * 4096];
            let mut k = 0;
            while k < w.messages {
                let n = (w.messages - k).min(4096) as usize;
                input.read_exact(&mut buf[..8 * n]).map_err(|x| e(&x))?;
                let values = buf[..8 * n]
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")));
                check_sequence(values, &mut k).map_err(|x| e(&x))?;
            }
            end = now_ns()?;
            rows = w.messages;
            bytes = 8 * w.messages;
            ack(DRAINED)?;
            for i in 0..w.samples {
                let v = read_u64(&mut input).map_err(|x| e(&x))?;
                if v != i {
                    return Err(e(&format!("round trip {i}: got {v}")));
                }
                ack(i)?;
            }
            if input.read(&mut buf).map_err(|x| e(&x))? != 0 {
                return Err(e(&"bytes after the last value expected"));
            }
        }
    }
    Ok(rx_report(end, w.messages, rows, bytes))
}

// ----------------------------------------------------------------- parent

/// Removes the files of a run, however it ends.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn spawn_worker(
    transport: Transport,
    side: Side,
    w: &Workload,
    ring: &str,
    dir: &Path,
    sock: &Path,
) -> Result<Child, Failure> {
    let exe = std::env::current_exe().map_err(|e| fail!("cannot find this program: {e}"))?;
    let mut c = Command::new(exe);
    c.arg("__worker")
        .arg("--transport")
        .arg(
            transport
                .to_possible_value()
                .expect("no skipped variants")
                .get_name(),
        )
        .arg("--side")
        .arg(
            side.to_possible_value()
                .expect("no skipped variants")
                .get_name(),
        )
        .arg("--payload")
        .arg(
            w.payload
                .to_possible_value()
                .expect("no skipped variants")
                .get_name(),
        )
        .args(["--messages", &w.messages.to_string()])
        .args(["--rows", &w.rows.to_string()])
        .args(["--total-rows", &w.total_rows.to_string()])
        .args(["--distinct", &w.distinct.to_string()])
        .args(["--samples", &w.samples.to_string()])
        .args(["--ring", ring])
        .arg("--wait")
        .arg(
            w.wait
                .to_possible_value()
                .expect("no skipped variants")
                .get_name(),
        )
        .arg("--dir")
        .arg(dir)
        .arg("--socket")
        .arg(sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if w.verify {
        c.arg("--verify");
    }
    c.spawn()
        .map_err(|e| fail!("cannot start a bench process: {e}"))
}

fn collect(child: Child, what: &str) -> Result<Value, Failure> {
    let out = child
        .wait_with_output()
        .map_err(|e| fail!("waiting for the {what}: {e}"))?;
    if !out.status.success() {
        return Err(fail!("the {what} process failed ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| fail!("the {what} process printed {line:?}: {e}"))
}

/// One run of `w` through `transport`: two processes, their figures.
fn run_once(transport: Transport, w: &Workload, dir: &Path, tag: &str) -> Result<Figures, Failure> {
    let ring = format!("laminar-bench-{}-{tag}", std::process::id());
    let sock = std::env::temp_dir().join(format!("{ring}.sock"));
    let mut cleanup = Cleanup(vec![sock.clone()]);
    let _ = std::fs::remove_file(&sock);
    if transport == Transport::Ring {
        let seg = seg_options(dir);
        let made = match w.payload {
            Payload::Arrow => laminar_ring::arrow::create(&ring, &ring_options(dir, w.arena))
                .map_err(|e| fail!("{e}")),
            Payload::U64 => shm::create::<u64>(&ring, 1 << 16, &seg).map_err(|e| fail!("{e}")),
        };
        made?;
        cleanup.0.push(dir.join(&ring));
        shm::create::<u64>(&ack_name(&ring), 1024, &seg).map_err(|e| fail!("{e}"))?;
        cleanup.0.push(dir.join(ack_name(&ring)));
    }
    let mut rx = spawn_worker(transport, Side::Rx, w, &ring, dir, &sock)?;
    let tx = match spawn_worker(transport, Side::Tx, w, &ring, dir, &sock) {
        Ok(tx) => tx,
        Err(f) => {
            let _ = rx.kill();
            let _ = rx.wait();
            return Err(f);
        }
    };
    let sent = collect(tx, "producer");
    if sent.is_err() {
        let _ = rx.kill();
    }
    let got = collect(rx, "consumer");
    let (sent, got) = (sent?, got?);
    let num = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| fail!("a bench process left out {k}"))
    };
    let start = num(&sent, "start_ns")?;
    let end = num(&got, "end_ns")?;
    Ok(Figures {
        secs: (end.saturating_sub(start)).max(1) as f64 / 1e9,
        messages: num(&got, "messages")?,
        rows: num(&got, "rows")?,
        bytes: num(&got, "bytes")?,
        p50: num(&sent, "p50")?,
        p99: num(&sent, "p99")?,
        p999: num(&sent, "p999")?,
        max: num(&sent, "max")?,
    })
}

/// Runs `w` `rounds` times through the ring and, if asked, through a
/// socket, alternating which goes first; returns the medians.
fn run_rounds(
    w: &Workload,
    rounds: u64,
    uds: bool,
    dir: &Path,
    progress: &Progress,
) -> Result<(Figures, Option<Figures>), Failure> {
    let mut ring = Vec::new();
    let mut sock = Vec::new();
    let mut moved = (0, 0);
    let mut last = None;
    for r in 0..rounds {
        let mut order = vec![Transport::Ring];
        if uds {
            order.push(Transport::Uds);
            if r % 2 == 1 {
                order.reverse();
            }
        }
        for t in order {
            let label = match t {
                Transport::Ring => "ring",
                Transport::Uds => "socket",
            };
            progress.status(&format!(
                "round {}/{rounds}: {label}; so far {} rows, {}{}",
                r + 1,
                fmt_count(moved.0),
                fmt_bytes(moved.1),
                last.map_or(String::new(), |(l, g)| format!(
                    "; last run {l} {g:.2} GB/s"
                )),
            ));
            let f = run_once(t, w, dir, &format!("{r}"))?;
            moved = (moved.0 + f.rows, moved.1 + f.bytes);
            last = Some((label, f.gb_per_s()));
            match t {
                Transport::Ring => ring.push(f),
                Transport::Uds => sock.push(f),
            }
        }
    }
    Ok((medians(&ring), uds.then(|| medians(&sock))))
}

/// `3.10x lower` or `1.25x higher`: the ring's latency against the socket's.
fn compare_latency(ring_ns: u64, sock_ns: u64) -> String {
    let (r, s) = (ring_ns.max(1) as f64, sock_ns.max(1) as f64);
    if r <= s {
        format!("{:.2}x lower", s / r)
    } else {
        format!("{:.2}x higher", r / s)
    }
}

fn row(label: &str, f: &Figures) -> String {
    format!(
        "{label:<20} {:>12} {:>14} {:>8.2} {:>11} {:>11} {:>11} {:>11}",
        fmt_count(f.msgs_per_s() as u64),
        fmt_count(f.rows_per_s() as u64),
        f.gb_per_s(),
        fmt_ns(f.p50),
        fmt_ns(f.p99),
        fmt_ns(f.p999),
        fmt_ns(f.max)
    )
}

fn header() -> String {
    format!(
        "{:<20} {:>12} {:>14} {:>8} {:>11} {:>11} {:>11} {:>11}",
        "", "msgs/s", "rows/s", "GB/s", "rtt p50", "rtt p99", "rtt p99.9", "rtt max"
    )
}

pub fn bench(a: &BenchArgs) -> Result<(), Failure> {
    let (messages, samples, rows) = match a.payload {
        Payload::U64 => (
            a.messages.unwrap_or(10_000_000),
            a.samples.unwrap_or(100_000),
            1,
        ),
        Payload::Arrow => (
            a.messages.unwrap_or(400),
            a.samples.unwrap_or(1_000),
            a.rows,
        ),
    };
    if a.payload == Payload::Arrow && rows > 10_000_000 {
        return Err(fail!("--rows {rows}: at most 10,000,000 rows per batch"));
    }
    let distinct = messages.min(4);
    let w = Workload {
        payload: a.payload,
        messages,
        rows,
        distinct,
        total_rows: distinct * rows,
        samples,
        verify: false,
        wait: a.wait,
        arena: a.arena,
    };
    let progress = Progress::new("bench");
    let uds = a.compare == Some(Compare::Uds);
    let (ring, sock) = run_rounds(&w, a.rounds, uds, &a.location.dir, &progress)?;
    progress.finish();
    let payload = match a.payload {
        Payload::U64 => "u64".to_owned(),
        Payload::Arrow => format!("arrow batches of {} rows ({COLUMNS})", fmt_count(rows)),
    };
    if a.json {
        let mut v = json!({
            "payload": match a.payload { Payload::U64 => "u64", Payload::Arrow => "arrow" },
            "messages": messages,
            "rows_per_message": rows,
            "latency_samples": samples,
            "rounds": a.rounds,
            "arena_bytes": a.arena,
            "wait": a.wait.to_possible_value().expect("no skipped variants").get_name(),
            "ring": ring.json(),
        });
        if let Some(s) = &sock {
            v["uds"] = s.json();
            v["ratio"] = json!({
                "throughput": ring.gb_per_s() / s.gb_per_s(),
                "rtt_p50": s.p50 as f64 / ring.p50 as f64,
            });
        }
        outln!("{v}");
        return Ok(());
    }
    outln!(
        "{} messages of {payload}, {} ({} per run); {} round trips of one {}; medians of {} round{}",
        fmt_count(messages),
        fmt_bytes(ring.bytes),
        if uds {
            "interleaved with the socket"
        } else {
            "ring only"
        },
        fmt_count(samples),
        if a.payload == Payload::U64 {
            "value"
        } else {
            "one-row batch"
        },
        a.rounds,
        if a.rounds == 1 { "" } else { "s" },
    );
    outln!("{}", header());
    outln!("{}", row("shared-memory ring", &ring));
    if let Some(s) = &sock {
        outln!("{}", row("unix socket", s));
        outln!(
            "ring / socket: {:.2}x the throughput, {} p50 round trip",
            ring.gb_per_s() / s.gb_per_s(),
            compare_latency(ring.p50, s.p50)
        );
    }
    Ok(())
}

pub fn demo(a: &DemoArgs) -> Result<(), Failure> {
    if a.rows > 20_000_000 {
        return Err(fail!(
            "--rows {}: the demo moves at most 20,000,000 rows",
            a.rows
        ));
    }
    let batch_rows = a.batch_rows.min(a.rows);
    let messages = a.rows.div_ceil(batch_rows);
    let w = Workload {
        payload: Payload::Arrow,
        messages,
        rows: batch_rows,
        distinct: messages,
        total_rows: a.rows,
        samples: 1_000,
        verify: true,
        wait: Wait::Park,
        arena: DEFAULT_ARENA,
    };
    let rounds = 3;
    outln!(
        "laminar-ring demo: {} rows ({COLUMNS}) in {} batches, from a producer process to a \
         consumer process that checks every row; then 1,000 round trips of a one-row batch. \
         The same through a Unix socket (Arrow IPC stream), interleaved; medians of {rounds} rounds.",
        fmt_count(a.rows),
        fmt_count(messages)
    );
    let progress = Progress::new("demo");
    let (ring, sock) = run_rounds(&w, rounds, true, &a.location.dir, &progress)?;
    progress.finish();
    let sock = sock.expect("asked for the socket");
    for f in [&ring, &sock] {
        if f.rows != a.rows || f.messages != messages {
            return Err(fail!(
                "{} rows in {} batches arrived, expected {} in {}",
                f.rows,
                f.messages,
                a.rows,
                messages
            ));
        }
    }
    outln!();
    outln!(
        "{:<20} {:>12} {:>9} {:>10} {:>14} {:>14}",
        "",
        "rows",
        "batches",
        "GB/s",
        "rtt p50",
        "rtt p99"
    );
    for (label, f) in [("shared-memory ring", &ring), ("unix socket", &sock)] {
        outln!(
            "{label:<20} {:>12} {:>9} {:>10.2} {:>14} {:>14}",
            fmt_count(f.rows),
            fmt_count(f.messages),
            f.gb_per_s(),
            fmt_ns(f.p50),
            fmt_ns(f.p99)
        );
    }
    outln!(
        "\nevery row verified on both paths; the ring moved {:.2}x the socket's bytes per second, \
         with a {} median round trip",
        ring.gb_per_s() / sock.gb_per_s(),
        compare_latency(ring.p50, sock.p50)
    );
    Ok(())
}
