//! The one error type of the command: a line for the user and an exit code.

use std::fmt::Display;

use laminar_ring::arrow::ArrowRingError;

/// Exit code of an error.
pub const EXIT_ERROR: u8 = 1;
/// Exit code of `consume` when its producer died.
pub const EXIT_PRODUCER_DIED: u8 = 3;

/// What went wrong, as one line for the user, and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: EXIT_ERROR,
        }
    }

    /// Standard output was closed by its reader: a normal, quiet end
    /// (exit 0, nothing printed).
    pub fn closed_pipe() -> Self {
        Self {
            message: String::new(),
            code: 0,
        }
    }

    pub fn with_code(mut self, code: u8) -> Self {
        self.code = code;
        self
    }
}

/// `Failure::new(format!(...))`.
macro_rules! fail {
    ($($arg:tt)*) => { $crate::failure::Failure::new(format!($($arg)*)) };
}
pub(crate) use fail;

/// An error of the Arrow ring `name`, worded for the user. Errors of opening
/// the segment name its file already.
pub fn ring_failure(name: &str, e: ArrowRingError) -> Failure {
    match e {
        ArrowRingError::Open(e) => fail!("{e}"),
        e => fail!("ring '{name}': {e}"),
    }
}

/// An error about the file `path`, worded for the user.
pub fn file_failure(what: &str, path: &str, e: impl Display) -> Failure {
    let path = if path == "-" { "standard stream" } else { path };
    fail!("{what} {path}: {e}")
}
