//! The `laminar-ring` command: create and inspect Arrow rings, pipe data
//! files from a producer process to a sidecar consumer daemon, and benchmark
//! the ring against Arrow IPC over a Unix domain socket.
//!
//! Exit codes: 0 success; 1 an error (one line on stderr naming the ring or
//! file and what is wrong); 2 a usage error; 3 `consume` saw its producer
//! die (its output holds every batch the producer committed); 4 `consume`
//! saw its producer fail (end its stream in error, saying why); 5
//! `--timeout` ran out (`flight pull` and `flight push`: 3, 4 and 5 alike).
//! `produce`, `flight pull` and `flight push` stopped by SIGINT or SIGTERM
//! end by the signal.

mod bench;
mod csv_input;
mod csv_lines;
mod error;
mod flight;
mod formats;
mod generate;
mod guard;
mod ipc_input;
mod parquet_io;
mod pipe;
mod print;
mod progress;
mod rings;
mod sample;
mod status;
mod summary;
mod units;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::error::CliError;
// The benchmark's code names it `crate::Location`.
use crate::rings::Location;

/// What `laminar-ring --help` says first.
const ABOUT: &str = "Pipe Arrow, Parquet and CSV data between processes through a \
shared-memory ring, and inspect and benchmark such rings.";

/// `--help`'s longer account: the common subcommands and an example.
const LONG_ABOUT: &str = "Pipe Arrow, Parquet and CSV data between processes through a \
shared-memory ring, and inspect and benchmark such rings.
A producer process sends a file's batches into a named ring; a consumer (a sidecar that \
may run for as long as you like) writes them to a file or standard output.

Common subcommands:
  produce   send a data file (or standard input) into a ring
  consume   write what a ring receives to a file (Arrow, Parquet, CSV) or standard output
  info, ls  show a ring, list the rings
  flight    serve rings over Arrow Flight; pull or push a stream across hosts
  demo      move millions of rows between two processes and compare with a Unix socket

Example:
  laminar-ring sample .                            # writes trades.csv and trades.parquet
  laminar-ring consume trades -o out.parquet &     # waits for a producer
  laminar-ring produce trades -i trades.csv        # ends the stream; consume exits 0";

/// The `laminar-ring` command.
#[derive(Debug, Parser)]
#[command(name = "laminar-ring", version, about = ABOUT, long_about = LONG_ABOUT)]
#[command(after_help = "Exit codes: 0 success, 1 error, 2 usage error, \
3 consume: the producer died (the output holds every batch it committed), \
4 consume: the producer failed (ended its stream in error), 5 --timeout ran out \
(flight pull and push: 3, 4 and 5 alike); produce, flight pull and flight push \
stopped by SIGINT or SIGTERM end by the signal (130, 143).")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// The subcommands. Each one's arguments and description are declared
// beside its implementation, in its module.
#[derive(Debug, Subcommand)]
enum Cmd {
    Create(rings::CreateArgs),
    Produce(pipe::ProduceArgs),
    Consume(pipe::ConsumeArgs),
    Info(status::InfoArgs),
    Ls(status::LsArgs),
    Rm(rings::RmArgs),
    Unsubscribe(rings::UnsubscribeArgs),
    Gc(rings::GcArgs),
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
    Sample(sample::SampleArgs),
    Flight(flight::FlightArgs),
    /// A process of `bench` or `demo` (internal).
    #[command(name = "__worker", hide = true)]
    Worker(bench::WorkerArgs),
    Completions(generate::CompletionsArgs),
    Man(generate::ManArgs),
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.cmd {
        Cmd::Create(args) => rings::create(&args),
        Cmd::Produce(args) => pipe::produce(&args),
        Cmd::Consume(args) => pipe::consume(&args),
        Cmd::Info(args) => status::info(&args),
        Cmd::Ls(args) => status::ls(&args),
        Cmd::Rm(args) => rings::rm(&args),
        Cmd::Unsubscribe(args) => rings::unsubscribe(&args),
        Cmd::Gc(args) => rings::gc(&args),
        Cmd::Bench(args) => bench::bench(&args),
        Cmd::Demo(args) => bench::demo(&args),
        Cmd::Sample(args) => sample::sample(&args),
        Cmd::Flight(args) => flight::flight(&args),
        Cmd::Worker(args) => bench::worker(&args),
        Cmd::Completions(args) => generate::completions(&args, Cli::command()),
        Cmd::Man(args) => generate::man(&args, Cli::command()),
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
