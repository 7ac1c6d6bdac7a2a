//! Property: any batch of a randomly generated schema comes out of the ring
//! equal to what went in, on the copy and the zero-copy path.
#![cfg(feature = "arrow")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::builder::{Int32Builder, ListBuilder};
use arrow_array::*;
use arrow_schema::{Field, Schema};
use laminar_ring::arrow::{ArrowRingOptions, BatchConsumer, BatchProducer};
use proptest::prelude::*;

/// One column: its type and its values (None = null).
#[derive(Debug, Clone)]
enum Col {
    I32(Vec<Option<i32>>),
    I64(Vec<Option<i64>>),
    F64(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
    Utf8(Vec<Option<String>>),
    List(Vec<Option<Vec<i32>>>),
}

/// `rows` values of `s`, a fifth of them null.
fn nullable<T: std::fmt::Debug + Clone + 'static>(
    rows: usize,
    s: BoxedStrategy<T>,
) -> impl Strategy<Value = Vec<Option<T>>> {
    prop::collection::vec(prop::option::weighted(0.8, s), rows)
}

fn col_strategy(rows: usize) -> impl Strategy<Value = Col> {
    prop_oneof![
        nullable(rows, any::<i32>().boxed()).prop_map(Col::I32),
        nullable(rows, any::<i64>().boxed()).prop_map(Col::I64),
        nullable(
            rows,
            any::<f64>()
                .prop_filter("NaN != NaN", |f| !f.is_nan())
                .boxed()
        )
        .prop_map(Col::F64),
        nullable(rows, any::<bool>().boxed()).prop_map(Col::Bool),
        nullable(rows, ".{0,12}".boxed()).prop_map(Col::Utf8),
        nullable(rows, prop::collection::vec(any::<i32>(), 0..4).boxed()).prop_map(Col::List),
    ]
}

fn batch_strategy() -> impl Strategy<Value = RecordBatch> {
    (0_usize..60)
        .prop_flat_map(|rows| prop::collection::vec(col_strategy(rows), 1..5))
        .prop_map(|cols| {
            let arrays: Vec<ArrayRef> = cols
                .into_iter()
                .map(|c| -> ArrayRef {
                    match c {
                        Col::I32(v) => Arc::new(Int32Array::from(v)),
                        Col::I64(v) => Arc::new(Int64Array::from(v)),
                        Col::F64(v) => Arc::new(Float64Array::from(v)),
                        Col::Bool(v) => Arc::new(BooleanArray::from(v)),
                        Col::Utf8(v) => Arc::new(StringArray::from(v)),
                        Col::List(v) => {
                            let mut b = ListBuilder::new(Int32Builder::new());
                            for item in v {
                                match item {
                                    Some(xs) => {
                                        b.values().append_slice(&xs);
                                        b.append(true);
                                    }
                                    None => b.append_null(),
                                }
                            }
                            Arc::new(b.finish())
                        }
                    }
                })
                .collect();
            let fields: Vec<Field> = arrays
                .iter()
                .enumerate()
                .map(|(i, a)| Field::new(format!("c{i}"), a.data_type().clone(), true))
                .collect();
            RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("valid batch")
        })
}

static CASE: AtomicUsize = AtomicUsize::new(0);

/// A ring name whose segment is removed when the case ends, also when it
/// fails (proptest then runs many more cases while shrinking).
struct RemovedOnDrop(String);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = laminar_ring::shm::remove(&self.0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn prop_ipc_round_trip_returns_the_same_batch(
        batch in batch_strategy(),
        zero_copy in any::<bool>(),
        slices in 1_usize..4,
    ) {
        let ring = RemovedOnDrop(format!("lr-prop-arrow-{}-{}", std::process::id(), CASE.fetch_add(1, Ordering::Relaxed)));
        let name = &ring.0;
        let opts = ArrowRingOptions { slots: 16, arena_bytes: 1 << 20, ..ArrowRingOptions::default() };
        let mut tx = BatchProducer::create(name, &opts).unwrap();
        let mut rx = BatchConsumer::open(name, &opts).unwrap();
        // Send the batch and some slices of it (slices exercise offsets).
        let rows = batch.num_rows();
        let sent: Vec<RecordBatch> = (0..slices)
            .map(|k| if k == 0 { batch.clone() } else { batch.slice(rows * k / (slices + 1), rows / (slices + 1)) })
            .collect();
        for b in &sent {
            tx.send(b).unwrap();
        }
        for (k, b) in sent.iter().enumerate() {
            let got = if zero_copy {
                rx.recv_zero_copy().unwrap().map(|l| l.into_inner())
            } else {
                rx.recv().unwrap()
            };
            prop_assert_eq!(got.as_ref(), Some(b), "batch {} of {:?}", k, b.schema());
        }
    }
}
