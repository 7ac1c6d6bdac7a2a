//! What one message is: [`U64`] values or [`Arrow`] batches. A payload says
//! what the producer sends as message `k` and as latency sample `i`, and
//! checks what the consumer receives; a transport only moves it.

use std::ops::{AddAssign, Range};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};

use super::BenchError;
use super::job::Workload;
use crate::pipe::data_bytes;

pub const COLUMNS: &str = "id Int64, x Float64, tag Utf8";
const TAGS: [&str; 7] = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"];
/// Most `u64` values the producer hands a transport at once.
const CHUNK: u64 = 4096;

/// What the consumer counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub messages: u64,
    pub rows: u64,
    pub bytes: u64,
}

impl AddAssign for Tally {
    fn add_assign(&mut self, t: Self) {
        self.messages += t.messages;
        self.rows += t.rows;
        self.bytes += t.bytes;
    }
}

/// One kind of message, on both ends of a run.
pub trait Payload {
    /// What the producer builds before the clock starts.
    type Source;
    /// Messages of the throughput phase, as the producer hands them to a
    /// transport.
    type Bulk<'a>;
    /// One message of the latency phase.
    type Sample<'a>;
    /// What a transport hands the consumer.
    type Got<'a>;

    fn source(w: &Workload) -> Self::Source;
    /// Messages from `k` on, as many as one send takes, and how many.
    fn bulk<'a>(src: &'a Self::Source, w: &Workload, k: u64) -> (Self::Bulk<'a>, u64);
    fn sample(src: &Self::Source, i: u64) -> Self::Sample<'_>;
    /// Checks what arrived as messages `k..`; returns what it counted.
    fn check(w: &Workload, k: u64, got: Self::Got<'_>) -> Result<Tally, BenchError>;
    /// Checks what arrived as latency sample `i` (`None`: the stream ended).
    fn check_sample(i: u64, got: Option<Self::Got<'_>>) -> Result<(), BenchError>;
}

/// One `u64` per message; message `k` is the value `k`, sample `i` is `i`.
#[derive(Debug)]
pub struct U64;

/// `u64` values as a transport received them.
#[derive(Debug, Clone, Copy)]
pub enum Received<'a> {
    Native(&'a [u64]),
    /// 8 bytes a value, little-endian.
    LittleEndian(&'a [u8]),
}

impl Received<'_> {
    /// Checks that the values are `k, k + 1, ...`; returns how many.
    fn check_from(self, k: u64) -> Result<u64, BenchError> {
        /// Every value compared: the differences are OR-ed together
        /// without a branch per value (which the compiler vectorizes), and
        /// looked for one by one only when there is one.
        fn run(values: impl Iterator<Item = u64> + Clone, k: u64) -> Result<u64, BenchError> {
            let (n, diff) = values
                .clone()
                .fold((0u64, 0u64), |(i, d), v| (i + 1, d | (v ^ (k + i))));
            if diff != 0 {
                // Read again: a producer breaking the protocol may have
                // changed them meanwhile.
                return Err(BenchError::new(
                    match (k..).zip(values).find(|&(want, v)| v != want) {
                        Some((next, v)) => format!("item {next} is {v}"),
                        None => format!("items from {k} on changed while checked"),
                    },
                ));
            }
            Ok(n)
        }
        match self {
            Self::Native(v) => run(v.iter().copied(), k),
            Self::LittleEndian(b) => run(b.chunks_exact(8).map(le_u64), k),
        }
    }
}

fn le_u64(c: &[u8]) -> u64 {
    u64::from_le_bytes(c.try_into().expect("chunks of 8 bytes"))
}

impl Payload for U64 {
    type Source = ();
    type Bulk<'a> = Range<u64>;
    type Sample<'a> = u64;
    type Got<'a> = Received<'a>;

    fn source(_: &Workload) {}

    fn bulk(_: &(), w: &Workload, k: u64) -> (Range<u64>, u64) {
        let n = (w.messages - k).min(CHUNK);
        (k..k + n, n)
    }

    fn sample(_: &(), i: u64) -> u64 {
        i
    }

    fn check(_: &Workload, k: u64, got: Received<'_>) -> Result<Tally, BenchError> {
        let n = got.check_from(k)?;
        Ok(Tally {
            messages: n,
            rows: n,
            bytes: 8 * n,
        })
    }

    fn check_sample(i: u64, got: Option<Received<'_>>) -> Result<(), BenchError> {
        let v = match got {
            Some(Received::Native(&[v])) => v,
            Some(Received::LittleEndian(b)) if b.len() == 8 => le_u64(b),
            _ => return Err(BenchError::new(format!("round trip {i}: no one value"))),
        };
        if v != i {
            return Err(BenchError::new(format!("round trip {i}: got {v}")));
        }
        Ok(())
    }
}

/// One Arrow batch per message (id Int64, x Float64, tag Utf8); sample `i`
/// is the first row of batch 0.
#[derive(Debug)]
pub struct Arrow;

/// The producer's batches, built before the clock starts.
#[derive(Debug)]
pub struct Batches {
    pub distinct: Vec<RecordBatch>,
    pub one_row: RecordBatch,
}

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
fn check_batch(w: &Workload, k: u64, b: &RecordBatch) -> Result<(), BenchError> {
    let (base, len) = w.batch_span(k % w.distinct);
    let bad = |why: String| BenchError::new(format!("message {k}: {why}"));
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

impl Payload for Arrow {
    type Source = Batches;
    type Bulk<'a> = &'a RecordBatch;
    type Sample<'a> = &'a RecordBatch;
    type Got<'a> = &'a RecordBatch;

    /// The workload is validated: batch 0 has rows.
    fn source(w: &Workload) -> Batches {
        let distinct: Vec<_> = (0..w.distinct)
            .map(|d| {
                let (base, len) = w.batch_span(d);
                arrow_batch(base, len)
            })
            .collect();
        let one_row = distinct[0].slice(0, 1);
        Batches { distinct, one_row }
    }

    fn bulk<'a>(src: &'a Batches, w: &Workload, k: u64) -> (&'a RecordBatch, u64) {
        (&src.distinct[(k % w.distinct) as usize], 1)
    }

    fn sample(src: &Batches, _: u64) -> &RecordBatch {
        &src.one_row
    }

    fn check(w: &Workload, k: u64, got: &RecordBatch) -> Result<Tally, BenchError> {
        check_batch(w, k, got)?;
        Ok(Tally {
            messages: 1,
            rows: got.num_rows() as u64,
            bytes: data_bytes(got),
        })
    }

    fn check_sample(i: u64, got: Option<&RecordBatch>) -> Result<(), BenchError> {
        if got.map(|b| b.num_rows()) != Some(1) {
            return Err(BenchError::new(format!("round trip {i}: no one-row batch")));
        }
        Ok(())
    }
}
