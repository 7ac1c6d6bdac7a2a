//! Types as the tools people read the output with expect them: time
//! zones, Parquet logical types, polars' categoricals. Pure Rust; the same
//! checks against pyarrow, polars and DuckDB are in `cli_python.rs`.

mod cli_support;

use std::fs::File;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::{
    Array, ArrayRef, Date64Array, DictionaryArray, RecordBatch, StringViewArray, Time32SecondArray,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampSecondArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use cli_support::{Dir, ipc_stream};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{LogicalType, TimeUnit as PqUnit};
use parquet::file::reader::{FileReader, SerializedFileReader};

fn batch_of(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

/// `batch` through a ring into `format` output at `out`.
fn out_as(d: &Dir, ring: &str, batch: &RecordBatch, format: &str, out: &str) {
    let src = d.path(&format!("{ring}.arrows"));
    std::fs::write(&src, ipc_stream(std::slice::from_ref(batch))).unwrap();
    d.run(&["produce", ring, "-i", &src.display().to_string()])
        .assert_ok();
    d.run(&["consume", ring, "-o", out, "--format", format])
        .assert_ok();
}

fn read_parquet(path: &str) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn csv_output_writes_timestamps_in_named_zones_utc_included() {
    let d = Dir::new("csv-zones");
    // 2024-01-01T00:00:00Z.
    let t = 1_704_067_200_000_i64;
    let batch = batch_of(vec![
        (
            "utc",
            Arc::new(TimestampMillisecondArray::from(vec![t]).with_timezone("UTC")),
        ),
        (
            "tokyo",
            Arc::new(TimestampMicrosecondArray::from(vec![t * 1000]).with_timezone("Asia/Tokyo")),
        ),
        (
            "paris",
            Arc::new(TimestampMillisecondArray::from(vec![t]).with_timezone("Europe/Paris")),
        ),
    ]);
    let out = d.s("out.csv");
    out_as(&d, "z", &batch, "csv", &out);
    let csv = std::fs::read_to_string(&out).unwrap();
    let row = csv.lines().nth(1).unwrap();
    assert!(row.starts_with("2024-01-01T00:00:00"), "{row}");
    assert!(row.contains("2024-01-01T09:00:00+09:00"), "{row}");
    assert!(row.contains("2024-01-01T01:00:00+01:00"), "{row}");
    assert_eq!(
        d.info("z")["read_seq"],
        d.info("z")["write_seq"],
        "all released once written"
    );
}

#[test]
fn parquet_output_stores_second_timestamps_times_and_date64_with_logical_types() {
    let d = Dir::new("parquet-logical");
    let secs = 1_704_067_200_i64;
    let batch = batch_of(vec![
        (
            "ts",
            Arc::new(TimestampSecondArray::from(vec![secs, secs + 1])),
        ),
        (
            "ts_tz",
            Arc::new(TimestampSecondArray::from(vec![secs, secs + 2]).with_timezone("UTC")),
        ),
        (
            "day",
            Arc::new(Date64Array::from(vec![secs * 1000, (secs + 86_400) * 1000])),
        ),
        (
            "time",
            Arc::new(Time32SecondArray::from(vec![3_600, 7_201])),
        ),
    ]);
    let out = d.s("out.parquet");
    out_as(&d, "l", &batch, "parquet", &out);
    let reader = SerializedFileReader::new(File::open(&out).unwrap()).unwrap();
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let logical: Vec<_> = (0..4)
        .map(|i| schema.column(i).logical_type_ref().cloned())
        .collect();
    assert_eq!(
        logical,
        [
            Some(LogicalType::timestamp(false, PqUnit::MILLIS)),
            Some(LogicalType::timestamp(true, PqUnit::MILLIS)),
            Some(LogicalType::Date),
            Some(LogicalType::time(false, PqUnit::MILLIS)),
        ]
    );
    // The same instants, read back.
    let back = read_parquet(&out);
    let ts = back[0].column(0).as_primitive::<TimestampMillisecondType>();
    assert_eq!(ts.values(), &[secs * 1000, (secs + 1) * 1000]);
}

#[test]
fn parquet_input_keeps_the_time_zone_its_writer_stored() {
    let d = Dir::new("parquet-zone");
    // As pyarrow writes timestamp[s, Asia/Tokyo]: milliseconds adjusted to
    // UTC in Parquet, and the original type in the stored Arrow schema.
    let t = 1_704_067_200_000_i64;
    let data = batch_of(vec![(
        "at",
        Arc::new(TimestampMillisecondArray::from(vec![t, t + 1000]).with_timezone("UTC")),
    )]);
    let original = Schema::new(vec![Field::new(
        "at",
        DataType::Timestamp(TimeUnit::Second, Some("Asia/Tokyo".into())),
        true,
    )]);
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
            "ARROW:schema".into(),
            parquet::arrow::encode_arrow_schema(&original),
        )]))
        .build();
    let opts = parquet::arrow::arrow_writer::ArrowWriterOptions::new()
        .with_properties(props)
        .with_skip_arrow_metadata(true);
    let path = d.path("tokyo.parquet");
    let mut w =
        ArrowWriter::try_new_with_options(File::create(&path).unwrap(), data.schema(), opts)
            .unwrap();
    w.write(&data).unwrap();
    w.close().unwrap();

    let out = cli_support::through(&d, "tz", &path.display().to_string(), &[]);
    assert_eq!(
        out[0].schema().field(0).data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, Some("Asia/Tokyo".into()))
    );
    let at = out[0].column(0).as_primitive::<TimestampMillisecondType>();
    assert_eq!(at.values(), &[t, t + 1000], "the same instants");
}

#[test]
fn a_polars_categorical_column_reaches_parquet_as_strings() {
    let d = Dir::new("categorical");
    // polars' Categorical: a dictionary of Utf8View with u32 keys.
    let values = StringViewArray::from(vec!["buy", "sell", "a rather longer category name"]);
    let keys = UInt32Array::from(vec![Some(0), Some(2), None, Some(1), Some(0)]);
    let cat = DictionaryArray::try_new(keys, Arc::new(values)).unwrap();
    let batch = batch_of(vec![
        ("side", Arc::new(cat) as ArrayRef),
        (
            "n",
            Arc::new(arrow_array::Int64Array::from(vec![1, 2, 3, 4, 5])),
        ),
    ]);
    let out = d.s("out.parquet");
    out_as(&d, "cat", &batch, "parquet", &out);
    let back = read_parquet(&out);
    let side = arrow_cast::cast(back[0].column(0), &DataType::Utf8).unwrap();
    let side = side.as_string::<i32>();
    let got: Vec<_> = (0..side.len())
        .map(|i| side.is_valid(i).then(|| side.value(i)))
        .collect();
    assert_eq!(
        got,
        [
            Some("buy"),
            Some("a rather longer category name"),
            None,
            Some("sell"),
            Some("buy")
        ]
    );
    assert_eq!(
        back[0].column(1).as_primitive::<Int64Type>().values(),
        &[1, 2, 3, 4, 5]
    );
    assert_eq!(d.info("cat")["read_seq"], d.info("cat")["write_seq"]);
}
