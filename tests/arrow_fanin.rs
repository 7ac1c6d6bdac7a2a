//! Fan-in of Arrow streams across processes: several producer processes
//! join one stream (one lane each), one consumer reads every batch, each
//! producer's in order; a producer killed mid-stream loses nothing it
//! committed; a producer of another schema is refused when it joins.
#![cfg(all(feature = "arrow", not(loom)))]

mod common;

use std::collections::HashMap;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use common::Rng;
use common::process::{Stream, spawn_helper, wait_exit};
use laminar_ring::arrow::{
    ArrowRingError, ArrowRingOptions, BatchFanIn, BatchFanInError, BatchProducer,
};
use laminar_ring::shm::lane_name;

const ROWS: usize = 1_000;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("producer", DataType::Int64, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("tag", DataType::Utf8, false),
    ]))
}

/// Batch `i` of producer `id`: rows `i * ROWS ..`, each tagged.
fn batch(id: i64, i: i64) -> RecordBatch {
    let base = i * ROWS as i64;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![id; ROWS])),
        Arc::new(Int64Array::from_iter_values(base..base + ROWS as i64)),
        Arc::new(StringArray::from_iter_values(
            (0..ROWS as i64).map(|j| format!("p{id}-{}", base + j)),
        )),
    ];
    RecordBatch::try_new(schema(), cols).unwrap()
}

fn opts() -> ArrowRingOptions {
    ArrowRingOptions {
        slots: 64,
        arena_bytes: 4 << 20,
        ..ArrowRingOptions::default()
    }
}

fn spawn_producer(stream: &str, id: i64, batches: i64) -> Child {
    spawn_helper(
        "arrow-fanin-producer",
        stream,
        &[
            ("PRODUCER_ID", id.to_string()),
            ("BATCHES", batches.to_string()),
        ],
    )
}

#[test]
fn helper() {
    let Ok(role) = std::env::var("LAMINAR_HELPER") else {
        return;
    };
    assert_eq!(role, "arrow-fanin-producer");
    let stream = std::env::var("LAMINAR_RING").unwrap();
    let id: i64 = std::env::var("PRODUCER_ID").unwrap().parse().unwrap();
    // 0: for ever.
    let batches = match std::env::var("BATCHES").unwrap().parse::<i64>().unwrap() {
        0 => i64::MAX,
        n => n,
    };
    let mut tx = BatchProducer::join(&stream, schema(), &opts()).expect("join");
    for i in 0..batches {
        tx.send(&batch(id, i)).expect("send");
    }
    tx.close().expect("close");
    std::process::exit(0);
}

/// Checks each batch against the next one its producer should send.
#[derive(Default)]
struct Seen {
    next: HashMap<i64, i64>,
    lane_of: HashMap<i64, u32>,
}

impl Seen {
    fn take(&mut self, lane: u32, b: &RecordBatch) {
        let id = b
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0);
        let next = self.next.entry(id).or_default();
        assert_eq!(b, &batch(id, *next), "producer {id}: batch {next} differs");
        *next += 1;
        assert_eq!(
            *self.lane_of.entry(id).or_insert(lane),
            lane,
            "lane of {id}"
        );
    }
}

#[test]
fn three_producer_processes_arrive_whole_and_in_order_copy_and_zero_copy() {
    for zero_copy in [false, true] {
        let stream = Stream::new("lr-afanin", if zero_copy { "zc" } else { "copy" });
        let mut rx = BatchFanIn::create(&stream.name, &opts()).unwrap();
        rx.set_linger(Some(Duration::from_secs(2)));
        let mut kids: Vec<Child> = (0..3)
            .map(|id| spawn_producer(&stream.name, id, 300))
            .collect();
        let mut seen = Seen::default();
        loop {
            let got = if zero_copy {
                rx.recv_lane_zero_copy(Some(Duration::from_secs(30)))
                    .map(|o| o.map(|(l, b)| (l, b.into_inner())))
            } else {
                rx.recv_lane(Some(Duration::from_secs(30)))
            };
            match got {
                Ok(Some((lane, b))) => seen.take(lane, &b),
                Ok(None) => break,
                Err(e) => panic!("{e}"),
            }
        }
        for k in &mut kids {
            assert_eq!(wait_exit(k, Duration::from_secs(60)), 0);
        }
        for id in 0..3 {
            assert_eq!(seen.next.get(&id), Some(&300), "producer {id}");
        }
        // A producer that starts after another closed may take its lane.
        let lanes: std::collections::HashSet<_> = seen.lane_of.values().collect();
        assert_eq!(rx.lanes(), lanes.len());
        assert_eq!(rx.schema(), Some(&schema()));
    }
}

#[test]
fn a_killed_arrow_producer_loses_no_committed_batch_and_is_named() {
    let stream = Stream::new("lr-afanin", "kill");
    let mut rng = Rng::from_env_or_time();
    let mut rx = BatchFanIn::create(&stream.name, &opts()).unwrap();
    rx.set_linger(Some(Duration::from_millis(300)));
    let mut seen = Seen::default();
    for trial in 0..10_i64 {
        let (victim_id, steady_id) = (2 * trial, 2 * trial + 1);
        let mut victim = spawn_producer(&stream.name, victim_id, 0);
        let mut steady = spawn_producer(&stream.name, steady_id, 100);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen.next.contains_key(&victim_id) {
            assert!(
                Instant::now() < deadline,
                "trial {trial}: victim sent nothing"
            );
            match rx.recv_lane(Some(Duration::from_millis(100))) {
                Ok(Some((lane, b))) => seen.take(lane, &b),
                Ok(None) | Err(BatchFanInError::Timeout) => {}
                Err(e) => panic!("trial {trial}: {e}"),
            }
        }
        let until = Instant::now() + Duration::from_micros(rng.below(20_000));
        while Instant::now() < until {
            if let Ok(Some((lane, b))) = rx.recv_lane(Some(Duration::from_millis(1))) {
                seen.take(lane, &b);
            }
        }
        victim.kill().unwrap();
        victim.wait().unwrap();
        let mut gone = None;
        loop {
            match rx.recv_lane(Some(Duration::from_secs(20))) {
                Ok(Some((lane, b))) => seen.take(lane, &b),
                Ok(None) => break,
                Err(BatchFanInError::Lane {
                    lane,
                    error: ArrowRingError::PeerGone,
                }) => {
                    assert!(gone.is_none(), "trial {trial}: two deaths");
                    gone = Some(lane);
                }
                Err(e) => panic!("trial {trial}: {e}"),
            }
        }
        assert_eq!(wait_exit(&mut steady, Duration::from_secs(60)), 0);
        assert_eq!(seen.next[&steady_id], 100, "trial {trial}: steady");
        assert_eq!(
            seen.lane_of.get(&victim_id).copied(),
            gone,
            "trial {trial}: the death names the victim's lane"
        );
    }
}

#[test]
fn a_producer_of_another_schema_is_refused_when_it_joins() {
    let stream = Stream::new("lr-afanin", "schema");
    let mut first = BatchProducer::join(&stream.name, schema(), &opts()).unwrap();
    first.send(&batch(0, 0)).unwrap();
    let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, true)]));
    match BatchProducer::join(&stream.name, other, &opts()) {
        Err(ArrowRingError::SchemaMismatch { expected, .. }) => assert_eq!(expected, schema()),
        Err(e) => panic!("expected SchemaMismatch, got {e}"),
        Ok(p) => panic!("joined lane {}", p.lane()),
    }
    // Nothing was made for it, and one of the same schema joins lane 1.
    let second = BatchProducer::join(&stream.name, schema(), &opts()).unwrap();
    assert_eq!((first.lane(), second.lane()), (0, 1));
    let dir = std::path::Path::new(laminar_ring::shm::DEFAULT_DIR);
    assert!(!dir.join(lane_name(&stream.name, 2)).exists());
    // A batch of another schema than the one joined with is refused too.
    let mut second = second;
    let stray =
        RecordBatch::try_from_iter([("x", Arc::new(StringArray::from(vec!["a"])) as ArrayRef)])
            .unwrap();
    assert!(matches!(
        second.send(&stray),
        Err(ArrowRingError::SchemaMismatch { .. })
    ));
    assert!(stray.column(0).len() == 1);
}
