//! What the workers report, what a run measured ([`Figures`]), and how
//! `bench` and `demo` print it: a table, or JSON with `--json`.

use clap::ValueEnum;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::BenchArgs;
use super::job::{PayloadKind, Workload};
use super::payload::COLUMNS;
use crate::error::{CliError, bench_error};
use crate::print::errln;
use crate::print::outln;
use crate::units::{NsUnit, fmt_bytes, fmt_count, fmt_counted, with_article};

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

impl ProducerReport {
    /// A run with no latency phase (several producers: a round trip is
    /// one producer's), its clock started at `start_ns`.
    pub fn throughput_only(start_ns: u64) -> Self {
        Self {
            start_ns,
            p50: 0,
            p99: 0,
            p999: 0,
            max: 0,
        }
    }
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

/// How busy the machine was before a run: the 1-minute load average from
/// /proc/loadavg and the cores this process may use. On a busy machine the
/// two transports compete with other work, unevenly, so their ratios say
/// little.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// `None` where /proc/loadavg cannot be read.
    pub one_minute: Option<f64>,
    pub cores: usize,
}

impl Load {
    /// The load now.
    pub fn now() -> Self {
        let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        Self {
            one_minute: parse_loadavg(&text),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }

    /// Busy: a 1-minute load average above half the cores.
    pub fn busy(&self) -> bool {
        self.one_minute.is_some_and(|l| l > 0.5 * self.cores as f64)
    }

    /// `load average 0.42 on 2 cores before the run`.
    pub fn text(&self) -> String {
        let cores = fmt_counted(self.cores as u64, "core", "cores");
        match self.one_minute {
            Some(l) => format!("load average {l:.2} on {cores} before the run"),
            None => format!("load average unknown (no /proc/loadavg), {cores}"),
        }
    }

    /// The warning for a busy machine.
    pub fn warning(&self) -> Option<String> {
        self.busy().then(|| {
            format!(
                "warning: the machine was busy ({}, above half the cores): \
                 the figures and the ratios between them are unreliable",
                self.text()
            )
        })
    }

    /// Says on stderr, before the run, that the machine is busy.
    pub fn warn(&self) {
        if let Some(w) = self.warning() {
            errln!("laminar-ring: {w}");
        }
    }
}

/// The 1-minute average of /proc/loadavg's `0.42 0.30 0.25 1/123 4567`.
fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()
        .filter(|l| l.is_finite() && *l >= 0.0)
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
    load_average: Option<f64>,
    cores: usize,
    busy: bool,
    /// Consumer processes on the ring (`ring` is the slowest one's).
    consumers: u32,
    ring: FiguresJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    uds: Option<FiguresJson>,
    /// With several consumers: the same ring with one, interleaved.
    #[serde(skip_serializing_if = "Option::is_none")]
    one_consumer: Option<FiguresJson>,
    /// Producer processes, each on a lane of its own and sending
    /// `messages` (`ring` counts them all).
    producers: u32,
    /// With several producers: every producer's messages from one
    /// producer through one ring, interleaved.
    #[serde(skip_serializing_if = "Option::is_none")]
    one_producer: Option<FiguresJson>,
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
    /// None with several producers, which measure no round trips.
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt_p50: Option<f64>,
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

/// One unit for each latency column of `rows`, the one that suits its
/// median.
fn units(rows: &[&Figures], columns: &[fn(&Figures) -> u64]) -> Vec<NsUnit> {
    columns
        .iter()
        .map(|c| NsUnit::for_column(&rows.iter().map(|f| c(f)).collect::<Vec<_>>()))
        .collect()
}

/// The latency columns of `bench`: p50, p99, p99.9, max.
const BENCH_RTT: [fn(&Figures) -> u64; 4] = [|f| f.p50, |f| f.p99, |f| f.p999, |f| f.max];

fn row(label: &str, f: &Figures, units: &[NsUnit]) -> String {
    let rtt: Vec<String> = BENCH_RTT
        .iter()
        .zip(units)
        .map(|(c, u)| format!("{:>14}", u.fmt(c(f))))
        .collect();
    format!(
        "{label:<20} {:>12} {:>14} {:>8.2} {}",
        fmt_count(f.msgs_per_s() as u64),
        fmt_count(f.rows_per_s() as u64),
        f.gb_per_s(),
        rtt.join(" ")
    )
}

fn header(units: &[NsUnit]) -> String {
    let rtt: Vec<String> = ["rtt p50", "rtt p99", "rtt p99.9", "rtt max"]
        .iter()
        .zip(units)
        .map(|(name, u)| format!("{:>14}", format!("{name} ({})", u.name())))
        .collect();
    format!(
        "{:<20} {:>12} {:>14} {:>8} {}",
        "",
        "msgs/s",
        "rows/s",
        "GB/s",
        rtt.join(" ")
    )
}

/// Prints what `bench` measured of `w`: the ring's medians and, if it ran,
/// the socket's.
pub fn print_bench(
    a: &BenchArgs,
    w: &Workload,
    ring: &Figures,
    sock: Option<&Figures>,
    load: &Load,
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
            load_average: load.one_minute,
            cores: load.cores,
            busy: load.busy(),
            consumers: w.consumers,
            ring: ring.json(),
            uds: sock
                .filter(|_| w.consumers == 1 && w.producers == 1)
                .map(Figures::json),
            one_consumer: sock.filter(|_| w.consumers > 1).map(Figures::json),
            producers: w.producers,
            one_producer: sock.filter(|_| w.producers > 1).map(Figures::json),
            ratio: sock.map(|s| RatioJson {
                throughput: ring.gb_per_s() / s.gb_per_s(),
                rtt_p50: (w.producers == 1).then(|| s.p50 as f64 / ring.p50 as f64),
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
    if w.producers > 1 {
        return print_fan_in(a, w, &payload, ring, sock, load);
    }
    outln!(
        "{} of {payload}, {} ({} per run); {} of one {}; medians of {}",
        fmt_counted(w.messages, "message", "messages"),
        fmt_bytes(ring.bytes),
        match (sock.is_some(), w.consumers) {
            (false, _) => "ring only".to_owned(),
            (true, 1) => "interleaved with the socket".to_owned(),
            (true, n) => format!(
                "{n} consumer processes, each receiving all of it (figures: the slowest), \
                 interleaved with one consumer"
            ),
        },
        fmt_counted(w.samples, "round trip", "round trips"),
        if w.payload == PayloadKind::U64 {
            "value"
        } else {
            "one-row batch"
        },
        fmt_counted(a.rounds, "round", "rounds"),
    );
    let rows: Vec<&Figures> = std::iter::once(ring).chain(sock).collect();
    let units = units(&rows, &BENCH_RTT);
    outln!("{}", header(&units));
    if let (Some(s), n @ 2..) = (sock, w.consumers) {
        outln!("{}", row(&format!("ring, {n} consumers"), ring, &units));
        outln!("{}", row("ring, one consumer", s, &units));
        outln!(
            "{n} consumers / one: {:.2}x the throughput per consumer, {:.2}x in all",
            ring.gb_per_s() / s.gb_per_s(),
            f64::from(n) * ring.gb_per_s() / s.gb_per_s()
        );
        return print_load(load);
    }
    outln!("{}", row("shared-memory ring", ring, &units));
    if let Some(s) = sock {
        outln!("{}", row("unix socket", s, &units));
        outln!(
            "ring / socket: {:.2}x the throughput, {} p50 round trip",
            ring.gb_per_s() / s.gb_per_s(),
            compare_latency(ring.p50, s.p50)
        );
    }
    print_load(load)
}

/// `bench --producers N` (N > 1): throughput only, next to one producer
/// sending every message through one ring.
fn print_fan_in(
    a: &BenchArgs,
    w: &Workload,
    payload: &str,
    ring: &Figures,
    one: Option<&Figures>,
    load: &Load,
) -> Result<(), CliError> {
    let n = w.producers;
    outln!(
        "{n} producer processes of {} each of {payload} ({} in all, {} per run), \
         one fan-in consumer; interleaved with one producer sending all of it to the same; medians of {}",
        fmt_counted(w.messages, "message", "messages"),
        fmt_count(ring.messages),
        fmt_bytes(ring.bytes),
        fmt_counted(a.rounds, "round", "rounds"),
    );
    // No round trips: a round trip is one producer's.
    outln!("{}", header(&[]));
    outln!("{}", row(&format!("ring, {n} producers"), ring, &[]));
    if let Some(s) = one {
        outln!("{}", row("ring, one producer", s, &[]));
        outln!(
            "{n} producers / one: {:.2}x the throughput",
            ring.gb_per_s() / s.gb_per_s()
        );
    }
    print_load(load)
}

/// The machine's load with the results, and the warning again if it was
/// busy.
fn print_load(load: &Load) -> Result<(), CliError> {
    outln!("{}", load.text());
    if let Some(w) = load.warning() {
        outln!("{w}");
    }
    Ok(())
}

/// Prints what `demo` measured: rows, batches, GB/s and round trips of the
/// ring and the socket.
pub fn print_demo(ring: &Figures, sock: &Figures, load: &Load) -> Result<(), CliError> {
    let columns: [fn(&Figures) -> u64; 2] = [|f| f.p50, |f| f.p99];
    let units = units(&[ring, sock], &columns);
    outln!();
    outln!(
        "{:<20} {:>12} {:>9} {:>10} {:>14} {:>14}",
        "",
        "rows",
        "batches",
        "GB/s",
        format!("rtt p50 ({})", units[0].name()),
        format!("rtt p99 ({})", units[1].name())
    );
    for (label, f) in [("shared-memory ring", ring), ("unix socket", sock)] {
        outln!(
            "{label:<20} {:>12} {:>9} {:>10.2} {:>14} {:>14}",
            fmt_count(f.rows),
            fmt_count(f.messages),
            f.gb_per_s(),
            units[0].fmt(f.p50),
            units[1].fmt(f.p99)
        );
    }
    outln!(
        "\nevery row verified on both paths; the ring moved {:.2}x the socket's bytes per second, \
         with {} median round trip",
        ring.gb_per_s() / sock.gb_per_s(),
        with_article(&compare_latency(ring.p50, sock.p50))
    );
    print_load(load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_above_half_the_cores_is_busy() {
        assert_eq!(parse_loadavg("0.42 0.30 0.25 1/123 4567\n"), Some(0.42));
        for bad in ["", "x 1 2", "-1 0 0", "NaN 0 0"] {
            assert_eq!(parse_loadavg(bad), None, "{bad:?}");
        }
        let load = |l, cores| Load {
            one_minute: l,
            cores,
        };
        assert!(!load(Some(1.0), 2).busy());
        assert!(load(Some(1.01), 2).busy());
        assert!(!load(None, 1).busy());
        let w = load(Some(3.5), 4).warning().expect("busy");
        assert!(w.contains("load average 3.50 on 4 cores"), "{w}");
        assert!(w.contains("unreliable"), "{w}");
        assert_eq!(
            load(Some(0.1), 1).text(),
            "load average 0.10 on 1 core before the run"
        );
    }

    #[test]
    fn each_latency_column_has_one_unit_in_its_header() {
        let f = |p50, p99| Figures {
            secs: 1.0,
            p50,
            p99,
            p999: p99,
            max: p99,
            ..Figures::default()
        };
        let (ring, sock) = (f(3_837, 64_200), f(64_200, 45_015_000));
        let units = units(&[&ring, &sock], &BENCH_RTT);
        let head = header(&units);
        assert!(
            head.contains("rtt p50 (µs)") && head.contains("rtt p99 (ms)"),
            "{head}"
        );
        let line = row("r", &ring, &units);
        assert!(line.contains(" 3.84 ") && line.contains(" 0.06"), "{line}");
        assert!(!line.contains("µs") && !line.contains("ns"), "{line}");
    }

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
