//! A producer process and a consumer process exchanging plain-data records
//! through a shared-memory ring. Run without arguments, it creates the ring,
//! starts the consumer as a second process (this program with `consume`),
//! produces, and waits for the consumer's verdict.
//!
//! ```text
//! cargo run --release --example shm_pipe
//! # or by hand, in two shells, in either order:
//! cargo run --release --example shm_pipe -- consume demo-ring
//! cargo run --release --example shm_pipe -- produce demo-ring
//! ```
//!
//! Usage: `shm_pipe [--dir DIR] [produce RING | consume RING]` (rings in
//! `$LAMINAR_RING_DIR`, else `/dev/shm`).

mod support;

use std::process::Command;
use std::time::Instant;

use bytemuck::{Pod, Zeroable};
use laminar_ring::shm::{
    OpenError, SegmentOptions, ShmConsumer, ShmPopError, ShmProducer, ShmSlot,
};

/// One record on the wire: only plain data can cross a process boundary.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Tick {
    seq: u64,
    price: f64,
    qty: u32,
    venue: u32,
}

// The name both processes agree on; a new field would make it "Tick.v2".
impl ShmSlot for Tick {
    const TYPE_NAME: &'static str = "laminar-example.Tick";
}

const TICKS: u64 = 5_000_000;
const SLOTS: usize = 1 << 14;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = support::parse(
        "Moves 5,000,000 records between two processes through a shared-memory ring.",
        "[--dir DIR] [produce RING | consume RING]",
        2,
    );
    let opts = support::segment_options(&args.dir);
    match (
        args.positional.first().map(String::as_str),
        args.positional.get(1),
    ) {
        (Some("produce"), Some(name)) => produce(name, &opts),
        (Some("consume"), Some(name)) => consume(name, &opts),
        (Some(other), _) => {
            eprintln!("shm_pipe: expected `produce RING` or `consume RING`, got `{other}`");
            std::process::exit(2)
        }
        (None, _) => {
            let name = format!("laminar-example-{}", std::process::id());
            let mut consumer = Command::new(std::env::current_exe()?)
                .arg("--dir")
                .arg(&args.dir)
                .args(["consume", &name])
                .spawn()?;
            produce(&name, &opts)?;
            let ok = consumer.wait()?.success();
            laminar_ring::shm::remove_in(&name, &args.dir)?;
            if !ok {
                return Err("consumer failed".into());
            }
            Ok(())
        }
    }
}

/// Either side may create the ring; the other opens it.
fn produce(name: &str, opts: &SegmentOptions) -> Result<(), Box<dyn std::error::Error>> {
    let mut tx = match ShmProducer::<Tick>::create_with(name, SLOTS, opts) {
        Err(OpenError::AlreadyExists { .. }) => ShmProducer::open_with(name, opts)?,
        other => other?,
    };
    let start = Instant::now();
    let mut batch = Vec::with_capacity(256);
    let mut seq = 0;
    while seq < TICKS {
        batch.clear();
        batch.extend((seq..(seq + 256).min(TICKS)).map(|s| Tick {
            seq: s,
            price: 100.0 + (s % 100) as f64 / 100.0,
            qty: (s % 1000) as u32,
            venue: (s % 7) as u32,
        }));
        let mut sent = 0;
        while sent < batch.len() {
            let n = tx.push_slice(&batch[sent..]);
            if n == 0 {
                tx.push(batch[sent])?; // sleeps on the futex while full
                sent += 1;
            }
            sent += n;
        }
        seq += batch.len() as u64;
    }
    println!(
        "producer: {TICKS} ticks in {:.2?} ({:.1} M/s)",
        start.elapsed(),
        TICKS as f64 / start.elapsed().as_secs_f64() / 1e6
    );
    tx.close(); // end of stream
    Ok(())
}

fn consume(name: &str, opts: &SegmentOptions) -> Result<(), Box<dyn std::error::Error>> {
    let mut rx = match ShmConsumer::<Tick>::create_with(name, SLOTS, opts) {
        Err(OpenError::AlreadyExists { .. }) => ShmConsumer::open_with(name, opts)?,
        other => other?,
    };
    let mut expected = 0_u64;
    let mut volume = 0_u64;
    loop {
        match rx.pop() {
            Ok(t) => {
                if t.seq != expected {
                    return Err(format!("expected tick {expected}, got {}", t.seq).into());
                }
                volume += u64::from(t.qty);
                expected += 1;
            }
            Err(ShmPopError::EndOfStream) => break,
            Err(e) => return Err(e.into()),
        }
    }
    println!("consumer: {expected} ticks in order, total quantity {volume}");
    if expected == TICKS {
        Ok(())
    } else {
        Err("stream ended early".into())
    }
}
