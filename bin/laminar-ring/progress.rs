//! Progress on stderr: rows, batches, bytes and rate; with an input of
//! known size, a percentage and an ETA (as `pv` shows them); the ring's
//! fill; and, for a consumer between producers, that it waits for one.
//!
//! Drawn as a line that redraws itself on a terminal, and not at all when
//! stderr is not one, unless `--progress always` asks for plain lines
//! there (for logs, and for the tests of what the line says).

use std::fs::File;
use std::io::{IsTerminal, Seek};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use laminar_ring::shm::SegmentOptions;

use crate::print::errln;
use crate::units::{fmt_bytes, fmt_count, fmt_counted};

/// When progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressMode {
    /// On a terminal only.
    #[default]
    Auto,
    /// Also when stderr is not a terminal, as plain lines.
    Always,
    /// Never.
    Never,
}

/// How `produce` and `consume` report what they do.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Print the final summary as one JSON object (rows, batches, bytes,
    /// seconds, exit_reason, failure, exit_code) on standard output, or on
    /// standard error for `consume -o -`, whose standard output carries
    /// the data.
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
    /// Print nothing but errors: no progress, notes or summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// When to show progress: auto (on a terminal), always (plain lines on
    /// stderr when it is not a terminal), never.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ProgressMode::Auto, hide = true)]
    pub progress: ProgressMode,
}

/// How much of its input a reader has read, when that can be known.
#[derive(Debug, Default)]
pub enum Extent {
    /// Standard input, or a size nothing tells.
    #[default]
    Unknown,
    /// A file of `total` bytes; `at` shares the reader's file offset (a
    /// duplicate of its descriptor), so it says how far the reader got.
    Bytes { total: u64, at: File },
    /// `total` rows in all (a Parquet file's metadata says how many).
    Rows(u64),
}

impl Extent {
    /// The part of the input read, from 0 to 1, after `rows` rows.
    fn fraction(&self, rows: u64) -> Option<f64> {
        match self {
            Extent::Unknown => None,
            Extent::Bytes { total, at } => {
                let mut at: &File = at;
                let pos = at.stream_position().ok()?;
                (*total > 0).then(|| (pos as f64 / *total as f64).min(1.0))
            }
            Extent::Rows(total) => (*total > 0).then(|| (rows as f64 / *total as f64).min(1.0)),
        }
    }
}

/// What has gone through, shared with a signal handler's thread.
#[derive(Debug, Default)]
struct Counts {
    rows: AtomicU64,
    batches: AtomicU64,
    bytes: AtomicU64,
}

impl Counts {
    // Relaxed: plain counters for messages; only this process's threads
    // read them, and nothing else is published through them.
    fn get(&self) -> (u64, u64, u64) {
        (
            self.rows.load(Ordering::Relaxed),
            self.batches.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// `1 row, 2 batches, 3.0 MiB`.
pub fn fmt_moved(rows: u64, batches: u64, bytes: u64) -> String {
    format!(
        "{}, {}, {}",
        fmt_counted(rows, "row", "rows"),
        fmt_counted(batches, "batch", "batches"),
        fmt_bytes(bytes)
    )
}

/// `0:00:12`, as `pv` writes an ETA.
fn fmt_eta(secs: f64) -> String {
    let s = secs.clamp(0.0, 359_999.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// How full a ring is, from its positions, looked up at most a few times
/// a second.
struct RingFill {
    name: String,
    segment: SegmentOptions,
    checked: Option<Instant>,
    text: Option<String>,
}

impl RingFill {
    /// The fill as last looked up, looked up again if `fresh` or if that
    /// was a while ago.
    fn text(&mut self, fresh: bool) -> Option<&str> {
        if fresh
            || self
                .checked
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(250))
        {
            self.checked = Some(Instant::now());
            // Read-only, no role taken: it disturbs neither side.
            if let Ok(i) = laminar_ring::shm::inspect(&self.name, &self.segment) {
                self.text = Some(format!(
                    "ring {}/{} slots, {}/{}",
                    fmt_count(i.lag()),
                    fmt_count(i.layout.capacity),
                    fmt_bytes(i.arena_used()),
                    fmt_bytes(i.layout.arena_len)
                ));
            }
        }
        self.text.as_deref()
    }
}

/// A progress line counting rows and bytes.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Plain lines on stderr (`--progress always` without a terminal).
    lines: bool,
    quiet: bool,
    what: String,
    counts: Arc<Counts>,
    started: Instant,
    extent: Extent,
    ring: Option<RingFill>,
    last_line: Option<Instant>,
    waiting: bool,
    /// The rate is measured from here (when the stream last resumed), and
    /// the bytes there were then.
    since: (Instant, u64),
}

impl Progress {
    /// A progress line prefixed with `what`, drawn only on a terminal.
    pub fn new(what: &str) -> Self {
        Self::make(what, ProgressMode::Auto, false)
    }

    /// The progress of `produce` or `consume` through ring `ring`.
    pub fn for_pipe(what: &str, report: &ReportArgs, ring: &str, segment: &SegmentOptions) -> Self {
        let mut p = Self::make(what, report.progress, report.quiet);
        p.ring = Some(RingFill {
            name: ring.to_owned(),
            segment: segment.clone(),
            checked: None,
            text: None,
        });
        p
    }

    fn make(what: &str, mode: ProgressMode, quiet: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let shown = !quiet && mode != ProgressMode::Never;
        let bar = (shown && terminal).then(|| {
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
            lines: shown && !terminal && mode == ProgressMode::Always,
            quiet,
            what: what.to_owned(),
            counts: Arc::default(),
            started: Instant::now(),
            extent: Extent::Unknown,
            ring: None,
            last_line: None,
            waiting: false,
            since: (Instant::now(), 0),
        }
    }

    /// How much input there is, for a percentage and an ETA.
    pub fn set_extent(&mut self, extent: Extent) {
        self.extent = extent;
    }

    /// Counts one batch.
    pub fn add(&mut self, rows: u64, bytes: u64) {
        // Relaxed: see `Counts::get`.
        self.counts.rows.fetch_add(rows, Ordering::Relaxed);
        self.counts.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.counts.batches.fetch_add(1, Ordering::Relaxed);
        let resumed = std::mem::replace(&mut self.waiting, false);
        if resumed {
            self.since = (Instant::now(), self.bytes() - bytes);
        }
        let due = resumed
            || self
                .last_line
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(500));
        self.show(due);
    }

    /// Says that no producer is attached and it waits for one, instead of
    /// a rate that only falls while nothing comes.
    pub fn waiting(&mut self) {
        if !self.waiting {
            self.waiting = true;
            self.show(true);
        }
    }

    /// The line as it stands; the ring's fill looked up now if `fresh`.
    fn line(&mut self, fresh: bool) -> String {
        let (rows, batches, bytes) = self.counts.get();
        let mut text = if self.waiting {
            format!(
                "waiting for a producer; {} so far",
                fmt_moved(rows, batches, bytes)
            )
        } else {
            let mut t = fmt_moved(rows, batches, bytes);
            // A rate over less than a tenth of a second says little.
            let secs = self.since.0.elapsed().as_secs_f64();
            if secs >= 0.1 {
                let rate = (bytes.saturating_sub(self.since.1) as f64 / secs) as u64;
                t.push_str(&format!(" ({}/s)", fmt_bytes(rate)));
            }
            if let Some(f) = self.extent.fraction(rows) {
                let elapsed = self.started.elapsed().as_secs_f64();
                let eta = if f > 0.0 {
                    fmt_eta(elapsed * (1.0 - f) / f)
                } else {
                    "-:--:--".to_owned()
                };
                t.push_str(&format!("; {:.0}% ETA {eta}", f * 100.0));
            }
            t
        };
        if let Some(fill) = self.ring.as_mut().and_then(|r| r.text(fresh)) {
            text.push_str("; ");
            text.push_str(fill);
        }
        text
    }

    /// Redraws the line; as a plain line only when `due`.
    fn show(&mut self, due: bool) {
        if self.bar.is_some() {
            let line = self.line(false);
            if let Some(bar) = &self.bar {
                bar.set_message(line);
            }
        } else if self.lines && due {
            self.last_line = Some(Instant::now());
            let line = self.line(true);
            errln!("laminar-ring: {}: {line}", self.what);
        }
    }

    /// Shows a note (e.g. waiting for a peer) above the line, or on stderr
    /// when there is no terminal; nothing with `--quiet`.
    pub fn note(&self, msg: &str) {
        match &self.bar {
            _ if self.quiet => {}
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
        self.counts.get().0
    }

    pub fn batches(&self) -> u64 {
        self.counts.get().1
    }

    pub fn bytes(&self) -> u64 {
        self.counts.get().2
    }

    /// Seconds since the start.
    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// What a signal handler's thread needs to clear the line and say how
    /// far the command got.
    pub fn handle(&self) -> ProgressHandle {
        ProgressHandle {
            bar: self.bar.clone(),
            counts: self.counts.clone(),
            started: self.started,
        }
    }

    /// Removes the line (as plain lines, prints the last state first).
    pub fn finish(&mut self) {
        if self.lines && self.batches() > 0 && !self.waiting {
            self.show(true);
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The line and the counts of a [`Progress`], from another thread.
pub struct ProgressHandle {
    bar: Option<ProgressBar>,
    counts: Arc<Counts>,
    started: Instant,
}

impl ProgressHandle {
    /// Removes the line for good, so that what is printed next is not
    /// drawn over or left under a spinner.
    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
    }

    /// Rows, batches and bytes so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        self.counts.get()
    }

    /// Seconds since the start.
    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eta_reads_as_pv_writes_it() {
        assert_eq!(fmt_eta(0.2), "0:00:00");
        assert_eq!(fmt_eta(65.0), "0:01:05");
        assert_eq!(fmt_eta(3_725.0), "1:02:05");
        assert_eq!(fmt_eta(f64::INFINITY), "99:59:59");
    }

    #[test]
    fn a_row_extent_gives_the_part_sent() {
        assert_eq!(Extent::Rows(1000).fraction(250), Some(0.25));
        assert_eq!(Extent::Rows(1000).fraction(2000), Some(1.0));
        assert_eq!(Extent::Rows(0).fraction(0), None);
        assert_eq!(Extent::Unknown.fraction(5), None);
    }
}
