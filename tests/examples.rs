//! The examples as a user runs them: they parse their arguments (a flag is
//! never taken for a ring name) and honour `--dir` and `LAMINAR_RING_DIR`.
#![cfg(feature = "arrow")]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use arrow_array::{Array, Int64Array};
use laminar_ring::arrow::{ArrowRingOptions, BatchConsumer};
use laminar_ring::shm::SegmentOptions;

/// An example's binary, which `cargo test` builds beside the tests.
fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().expect("test binary path");
    let profile = deps
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let path = profile.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built: `cargo test` builds the examples; with `--test examples` alone, \
         run `cargo build --release --examples` first",
        path.display()
    );
    path
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lr-examples-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn help_prints_usage_and_creates_no_ring() {
    let dir = temp_dir("help");
    for name in [
        "arrow_pipe",
        "arrow_source",
        "sidecar",
        "shm_pipe",
        "spsc_threads",
        "mpsc_threads",
    ] {
        let out = Command::new(example(name))
            .arg("--help")
            .env("LAMINAR_RING_DIR", &dir)
            .output()
            .unwrap_or_else(|e| panic!("run example {name}: {e}"));
        assert!(out.status.success(), "{name} --help: {:?}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.trim().is_empty(), "{name} --help printed nothing");
    }
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "a ring was created"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unknown_option_or_extra_argument_is_refused_with_the_usage() {
    let dir = temp_dir("refuse");
    for (name, args) in [
        ("arrow_pipe", &["--bogus"][..]),
        ("arrow_pipe", &["a", "b"][..]),
        ("arrow_source", &["q", "many"][..]),
        ("arrow_source", &["q", "1", "2", "3"][..]),
        ("sidecar", &["--follow"][..]),
        ("shm_pipe", &["produce"][..]),
        ("spsc_threads", &["x"][..]),
    ] {
        let out = Command::new(example(name))
            .args(args)
            .env("LAMINAR_RING_DIR", &dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name} {args:?}");
        assert!(
            !String::from_utf8_lossy(&out.stderr).is_empty(),
            "{name} {args:?}: no message"
        );
    }
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "a ring was created"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `arrow_pipe --dir DIR RING` puts its ring in DIR: a consumer there gets
/// every row, in order.
#[test]
fn arrow_pipe_honours_dir() {
    let dir = temp_dir("dir");
    let opts = ArrowRingOptions {
        segment: SegmentOptions {
            dir: dir.clone(),
            ..Default::default()
        },
        ..ArrowRingOptions::default()
    };
    let mut rx = BatchConsumer::create("prices", &opts).unwrap();
    let mut child = Command::new(example("arrow_pipe"))
        .arg("--dir")
        .arg(&dir)
        .arg("prices")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut next = 0_i64;
    while let Some(b) = rx.recv_timeout(Duration::from_secs(60)).unwrap() {
        let seq = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..seq.len() {
            assert_eq!(seq.value(i), next);
            next += 1;
        }
    }
    assert_eq!(next, 1_000_000);
    assert!(child.wait().unwrap().success());
    drop(rx);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `arrow_source DIR RING BATCHES ROWS` sends that many batches of that many
/// rows, then ends the stream.
#[test]
fn arrow_source_sends_its_batches_then_ends() {
    let dir = temp_dir("source");
    let opts = ArrowRingOptions {
        segment: SegmentOptions {
            dir: dir.clone(),
            ..SegmentOptions::default()
        },
        ..ArrowRingOptions::default()
    };
    let mut rx = laminar_ring::arrow::BatchConsumer::create("src", &opts).unwrap();
    let mut child = Command::new(example("arrow_source"))
        .args(["--dir", dir.to_str().unwrap(), "src", "7", "1000"])
        .spawn()
        .unwrap();
    let mut got = 0;
    while let Some(b) = rx.recv_timeout(Duration::from_secs(30)).unwrap() {
        assert_eq!(b.num_rows(), 1000);
        let id = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(id.value(999), 999);
        got += 1;
    }
    assert_eq!(got, 7);
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}
