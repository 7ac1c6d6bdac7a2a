//! `produce` (a data file into a ring) and `consume` (the sidecar: a ring
//! into a data file).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, Schema, SchemaRef};
use laminar_ring::arrow::{ArrowRingError, BatchConsumer, BatchProducer, LeasedBatch};

use crate::error::{Action, CliError};
use crate::formats::{
    self, CsvOptions, InputFormat, OutputFormat, ParquetCodec, ParquetOptions, Sink,
};
use crate::print::{errln, is_broken_pipe};
use crate::progress::Progress;
use crate::rings::{self, Geometry, Location};
use crate::units::{fmt_bytes, fmt_count, parse_count};

/// Send a data file (or stdin) into a ring, then end the stream.
///
/// Reads Arrow IPC (stream or file; uncompressed, LZ4 or ZSTD;
/// little-endian), CSV or Parquet (any codec pyarrow writes). Malformed
/// input is one line and exit 1. Creates the ring if
/// it does not exist. If the input breaks half-way (a bad CSV row), the
/// stream is left unended, so the consumer sees its producer fail
/// (consume exits 3) instead of a complete-looking stream.
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

fn parse_positive(s: &str) -> Result<u64, String> {
    match parse_count(s)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s.as_bytes() {
        [b] => Ok(*b),
        b"\\t" => Ok(b'\t'),
        _ => Err(format!("'{s}' is not a single-byte delimiter")),
    }
}

/// The sidecar: write what a ring receives to a file or stdout.
///
/// Runs until the end of the stream, or with --follow until a signal.
/// Creates the ring if it does not exist. Each batch is written through
/// to the output before its slot is released, and a batch whose write
/// fails stays in the ring; with --format parquet, a row group at a
/// time (row groups are cut at 63 batches, a quarter of the ring's
/// slots or arena, 1 Mi rows, or 100 ms idle: smaller than a plain
/// writer's, in exchange for losing nothing). The output is truncated
/// only when the first batch is accepted. On SIGINT or SIGTERM it
/// finishes the batch in hand, completes the output (footer included)
/// and exits 0; unconsumed batches stay in the ring for the next
/// consumer. If the producer dies, it writes every batch the producer
/// committed, completes the output and exits 3.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Name of the ring.
    pub name: String,
    /// The output file (truncated if it exists), or - for standard output.
    #[arg(long, short, value_name = "PATH|-")]
    pub output: String,
    /// Format of the output. When absent, the -o file's extension tells
    /// it: .parquet or .pq: parquet; .arrow, .feather or .ipc: arrow-file;
    /// .arrows: arrow; .csv: csv; .tsv: tsv. Standard output (-) and any
    /// other name: arrow (an Arrow IPC stream).
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
    /// Parquet output: the codec of its pages.
    #[arg(long, value_enum, value_name = "CODEC", default_value_t = ParquetCodec::Snappy)]
    pub compression: ParquetCodec,
    /// Parquet output: the most rows a row group holds (default 1 Mi;
    /// row groups are also cut as --follow describes).
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub row_group_rows: Option<u64>,
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

pub fn produce(args: &ProduceArgs) -> Result<(), CliError> {
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
    let mut sent = || -> Result<(), CliError> {
        for batch in input.batches.by_ref() {
            let batch = batch.map_err(|e| CliError::data(Action::Read, &args.input, e))?;
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
    tx.close().map_err(|e| CliError::ring(&args.name, e))?;
    progress.finish();
    errln!(
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
) -> Result<(), CliError> {
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
            Err(e) => return Err(CliError::ring(name, e)),
        }
    }
}

/// How a `consume` run ended.
enum Ending {
    EndOfStream,
    Signalled,
    ProducerDied,
}

/// When `consume` must put the Parquet row group it holds into the output,
/// so that it can release the batches in it: before the ring runs short
/// of lease room, slots or arena for the producer, or the row group grows
/// past the writer's usual size.
struct HoldLimits {
    leases: usize,
    slots: u64,
    arena: u64,
    rows: u64,
}

impl HoldLimits {
    fn of(name: &str, opts: &laminar_ring::arrow::ArrowRingOptions) -> Self {
        // The ring's own geometry (an existing ring keeps its own).
        let (slots, arena) = laminar_ring::shm::inspect(name, &opts.segment)
            .map_or((opts.slots as u64, opts.arena_bytes), |i| {
                (i.layout.capacity, i.layout.arena_len)
            });
        Self {
            leases: opts.max_leases.saturating_sub(1).max(1),
            slots: (slots / 4).max(1),
            arena: arena / 4,
            rows: 1 << 20,
        }
    }

    fn reached(&self, held: &[LeasedBatch], outstanding: usize) -> bool {
        let rows: u64 = held.iter().map(|b| b.num_rows() as u64).sum();
        let bytes: u64 = held.iter().map(|b| data_bytes(b)).sum();
        outstanding >= self.leases
            || outstanding as u64 >= self.slots
            || bytes >= self.arena
            || rows >= self.rows
    }
}

/// What `consume` holds: the output, the writer once the stream's schema
/// is known, and the batches written to the writer but not yet in the
/// output (a Parquet row group), whose leases keep them in the ring.
struct Drain<'a> {
    args: &'a ConsumeArgs,
    format: OutputFormat,
    parquet: ParquetOptions,
    out: Option<formats::Output>,
    sink: Option<Sink>,
    held: Vec<LeasedBatch>,
}

impl Drain<'_> {
    fn write_failure(&self, e: ArrowError) -> CliError {
        if is_broken_pipe(&e) {
            // `consume -o - | head`: the reader is done; so are we.
            CliError::ClosedPipe
        } else {
            CliError::data(Action::Write, &self.args.output, e)
        }
    }

    /// Writes `batch` (the first one also starts the output), and passes
    /// the batches held so far into the output when `flush_now` says so.
    fn write(
        &mut self,
        rx: &mut BatchConsumer,
        batch: LeasedBatch,
        limits: &HoldLimits,
    ) -> Result<(), CliError> {
        // Held from here on: whatever fails below, its lease is alive
        // when the caller detaches, so it is not released.
        self.held.push(batch);
        let batch = self.held.last().expect("pushed above");
        if self.sink.is_none() {
            let schema = batch.schema();
            if let Err(why) = formats::check_schema(self.format, &schema) {
                return Err(CliError::Unwritable {
                    name: self.args.name.clone(),
                    why,
                });
            }
            // Later producers must send the same schema.
            rx.expect_schema(schema.clone());
            let out = self
                .out
                .take()
                .expect("the output is started once")
                .start()?;
            let sink = Sink::new(out, self.format, &schema, &self.parquet);
            self.sink = Some(sink.map_err(|e| self.write_failure(e))?);
        }
        let sink = self.sink.as_mut().expect("made above");
        let batch = self.held.last().expect("pushed above");
        // The Arrow stream writer copies dictionary columns itself
        // (`formats::detach_dictionaries`), so it keeps no lease.
        let written = sink.write(batch);
        let holds = sink.holds_batches();
        written.map_err(|e| self.write_failure(e))?;
        if !holds || limits.reached(&self.held, rx.outstanding()) {
            self.flush()?;
        }
        Ok(())
    }

    /// Puts what was written into the output, then lets the held batches
    /// go: their slots are released on the next receive.
    fn flush(&mut self) -> Result<(), CliError> {
        if let Some(sink) = &mut self.sink {
            sink.flush().map_err(|e| self.write_failure(e))?;
        }
        self.held.clear();
        Ok(())
    }

    /// Completes the output: the writer if the stream started, or else an
    /// empty output with the stream's schema (or none).
    fn finish(&mut self, schema: Option<SchemaRef>) -> Result<(), CliError> {
        let sink = match (self.sink.take(), self.out.take()) {
            (Some(sink), _) => sink,
            (None, Some(out)) => {
                let schema = schema.unwrap_or_else(|| Arc::new(Schema::empty()));
                let out = out.start()?;
                Sink::new(out, self.format, &schema, &self.parquet)
                    .map_err(|e| self.write_failure(e))?
            }
            (None, None) => return Ok(()),
        };
        // The held batches are in the output now; their leases go with
        // `self`, before the consumer releases them.
        sink.finish().map_err(|e| self.write_failure(e))
    }
}

pub fn consume(args: &ConsumeArgs) -> Result<(), CliError> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while finishing up exits at once (code 1).
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
            .map_err(CliError::Signals)?;
    }
    let name = &args.name;
    let opts = rings::ring_options(&args.geometry, &args.location);
    let mut rx = rings::consumer(name, &opts)?;
    // Opened only now that the consumer role is ours, and truncated only
    // when the first batch is accepted: a refused consumer leaves the
    // file that a running one writes as it was.
    let out = formats::Output::open(&args.output)?;
    let limits = HoldLimits::of(name, &opts);
    let format = args
        .format
        .or_else(|| OutputFormat::from_extension(&args.output))
        .unwrap_or(OutputFormat::Arrow);
    let parquet = ParquetOptions {
        codec: args.compression,
        row_group_rows: args
            .row_group_rows
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let mut drain = Drain {
        args,
        format,
        parquet,
        out: Some(out),
        sink: None,
        held: Vec::new(),
    };
    let mut progress = Progress::new(&format!("consume <- {name}"));
    let mut told_dead = false;
    let ended = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(Ending::Signalled);
        }
        let step = match rx.recv_zero_copy_timeout(Duration::from_millis(100)) {
            Ok(Some(batch)) => {
                told_dead = false;
                let (rows, bytes) = (batch.num_rows() as u64, data_bytes(&batch));
                let r = drain.write(&mut rx, batch, &limits);
                if r.is_ok() {
                    progress.add(rows, bytes);
                }
                r
            }
            Ok(None) if args.follow => {
                std::thread::sleep(Duration::from_millis(50));
                drain.flush()
            }
            Ok(None) => break Ok(Ending::EndOfStream),
            // Idle, or out of lease room: pass on the row group held.
            Err(ArrowRingError::Timeout) => drain.flush(),
            Err(ArrowRingError::TooManyLeases { .. }) if !drain.held.is_empty() => drain.flush(),
            Err(ArrowRingError::PeerGone) if args.follow => {
                if !told_dead {
                    progress.note(&format!(
                        "the producer of ring '{name}' died; every batch it committed is \
                         written; waiting for the next producer"
                    ));
                    told_dead = true;
                }
                std::thread::sleep(Duration::from_millis(50));
                drain.flush()
            }
            Err(ArrowRingError::PeerGone) => break Ok(Ending::ProducerDied),
            Err(e) => break Err(CliError::ring(name, e)),
        };
        if let Err(f) = step {
            break Err(f);
        }
    };
    // A valid output of what was written, whatever the ending.
    let finished = match &ended {
        // A closed stdout takes no more; a refused stream leaves the
        // output untouched.
        Err(CliError::ClosedPipe) => Ok(()),
        Err(_) if drain.sink.is_none() && !drain.held.is_empty() => Ok(()),
        // Stopped before any batch was accepted: a file that was there
        // stays as it was (the output is truncated only for a batch).
        Ok(Ending::Signalled | Ending::ProducerDied)
            if drain.sink.is_none() && drain.out.as_ref().is_some_and(|o| o.existed()) =>
        {
            Ok(())
        }
        _ => drain.finish(rx.schema().cloned()),
    };
    progress.finish();
    let ending = match (ended, finished) {
        (Ok(ending), Ok(())) => ending,
        (Err(f), _) | (Ok(_), Err(f)) => {
            // Whatever is not in the output stays in the ring: the batches
            // still held keep their leases through the detach.
            rx.detach();
            drop(drain);
            return Err(f);
        }
    };
    drop(drain);
    drop(rx);
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
            errln!("laminar-ring: {summary}; end of stream");
            Ok(())
        }
        Ending::Signalled => {
            errln!("laminar-ring: {summary}; stopped by signal");
            Ok(())
        }
        Ending::ProducerDied => Err(CliError::ProducerDied {
            name: name.clone(),
            summary,
        }),
    }
}
