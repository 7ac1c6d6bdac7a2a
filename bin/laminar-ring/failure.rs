//! The names the benchmark's code uses for the command's error: `Failure`
//! is [`CliError`](crate::error::CliError), and `fail!` makes an error that
//! is only a message ([`CliError::Message`](crate::error::CliError::Message)).

pub use crate::error::CliError as Failure;
pub(crate) use crate::error::fail;
