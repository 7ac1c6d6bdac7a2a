//! Arrow RecordBatches through the shared ring: round trips of every common
//! type, zero-copy proven by buffer addresses, FIFO leases, limits, and a
//! hostile producer.
#![cfg(feature = "arrow")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow_array::builder::{Int32Builder, ListBuilder, StringDictionaryBuilder};
use arrow_array::types::Int32Type;
use arrow_array::*;
use arrow_buffer::{Buffer, i256};
use arrow_schema::{DataType, Field, Fields, TimeUnit};
use laminar_ring::CapacityError;
use laminar_ring::arrow::{ArrowRingError, ArrowRingOptions, BatchConsumer, BatchProducer};
use laminar_ring::shm::{OpenError, SegmentOptions};

struct Ring {
    name: String,
}

impl Ring {
    fn new(test: &str) -> Self {
        let name = format!("lr-arrow-{}-{test}", std::process::id());
        let _ = laminar_ring::shm::remove(&name);
        Self { name }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let _ = laminar_ring::shm::remove(&self.name);
    }
}

fn opts(slots: usize, arena: u64) -> ArrowRingOptions {
    ArrowRingOptions {
        slots,
        arena_bytes: arena,
        segment: SegmentOptions::default(),
        max_leases: 8,
    }
}

/// An Arrow ring has at most 2^32 slots, as every shared ring: more is
/// refused at create by the capacity check, and no segment is made (one
/// was attempted, which no open would have accepted).
#[test]
#[cfg(target_pointer_width = "64")]
fn an_arrow_ring_of_more_than_2_pow_32_slots_is_refused_at_create() {
    let ring = Ring::new("too-many-slots");
    let err = BatchProducer::create(&ring.name, &opts(1 << 33, 1 << 20)).expect_err("2^33 slots");
    assert!(
        matches!(
            err,
            ArrowRingError::Open(OpenError::Capacity(CapacityError::TooLarge {
                capacity: 0x2_0000_0000,
                max: 0x1_0000_0000,
            }))
        ),
        "{err:?}"
    );
    let path = std::path::Path::new(laminar_ring::shm::DEFAULT_DIR).join(&ring.name);
    assert!(!path.exists(), "{} was made", path.display());
    for bad in [0, 12] {
        let err = BatchProducer::create(&ring.name, &opts(bad, 1 << 20)).expect_err("refused");
        assert!(
            matches!(err, ArrowRingError::Open(OpenError::Capacity(_))),
            "{bad} slots: {err:?}"
        );
    }
}

/// A batch with every type the issue lists, nulls in every nullable column.
fn everything_batch(rows: usize, seed: i64) -> RecordBatch {
    let n = |i: usize| i % 5 == 3; // null pattern
    let ints = |i: usize| (i as i64).wrapping_mul(7919).wrapping_add(seed);
    let mut list = ListBuilder::new(Int32Builder::new());
    for i in 0..rows {
        if n(i) {
            list.append_null();
        } else {
            for j in 0..(i % 4) {
                list.values().append_value((i * 10 + j) as i32);
            }
            list.append(true);
        }
    }
    let mut dict = StringDictionaryBuilder::<Int32Type>::new();
    for i in 0..rows {
        if n(i) {
            dict.append_null();
        } else {
            dict.append_value(["red", "green", "blue"][i % 3]);
        }
    }
    let struct_fields = Fields::from(vec![
        Field::new("a", DataType::Int32, true),
        Field::new("b", DataType::Utf8, true),
    ]);
    let strukt = StructArray::new(
        struct_fields.clone(),
        vec![
            Arc::new(Int32Array::from_iter(
                (0..rows).map(|i| (!n(i)).then_some(i as i32)),
            )),
            Arc::new(StringArray::from_iter(
                (0..rows).map(|i| (i % 2 == 0).then(|| format!("s{i}"))),
            )),
        ],
        None,
    );
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "i8",
            Arc::new(Int8Array::from_iter(
                (0..rows).map(|i| (!n(i)).then_some(ints(i) as i8)),
            )),
        ),
        (
            "i16",
            Arc::new(Int16Array::from_iter(
                (0..rows).map(|i| (!n(i)).then_some(ints(i) as i16)),
            )),
        ),
        (
            "i32",
            Arc::new(Int32Array::from_iter(
                (0..rows).map(|i| (!n(i)).then_some(ints(i) as i32)),
            )),
        ),
        (
            "i64",
            Arc::new(Int64Array::from_iter(
                (0..rows).map(|i| (!n(i)).then_some(ints(i))),
            )),
        ),
        (
            "u8",
            Arc::new(UInt8Array::from_iter(
                (0..rows).map(|i| (!n(i)).then_some(ints(i) as u8)),
            )),
        ),
        (
            "u16",
            Arc::new(UInt16Array::from_iter(
                (0..rows).map(|i| (!n(i)).then_some(ints(i) as u16)),
            )),
        ),
        (
            "u32",
            Arc::new(UInt32Array::from_iter(
                (0..rows).map(|i| (!n(i)).then_some(ints(i) as u32)),
            )),
        ),
        (
            "u64",
            Arc::new(UInt64Array::from_iter(
                (0..rows).map(|i| (!n(i)).then_some(ints(i) as u64)),
            )),
        ),
        (
            "f32",
            Arc::new(Float32Array::from_iter(
                (0..rows).map(|i| (!n(i)).then_some(i as f32 / 3.0)),
            )),
        ),
        (
            "f64",
            Arc::new(Float64Array::from_iter(
                (0..rows).map(|i| (!n(i)).then_some(i as f64 / 7.0)),
            )),
        ),
        (
            "bool",
            Arc::new(BooleanArray::from_iter(
                (0..rows).map(|i| (!n(i)).then_some(i % 3 == 0)),
            )),
        ),
        (
            "utf8",
            Arc::new(StringArray::from_iter(
                (0..rows).map(|i| (!n(i)).then(|| format!("row {i} ✓"))),
            )),
        ),
        (
            "large_utf8",
            Arc::new(LargeStringArray::from_iter(
                (0..rows).map(|i| (!n(i)).then(|| "x".repeat(i % 9))),
            )),
        ),
        (
            "binary",
            Arc::new(BinaryArray::from_iter(
                (0..rows).map(|i| (!n(i)).then(|| vec![i as u8; i % 5])),
            )),
        ),
        (
            "date32",
            Arc::new(Date32Array::from_iter(
                (0..rows).map(|i| (!n(i)).then_some(19_000 + i as i32)),
            )),
        ),
        (
            "ts_tz",
            Arc::new(
                TimestampMicrosecondArray::from_iter((0..rows).map(|i| (!n(i)).then_some(ints(i))))
                    .with_timezone("Europe/Paris"),
            ),
        ),
        (
            "dec128",
            Arc::new(
                Decimal128Array::from_iter(
                    (0..rows).map(|i| (!n(i)).then_some(ints(i) as i128 * 1000)),
                )
                .with_precision_and_scale(38, 3)
                .unwrap(),
            ),
        ),
        ("list", Arc::new(list.finish())),
        ("struct", Arc::new(strukt)),
        ("dict", Arc::new(dict.finish())),
    ];
    let _ = i256::ZERO;
    let _ = TimeUnit::Microsecond;
    RecordBatch::try_from_iter_with_nullable(columns.into_iter().map(|(n, a)| (n, a, true)))
        .unwrap()
}

#[test]
fn every_type_round_trips_copy_and_zero_copy() {
    let ring = Ring::new("types");
    let mut tx = BatchProducer::create(&ring.name, &opts(64, 4 << 20)).unwrap();
    let mut rx = BatchConsumer::open(&ring.name, &opts(64, 4 << 20)).unwrap();
    let batches: Vec<RecordBatch> = [0, 1, 17, 1000, 0, 333]
        .iter()
        .enumerate()
        .map(|(s, &rows)| everything_batch(rows, s as i64))
        .collect();
    for (i, b) in batches.iter().enumerate() {
        tx.send(b).unwrap();
        if i % 2 == 0 {
            let got = rx.recv().unwrap().expect("a batch");
            assert_eq!(&got, b, "copy path, batch {i}");
        } else {
            let got = rx.recv_zero_copy().unwrap().expect("a batch");
            assert_eq!(&*got, b, "zero-copy path, batch {i}");
        }
    }
    assert_eq!(rx.schema(), Some(&batches[0].schema()));
    tx.close().unwrap();
    assert!(rx.recv().unwrap().is_none(), "end of stream");
}

fn buffer_addresses(data: &arrow_data::ArrayData, out: &mut Vec<(usize, usize)>) {
    for b in data.buffers() {
        out.push((b.as_ptr() as usize, b.len()));
    }
    if let Some(nulls) = data.nulls() {
        let b: &Buffer = nulls.buffer();
        out.push((b.as_ptr() as usize, b.len()));
    }
    for child in data.child_data() {
        buffer_addresses(child, out);
    }
}

#[test]
fn zero_copy_buffers_lie_inside_the_mapping() {
    let ring = Ring::new("zc");
    let mut tx = BatchProducer::create(&ring.name, &opts(64, 8 << 20)).unwrap();
    let mut rx = BatchConsumer::open(&ring.name, &opts(64, 8 << 20)).unwrap();
    // No dictionary column: dictionaries are decoded into process memory
    // on purpose (the decoder keeps them across batches).
    let full = everything_batch(4096, 3);
    let batch = full.project(&(0..19).collect::<Vec<_>>()).unwrap();
    tx.send(&batch).unwrap();
    let leased = rx.recv_zero_copy().unwrap().unwrap();
    assert_eq!(&*leased, &batch);
    let map = rx.mapped_range();
    let mut addrs = Vec::new();
    for col in leased.columns() {
        buffer_addresses(&col.to_data(), &mut addrs);
    }
    assert!(addrs.len() > 30, "checked {} buffers", addrs.len());
    for (ptr, len) in addrs {
        if len == 0 {
            continue;
        }
        assert!(
            map.contains(&ptr) && ptr + len <= map.end,
            "buffer at {ptr:#x} is outside the mapping {map:x?}"
        );
    }
    // A copy out is in process memory and equal.
    let owned = leased.to_owned_batch().unwrap();
    assert_eq!(owned, batch);
    let mut addrs = Vec::new();
    for col in owned.columns() {
        buffer_addresses(&col.to_data(), &mut addrs);
    }
    assert!(addrs.iter().all(|(p, l)| *l == 0 || !map.contains(p)));
}

#[test]
fn leases_release_in_fifo_order_and_are_bounded() {
    let ring = Ring::new("lease");
    let mut o = opts(16, 64 << 10);
    o.max_leases = 3;
    let mut tx = BatchProducer::create(&ring.name, &o).unwrap();
    let mut rx = BatchConsumer::open(&ring.name, &o).unwrap();
    let b = everything_batch(10, 1).project(&[3]).unwrap();
    for _ in 0..6 {
        tx.send(&b).unwrap();
    }
    let l1 = rx.recv_zero_copy().unwrap().unwrap(); // the schema message is released at once
    let l2 = rx.recv_zero_copy().unwrap().unwrap();
    let l3 = rx.recv_zero_copy().unwrap().unwrap();
    assert!(matches!(
        rx.recv_zero_copy(),
        Err(ArrowRingError::TooManyLeases { max: 3 })
    ));
    // Dropping a newer lease frees nothing: the oldest still holds the line,
    // and the error says so (slot 0 is the schema, released).
    drop(l3);
    drop(l2);
    assert!(matches!(
        rx.recv_zero_copy(),
        Err(ArrowRingError::OldestLeaseHeld {
            seq: 1,
            held_back: 2
        })
    ));
    // A column kept from l1 keeps its lease (the pinning hazard).
    let kept = l1.column(0).clone();
    drop(l1);
    assert!(matches!(
        rx.recv_zero_copy(),
        Err(ArrowRingError::OldestLeaseHeld { seq: 1, .. })
    ));
    drop(kept);
    // Now all three release at once, in order.
    let l4 = rx.recv_zero_copy().unwrap().unwrap();
    assert_eq!(rx.outstanding(), 1);
    assert_eq!(&*l4, &b);
    // The copy path is not limited by leases.
    assert_eq!(rx.recv().unwrap().unwrap(), b);
}

#[test]
fn oversized_batches_and_schema_changes_are_errors_not_hangs() {
    let ring = Ring::new("limits");
    let mut tx = BatchProducer::create(&ring.name, &opts(16, 64 << 10)).unwrap();
    let mut rx = BatchConsumer::open(&ring.name, &opts(16, 64 << 10)).unwrap();
    let big = RecordBatch::try_from_iter([(
        "x",
        Arc::new(Int64Array::from_iter_values(0..100_000)) as ArrayRef,
    )])
    .unwrap();
    match tx.send(&big) {
        Err(ArrowRingError::BatchTooLarge { needed, arena }) => {
            assert!(needed > arena);
            assert_eq!(
                arena,
                (64 << 10) - (64 << 10) / 8,
                "the message part of the arena"
            );
        }
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }
    let small = big.slice(0, 10);
    tx.send(&small).unwrap();
    let other =
        RecordBatch::try_from_iter([("y", Arc::new(Int32Array::from(vec![1])) as ArrayRef)])
            .unwrap();
    assert!(matches!(
        tx.send(&other),
        Err(ArrowRingError::SchemaMismatch { .. })
    ));
    assert_eq!(rx.recv().unwrap().unwrap(), small.clone());
    // A consumer that requires another schema refuses the stream.
    drop(rx);
    let mut rx = BatchConsumer::open(&ring.name, &opts(16, 64 << 10)).unwrap();
    rx.expect_schema(other.schema());
    tx.send(&small).unwrap();
    // The stream's schema message was released already; a new producer
    // session re-sends it: simulate by a second producer.
    drop(tx);
    let mut tx2 = BatchProducer::open(&ring.name, &opts(16, 64 << 10)).unwrap();
    tx2.send(&small).unwrap();
    let mut saw_mismatch = false;
    for _ in 0..3 {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Err(ArrowRingError::SchemaMismatch { .. }) => {
                saw_mismatch = true;
                break;
            }
            Err(ArrowRingError::CorruptMessage { .. }) => {} // a batch without its schema
            other => {
                let _ = other;
            }
        }
    }
    assert!(saw_mismatch, "the required schema was not enforced");
}

/// A schema whose message alone is larger than the arena is refused with
/// `BatchTooLarge`, as a batch that large is: taken, it could never be
/// delivered (sends would time out for ever, `close` would hang).
#[test]
fn a_schema_message_larger_than_the_arena_is_refused_not_left_pending() {
    let ring = Ring::new("bigschema");
    let mut o = opts(16, 8 << 10);
    // One consumer: an arena this small has save room for one.
    o.segment.max_consumers = 1;
    let mut tx = BatchProducer::create(&ring.name, &o).unwrap();
    let _rx = BatchConsumer::open(&ring.name, &o).unwrap();
    let metadata: std::collections::HashMap<String, String> =
        [("note".to_string(), "x".repeat(16 << 10))].into();
    let schema = Arc::new(
        arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "x",
            arrow_schema::DataType::Int64,
            false,
        )])
        .with_metadata(metadata),
    );
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef],
    )
    .unwrap();
    match tx.send_timeout(&batch, Duration::from_millis(100)) {
        Err(ArrowRingError::BatchTooLarge { needed, arena }) => assert!(needed > arena),
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }
    assert_eq!(tx.pending(), 0, "nothing was taken");
}

/// Bytes that no string spans need not be UTF-8 (arrow accepts them): the
/// consumer's own check of string offsets says no to such a column and
/// lets arrow's validating decoder decide, which accepts it, on the copy and
/// the zero-copy path.
#[test]
fn a_string_column_with_invalid_utf8_outside_its_strings_comes_through() {
    let ring = Ring::new("utf8gap");
    let o = opts(16, 64 << 10);
    let mut tx = BatchProducer::create(&ring.name, &o).unwrap();
    let mut rx = BatchConsumer::open(&ring.name, &o).unwrap();
    // "ab", "c", then a byte 0xff that neither string covers.
    let data = arrow_data::ArrayData::builder(DataType::Utf8)
        .len(2)
        .add_buffer(Buffer::from_vec(vec![0_i32, 2, 3]))
        .add_buffer(Buffer::from(vec![b'a', b'b', b'c', 0xff]))
        .build()
        .expect("arrow accepts invalid UTF-8 outside every string");
    let strings: ArrayRef = Arc::new(StringArray::from(data));
    let batch = RecordBatch::try_from_iter([("s", strings)]).unwrap();
    tx.send(&batch).unwrap();
    tx.send(&batch).unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), batch);
    let leased = rx.recv_zero_copy().unwrap().unwrap();
    assert_eq!(*leased, batch);
}

/// A consumer that keeps up lets the producer start the arena's next lap
/// early, so small messages reuse the arena's first bytes; that moves
/// positions faster than bytes are written, by at most 16 times. And a
/// ring whose messages are all released reports no arena bytes in use.
#[test]
fn early_laps_reuse_the_arena_and_move_positions_at_most_sixteen_times_faster() {
    let ring = Ring::new("laps");
    let arena: u64 = 4 << 20;
    let o = opts(64, arena);
    let mut tx = BatchProducer::create(&ring.name, &o).unwrap();
    let mut rx = BatchConsumer::open(&ring.name, &o).unwrap();
    let batch = RecordBatch::try_from_iter([(
        "x",
        Arc::new(Int64Array::from_iter_values(0..100)) as ArrayRef,
    )])
    .unwrap();
    // The bytes of each message, as arrow-ipc encodes it (the ring's
    // messages are those bytes, and each takes a multiple of 64).
    let ipc_opts =
        arrow_ipc::writer::IpcWriteOptions::try_new(64, false, arrow_ipc::MetadataVersion::V5)
            .unwrap();
    let mut enc =
        arrow_ipc::writer::StreamEncoder::try_new_with_options(&batch.schema(), ipc_opts).unwrap();
    let first: u64 = enc
        .encode(&batch)
        .unwrap()
        .iter()
        .map(|b| b.len() as u64)
        .sum();
    let each: u64 = enc
        .encode(&batch)
        .unwrap()
        .iter()
        .map(|b| b.len() as u64)
        .sum();
    let n = 30_000_u64;
    for i in 0..n {
        tx.send(&batch).unwrap();
        let got = rx.recv().unwrap().unwrap();
        assert_eq!(got, batch, "batch {i}");
    }
    let info = laminar_ring::shm::inspect(&ring.name, &SegmentOptions::default()).unwrap();
    let written = first + (n - 1) * each;
    assert!(written > 4 * arena, "the stream spans several laps");
    assert!(
        info.arena_head > 2 * written,
        "laps were started early: head {} after {written} bytes",
        info.arena_head
    );
    assert!(
        info.arena_head <= 16 * written + arena,
        "head {} after {written} bytes: more than 16 times",
        info.arena_head
    );
    assert_eq!(info.arena_used(), 0, "every message is released");
}

/// Without a required schema, each producer session may bring its own; a
/// consumer that requires one refuses another stream's schema message
/// without consuming it, so a consumer that accepts it still gets it.
#[test]
fn a_new_producer_session_may_change_the_schema_unless_one_is_required() {
    let ring = Ring::new("sessions");
    let o = opts(16, 64 << 10);
    let a =
        RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef)])
            .unwrap();
    let b = RecordBatch::try_from_iter([("y", Arc::new(Int32Array::from(vec![7])) as ArrayRef)])
        .unwrap();
    let mut tx = BatchProducer::create(&ring.name, &o).unwrap();
    tx.send(&a).unwrap();
    tx.close().unwrap();
    let mut tx = BatchProducer::open(&ring.name, &o).unwrap();
    tx.send(&b).unwrap();
    tx.close().unwrap();

    let mut rx = BatchConsumer::open(&ring.name, &o).unwrap();
    rx.expect_schema(a.schema());
    assert_eq!(rx.recv().unwrap().unwrap(), a);
    assert!(rx.recv().unwrap().is_none(), "the first session's end");
    for _ in 0..2 {
        match rx.recv() {
            Err(ArrowRingError::SchemaMismatch { expected, found }) => {
                assert_eq!(expected, a.schema());
                assert_eq!(found, b.schema());
            }
            other => panic!("expected SchemaMismatch, got {other:?}"),
        }
    }
    drop(rx);

    let mut rx = BatchConsumer::open(&ring.name, &o).unwrap();
    assert_eq!(
        rx.recv().unwrap().unwrap(),
        b,
        "the refused stream was lost"
    );
    assert_eq!(rx.schema(), Some(&b.schema()));
    assert!(rx.recv().unwrap().is_none());
}

/// A producer that fails (bad input, say) ends its stream in error: the
/// consumer gets what was committed, then `ProducerFailed` with the reason,
/// once; then it waits for the next producer. A producer that fails before
/// sending anything (its input was bad from the first row) still tells a
/// waiting consumer, which would otherwise wait for ever.
#[test]
fn a_failed_producer_ends_the_stream_with_its_reason_even_before_its_first_batch() {
    let ring = Ring::new("fail");
    let o = opts(16, 64 << 10);
    let a = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![5])) as ArrayRef)])
        .unwrap();
    let mut rx = BatchConsumer::create(&ring.name, &o).unwrap();
    // Nothing sent: the consumer, waiting, learns that the producer failed.
    let tx = BatchProducer::open(&ring.name, &o).unwrap();
    tx.fail("input.csv: expected 3 fields in row 2, found 4");
    match rx.recv_timeout(Duration::from_secs(5)) {
        Err(ArrowRingError::ProducerFailed { reason }) => {
            assert_eq!(reason, "input.csv: expected 3 fields in row 2, found 4");
        }
        other => panic!("expected ProducerFailed, got {other:?}"),
    }
    // Reported once: the next receive waits for the next producer.
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(50)),
        Err(ArrowRingError::Timeout)
    ));
    // Batches first, then the failure.
    let mut tx = BatchProducer::open(&ring.name, &o).unwrap();
    tx.send(&a).unwrap();
    tx.send(&a).unwrap();
    tx.fail(&"é".repeat(40)); // 80 bytes: cut at a character boundary, then "…"
    assert_eq!(rx.recv().unwrap().unwrap(), a);
    assert_eq!(rx.recv().unwrap().unwrap(), a);
    match rx.recv_timeout(Duration::from_secs(5)) {
        Err(ArrowRingError::ProducerFailed { reason }) => {
            assert_eq!(reason, format!("{}…", "é".repeat(30)))
        }
        other => panic!("expected ProducerFailed, got {other:?}"),
    }
}

/// A consumer that attaches while a producer holds the producer role but
/// has not yet stored its state (it is attaching, or refusing the segment)
/// does not report the previous session's end, which it never read: it
/// waits for the next session.
#[test]
fn a_consumer_attaching_during_a_producer_attach_does_not_report_the_previous_end() {
    let ring = Ring::new("attaching");
    let o = opts(16, 64 << 10);
    let a = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![5])) as ArrayRef)])
        .unwrap();
    let mut c1 = BatchConsumer::create(&ring.name, &o).unwrap();
    let mut p1 = BatchProducer::open(&ring.name, &o).unwrap();
    p1.send(&a).unwrap();
    p1.close().unwrap();
    assert_eq!(c1.recv().unwrap().unwrap(), a);
    assert!(c1.recv().unwrap().is_none());
    drop(c1);
    // The producer's role lock (byte 0), taken as an attaching producer
    // takes it first, with nothing stored yet.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(std::path::Path::new(laminar_ring::shm::DEFAULT_DIR).join(&ring.name))
        .unwrap();
    common::ofd_lock(&file, 0);
    let mut c2 = BatchConsumer::open(&ring.name, &o).unwrap();
    match c2.recv_timeout(Duration::from_millis(200)) {
        Err(ArrowRingError::Timeout) => {}
        other => panic!("expected to wait for the next session, got {other:?}"),
    }
    drop(file);
}

/// A producer killed between its attach's two stores (`producer_state = 1`,
/// then the session count) leaves state 1, the old count, and no lock. A
/// consumer that had reported the previous end does not report another,
/// one attaching then waits too, and the next producer attaches and its
/// batches arrive, then its end.
#[test]
fn a_producer_killed_between_its_state_and_its_session_count_leaves_a_ring_that_resumes() {
    let ring = Ring::new("half-attach");
    let o = opts(16, 64 << 10);
    let a = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![5])) as ArrayRef)])
        .unwrap();
    let mut c1 = BatchConsumer::create(&ring.name, &o).unwrap();
    let mut p1 = BatchProducer::open(&ring.name, &o).unwrap();
    p1.send(&a).unwrap();
    p1.close().unwrap();
    assert_eq!(c1.recv().unwrap().unwrap(), a);
    assert!(c1.recv().unwrap().is_none());
    // docs/FORMAT.md: producer_state at byte 136; 1 = attached.
    let path = std::path::Path::new(laminar_ring::shm::DEFAULT_DIR).join(&ring.name);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &1_u32.to_ne_bytes(), 136).unwrap();
    drop(file);
    match c1.recv_timeout(Duration::from_millis(200)) {
        Err(ArrowRingError::Timeout) => {}
        other => panic!("expected to wait for the next session, got {other:?}"),
    }
    drop(c1);
    let mut c2 = BatchConsumer::open(&ring.name, &o).unwrap();
    match c2.recv_timeout(Duration::from_millis(200)) {
        Err(ArrowRingError::Timeout) => {}
        other => panic!("expected to wait for the next session, got {other:?}"),
    }
    let mut p2 = BatchProducer::open(&ring.name, &o).unwrap();
    p2.send(&a).unwrap();
    p2.close().unwrap();
    assert_eq!(c2.recv().unwrap().unwrap(), a);
    assert!(c2.recv().unwrap().is_none());
}

/// A producer that gives up half-way does not end the stream: the consumer
/// gets what was committed, then `PeerGone`, never a clean end of stream.
#[test]
fn an_abandoned_stream_ends_in_peer_gone_not_end_of_stream() {
    let ring = Ring::new("abandon");
    let o = opts(16, 64 << 10);
    let a = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![5])) as ArrayRef)])
        .unwrap();
    let mut tx = BatchProducer::create(&ring.name, &o).unwrap();
    let mut rx = BatchConsumer::open(&ring.name, &o).unwrap();
    tx.send(&a).unwrap();
    tx.abandon();
    assert_eq!(rx.recv().unwrap().unwrap(), a);
    match rx.recv_timeout(Duration::from_secs(5)) {
        Err(ArrowRingError::PeerGone) => {}
        other => panic!("expected PeerGone, got {other:?}"),
    }
    // A closed stream, by contrast, ends cleanly.
    let mut tx = BatchProducer::open(&ring.name, &o).unwrap();
    tx.send(&a).unwrap();
    tx.close().unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), a);
    assert!(rx.recv().unwrap().is_none());
}

/// A private directory and a 16-slot, 256 KiB ring's options in it, for
/// tests that rewrite the segment file. arrow-ipc 59 panics on some
/// malformed metadata (caught and turned into errors by the consumer); the
/// panic hook keeps those expected panics out of the log.
fn fuzz_setup(test: &str) -> (std::path::PathBuf, ArrowRingOptions) {
    let dir = std::env::temp_dir().join(format!("lr-arrow-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let o = ArrowRingOptions {
        slots: 16,
        arena_bytes: 256 << 10,
        segment: SegmentOptions {
            dir: dir.clone(),
            ..SegmentOptions::default()
        },
        max_leases: 16,
    };
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let from_arrow = info.location().is_some_and(|l| l.file().contains("arrow-"));
        if !from_arrow {
            default_hook(info);
        }
    }));
    (dir, o)
}

/// A xorshift64 generator: reproducible cases without a dependency.
fn xorshift(mut state: u64) -> impl FnMut() -> usize {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as usize
    }
}

/// Overwrites `byte` with a random value, or flips one of its bits.
fn corrupt_byte(byte: &mut u8, next: &mut impl FnMut() -> usize) {
    if next().is_multiple_of(2) {
        *byte = next() as u8;
    } else {
        *byte ^= 1 << (next() % 8);
    }
}

/// 10,000 corruptions of descriptors and message bytes written by a real
/// producer: every receive either succeeds or fails with an error naming
/// the slot; none panics, none reads outside the arena.
#[test]
fn corrupted_descriptors_and_messages_are_errors_never_panics() {
    let (dir, o) = fuzz_setup("fuzz");
    let mut tx = BatchProducer::create("fuzz", &o).unwrap();
    for (i, rows) in [5, 40, 0, 13].into_iter().enumerate() {
        tx.send(&everything_batch(rows, i as i64)).unwrap();
    }
    tx.close().unwrap();
    let path = dir.join("fuzz");
    let pristine = std::fs::read(&path).unwrap();
    // Where things are: slots after the header, 32-byte descriptors; the
    // arena 4096-aligned after the slots.
    let slots_at: usize = SLOTS_AT;
    let arena_at = (slots_at + 16 * 32).next_multiple_of(4096);
    let written = {
        let head = u64::from_le_bytes(pristine[152..160].try_into().unwrap()) as usize;
        head.max(1)
    };
    let messages = u64::from_le_bytes(pristine[128..136].try_into().unwrap()) as usize;
    assert!(
        messages >= 6,
        "schema, dictionary, batches: {messages} messages"
    );
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    let (mut ok, mut errors) = (0, 0);
    for case in 0..10_000 {
        let mut bytes = pristine.clone();
        for _ in 0..1 + next() % 3 {
            let at = if case % 2 == 0 {
                slots_at + (next() % messages) * 32 + (next() % 32)
            } else {
                arena_at + next() % written
            };
            corrupt_byte(&mut bytes[at], &mut next);
        }
        std::fs::write(&path, &bytes).unwrap();
        let mut rx = BatchConsumer::open("fuzz", &o).unwrap();
        loop {
            let got = if case % 3 == 0 {
                rx.recv_zero_copy().map(|b| b.map(|b| b.num_rows()))
            } else {
                rx.recv().map(|b| b.map(|b| b.num_rows()))
            };
            match got {
                Ok(Some(_)) => {}
                Ok(None) => {
                    ok += 1;
                    break;
                }
                Err(
                    ArrowRingError::CorruptDescriptor { seq, .. }
                    | ArrowRingError::CorruptMessage { seq, .. },
                ) => {
                    assert!(
                        (seq as usize) < messages,
                        "case {case}: error names slot {seq}"
                    );
                    errors += 1;
                    break;
                }
                Err(ArrowRingError::SchemaMismatch { .. }) => {
                    errors += 1;
                    break;
                }
                Err(e) => panic!("case {case}: unexpected error {e}"),
            }
        }
    }
    eprintln!("10000 corruptions: {ok} streams still decoded, {errors} typed errors");
    assert!(
        errors > 1000,
        "corruption was detected in {errors} cases only"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A batch of every flat column type (what the consumer checks with its own
/// fast path rather than arrow's validation), with nulls, non-ASCII strings
/// and one non-nullable column.
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
            "i64",
            Arc::new(Int64Array::from_iter_values(
                (0..rows as i64).map(|i| i * 1_000_003),
            )),
            false,
        ),
        (
            "u16",
            Arc::new(UInt16Array::from_iter_values(
                (0..rows).map(|i| i as u16 * 7),
            )),
            true,
        ),
        (
            "f32",
            Arc::new(Float32Array::from_iter_values(
                (0..rows).map(|i| i as f32 / 4.0),
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
            "utf8",
            Arc::new(StringArray::from_iter(
                (0..rows).map(|i| (!null_every(5)(i)).then(|| word(i))),
            )),
            true,
        ),
        (
            "ascii",
            Arc::new(StringArray::from_iter(
                (0..rows).map(|i| (!null_every(7)(i)).then(|| format!("row {i}"))),
            )),
            true,
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
fn corrupted_flat_batches_are_accepted_only_as_arrow_would_decode_them() {
    // Differential: flip bytes of a flat batch's message (its metadata or its
    // body) and compare the consumer's verdict with arrow-ipc's own
    // validating decoder on the same bytes. Whatever the consumer
    // accepts, arrow must accept too and decode to the same batch.
    let (dir, o) = fuzz_setup("flatfuzz");
    let sent = flat_batch(37);
    let mut tx = BatchProducer::create("flatfuzz", &o).unwrap();
    tx.send(&sent).unwrap();
    tx.close().unwrap();
    let path = dir.join("flatfuzz");
    let pristine = std::fs::read(&path).unwrap();
    // Slots after the header (32-byte descriptors: pos, len, ...), the arena
    // 4096-aligned after them; slot 1 holds the batch (0 the schema).
    let slots_at: usize = SLOTS_AT;
    let arena_at = (slots_at + 16 * 32).next_multiple_of(4096);
    let word = |at: usize| u64::from_le_bytes(pristine[at..at + 8].try_into().unwrap()) as usize;
    let message = |slot: usize| {
        let (pos, len) = (word(slots_at + slot * 32), word(slots_at + slot * 32 + 8));
        arena_at + pos..arena_at + pos + len
    };
    let batch_msg = message(1);
    let meta_end = batch_msg.start
        + 8
        + u32::from_le_bytes(
            pristine[batch_msg.start + 4..batch_msg.start + 8]
                .try_into()
                .unwrap(),
        ) as usize;
    // arrow-ipc's FileDecoder with its validation on (and realigning what is
    // misaligned, where the consumer refuses), on the batch message alone.
    // (Its StreamReader would allocate whatever a corrupt length says.)
    let schema = sent.schema();
    let arrow_decodes = |bytes: &[u8]| {
        let msg = &bytes[batch_msg.clone()];
        let meta_len = u32::from_le_bytes(msg[4..8].try_into().unwrap()) as usize;
        let meta_end = i32::try_from(8 + meta_len)
            .ok()
            .filter(|&m| m as usize <= msg.len())?;
        let block = arrow_ipc::Block::new(0, meta_end, (msg.len() - meta_end as usize) as i64);
        let decoder =
            arrow_ipc::reader::FileDecoder::new(schema.clone(), arrow_ipc::MetadataVersion::V5);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decoder.read_record_batch(&block, &Buffer::from(msg))
        }))
        .ok()?
        .ok()?
    };
    assert_eq!(arrow_decodes(&pristine).as_ref(), Some(&sent));
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let (mut same, mut both_refused, mut stricter) = (0, 0, 0);
    for case in 0..10_000 {
        let mut bytes = pristine.clone();
        for _ in 0..1 + next() % 2 {
            let at = if case % 2 == 0 {
                batch_msg.start + next() % (meta_end - batch_msg.start)
            } else {
                meta_end + next() % (batch_msg.end - meta_end)
            };
            corrupt_byte(&mut bytes[at], &mut next);
        }
        std::fs::write(&path, &bytes).unwrap();
        let mut rx = BatchConsumer::open("flatfuzz", &o).unwrap();
        let ours = if case % 3 == 0 {
            rx.recv_zero_copy()
                .map(|b| b.map(|b| b.to_owned_batch().unwrap()))
        } else {
            rx.recv()
        };
        let theirs = arrow_decodes(&bytes);
        match ours {
            Ok(Some(b)) => {
                assert_eq!(
                    Some(&b),
                    theirs.as_ref(),
                    "case {case}: accepted what arrow decodes differently or refuses"
                );
                same += 1;
            }
            Err(ArrowRingError::CorruptMessage { seq: 1, .. }) if theirs.is_none() => {
                both_refused += 1
            }
            Err(ArrowRingError::CorruptMessage { seq: 1, .. }) => stricter += 1,
            other => panic!("case {case}: {:?}", other.map(|b| b.map(|b| b.num_rows()))),
        }
    }
    eprintln!(
        "10000 corrupted flat batches: {same} accepted (as arrow decodes them), \
         {both_refused} refused (as by arrow), {stricter} refused that arrow accepts"
    );
    assert!(same > 500 && both_refused > 1000, "both outcomes exercised");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn batches_with_an_empty_body_come_through() {
    // Zero rows of fixed-width columns: the IPC body is empty.
    let ring = Ring::new("emptybody");
    let mut tx = BatchProducer::create(&ring.name, &opts(16, 64 << 10)).unwrap();
    let mut rx = BatchConsumer::open(&ring.name, &opts(16, 64 << 10)).unwrap();
    let empty = RecordBatch::try_from_iter([(
        "x",
        Arc::new(Int32Array::from(Vec::<i32>::new())) as ArrayRef,
    )])
    .unwrap();
    let one = RecordBatch::try_from_iter([("x", Arc::new(Int32Array::from(vec![7])) as ArrayRef)])
        .unwrap();
    for b in [&empty, &one, &empty] {
        tx.send(b).unwrap();
    }
    assert_eq!(rx.recv().unwrap().unwrap(), empty);
    assert_eq!(&*rx.recv_zero_copy().unwrap().unwrap(), &one);
    assert_eq!(&*rx.recv_zero_copy().unwrap().unwrap(), &empty);
}

#[test]
fn replaced_dictionaries_come_through_on_both_paths() {
    let ring = Ring::new("dictrepl");
    let mut tx = BatchProducer::create(&ring.name, &opts(32, 1 << 20)).unwrap();
    let mut rx = BatchConsumer::open(&ring.name, &opts(32, 1 << 20)).unwrap();
    let dict_batch = |words: &[&str]| {
        let mut b = StringDictionaryBuilder::<Int32Type>::new();
        for (i, w) in words.iter().cycle().take(50).enumerate() {
            if i % 7 == 6 {
                b.append_null();
            } else {
                b.append_value(w);
            }
        }
        RecordBatch::try_from_iter([("d", Arc::new(b.finish()) as ArrayRef)]).unwrap()
    };
    // Same dictionary twice, then a different one, then back.
    let batches = [
        dict_batch(&["a", "b"]),
        dict_batch(&["a", "b"]),
        dict_batch(&["x", "y", "z"]),
        dict_batch(&["a", "b"]),
    ];
    for (i, b) in batches.iter().enumerate() {
        tx.send(b).unwrap();
        let got = if i % 2 == 0 {
            rx.recv().unwrap().unwrap()
        } else {
            rx.recv_zero_copy().unwrap().unwrap().into_inner()
        };
        assert_eq!(&got, b, "batch {i}");
    }
}

/// Batch `i` of a stream with a dictionary column whose dictionary changes
/// every third batch.
fn dict_stream_batch(i: usize) -> RecordBatch {
    let words: &[&str] = match (i / 3) % 3 {
        0 => &["a", "b"],
        1 => &["x", "y", "z"],
        _ => &["long word", "b"],
    };
    let mut d = StringDictionaryBuilder::<Int32Type>::new();
    for j in 0..20 {
        d.append_value(words[(i + j) % words.len()]);
    }
    let n = Int64Array::from_iter_values((0..20).map(|j| (i * 100 + j) as i64));
    RecordBatch::try_from_iter([
        ("d", Arc::new(d.finish()) as ArrayRef),
        ("n", Arc::new(n) as ArrayRef),
    ])
    .unwrap()
}

#[test]
fn a_consumer_that_cannot_resume_says_why() {
    // A 64 KiB arena keeps 8 KiB to save the decoder state, 4 KiB per half:
    // a dictionary of ~6 KiB does not fit, so a consumer that detaches
    // mid-stream leaves nothing to resume from. The next one must say why
    // it cannot decode, and must not skip anything silently.
    let ring = Ring::new("noresume");
    let o = opts(16, 64 << 10);
    let big = |i: i64| {
        let mut d = StringDictionaryBuilder::<Int32Type>::new();
        for j in 0..200 {
            d.append_value(format!("word number {j:04} of a large dictionary"));
        }
        RecordBatch::try_from_iter([
            ("d", Arc::new(d.finish()) as ArrayRef),
            (
                "n",
                Arc::new(Int64Array::from_iter_values(i * 200..i * 200 + 200)) as ArrayRef,
            ),
        ])
        .unwrap()
    };
    let mut tx = BatchProducer::create(&ring.name, &o).unwrap();
    for i in 0..3 {
        tx.send(&big(i)).unwrap();
    }
    let mut rx = BatchConsumer::open(&ring.name, &o).unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), big(0));
    drop(rx);
    let mut rx = BatchConsumer::open(&ring.name, &o).unwrap();
    match rx.recv() {
        Err(ArrowRingError::CorruptMessage { seq, source }) => {
            let text = source.to_string();
            assert!(text.contains("cannot resume mid-stream"), "{text}");
            assert_eq!(seq, 3, "schema, dictionary and batch 0 were released");
        }
        other => panic!("{:?}", other.map(|b| b.map(|b| b.num_rows()))),
    }
    // Nothing is skipped silently: each message it cannot decode is an
    // error naming it (and is then passed, like any corrupt message).
    match rx.recv() {
        Err(ArrowRingError::CorruptMessage { seq: 4, source }) => {
            assert!(source.to_string().contains("cannot resume"), "{source}");
        }
        other => panic!("{:?}", other.map(|b| b.map(|b| b.num_rows()))),
    }
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(50)),
        Err(ArrowRingError::Timeout)
    ));
}

#[test]
fn a_new_consumer_resumes_mid_stream_with_the_saved_schema_and_dictionaries() {
    let ring = Ring::new("resume");
    let o = opts(64, 1 << 20);
    let mut tx = BatchProducer::create(&ring.name, &o).unwrap();
    for i in 0..12 {
        tx.send(&dict_stream_batch(i)).unwrap();
    }
    tx.close().unwrap();
    // Each consumer takes a few batches and detaches; the next one resumes.
    let mut next = 0;
    for take in [2, 5, 1, 4] {
        let mut rx = BatchConsumer::open(&ring.name, &o).unwrap();
        for _ in 0..take {
            let got = rx.recv().unwrap().expect("a batch");
            assert_eq!(got, dict_stream_batch(next), "batch {next} after a resume");
            next += 1;
        }
        if next == 12 {
            assert!(
                rx.recv().unwrap().is_none(),
                "end of stream after batch {next}"
            );
        }
    }
    assert_eq!(next, 12);
}

/// Where the slots of a ring with the default 8 consumer cursors start
/// (docs/FORMAT.md: the 2048-byte header, then 128 bytes per cursor).
const SLOTS_AT: usize = 2048 + 8 * 128;

/// Reads descriptor `seq` of a 16-slot ring file (slots follow the header,
/// 32 bytes each: pos, len, end, kind).
fn descriptor_at(bytes: &[u8], seq: usize) -> [u64; 3] {
    let at = SLOTS_AT + (seq % 16) * 32;
    let word = |k: usize| u64::from_ne_bytes(bytes[at + 8 * k..at + 8 * k + 8].try_into().unwrap());
    [word(0), word(1), word(2)]
}

/// Writes `bytes` at `offset` of the file at `path` in place: the file stays
/// as long as it is, so the mappings of attached processes stay valid.
fn write_in_place(path: &std::path::Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// A descriptor whose bytes lie over a message the consumer still leases
/// (the same arena offset one lap later) is refused, even though it starts
/// after the last message read: the check spans from the oldest unreleased
/// message, as FORMAT.md states.
#[test]
fn a_descriptor_overlapping_unreleased_bytes_is_refused() {
    let (dir, o) = fuzz_setup("overlap");
    let (messages, _) = laminar_ring_split(o.arena_bytes);
    let b = everything_batch(20, 3).project(&[0, 1, 2]).unwrap();
    let mut tx = BatchProducer::create("overlap", &o).unwrap();
    tx.send(&b).unwrap();
    tx.send(&b).unwrap();
    let mut rx = BatchConsumer::open("overlap", &o).unwrap();
    let held = rx.recv_zero_copy().unwrap().unwrap(); // slot 1, leased
    let path = dir.join("overlap");
    let bytes = std::fs::read(&path).unwrap();
    let [pos, len, end] = descriptor_at(&bytes, 1);
    // Slot 2 claims the arena bytes of slot 1, one lap on.
    let forged = [pos + messages, len, end + messages];
    let raw: Vec<u8> = forged.iter().flat_map(|w| w.to_ne_bytes()).collect();
    write_in_place(&path, (SLOTS_AT + 2 * 32) as u64, &raw);
    match rx.recv_zero_copy() {
        Err(ArrowRingError::CorruptDescriptor { seq: 2, .. }) => {}
        other => panic!(
            "expected CorruptDescriptor for slot 2, got {:?}",
            other.map(|b| b.map(|b| b.num_rows()))
        ),
    }
    assert_eq!(&*held, &b, "the leased batch is intact");
    drop(held);
    drop(rx);
    drop(tx);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The message part of an arena of `arena` bytes and its save area (the
/// last eighth, rounded down to 64 bytes), as FORMAT.md gives them.
fn laminar_ring_split(arena: u64) -> (u64, u64) {
    let save = (arena / 8) & !63;
    (arena - save, save)
}

/// A batch of one binary value of `n` bytes.
fn blob(n: usize) -> RecordBatch {
    let v = BinaryArray::from_iter_values([vec![0x5a_u8; n]]);
    RecordBatch::try_from_iter([("b", Arc::new(v) as ArrayRef)]).unwrap()
}

/// On a drained ring, any message that fits the message area goes in at
/// once, wherever the arena's head is: the tail skipped to place it in one
/// piece counts as free when nothing is in use. (Before, only messages that
/// fitted the larger piece around the head ever went in, and the producer
/// waited forever on an empty ring.) With the consumer gone, the drained
/// ring still takes it: `ConsumerGone` is only for a ring held by
/// unreleased messages.
#[test]
fn a_drained_ring_takes_any_message_that_fits_its_message_area_at_every_head_position() {
    for arena in [4096_u64, 16 << 10] {
        let test = format!("bigmsg-{arena}");
        let (dir, mut o) = fuzz_setup(&test);
        o.arena_bytes = arena;
        // One consumer: an arena this small has save room for one.
        o.segment.max_consumers = 1;
        let (area, _) = laminar_ring_split(arena);
        // The largest one-value binary batch whose message fits the area;
        // any larger one is refused at once, naming the area. (Found on a
        // ring of its own: a refusal restarts the producer's stream.)
        let mut probe = BatchProducer::create(&format!("{test}-probe"), &o).unwrap();
        let mut n = area as usize;
        let big = loop {
            match probe.try_send(&blob(n)) {
                Err(ArrowRingError::BatchTooLarge { needed, arena }) => {
                    assert_eq!(arena, area, "the limit named is the message area");
                    assert!(needed > area);
                    n -= 64;
                }
                Ok(()) => break blob(n),
                Err(e) => panic!("{e}"),
            }
        };
        drop(probe);
        let mut tx = BatchProducer::create(&test, &o).unwrap();
        let mut rx = BatchConsumer::open(&test, &o).unwrap();
        tx.send(&blob(1)).unwrap(); // the schema, and a first batch
        assert_eq!(rx.recv().unwrap().unwrap(), blob(1));
        let path = dir.join(&test);
        let head = || {
            let bytes = std::fs::read(&path).unwrap();
            u64::from_ne_bytes(bytes[152..160].try_into().unwrap()) % area
        };
        let mut seen = std::collections::BTreeSet::new();
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for round in 0..30 * (area / 64) as usize {
            seen.insert(head());
            tx.try_send(&big).unwrap();
            assert_eq!(tx.pending(), 0, "round {round}: the big message waits");
            assert_eq!(rx.recv().unwrap().unwrap(), big);
            // One to three fillers of random sizes move the head.
            for _ in 0..1 + next() % 3 {
                let filler = blob(next() % (area as usize / 2));
                tx.try_send(&filler).unwrap();
                assert_eq!(tx.pending(), 0, "round {round}: a filler waits");
                assert_eq!(rx.recv().unwrap().unwrap(), filler);
            }
        }
        // A head is never inside the smallest message's length past an
        // arena boundary (a message never spans one): every other position
        // was tried.
        let lo = *seen.iter().find(|&&p| p > 0).unwrap();
        assert!(lo <= 512, "the smallest message is {lo} bytes");
        let reachable = (lo..area).step_by(64).chain([0]);
        let missed: Vec<_> = reachable.filter(|p| !seen.contains(p)).collect();
        assert!(missed.is_empty(), "head positions never tried: {missed:?}");
        // The consumer goes; the ring is drained: still no waiting.
        drop(rx);
        tx.send_timeout(&big, Duration::from_secs(10)).unwrap();
        assert_eq!(tx.pending(), 0, "a drained ring waits for a consumer");
        tx.close().unwrap();
        let mut rx = BatchConsumer::open(&test, &o).unwrap();
        assert_eq!(rx.recv().unwrap().unwrap(), big);
        drop(rx);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Receives until the stream ends; returns the batches and how it ended.
fn receive_to_end(rx: &mut BatchConsumer) -> (Vec<RecordBatch>, Result<(), ArrowRingError>) {
    let mut got = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(b)) => got.push(b),
            Ok(None) => return (got, Ok(())),
            Err(e) => return (got, Err(e)),
        }
    }
}

/// A producer dropped while batches it took (`try_send`) are still pending
/// and cannot be delivered: the stream ends abandoned, so the consumer
/// learns it is incomplete (`PeerGone` after every delivered batch), never
/// a clean end of stream after fewer batches than were accepted.
#[test]
fn a_producer_dropped_with_undelivered_batches_ends_the_stream_abandoned() {
    let ring = Ring::new("droppending");
    let o = opts(4, 64 << 10);
    let b = everything_batch(20, 7).project(&[0, 1]).unwrap();
    let mut tx = BatchProducer::create(&ring.name, &o).unwrap();
    let mut rx = BatchConsumer::open(&ring.name, &o).unwrap();
    let mut accepted = 0;
    loop {
        match tx.try_send(&b) {
            Ok(()) => accepted += 1,
            Err(ArrowRingError::Timeout) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(tx.pending() > 0, "the last accepted batch waits for room");
    drop(tx); // nobody drains the ring meanwhile
    let (got, end) = receive_to_end(&mut rx);
    assert!(
        got.len() < accepted,
        "{} of {accepted} delivered",
        got.len()
    );
    assert!(got.iter().all(|g| g == &b));
    assert!(
        matches!(end, Err(ArrowRingError::PeerGone)),
        "after {} of {accepted} accepted batches: {end:?}",
        got.len()
    );
}

/// A `close` that fails (the consumer is gone and the ring holds what it
/// did not release) reports the error and does not end the stream as
/// closed: the next consumer gets what was delivered, then `PeerGone`.
#[test]
fn a_failed_close_does_not_end_the_stream_cleanly() {
    let ring = Ring::new("failclose");
    let o = opts(4, 64 << 10);
    let b = everything_batch(20, 8).project(&[0, 1]).unwrap();
    let mut tx = BatchProducer::create(&ring.name, &o).unwrap();
    drop(BatchConsumer::open(&ring.name, &o).unwrap()); // attached, gone
    let mut accepted = 0;
    while tx.pending() == 0 {
        tx.send(&b).unwrap(); // taken, pending once the ring is full
        accepted += 1;
    }
    match tx.close() {
        Err(ArrowRingError::ConsumerGone) => {}
        other => panic!("expected ConsumerGone, got {other:?}"),
    }
    let mut rx = BatchConsumer::open(&ring.name, &o).unwrap();
    let (got, end) = receive_to_end(&mut rx);
    assert_eq!(got.len(), accepted - 1, "all but the pending batch");
    assert!(
        matches!(end, Err(ArrowRingError::PeerGone)),
        "a failed close ended the stream as {end:?}"
    );
}

/// "Either may start first" on a ring that already carried a stream: a
/// consumer reports the end of a producer session only if it was reading
/// that session (a producer was alive when it attached, or it received a
/// message of it), and only once; otherwise it waits for the next session.
#[test]
fn a_consumer_reports_only_the_end_of_a_session_it_was_reading() {
    let ring = Ring::new("sessions-end");
    let o = opts(16, 64 << 10);
    let batch = |v: i64| {
        RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![v])) as ArrayRef)])
            .unwrap()
    };
    let quiet = Duration::from_millis(300);
    let waits = |rx: &mut BatchConsumer, what: &str| match rx.recv_timeout(quiet) {
        Err(ArrowRingError::Timeout) => {}
        other => panic!("{what}: expected to wait, got {other:?}"),
    };
    let mut tx = BatchProducer::create(&ring.name, &o).unwrap();
    tx.send(&batch(1)).unwrap();
    tx.close().unwrap();
    // Attached after the producer closed: it still gets the stream and its end.
    let mut rx = BatchConsumer::open(&ring.name, &o).unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), batch(1));
    assert!(rx.recv().unwrap().is_none());
    waits(&mut rx, "an end already reported");
    drop(rx);
    // A new consumer of the finished, drained ring waits for the next session.
    let mut rx = BatchConsumer::open(&ring.name, &o).unwrap();
    waits(&mut rx, "a consumer that never saw the session");
    let mut tx = BatchProducer::open(&ring.name, &o).unwrap();
    tx.send(&batch(2)).unwrap();
    tx.close().unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), batch(2));
    assert!(rx.recv().unwrap().is_none());
    // A session that sends nothing, while the consumer waits: its end too.
    let tx = BatchProducer::open(&ring.name, &o).unwrap();
    tx.close().unwrap();
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().is_none());
    // A producer that dies: PeerGone for the consumer reading it, once.
    let mut tx = BatchProducer::open(&ring.name, &o).unwrap();
    tx.send(&batch(3)).unwrap();
    tx.abandon();
    assert_eq!(rx.recv().unwrap().unwrap(), batch(3));
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(10)),
        Err(ArrowRingError::PeerGone)
    ));
    waits(&mut rx, "a death already reported");
    drop(rx);
    let mut rx = BatchConsumer::open(&ring.name, &o).unwrap();
    waits(&mut rx, "a death before it attached, everything delivered");
}

/// A record batch message with compressed buffers is refused, not inflated:
/// the ring's producer never compresses, and a decoder built with
/// arrow-ipc's lz4 feature (as this test binary is) would otherwise inflate
/// a few bytes a hostile producer wrote to whatever size they claim. (The
/// refused message is consumed, as any corrupt one: a fresh ring for each
/// receive path.)
#[test]
fn a_compressed_message_is_refused_not_inflated() {
    use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteOptions, write_message};
    let zeros = Int64Array::from(vec![0_i64; 100_000]);
    let b = RecordBatch::try_from_iter([("z", Arc::new(zeros) as ArrayRef)]).unwrap();
    // The batch of 100,000 rows, LZ4-compressed: a body of a few hundred
    // bytes that inflates to 800,000.
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(arrow_ipc::CompressionType::LZ4_FRAME))
        .unwrap();
    let mut tracker = DictionaryTracker::new(false);
    let (_, encoded) = IpcDataGenerator::default()
        .encode(&b, &mut tracker, &options, &mut Default::default())
        .unwrap();
    let mut message = Vec::new();
    write_message(&mut message, encoded, &options).unwrap();
    for zero_copy in [false, true] {
        let name = format!("compressed-{zero_copy}");
        let (dir, o) = fuzz_setup(&name);
        let mut tx = BatchProducer::create(&name, &o).unwrap();
        tx.send(&b.slice(0, 10)).unwrap(); // slot 0: schema; slot 1: the batch
        tx.close().unwrap();
        let path = dir.join(&name);
        let bytes = std::fs::read(&path).unwrap();
        let [pos, len, end] = descriptor_at(&bytes, 1);
        let (messages, _) = laminar_ring_split(o.arena_bytes);
        assert!(
            (message.len() as u64) < 16 << 10 && pos + (message.len() as u64) < messages,
            "the compressed message ({} bytes, was {len}) fits where the batch was",
            message.len()
        );
        let arena_at = (SLOTS_AT as u64 + 16 * 32).next_multiple_of(4096);
        write_in_place(&path, arena_at + pos % messages, &message);
        let forged = [
            pos,
            message.len() as u64,
            end.max(pos + message.len() as u64),
        ];
        let raw: Vec<u8> = forged.iter().flat_map(|w| w.to_ne_bytes()).collect();
        write_in_place(&path, SLOTS_AT as u64 + 32, &raw);
        let mut rx = BatchConsumer::open(&name, &o).unwrap();
        let got = match zero_copy {
            true => rx.recv_zero_copy().map(|b| b.map(|b| b.num_rows())),
            false => rx.recv().map(|b| b.map(|b| b.num_rows())),
        };
        match got {
            Err(ArrowRingError::CorruptMessage { seq: 1, ref source })
                if source.to_string().contains("compressed") => {}
            other => panic!("expected the compressed slot 1 refused, got {other:?}"),
        }
        drop(rx);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// `stream_schema` reads a ring's schema without attaching: the unread
/// schema message, then (after a consumer read everything) the consumer's
/// saved state; corrupted descriptors, message bytes and save areas give a
/// typed error or no schema, never a panic or a read outside the arena.
#[test]
fn stream_schema_reads_the_schema_and_survives_corruption() {
    use laminar_ring::arrow::stream_schema;
    let (dir, o) = fuzz_setup("peek");
    assert!(stream_schema("peek", &o.segment).is_err(), "no such ring");
    laminar_ring::arrow::create("peek", &o).unwrap();
    assert_eq!(stream_schema("peek", &o.segment).unwrap(), None);
    let batch = everything_batch(7, 3);
    let mut tx = BatchProducer::open("peek", &o).unwrap();
    tx.send(&batch).unwrap();
    tx.close().unwrap();
    assert_eq!(
        stream_schema("peek", &o.segment).unwrap().as_deref(),
        Some(batch.schema().as_ref()),
        "from the unread schema message"
    );
    let path = dir.join("peek");
    let unread = std::fs::read(&path).unwrap();
    let mut rx = BatchConsumer::open("peek", &o).unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), batch);
    assert!(rx.recv().unwrap().is_none());
    drop(rx);
    assert_eq!(
        stream_schema("peek", &o.segment).unwrap().as_deref(),
        Some(batch.schema().as_ref()),
        "from the saved state"
    );
    let drained = std::fs::read(&path).unwrap();
    let slots_at: usize = SLOTS_AT;
    let arena_at = (slots_at + 16 * 32).next_multiple_of(4096);
    let arena_len = (256 << 10) as usize;
    let save_at = arena_at + arena_len - ((arena_len / 8) & !63);
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let (mut found, mut errors) = (0, 0);
    for case in 0..3_000 {
        let mut bytes = if case % 2 == 0 {
            unread.clone()
        } else {
            drained.clone()
        };
        for _ in 0..1 + next() % 3 {
            let at = match case % 3 {
                0 => slots_at + next() % 32,
                1 => arena_at + next() % 4096,
                _ => save_at + next() % 4096,
            };
            corrupt_byte(&mut bytes[at], &mut next);
        }
        std::fs::write(&path, &bytes).unwrap();
        match stream_schema("peek", &o.segment) {
            Ok(Some(_)) => found += 1,
            Ok(None) => {}
            Err(ArrowRingError::CorruptMessage { .. } | ArrowRingError::Open(_)) => errors += 1,
            Err(e) => panic!("case {case}: unexpected error {e}"),
        }
    }
    eprintln!("3000 corruptions: {found} schemas read, {errors} typed errors");
    assert!(
        errors > 100,
        "corruption was detected in {errors} cases only"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A producer killed after appending its CLOSED end record and before
/// storing `producer_state = 2` (simulated: it abandons, leaving state 1
/// and no lock, and its record is written where and as it would have
/// appended it: docs/FORMAT.md, the end log at byte 640, `ends_head` at
/// 176) ended cleanly: the consumer gets its batch, then the end of the
/// stream, never `PeerGone`, and then waits; the next producer's session
/// follows.
#[test]
fn an_arrow_producer_killed_between_its_end_record_and_its_state_ended_cleanly() {
    let ring = Ring::new("record-then-kill");
    let o = opts(16, 64 << 10);
    let a = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![5])) as ArrayRef)])
        .unwrap();
    let mut rx = BatchConsumer::create(&ring.name, &o).unwrap();
    let mut tx = BatchProducer::open(&ring.name, &o).unwrap();
    tx.send(&a).unwrap();
    assert!(tx.flush(Duration::from_secs(10)).unwrap());
    tx.abandon();
    // Session 1 ended at write_seq 2 (its schema message and one batch).
    let path = std::path::Path::new(laminar_ring::shm::DEFAULT_DIR).join(&ring.name);
    write_in_place(&path, 640, &1_u64.to_ne_bytes());
    write_in_place(&path, 648, &2_u64.to_ne_bytes());
    write_in_place(&path, 656, &1_u32.to_ne_bytes());
    write_in_place(&path, 176, &1_u64.to_ne_bytes());
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap(),
        a
    );
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(None) => {}
        other => panic!("expected the recorded clean end, got {other:?}"),
    }
    match rx.recv_timeout(Duration::from_millis(200)) {
        Err(ArrowRingError::Timeout) => {}
        other => panic!("expected to wait for the next session, got {other:?}"),
    }
    let mut tx = BatchProducer::open(&ring.name, &o).unwrap();
    tx.send(&a).unwrap();
    tx.close().unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap(),
        a
    );
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().is_none());
}

/// Options of a consumer subscribing as `name` from `start`.
fn subscribing(name: &str, start: laminar_ring::shm::Start) -> ArrowRingOptions {
    let mut o = opts(16, 1 << 20);
    o.segment.subscriber = name.to_owned();
    o.segment.start = start;
    o
}

/// Two subscribers of one Arrow ring read every batch each, in order. One
/// that subscribes while a producer session runs cannot decode that
/// session (its schema came before its start): it skips the session's
/// remaining messages and reads from the next session on.
#[test]
fn an_arrow_subscriber_joining_a_running_session_reads_from_the_next_one() {
    use laminar_ring::shm::Start;
    let ring = Ring::new("fan-join");
    let mut tx = BatchProducer::create(&ring.name, &opts(16, 1 << 20)).unwrap();
    let mut first =
        BatchConsumer::open(&ring.name, &subscribing("first", Start::Earliest)).unwrap();
    let batches: Vec<RecordBatch> = (0..4).map(|i| everything_batch(10, i)).collect();
    tx.send(&batches[0]).unwrap();
    tx.send(&batches[1]).unwrap();
    let mut late = BatchConsumer::open(&ring.name, &subscribing("late", Start::Latest)).unwrap();
    tx.send(&batches[2]).unwrap();
    assert!(matches!(
        late.recv_timeout(Duration::from_millis(200)),
        Err(ArrowRingError::Timeout)
    ));
    tx.close().unwrap();
    let mut tx = BatchProducer::open(&ring.name, &opts(16, 1 << 20)).unwrap();
    tx.send(&batches[3]).unwrap();
    tx.close().unwrap();
    for (i, want) in batches[..3].iter().enumerate() {
        assert_eq!(&first.recv().unwrap().unwrap(), want, "first, batch {i}");
    }
    assert_eq!(first.recv().unwrap(), None, "the first session's end");
    assert_eq!(first.recv().unwrap().unwrap(), batches[3]);
    // The late one: the end of the session it skipped, then the next.
    assert_eq!(late.recv().unwrap(), None, "the first session's end");
    assert_eq!(late.recv().unwrap().unwrap(), batches[3]);
    // Both at the end, and the producer kept nothing for either.
    assert_eq!(first.recv().unwrap(), None);
    assert_eq!(late.recv().unwrap(), None);
    let info = laminar_ring::shm::inspect(&ring.name, &SegmentOptions::default()).unwrap();
    assert_eq!(info.subscribers.len(), 2);
    assert!(
        info.subscribers
            .iter()
            .all(|s| s.read_seq == info.write_seq)
    );
}

/// A subscriber that joined mid-session and skipped dictionary messages
/// (nothing it can decode), detached and attached again before the next
/// session, skips on: its skipped dictionaries are no state it saves.
#[test]
fn a_joined_subscriber_that_skipped_dictionaries_resumes_skipping() {
    use laminar_ring::shm::Start;
    let ring = Ring::new("fan-join-dict");
    let mut tx = BatchProducer::create(&ring.name, &opts(64, 1 << 20)).unwrap();
    let mut first =
        BatchConsumer::open(&ring.name, &subscribing("first", Start::Earliest)).unwrap();
    for i in 0..3 {
        tx.send(&dict_stream_batch(i)).unwrap();
    }
    let mut late = BatchConsumer::open(&ring.name, &subscribing("late", Start::Latest)).unwrap();
    // New dictionaries: dictionary messages the late one skips.
    for i in 3..7 {
        tx.send(&dict_stream_batch(i)).unwrap();
    }
    assert!(matches!(
        late.recv_timeout(Duration::from_millis(200)),
        Err(ArrowRingError::Timeout)
    ));
    drop(late);
    let mut late = BatchConsumer::open(&ring.name, &subscribing("late", Start::Earliest)).unwrap();
    assert!(matches!(
        late.recv_timeout(Duration::from_millis(200)),
        Err(ArrowRingError::Timeout)
    ));
    tx.close().unwrap();
    let mut tx = BatchProducer::open(&ring.name, &opts(64, 1 << 20)).unwrap();
    tx.send(&dict_stream_batch(7)).unwrap();
    tx.close().unwrap();
    assert_eq!(late.recv().unwrap(), None, "the skipped session's end");
    assert_eq!(late.recv().unwrap().unwrap(), dict_stream_batch(7));
    for i in 0..7 {
        assert_eq!(first.recv().unwrap().unwrap(), dict_stream_batch(i));
    }
}
