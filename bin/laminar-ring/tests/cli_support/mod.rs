//! Helpers for the tests that drive the real `laminar-ring` binary on
//! files: a scratch directory, a child run under a deadline with its peak
//! memory, and source files of many Arrow types.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{
    FixedSizeListBuilder, Float32Builder, Int32Builder, Int64Builder, ListBuilder, MapBuilder,
    StringBuilder,
};
use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, DictionaryArray,
    Float64Array, Int8Array, Int32Array, Int64Array, LargeStringArray, RecordBatch, StringArray,
    StructArray, TimestampMicrosecondArray, UInt16Array, UnionArray,
};
use arrow_buffer::ScalarBuffer;
use arrow_schema::{DataType, Field, Schema, UnionFields};

/// A directory of rings and files for one test, removed at the end.
pub struct Dir(PathBuf);

impl Dir {
    pub fn new(test: &str) -> Self {
        let p = std::env::temp_dir().join(format!("lr-clif-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// The command, with its rings in this directory.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_laminar-ring"));
        c.args(args).env("LAMINAR_RING_DIR", &self.0);
        c
    }

    /// Runs the command with stdin from `/dev/null`, under a deadline.
    pub fn run(&self, args: &[&str]) -> Run {
        run_limited(self.cmd(args), None, Duration::from_secs(60))
    }

    /// `info --json` of a ring.
    pub fn info(&self, ring: &str) -> serde_json::Value {
        let r = self.run(&["info", ring, "--json"]);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        serde_json::from_slice(&r.stdout).unwrap()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a child ended.
#[derive(Debug)]
pub struct Run {
    /// Exit code, `None` if a signal ended it.
    pub code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// Killed at the deadline.
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr: String,
    /// Peak resident memory of the child (`ru_maxrss`), in KiB.
    pub max_rss_kib: u64,
}

impl Run {
    /// Exited with `code`, saying one line containing `needle` on stderr,
    /// without a panic.
    pub fn assert_fails(&self, code: i32, needle: &str) {
        let err = &self.stderr;
        assert_eq!(self.code, Some(code), "stderr: {err}");
        assert!(err.contains(needle), "{needle:?} not in: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }

    pub fn assert_ok(&self) {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        );
    }
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// Runs `cmd` (stdin from `stdin`, or `/dev/null`), killing it at
/// `timeout`; collects its output and its peak memory from `wait4`.
pub fn run_limited(mut cmd: Command, stdin: Option<&Path>, timeout: Duration) -> Run {
    let input = match stdin {
        Some(p) => Stdio::from(File::open(p).unwrap()),
        None => Stdio::null(),
    };
    #[allow(clippy::zombie_processes)] // reaped by wait4 below
    let mut child = cmd
        .stdin(input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let (status, usage) = loop {
        let mut status = 0;
        #[allow(unsafe_code)] // two libc calls on plain data
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        #[allow(unsafe_code)]
        // SAFETY: `pid` is our unreaped child; both pointers are to live locals.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break (status, usage);
        }
        assert_eq!(r, 0, "wait4: {}", std::io::Error::last_os_error());
        if !timed_out && Instant::now() > deadline {
            #[allow(unsafe_code)]
            // SAFETY: kill(2) on our own unreaped child, plain integers.
            unsafe {
                libc::kill(pid, libc::SIGKILL)
            };
            timed_out = true;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stdout = out.join().unwrap();
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else {
        (None, Some(libc::WTERMSIG(status)))
    };
    Run {
        code,
        signal,
        timed_out,
        stdout,
        stderr,
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
    }
}

/// A deterministic generator (splitmix64), so that every run of a test
/// builds the same cases.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A batch of `rows` rows starting at `base`, with nulls, of many types:
/// integers, floats, booleans, strings, binary, dates, timestamps with a
/// zone, decimals, a dictionary, lists, a fixed-size list, a struct and a
/// map; with `unions`, also a dense and a sparse union.
pub fn rich_batch(base: i32, rows: usize, unions: bool) -> RecordBatch {
    let n = rows as i32;
    let ids = base..base + n;
    let opt = |g: i32, k: i32| (g % k != 0).then_some(g);
    let mut cols: Vec<(&str, ArrayRef, bool)> = vec![
        (
            "i8",
            Arc::new(Int8Array::from_iter_values(ids.clone().map(|g| g as i8))),
            false,
        ),
        (
            "i32",
            Arc::new(Int32Array::from_iter(ids.clone().map(|g| opt(g, 5)))),
            true,
        ),
        (
            "i64",
            Arc::new(Int64Array::from_iter_values(
                ids.clone().map(|g| i64::from(g) << 33),
            )),
            false,
        ),
        (
            "u16",
            Arc::new(UInt16Array::from_iter_values(ids.clone().map(|g| g as u16))),
            false,
        ),
        (
            "f64",
            Arc::new(Float64Array::from_iter(
                ids.clone().map(|g| opt(g, 3).map(|g| f64::from(g) / 4.0)),
            )),
            true,
        ),
        (
            "flag",
            Arc::new(BooleanArray::from_iter(
                ids.clone().map(|g| opt(g, 7).map(|g| g % 2 == 0)),
            )),
            true,
        ),
        (
            "name",
            Arc::new(StringArray::from_iter(
                ids.clone().map(|g| opt(g, 4).map(|g| format!("name-{g}"))),
            )),
            true,
        ),
        (
            "long",
            Arc::new(LargeStringArray::from_iter_values(
                ids.clone().map(|g| "x".repeat((g % 9) as usize)),
            )),
            false,
        ),
        (
            "bin",
            Arc::new(BinaryArray::from_iter_values(
                ids.clone().map(|g| g.to_le_bytes()),
            )),
            false,
        ),
        (
            "day",
            Arc::new(Date32Array::from_iter_values(
                ids.clone().map(|g| 19_000 + g),
            )),
            false,
        ),
        (
            "at",
            Arc::new(
                TimestampMicrosecondArray::from_iter(
                    ids.clone()
                        .map(|g| opt(g, 6).map(|g| i64::from(g) * 1_000_003)),
                )
                .with_timezone("Asia/Tokyo"),
            ),
            true,
        ),
        (
            "px",
            Arc::new(
                Decimal128Array::from_iter_values(ids.clone().map(|g| i128::from(g) * 1001))
                    .with_precision_and_scale(20, 3)
                    .unwrap(),
            ),
            false,
        ),
    ];
    // One dictionary for every batch: an IPC file holds one per column.
    let keys = Int32Array::from_iter(ids.clone().map(|g| (g % 3 != 0).then_some(g % 3)));
    let dict = DictionaryArray::<Int32Type>::try_new(
        keys,
        Arc::new(StringArray::from(vec!["hold", "buy", "sell"])),
    )
    .unwrap();
    let mut list = ListBuilder::new(Int32Builder::new());
    let mut fixed = FixedSizeListBuilder::new(Float32Builder::new(), 3);
    let mut map = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
    for g in ids.clone() {
        if g % 8 == 1 {
            list.append_null();
        } else {
            for k in 0..g % 4 {
                list.values().append_option((k != 2).then_some(g + k));
            }
            list.append(true);
        }
        for k in 0..3 {
            fixed.values().append_value(g as f32 + k as f32);
        }
        fixed.append(g % 10 != 0);
        for k in 0..g % 3 {
            map.keys().append_value(format!("k{k}"));
            map.values().append_value(i64::from(g * k));
        }
        map.append(true).unwrap();
    }
    cols.push(("side", Arc::new(dict), true));
    cols.push(("list", Arc::new(list.finish()), true));
    cols.push(("xyz", Arc::new(fixed.finish()), true));
    let inner: StructArray = StructArray::from(vec![
        (
            Arc::new(Field::new("a", DataType::Int32, true)),
            Arc::new(Int32Array::from_iter(ids.clone().map(|g| opt(g, 2)))) as ArrayRef,
        ),
        (
            Arc::new(Field::new("b", DataType::Utf8, false)),
            Arc::new(StringArray::from_iter_values(
                ids.clone().map(|g| format!("b{g}")),
            )) as ArrayRef,
        ),
    ]);
    cols.push(("pair", Arc::new(inner), false));
    cols.push(("attrs", Arc::new(map.finish()), false));
    if unions {
        let fields = UnionFields::try_new(
            [0, 1],
            [
                Field::new("i", DataType::Int32, false),
                Field::new("s", DataType::Utf8, false),
            ],
        )
        .unwrap();
        let type_ids: Vec<i8> = ids.clone().map(|g| (g % 2) as i8).collect();
        let ints: Vec<i32> = ids.clone().filter(|g| g % 2 == 0).collect();
        let strs: Vec<String> = ids
            .clone()
            .filter(|g| g % 2 == 1)
            .map(|g| format!("u{g}"))
            .collect();
        let mut offsets = Vec::new();
        let (mut a, mut b) = (0, 0);
        for &t in &type_ids {
            if t == 0 {
                offsets.push(a);
                a += 1;
            } else {
                offsets.push(b);
                b += 1;
            }
        }
        let dense = UnionArray::try_new(
            fields.clone(),
            ScalarBuffer::from(type_ids.clone()),
            Some(ScalarBuffer::from(offsets)),
            vec![
                Arc::new(Int32Array::from(ints)) as ArrayRef,
                Arc::new(StringArray::from(strs)) as ArrayRef,
            ],
        )
        .unwrap();
        let sparse = UnionArray::try_new(
            fields,
            ScalarBuffer::from(type_ids),
            None,
            vec![
                Arc::new(Int32Array::from_iter_values(ids.clone())) as ArrayRef,
                Arc::new(StringArray::from_iter_values(
                    ids.clone().map(|g| format!("v{g}")),
                )) as ArrayRef,
            ],
        )
        .unwrap();
        cols.push(("dense", Arc::new(dense), false));
        cols.push(("sparse", Arc::new(sparse), false));
    }
    let schema = Schema::new(
        cols.iter()
            .map(|(name, a, nullable)| Field::new(*name, a.data_type().clone(), *nullable))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        Arc::new(schema),
        cols.into_iter().map(|(_, a, _)| a).collect(),
    )
    .unwrap()
}

/// `count` rich batches of `rows` rows each.
pub fn rich_batches(count: usize, rows: usize, unions: bool) -> Vec<RecordBatch> {
    (0..count)
        .map(|k| rich_batch((k * rows) as i32, rows, unions))
        .collect()
}

/// An Arrow IPC stream of `batches`.
pub fn ipc_stream(batches: &[RecordBatch]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &batches[0].schema()).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    drop(w);
    out
}

/// An Arrow IPC file of `batches`.
pub fn ipc_file(batches: &[RecordBatch]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::FileWriter::try_new(&mut out, &batches[0].schema()).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    drop(w);
    out
}

/// Where each message of an IPC stream lies: `(start, metadata, body)`,
/// the metadata and body as byte ranges of `bytes`.
pub fn ipc_messages(
    bytes: &[u8],
    mut at: usize,
) -> Vec<(usize, std::ops::Range<usize>, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    // A file's writer may pad its magic number out to an alignment.
    while at + 8 <= bytes.len() && bytes[at..at + 4] == [0; 4] {
        at += 8;
    }
    while at + 8 <= bytes.len() {
        assert_eq!(bytes[at..at + 4], [0xff; 4], "continuation marker at {at}");
        let len = i32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        let meta = at + 8..at + 8 + len;
        let m = arrow_ipc::root_as_message(&bytes[meta.clone()]).unwrap();
        let body = meta.end..meta.end + m.bodyLength() as usize;
        out.push((at, meta, body.clone()));
        at = body.end;
    }
    out
}

/// The byte offset of `inner` inside `outer` (a sub-slice of it).
pub fn offset_in(outer: &[u8], inner: &[u8]) -> usize {
    let off = (inner.as_ptr() as usize)
        .checked_sub(outer.as_ptr() as usize)
        .unwrap();
    assert!(off + inner.len() <= outer.len());
    off
}

/// Sends `input` through ring `ring` with `produce` (plus `args`), then
/// reads it back with `consume` as an Arrow IPC stream.
pub fn through(d: &Dir, ring: &str, input: &str, args: &[&str]) -> Vec<RecordBatch> {
    let mut produce = vec!["produce", ring, "-i", input];
    produce.extend_from_slice(args);
    d.run(&produce).assert_ok();
    let out = d.s(&format!("{ring}.out.arrows"));
    d.run(&["consume", ring, "-o", &out]).assert_ok();
    arrow_ipc::reader::StreamReader::try_new(File::open(&out).unwrap(), None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Each row of `batches` as a one-row batch, to compare inputs and outputs
/// whatever their batch boundaries.
pub fn rows(batches: &[RecordBatch]) -> Vec<RecordBatch> {
    batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(move |i| b.slice(i, 1)))
        .collect()
}
