//! Several consumers of one ring, each with its own position, in separate
//! processes: every consumer reads every item in order, a consumer killed
//! with SIGKILL resumes at its first unreleased item while the others go
//! on, and a producer killed leaves every consumer to drain what it
//! committed and then report `PeerGone`.
//!
//! Items are their own sequence numbers, so a consumer checks each one
//! (order, loss, duplication, corruption) against the position it read it
//! at.
#![cfg(not(loom))] // the shared-memory layer is compiled out under loom

mod common;

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use common::Rng;
use common::process::spawn_helper;
use laminar_ring::shm::{
    self, OpenError, SegmentOptions, ShmConsumer, ShmPopError, ShmProducer, ShmPushError, Start,
};

const EXIT_OK: i32 = 0;
const EXIT_WRONG: i32 = 1;
const EXIT_PEER_GONE: i32 = 3;

/// A ring in /dev/shm, removed at the end.
struct Ring {
    name: String,
}

impl Ring {
    fn new(test: &str) -> Self {
        let name = format!("lr-fan-{}-{test}", std::process::id());
        let _ = std::fs::remove_file(Self::path_of(&name));
        Self { name }
    }

    fn path_of(name: &str) -> PathBuf {
        PathBuf::from(shm::DEFAULT_DIR).join(name)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(Self::path_of(&self.name));
    }
}

fn as_subscriber(name: &str, start: Start) -> SegmentOptions {
    SegmentOptions {
        subscriber: name.to_owned(),
        start,
        ..SegmentOptions::default()
    }
}

/// The exit code of `child`, waiting at most until `deadline` (then it is
/// killed and the test fails).
fn exit_code(child: &mut Child, deadline: Instant, what: &str) -> i32 {
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn helper() {
    let Ok(role) = std::env::var("LAMINAR_HELPER") else {
        return; // an ordinary test run: nothing to do
    };
    let ring = std::env::var("LAMINAR_RING").expect("LAMINAR_RING");
    let count: u64 = std::env::var("COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let code = match role.as_str() {
        "producer" => produce(&ring, count),
        "consumer" => consume(&ring, &std::env::var("SUB").expect("SUB"), count),
        "lag-consumer" => consume_lagging(
            &ring,
            &std::env::var("SUB").expect("SUB"),
            count,
            std::env::var("P_KILL")
                .expect("P_KILL")
                .parse()
                .expect("P_KILL"),
        ),
        #[cfg(feature = "arrow")]
        "batch-producer" => arrow_fan::produce(&ring, count),
        #[cfg(feature = "arrow")]
        "batch-sessions" => arrow_fan::produce_sessions(&ring, count),
        #[cfg(feature = "arrow")]
        "batch-lag-consumer" => arrow_fan::consume_lagging(
            &ring,
            &std::env::var("SUB").expect("SUB"),
            &std::env::var("OUT").expect("OUT"),
            count,
        ),
        #[cfg(feature = "arrow")]
        "batch-consumer" => arrow_fan::consume(
            &ring,
            &std::env::var("SUB").expect("SUB"),
            &std::env::var("OUT").expect("OUT"),
        ),
        other => panic!("unknown helper role {other}"),
    };
    std::process::exit(code);
}

/// Pushes the sequence numbers from the ring's `write_seq` up to `count`
/// (for ever when 0), in slices; waits while a consumer is dead (it comes
/// back), then closes.
fn produce(ring: &str, count: u64) -> i32 {
    let mut tx = ShmProducer::<u64>::open(ring).expect("open producer");
    let mut next = tx.write_seq();
    let mut batch = Vec::with_capacity(256);
    while count == 0 || next < count {
        let end = if count == 0 {
            next + 256
        } else {
            (next + 256).min(count)
        };
        batch.clear();
        batch.extend(next..end);
        let mut done = 0;
        while done < batch.len() {
            let n = tx.push_slice(&batch[done..]);
            if n == 0 {
                match tx.push_timeout(batch[done], Duration::from_millis(50)) {
                    Ok(()) => done += 1,
                    // A consumer being restarted: its items wait for it.
                    Err(ShmPushError::Full(_) | ShmPushError::ConsumerGone(_)) => {}
                }
            }
            done += n;
        }
        next = end;
    }
    tx.close();
    EXIT_OK
}

/// Reads as subscriber `sub`, from where that subscription stands, checking
/// that every item is its own sequence number; at the end of the stream,
/// that it read up to `count`; at `PeerGone`, that it read everything
/// published.
fn consume(ring: &str, sub: &str, count: u64) -> i32 {
    let mut rx = ShmConsumer::<u64>::open_with(ring, &as_subscriber(sub, Start::Earliest))
        .expect("open consumer");
    let mut expected = rx.read_seq();
    loop {
        match rx.pop_timeout(Duration::from_secs(60)) {
            Ok(v) if v == expected => expected += 1,
            Ok(v) => {
                eprintln!("{sub}: item {v} at sequence {expected}");
                return EXIT_WRONG;
            }
            Err(ShmPopError::EndOfStream) if expected == count => return EXIT_OK,
            Err(ShmPopError::PeerGone) => {
                let written = shm::inspect(ring, &SegmentOptions::default())
                    .expect("inspect")
                    .write_seq;
                if expected == written {
                    return EXIT_PEER_GONE;
                }
                eprintln!("{sub}: PeerGone at {expected} of {written} published");
                return EXIT_WRONG;
            }
            Err(e) => {
                eprintln!("{sub}: {e} at {expected} (of {count})");
                return EXIT_WRONG;
            }
        }
    }
}

/// Reads as subscriber `sub` of a ring under `Policy::Lag`, whose
/// subscription stood at `p_kill` when its last consumer was killed:
/// either it resumes there (at-least-once), or it was dropped meanwhile and
/// its first read reports `Lagged` with exactly the items from `p_kill` to
/// where it resumes. From there every item in order, and never `Lagged`
/// again (a live consumer is never dropped without a bound).
fn consume_lagging(ring: &str, sub: &str, count: u64, p_kill: u64) -> i32 {
    let mut rx = ShmConsumer::<u64>::open_with(ring, &as_subscriber(sub, Start::Earliest))
        .expect("open consumer");
    let mut expected = rx.read_seq();
    let mut first = true;
    loop {
        let popped = rx.pop_timeout(Duration::from_secs(60));
        if first && expected != p_kill && !matches!(popped, Err(ShmPopError::Lagged { .. })) {
            eprintln!("{sub}: resumed at {expected}, killed at {p_kill}, no Lagged");
            return EXIT_WRONG;
        }
        match popped {
            Ok(v) if v == expected => expected += 1,
            Ok(v) => {
                eprintln!("{sub}: item {v} at sequence {expected}");
                return EXIT_WRONG;
            }
            Err(ShmPopError::Lagged { missed }) if first => {
                expected = rx.read_seq();
                if expected.checked_sub(missed) != Some(p_kill) {
                    eprintln!("{sub}: resumed at {expected}, missed {missed}, killed at {p_kill}");
                    return EXIT_WRONG;
                }
                // The report comes once, before any item.
                first = false;
                continue;
            }
            Err(ShmPopError::EndOfStream) if expected == count => return EXIT_OK,
            Err(e) => {
                eprintln!("{sub}: {e} at {expected} (of {count})");
                return EXIT_WRONG;
            }
        }
        first = false;
    }
}

/// A ring of `capacity` u64 slots with `subs` subscribed from its first
/// item.
fn ring_with_subscribers(test: &str, capacity: usize, subs: &[&str]) -> Ring {
    ring_with_policy(test, capacity, subs, shm::Policy::Block)
}

/// [`ring_with_subscribers`] under `policy`.
fn ring_with_policy(test: &str, capacity: usize, subs: &[&str], policy: shm::Policy) -> Ring {
    let ring = Ring::new(test);
    let opts = SegmentOptions {
        policy,
        ..SegmentOptions::default()
    };
    shm::create::<u64>(&ring.name, capacity, &opts).unwrap();
    for s in subs {
        drop(
            ShmConsumer::<u64>::open_with(&ring.name, &as_subscriber(s, Start::Earliest)).unwrap(),
        );
    }
    ring
}

/// One producer and three consumer processes, 10 million items, with at
/// least 50 consumers SIGKILLed at random moments and restarted: each
/// consumer reads every item in order (a restarted one from its first
/// unreleased item), and the others are not disturbed.
#[test]
fn three_consumer_processes_read_every_item_in_order_through_sigkills() {
    const N: u64 = 10_000_000;
    const SUBS: [&str; 3] = ["archiver", "dashboard", "checker"];
    let mut rng = Rng::from_env_or_time();
    let mut kills = 0;
    let mut round = 0;
    while kills < 50 {
        round += 1;
        assert!(
            round <= 20,
            "only {kills} kills landed mid-stream in 20 rounds"
        );
        let ring = ring_with_subscribers(&format!("kill{round}"), 1 << 12, &SUBS);
        let count = [("COUNT", N.to_string())];
        let mut producer = spawn_helper("producer", &ring.name, &count);
        let spawn = |sub: &str| {
            spawn_helper(
                "consumer",
                &ring.name,
                &[("COUNT", N.to_string()), ("SUB", sub.to_owned())],
            )
        };
        let mut consumers: Vec<Child> = SUBS.iter().map(|s| spawn(s)).collect();
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut done = [false; 3];
        while kills < 50 && !done.iter().all(|&d| d) {
            std::thread::sleep(Duration::from_millis(rng.below(20)));
            let i = rng.below(3) as usize;
            if let Some(status) = consumers[i].try_wait().unwrap() {
                assert_eq!(status.code(), Some(EXIT_OK), "{} finished badly", SUBS[i]);
                done[i] = true;
                continue;
            }
            consumers[i].kill().unwrap();
            let status = consumers[i].wait().unwrap();
            if status.code().is_none() {
                kills += 1; // it was killed mid-stream, not finished
            } else {
                assert_eq!(status.code(), Some(EXIT_OK), "{} finished badly", SUBS[i]);
            }
            consumers[i] = spawn(SUBS[i]);
        }
        for (c, sub) in consumers.iter_mut().zip(SUBS) {
            assert_eq!(exit_code(c, deadline, sub), EXIT_OK, "{sub}");
        }
        assert_eq!(exit_code(&mut producer, deadline, "producer"), EXIT_OK);
        let info = shm::inspect(&ring.name, &SegmentOptions::default()).unwrap();
        assert_eq!(info.write_seq, N);
        assert_eq!(info.subscribers.len(), 3);
        for s in &info.subscribers {
            assert_eq!(s.read_seq, N, "{} read everything", s.name);
        }
    }
}

/// The position of subscriber `sub` and whether it is dropped.
fn subscription(ring: &str, sub: &str) -> (u64, bool) {
    let info = shm::inspect(ring, &SegmentOptions::default()).expect("inspect");
    let s = info
        .subscribers
        .iter()
        .find(|s| s.name == sub)
        .expect("subscribed");
    (s.read_seq, s.dropped)
}

/// Under `Policy::Lag` (grace 20 ms), three consumer processes SIGKILLed
/// at random moments (at least 50 kills) and restarted after a random
/// pause, often longer than the grace: a dead one holds the producer and
/// the others back for the grace only, and is dropped; restarted, it either
/// resumes where it was killed or is told exactly how many items it missed,
/// and reads every item after in order. Then one is killed and left dead:
/// the producer and the other two still finish.
#[test]
fn under_lag_consumers_killed_at_random_never_stall_the_others() {
    const N: u64 = 10_000_000;
    const SUBS: [&str; 3] = ["archiver", "dashboard", "checker"];
    let policy = shm::Policy::Lag {
        bound: None,
        grace: Duration::from_millis(20),
    };
    let mut rng = Rng::from_env_or_time();
    let (mut kills, mut drops, mut round) = (0, 0, 0);
    let spawn = |ring: &str, sub: &str, count: u64, p_kill: u64| {
        spawn_helper(
            "lag-consumer",
            ring,
            &[
                ("COUNT", count.to_string()),
                ("SUB", sub.to_owned()),
                ("P_KILL", p_kill.to_string()),
            ],
        )
    };
    while kills < 50 {
        round += 1;
        assert!(
            round <= 20,
            "only {kills} kills landed mid-stream in 20 rounds"
        );
        let ring = ring_with_policy(&format!("lag{round}"), 1 << 12, &SUBS, policy);
        let mut producer = spawn_helper("producer", &ring.name, &[("COUNT", N.to_string())]);
        let mut consumers: Vec<Child> = SUBS.iter().map(|s| spawn(&ring.name, s, N, 0)).collect();
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut done = [false; 3];
        while kills < 50 && !done.iter().all(|&d| d) {
            std::thread::sleep(Duration::from_millis(rng.below(20)));
            let i = rng.below(3) as usize;
            if done[i] {
                continue;
            }
            if let Some(status) = consumers[i].try_wait().unwrap() {
                assert_eq!(status.code(), Some(EXIT_OK), "{} finished badly", SUBS[i]);
                done[i] = true;
                continue;
            }
            consumers[i].kill().unwrap();
            let status = consumers[i].wait().unwrap();
            if status.code().is_some() {
                assert_eq!(status.code(), Some(EXIT_OK), "{} finished badly", SUBS[i]);
                done[i] = true;
                continue;
            }
            kills += 1;
            // Dead for 0 to 60 ms: often past the grace.
            std::thread::sleep(Duration::from_millis(rng.below(60)));
            let (p_kill, dropped) = subscription(&ring.name, SUBS[i]);
            drops += u32::from(dropped);
            consumers[i] = spawn(&ring.name, SUBS[i], N, p_kill);
        }
        for (c, sub) in consumers.iter_mut().zip(SUBS) {
            assert_eq!(exit_code(c, deadline, sub), EXIT_OK, "{sub}");
        }
        assert_eq!(exit_code(&mut producer, deadline, "producer"), EXIT_OK);
    }
    eprintln!("under lag: {drops} of {kills} kills led to a drop");
    assert!(drops >= 5, "only {drops} of {kills} kills led to a drop");

    // One killed and left dead: the others do not wait for it.
    let ring = ring_with_policy("lag-left", 1 << 12, &SUBS, policy);
    let mut producer = spawn_helper("producer", &ring.name, &[("COUNT", N.to_string())]);
    let mut consumers: Vec<Child> = SUBS.iter().map(|s| spawn(&ring.name, s, N, 0)).collect();
    std::thread::sleep(Duration::from_millis(5));
    consumers[2].kill().unwrap();
    let killed = consumers[2].wait().unwrap().code().is_none();
    let deadline = Instant::now() + Duration::from_secs(120);
    for (c, sub) in consumers[..2].iter_mut().zip(SUBS) {
        assert_eq!(exit_code(c, deadline, sub), EXIT_OK, "{sub}");
    }
    assert_eq!(exit_code(&mut producer, deadline, "producer"), EXIT_OK);
    if killed {
        let (p_kill, dropped) = subscription(&ring.name, SUBS[2]);
        assert!(dropped || p_kill + (1 << 12) >= N, "left dead, not dropped");
        let mut back = spawn(&ring.name, SUBS[2], N, p_kill);
        assert_eq!(exit_code(&mut back, deadline, SUBS[2]), EXIT_OK);
    }
}

/// A producer SIGKILLed mid-stream: every consumer drains what it
/// committed, checks it, and gets `PeerGone`.
#[test]
fn consumers_drain_a_killed_producer_s_items_and_get_peer_gone() {
    const SUBS: [&str; 3] = ["a", "b", "c"];
    let ring = ring_with_subscribers("peergone", 1 << 10, &SUBS);
    let mut producer = spawn_helper("producer", &ring.name, &[("COUNT", "0".into())]);
    let mut consumers: Vec<Child> = SUBS
        .iter()
        .map(|s| spawn_helper("consumer", &ring.name, &[("SUB", (*s).to_owned())]))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while shm::inspect(&ring.name, &SegmentOptions::default())
        .unwrap()
        .read_seq
        < 100_000
    {
        assert!(Instant::now() < deadline, "the consumers never got going");
        std::thread::sleep(Duration::from_millis(1));
    }
    producer.kill().unwrap();
    producer.wait().unwrap();
    for (c, sub) in consumers.iter_mut().zip(SUBS) {
        assert_eq!(exit_code(c, deadline, sub), EXIT_PEER_GONE, "{sub}");
    }
}

/// Subscriptions outlive their consumers, start where they are told, are
/// exclusive per name, limited in number, and removable.
#[test]
fn subscriptions_are_durable_named_exclusive_limited_and_removable() {
    let ring = Ring::new("subs");
    let opts = SegmentOptions {
        max_consumers: 2,
        ..SegmentOptions::default()
    };
    shm::create::<u64>(&ring.name, 16, &opts).unwrap();
    let mut tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    // No subscriber yet: the ring keeps what it holds for the first.
    assert_eq!(tx.push_slice(&(0..16).collect::<Vec<_>>()), 16);
    assert_eq!(tx.push_slice(&[16]), 0, "full: nobody has read");
    let mut early =
        ShmConsumer::<u64>::open_with(&ring.name, &as_subscriber("early", Start::Earliest))
            .unwrap();
    assert_eq!(early.pop(), Ok(0), "earliest: the oldest item held");
    // The same name twice is refused; a second name has its own position.
    assert!(matches!(
        ShmConsumer::<u64>::open_with(&ring.name, &as_subscriber("early", Start::Earliest)),
        Err(OpenError::SubscriberAttached { .. })
    ));
    let mut late =
        ShmConsumer::<u64>::open_with(&ring.name, &as_subscriber("late", Start::Latest)).unwrap();
    assert_eq!(late.read_seq(), 16, "latest: what is published next");
    // Both cursors are taken.
    match ShmConsumer::<u64>::open_with(&ring.name, &as_subscriber("third", Start::Earliest)) {
        Err(OpenError::NoFreeCursor { max: 2, names, .. }) => assert_eq!(names, "early, late"),
        other => panic!("expected NoFreeCursor, got {:?}", other.map(|_| ())),
    }
    assert_eq!(tx.push_slice(&[16]), 1, "room freed by the slowest, early");
    assert_eq!(late.pop(), Ok(16));
    // `early` detaches after reading 1..5; its subscription holds its place.
    for v in 1..5 {
        assert_eq!(early.pop(), Ok(v));
    }
    drop(early);
    assert_eq!(
        tx.push_slice(&(17..100).collect::<Vec<_>>()),
        4,
        "held by early"
    );
    let mut early =
        ShmConsumer::<u64>::open_with(&ring.name, &as_subscriber("early", Start::Latest)).unwrap();
    assert_eq!(
        early.pop(),
        Ok(5),
        "resumes where it stood, whatever --from says"
    );
    drop(early);
    // Unsubscribed while attached: refused; detached: done, and the
    // producer no longer waits for it.
    assert!(matches!(
        shm::unsubscribe(&ring.name, "late", &SegmentOptions::default()),
        Err(OpenError::SubscriberAttached { .. })
    ));
    assert!(matches!(
        shm::unsubscribe(&ring.name, "nobody", &SegmentOptions::default()),
        Err(OpenError::NotSubscribed { .. })
    ));
    shm::unsubscribe(&ring.name, "early", &SegmentOptions::default()).unwrap();
    let info = shm::inspect(&ring.name, &SegmentOptions::default()).unwrap();
    let names: Vec<_> = info.subscribers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["late"]);
    let mut got = Vec::new();
    while let Ok(v) = late.try_pop() {
        got.push(v);
    }
    assert_eq!(got, (17..21).collect::<Vec<_>>());
    assert!(tx.push_slice(&(21..100).collect::<Vec<_>>()) > 0);
    // A bad name is refused before anything is touched.
    assert!(matches!(
        ShmConsumer::<u64>::open_with(&ring.name, &as_subscriber("no spaces", Start::Earliest)),
        Err(OpenError::BadSubscriber { .. })
    ));
}

/// Where the cursors are (docs/FORMAT.md): after the 2048-byte header,
/// 128 bytes each; in each, `read_seq` at 0, `consumer_state` at 8,
/// `subscription` at 12, `ends_seen` at 48, the name at 64.
fn write_cursor(ring: &str, i: u64, read_seq: u64, state: u32, name: &str) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(Ring::path_of(ring))
        .unwrap();
    let at = 2048 + 128 * i;
    f.write_all_at(&read_seq.to_ne_bytes(), at).unwrap();
    f.write_all_at(&state.to_ne_bytes(), at + 8).unwrap();
    f.write_all_at(&1_u32.to_ne_bytes(), at + 12).unwrap();
    f.write_all_at(&0_u64.to_ne_bytes(), at + 48).unwrap();
    let mut padded = [0_u8; 32];
    padded[..name.len()].copy_from_slice(name.as_bytes());
    f.write_all_at(&padded, at + 64).unwrap();
}

/// A subscriber killed part-way (its cursor subscribed, still marked as
/// being subscribed, its start never checked against the producer's) is
/// subscribed afresh by the next process that attaches any consumer: its
/// consumer then starts at an item the producer keeps for it, and the
/// producer, which the stale start held back, goes on.
#[test]
fn a_subscriber_killed_part_way_is_subscribed_afresh() {
    let ring = ring_with_subscribers("broken", 16, &["a"]);
    let mut tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    let mut a =
        ShmConsumer::<u64>::open_with(&ring.name, &as_subscriber("a", Start::Earliest)).unwrap();
    // Three laps, read by "a", so that a start of 0 is long overwritten.
    for v in 0..48 {
        tx.push(v).unwrap();
        assert_eq!(a.pop(), Ok(v));
    }
    // The broken subscription: cursor 1, start 0, marked "subscribing" (4).
    write_cursor(&ring.name, 1, 0, 4, "b");
    assert_eq!(
        tx.push_slice(&(48..100).collect::<Vec<_>>()),
        0,
        "a start more than a lap behind holds the producer (it cannot tell)"
    );
    // Any consumer attaching repairs it: here one of another name.
    drop(a);
    let mut a =
        ShmConsumer::<u64>::open_with(&ring.name, &as_subscriber("a", Start::Earliest)).unwrap();
    let info = shm::inspect(&ring.name, &SegmentOptions::default()).unwrap();
    let b = info.subscribers.iter().find(|s| s.name == "b").unwrap();
    // The producer's last published bound: the items from it on are still
    // in their slots (a lap behind "a").
    assert_eq!(b.read_seq, 32, "subscribed afresh at the oldest item kept");
    assert_eq!(b.role.state, shm::RoleState::Never);
    let mut b =
        ShmConsumer::<u64>::open_with(&ring.name, &as_subscriber("b", Start::Latest)).unwrap();
    for v in 32..48 {
        assert_eq!(b.pop(), Ok(v));
    }
    assert_eq!(tx.push_slice(&(48..100).collect::<Vec<_>>()), 16);
    for v in 48..64 {
        assert_eq!(a.pop(), Ok(v));
        assert_eq!(b.pop(), Ok(v));
    }
}

/// Under `Policy::Lag`, a subscriber killed part-way that holds the
/// producer back is dropped after the grace like any dead one, though no
/// consumer attaches to repair it; a new subscription that never started,
/// it starts afresh under its name when a consumer comes, having missed
/// nothing.
#[test]
fn under_lag_a_subscriber_killed_part_way_does_not_stall_the_producer() {
    let policy = shm::Policy::Lag {
        bound: None,
        grace: Duration::from_millis(30),
    };
    let ring = ring_with_policy("broken-lag", 16, &["a"], policy);
    let mut tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    let mut a =
        ShmConsumer::<u64>::open_with(&ring.name, &as_subscriber("a", Start::Earliest)).unwrap();
    for v in 0..16 {
        tx.push(v).unwrap();
        assert_eq!(a.pop(), Ok(v));
    }
    // The broken subscription: cursor 1 at 16, marked "subscribing" (4).
    write_cursor(&ring.name, 1, 16, 4, "b");
    for v in 16..100 {
        tx.push_timeout(v, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("push {v}: {e}"));
        assert_eq!(a.pop(), Ok(v));
    }
    let info = shm::inspect(&ring.name, &SegmentOptions::default()).unwrap();
    let b = info.subscribers.iter().find(|s| s.name == "b").unwrap();
    assert!(b.dropped, "{b:?}");
    drop(a);
    let mut b =
        ShmConsumer::<u64>::open_with(&ring.name, &as_subscriber("b", Start::Earliest)).unwrap();
    // From the oldest item a subscriber has not released: a's position.
    assert_eq!(b.read_seq(), 100);
    assert_eq!(b.try_pop(), Err(shm::ShmTryPopError::Empty));
    tx.push(100).unwrap();
    assert_eq!(b.try_pop(), Ok(100));
}

/// The same with a stream of Arrow batches: one producer process, three
/// consumer processes under their own names, SIGKILLed at random and
/// restarted at least 50 times. Each batch holds its own number; each
/// consumer appends the numbers it receives to a file of its own, and the
/// files must hold every batch in order, going back only where a
/// consumer was restarted (at-least-once), never skipping one.
#[cfg(feature = "arrow")]
mod arrow_fan {
    use std::io::Write;
    use std::sync::Arc;

    use arrow_array::{Array, Int64Array, RecordBatch};
    use laminar_ring::arrow::{ArrowRingError, ArrowRingOptions, BatchConsumer, BatchProducer};

    use super::*;

    pub fn opts(sub: &str) -> ArrowRingOptions {
        ArrowRingOptions {
            slots: 64,
            arena_bytes: 1 << 20,
            segment: as_subscriber(sub, Start::Earliest),
            max_leases: 16,
        }
    }

    fn batch(n: u64) -> RecordBatch {
        let ids = Int64Array::from(vec![n as i64; 16]);
        RecordBatch::try_from_iter([("id", Arc::new(ids) as _)]).unwrap()
    }

    /// Sends batches `0..count`, waiting while a consumer is gone.
    pub fn produce(ring: &str, count: u64) -> i32 {
        let mut tx = BatchProducer::open(ring, &opts("unused")).expect("open producer");
        for n in 0..count {
            loop {
                match tx.send_timeout(&batch(n), Duration::from_millis(50)) {
                    Ok(()) => break,
                    Err(ArrowRingError::Timeout | ArrowRingError::ConsumerGone) => {}
                    Err(e) => panic!("send {n}: {e}"),
                }
            }
        }
        tx.close().expect("close");
        EXIT_OK
    }

    /// Batches a producer session sends in `produce_sessions`.
    const SESSION: u64 = 250;

    /// Sends batches `0..count` in sessions of [`SESSION`] batches (a
    /// producer attaches, sends them and closes), under `Policy::Lag`.
    pub fn produce_sessions(ring: &str, count: u64) -> i32 {
        for first in (0..count).step_by(SESSION as usize) {
            let mut tx = BatchProducer::open(ring, &opts("unused")).expect("open producer");
            for n in first..(first + SESSION).min(count) {
                loop {
                    match tx.send_timeout(&batch(n), Duration::from_millis(50)) {
                        Ok(()) => break,
                        Err(ArrowRingError::Timeout) => {}
                        Err(e) => panic!("send {n}: {e}"),
                    }
                }
            }
            tx.close().expect("close");
        }
        EXIT_OK
    }

    /// As [`consume`], for a ring under `Policy::Lag` fed by
    /// `produce_sessions`: a `Lagged` report is written as `L;`; ends once
    /// it has read up to the last batch, `count - 1`, or reached the end of
    /// the last session.
    pub fn consume_lagging(ring: &str, sub: &str, out: &str, count: u64) -> i32 {
        let mut rx = BatchConsumer::open(ring, &opts(sub)).expect("open consumer");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .expect("open the output");
        file.write_all(b"\n").expect("write");
        let sessions = count.div_ceil(SESSION);
        // Every session has run and this consumer is at the end (one that
        // came back after the last end record has no end to read).
        let finished = || {
            let info = shm::inspect(ring, &SegmentOptions::default()).expect("inspect");
            info.producer_sessions == sessions
                && !info.producer.alive
                && info
                    .subscribers
                    .iter()
                    .any(|s| s.name == sub && s.read_seq == info.write_seq)
        };
        let mut idle = Duration::ZERO;
        loop {
            match rx.recv_zero_copy_timeout(Duration::from_millis(500)) {
                Ok(Some(b)) => {
                    idle = Duration::ZERO;
                    let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                    assert!(ids.len() == 16 && ids.iter().all(|v| v == Some(ids.value(0))));
                    let n = ids.value(0) as u64;
                    writeln!(file, "{n};").expect("write");
                    drop(b);
                    if n == count - 1 {
                        return EXIT_OK;
                    }
                }
                Ok(None) | Err(ArrowRingError::Timeout) if finished() => return EXIT_OK,
                Ok(None) => {}
                Err(ArrowRingError::Timeout) if idle < Duration::from_secs(60) => {
                    idle += Duration::from_millis(500);
                }
                Err(ArrowRingError::Lagged { .. }) => writeln!(file, "L;").expect("write"),
                Err(e) => {
                    eprintln!("{sub}: {e}");
                    return EXIT_WRONG;
                }
            }
        }
    }

    /// Appends the number of every batch received to `out` (`N;` a line),
    /// until the end of the stream. Each batch is leased (zero-copy) and
    /// released only once its number is written: at-least-once, for the
    /// file too.
    pub fn consume(ring: &str, sub: &str, out: &str) -> i32 {
        let mut rx = BatchConsumer::open(ring, &opts(sub)).expect("open consumer");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .expect("open the output");
        // Ends a line a killed predecessor left in part.
        file.write_all(b"\n").expect("write");
        loop {
            match rx.recv_zero_copy_timeout(Duration::from_secs(60)) {
                Ok(Some(b)) => {
                    let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                    assert!(ids.len() == 16 && ids.iter().all(|v| v == Some(ids.value(0))));
                    writeln!(file, "{};", ids.value(0)).expect("write");
                    drop(b);
                }
                Ok(None) => return EXIT_OK,
                Err(e) => {
                    eprintln!("{sub}: {e}");
                    return EXIT_WRONG;
                }
            }
        }
    }

    /// What `consume_lagging` wrote to `path`: batch numbers, and `None`
    /// for a `Lagged` report.
    fn entries(path: &std::path::Path) -> Vec<Option<u64>> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_suffix(';'))
            .map(|n| (n != "L").then(|| n.parse().unwrap()))
            .collect()
    }

    /// Under `Policy::Lag` (grace 20 ms), three Arrow consumer processes
    /// SIGKILLed at random (at least 50 kills) and restarted after a random
    /// pause: a dead one is dropped after the grace, and the others and the
    /// producer go on. Each reads its batches in order, intact; a restarted
    /// one re-reads what it had not released, and skips batches only after
    /// a `Lagged` report, to the start of a later producer session (it
    /// cannot decode the rest of the one it was dropped in).
    #[test]
    fn under_lag_arrow_consumers_killed_at_random_never_stall_the_others() {
        const N: u64 = 10_000;
        const SUBS: [&str; 3] = ["archiver", "dashboard", "checker"];
        let dir = std::env::temp_dir().join(format!("lr-fan-arrow-lag-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut rng = Rng::from_env_or_time();
        let (mut kills, mut lagged, mut round) = (0, 0, 0);
        while kills < 50 {
            round += 1;
            assert!(
                round <= 20,
                "only {kills} kills landed mid-stream in 20 rounds"
            );
            let ring = Ring::new(&format!("arrow-lag{round}"));
            let mut o = opts("x");
            o.segment.policy = shm::Policy::Lag {
                bound: None,
                grace: Duration::from_millis(20),
            };
            laminar_ring::arrow::create(&ring.name, &o).unwrap();
            for s in SUBS {
                drop(BatchConsumer::open(&ring.name, &opts(s)).unwrap());
            }
            let out = |s: &str| dir.join(format!("{round}-{s}.txt"));
            let spawn = |s: &str| {
                spawn_helper(
                    "batch-lag-consumer",
                    &ring.name,
                    &[
                        ("SUB", s.to_owned()),
                        ("OUT", out(s).display().to_string()),
                        ("COUNT", N.to_string()),
                    ],
                )
            };
            let mut producer =
                spawn_helper("batch-sessions", &ring.name, &[("COUNT", N.to_string())]);
            let mut consumers: Vec<Child> = SUBS.iter().map(|s| spawn(s)).collect();
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut done = [false; 3];
            while kills < 50 && !done.iter().all(|&d| d) {
                std::thread::sleep(Duration::from_millis(rng.below(20)));
                let i = rng.below(3) as usize;
                if done[i] {
                    continue;
                }
                if let Some(status) = consumers[i].try_wait().unwrap() {
                    assert_eq!(status.code(), Some(EXIT_OK), "{} finished badly", SUBS[i]);
                    done[i] = true;
                    continue;
                }
                consumers[i].kill().unwrap();
                if consumers[i].wait().unwrap().code().is_none() {
                    kills += 1;
                }
                std::thread::sleep(Duration::from_millis(rng.below(60)));
                consumers[i] = spawn(SUBS[i]);
            }
            for (c, sub) in consumers.iter_mut().zip(SUBS) {
                assert_eq!(exit_code(c, deadline, sub), EXIT_OK, "{sub}");
            }
            assert_eq!(exit_code(&mut producer, deadline, "producer"), EXIT_OK);
            for sub in SUBS {
                let got = entries(&out(sub));
                let mut prev: Option<u64> = None;
                let mut after_lag = false;
                for e in &got {
                    let Some(n) = *e else {
                        after_lag = true;
                        lagged += 1;
                        continue;
                    };
                    match prev {
                        None => assert!(n == 0 || after_lag, "{sub} starts at {n}"),
                        Some(p) if n <= p + 1 => {}
                        Some(p) => assert!(
                            after_lag && n % SESSION == 0,
                            "{sub}: {n} after {p} without a Lagged report before a session"
                        ),
                    }
                    prev = Some(n);
                    after_lag = false;
                }
            }
        }
        eprintln!("under lag: {lagged} Lagged reports in {kills} kills");
        assert!(lagged >= 5, "only {lagged} Lagged reports in {kills} kills");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The numbers in `path`, from the complete lines (`N;`): a consumer
    /// killed while writing leaves a part of one.
    fn numbers(path: &std::path::Path) -> Vec<u64> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_suffix(';'))
            .map(|n| n.parse().unwrap())
            .collect()
    }

    #[test]
    fn three_arrow_consumer_processes_read_every_batch_through_sigkills() {
        const N: u64 = 20_000;
        const SUBS: [&str; 3] = ["archiver", "dashboard", "checker"];
        let dir = std::env::temp_dir().join(format!("lr-fan-arrow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut rng = Rng::from_env_or_time();
        let mut kills = 0;
        let mut round = 0;
        while kills < 50 {
            round += 1;
            assert!(
                round <= 20,
                "only {kills} kills landed mid-stream in 20 rounds"
            );
            let ring = Ring::new(&format!("arrow{round}"));
            laminar_ring::arrow::create(&ring.name, &opts("x")).unwrap();
            // Every name subscribed before the stream starts.
            for s in SUBS {
                drop(BatchConsumer::open(&ring.name, &opts(s)).unwrap());
            }
            let out = |s: &str| dir.join(format!("{round}-{s}.txt"));
            let spawn = |s: &str| {
                spawn_helper(
                    "batch-consumer",
                    &ring.name,
                    &[("SUB", s.to_owned()), ("OUT", out(s).display().to_string())],
                )
            };
            let mut producer =
                spawn_helper("batch-producer", &ring.name, &[("COUNT", N.to_string())]);
            let mut consumers: Vec<Child> = SUBS.iter().map(|s| spawn(s)).collect();
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut done = [false; 3];
            while kills < 50 && !done.iter().all(|&d| d) {
                std::thread::sleep(Duration::from_millis(rng.below(20)));
                let i = rng.below(3) as usize;
                if let Some(status) = consumers[i].try_wait().unwrap() {
                    assert_eq!(status.code(), Some(EXIT_OK), "{} finished badly", SUBS[i]);
                    done[i] = true;
                    continue;
                }
                consumers[i].kill().unwrap();
                if consumers[i].wait().unwrap().code().is_none() {
                    kills += 1;
                }
                consumers[i] = spawn(SUBS[i]);
            }
            for (c, sub) in consumers.iter_mut().zip(SUBS) {
                assert_eq!(exit_code(c, deadline, sub), EXIT_OK, "{sub}");
            }
            assert_eq!(exit_code(&mut producer, deadline, "producer"), EXIT_OK);
            for sub in SUBS {
                let got = numbers(&out(sub));
                assert_eq!(got.first(), Some(&0), "{sub} starts at the first batch");
                assert_eq!(got.last(), Some(&(N - 1)), "{sub} reads to the last");
                for w in got.windows(2) {
                    // On, or back (a restart re-delivers what was not
                    // released), never a batch skipped.
                    assert!(w[1] <= w[0] + 1, "{sub}: {} after {}", w[1], w[0]);
                }
                let mut seen = got.clone();
                seen.sort_unstable();
                seen.dedup();
                assert_eq!(seen.len() as u64, N, "{sub}: every batch");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
