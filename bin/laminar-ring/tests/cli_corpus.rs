//! A corpus of malformed inputs, made by mutating real files, through the
//! real `produce`: every case ends within its deadline with exit 0 (the
//! mutation left a readable file) or 1 with one line on stderr; never a
//! panic, an abort or a hang, and never more memory than a small input
//! deserves.
//!
//! The sources are written here by arrow-rs and parquet (many types,
//! dictionaries, unions, nested lists and structs, nulls), and the cases
//! are derived from them by a seeded generator, so every run sees the same
//! corpus: truncations, flipped bytes anywhere and in the flatbuffer or
//! thrift metadata, buffer and node lengths that lie, union type ids and
//! offsets out of range, short validity bitmaps, footers whose blocks lie.

mod cli_support;

use std::time::Duration;

use cli_support::{
    Dir, Rng, ipc_file, ipc_messages, ipc_stream, offset_in, rich_batches, run_limited,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};

/// Cases per source file.
const CASES_PER_SOURCE: usize = 70;
/// A case that has not ended by then hangs.
const DEADLINE: Duration = Duration::from_secs(60);
/// Peak memory allowed to `produce` on any case (inputs of a few tens of
/// KB): the binary itself needs a few MiB.
const RSS_LIMIT_KIB: u64 = 200 * 1024;

/// The name of the case that is a source file as written.
const UNCHANGED: &str = "unchanged source";

/// A mutation, named for the report.
type Case = (String, Vec<u8>);

fn hostile_i64(rng: &mut Rng, real: i64) -> i64 {
    match rng.below(8) {
        0 => 0,
        1 => -1,
        2 => real / 2,
        3 => real + 8,
        4 => real.saturating_mul(4096),
        5 => i64::MAX,
        6 => 1 << 40,
        _ => (rng.next() >> rng.below(64)) as i64,
    }
}

/// Mutations any file gets: truncations and flipped bytes.
fn generic(rng: &mut Rng, src: &[u8], out: &mut Vec<Case>, n: usize) {
    for k in 0..n {
        let mut b = src.to_vec();
        if k % 3 == 0 {
            let at = rng.below(b.len());
            b.truncate(at);
            out.push((format!("truncate at {at}"), b));
        } else {
            let flips = 1 + rng.below(4);
            for _ in 0..flips {
                let at = rng.below(b.len());
                b[at] ^= 1 << rng.below(8);
            }
            out.push((format!("{flips} flipped bits"), b));
        }
    }
}

/// Mutations of the IPC messages that start at `first` in `src`: bytes of
/// their flatbuffer metadata, buffer and node fields, body contents.
fn ipc_targeted(rng: &mut Rng, src: &[u8], first: usize, out: &mut Vec<Case>, n: usize) {
    let msgs = ipc_messages(src, first);
    for k in 0..n {
        let mut b = src.to_vec();
        let (_, meta, body) = msgs[rng.below(msgs.len())].clone();
        let m = arrow_ipc::root_as_message(&src[meta.clone()]).unwrap();
        let batch = m
            .header_as_record_batch()
            .or_else(|| m.header_as_dictionary_batch().and_then(|d| d.data()));
        match (k % 5, batch) {
            (1, Some(batch)) => {
                // A buffer whose offset or length lies (short bitmaps among them).
                let bufs = batch.buffers().unwrap();
                let at =
                    offset_in(src, bufs.bytes()) + 16 * rng.below(bufs.len()) + 8 * rng.below(2);
                let real = i64::from_le_bytes(src[at..at + 8].try_into().unwrap());
                b[at..at + 8].copy_from_slice(&hostile_i64(rng, real).to_le_bytes());
                out.push(("a buffer's offset or length lies".into(), b));
            }
            (2, Some(batch)) => {
                // A node whose length or null count lies.
                let nodes = batch.nodes().unwrap();
                let at =
                    offset_in(src, nodes.bytes()) + 16 * rng.below(nodes.len()) + 8 * rng.below(2);
                let real = i64::from_le_bytes(src[at..at + 8].try_into().unwrap());
                b[at..at + 8].copy_from_slice(&hostile_i64(rng, real).to_le_bytes());
                out.push(("a node's length or null count lies".into(), b));
            }
            (3, Some(batch)) if !body.is_empty() => {
                // One buffer's contents replaced: union type ids and offsets,
                // list offsets, dictionary keys, validity bits.
                let bufs: Vec<_> = batch.buffers().unwrap().iter().copied().collect();
                let buf = bufs[rng.below(bufs.len())];
                let start = body.start + buf.offset() as usize;
                let end = (start + buf.length() as usize).min(body.end);
                for byte in &mut b[start..end] {
                    if rng.below(3) == 0 {
                        *byte = rng.next() as u8;
                    }
                }
                out.push(("a buffer's contents scrambled".into(), b));
            }
            (4, _) => {
                // The message's metadata length or body length lies.
                let at = meta.start - 4;
                let real = i32::from_le_bytes(src[at..at + 4].try_into().unwrap());
                let lie = [0, -8, real + 8, real / 2, i32::MAX][rng.below(5)];
                b[at..at + 4].copy_from_slice(&lie.to_le_bytes());
                out.push(("a message's metadata length lies".into(), b));
            }
            _ => {
                let flips = 1 + rng.below(3);
                for _ in 0..flips {
                    let at = meta.start + rng.below(meta.len());
                    b[at] = rng.next() as u8;
                }
                out.push(("metadata bytes flipped".into(), b));
            }
        }
    }
}

/// Mutations of an IPC file's footer: its bytes, its blocks, its length.
fn ipc_footer(rng: &mut Rng, src: &[u8], out: &mut Vec<Case>, n: usize) {
    let len = src.len();
    let footer_len = i32::from_le_bytes(src[len - 10..len - 6].try_into().unwrap()) as usize;
    let footer_at = len - 10 - footer_len;
    let footer = arrow_ipc::root_as_footer(&src[footer_at..len - 10]).unwrap();
    let mut blocks = vec![offset_in(src, footer.recordBatches().unwrap().bytes())];
    blocks.extend(footer.dictionaries().map(|d| offset_in(src, d.bytes())));
    for k in 0..n {
        let mut b = src.to_vec();
        match k % 3 {
            0 => {
                // A block's offset, metadata length or body length lies.
                let at = blocks[rng.below(blocks.len())];
                let field = [0, 8, 16][rng.below(3)];
                let at = at + field;
                let width = if field == 8 { 4 } else { 8 };
                let real = i64::from_le_bytes(src[at..at + 8].try_into().unwrap());
                let lie = hostile_i64(rng, real).to_le_bytes();
                b[at..at + width].copy_from_slice(&lie[..width]);
                out.push(("a footer block lies".into(), b));
            }
            1 => {
                let lie = [0, -1, footer_len as i32 + 8, len as i32, i32::MAX][rng.below(5)];
                b[len - 10..len - 6].copy_from_slice(&lie.to_le_bytes());
                out.push(("the footer length lies".into(), b));
            }
            _ => {
                let at = footer_at + rng.below(footer_len);
                b[at] = rng.next() as u8;
                out.push(("footer bytes flipped".into(), b));
            }
        }
    }
}

/// Mutations of a Parquet file: its footer (thrift metadata) and the
/// page headers at the start of each column chunk.
fn parquet_targeted(rng: &mut Rng, src: &[u8], out: &mut Vec<Case>, n: usize) {
    let len = src.len();
    let footer_len = u32::from_le_bytes(src[len - 8..len - 4].try_into().unwrap()) as usize;
    let footer_at = len - 8 - footer_len;
    let reader = SerializedFileReader::new(bytes::Bytes::from(src.to_vec())).unwrap();
    let mut chunks = Vec::new();
    for rg in reader.metadata().row_groups() {
        for c in rg.columns() {
            let (start, clen) = c.byte_range();
            chunks.push((start as usize, clen as usize));
        }
    }
    for k in 0..n {
        let mut b = src.to_vec();
        if k % 2 == 0 {
            let flips = 1 + rng.below(3);
            for _ in 0..flips {
                let at = footer_at + rng.below(footer_len);
                b[at] = rng.next() as u8;
            }
            out.push(("thrift footer bytes changed".into(), b));
        } else {
            // A page header (and what follows it) at a column chunk's start.
            let (start, clen) = chunks[rng.below(chunks.len())];
            let at = start + rng.below(clen.min(48));
            b[at] = rng.next() as u8;
            out.push(("a page header byte changed".into(), b));
        }
    }
}

fn parquet_source(batches: &[arrow_array::RecordBatch], compression: Compression) -> Vec<u8> {
    let props = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(50))
        .set_data_page_row_count_limit(16)
        .set_write_batch_size(16)
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batches[0].schema(), Some(props)).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    out
}

/// Every case: `(source name, extension, case name, bytes)`.
fn corpus() -> Vec<(String, &'static str, Case)> {
    let with_unions = rich_batches(3, 40, true);
    let plain = rich_batches(3, 40, false);
    let mut sources: Vec<(&str, &str, Vec<u8>)> = vec![
        ("stream", "arrows", ipc_stream(&with_unions)),
        ("file", "arrow", ipc_file(&with_unions)),
        (
            "parquet-snappy",
            "parquet",
            parquet_source(&plain, Compression::SNAPPY),
        ),
        (
            "parquet-plain",
            "parquet",
            parquet_source(&plain, Compression::UNCOMPRESSED),
        ),
        (
            "parquet-zstd",
            "parquet",
            parquet_source(&plain, Compression::ZSTD(ZstdLevel::default())),
        ),
    ];
    // The stream as it is inside the file, too (messages from offset 8).
    sources.push(("file-messages", "arrow", ipc_file(&with_unions)));
    let mut rng = Rng::new(0x001a_3d11);
    let mut all = Vec::new();
    for (name, ext, src) in &sources {
        // First the source itself, which must be read whole.
        let mut cases = vec![(UNCHANGED.to_string(), src.clone())];
        let third = CASES_PER_SOURCE / 3;
        generic(&mut rng, src, &mut cases, third);
        match *name {
            "stream" => ipc_targeted(&mut rng, src, 0, &mut cases, CASES_PER_SOURCE - third),
            "file" => ipc_footer(&mut rng, src, &mut cases, CASES_PER_SOURCE - third),
            "file-messages" => ipc_targeted(&mut rng, src, 8, &mut cases, CASES_PER_SOURCE - third),
            _ => parquet_targeted(&mut rng, src, &mut cases, CASES_PER_SOURCE - third),
        }
        all.extend(cases.into_iter().map(|c| (name.to_string(), *ext, c)));
    }
    all
}

#[test]
fn malformed_inputs_never_panic_hang_or_balloon_in_produce() {
    let d = Dir::new("corpus");
    let cases = corpus();
    assert!(cases.len() >= 400, "{} cases", cases.len());
    let mut failures = Vec::new();
    let (mut refused, mut read, mut worst_rss) = (0, 0, (0_u64, String::new()));
    // Refusals where a decoder panicked and the guard caught it.
    let mut caught = 0;
    let mut formats = std::collections::BTreeMap::<String, usize>::new();
    for (i, (source, ext, (what, bytes))) in cases.iter().enumerate() {
        *formats.entry(source.clone()).or_default() += 1;
        let path = d.path(&format!("case-{i}.{ext}"));
        std::fs::write(&path, bytes).unwrap();
        let ring = format!("c{i}");
        let cmd = d.cmd(&[
            "produce",
            &ring,
            "-i",
            &path.display().to_string(),
            "--arena",
            "16MiB",
        ]);
        let run = run_limited(cmd, None, DEADLINE);
        let _ = std::fs::remove_file(d.path(&ring));
        let _ = std::fs::remove_file(&path);
        let label = format!("case {i} ({source}: {what}, {} bytes)", bytes.len());
        if run.max_rss_kib > worst_rss.0 {
            worst_rss = (run.max_rss_kib, label.clone());
        }
        let err = run.stderr.trim_end();
        let problem = if run.timed_out {
            Some("did not end within the deadline".to_string())
        } else if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
            Some(format!("panicked: {err}"))
        } else if run.max_rss_kib > RSS_LIMIT_KIB {
            Some(format!("peak RSS {} KiB", run.max_rss_kib))
        } else {
            match run.code {
                _ if what == UNCHANGED && run.code != Some(0) => {
                    Some(format!("a valid source was refused: {err}"))
                }
                Some(0) => {
                    read += 1;
                    None
                }
                Some(1)
                    if err.lines().count() == 1 && err.starts_with("laminar-ring: cannot read") =>
                {
                    refused += 1;
                    caught += usize::from(err.contains("malformed data:"));
                    None
                }
                code => Some(format!("exit {code:?} (signal {:?}): {err}", run.signal)),
            }
        };
        if let Some(p) = problem {
            failures.push(format!("{label}: {p}"));
        }
    }
    eprintln!(
        "{} cases {formats:?}: {refused} refused with one line ({caught} of them a decoder \
         panic caught quietly), {read} read whole; worst peak RSS {} KiB ({})",
        cases.len(),
        worst_rss.0,
        worst_rss.1
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The corpus must exercise the refusal path, not only harmless bytes.
    assert!(refused > cases.len() / 3, "only {refused} refused");
}
