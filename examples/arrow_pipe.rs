//! The library side of `laminar-ring produce`: a process that sends Arrow
//! batches into a ring, creating it if it does not exist, and ends the
//! stream only when all of its data went in.
//!
//! ```text
//! # shell 1: the sidecar (see examples/sidecar.rs), or the command
//! laminar-ring consume prices -o prices.arrows
//! # shell 2
//! cargo run --release --example arrow_pipe -- prices
//! ```
//!
//! Usage: `arrow_pipe [--dir DIR] [RING]` (ring `prices` in
//! `$LAMINAR_RING_DIR`, else `/dev/shm`, by default).

mod support;

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use laminar_ring::arrow::{ArrowRingError, ArrowRingOptions, BatchProducer};
use laminar_ring::shm::OpenError;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = support::parse(
        "Sends 100 batches of 10,000 rows into an Arrow ring, then ends the stream.",
        "[--dir DIR] [RING]",
        1,
    );
    let name = args.get(0, "prices");
    let opts = ArrowRingOptions {
        segment: support::segment_options(&args.dir),
        ..ArrowRingOptions::default()
    };
    // Either side may start first: open, or create when there is no ring.
    let mut tx = match BatchProducer::open(&name, &opts) {
        Err(ArrowRingError::Open(OpenError::NotFound { .. })) => {
            BatchProducer::create(&name, &opts)?
        }
        r => r?,
    };
    for k in 0..100_i64 {
        let batch = match prices(k) {
            Ok(b) => b,
            Err(e) => {
                // The consumer must not take a partial stream for a whole
                // one: it gets what was sent, then `PeerGone`.
                tx.abandon();
                return Err(e.into());
            }
        };
        // Waits while the ring is full; Err means the batch was not taken.
        tx.send(&batch)?;
    }
    tx.close()?; // end of stream: the consumer drains, then sees the end
    println!("sent 100 batches of 10,000 rows to ring '{name}'");
    Ok(())
}

/// Batch `k`: 10,000 rows of (seq, price, venue).
fn prices(k: i64) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let rows = 10_000;
    let seq: ArrayRef = Arc::new(Int64Array::from_iter_values(k * rows..(k + 1) * rows));
    let px: ArrayRef = Arc::new(Float64Array::from_iter_values(
        (0..rows).map(|i| 100.0 + (i % 200) as f64 * 0.01),
    ));
    let venue: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..rows).map(|i| ["XNAS", "XNYS", "BATS"][(i % 3) as usize]),
    ));
    RecordBatch::try_from_iter([("seq", seq), ("price", px), ("venue", venue)])
}
