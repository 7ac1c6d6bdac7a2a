//! Crash states of an Arrow ring. Every state that a process killed between
//! two of its stores can leave (docs/FORMAT.md, "Intermediate states") is
//! written into a segment file, and a new consumer and a new producer attach
//! to it: each resumes, no batch is lost or garbled, nothing waits forever.
#![cfg(feature = "arrow")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use laminar_ring::arrow::{ArrowRingOptions, BatchConsumer, BatchProducer};
use laminar_ring::shm::SegmentOptions;

/// Header offsets (docs/FORMAT.md).
const WRITE_SEQ: usize = 128;
const ARENA_HEAD: usize = 152;
const READ_SEQ: usize = 256;
const ARENA_RELEASED: usize = 272;

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
                ..SegmentOptions::default()
            },
            max_leases: 8,
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
/// consumer drains the ring: the consumer must receive `expected` and then
/// `more`, and the producer must never wait forever or overwrite a message
/// that was not released.
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
    // The producer first: a consumer that found the old stream closed
    // would end with it.
    let mut tx = BatchProducer::open(&name, &o).unwrap();
    let consumer = {
        let (name, o) = (name.clone(), o.clone());
        std::thread::spawn(move || {
            let mut rx = BatchConsumer::open(&name, &o).unwrap();
            drain(&mut rx, &name)
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
    let got = consumer.join().unwrap();
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
    assert_eq!(rx.recv().unwrap().unwrap(), sent[1]);
    // Batch 1 is read, not yet released: the state before its release.
    let before = std::fs::read(dir.path("r")).unwrap();
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
