//! CSV input: its schema (inferred, given, or pinned to another file's),
//! null markers, date and timestamp formats, and errors that name the
//! file's line and the column (the lines from [`crate::csv_lines`]).

use std::io::{BufRead, Cursor, Read};
use std::sync::{Arc, Mutex};

use arrow_array::timezone::Tz;
use arrow_array::types::{
    Date32Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, PrimitiveArray, RecordBatch, StringArray,
    types::ArrowTimestampType,
};
use arrow_csv::reader::Format;
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::format::{Fixed, Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike};
use regex::Regex;

use crate::csv_lines::{LineIndex, Tracked, UnterminatedQuote, lock};
use crate::error::{Action, CliError};
use crate::formats::{Input, InputFormat, open_input, parse_schema};
use crate::guard::Guarded;

/// The fields read as null when no `--null-value` is given: the common
/// markers of a missing value (pandas reads these as missing too).
pub const DEFAULT_NULLS: [&str; 5] = ["", "NA", "null", "NULL", "N/A"];

/// Rows read to infer a CSV schema.
const INFER_RECORDS: usize = 10_000;

/// How CSV input is read.
#[derive(Debug, Clone, Default)]
pub struct CsvOptions {
    /// `name:type,...`; inferred when absent.
    pub schema: Option<String>,
    /// A file whose schema the input is read with.
    pub schema_from: Option<String>,
    /// The first line is data, not names.
    pub no_header: bool,
    /// Field separator; `,` (or tab for `.tsv`) when absent.
    pub delimiter: Option<u8>,
    /// Fields read as null; [`DEFAULT_NULLS`] when empty.
    pub null_values: Vec<String>,
    /// chrono format of timestamps that are not ISO 8601.
    pub timestamp_format: Option<String>,
    /// chrono format of dates that are not ISO 8601.
    pub date_format: Option<String>,
}

/// A regex matching exactly the fields in `values` (or [`DEFAULT_NULLS`]).
fn null_regex(values: &[String]) -> Result<Regex, CliError> {
    let alternatives: Vec<String> = if values.is_empty() {
        DEFAULT_NULLS.iter().map(|v| regex::escape(v)).collect()
    } else {
        values.iter().map(|v| regex::escape(v)).collect()
    };
    Regex::new(&format!("^(?:{})$", alternatives.join("|")))
        .map_err(|e| CliError::CsvOption(format!("--null-value: {e}")))
}

/// A chrono format given on the command line, checked.
fn checked_format(flag: &str, fmt: &Option<String>) -> Result<Option<String>, CliError> {
    match fmt {
        Some(f) if f.is_empty() || StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) => Err(
            CliError::CsvOption(format!("{flag} '{f}' is not a strftime format")),
        ),
        other => Ok(other.clone()),
    }
}

/// The timestamp unit a column read with `fmt` gets: fine enough for the
/// fraction of a second `fmt` reads, seconds if none.
fn unit_of(fmt: &str) -> TimeUnit {
    let has = |s: &str| fmt.contains(s);
    if has("%.3f") || has("%3f") {
        TimeUnit::Millisecond
    } else if has("%.6f") || has("%6f") {
        TimeUnit::Microsecond
    } else if has("%.9f") || has("%9f") || has("%.f") || has("%f") {
        TimeUnit::Nanosecond
    } else {
        TimeUnit::Second
    }
}

/// A column read as text and converted with a format.
#[derive(Debug, Clone)]
enum Custom {
    Date {
        fmt: String,
    },
    Timestamp {
        fmt: String,
        /// `fmt` reads an offset (`%z` and the like).
        offset: bool,
        unit: TimeUnit,
        /// The column's zone (local times are in it), or UTC.
        tz: Tz,
    },
}

impl Custom {
    /// How the column of type `t` is read, if a format applies to it.
    fn for_type(t: &DataType, date: &Option<String>, ts: &Option<String>) -> Option<Self> {
        match (t, date, ts) {
            (DataType::Date32, Some(fmt), _) => Some(Self::Date { fmt: fmt.clone() }),
            (DataType::Timestamp(unit, tz), _, Some(fmt)) => Some(Self::Timestamp {
                fmt: fmt.clone(),
                offset: StrftimeItems::new(fmt).any(|i| {
                    matches!(
                        i,
                        Item::Fixed(
                            Fixed::TimezoneOffset
                                | Fixed::TimezoneOffsetColon
                                | Fixed::TimezoneOffsetDoubleColon
                                | Fixed::TimezoneOffsetTripleColon
                                | Fixed::TimezoneOffsetColonZ
                                | Fixed::TimezoneOffsetZ
                        )
                    )
                }),
                unit: *unit,
                tz: tz.as_deref().unwrap_or("+00:00").parse().ok()?,
            }),
            _ => None,
        }
    }

    /// `s` as the column's value (days, or the unit's ticks since the
    /// epoch), or why not.
    fn parse(&self, s: &str) -> Result<i64, String> {
        match self {
            Self::Date { fmt } => NaiveDate::parse_from_str(s, fmt)
                .or_else(|_| NaiveDate::parse_from_str(s, "%Y-%m-%d"))
                .map(|d| i64::from(Date32Type::from_naive_date(d)))
                .map_err(|_| format!("not a date in the format '{fmt}' (or ISO 8601)")),
            Self::Timestamp {
                fmt,
                offset,
                unit,
                tz,
            } => {
                let parsed: Option<DateTime<Tz>> = if *offset {
                    DateTime::parse_from_str(s, fmt)
                        .ok()
                        .map(|t| t.with_timezone(tz))
                } else {
                    NaiveDateTime::parse_from_str(s, fmt)
                        .ok()
                        .and_then(|naive| naive.and_local_timezone(*tz).earliest())
                };
                let t = parsed
                    .or_else(|| arrow_cast::parse::string_to_datetime(tz, s).ok())
                    .ok_or_else(|| {
                        format!("not a timestamp in the format '{fmt}' (or ISO 8601)")
                    })?;
                let per_tick = match unit {
                    TimeUnit::Second => 1_000_000_000,
                    TimeUnit::Millisecond => 1_000_000,
                    TimeUnit::Microsecond => 1_000,
                    TimeUnit::Nanosecond => 1,
                };
                if t.nanosecond() % per_tick != 0 {
                    return Err(format!("more precise than the column's unit ({unit})"));
                }
                match unit {
                    TimeUnit::Second => TimestampSecondType::from_datetime(t),
                    TimeUnit::Millisecond => TimestampMillisecondType::from_datetime(t),
                    TimeUnit::Microsecond => TimestampMicrosecondType::from_datetime(t),
                    TimeUnit::Nanosecond => TimestampNanosecondType::from_datetime(t),
                }
                .ok_or_else(|| format!("out of the range of the column's unit ({unit})"))
            }
        }
    }

    /// `text` converted to `field`'s type; an error names `line_of(i)`.
    fn convert(
        &self,
        text: &StringArray,
        field: &Field,
        line_of: impl Fn(usize) -> u64,
    ) -> Result<ArrayRef, ArrowError> {
        let mut values = Vec::with_capacity(text.len());
        for (i, s) in text.iter().enumerate() {
            values.push(match s {
                None => None,
                Some(s) => Some(self.parse(s).map_err(|why| {
                    ArrowError::ParseError(format!(
                        "line {}, column '{}': '{s}' is {why}",
                        line_of(i),
                        field.name()
                    ))
                })?),
            });
        }
        Ok(match field.data_type() {
            DataType::Date32 => Arc::new(narrow::<Date32Type>(values)?),
            // The values are UTC already: the zone only labels them.
            DataType::Timestamp(unit, tz) => match unit {
                TimeUnit::Second => {
                    Arc::new(narrow::<TimestampSecondType>(values)?.with_timezone_opt(tz.clone()))
                }
                TimeUnit::Millisecond => Arc::new(
                    narrow::<TimestampMillisecondType>(values)?.with_timezone_opt(tz.clone()),
                ),
                TimeUnit::Microsecond => Arc::new(
                    narrow::<TimestampMicrosecondType>(values)?.with_timezone_opt(tz.clone()),
                ),
                TimeUnit::Nanosecond => Arc::new(
                    narrow::<TimestampNanosecondType>(values)?.with_timezone_opt(tz.clone()),
                ),
            },
            other => unreachable!("a format applies to dates and timestamps only, not {other}"),
        })
    }
}

/// `values` as an array of `T` (dates are days, which fit in an i32).
fn narrow<T: ArrowPrimitiveType>(values: Vec<Option<i64>>) -> Result<PrimitiveArray<T>, ArrowError>
where
    T::Native: TryFrom<i64>,
{
    values
        .into_iter()
        .map(|v| {
            v.map(|v| {
                T::Native::try_from(v)
                    .map_err(|_| ArrowError::ParseError(format!("{v} out of range")))
            })
            .transpose()
        })
        .collect()
}

/// `schema` with the columns arrow-csv read as text, integers or ISO
/// dates and timestamps turned into dates or timestamps where every
/// non-null value of `sample` (the same columns as text) reads with
/// `--date-format` or `--timestamp-format`.
fn apply_formats(
    schema: Schema,
    sample: &[RecordBatch],
    date: &Option<String>,
    ts: &Option<String>,
) -> Schema {
    let all_parse = |i: usize, with: &dyn Fn(&str) -> bool| {
        let mut any = false;
        for b in sample {
            let Some(col) = b.column(i).as_any().downcast_ref::<StringArray>() else {
                return false;
            };
            for s in col.iter().flatten() {
                if !with(s) {
                    return false;
                }
                any = true;
            }
        }
        any
    };
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let candidate = matches!(
                f.data_type(),
                DataType::Utf8 | DataType::Int64 | DataType::Date32 | DataType::Timestamp(..)
            );
            if candidate
                && let Some(fmt) = date
                && all_parse(i, &|s| NaiveDate::parse_from_str(s, fmt).is_ok())
            {
                return f.as_ref().clone().with_data_type(DataType::Date32);
            }
            if candidate
                && let Some(fmt) = ts
                && all_parse(i, &|s| {
                    NaiveDateTime::parse_from_str(s, fmt).is_ok()
                        || DateTime::parse_from_str(s, fmt).is_ok()
                })
            {
                return f
                    .as_ref()
                    .clone()
                    .with_data_type(DataType::Timestamp(unit_of(fmt), None));
            }
            f.as_ref().clone()
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// The schema of the file `from` (an Arrow IPC file or stream, Parquet,
/// or CSV whose schema is inferred as `csv` says).
fn schema_of(from: &str, csv: &CsvOptions) -> Result<SchemaRef, CliError> {
    if from == "-" {
        return Err(CliError::CsvOption(
            "--schema-from needs a file, not standard input".into(),
        ));
    }
    let plain = CsvOptions {
        schema: None,
        schema_from: None,
        ..csv.clone()
    };
    Ok(open_input(from, InputFormat::Auto, 1, &plain)?.schema)
}

/// Opens CSV from `reader` (the file `path`, `-` for stdin).
pub fn open_csv<R: BufRead + 'static>(
    mut reader: R,
    batch_rows: usize,
    csv: &CsvOptions,
    path: &str,
) -> Result<Input, CliError> {
    let delimiter = csv.delimiter.unwrap_or(b',');
    let date = checked_format("--date-format", &csv.date_format)?;
    let ts = checked_format("--timestamp-format", &csv.timestamp_format)?;
    let mut format = Format::default()
        .with_header(!csv.no_header)
        .with_delimiter(delimiter)
        .with_null_regex(null_regex(&csv.null_values)?);
    let pinned = match (&csv.schema, &csv.schema_from) {
        (Some(spec), _) => Some(Arc::new(parse_schema(spec)?)),
        (None, Some(from)) => {
            // The header must name the pinned columns, in order.
            format = format.with_header_validation(true);
            Some(schema_of(from, csv)?)
        }
        (None, None) => None,
    };
    let (schema, head) = match pinned {
        Some(schema) => (schema, Vec::new()),
        None => {
            // Infer from the first records, then read them again: a file
            // from its start, stdin from a copy of what inference read.
            let mut head = Vec::new();
            let mut lines = 0;
            while lines <= INFER_RECORDS {
                let n = reader
                    .read_until(b'\n', &mut head)
                    .map_err(|e| CliError::io(Action::Read, path, e))?;
                if n == 0 {
                    break;
                }
                lines += 1;
            }
            let infer_error = |source| CliError::CsvSchema {
                path: path.to_owned(),
                source,
            };
            let (schema, records) = format
                .infer_schema(Cursor::new(&head), Some(INFER_RECORDS))
                .map_err(infer_error)?;
            if records == 0 {
                return Err(CliError::CsvEmpty {
                    path: path.to_owned(),
                    why: match (schema.fields().is_empty(), csv.no_header) {
                        (true, false) => "is empty: no header and no rows",
                        (true, true) => "is empty: no rows",
                        (false, _) => {
                            "has a header but no rows; pass --schema or --schema-from to \
                             send an empty stream of that schema"
                        }
                    },
                });
            }
            let schema = if date.is_some() || ts.is_some() {
                let text = Arc::new(as_text(&schema));
                let sample = arrow_csv::ReaderBuilder::new(text)
                    .with_format(format.clone())
                    .with_batch_size(INFER_RECORDS)
                    .build(Cursor::new(&head))
                    .and_then(|r| r.take(1).collect::<Result<Vec<_>, _>>())
                    .map_err(infer_error)?;
                apply_formats(schema, &sample, &date, &ts)
            } else {
                schema
            };
            (Arc::new(schema), head)
        }
    };
    // Columns with a format are read as text, then converted.
    let custom: Vec<Option<Custom>> = schema
        .fields()
        .iter()
        .map(|f| Custom::for_type(f.data_type(), &date, &ts))
        .collect();
    let read_schema = if custom.iter().any(Option::is_some) {
        Arc::new(Schema::new_with_metadata(
            schema
                .fields()
                .iter()
                .zip(&custom)
                .map(|(f, c)| match c {
                    Some(_) => f.as_ref().clone().with_data_type(DataType::Utf8),
                    None => f.as_ref().clone(),
                })
                .collect::<Vec<_>>(),
            schema.metadata().clone(),
        ))
    } else {
        schema.clone()
    };
    let lines = Arc::new(Mutex::new(LineIndex::new(delimiter)));
    let tracked = Tracked {
        inner: Cursor::new(head).chain(reader),
        lines: lines.clone(),
    };
    let r = arrow_csv::ReaderBuilder::new(read_schema)
        .with_format(format)
        .with_batch_size(batch_rows.max(1))
        .build_buffered(std::io::BufReader::with_capacity(1 << 20, tracked))
        .map_err(|e| CliError::data(Action::Read, path, e))?;
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    // The record index (the header is record 0) of the next row.
    let mut next = u64::from(!csv.no_header);
    let out_schema = schema.clone();
    let batches = r.map(move |b| {
        let b = b.map_err(|e| relocate(e, &lock(&lines), &names))?;
        let first = next;
        next += b.num_rows() as u64;
        let b = if custom.iter().any(Option::is_some) {
            let columns = b
                .columns()
                .iter()
                .zip(&custom)
                .zip(out_schema.fields())
                .map(|((c, custom), f)| match custom {
                    None => Ok(c.clone()),
                    Some(custom) => {
                        let text = c
                            .as_any()
                            .downcast_ref::<StringArray>()
                            .expect("read as Utf8");
                        let lines = lock(&lines);
                        custom.convert(text, f, |i| lines.line_of(first + i as u64))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            RecordBatch::try_new(out_schema.clone(), columns)?
        } else {
            b
        };
        lock(&lines).forget_before(next);
        Ok(b)
    });
    Ok(Input {
        schema,
        batches: Box::new(Guarded::new(batches, "the CSV reader")),
        format: "csv",
        extent: crate::progress::Extent::Unknown,
    })
}

/// `schema` with every column Utf8.
fn as_text(schema: &Schema) -> Schema {
    Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    )
}

/// An arrow-csv error, with its record numbers made the file's lines and
/// its column numbers the columns' names.
fn relocate(e: ArrowError, lines: &LineIndex, names: &[String]) -> ArrowError {
    let column = |m: &str, before: &str, after: &str| {
        replace_number(m, before, after, |k| match names.get(k) {
            Some(name) => format!("'{name}'"),
            None => k.to_string(),
        })
    };
    match e {
        // "... for column 2 at line 7. ..." and "Error parsing column 2 at
        // line 7: ...", where the line is the record's index (the header
        // is 0).
        ArrowError::ParseError(m) => {
            let m = replace_number(&m, " at line ", "", |r| lines.line_of(r as u64).to_string());
            let m = column(&m, "for column ", " at line");
            ArrowError::ParseError(column(&m, "Error parsing column ", " at line"))
        }
        // "incorrect number of fields for line 3, ..." and "invalid UTF-8
        // data for line 3 ...", where the line counts records from 1.
        ArrowError::CsvError(m) => {
            ArrowError::CsvError(replace_number(&m, " for line ", "", |r| {
                lines.line_of(r.saturating_sub(1) as u64).to_string()
            }))
        }
        ArrowError::IoError(m, io) => {
            match io
                .get_ref()
                .and_then(|i| i.downcast_ref::<UnterminatedQuote>())
            {
                Some(q) => ArrowError::ParseError(q.to_string()),
                None => ArrowError::IoError(m, io),
            }
        }
        e => e,
    }
}

/// `msg` with the number after the first `before` (and followed by
/// `after`) replaced by `f(number)`.
fn replace_number(msg: &str, before: &str, after: &str, f: impl Fn(usize) -> String) -> String {
    let Some(i) = msg.find(before) else {
        return msg.to_owned();
    };
    let start = i + before.len();
    let digits = msg[start..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(msg.len(), |n| start + n);
    if !msg[digits..].starts_with(after) {
        return msg.to_owned();
    }
    match msg[start..digits].parse::<usize>() {
        Ok(n) => format!("{}{}{}", &msg[..start], f(n), &msg[digits..]),
        Err(_) => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csv_lines::tests::index;

    #[test]
    fn arrow_csv_messages_name_lines_and_columns() {
        let mut l = index(b"id,x\n1,\"a\nb\"\n2,oops\n", 64);
        assert!(l.finish().is_ok());
        let names = ["id".to_owned(), "x".to_owned()];
        let e = relocate(
            ArrowError::ParseError(
                "Error while parsing value 'oops' as type 'Int64' for column 1 at line 2. \
                 Row data: '[2,oops]'"
                    .into(),
            ),
            &l,
            &names,
        );
        assert_eq!(
            e.to_string(),
            "Parser error: Error while parsing value 'oops' as type 'Int64' for column 'x' \
             at line 4. Row data: '[2,oops]'"
        );
        let e = relocate(
            ArrowError::CsvError("incorrect number of fields for line 3, expected 2 got 1".into()),
            &l,
            &names,
        );
        assert!(e.to_string().contains("for line 4, expected 2"), "{e}");
        assert_eq!(
            replace_number("no number", " at line ", "", |n| n.to_string()),
            "no number"
        );
        assert_eq!(
            replace_number("x at line 9z", " at line ", ".", |_| "1".into()),
            "x at line 9z"
        );
    }

    #[test]
    fn null_markers_match_whole_fields_only() {
        let r = null_regex(&[]).unwrap();
        for null in DEFAULT_NULLS {
            assert!(r.is_match(null), "{null:?}");
        }
        for value in ["NAN", "nullish", " NA", "n/a"] {
            assert!(!r.is_match(value), "{value:?}");
        }
        let r = null_regex(&["-".into(), "(none)".into()]).unwrap();
        assert!(r.is_match("(none)") && r.is_match("-"));
        assert!(!r.is_match("") && !r.is_match("NA") && !r.is_match("none"));
    }

    #[test]
    fn formats_read_dates_and_timestamps_strictly() {
        let d = Custom::for_type(&DataType::Date32, &Some("%d/%m/%Y".into()), &None).unwrap();
        assert_eq!(d.parse("02/01/1970"), Ok(1));
        assert_eq!(d.parse("1970-01-03"), Ok(2), "ISO 8601 too");
        assert!(d.parse("1970/01/03").is_err());
        let t = Custom::for_type(
            &DataType::Timestamp(TimeUnit::Second, None),
            &None,
            &Some("%d/%m/%Y %H:%M".into()),
        )
        .unwrap();
        assert_eq!(t.parse("01/01/1970 00:02"), Ok(120));
        assert!(
            t.parse("01/01/1970 00:02:01.5")
                .unwrap_err()
                .contains("timestamp")
        );
        assert!(
            t.parse("1970-01-01T00:00:00.5")
                .unwrap_err()
                .contains("more precise"),
            "never truncated"
        );
        let z = Custom::for_type(
            &DataType::Timestamp(TimeUnit::Millisecond, None),
            &None,
            &Some("%d/%m/%Y %H:%M:%S%.3f %z".into()),
        )
        .unwrap();
        assert_eq!(z.parse("01/01/1970 01:00:00.250 +0100"), Ok(250));
        assert_eq!(unit_of("%d/%m/%Y %H:%M:%S%.3f"), TimeUnit::Millisecond);
        assert_eq!(unit_of("%d/%m/%Y %H:%M:%S%.f"), TimeUnit::Nanosecond);
        assert_eq!(unit_of("%d/%m/%Y %H:%M"), TimeUnit::Second);
        assert!(checked_format("--date-format", &Some("%Q".into())).is_err());
    }
}
