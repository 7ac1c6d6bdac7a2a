//! The `laminar-ring` command: create and inspect Arrow rings, pipe data
//! files from a producer process to a sidecar consumer daemon, and benchmark
//! the ring against Arrow IPC over a Unix domain socket.
//!
//! Exit codes: 0 success; 1 an error (one line on stderr naming the ring or
//! file and what is wrong); 2 a usage error; 3 `consume` saw its producer
//! die (its output holds every batch the producer committed).

mod bench;
mod error;
mod failure;
mod formats;
mod guard;
mod ipc_input;
mod parquet_io;
mod pipe;
mod print;
mod progress;
mod rings;
mod units;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::CliError;

/// Lock-free rings between processes: Arrow batches through shared memory.
#[derive(Debug, Parser)]
#[command(name = "laminar-ring", version, about, long_about = None)]
#[command(after_help = "Exit codes: 0 success, 1 error, 2 usage error, \
3 consume: the producer died (the output holds every batch it committed).")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where rings live.
#[derive(Debug, Clone, Args)]
pub struct Location {
    /// Directory of the ring files (a tmpfs such as /dev/shm, or a hugetlbfs
    /// mount).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/dev/shm",
        env = "LAMINAR_RING_DIR"
    )]
    pub dir: PathBuf,
    /// Trust rings that their group may write (such as those made with
    /// `create --mode 660`), and other users' rings of a group you are in.
    /// Without it a ring must be yours and writable by no one else.
    #[arg(long)]
    pub shared: bool,
}

/// The shape of a new ring. Used only when the ring is created; an existing
/// ring keeps its own.
#[derive(Debug, Clone, Args)]
pub struct Geometry {
    /// Descriptor slots of a new ring, a power of two; one slot per IPC
    /// message (schema, dictionary batch or record batch).
    #[arg(long, value_name = "N", default_value = "1024", value_parser = units::parse_slots)]
    pub slots: usize,
    /// Arena of a new ring for message bytes: 64MiB, 1GiB, 512KiB (binary),
    /// 100MB (decimal) or bytes; a multiple of 64, at least 4KiB. The last
    /// eighth holds the consumer's saved decoder state; a batch must fit in
    /// the rest (produce splits larger ones).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = units::parse_arena)]
    pub arena: u64,
    /// Permission bits of a new ring's file, in octal.
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = units::parse_mode)]
    pub mode: u32,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create an Arrow ring.
    Create {
        /// Name of the ring (a file name in --dir).
        name: String,
        #[command(flatten)]
        geometry: Geometry,
        #[command(flatten)]
        location: Location,
    },
    /// Send a data file (or stdin) into a ring, then end the stream.
    ///
    /// Reads Arrow IPC (stream or file; uncompressed, LZ4 or ZSTD;
    /// little-endian), CSV or Parquet (any codec pyarrow writes). Malformed
    /// input is one line and exit 1. Creates the ring if
    /// it does not exist. If the input breaks half-way (a bad CSV row), the
    /// stream is left unended, so the consumer sees its producer fail
    /// (consume exits 3) instead of a complete-looking stream.
    Produce(pipe::ProduceArgs),
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
    Consume(pipe::ConsumeArgs),
    /// Show a ring's layout, sequences, use and peers.
    Info {
        /// Name of the ring.
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        location: Location,
    },
    /// List the rings in a directory (other files are skipped).
    Ls {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        location: Location,
    },
    /// Remove rings (processes attached keep their mapping until they
    /// detach).
    Rm {
        /// Names of the rings.
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        location: Location,
    },
    /// Measure a producer process and a consumer process through a ring.
    ///
    /// Throughput (messages/s, rows/s, GB/s) and round-trip latency
    /// percentiles; with --compare uds the same workload through a Unix
    /// domain socket, interleaved, and the ratios.
    Bench(bench::BenchArgs),
    /// Move millions of rows between two processes, verify every row.
    ///
    /// A producer process and a consumer process exchange Arrow batches
    /// through a temporary ring and, to compare, through a Unix domain
    /// socket; prints rows, batches, GB/s and round-trip latency.
    Demo(bench::DemoArgs),
    /// A process of `bench` or `demo` (internal).
    #[command(name = "__worker", hide = true)]
    Worker(bench::WorkerArgs),
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.cmd {
        Cmd::Create {
            name,
            geometry,
            location,
        } => rings::create(&name, &geometry, &location),
        Cmd::Produce(args) => pipe::produce(&args),
        Cmd::Consume(args) => pipe::consume(&args),
        Cmd::Info {
            name,
            json,
            location,
        } => rings::info(&name, json, &location),
        Cmd::Ls { json, location } => rings::ls(json, &location),
        Cmd::Rm { names, location } => rings::rm(&names, &location),
        Cmd::Bench(args) => bench::bench(&args),
        Cmd::Demo(args) => bench::demo(&args),
        Cmd::Worker(args) => bench::worker(&args),
    }
}

fn main() -> ExitCode {
    guard::install_quiet_hook();
    match Cli::try_parse().map_err(CliError::from).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.report();
            ExitCode::from(e.exit_code())
        }
    }
}
