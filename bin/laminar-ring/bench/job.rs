//! What the orchestrator tells a worker: a [`Job`] (which end, which
//! transport, where the two processes meet, and the [`Workload`] they agree
//! on), passed as one JSON argument of the hidden `__worker` subcommand.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use laminar_ring::WaitStrategy;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::BenchError;
use crate::units::fmt_counted;

/// What one message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// One `u64` per message, through a typed ring.
    U64,
    /// One Arrow batch per message (id Int64, x Float64, tag Utf8), through
    /// an Arrow ring.
    Arrow,
}

/// How the ring's blocking calls wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Wait {
    /// Spin up to 50 µs, then sleep on a futex (the library's default).
    Park,
    /// Spin without sleeping: lowest latency, two busy cores.
    Spin,
    /// Spin, then give the core away (`sched_yield`) between looks.
    Yield,
}

impl Wait {
    pub fn strategy(self) -> WaitStrategy {
        match self {
            Self::Park => WaitStrategy::Park,
            Self::Spin => WaitStrategy::BusySpin,
            Self::Yield => WaitStrategy::SpinYield,
        }
    }
}

/// How a worker talks to its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Ring,
    Uds,
}

/// Which end a worker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Tx,
    Rx,
}

/// Most producer processes of a run (`bench --producers`).
pub const MAX_PRODUCERS: u32 = 16;

/// Most rows a worker builds: four distinct batches of the bench's largest
/// (10,000,000 rows), twice the demo's 20,000,000.
const MAX_TOTAL_ROWS: u64 = 40_000_000;

/// The workload both workers of a run agree on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub payload: PayloadKind,
    /// Messages in the throughput phase.
    pub messages: u64,
    /// Rows of a full batch.
    pub rows: u64,
    /// Distinct batches the producer builds; message `k` is batch
    /// `k % distinct`. Batch `d` holds rows `d * rows ..` up to
    /// `total_rows`.
    pub distinct: u64,
    pub total_rows: u64,
    /// Round trips in the latency phase.
    pub samples: u64,
    /// Check every row (else a batch's length and first and last id).
    pub verify: bool,
    pub wait: Wait,
    /// Arena bytes of the Arrow ring (the parent creates it).
    pub arena: u64,
    /// Consumer processes, each under its own name, each reading every
    /// message (a ring only).
    #[serde(default = "one")]
    pub consumers: u32,
    /// Producer processes, each joining the ring's stream (a lane of its
    /// own) and sending `messages` messages; one consumer reads every lane.
    #[serde(default = "one")]
    pub producers: u32,
    /// Through the fan-in ends (each producer joins the stream, the
    /// consumer reads every lane), even with one producer: set for every
    /// run of `bench --producers`, so that one producer is measured as
    /// several are.
    #[serde(default)]
    pub fan_in: bool,
}

fn one() -> u32 {
    1
}

impl Workload {
    /// First row and length of batch `d`.
    pub fn batch_span(&self, d: u64) -> (u64, u64) {
        let base = d * self.rows;
        (base, self.rows.min(self.total_rows.saturating_sub(base)))
    }

    /// Checks that every distinct batch has rows and that they fit in
    /// memory: a job comes from the command line.
    pub fn validate(&self) -> Result<(), BenchError> {
        let full = self.distinct.checked_mul(self.rows);
        let spans = self.distinct >= 1
            && self.rows >= 1
            && (self.distinct - 1) * self.rows < self.total_rows
            && full.is_some_and(|full| self.total_rows <= full);
        if !spans || self.total_rows > MAX_TOTAL_ROWS {
            return Err(BenchError::new(format!(
                "{} of {} cannot hold {} \
                 (each batch has rows, at most {MAX_TOTAL_ROWS} in all)",
                fmt_counted(self.distinct, "distinct batch", "distinct batches"),
                fmt_counted(self.rows, "row", "rows"),
                fmt_counted(self.total_rows, "row", "rows")
            )));
        }
        // The consumer of a run of several producers keeps a count per lane
        // and expects `messages` from each.
        if !(1..=MAX_PRODUCERS).contains(&self.producers) || self.all_messages().is_none() {
            return Err(BenchError::new(format!(
                "{} of {} each: 1 to {MAX_PRODUCERS} producers, \
                 at most 2^64 - 1 messages in all",
                fmt_counted(self.producers.into(), "producer", "producers"),
                fmt_counted(self.messages, "message", "messages")
            )));
        }
        Ok(())
    }

    /// Messages of all producers together; `None` past `u64::MAX`.
    pub fn all_messages(&self) -> Option<u64> {
        self.messages.checked_mul(self.producers.into())
    }
}

/// Where the two processes of a run meet: a ring (and its acknowledgement
/// ring) in `dir`, or a Unix socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Place {
    pub ring: String,
    #[serde(with = "path_bytes")]
    pub dir: PathBuf,
    #[serde(with = "path_bytes")]
    pub socket: PathBuf,
    /// The name a ring's consumer subscribes under, when a run has several
    /// (`c0`, `c1`, ...; `c0` acknowledges).
    #[serde(default)]
    pub subscriber: Option<String>,
}

/// One worker's instructions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub side: Side,
    pub transport: TransportKind,
    pub place: Place,
    pub workload: Workload,
}

impl Job {
    /// The worker's `--job` argument.
    pub fn to_arg(&self) -> Result<String, BenchError> {
        Ok(serde_json::to_string(self)?)
    }

    /// Reads and checks a `--job` argument.
    pub fn from_arg(arg: &str) -> Result<Self, BenchError> {
        let job: Self = serde_json::from_str(arg)
            .map_err(|e| BenchError::new(format!("--job is not a bench job: {e}")))?;
        job.workload.validate()?;
        if job.workload.producers > 1 && !job.workload.fan_in {
            return Err(BenchError::new("several producers need the fan-in ends"));
        }
        if job.workload.fan_in && job.transport != TransportKind::Ring {
            return Err(BenchError::new("several producers need a ring"));
        }
        Ok(job)
    }

    /// How the worker names itself in its errors.
    pub fn role(&self) -> &'static str {
        match (self.side, self.transport) {
            (Side::Tx, TransportKind::Ring) => "bench producer",
            (Side::Rx, TransportKind::Ring) => "bench consumer",
            (Side::Tx, TransportKind::Uds) => "bench producer (socket)",
            (Side::Rx, TransportKind::Uds) => "bench consumer (socket)",
        }
    }
}

/// A path as its bytes, so that a directory whose name is not UTF-8 still
/// reaches the worker.
mod path_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        p.as_os_str().as_bytes().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(OsString::from_vec(Vec::deserialize(d)?).into())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub fn job() -> Job {
        Job {
            side: Side::Rx,
            transport: TransportKind::Uds,
            place: Place {
                ring: "laminar-bench-7-1".into(),
                // Not UTF-8: passed as bytes.
                dir: PathBuf::from(OsString::from_vec(b"/dev/shm/\xffx".to_vec())),
                socket: "/tmp/laminar-bench-7-1.sock".into(),
                subscriber: Some("c1".into()),
            },
            workload: Workload {
                payload: PayloadKind::Arrow,
                messages: 30,
                rows: 7000,
                distinct: 3,
                total_rows: 20_001,
                samples: 50,
                verify: true,
                wait: Wait::Spin,
                arena: 16 << 20,
                consumers: 2,
                producers: 1,
                fan_in: false,
            },
        }
    }

    #[test]
    fn a_job_with_a_workload_that_leaves_a_batch_empty_is_refused() {
        let mut j = job();
        j.workload.total_rows = 14_000; // batch 2 would have no rows
        let e = Job::from_arg(&j.to_arg().unwrap()).unwrap_err();
        assert!(e.to_string().contains("cannot hold"), "{e}");
        j.workload.distinct = 0;
        assert!(Job::from_arg(&j.to_arg().unwrap()).is_err());
        j.workload.distinct = u64::MAX;
        assert!(Job::from_arg(&j.to_arg().unwrap()).is_err());
    }

    #[test]
    fn a_job_with_producers_out_of_range_or_too_many_messages_is_refused() {
        let mut j = job();
        j.transport = TransportKind::Ring;
        j.workload.fan_in = true;
        j.workload.producers = 3;
        assert!(Job::from_arg(&j.to_arg().unwrap()).is_ok());
        for (producers, messages) in [(0, 30), (MAX_PRODUCERS + 1, 30), (2, u64::MAX)] {
            j.workload.producers = producers;
            j.workload.messages = messages;
            let e = Job::from_arg(&j.to_arg().unwrap()).unwrap_err();
            assert!(e.to_string().contains("producers"), "{e}");
        }
        j.workload.producers = 2;
        j.workload.messages = 30;
        j.transport = TransportKind::Uds;
        let e = Job::from_arg(&j.to_arg().unwrap()).unwrap_err();
        assert!(e.to_string().contains("need a ring"), "{e}");
        j.transport = TransportKind::Ring;
        j.workload.fan_in = false;
        let e = Job::from_arg(&j.to_arg().unwrap()).unwrap_err();
        assert!(e.to_string().contains("fan-in"), "{e}");
    }

    #[test]
    fn a_job_argument_that_is_not_a_job_is_an_error() {
        for arg in ["", "{}", "[1]", r#"{"side":"tx"}"#] {
            let e = Job::from_arg(arg).unwrap_err();
            assert!(e.to_string().starts_with("--job is not a bench job"), "{e}");
        }
        let mut v = serde_json::to_value(job()).unwrap();
        v["workload"]["extra"] = 1.into();
        assert!(Job::from_arg(&v.to_string()).is_err(), "unknown field");
    }
}
