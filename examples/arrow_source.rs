//! A load source for benchmarks and tests in any language: sends one
//! generated batch (`id` Int64, `px` Float64, `tag` Utf8) into an Arrow
//! ring again and again, then ends the stream. The batch is built once, so
//! the figure a consumer measures is the ring's, not the batch builders'.
//!
//! ```text
//! cargo run --release --example arrow_source -- --dir /dev/shm quotes 400 65536
//! ```
//!
//! Usage: `arrow_source [--dir DIR] [RING [BATCHES [ROWS]]]` (ring `quotes`,
//! 400 batches of 65,536 rows by default).

mod support;

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use laminar_ring::arrow::{ArrowRingError, ArrowRingOptions, BatchProducer};
use laminar_ring::shm::OpenError;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = support::parse(
        "Sends BATCHES copies of one batch of ROWS rows (id, px, tag) into an Arrow ring, \
         then ends the stream.",
        "[--dir DIR] [RING [BATCHES [ROWS]]]",
        3,
    );
    let name = args.get(0, "quotes");
    let number = |i: usize, default: &str| -> usize {
        let s = args.get(i, default);
        s.parse().unwrap_or_else(|_| {
            eprintln!(
                "arrow_source: {s:?} is not a number of {}",
                ["", "batches", "rows"][i]
            );
            std::process::exit(2)
        })
    };
    let (batches, rows) = (number(1, "400"), number(2, "65536"));
    let opts = ArrowRingOptions {
        segment: support::segment_options(&args.dir),
        ..ArrowRingOptions::default()
    };
    let mut tx = match BatchProducer::open(&name, &opts) {
        Err(ArrowRingError::Open(OpenError::NotFound { .. })) => {
            BatchProducer::create(&name, &opts)?
        }
        r => r?,
    };
    let id: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows as i64));
    let px: ArrayRef = Arc::new(Float64Array::from_iter_values(
        (0..rows).map(|j| j as f64 * 0.25),
    ));
    let tag: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..rows).map(|j| ["alpha", "beta", "gamma", "delta"][j % 4]),
    ));
    let batch = RecordBatch::try_from_iter([("id", id), ("px", px), ("tag", tag)])?;
    for _ in 0..batches {
        tx.send(&batch)?;
    }
    tx.close()?;
    Ok(())
}
