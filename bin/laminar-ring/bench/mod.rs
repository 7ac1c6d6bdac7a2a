//! `bench` and `demo`: a producer process and a consumer process (this
//! binary re-executed as the hidden `__worker` subcommand) exchange the same
//! workload through a ring and, to compare, through a Unix domain socket.
//!
//! - this file: the subcommands' arguments, and the orchestration: it
//!   creates the rings, starts the two workers of each run with their
//!   [`Job`], reads their reports and takes the medians of the rounds;
//! - [`job`]: what a worker is told, as one JSON argument;
//! - [`workers`]: the worker, both phases of a run written once over
//!   - [`transport`]: a ring or a Unix socket, and
//!   - [`payload`]: `u64` values or Arrow batches, made and checked;
//! - [`report`]: what the workers send back, the figures, the printing.

mod job;
mod lanes;
mod payload;
mod report;
mod transport;
mod workers;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use clap::ValueEnum;

use self::job::{Job, Place, Side, TransportKind, Workload};
pub use self::job::{PayloadKind, Wait};
use self::report::{ConsumerReport, Figures, Load, ProducerReport, medians, parse_report};
use self::transport::Ring;
pub use self::workers::{WorkerArgs, worker};
use crate::Location;
use crate::error::{CliError, bench_error};
use crate::print::outln;
use crate::progress::Progress;
use crate::units::{fmt_bytes, fmt_count, fmt_counted, parse_count};

/// What goes wrong in a run: a library call's error (any
/// `std::error::Error` converts, so `?` needs no closure) or a failed
/// check, as its message. A worker names itself in front of it.
#[derive(Debug)]
pub struct BenchError(String);

impl BenchError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl<E: std::error::Error> From<E> for BenchError {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<BenchError> for CliError {
    fn from(e: BenchError) -> Self {
        CliError::Bench(e.0)
    }
}

/// A peer to compare with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compare {
    /// A Unix domain socket between the same two processes: Arrow IPC
    /// (StreamWriter/StreamReader) for Arrow payloads, 8-byte values for u64.
    Uds,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What one message is.
    #[arg(long, value_enum, default_value_t = PayloadKind::Arrow)]
    pub payload: PayloadKind,
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
    /// Consumer processes on the ring, each under its own name, each
    /// receiving every message; the figures are the slowest one's, and the
    /// same workload through a ring with one consumer runs interleaved, to
    /// compare.
    #[arg(long, value_name = "N", default_value = "1",
          value_parser = clap::value_parser!(u32).range(1..=32), conflicts_with = "compare")]
    pub consumers: u32,
    /// Producer processes, each joining the ring's stream (a lane of its
    /// own) and sending --messages messages; one consumer checks every
    /// message of every lane. Throughput only (no round trips); one
    /// producer sending all their messages through the same fan-in
    /// consumer runs interleaved, to compare.
    #[arg(long, value_name = "N", default_value = "1",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(job::MAX_PRODUCERS)),
          conflicts_with_all = ["compare", "consumers"])]
    pub producers: u32,
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

/// Arena of the demo's Arrow ring.
const DEFAULT_ARENA: u64 = 64 << 20;

/// Removes the files of a run, however it ends.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// This program as the worker of `job`, its report on a pipe.
fn worker_command(job: &Job) -> Result<Command, CliError> {
    let exe = std::env::current_exe().map_err(|e| bench_error!("cannot find this program: {e}"))?;
    let mut c = Command::new(exe);
    c.arg("__worker")
        .arg("--job")
        .arg(job.to_arg()?)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    Ok(c)
}

fn spawn_worker(job: &Job) -> Result<Child, CliError> {
    worker_command(job)?
        .spawn()
        .map_err(|e| bench_error!("cannot start a bench process: {e}"))
}

/// Waits for the `what` process and reads its report.
fn collect<R: serde::de::DeserializeOwned>(mut child: Child, what: &str) -> Result<R, CliError> {
    let out = child
        .stdout
        .take()
        .ok_or_else(|| bench_error!("the {what} without its output"))?;
    finish(&mut child, out, what)
}

/// Reads what is left of a worker's standard output (`out`: what a
/// caller has not read of it yet), waits for it, and parses its report.
fn finish<R: serde::de::DeserializeOwned>(
    child: &mut Child,
    mut out: impl Read,
    what: &str,
) -> Result<R, CliError> {
    let mut text = Vec::new();
    out.read_to_end(&mut text)
        .map_err(|e| bench_error!("reading the {what}: {e}"))?;
    let status = child
        .wait()
        .map_err(|e| bench_error!("waiting for the {what}: {e}"))?;
    if !status.success() {
        return Err(bench_error!("the {what} process failed ({status})"));
    }
    parse_report(what, &text)
}

/// One run of `w` through `transport`: two processes, their figures.
fn run_once(
    transport: TransportKind,
    w: &Workload,
    dir: &Path,
    tag: &str,
) -> Result<Figures, CliError> {
    let ring = format!("laminar-bench-{}-{tag}", std::process::id());
    let place = Place {
        socket: std::env::temp_dir().join(format!("{ring}.sock")),
        ring,
        dir: dir.to_owned(),
        subscriber: None,
    };
    let mut cleanup = Cleanup(vec![place.socket.clone()]);
    let _ = std::fs::remove_file(&place.socket);
    if transport == TransportKind::Ring {
        Ring::create(&place, w, &mut cleanup.0)?;
    }
    let job = |side, subscriber| Job {
        side,
        transport,
        place: Place {
            subscriber,
            ..place.clone()
        },
        workload: *w,
    };
    let mut rxs = Vec::new();
    let kill_all = |rxs: &mut Vec<Child>| {
        for rx in rxs.iter_mut() {
            let _ = rx.kill();
            let _ = rx.wait();
        }
    };
    for i in 0..w.consumers {
        let subscriber = (w.consumers > 1).then(|| format!("c{i}"));
        match spawn_worker(&job(Side::Rx, subscriber)) {
            Ok(rx) => rxs.push(rx),
            Err(f) => {
                kill_all(&mut rxs);
                return Err(f);
            }
        }
    }
    let tx = match spawn_worker(&job(Side::Tx, None)) {
        Ok(tx) => tx,
        Err(f) => {
            kill_all(&mut rxs);
            return Err(f);
        }
    };
    let sent = collect::<ProducerReport>(tx, "producer");
    if sent.is_err() {
        kill_all(&mut rxs);
    }
    let mut got: Option<ConsumerReport> = None;
    for rx in rxs {
        let r = collect::<ConsumerReport>(rx, "consumer")?;
        // The slowest consumer's: the producer is done when it is.
        if got.as_ref().is_none_or(|g| r.end_ns > g.end_ns) {
            got = Some(r);
        }
    }
    let got = got.ok_or_else(|| bench_error!("no consumer ran"))?;
    Ok(Figures::new(&sent?, &got))
}

/// Runs `w` `rounds` times through the ring and, if asked, through a
/// socket, alternating which goes first; returns the medians.
fn run_rounds(
    w: &Workload,
    rounds: u64,
    uds: bool,
    dir: &Path,
    progress: &Progress,
) -> Result<(Figures, Option<Figures>), CliError> {
    let mut ring = Vec::new();
    let mut sock = Vec::new();
    let mut moved = (0, 0);
    let mut last = None;
    // With several consumers the peer is the same ring with one; with
    // several producers, one producer through the same fan-in consumer,
    // sending every producer's messages.
    let single = Workload {
        consumers: 1,
        producers: 1,
        messages: w.all_messages().unwrap_or(w.messages),
        ..*w
    };
    let peer = uds || w.consumers > 1 || w.producers > 1;
    for r in 0..rounds {
        let mut order = vec![(TransportKind::Ring, w)];
        if peer {
            order.push(if uds {
                (TransportKind::Uds, w)
            } else {
                (TransportKind::Ring, &single)
            });
            if r % 2 == 1 {
                order.reverse();
            }
        }
        for (i, (t, run)) in order.into_iter().enumerate() {
            let main = i == 0 && r % 2 == 0 || i == 1 && r % 2 == 1 || !peer;
            let label = match t {
                TransportKind::Ring if main => "ring",
                TransportKind::Ring if w.fan_in => "one producer",
                TransportKind::Ring => "one consumer",
                TransportKind::Uds => "socket",
            };
            progress.status(&format!(
                "round {}/{rounds}: {label}; so far {}, {}{}",
                r + 1,
                fmt_counted(moved.0, "row", "rows"),
                fmt_bytes(moved.1),
                last.map_or(String::new(), |(l, g)| format!(
                    "; last run {l} {g:.2} GB/s"
                )),
            ));
            let tag = format!("{r}-{i}");
            let f = if w.fan_in {
                lanes::run_once(run, dir, &tag)?
            } else {
                run_once(t, run, dir, &tag)?
            };
            moved = (moved.0 + f.rows, moved.1 + f.bytes);
            last = Some((label, f.gb_per_s()));
            if main {
                ring.push(f);
            } else {
                sock.push(f);
            }
        }
    }
    Ok((medians(&ring), peer.then(|| medians(&sock))))
}

pub fn bench(a: &BenchArgs) -> Result<(), CliError> {
    let (messages, samples, rows) = match a.payload {
        PayloadKind::U64 => (
            a.messages.unwrap_or(10_000_000),
            a.samples.unwrap_or(100_000),
            1,
        ),
        PayloadKind::Arrow => (
            a.messages.unwrap_or(400),
            a.samples.unwrap_or(1_000),
            a.rows,
        ),
    };
    if a.payload == PayloadKind::Arrow && rows > 10_000_000 {
        return Err(bench_error!(
            "--rows {rows}: at most 10,000,000 rows per batch"
        ));
    }
    let distinct = messages.min(4);
    let w = Workload {
        payload: a.payload,
        messages,
        rows,
        distinct,
        total_rows: distinct * rows,
        // No round trips with several producers: one is one producer's.
        samples: if a.producers > 1 { 0 } else { samples },
        verify: false,
        wait: a.wait,
        arena: a.arena,
        consumers: a.consumers,
        producers: a.producers,
        fan_in: a.producers > 1,
    };
    w.validate()?;
    let load = Load::now();
    load.warn();
    let mut progress = Progress::new("bench");
    let uds = a.compare == Some(Compare::Uds);
    let (ring, sock) = run_rounds(&w, a.rounds, uds, &a.location.dir, &progress)?;
    progress.finish();
    report::print_bench(a, &w, &ring, sock.as_ref(), &load)
}

pub fn demo(a: &DemoArgs) -> Result<(), CliError> {
    if a.rows > 20_000_000 {
        return Err(bench_error!(
            "--rows {}: the demo moves at most 20,000,000 rows",
            a.rows
        ));
    }
    let batch_rows = a.batch_rows.min(a.rows);
    let messages = a.rows.div_ceil(batch_rows);
    let w = Workload {
        payload: PayloadKind::Arrow,
        messages,
        rows: batch_rows,
        distinct: messages,
        total_rows: a.rows,
        samples: 1_000,
        verify: true,
        wait: Wait::Park,
        arena: DEFAULT_ARENA,
        consumers: 1,
        producers: 1,
        fan_in: false,
    };
    let rounds = 3;
    outln!(
        "laminar-ring demo: {} ({}) in {}, from a producer process to a \
         consumer process that checks every row; then 1,000 round trips of a one-row batch. \
         The same through a Unix socket (Arrow IPC stream), interleaved; medians of {rounds} rounds.",
        fmt_counted(a.rows, "row", "rows"),
        payload::COLUMNS,
        fmt_counted(messages, "batch", "batches")
    );
    let load = Load::now();
    load.warn();
    let mut progress = Progress::new("demo");
    let (ring, sock) = run_rounds(&w, rounds, true, &a.location.dir, &progress)?;
    progress.finish();
    let sock = sock.expect("asked for the socket");
    for f in [&ring, &sock] {
        if f.rows != a.rows || f.messages != messages {
            return Err(bench_error!(
                "{} in {} arrived, expected {} in {}",
                fmt_counted(f.rows, "row", "rows"),
                fmt_counted(f.messages, "batch", "batches"),
                fmt_count(a.rows),
                fmt_count(messages)
            ));
        }
    }
    report::print_demo(&ring, &sock, &load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_round_trips_through_the_worker_command_line() {
        let job = job::tests::job();
        let c = worker_command(&job).unwrap();
        let args: Vec<_> = c.get_args().collect();
        assert_eq!(args.len(), 3, "{args:?}");
        assert_eq!((args[0], args[1]), ("__worker".as_ref(), "--job".as_ref()));
        let arg = args[2].to_str().expect("JSON is UTF-8");
        assert_eq!(Job::from_arg(arg).unwrap(), job);
    }
}
