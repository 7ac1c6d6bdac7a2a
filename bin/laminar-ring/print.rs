//! Printing. A closed pipe on standard output (`laminar-ring ls | head`)
//! is a normal end for a command-line tool, as in ripgrep: the command
//! stops quietly with exit 0 instead of panicking in `println!`. Standard
//! error is best effort: a message that cannot be shown is dropped.

use std::error::Error;
use std::io::Write;

use crate::error::CliError;

/// Writes one line to standard output.
pub fn out_line(args: std::fmt::Arguments<'_>) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(format_args!("{args}\n"))
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// A failed write to standard output: [`CliError::ClosedPipe`] when its
/// reader closed it.
pub fn stdout_error(e: std::io::Error) -> CliError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        CliError::ClosedPipe
    } else {
        CliError::Stdout(e)
    }
}

/// `println!` that returns a closed pipe as [`CliError::ClosedPipe`] (use
/// in a function returning `Result<_, CliError>`).
macro_rules! outln {
    () => { $crate::print::out_line(format_args!(""))? };
    ($($arg:tt)*) => { $crate::print::out_line(format_args!($($arg)*))? };
}
pub(crate) use outln;

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use errln;

/// Whether `e`, or an error it wraps, is a closed pipe (EPIPE).
pub fn is_broken_pipe(e: &(dyn Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            return true;
        }
        cur = e.source();
    }
    false
}
