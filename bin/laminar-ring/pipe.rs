//! `produce` (a data file into a ring) and `consume` (the sidecar: a ring
//! into a data file).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, Schema, SchemaRef};
use laminar_ring::arrow::{
    ArrowRingError, ArrowRingOptions, BatchFanIn, BatchFanInError, BatchProducer, LeasedBatch,
};
use laminar_ring::shm::{self, OpenError};

use crate::csv_input::CsvOptions;
use crate::error::{Action, CliError, one_line};
use crate::formats::{self, InputFormat, OutputFormat, ParquetCodec, ParquetOptions, Sink};
use crate::print::is_broken_pipe;
use crate::progress::{Progress, ProgressHandle, ReportArgs};
use crate::rings::{self, Geometry, Location};
use crate::summary::{ExitReason, Summary};
use crate::units::{fmt_bytes, fmt_counted, fmt_duration, parse_count, parse_duration};

/// Send a data file (or stdin) into a ring, then end the stream.
///
/// Reads Arrow IPC (stream or file; uncompressed, LZ4 or ZSTD;
/// little-endian), CSV or Parquet (any codec pyarrow writes). Creates the
/// ring if it does not exist. Malformed input is one line and exit 1, and
/// the ring's stream ends in error with a short reason, before the first
/// batch (a bad CSV header, a truncated file) or half-way (a bad CSV row):
/// a waiting consumer gets what was sent, then learns that its producer
/// failed and why (consume exits 4) instead of a complete-looking stream.
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
    #[arg(long, value_name = "SPEC", conflicts_with = "schema_from")]
    pub schema: Option<String>,
    /// CSV: read with the schema of FILE (an Arrow IPC file or stream, a
    /// Parquet file, or a CSV file whose inferred schema is taken), so
    /// that files whose columns drift between types from day to day (an
    /// integer column that once holds 2.5) keep one schema. The header
    /// must name FILE's columns, in order; a value that does not fit its
    /// column's type is an error naming the line, the column and the value.
    #[arg(long, value_name = "FILE")]
    pub schema_from: Option<String>,
    /// CSV: a field that is exactly STR is null (repeatable). Without it,
    /// an empty field, NA, null, NULL and N/A are null; giving it replaces
    /// that list. Inference skips nulls: a column of numbers with NA stays
    /// numeric.
    #[arg(long = "null-value", value_name = "STR")]
    pub null_values: Vec<String>,
    /// CSV: timestamps written as FMT (chrono strftime syntax, e.g.
    /// '%d/%m/%Y %H:%M:%S%.3f'). Inference makes a column whose values
    /// all read with FMT a timestamp (unit from FMT's fraction: none s,
    /// %.3f ms, %.6f µs, %.f or %.9f ns; an offset such as %z is
    /// converted to UTC); timestamp columns of --schema or --schema-from
    /// read FMT. ISO 8601 is read as well.
    #[arg(long, value_name = "FMT")]
    pub timestamp_format: Option<String>,
    /// CSV: dates written as FMT (chrono strftime syntax, e.g.
    /// '%d/%m/%Y'), for inferred columns whose values all read with FMT
    /// and for date32 columns of --schema or --schema-from. ISO 8601 is
    /// read as well.
    #[arg(long, value_name = "FMT")]
    pub date_format: Option<String>,
    /// CSV: the first line is data, not column names.
    #[arg(long)]
    pub no_header: bool,
    /// CSV: the field separator, one byte (default ',', or tab for .tsv).
    #[arg(long, value_name = "CHAR", value_parser = parse_delimiter)]
    pub delimiter: Option<u8>,
    /// Give up (exit 5) when no batch could be sent for DURATION (10s,
    /// 500ms, 2m): the ring stayed full, with no consumer attached or one
    /// that took nothing, or its consumer is gone and no other attached.
    /// Without it, wait as long as it takes.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    #[command(flatten)]
    pub report: ReportArgs,
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
/// committed, completes the output and exits 3; if the producer fails
/// (its input was bad), the same, with its reason, and exits 4.
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
    /// Keep running after the end of a stream and after a producer dies
    /// or fails, for the next producer (which must send the same schema),
    /// until SIGINT or SIGTERM (or --idle-exit).
    #[arg(long)]
    pub follow: bool,
    /// Several producers may feed one ring (each takes a lane of its own):
    /// the stream ends once every producer that came has closed and no
    /// new one has come for DURATION (default 0s: at once).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          conflicts_with = "follow")]
    pub linger: Option<Duration>,
    /// Give up (exit 5) when no batch arrived for DURATION (10s, 500ms,
    /// 2m): no producer attached, or the one attached sent nothing. The
    /// output holds what was written. Without it, wait as long as it takes.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// With --follow: stop (exit 0) once DURATION passed with no batch and
    /// no producer attached.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "follow")]
    pub idle_exit: Option<Duration>,
    /// The name to consume under: each name has its own position in the
    /// ring and reads every batch, at its own pace; the producer keeps a
    /// batch until every subscribed name has read it. A name seen for the
    /// first time subscribes (see --from); a known one resumes at its
    /// first batch not yet read. `laminar-ring unsubscribe` removes one.
    /// 1 to 32 of A-Z a-z 0-9 . _ -
    #[arg(long = "as", value_name = "NAME", default_value = shm::DEFAULT_SUBSCRIBER,
          value_parser = parse_subscriber)]
    pub subscriber: String,
    /// Where a new subscription starts: `earliest`, the oldest batch a
    /// subscribed name has not read yet (with no name subscribed, the
    /// oldest the ring holds), or `latest`, the next batch published. A
    /// known name resumes where it stands either way. An Arrow stream can
    /// be decoded only from its start: a name subscribed while a producer
    /// is sending reads from the next producer's stream on.
    #[arg(long, value_enum, default_value_t = From::Earliest)]
    pub from: From,
    #[command(flatten)]
    pub report: ReportArgs,
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
    let opts = rings::ring_options(&args.geometry, &args.location);
    let mut progress = Progress::for_pipe(
        &format!("produce -> {}", args.name),
        &args.report,
        &args.name,
        &opts.segment,
    );
    interrupt_produce_cleanly(args, progress.handle())?;
    let sent = send_input(args, &opts, &mut progress);
    progress.finish();
    let summary = Summary {
        command: "produce",
        ring: &args.name,
        rows: progress.rows(),
        batches: progress.batches(),
        bytes: progress.bytes(),
        seconds: progress.seconds(),
        exit_reason: ExitReason::Closed,
        failure: None,
        exit_code: 0,
    };
    match sent {
        Ok(format) => {
            let line = format!(
                "sent {} in {} ({}, {format}) to ring '{}'; stream closed",
                fmt_counted(progress.rows(), "row", "rows"),
                fmt_counted(progress.batches(), "batch", "batches"),
                fmt_bytes(progress.bytes()),
                args.name
            );
            summary.print(&args.report, &line, false);
            Ok(())
        }
        Err(f) => {
            if args.report.json {
                let reason = match f {
                    CliError::TimedOut { .. } => ExitReason::Timeout,
                    _ => ExitReason::Error,
                };
                summary.failed(reason, &f).print(&args.report, "", false);
            }
            Err(f)
        }
    }
}

/// On SIGINT or SIGTERM, `produce` clears its progress line, says how far
/// it got, and then ends by the signal as it would without a handler: the
/// stream is not closed, so its consumer gets what was sent and learns
/// that the producer died (consume exits 3).
fn interrupt_produce_cleanly(args: &ProduceArgs, handle: ProgressHandle) -> Result<(), CliError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(CliError::Signals)?;
    let (name, report) = (args.name.clone(), args.report.clone());
    std::thread::spawn(move || {
        let Some(sig) = signals.forever().next() else {
            return;
        };
        handle.clear();
        let (rows, batches, bytes) = handle.counts();
        let signame = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
        let summary = Summary {
            command: "produce",
            ring: &name,
            rows,
            batches,
            bytes,
            seconds: handle.seconds(),
            exit_reason: ExitReason::Interrupted,
            failure: Some(format!("stopped by {signame}")),
            exit_code: u8::try_from(128 + sig).unwrap_or(crate::error::EXIT_ERROR),
        };
        let line = format!(
            "sent {} in {} ({}) to ring '{name}'; stopped by {signame}: the stream is not \
             closed, so its consumer gets what was sent and learns that the producer died",
            fmt_counted(rows, "row", "rows"),
            fmt_counted(batches, "batch", "batches"),
            fmt_bytes(bytes),
        );
        summary.print(&report, &line, false);
        // Ends the process by the signal; if that cannot be done, exits
        // with the code a shell gives it.
        let _ = signal_hook::low_level::emulate_default_handler(sig);
        std::process::exit(128 + sig);
    });
    Ok(())
}

/// Sends the input into the ring and closes the stream; returns the
/// format read.
fn send_input(
    args: &ProduceArgs,
    opts: &ArrowRingOptions,
    progress: &mut Progress,
) -> Result<&'static str, CliError> {
    let csv = CsvOptions {
        schema: args.schema.clone(),
        schema_from: args.schema_from.clone(),
        no_header: args.no_header,
        delimiter: args.delimiter,
        null_values: args.null_values.clone(),
        timestamp_format: args.timestamp_format.clone(),
        date_format: args.date_format.clone(),
    };
    let batch_rows = usize::try_from(args.batch_rows).unwrap_or(usize::MAX);
    let mut input = match formats::open_input(&args.input, args.format, batch_rows, &csv) {
        Ok(input) => input,
        Err(f) => {
            // A consumer waiting for this stream learns that it failed. A
            // ring whose producer role is taken is left alone: the error
            // alone is reported, as the attach's own error would be.
            if let Ok(tx) = rings::first_lane_producer(&args.name, opts, &args.geometry) {
                tx.fail(&failure_reason(&args.input, &f));
            }
            return Err(f);
        }
    };
    progress.set_extent(std::mem::take(&mut input.extent));
    let mut tx = rings::producer(&args.name, opts, &args.geometry, &input.schema)?;
    let mut patience = Patience {
        name: &args.name,
        opts,
        timeout: args.timeout,
        gone_since: None,
        stalled_since: None,
    };
    let mut sent = || -> Result<(), CliError> {
        for batch in input.batches.by_ref() {
            let batch = batch.map_err(|e| CliError::data(Action::Read, &args.input, e))?;
            send(&mut tx, &batch, progress, &mut patience)?;
            progress.add(batch.num_rows() as u64, data_bytes(&batch));
        }
        if progress.batches() == 0 {
            // An empty input still tells the consumer its schema.
            let empty = RecordBatch::new_empty(input.schema.clone());
            send(&mut tx, &empty, progress, &mut patience)?;
        }
        deliver_pending(&mut tx, progress, &mut patience)
    };
    if let Err(f) = sent() {
        // A partial stream must not look whole: the consumer gets what was
        // sent, then learns that its producer failed, and why.
        tx.fail(&failure_reason(&args.input, &f));
        return Err(f);
    }
    tx.close().map_err(|e| CliError::ring(&args.name, e))?;
    Ok(input.format)
}

/// The reason a failed `produce` leaves in the ring for its consumer: its
/// error on one line, the input named by its file name (the ring keeps a
/// few dozen bytes of it).
fn failure_reason(input: &str, f: &CliError) -> String {
    let text = one_line(f);
    match Path::new(input).file_name().and_then(|n| n.to_str()) {
        Some(short) if input != "-" => text.replace(input, short),
        _ => text,
    }
}

/// How long `produce` waits for its consumer, and since when it has been
/// waiting for a new one.
struct Patience<'a> {
    name: &'a str,
    opts: &'a ArrowRingOptions,
    /// `--timeout`: the longest a batch may wait for room.
    timeout: Option<Duration>,
    /// Since when the consumer has been gone (it was noted then).
    gone_since: Option<Instant>,
    /// Since when messages have stayed pending for want of room: a send
    /// that took its batch may have waited out its timeout doing so, and
    /// the next send waits only for what is left of `--timeout`.
    stalled_since: Option<Instant>,
}

impl Patience<'_> {
    /// What is left of `--timeout` `t` for the next wait for room.
    fn left(&self, t: Duration) -> Duration {
        self.stalled_since
            .map_or(t, |since| t.saturating_sub(since.elapsed()))
    }

    /// The consumer is gone and its unreleased batches leave no room: says
    /// so once, then waits a little for a new consumer, or gives up after
    /// `--timeout`.
    fn consumer_gone(&mut self, progress: &Progress) -> Result<(), CliError> {
        let name = self.name;
        let since = *self.gone_since.get_or_insert_with(|| {
            progress.note(&format!(
                "the consumer of ring '{name}' is gone and the batches it did not \
                 release leave no room for the next; waiting for a new consumer"
            ));
            Instant::now()
        });
        if let Some(t) = self.timeout.filter(|&t| since.elapsed() >= t) {
            return Err(CliError::TimedOut {
                waited: format!(
                    "the consumer of ring '{name}' is gone and no other attached within {}",
                    fmt_duration(t)
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
        Ok(())
    }

    /// `--timeout` ran out with the ring full: says whether a consumer is
    /// attached at all.
    fn stayed_full(&self, t: Duration) -> CliError {
        let name = self.name;
        let attached =
            laminar_ring::shm::inspect(name, &self.opts.segment).is_ok_and(|i| i.consumer.alive);
        let waited = if attached {
            format!(
                "the consumer of ring '{name}' took nothing within {}; the ring stayed full",
                fmt_duration(t)
            )
        } else {
            format!(
                "no consumer attached to ring '{name}' within {}; the ring is full",
                fmt_duration(t)
            )
        };
        CliError::TimedOut { waited }
    }
}

/// Sends `batch`, halving it while one message would not fit in the arena,
/// and waiting for a new consumer while the old one is gone; with
/// `--timeout`, giving up when no room came within it.
fn send(
    tx: &mut BatchProducer,
    batch: &RecordBatch,
    progress: &Progress,
    patience: &mut Patience,
) -> Result<(), CliError> {
    loop {
        let started = Instant::now();
        let sent = match patience.timeout {
            Some(t) => tx.send_timeout(batch, patience.left(t)),
            None => tx.send(batch),
        };
        match sent {
            Ok(()) => {
                patience.gone_since = None;
                patience.stalled_since = if tx.pending() > 0 {
                    Some(patience.stalled_since.unwrap_or(started))
                } else {
                    None
                };
                return Ok(());
            }
            Err(ArrowRingError::BatchTooLarge { .. }) if batch.num_rows() > 1 => {
                let half = batch.num_rows() / 2;
                send(tx, &batch.slice(0, half), progress, patience)?;
                return send(
                    tx,
                    &batch.slice(half, batch.num_rows() - half),
                    progress,
                    patience,
                );
            }
            Err(ArrowRingError::Timeout) => {
                let t = patience.timeout.expect("only send_timeout times out");
                return Err(patience.stayed_full(t));
            }
            Err(ArrowRingError::ConsumerGone) => patience.consumer_gone(progress)?,
            Err(e) => return Err(CliError::ring(patience.name, e)),
        }
    }
}

/// With `--timeout`, delivers the messages still pending before the
/// stream is closed, giving up as `send` does (without it, `close` waits
/// as long as it takes).
fn deliver_pending(
    tx: &mut BatchProducer,
    progress: &Progress,
    patience: &mut Patience,
) -> Result<(), CliError> {
    let Some(t) = patience.timeout else {
        return Ok(());
    };
    loop {
        match tx.flush(patience.left(t)) {
            Ok(true) => return Ok(()),
            Ok(false) => return Err(patience.stayed_full(t)),
            Err(ArrowRingError::ConsumerGone) => patience.consumer_gone(progress)?,
            Err(e) => return Err(CliError::ring(patience.name, e)),
        }
    }
}

/// How a `consume` run ended.
enum Ending {
    /// A clean end; what became of a temporary ring (text to append).
    EndOfStream(String),
    Signalled,
    ProducerDied,
    /// The producer ended its stream in error, saying why.
    ProducerFailed(String),
    /// `--timeout` ran out; what it waited for.
    TimedOut(String),
    /// `--idle-exit` passed with no batch and no producer.
    Idle(Duration),
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
        rx: &mut BatchFanIn,
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

/// Removes the temporary ring `rx` consumes, whose stream just ended
/// cleanly. The producer that closed it may hold its role a moment longer
/// (until its process lets go of the file): waits up to a second for that.
/// A producer that attached since keeps the ring: it is still attached
/// (`InUse`), or it sent batches that are left unread (`Changed`, checked
/// under the role locks).
fn remove_temporary(
    rx: &mut BatchFanIn,
    name: &str,
    opts: &ArrowRingOptions,
) -> Result<(), ArrowRingError> {
    let sessions = || {
        laminar_ring::shm::inspect(name, &opts.segment)
            .ok()
            .map(|i| i.producer_sessions)
    };
    let ended = sessions();
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match rx.remove_if_unused() {
            Err(ArrowRingError::Open(OpenError::InUse { .. }))
                if Instant::now() < deadline && sessions() == ended =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            r => return r,
        }
    }
}

/// Where a new subscription starts (`consume --from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum From {
    /// The oldest batch the ring still holds.
    Earliest,
    /// The next batch published.
    Latest,
}

/// A `--as` name, checked as the ring will check it.
pub fn parse_subscriber(s: &str) -> Result<String, String> {
    shm::validate_subscriber(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
}

pub fn consume(args: &ConsumeArgs) -> Result<(), CliError> {
    let name = &args.name;
    let mut opts = rings::ring_options(&args.geometry, &args.location);
    opts.segment.subscriber = args.subscriber.clone();
    opts.segment.start = match args.from {
        From::Earliest => shm::Start::Earliest,
        From::Latest => shm::Start::Latest,
    };
    let mut progress = Progress::for_pipe(
        &format!("consume <- {name}"),
        &args.report,
        name,
        &opts.segment,
    );
    let ended = consume_ring(args, &opts, &mut progress);
    progress.finish();
    let summary = format!(
        "wrote {} in {} ({}) from ring '{name}' to {}",
        fmt_counted(progress.rows(), "row", "rows"),
        fmt_counted(progress.batches(), "batch", "batches"),
        fmt_bytes(progress.bytes()),
        if args.output == "-" {
            "standard output"
        } else {
            &args.output
        }
    );
    let (reason, result) = match ended {
        Ok(Ending::EndOfStream(cleanup)) => (
            ExitReason::Closed,
            Ok(format!("{summary}; end of stream{cleanup}")),
        ),
        Ok(Ending::Signalled) => (
            ExitReason::Interrupted,
            Ok(format!("{summary}; stopped by signal")),
        ),
        Ok(Ending::Idle(t)) => (
            ExitReason::Idle,
            Ok(format!(
                "{summary}; stopped after {} with no batch and no producer attached \
                 (--idle-exit)",
                fmt_duration(t)
            )),
        ),
        Ok(Ending::ProducerDied) => (
            ExitReason::PeerGone,
            Err(CliError::ProducerDied {
                name: name.clone(),
                summary,
            }),
        ),
        Ok(Ending::ProducerFailed(reason)) => (
            ExitReason::ProducerFailed,
            Err(CliError::ProducerFailed {
                name: name.clone(),
                reason,
                summary,
            }),
        ),
        Ok(Ending::TimedOut(waited)) => (
            ExitReason::Timeout,
            Err(CliError::TimedOut {
                waited: format!("{waited}; {summary}"),
            }),
        ),
        Err(CliError::ClosedPipe) => (ExitReason::OutputClosed, Err(CliError::ClosedPipe)),
        Err(f) => (ExitReason::Error, Err(f)),
    };
    let json = Summary {
        command: "consume",
        ring: name,
        rows: progress.rows(),
        batches: progress.batches(),
        bytes: progress.bytes(),
        seconds: progress.seconds(),
        exit_reason: reason,
        failure: None,
        exit_code: 0,
    };
    // `-o -`: standard output carries the data.
    let stdout_is_data = args.output == "-";
    match result {
        Ok(line) => {
            json.print(&args.report, &line, stdout_is_data);
            Ok(())
        }
        Err(f) => {
            if args.report.json {
                json.failed(reason, &f)
                    .print(&args.report, "", stdout_is_data);
            }
            Err(f)
        }
    }
}

/// Drains the ring into the output until the run ends; the output is
/// complete however it ends, but for an error that leaves it as it was.
fn consume_ring(
    args: &ConsumeArgs,
    opts: &ArrowRingOptions,
    progress: &mut Progress,
) -> Result<Ending, CliError> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while finishing up exits at once (code 1).
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
            .map_err(CliError::Signals)?;
    }
    let name = &args.name;
    let mut rx = rings::consumer(name, opts, &args.geometry)?;
    rx.set_linger(Some(args.linger.unwrap_or_default()));
    // Opened only now that the consumer role is ours, and truncated only
    // when the first batch is accepted: a refused consumer leaves the
    // file that a running one writes as it was.
    let out = formats::Output::open(&args.output)?;
    let limits = HoldLimits::of(name, opts);
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
    let mut told_dead = false;
    // A producer of one lane among several died or failed: said at once,
    // reported (exit code) once every other lane has ended.
    let mut lane_ending: Option<Ending> = None;
    let mut last_batch = Instant::now();
    // Since when no producer has been attached and no batch came.
    let mut idle_since: Option<Instant> = None;
    let ended = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(Ending::Signalled);
        }
        let step = match rx.recv_lane_zero_copy(Some(Duration::from_millis(100))) {
            Ok(Some((_, batch))) => {
                told_dead = false;
                last_batch = Instant::now();
                idle_since = None;
                let (rows, bytes) = (batch.num_rows() as u64, data_bytes(&batch));
                let r = drain.write(&mut rx, batch, &limits);
                if r.is_ok() {
                    progress.add(rows, bytes);
                }
                r
            }
            Ok(None) if args.follow => {
                progress.waiting();
                std::thread::sleep(Duration::from_millis(50));
                drain.flush()
            }
            Ok(None) => break Ok(lane_ending.unwrap_or(Ending::EndOfStream(String::new()))),
            // Idle, or out of lease room: pass on the row group held.
            Err(BatchFanInError::Timeout) => {
                if !rx.producer_attached() {
                    progress.waiting();
                }
                drain.flush()
            }
            Err(BatchFanInError::Lane { lane, error }) => {
                // "the producer" of a one-lane stream; "the producer of
                // lane N" where several producers joined it.
                let who = if rx.lanes() > 1 {
                    format!("the producer of lane {lane} of ring '{name}'")
                } else {
                    format!("the producer of ring '{name}'")
                };
                match error {
                    ArrowRingError::TooManyLeases { .. } if !drain.held.is_empty() => drain.flush(),
                    // Dropped while away (a ring with --policy lag): said, then on.
                    ArrowRingError::Lagged { missed } => {
                        progress.note(&format!(
                            "warning: ring '{name}' dropped this consumer while it was away: \
                             {} lost; reading on from the next producer session",
                            fmt_counted(missed, "message", "messages")
                        ));
                        drain.flush()
                    }
                    ArrowRingError::PeerGone if args.follow || rx.lanes() > 1 => {
                        if !told_dead || rx.lanes() > 1 {
                            progress.note(&format!(
                                "{who} died; every batch it committed is written; {}",
                                if args.follow {
                                    "waiting for the next producer"
                                } else {
                                    "reading on from the other producers"
                                }
                            ));
                            told_dead = true;
                        }
                        if !args.follow {
                            lane_ending.get_or_insert(Ending::ProducerDied);
                        }
                        progress.waiting();
                        drain.flush()
                    }
                    ArrowRingError::PeerGone => break Ok(Ending::ProducerDied),
                    ArrowRingError::ProducerFailed { reason } if args.follow || rx.lanes() > 1 => {
                        if !told_dead || rx.lanes() > 1 {
                            progress.note(&format!(
                                "{who} failed: {reason}; every batch it committed is written; {}",
                                if args.follow {
                                    "waiting for the next producer"
                                } else {
                                    "reading on from the other producers"
                                }
                            ));
                            told_dead = true;
                        }
                        if !args.follow {
                            lane_ending.get_or_insert(Ending::ProducerFailed(reason));
                        }
                        progress.waiting();
                        drain.flush()
                    }
                    ArrowRingError::ProducerFailed { reason } => {
                        break Ok(Ending::ProducerFailed(reason));
                    }
                    e => break Err(CliError::ring(name, e)),
                }
            }
        };
        if let Err(f) = step {
            break Err(f);
        }
        if let Some(t) = args.timeout.filter(|&t| last_batch.elapsed() >= t) {
            let waited = if rx.producer_attached() {
                format!(
                    "the producer of ring '{name}' sent no batch within {}",
                    fmt_duration(t)
                )
            } else {
                format!(
                    "no producer attached to ring '{name}' within {}",
                    fmt_duration(t)
                )
            };
            break Ok(Ending::TimedOut(waited));
        }
        if let Some(t) = args.idle_exit {
            if rx.producer_attached() {
                idle_since = None;
            } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= t {
                break Ok(Ending::Idle(t));
            }
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
        Ok(
            Ending::Signalled
            | Ending::ProducerDied
            | Ending::ProducerFailed(_)
            | Ending::TimedOut(_)
            | Ending::Idle(_),
        ) if drain.sink.is_none() && drain.out.as_ref().is_some_and(|o| o.existed()) => Ok(()),
        _ => drain.finish(rx.schema().cloned()),
    };
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
    // A temporary ring goes with its clean end of stream, unless a new
    // producer has attached or sent batches meanwhile.
    let ending = match ending {
        Ending::EndOfStream(_) if rx.is_temporary() => {
            Ending::EndOfStream(match remove_temporary(&mut rx, name, opts) {
                Ok(()) => "; removed the temporary ring".to_owned(),
                Err(ArrowRingError::Open(OpenError::InUse { .. })) => {
                    "; kept the temporary ring: another producer attached to it".to_owned()
                }
                Err(ArrowRingError::Open(OpenError::Changed { .. })) => {
                    "; kept the temporary ring: another producer sent batches to it".to_owned()
                }
                Err(e) => format!("; could not remove the temporary ring: {e}"),
            })
        }
        other => other,
    };
    drop(rx);
    Ok(ending)
}
