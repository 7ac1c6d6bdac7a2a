//! Crash states of an Arrow ring. Every state that a process killed between
//! two of its stores can leave (docs/FORMAT.md, "Intermediate states") is
//! written into a segment file, and a new consumer and a new producer attach
//! to it: each resumes, no batch is lost or garbled, nothing waits forever.
#![cfg(feature = "arrow")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{
    ArrayRef, DictionaryArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use laminar_ring::arrow::{ArrowRingOptions, BatchConsumer, BatchProducer};
use laminar_ring::shm::SegmentOptions;

/// Header offsets (docs/FORMAT.md): the producer's line, and the cursor of
/// the one consumer these tests run (the first, at 2048).
const WRITE_SEQ: usize = 128;
const ARENA_HEAD: usize = 152;
const READ_SEQ: usize = 2048;
const ARENA_RELEASED: usize = 2048 + 16;
const SAVED_STATE: usize = 2048 + 24;

/// How long any one receive or send may wait before the test calls it a hang.
const PATIENCE: Duration = Duration::from_secs(20);

/// A private directory of rings, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(test: &str) -> Self {
        let p = std::env::temp_dir().join(format!("lr-resume-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    fn opts(&self) -> ArrowRingOptions {
        ArrowRingOptions {
            slots: 64,
            arena_bytes: 64 << 10,
            segment: SegmentOptions {
                dir: self.0.clone(),
                // One consumer: its save area is the whole last eighth of
                // this small arena (a share of it with more).
                max_consumers: 1,
                ..SegmentOptions::default()
            },
            max_leases: 16,
        }
    }

    fn path(&self, ring: &str) -> PathBuf {
        self.0.join(ring)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Batch `i`: 100 rows numbered from `100 * i`, and their names (~2.5 KiB).
fn batch(i: usize) -> RecordBatch {
    let n = Int64Array::from_iter_values((0..100).map(|j| (i * 100 + j) as i64));
    let s = StringArray::from_iter_values((0..100).map(|j| format!("row {}", i * 100 + j)));
    RecordBatch::try_from_iter([
        ("n", Arc::new(n) as ArrayRef),
        ("s", Arc::new(s) as ArrayRef),
    ])
    .unwrap()
}

fn word(bytes: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn set_word(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Every batch a consumer receives until the end of the stream.
fn drain(rx: &mut BatchConsumer, what: &str) -> Vec<RecordBatch> {
    let mut got = Vec::new();
    loop {
        match rx.recv_timeout(PATIENCE) {
            Ok(Some(b)) => got.push(b),
            Ok(None) => return got,
            Err(e) => panic!("{what}: after {} batches: {e}", got.len()),
        }
    }
}

/// Attaches a consumer to the ring file `name` (a state written by the
/// test): it must receive `expected`, then the end of the stream. Then, on
/// a second copy of the state, a producer attaches and sends `more` while a
/// consumer drains the ring: the consumer must receive `expected`, the end
/// of that stream (recorded in the end log, which the new producer's
/// attach does not erase), then `more` and its end; the producer must
/// never wait forever or overwrite a message that was not released.
fn resume_both(
    dir: &Dir,
    state: &[u8],
    name: &str,
    expected: &[RecordBatch],
    more: &[RecordBatch],
) {
    let o = dir.opts();
    std::fs::write(dir.path(name), state).unwrap();
    let mut rx = BatchConsumer::open(name, &o).unwrap();
    let got = drain(&mut rx, name);
    assert_eq!(got, expected, "{name}: a new consumer resumes");
    drop(rx);

    let name = format!("{name}-p");
    std::fs::write(dir.path(&name), state).unwrap();
    // The producer first, so that the consumer reads the old stream's end
    // with the new session already behind it.
    let mut tx = BatchProducer::open(&name, &o).unwrap();
    let consumer = {
        let (name, o) = (name.clone(), o.clone());
        std::thread::spawn(move || {
            let mut rx = BatchConsumer::open(&name, &o).unwrap();
            let mut got = drain(&mut rx, &name);
            let old_stream = got.len();
            got.extend(drain(&mut rx, &name));
            (old_stream, got)
        })
    };
    for (i, b) in more.iter().enumerate() {
        match tx.send_timeout(b, PATIENCE) {
            Ok(()) => {}
            Err(e) => panic!("{name}: batch {i} of the new producer: {e}"),
        }
    }
    assert!(
        tx.flush(PATIENCE).unwrap(),
        "{name}: the producer waits forever"
    );
    tx.close().unwrap();
    let (old_stream, got) = consumer.join().unwrap();
    assert_eq!(
        old_stream,
        expected.len(),
        "{name}: the old stream's end comes after its batches"
    );
    let want: Vec<_> = expected.iter().chain(more).cloned().collect();
    assert_eq!(
        got.len(),
        want.len(),
        "{name}: batches after a new producer"
    );
    assert_eq!(
        got, want,
        "{name}: a new producer overwrote unreleased bytes"
    );
}

/// The consumer releases with two stores, `read_seq` and then
/// `arena_released`; a kill can fall between them, and whatever
/// `arena_released` says, a new consumer resumes at `read_seq` (the batch it
/// was killed after is delivered again: at-least-once) and a new producer
/// neither wedges nor overwrites. The producer's own two stores
/// (`arena_head`, then the publish) are covered too.
#[test]
fn a_consumer_killed_between_release_stores_resumes() {
    let dir = Dir::new("release");
    let o = dir.opts();
    let sent: Vec<_> = (0..6).map(batch).collect();
    let more: Vec<_> = (6..40).map(batch).collect();
    let mut tx = BatchProducer::create("r", &o).unwrap();
    for b in &sent {
        tx.send(b).unwrap();
    }
    tx.close().unwrap();
    let mut rx = BatchConsumer::open("r", &o).unwrap();
    assert_eq!(rx.recv().unwrap().unwrap(), sent[0]);
    let held = rx.recv_zero_copy().unwrap().unwrap();
    assert_eq!(&*held, &sent[1]);
    // Batch 1 is read, not yet released: the state before its release.
    let before = std::fs::read(dir.path("r")).unwrap();
    drop(held);
    drop(rx); // releases it
    let after = std::fs::read(dir.path("r")).unwrap();
    // Slot 0 is the schema, slot 1 + i batch i.
    assert_eq!(word(&before, READ_SEQ), 2);
    assert_eq!(word(&after, READ_SEQ), 3);
    assert!(word(&after, ARENA_RELEASED) > word(&before, ARENA_RELEASED));

    for (read_seq, released) in [
        (&before, &before),
        (&before, &after),
        (&after, &before),
        (&after, &after),
    ] {
        let mut state = before.clone();
        set_word(&mut state, READ_SEQ, word(read_seq, READ_SEQ));
        set_word(&mut state, ARENA_RELEASED, word(released, ARENA_RELEASED));
        let r = word(&state, READ_SEQ) as usize;
        let name = format!("c-{r}-{}", word(&state, ARENA_RELEASED));
        resume_both(&dir, &state, &name, &sent[r - 1..], &more);
    }

    // A producer killed after storing arena_head, before publishing the
    // message it had written there.
    let mut state = before.clone();
    let head = word(&state, ARENA_HEAD);
    set_word(&mut state, ARENA_HEAD, head + 4096);
    assert_eq!(word(&state, WRITE_SEQ), 7);
    resume_both(&dir, &state, "p-head", &sent[1..], &more);
}

/// Batch `i` of a stream with a dictionary column whose dictionary changes
/// every third batch (so a producer sends a dictionary message before
/// batches 0, 3, 6, ...), and a column of row numbers.
fn dict_batch(i: usize) -> RecordBatch {
    let words: &[&str] = match (i / 3) % 3 {
        0 => &["a", "b"],
        1 => &["x", "y", "z"],
        _ => &["long word", "b"],
    };
    let keys = Int32Array::from_iter_values((0..20).map(|j| ((i + j) % words.len()) as i32));
    let d = DictionaryArray::try_new(keys, Arc::new(StringArray::from(words.to_vec()))).unwrap();
    let n = Int64Array::from_iter_values((0..20).map(|j| (i * 100 + j) as i64));
    RecordBatch::try_from_iter([
        ("d", Arc::new(d) as ArrayRef),
        ("n", Arc::new(n) as ArrayRef),
    ])
    .unwrap()
}

/// Batch `i` of a stream whose dictionary grows by one word per batch, so
/// that a producer sending deltas sends one per batch after the first.
fn growing_batch(i: usize) -> RecordBatch {
    let values = StringArray::from_iter_values((0..=i).map(|k| format!("word {k}")));
    let keys = Int32Array::from_iter_values((0..20).map(|j| ((j * 7 + i) % (i + 1)) as i32));
    let d = DictionaryArray::try_new(keys, Arc::new(values)).unwrap();
    let n = Int64Array::from_iter_values((0..20).map(|j| (i * 100 + j) as i64));
    RecordBatch::try_from_iter([
        ("d", Arc::new(d) as ArrayRef),
        ("n", Arc::new(n) as ArrayRef),
    ])
    .unwrap()
}

/// Where the first cursor's save area lies in a ring file: its start and
/// the size of one half (docs/FORMAT.md: the arena's last eighth, rounded
/// down to 64 bytes, shared equally by the cursors, each share rounded down
/// to 64 bytes; two halves of half a share each, rounded down to 64 bytes).
fn save_area(bytes: &[u8]) -> (usize, usize) {
    let arena_at = word(bytes, 56) as usize;
    let arena_len = word(bytes, 64) as usize;
    let header_len = u32::from_ne_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let cursors = (header_len - 2048) / 128;
    let save_len = (arena_len / 8) & !63;
    let share = (save_len / cursors) & !63;
    (arena_at + arena_len - save_len, (share / 2) & !63)
}

/// The half `saved_state` names and its header: (half, from_seq, len).
fn saved(bytes: &[u8]) -> (usize, u64, u64) {
    let half = word(bytes, SAVED_STATE) as usize;
    assert!(matches!(half, 1 | 2), "saved_state {half}");
    let (start, half_len) = save_area(bytes);
    let at = start + (half - 1) * half_len;
    (half - 1, word(bytes, at), word(bytes, at + 8))
}

/// A consumer dropped while it leases batches on both sides of a dictionary
/// change: the next one redelivers the unreleased batches with the
/// dictionary they were sent with, not the newer one the first consumer had
/// already read.
#[test]
fn a_consumer_dropped_with_leases_across_a_dictionary_change_redelivers_them_intact() {
    let dir = Dir::new("dict-leases");
    let o = dir.opts();
    let sent: Vec<_> = (0..12).map(dict_batch).collect();
    let mut tx = BatchProducer::create("r", &o).unwrap();
    for b in &sent {
        tx.send(b).unwrap();
    }
    tx.close().unwrap();
    let mut rx = BatchConsumer::open("r", &o).unwrap();
    let leases: Vec<_> = (0..5)
        .map(|_| rx.recv_zero_copy().unwrap().unwrap())
        .collect();
    for (l, b) in leases.iter().zip(&sent) {
        assert_eq!(&**l, b);
    }
    let mut leases = leases.into_iter();
    drop(leases.next()); // batch 0
    drop(leases.next()); // batch 1: both released when the consumer goes
    drop(rx);
    drop(leases); // batches 2 (old dictionary), 3 and 4 (new): never released
    let mut rx = BatchConsumer::open("r", &o).unwrap();
    assert_eq!(drain(&mut rx, "resumed"), &sent[2..]);
}

/// The same across a new producer session with another schema: batches of
/// the first session that were leased when the consumer went are decoded
/// with the first session's schema (an Int64 column, not the Float64 of the
/// second session that the first consumer had read ahead to).
#[test]
fn a_consumer_dropped_with_leases_across_a_new_session_redelivers_them_with_their_schema() {
    let dir = Dir::new("schema-leases");
    let o = dir.opts();
    let ints: Vec<_> = (0..4)
        .map(|i| {
            let x = Int64Array::from_iter_values((0..50).map(|j| i * 1000 + j));
            RecordBatch::try_from_iter([("x", Arc::new(x) as ArrayRef)]).unwrap()
        })
        .collect();
    let floats: Vec<_> = (0..4)
        .map(|i| {
            let x = Float64Array::from_iter_values((0..50).map(|j| (i * 1000 + j) as f64 + 0.5));
            RecordBatch::try_from_iter([("x", Arc::new(x) as ArrayRef)]).unwrap()
        })
        .collect();
    let mut tx = BatchProducer::create("r", &o).unwrap();
    for b in &ints {
        tx.send(b).unwrap();
    }
    tx.close().unwrap();
    let mut tx = BatchProducer::open("r", &o).unwrap();
    for b in &floats {
        tx.send(b).unwrap();
    }
    tx.close().unwrap();
    let mut rx = BatchConsumer::open("r", &o).unwrap();
    let first = rx.recv_zero_copy().unwrap().unwrap();
    let second = rx.recv_zero_copy().unwrap().unwrap();
    let mut rest = Vec::new();
    for _ in 0..2 {
        rest.push(rx.recv_zero_copy().unwrap().unwrap());
    }
    assert!(
        rx.recv_zero_copy().unwrap().is_none(),
        "the first session's end, with its batches still leased"
    );
    for _ in 0..2 {
        rest.push(rx.recv_zero_copy().unwrap().unwrap());
    }
    assert_eq!(&*rest[3], &floats[1], "read ahead into the second session");
    drop(first); // released when the consumer goes
    drop(rx);
    drop((second, rest));
    // It resumes at the first batch not released, before the first
    // session's end: it gets that end again (at least once, like the
    // batches), then the second session.
    let mut rx = BatchConsumer::open("r", &o).unwrap();
    assert_eq!(drain(&mut rx, "resumed"), &ints[1..]);
    assert_eq!(drain(&mut rx, "resumed, second session"), floats);
}

/// Dictionary deltas: each batch adds one word. Consumers are dropped with
/// leases held across deltas, again and again; every batch is redelivered
/// as sent (a delta applied twice would shift every later word), and the
/// saved state holds one merged dictionary, not the history of its deltas.
#[test]
fn dictionary_deltas_are_applied_once_on_resume_and_saved_merged() {
    let dir = Dir::new("deltas");
    let o = dir.opts();
    let sent: Vec<_> = (0..60).map(growing_batch).collect();
    let mut tx = BatchProducer::create("r", &o).unwrap();
    tx.set_dictionary_deltas(true);
    let consumer = {
        let o = o.clone();
        let sent = sent.clone();
        std::thread::spawn(move || {
            let mut next = 0;
            while next < sent.len() {
                let mut rx = BatchConsumer::open("r", &o).unwrap();
                let mut held = Vec::new();
                for _ in 0..(next % 5 + 3).min(sent.len() - next) {
                    let l = rx.recv_zero_copy_timeout(PATIENCE).unwrap().unwrap();
                    assert_eq!(&*l, &sent[next + held.len()], "batch {}", next + held.len());
                    held.push(l);
                }
                // The first two are released as the consumer goes; the rest
                // are dropped after it, so never released: read again.
                next += held.len().min(2);
                let rest = held.split_off(held.len().min(2));
                drop(held);
                drop(rx);
                drop(rest);
            }
        })
    };
    for b in &sent {
        tx.send_timeout(b, PATIENCE).unwrap();
    }
    assert!(tx.flush(PATIENCE).unwrap());
    tx.close().unwrap();
    consumer.join().unwrap();
    let bytes = std::fs::read(dir.path("r")).unwrap();
    assert_eq!(
        word(&bytes, READ_SEQ),
        word(&bytes, WRITE_SEQ),
        "all released"
    );
    let (_, from, len) = saved(&bytes);
    assert!(from > 100, "saved state from slot {from}");
    // The schema and one dictionary of 60 short words: well under 2 KiB.
    // Replacement plus 59 deltas would take more than 59 messages.
    assert!(len < 2048, "saved state of {len} bytes");
}

/// A release that passes a dictionary change makes four stores: the new
/// state into the free half of the save area, `saved_state`, `read_seq`,
/// `arena_released`. A kill after any prefix of them (a half written only in
/// part included) leaves a state a new consumer and a new producer resume
/// from: the consumer decodes the unreleased batches with the dictionary
/// they were sent with.
#[test]
fn a_consumer_killed_between_saving_its_state_and_releasing_resumes() {
    let dir = Dir::new("save");
    let o = dir.opts();
    let sent: Vec<_> = (0..12).map(dict_batch).collect();
    let more: Vec<_> = (12..40).map(dict_batch).collect();
    let mut tx = BatchProducer::create("r", &o).unwrap();
    for b in &sent {
        tx.send(b).unwrap();
    }
    tx.close().unwrap();
    // Slots: 0 schema, 1 dictionary A, 2..4 batches 0..2, 5 dictionary B,
    // 6.. batches 3.. .
    let mut rx = BatchConsumer::open("r", &o).unwrap();
    let leases: Vec<_> = (0..4)
        .map(|_| rx.recv_zero_copy().unwrap().unwrap())
        .collect();
    let before = std::fs::read(dir.path("r")).unwrap();
    drop(leases);
    drop(rx); // releases slots 2..6 and the change of dictionary
    let after = std::fs::read(dir.path("r")).unwrap();
    assert_eq!((word(&before, READ_SEQ), word(&after, READ_SEQ)), (2, 7));
    let (old_half, old_from, _) = saved(&before);
    let (new_half, new_from, _) = saved(&after);
    assert_eq!((old_from, new_from), (2, 7));
    assert_ne!(old_half, new_half, "a new state goes to the other half");
    let (start, half_len) = save_area(&after);
    let half = start + new_half * half_len..start + (new_half + 1) * half_len;

    let mut states = Vec::new();
    states.push(("nothing stored", before.clone()));
    let mut s = before.clone();
    s[half.clone()]
        .iter_mut()
        .step_by(3)
        .for_each(|b| *b = 0xa5);
    states.push(("half written in part", s));
    let mut s = before.clone();
    s[half.clone()].copy_from_slice(&after[half.clone()]);
    states.push(("half written", s.clone()));
    set_word(&mut s, SAVED_STATE, word(&after, SAVED_STATE));
    states.push(("saved_state stored", s.clone()));
    set_word(&mut s, READ_SEQ, 7);
    states.push(("read_seq stored", s.clone()));
    set_word(&mut s, ARENA_RELEASED, word(&after, ARENA_RELEASED));
    // Besides the consumer's role state and the wait cells (neither used to
    // resume), the four stores are all that changed.
    let same = |a: &[u8], b: &[u8]| {
        // (consumer_state is the first cursor's bytes 8..12)
        a[..384] == b[..384] && a[640..2056] == b[640..2056] && a[2060..] == b[2060..]
    };
    assert!(same(&s, &after), "the four stores are all that changed");
    states.push(("arena_released stored", s));
    for (i, (what, state)) in states.iter().enumerate() {
        let first = if word(state, READ_SEQ) == 2 { 0 } else { 4 };
        resume_both(&dir, state, &format!("s{i}"), &sent[first..], &more);
        eprintln!("{what}: resumed at batch {first}");
    }
}

/// Arena positions only grow, by the bytes written, and no ring gets near
/// 2^63 (29 years at 10 GB/s). An `arena_head` that another process set
/// beyond that is refused by a producer attaching: placing a message after
/// it would wrap its position past `u64::MAX` (a panic in a debug build; in
/// a release build a message written without consulting the release point,
/// over bytes the consumer has not released, under a descriptor no consumer
/// accepts). The consumer still receives what was sent, and a producer
/// attaches again once the word is sane.
#[test]
fn an_arena_head_a_peer_set_near_the_end_of_u64_is_refused_by_a_new_producer() {
    let dir = Dir::new("huge-head");
    let o = dir.opts();
    let sent: Vec<_> = (0..6).map(batch).collect();
    let mut tx = BatchProducer::create("r", &o).unwrap();
    for b in &sent {
        tx.send(b).unwrap();
    }
    drop(tx);
    let good = std::fs::read(dir.path("r")).unwrap();
    let mut state = good.clone();
    set_word(&mut state, ARENA_HEAD, u64::MAX - 63);
    std::fs::write(dir.path("h"), &state).unwrap();
    let e = BatchProducer::open("h", &o).expect_err("refused");
    assert!(e.to_string().contains("arena_head"), "{e}");
    let mut rx = BatchConsumer::open("h", &o).unwrap();
    assert_eq!(drain(&mut rx, "h"), sent);
    drop(rx);
    resume_both(
        &dir,
        &good,
        "h3",
        &sent,
        &(6..20).map(batch).collect::<Vec<_>>(),
    );
}
