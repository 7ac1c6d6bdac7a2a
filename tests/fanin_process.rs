//! Fan-in across processes: several producer processes join one stream
//! (one lane each), one consumer reads them all. Real processes (this test
//! binary re-executed in a helper role), real `SIGKILL`s.
//!
//! Every item is `producer id << 40 | sequence number`, so the consumer
//! checks each producer's order and completeness item by item.
#![cfg(not(loom))]

mod common;

use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

use common::process::{Stream, env_u64, spawn_helper, wait_exit};
use common::{Rng, fnv};
use laminar_ring::shm::{
    FanInError, OpenError, SegmentOptions, ShmConsumer, ShmFanIn, ShmProducer, ShmPushError,
    ShmTryPopError, lane_name,
};

const SEQ_BITS: u32 = 40;

fn item(id: u64, seq: u64) -> u64 {
    (id << SEQ_BITS) | seq
}

fn split(v: u64) -> (u64, u64) {
    (v >> SEQ_BITS, v & ((1 << SEQ_BITS) - 1))
}

fn spawn_producer(stream: &str, id: u64, count: u64) -> Child {
    spawn_helper(
        "fanin-producer",
        stream,
        &[
            ("PRODUCER_ID", id.to_string()),
            ("COUNT", count.to_string()),
        ],
    )
}

#[test]
fn helper() {
    let Ok(role) = std::env::var("LAMINAR_HELPER") else {
        return; // an ordinary test run: nothing to do
    };
    let stream = std::env::var("LAMINAR_RING").expect("LAMINAR_RING");
    let code = match role.as_str() {
        "fanin-producer" => fanin_producer(&stream),
        "lane-maker" => lane_maker(&stream),
        other => panic!("unknown helper role {other}"),
    };
    std::process::exit(code);
}

/// Joins the stream and pushes `item(PRODUCER_ID, 0..COUNT)` (for ever when
/// COUNT is 0) in runs of up to 256, then closes.
fn fanin_producer(stream: &str) -> i32 {
    let id = env_u64("PRODUCER_ID");
    let count = match env_u64("COUNT") {
        0 => u64::MAX,
        n => n,
    };
    let mut tx =
        ShmProducer::<u64>::join(stream, 1 << 12, &SegmentOptions::default()).expect("join");
    let mut next = 0;
    let mut run = Vec::with_capacity(256);
    while next < count {
        run.clear();
        run.extend((next..(next + 256).min(count)).map(|s| item(id, s)));
        let mut done = 0;
        while done < run.len() {
            let n = tx.push_slice(&run[done..]);
            if n == 0 {
                match tx.push_timeout(run[done], Duration::from_millis(100)) {
                    Ok(()) => done += 1,
                    Err(ShmPushError::Full(_)) => {}
                    Err(ShmPushError::ConsumerGone(_)) => return 3,
                }
            }
            done += n;
        }
        next += run.len() as u64;
    }
    tx.close();
    0
}

/// Makes lane 1 of the stream and removes it again, for ever (lane 0 is
/// held by the test): to be killed at a random moment, mid-way through
/// making a lane as likely as anywhere.
fn lane_maker(stream: &str) -> i32 {
    let opts = SegmentOptions::default();
    loop {
        let tx = ShmProducer::<u64>::join(stream, 64, &opts).expect("join");
        assert_eq!(tx.lane(), 1);
        drop(tx);
        let _ = laminar_ring::shm::remove_unused(&lane_name(stream, 1), &opts.dir);
    }
}

/// What a consumer saw of each producer: the next sequence number it
/// expects, and an order-sensitive checksum.
#[derive(Default)]
struct Seen {
    next: HashMap<u64, u64>,
    sum: HashMap<u64, u64>,
    /// The lane each producer's items came from.
    lane_of: HashMap<u64, u32>,
}

impl Seen {
    /// Checks `v`, from `lane`, against what came before from its producer.
    fn take(&mut self, lane: u32, v: u64) {
        let (id, seq) = split(v);
        let next = self.next.entry(id).or_default();
        assert_eq!(
            seq, *next,
            "producer {id} (lane {lane}): out of order or lost"
        );
        *next += 1;
        let sum = self.sum.entry(id).or_default();
        *sum = fnv(*sum, v);
        // A producer keeps its lane for life.
        assert_eq!(
            *self.lane_of.entry(id).or_insert(lane),
            lane,
            "producer {id} changed lanes"
        );
    }
}

fn expected_sum(id: u64, count: u64) -> u64 {
    (0..count).fold(0, |h, s| fnv(h, item(id, s)))
}

#[test]
fn four_producer_processes_each_arrive_whole_and_in_order() {
    const PRODUCERS: u64 = 4;
    const COUNT: u64 = 2_500_000;
    let stream = Stream::new("lr-fanin", "four");
    let mut rx = ShmFanIn::<u64>::create_with(&stream.name, 1 << 12, &SegmentOptions::default())
        .expect("create the stream");
    // Producers start together; one that finishes before another has
    // joined must not end the stream.
    rx.set_linger(Some(Duration::from_secs(2)));
    let mut children: Vec<Child> = (0..PRODUCERS)
        .map(|id| spawn_producer(&stream.name, id, COUNT))
        .collect();
    let mut seen = Seen::default();
    let started = Instant::now();
    loop {
        match rx.pop_lane_timeout(Some(Duration::from_secs(30))) {
            Ok((lane, v)) => seen.take(lane, v),
            Err(FanInError::EndOfStream) => break,
            Err(e) => panic!("after {} items: {e}", seen.next.values().sum::<u64>()),
        }
    }
    let took = started.elapsed();
    for child in &mut children {
        assert_eq!(wait_exit(child, Duration::from_secs(30)), 0);
    }
    for id in 0..PRODUCERS {
        assert_eq!(seen.next.get(&id), Some(&COUNT), "producer {id}: count");
        assert_eq!(
            seen.sum[&id],
            expected_sum(id, COUNT),
            "producer {id}: checksum"
        );
    }
    // A producer that starts after another closed may take its lane.
    let lanes: std::collections::HashSet<_> = seen.lane_of.values().collect();
    assert_eq!(
        rx.lanes(),
        lanes.len(),
        "a lane for each producer at a time"
    );
    eprintln!(
        "{} items from {PRODUCERS} processes in {took:?}",
        PRODUCERS * COUNT
    );
}

#[test]
fn a_killed_producer_loses_nothing_it_committed_and_the_others_finish() {
    const STEADY: u64 = 20_000;
    let stream = Stream::new("lr-fanin", "kill");
    let mut rng = Rng::from_env_or_time();
    let mut rx = ShmFanIn::<u64>::create_with(&stream.name, 1 << 10, &SegmentOptions::default())
        .expect("create the stream");
    rx.set_linger(Some(Duration::from_millis(500)));
    let mut seen = Seen::default();
    let mut victims_items = 0;
    for trial in 0..50_u64 {
        let victim_id = 2 * trial;
        let steady_id = 2 * trial + 1;
        let mut victim = spawn_producer(&stream.name, victim_id, 0);
        let mut steady = spawn_producer(&stream.name, steady_id, STEADY);
        // Read until the victim has committed something, then a random
        // while more, then SIGKILL it mid-stream.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen.next.contains_key(&victim_id) {
            assert!(
                Instant::now() < deadline,
                "trial {trial}: the victim sent nothing"
            );
            match rx.pop_lane_timeout(Some(Duration::from_millis(100))) {
                Ok((lane, v)) => seen.take(lane, v),
                // The end of the previous trial, until these producers join.
                Err(FanInError::Timeout | FanInError::EndOfStream) => {}
                Err(e) => panic!("trial {trial}: before the kill: {e}"),
            }
        }
        let run_until = Instant::now() + Duration::from_micros(rng.below(20_000));
        while Instant::now() < run_until {
            match rx.try_pop_lane() {
                Ok((lane, v)) => seen.take(lane, v),
                Err(FanInError::Empty) => {}
                Err(e) => panic!("trial {trial}: before the kill: {e}"),
            }
        }
        victim.kill().expect("SIGKILL");
        victim.wait().expect("reap");
        // Everything else: the victim's committed items, its death (named
        // by its lane), the steady producer's items, then the end.
        let mut gone = None;
        loop {
            match rx.pop_lane_timeout(Some(Duration::from_secs(20))) {
                Ok((lane, v)) => seen.take(lane, v),
                Err(FanInError::Lane {
                    lane,
                    error: ShmTryPopError::PeerGone,
                }) => {
                    assert!(gone.is_none(), "trial {trial}: a second death reported");
                    gone = Some(lane);
                }
                Err(FanInError::EndOfStream) => break,
                Err(e) => panic!("trial {trial}: after the kill: {e}"),
            }
        }
        assert_eq!(wait_exit(&mut steady, Duration::from_secs(20)), 0);
        let gone = gone.unwrap_or_else(|| panic!("trial {trial}: the death was not reported"));
        // (The steady producer may take the victim's lane after its death,
        // when it starts late: the death is reported before its items.)
        assert_eq!(
            seen.lane_of.get(&victim_id),
            Some(&gone),
            "trial {trial}: the death reported names the victim's lane"
        );
        assert_eq!(seen.next[&steady_id], STEADY, "trial {trial}: steady count");
        assert_eq!(
            seen.sum[&steady_id],
            expected_sum(steady_id, STEADY),
            "trial {trial}: steady checksum"
        );
        victims_items += seen.next[&victim_id];
    }
    eprintln!("50 kills; the victims committed {victims_items} items, every one delivered once");
}

#[test]
fn a_lane_with_items_waiting_gets_its_turn_after_at_most_one_burst_of_another() {
    const COUNT: u64 = 20_000;
    let stream = Stream::new("lr-fanin", "fair");
    let opts = SegmentOptions::default();
    // Three producers fill their lanes (each holds all it sends), then the
    // consumer reads: runs of one lane are at most a burst long while
    // another lane has items.
    let mut txs: Vec<ShmProducer<u64>> = (0..3)
        .map(|_| ShmProducer::<u64>::join(&stream.name, 1 << 15, &opts).expect("join"))
        .collect();
    for (id, tx) in txs.iter_mut().enumerate() {
        assert_eq!(tx.lane(), id as u32, "lanes are taken in order");
        let items: Vec<u64> = (0..COUNT).map(|s| item(id as u64, s)).collect();
        assert_eq!(tx.push_slice(&items), COUNT as usize);
    }
    drop(txs);
    let mut rx = ShmFanIn::<u64>::open_with(&stream.name, &opts).expect("open");
    rx.set_burst(16);
    let mut seen = Seen::default();
    let mut left = [COUNT; 3];
    let (mut run_lane, mut run) = (u32::MAX, 0);
    loop {
        match rx.try_pop_lane() {
            Ok((lane, v)) => {
                seen.take(lane, v);
                left[lane as usize] -= 1;
                if lane == run_lane {
                    run += 1;
                } else {
                    (run_lane, run) = (lane, 1);
                }
                let others_waiting = left
                    .iter()
                    .enumerate()
                    .any(|(l, &n)| l != lane as usize && n > 0);
                assert!(
                    run <= 16 || !others_waiting,
                    "lane {lane} ran {run} items while others waited"
                );
            }
            Err(FanInError::EndOfStream) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(left, [0; 3]);
    for id in 0..3 {
        assert_eq!(seen.sum[&id], expected_sum(id, COUNT));
    }
}

#[test]
fn joining_takes_free_lanes_reuses_closed_ones_and_refuses_another_type() {
    let stream = Stream::new("lr-fanin", "join");
    let opts = SegmentOptions {
        max_consumers: 3,
        ..SegmentOptions::default()
    };
    // Two subscribers of lane 0, one of them before any lane 1 exists.
    let first = ShmProducer::<u64>::join(&stream.name, 64, &opts).expect("lane 0");
    assert_eq!(first.lane(), 0);
    let mut archiver_opts = opts.clone();
    archiver_opts.subscriber = "archiver".into();
    drop(ShmConsumer::<u64>::open_with(&stream.name, &archiver_opts).expect("subscribe"));
    let mut second = ShmProducer::<u64>::join(&stream.name, 64, &opts).expect("lane 1");
    assert_eq!(second.lane(), 1);
    // Lane 1 has lane 0's geometry (64 slots, not the 4096 asked for) and
    // its subscriptions: the archiver's holds lane 1's producer back.
    let third = ShmProducer::<u64>::join(&stream.name, 4096, &opts).expect("lane 2");
    assert_eq!(third.lane(), 2);
    assert_eq!(third.capacity(), 64);
    for v in 0..64 {
        second.try_push(v).expect("room");
    }
    assert!(
        second.try_push(64).is_err(),
        "the archiver subscribed in lane 1 keeps its items"
    );
    let mut lane1 = ShmConsumer::<u64>::open_with(&lane_name(&stream.name, 1), &archiver_opts)
        .expect("archiver in lane 1");
    assert_eq!(lane1.try_pop().expect("from the start"), 0);
    drop(lane1);
    // A closed lane is taken by the next producer.
    drop(second);
    let again = ShmProducer::<u64>::join(&stream.name, 64, &opts).expect("lane 1 again");
    assert_eq!(again.lane(), 1);
    // Another slot type is refused before any lane is made for it.
    match ShmProducer::<u32>::join(&stream.name, 64, &opts) {
        Err(OpenError::Mismatch { .. }) => {}
        other => panic!("expected Mismatch, got {:?}", other.map(|p| p.lane())),
    }
    assert!(!stream.dir.join(lane_name(&stream.name, 3)).exists());
    drop((first, third, again));
}

/// What a lane maker killed after sizing the file and before READY leaves:
/// a sized file whose header never became ready, its init lock free.
fn half_made_lane(stream: &Stream, lane: u32) -> std::path::PathBuf {
    let path = stream.dir.join(lane_name(&stream.name, lane));
    std::fs::write(&path, vec![0u8; 1 << 16]).expect("write a half-made lane");
    path
}

#[test]
fn a_lane_whose_maker_died_after_sizing_it_is_removed_and_made_again() {
    let stream = Stream::new("lr-fanin", "sized");
    let opts = SegmentOptions::default();
    let first = ShmProducer::<u64>::join(&stream.name, 64, &opts).expect("lane 0");
    // The consumer's scan removes it, and reports nothing.
    let lane1 = half_made_lane(&stream, 1);
    let mut rx = ShmFanIn::<u64>::open_with(&stream.name, &opts).expect("open");
    assert!(!lane1.exists(), "the consumer left the half-made lane");
    // A joiner removes it and makes it again, and its items arrive.
    half_made_lane(&stream, 1);
    let mut second = ShmProducer::<u64>::join(&stream.name, 64, &opts).expect("join");
    assert_eq!(second.lane(), 1);
    second.try_push(item(1, 0)).expect("room");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rx.try_pop_lane() {
            Ok(got) => {
                assert_eq!(got, (1, item(1, 0)));
                break;
            }
            Err(FanInError::Empty) if Instant::now() < deadline => {}
            Err(e) => panic!("{e}"),
        }
    }
    drop((first, second));
}

#[test]
fn a_lane_past_a_removed_one_is_still_read() {
    let stream = Stream::new("lr-fanin", "hole");
    let opts = SegmentOptions::default();
    let join = || ShmProducer::<u64>::join(&stream.name, 64, &opts).expect("join");
    let (first, second, mut third) = (join(), join(), join());
    assert_eq!(third.lane(), 2);
    third.push_slice(&[item(2, 0), item(2, 1)]);
    drop((first, second, third));
    laminar_ring::shm::remove_unused(&lane_name(&stream.name, 1), &stream.dir).expect("rm lane 1");
    let mut rx = ShmFanIn::<u64>::open_with(&stream.name, &opts).expect("open");
    let mut seen = Seen::default();
    loop {
        match rx.try_pop_lane() {
            Ok((lane, v)) => seen.take(lane, v),
            Err(FanInError::EndOfStream) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(seen.next.get(&2), Some(&2), "lane 2's items, past the hole");
    assert_eq!(seen.lane_of.get(&2), Some(&2));
}

#[test]
fn a_lane_is_never_seen_without_its_streams_subscriptions_whenever_its_maker_dies() {
    let stream = Stream::new("lr-fanin", "made");
    let opts = SegmentOptions::default();
    let first = ShmProducer::<u64>::join(&stream.name, 64, &opts).expect("lane 0");
    let mut archiver = opts.clone();
    archiver.subscriber = "archiver".into();
    drop(ShmConsumer::<u64>::open_with(&stream.name, &archiver).expect("subscribe"));
    let lane1 = lane_name(&stream.name, 1);
    let mut rng = Rng::from_env_or_time();
    let (mut checked, mut unready) = (0, 0);
    for _ in 0..40 {
        let mut maker = spawn_helper("lane-maker", &stream.name, &[]);
        // Once it is making lanes, a random moment: a sleep on purpose.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !stream.dir.join(&lane1).exists() {
            assert!(
                Instant::now() < deadline,
                "the lane maker never made lane 1"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
        std::thread::sleep(Duration::from_micros(rng.below(3_000)));
        maker.kill().expect("SIGKILL");
        maker.wait().expect("reap");
        match laminar_ring::shm::inspect(&lane1, &opts) {
            Ok(info) => {
                let names: Vec<_> = info.subscribers.iter().map(|s| s.name.as_str()).collect();
                assert!(
                    names.contains(&"archiver"),
                    "lane 1 open without lane 0's subscription: {names:?}"
                );
                checked += 1;
            }
            Err(OpenError::NotFound { .. }) => {}
            Err(OpenError::NotReady { .. }) => unready += 1,
            Err(e) => panic!("lane 1: {e}"),
        }
        // Whatever the kill left, the next maker starts from no lane 1 (a
        // lane never made ready is removed by the next joiner anyway).
        let _ = laminar_ring::shm::remove_unused(&lane1, &opts.dir);
    }
    assert!(
        checked > 0,
        "no trial found lane 1 made (unready {unready})"
    );
    // And a joiner after a kill mid-making gets a whole lane 1.
    let mut maker = spawn_helper("lane-maker", &stream.name, &[]);
    while !stream.dir.join(&lane1).exists() {
        std::thread::sleep(Duration::from_micros(100));
    }
    std::thread::sleep(Duration::from_micros(rng.below(3_000)));
    maker.kill().expect("SIGKILL");
    maker.wait().expect("reap");
    let again = ShmProducer::<u64>::join(&stream.name, 64, &opts).expect("lane 1 again");
    assert_eq!(again.lane(), 1);
    let info = laminar_ring::shm::inspect(&lane1, &opts).expect("inspect");
    assert!(info.subscribers.iter().any(|s| s.name == "archiver"));
    drop((first, again));
}
