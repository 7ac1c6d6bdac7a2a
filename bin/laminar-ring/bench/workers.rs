//! The hidden `__worker` subcommand: one end of a run, written once for
//! every [`Channel`] (transport) and [`Payload`].
//!
//! Each run has two phases. Throughput: the producer sends `messages`
//! messages as fast as it can; the clock runs from the producer's first send
//! to the consumer's receipt of the last one (CLOCK_MONOTONIC is one clock
//! for both processes). Latency: after the consumer has drained the first
//! phase, the producer sends `samples` small messages (one `u64`, or a
//! one-row batch) one at a time and waits for the consumer's acknowledgement
//! of each: a round trip, recorded in an HDR histogram. The worker prints its
//! report as one line of JSON.

use std::time::Instant;

use hdrhistogram::Histogram;

use super::BenchError;
use super::job::{Job, PayloadKind, Side, TransportKind, Workload};
use super::lanes::{self, FanIn};
use super::payload::{Arrow, Payload, Tally, U64};
use super::report::{ConsumerReport, ProducerReport};
use super::transport::{AckRx, AckTx, Channel, DRAINED, Receiver, Ring, Sender, Socket};
use crate::error::{CliError, bench_error};
use crate::print::outln;

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The job, as JSON (see `Job`).
    #[arg(long)]
    job: String,
}

pub fn worker(a: &WorkerArgs) -> Result<(), CliError> {
    let job = Job::from_arg(&a.job)?;
    let report = match (job.transport, job.workload.payload) {
        // Fan-in: validated to be through a ring.
        (_, PayloadKind::U64) if job.workload.fan_in => run_lanes::<U64>(&job),
        (_, PayloadKind::Arrow) if job.workload.fan_in => run_lanes::<Arrow>(&job),
        (TransportKind::Ring, PayloadKind::U64) => run::<Ring, U64>(&job),
        (TransportKind::Ring, PayloadKind::Arrow) => run::<Ring, Arrow>(&job),
        (TransportKind::Uds, PayloadKind::U64) => run::<Socket, U64>(&job),
        (TransportKind::Uds, PayloadKind::Arrow) => run::<Socket, Arrow>(&job),
    }
    .map_err(|e| bench_error!("{}: {e}", job.role()))?;
    outln!("{report}");
    Ok(())
}

/// Runs `job`'s end; returns its report as JSON.
fn run<T: Channel<P>, P: Payload>(job: &Job) -> Result<String, BenchError> {
    Ok(match job.side {
        Side::Tx => serde_json::to_string(&produce::<T, P>(job)?)?,
        Side::Rx => serde_json::to_string(&consume::<T, P>(job)?)?,
    })
}

/// Runs `job`'s end of a run of several producers.
fn run_lanes<P: Payload>(job: &Job) -> Result<String, BenchError>
where
    Ring: FanIn<P>,
{
    Ok(match job.side {
        Side::Tx => serde_json::to_string(&lanes::produce::<P>(job)?)?,
        Side::Rx => serde_json::to_string(&lanes::consume::<P>(job)?)?,
    })
}

fn produce<T: Channel<P>, P: Payload>(job: &Job) -> Result<ProducerReport, BenchError> {
    let w = &job.workload;
    let src = P::source(w);
    let (mut acks, mut tx) = T::open_tx(&job.place, w, &src)?;
    let start_ns = now_ns()?;
    send_all::<P>(&src, w, &mut tx)?;
    acks.wait(DRAINED)?;
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds");
    for i in 0..w.samples {
        let t0 = Instant::now();
        tx.send_sample(P::sample(&src, i))?;
        acks.wait(i)?;
        h.saturating_record(t0.elapsed().as_nanos().max(1) as u64);
    }
    tx.close()?;
    Ok(ProducerReport {
        start_ns,
        p50: h.value_at_quantile(0.5),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    })
}

fn consume<T: Channel<P>, P: Payload>(job: &Job) -> Result<ConsumerReport, BenchError> {
    let w = &job.workload;
    let (mut acks, mut rx) = T::open_rx(&job.place, w)?;
    let mut got = Tally::default();
    while got.messages < w.messages {
        let k = got.messages;
        got += rx.recv_bulk(w.messages - k, |m| {
            let m =
                m.ok_or_else(|| BenchError::new(format!("the stream ended after {k} messages")))?;
            P::check(w, k, m)
        })?;
    }
    let end_ns = now_ns()?;
    acks.send(DRAINED)?;
    for i in 0..w.samples {
        rx.recv_sample(|m| P::check_sample(i, m))?;
        acks.send(i)?;
    }
    rx.expect_end()?;
    Ok(ConsumerReport {
        end_ns,
        messages: got.messages,
        rows: got.rows,
        bytes: got.bytes,
    })
}

/// Sends the throughput phase's `messages` messages, in bulk, and flushes.
pub(super) fn send_all<P: Payload>(
    src: &P::Source,
    w: &Workload,
    tx: &mut impl Sender<P>,
) -> Result<(), BenchError> {
    let mut k = 0;
    while k < w.messages {
        let (bulk, n) = P::bulk(src, w, k);
        tx.send_bulk(bulk)?;
        k += n;
    }
    tx.flush()
}

pub(super) fn now_ns() -> Result<u64, BenchError> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_err(|e| BenchError::new(format!("clock_gettime: {e}")))?;
    Ok(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}
