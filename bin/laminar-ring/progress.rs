//! Progress on a terminal: rows, bytes and rate on stderr, and nothing at
//! all when stderr is not a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::print::errln;
use crate::units::{fmt_bytes, fmt_count};

/// A spinner line counting rows and bytes.
pub struct Progress {
    bar: Option<ProgressBar>,
    rows: u64,
    bytes: u64,
    batches: u64,
}

impl Progress {
    /// A progress line prefixed with `what`, drawn only on a terminal.
    pub fn new(what: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(what.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            rows: 0,
            bytes: 0,
            batches: 0,
        }
    }

    /// Counts one batch.
    pub fn add(&mut self, rows: u64, bytes: u64) {
        self.rows += rows;
        self.bytes += bytes;
        self.batches += 1;
        if let Some(bar) = &self.bar {
            let secs = bar.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "{} rows, {} batches, {} ({}/s)",
                fmt_count(self.rows),
                fmt_count(self.batches),
                fmt_bytes(self.bytes),
                fmt_bytes((self.bytes as f64 / secs) as u64)
            ));
        }
    }

    /// Shows a note (e.g. waiting for a peer) on the line, or on stderr when
    /// there is no terminal.
    pub fn note(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => errln!("laminar-ring: {msg}"),
        }
    }

    /// Replaces the line's message.
    pub fn status(&self, msg: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(msg.to_owned());
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn batches(&self) -> u64 {
        self.batches
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Removes the line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
