//! `sample`: a small input to try the command on, the same rows as CSV and
//! as Parquet (the files the README's examples read).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::{Action, CliError};
use crate::print::errln;
use crate::units::fmt_count;

/// Write a small sample input: DIR/trades.csv and DIR/trades.parquet.
///
/// The same 5,000 trades (id, time, sym, px, qty), the same every time,
/// to try `produce` and `consume` on, as the README's examples do.
#[derive(Debug, clap::Args)]
pub struct SampleArgs {
    /// The directory to write into (it must exist).
    #[arg(value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Overwrite the files if they exist.
    #[arg(long)]
    pub force: bool,
}

/// Rows in the sample.
pub const SAMPLE_ROWS: usize = 5_000;

const SYMBOLS: [&str; 5] = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG"];

/// The sample's rows: deterministic, a trade every 250 ms from
/// 2024-01-02 09:30 (UTC, without a zone), prices on a cent grid. Every
/// column is nullable, as a CSV reader infers them, so that both files
/// have one schema and may follow each other into a `--follow` sidecar.
pub fn trades() -> Result<RecordBatch, ArrowError> {
    let n = SAMPLE_ROWS as i64;
    // 2024-01-02 09:30:00 in milliseconds since the epoch.
    let open_ms = 1_704_187_800_000_i64;
    let id = Int64Array::from_iter_values(0..n);
    let time = TimestampMillisecondArray::from_iter_values((0..n).map(|i| open_ms + i * 250));
    let sym = StringArray::from_iter_values((0..n).map(|i| SYMBOLS[(i * 7 % 5) as usize]));
    let px =
        Float64Array::from_iter_values((0..n).map(|i| 100.0 + (i * 7_919 % 10_000) as f64 / 100.0));
    let qty = Int64Array::from_iter_values((0..n).map(|i| 1 + i * 31 % 500));
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new("sym", DataType::Utf8, true),
        Field::new("px", DataType::Float64, true),
        Field::new("qty", DataType::Int64, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id),
        Arc::new(time),
        Arc::new(sym),
        Arc::new(px),
        Arc::new(qty),
    ];
    RecordBatch::try_new(Arc::new(schema), columns)
}

/// Creates `path` for writing: refused if it exists, unless `force`.
fn create(path: &Path, force: bool) -> Result<File, CliError> {
    let shown = path.display().to_string();
    let mut o = OpenOptions::new();
    o.write(true);
    if force {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    o.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::Exists {
                path: shown.clone(),
            }
        } else {
            CliError::io(Action::Create, &shown, e)
        }
    })
}

pub fn sample(args: &SampleArgs) -> Result<(), CliError> {
    let batch = trades().map_err(|e| CliError::data(Action::Write, "the sample", e))?;
    let csv_path = args.dir.join("trades.csv");
    let pq_path = args.dir.join("trades.parquet");
    // Both refused before either is written.
    if !args.force {
        for p in [&csv_path, &pq_path] {
            if p.exists() {
                return Err(CliError::Exists {
                    path: p.display().to_string(),
                });
            }
        }
    }

    let shown = csv_path.display().to_string();
    let file = create(&csv_path, args.force)?;
    let mut w = arrow_csv::WriterBuilder::new()
        .with_header(true)
        .build(std::io::BufWriter::new(file));
    w.write(&batch)
        .map_err(|e| CliError::data(Action::Write, &shown, e))?;
    let mut out = w.into_inner();
    std::io::Write::flush(&mut out).map_err(|e| CliError::io(Action::Write, &shown, e))?;

    let shown = pq_path.display().to_string();
    let file = create(&pq_path, args.force)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let write = || -> Result<(), parquet::errors::ParquetError> {
        let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
        w.write(&batch)?;
        w.close()?;
        Ok(())
    };
    write().map_err(|e| {
        CliError::data(
            Action::Write,
            &shown,
            ArrowError::ExternalError(Box::new(e)),
        )
    })?;

    errln!(
        "laminar-ring: wrote {} trades to {} and {}",
        fmt_count(SAMPLE_ROWS as u64),
        csv_path.display(),
        pq_path.display()
    );
    Ok(())
}
