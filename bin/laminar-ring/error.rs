//! The command's errors: one enum, each variant with the context a user
//! needs (the ring, the file, what was being done), the error it came from
//! kept as its `source()`, and an exit code.
//!
//! `main` prints an error on one line: its own message, then each error in
//! its source chain that adds something (the libraries' messages often
//! include their source's already), joined with `": "`.

use std::error::Error;
use std::fmt;
use std::path::PathBuf;

use arrow_schema::ArrowError;
use laminar_ring::arrow::ArrowRingError;
use laminar_ring::shm::{HeaderError, OpenError};

/// Exit code of an error.
pub const EXIT_ERROR: u8 = 1;
/// Exit code of `consume` when its producer died.
pub const EXIT_PRODUCER_DIED: u8 = 3;
/// Exit code of `consume` when its producer failed (ended its stream in
/// error).
pub const EXIT_PRODUCER_FAILED: u8 = 4;
/// Exit code of `produce` or `consume` when `--timeout` ran out.
pub const EXIT_TIMED_OUT: u8 = 5;

/// Everything that ends the command early.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line does not parse, or asks for help or the version:
    /// clap prints it and chooses the exit code (2 for a usage error).
    #[error(transparent)]
    Usage(#[from] clap::Error),
    /// Creating, opening, inspecting or removing a ring's file (the error
    /// names the file).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The Arrow ring `name`, once attached.
    #[error("ring '{name}'")]
    Ring {
        name: String,
        #[source]
        source: ArrowRingError,
    },
    /// A file (or standard input or output, `-`) that could not be opened,
    /// read or written.
    #[error("{action} {}", shown(path, *action))]
    Io {
        action: Action,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Data that could not be read or written in its format: an Arrow IPC,
    /// CSV or Parquet reader's or writer's error (arrow-rs keeps Parquet's
    /// own error as this one's source).
    #[error("{action} {}", shown(path, *action))]
    Data {
        action: Action,
        path: String,
        #[source]
        source: ArrowError,
    },
    /// An input that is not the format it was read as.
    #[error("{}", not_valid(path, format))]
    NotValid {
        path: String,
        /// "Arrow IPC file", "Arrow IPC stream", "Parquet file".
        format: &'static str,
        #[source]
        source: ArrowError,
    },
    /// A CSV input whose schema cannot be inferred.
    #[error(
        "cannot read {}: cannot infer the CSV schema",
        shown(path, Action::Read)
    )]
    CsvSchema {
        path: String,
        #[source]
        source: ArrowError,
    },
    /// A CSV input with no rows whose schema was to be inferred (`why`
    /// says what it holds and what to do).
    #[error("{} {why}", shown(path, Action::Read))]
    CsvEmpty { path: String, why: &'static str },
    /// A CSV option that cannot be used as given.
    #[error("{0}")]
    CsvOption(String),
    /// An input whose format neither its name nor its first bytes tell.
    #[error("cannot tell the format of {path}; pass --format arrow, csv or parquet")]
    UnknownFormat { path: String },
    /// `--format parquet` with standard input.
    #[error(
        "Parquet needs seeking (its footer is at the end): pass it as a path, not on \
         standard input"
    )]
    ParquetFromStdin,
    /// Standard input that is not what it was to be read as, when its
    /// first bytes tell what it is instead.
    #[error("{0}")]
    Stdin(&'static str),
    /// A `--schema` that does not parse.
    #[error("--schema: {0}")]
    Schema(String),
    /// A stream whose schema the output format cannot hold.
    #[error("ring '{name}': {why}; nothing written, the ring left as it was")]
    Unwritable { name: String, why: String },
    /// A directory of rings that cannot be listed.
    #[error("cannot list {}", .dir.display())]
    List {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `rm` of a file that is not a ring.
    #[error("{}: {source}; not removed", .path.display())]
    NotARing {
        path: PathBuf,
        #[source]
        source: HeaderError,
    },
    /// --strict, and the ring exists with another shape than asked for.
    #[error("{what} (--strict)")]
    Strict { what: String },
    /// `rm` of a ring that live processes use, without --force.
    #[error("ring '{name}' is in use by {who}; pass --force to remove it anyway")]
    InUse { name: String, who: String },
    /// `rm` of a ring that cannot be read, without --force.
    #[error("ring '{name}' cannot be read ({source}); pass --force to remove it anyway")]
    Damaged {
        name: String,
        #[source]
        source: OpenError,
    },
    /// `rm` of something that is not a regular file.
    #[error("{}: not a regular file, so not a ring; not removed", .path.display())]
    NotAFile { path: PathBuf },
    /// A file that `sample` would overwrite, without --force.
    #[error("{path} already exists; not overwritten (pass --force to overwrite it)")]
    Exists { path: String },
    /// Standard output failed (other than being closed).
    #[error("cannot write to standard output")]
    Stdout(#[source] std::io::Error),
    /// The signal handlers could not be installed.
    #[error("cannot handle signals")]
    Signals(#[source] std::io::Error),
    /// Standard output was closed by its reader (`ls | head`): a normal,
    /// quiet end (exit 0, nothing printed), as in ripgrep.
    #[error("standard output was closed by its reader")]
    ClosedPipe,
    /// `consume` saw its producer die, after writing every batch it had
    /// committed (exit 3).
    #[error("the producer of ring '{name}' died; {summary}: every batch it committed")]
    ProducerDied { name: String, summary: String },
    /// `consume` saw its producer fail (end its stream in error, giving
    /// `reason`), after writing every batch it had committed (exit 4).
    #[error("the producer of ring '{name}' failed: {reason}; {summary}: every batch it committed")]
    ProducerFailed {
        name: String,
        reason: String,
        summary: String,
    },
    /// `--timeout` ran out: `waited` says for what (exit 5).
    #[error("{waited}")]
    TimedOut { waited: String },
    /// `bench` and `demo`: a worker that failed, printed a bad report or
    /// found a wrong value, or a workload they refuse (made by
    /// [`bench_error!`]).
    #[error("{0}")]
    Bench(String),
    /// `flight`: a server that cannot start, a connection, a call the
    /// server refused (the message says which).
    #[error("{0}")]
    Flight(String),
}

/// What was being done to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Write,
    Create,
    Truncate,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Read => "cannot read",
            Action::Write => "cannot write",
            Action::Create => "cannot create",
            Action::Truncate => "cannot truncate",
        })
    }
}

/// `path` for a message: `-` is standard input when reading, standard
/// output otherwise.
fn shown(path: &str, action: Action) -> &str {
    match (path, action) {
        ("-", Action::Read) => "standard input",
        ("-", _) => "standard output",
        (path, _) => path,
    }
}

fn not_valid(path: &str, format: &str) -> String {
    if path == "-" {
        format!("cannot read standard input as an {format}")
    } else {
        format!("cannot read {path}: not a valid {format}")
    }
}

impl CliError {
    /// An error of the Arrow ring `name`. Errors of opening its file name
    /// the file already, so they stand alone.
    pub fn ring(name: &str, e: ArrowRingError) -> Self {
        match e {
            ArrowRingError::Open(e) => Self::Open(e),
            e => Self::Ring {
                name: name.to_owned(),
                source: e,
            },
        }
    }

    /// `action` on `path` failed with an I/O error.
    pub fn io(action: Action, path: &str, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    /// `action` on `path` failed in a format's reader or writer.
    pub fn data(action: Action, path: &str, source: ArrowError) -> Self {
        Self::Data {
            action,
            path: path.to_owned(),
            source,
        }
    }

    /// The exit code: 0 for a closed pipe (and `--help`), 2 for a usage
    /// error, 3 when `consume`'s producer died, 4 when it failed, 5 when
    /// `--timeout` ran out, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::ClosedPipe => 0,
            Self::Usage(e) => u8::try_from(e.exit_code()).unwrap_or(EXIT_ERROR),
            Self::ProducerDied { .. } => EXIT_PRODUCER_DIED,
            Self::ProducerFailed { .. } => EXIT_PRODUCER_FAILED,
            Self::TimedOut { .. } => EXIT_TIMED_OUT,
            _ => EXIT_ERROR,
        }
    }

    /// Prints the error for the user on standard error (clap's own way for
    /// usage errors, nothing for a closed pipe).
    pub fn report(&self) {
        match self {
            Self::ClosedPipe => {}
            // Help and version go to stdout; if it is closed, so be it.
            Self::Usage(e) => drop(e.print()),
            e => crate::print::errln!("laminar-ring: {}", one_line(e)),
        }
    }
}

/// `e` and what its sources add, on one line (a library's message may have
/// several).
pub fn one_line(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        // Most messages already end with their source's.
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `CliError::Bench(format!(...))`.
macro_rules! bench_error {
    ($($arg:tt)*) => { $crate::error::CliError::Bench(format!($($arg)*)) };
}
pub(crate) use bench_error;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_adds_each_source_once_on_one_line() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such\nfile");
        let e = CliError::io(Action::Read, "in.csv", io);
        assert_eq!(one_line(&e), "cannot read in.csv: no such file");

        // ArrowError's message holds its source's already.
        let arrow = ArrowError::ExternalError(Box::new(std::io::Error::other("boom")));
        let e = CliError::data(Action::Write, "-", arrow);
        assert_eq!(
            one_line(&e),
            "cannot write standard output: External error: boom"
        );
    }

    #[test]
    fn a_ring_error_names_the_ring_unless_it_names_the_file() {
        let e = CliError::ring("r", ArrowRingError::PeerGone);
        assert_eq!(
            one_line(&e),
            "ring 'r': the producer died; every committed batch was delivered"
        );
        let open = OpenError::NotFound {
            path: PathBuf::from("/rings/r"),
        };
        let e = CliError::ring("r", ArrowRingError::Open(open));
        assert_eq!(one_line(&e), "/rings/r: no such ring");
        // The chain is kept, not flattened into a string.
        let e = CliError::ring("r", ArrowRingError::Timeout);
        let source = e.source().expect("a source");
        assert!(
            source.downcast_ref::<ArrowRingError>().is_some(),
            "{source:?}"
        );
    }

    #[test]
    fn exit_codes_follow_the_readme() {
        assert_eq!(CliError::ClosedPipe.exit_code(), 0);
        assert_eq!(CliError::Schema("x".into()).exit_code(), 1);
        let died = CliError::ProducerDied {
            name: "r".into(),
            summary: "wrote 0 rows".into(),
        };
        assert_eq!(died.exit_code(), 3);
        let failed = CliError::ProducerFailed {
            name: "r".into(),
            reason: "cannot read in.csv".into(),
            summary: "wrote 0 rows".into(),
        };
        assert_eq!(failed.exit_code(), 4);
        let waited = CliError::TimedOut {
            waited: "no producer attached to ring 'r' within 1s".into(),
        };
        assert_eq!(waited.exit_code(), 5);
        assert_eq!(bench_error!("x {}", 1).exit_code(), 1);
    }
}
