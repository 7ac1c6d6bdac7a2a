//! Batches built in the arena (`BatchProducer::loan`): every flat type
//! arrives equal to the batch the same values make, on both receive paths
//! and between batches sent by copy; a dropped loan sends nothing; every
//! misuse and every bad offset is an error that sends nothing.
#![cfg(feature = "arrow")]

use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::*;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use laminar_ring::arrow::{
    ArrowRingError, ArrowRingOptions, BatchConsumer, BatchLoan, BatchProducer,
};
use proptest::prelude::*;

struct Ring(String);

impl Ring {
    fn new(test: &str) -> Self {
        let name = format!("lr-loan-{}-{test}", std::process::id());
        let _ = laminar_ring::shm::remove(&name);
        Self(name)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let _ = laminar_ring::shm::remove(&self.0);
    }
}

fn opts() -> ArrowRingOptions {
    ArrowRingOptions {
        slots: 64,
        arena_bytes: 4 << 20,
        max_leases: 8,
        ..ArrowRingOptions::default()
    }
}

fn pair(ring: &Ring) -> (BatchProducer, BatchConsumer) {
    let tx = BatchProducer::create(&ring.0, &opts()).unwrap();
    let rx = BatchConsumer::open(&ring.0, &opts()).unwrap();
    (tx, rx)
}

/// Whether no batch is waiting in the ring.
fn nothing_waiting(rx: &mut BatchConsumer) -> bool {
    match rx.recv_timeout(Duration::from_millis(1)) {
        Err(ArrowRingError::Timeout) => true,
        Ok(Some(b)) => panic!("a batch of {} rows was waiting", b.num_rows()),
        other => panic!("{other:?}"),
    }
}

/// Copies the fixed-width values of `array` into column `col` of `loan`.
fn fixed<T: ArrowPrimitiveType>(loan: &mut BatchLoan<'_>, col: usize, array: &ArrayRef) {
    let values = array.as_primitive::<T>().values();
    loan.values_mut::<T>(col).unwrap().copy_from_slice(values);
}

/// Writes the bits of `bits` (from its offset on) to `dst`, bit 0 first.
fn copy_bits(dst: &mut [u8], bits: &arrow_buffer::BooleanBuffer) {
    dst.fill(0);
    for (j, b) in bits.iter().enumerate() {
        dst[j / 8] |= u8::from(b) << (j % 8);
    }
}

/// Builds `batch` (of the producer's schema) in a loan and commits it.
fn send_by_loan(tx: &mut BatchProducer, batch: &RecordBatch) -> Result<(), ArrowRingError> {
    let value_bytes: Vec<usize> = batch
        .columns()
        .iter()
        .filter_map(|a| match a.data_type() {
            DataType::Utf8 => Some(span(a.as_string::<i32>().offsets())),
            DataType::LargeUtf8 => Some(span(a.as_string::<i64>().offsets())),
            DataType::Binary => Some(span(a.as_binary::<i32>().offsets())),
            DataType::LargeBinary => Some(span(a.as_binary::<i64>().offsets())),
            _ => None,
        })
        .collect();
    let mut loan = tx.loan(batch.num_rows(), &value_bytes)?;
    assert_eq!(loan.rows(), batch.num_rows());
    for (col, a) in batch.columns().iter().enumerate() {
        if let Some(nulls) = a.nulls() {
            copy_bits(loan.validity_mut(col).unwrap(), nulls.inner());
        }
        match a.data_type() {
            DataType::Int8 => fixed::<Int8Type>(&mut loan, col, a),
            DataType::Int16 => fixed::<Int16Type>(&mut loan, col, a),
            DataType::Int32 => fixed::<Int32Type>(&mut loan, col, a),
            DataType::Int64 => fixed::<Int64Type>(&mut loan, col, a),
            DataType::UInt8 => fixed::<UInt8Type>(&mut loan, col, a),
            DataType::UInt16 => fixed::<UInt16Type>(&mut loan, col, a),
            DataType::UInt32 => fixed::<UInt32Type>(&mut loan, col, a),
            DataType::UInt64 => fixed::<UInt64Type>(&mut loan, col, a),
            DataType::Float32 => fixed::<Float32Type>(&mut loan, col, a),
            DataType::Float64 => fixed::<Float64Type>(&mut loan, col, a),
            DataType::Date32 => fixed::<Date32Type>(&mut loan, col, a),
            DataType::Decimal128(_, _) => fixed::<Decimal128Type>(&mut loan, col, a),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                fixed::<TimestampMicrosecondType>(&mut loan, col, a)
            }
            DataType::Boolean => copy_bits(loan.bits_mut(col).unwrap(), a.as_boolean().values()),
            DataType::Utf8 => fill_strings(&mut loan, col, a.as_string::<i32>()),
            DataType::LargeUtf8 => fill_strings(&mut loan, col, a.as_string::<i64>()),
            DataType::Binary => loan
                .fill_bytes(
                    col,
                    a.as_binary::<i32>().iter().map(|v| v.unwrap_or_default()),
                )
                .unwrap(),
            DataType::LargeBinary => loan
                .fill_bytes(
                    col,
                    a.as_binary::<i64>().iter().map(|v| v.unwrap_or_default()),
                )
                .unwrap(),
            t => panic!("no loan for {t}"),
        }
    }
    loan.commit()
}

/// A string column through `offsets_mut` and `bytes_mut`, as a caller
/// that writes in place would (`fill_bytes` does the binary columns).
fn fill_strings<O: OffsetSizeTrait>(
    loan: &mut BatchLoan<'_>,
    col: usize,
    a: &GenericStringArray<O>,
) {
    let first = a.offsets()[0];
    let offsets: Vec<O> = a.offsets().iter().map(|&o| o - first).collect();
    loan.offsets_mut::<O>(col)
        .unwrap()
        .copy_from_slice(&offsets);
    let values = &a.values()[first.as_usize()..a.offsets()[a.len()].as_usize()];
    loan.bytes_mut(col).unwrap()[..values.len()].copy_from_slice(values);
}

fn span<O: OffsetSizeTrait>(offsets: &arrow_buffer::OffsetBuffer<O>) -> usize {
    (offsets[offsets.len() - 1] - offsets[0]).as_usize()
}

/// Every flat type, with and without nulls, non-nullable fields too.
fn flat_batch(rows: usize) -> RecordBatch {
    let words = ["", "a", "ñu", "日本語", "x€y", "z"];
    let word = |i: usize| words[i % words.len()];
    let null_every = |k: usize| move |i: usize| i % k == k - 1;
    let cols: Vec<(&str, ArrayRef, bool)> = vec![
        (
            "i8",
            Arc::new(Int8Array::from_iter(
                (0..rows).map(|i| (!null_every(3)(i)).then_some(i as i8)),
            )),
            true,
        ),
        (
            "i16",
            Arc::new(Int16Array::from_iter_values(
                (0..rows).map(|i| i as i16 - 99),
            )),
            false,
        ),
        (
            "i32",
            Arc::new(Int32Array::from_iter_values(
                (0..rows).map(|i| i as i32 * 3),
            )),
            true,
        ),
        (
            "i64",
            Arc::new(Int64Array::from_iter_values(
                (0..rows as i64).map(|i| i * 1_000_003),
            )),
            false,
        ),
        (
            "u8",
            Arc::new(UInt8Array::from_iter_values((0..rows).map(|i| i as u8))),
            true,
        ),
        (
            "u16",
            Arc::new(UInt16Array::from_iter_values(
                (0..rows).map(|i| i as u16 * 7),
            )),
            true,
        ),
        (
            "u32",
            Arc::new(UInt32Array::from_iter(
                (0..rows).map(|i| (!null_every(2)(i)).then_some(i as u32)),
            )),
            true,
        ),
        (
            "u64",
            Arc::new(UInt64Array::from_iter_values(
                (0..rows).map(|i| u64::MAX - i as u64),
            )),
            false,
        ),
        (
            "f32",
            Arc::new(Float32Array::from_iter_values(
                (0..rows).map(|i| i as f32 / 4.0),
            )),
            true,
        ),
        (
            "f64",
            Arc::new(Float64Array::from_iter(
                (0..rows).map(|i| (!null_every(9)(i)).then_some(i as f64 * 0.5)),
            )),
            true,
        ),
        (
            "bool",
            Arc::new(BooleanArray::from_iter(
                (0..rows).map(|i| (!null_every(4)(i)).then_some(i % 3 == 0)),
            )),
            true,
        ),
        (
            "bool_nn",
            Arc::new(BooleanArray::from_iter((0..rows).map(|i| Some(i % 5 == 0)))),
            false,
        ),
        (
            "utf8",
            Arc::new(StringArray::from_iter(
                (0..rows).map(|i| (!null_every(5)(i)).then(|| word(i))),
            )),
            true,
        ),
        (
            "utf8_nn",
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| format!("row {i}")),
            )),
            false,
        ),
        (
            "large_utf8",
            Arc::new(LargeStringArray::from_iter_values(
                (0..rows).map(|i| word(i + 1)),
            )),
            true,
        ),
        (
            "binary",
            Arc::new(BinaryArray::from_iter(
                (0..rows).map(|i| (!null_every(6)(i)).then(|| word(i + 2).as_bytes())),
            )),
            true,
        ),
        (
            "large_binary",
            Arc::new(LargeBinaryArray::from_iter_values(
                (0..rows).map(|i| word(i + 3).as_bytes()),
            )),
            true,
        ),
        (
            "decimal",
            Arc::new(
                Decimal128Array::from_iter_values((0..rows as i128).map(|i| i * 12_345))
                    .with_precision_and_scale(20, 3)
                    .unwrap(),
            ),
            true,
        ),
        (
            "ts",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values((0..rows as i64).map(|i| i << 20))
                    .with_timezone("+01:00"),
            ),
            true,
        ),
        (
            "date",
            Arc::new(Date32Array::from_iter_values(0..rows as i32)),
            true,
        ),
    ];
    RecordBatch::try_from_iter_with_nullable(cols).unwrap()
}

#[test]
fn every_flat_type_built_in_a_loan_arrives_equal_on_both_receive_paths() {
    let ring = Ring::new("types");
    let (mut tx, mut rx) = pair(&ring);
    tx.set_schema(flat_batch(0).schema()).unwrap();
    let full = flat_batch(1500);
    // Sliced batches start their offsets and bits past 0.
    let batches = [
        flat_batch(0),
        flat_batch(1),
        flat_batch(7),
        full.slice(3, 1000),
        full,
    ];
    for (k, b) in batches.iter().enumerate() {
        // Loans and copies alternate on one stream.
        if k % 2 == 0 {
            send_by_loan(&mut tx, b).unwrap();
        } else {
            tx.send(b).unwrap();
        }
        send_by_loan(&mut tx, b).unwrap();
        let one = rx.recv().unwrap().unwrap();
        let two = rx.recv_zero_copy().unwrap().unwrap();
        assert_eq!(&one, b, "batch {k}, first");
        assert_eq!(&*two, b, "batch {k}, built in a loan, zero-copy");
        // The zero-copy batch lies in the mapping: it was built there.
        let map = rx.mapped_range();
        let p = two.column(3).to_data().buffers()[0].as_ptr() as usize;
        assert!(b.num_rows() == 0 || map.contains(&p));
        drop(two);
    }
    tx.close().unwrap();
    assert!(rx.recv().unwrap().is_none());
}

#[test]
fn a_batch_built_in_a_loan_first_sends_the_schema_and_a_consumer_reads_it_from_a_fresh_start() {
    let ring = Ring::new("first");
    let mut tx = BatchProducer::create(&ring.0, &opts()).unwrap();
    let b = flat_batch(100);
    tx.set_schema(b.schema()).unwrap();
    send_by_loan(&mut tx, &b).unwrap();
    tx.close().unwrap();
    // Attached after the whole stream was written.
    let mut rx = BatchConsumer::open(&ring.0, &opts()).unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), b);
    assert!(rx.recv().unwrap().is_none());
}

#[test]
fn a_dropped_loan_sends_nothing_and_its_space_goes_to_the_next_batch() {
    let ring = Ring::new("drop");
    let (mut tx, mut rx) = pair(&ring);
    let b = flat_batch(300);
    tx.set_schema(b.schema()).unwrap();
    for _ in 0..3 {
        let mut loan = tx.loan(300, &[4000, 4000, 4000, 4000, 4000]).unwrap();
        loan.values_mut::<Int64Type>(3).unwrap().fill(-1);
        loan.abort();
    }
    assert!(nothing_waiting(&mut rx), "a dropped loan was sent");
    send_by_loan(&mut tx, &b).unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), b);
    assert!(nothing_waiting(&mut rx));
    // Many more loans than the arena holds, every one dropped: the space
    // is reused, never lost.
    for _ in 0..2000 {
        let _dropped = tx.try_loan(300, &[4000, 4000, 4000, 4000, 4000]).unwrap();
    }
    send_by_loan(&mut tx, &b).unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), b);
}

fn text_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("n", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
    ]))
}

fn encode_error(r: Result<(), ArrowRingError>, says: &str) {
    match r {
        Err(ArrowRingError::Encode(e)) => {
            assert!(e.to_string().contains(says), "{e} does not say {says:?}")
        }
        other => panic!("expected an encode error saying {says:?}, got {other:?}"),
    }
}

fn loan_error(r: Result<BatchLoan<'_>, ArrowRingError>, says: &str) {
    encode_error(r.map(drop), says);
}

#[test]
fn misuse_is_an_error_that_sends_nothing() {
    let ring = Ring::new("misuse");
    let (mut tx, mut rx) = pair(&ring);
    loan_error(tx.loan(4, &[]), "needs the stream's schema");
    let list = Field::new_list("l", Field::new_list_field(DataType::Int32, true), true);
    let mut other = BatchProducer::create(&format!("{}-list", ring.0), &opts()).unwrap();
    other.set_schema(Arc::new(Schema::new(vec![list]))).unwrap();
    loan_error(other.loan(4, &[]), "flat schema");
    drop(other);
    let _ = laminar_ring::shm::remove(&format!("{}-list", ring.0));

    tx.set_schema(text_schema()).unwrap();
    match tx.set_schema(flat_batch(0).schema()) {
        Err(ArrowRingError::SchemaMismatch { .. }) => {}
        other => panic!("{other:?}"),
    }
    loan_error(
        tx.loan(4, &[]),
        "0 value sizes for a schema of 1 byte columns",
    );
    loan_error(tx.loan(4, &[8, 8]), "2 value sizes");
    match tx.loan(4, &[64 << 20]) {
        Err(ArrowRingError::BatchTooLarge { .. }) => {}
        other => panic!("{other:?}"),
    }
    match tx.loan(usize::MAX / 2, &[0]) {
        Err(ArrowRingError::BatchTooLarge { .. }) => {}
        other => panic!("{other:?}"),
    }
    let mut loan = tx.loan(4, &[16]).unwrap();
    encode_error(
        loan.values_mut::<Float64Type>(0).map(drop),
        "column 0 is Int64",
    );
    encode_error(
        loan.values_mut::<Int32Type>(0).map(drop),
        "no values of Int32",
    );
    encode_error(
        loan.values_mut::<Int64Type>(1).map(drop),
        "column 1 is Utf8",
    );
    encode_error(loan.values_mut::<Int64Type>(2).map(drop), "no column 2");
    encode_error(loan.validity_mut(0).map(drop), "not nullable");
    encode_error(loan.bits_mut(0).map(drop), "boolean bits");
    encode_error(loan.offsets_mut::<i64>(1).map(drop), "64-bit offsets");
    encode_error(loan.bytes_mut(0).map(drop), "value bytes");
    encode_error(
        loan.fill_bytes(1, ["a", "b", "c"]),
        "3 values for column 1 of 4 rows",
    );
    encode_error(
        loan.fill_bytes(1, ["a", "b", "c", "d", "e"]),
        "more than 4 values",
    );
    encode_error(
        loan.fill_bytes(1, ["aaaaaaaa", "bbbbbbbb", "c", "d"]),
        "more than the 16 bytes",
    );
    loan.abort();
    assert!(nothing_waiting(&mut rx));
}

#[test]
fn bad_offsets_or_text_fail_the_commit_and_send_nothing() {
    let ring = Ring::new("offsets");
    let (mut tx, mut rx) = pair(&ring);
    tx.set_schema(text_schema()).unwrap();
    let cases: [(&[i32], &[u8], &str); 6] = [
        (&[1, 1, 2, 3, 4], b"abcd", "first offset is 1"),
        (&[0, 2, 1, 3, 4], b"abcd", "offset 2 (1) is below"),
        (&[0, 1, 2, 3, 17], b"abcd", "offset 4 (17) lies past the 16"),
        (&[0, -1, 2, 3, 4], b"abcd", "offset 1 (-1) is negative"),
        (&[0, 1, 2, 3, 4], b"ab\xffd", "not UTF-8"),
        (
            &[0, 1, 2, 3, 4],
            "añb".as_bytes(),
            "offset 2 (2) cuts a character",
        ),
    ];
    for (offsets, bytes, says) in cases {
        let mut loan = tx.loan(4, &[16]).unwrap();
        loan.values_mut::<Int64Type>(0).unwrap().fill(7);
        loan.offsets_mut::<i32>(1).unwrap().copy_from_slice(offsets);
        loan.bytes_mut(1).unwrap()[..bytes.len()].copy_from_slice(bytes);
        match loan.commit() {
            Err(ArrowRingError::Encode(e)) => {
                let e = e.to_string();
                assert!(
                    e.contains("column 1 of 2") && e.contains(says),
                    "{e} does not say {says:?}"
                );
            }
            other => panic!("{says}: {other:?}"),
        }
        assert!(nothing_waiting(&mut rx), "{says}: something was sent");
    }
    // Nulls counted from the bitmap, the values under a null not checked
    // apart from their offsets.
    let mut loan = tx.loan(4, &[16]).unwrap();
    loan.values_mut::<Int64Type>(0)
        .unwrap()
        .copy_from_slice(&[1, 2, 3, 4]);
    loan.validity_mut(1).unwrap()[0] = 0b1011;
    loan.fill_bytes(1, ["x", "", "zz", "w"]).unwrap();
    loan.commit().unwrap();
    let got = rx.recv().unwrap().unwrap();
    let want = RecordBatch::try_new(
        text_schema(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            Arc::new(StringArray::from(vec![
                Some("x"),
                Some(""),
                None,
                Some("w"),
            ])),
        ],
    )
    .unwrap();
    assert_eq!(got, want);
    assert_eq!(got.column(1).null_count(), 1);
}

#[test]
fn a_loan_waits_for_room_and_try_loan_says_when_there_is_none() {
    let ring = Ring::new("room");
    let small = ArrowRingOptions {
        slots: 4,
        arena_bytes: 1 << 20,
        max_leases: 4,
        ..ArrowRingOptions::default()
    };
    let mut tx = BatchProducer::create(&ring.0, &small).unwrap();
    let mut rx = BatchConsumer::open(&ring.0, &small).unwrap();
    tx.set_schema(text_schema()).unwrap();
    let mut sent = 0;
    loop {
        match tx.try_loan(10, &[100]) {
            Ok(mut loan) => {
                loan.values_mut::<Int64Type>(0).unwrap().fill(sent);
                loan.fill_bytes(1, (0..10).map(|_| "v")).unwrap();
                loan.commit().unwrap();
                sent += 1;
            }
            Err(ArrowRingError::Timeout) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sent >= 2, "{sent} batches fitted");
    match tx.loan_timeout(10, &[100], Duration::from_millis(20)) {
        Err(ArrowRingError::Timeout) => {}
        other => panic!("{other:?}"),
    }
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while let Some(b) = rx.recv().unwrap() {
            seen.push(b.column(0).as_primitive::<Int64Type>().value(0));
        }
        seen
    });
    for k in sent..sent + 50 {
        let mut loan = tx.loan(10, &[100]).unwrap();
        loan.values_mut::<Int64Type>(0).unwrap().fill(k);
        loan.fill_bytes(1, (0..10).map(|_| "v")).unwrap();
        loan.commit().unwrap();
    }
    tx.close().unwrap();
    assert_eq!(reader.join().unwrap(), (0..sent + 50).collect::<Vec<_>>());
}

/// One column of a random batch.
#[derive(Debug, Clone)]
enum Col {
    I32(Vec<Option<i32>>),
    F64(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
    Utf8(Vec<Option<String>>),
    Bin(Vec<Vec<u8>>),
}

fn col_strategy(rows: usize) -> impl Strategy<Value = Col> {
    let opt = |p| prop::option::weighted(p, any::<i32>());
    prop_oneof![
        prop::collection::vec(opt(0.8), rows).prop_map(Col::I32),
        prop::collection::vec(any::<i32>().prop_map(Some), rows).prop_map(Col::I32),
        prop::collection::vec(prop::option::weighted(0.7, -1e9f64..1e9), rows).prop_map(Col::F64),
        prop::collection::vec(prop::option::weighted(0.9, any::<bool>()), rows).prop_map(Col::Bool),
        prop::collection::vec(prop::option::weighted(0.8, ".{0,9}"), rows).prop_map(Col::Utf8),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), rows).prop_map(Col::Bin),
    ]
}

fn batch_strategy() -> impl Strategy<Value = RecordBatch> {
    (0_usize..200)
        .prop_flat_map(|rows| prop::collection::vec((col_strategy(rows), any::<bool>()), 1..5))
        .prop_map(|cols| {
            let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = cols
                .into_iter()
                .enumerate()
                .map(|(i, (c, nullable))| {
                    let a: ArrayRef = match c {
                        Col::I32(v) => Arc::new(Int32Array::from(v)),
                        Col::F64(v) => Arc::new(Float64Array::from(v)),
                        Col::Bool(v) => Arc::new(BooleanArray::from(v)),
                        Col::Utf8(v) => Arc::new(StringArray::from(v)),
                        Col::Bin(v) => Arc::new(BinaryArray::from_iter_values(v)),
                    };
                    let nullable = nullable || a.null_count() > 0;
                    (
                        Field::new(format!("c{i}"), a.data_type().clone(), nullable),
                        a,
                    )
                })
                .unzip();
            RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any flat batch, built in a loan, arrives equal to itself, and so
    /// does the same batch sent by copy right after it.
    #[test]
    fn prop_a_batch_built_in_a_loan_arrives_equal(b in batch_strategy()) {
        let ring = Ring::new("prop");
        let (mut tx, mut rx) = pair(&ring);
        tx.set_schema(b.schema()).unwrap();
        send_by_loan(&mut tx, &b).unwrap();
        tx.send(&b).unwrap();
        send_by_loan(&mut tx, &b).unwrap();
        prop_assert_eq!(&rx.recv().unwrap().unwrap(), &b);
        prop_assert_eq!(&rx.recv().unwrap().unwrap(), &b);
        prop_assert_eq!(&*rx.recv_zero_copy().unwrap().unwrap(), &b);
    }
}

fn ints(schema: &SchemaRef, rows: usize, base: i64) -> RecordBatch {
    let a = Int64Array::from_iter_values((0..rows as i64).map(|j| base + j));
    RecordBatch::try_new(schema.clone(), vec![Arc::new(a)]).unwrap()
}

/// A drained ring places a loan that does not fit the rest of the lap at
/// the next lap; given up, it must not leave the producer believing the
/// bytes before it free, or the next message to wrap writes over one the
/// consumer has not read.
#[test]
fn a_loan_given_up_at_the_end_of_a_lap_leaves_unread_messages_alone() {
    let ring = Ring::new("lap");
    let (mut tx, mut rx) = pair(&ring);
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
    tx.set_schema(schema.clone()).unwrap();
    let b0 = ints(&schema, 1000, 0);
    tx.send(&b0).unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), b0);
    assert!(nothing_waiting(&mut rx));
    // 3.5 MB of the 3.5 MiB message area: it starts the next lap.
    tx.loan(458_000, &[]).unwrap().abort();
    let b1 = ints(&schema, 1000, 1_000_000);
    tx.send(&b1).unwrap();
    // Needs the bytes b1 lies in: it must wait for b1's release.
    let b2 = ints(&schema, 457_000, -7);
    tx.try_send(&b2).unwrap();
    assert_eq!(tx.pending(), 1, "b2 went over the unread b1");
    assert_eq!(rx.recv().unwrap().unwrap(), b1);
    tx.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), b2);
}

/// Bytes reserved past a Utf8 column's last offset are not its text: what
/// an earlier message left there does not fail the commit.
#[test]
fn leftover_reserved_bytes_do_not_fail_a_utf8_commit() {
    let ring = Ring::new("leftover");
    let (mut tx, mut rx) = pair(&ring);
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
    tx.set_schema(schema.clone()).unwrap();
    let mut loan = tx.loan(2, &[64]).unwrap();
    loan.bytes_mut(0).unwrap().fill(0x80); // continuation bytes
    loan.abort();
    let mut loan = tx.loan(2, &[64]).unwrap();
    loan.fill_bytes(0, ["é", "x"]).unwrap();
    loan.commit().unwrap();
    let want =
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["é", "x"]))]).unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), want);
}

/// A loan that gets no room takes nothing: the schema message of a stream
/// not begun is not left pending (which would make the producer's drop
/// wait, then end the stream abandoned).
#[test]
fn a_first_loan_that_times_out_leaves_nothing_pending() {
    let ring = Ring::new("pending");
    let small = ArrowRingOptions { slots: 4, ..opts() };
    let mut tx = BatchProducer::create(&ring.0, &small).unwrap();
    let mut rx = BatchConsumer::open(&ring.0, &small).unwrap();
    tx.set_schema(text_schema()).unwrap();
    let mut sent = 0;
    while let Ok(mut loan) = tx.try_loan(1, &[1]) {
        loan.values_mut::<Int64Type>(0).unwrap()[0] = sent;
        loan.fill_bytes(1, ["a"]).unwrap();
        loan.commit().unwrap();
        sent += 1;
    }
    // A new stream state: its next batch starts with the schema again.
    tx.set_dictionary_deltas(true);
    match tx.try_loan(1, &[1]) {
        Err(ArrowRingError::Timeout) => {}
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(tx.pending(), 0);
    drop(tx);
    for k in 0..sent {
        let b = rx.recv().unwrap().unwrap();
        assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), k);
    }
    assert!(
        rx.recv().unwrap().is_none(),
        "the stream did not end cleanly"
    );
}
