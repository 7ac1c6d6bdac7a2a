//! The `laminar-ring` command, driven as users drive it: the real binary in
//! separate processes, real files, real signals.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_ipc::reader::{FileReader, StreamReader};
use arrow_ipc::writer::{FileWriter, StreamWriter};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

/// A directory of rings and files for one test, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(test: &str) -> Self {
        let p = std::env::temp_dir().join(format!("lr-cli-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// The command, with its rings in this directory.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_laminar-ring"));
        c.args(args).env("LAMINAR_RING_DIR", &self.0);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `info --json`, or `None` while the ring does not exist yet.
    fn try_info(&self, ring: &str) -> Option<Value> {
        let out = self.run(&["info", ring, "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// A sequence of `info --json`, 0 while the ring does not exist yet.
    fn seq(&self, ring: &str, k: &str) -> u64 {
        self.try_info(ring).map_or(0, |i| i[k].as_u64().unwrap())
    }

    fn info(&self, ring: &str) -> Value {
        let out = self.run(&["info", ring, "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Succeeds, or shows what the command said.
fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    o
}

/// Fails with `code` and one line on stderr containing `needle`, without a
/// panic or backtrace.
fn fails(o: Output, code: i32, needle: &str) {
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    if code == 1 {
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_with_timeout(child: Child, timeout: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            signal(pid, "KILL");
            panic!("process {pid} did not exit within {timeout:?}");
        }
    }
}

/// The lines a child writes to `stream`, as they come.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Sends `TERM` or `KILL` to `pid` (without relying on a `kill` binary).
fn signal(pid: u32, sig: &str) {
    let sig = match sig {
        "TERM" => libc::SIGTERM,
        "KILL" => libc::SIGKILL,
        "INT" => libc::SIGINT,
        other => panic!("no signal {other}"),
    };
    let pid = libc::pid_t::try_from(pid).unwrap();
    #[allow(unsafe_code)] // one libc call
    // SAFETY: kill(2) takes plain integers; `pid` is a child of this test
    // that has not been reaped yet, so the number names that process.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
        Field::new("name", DataType::Utf8, false),
    ]))
}

/// Rows `base..base + rows`; `x` is null on every 7th row when `nulls`.
fn batch(base: i64, rows: usize, nulls: bool) -> RecordBatch {
    let ids = Int64Array::from_iter_values(base..base + rows as i64);
    let x = Float64Array::from_iter((base..base + rows as i64).map(|g| {
        if nulls && g % 7 == 3 {
            None
        } else {
            Some(g as f64 * 0.5)
        }
    }));
    let name = StringArray::from_iter_values((base..base + rows as i64).map(|g| format!("n{g}")));
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(ids) as ArrayRef,
            Arc::new(x) as ArrayRef,
            Arc::new(name) as ArrayRef,
        ],
    )
    .unwrap()
}

fn batches(n: usize, rows: usize, nulls: bool) -> Vec<RecordBatch> {
    (0..n)
        .map(|k| batch((k * rows) as i64, rows, nulls))
        .collect()
}

type Row = (i64, Option<f64>, String);

/// Every row of `bs`, whatever the column types' nullability.
fn rows(bs: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in bs {
        let id = b.column(0).as_primitive::<Int64Type>();
        let x = b.column(1).as_primitive::<Float64Type>();
        let name = b.column(2).as_string::<i32>();
        for j in 0..b.num_rows() {
            out.push((
                id.value(j),
                x.is_valid(j).then(|| x.value(j)),
                name.value(j).to_owned(),
            ));
        }
    }
    out
}

fn write_stream(path: &Path, bs: &[RecordBatch]) {
    let mut w = StreamWriter::try_new(File::create(path).unwrap(), &schema()).unwrap();
    for b in bs {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
}

fn write_file(path: &Path, bs: &[RecordBatch]) {
    let mut w = FileWriter::try_new(File::create(path).unwrap(), &schema()).unwrap();
    for b in bs {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
}

fn write_parquet(path: &Path, bs: &[RecordBatch]) {
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema(), None).unwrap();
    for b in bs {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

fn write_csv(path: &Path, bs: &[RecordBatch]) {
    let mut w = arrow_csv::Writer::new(File::create(path).unwrap());
    for b in bs {
        w.write(b).unwrap();
    }
}

fn read_stream(path: &Path) -> Vec<RecordBatch> {
    StreamReader::try_new(File::open(path).unwrap(), None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn read_file(path: &Path) -> Vec<RecordBatch> {
    FileReader::try_new(File::open(path).unwrap(), None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn read_csv(path: &Path) -> Vec<RecordBatch> {
    arrow_csv::ReaderBuilder::new(schema())
        .with_header(true)
        .build(File::open(path).unwrap())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn create_info_ls_and_rm() {
    let d = Dir::new("admin");
    let out = ok(d.run(&[
        "create", "r1", "--slots", "64", "--arena", "1MiB", "--mode", "640",
    ]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("64 slots"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.path("r1"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    ok(d.run(&["create", "r2"]));

    let i = d.info("r1");
    assert_eq!(i["kind"], "arrow");
    assert_eq!(
        i["layout_version"],
        laminar_ring::shm::header::LAYOUT_VERSION
    );
    assert_eq!(i["ends_pending"], 0);
    assert_eq!(i["capacity"], 64);
    assert_eq!(i["arena_bytes"], 1 << 20);
    assert_eq!(i["write_seq"], 0);
    assert_eq!(i["lag"], 0);
    assert_eq!(i["producer"]["state"], "never");
    assert_eq!(i["producer"]["alive"], false);
    assert_eq!(i["consumer"]["alive"], false);
    let text = String::from_utf8_lossy(&ok(d.run(&["info", "r1"])).stdout).into_owned();
    for want in [
        "version 5, arrow ring",
        "0 in use of 64",
        "never attached",
        "created",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }

    // Files that are not rings are skipped by ls, and rm refuses them.
    std::fs::write(d.path("notes.txt"), "hello, not a ring").unwrap();
    std::fs::write(d.path("empty"), "").unwrap();
    std::fs::create_dir(d.path("subdir")).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(d.path("fifo"))
            .status()
            .unwrap()
            .success()
    );
    let ls: Value = serde_json::from_slice(&ok(d.run(&["ls", "--json"])).stdout).unwrap();
    let names: Vec<_> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["r1", "r2"]);
    let text = String::from_utf8_lossy(&ok(d.run(&["ls"])).stdout).into_owned();
    assert!(text.contains("r1") && text.contains("r2") && !text.contains("notes"));
    fails(d.run(&["rm", "notes.txt"]), 1, "not removed");
    assert!(d.path("notes.txt").exists());

    ok(d.run(&["rm", "r1", "r2"]));
    assert!(!d.path("r1").exists() && !d.path("r2").exists());
    fails(d.run(&["info", "r1"]), 1, "no such ring");
    fails(d.run(&["rm", "r1"]), 1, "no such ring");
}

#[test]
fn every_input_format_goes_through() {
    let d = Dir::new("inputs");
    let data = batches(6, 500, true);
    let want = rows(&data);
    write_stream(&d.path("in.arrows"), &data);
    write_file(&d.path("in.arrow"), &data);
    write_parquet(&d.path("in.parquet"), &data);
    write_stream(&d.path("stream-without-extension"), &data);
    write_file(&d.path("file-without-extension"), &data);
    write_parquet(&d.path("parquet-without-extension"), &data);
    let inputs = [
        "in.arrows",
        "in.arrow",
        "in.parquet",
        "stream-without-extension",
        "file-without-extension",
        "parquet-without-extension",
    ];
    for (k, input) in inputs.iter().enumerate() {
        let ring = format!("in{k}");
        ok(d.run(&["produce", &ring, "-i", &d.s(input)]));
        let out = d.s(&format!("{ring}.out"));
        ok(d.run(&["consume", &ring, "-o", &out]));
        assert_eq!(rows(&read_stream(Path::new(&out))), want, "{input}");
    }

    // CSV: no nulls (an empty CSV field is an empty string), schema inferred
    // or given, and --batch-rows.
    let data = batches(4, 250, false);
    write_csv(&d.path("in.csv"), &data);
    ok(d.run(&[
        "produce",
        "csv",
        "-i",
        &d.s("in.csv"),
        "--batch-rows",
        "100",
    ]));
    ok(d.run(&["consume", "csv", "-o", &d.s("csv.out")]));
    let got = read_stream(&d.path("csv.out"));
    assert_eq!(got.len(), 10, "1,000 rows in batches of 100");
    assert_eq!(got[0].schema().field(0).data_type(), &DataType::Int64);
    assert_eq!(rows(&got), rows(&data));
    ok(d.run(&[
        "produce",
        "csv2",
        "-i",
        &d.s("in.csv"),
        "--schema",
        "id:int64,x:float64,name:utf8",
    ]));
    ok(d.run(&["consume", "csv2", "-o", &d.s("csv2.out")]));
    assert_eq!(rows(&read_stream(&d.path("csv2.out"))), rows(&data));

    // stdin: an Arrow IPC stream; longer batches are sliced by --batch-rows.
    let data = batches(2, 1000, true);
    write_stream(&d.path("stdin.arrows"), &data);
    let st = d
        .cmd(&["produce", "stdin", "-i", "-", "--batch-rows", "300"])
        .stdin(File::open(d.path("stdin.arrows")).unwrap())
        .output()
        .unwrap();
    ok(st);
    ok(d.run(&["consume", "stdin", "-o", &d.s("stdin.out")]));
    let got = read_stream(&d.path("stdin.out"));
    assert_eq!(
        got.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(),
        [300, 300, 300, 100, 300, 300, 300, 100]
    );
    assert_eq!(rows(&got), rows(&data));
}

/// `produce` the file `input` into the new ring `ring`, then `consume` it
/// as `format`; returns the output's path.
fn through_ring(d: &Dir, ring: &str, input: &str, format: &str) -> PathBuf {
    ok(d.run(&["produce", ring, "-i", &d.s(input)]));
    let out = d.path(&format!("{ring}.{format}"));
    let out_s = out.display().to_string();
    ok(d.run(&["consume", ring, "-o", &out_s, "--format", format]));
    out
}

#[test]
fn every_output_format_is_readable_by_arrow_readers() {
    let d = Dir::new("outputs");
    let data = batches(5, 400, true);
    write_stream(&d.path("in.arrows"), &data);
    let check = |format: &str, read: &dyn Fn(&Path) -> Vec<RecordBatch>| {
        let out = through_ring(&d, &format!("out-{format}"), "in.arrows", format);
        let got = read(&out);
        assert_eq!(rows(&got), rows(&data), "{format}");
        if format != "csv" {
            assert_eq!(got[0].schema(), schema(), "{format}");
        }
    };
    check("arrow", &read_stream);
    check("arrow-file", &read_file);
    check("parquet", &read_parquet);
    check("csv", &read_csv);

    // stdout
    ok(d.run(&["produce", "so", "-i", &d.s("in.arrows")]));
    let out = ok(d.run(&["consume", "so", "-o", "-"]));
    let got: Vec<RecordBatch> = StreamReader::try_new(&out.stdout[..], None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows(&got), rows(&data));
}

/// Either side may start first; the ring is created by whichever does.
#[test]
fn either_side_may_start_first() {
    let d = Dir::new("order");
    let data = batches(40, 2000, true);
    write_stream(&d.path("in.arrows"), &data);

    // Consumer first: it creates the ring and waits for a producer.
    let rx = d.spawn(&["consume", "c-first", "-o", &d.s("c.out")]);
    wait_until("the consumer attached", Duration::from_secs(10), || {
        d.try_info("c-first")
            .is_some_and(|i| i["consumer"]["alive"] == true)
    });
    ok(d.run(&["produce", "c-first", "-i", &d.s("in.arrows")]));
    ok(wait_with_timeout(rx, Duration::from_secs(30)));
    assert_eq!(rows(&read_stream(&d.path("c.out"))), rows(&data));

    // Producer first, into a ring much smaller than the input: it blocks
    // until a consumer comes and drains it.
    let mut tx = d.spawn(&[
        "produce",
        "p-first",
        "-i",
        &d.s("in.arrows"),
        "--slots",
        "4",
        "--arena",
        "256KiB",
    ]);
    wait_until("the producer sending", Duration::from_secs(10), || {
        d.try_info("p-first")
            .is_some_and(|i| i["producer"]["alive"] == true && i["write_seq"].as_u64().unwrap() > 0)
    });
    assert_eq!(d.info("p-first")["capacity"], 4);
    // 40 batches cannot fit in 4 slots.
    assert!(tx.try_wait().unwrap().is_none(), "it waits for a consumer");
    ok(d.run(&["consume", "p-first", "-o", &d.s("p.out")]));
    ok(wait_with_timeout(tx, Duration::from_secs(30)));
    assert_eq!(rows(&read_stream(&d.path("p.out"))), rows(&data));
}

/// Writes an Arrow IPC stream to a producer's stdin, a batch at a time.
struct Feeder {
    child: Child,
    writer: Option<StreamWriter<std::process::ChildStdin>>,
    sent: usize,
}

impl Feeder {
    fn start(d: &Dir, ring: &str) -> Self {
        let mut child = d
            .cmd(&["produce", ring, "-i", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let writer = StreamWriter::try_new(stdin, &schema()).unwrap();
        Self {
            child,
            writer: Some(writer),
            sent: 0,
        }
    }

    fn send(&mut self, b: &RecordBatch) {
        let w = self.writer.as_mut().unwrap();
        w.write(b).unwrap();
        w.flush().unwrap();
        self.sent += 1;
    }

    fn end(mut self) -> Output {
        let mut w = self.writer.take().unwrap();
        w.finish().unwrap();
        drop(w);
        wait_with_timeout(self.child, Duration::from_secs(30))
    }
}

/// SIGTERM mid-stream: the consumer finishes the batch in hand, writes a
/// complete file (footer included) and exits 0; what it did not consume
/// stays in the ring for the next consumer: nothing lost, nothing twice.
#[test]
fn sigterm_leaves_a_complete_output_and_the_rest_in_the_ring() {
    let d = Dir::new("sigterm");
    let data = batches(9, 300, true);
    let mut feeder = Feeder::start(&d, "t");
    let rx = d.spawn(&[
        "consume",
        "t",
        "-o",
        &d.s("first.arrow"),
        "--format",
        "arrow-file",
    ]);
    for b in &data[..5] {
        feeder.send(b);
    }
    // Five batches written and released by the consumer (plus the schema).
    wait_until("5 batches consumed", Duration::from_secs(10), || {
        d.seq("t", "read_seq") >= 6
    });
    signal(rx.id(), "TERM");
    let out = ok(wait_with_timeout(rx, Duration::from_secs(10)));
    assert!(
        stderr(&out).contains("stopped by signal"),
        "{}",
        stderr(&out)
    );
    let first = read_file(&d.path("first.arrow"));
    assert_eq!(rows(&first), rows(&data[..5]));

    for b in &data[5..] {
        feeder.send(b);
    }
    ok(feeder.end());
    ok(d.run(&[
        "consume",
        "t",
        "-o",
        &d.s("rest.parquet"),
        "--format",
        "parquet",
    ]));
    assert_eq!(
        rows(&read_parquet(&d.path("rest.parquet"))),
        rows(&data[5..])
    );
}

/// SIGKILL of the producer: the consumer writes every committed batch, a
/// valid output, says the producer died and exits non-zero (3).
#[test]
fn a_killed_producer_leaves_every_committed_batch_and_a_nonzero_exit() {
    let d = Dir::new("sigkill");
    let data = batches(4, 500, true);
    let mut feeder = Feeder::start(&d, "k");
    let rx = d.spawn(&["consume", "k", "-o", &d.s("k.arrows")]);
    for b in &data {
        feeder.send(b);
    }
    // Schema and four batches committed to the ring.
    wait_until("4 batches committed", Duration::from_secs(10), || {
        d.seq("k", "write_seq") >= 5
    });
    signal(feeder.child.id(), "KILL");
    let out = wait_with_timeout(rx, Duration::from_secs(10));
    fails(out, 3, "producer of ring 'k' died");
    assert_eq!(rows(&read_stream(&d.path("k.arrows"))), rows(&data));
    let _ = feeder.child.wait();
    assert_eq!(d.info("k")["producer"]["state"], "dead");
    assert_eq!(d.info("k")["producer"]["alive"], false);
}

/// A broken input does not look like a whole stream: the consumer gets the
/// batches before the bad row, then learns that its producer failed and
/// why (exit code 4), not a clean end.
#[test]
fn a_bad_csv_row_is_reported_with_its_line_and_ends_the_stream_in_error() {
    let d = Dir::new("badcsv");
    let mut csv = String::from("id,x,name\n");
    for i in 0..10 {
        csv.push_str(&format!("{i},{}.5,n{i}\n", i));
    }
    csv.push_str("eleven,1.0,bad\n");
    std::fs::write(d.path("bad.csv"), csv).unwrap();
    let rx = d.spawn(&["consume", "b", "-o", &d.s("b.arrows")]);
    wait_for_consumer(&d, "b");
    let out = d.run(&[
        "produce",
        "b",
        "-i",
        &d.s("bad.csv"),
        "--schema",
        "id:int64,x:float64,name:utf8",
        "--batch-rows",
        "4",
    ]);
    fails(out, 1, "at line 12");
    let out = wait_with_timeout(rx, Duration::from_secs(10));
    let err = stderr(&out);
    assert!(err.contains("wrote 8 rows"), "{err}");
    fails(
        out,
        4,
        "the producer of ring 'b' failed: cannot read bad.csv",
    );
    let got = read_stream(&d.path("b.arrows"));
    assert_eq!(got.iter().map(RecordBatch::num_rows).sum::<usize>(), 8);
}

/// Several `produce` of different files into one ring at once: each takes
/// a lane of its own, and one `consume` writes every row of every input
/// exactly once, each input's rows in their order.
#[test]
fn several_producers_feed_one_consume() {
    let d = Dir::new("fan-in");
    // A small ring, so that every producer is still sending (blocked on
    // its full lane) when the consumer starts.
    ok(d.run(&["create", "fan", "--slots", "8", "--arena", "256KiB"]));
    let inputs: Vec<Vec<RecordBatch>> = (0..3)
        .map(|k| {
            (0..40)
                .map(|j| batch(k * 1_000_000 + j * 300, 300, k == 1))
                .collect()
        })
        .collect();
    let producers: Vec<Child> = inputs
        .iter()
        .enumerate()
        .map(|(k, bs)| {
            let file = format!("in{k}.arrows");
            write_stream(&d.path(&file), bs);
            d.spawn(&["produce", "fan", "-i", &d.s(&file), "--batch-rows", "300"])
        })
        .collect();
    wait_until("three lanes", Duration::from_secs(10), || {
        d.path("fan#2").exists()
    });
    let t = text(d.run(&["info", "fan"]));
    assert!(t.contains("lanes      3"), "{t}");
    let ls = text(d.run(&["ls"]));
    assert!(
        ls.lines()
            .any(|l| l.starts_with("fan ") && l.contains("3 producers")),
        "{ls}"
    );
    assert!(!ls.lines().any(|l| l.starts_with("fan#")), "{ls}");
    let out = ok(d.run(&["consume", "fan", "-o", &d.s("out.arrows"), "--linger", "1s"]));
    assert!(stderr(&out).contains("end of stream"), "{}", stderr(&out));
    for p in producers {
        ok(wait_with_timeout(p, Duration::from_secs(20)));
    }
    let got = rows(&read_stream(&d.path("out.arrows")));
    for (k, bs) in inputs.iter().enumerate() {
        let lo = k as i64 * 1_000_000;
        let mine: Vec<Row> = got
            .iter()
            .filter(|r| (lo..lo + 1_000_000).contains(&r.0))
            .cloned()
            .collect();
        assert_eq!(mine, rows(bs), "input {k}: every row once, in order");
    }
    assert_eq!(got.len(), 3 * 40 * 300);
    // Every producer closed: `ls` says so, not "0 producers".
    let ls = String::from_utf8(ok(d.run(&["ls"])).stdout).unwrap();
    assert!(
        ls.lines()
            .any(|l| l.starts_with("fan ") && l.contains("no producer, 3 lanes")),
        "{ls}"
    );
    // `rm` takes the stream's lanes with it.
    ok(d.run(&["rm", "fan"]));
    for lane in ["fan", "fan#1", "fan#2"] {
        assert!(!d.path(lane).exists(), "{lane} left behind");
    }
}

/// `--follow` keeps the sidecar up across producers that finish, crash and
/// come back, until SIGTERM; a producer with another schema is refused.
#[test]
fn follow_survives_producers_that_come_and_go() {
    let d = Dir::new("follow");
    let data = batches(9, 100, true);
    write_stream(&d.path("a.arrows"), &data[..3]);
    write_stream(&d.path("c.arrows"), &data[6..]);
    let mut rx = d.spawn(&["consume", "f", "-o", &d.s("f.arrows"), "--follow"]);
    let said = lines_of(rx.stderr.take().unwrap());
    ok(d.run(&["produce", "f", "-i", &d.s("a.arrows")]));
    let mut feeder = Feeder::start(&d, "f");
    for b in &data[3..6] {
        feeder.send(b);
    }
    wait_until(
        "the second session's batches",
        Duration::from_secs(10),
        || d.seq("f", "read_seq") >= 8,
    );
    signal(feeder.child.id(), "KILL");
    let _ = feeder.child.wait();
    let line = said.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(line.contains("producer of ring 'f' died"), "{line}");
    assert!(line.contains("waiting for the next producer"), "{line}");
    ok(d.run(&["produce", "f", "-i", &d.s("c.arrows")]));
    wait_until(
        "the third session's batches",
        Duration::from_secs(10),
        || {
            let i = d.info("f");
            i["read_seq"] == i["write_seq"]
        },
    );
    signal(rx.id(), "TERM");
    ok(wait_with_timeout(rx, Duration::from_secs(10)));
    let line = said.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(line.contains("wrote 900 rows in 9 batches"), "{line}");
    assert_eq!(rows(&read_stream(&d.path("f.arrows"))), rows(&data));

    // Another schema: the sidecar stops with a clear error and a valid file.
    let rx = d.spawn(&["consume", "g", "-o", &d.s("g.arrows"), "--follow"]);
    ok(d.run(&["produce", "g", "-i", &d.s("a.arrows")]));
    std::fs::write(d.path("other.csv"), "k\n1\n2\n").unwrap();
    ok(d.run(&["produce", "g", "-i", &d.s("other.csv")]));
    fails(
        wait_with_timeout(rx, Duration::from_secs(10)),
        1,
        "schema mismatch",
    );
    assert_eq!(rows(&read_stream(&d.path("g.arrows"))), rows(&data[..3]));
}

/// Two `consume --follow` sidecars under different names, with different
/// output formats, on one ring: producers come, crash and go, and each
/// output holds every row, in order. `info` lists both subscribers;
/// `unsubscribe` removes one only once it has gone.
#[test]
fn two_named_sidecars_on_one_ring_each_write_every_row() {
    let d = Dir::new("fanout");
    let data = batches(9, 100, true);
    write_stream(&d.path("a.arrows"), &data[..3]);
    write_stream(&d.path("c.arrows"), &data[6..]);
    ok(d.run(&["create", "fan", "--consumers", "4"]));
    let archiver = d.spawn(&[
        "consume",
        "fan",
        "--as",
        "archiver",
        "-o",
        &d.s("fan.parquet"),
        "--follow",
    ]);
    let dashboard = d.spawn(&[
        "consume",
        "fan",
        "--as",
        "dashboard",
        "-o",
        &d.s("fan.arrows"),
        "--follow",
    ]);
    wait_until("both subscribed", Duration::from_secs(10), || {
        d.info("fan")["subscribers"]
            .as_array()
            .is_some_and(|s| s.len() == 2 && s.iter().all(|s| s["alive"] == true))
    });
    ok(d.run(&["produce", "fan", "-i", &d.s("a.arrows")]));
    let mut feeder = Feeder::start(&d, "fan");
    for b in &data[3..6] {
        feeder.send(b);
    }
    wait_until(
        "the second session's batches",
        Duration::from_secs(10),
        || {
            d.info("fan")["subscribers"]
                .as_array()
                .is_some_and(|s| s.iter().all(|s| s["read_seq"].as_u64() >= Some(8)))
        },
    );
    signal(feeder.child.id(), "KILL");
    let _ = feeder.child.wait();
    ok(d.run(&["produce", "fan", "-i", &d.s("c.arrows")]));
    wait_until("both read everything", Duration::from_secs(10), || {
        let i = d.info("fan");
        i["subscribers"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["read_seq"] == i["write_seq"]))
    });
    let info = d.info("fan");
    let mut names: Vec<_> = info["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort(); // in cursor order: whichever subscribed first
    assert_eq!(names, ["archiver", "dashboard"]);
    assert_eq!(info["max_consumers"], 4);
    let text = String::from_utf8_lossy(&ok(d.run(&["info", "fan"])).stdout).into_owned();
    assert!(text.contains("consumers  2 subscribed of 4"), "{text}");
    assert!(text.contains("archiver"), "{text}");
    fails(
        d.run(&["unsubscribe", "fan", "dashboard"]),
        1,
        "consumer \"dashboard\" is attached",
    );
    for rx in [archiver, dashboard] {
        signal(rx.id(), "TERM");
        ok(wait_with_timeout(rx, Duration::from_secs(10)));
    }
    assert_eq!(rows(&read_parquet(&d.path("fan.parquet"))), rows(&data));
    assert_eq!(rows(&read_stream(&d.path("fan.arrows"))), rows(&data));
    ok(d.run(&["unsubscribe", "fan", "dashboard"]));
    let info = d.info("fan");
    assert_eq!(info["subscribers"].as_array().unwrap().len(), 1);
    let ls = String::from_utf8_lossy(&ok(d.run(&["ls"])).stdout).into_owned();
    assert!(ls.contains("1/4"), "{ls}");
}

/// Under `--policy lag`, a sidecar killed and left dead holds the producer
/// and the other sidecar back only for the grace: it is dropped, `info`
/// says so, and, back, it warns how many messages it lost and writes every
/// row of the next producer's stream.
#[test]
fn under_policy_lag_a_dead_sidecar_is_dropped_and_warns_when_it_comes_back() {
    let d = Dir::new("lag");
    let data = batches(33, 50, true);
    write_stream(&d.path("a.arrows"), &data[..30]);
    write_stream(&d.path("c.arrows"), &data[30..]);
    let made = ok(d.run(&[
        "create",
        "lagging",
        "--slots",
        "8",
        "--policy",
        "lag",
        "--lag-grace",
        "200ms",
    ]));
    let made = String::from_utf8_lossy(&made.stdout).into_owned();
    assert!(
        made.contains("policy lag (drop a dead subscriber after 200ms)"),
        "{made}"
    );
    let info = d.info("lagging");
    assert_eq!(info["policy"]["kind"], "lag");
    assert_eq!(info["policy"]["grace_s"], 0.2);
    let consume = |name: &str, out: &str| {
        d.spawn(&[
            "consume",
            "lagging",
            "--as",
            name,
            "-o",
            &d.s(out),
            "--follow",
        ])
    };
    let live = consume("live", "live.arrows");
    let mut away = consume("away", "away-0.arrows");
    wait_until("both subscribed", Duration::from_secs(10), || {
        d.info("lagging")["subscribers"]
            .as_array()
            .is_some_and(|s| s.len() == 2 && s.iter().all(|s| s["alive"] == true))
    });
    signal(away.id(), "KILL");
    let _ = away.wait();
    // 30 batches through 8 slots: the dead one is dropped on the way.
    let producer = d.spawn(&["produce", "lagging", "-i", &d.s("a.arrows")]);
    ok(wait_with_timeout(producer, Duration::from_secs(30)));
    let info = d.info("lagging");
    let subs = info["subscribers"].as_array().unwrap();
    let dropped = |n: &str| subs.iter().find(|s| s["name"] == n).unwrap()["dropped"].clone();
    assert_eq!(dropped("away"), true, "{info}");
    assert_eq!(dropped("live"), false, "{info}");
    // Its lag is what it will have missed, more than the ring holds.
    let away_info = subs.iter().find(|s| s["name"] == "away").unwrap();
    assert_eq!(
        away_info["lag"].as_u64().unwrap(),
        info["write_seq"].as_u64().unwrap() - away_info["read_seq"].as_u64().unwrap()
    );
    assert!(away_info["lag"].as_u64().unwrap() > 8, "{info}");
    let text = String::from_utf8_lossy(&ok(d.run(&["info", "lagging"])).stdout).into_owned();
    assert!(
        text.contains("dropped (the producer no longer waits for it)"),
        "{text}"
    );
    ok(d.run(&["produce", "lagging", "-i", &d.s("c.arrows")]));
    let away = consume("away", "away.arrows");
    wait_until("both read everything", Duration::from_secs(10), || {
        let i = d.info("lagging");
        i["subscribers"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["read_seq"] == i["write_seq"]))
    });
    let text = String::from_utf8_lossy(&ok(d.run(&["info", "lagging"])).stdout).into_owned();
    assert!(!text.contains("unreadable"), "{text}");
    signal(live.id(), "TERM");
    signal(away.id(), "TERM");
    ok(wait_with_timeout(live, Duration::from_secs(10)));
    let away = ok(wait_with_timeout(away, Duration::from_secs(10)));
    let err = stderr(&away);
    assert!(
        err.contains("dropped this consumer while it was away") && err.contains("lost"),
        "{err}"
    );
    assert_eq!(rows(&read_stream(&d.path("live.arrows"))), rows(&data));
    assert_eq!(
        rows(&read_stream(&d.path("away.arrows"))),
        rows(&data[30..]),
        "the next producer's stream, whole"
    );
}

/// A producer with another schema than the stream's is refused with the
/// first column that differs and its two types, not two whole schemas.
#[test]
fn a_schema_mismatch_names_the_column_and_both_types() {
    let d = Dir::new("mismatch");
    std::fs::write(d.path("floats.csv"), "id,price\n1,2.5\n").unwrap();
    std::fs::write(d.path("ints.csv"), "id,price\n2,3\n").unwrap();
    let rx = d.spawn(&["consume", "m", "-o", &d.s("m.arrows"), "--follow"]);
    ok(d.run(&["produce", "m", "-i", &d.s("floats.csv")]));
    ok(d.run(&["produce", "m", "-i", &d.s("ints.csv")]));
    let out = wait_with_timeout(rx, Duration::from_secs(10));
    let err = stderr(&out);
    assert!(!err.contains("Field {"), "no debug syntax: {err}");
    fails(
        out,
        1,
        "schema mismatch: column 'price' is Float64 in the stream, Int64 here",
    );
    let got = read_stream(&d.path("m.arrows"));
    assert_eq!(got.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
}

#[test]
fn errors_are_one_clear_line_with_exit_codes() {
    let d = Dir::new("errors");
    fails(d.run(&["info", "missing"]), 1, "missing: no such ring");
    std::fs::write(d.path("junk"), vec![b'#'; 4096]).unwrap();
    fails(d.run(&["info", "junk"]), 1, "not a laminar-ring ring");
    fails(
        d.run(&["produce", "r", "-i", &d.s("nope.arrows")]),
        1,
        "nope.arrows: No such file",
    );
    std::fs::write(d.path("garbage.bin"), b"\x00\x01\x02 not data").unwrap();
    fails(
        d.run(&["produce", "r", "-i", &d.s("garbage.bin")]),
        1,
        "cannot tell the format",
    );
    std::fs::write(d.path("bad.parquet"), b"PAR1 but not really").unwrap();
    fails(
        d.run(&["produce", "r", "-i", &d.s("bad.parquet")]),
        1,
        "not a valid Parquet file",
    );
    // Bad input ends the ring's stream in error, saying why, for a consumer
    // that waits on it.
    let info = d.info("r");
    assert_eq!(info["producer"]["state"], "failed", "{info}");
    let why = info["producer"]["failure"].as_str().unwrap_or_default();
    assert!(why.starts_with("cannot read bad.parquet"), "{info}");
    ok(d.run(&["create", "dup"]));
    fails(d.run(&["create", "dup"]), 1, "already exists");
    fails(d.run(&["create", "a/b"]), 1, "bad ring name");
    // A name that is another stream's lane: refused by the commands that
    // would make a stream under it (`produce` joins, which refuses it too),
    // before anything is made.
    fails(
        d.run(&["create", "s#1"]),
        1,
        "names a lane of another stream",
    );
    fails(
        d.run(&["consume", "s#2", "-o", "-"]),
        1,
        "names a lane of another stream",
    );
    for lane in ["s#1", "s#2"] {
        assert!(!d.path(lane).exists(), "{lane} made");
    }

    // Disk full on output.
    write_stream(&d.path("in.arrows"), &batches(3, 1000, true));
    ok(d.run(&["produce", "full", "-i", &d.s("in.arrows")]));
    fails(
        d.run(&["consume", "full", "-o", "/dev/full"]),
        1,
        "No space left on device",
    );

    // Usage errors: exit 2.
    for args in [
        &["create", "x", "--slots", "3"][..],
        &["create", "x", "--arena", "12 parsecs"],
        &["create", "x", "--mode", "999"],
        &["produce", "x"],
        &["consume", "x", "-o", "o", "--format", "xml"],
        &["consume", "x", "-o", "o", "--timeout", "soon"],
        &["consume", "x", "-o", "o", "--timeout", "0s"],
        &["produce", "x", "-i", "in", "--timeout", "1.5s"],
        // --idle-exit is for --follow sidecars.
        &["consume", "x", "-o", "o", "--idle-exit", "1s"],
        &["frobnicate"],
    ] {
        let o = d.run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"));
    }
}

#[test]
fn permission_denied_is_reported() {
    if !nix_is_root() {
        eprintln!("skipped: needs root to run a process as another user");
        return;
    }
    let d = Dir::new("perm");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    ok(d.run(&["create", "private", "--mode", "600"]));
    use std::os::unix::process::CommandExt;
    let out = d
        .cmd(&["info", "private"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    fails(out, 1, "permission denied");
}

#[test]
fn a_ring_that_does_not_fit_its_filesystem_is_refused_at_create() {
    // A 1 MiB tmpfs: a 4 MiB ring must fail with ENOSPC when created, not
    // kill its producer with SIGBUS at the first write past what fits.
    let d = Dir::new("full");
    let mnt = d.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)");
        return;
    }
    let dir = mnt.display().to_string();
    let out = d.run(&["create", "big", "--dir", &dir, "--arena", "4MiB"]);
    let small = d.run(&["create", "small", "--dir", &dir, "--arena", "256KiB"]);
    let left: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let _ = Command::new("umount").arg(&mnt).status();
    fails(out, 1, "No space left on device");
    ok(small);
    assert_eq!(left, ["small"], "the failed create leaves no file behind");
}

/// A ring its group may write (`create --mode 660`, here with the umask
/// undone by chmod) is refused by default and opened with `--shared`.
#[test]
fn a_group_writable_ring_is_opened_only_with_shared() {
    use std::os::unix::fs::PermissionsExt;
    let d = Dir::new("shared");
    ok(d.run(&["create", "team", "--mode", "660"]));
    std::fs::set_permissions(d.path("team"), std::fs::Permissions::from_mode(0o660)).unwrap();
    fails(d.run(&["info", "team"]), 1, "lets its group");
    let out = ok(d.run(&["info", "team", "--shared", "--json"]));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["kind"], "arrow");
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn no_progress_output_when_stderr_is_not_a_terminal() {
    let d = Dir::new("quiet");
    write_stream(&d.path("in.arrows"), &batches(20, 100, true));
    let p = ok(d.run(&["produce", "q", "-i", &d.s("in.arrows")]));
    let c = ok(d.run(&["consume", "q", "-o", &d.s("q.out")]));
    for o in [&p, &c] {
        let err = stderr(o);
        assert!(!err.contains('\r') && !err.contains('\u{1b}'), "{err:?}");
        assert_eq!(err.lines().count(), 1, "a one-line summary: {err}");
    }
}

/// `bench --payload PAYLOAD --rounds 2 --json ARGS`, which must succeed:
/// what it printed.
fn bench_json(d: &Dir, payload: &str, args: &[&str]) -> Value {
    let mut all = vec!["bench", "--payload", payload, "--rounds", "2", "--json"];
    all.extend_from_slice(args);
    serde_json::from_slice(&ok(d.run(&all)).stdout).unwrap()
}

#[test]
fn bench_with_several_consumers_has_each_check_every_message() {
    let d = Dir::new("bench-fan");
    // More values than the ring holds, so the producer waits for the
    // slowest consumer. (A producer that started before every consumer had
    // attached could fail here, but only when one took longer than the
    // producer's liveness probe to attach: this run rarely shows it.)
    for (payload, messages, extra) in [
        ("u64", "400000", vec![]),
        ("arrow", "40", vec!["--rows", "4096"]),
    ] {
        let mut args = vec![
            "--consumers",
            "3",
            "--messages",
            messages,
            "--samples",
            "20",
        ];
        args.extend(extra);
        let v = bench_json(&d, payload, &args);
        let n: u64 = messages.parse().unwrap();
        assert_eq!(v["consumers"], 3, "{v}");
        for t in ["ring", "one_consumer"] {
            assert_eq!(v[t]["messages"], n, "{t}: {v}");
            assert!(v[t]["gb_per_s"].as_f64().unwrap() > 0.0, "{t}: {v}");
        }
    }
}

#[test]
fn bench_with_several_producers_checks_every_lane_against_one_producer() {
    let d = Dir::new("bench-fanin");
    // Each producer sends more values than its lane holds, so it waits
    // for the consumer; the consumer checks every lane's values in order.
    for (payload, messages, extra) in [
        ("u64", 100_000u64, vec![]),
        ("arrow", 8, vec!["--rows", "1024"]),
    ] {
        let m = messages.to_string();
        let mut args = vec!["--producers", "3", "--messages", &m];
        args.extend(extra);
        let v = bench_json(&d, payload, &args);
        assert_eq!(v["producers"], 3, "{v}");
        assert_eq!(v["messages"], messages, "{v}");
        for t in ["ring", "one_producer"] {
            assert_eq!(v[t]["messages"], 3 * messages, "{t}: {v}");
            assert!(v[t]["gb_per_s"].as_f64().unwrap() > 0.0, "{t}: {v}");
        }
        assert!(v["ratio"]["throughput"].as_f64().unwrap() > 0.0, "{v}");
        assert!(
            v.get("uds").is_none() && v.get("one_consumer").is_none(),
            "{v}"
        );
    }
    // Several producers are compared with one, not with a socket, and
    // make no sense with several consumers.
    for other in [["--compare", "uds"], ["--consumers", "2"]] {
        let out = d.run(&["bench", "--producers", "2", other[0], other[1]]);
        assert!(!out.status.success(), "{other:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("cannot be used"),
            "{other:?}"
        );
    }
    // No ring, no lane left behind.
    let left: Vec<_> = std::fs::read_dir(d.path(""))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("laminar-bench"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bench_and_demo_measure_and_verify() {
    let d = Dir::new("bench");
    let out = ok(d.run(&[
        "bench",
        "--payload",
        "u64",
        "--messages",
        "200000",
        "--samples",
        "2000",
        "--rounds",
        "1",
        "--compare",
        "uds",
        "--json",
    ]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ring"]["messages"], 200_000);
    assert_eq!(v["uds"]["messages"], 200_000);
    assert_eq!(v["ring"]["bytes"], 1_600_000);
    for t in ["ring", "uds"] {
        let rtt = &v[t]["rtt_ns"];
        assert!(rtt["p50"].as_u64().unwrap() > 0);
        assert!(rtt["p50"].as_u64() <= rtt["p99"].as_u64());
        assert!(rtt["p99"].as_u64() <= rtt["max"].as_u64());
        assert!(v[t]["gb_per_s"].as_f64().unwrap() > 0.0);
    }
    assert!(v["ratio"]["throughput"].as_f64().unwrap() > 0.0);
    // The machine's load with the results, and whether it was busy.
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(v["cores"], cores);
    let load = v["load_average"].as_f64().expect("/proc/loadavg is read");
    assert!(load >= 0.0, "{v}");
    assert_eq!(v["busy"], load > 0.5 * cores as f64, "{v}");
    assert_eq!(
        stderr(&out).contains("the machine was busy"),
        load > 0.5 * cores as f64
    );

    let out = ok(d.run(&[
        "bench",
        "--messages",
        "30",
        "--rows",
        "4096",
        "--samples",
        "50",
        "--rounds",
        "2",
        "--compare",
        "uds",
    ]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in [
        "shared-memory ring",
        "unix socket",
        "ring / socket",
        "rtt p99.9 (",
        "load average ",
        " core",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
    latency_columns_have_one_unit(&text, "shared-memory ring");

    let out = ok(d.run(&["demo", "--rows", "300000", "--batch-rows", "7000"]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("300,000"), "{text}");
    assert!(text.contains("every row verified"), "{text}");
    assert!(text.contains("load average "), "{text}");
    latency_columns_have_one_unit(&text, "shared-memory ring");
    // "a 3.10x lower", "an 8.60x lower".
    let ratio = text
        .split("median round trip")
        .next()
        .and_then(|t| t.rsplit("with ").next())
        .unwrap_or_else(|| panic!("no round trip ratio in {text}"));
    let (article, number) = ratio.split_once(' ').unwrap();
    let eight = number.starts_with('8')
        || (number.split('.').next().unwrap().len() == 2
            && (number.starts_with("11") || number.starts_with("18")));
    assert_eq!(article, if eight { "an" } else { "a" }, "{ratio}");
    // Nothing left behind.
    let left: Vec<_> = std::fs::read_dir(&d.0).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The header names a unit for each latency column (`rtt p50 (µs)`), and
/// the cells of the table's rows, from `first_row` on, are bare numbers.
fn latency_columns_have_one_unit(text: &str, first_row: &str) {
    let header = text
        .lines()
        .find(|l| l.contains("rtt p50"))
        .unwrap_or_else(|| panic!("no header in {text}"));
    let units = header.matches(" (ns)").count()
        + header.matches(" (µs)").count()
        + header.matches(" (ms)").count();
    assert_eq!(units, header.matches("rtt ").count(), "{header}");
    let row = text.lines().find(|l| l.starts_with(first_row)).unwrap();
    for unit in [" ns", " µs", " ms"] {
        assert!(!row.contains(unit), "{row}");
    }
}

/// Dictionaries that change from batch to batch (as Parquet readers
/// produce them) come through; an Arrow IPC file, which allows one
/// dictionary per column, gets the column decoded.
#[test]
fn changing_dictionaries_reach_every_output_format() {
    use arrow_array::DictionaryArray;
    use arrow_array::types::Int32Type;
    let d = Dir::new("dicts");
    let dict_schema = Arc::new(Schema::new(vec![Field::new(
        "tag",
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        true,
    )]));
    let data: Vec<RecordBatch> = (0..4)
        .map(|k| {
            let words: Vec<Option<String>> = (0..50)
                .map(|j| (j % 9 != 4).then(|| format!("w{}-{}", k, j % 5)))
                .collect();
            let a: DictionaryArray<Int32Type> = words.iter().map(|w| w.as_deref()).collect();
            RecordBatch::try_new(dict_schema.clone(), vec![Arc::new(a) as ArrayRef]).unwrap()
        })
        .collect();
    let strings = |bs: &[RecordBatch]| -> Vec<Option<String>> {
        bs.iter()
            .flat_map(|b| {
                let c = arrow_cast::cast(b.column(0), &DataType::Utf8).unwrap();
                let s = c.as_string::<i32>().clone();
                (0..s.len())
                    .map(move |j| s.is_valid(j).then(|| s.value(j).to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let mut w =
        StreamWriter::try_new(File::create(d.path("in.arrows")).unwrap(), &dict_schema).unwrap();
    for b in &data {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    for (format, read) in [
        ("arrow", &read_stream as &dyn Fn(&Path) -> Vec<RecordBatch>),
        ("arrow-file", &read_file),
        ("parquet", &read_parquet),
    ] {
        let out = through_ring(&d, &format!("d-{format}"), "in.arrows", format);
        let got = read(&out);
        assert_eq!(strings(&got), strings(&data), "{format}");
        let ty = got[0].schema().field(0).data_type().clone();
        if format == "arrow-file" {
            assert_eq!(ty, DataType::Utf8, "decoded in a file");
        } else {
            assert!(matches!(ty, DataType::Dictionary(..)), "{format}: {ty}");
        }
    }
}

// ---- Arrow ring trust: arena room, lease accounting, sessions ----

/// A small arena and batches far larger than it: `produce` splits each
/// batch until its parts fit the ring's message area, and every part goes
/// in once the consumer has drained the ring, wherever the arena's head
/// stands; nothing waits forever, and every row arrives once.
#[test]
fn produce_with_a_small_arena_and_huge_batches_delivers_every_row() {
    let d = Dir::new("smallarena");
    let data = batches(4, 50_000, true);
    write_stream(&d.path("in.arrows"), &data);
    // The producer first: it creates the ring with its small arena.
    let tx = d.spawn(&[
        "produce",
        "s",
        "-i",
        &d.s("in.arrows"),
        "--batch-rows",
        "10000000",
        "--arena",
        "64KiB",
        "--slots",
        "16",
    ]);
    wait_until("the producer's ring", Duration::from_secs(10), || {
        d.path("s").exists()
    });
    let rx = d.spawn(&["consume", "s", "-o", &d.s("out.arrows")]);
    ok(wait_with_timeout(tx, Duration::from_secs(120)));
    ok(wait_with_timeout(rx, Duration::from_secs(120)));
    assert_eq!(rows(&read_stream(&d.path("out.arrows"))), rows(&data));
}

/// Batch `k` of 100 rows: `id`, and `tag`, a dictionary column whose
/// dictionary is the same in every batch (so it is sent once).
fn tagged(k: usize) -> RecordBatch {
    use arrow_array::{DictionaryArray, Int32Array};
    let tags = Arc::new(StringArray::from(vec!["red", "green", "blue"])) as ArrayRef;
    let keys = Int32Array::from_iter_values((0..100).map(|j| ((k + j) % 3) as i32));
    let tag = DictionaryArray::<arrow_array::types::Int32Type>::try_new(keys, tags).unwrap();
    let id = Int64Array::from_iter_values((0..100).map(|j| (k * 100 + j) as i64));
    RecordBatch::try_from_iter([
        ("id", Arc::new(id) as ArrayRef),
        ("tag", Arc::new(tag) as ArrayRef),
    ])
    .unwrap()
}

/// The rows of `tagged` batches, with the tags decoded.
fn tagged_rows(bs: &[RecordBatch]) -> Vec<(i64, String)> {
    bs.iter()
        .flat_map(|b| {
            let id = b.column(0).as_primitive::<Int64Type>().clone();
            let tag = arrow_cast::cast(b.column(1), &DataType::Utf8).unwrap();
            let tag = tag.as_string::<i32>().clone();
            (0..b.num_rows()).map(move |j| (id.value(j), tag.value(j).to_owned()))
        })
        .collect()
}

/// A sidecar killed while a producer streams into its ring, then started
/// again with a backlog of unreleased batches larger than the lease limit
/// (64), all with one dictionary: it writes every batch it had not
/// released and exits 0. (The Arrow stream writer keeps the last dictionary
/// column it wrote; a leased one kept its batch, and so every later batch,
/// from being released, and `consume` failed with "64 leased batches are
/// outstanding" while holding one at a time.)
#[test]
fn a_restarted_consume_drains_a_dictionary_backlog_beyond_the_lease_limit() {
    let d = Dir::new("backlog");
    let data: Vec<_> = (0..160).map(tagged).collect();
    let mut rx = d.spawn(&["consume", "b", "-o", &d.s("a.arrows")]);
    wait_until("the consumer's ring", Duration::from_secs(10), || {
        d.path("b").exists()
    });
    let mut tx = d
        .cmd(&["produce", "b", "-i", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = StreamWriter::try_new(tx.stdin.take().unwrap(), &data[0].schema()).unwrap();
    for b in &data[..5] {
        w.write(b).unwrap();
        w.flush().unwrap();
    }
    // Slots: the schema, the dictionary, then one per batch.
    wait_until("a batch released", Duration::from_secs(10), || {
        d.seq("b", "read_seq") >= 3
    });
    signal(rx.id(), "KILL");
    let _ = rx.wait();
    for b in &data[5..] {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    drop(w);
    ok(wait_with_timeout(tx, Duration::from_secs(30)));
    let rx = d.spawn(&["consume", "b", "-o", &d.s("b.arrows")]);
    ok(wait_with_timeout(rx, Duration::from_secs(60)));
    let got = read_stream(&d.path("b.arrows"));
    let skipped = data.len() - got.len();
    assert!(skipped <= 5, "the restart skipped {skipped} batches");
    assert_eq!(tagged_rows(&got), tagged_rows(&data[skipped..]));
}

/// Running a pipe again on a ring that carried a finished stream: the new
/// `consume` waits for the next producer and writes its rows, instead of
/// ending at once with an empty output.
#[test]
fn consume_on_a_ring_that_carried_a_finished_stream_waits_for_the_next_producer() {
    let d = Dir::new("rerun");
    let first = batches(3, 100, true);
    let second: Vec<_> = (0..4)
        .map(|k| batch(10_000 + k * 100, 100, false))
        .collect();
    write_stream(&d.path("1.arrows"), &first);
    write_stream(&d.path("2.arrows"), &second);
    ok(d.run(&["produce", "p", "-i", &d.s("1.arrows")]));
    ok(d.run(&["consume", "p", "-o", &d.s("1.out")]));
    assert_eq!(rows(&read_stream(&d.path("1.out"))), rows(&first));
    let rx = d.spawn(&["consume", "p", "-o", &d.s("2.out")]);
    wait_until("the second consumer", Duration::from_secs(10), || {
        d.info("p")["consumer"]["alive"] == true
    });
    ok(d.run(&["produce", "p", "-i", &d.s("2.arrows")]));
    ok(wait_with_timeout(rx, Duration::from_secs(30)));
    assert_eq!(rows(&read_stream(&d.path("2.out"))), rows(&second));
}

/// A consumer stopped (SIGTERM) before it accepted any batch leaves a file
/// that was already there as it was: the output is truncated only once a
/// batch is accepted. A file it created itself becomes a valid empty
/// output.
#[test]
fn a_consumer_stopped_before_any_batch_leaves_an_existing_file_alone() {
    let d = Dir::new("stopped-early");
    ok(d.run(&["create", "e"]));
    std::fs::write(d.path("kept.csv"), "precious\n").unwrap();
    for (out, format) in [("kept.csv", "csv"), ("new.arrows", "arrow")] {
        let rx = d.spawn(&["consume", "e", "-o", &d.s(out), "--format", format]);
        wait_until("the consumer", Duration::from_secs(10), || {
            d.info("e")["consumer"]["alive"] == true
        });
        signal(rx.id(), "TERM");
        ok(wait_with_timeout(rx, Duration::from_secs(30)));
    }
    assert_eq!(std::fs::read(d.path("kept.csv")).unwrap(), b"precious\n");
    assert!(read_stream(&d.path("new.arrows")).is_empty());
}

/// The subcommands `--help` lists (without `help` itself).
fn subcommands(d: &Dir) -> Vec<String> {
    let out = ok(d.run(&["--help"]));
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect();
    for known in [
        "create", "produce", "consume", "info", "ls", "rm", "bench", "demo",
    ] {
        assert!(names.iter().any(|n| n == known), "{known} in {names:?}");
    }
    names
}

#[test]
fn bash_completion_names_every_subcommand_and_completes_them() {
    let d = Dir::new("completions");
    let names = subcommands(&d);
    for name in ["completions", "man"] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    let out = ok(d.run(&["completions", "bash"]));
    let script = String::from_utf8(out.stdout).unwrap();
    // The words offered after `laminar-ring ` (the only list with --version).
    let top = script
        .lines()
        .find(|l| l.trim_start().starts_with("opts=\"") && l.contains(" --version "))
        .unwrap_or_else(|| panic!("no top-level opts line in:\n{script}"));
    for name in &names {
        assert!(
            top.split(['"', ' ']).any(|w| w == name),
            "{name} not offered: {top}"
        );
    }
    // bash itself completes with it: the function the script registers
    // for `laminar-ring`, called as bash calls it on TAB.
    std::fs::write(d.path("laminar-ring.bash"), &script).unwrap();
    let complete = |line: &str| -> Vec<String> {
        let program = format!(
            "source {}; set -- $(complete -p laminar-ring); \
             while [ $# -gt 1 ] && [ \"$1\" != -F ]; do shift; done; f=$2; \
             COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; \
             read -ra COMP_WORDS <<< \"$COMP_LINE\"; \
             COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); \
             $f laminar-ring \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            d.s("laminar-ring.bash")
        );
        let out = ok(Command::new("bash")
            .args(["-c", &program])
            .output()
            .unwrap());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(complete("laminar-ring cons"), ["consume"]);
    assert_eq!(complete("laminar-ring compl"), ["completions"]);
    // After a subcommand, its own arguments (clap-rs/clap#6421 broke these
    // for a binary name with a hyphen).
    assert_eq!(complete("laminar-ring completions ba"), ["bash"]);
    assert_eq!(
        complete("laminar-ring consume --fo"),
        ["--format", "--follow"]
    );
    for shell in ["zsh", "fish"] {
        let out = ok(d.run(&["completions", shell]));
        let script = String::from_utf8(out.stdout).unwrap();
        for name in &names {
            assert!(script.contains(name.as_str()), "{shell}: {name} missing");
        }
    }
    fails(d.run(&["completions", "tcsh"]), 2, "invalid value 'tcsh'");
}

#[test]
fn the_man_page_is_roff_and_lists_every_subcommand() {
    let d = Dir::new("man");
    let names = subcommands(&d);
    let out = ok(d.run(&["man"]));
    let page = String::from_utf8(out.stdout).unwrap();
    let first_macro = page
        .lines()
        .find(|l| l.starts_with('.') && !l.starts_with(".ie") && !l.starts_with(".el"))
        .unwrap();
    assert!(
        first_macro.starts_with(".TH laminar-ring 1"),
        "{first_macro}"
    );
    for name in &names {
        assert!(
            page.contains(&format!("laminar\\-ring\\-{name}(1)")),
            "{name} not in the page:\n{page}"
        );
    }
    // A page per subcommand, with --dir.
    ok(d.run(&["man", "--dir", &d.s("man1")]));
    for name in names.iter().map(String::as_str).chain(["laminar-ring"]) {
        let file = if name == "laminar-ring" {
            "laminar-ring.1".to_owned()
        } else {
            format!("laminar-ring-{name}.1")
        };
        let sub = std::fs::read_to_string(d.path("man1").join(&file)).unwrap();
        assert!(sub.contains(".TH "), "{file}");
    }
    // Rendered, where groff is installed: no warnings, every subcommand.
    match Command::new("groff")
        .args(["-man", "-Tascii", "-ww"])
        .arg(d.path("man1").join("laminar-ring.1"))
        .output()
    {
        Err(e) => eprintln!("the page was not rendered: groff: {e}"),
        Ok(o) => {
            assert!(o.status.success(), "{}", stderr(&o));
            assert_eq!(stderr(&o), "", "groff warnings");
            let text = String::from_utf8_lossy(&o.stdout);
            for name in &names {
                assert!(text.contains(&format!("laminar-ring-{name}(1)")), "{text}");
            }
        }
    }
}

/// Waits until a consumer holds `ring`'s consumer role.
fn wait_for_consumer(d: &Dir, ring: &str) {
    wait_until("the consumer attached", Duration::from_secs(10), || {
        d.try_info(ring)
            .is_some_and(|i| i["consumer"]["alive"] == true)
    });
}

/// A producer whose input is bad before its first batch (a CSV row with
/// the wrong field count inside the inference window, a truncated Parquet
/// or Arrow file) exits 1, and the consumer waiting for it exits 4 with
/// the reason instead of waiting forever.
#[test]
fn a_consumer_waiting_for_a_producer_with_bad_input_exits_4_with_the_reason() {
    let d = Dir::new("failed-input");
    std::fs::write(d.path("bad.csv"), "id,x,name\n1,0.5,a\n2,1.5\n3,2.5,c\n").unwrap();
    write_parquet(&d.path("whole.parquet"), &batches(3, 1000, true));
    write_file(&d.path("whole.arrow"), &batches(3, 1000, true));
    for (whole, cut) in [
        ("whole.parquet", "cut.parquet"),
        ("whole.arrow", "cut.arrow"),
    ] {
        let bytes = std::fs::read(d.path(whole)).unwrap();
        std::fs::write(d.path(cut), &bytes[..bytes.len() / 2]).unwrap();
    }
    for (ring, input) in [("c", "bad.csv"), ("p", "cut.parquet"), ("a", "cut.arrow")] {
        let rx = d.spawn(&["consume", ring, "-o", &d.s(&format!("{ring}.arrows"))]);
        wait_for_consumer(&d, ring);
        fails(d.run(&["produce", ring, "-i", &d.s(input)]), 1, input);
        let out = wait_with_timeout(rx, Duration::from_secs(30));
        let err = stderr(&out);
        fails(
            out,
            4,
            &format!("the producer of ring '{ring}' failed: cannot read {input}"),
        );
        assert!(err.contains("wrote 0 rows"), "{err}");
        assert!(!err.contains("died"), "{err}");
        let info = d.info(ring);
        assert_eq!(info["producer"]["state"], "failed", "{info}");
    }
}

/// A producer whose role is taken by a live producer reports its bad input
/// and leaves the ring, and the live producer's stream, alone.
#[test]
fn bad_input_leaves_a_ring_whose_producer_role_is_taken_alone() {
    let d = Dir::new("failed-taken");
    let data = batches(2, 100, false);
    let mut feeder = Feeder::start(&d, "t");
    feeder.send(&data[0]);
    wait_until("the live producer", Duration::from_secs(10), || {
        d.seq("t", "write_seq") >= 2
    });
    std::fs::write(d.path("bad.csv"), "id,x\n1\n").unwrap();
    fails(
        d.run(&["produce", "t", "-i", &d.s("bad.csv")]),
        1,
        "bad.csv",
    );
    let info = d.info("t");
    assert_eq!(info["producer"]["state"], "attached", "{info}");
    assert_eq!(info["producer"]["alive"], true, "{info}");
    feeder.send(&data[1]);
    ok(feeder.end());
    ok(d.run(&["consume", "t", "-o", &d.s("t.arrows")]));
    assert_eq!(rows(&read_stream(&d.path("t.arrows"))), rows(&data));
}

#[test]
fn consume_with_a_timeout_and_no_producer_exits_5_naming_what_it_waited_for() {
    let d = Dir::new("consume-timeout");
    let rx = d.spawn(&["consume", "w", "-o", &d.s("w.arrows"), "--timeout", "1s"]);
    let out = wait_with_timeout(rx, Duration::from_secs(30));
    fails(out, 5, "no producer attached to ring 'w' within 1s");
}

/// A producer with nobody draining a small ring gives up after its
/// timeout; its stream ends in error, so a consumer that comes later gets
/// what was committed and then the reason.
#[test]
fn produce_with_a_timeout_and_no_consumer_exits_5_when_the_ring_stays_full() {
    let d = Dir::new("produce-timeout");
    let data = batches(8, 100, true);
    write_stream(&d.path("in.arrows"), &data);
    let tx = d.spawn(&[
        "produce",
        "full",
        "-i",
        &d.s("in.arrows"),
        "--slots",
        "2",
        "--arena",
        "64KiB",
        "--timeout",
        "1s",
    ]);
    let out = wait_with_timeout(tx, Duration::from_secs(30));
    fails(out, 5, "no consumer attached to ring 'full' within 1s");
    let info = d.info("full");
    assert_eq!(info["producer"]["state"], "failed", "{info}");
    let out = wait_with_timeout(
        d.spawn(&["consume", "full", "-o", &d.s("full.arrows")]),
        Duration::from_secs(30),
    );
    fails(out, 4, "failed: no consumer attached to ring 'full'");
    // Schema and one batch fitted the two slots.
    assert_eq!(rows(&read_stream(&d.path("full.arrows"))), rows(&data[..1]));
}

/// A sidecar with --idle-exit drains the stream it finds, then stops with
/// exit 0 once no producer has come for that long.
#[test]
fn follow_with_idle_exit_stops_cleanly_when_no_producer_comes() {
    let d = Dir::new("idle-exit");
    let data = batches(3, 100, true);
    write_stream(&d.path("in.arrows"), &data);
    ok(d.run(&["produce", "i", "-i", &d.s("in.arrows")]));
    let rx = d.spawn(&[
        "consume",
        "i",
        "-o",
        &d.s("i.arrows"),
        "--follow",
        "--idle-exit",
        "1s",
    ]);
    let out = ok(wait_with_timeout(rx, Duration::from_secs(30)));
    let err = stderr(&out);
    assert!(err.contains("wrote 300 rows in 3 batches"), "{err}");
    assert!(err.contains("no batch and no producer attached"), "{err}");
    assert_eq!(rows(&read_stream(&d.path("i.arrows"))), rows(&data));
}

/// `--follow` notes a failed producer, with its reason, and goes on to
/// the next producer's rows.
#[test]
fn follow_notes_a_failed_producer_and_keeps_waiting_for_the_next() {
    let d = Dir::new("follow-failed");
    let data = batches(3, 100, true);
    write_stream(&d.path("good.arrows"), &data);
    std::fs::write(d.path("bad.csv"), "id,x,name\n1,0.5,a\n2,1.5\n").unwrap();
    let mut rx = d.spawn(&["consume", "ff", "-o", &d.s("ff.arrows"), "--follow"]);
    let said = lines_of(rx.stderr.take().unwrap());
    wait_for_consumer(&d, "ff");
    fails(
        d.run(&["produce", "ff", "-i", &d.s("bad.csv")]),
        1,
        "bad.csv",
    );
    let line = said.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        line.contains("the producer of ring 'ff' failed: cannot read bad.csv"),
        "{line}"
    );
    assert!(line.contains("waiting for the next producer"), "{line}");
    assert!(
        rx.try_wait().unwrap().is_none(),
        "the sidecar keeps running"
    );
    ok(d.run(&["produce", "ff", "-i", &d.s("good.arrows")]));
    wait_until(
        "the good producer's batches",
        Duration::from_secs(10),
        || {
            let i = d.info("ff");
            i["read_seq"] == i["write_seq"] && i["producer"]["state"] == "closed"
        },
    );
    signal(rx.id(), "TERM");
    ok(wait_with_timeout(rx, Duration::from_secs(10)));
    let line = said.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(line.contains("wrote 300 rows in 3 batches"), "{line}");
    assert_eq!(rows(&read_stream(&d.path("ff.arrows"))), rows(&data));
}

/// A ring whose header says it has 3 slots (not a power of two): damaged.
fn damage(d: &Dir, ring: &str) {
    ok(d.run(&["create", ring, "--slots", "8", "--arena", "64KiB"]));
    let mut bytes = std::fs::read(d.path(ring)).unwrap();
    bytes[24..32].copy_from_slice(&3u64.to_le_bytes());
    std::fs::write(d.path(ring), bytes).unwrap();
}

/// A ring made by a release with another layout version: `version`.
fn other_version(d: &Dir, ring: &str, version: u32) {
    ok(d.run(&["create", ring, "--slots", "8", "--arena", "64KiB"]));
    let mut bytes = std::fs::read(d.path(ring)).unwrap();
    bytes[8..12].copy_from_slice(&version.to_le_bytes());
    std::fs::write(d.path(ring), bytes).unwrap();
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

fn text(o: Output) -> String {
    String::from_utf8_lossy(&ok(o).stdout).into_owned()
}

#[test]
fn rm_refuses_a_ring_in_use_naming_the_live_pids_unless_forced() {
    let d = Dir::new("rm-busy");
    ok(d.run(&["create", "busy", "--slots", "8", "--arena", "64KiB"]));
    let rx = d.spawn(&["consume", "busy", "-o", &d.s("busy.arrows")]);
    wait_until("the consumer attached", Duration::from_secs(10), || {
        d.info("busy")["consumer"]["alive"] == true
    });
    fails(
        d.run(&["rm", "busy"]),
        1,
        &format!(
            "ring 'busy' is in use by consumer pid {}; pass --force to remove it anyway",
            rx.id()
        ),
    );
    assert!(d.path("busy").exists());
    ok(d.run(&["rm", "--force", "busy"]));
    assert!(!d.path("busy").exists());
    signal(rx.id(), "TERM");
    let _ = wait_with_timeout(rx, Duration::from_secs(10));

    // A damaged ring: only with --force.
    damage(&d, "dmg");
    fails(d.run(&["rm", "dmg"]), 1, "pass --force to remove it anyway");
    assert!(d.path("dmg").exists());
    ok(d.run(&["rm", "--force", "dmg"]));
    assert!(!d.path("dmg").exists());

    // Never a file that is not a ring, nor one that is not a regular file.
    std::fs::write(d.path("notes.txt"), "hello, not a ring").unwrap();
    fails(d.run(&["rm", "--force", "notes.txt"]), 1, "not removed");
    assert!(d.path("notes.txt").exists());
    mkfifo(&d.path("fifo"));
    fails(d.run(&["rm", "--force", "fifo"]), 1, "not a regular file");
    assert!(d.path("fifo").exists());
    std::fs::create_dir(d.path("subdir")).unwrap();
    fails(d.run(&["rm", "--force", "subdir"]), 1, "not a regular file");
    assert!(d.path("subdir").exists());
}

#[test]
fn ls_lists_damaged_and_unreadable_rings_with_their_state() {
    let d = Dir::new("ls-states");
    let o = ok(d.run(&["ls"]));
    assert!(stderr(&o).contains("no rings"), "{}", stderr(&o));
    ok(d.run(&["create", "good", "--slots", "8", "--arena", "64KiB"]));
    damage(&d, "dmg");
    other_version(&d, "old", 2);
    std::fs::write(d.path("notes.txt"), "hello, not a ring").unwrap();
    mkfifo(&d.path("fifo"));

    let t = text(d.run(&["ls"]));
    assert!(t.contains("good") && t.contains("never attached"), "{t}");
    assert!(
        t.lines()
            .any(|l| l.starts_with("dmg ") && l.contains("  damaged: bad header field capacity: 3")),
        "{t}"
    );
    assert!(
        t.lines().any(|l| l.starts_with("old ")
            && l.contains(&format!(
                "layout version 2, made by another release of laminar-ring (this one reads {})",
                laminar_ring::shm::header::LAYOUT_VERSION
            ))),
        "{t}"
    );
    assert!(!t.contains("notes") && !t.contains("fifo"), "{t}");
    let ls: Value = serde_json::from_slice(&ok(d.run(&["ls", "--json"])).stdout).unwrap();
    let got: Vec<_> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [("dmg", "damaged"), ("good", "ok"), ("old", "other version")]
    );
    assert!(ls[0]["why"].as_str().unwrap().contains("capacity"));
    assert_eq!(ls[2]["layout_version"], 2);

    // Another user's ring: listed, not hidden.
    use std::os::unix::fs::PermissionsExt;
    let as_other = |args: &[&str]| {
        if nix_is_root() {
            use std::os::unix::process::CommandExt;
            std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o755)).unwrap();
            d.cmd(args).uid(65534).gid(65534).output().unwrap()
        } else {
            std::fs::set_permissions(d.path("good"), std::fs::Permissions::from_mode(0o000))
                .unwrap();
            d.run(args)
        }
    };
    let t = text(as_other(&["ls"]));
    assert!(
        t.lines()
            .any(|l| l.starts_with("good ") && l.contains("  not readable: permission denied")),
        "{t}"
    );
    assert!(!t.contains("no rings"), "{t}");
    let ls: Value = serde_json::from_slice(&ok(as_other(&["ls", "--json"])).stdout).unwrap();
    let good = ls.as_array().unwrap().iter().find(|r| r["name"] == "good");
    assert_eq!(good.unwrap()["status"], "not readable", "{ls}");
    assert_eq!(good.unwrap()["why"], "permission denied", "{ls}");
}

#[test]
fn info_shows_pids_and_how_long_each_side_waits() {
    let d = Dir::new("info-wait");
    ok(d.run(&["create", "w", "--slots", "2", "--arena", "64KiB"]));
    let rx = d.spawn(&["consume", "w", "-o", &d.s("w.arrows")]);
    wait_until("the consumer waits", Duration::from_secs(10), || {
        d.info("w")["consumer"]["waiting"] == true
    });
    let i = d.info("w");
    assert_eq!(i["consumer"]["state"], "attached");
    assert_eq!(i["consumer"]["pid"], rx.id());
    assert!(i["consumer"]["waiting_s"].as_f64().unwrap() >= 0.0);
    let t = text(d.run(&["info", "w"]));
    let want = format!(
        "  default  alive, pid {}, waiting on an empty ring for ",
        rx.id()
    );
    assert!(t.contains(&want), "{want:?} not in {t}");
    signal(rx.id(), "KILL");
    let _ = wait_with_timeout(rx, Duration::from_secs(10));
    let i = d.info("w");
    assert_eq!(
        (&i["consumer"]["state"], &i["consumer"]["alive"]),
        (&Value::from("dead"), &Value::from(false))
    );
    assert_eq!(i["consumer"]["waiting"], false);
    assert!(text(d.run(&["info", "w"])).contains("  default  dead, pid"));

    // Two slots and no consumer: the producer blocks on the full ring.
    let mut feeder = Feeder::start(&d, "w");
    for b in &batches(3, 10, false) {
        feeder.send(b);
    }
    wait_until("the producer blocks", Duration::from_secs(10), || {
        d.info("w")["producer"]["waiting"] == true
    });
    assert_eq!(d.info("w")["producer"]["pid"], feeder.child.id());
    let t = text(d.run(&["info", "w"]));
    let want = format!(
        "producer   alive, pid {}, blocked on a full ring for ",
        feeder.child.id()
    );
    assert!(t.contains(&want), "{want:?} not in {t}");
    signal(feeder.child.id(), "KILL");
    let _ = feeder.child.wait();
    let i = d.info("w");
    assert_eq!(i["producer"]["state"], "dead");
    assert_eq!(i["producer"]["alive"], false);
    assert_eq!(i["producer"]["waiting"], false);
}

#[test]
fn info_watch_refreshes_count_times_with_each_sides_rate() {
    let d = Dir::new("watch");
    ok(d.run(&["create", "r", "--slots", "64", "--arena", "1MiB"]));
    let t = text(d.run(&["info", "r", "--watch", "20ms", "--count", "2"]));
    assert_eq!(t.matches("--- ").count(), 2, "{t}");
    assert!(t.contains("rate in    0 items/s, 0 B/s (producer)"), "{t}");
    let out = text(d.run(&["info", "r", "--watch", "20ms", "--count", "3", "--json"]));
    let samples: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(samples.len(), 3, "{out}");
    assert!(samples[0]["rate"].is_null());
    assert_eq!(samples[2]["rate"]["producer"]["items_per_s"], 0.0);

    // While a producer writes, the rate follows write_seq and the arena.
    let mut watch = d
        .cmd(&["info", "r", "--watch", "100ms", "--count", "600", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(watch.stdout.take().unwrap());
    let mut feeder = Feeder::start(&d, "r");
    let data = batches(20, 50, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut prev: Option<Value> = None;
    let mut sent = 0;
    let seen = loop {
        assert!(Instant::now() < deadline, "no sample with a producer rate");
        if sent < data.len() {
            feeder.send(&data[sent]);
            sent += 1;
        }
        let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) else {
            continue;
        };
        let v: Value = serde_json::from_str(&line).unwrap();
        if let Some(p) = prev.replace(v.clone()) {
            let r = &v["rate"];
            let dt = r["interval_s"].as_f64().unwrap();
            let items = v["write_seq"].as_u64().unwrap() - p["write_seq"].as_u64().unwrap();
            let bytes = v["arena_head"].as_u64().unwrap() - p["arena_head"].as_u64().unwrap();
            let got = r["producer"]["items_per_s"].as_f64().unwrap();
            assert!((got * dt - items as f64).abs() < 1e-6, "{r} vs {items}");
            let got = r["producer"]["bytes_per_s"].as_f64().unwrap();
            assert!((got * dt - bytes as f64).abs() < 1e-3, "{r} vs {bytes}");
            if items > 0 && bytes > 0 {
                break v;
            }
        }
    };
    assert_eq!(seen["rate"]["consumer"]["items_per_s"], 0.0);
    let _ = watch.kill();
    let _ = watch.wait();
    for b in &data[sent..] {
        feeder.send(b);
    }
    ok(feeder.end());
}

#[test]
fn gc_removes_only_finished_rings_and_says_what_it_left() {
    let d = Dir::new("gc");
    let data = batches(2, 100, false);
    write_stream(&d.path("in.arrows"), &data);
    // Finished: produced, consumed, both gone.
    ok(d.run(&["produce", "done", "-i", &d.s("in.arrows")]));
    ok(d.run(&["consume", "done", "-o", &d.s("done.arrows")]));
    // Unfinished: nothing read yet; never used.
    ok(d.run(&["produce", "unread", "-i", &d.s("in.arrows")]));
    ok(d.run(&["create", "fresh"]));
    damage(&d, "dmg");
    std::fs::write(d.path("notes.txt"), "hello, not a ring").unwrap();
    let rx = d.spawn(&["consume", "live", "-o", &d.s("live.arrows")]);
    wait_until("the consumer attached", Duration::from_secs(10), || {
        d.try_info("live")
            .is_some_and(|i| i["consumer"]["alive"] == true)
    });

    let t = text(d.run(&["gc", "--dry-run"]));
    assert_eq!(
        t,
        "would remove done\nwould remove 1 ring; left 1 in use, 2 unfinished, \
         1 damaged or unreadable\n"
    );
    assert!(d.path("done").exists());
    let t = text(d.run(&["gc"]));
    assert_eq!(
        t,
        "removed done\nremoved 1 ring; left 1 in use, 2 unfinished, 1 damaged or unreadable\n"
    );
    assert!(!d.path("done").exists());
    for kept in ["unread", "fresh", "dmg", "notes.txt", "live"] {
        assert!(d.path(kept).exists(), "{kept} removed");
    }
    signal(rx.id(), "TERM");
    let _ = wait_with_timeout(rx, Duration::from_secs(10));
}

/// A temporary ring is removed by its consumer after a clean end of
/// stream, with every row in the output; a ring that is not temporary
/// stays.
#[test]
fn a_temporary_ring_is_removed_by_its_consumer_after_a_clean_end() {
    let d = Dir::new("temporary");
    let data = batches(3, 100, true);
    write_stream(&d.path("in.arrows"), &data);
    let rx = d.spawn(&[
        "consume",
        "tmp",
        "-o",
        &d.s("out.arrows"),
        "--temporary",
        "--timeout",
        "30s",
    ]);
    wait_for_consumer(&d, "tmp");
    assert_eq!(d.info("tmp")["temporary"], true);
    ok(d.run(&["produce", "tmp", "-i", &d.s("in.arrows")]));
    let out = ok(wait_with_timeout(rx, Duration::from_secs(30)));
    assert!(
        stderr(&out).contains("end of stream; removed the temporary ring"),
        "{}",
        stderr(&out)
    );
    assert!(!d.path("tmp").exists(), "the temporary ring is gone");
    assert_eq!(rows(&read_stream(&d.path("out.arrows"))), rows(&data));
    // A ring made without --temporary stays after its stream.
    ok(d.run(&["produce", "kept", "-i", &d.s("in.arrows")]));
    assert_eq!(d.info("kept")["temporary"], false);
    ok(d.run(&["consume", "kept", "-o", &d.s("kept.arrows")]));
    assert!(d.path("kept").exists());
    assert_eq!(rows(&read_stream(&d.path("kept.arrows"))), rows(&data));
}

/// --slots, --arena and --temporary for a ring that exists with another
/// shape: a warning naming each, and the ring used as it is; --strict
/// refuses instead (exit 1), sending nothing.
#[test]
fn shaping_flags_for_an_existing_ring_warn_or_with_strict_refuse() {
    let d = Dir::new("shape");
    let data = batches(2, 10, false);
    write_stream(&d.path("in.arrows"), &data);
    ok(d.run(&["create", "s", "--slots", "8", "--arena", "64KiB"]));
    let o = ok(d.run(&[
        "produce",
        "s",
        "-i",
        &d.s("in.arrows"),
        "--slots",
        "16",
        "--arena",
        "64KiB",
        "--temporary",
    ]));
    let e = stderr(&o);
    assert!(e.contains("warning: ring 's' exists already"), "{e}");
    assert!(e.contains("--slots 16 (it has 8)"), "{e}");
    assert!(
        !e.contains("--arena"),
        "the same arena is no difference: {e}"
    );
    assert!(e.contains("--temporary (it is not temporary)"), "{e}");
    assert_eq!(d.info("s")["write_seq"], 3, "schema and two batches sent");
    fails(
        d.run(&[
            "produce",
            "s",
            "-i",
            &d.s("in.arrows"),
            "--arena",
            "1MiB",
            "--strict",
        ]),
        1,
        "--arena 1.0 MiB (it has 64.0 KiB) ignored",
    );
    assert_eq!(d.info("s")["write_seq"], 3, "nothing sent under --strict");
    // Flags that match, or none at all: silent.
    let o = ok(d.run(&[
        "produce",
        "s",
        "-i",
        &d.s("in.arrows"),
        "--slots",
        "8",
        "--strict",
    ]));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

/// `info` shows the stream's schema as a consumer attaching now reads it:
/// none in a new ring; the schema message a producer left unread; after a
/// consumer read everything, the schema it saved; a typed ring has none.
#[test]
fn info_shows_the_streams_schema() {
    let d = Dir::new("info-schema");
    ok(d.run(&["create", "s", "--slots", "16", "--arena", "1MiB"]));
    let t = text(d.run(&["info", "s"]));
    assert!(t.contains("schema     none yet"), "{t}");
    assert_eq!(d.info("s")["schema"], Value::Null);
    let data = batches(2, 10, true);
    write_stream(&d.path("in.arrows"), &data);
    ok(d.run(&["produce", "s", "-i", &d.s("in.arrows")]));
    let expected: Vec<Value> = schema()
        .fields()
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name(),
                "type": f.data_type().to_string(),
                "nullable": f.is_nullable(),
            })
        })
        .collect();
    let check = |when: &str| {
        let t = text(d.run(&["info", "s"]));
        let n = schema().fields().len();
        assert!(
            t.contains(&format!("schema     {n} columns")),
            "{when}: {t}"
        );
        for f in schema().fields() {
            assert!(
                t.lines()
                    .any(|l| l.trim_start().starts_with(f.name().as_str())
                        && l.contains(&f.data_type().to_string())),
                "{when}: {t}"
            );
        }
        assert_eq!(
            d.info("s")["schema"],
            Value::Array(expected.clone()),
            "{when}"
        );
    };
    check("unread");
    ok(d.run(&["consume", "s", "-o", &d.s("out.arrows")]));
    assert_eq!(d.info("s")["read_seq"], d.info("s")["write_seq"]);
    check("read");
}

#[test]
fn every_slot_count_the_library_refuses_gets_its_one_rule() {
    let d = Dir::new("slots");
    let rule = "must be a power of two from 1 to 2^32 (1, 2, 4, ..., 1024, ..., 4294967296)";
    for bad in ["0", "3", "1000", "8589934592", "x"] {
        let out = d.run(&["create", "s", "--slots", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("'{bad}' slots: {rule}")),
            "{bad}: {err}"
        );
    }
    // One slot is a ring the library makes, and it carries a stream.
    ok(d.run(&["create", "s", "--slots", "1"]));
    assert_eq!(d.info("s")["capacity"], 1, "{}", d.info("s"));
    let data = batches(3, 10, false);
    write_stream(&d.path("in.arrows"), &data);
    let rx = d.spawn(&["consume", "s", "-o", &d.s("s.arrows")]);
    ok(d.run(&["produce", "s", "-i", &d.s("in.arrows")]));
    ok(wait_with_timeout(rx, Duration::from_secs(30)));
    assert_eq!(rows(&read_stream(&d.path("s.arrows"))), rows(&data));
}

#[test]
fn the_usage_line_does_not_show_dir_as_required_when_laminar_ring_dir_is_set() {
    let d = Dir::new("usage");
    // `d.run` sets LAMINAR_RING_DIR.
    let out = d.run(&["produce"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let usage = err
        .lines()
        .find(|l| l.starts_with("Usage:"))
        .unwrap_or_else(|| panic!("no usage line in {err}"));
    assert_eq!(usage, "Usage: laminar-ring produce --input <PATH|-> <NAME>");
    // The variable still chooses the directory, and --help says so.
    let help = text(ok(d.run(&["produce", "--help"])));
    assert!(help.contains("$LAMINAR_RING_DIR"), "{help}");
    assert!(
        help.contains(&format!("[default: {}]", d.0.display())),
        "{help}"
    );
}

#[test]
fn the_top_level_help_describes_the_command_with_an_example() {
    let d = Dir::new("help");
    let long = text(ok(d.run(&["--help"])));
    for want in [
        "Pipe Arrow, Parquet and CSV data between processes through a shared-memory ring",
        "Common subcommands:",
        "Example:",
        "laminar-ring produce trades -i trades.csv",
    ] {
        assert!(long.contains(want), "{want:?} not in {long}");
    }
    // Not the package's description of itself.
    assert!(!long.contains("The laminar-ring command: pipes"), "{long}");
    let short = text(ok(d.run(&["-h"])));
    assert!(
        short.starts_with("Pipe Arrow, Parquet and CSV data"),
        "{short}"
    );
    assert!(!short.contains("Example:"), "{short}");
}

/// The progress lines of `what` (`produce -> r`) in `err`, in order.
fn progress_lines<'a>(err: &'a str, what: &str) -> Vec<&'a str> {
    let prefix = format!("laminar-ring: {what}: ");
    err.lines().filter(|l| l.starts_with(&prefix)).collect()
}

/// The one JSON object among `text`'s lines.
fn json_line(text: &[u8]) -> Value {
    let text = String::from_utf8_lossy(text);
    let objects: Vec<&str> = text.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(objects.len(), 1, "one JSON object in: {text}");
    serde_json::from_str(objects[0]).unwrap()
}

#[test]
fn produce_progress_shows_the_percentage_the_eta_and_the_rings_fill() {
    let d = Dir::new("progress");
    // 1,000 rows, which the Parquet metadata counts; read in 4 batches.
    write_parquet(&d.path("in.parquet"), &batches(4, 250, true));
    let p = ok(d.run(&[
        "produce",
        "pr",
        "-i",
        &d.s("in.parquet"),
        "--batch-rows",
        "250",
        "--progress",
        "always",
    ]));
    let err = stderr(&p);
    let lines = progress_lines(&err, "produce -> pr");
    assert!(lines.len() >= 2, "{err}");
    // No consumer: after the first batch the ring holds the schema and it.
    let first = lines[0];
    for want in ["250 rows, 1 batch,", "25% ETA ", "ring 2/1,024 slots"] {
        assert!(first.contains(want), "{want:?} not in {first}");
    }
    let last = lines[lines.len() - 1];
    for want in [
        "1,000 rows, 4 batches,",
        "100% ETA 0:00:00",
        "ring 5/1,024 slots",
    ] {
        assert!(last.contains(want), "{want:?} not in {last}");
    }
    assert!(!err.contains('\r') && !err.contains('\u{1b}'), "{err:?}");

    // A CSV file: the part of its bytes read.
    write_csv(&d.path("in.csv"), &batches(2, 100, false));
    let p = ok(d.run(&[
        "produce",
        "pc",
        "-i",
        &d.s("in.csv"),
        "--progress",
        "always",
    ]));
    let err = stderr(&p);
    let lines = progress_lines(&err, "produce -> pc");
    let last = lines.last().expect("a progress line");
    assert!(last.contains("100% ETA 0:00:00"), "{err}");

    // The consumer shows the ring's fill too; standard input has no size.
    let c = ok(d.run(&[
        "consume",
        "pr",
        "-o",
        &d.s("pr.arrows"),
        "--progress",
        "always",
    ]));
    let err = stderr(&c);
    let lines = progress_lines(&err, "consume <- pr");
    let last = lines.last().expect("a progress line");
    assert!(last.contains("1,000 rows, 4 batches,"), "{err}");
    assert!(last.contains("/1,024 slots"), "{err}");
    assert!(!last.contains('%'), "{err}");
    assert_eq!(
        rows(&read_stream(&d.path("pr.arrows"))),
        rows(&batches(4, 250, true))
    );
}

#[test]
fn a_following_sidecar_says_it_waits_for_a_producer_instead_of_a_rate() {
    let d = Dir::new("progress-wait");
    write_stream(&d.path("in.arrows"), &batches(3, 100, false));
    let rx = d.spawn(&[
        "consume",
        "fw",
        "-o",
        &d.s("fw.arrows"),
        "--follow",
        "--idle-exit",
        "1s",
        "--progress",
        "always",
    ]);
    wait_for_consumer(&d, "fw");
    ok(d.run(&["produce", "fw", "-i", &d.s("in.arrows")]));
    let out = ok(wait_with_timeout(rx, Duration::from_secs(30)));
    let err = stderr(&out);
    let lines = progress_lines(&err, "consume <- fw");
    // A line while batches came, then, once the stream ended, one that
    // says it waits, with the totals and no rate.
    let moving = lines
        .iter()
        .position(|l| !l.contains("waiting") && l.contains(" rows, "))
        .unwrap_or_else(|| panic!("no line while batches came in {err}"));
    let waiting = lines[moving..]
        .iter()
        .find(|l| l.contains("waiting for a producer"))
        .unwrap_or_else(|| panic!("no waiting line after the batches in {err}"));
    assert!(
        waiting.contains("waiting for a producer; 300 rows, 3 batches,") && !waiting.contains("/s"),
        "{waiting}"
    );
    assert!(err.contains("wrote 300 rows in 3 batches"), "{err}");
}

#[test]
fn json_summaries_count_every_row_and_batch_sent_and_written() {
    let d = Dir::new("json");
    let data = batches(4, 250, true);
    write_stream(&d.path("in.arrows"), &data);
    let p = ok(d.run(&["produce", "j", "-i", &d.s("in.arrows"), "--json"]));
    assert!(stderr(&p).is_empty(), "{}", stderr(&p));
    let sent = json_line(&p.stdout);
    assert_eq!(sent["command"], "produce");
    assert_eq!(sent["ring"], "j");
    assert_eq!(sent["rows"], 1000);
    assert_eq!(sent["batches"], 4);
    assert_eq!(sent["exit_reason"], "closed");
    assert_eq!(sent["exit_code"], 0);
    assert!(sent.get("failure").is_none(), "{sent}");
    let bytes = sent["bytes"].as_u64().unwrap();
    assert!(bytes >= 1000 * 8, "{sent}");
    assert!(sent["seconds"].as_f64().unwrap() >= 0.0, "{sent}");

    // `-o -`: the data on stdout, the summary on stderr.
    let c = ok(d.run(&["consume", "j", "-o", "-", "--json"]));
    let got: Vec<RecordBatch> = StreamReader::try_new(std::io::Cursor::new(c.stdout), None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows(&got), rows(&data));
    let wrote = json_line(&c.stderr);
    assert_eq!(wrote["command"], "consume");
    assert_eq!(wrote["rows"], 1000);
    assert_eq!(wrote["batches"], 4);
    assert_eq!(wrote["bytes"], bytes);
    assert_eq!(wrote["exit_reason"], "closed");

    // A timeout: exit 5, the reason and what it waited for.
    let c = d.run(&[
        "consume",
        "j",
        "-o",
        &d.s("t.arrows"),
        "--timeout",
        "300ms",
        "--json",
    ]);
    assert_eq!(c.status.code(), Some(5), "{}", stderr(&c));
    let v = json_line(&c.stdout);
    assert_eq!(v["exit_reason"], "timeout");
    assert_eq!(v["exit_code"], 5);
    assert_eq!(v["rows"], 0);
    let why = v["failure"].as_str().unwrap();
    assert!(
        why.contains("no producer attached to ring 'j' within 300ms"),
        "{v}"
    );

    // A producer that fails half-way: the consumer says why (exit 4).
    std::fs::write(d.path("bad.csv"), "id,x,name\n1,0.5,a\n2,1.5\n").unwrap();
    let p = d.run(&[
        "produce",
        "f",
        "-i",
        &d.s("bad.csv"),
        "--schema",
        "id:int64,x:float64,name:utf8",
        "--batch-rows",
        "1",
        "--json",
    ]);
    assert_eq!(p.status.code(), Some(1), "{}", stderr(&p));
    let v = json_line(&p.stdout);
    assert_eq!(
        (v["exit_reason"].as_str(), v["rows"].as_u64()),
        (Some("error"), Some(1))
    );
    assert!(v["failure"].as_str().unwrap().contains("bad.csv"), "{v}");
    let c = d.run(&["consume", "f", "-o", &d.s("f.arrows"), "--json"]);
    assert_eq!(c.status.code(), Some(4), "{}", stderr(&c));
    let v = json_line(&c.stdout);
    assert_eq!(v["exit_reason"], "producer_failed");
    assert_eq!(v["rows"], 1);
    assert!(v["failure"].as_str().unwrap().contains("bad.csv"), "{v}");
}

#[test]
fn quiet_prints_nothing_but_errors() {
    let d = Dir::new("quiet-flag");
    write_stream(&d.path("in.arrows"), &batches(2, 10, false));
    let p = ok(d.run(&[
        "produce",
        "q",
        "-i",
        &d.s("in.arrows"),
        "--quiet",
        "--progress",
        "always",
    ]));
    let c = ok(d.run(&[
        "consume",
        "q",
        "-o",
        &d.s("q.arrows"),
        "-q",
        "--progress",
        "always",
    ]));
    for o in [&p, &c] {
        assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{}", stderr(o));
    }
    assert_eq!(
        rows(&read_stream(&d.path("q.arrows"))),
        rows(&batches(2, 10, false))
    );
    // An error is still said, on one line.
    fails(
        d.run(&[
            "consume",
            "q",
            "-o",
            &d.s("t.arrows"),
            "--timeout",
            "200ms",
            "--quiet",
        ]),
        5,
        "no producer attached to ring 'q' within 200ms",
    );
    let t = d.run(&[
        "consume",
        "q",
        "-o",
        &d.s("t.arrows"),
        "--timeout",
        "200ms",
        "--quiet",
    ]);
    assert_eq!(stderr(&t).lines().count(), 1, "{}", stderr(&t));
}

/// An Arrow IPC stream of `bs` without its end-of-stream marker.
fn unfinished_stream(bs: &[RecordBatch]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = StreamWriter::try_new(&mut buf, &schema()).unwrap();
    for b in bs {
        w.write(b).unwrap();
    }
    // Dropped without `finish`.
    drop(w);
    buf
}

#[test]
fn an_interrupted_producer_clears_its_line_says_how_far_it_got_and_dies_by_the_signal() {
    use std::io::Write;
    use std::os::unix::process::ExitStatusExt;
    let d = Dir::new("interrupt");
    let mut tx = d
        .cmd(&["produce", "ip", "-i", "-", "--json", "--progress", "always"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Two batches on stdin, which stays open, without the stream's end:
    // the producer waits for more.
    let mut stdin = tx.stdin.take().unwrap();
    stdin
        .write_all(&unfinished_stream(&batches(2, 50, false)))
        .unwrap();
    stdin.flush().unwrap();
    // The schema and both batches are in the ring.
    wait_until("two batches in the ring", Duration::from_secs(20), || {
        d.seq("ip", "write_seq") >= 3
    });
    signal(tx.id(), "INT");
    let out = wait_with_timeout(tx, Duration::from_secs(20));
    drop(stdin);
    assert_eq!(out.status.signal(), Some(libc::SIGINT), "{}", stderr(&out));
    let v = json_line(&out.stdout);
    assert_eq!(v["exit_reason"], "interrupted");
    assert_eq!(
        (v["rows"].as_u64(), v["batches"].as_u64()),
        (Some(100), Some(2))
    );
    assert_eq!(v["exit_code"], 128 + libc::SIGINT);
    // The stream is not closed: its consumer learns that the producer died.
    let c = d.run(&["consume", "ip", "-o", &d.s("ip.arrows"), "--json"]);
    assert_eq!(c.status.code(), Some(3), "{}", stderr(&c));
    let v = json_line(&c.stdout);
    assert_eq!(v["exit_reason"], "peer_gone");
    assert_eq!(v["rows"], 100);
    assert_eq!(
        rows(&read_stream(&d.path("ip.arrows"))),
        rows(&batches(2, 50, false))
    );

    // Without --json, the summary line says it stopped.
    let mut tx = d
        .cmd(&["produce", "ip2", "-i", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = tx.stdin.take().unwrap();
    stdin
        .write_all(&unfinished_stream(&[batch(0, 1, false)]))
        .unwrap();
    stdin.flush().unwrap();
    wait_until("a batch in the ring", Duration::from_secs(20), || {
        d.seq("ip2", "write_seq") >= 2
    });
    signal(tx.id(), "TERM");
    let out = wait_with_timeout(tx, Duration::from_secs(20));
    drop(stdin);
    assert_eq!(out.status.signal(), Some(libc::SIGTERM));
    let err = stderr(&out);
    assert!(
        err.contains("sent 1 row in 1 batch (") && err.contains("stopped by SIGTERM"),
        "{err}"
    );
}

#[test]
fn a_count_of_one_is_singular_and_an_article_fits_its_word() {
    let d = Dir::new("grammar");
    write_stream(&d.path("one.arrows"), &batches(1, 1, false));
    let p = ok(d.run(&["produce", "g", "-i", &d.s("one.arrows")]));
    assert!(
        stderr(&p).contains("sent 1 row in 1 batch ("),
        "{}",
        stderr(&p)
    );
    let c = ok(d.run(&["consume", "g", "-o", &d.s("g.arrows")]));
    assert!(
        stderr(&c).contains("wrote 1 row in 1 batch ("),
        "{}",
        stderr(&c)
    );
    let out = ok(d.run(&["create", "g1", "--slots", "1"]));
    assert!(text(out).contains(": 1 slot, "));

    // A typed ring (as the library makes them) is not an Arrow one.
    let opts = laminar_ring::shm::SegmentOptions {
        dir: d.0.clone(),
        ..Default::default()
    };
    laminar_ring::shm::create::<u64>("typed", 8, &opts).unwrap();
    fails(
        d.run(&["produce", "typed", "-i", &d.s("one.arrows")]),
        1,
        "a typed ring, not an Arrow one",
    );
}

#[test]
fn sample_writes_the_same_trades_as_csv_and_parquet() {
    let d = Dir::new("sample");
    let out = ok(d.run(&["sample", &d.s("")]));
    assert!(
        stderr(&out).contains("wrote 5,000 trades"),
        "{}",
        stderr(&out)
    );
    let pq = read_parquet(&d.path("trades.parquet"));
    let names: Vec<String> = pq[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["id", "time", "sym", "px", "qty"]);
    let n: usize = pq.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(n, 5_000);
    // The CSV file through a ring gives the Parquet file's rows.
    let rx = d.spawn(&["consume", "t", "-o", &d.s("t.arrows")]);
    ok(d.run(&["produce", "t", "-i", &d.s("trades.csv")]));
    ok(wait_with_timeout(rx, Duration::from_secs(30)));
    let csv = read_stream(&d.path("t.arrows"));
    let cols = |bs: &[RecordBatch]| -> Vec<(i64, String, f64, i64)> {
        let mut out = Vec::new();
        for b in bs {
            let id = b.column(0).as_primitive::<Int64Type>();
            let sym = b.column(2).as_string::<i32>();
            let px = b.column(3).as_primitive::<Float64Type>();
            let qty = b.column(4).as_primitive::<Int64Type>();
            for j in 0..b.num_rows() {
                out.push((
                    id.value(j),
                    sym.value(j).to_owned(),
                    px.value(j),
                    qty.value(j),
                ));
            }
        }
        out
    };
    assert_eq!(cols(&csv), cols(&pq));
    assert_eq!(
        cols(&pq)[0..2].iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1]
    );
    // The same rows every time; an existing file is kept unless --force.
    let before = std::fs::read(d.path("trades.csv")).unwrap();
    fails(d.run(&["sample", &d.s("")]), 1, "already exists");
    ok(d.run(&["sample", &d.s(""), "--force"]));
    assert_eq!(std::fs::read(d.path("trades.csv")).unwrap(), before);
}
