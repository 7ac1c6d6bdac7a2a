//! What the workers report, what a run measured ([`Figures`]), and how
//! `bench` and `demo` print it: a table, or JSON with `--json`.

use clap::ValueEnum;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::BenchArgs;
use super::job::{PayloadKind, Workload};
use super::payload::COLUMNS;
use crate::error::{CliError, bench_error};
use crate::print::outln;
use crate::units::{fmt_bytes, fmt_count, fmt_ns};

/// What the producer sends back: when its clock started, and the round
/// trips of the latency phase in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerReport {
    pub start_ns: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// What the consumer sends back: when it received the last message of the
/// throughput phase, and what it counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerReport {
    pub end_ns: u64,
    pub messages: u64,
    pub rows: u64,
    pub bytes: u64,
}

/// Reads the report of the `what` process from the last line of its
/// standard output.
pub fn parse_report<R: DeserializeOwned>(what: &str, stdout: &[u8]) -> Result<R, CliError> {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| bench_error!("the {what} process printed {line:?}: {e}"))
}

/// What one run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    pub secs: f64,
    pub messages: u64,
    pub rows: u64,
    pub bytes: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Figures {
    pub fn new(sent: &ProducerReport, got: &ConsumerReport) -> Self {
        Self {
            secs: (got.end_ns.saturating_sub(sent.start_ns)).max(1) as f64 / 1e9,
            messages: got.messages,
            rows: got.rows,
            bytes: got.bytes,
            p50: sent.p50,
            p99: sent.p99,
            p999: sent.p999,
            max: sent.max,
        }
    }

    fn msgs_per_s(&self) -> f64 {
        self.messages as f64 / self.secs
    }
    fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.secs
    }
    pub fn gb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e9
    }

    fn json(&self) -> FiguresJson {
        FiguresJson {
            seconds: self.secs,
            messages: self.messages,
            rows: self.rows,
            bytes: self.bytes,
            messages_per_s: self.msgs_per_s(),
            rows_per_s: self.rows_per_s(),
            gb_per_s: self.gb_per_s(),
            rtt_ns: RttJson {
                p50: self.p50,
                p99: self.p99,
                p99_9: self.p999,
                max: self.max,
            },
        }
    }
}

/// Per-field medians of several runs.
pub fn medians(runs: &[Figures]) -> Figures {
    fn med<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v[v.len() / 2]
    }
    let f = |g: fn(&Figures) -> u64| med(runs.iter().map(g).collect());
    Figures {
        // The median rate, as a duration for the same amount of data.
        secs: runs[0].bytes as f64 / med(runs.iter().map(|r| r.bytes as f64 / r.secs).collect()),
        messages: runs[0].messages,
        rows: runs[0].rows,
        bytes: runs[0].bytes,
        p50: f(|r| r.p50),
        p99: f(|r| r.p99),
        p999: f(|r| r.p999),
        max: f(|r| r.max),
    }
}

/// `bench --json`. Printed through `serde_json::Value`, whose keys come out
/// sorted, as they always have.
#[derive(Serialize)]
struct BenchJson {
    payload: String,
    messages: u64,
    rows_per_message: u64,
    latency_samples: u64,
    rounds: u64,
    arena_bytes: u64,
    wait: String,
    ring: FiguresJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    uds: Option<FiguresJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio: Option<RatioJson>,
}

#[derive(Serialize)]
struct FiguresJson {
    seconds: f64,
    messages: u64,
    rows: u64,
    bytes: u64,
    messages_per_s: f64,
    rows_per_s: f64,
    gb_per_s: f64,
    rtt_ns: RttJson,
}

#[derive(Serialize)]
struct RttJson {
    p50: u64,
    p99: u64,
    p99_9: u64,
    max: u64,
}

#[derive(Serialize)]
struct RatioJson {
    throughput: f64,
    rtt_p50: f64,
}

fn value_name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .expect("no skipped variants")
        .get_name()
        .to_owned()
}

/// `3.10x lower` or `1.25x higher`: the ring's latency against the socket's.
fn compare_latency(ring_ns: u64, sock_ns: u64) -> String {
    let (r, s) = (ring_ns.max(1) as f64, sock_ns.max(1) as f64);
    if r <= s {
        format!("{:.2}x lower", s / r)
    } else {
        format!("{:.2}x higher", r / s)
    }
}

fn row(label: &str, f: &Figures) -> String {
    format!(
        "{label:<20} {:>12} {:>14} {:>8.2} {:>11} {:>11} {:>11} {:>11}",
        fmt_count(f.msgs_per_s() as u64),
        fmt_count(f.rows_per_s() as u64),
        f.gb_per_s(),
        fmt_ns(f.p50),
        fmt_ns(f.p99),
        fmt_ns(f.p999),
        fmt_ns(f.max)
    )
}

fn header() -> String {
    format!(
        "{:<20} {:>12} {:>14} {:>8} {:>11} {:>11} {:>11} {:>11}",
        "", "msgs/s", "rows/s", "GB/s", "rtt p50", "rtt p99", "rtt p99.9", "rtt max"
    )
}

/// Prints what `bench` measured of `w`: the ring's medians and, if it ran,
/// the socket's.
pub fn print_bench(
    a: &BenchArgs,
    w: &Workload,
    ring: &Figures,
    sock: Option<&Figures>,
) -> Result<(), CliError> {
    if a.json {
        let v = BenchJson {
            payload: value_name(w.payload),
            messages: w.messages,
            rows_per_message: w.rows,
            latency_samples: w.samples,
            rounds: a.rounds,
            arena_bytes: a.arena,
            wait: value_name(a.wait),
            ring: ring.json(),
            uds: sock.map(Figures::json),
            ratio: sock.map(|s| RatioJson {
                throughput: ring.gb_per_s() / s.gb_per_s(),
                rtt_p50: s.p50 as f64 / ring.p50 as f64,
            }),
        };
        let v = serde_json::to_value(v).map_err(|e| bench_error!("bench --json: {e}"))?;
        outln!("{v}");
        return Ok(());
    }
    let payload = match w.payload {
        PayloadKind::U64 => "u64".to_owned(),
        PayloadKind::Arrow => format!("arrow batches of {} rows ({COLUMNS})", fmt_count(w.rows)),
    };
    outln!(
        "{} messages of {payload}, {} ({} per run); {} round trips of one {}; medians of {} round{}",
        fmt_count(w.messages),
        fmt_bytes(ring.bytes),
        if sock.is_some() {
            "interleaved with the socket"
        } else {
            "ring only"
        },
        fmt_count(w.samples),
        if w.payload == PayloadKind::U64 {
            "value"
        } else {
            "one-row batch"
        },
        a.rounds,
        if a.rounds == 1 { "" } else { "s" },
    );
    outln!("{}", header());
    outln!("{}", row("shared-memory ring", ring));
    if let Some(s) = sock {
        outln!("{}", row("unix socket", s));
        outln!(
            "ring / socket: {:.2}x the throughput, {} p50 round trip",
            ring.gb_per_s() / s.gb_per_s(),
            compare_latency(ring.p50, s.p50)
        );
    }
    Ok(())
}

/// Prints what `demo` measured: rows, batches, GB/s and round trips of the
/// ring and the socket.
pub fn print_demo(ring: &Figures, sock: &Figures) -> Result<(), CliError> {
    outln!();
    outln!(
        "{:<20} {:>12} {:>9} {:>10} {:>14} {:>14}",
        "",
        "rows",
        "batches",
        "GB/s",
        "rtt p50",
        "rtt p99"
    );
    for (label, f) in [("shared-memory ring", ring), ("unix socket", sock)] {
        outln!(
            "{label:<20} {:>12} {:>9} {:>10.2} {:>14} {:>14}",
            fmt_count(f.rows),
            fmt_count(f.messages),
            f.gb_per_s(),
            fmt_ns(f.p50),
            fmt_ns(f.p99)
        );
    }
    outln!(
        "\nevery row verified on both paths; the ring moved {:.2}x the socket's bytes per second, \
         with a {} median round trip",
        ring.gb_per_s() / sock.gb_per_s(),
        compare_latency(ring.p50, sock.p50)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_report_is_read_from_the_last_line_of_its_output() {
        let out = b"a warning\n{\"end_ns\":9,\"messages\":3,\"rows\":30,\"bytes\":240}\n";
        let r: ConsumerReport = parse_report("consumer", out).unwrap();
        let want = ConsumerReport {
            end_ns: 9,
            messages: 3,
            rows: 30,
            bytes: 240,
        };
        assert_eq!(r, want);
    }

    #[test]
    fn a_malformed_worker_report_is_an_error_not_a_panic() {
        let cases: [&[u8]; 7] = [
            b"",
            b"\xff\xfe",
            b"not json",
            b"{\"end_ns\":9,\"messages\":3,\"rows\":30}",
            b"{\"end_ns\":-1,\"messages\":3,\"rows\":30,\"bytes\":240}",
            b"{\"end_ns\":9,\"messages\":3,\"rows\":30,\"bytes\":240,\"extra\":1}",
            // A producer's report where the consumer's is expected.
            b"{\"start_ns\":1,\"p50\":2,\"p99\":3,\"p999\":4,\"max\":5}",
        ];
        for out in cases {
            let e = parse_report::<ConsumerReport>("consumer", out).unwrap_err();
            assert!(
                e.to_string().starts_with("the consumer process printed"),
                "{e}"
            );
        }
    }
}
