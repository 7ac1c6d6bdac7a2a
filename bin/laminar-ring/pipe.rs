//! `produce` (a data file into a ring) and `consume` (the sidecar: a ring
//! into a data file).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::Schema;
use laminar_ring::arrow::{ArrowRingError, BatchProducer};

use crate::failure::{EXIT_PRODUCER_DIED, Failure, fail, file_failure, ring_failure};
use crate::formats::{self, CsvOptions, InputFormat, OutputFormat, Sink};
use crate::progress::Progress;
use crate::units::{fmt_bytes, fmt_count, parse_count};
use crate::{Geometry, Location, rings};

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Name of the ring.
    pub name: String,
    /// The data file, or - for an Arrow IPC stream on standard input.
    #[arg(long, short, value_name = "PATH|-")]
    pub input: String,
    /// Format of the input.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    pub format: InputFormat,
    /// Rows per batch: CSV and Parquet are read in batches of this size,
    /// and longer Arrow batches are sliced.
    #[arg(long, value_name = "N", default_value = "65536", value_parser = parse_count)]
    pub batch_rows: u64,
    /// CSV: the schema as name:type,... instead of inferring it from the
    /// first 10,000 rows. Types: bool, int8..int64, uint8..uint64, float32,
    /// float64, utf8, large_utf8, binary, date32, timestamp (µs),
    /// timestamp_ms, timestamp_ns.
    #[arg(long, value_name = "SPEC")]
    pub schema: Option<String>,
    /// CSV: the first line is data, not column names.
    #[arg(long)]
    pub no_header: bool,
    /// CSV: the field separator, one byte (default ',', or tab for .tsv).
    #[arg(long, value_name = "CHAR", value_parser = parse_delimiter)]
    pub delimiter: Option<u8>,
    #[command(flatten)]
    pub geometry: Geometry,
    #[command(flatten)]
    pub location: Location,
}

fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s.as_bytes() {
        [b] => Ok(*b),
        b"\\t" => Ok(b'\t'),
        _ => Err(format!("'{s}' is not a single-byte delimiter")),
    }
}

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Name of the ring.
    pub name: String,
    /// The output file (truncated if it exists), or - for standard output.
    #[arg(long, short, value_name = "PATH|-")]
    pub output: String,
    /// Format of the output.
    #[arg(long, value_enum, default_value_t = OutputFormat::Arrow)]
    pub format: OutputFormat,
    /// Keep running after the end of a stream and after a producer dies,
    /// for the next producer (which must send the same schema), until
    /// SIGINT or SIGTERM.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub geometry: Geometry,
    #[command(flatten)]
    pub location: Location,
}

/// Bytes of Arrow data a batch references (its slices' buffers).
pub fn data_bytes(b: &RecordBatch) -> u64 {
    b.columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
        .sum()
}

pub fn produce(args: &ProduceArgs) -> Result<(), Failure> {
    let csv = CsvOptions {
        schema: args.schema.clone(),
        no_header: args.no_header,
        delimiter: args.delimiter,
    };
    let batch_rows = usize::try_from(args.batch_rows).unwrap_or(usize::MAX);
    // Bad input fails here, before the ring is touched.
    let mut input = formats::open_input(&args.input, args.format, batch_rows, &csv)?;
    let opts = rings::ring_options(&args.geometry, &args.location);
    let mut tx = rings::producer(&args.name, &opts)?;
    let mut progress = Progress::new(&format!("produce -> {}", args.name));
    let mut waiting = false;
    let mut sent = || -> Result<(), Failure> {
        for batch in input.batches.by_ref() {
            let batch = batch.map_err(|e| file_failure("cannot read", &args.input, e))?;
            send(&mut tx, &batch, &args.name, &progress, &mut waiting)?;
            progress.add(batch.num_rows() as u64, data_bytes(&batch));
        }
        if progress.batches() == 0 {
            // An empty input still tells the consumer its schema.
            let empty = RecordBatch::new_empty(input.schema.clone());
            send(&mut tx, &empty, &args.name, &progress, &mut waiting)?;
        }
        Ok(())
    };
    if let Err(f) = sent() {
        // A partial stream must not look whole: the consumer gets what was
        // sent, then learns that its producer failed.
        progress.finish();
        tx.abandon();
        return Err(f);
    }
    tx.close().map_err(|e| ring_failure(&args.name, e))?;
    progress.finish();
    eprintln!(
        "laminar-ring: sent {} rows in {} batches ({}, {}) to ring '{}'; stream closed",
        fmt_count(progress.rows()),
        fmt_count(progress.batches()),
        fmt_bytes(progress.bytes()),
        input.format,
        args.name
    );
    Ok(())
}

/// Sends `batch`, halving it while one message would not fit in the arena,
/// and waiting for a new consumer while the old one is gone.
fn send(
    tx: &mut BatchProducer,
    batch: &RecordBatch,
    name: &str,
    progress: &Progress,
    waiting: &mut bool,
) -> Result<(), Failure> {
    loop {
        match tx.send(batch) {
            Ok(()) => {
                *waiting = false;
                return Ok(());
            }
            Err(ArrowRingError::BatchTooLarge { .. }) if batch.num_rows() > 1 => {
                let half = batch.num_rows() / 2;
                send(tx, &batch.slice(0, half), name, progress, waiting)?;
                return send(
                    tx,
                    &batch.slice(half, batch.num_rows() - half),
                    name,
                    progress,
                    waiting,
                );
            }
            Err(ArrowRingError::ConsumerGone) => {
                if !*waiting {
                    progress.note(&format!(
                        "the consumer of ring '{name}' is gone and the batches it did not \
                         release leave no room for the next; waiting for a new consumer"
                    ));
                    *waiting = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(ring_failure(name, e)),
        }
    }
}

/// How a `consume` run ended.
enum Ending {
    EndOfStream,
    Signalled,
    ProducerDied,
}

pub fn consume(args: &ConsumeArgs) -> Result<(), Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while finishing up exits at once (code 1).
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
            .map_err(|e| fail!("cannot handle signals: {e}"))?;
    }
    let name = &args.name;
    let mut out = Some(formats::create_output(&args.output)?);
    let opts = rings::ring_options(&args.geometry, &args.location);
    let mut rx = rings::consumer(name, &opts)?;
    let mut sink: Option<Sink> = None;
    let mut progress = Progress::new(&format!("consume <- {name}"));
    let write_failure = |e: arrow_schema::ArrowError| file_failure("cannot write", &args.output, e);
    let mut told_dead = false;
    let ending = loop {
        if stop.load(Ordering::Relaxed) {
            break Ending::Signalled;
        }
        match rx.recv_zero_copy_timeout(Duration::from_millis(100)) {
            Ok(Some(batch)) => {
                told_dead = false;
                if sink.is_none() {
                    let schema = batch.schema();
                    // Later producers must send the same schema.
                    rx.expect_schema(schema.clone());
                    let out = out.take().expect("the output is taken once");
                    sink = Some(Sink::new(out, args.format, &schema).map_err(write_failure)?);
                }
                let s = sink.as_mut().expect("made above");
                s.write(&batch).map_err(write_failure)?;
                // Written through to the file before its slot is released.
                s.flush().map_err(write_failure)?;
                progress.add(batch.num_rows() as u64, data_bytes(&batch));
                drop(batch);
            }
            Ok(None) if args.follow => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => break Ending::EndOfStream,
            Err(ArrowRingError::Timeout) => {}
            Err(ArrowRingError::PeerGone) if args.follow => {
                if !told_dead {
                    progress.note(&format!(
                        "the producer of ring '{name}' died; every batch it committed is \
                         written; waiting for the next producer"
                    ));
                    told_dead = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(ArrowRingError::PeerGone) => break Ending::ProducerDied,
            Err(e) => {
                // Leave a valid output of what was written, then report.
                let _ = finish(sink, out, args.format, rx.schema().cloned());
                return Err(ring_failure(name, e));
            }
        }
    };
    finish(sink, out, args.format, rx.schema().cloned()).map_err(write_failure)?;
    drop(rx);
    progress.finish();
    let summary = format!(
        "wrote {} rows in {} batches ({}) from ring '{name}' to {}",
        fmt_count(progress.rows()),
        fmt_count(progress.batches()),
        fmt_bytes(progress.bytes()),
        if args.output == "-" {
            "standard output"
        } else {
            &args.output
        }
    );
    match ending {
        Ending::EndOfStream => {
            eprintln!("laminar-ring: {summary}; end of stream");
            Ok(())
        }
        Ending::Signalled => {
            eprintln!("laminar-ring: {summary}; stopped by signal");
            Ok(())
        }
        Ending::ProducerDied => Err(fail!(
            "the producer of ring '{name}' died; {summary}: every batch it committed"
        )
        .with_code(EXIT_PRODUCER_DIED)),
    }
}

/// Completes the output: the sink if one was opened, or else an empty
/// output with the stream's schema (or none).
fn finish(
    sink: Option<Sink>,
    out: Option<formats::Out>,
    format: OutputFormat,
    schema: Option<arrow_schema::SchemaRef>,
) -> Result<(), arrow_schema::ArrowError> {
    let sink = match (sink, out) {
        (Some(sink), _) => sink,
        (None, Some(out)) => {
            let schema = schema.unwrap_or_else(|| Arc::new(Schema::empty()));
            Sink::new(out, format, &schema)?
        }
        (None, None) => return Ok(()),
    };
    sink.finish()
}
