//! `Policy::Lag`: a subscriber that holds the producer back is dropped when
//! it has had no consumer attached for the grace period, or (typed rings
//! with a bound) when it is the bound behind; its consumer is told how many
//! items it missed and goes on from the oldest item the ring holds. The
//! others never wait for it.
//!
//! Items are their own sequence numbers, so every read is checked against
//! the position it was read at.
#![cfg(not(loom))] // the shared-memory layer is compiled out under loom

use std::time::{Duration, Instant};

use laminar_ring::shm::{
    self, OpenError, Policy, SegmentOptions, ShmConsumer, ShmProducer, ShmPushError,
    ShmTryPopError, Start,
};

/// A ring in /dev/shm, removed at the end.
struct Ring {
    name: String,
}

impl Ring {
    fn new(test: &str) -> Self {
        let name = format!("lr-lag-{}-{test}", std::process::id());
        let _ = shm::remove(&name);
        Self { name }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let _ = shm::remove(&self.name);
    }
}

fn with(policy: Policy, subscriber: &str) -> SegmentOptions {
    SegmentOptions {
        policy,
        subscriber: subscriber.to_owned(),
        start: Start::Earliest,
        ..SegmentOptions::default()
    }
}

fn lag(bound: Option<u64>, grace_ms: u64) -> Policy {
    Policy::Lag {
        bound,
        grace: Duration::from_millis(grace_ms),
    }
}

/// The `Lagged` report, then every item from where it resumed up to
/// `end`, each its own sequence number; returns (missed, resumed at).
fn lagged_then_in_order(rx: &mut ShmConsumer<u64>, end: u64) -> (u64, u64) {
    let missed = match rx.try_pop() {
        Err(ShmTryPopError::Lagged { missed }) => missed,
        other => panic!("expected Lagged, got {other:?}"),
    };
    let start = rx.read_seq();
    for want in start..end {
        assert_eq!(rx.try_pop(), Ok(want), "after the lag");
    }
    assert_eq!(rx.try_pop(), Err(ShmTryPopError::Empty));
    (missed, start)
}

#[test]
fn the_policy_is_recorded_in_the_ring_and_checked_at_create() {
    let ring = Ring::new("recorded");
    let policy = lag(Some(4), 250);
    shm::create::<u64>(&ring.name, 8, &with(policy, "a")).unwrap();
    let info = shm::inspect(&ring.name, &SegmentOptions::default()).unwrap();
    assert_eq!(info.layout.policy, policy);
    // An existing ring keeps its policy, whatever an opener asks for.
    drop(ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "a")).unwrap());
    let info = shm::inspect(&ring.name, &SegmentOptions::default()).unwrap();
    assert_eq!(info.layout.policy, policy);
    for bad in [0, 9] {
        let other = Ring::new(&format!("bad-bound-{bad}"));
        let err =
            shm::create::<u64>(&other.name, 8, &with(lag(Some(bad), 1), "a")).expect_err("refused");
        assert!(
            matches!(err, OpenError::Geometry(_)),
            "bound {bad}: {err:?}"
        );
    }
}

/// A subscriber with no consumer attached holds the producer back only
/// for the grace period; the live one reads every item meanwhile, and the
/// dropped one, back, is told what it missed and reads on in order.
#[test]
fn a_dead_subscriber_is_dropped_after_the_grace_and_told_what_it_missed() {
    let ring = Ring::new("dead");
    shm::create::<u64>(&ring.name, 8, &with(lag(None, 30), "live")).unwrap();
    let mut live = ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "live")).unwrap();
    drop(ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "away")).unwrap());
    let mut tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    let started = Instant::now();
    for v in 0..100 {
        tx.push_timeout(v, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("push {v}: {e}"));
        assert_eq!(live.try_pop(), Ok(v));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(30),
        "the producer did not wait for the grace"
    );
    let info = shm::inspect(&ring.name, &SegmentOptions::default()).unwrap();
    let away = info.subscribers.iter().find(|s| s.name == "away").unwrap();
    assert!(away.dropped, "{away:?}");
    assert_eq!(
        away.read_seq, 0,
        "a dropped subscription keeps its position"
    );
    let mut away = ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "away")).unwrap();
    let (missed, start) = lagged_then_in_order(&mut away, 100);
    assert_eq!(missed, start, "it stood at 0");
    assert!((92..100).contains(&start), "resumed at {start}");
    let info = shm::inspect(&ring.name, &SegmentOptions::default()).unwrap();
    assert!(info.subscribers.iter().all(|s| !s.dropped), "{info:?}");
    // Subscribed again: it holds the producer back like any subscriber.
    drop(live);
    for v in 100..108 {
        tx.try_push(v).unwrap();
    }
    assert!(matches!(tx.try_push(108), Err(ShmPushError::Full(_))));
    assert_eq!(away.try_pop(), Ok(100));
}

/// A dead subscriber that holds nothing back (a live one does) is kept:
/// dropping it would free no room.
#[test]
fn a_dead_subscriber_that_holds_nothing_back_is_kept() {
    let ring = Ring::new("dead-ahead");
    shm::create::<u64>(&ring.name, 8, &with(lag(None, 30), "slow")).unwrap();
    let _slow = ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "slow")).unwrap();
    let mut away = ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "away")).unwrap();
    let mut tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    for v in 0..8 {
        tx.try_push(v).unwrap();
        assert_eq!(away.try_pop(), Ok(v));
    }
    drop(away);
    assert!(matches!(
        tx.push_timeout(8, Duration::from_millis(200)),
        Err(ShmPushError::Full(8))
    ));
    let info = shm::inspect(&ring.name, &SegmentOptions::default()).unwrap();
    assert!(info.subscribers.iter().all(|s| !s.dropped), "{info:?}");
}

/// A dead subscriber holding end records back (producers that come and go
/// without filling the ring) is dropped after its grace too: the next
/// producer attaches, where under `Block` it would wait for room in the
/// end log and fail; it waits for the grace even when that is longer than
/// its attach timeout.
#[test]
fn a_dead_subscriber_holding_end_records_back_is_dropped() {
    let ring = Ring::new("dead-ends");
    shm::create::<u64>(&ring.name, 8, &with(lag(None, 500), "away")).unwrap();
    drop(ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "away")).unwrap());
    let opts = SegmentOptions {
        attach_timeout: Duration::from_millis(200),
        ..SegmentOptions::default()
    };
    for session in 0..20 {
        let tx = ShmProducer::<u64>::open_with(&ring.name, &opts)
            .unwrap_or_else(|e| panic!("session {session}: {e}"));
        tx.close();
    }
    let info = shm::inspect(&ring.name, &SegmentOptions::default()).unwrap();
    assert!(info.subscribers[0].dropped, "{info:?}");
    // Back, it has missed no item but the ends of sessions it will not see:
    // it is told so.
    let mut away = ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "away")).unwrap();
    assert_eq!(away.try_pop(), Err(ShmTryPopError::Lagged { missed: 0 }));
    assert!(matches!(
        away.try_pop(),
        Err(ShmTryPopError::Empty | ShmTryPopError::EndOfStream)
    ));
}

/// Under `Block` the same dead subscriber holds the producer back for
/// ever: its push reports `ConsumerGone` and keeps the items.
#[test]
fn under_block_a_dead_subscriber_holds_the_producer() {
    let ring = Ring::new("block");
    shm::create::<u64>(&ring.name, 8, &with(Policy::Block, "live")).unwrap();
    let mut live = ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "live")).unwrap();
    drop(ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "away")).unwrap());
    let mut tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    for v in 0..8 {
        tx.try_push(v).unwrap();
        assert_eq!(live.try_pop(), Ok(v));
    }
    assert!(matches!(
        tx.push_timeout(8, Duration::from_millis(200)),
        Err(ShmPushError::ConsumerGone(8))
    ));
    let mut away = ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "away")).unwrap();
    for v in 0..8 {
        assert_eq!(away.try_pop(), Ok(v));
    }
}

/// With a bound, a live consumer that falls the bound behind is dropped:
/// the producer never waits for it, the fast one reads every item, and the
/// slow one's next read reports the loss and goes on in order.
#[test]
fn under_a_bound_a_live_consumer_that_falls_behind_is_dropped() {
    let ring = Ring::new("bound");
    shm::create::<u64>(&ring.name, 16, &with(lag(Some(16), 3_600_000), "fast")).unwrap();
    let mut fast = ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "fast")).unwrap();
    let mut slow = ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "slow")).unwrap();
    let mut tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    assert_eq!(slow.try_pop(), Err(ShmTryPopError::Empty));
    for v in 0..1000 {
        tx.try_push(v).unwrap_or_else(|e| panic!("push {v}: {e}"));
        assert_eq!(fast.try_pop(), Ok(v));
    }
    let (missed, start) = lagged_then_in_order(&mut slow, 1000);
    assert_eq!(missed, start, "it stood at 0");
    assert!((984..1000).contains(&start), "resumed at {start}");

    // Lapped under a copy of several: pop_slice hands nothing out, and the
    // next call says why.
    for v in 1000..1100 {
        tx.try_push(v).unwrap();
        assert_eq!(fast.try_pop(), Ok(v));
    }
    let mut buf = [0u64; 4];
    assert_eq!(slow.pop_slice(&mut buf), 0, "{buf:?}");
    let (missed, start) = lagged_then_in_order(&mut slow, 1100);
    assert_eq!(start - missed, 1000);

    // Lapped while a chunk is held: the chunk says so, and the next call.
    for v in 1100..1104 {
        tx.try_push(v).unwrap();
        assert_eq!(fast.try_pop(), Ok(v));
    }
    {
        let chunk = slow.read_chunk(4).unwrap();
        assert_eq!(chunk.iter().collect::<Vec<_>>(), [1100, 1101, 1102, 1103]);
        assert!(chunk.intact());
        for v in 1104..1200 {
            tx.try_push(v).unwrap();
            assert_eq!(fast.try_pop(), Ok(v));
        }
        assert!(!chunk.intact(), "overwritten under the chunk");
        chunk.commit_all();
    }
    let missed = match slow.read_chunk(4) {
        Err(ShmTryPopError::Lagged { missed }) => missed,
        other => panic!("expected Lagged, got {other:?}"),
    };
    assert_eq!(slow.read_seq() - missed, 1100, "counted from the chunk");
    let start = slow.read_seq();
    for want in start..1200 {
        assert_eq!(slow.try_pop(), Ok(want));
    }
}

/// A consumer reading from what it already knew was published, while the
/// producer overwrote it: the copies are checked after the fact and never
/// handed out (`try_pop`, `pop_slice`), and the loss is reported.
#[test]
fn a_copy_the_producer_overwrote_is_never_handed_out() {
    let ring = Ring::new("torn");
    shm::create::<u64>(&ring.name, 16, &with(lag(Some(8), 3_600_000), "fast")).unwrap();
    let mut fast = ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "fast")).unwrap();
    let mut slow = ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "slow")).unwrap();
    let mut tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    let mut push = |range: std::ops::Range<u64>| {
        for v in range {
            tx.try_push(v).unwrap();
            assert_eq!(fast.try_pop(), Ok(v));
        }
    };
    push(0..10);
    // Slow learns that 10 are published, and reads one.
    assert_eq!(slow.try_pop(), Ok(0));
    push(10..40);
    // Slots 1.. now hold 17..: the copies are caught.
    let mut buf = [0u64; 4];
    assert_eq!(slow.pop_slice(&mut buf), 0, "{buf:?}");
    let (missed, start) = lagged_then_in_order(&mut slow, 40);
    assert_eq!(start - missed, 1);
    // Once more, through try_pop (within the bound, slow is kept).
    assert_eq!(slow.try_pop(), Err(ShmTryPopError::Empty));
    push(40..45);
    assert_eq!(slow.try_pop(), Ok(40));
    push(45..80);
    let (missed, start) = lagged_then_in_order(&mut slow, 80);
    assert_eq!(start - missed, 41);
}

/// A consumer never `bound` behind is never told it lagged, whichever way
/// it reads: the producer may move `tail_seq` up to what it has released,
/// so each read is checked before its release, never after.
#[test]
fn a_consumer_within_the_bound_is_never_told_it_lagged() {
    let ring = Ring::new("within");
    shm::create::<u64>(&ring.name, 16, &with(lag(Some(8), 3_600_000), "a")).unwrap();
    let mut a = ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "a")).unwrap();
    let mut tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    let mut next = 0u64;
    let mut buf = [0u64; 4];
    let mut out = Vec::new();
    for round in 0..400u64 {
        for v in next..next + 4 {
            tx.try_push(v).unwrap_or_else(|e| panic!("push {v}: {e}"));
        }
        match (round / 100) % 4 {
            0 => {
                let chunk = a
                    .read_chunk(4)
                    .unwrap_or_else(|e| panic!("round {round}: {e}"));
                assert!(chunk.iter().eq(next..next + 4));
                assert!(chunk.intact());
                chunk.commit_all();
            }
            1 => {
                for v in next..next + 4 {
                    assert_eq!(a.try_pop(), Ok(v), "round {round}");
                }
            }
            2 => {
                assert_eq!(a.pop_slice(&mut buf), 4, "round {round}");
                assert!(buf.iter().copied().eq(next..next + 4));
            }
            _ => {
                out.clear();
                assert_eq!(a.pop_into(&mut out, 4), 4, "round {round}");
                assert!(out.iter().copied().eq(next..next + 4));
            }
        }
        next += 4;
    }
    assert_eq!(a.try_pop(), Err(ShmTryPopError::Empty));
}

/// The same with the producer in another thread, pushing as fast as the
/// consumer lets it while never more than 12 of 16 ahead: every item
/// arrives, in order, and no `Lagged`.
#[test]
fn a_consumer_within_the_bound_is_never_told_it_lagged_while_the_producer_runs() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    const N: u64 = 200_000;
    let ring = Ring::new("within-threads");
    shm::create::<u64>(&ring.name, 16, &with(lag(Some(16), 3_600_000), "a")).unwrap();
    let mut a = ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "a")).unwrap();
    let mut tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    let read = Arc::new(AtomicU64::new(0));
    let seen = read.clone();
    let producer = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        for v in 0..N {
            while v >= seen.load(Ordering::Acquire) + 12 {
                assert!(Instant::now() < deadline, "the consumer stopped at {v}");
                std::hint::spin_loop();
            }
            tx.try_push(v).unwrap_or_else(|e| panic!("push {v}: {e}"));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u64; 3];
    let mut next = 0;
    while next < N {
        assert!(Instant::now() < deadline, "stuck at {next}");
        if next % 2 == 0 {
            match a.try_pop() {
                Ok(v) => {
                    assert_eq!(v, next);
                    next += 1;
                }
                Err(ShmTryPopError::Empty) => {}
                Err(e) => panic!("at {next}: {e}"),
            }
        } else {
            let n = a.pop_slice(&mut buf[..(N - next).min(3) as usize]);
            for (i, v) in buf[..n].iter().enumerate() {
                assert_eq!(*v, next + i as u64);
            }
            next += n as u64;
            if n == 0 {
                assert_eq!(
                    a.status().err().filter(|e| *e != ShmTryPopError::Empty),
                    None
                );
            }
        }
        read.store(next, Ordering::Release);
    }
    producer.join().unwrap();
}

/// Under a bound, a consumer that keeps up is never dropped, however long
/// the stream: every item, in order, and no `Lagged`.
#[test]
fn under_a_bound_a_consumer_that_keeps_up_loses_nothing() {
    let ring = Ring::new("keeps-up");
    shm::create::<u64>(&ring.name, 64, &with(lag(Some(48), 3_600_000), "a")).unwrap();
    let mut a = ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "a")).unwrap();
    let mut b = ShmConsumer::<u64>::open_with(&ring.name, &with(Policy::Block, "b")).unwrap();
    let mut tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    let mut buf = [0u64; 16];
    for round in 0..1000u64 {
        let base = round * 32;
        for v in base..base + 32 {
            tx.try_push(v).unwrap();
        }
        for v in base..base + 32 {
            assert_eq!(a.try_pop(), Ok(v));
        }
        for half in 0..2 {
            assert_eq!(b.pop_slice(&mut buf), 16);
            let first = base + 16 * half;
            assert!(buf.iter().copied().eq(first..first + 16), "{buf:?}");
        }
    }
}

#[cfg(feature = "arrow")]
mod arrow_lag {
    use std::sync::Arc;

    use arrow_array::{Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use laminar_ring::arrow::{ArrowRingError, ArrowRingOptions, BatchConsumer, BatchProducer};

    use super::*;

    fn batch(i: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![i; 100]))]).unwrap()
    }

    fn opts(policy: Policy, subscriber: &str) -> ArrowRingOptions {
        ArrowRingOptions {
            slots: 8,
            arena_bytes: 1 << 16,
            segment: with(policy, subscriber),
            max_leases: 8,
        }
    }

    #[test]
    fn an_arrow_ring_takes_a_grace_but_no_bound() {
        let ring = Ring::new("arrow-bound");
        let err =
            BatchProducer::create(&ring.name, &opts(lag(Some(4), 10), "a")).expect_err("refused");
        assert!(
            matches!(err, ArrowRingError::Open(OpenError::Geometry(_))),
            "{err:?}"
        );
    }

    /// A dead Arrow subscriber is dropped after the grace while the live one
    /// reads every batch; back, it is told how many messages it missed and
    /// reads every batch of the next producer session.
    #[test]
    fn a_dead_arrow_subscriber_is_dropped_and_reads_on_from_the_next_session() {
        let ring = Ring::new("arrow-dead");
        let mut tx = BatchProducer::create(&ring.name, &opts(lag(None, 30), "live")).unwrap();
        let mut live = BatchConsumer::open(&ring.name, &opts(Policy::Block, "live")).unwrap();
        drop(BatchConsumer::open(&ring.name, &opts(Policy::Block, "away")).unwrap());
        for i in 0..50 {
            tx.send_timeout(&batch(i), Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("send {i}: {e}"));
            assert_eq!(live.recv().unwrap().unwrap(), batch(i));
        }
        tx.close().unwrap();
        let mut tx = BatchProducer::open(&ring.name, &opts(Policy::Block, "live")).unwrap();
        for i in 100..103 {
            tx.send(&batch(i)).unwrap();
        }
        tx.close().unwrap();
        let mut away = BatchConsumer::open(&ring.name, &opts(Policy::Block, "away")).unwrap();
        match away.recv() {
            Err(ArrowRingError::Lagged { missed }) => assert!(missed >= 40, "{missed}"),
            other => panic!("expected Lagged, got {other:?}"),
        }
        // What is left of the first session in the ring (if anything)
        // cannot be decoded: at most its end, then every batch of the
        // second.
        let mut next = away.recv().unwrap();
        if next.is_none() {
            next = away.recv().unwrap(); // the first session's end
        }
        assert_eq!(next, Some(batch(100)));
        for i in 101..103 {
            assert_eq!(away.recv().unwrap().unwrap(), batch(i));
        }
        assert_eq!(away.recv().unwrap(), None);
        assert_eq!(live.recv().unwrap(), None, "the first session's end");
        for i in 100..103 {
            assert_eq!(live.recv().unwrap().unwrap(), batch(i));
        }
    }
}
