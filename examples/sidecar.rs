//! The library side of `laminar-ring consume --follow`: a sidecar daemon
//! that drains a ring into an Arrow IPC stream file, survives producers
//! that finish or crash, and on SIGINT/SIGTERM finishes the batch in hand,
//! completes the file and exits.
//!
//! ```text
//! cargo run --release --example sidecar -- prices prices.arrows
//! # elsewhere, any number of times, in any order:
//! cargo run --release --example arrow_pipe -- prices
//! ```
//!
//! Usage: `sidecar [--dir DIR] [RING [OUTPUT]]` (ring `prices`, output
//! `RING.arrows`, rings in `$LAMINAR_RING_DIR`, else `/dev/shm`).

mod support;

use std::fs::File;
use std::io::BufWriter;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow_ipc::writer::StreamWriter;
use laminar_ring::arrow::{ArrowRingError, ArrowRingOptions, BatchConsumer};
use laminar_ring::shm::OpenError;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = support::parse(
        "Drains an Arrow ring into an Arrow IPC stream file until SIGINT/SIGTERM.",
        "[--dir DIR] [RING [OUTPUT]]",
        2,
    );
    let name = args.get(0, "prices");
    let path = args.get(1, &format!("{name}.arrows"));
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let opts = ArrowRingOptions {
        segment: support::segment_options(&args.dir),
        ..ArrowRingOptions::default()
    };
    let mut rx = match BatchConsumer::open(&name, &opts) {
        Err(ArrowRingError::Open(OpenError::NotFound { .. })) => {
            BatchConsumer::create(&name, &opts)?
        }
        r => r?,
    };
    let mut out: Option<StreamWriter<BufWriter<File>>> = None;
    let mut rows = 0;
    while !stop.load(Ordering::Relaxed) {
        // A timeout, so that a signal is noticed within 100 ms.
        match rx.recv_zero_copy_timeout(Duration::from_millis(100)) {
            Ok(Some(batch)) => {
                if out.is_none() {
                    // Every later producer must send this schema.
                    rx.expect_schema(batch.schema());
                    let file = BufWriter::new(File::create(&path)?);
                    out = Some(StreamWriter::try_new(file, &batch.schema())?);
                }
                let w = out.as_mut().expect("opened above");
                w.write(&batch)?; // reads the shared memory directly
                w.flush()?; // on disk before the slot is released...
                rows += batch.num_rows();
                drop(batch); // ...here
            }
            // End of a stream, or a producer that died: wait for the next.
            Ok(None) | Err(ArrowRingError::PeerGone) => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(ArrowRingError::Timeout) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(mut w) = out {
        w.finish()?;
    }
    eprintln!("sidecar: wrote {rows} rows from ring '{name}' to {path}");
    Ok(())
}
