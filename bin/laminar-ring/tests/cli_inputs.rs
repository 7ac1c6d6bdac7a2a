//! `produce` on input files as people have them: hostile framing, other
//! byte orders, compression. The real binary, real files.

mod cli_support;

use std::time::Duration;

use cli_support::{
    Dir, ipc_file, ipc_messages, ipc_stream, offset_in, rich_batches, rows, run_limited, through,
};

/// Peak memory allowed to `produce` on an input of a few tens of KB,
/// whatever it claims: the binary itself takes a few MiB, and a reader
/// that believes the claims takes gigabytes.
const SMALL_INPUT_RSS_LIMIT_KIB: u64 = 200 * 1024;

/// 2 GiB: what the hostile files below claim a block holds.
const CLAIM: i64 = 2 << 30;

/// `bytes` with its one occurrence of `old` (8 bytes, little-endian)
/// replaced by `new`.
fn replace_i64(bytes: &mut [u8], range: std::ops::Range<usize>, old: i64, new: i64) {
    let hits: Vec<usize> = (range.start..range.end - 7)
        .filter(|&i| bytes[i..i + 8] == old.to_le_bytes())
        .collect();
    assert_eq!(hits.len(), 1, "{old} occurs once in the metadata");
    bytes[hits[0]..hits[0] + 8].copy_from_slice(&new.to_le_bytes());
}

#[test]
fn a_small_file_that_claims_huge_blocks_costs_memory_bounded_by_its_real_size() {
    let d = Dir::new("huge-claims");
    let batches = rich_batches(3, 40, true);

    // An IPC file whose footer says its first dictionary and its first
    // record batch have 2 GiB bodies.
    let file = ipc_file(&batches);
    let n = file.len();
    let footer_len = i32::from_le_bytes(file[n - 10..n - 6].try_into().unwrap()) as usize;
    let footer_at = n - 10 - footer_len;
    let (records_at, dicts_at) = {
        let footer = arrow_ipc::root_as_footer(&file[footer_at..n - 10]).unwrap();
        (
            offset_in(&file, footer.recordBatches().unwrap().bytes()),
            offset_in(&file, footer.dictionaries().unwrap().bytes()),
        )
    };
    let mut huge_batch = file.clone();
    // A Block is {offset: i64, metaDataLength: i32, pad, bodyLength: i64}.
    huge_batch[records_at + 16..records_at + 24].copy_from_slice(&CLAIM.to_le_bytes());
    let mut huge_dict = file.clone();
    huge_dict[dicts_at + 16..dicts_at + 24].copy_from_slice(&CLAIM.to_le_bytes());

    // An IPC stream whose first record batch message claims a 2 GiB body.
    let mut stream = ipc_stream(&batches);
    let (_, meta, body) = ipc_messages(&stream, 0)
        .into_iter()
        .find(|(_, meta, _)| {
            arrow_ipc::root_as_message(&stream[meta.clone()])
                .unwrap()
                .header_as_record_batch()
                .is_some()
        })
        .unwrap();
    replace_i64(&mut stream, meta, body.len() as i64, CLAIM);

    let cases = [
        ("huge-batch.arrow", huge_batch, false),
        ("huge-dict.arrow", huge_dict, false),
        ("huge-body.arrows", stream.clone(), false),
        ("huge-body-stdin.arrows", stream, true),
    ];
    for (name, bytes, stdin) in cases {
        let path = d.path(name);
        std::fs::write(&path, &bytes).unwrap();
        let ring = name.replace('.', "-");
        let run = if stdin {
            let cmd = d.cmd(&[
                "produce", &ring, "-i", "-", "--format", "arrow", "--arena", "1MiB",
            ]);
            run_limited(cmd, Some(&path), Duration::from_secs(120))
        } else {
            // A small ring: its mapping counts in the peak too.
            let cmd = d.cmd(&["produce", &ring, "-i", &d.s(name), "--arena", "1MiB"]);
            run_limited(cmd, None, Duration::from_secs(120))
        };
        eprintln!(
            "{name}: {} bytes, claims {CLAIM} bytes; peak RSS {} KiB, exit {:?}",
            bytes.len(),
            run.max_rss_kib,
            run.code
        );
        assert!(!run.timed_out, "{name}: no exit within the deadline");
        run.assert_fails(1, "cannot read");
        assert!(
            run.max_rss_kib < SMALL_INPUT_RSS_LIMIT_KIB,
            "{name}: a {}-byte input took {} KiB",
            bytes.len(),
            run.max_rss_kib
        );
    }
}

/// A schema message declaring one non-nullable int64 column `v`, in
/// `order`: arrow-rs writes no byte order (little-endian by default), so
/// it is built here.
fn schema_in_order<'a>(
    fbb: &mut flatbuffers::FlatBufferBuilder<'a>,
    order: arrow_ipc::Endianness,
) -> flatbuffers::WIPOffset<arrow_ipc::Schema<'a>> {
    let name = fbb.create_string("v");
    let int = {
        let mut b = arrow_ipc::IntBuilder::new(fbb);
        b.add_bitWidth(64);
        b.add_is_signed(true);
        b.finish()
    };
    let children = fbb.create_vector::<flatbuffers::WIPOffset<arrow_ipc::Field>>(&[]);
    let field = {
        let mut b = arrow_ipc::FieldBuilder::new(fbb);
        b.add_name(name);
        b.add_nullable(false);
        b.add_type_type(arrow_ipc::Type::Int);
        b.add_type_(int.as_union_value());
        b.add_children(children);
        b.finish()
    };
    let fields = fbb.create_vector(&[field]);
    let mut b = arrow_ipc::SchemaBuilder::new(fbb);
    b.add_endianness(order);
    b.add_fields(fields);
    b.finish()
}

/// `meta` framed as an encapsulated IPC message without a body.
fn framed(meta: &[u8]) -> Vec<u8> {
    let mut meta = meta.to_vec();
    meta.resize(meta.len().next_multiple_of(8), 0);
    let mut out = vec![0xff; 4];
    out.extend_from_slice(&(meta.len() as i32).to_le_bytes());
    out.extend_from_slice(&meta);
    out
}

/// An IPC stream and an IPC file holding the int64 values `values` in
/// big-endian byte order, as a big-endian machine writes them.
fn big_endian_files(values: &[i64]) -> (Vec<u8>, Vec<u8>) {
    use arrow_ipc::{MessageBuilder, MessageHeader, MetadataVersion};
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let schema = schema_in_order(&mut fbb, arrow_ipc::Endianness::Big);
    let msg = {
        let mut b = MessageBuilder::new(&mut fbb);
        b.add_version(MetadataVersion::V5);
        b.add_header_type(MessageHeader::Schema);
        b.add_header(schema.as_union_value());
        b.finish()
    };
    fbb.finish(msg, None);
    let schema_msg = framed(fbb.finished_data());
    // The record batch as arrow-rs writes it, its values then byte-swapped.
    let batch = arrow_array::RecordBatch::try_new(
        std::sync::Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "v",
            arrow_schema::DataType::Int64,
            false,
        )])),
        vec![std::sync::Arc::new(arrow_array::Int64Array::from(
            values.to_vec(),
        ))],
    )
    .unwrap();
    let le = ipc_stream(&[batch]);
    let (start, meta, body) = ipc_messages(&le, 0)[1].clone();
    let mut batch_msg = le[start..body.end].to_vec();
    let data = {
        let m = arrow_ipc::root_as_message(&le[meta.clone()]).unwrap();
        let bufs = m.header_as_record_batch().unwrap().buffers().unwrap();
        let data = bufs.get(1);
        let at = body.start - start + data.offset() as usize;
        at..at + data.length() as usize
    };
    for v in batch_msg[data].chunks_exact_mut(8) {
        v.reverse();
    }
    let eos = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    let stream = [schema_msg.as_slice(), &batch_msg, &eos].concat();

    // The file: magic, the stream, a footer naming the schema and the batch.
    let mut file = b"ARROW1\0\0".to_vec();
    file.extend_from_slice(&stream);
    let batch_at = 8 + schema_msg.len();
    let meta_len = (meta.end - start) as i32;
    let body_len = (body.end - meta.end) as i64;
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let schema = schema_in_order(&mut fbb, arrow_ipc::Endianness::Big);
    let blocks = fbb.create_vector(&[arrow_ipc::Block::new(batch_at as i64, meta_len, body_len)]);
    let footer = {
        let mut b = arrow_ipc::FooterBuilder::new(&mut fbb);
        b.add_version(MetadataVersion::V5);
        b.add_schema(schema);
        b.add_recordBatches(blocks);
        b.finish()
    };
    fbb.finish(footer, None);
    let footer = fbb.finished_data();
    file.extend_from_slice(footer);
    file.extend_from_slice(&(footer.len() as i32).to_le_bytes());
    file.extend_from_slice(b"ARROW1");
    (stream, file)
}

#[test]
fn big_endian_arrow_input_is_refused_rather_than_read_byte_swapped() {
    let d = Dir::new("big-endian");
    let (stream, file) = big_endian_files(&[1, 2, 258, -7]);
    std::fs::write(d.path("be.arrows"), &stream).unwrap();
    std::fs::write(d.path("be.arrow"), &file).unwrap();
    for name in ["be.arrows", "be.arrow"] {
        d.run(&["produce", "r", "-i", &d.s(name), "--arena", "1MiB"])
            .assert_fails(1, "big-endian");
    }
    let stdin = d.cmd(&[
        "produce", "r", "-i", "-", "--format", "arrow", "--arena", "1MiB",
    ]);
    run_limited(stdin, Some(&d.path("be.arrows")), Duration::from_secs(60))
        .assert_fails(1, "big-endian");
    // Nothing reached the ring (it may not even exist).
    if d.path("r").exists() {
        assert_eq!(d.info("r")["write_seq"], 0);
    }
}

#[test]
fn lz4_and_zstd_compressed_arrow_streams_and_files_are_read() {
    use arrow_ipc::CompressionType;
    use arrow_ipc::writer::{FileWriter, IpcWriteOptions, StreamWriter};
    let d = Dir::new("ipc-compressed");
    let batches = rich_batches(3, 40, true);
    let schema = batches[0].schema();
    for (codec, kind) in [
        (CompressionType::LZ4_FRAME, "lz4"),
        (CompressionType::ZSTD, "zstd"),
    ] {
        let opts = IpcWriteOptions::default()
            .try_with_compression(Some(codec))
            .unwrap();
        let stream = d.path(&format!("{kind}.arrows"));
        let mut w = StreamWriter::try_new_with_options(
            std::fs::File::create(&stream).unwrap(),
            &schema,
            opts.clone(),
        )
        .unwrap();
        let file = d.path(&format!("{kind}.arrow"));
        let mut f =
            FileWriter::try_new_with_options(std::fs::File::create(&file).unwrap(), &schema, opts)
                .unwrap();
        for b in &batches {
            w.write(b).unwrap();
            f.write(b).unwrap();
        }
        w.finish().unwrap();
        f.finish().unwrap();
        for (ring, path) in [(format!("{kind}-s"), stream), (format!("{kind}-f"), file)] {
            let out = through(&d, &ring, &path.display().to_string(), &[]);
            assert_eq!(rows(&out), rows(&batches), "{ring}: every row, every type");
        }
    }
}

#[test]
fn parquet_input_in_every_compression_pyarrow_writes_is_read() {
    use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};
    let d = Dir::new("parquet-codecs");
    let batches = rich_batches(3, 40, false);
    let codecs = [
        ("none", Compression::UNCOMPRESSED),
        ("snappy", Compression::SNAPPY),
        ("gzip", Compression::GZIP(GzipLevel::default())),
        ("brotli", Compression::BROTLI(BrotliLevel::default())),
        ("lz4", Compression::LZ4),
        ("lz4raw", Compression::LZ4_RAW),
        ("zstd", Compression::ZSTD(ZstdLevel::default())),
    ];
    for (name, codec) in codecs {
        let path = d.path(&format!("{name}.parquet"));
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(codec)
            .build();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            batches[0].schema(),
            Some(props),
        )
        .unwrap();
        for b in &batches {
            w.write(b).unwrap();
        }
        w.close().unwrap();
        // What parquet itself reads back: the ring must carry the same.
        let expected: Vec<_> = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
            std::fs::File::open(&path).unwrap(),
            1024,
        )
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
        let out = through(&d, name, &path.display().to_string(), &[]);
        assert_eq!(rows(&out), rows(&expected), "{name}: every row");
        assert_eq!(rows(&out).len(), 120, "{name}");
    }
}

#[test]
fn stdin_without_format_says_what_it_holds_instead_of_an_io_error() {
    let d = Dir::new("stdin-sniff");
    let batches = rich_batches(2, 10, false);
    std::fs::write(d.path("in.arrow"), ipc_file(&batches)).unwrap();
    std::fs::write(d.path("in.csv"), "id,px\n1,2.5\n2,3.5\n").unwrap();
    std::fs::write(d.path("in.txt"), "hello\nworld\n").unwrap();
    std::fs::write(d.path("empty"), b"").unwrap();
    let mut pq = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut pq, batches[0].schema(), None).unwrap();
    w.write(&batches[0]).unwrap();
    w.close().unwrap();
    std::fs::write(d.path("in.parquet"), pq).unwrap();
    std::fs::write(d.path("in.arrows"), ipc_stream(&batches)).unwrap();
    for (file, format, needle) in [
        ("in.csv", None, "standard input holds CSV: add --format csv"),
        ("in.txt", None, "if it is CSV, add --format csv"),
        (
            "in.arrow",
            None,
            "standard input holds an Arrow IPC file, which needs seeking",
        ),
        ("in.arrow", Some("arrow"), "pass it as a path"),
        (
            "in.parquet",
            None,
            "standard input holds Parquet, which needs seeking",
        ),
        ("empty", None, "standard input is empty"),
    ] {
        let mut args = vec!["produce", "s", "-i", "-"];
        if let Some(f) = format {
            args.extend(["--format", f]);
        }
        let run = run_limited(d.cmd(&args), Some(&d.path(file)), Duration::from_secs(60));
        run.assert_fails(1, needle);
        assert!(!run.stderr.contains("fill whole buffer"), "{}", run.stderr);
    }
    // Each refusal above ended a session of ring 's' in error, and a
    // consumer is told each end in turn. A stream on stdin is still read
    // (into a ring of its own).
    let run = run_limited(
        d.cmd(&["produce", "s2", "-i", "-"]),
        Some(&d.path("in.arrows")),
        Duration::from_secs(60),
    );
    run.assert_ok();
    let out = d.s("s.out.arrows");
    d.run(&["consume", "s2", "-o", &out]).assert_ok();
    let got: Vec<_> =
        arrow_ipc::reader::StreamReader::try_new(std::fs::File::open(&out).unwrap(), None)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    assert_eq!(rows(&got), rows(&batches));
}
