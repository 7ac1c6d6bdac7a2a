//! Cross-process tests of the shared-memory ring: real processes (this test
//! binary re-executed in a helper role), real `SIGKILL`s.
//!
//! The `helper` test is the entry point of those child processes: it does
//! nothing unless `LAMINAR_HELPER` names a role.
#![cfg(not(loom))] // the shared-memory layer are compiled out under loom (tests/loom.rs models the ring)

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use common::process::{env_u64, spawn_helper, wait_exit};
use common::{Rng, ofd_lock};
use laminar_ring::CapacityError;
use laminar_ring::shm::{
    HeaderError, OpenError, Role, SegmentOptions, ShmConsumer, ShmPopError, ShmProducer,
    ShmPushError, ShmSlot, ShmTryPopError,
};

/// A plain-data record with several fields and a self-check.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
struct Record {
    seq: u64,
    check: u64,
    tag: [u8; 8],
    small: u32,
    flags: u16,
    kind: u16,
}

impl ShmSlot for Record {
    const TYPE_NAME: &'static str = "shm_process.Record";
}

impl Record {
    fn new(seq: u64) -> Self {
        Self {
            seq,
            check: mix(seq),
            tag: seq.to_le_bytes().map(|b| b ^ 0x5a),
            small: seq as u32 ^ 0xdead_beef,
            flags: (seq % 65_521) as u16,
            kind: 7,
        }
    }
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// A segment name unique to this process and test; unlinked on drop.
struct Ring {
    name: String,
    dir: PathBuf,
}

impl Ring {
    fn new(test: &str) -> Self {
        let name = format!("lr-test-{}-{test}", std::process::id());
        let dir = PathBuf::from(laminar_ring::shm::DEFAULT_DIR);
        let _ = std::fs::remove_file(dir.join(&name));
        Self { name, dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
    }
}

/// Exit codes of helpers.
const EXIT_OK: i32 = 0;
const EXIT_PEER_GONE: i32 = 3;
const EXIT_ROLE_TAKEN: i32 = 4;
const EXIT_PERMISSION: i32 = 5;
const EXIT_OTHER: i32 = 9;

#[test]
fn helper() {
    let Ok(role) = std::env::var("LAMINAR_HELPER") else {
        return; // an ordinary test run: nothing to do
    };
    let ring = std::env::var("LAMINAR_RING").expect("LAMINAR_RING");
    let code = match role.as_str() {
        "u64-producer" => u64_producer(&ring),
        "record-producer" => record_producer(&ring),
        "record-consumer" => record_consumer(&ring),
        "panicking-producer" => panicking_producer(&ring),
        "failing-producer" => failing_producer(&ring),
        "session-producer" => session_producer(&ring),
        "park-ping" => park_ping(&ring),
        "slow-echo" => slow_echo(&ring),
        // Block for ever on an empty ring (no producer ever attached) or a
        // full one (no consumer ever attached), asleep on the futex.
        "parked-consumer" => {
            let mut rx = ShmConsumer::<u64>::open(&ring).expect("open consumer");
            panic!("pop returned {:?}", rx.pop());
        }
        "parked-producer" => {
            let mut tx = ShmProducer::<u64>::open(&ring).expect("open producer");
            panic!("push returned {:?}", tx.push(0));
        }
        "open-consumer" => match ShmConsumer::<u64>::open(&ring) {
            Ok(_) => EXIT_OK,
            Err(OpenError::SubscriberAttached { .. }) => EXIT_ROLE_TAKEN,
            Err(OpenError::PermissionDenied { .. }) => EXIT_PERMISSION,
            Err(e) => {
                eprintln!("open-consumer: {e}");
                EXIT_OTHER
            }
        },
        other => panic!("unknown helper role {other}"),
    };
    std::process::exit(code);
}

/// Busy-waits `d` (a sleep would itself be a voluntary context switch, and
/// the park/wake test counts those to show that the waiters slept).
fn work_for(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// A delay around a parked waiter's spin time (`PARK_SPIN_TIME`, 50 µs):
/// up to twice it, so that the answer comes sometimes while the waiter
/// spins, sometimes while it is on its way to sleep, sometimes once it
/// sleeps.
fn answer_delay(rng: &mut Rng) -> Duration {
    Duration::from_micros(rng.below(2 * laminar_ring::wait::PARK_SPIN_TIME.as_micros() as u64 + 1))
}

/// Voluntary context switches of this (single-threaded) helper process so
/// far: its sleeps on a futex.
fn voluntary_switches() -> i64 {
    #[allow(unsafe_code)] // one libc call
    // SAFETY: an all-zero rusage is a valid value of the plain C struct, and
    // getrusage writes one rusage through the pointer we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    usage.ru_nvcsw
}

/// Every wait of the park/wake test: far beyond any answer's delay.
const PARK_TEST_DEADLINE: Duration = Duration::from_secs(30);

/// Checks what a park/wake helper must know before it claims to test the
/// protocol, and sets the sleep slice beyond every deadline, so that a
/// lost wake-up is a timeout rather than a 50 ms delay nobody notices.
fn park_test_setup() {
    assert!(
        laminar_ring::wait::barrier::asymmetric_across_processes(),
        "this kernel refuses membarrier: the park/wake test would not test the asymmetric barrier"
    );
    laminar_ring::wait::set_park_slice(Duration::from_secs(3600));
}

/// The near side of `parks_and_wakes_thousands_of_times_across_processes`,
/// a helper process (the sleep slice it sets is process-wide, so it is not
/// set in the test binary's own process): creates the rings, starts the far
/// side, sends each ping and reads its four answers, each after a random
/// delay.
fn park_ping(ring: &str) -> i32 {
    park_test_setup();
    let rounds = env_u64("ROUNDS");
    let mut rng = Rng::from_env_or_time();
    let mut ping = ShmProducer::<u64>::create(&format!("{ring}-ping"), 2).expect("create ping");
    let mut pong = ShmConsumer::<u64>::create(&format!("{ring}-pong"), 2).expect("create pong");
    let mut echo = spawn_helper("slow-echo", ring, &[("ROUNDS", rounds.to_string())]);
    let before = voluntary_switches();
    for i in 0..rounds {
        if let Err(e) = ping.push_timeout(i, PARK_TEST_DEADLINE) {
            panic!("ping {i}: {e:?} (a lost wake-up?)");
        }
        for k in 0..4 {
            match pong.pop_timeout(PARK_TEST_DEADLINE) {
                Ok(v) => assert_eq!(v, 4 * i + k, "pong out of order"),
                Err(e) => panic!("pong {i}: {e} (a lost wake-up?)"),
            }
            // A slow reader: the echo's later pushes wait for a release.
            work_for(answer_delay(&mut rng));
        }
    }
    let slept = voluntary_switches() - before;
    drop(ping);
    assert_eq!(wait_exit(&mut echo, Duration::from_secs(120)), EXIT_OK);
    eprintln!("park-ping: {rounds} rounds, {slept} sleeps");
    // The test is about sleeps: fail if this side hardly ever slept.
    assert!(
        slept >= (rounds / 8) as i64,
        "park-ping slept only {slept} times"
    );
    EXIT_OK
}

/// The far side: pops each ping (asleep or not, as the delay has it), works
/// a random while, then pushes four answers into a two-slot ring whose
/// reader is slow, so that it also waits on a full ring.
fn slow_echo(ring: &str) -> i32 {
    park_test_setup();
    let rounds = env_u64("ROUNDS");
    let mut rng = Rng::from_env_or_time();
    let mut rx = ShmConsumer::<u64>::open(&format!("{ring}-ping")).expect("open ping");
    let mut tx = ShmProducer::<u64>::open(&format!("{ring}-pong")).expect("open pong");
    let before = voluntary_switches();
    for i in 0..rounds {
        match rx.pop_timeout(PARK_TEST_DEADLINE) {
            Ok(v) => assert_eq!(v, i, "ping out of order"),
            Err(e) => panic!("ping {i}: {e} (a lost wake-up?)"),
        }
        work_for(answer_delay(&mut rng));
        for k in 0..4 {
            if let Err(e) = tx.push_timeout(4 * i + k, PARK_TEST_DEADLINE) {
                panic!("pong {i}: {e:?} (a lost wake-up?)");
            }
        }
    }
    let slept = voluntary_switches() - before;
    eprintln!("slow-echo: {rounds} rounds, {slept} sleeps");
    assert!(
        slept >= (rounds / 8) as i64,
        "slow-echo slept only {slept} times"
    );
    EXIT_OK
}

/// Pushes u64 sequence numbers 0..COUNT in batches, then closes.
fn u64_producer(ring: &str) -> i32 {
    let count = env_u64("COUNT");
    let mut tx = ShmProducer::<u64>::open(ring).expect("open producer");
    let mut next = tx.write_seq();
    let mut batch = Vec::with_capacity(256);
    while next < count {
        batch.clear();
        batch.extend(next..(next + 256).min(count));
        let mut done = 0;
        while done < batch.len() {
            let n = tx.push_slice(&batch[done..]);
            if n == 0 {
                // Wait for room without spinning a core.
                match tx.push_timeout(batch[done], Duration::from_millis(100)) {
                    Ok(()) => done += 1,
                    Err(ShmPushError::Full(_)) => {}
                    Err(ShmPushError::ConsumerGone(_)) => return EXIT_PEER_GONE,
                }
            }
            done += n;
        }
        next += batch.len() as u64;
    }
    tx.close();
    EXIT_OK
}

/// Pushes Records continuing from the ring's write_seq until COUNT (or
/// forever when COUNT is 0), one at a time; closes unless NO_CLOSE is set.
fn record_producer(ring: &str) -> i32 {
    let count = match env_u64("COUNT") {
        0 => u64::MAX,
        n => n,
    };
    let pace = env_u64("PACE_EVERY");
    let mut tx = ShmProducer::<Record>::open(ring).expect("open producer");
    let mut seq = tx.write_seq();
    while seq < count {
        if pace > 0 && seq.is_multiple_of(pace) {
            std::thread::sleep(Duration::from_millis(1));
        }
        match tx.push_timeout(Record::new(seq), Duration::from_millis(100)) {
            Ok(()) => seq += 1,
            // Consumer dead or slow: it will be restarted; keep trying.
            Err(ShmPushError::Full(_) | ShmPushError::ConsumerGone(_)) => {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    if std::env::var("NO_CLOSE").is_ok() {
        std::mem::forget(tx); // leave without closing, like a crash
    }
    EXIT_OK
}

/// Pushes u64s 0..COUNT, then panics with the producer still in scope: its
/// drop runs during the unwinding.
fn panicking_producer(ring: &str) -> i32 {
    let count = env_u64("COUNT");
    let mut tx = ShmProducer::<u64>::open(ring).expect("open producer");
    for i in 0..count {
        tx.push(i).expect("push");
    }
    panic!("the producer fails after {count} items (this panic is the test)");
}

/// Pushes u64s 0..COUNT, then gives up with `fail(REASON)`, and exits 0:
/// a producer that found bad input.
fn failing_producer(ring: &str) -> i32 {
    let count = env_u64("COUNT");
    let reason = std::env::var("REASON").expect("REASON");
    let mut tx = ShmProducer::<u64>::open(ring).expect("open producer");
    for i in 0..count {
        tx.push(i).expect("push");
    }
    tx.fail(&reason);
    EXIT_OK
}

/// Pushes u64s START..START+COUNT, then ends its session as END says:
/// `close`, `fail` (with REASON), or `hang` (waits to be killed, having
/// published everything).
fn session_producer(ring: &str) -> i32 {
    let (start, count) = (env_u64("START"), env_u64("COUNT"));
    let mut tx = ShmProducer::<u64>::open(ring).expect("open producer");
    for v in start..start + count {
        tx.push(v).expect("push");
    }
    match std::env::var("END").expect("END").as_str() {
        "close" => tx.close(),
        "fail" => tx.fail(&std::env::var("REASON").expect("REASON")),
        "hang" => loop {
            std::thread::sleep(Duration::from_millis(50));
        },
        other => panic!("unknown END {other}"),
    }
    EXIT_OK
}

/// Reads Records in place and writes `seq, check` to the file OUT (one file
/// per consumer session) before committing them: at-least-once.
fn record_consumer(ring: &str) -> i32 {
    let out = std::env::var("OUT").expect("OUT");
    let mut file = std::fs::File::create(out).expect("create OUT");
    let mut rx = ShmConsumer::<Record>::open(ring).expect("open consumer");
    let mut bytes = Vec::new();
    loop {
        let chunk = match rx.read_chunk(256) {
            Ok(chunk) => chunk,
            Err(ShmTryPopError::Empty) => {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            Err(ShmTryPopError::EndOfStream) => return EXIT_OK,
            Err(ShmTryPopError::PeerGone) => return EXIT_PEER_GONE,
            Err(e) => panic!("record consumer: {e}"),
        };
        bytes.clear();
        for r in chunk.iter() {
            bytes.extend_from_slice(&r.seq.to_le_bytes());
            bytes.extend_from_slice(&r.check.to_le_bytes());
        }
        file.write_all(&bytes).expect("write");
        chunk.commit_all();
    }
}

const MANY: u64 = if cfg!(debug_assertions) {
    1_000_000
} else {
    10_000_000
};

#[test]
fn ten_million_u64_across_processes_in_order() {
    let ring = Ring::new("u64");
    // The consumer creates the ring and is attached before the producer starts.
    let mut rx = ShmConsumer::<u64>::create(&ring.name, 4096).unwrap();
    let mut producer = spawn_helper("u64-producer", &ring.name, &[("COUNT", MANY.to_string())]);
    let mut expected = 0_u64;
    let mut buf = vec![0_u64; 1024];
    loop {
        let n = rx.pop_slice(&mut buf);
        for &v in &buf[..n] {
            assert_eq!(v, expected, "lost, duplicated or reordered item");
            expected += 1;
        }
        if n == 0 {
            match rx.pop_timeout(Duration::from_secs(30)) {
                Ok(v) => {
                    assert_eq!(v, expected);
                    expected += 1;
                }
                Err(ShmPopError::EndOfStream) => break,
                Err(e) => panic!("after {expected} items: {e}"),
            }
        }
    }
    assert_eq!(expected, MANY);
    assert_eq!(wait_exit(&mut producer, Duration::from_secs(60)), EXIT_OK);
}

#[test]
fn pod_records_producer_first_then_consumer() {
    let ring = Ring::new("records");
    let count = 200_000;
    // The producer's process creates nothing: make the ring as a producer
    // here, detach, and let the helper attach and continue at write_seq 0.
    drop(ShmProducer::<Record>::create(&ring.name, 256).unwrap());
    let mut producer = spawn_helper(
        "record-producer",
        &ring.name,
        &[("COUNT", count.to_string())],
    );
    std::thread::sleep(Duration::from_millis(20));
    let mut rx = ShmConsumer::<Record>::open(&ring.name).unwrap();
    let mut expected = 0;
    loop {
        match rx.pop_timeout(Duration::from_secs(30)) {
            Ok(r) => {
                assert_eq!(r, Record::new(expected), "corrupt or out-of-order record");
                expected += 1;
            }
            // The first producer (this process) closed before the helper
            // attached; EndOfStream before `count` is only that moment.
            Err(ShmPopError::EndOfStream) if expected < count => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(ShmPopError::EndOfStream) => break,
            Err(e) => panic!("after {expected}: {e}"),
        }
    }
    assert_eq!(expected, count);
    assert_eq!(wait_exit(&mut producer, Duration::from_secs(60)), EXIT_OK);
}

#[test]
fn producer_sigkill_trials_lose_nothing_and_report_peer_gone() {
    let ring = Ring::new("pkill");
    let mut rng = Rng::from_env_or_time();
    let mut rx = ShmConsumer::<Record>::create(&ring.name, 1024).unwrap();
    let mut expected = 0_u64;
    let mut worst_gone = Duration::ZERO;
    for trial in 0..50 {
        let mut child = spawn_helper("record-producer", &ring.name, &[("COUNT", "0".into())]);
        // Wait until this producer has attached, so its death is the one seen.
        let attach_deadline = Instant::now() + Duration::from_secs(10);
        while !rx.producer_alive() {
            assert!(
                Instant::now() < attach_deadline,
                "trial {trial}: producer never attached"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Consume for a random while, then SIGKILL the producer mid-stream.
        let run_until = Instant::now() + Duration::from_micros(rng.below(20_000));
        while Instant::now() < run_until {
            if let Ok(r) = rx.try_pop() {
                assert_eq!(r, Record::new(expected), "trial {trial}");
                expected += 1;
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        // Drain everything it committed, exactly once, then PeerGone.
        let mut drained_at = Instant::now();
        loop {
            match rx.pop_timeout(Duration::from_secs(10)) {
                Ok(r) => {
                    assert_eq!(r, Record::new(expected), "trial {trial}: after the kill");
                    expected += 1;
                    drained_at = Instant::now();
                }
                Err(ShmPopError::PeerGone) => break,
                Err(e) => panic!("trial {trial}: expected PeerGone, got {e}"),
            }
        }
        worst_gone = worst_gone.max(drained_at.elapsed());
    }
    assert!(expected > 0, "producers committed nothing in 50 trials");
    eprintln!(
        "{expected} records over 50 producer kills; slowest PeerGone after drain: {worst_gone:?}"
    );
}

#[test]
fn consumer_sigkill_trials_are_at_least_once() {
    let ring = Ring::new("ckill");
    let out = std::env::temp_dir().join(format!("{}.sessions", ring.name));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let count: u64 = 1_000_000;
    let mut rng = Rng::from_env_or_time();
    drop(ShmProducer::<Record>::create(&ring.name, 1024).unwrap());
    // About a million records a second, so the kills land mid-stream.
    let mut producer = spawn_helper(
        "record-producer",
        &ring.name,
        &[("COUNT", count.to_string()), ("PACE_EVERY", "1024".into())],
    );
    let session = |i: usize| ("OUT", out.join(format!("{i:03}")).display().to_string());
    for trial in 0..50 {
        let mut consumer = spawn_helper("record-consumer", &ring.name, &[session(trial)]);
        std::thread::sleep(Duration::from_micros(2_000 + rng.below(8_000)));
        if consumer.try_wait().expect("wait").is_some() {
            eprintln!("trial {trial}: consumer finished before the kill");
        }
        consumer.kill().expect("SIGKILL");
        consumer.wait().expect("reap");
    }
    // A last consumer drains to the end of the stream.
    let mut last = spawn_helper("record-consumer", &ring.name, &[session(50)]);
    assert_eq!(wait_exit(&mut last, Duration::from_secs(120)), EXIT_OK);
    assert_eq!(wait_exit(&mut producer, Duration::from_secs(60)), EXIT_OK);
    check_at_least_once(&out, 51, count);
    let _ = std::fs::remove_dir_all(&out);
}

/// Within a session records are consecutive; a session starts at or before
/// where the previous ones got to (a replay), never after (a loss); every
/// record's check matches. A killed session's file may end in a torn record
/// (the kernel cuts a write short for a fatal signal): that record was never
/// committed, so it is dropped here and must come again in a later session.
fn check_at_least_once(dir: &Path, sessions: usize, count: u64) {
    let (mut next_new, mut replayed, mut torn) = (0_u64, 0_u64, 0);
    for i in 0..sessions {
        let Ok(bytes) = std::fs::read(dir.join(format!("{i:03}"))) else {
            continue; // killed before it created its file
        };
        torn += usize::from(bytes.len() % 16 != 0);
        let mut prev: Option<u64> = None;
        for rec in bytes.chunks_exact(16) {
            let seq = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
            let check = u64::from_le_bytes(rec[8..].try_into().expect("8 bytes"));
            assert_eq!(check, mix(seq), "session {i}: corrupt record {seq}");
            match prev {
                Some(p) => assert_eq!(seq, p + 1, "session {i}: gap or reorder"),
                None => assert!(
                    seq <= next_new,
                    "session {i} starts at {seq}, after {next_new}: lost"
                ),
            }
            if seq < next_new {
                replayed += 1;
            } else {
                next_new = seq + 1;
            }
            prev = Some(seq);
        }
    }
    assert_eq!(next_new, count, "not every record was delivered");
    eprintln!(
        "{count} records, {replayed} delivered again after a kill, {torn} torn session tails"
    );
}

/// A producer process that panics with its `ShmProducer` alive failed: the
/// consumer gets everything it pushed, then `PeerGone`, never a clean
/// `EndOfStream` (the producer's drop runs while the thread unwinds).
#[test]
fn a_producer_dropped_by_a_panic_ends_the_stream_as_peer_gone() {
    let ring = Ring::new("panic");
    let mut rx = ShmConsumer::<u64>::create(&ring.name, 64).unwrap();
    let mut child = spawn_helper("panicking-producer", &ring.name, &[("COUNT", "40".into())]);
    let code = wait_exit(&mut child, Duration::from_secs(60));
    assert_ne!(code, EXIT_OK, "the helper was meant to panic");
    for i in 0..40 {
        assert_eq!(rx.pop_timeout(Duration::from_secs(10)), Ok(i));
    }
    assert_eq!(
        rx.pop_timeout(Duration::from_secs(10)),
        Err(ShmPopError::PeerGone)
    );
}

/// A producer process that gives up with `fail(reason)`: the consumer gets
/// everything it pushed, then `ProducerFailed` (not `PeerGone`: it did not
/// die, it failed), and the reason; `inspect` shows the producer failed, the
/// reason, and both sides' pids.
#[test]
fn a_producer_that_fails_ends_the_stream_in_error_with_its_reason() {
    let ring = Ring::new("fail");
    let mut rx = ShmConsumer::<u64>::create(&ring.name, 64).unwrap();
    let reason = "cannot read input.csv: row 17 has 4 fields, the header 3";
    let mut child = spawn_helper(
        "failing-producer",
        &ring.name,
        &[("COUNT", "40".into()), ("REASON", reason.into())],
    );
    let producer_pid = child.id();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), EXIT_OK);
    for i in 0..40 {
        assert_eq!(rx.pop_timeout(Duration::from_secs(10)), Ok(i));
    }
    assert_eq!(
        rx.pop_timeout(Duration::from_secs(10)),
        Err(ShmPopError::ProducerFailed)
    );
    assert_eq!(rx.try_pop(), Err(ShmTryPopError::ProducerFailed));
    assert_eq!(rx.producer_failure().as_deref(), Some(reason));
    let info = laminar_ring::shm::inspect(&ring.name, &Default::default()).unwrap();
    assert_eq!(info.producer.state, laminar_ring::shm::RoleState::Failed);
    assert!(!info.producer.alive);
    assert_eq!(info.producer.describe(), "failed");
    assert_eq!(info.producer_failure.as_deref(), Some(reason));
    assert_eq!(info.producer.pid, Some(producer_pid));
    assert!(info.consumer.alive);
    assert_eq!(info.consumer.pid, Some(std::process::id()));
    // A new producer continues the ring; its clean close is a clean end.
    let tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    let info = laminar_ring::shm::inspect(&ring.name, &Default::default()).unwrap();
    assert_eq!(info.producer.state, laminar_ring::shm::RoleState::Attached);
    assert_eq!(info.producer_failure, None);
    tx.close();
    assert_eq!(
        rx.pop_timeout(Duration::from_secs(10)),
        Err(ShmPopError::EndOfStream)
    );
    assert_eq!(rx.producer_failure(), None);
}

/// `inspect` shows a side that waits, and since when: the consumer blocked
/// on an empty ring, the producer blocked on a full one; and neither once
/// it is on its way again. (A non-blocking call never marks itself.)
#[test]
fn inspect_shows_which_side_waits_and_since_when() {
    let ring = Ring::new("waits");
    let mut rx = ShmConsumer::<u64>::create(&ring.name, 4).unwrap();
    let mut tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    let look = || laminar_ring::shm::inspect(&ring.name, &Default::default()).unwrap();
    let until = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "never saw: {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    assert_eq!(rx.try_pop(), Err(ShmTryPopError::Empty));
    assert_eq!(look().consumer.waiting_since, None, "try_pop marked itself");
    let before = std::time::SystemTime::now();
    std::thread::scope(|s| {
        let popper = s.spawn(|| rx.pop());
        until("the consumer waiting", &|| {
            look().consumer.waiting_since.is_some()
        });
        let since = look().consumer.waiting_since.unwrap();
        assert!(since >= before - Duration::from_secs(1), "{since:?}");
        assert_eq!(look().producer.waiting_since, None);
        tx.push(7).unwrap();
        assert_eq!(popper.join().unwrap(), Ok(7));
    });
    assert_eq!(look().consumer.waiting_since, None);
    for i in 0..4 {
        tx.push(i).unwrap();
    }
    std::thread::scope(|s| {
        let pusher = s.spawn(|| tx.push(4));
        until("the producer waiting", &|| {
            look().producer.waiting_since.is_some()
        });
        assert_eq!(look().consumer.waiting_since, None);
        assert_eq!(rx.pop(), Ok(0));
        assert_eq!(pusher.join().unwrap(), Ok(()));
    });
    assert_eq!(look().producer.waiting_since, None);
}

/// The waiter count of the wait cell at `offset` (docs/FORMAT.md: 388 is
/// `not_empty.waiters`, 516 `not_full.waiters`), read from the file, which
/// on tmpfs is the same memory the processes map.
fn waiters_at(path: &Path, offset: u64) -> u32 {
    let mut word = [0_u8; 4];
    let file = std::fs::File::open(path).expect("open the ring file");
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut word, offset).expect("read");
    u32::from_ne_bytes(word)
}

/// Starts `role`, waits until it sleeps on the cell at `offset`, and
/// SIGKILLs it there. A sleeper wakes every 50 ms and re-counts itself, so
/// the kill can land in that instant between; then it tries again.
fn kill_while_parked(role: &str, ring: &Ring, offset: u64) {
    for _attempt in 0..20 {
        let mut child = spawn_helper(role, &ring.name, &[]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while waiters_at(&ring.path(), offset) == 0 {
            assert!(Instant::now() < deadline, "{role} never went to sleep");
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        if waiters_at(&ring.path(), offset) == 1 {
            return;
        }
    }
    panic!("{role}: 20 kills all landed between two sleeps");
}

/// A process SIGKILLed while asleep on its cell leaves the cell's waiter
/// count at 1; the next process to take the role clears it, so publishes
/// and releases stop making wake-up system calls for a dead sleeper.
#[test]
fn a_role_taken_over_from_a_process_killed_while_parked_has_no_waiters_left() {
    const NOT_EMPTY_WAITERS: u64 = 388;
    const NOT_FULL_WAITERS: u64 = 516;
    // Consumer side: parked on an empty ring no producer ever attached to,
    // killed, replaced.
    let ring = Ring::new("parked-c");
    drop(ShmConsumer::<u64>::create(&ring.name, 4).unwrap());
    kill_while_parked("parked-consumer", &ring, NOT_EMPTY_WAITERS);
    let rx = ShmConsumer::<u64>::open(&ring.name).unwrap();
    assert_eq!(waiters_at(&ring.path(), NOT_EMPTY_WAITERS), 0);
    drop(rx);
    // Producer side: parked on a full ring no consumer ever attached to,
    // killed, replaced.
    let ring = Ring::new("parked-p");
    let mut tx = ShmProducer::<u64>::create(&ring.name, 4).unwrap();
    assert_eq!(tx.push_slice(&[1, 2, 3, 4]), 4);
    tx.abandon();
    kill_while_parked("parked-producer", &ring, NOT_FULL_WAITERS);
    let tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    assert_eq!(waiters_at(&ring.path(), NOT_FULL_WAITERS), 0);
    drop(tx);
    // The items survived all of it.
    let mut rx = ShmConsumer::<u64>::open(&ring.name).unwrap();
    let mut out = [0; 4];
    assert_eq!(rx.pop_slice(&mut out), 4);
    assert_eq!(out, [1, 2, 3, 4]);
}

#[test]
fn roles_are_exclusive_across_processes() {
    let ring = Ring::new("roles");
    let _rx = ShmConsumer::<u64>::create(&ring.name, 64).unwrap();
    // In this process: a second consumer under the same name is refused.
    match ShmConsumer::<u64>::open(&ring.name) {
        Err(OpenError::SubscriberAttached { name, .. }) => assert_eq!(name, "default"),
        other => panic!("expected SubscriberAttached, got {:?}", other.map(|_| ())),
    }
    // In another process too.
    let mut child = spawn_helper("open-consumer", &ring.name, &[]);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(10)),
        EXIT_ROLE_TAKEN
    );
    // Producer role is free, then taken.
    let _tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    assert!(matches!(
        ShmProducer::<u64>::open(&ring.name),
        Err(OpenError::RoleTaken {
            role: Role::Producer,
            ..
        })
    ));
}

#[test]
fn a_killed_role_holder_frees_its_role() {
    let ring = Ring::new("rolefree");
    drop(ShmProducer::<Record>::create(&ring.name, 64).unwrap());
    let mut child = spawn_helper("record-producer", &ring.name, &[("COUNT", "0".into())]);
    let rx = ShmConsumer::<Record>::open(&ring.name).unwrap();
    while !rx.producer_alive() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(matches!(
        ShmProducer::<Record>::open(&ring.name),
        Err(OpenError::RoleTaken { .. })
    ));
    child.kill().unwrap();
    child.wait().unwrap();
    let tx = ShmProducer::<Record>::open(&ring.name).expect("role free after SIGKILL");
    drop(tx);
}

#[test]
fn segments_are_private_to_their_owner() {
    #[allow(unsafe_code)] // one libc call
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        eprintln!("skipped: not root, so cannot start a process as another user");
        return;
    }
    let ring = Ring::new("perm");
    let _tx = ShmProducer::<u64>::create(&ring.name, 64).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(ring.path()).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "helper",
        "--exact",
        "--nocapture",
        "--test-threads",
        "1",
        "-q",
    ])
    .env("LAMINAR_HELPER", "open-consumer")
    .env("LAMINAR_RING", &ring.name)
    .stdout(Stdio::null());
    std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
    std::os::unix::process::CommandExt::gid(&mut cmd, 65534);
    let status = cmd.status().expect("spawn as nobody");
    assert_eq!(
        status.code(),
        Some(EXIT_PERMISSION),
        "uid 65534 opened a 0600 segment"
    );
}

/// In a world-writable directory such as /dev/shm another user can plant a
/// file under a ring's name before its owner creates it. `open` (and the
/// read-only `inspect`) refuse a ring that anyone but this user may write,
/// unless told to trust the ring's group (`allow_shared`); a ring that every
/// user may write is refused either way. An owner other than this user can
/// only be arranged by root (chown): that part runs when the tests run as
/// root and is skipped, saying so, otherwise; the rule itself is also
/// unit-tested on synthetic owners in `src/shm/segment.rs`.
#[test]
fn rings_that_others_may_write_are_refused_unless_shared_is_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let ring = Ring::new("trust");
    let chmod = |mode| {
        std::fs::set_permissions(ring.path(), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let own = SegmentOptions::default();
    let shared = SegmentOptions {
        allow_shared: true,
        ..SegmentOptions::default()
    };
    let opens = |opts: &SegmentOptions| ShmConsumer::<u64>::open_with(&ring.name, opts).map(drop);
    let refused = |r: Result<(), OpenError>, needle: &str| match r {
        Err(e @ OpenError::Untrusted { .. }) => {
            assert!(e.to_string().contains(needle), "{needle:?} not in: {e}")
        }
        other => panic!("expected Untrusted ({needle}), got {other:?}"),
    };
    drop(ShmProducer::<u64>::create(&ring.name, 64).unwrap());
    opens(&own).expect("a 0600 ring of our own");

    chmod(0o666);
    refused(opens(&own), "lets every user write it");
    refused(opens(&shared), "lets every user write it");
    refused(
        laminar_ring::shm::inspect(&ring.name, &own).map(drop),
        "lets every user write it",
    );

    chmod(0o660);
    refused(opens(&own), "lets its group");
    refused(
        ShmProducer::<u64>::open_with(&ring.name, &own).map(drop),
        "lets its group",
    );
    opens(&shared).expect("a 0660 ring with allow_shared");
    laminar_ring::shm::inspect(&ring.name, &shared).expect("inspect with allow_shared");

    chmod(0o640);
    opens(&own).expect("a 0640 ring: only we may write it");

    #[allow(unsafe_code)] // one libc call
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        eprintln!("owner check skipped: only root can give a file to another user");
        return;
    }
    // Planted by uid 65534 in its own group: refused with or without the
    // option (root is not in group 65534).
    chmod(0o600);
    std::os::unix::fs::chown(ring.path(), Some(65534), Some(65534)).unwrap();
    refused(opens(&own), "owned by uid 65534");
    refused(opens(&shared), "owned by uid 65534 and gid 65534");
    // Another user's ring shared with a group of ours: trusted only when
    // shared rings are allowed.
    chmod(0o660);
    std::os::unix::fs::chown(ring.path(), Some(65534), Some(0)).unwrap();
    refused(opens(&own), "owned by uid 65534");
    opens(&shared).expect("another user's ring in our group, allow_shared");
}

/// `open` maps only the header until it has validated it, and then only
/// the `total_len` bytes the ring spans: a file far longer than its ring (a
/// large sparse file in tmpfs) is never materialised in memory, whether its
/// header is refused or valid.
#[test]
fn open_materialises_no_more_of_a_long_file_than_its_valid_ring() {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    const LONG: u64 = 64 << 20;
    let ring = Ring::new("sparse");
    let opts = SegmentOptions {
        ready_timeout: Duration::from_millis(50),
        ..SegmentOptions::default()
    };
    let allocated = || std::fs::metadata(ring.path()).unwrap().blocks() * 512;
    let lengthen = || {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(ring.path())
            .unwrap();
        f.set_len(LONG).unwrap();
    };
    // Never marked ready: 64 MiB of zeros.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(ring.path())
        .unwrap()
        .set_len(LONG)
        .unwrap();
    let e = ShmConsumer::<u64>::open_with(&ring.name, &opts)
        .err()
        .unwrap();
    assert_never_ready(&e);
    assert!(allocated() < 1 << 20, "{} bytes allocated", allocated());
    std::fs::remove_file(ring.path()).unwrap();

    // A valid 64-slot ring at the start of a 64 MiB file.
    drop(ShmProducer::<u64>::create(&ring.name, 64).unwrap());
    lengthen();
    let before = allocated();
    let mut rx = ShmConsumer::<u64>::open(&ring.name).unwrap();
    assert_eq!(rx.try_pop(), Err(ShmTryPopError::EndOfStream));
    drop(rx);
    assert!(
        allocated() - before < 1 << 20,
        "{} bytes allocated",
        allocated()
    );

    // The same, with a layout version this build does not read.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(ring.path())
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &99_u32.to_ne_bytes(), 8).unwrap();
    let e = ShmConsumer::<u64>::open(&ring.name).err().unwrap();
    assert!(e.to_string().contains("layout version 99"), "{e}");
    assert!(
        allocated() - before < 1 << 20,
        "{} bytes allocated",
        allocated()
    );
}

/// A typed ring's capacity goes through the check of every ring: the same
/// error type as `RingBuffer::try_new`'s, with the 2^32 limit of a ring in
/// shared memory.
#[test]
#[cfg(target_pointer_width = "64")]
fn a_typed_ring_refuses_a_bad_capacity_with_the_ring_capacity_error() {
    let name = format!("lr-capacity-{}", std::process::id());
    for (capacity, expected) in [
        (0, CapacityError::Zero),
        (12, CapacityError::NotPowerOfTwo(12)),
        (
            (1 << 32) + 1,
            CapacityError::TooLarge {
                capacity: (1 << 32) + 1,
                max: 1 << 32,
            },
        ),
    ] {
        match ShmProducer::<u64>::create(&name, capacity) {
            Err(OpenError::Capacity(e)) => assert_eq!(e, expected, "{capacity}"),
            other => panic!("{capacity} slots: {other:?}"),
        }
    }
}

#[test]
fn bad_segments_are_refused_with_clear_errors() {
    let dir = std::env::temp_dir().join(format!("lr-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let opts = SegmentOptions {
        dir: dir.clone(),
        ready_timeout: Duration::from_millis(50),
        ..SegmentOptions::default()
    };
    // Never-initialised segment, and no creator at work (its lock is
    // free): the creator died before marking it ready.
    std::fs::write(dir.join("zeros"), vec![0_u8; 4096]).unwrap();
    let e = ShmConsumer::<u64>::open_with("zeros", &opts).err().unwrap();
    assert_never_ready(&e);
    // An empty file: a creator between its open and its ftruncate, so the
    // opener waits for it, then gives up with NotReady.
    std::fs::write(dir.join("empty"), b"").unwrap();
    let e = ShmConsumer::<u64>::open_with("empty", &opts).err().unwrap();
    assert!(matches!(e, OpenError::NotReady { .. }), "{e}");
    assert!(e.to_string().contains("not ready"), "{e}");
    // Too short to hold a header, and not empty: no creator makes such a
    // file (it sizes it in one ftruncate), so it is refused at once.
    std::fs::write(dir.join("short"), b"LAMRING").unwrap();
    let e = ShmConsumer::<u64>::open_with("short", &opts).err().unwrap();
    assert!(
        e.to_string().contains("shorter than the 2048-byte header"),
        "{e}"
    );
    // Junk of header size with non-zero bytes where the magic goes.
    std::fs::write(dir.join("junk"), vec![b'#'; 4096]).unwrap();
    let e = ShmConsumer::<u64>::open_with("junk", &opts).err().unwrap();
    assert!(e.to_string().contains("not a laminar-ring ring"), "{e}");
    // The magic, then junk: its state word is neither initialising nor
    // ready, which no creator writes, so it can never become ready. Refused
    // at once, even by an opener that would wait a minute for a creator.
    let patient = SegmentOptions {
        ready_timeout: Duration::from_secs(60),
        ..opts.clone()
    };
    let mut junk = b"LAMRING\0".to_vec();
    junk.extend((0..4088_u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1));
    std::fs::write(dir.join("junk-body"), &junk).unwrap();
    let e = ShmConsumer::<u64>::open_with("junk-body", &patient)
        .err()
        .unwrap();
    assert!(
        matches!(
            &e,
            OpenError::BadHeader {
                source: HeaderError::BadField { field: "state", .. },
                ..
            }
        ),
        "{e}"
    );
    let e = laminar_ring::shm::inspect("junk-body", &patient)
        .err()
        .unwrap();
    assert!(e.to_string().contains("bad header field state"), "{e}");
    // Sized, not ready, and a process holds the creator's lock (byte 2):
    // a creator still at work, so the opener waits for it, then gives up
    // with NotReady. Once that lock is gone, the creator died: refused at
    // once, even by the patient opener.
    let making = std::fs::File::create(dir.join("making")).unwrap();
    making.set_len(4096).unwrap();
    ofd_lock(&making, 2);
    let e = ShmConsumer::<u64>::open_with("making", &opts)
        .err()
        .unwrap();
    assert!(matches!(e, OpenError::NotReady { .. }), "{e}");
    drop(making);
    let e = ShmConsumer::<u64>::open_with("making", &patient)
        .err()
        .unwrap();
    assert_never_ready(&e);
    assert!(e.to_string().contains("never finished initialising"), "{e}");
    // Truncated after creation.
    drop(ShmProducer::<u64>::create_with("trunc", 1024, &opts).unwrap());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("trunc"))
        .unwrap();
    f.set_len(4096).unwrap();
    let e = ShmConsumer::<u64>::open_with("trunc", &opts).err().unwrap();
    assert!(e.to_string().contains("truncated"), "{e}");
    // Wrong magic.
    let mut bytes = std::fs::read(dir.join("trunc")).unwrap();
    bytes[0] = b'X';
    std::fs::write(dir.join("magic"), &bytes).unwrap();
    let e = ShmConsumer::<u64>::open_with("magic", &opts).err().unwrap();
    assert!(e.to_string().contains("not a laminar-ring ring"), "{e}");
    // Sequences that contradict each other (write_seq at byte 128 far ahead
    // of tail_seq at byte 184).
    let mut bytes = std::fs::read(dir.join("trunc")).unwrap();
    bytes.resize(2048 + 8 * 128 + 1024 * 8, 0); // header, 8 cursors, slots
    bytes[128..136].copy_from_slice(&5000_u64.to_le_bytes());
    std::fs::write(dir.join("seqs"), &bytes).unwrap();
    let e = ShmConsumer::<u64>::open_with("seqs", &opts).err().unwrap();
    assert!(e.to_string().contains("inconsistent sequences"), "{e}");
    // Another slot type.
    drop(ShmProducer::<u64>::create_with("typed", 64, &opts).unwrap());
    let e = ShmConsumer::<u32>::open_with("typed", &opts).err().unwrap();
    assert!(matches!(e, OpenError::Mismatch { .. }), "{e}");
    let e = ShmConsumer::<i64>::open_with("typed", &opts).err().unwrap();
    assert!(e.to_string().contains("fingerprint"), "{e}");
    // Names.
    for bad in ["", "a/b", "..", "x\0y"] {
        assert!(
            matches!(
                ShmConsumer::<u64>::open(bad),
                Err(OpenError::BadName { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        ShmConsumer::<u64>::open("lr-does-not-exist"),
        Err(OpenError::NotFound { .. })
    ));
    // Existing name on create.
    let e = ShmProducer::<u64>::create_with("typed", 64, &opts)
        .err()
        .unwrap();
    assert!(matches!(e, OpenError::AlreadyExists { .. }), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sequences only grow, one per item, and no ring gets anywhere near 2^63
/// (29 years at 10^10 items/s). A segment whose positions another process
/// set beyond that, a consistent pair the snapshot at open accepts, is
/// refused when a side attaches: the position that side would advance
/// could otherwise wrap past `u64::MAX` (a panic in a debug build; in a
/// release build `write_seq` back to 0, behind `read_seq`, so that every
/// later item is one the consumer never sees).
#[test]
fn positions_a_peer_set_near_the_end_of_u64_are_refused_when_attaching() {
    let dir = std::env::temp_dir().join(format!("lr-huge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let opts = SegmentOptions {
        dir: dir.clone(),
        ..SegmentOptions::default()
    };
    // Created by a consumer: no producer session, so no end record whose
    // position the positions written below would contradict.
    drop(ShmConsumer::<u64>::create_with("r", 4, &opts).unwrap());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("r"))
        .unwrap();
    let huge = u64::MAX - 1;
    {
        use std::os::unix::fs::FileExt;
        f.write_all_at(&huge.to_ne_bytes(), 128).unwrap(); // write_seq
        f.write_all_at(&huge.to_ne_bytes(), 184).unwrap(); // tail_seq
        f.write_all_at(&huge.to_ne_bytes(), 2048).unwrap(); // cursor 0's read_seq
    }
    let e = ShmProducer::<u64>::open_with("r", &opts).err().unwrap();
    assert!(matches!(e, OpenError::BadHeader { .. }), "{e}");
    assert!(e.to_string().contains("write_seq"), "{e}");
    let e = ShmConsumer::<u64>::open_with("r", &opts).err().unwrap();
    assert!(matches!(e, OpenError::BadHeader { .. }), "{e}");
    assert!(e.to_string().contains("read_seq"), "{e}");
    // Refused before taking the role: a later open of a repaired segment
    // finds both roles free.
    let ok = 1_u64 << 62;
    {
        use std::os::unix::fs::FileExt;
        f.write_all_at(&ok.to_ne_bytes(), 128).unwrap();
        f.write_all_at(&ok.to_ne_bytes(), 184).unwrap();
        f.write_all_at(&ok.to_ne_bytes(), 2048).unwrap();
    }
    let mut tx = ShmProducer::<u64>::open_with("r", &opts).unwrap();
    let mut rx = ShmConsumer::<u64>::open_with("r", &opts).unwrap();
    for v in 0..10 {
        tx.push(v).unwrap();
        assert_eq!(rx.pop_timeout(Duration::from_secs(20)), Ok(v));
    }
    drop((tx, rx));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A segment aligns slots to at most a page (4096 bytes): a slot type that
/// needs more is refused with its own error both by `create` (before any
/// file is made) and by `open`; a page-aligned type gets page-aligned slots.
#[test]
fn slot_types_aligned_beyond_a_page_are_refused_at_create_and_open() {
    #[repr(C, align(8192))]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct TwoPages([[u8; 4096]; 2]);
    #[repr(C, align(4096))]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct OnePage([u8; 4096]);
    impl ShmSlot for TwoPages {
        const TYPE_NAME: &'static str = "TwoPages";
    }
    impl ShmSlot for OnePage {
        const TYPE_NAME: &'static str = "OnePage";
    }
    let refused = |r: Result<(), OpenError>, what: &str| match r {
        Err(OpenError::SlotAlignment {
            align: 8192,
            max: 4096,
            ..
        }) => {}
        other => panic!("{what}: expected SlotAlignment, got {other:?}"),
    };
    let ring = Ring::new("align");
    refused(
        ShmProducer::<TwoPages>::create(&ring.name, 4).map(drop),
        "producer create",
    );
    refused(
        ShmConsumer::<TwoPages>::create(&ring.name, 4).map(drop),
        "consumer create",
    );
    assert!(!ring.path().exists(), "a refused create left a file");
    let mut tx = ShmProducer::<OnePage>::create(&ring.name, 4).unwrap();
    refused(
        ShmConsumer::<TwoPages>::open(&ring.name).map(drop),
        "consumer open",
    );
    let mut rx = ShmConsumer::<OnePage>::open(&ring.name).unwrap();
    for round in 0..3_u8 {
        let mut chunk = tx.write_chunk_uninit(4);
        let (a, b) = chunk.as_mut_slices();
        for slot in a.iter().chain(b.iter()) {
            assert_eq!(slot.as_ptr() as usize % 4096, 0, "slot not page-aligned");
        }
        assert_eq!(
            chunk.fill_from_iter((0..3).map(|i| OnePage([round * 3 + i; 4096]))),
            3
        );
        for i in 0..3 {
            let page = rx.try_pop().unwrap();
            assert!(page.0.iter().all(|&b| b == round * 3 + i), "round {round}");
        }
    }
}

/// The same tick, as two programs (or two versions of one, or builds by two
/// compilers) declare it in different modules; and another type of the same
/// layout.
mod first_program {
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
    pub struct Tick {
        pub seq: u64,
        pub price: f64,
    }
    impl laminar_ring::shm::ShmSlot for Tick {
        const TYPE_NAME: &'static str = "example.Tick";
    }
}
mod second_program {
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
    pub struct Tick {
        pub seq: u64,
        pub price: f64,
    }
    impl laminar_ring::shm::ShmSlot for Tick {
        const TYPE_NAME: &'static str = "example.Tick";
    }
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
    pub struct Quote {
        pub seq: u64,
        pub price: f64,
    }
    impl laminar_ring::shm::ShmSlot for Quote {
        const TYPE_NAME: &'static str = "example.Quote";
    }
}

/// A slot type is identified by the name it declares, its size and its
/// alignment, not by the compiler's name for it (which is not stable across
/// compilers and changes with the module path): the header holds FNV-1a 64
/// of (16, 8, "example.Tick"); a type of that name in another module
/// attaches, and one of the same layout under another name is refused.
#[test]
fn a_slot_type_is_identified_by_the_name_it_declares() {
    fn fnv1a(parts: &[&[u8]]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in parts.iter().copied().flatten() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        h
    }
    let expected = fnv1a(&[&16_u64.to_le_bytes(), &8_u64.to_le_bytes(), b"example.Tick"]);
    let ring = Ring::new("identity");
    let mut tx = ShmProducer::<first_program::Tick>::create(&ring.name, 8).unwrap();
    let bytes = std::fs::read(ring.path()).unwrap();
    assert_eq!(
        u64::from_ne_bytes(bytes[40..48].try_into().unwrap()),
        expected,
        "type_fingerprint at offset 40"
    );
    let tick = first_program::Tick {
        seq: 7,
        price: 101.25,
    };
    tx.push(tick).unwrap();
    let e = ShmConsumer::<second_program::Quote>::open(&ring.name)
        .err()
        .unwrap();
    assert!(e.to_string().contains("fingerprint"), "{e}");
    let mut rx = ShmConsumer::<second_program::Tick>::open(&ring.name).unwrap();
    assert_eq!(
        rx.try_pop(),
        Ok(second_program::Tick {
            seq: 7,
            price: 101.25
        })
    );
}

/// `e` says the segment never finished initialising (its creator died).
fn assert_never_ready(e: &OpenError) {
    assert!(
        matches!(
            e,
            OpenError::BadHeader {
                source: HeaderError::NeverReady,
                ..
            }
        ),
        "{e}"
    );
}

/// CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    #[allow(unsafe_code)] // one libc call
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Smoke test of the wake-up protocol across processes: two
/// single-threaded helper processes sleep on the futex thousands of times,
/// each woken only by the other's publish or release (the consumer of each
/// ring on an empty ring, the echo's producer on a full one), with answers
/// delayed at random around the waiters' spin time. The publishers pay no
/// fence on their fast path (the sleeper's `membarrier` stands in for it,
/// see `wait`). With a sleep slice longer than every deadline, one lost
/// wake-up fails the test as a timeout instead of passing as a 50 ms
/// hiccup. The race it would lose is narrow: the loom models in
/// tests/loom.rs are the proof, this is the same code between processes.
#[test]
fn parks_and_wakes_thousands_of_times_across_processes() {
    let rounds: u64 = if cfg!(debug_assertions) { 1_000 } else { 4_000 };
    let ring = Ring::new("park-wake");
    let _ping = Ring {
        name: format!("{}-ping", ring.name),
        dir: ring.dir.clone(),
    };
    let _pong = Ring {
        name: format!("{}-pong", ring.name),
        dir: ring.dir.clone(),
    };
    let mut near = spawn_helper("park-ping", &ring.name, &[("ROUNDS", rounds.to_string())]);
    assert_eq!(wait_exit(&mut near, Duration::from_secs(180)), EXIT_OK);
}

#[test]
fn a_blocked_consumer_uses_no_cpu_and_wakes_on_push() {
    let ring = Ring::new("idle");
    let mut rx = ShmConsumer::<u64>::create(&ring.name, 64).unwrap();
    let mut tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    let cpu = thread_cpu_time();
    let wall = Instant::now();
    assert_eq!(
        rx.pop_timeout(Duration::from_millis(500)),
        Err(ShmPopError::Timeout)
    );
    let (cpu, wall) = (thread_cpu_time() - cpu, wall.elapsed());
    eprintln!("blocked {wall:?}, CPU {cpu:?}");
    assert!(wall >= Duration::from_millis(500));
    // Sleeping on the futex costs a few microseconds per wake-up (it checks
    // the producer's lock every 10 ms): well under a millisecond in all. A
    // consumer that spins instead burns the whole 500 ms whenever it has a
    // core. The bound is absolute, not a ratio of wall time: load on the
    // machine can only lower a thread's CPU time, never raise it, so only a
    // consumer that spins for a fifth of the time or more can fail it.
    // (benches/shm.rs measures the wake-up latency itself.)
    assert!(
        cpu < Duration::from_millis(100),
        "blocked consumer used {cpu:?} CPU in {wall:?}"
    );
    // And a push from another thread wakes it.
    let t = std::thread::spawn(move || {
        // Gives the consumer time to go back to sleep, so that the push
        // usually wakes a sleeper; the test is correct either way.
        std::thread::sleep(Duration::from_millis(30));
        tx.push(5).unwrap();
        tx
    });
    assert_eq!(rx.pop_timeout(Duration::from_secs(10)), Ok(5));
    drop(t.join().unwrap());
    assert_eq!(rx.pop(), Err(ShmPopError::EndOfStream));
}

/// `remove_unused` removes nothing while a process holds a role (here a
/// consumer in this process and a producer in another), names the roles,
/// and removes the ring once they are gone.
#[test]
fn remove_unused_leaves_a_ring_in_use_and_removes_it_once_unused() {
    let ring = Ring::new("rmunused");
    let dir = ring.dir.clone();
    let rx = ShmConsumer::<Record>::create(&ring.name, 64).unwrap();
    match laminar_ring::shm::remove_unused(&ring.name, &dir) {
        Err(OpenError::InUse { roles, .. }) => assert_eq!(roles, [Role::Consumer]),
        other => panic!("expected InUse, got {other:?}"),
    }
    drop(rx);
    let mut child = spawn_helper("record-producer", &ring.name, &[("COUNT", "0".into())]);
    let probe = ShmConsumer::<Record>::open(&ring.name).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !probe.producer_alive() {
        assert!(Instant::now() < deadline, "the producer never attached");
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(probe);
    match laminar_ring::shm::remove_unused(&ring.name, &dir) {
        Err(e @ OpenError::InUse { .. }) => {
            assert!(e.to_string().contains("in use by a producer"), "{e}");
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    assert!(ring.path().exists(), "a ring in use stays");
    child.kill().unwrap();
    child.wait().unwrap();
    laminar_ring::shm::remove_unused(&ring.name, &dir).expect("removed once unused");
    assert!(!ring.path().exists());
    assert!(matches!(
        laminar_ring::shm::remove_unused(&ring.name, &dir),
        Err(OpenError::NotFound { .. })
    ));
}

/// A temporary ring says so to every opener, and its consumer removes it
/// only while no producer holds the role.
#[test]
fn a_temporary_ring_is_removed_by_its_consumer_only_when_no_producer_holds_it() {
    let ring = Ring::new("temporary");
    let opts = SegmentOptions {
        temporary: true,
        ..SegmentOptions::default()
    };
    let mut tx = ShmProducer::<Record>::create_with(&ring.name, 64, &opts).unwrap();
    let rx = ShmConsumer::<Record>::open(&ring.name).unwrap();
    assert!(rx.is_temporary());
    let info = laminar_ring::shm::inspect(&ring.name, &SegmentOptions::default()).unwrap();
    assert!(info.layout.temporary);
    tx.try_push(Record::new(1)).unwrap();
    match rx.remove_if_unused() {
        Err(OpenError::InUse { roles, .. }) => assert_eq!(roles, [Role::Producer]),
        other => panic!("expected InUse, got {other:?}"),
    }
    drop(tx);
    // One item is left to pop: kept.
    assert!(matches!(
        rx.remove_if_unused(),
        Err(OpenError::Changed { .. })
    ));
    let mut rx = rx;
    assert_eq!(rx.try_pop().unwrap(), Record::new(1));
    // A producer that came, sent and left after the end keeps the ring too.
    let mut late = ShmProducer::<Record>::open(&ring.name).unwrap();
    late.try_push(Record::new(2)).unwrap();
    drop(late);
    assert!(matches!(
        rx.remove_if_unused(),
        Err(OpenError::Changed { .. })
    ));
    // The first session's end comes before the late producer's item.
    assert!(matches!(rx.try_pop(), Err(ShmTryPopError::EndOfStream)));
    assert_eq!(rx.try_pop().unwrap(), Record::new(2));
    rx.remove_if_unused()
        .expect("removed once everything is read");
    assert!(!ring.path().exists());
    // Not temporary unless asked.
    let plain = Ring::new("nottemporary");
    let rx = ShmConsumer::<Record>::create(&plain.name, 64).unwrap();
    assert!(!rx.is_temporary());
}

/// A ring whose `flags` word holds a bit no build writes is refused at
/// open, naming the field.
#[test]
fn unknown_ring_flags_are_refused() {
    let ring = Ring::new("badflags");
    drop(ShmConsumer::<Record>::create(&ring.name, 64).unwrap());
    let mut bytes = std::fs::read(ring.path()).unwrap();
    bytes[92..96].copy_from_slice(&6u32.to_le_bytes());
    std::fs::write(ring.path(), bytes).unwrap();
    let e = ShmConsumer::<Record>::open(&ring.name).err().unwrap();
    assert!(e.to_string().contains("flags"), "{e}");
}

/// Removing a ring because of what an inspection showed removes nothing
/// if a producer attached or wrote since: the check runs under the role
/// locks, when no process can change the ring.
#[test]
fn remove_unused_as_seen_keeps_a_ring_a_producer_wrote_to_since() {
    let ring = Ring::new("rmseen");
    drop(ShmProducer::<Record>::create(&ring.name, 64).unwrap());
    let seen = laminar_ring::shm::inspect(&ring.name, &SegmentOptions::default()).unwrap();
    let mut tx = ShmProducer::<Record>::open(&ring.name).unwrap();
    tx.try_push(Record::new(0)).unwrap();
    drop(tx);
    match laminar_ring::shm::remove_unused_as_seen(&ring.name, &ring.dir, &seen) {
        Err(e @ OpenError::Changed { .. }) => {
            assert!(e.to_string().contains("wrote to the ring since"), "{e}");
        }
        other => panic!("expected Changed, got {other:?}"),
    }
    assert!(ring.path().exists());
    // A session that sent nothing still counts as a change.
    let seen = laminar_ring::shm::inspect(&ring.name, &SegmentOptions::default()).unwrap();
    drop(ShmProducer::<Record>::open(&ring.name).unwrap());
    assert!(matches!(
        laminar_ring::shm::remove_unused_as_seen(&ring.name, &ring.dir, &seen),
        Err(OpenError::Changed { .. })
    ));
    let seen = laminar_ring::shm::inspect(&ring.name, &SegmentOptions::default()).unwrap();
    laminar_ring::shm::remove_unused_as_seen(&ring.name, &ring.dir, &seen).unwrap();
    assert!(!ring.path().exists());
}

/// `remove_unused` never follows a symbolic link nor blocks on a FIFO: a
/// typed error for each, and both stay.
#[test]
fn remove_unused_refuses_links_and_fifos() {
    let dir = std::env::temp_dir().join(format!("lr-rmkinds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink("elsewhere", dir.join("link")).unwrap();
    let e = laminar_ring::shm::remove_unused("link", &dir).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert!(dir.join("link").symlink_metadata().is_ok());
    let fifo = dir.join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let e = laminar_ring::shm::remove_unused("fifo", &dir).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    assert!(fifo.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// How a producer session ends, as a test drives it.
#[derive(Debug, Clone, Copy)]
enum SessionEnd {
    Close,
    Fail,
    Kill,
}

const A_REASON: &str = "cannot parse input row 3";

/// Runs one producer session in a helper process: it pushes
/// `start..start+count` and ends as `end` says; returns once the helper
/// has exited (killed, for `Kill`, once everything is published).
fn run_session(ring: &Ring, start: u64, count: u64, end: SessionEnd) {
    let end_word = match end {
        SessionEnd::Close => "close",
        SessionEnd::Fail => "fail",
        SessionEnd::Kill => "hang",
    };
    let target = laminar_ring::shm::inspect(&ring.name, &Default::default())
        .unwrap()
        .write_seq
        + count;
    let mut child = spawn_helper(
        "session-producer",
        &ring.name,
        &[
            ("START", start.to_string()),
            ("COUNT", count.to_string()),
            ("END", end_word.into()),
            ("REASON", A_REASON.into()),
        ],
    );
    if let SessionEnd::Kill = end {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = laminar_ring::shm::inspect(&ring.name, &Default::default()).unwrap();
            if info.write_seq == target && info.producer.alive {
                break;
            }
            assert!(Instant::now() < deadline, "the helper never published all");
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    } else {
        assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), EXIT_OK);
    }
}

/// Pops `from..to`, every value checked.
fn pop_values(rx: &mut ShmConsumer<u64>, from: u64, to: u64) {
    for v in from..to {
        assert_eq!(
            rx.pop_timeout(Duration::from_secs(10)),
            Ok(v),
            "value {v} of {from}..{to}"
        );
    }
}

/// Asserts the next pop is `end` (and, for a failure, its reason).
fn expect_end(rx: &mut ShmConsumer<u64>, end: SessionEnd, reason: &str) {
    let got = rx.pop_timeout(Duration::from_secs(10));
    match end {
        SessionEnd::Close => assert_eq!(got, Err(ShmPopError::EndOfStream)),
        SessionEnd::Fail => {
            assert_eq!(got, Err(ShmPopError::ProducerFailed));
            assert_eq!(rx.producer_failure().as_deref(), Some(reason));
        }
        SessionEnd::Kill => assert_eq!(got, Err(ShmPopError::PeerGone)),
    }
}

/// Producer A pushes 40 values and ends (closes, fails, or is killed)
/// while the consumer has read nothing; producer B attaches, pushes 20 and
/// closes, all before the consumer reads. The consumer gets A's 40 values,
/// then A's own end, then B's 20, then B's end: the next producer's attach
/// does not erase how the session before it ended.
#[test]
fn a_session_end_is_reported_even_when_the_next_producer_attached_before_the_consumer_got_there() {
    for end in [SessionEnd::Close, SessionEnd::Fail, SessionEnd::Kill] {
        let ring = Ring::new(&format!("overlap-{end:?}"));
        let mut rx = ShmConsumer::<u64>::create(&ring.name, 64).unwrap();
        run_session(&ring, 0, 40, end);
        run_session(&ring, 1000, 20, SessionEnd::Close);
        pop_values(&mut rx, 0, 40);
        expect_end(&mut rx, end, A_REASON);
        pop_values(&mut rx, 1000, 1020);
        expect_end(&mut rx, SessionEnd::Close, "");
        // Nothing recorded is left unread.
        let info = laminar_ring::shm::inspect(&ring.name, &Default::default()).unwrap();
        assert_eq!(info.ends_pending, 0, "{end:?}");
    }
}

/// The same with the consumer reading while the sessions overlap it: A
/// ends while the consumer is still draining it, B starts and fills the
/// ring behind A's end. Each ending kind, and then a third session.
#[test]
fn a_consumer_draining_a_session_gets_its_end_before_the_items_of_the_next() {
    for end in [SessionEnd::Close, SessionEnd::Fail, SessionEnd::Kill] {
        let ring = Ring::new(&format!("drain-{end:?}"));
        let mut rx = ShmConsumer::<u64>::create(&ring.name, 64).unwrap();
        run_session(&ring, 0, 30, end);
        pop_values(&mut rx, 0, 10);
        run_session(&ring, 500, 30, end);
        pop_values(&mut rx, 10, 30);
        expect_end(&mut rx, end, A_REASON);
        pop_values(&mut rx, 500, 510);
        run_session(&ring, 900, 4, SessionEnd::Close);
        pop_values(&mut rx, 510, 530);
        expect_end(&mut rx, end, A_REASON);
        pop_values(&mut rx, 900, 904);
        expect_end(&mut rx, SessionEnd::Close, "");
    }
}

/// Where the end log's words are (docs/FORMAT.md).
const ENDS_HEAD_AT: u64 = 176;
/// The first cursor's `ends_seen` (the cursors follow the end log).
const ENDS_SEEN_AT: u64 = 2048 + 48;
const END_LOG_AT: u64 = 640;
const END_RECORD_LEN: u64 = 88;

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// Writes end record `i` as a producer appends it (fields, then
/// `ends_head = i + 1`).
fn write_end_record(path: &Path, i: u64, session: u64, at_seq: u64, kind: u32) {
    let at = END_LOG_AT + (i % 16) * END_RECORD_LEN;
    write_at(path, at, &session.to_ne_bytes());
    write_at(path, at + 8, &at_seq.to_ne_bytes());
    write_at(path, at + 16, &kind.to_ne_bytes());
    write_at(path, ENDS_HEAD_AT, &(i + 1).to_ne_bytes());
}

/// A producer killed after appending its CLOSED record and before storing
/// `producer_state = 2` (simulated: it abandons, leaving state 1 and no
/// lock, and its record is written as it would have appended it) ended
/// cleanly: the consumer gets its items, then end of stream, again on the
/// next look, never `PeerGone`; the next producer appends no DIED record
/// for it, and its session follows.
#[test]
fn a_producer_killed_between_its_end_record_and_its_state_reads_as_ended_not_dead() {
    let ring = Ring::new("record-then-kill");
    let mut rx = ShmConsumer::<u64>::create(&ring.name, 16).unwrap();
    let mut tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    for v in 0..5 {
        tx.push(v).unwrap();
    }
    tx.abandon();
    write_end_record(&ring.path(), 0, 1, 5, 1);
    pop_values(&mut rx, 0, 5);
    expect_end(&mut rx, SessionEnd::Close, "");
    assert_eq!(rx.try_pop(), Err(ShmTryPopError::EndOfStream));
    let mut tx = ShmProducer::<u64>::open(&ring.name).unwrap();
    let info = laminar_ring::shm::inspect(&ring.name, &Default::default()).unwrap();
    assert_eq!(
        info.ends_pending, 0,
        "no DIED record for a session that closed"
    );
    tx.push(7).unwrap();
    tx.close();
    pop_values(&mut rx, 7, 8);
    expect_end(&mut rx, SessionEnd::Close, "");
}

/// With 15 ends unread (`END_LOG_LEN - 1`), a producer's attach waits for
/// the consumer and, at its attach timeout, fails with `EndLogFull`,
/// storing nothing; another producer process waits until the consumer
/// has read an end, then attaches, and its items and end follow the 15
/// sessions', each value checked.
#[test]
fn a_producer_attach_waits_while_the_end_log_is_full_and_proceeds_once_ends_are_read() {
    let ring = Ring::new("log-full");
    let mut rx = ShmConsumer::<u64>::create(&ring.name, 64).unwrap();
    for s in 0..15 {
        let mut tx = ShmProducer::<u64>::open(&ring.name).unwrap();
        tx.push(s * 10).unwrap();
        tx.push(s * 10 + 1).unwrap();
        tx.close();
    }
    let impatient = SegmentOptions {
        attach_timeout: Duration::from_millis(100),
        ..SegmentOptions::default()
    };
    match ShmProducer::<u64>::open_with(&ring.name, &impatient) {
        Err(OpenError::EndLogFull { pending, max, .. }) => {
            assert_eq!((pending, max), (15, 14));
        }
        other => panic!("expected EndLogFull, got {other:?}"),
    }
    let info = laminar_ring::shm::inspect(&ring.name, &Default::default()).unwrap();
    assert_eq!(
        info.producer_sessions, 15,
        "the refused attach stored nothing"
    );
    assert!(!info.producer.alive);
    let mut late = spawn_helper(
        "session-producer",
        &ring.name,
        &[
            ("START", "777".into()),
            ("COUNT", "3".into()),
            ("END", "close".into()),
        ],
    );
    // It waits: it holds the role, and no session starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rx.producer_alive() {
        assert!(Instant::now() < deadline, "the helper never took the role");
        std::thread::sleep(Duration::from_millis(2));
    }
    let info = laminar_ring::shm::inspect(&ring.name, &Default::default()).unwrap();
    assert_eq!(
        info.producer_sessions, 15,
        "it waits before its session starts"
    );
    for s in 0..15 {
        pop_values(&mut rx, s * 10, s * 10 + 2);
        expect_end(&mut rx, SessionEnd::Close, "");
    }
    // Reading them made room: its session starts. (Until then, a pop
    // repeats the 15th session's end, the latest.)
    while laminar_ring::shm::inspect(&ring.name, &Default::default())
        .unwrap()
        .producer_sessions
        < 16
    {
        assert!(
            Instant::now() < deadline,
            "the waiting producer never attached"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    pop_values(&mut rx, 777, 780);
    expect_end(&mut rx, SessionEnd::Close, "");
    assert_eq!(wait_exit(&mut late, Duration::from_secs(60)), EXIT_OK);
}

/// End log words that no producer keeping the protocol writes are a
/// typed error for the consumer (and a producer attaching), never a panic
/// or a read outside the log.
#[test]
fn a_damaged_end_log_is_a_typed_error() {
    // (what to damage, field the error names)
    type Damage = fn(&Path);
    let cases: [(&str, Damage, &str); 5] = [
        (
            "junk kind",
            |p| write_at(p, END_LOG_AT + 16, &9_u32.to_ne_bytes()),
            "kind",
        ),
        (
            "at_seq beyond write_seq",
            |p| write_at(p, END_LOG_AT + 8, &1000_u64.to_ne_bytes()),
            "at_seq",
        ),
        (
            "session 0",
            |p| write_at(p, END_LOG_AT, &0_u64.to_ne_bytes()),
            "session",
        ),
        (
            "ends_head behind ends_seen",
            |p| write_at(p, ENDS_SEEN_AT, &5_u64.to_ne_bytes()),
            "ends_head",
        ),
        (
            "ends_head far ahead",
            |p| write_at(p, ENDS_HEAD_AT, &1000_u64.to_ne_bytes()),
            "ends_head",
        ),
    ];
    for (what, damage, field) in cases {
        let ring = Ring::new("bad-log");
        // Subscribed before the stream, so that its cursor's ends_seen is
        // there to damage (a new subscription counts its own).
        drop(ShmConsumer::<u64>::create(&ring.name, 16).unwrap());
        let mut tx = ShmProducer::<u64>::open(&ring.name).unwrap();
        for v in 0..3 {
            tx.push(v).unwrap();
        }
        tx.close();
        damage(&ring.path());
        let mut rx = ShmConsumer::<u64>::open(&ring.name).unwrap();
        let mut got = Vec::new();
        let err = loop {
            match rx.pop_timeout(Duration::from_secs(10)) {
                Ok(v) => got.push(v),
                Err(e) => break e,
            }
        };
        assert!(
            got.iter().copied().eq(0..got.len() as u64),
            "{what}: {got:?}"
        );
        match err {
            ShmPopError::BadHeader(HeaderError::BadEndRecord { field: f, .. }) => {
                assert_eq!(f, field, "{what}")
            }
            other => panic!("{what}: expected a damaged end log, got {other:?}"),
        }
        assert!(err.to_string().contains(field), "{what}: {err}");
        drop(rx);
        if what == "ends_head behind ends_seen" {
            match ShmProducer::<u64>::open(&ring.name) {
                Err(OpenError::BadHeader { .. }) => {}
                other => panic!("{what}: a producer attached: {other:?}"),
            }
        }
    }
}
