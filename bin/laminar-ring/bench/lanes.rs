//! The ends of a run with several producers (`bench --producers`): each
//! producer joins the ring's stream, which gives it a lane (a ring) of its
//! own, and sends through the same [`Sender`] as a lone producer; one
//! consumer reads every lane through the library's fan-in and hands each
//! message to its check with the lane it came from.
//!
//! The parent, not a producer, reads the consumer's [`READY`]: the
//! acknowledgement ring has one reader, and a run has several producers.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use arrow_array::RecordBatch;
use laminar_ring::arrow::{BatchFanIn, BatchFanInError, BatchProducer};
use laminar_ring::shm::{FanInError, MAX_LANES, ShmConsumer, ShmFanIn, ShmProducer, lane_name};

use super::job::{Job, Place, Side, TransportKind, Wait, Workload};
use super::payload::{Arrow, Batches, Payload, Received, Tally, U64};
use super::report::{ConsumerReport, Figures, ProducerReport};
use super::transport::{
    AckTx, READY, Ring, Sender, U64_SLOTS, Values, ack_name, arrow_options, data_options,
    seg_options,
};
use super::workers::{now_ns, send_all};
use super::{BenchError, Cleanup, finish, spawn_worker, worker_command};
use crate::error::{CliError, bench_error};

/// What a producer prints once it has joined the stream; it then waits for
/// a byte on its standard input before it sends.
pub const JOINED: &[u8] = b"joined\n";

/// How long the consumer waits, once every message has come, for every
/// producer to close its lane.
const END_TIMEOUT: Duration = Duration::from_secs(10);

/// The consumer's end of a stream of several lanes, for payload `P`.
pub trait LaneReceiver<P: Payload> {
    /// Receives the next message of any lane and hands it, with its lane,
    /// to `check` before it returns.
    fn recv_lane<R>(
        &mut self,
        check: impl FnOnce(u32, P::Got<'_>) -> Result<R, BenchError>,
    ) -> Result<R, BenchError>;
    /// Every message has come: checks that every lane is closed and that
    /// nothing follows.
    fn expect_end(self) -> Result<(), BenchError>;
}

/// A transport whose stream several producers can write, for payload `P`.
pub trait FanIn<P: Payload> {
    type Tx: Sender<P>;
    type Rx: LaneReceiver<P>;
    /// Joins the stream as one of its producers, on a lane of its own.
    fn join(at: &Place, w: &Workload, src: &P::Source) -> Result<Self::Tx, BenchError>;
    /// Opens the consumer of every lane and acknowledges [`READY`]; the
    /// acknowledgements' end is kept open until the run ends.
    fn open_lanes(at: &Place, w: &Workload) -> Result<(ShmProducer<u64>, Self::Rx), BenchError>;
}

/// The parent's end of the acknowledgements, opened before the consumer
/// starts.
pub fn open_acks(at: &Place) -> Result<ShmConsumer<u64>, BenchError> {
    Ok(ShmConsumer::open_with(
        &ack_name(&at.ring),
        &seg_options(&at.dir),
    )?)
}

/// Opens the acknowledgements, then the fan-in (`open`), then says
/// [`READY`].
fn open_with_ready<D>(
    at: &Place,
    w: &Workload,
    open: impl FnOnce() -> Result<D, BenchError>,
) -> Result<(ShmProducer<u64>, D), BenchError> {
    Ring::open_ends(
        at,
        w,
        |_, _| open(),
        |a: &mut ShmProducer<u64>| a.send(READY),
    )
}

/// What a non-blocking consumer does when every lane is empty.
fn pause(wait: Wait) {
    match wait {
        Wait::Yield => std::thread::yield_now(),
        Wait::Park | Wait::Spin => std::hint::spin_loop(),
    }
}

/// The consumer of a stream of `u64` lanes.
#[derive(Debug)]
pub struct U64Lanes {
    rx: ShmFanIn<u64>,
    wait: Wait,
}

impl FanIn<U64> for Ring {
    type Tx = Values<ShmProducer<u64>, u64>;
    type Rx = U64Lanes;

    fn join(at: &Place, w: &Workload, _: &()) -> Result<Self::Tx, BenchError> {
        let mut end = ShmProducer::<u64>::join(&at.ring, U64_SLOTS, &data_options(at, w))?;
        end.set_wait_strategy(w.wait.strategy());
        Ok(Values::new(end))
    }

    fn open_lanes(at: &Place, w: &Workload) -> Result<(ShmProducer<u64>, U64Lanes), BenchError> {
        open_with_ready(at, w, || {
            let mut rx = ShmFanIn::<u64>::open_with(&at.ring, &data_options(at, w))?;
            rx.set_wait_strategy(w.wait.strategy());
            // Never ended while messages are due: a producer may close its
            // lane before a slower one has even joined.
            rx.set_linger(None);
            Ok(U64Lanes { rx, wait: w.wait })
        })
    }
}

impl LaneReceiver<U64> for U64Lanes {
    /// One value at a time, as the fan-in gives them.
    fn recv_lane<R>(
        &mut self,
        check: impl FnOnce(u32, Received<'_>) -> Result<R, BenchError>,
    ) -> Result<R, BenchError> {
        let (lane, v) = match self.wait {
            Wait::Park => self.rx.pop_lane_timeout(None)?,
            Wait::Spin | Wait::Yield => loop {
                match self.rx.try_pop_lane() {
                    Err(FanInError::Empty) => pause(self.wait),
                    got => break got?,
                }
            },
        };
        check(lane, Received::Native(&[v]))
    }

    fn expect_end(mut self) -> Result<(), BenchError> {
        self.rx.set_linger(Some(Duration::ZERO));
        match self.rx.pop_lane_timeout(Some(END_TIMEOUT)) {
            Err(FanInError::EndOfStream) => Ok(()),
            other => Err(BenchError::new(format!(
                "expected the end of the stream, got {other:?}"
            ))),
        }
    }
}

/// The consumer of a stream of Arrow lanes.
#[derive(Debug)]
pub struct ArrowLanes {
    rx: BatchFanIn,
    wait: Wait,
}

impl FanIn<Arrow> for Ring {
    type Tx = BatchProducer;
    type Rx = ArrowLanes;

    fn join(at: &Place, w: &Workload, src: &Batches) -> Result<BatchProducer, BenchError> {
        let schema = src.one_row.schema();
        let mut tx = BatchProducer::join(&at.ring, schema, &arrow_options(at, w))?;
        tx.set_wait_strategy(w.wait.strategy());
        Ok(tx)
    }

    fn open_lanes(at: &Place, w: &Workload) -> Result<(ShmProducer<u64>, ArrowLanes), BenchError> {
        open_with_ready(at, w, || {
            let mut rx = BatchFanIn::open(&at.ring, &arrow_options(at, w))?;
            // As for `u64` lanes: no end while batches are due.
            rx.set_linger(None);
            Ok(ArrowLanes { rx, wait: w.wait })
        })
    }
}

impl LaneReceiver<Arrow> for ArrowLanes {
    /// Zero-copy: the lease ends (the slot is released) when `check` is
    /// done.
    fn recv_lane<R>(
        &mut self,
        check: impl FnOnce(u32, &RecordBatch) -> Result<R, BenchError>,
    ) -> Result<R, BenchError> {
        let got = match self.wait {
            Wait::Park => self.rx.recv_lane_zero_copy(None)?,
            // A zero timeout: one look at every lane.
            Wait::Spin | Wait::Yield => loop {
                match self.rx.recv_lane_zero_copy(Some(Duration::ZERO)) {
                    Err(BatchFanInError::Timeout) => pause(self.wait),
                    got => break got?,
                }
            },
        };
        let (lane, batch) =
            got.ok_or_else(|| BenchError::new("the stream ended before every batch came"))?;
        check(lane, &batch)
    }

    fn expect_end(mut self) -> Result<(), BenchError> {
        self.rx.set_linger(Some(Duration::ZERO));
        match self.rx.recv_lane_zero_copy(Some(END_TIMEOUT))? {
            None => Ok(()),
            Some((lane, _)) => Err(BenchError::new(format!(
                "lane {lane}: a batch after the last one expected"
            ))),
        }
    }
}

/// A producer of a run of several: joins the stream, says [`JOINED`],
/// waits for the parent's go (a byte on its standard input, once every
/// producer has joined), then sends `messages` messages and closes its
/// lane. The clock starts at the go.
pub fn produce<P: Payload>(job: &Job) -> Result<ProducerReport, BenchError>
where
    Ring: FanIn<P>,
{
    let w = &job.workload;
    let src = P::source(w);
    let mut tx = <Ring as FanIn<P>>::join(&job.place, w, &src)?;
    let mut out = std::io::stdout().lock();
    out.write_all(JOINED)?;
    out.flush()?;
    drop(out);
    let mut go = [0u8; 1];
    if std::io::stdin().read(&mut go)? != 1 {
        return Err(BenchError::new("no go from the parent"));
    }
    let start_ns = now_ns()?;
    send_all::<P>(&src, w, &mut tx)?;
    tx.close()?;
    Ok(ProducerReport::throughput_only(start_ns))
}

/// The consumer of a run of several producers: says [`READY`], then checks
/// that every lane brings messages `0..messages` in order, that `producers`
/// lanes did, and that every lane then ends.
pub fn consume<P: Payload>(job: &Job) -> Result<ConsumerReport, BenchError>
where
    Ring: FanIn<P>,
{
    let w = &job.workload;
    let all = w
        .all_messages()
        .ok_or_else(|| BenchError::new("too many messages"))?;
    let (acks, mut rx) = <Ring as FanIn<P>>::open_lanes(&job.place, w)?;
    let mut per_lane = vec![0u64; MAX_LANES as usize];
    let mut got = Tally::default();
    while got.messages < all {
        let (lane, t) = rx.recv_lane(|lane, m| {
            let k = *per_lane
                .get(lane as usize)
                .ok_or_else(|| BenchError::new(format!("a message from lane {lane}")))?;
            if k >= w.messages {
                return Err(BenchError::new(format!(
                    "lane {lane}: a message past the {} expected",
                    w.messages
                )));
            }
            let t = P::check(w, k, m).map_err(|e| BenchError::new(format!("lane {lane}: {e}")))?;
            Ok((lane, t))
        })?;
        per_lane[lane as usize] += t.messages;
        got += t;
    }
    let end_ns = now_ns()?;
    rx.expect_end()?;
    drop(acks);
    let full = per_lane.iter().filter(|&&n| n == w.messages).count();
    if full != w.producers as usize {
        return Err(BenchError::new(format!(
            "{full} lanes brought {} messages each, expected {}",
            w.messages, w.producers
        )));
    }
    Ok(ConsumerReport {
        end_ns,
        messages: got.messages,
        rows: got.rows,
        bytes: got.bytes,
    })
}

/// How long the parent waits for the consumer's [`READY`] and for each
/// producer to join.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The processes of a run, killed (if still running) and reaped however
/// the run ends.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One run of several producers: the parent creates the stream, starts
/// the consumer and waits for its [`READY`], starts every producer and
/// waits until each has joined (a lane of its own), then lets them all go.
/// The clock runs from the earliest producer's go to the consumer's
/// receipt of the last message.
pub fn run_once(w: &Workload, dir: &Path, tag: &str) -> Result<Figures, CliError> {
    let place = Place {
        socket: PathBuf::new(),
        ring: format!("laminar-bench-{}-{tag}", std::process::id()),
        dir: dir.to_owned(),
        subscriber: None,
    };
    let mut cleanup = Cleanup(
        (1..w.producers)
            .map(|n| dir.join(lane_name(&place.ring, n)))
            .collect(),
    );
    Ring::create(&place, w, &mut cleanup.0)?;
    let job = |side| Job {
        side,
        transport: TransportKind::Ring,
        place: place.clone(),
        workload: *w,
    };
    let mut acks = open_acks(&place)?;
    let mut workers = Workers(vec![spawn_worker(&job(Side::Rx))?]);
    match acks.pop_timeout(START_TIMEOUT) {
        Ok(READY) => {}
        Ok(v) => return Err(bench_error!("the consumer said {v}, expected ready")),
        Err(e) => return Err(bench_error!("waiting for the consumer: {e}")),
    }
    let mut outs = Vec::new();
    for _ in 0..w.producers {
        let mut c = worker_command(&job(Side::Tx))?;
        c.stdin(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| bench_error!("cannot start a bench process: {e}"))?;
        let out = child.stdout.take().map(BufReader::new);
        workers.0.push(child);
        outs.push(out.ok_or_else(|| bench_error!("a producer without its output"))?);
    }
    for out in &mut outs {
        let mut line = String::new();
        out.read_line(&mut line)
            .map_err(|e| bench_error!("reading a producer: {e}"))?;
        if line.as_bytes() != JOINED {
            return Err(bench_error!("a producer said {line:?} rather than joined"));
        }
    }
    for c in &mut workers.0[1..] {
        let mut go = c
            .stdin
            .take()
            .ok_or_else(|| bench_error!("a producer without its input"))?;
        go.write_all(b"g")
            .map_err(|e| bench_error!("starting a producer: {e}"))?;
    }
    let mut start_ns = u64::MAX;
    for (c, out) in workers.0[1..].iter_mut().zip(outs) {
        let r: ProducerReport = finish(c, out, "producer")?;
        start_ns = start_ns.min(r.start_ns);
    }
    let rx = &mut workers.0[0];
    let out = rx
        .stdout
        .take()
        .ok_or_else(|| bench_error!("the consumer without its output"))?;
    let got: ConsumerReport = finish(rx, out, "consumer")?;
    Ok(Figures::new(
        &ProducerReport::throughput_only(start_ns),
        &got,
    ))
}
