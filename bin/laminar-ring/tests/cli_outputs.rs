//! `consume` writing files other tools read, and never releasing a batch
//! that is not in its output. The real binary, real files.

mod cli_support;

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};

use cli_support::{Dir, ipc_stream, rich_batches, rows, run_limited};

/// Every batch of an Arrow IPC stream file.
fn read_stream(path: &std::path::Path) -> Vec<arrow_array::RecordBatch> {
    arrow_ipc::reader::StreamReader::try_new(File::open(path).unwrap(), None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Produces `batches` into ring `ring` (which then holds them all).
fn fill(d: &Dir, ring: &str, batches: &[arrow_array::RecordBatch]) {
    let src = d.path(&format!("{ring}.src.arrows"));
    std::fs::write(&src, ipc_stream(batches)).unwrap();
    d.run(&["produce", ring, "-i", &src.display().to_string()])
        .assert_ok();
}

/// What a fresh consumer of `ring` receives, as an Arrow stream.
fn drain(d: &Dir, ring: &str) -> Vec<arrow_array::RecordBatch> {
    let out = d.path(&format!("{ring}.next.arrows"));
    d.run(&["consume", ring, "-o", &out.display().to_string()])
        .assert_ok();
    read_stream(&out)
}

/// A pipe whose read end is already closed: writing to it fails (EPIPE).
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    #[allow(unsafe_code)] // one libc call
    // SAFETY: pipe(2) writes two descriptors into the array we pass.
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(rc, 0);
    #[allow(unsafe_code)]
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

#[test]
fn parquet_output_refuses_a_union_stream_before_writing_and_leaves_the_ring_whole() {
    let d = Dir::new("parquet-union");
    let batches = rich_batches(3, 20, true);
    fill(&d, "u", &batches);
    let out = d.path("out.parquet");
    std::fs::write(&out, b"an earlier file").unwrap();
    let run = d.run(&[
        "consume",
        "u",
        "-o",
        &out.display().to_string(),
        "--format",
        "parquet",
    ]);
    run.assert_fails(1, "union");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"an earlier file",
        "not truncated"
    );
    // The next consumer gets every batch.
    assert_eq!(rows(&drain(&d, "u")), rows(&batches));
}

#[test]
fn a_batch_whose_write_fails_stays_in_the_ring_for_the_next_consumer() {
    let d = Dir::new("write-fails");
    let batches = rich_batches(4, 30, true);
    for format in ["arrow", "arrow-file", "csv"] {
        let ring = format!("w-{format}");
        let plain: Vec<_> = if format == "csv" {
            rich_batches(4, 30, false)
                .iter()
                .map(|b| b.project(&[0, 1, 2, 4, 6]).unwrap())
                .collect()
        } else {
            batches.clone()
        };
        fill(&d, &ring, &plain);
        // /dev/full: every write fails with ENOSPC, as on a full disk.
        d.run(&["consume", &ring, "-o", "/dev/full", "--format", format])
            .assert_fails(1, "No space left on device");
        assert_eq!(
            rows(&drain(&d, &ring)),
            rows(&plain),
            "{format}: every batch"
        );
    }
}

#[test]
fn parquet_output_releases_no_batch_before_it_is_in_the_file() {
    let d = Dir::new("parquet-full");
    let batches = rich_batches(5, 30, false);
    fill(&d, "p", &batches);
    d.run(&["consume", "p", "-o", "/dev/full", "--format", "parquet"])
        .assert_fails(1, "No space left on device");
    assert_eq!(rows(&drain(&d, "p")), rows(&batches), "every batch");
}

#[test]
fn a_closed_stdout_is_a_quiet_end_that_releases_nothing_unwritten() {
    let d = Dir::new("closed-pipe");
    let batches = rich_batches(3, 20, true);
    fill(&d, "c", &batches);
    let mut consume = d.cmd(&["consume", "c", "-o", "-"]);
    consume
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let out = consume.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "quiet");
    assert_eq!(rows(&drain(&d, "c")), rows(&batches), "nothing lost");

    // CSV too (its writer keeps only the text of an I/O error), read as
    // `| head` does: a few bytes, then the pipe closes while the consumer
    // is still writing a batch larger than its 1 MiB output buffer.
    let ids = Int64Array::from_iter_values(1_000_000_000..1_000_300_000);
    let names = StringArray::from_iter_values((0..300_000).map(|i| format!("name{i}")));
    let flat = RecordBatch::try_from_iter([
        ("id", Arc::new(ids) as ArrayRef),
        ("name", Arc::new(names) as ArrayRef),
    ])
    .unwrap();
    fill(&d, "flat", std::slice::from_ref(&flat));
    let mut child = d
        .cmd(&["consume", "flat", "-o", "-", "--format", "csv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut head = [0_u8; 64];
    std::io::Read::read_exact(&mut child.stdout.take().unwrap(), &mut head).unwrap();
    assert!(head.starts_with(b"id,name\n1000000000,name0\n"), "{head:?}");
    // The read end is closed now (dropped above).
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "csv: consume did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "csv: {err}");
    assert_eq!(err, "", "csv: quiet");
    assert_eq!(
        rows(&drain(&d, "flat")),
        rows(&[flat]),
        "csv: the unwritten batch stays in the ring"
    );

    // Every command that prints: ls, info, create.
    d.run(&["create", "other"]).assert_ok();
    for args in [
        &["ls"][..],
        &["ls", "--json"],
        &["info", "c"],
        &["info", "c", "--json"],
    ] {
        let out = d
            .cmd(args)
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert_eq!(err, "", "{args:?}: quiet");
    }
}

#[test]
fn a_refused_consumer_leaves_the_running_consumers_file_alone() {
    let d = Dir::new("second-consumer");
    let out = d.path("live.arrows");
    let out_s = out.display().to_string();
    let mut live = d
        .cmd(&["consume", "s", "-o", &out_s, "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let batches = rich_batches(3, 20, true);
    fill(&d, "s", &batches);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = d.info("s");
        if info["read_seq"] == info["write_seq"] {
            break;
        }
        if let Some(status) = live.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(live.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("the live consumer exited ({status}): {err}");
        }
        assert!(
            Instant::now() < deadline,
            "the live consumer drains the ring: {info}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = std::fs::read(&out).unwrap();
    assert!(!before.is_empty());
    d.run(&["consume", "s", "-o", &out_s]).assert_fails(
        1,
        "consumer \"default\" is attached in another live process",
    );
    assert_eq!(std::fs::read(&out).unwrap(), before, "untouched");
    let pid = libc::pid_t::try_from(live.id()).unwrap();
    #[allow(unsafe_code)] // one libc call
    // SAFETY: kill(2) on our own unreaped child.
    unsafe {
        libc::kill(pid, libc::SIGTERM)
    };
    let status = live.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(rows(&read_stream(&out)), rows(&batches));
}

#[test]
fn consume_exits_within_its_deadline_on_each_failure() {
    // The runs above each end by themselves; this one pins the slowest
    // path (a Parquet row group held while idle) under run_limited.
    let d = Dir::new("deadline");
    fill(&d, "t", &rich_batches(2, 10, false));
    let run = run_limited(
        d.cmd(&["consume", "t", "-o", "/dev/full", "--format", "parquet"]),
        None,
        Duration::from_secs(60),
    );
    assert!(!run.timed_out);
    run.assert_fails(1, "cannot write");
}

/// Three batches of `id: int64, sym: utf8`, `n` rows in all.
fn simple_batches(n: i64) -> Vec<RecordBatch> {
    (0..3)
        .map(|b| {
            let ids: Vec<i64> = (b * n / 3..(b + 1) * n / 3).collect();
            let syms: Vec<String> = ids.iter().map(|i| format!("s{i}")).collect();
            RecordBatch::try_from_iter([
                ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
                ("sym", Arc::new(StringArray::from(syms)) as ArrayRef),
            ])
            .unwrap()
        })
        .collect()
}

fn read_parquet(path: &std::path::Path) -> Vec<RecordBatch> {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        File::open(path).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn read_ipc_file(path: &std::path::Path) -> Vec<RecordBatch> {
    arrow_ipc::reader::FileReader::try_new(File::open(path).unwrap(), None)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn consume_infers_the_output_format_from_the_file_extension_and_format_overrides_it() {
    let d = Dir::new("out-ext");
    let batches = simple_batches(30);
    let csv_text = |sep: &str| {
        let mut t = format!("id{sep}sym\n");
        for i in 0..30 {
            t.push_str(&format!("{i}{sep}s{i}\n"));
        }
        t
    };
    for (i, (name, extra)) in [
        ("x.parquet", None),
        ("x.pq", None),
        ("x.arrow", None),
        ("x.feather", None),
        ("x.ipc", None),
        ("x.arrows", None),
        ("x.csv", None),
        ("x.tsv", None),
        ("x.out", None),
        ("y.parquet", Some("arrow")),
        ("y.csv", Some("parquet")),
    ]
    .into_iter()
    .enumerate()
    {
        let ring = format!("r{i}");
        fill(&d, &ring, &batches);
        let out = d.path(name);
        let mut args = vec!["consume", &ring, "-o"];
        let out_s = out.display().to_string();
        args.push(&out_s);
        if let Some(f) = extra {
            args.extend(["--format", f]);
        }
        d.run(&args).assert_ok();
        let bytes = std::fs::read(&out).unwrap();
        let expect = match (name.rsplit('.').next().unwrap(), extra) {
            (_, Some(f)) => f,
            ("parquet" | "pq", None) => "parquet",
            ("arrow" | "feather" | "ipc", None) => "arrow-file",
            ("csv", None) => "csv",
            ("tsv", None) => "tsv",
            _ => "arrow",
        };
        match expect {
            "parquet" => {
                assert_eq!(&bytes[..4], b"PAR1", "{name}");
                assert_eq!(&bytes[bytes.len() - 4..], b"PAR1", "{name}");
                assert_eq!(rows(&read_parquet(&out)), rows(&batches), "{name}");
            }
            "arrow-file" => {
                assert_eq!(&bytes[..6], b"ARROW1", "{name}");
                assert_eq!(rows(&read_ipc_file(&out)), rows(&batches), "{name}");
            }
            "csv" => assert_eq!(String::from_utf8(bytes).unwrap(), csv_text(","), "{name}"),
            "tsv" => assert_eq!(String::from_utf8(bytes).unwrap(), csv_text("\t"), "{name}"),
            _ => {
                assert_eq!(&bytes[..4], &[0xff; 4], "{name}: an IPC stream");
                assert_eq!(rows(&read_stream(&out)), rows(&batches), "{name}");
            }
        }
    }
}

#[test]
fn parquet_output_uses_the_compression_and_row_group_size_asked_for() {
    use parquet::basic::Compression;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let d = Dir::new("out-codec");
    let batches = simple_batches(3000);
    for (i, (codec, want)) in [
        ("snappy", Compression::SNAPPY),
        ("zstd", Compression::ZSTD(Default::default())),
        ("lz4", Compression::LZ4_RAW),
        ("gzip", Compression::GZIP(Default::default())),
        ("none", Compression::UNCOMPRESSED),
    ]
    .into_iter()
    .enumerate()
    {
        let ring = format!("c{i}");
        fill(&d, &ring, &batches);
        let out = d.path(&format!("{codec}.parquet"));
        d.run(&[
            "consume",
            &ring,
            "-o",
            &out.display().to_string(),
            "--compression",
            codec,
            "--row-group-rows",
            "700",
        ])
        .assert_ok();
        let r = SerializedFileReader::new(File::open(&out).unwrap()).unwrap();
        let meta = r.metadata();
        assert!(
            meta.num_row_groups() >= 5,
            "{codec}: 3000 rows in groups of 700"
        );
        let mut total = 0;
        for g in meta.row_groups() {
            assert!(g.num_rows() <= 700, "{codec}: a group of {}", g.num_rows());
            total += g.num_rows();
            for c in g.columns() {
                assert_eq!(
                    std::mem::discriminant(&c.compression()),
                    std::mem::discriminant(&want),
                    "{codec}"
                );
            }
        }
        assert_eq!(total, 3000);
        assert_eq!(rows(&read_parquet(&out)), rows(&batches), "{codec}");
    }
    // The default stays snappy.
    fill(&d, "dflt", &batches);
    let out = d.path("default.parquet");
    d.run(&["consume", "dflt", "-o", &out.display().to_string()])
        .assert_ok();
    let r = SerializedFileReader::new(File::open(&out).unwrap()).unwrap();
    assert_eq!(
        r.metadata().row_group(0).column(0).compression(),
        Compression::SNAPPY
    );
    let zero = d.run(&["consume", "dflt", "-o", "-", "--row-group-rows", "0"]);
    assert_eq!(zero.code, Some(2), "{}", zero.stderr);
    assert!(
        zero.stderr.contains("must be at least 1"),
        "{}",
        zero.stderr
    );
}
