//! `produce` on CSV as people write it: null markers, dates and timestamps
//! that are not ISO 8601, schemas that drift from day to day, open quotes,
//! empty files, and errors that name the line an editor shows. The real
//! binary, real files, every value checked.

mod cli_support;

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float64Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampSecondType,
};
use arrow_array::{Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use cli_support::{Dir, ipc_file, run_limited, through};

/// The batches' one column `name`, as `Option<String>`s.
fn strings(bs: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    bs.iter()
        .flat_map(|b| {
            let c = b.column_by_name(name).unwrap().as_string::<i32>();
            c.iter().map(|v| v.map(str::to_owned)).collect::<Vec<_>>()
        })
        .collect()
}

/// The batches' primitive column `name`.
fn values<T: arrow_array::ArrowPrimitiveType>(
    bs: &[RecordBatch],
    name: &str,
) -> Vec<Option<T::Native>> {
    bs.iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<T>()
                .iter()
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The batches' columns, named and typed.
fn names_and_types(bs: &[RecordBatch]) -> Vec<(String, DataType)> {
    bs[0]
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect()
}

fn type_of(bs: &[RecordBatch], name: &str) -> DataType {
    bs[0]
        .schema()
        .field_with_name(name)
        .unwrap()
        .data_type()
        .clone()
}

#[test]
fn empty_na_null_and_n_a_are_null_by_default_and_null_value_replaces_them() {
    let d = Dir::new("csv-nulls");
    std::fs::write(
        d.path("in.csv"),
        "id,px,sym\n1,2.5,a\n2,NA,NA\n3,null,\n4,N/A,NULL\n5,,x\n6,NaN,nan\n",
    )
    .unwrap();
    let got = through(&d, "n", &d.s("in.csv"), &[]);
    assert_eq!(
        type_of(&got, "px"),
        DataType::Float64,
        "NA keeps it numeric"
    );
    let px = values::<Float64Type>(&got, "px");
    assert_eq!(px[..5], [Some(2.5), None, None, None, None]);
    assert!(px[5].unwrap().is_nan(), "NaN is a number, not a null");
    assert_eq!(
        strings(&got, "sym"),
        [Some("a"), None, None, None, Some("x"), Some("nan")].map(|s| s.map(str::to_owned))
    );
    assert_eq!(
        values::<Int64Type>(&got, "id"),
        (1..=6).map(Some).collect::<Vec<_>>()
    );

    // Given markers replace the defaults: an empty field is an empty
    // string, "null" a string.
    std::fs::write(
        d.path("dash.csv"),
        "id,qty,note\n1,-,NA\n2,3,\n3,4,null\n4,(none),-\n",
    )
    .unwrap();
    let args = [
        "--null-value",
        "-",
        "--null-value",
        "(none)",
        "--null-value",
        "NA",
    ];
    let got = through(&d, "m", &d.s("dash.csv"), &args);
    assert_eq!(type_of(&got, "qty"), DataType::Int64);
    assert_eq!(
        values::<Int64Type>(&got, "qty"),
        [None, Some(3), Some(4), None]
    );
    assert_eq!(
        strings(&got, "note"),
        [None, Some(""), Some("null"), None].map(|s| s.map(str::to_owned))
    );

    let help = d.run(&["produce", "--help"]);
    help.assert_ok();
    let help = String::from_utf8(help.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains(
            "an empty field, NA, null, NULL and N/A are null; giving it replaces that list"
        ),
        "{help}"
    );
}

const DATES: &str = "id,day,at,iso\n\
    1,31/01/2024,31/01/2024 09:30:00,2024-01-31 09:30:00\n\
    2,01/02/2024,01/02/2024 17:05:30,2024-02-01 17:05:30\n\
    3,NA,,NA\n";

/// 2024-01-31 and 2024-02-01, in days since 1970-01-01.
const JAN_31: i32 = 19753;
/// 2024-01-31 09:30:00 and 2024-02-01 17:05:30 UTC, in seconds.
const AT: [i64; 2] = [1_706_693_400, 1_706_807_130];

#[test]
fn date_format_and_timestamp_format_read_non_iso_columns_inferred_or_given() {
    let d = Dir::new("csv-times");
    std::fs::write(d.path("in.csv"), DATES).unwrap();

    // arrow-csv alone: ISO with a space is a timestamp, the rest is text.
    let plain = through(&d, "p", &d.s("in.csv"), &[]);
    assert_eq!(type_of(&plain, "day"), DataType::Utf8);
    assert_eq!(type_of(&plain, "at"), DataType::Utf8);
    assert_eq!(
        type_of(&plain, "iso"),
        DataType::Timestamp(TimeUnit::Second, None)
    );

    let formats = [
        "--date-format",
        "%d/%m/%Y",
        "--timestamp-format",
        "%d/%m/%Y %H:%M:%S",
    ];
    let got = through(&d, "f", &d.s("in.csv"), &formats);
    assert_eq!(type_of(&got, "day"), DataType::Date32);
    assert_eq!(
        values::<Date32Type>(&got, "day"),
        [Some(JAN_31), Some(JAN_31 + 1), None]
    );
    assert_eq!(
        type_of(&got, "at"),
        DataType::Timestamp(TimeUnit::Second, None)
    );
    assert_eq!(
        values::<TimestampSecondType>(&got, "at"),
        [Some(AT[0]), Some(AT[1]), None]
    );
    assert_eq!(
        values::<TimestampSecondType>(&got, "iso"),
        [Some(AT[0]), Some(AT[1]), None],
        "ISO columns read as before"
    );

    // A given schema: its date and timestamp columns read the formats
    // (and ISO 8601), in the schema's units.
    let mut args = vec![
        "--schema",
        "id:int64,day:date32,at:timestamp_ms,iso:timestamp",
    ];
    args.extend(formats);
    let got = through(&d, "s", &d.s("in.csv"), &args);
    assert_eq!(
        values::<Date32Type>(&got, "day"),
        [Some(JAN_31), Some(JAN_31 + 1), None]
    );
    assert_eq!(
        values::<TimestampMillisecondType>(&got, "at"),
        [Some(AT[0] * 1000), Some(AT[1] * 1000), None]
    );
    assert_eq!(
        values::<TimestampMicrosecondType>(&got, "iso"),
        [Some(AT[0] * 1_000_000), Some(AT[1] * 1_000_000), None]
    );

    // A value that does not read: its line, its column, the value.
    std::fs::write(
        d.path("bad.csv"),
        format!("{DATES}4,32/01/2024,01/02/2024 00:00:00,NA\n"),
    )
    .unwrap();
    let mut args = vec![
        "produce",
        "b",
        "-i",
        &d.path("bad.csv").display().to_string(),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    args.extend(["--schema", "id:int64,day:date32,at:timestamp,iso:utf8"].map(str::to_owned));
    args.extend(formats.map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    d.run(&args).assert_fails(
        1,
        "line 5, column 'day': '32/01/2024' is not a date in the format '%d/%m/%Y'",
    );
    d.run(&["produce", "q", "-i", &d.s("in.csv"), "--date-format", "%Q"])
        .assert_fails(1, "--date-format '%Q' is not a strftime format");
}

#[test]
fn schema_from_pins_one_schema_across_files_whose_types_drift() {
    let d = Dir::new("csv-pinned");
    // Monday's prices were whole, so inference alone makes them integers;
    // Tuesday's are not.
    std::fs::write(d.path("monday.csv"), "id,price\n1,10\n2,11\n").unwrap();
    std::fs::write(d.path("tuesday.csv"), "id,price\n3,10.5\n4,NA\n").unwrap();
    let alone = through(&d, "alone", &d.s("monday.csv"), &[]);
    assert_eq!(type_of(&alone, "price"), DataType::Int64);

    // The schema of an Arrow IPC file, of Parquet, of another CSV.
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("price", DataType::Float64, true),
    ]));
    let pinned = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![0])),
            Arc::new(Float64Array::from(vec![0.5])),
        ],
    )
    .unwrap();
    std::fs::write(
        d.path("pinned.arrow"),
        ipc_file(std::slice::from_ref(&pinned)),
    )
    .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        File::create(d.path("pinned.parquet")).unwrap(),
        schema.clone(),
        None,
    )
    .unwrap();
    w.write(&pinned).unwrap();
    w.close().unwrap();
    for (k, from) in ["pinned.arrow", "pinned.parquet", "tuesday.csv"]
        .into_iter()
        .enumerate()
    {
        let got = through(
            &d,
            &format!("mon{k}"),
            &d.s("monday.csv"),
            &["--schema-from", &d.s(from)],
        );
        assert_eq!(
            names_and_types(&got),
            names_and_types(std::slice::from_ref(&pinned)),
            "{from}"
        );
        assert_eq!(
            values::<Float64Type>(&got, "price"),
            [Some(10.0), Some(11.0)],
            "{from}"
        );
        assert_eq!(values::<Int64Type>(&got, "id"), [Some(1), Some(2)]);
        let got = through(
            &d,
            &format!("tue{k}"),
            &d.s("tuesday.csv"),
            &["--schema-from", &d.s(from)],
        );
        assert_eq!(
            names_and_types(&got),
            names_and_types(std::slice::from_ref(&pinned)),
            "{from}"
        );
        assert_eq!(values::<Float64Type>(&got, "price"), [Some(10.5), None]);
    }

    // Pinned to Monday's integers, Tuesday's 10.5 does not fit.
    d.run(&[
        "produce",
        "t",
        "-i",
        &d.s("tuesday.csv"),
        "--schema-from",
        &d.s("monday.csv"),
    ])
    .assert_fails(1, "'10.5' as type 'Int64' for column 'price' at line 2");
    // The header must be the pinned columns.
    std::fs::write(d.path("renamed.csv"), "id,cost\n5,1.5\n").unwrap();
    d.run(&[
        "produce",
        "r",
        "-i",
        &d.s("renamed.csv"),
        "--schema-from",
        &d.s("pinned.arrow"),
    ])
    .assert_fails(1, "CSV header does not match schema at column 1");
    let both = d.run(&[
        "produce",
        "x",
        "-i",
        &d.s("monday.csv"),
        "--schema",
        "id:int64,price:float64",
        "--schema-from",
        &d.s("pinned.arrow"),
    ]);
    assert_eq!(both.code, Some(2), "{}", both.stderr);
    assert!(
        both.stderr.contains("cannot be used with"),
        "{}",
        both.stderr
    );
}

#[test]
fn an_unterminated_quote_is_an_error_naming_its_line_not_one_last_row() {
    let d = Dir::new("csv-quote");
    std::fs::write(d.path("open.csv"), "id,name\n1,\"abc\n2,def\n").unwrap();
    d.run(&["produce", "o", "-i", &d.s("open.csv")])
        .assert_fails(
            1,
            "unterminated quote: the record that starts on line 2 opens a quoted field",
        );
    // Given a schema, and on standard input, the same.
    d.run(&[
        "produce",
        "s",
        "-i",
        &d.s("open.csv"),
        "--schema",
        "id:int64,name:utf8",
    ])
    .assert_fails(1, "unterminated quote");
    let cmd = d.cmd(&["produce", "i", "-i", "-", "--format", "csv"]);
    run_limited(cmd, Some(&d.path("open.csv")), Duration::from_secs(60))
        .assert_fails(1, "unterminated quote");

    // Closed quotes may hold line breaks and quotes.
    std::fs::write(
        d.path("closed.csv"),
        "id,name\n1,\"abc\n2,def\"\n2,\"say \"\"hi\"\"\"",
    )
    .unwrap();
    let got = through(&d, "c", &d.s("closed.csv"), &[]);
    assert_eq!(
        strings(&got, "name"),
        [Some("abc\n2,def"), Some("say \"hi\"")].map(|s| s.map(str::to_owned))
    );
}

#[test]
fn an_empty_csv_says_so_and_a_header_alone_needs_a_schema() {
    let d = Dir::new("csv-empty");
    std::fs::write(d.path("zero.csv"), "").unwrap();
    std::fs::write(d.path("head.csv"), "id,name\n").unwrap();
    d.run(&["produce", "z", "-i", &d.s("zero.csv")])
        .assert_fails(1, "zero.csv is empty: no header and no rows");
    d.run(&["produce", "z", "-i", &d.s("zero.csv"), "--no-header"])
        .assert_fails(1, "zero.csv is empty: no rows");
    let cmd = d.cmd(&["produce", "z", "-i", "-", "--format", "csv"]);
    run_limited(cmd, Some(&d.path("zero.csv")), Duration::from_secs(60))
        .assert_fails(1, "standard input is empty: no header and no rows");
    d.run(&["produce", "h", "-i", &d.s("head.csv")])
        .assert_fails(
            1,
            "head.csv has a header but no rows; pass --schema or --schema-from to send an \
         empty stream of that schema",
        );

    // With a schema, a header alone is an empty stream of that schema.
    let got = through(
        &d,
        "e",
        &d.s("head.csv"),
        &["--schema", "id:int64,name:utf8"],
    );
    assert_eq!(got.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    let out = File::open(d.path("e.out.arrows")).unwrap();
    let schema = arrow_ipc::reader::StreamReader::try_new(out, None)
        .unwrap()
        .schema();
    assert_eq!(
        schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type().clone()))
            .collect::<Vec<_>>(),
        [("id", DataType::Int64), ("name", DataType::Utf8)]
    );
}

#[test]
fn csv_errors_name_the_files_line_past_quoted_line_breaks_and_empty_lines() {
    let d = Dir::new("csv-lines");
    // Line 1 the header, 2-3 a quoted field over two lines, 4 empty, 5 bad.
    std::fs::write(
        d.path("bad.csv"),
        "id,x,name\n1,0.5,\"two\nlines\"\n\n2,oops,b\n",
    )
    .unwrap();
    d.run(&[
        "produce",
        "b",
        "-i",
        &d.s("bad.csv"),
        "--schema",
        "id:int64,x:float64,name:utf8",
    ])
    .assert_fails(1, "'oops' as type 'Float64' for column 'x' at line 5.");
    // Without a header, the first line is line 1.
    std::fs::write(d.path("nohead.csv"), "1,0.5\nbad,1.5\n").unwrap();
    d.run(&[
        "produce",
        "n",
        "-i",
        &d.s("nohead.csv"),
        "--no-header",
        "--schema",
        "id:int64,x:float64",
    ])
    .assert_fails(1, "'bad' as type 'Int64' for column 'id' at line 2.");
    // A record with a field missing.
    std::fs::write(d.path("short.csv"), "id,name\n1,\"a\nb\"\n2\n").unwrap();
    d.run(&[
        "produce",
        "s",
        "-i",
        &d.s("short.csv"),
        "--schema",
        "id:int64,name:utf8",
    ])
    .assert_fails(1, "incorrect number of fields for line 4, expected 2 got 1");
}
