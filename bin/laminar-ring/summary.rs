//! The last word of `produce` and `consume`: a line on stderr, or with
//! `--json` one JSON object, and nothing at all with `--quiet` (errors
//! are still reported, by `main`).

use serde::Serialize;

use crate::error::{CliError, one_line};
use crate::print::errln;
use crate::progress::ReportArgs;

/// How a run of `produce` or `consume` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// The stream ended: `produce` closed it, `consume` read it to its end.
    Closed,
    /// SIGINT or SIGTERM.
    Interrupted,
    /// `consume --follow --idle-exit`: no producer came.
    Idle,
    /// `consume`: the producer died.
    PeerGone,
    /// `consume`: the producer ended its stream in error.
    ProducerFailed,
    /// `--timeout` ran out.
    Timeout,
    /// `consume`: its standard output was closed by its reader.
    OutputClosed,
    /// Any other error.
    Error,
}

/// The summary as JSON.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub command: &'static str,
    pub ring: &'a str,
    pub rows: u64,
    pub batches: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub exit_reason: ExitReason,
    /// Why it failed: the producer's reason, what a timeout waited for,
    /// the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub exit_code: u8,
}

impl Summary<'_> {
    /// With an error's reason and exit code.
    pub fn failed(mut self, reason: ExitReason, e: &CliError) -> Self {
        self.exit_reason = reason;
        self.failure = Some(match e {
            CliError::ProducerFailed { reason, .. } => reason.clone(),
            e => one_line(e),
        });
        self.exit_code = e.exit_code();
        self
    }

    /// Prints the summary as `report` asks: as JSON on standard output
    /// (standard error when `stdout_is_data`), or `line` on stderr, or
    /// nothing.
    pub fn print(&self, report: &ReportArgs, line: &str, stdout_is_data: bool) {
        if report.json {
            let json = serde_json::to_string(self).unwrap_or_default();
            if stdout_is_data {
                errln!("{json}");
            } else {
                // A closed stdout: the summary is lost, the run is not.
                let _ = crate::print::out_line(format_args!("{json}"));
            }
        } else if !report.quiet && !line.is_empty() {
            errln!("laminar-ring: {line}");
        }
    }
}
