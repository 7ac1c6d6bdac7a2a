//! `BatchConsumer::detach`: a consumer that could not pass a batch on
//! leaves it, and everything after it, to the next consumer.
#![cfg(feature = "arrow")]

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use laminar_ring::arrow::{ArrowRingOptions, BatchConsumer, BatchProducer};

struct Ring(String);

impl Drop for Ring {
    fn drop(&mut self) {
        let _ = laminar_ring::shm::remove(&self.0);
    }
}

fn batch(v: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![v, v + 1]))]).unwrap()
}

fn first(b: &RecordBatch) -> i64 {
    b.column(0).as_primitive::<Int64Type>().value(0)
}

#[test]
fn detach_releases_what_was_dropped_and_leaves_live_leases_to_the_next_consumer() {
    let ring = Ring(format!("lr-detach-{}", std::process::id()));
    let _ = laminar_ring::shm::remove(&ring.0);
    let opts = ArrowRingOptions {
        slots: 16,
        arena_bytes: 1 << 20,
        ..ArrowRingOptions::default()
    };
    let mut tx = BatchProducer::create(&ring.0, &opts).unwrap();
    for v in [0, 10, 20, 30] {
        tx.send(&batch(v)).unwrap();
    }
    tx.close().unwrap();

    let mut rx = BatchConsumer::open(&ring.0, &opts).unwrap();
    let b0 = rx.recv_zero_copy().unwrap().unwrap();
    let b1 = rx.recv_zero_copy().unwrap().unwrap();
    let b2 = rx.recv_zero_copy().unwrap().unwrap();
    assert_eq!([first(&b0), first(&b1), first(&b2)], [0, 10, 20]);
    // b0 was passed on; b1 failed and is kept; b2 had been read ahead.
    drop(b0);
    drop(b2);
    rx.detach();
    drop(b1); // after the detach: marks itself done, releases nothing

    let mut next = BatchConsumer::open(&ring.0, &opts).unwrap();
    let mut got = Vec::new();
    while let Some(b) = next.recv().unwrap() {
        got.push(first(&b));
    }
    assert_eq!(
        got,
        [10, 20, 30],
        "b0 released once; b1 and everything after it again"
    );
}

#[test]
fn dropping_a_consumer_instead_releases_every_dropped_lease() {
    // The behaviour detach exists to avoid, pinned so that the contrast holds.
    let ring = Ring(format!("lr-detach-drop-{}", std::process::id()));
    let _ = laminar_ring::shm::remove(&ring.0);
    let opts = ArrowRingOptions {
        slots: 16,
        arena_bytes: 1 << 20,
        ..ArrowRingOptions::default()
    };
    let mut tx = BatchProducer::create(&ring.0, &opts).unwrap();
    for v in [0, 10] {
        tx.send(&batch(v)).unwrap();
    }
    tx.close().unwrap();
    let mut rx = BatchConsumer::open(&ring.0, &opts).unwrap();
    let b0 = rx.recv_zero_copy().unwrap().unwrap();
    drop(b0);
    drop(rx);
    let mut next = BatchConsumer::open(&ring.0, &opts).unwrap();
    assert_eq!(first(&next.recv().unwrap().unwrap()), 10);
}
