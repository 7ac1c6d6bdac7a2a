//! Data files in and out: Arrow IPC (stream and file), CSV and Parquet.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;
use std::sync::Arc;

use arrow_array::{RecordBatch, RecordBatchOptions, make_array};
use arrow_data::transform::MutableArrayData;
use arrow_ipc::writer::{FileWriter, StreamWriter};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use clap::ValueEnum;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::csv_input::{CsvOptions, open_csv};
use crate::error::{Action, CliError};
use crate::guard::{Guarded, guarded};
use crate::ipc_input::{IpcFile, IpcStream};
use crate::parquet_io::{BoundedFile, relabel, with_stored_zones};
use crate::progress::Extent;

/// Formats `produce` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// From the file name's extension, else from its first bytes.
    Auto,
    /// Arrow IPC, stream or file (told apart by their first bytes).
    Arrow,
    /// CSV with a header row; the schema is inferred unless --schema gives it.
    Csv,
    /// Parquet.
    Parquet,
}

/// Formats `consume` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Arrow IPC stream (`.arrows`).
    Arrow,
    /// Arrow IPC file (`.arrow`, with a footer). A file allows one
    /// dictionary per column, so dictionary columns are written decoded.
    ArrowFile,
    /// Parquet (--compression, snappy by default; timestamp[s] and time32[s] stored as
    /// milliseconds, date64 as a date; unions refused). A row group is
    /// written before its batches are released.
    Parquet,
    /// CSV with a header row.
    Csv,
    /// CSV with a header row, fields separated by tabs.
    Tsv,
}

impl OutputFormat {
    /// The format that `path`'s extension names: `.parquet`/`.pq`,
    /// `.arrow`/`.feather`/`.ipc` (an IPC file), `.arrows` (an IPC
    /// stream), `.csv`, `.tsv`. `None` for `-` and any other name.
    pub fn from_extension(path: &str) -> Option<Self> {
        if path == "-" {
            return None;
        }
        Some(match ext(path).as_str() {
            "parquet" | "pq" => Self::Parquet,
            "arrow" | "feather" | "ipc" => Self::ArrowFile,
            "arrows" => Self::Arrow,
            "csv" => Self::Csv,
            "tsv" => Self::Tsv,
            _ => return None,
        })
    }
}

/// Codecs of Parquet output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ParquetCodec {
    #[default]
    Snappy,
    Zstd,
    /// LZ4 as current readers expect it (Parquet's LZ4_RAW).
    Lz4,
    Gzip,
    None,
}

/// How Parquet output is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParquetOptions {
    pub codec: ParquetCodec,
    /// The most rows a row group holds (the writer's default when absent).
    pub row_group_rows: Option<usize>,
}

impl ParquetOptions {
    fn properties(&self) -> WriterProperties {
        let codec = match self.codec {
            ParquetCodec::Snappy => Compression::SNAPPY,
            ParquetCodec::Zstd => Compression::ZSTD(Default::default()),
            ParquetCodec::Lz4 => Compression::LZ4_RAW,
            ParquetCodec::Gzip => Compression::GZIP(Default::default()),
            ParquetCodec::None => Compression::UNCOMPRESSED,
        };
        let mut b = WriterProperties::builder()
            .set_compression(codec)
            .set_coerce_types(true);
        if let Some(n) = self.row_group_rows {
            b = b.set_max_row_group_row_count(Some(n.max(1)));
        }
        b.build()
    }
}

/// An open input: its schema and its batches.
pub struct Input {
    pub schema: SchemaRef,
    pub batches: Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>>>,
    /// The format actually read, for messages.
    pub format: &'static str,
    /// How much of the input there is, for progress.
    pub extent: Extent,
}

fn ext(path: &str) -> String {
    Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default()
}

/// Opens `path` (`-`: stdin) as `format`, in batches of at most
/// `batch_rows` rows.
pub fn open_input(
    path: &str,
    format: InputFormat,
    batch_rows: usize,
    csv: &CsvOptions,
) -> Result<Input, CliError> {
    let bad = |e| CliError::io(Action::Read, path, e);
    let not_valid = |format, source| CliError::NotValid {
        path: path.to_owned(),
        format,
        source,
    };
    if path == "-" {
        let mut stdin = BufReader::with_capacity(1 << 20, std::io::stdin());
        return match format {
            InputFormat::Auto | InputFormat::Arrow => {
                let head = stdin.fill_buf().map_err(bad)?;
                if let Some(why) = not_a_stream(head) {
                    return Err(why);
                }
                let r = IpcStream::try_new(stdin, None)
                    .map_err(|e| not_valid("Arrow IPC stream", e))?;
                Ok(rebatch(r.schema(), Box::new(r), batch_rows, "arrow stream"))
            }
            InputFormat::Csv => open_csv(stdin, batch_rows, csv, "-"),
            InputFormat::Parquet => Err(CliError::ParquetFromStdin),
        };
    }
    let mut file = File::open(path).map_err(bad)?;
    // A second descriptor of the same open file shares its offset: it
    // tells progress how far the reader got.
    let extent = match (file.try_clone(), file.metadata()) {
        (Ok(at), Ok(m)) => Extent::Bytes { total: m.len(), at },
        _ => Extent::Unknown,
    };
    let format = match format {
        InputFormat::Auto => match ext(path).as_str() {
            "csv" | "tsv" => InputFormat::Csv,
            "parquet" | "pq" => InputFormat::Parquet,
            "arrow" | "arrows" | "ipc" | "feather" => InputFormat::Arrow,
            _ => sniff(&mut file)
                .map_err(bad)?
                .ok_or_else(|| CliError::UnknownFormat {
                    path: path.to_owned(),
                })?,
        },
        f => f,
    };
    let mut input = match format {
        InputFormat::Arrow => {
            let mut magic = [0_u8; 6];
            let n = read_prefix(&mut file, &mut magic).map_err(bad)?;
            if &magic[..n] == b"ARROW1" {
                let r = IpcFile::try_new(file).map_err(|e| not_valid("Arrow IPC file", e))?;
                Ok(rebatch(r.schema(), Box::new(r), batch_rows, "arrow file"))
            } else {
                let size = file.metadata().map_err(bad)?.len();
                let r = IpcStream::try_new(BufReader::with_capacity(1 << 20, file), Some(size))
                    .map_err(|e| not_valid("Arrow IPC stream", e))?;
                Ok(rebatch(r.schema(), Box::new(r), batch_rows, "arrow stream"))
            }
        }
        InputFormat::Parquet => {
            let file = BoundedFile::new(file).map_err(bad)?;
            let (r, schema, rows) = guarded("the Parquet decoder", || {
                let b = ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                let schema = with_stored_zones(b.schema(), b.metadata().file_metadata());
                let rows = u64::try_from(b.metadata().file_metadata().num_rows()).ok();
                let r = b
                    .with_batch_size(batch_rows)
                    .build()
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                Ok((r, schema, rows))
            })
            .map_err(|e| not_valid("Parquet file", e))?;
            let zoned = schema.clone();
            let batches = Guarded::new(r, "the Parquet decoder")
                .map(move |b| b.and_then(|b| relabel(b, &zoned)));
            Ok(Input {
                schema,
                batches: Box::new(batches),
                format: "parquet",
                // Its metadata counts the rows: a truer measure than bytes.
                extent: rows.map_or(Extent::Unknown, Extent::Rows),
            })
        }
        InputFormat::Csv => {
            let mut csv = csv.clone();
            if csv.delimiter.is_none() && ext(path) == "tsv" {
                csv.delimiter = Some(b'\t');
            }
            open_csv(
                BufReader::with_capacity(1 << 20, file),
                batch_rows,
                &csv,
                path,
            )
        }
        InputFormat::Auto => unreachable!("resolved above"),
    }?;
    if matches!(input.extent, Extent::Unknown) {
        input.extent = extent;
    }
    Ok(input)
}

/// Reads up to `buf.len()` bytes from the start of `file` and rewinds it.
fn read_prefix(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    file.rewind()?;
    Ok(n)
}

/// The format told by a file's first bytes.
fn sniff(file: &mut File) -> std::io::Result<Option<InputFormat>> {
    let mut head = [0_u8; 8];
    let n = read_prefix(file, &mut head)?;
    let head = &head[..n];
    Ok(if head.starts_with(b"PAR1") {
        Some(InputFormat::Parquet)
    } else if head.starts_with(b"ARROW1") || head.starts_with(&[0xff, 0xff, 0xff, 0xff]) {
        Some(InputFormat::Arrow)
    } else {
        None
    })
}

/// Why `head`, the first bytes of standard input, cannot start an Arrow
/// IPC stream, when they tell: the formats that need a seekable file, text
/// (CSV read without --format csv), or nothing at all.
fn not_a_stream(head: &[u8]) -> Option<CliError> {
    if head.is_empty() {
        return Some(CliError::Stdin(
            "standard input is empty: an Arrow IPC stream starts with its schema",
        ));
    }
    if head.starts_with(b"ARROW1") {
        return Some(CliError::Stdin(
            "standard input holds an Arrow IPC file, which needs seeking (its footer is \
             at the end): pass it as a path",
        ));
    }
    if head.starts_with(b"PAR1") {
        return Some(CliError::Stdin(
            "standard input holds Parquet, which needs seeking (its footer is at the end): \
             pass it as a path",
        ));
    }
    if head.starts_with(&[0xff; 4]) {
        return None;
    }
    // Text: valid UTF-8 (a character cut by the end of `head` aside) with
    // no control bytes other than tab, CR and LF.
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).expect("valid up to there")
        }
        Err(_) => return None,
    };
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\t' | '\r' | '\n'));
    if !plain {
        return None;
    }
    let first_line = text.lines().next().unwrap_or("");
    Some(CliError::Stdin(
        if first_line.contains([',', '\t', ';', '|']) {
            "standard input holds CSV: add --format csv"
        } else {
            "standard input holds text, not an Arrow IPC stream; if it is CSV, add \
             --format csv"
        },
    ))
}

/// Cuts batches longer than `max_rows` into slices (zero-copy).
fn rebatch(
    schema: SchemaRef,
    batches: Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>>>,
    max_rows: usize,
    format: &'static str,
) -> Input {
    let max_rows = max_rows.max(1);
    let iter = batches.flat_map(move |b| -> Vec<Result<RecordBatch, ArrowError>> {
        match b {
            Ok(b) if b.num_rows() > max_rows => (0..b.num_rows())
                .step_by(max_rows)
                .map(|at| Ok(b.slice(at, max_rows.min(b.num_rows() - at))))
                .collect(),
            other => vec![other],
        }
    });
    Input {
        schema,
        batches: Box::new(iter),
        format,
        extent: Extent::Unknown,
    }
}

/// Parses `name:type,name:type`: the types are bool, int8..int64,
/// uint8..uint64, float32, float64, utf8 (or string), large_utf8, binary,
/// date32 (or date), timestamp (µs) and timestamp_ms/timestamp_ns. Every
/// column is nullable.
pub fn parse_schema(spec: &str) -> Result<Schema, CliError> {
    let mut fields = Vec::new();
    for part in spec.split(',') {
        let (name, ty) = part
            .split_once(':')
            .ok_or_else(|| CliError::Schema(format!("'{part}' is not name:type")))?;
        let ty = match ty.trim().to_ascii_lowercase().as_str() {
            "bool" | "boolean" => DataType::Boolean,
            "int8" => DataType::Int8,
            "int16" => DataType::Int16,
            "int32" => DataType::Int32,
            "int64" => DataType::Int64,
            "uint8" => DataType::UInt8,
            "uint16" => DataType::UInt16,
            "uint32" => DataType::UInt32,
            "uint64" => DataType::UInt64,
            "float32" => DataType::Float32,
            "float64" | "double" => DataType::Float64,
            "utf8" | "string" => DataType::Utf8,
            "large_utf8" => DataType::LargeUtf8,
            "binary" => DataType::Binary,
            "date32" | "date" => DataType::Date32,
            "timestamp" | "timestamp_us" => DataType::Timestamp(TimeUnit::Microsecond, None),
            "timestamp_ms" => DataType::Timestamp(TimeUnit::Millisecond, None),
            "timestamp_ns" => DataType::Timestamp(TimeUnit::Nanosecond, None),
            other => {
                return Err(CliError::Schema(format!(
                    "unknown type '{other}' for column '{name}'"
                )));
            }
        };
        fields.push(Field::new(name.trim(), ty, true));
    }
    Ok(Schema::new(fields))
}

/// Where `consume` writes: a file or stdout.
pub type Out = BufWriter<Box<dyn Write + Send>>;

/// The output of `consume`, opened (or created) but not yet truncated: a
/// consumer that is then refused (its role taken, a schema its format
/// cannot hold) leaves an existing file as it was.
pub enum Output {
    Stdout,
    File {
        file: File,
        path: String,
        /// It held bytes before this run opened it.
        existed: bool,
    },
}

impl Output {
    /// Opens `path` (`-`: stdout) for writing, creating it if needed,
    /// without truncating it.
    pub fn open(path: &str) -> Result<Self, CliError> {
        if path == "-" {
            return Ok(Self::Stdout);
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| CliError::io(Action::Create, path, e))?;
        let existed = file.metadata().is_ok_and(|m| m.len() > 0);
        Ok(Self::File {
            file,
            path: path.to_owned(),
            existed,
        })
    }

    /// Whether the output is a file that held bytes before this run: one
    /// that no batch was accepted for is left as it was.
    pub fn existed(&self) -> bool {
        matches!(self, Self::File { existed: true, .. })
    }

    /// The writer, once the output is to be written: a regular file is
    /// truncated first (a pipe or a device such as /dev/null is not).
    pub fn start(self) -> Result<Out, CliError> {
        let w: Box<dyn Write + Send> = match self {
            Self::Stdout => Box::new(std::io::stdout()),
            Self::File { file, path, .. } => {
                let regular = file
                    .metadata()
                    .map_err(|e| CliError::io(Action::Write, &path, e))?
                    .is_file();
                if regular {
                    file.set_len(0)
                        .map_err(|e| CliError::io(Action::Truncate, &path, e))?;
                }
                Box::new(file)
            }
        };
        Ok(BufWriter::with_capacity(1 << 20, w))
    }
}

/// `batch`, with each column that holds a dictionary copied into process
/// memory (the dictionary's values are shared, only the rest is copied).
///
/// arrow-ipc's stream writer keeps the last dictionary column it wrote for
/// each dictionary id, keys included, to tell whether the next one changed.
/// A column of a batch leased from the ring would keep that batch's lease,
/// and with it (the ring releases in order) every batch after it, until
/// `consume` failed with "64 leased batches are outstanding" while holding
/// one batch at a time.
fn detach_dictionaries(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let holds_dictionary = |t: &DataType| {
        let mut found = false;
        let mut stack = vec![t];
        while let Some(t) = stack.pop() {
            match t {
                DataType::Dictionary(..) => found = true,
                DataType::List(f)
                | DataType::LargeList(f)
                | DataType::ListView(f)
                | DataType::LargeListView(f)
                | DataType::FixedSizeList(f, _)
                | DataType::Map(f, _) => stack.push(f.data_type()),
                DataType::Struct(fs) => stack.extend(fs.iter().map(|f| f.data_type())),
                DataType::Union(fs, _) => stack.extend(fs.iter().map(|(_, f)| f.data_type())),
                DataType::RunEndEncoded(a, b) => stack.extend([a.data_type(), b.data_type()]),
                _ => {}
            }
        }
        found
    };
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| holds_dictionary(f.data_type()))
    {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .map(|c| {
            if !holds_dictionary(c.data_type()) {
                return Ok(c.clone());
            }
            let data = c.to_data();
            let mut copy = MutableArrayData::new(vec![&data], false, data.len());
            copy.try_extend(0, 0, data.len())?;
            Ok(make_array(copy.freeze()))
        })
        .collect::<Result<_, ArrowError>>()?;
    RecordBatch::try_new_with_options(
        batch.schema(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

/// A writer of one output format.
pub enum Sink {
    Stream(StreamWriter<Out>),
    /// With the schema's dictionary columns decoded.
    File(FileWriter<Out>, SchemaRef),
    /// With the schema as stored (see [`parquet_type`]).
    Parquet(Box<ArrowWriter<Out>>, SchemaRef),
    Csv {
        out: Out,
        header_done: bool,
        delimiter: u8,
    },
}

/// The type that Parquet output stores for `t`, so that pyarrow, DuckDB
/// and polars read what was meant: Parquet has no logical type for
/// seconds (timestamp[s] and time32[s] become milliseconds, losslessly),
/// and arrow-rs's writer cannot write dictionaries of view types (polars'
/// Categorical), whose values become plain strings and binaries. Date64
/// is stored as a date by the writer's own coercion.
pub fn parquet_type(t: &DataType) -> DataType {
    let field = |f: &Field| Arc::new(f.clone().with_data_type(parquet_type(f.data_type())));
    match t {
        DataType::Timestamp(TimeUnit::Second, tz) => {
            DataType::Timestamp(TimeUnit::Millisecond, tz.clone())
        }
        DataType::Time32(TimeUnit::Second) => DataType::Time32(TimeUnit::Millisecond),
        DataType::Dictionary(k, v) => {
            let v = match v.as_ref() {
                DataType::Utf8View => DataType::Utf8,
                DataType::BinaryView => DataType::Binary,
                other => parquet_type(other),
            };
            DataType::Dictionary(k.clone(), Box::new(v))
        }
        DataType::List(f) => DataType::List(field(f)),
        DataType::LargeList(f) => DataType::LargeList(field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(field(f), *n),
        DataType::Map(f, sorted) => DataType::Map(field(f), *sorted),
        DataType::Struct(fs) => DataType::Struct(fs.iter().map(|f| field(f)).collect()),
        other => other.clone(),
    }
}

/// `schema` with each type as [`parquet_type`] stores it.
fn parquet_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| {
                f.as_ref()
                    .clone()
                    .with_data_type(parquet_type(f.data_type()))
            })
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

/// The name of the first column of `fields` (by path) whose type contains
/// a union.
fn union_column(fields: &arrow_schema::Fields) -> Option<String> {
    fields.iter().find_map(|f| {
        let inner =
            |fs: &arrow_schema::Fields| union_column(fs).map(|c| format!("{}.{c}", f.name()));
        match f.data_type() {
            DataType::Union(..) => Some(f.name().clone()),
            DataType::Struct(fs) => inner(fs),
            DataType::List(c)
            | DataType::LargeList(c)
            | DataType::FixedSizeList(c, _)
            | DataType::Map(c, _) => inner(&vec![c.clone()].into()),
            DataType::Dictionary(_, v) if matches!(v.as_ref(), DataType::Union(..)) => {
                Some(f.name().clone())
            }
            _ => None,
        }
    })
}

/// Whether `format` can hold a stream of `schema`: checked when the
/// stream's first batch arrives, before anything is written, by running
/// the format's writer on an empty batch. `Err` says why not.
pub fn check_schema(format: OutputFormat, schema: &SchemaRef) -> Result<(), String> {
    if format == OutputFormat::Parquet
        && let Some(column) = union_column(schema.fields())
    {
        return Err(format!(
            "column '{column}' is a union, which Parquet cannot hold; use --format arrow \
             or arrow-file"
        ));
    }
    let what = match format {
        OutputFormat::Arrow | OutputFormat::ArrowFile => "the Arrow IPC writer",
        OutputFormat::Parquet => "the Parquet writer",
        OutputFormat::Csv | OutputFormat::Tsv => "the CSV writer",
    };
    let probe = || {
        let out: Out = BufWriter::new(Box::new(std::io::sink()));
        let mut sink = Sink::new(out, format, schema, &ParquetOptions::default())?;
        sink.write(&RecordBatch::new_empty(schema.clone()))?;
        sink.finish()
    };
    crate::guard::guarded(what, probe).map_err(|e| format!("{what} cannot hold it: {e}"))
}

/// `batch` with its columns cast to `schema`'s types where they differ;
/// a value that does not fit is an error, never a null.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let strict = arrow_cast::CastOptions {
        safe: false,
        ..Default::default()
    };
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| match c.data_type() == f.data_type() {
            true => Ok(c.clone()),
            false => arrow_cast::cast_with_options(c, f.data_type(), &strict),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

fn parquet_error(e: parquet::errors::ParquetError) -> ArrowError {
    ArrowError::ExternalError(Box::new(e))
}

impl Sink {
    pub fn new(
        out: Out,
        format: OutputFormat,
        schema: &Schema,
        parquet: &ParquetOptions,
    ) -> Result<Self, ArrowError> {
        Ok(match format {
            OutputFormat::Arrow => Self::Stream(StreamWriter::try_new(out, schema)?),
            OutputFormat::ArrowFile => {
                let plain = Arc::new(Schema::new_with_metadata(
                    schema
                        .fields()
                        .iter()
                        .map(|f| match f.data_type() {
                            DataType::Dictionary(_, v) => {
                                f.as_ref().clone().with_data_type(*v.clone())
                            }
                            _ => f.as_ref().clone(),
                        })
                        .collect::<Vec<_>>(),
                    schema.metadata().clone(),
                ));
                Self::File(FileWriter::try_new(out, &plain)?, plain)
            }
            OutputFormat::Parquet => {
                let props = parquet.properties();
                let stored = parquet_schema(schema);
                let w = ArrowWriter::try_new(out, stored.clone(), Some(props))
                    .map_err(parquet_error)?;
                Self::Parquet(Box::new(w), stored)
            }
            OutputFormat::Csv | OutputFormat::Tsv => Self::Csv {
                out,
                header_done: false,
                delimiter: if format == OutputFormat::Tsv {
                    b'\t'
                } else {
                    b','
                },
            },
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        match self {
            Self::Stream(w) => w.write(&detach_dictionaries(batch)?),
            Self::File(w, plain) => {
                let columns = batch
                    .columns()
                    .iter()
                    .zip(plain.fields())
                    .map(|(c, f)| match c.data_type() {
                        DataType::Dictionary(..) => arrow_cast::cast(c, f.data_type()),
                        _ => Ok(c.clone()),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                w.write(&RecordBatch::try_new(plain.clone(), columns)?)
            }
            Self::Parquet(w, stored) => w.write(&conform(batch, stored)?).map_err(parquet_error),
            Self::Csv {
                out,
                header_done,
                delimiter,
            } => {
                // Through a buffer: the csv writer keeps only the text of an
                // I/O error, and a closed pipe (`consume -o - | head`) must
                // be told from a failed write by its `io::ErrorKind`.
                let mut text = Vec::new();
                arrow_csv::WriterBuilder::new()
                    .with_header(!*header_done)
                    .with_delimiter(*delimiter)
                    .build(&mut text)
                    .write(batch)?;
                *header_done = true;
                Ok(out.write_all(&text)?)
            }
        }
    }

    /// Whether batches written may still be in the writer's buffers after
    /// [`flush`](Self::flush) is not called: Parquet keeps a row group in
    /// memory until it is flushed.
    pub fn holds_batches(&self) -> bool {
        matches!(self, Self::Parquet(..))
    }

    /// Puts every batch written so far into the output (handed to the
    /// operating system): a Parquet row group is closed and written, a
    /// file format's bytes so far reach the file (it is complete only once
    /// finished).
    pub fn flush(&mut self) -> Result<(), ArrowError> {
        match self {
            Self::Stream(w) => w.flush(),
            Self::File(w, _) => w.flush(),
            Self::Parquet(w, _) => {
                w.flush().map_err(parquet_error)?;
                Ok(w.inner_mut().flush()?)
            }
            Self::Csv { out, .. } => Ok(out.flush()?),
        }
    }

    /// Completes the output (end-of-stream marker, footer) and flushes it.
    pub fn finish(self) -> Result<(), ArrowError> {
        let mut out = match self {
            Self::Stream(mut w) => {
                w.finish()?;
                w.into_inner()?
            }
            Self::File(mut w, _) => {
                w.finish()?;
                w.into_inner()?
            }
            Self::Parquet(w, _) => w.into_inner().map_err(parquet_error)?,
            Self::Csv { out, .. } => out,
        };
        out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_specs() {
        let s = parse_schema("id:int64, name:utf8,when:timestamp").unwrap();
        assert_eq!(s.fields().len(), 3);
        assert_eq!(s.field(1).name(), "name");
        assert_eq!(
            s.field(2).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert!(parse_schema("id").is_err());
        assert!(parse_schema("id:decimal").is_err());
    }
}
