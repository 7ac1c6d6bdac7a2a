//! `flight pull` (a remote ring into a local one) and `flight push` (a
//! local ring into a remote one).

use std::cell::Cell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, FlightDescriptor};
use futures::StreamExt;
use laminar_ring::arrow::{ArrowRingError, BatchFanIn, BatchFanInError, BatchProducer};
use laminar_ring::shm;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::Status;

use super::wire::{
    self, Bearer, CLOSED, DIED, Encoder, Ending, FAILED, STEP, ending_of, put, retriable,
    seq_bytes, seq_of,
};
use crate::error::{CliError, one_line};
use crate::pipe::data_bytes;
use crate::print::errln;
use crate::rings::{self, Geometry, Location};
use crate::units::{fmt_bytes, fmt_counted, fmt_duration, parse_duration};

/// What both ends of a bridge take to reach the server.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The bearer token for a server started with --token-file (this
    /// file's content, white space around it removed).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// For grpc+tls:// locations: trust this CA certificate (PEM) instead
    /// of the system's roots.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// When the connection drops or the server cannot be reached, try
    /// again (waiting 0.1 s, doubling up to 5 s) and resume where the
    /// stream stood, without losing a batch. Without it, exit 1.
    #[arg(long)]
    pub retry: bool,
    /// Give up (exit 5) when no batch moved for DURATION (10s, 500ms, 2m):
    /// the server could not be reached (with --retry), its ring or its
    /// producer sent nothing, or nothing was acknowledged. What was not
    /// acknowledged stays where it was. Without it, wait as long as it
    /// takes.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

/// Read a ring of a Flight server (`flight serve`) into a local ring.
///
/// With --retry, a ring the server does not have yet is waited for.
/// Reads the remote ring as a consumer (under --as), puts each batch into
/// the local ring (created as `produce` does) and only then acknowledges
/// it, so that the server releases it: a dropped connection or a killed
/// server loses nothing (batches not yet acknowledged come again). Ends as
/// the remote stream ends: closed (exit 0), its producer dead (the local
/// stream ends the same way; exit 3) or failed (the same, with its reason;
/// exit 4).
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The server: grpc://HOST:PORT or grpc+tls://HOST:PORT.
    #[arg(value_parser = wire::parse_location)]
    pub url: String,
    /// The remote ring.
    pub ring: String,
    /// The local ring (default: the remote ring's name).
    #[arg(long, value_name = "NAME")]
    pub into: Option<String>,
    /// The name to read the remote ring under (see `consume --as`).
    #[arg(long = "as", value_name = "NAME", default_value = shm::DEFAULT_SUBSCRIBER,
          value_parser = crate::pipe::parse_subscriber)]
    pub subscriber: String,
    #[command(flatten)]
    pub remote: Remote,
    #[command(flatten)]
    pub geometry: Geometry,
    #[command(flatten)]
    pub location: Location,
}

/// Send a local ring's stream to a ring of a Flight server (`flight
/// serve`, or any Flight server's DoPut).
///
/// Reads the local ring as a consumer (under --as) and keeps each batch
/// in it until the server has put it into its ring: a dropped connection
/// loses nothing (with --retry, the batches not yet acknowledged are sent
/// again, and the server skips those it has). Ends as the local stream
/// ends: closed (the remote stream is closed; exit 0), its producer dead
/// (the remote stream ends the same way; exit 3) or failed (exit 4).
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The local ring.
    pub ring: String,
    /// The server: grpc://HOST:PORT or grpc+tls://HOST:PORT.
    #[arg(value_parser = wire::parse_location)]
    pub url: String,
    /// The remote ring (default: the local ring's name).
    #[arg(long, value_name = "NAME")]
    pub into: Option<String>,
    /// The name to read the local ring under (see `consume --as`).
    #[arg(long = "as", value_name = "NAME", default_value = shm::DEFAULT_SUBSCRIBER,
          value_parser = crate::pipe::parse_subscriber)]
    pub subscriber: String,
    #[command(flatten)]
    pub remote: Remote,
    #[command(flatten)]
    pub geometry: Geometry,
    #[command(flatten)]
    pub location: Location,
}

/// Rows, batches and bytes moved.
#[derive(Default)]
struct Moved {
    rows: u64,
    batches: u64,
    bytes: u64,
}

impl Moved {
    fn add(&mut self, b: &RecordBatch) {
        self.rows += b.num_rows() as u64;
        self.batches += 1;
        self.bytes += data_bytes(b);
    }

    fn text(&self) -> String {
        format!(
            "{} in {} ({})",
            fmt_counted(self.rows, "row", "rows"),
            fmt_counted(self.batches, "batch", "batches"),
            fmt_bytes(self.bytes)
        )
    }
}

/// Waits between connection attempts: from 0.1 s, doubling up to 5 s,
/// back to 0.1 s once a connection moved something.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(100))
    }

    fn wait(&mut self, what: &str, status: &Status, patience: &Patience) {
        let wait = patience.left().map_or(self.0, |left| left.min(self.0));
        errln!(
            "laminar-ring: {what}: {}; again in {:.1} s",
            status.message(),
            wait.as_secs_f64()
        );
        patience.sleep(wait);
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }
}

/// `--timeout`, and SIGINT or SIGTERM: when a bridge stops waiting.
struct Patience {
    limit: Option<Duration>,
    /// When a batch last moved.
    since: Cell<Instant>,
    /// Set by SIGINT or SIGTERM.
    stop: Arc<AtomicBool>,
    /// The signal that set `stop`.
    signal: Arc<AtomicUsize>,
}

impl Patience {
    /// Catches SIGINT and SIGTERM (a second one exits at once, code 1).
    fn new(limit: Option<Duration>) -> Result<Self, CliError> {
        let stop = Arc::new(AtomicBool::new(false));
        let signal = Arc::new(AtomicUsize::new(0));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
                .and_then(|_| signal_hook::flag::register_usize(sig, signal.clone(), sig as usize))
                .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
                .map_err(CliError::Signals)?;
        }
        Ok(Self {
            limit,
            since: Cell::new(Instant::now()),
            stop,
            signal,
        })
    }

    fn moved(&self) {
        self.since.set(Instant::now());
    }

    /// What is left of `--timeout`.
    fn left(&self) -> Option<Duration> {
        self.limit
            .map(|l| l.saturating_sub(self.since.get().elapsed()))
    }

    /// `--timeout` ran out, or a signal came.
    fn over(&self) -> bool {
        self.stopped().is_some() || self.left() == Some(Duration::ZERO)
    }

    /// The signal that came, if one did.
    fn stopped(&self) -> Option<i32> {
        // Relaxed: a flag; set by the handler, polled here.
        self.stop
            .load(Ordering::Relaxed)
            .then(|| i32::try_from(self.signal.load(Ordering::Relaxed)).unwrap_or(0))
    }

    /// Why it is over: `Broke::Stopped`, or `Broke::TimedOut` waiting for
    /// `side`.
    fn broke(&self, side: Side) -> Broke {
        match self.stopped() {
            Some(sig) => Broke::Stopped(sig),
            None => Broke::TimedOut(side),
        }
    }

    /// Sleeps `d`, waking early for a signal.
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while self.stopped().is_none() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// Runs `f` to its end, or until `--timeout` runs out or a signal
    /// comes (`None`; `f` is dropped: only cancel-safe futures are given).
    fn within<F: std::future::Future>(
        &self,
        rt: &tokio::runtime::Runtime,
        f: F,
    ) -> Option<F::Output> {
        rt.block_on(async {
            tokio::pin!(f);
            loop {
                if self.over() {
                    return None;
                }
                let step = self.left().map_or(STEP, |l| l.min(STEP));
                if let Ok(out) = tokio::time::timeout(step, &mut f).await {
                    return Some(out);
                }
            }
        })
    }

    /// The error for `--timeout` running out, with how far the bridge got.
    fn timed_out(&self, what: String, summary: &str) -> CliError {
        CliError::TimedOut {
            waited: format!(
                "{what} within {}; {summary}",
                fmt_duration(self.limit.unwrap_or_default())
            ),
        }
    }
}

/// Says how far a bridge got, and ends the process by `sig` as it would
/// have ended without a handler (exit 128 + sig if that cannot be done).
fn die_by(sig: i32, summary: &str, then: &str) -> ! {
    let name = if sig == signal_hook::consts::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    errln!("laminar-ring: {summary}; stopped by {name}: {then}");
    let _ = signal_hook::low_level::emulate_default_handler(sig);
    std::process::exit(128 + sig);
}

/// The end of a bridge that `--timeout` ran out waiting for.
#[derive(Clone, Copy)]
enum Side {
    Local,
    Remote,
}

/// Why a connection's turn ended early.
enum Broke {
    /// The server or the connection (`retriable` says whether to try again).
    Remote(Status),
    /// The local ring.
    Local(CliError),
    /// `--timeout` ran out, waiting for that side.
    TimedOut(Side),
    /// SIGINT or SIGTERM (the signal).
    Stopped(i32),
}

impl From<Status> for Broke {
    fn from(s: Status) -> Self {
        Self::Remote(s)
    }
}

fn remote_error(url: &str, ring: &str, s: &Status) -> CliError {
    CliError::Flight(format!(
        "{url}, ring '{ring}': {} ({:?})",
        s.message(),
        s.code()
    ))
}

pub fn pull(args: &PullArgs) -> Result<(), CliError> {
    let local_name = args.into.clone().unwrap_or_else(|| args.ring.clone());
    shm::check_stream_name(&local_name)?;
    let endpoint = wire::endpoint(&args.url, args.remote.tls_ca.as_deref())?;
    let token = args
        .remote
        .token_file
        .as_deref()
        .map(wire::read_token)
        .transpose()?;
    let bearer = Bearer::new(token.as_deref())?;
    let opts = rings::ring_options(&args.geometry, &args.location);
    let rt = wire::runtime()?;
    let mut path = vec![args.ring.clone()];
    if args.subscriber != shm::DEFAULT_SUBSCRIBER {
        path.push(args.subscriber.clone());
    }
    let mut local: Option<BatchProducer> = None;
    let mut moved = Moved::default();
    let mut backoff = Backoff::new();
    let patience = Patience::new(args.remote.timeout)?;
    // Why the last connection failed, for --timeout's message, and
    // whether the last turn reached the server's stream.
    let mut last_error: Option<String> = None;
    let reached = Cell::new(false);
    let ended = loop {
        let before = moved.batches;
        reached.set(false);
        let turn = (|| -> Result<Option<Ending>, Broke> {
            let connected = patience.within(&rt, async {
                let mut client = wire::connect(&endpoint, &bearer).await?;
                let (acks, outgoing) = mpsc::unbounded_channel();
                let first =
                    FlightData::new().with_descriptor(FlightDescriptor::new_path(path.clone()));
                // Cannot fail: the receiver is alive.
                let _ = acks.send(first);
                let response = client
                    .do_exchange(UnboundedReceiverStream::new(outgoing))
                    .await?
                    .into_inner();
                Ok::<_, Status>((acks, response))
            });
            let (acks, response) = connected.ok_or_else(|| patience.broke(Side::Remote))??;
            reached.set(true);
            let mut decoder = FlightDataDecoder::new(
                response.map(|r| r.map_err(|s| FlightError::Tonic(Box::new(s)))),
            );
            loop {
                // A decoder that panics on bytes nobody foresaw ends the
                // pull with an error, not a crash.
                let next = crate::guard::guarded("a Flight message from the server", || {
                    Ok(patience.within(&rt, decoder.next()))
                })
                .map_err(|e| Status::invalid_argument(e.to_string()))?
                .ok_or_else(|| patience.broke(Side::Remote))?;
                match next {
                    Some(Ok(d)) => match d.payload {
                        DecodedPayload::Schema(schema) => {
                            if local.is_none() {
                                local = Some(
                                    rings::producer(&local_name, &opts, &args.geometry, &schema)
                                        .map_err(Broke::Local)?,
                                );
                            }
                        }
                        DecodedPayload::RecordBatch(batch) => {
                            // A batch came: the wait for local room starts now.
                            patience.moved();
                            let tx = local.as_mut().ok_or_else(|| {
                                Status::invalid_argument(
                                    "the server sent a batch before its schema",
                                )
                            })?;
                            put(tx, &batch, &local_name, &|| patience.over()).map_err(|p| {
                                if patience.over() {
                                    patience.broke(Side::Local)
                                } else {
                                    Broke::Local(CliError::Flight(p.status.message().to_owned()))
                                }
                            })?;
                            moved.add(&batch);
                            patience.moved();
                            if let Some(seq) = seq_of(&d.inner.app_metadata) {
                                // The server is gone if this fails: the
                                // next message says so.
                                let _ =
                                    acks.send(FlightData::new().with_app_metadata(seq_bytes(seq)));
                            }
                        }
                        DecodedPayload::None => {}
                    },
                    Some(Err(FlightError::Tonic(status))) => {
                        return match ending_of(&status) {
                            Some(e) => Ok(Some(e)),
                            None => Err(Broke::Remote(*status)),
                        };
                    }
                    Some(Err(e)) => {
                        return Err(Broke::Remote(Status::invalid_argument(format!(
                            "bad Flight data from the server: {e}"
                        ))));
                    }
                    None => return Ok(None),
                }
            }
        })();
        match turn {
            Ok(ending) => break Ok(ending),
            // With --retry, a ring not made yet is waited for, as a local
            // consumer waits for its producer.
            Err(Broke::Remote(s))
                if args.remote.retry
                    && (retriable(&s) || s.code() == tonic::Code::NotFound)
                    && !patience.over() =>
            {
                if moved.batches > before {
                    backoff = Backoff::new();
                }
                last_error = Some(s.message().to_owned());
                backoff.wait(
                    &format!("{}, ring '{}'", args.url, args.ring),
                    &s,
                    &patience,
                );
            }
            Err(Broke::Remote(_)) if patience.over() => break Err(patience.broke(Side::Remote)),
            Err(Broke::Remote(s)) => break Err(Broke::Remote(s)),
            Err(b) => break Err(b),
        }
    };
    let summary = format!(
        "pulled {} from ring '{}' at {} into ring '{local_name}'",
        moved.text(),
        args.ring,
        args.url
    );
    let ended = match ended {
        Ok(e) => Ok(e),
        Err(Broke::Stopped(sig)) => {
            let then = if local.is_some() {
                "the local stream is not closed, so its consumer gets what was pulled and learns \
                 that the producer died; what was not acknowledged stays in the remote ring"
            } else {
                "nothing had come, so no local stream was started"
            };
            if let Some(tx) = local {
                tx.abandon();
            }
            die_by(sig, &summary, then);
        }
        Err(Broke::TimedOut(Side::Remote)) => Err(patience.timed_out(
            match last_error.as_ref().filter(|_| !reached.get()) {
                Some(e) => format!("could not read ring '{}' at {} ({e})", args.ring, args.url),
                None => format!("ring '{}' at {} sent no batch", args.ring, args.url),
            },
            &summary,
        )),
        Err(Broke::TimedOut(Side::Local)) => Err(patience.timed_out(
            format!("ring '{local_name}' took no batch (its consumer is gone or reads nothing)"),
            &summary,
        )),
        Err(Broke::Remote(s)) => Err(remote_error(&args.url, &args.ring, &s)),
        Err(Broke::Local(e)) => Err(e),
    };
    match ended {
        Ok(None) => {
            if let Some(tx) = local {
                tx.close().map_err(|e| CliError::ring(&local_name, e))?;
            }
            errln!("laminar-ring: {summary}; end of stream");
            Ok(())
        }
        Ok(Some(Ending::Died)) => {
            // The local stream ends as a dead producer's.
            if let Some(tx) = local {
                tx.abandon();
            }
            Err(CliError::ProducerDied {
                name: args.ring.clone(),
                summary,
            })
        }
        Ok(Some(Ending::Failed(reason))) => {
            if let Some(tx) = local {
                tx.fail(&reason);
            }
            Err(CliError::ProducerFailed {
                name: args.ring.clone(),
                reason,
                summary,
            })
        }
        Err(e) => {
            if let Some(tx) = local {
                tx.fail(&format!("flight pull: {}", one_line(&e)));
            }
            Err(e)
        }
    }
}

/// What the server's answer to `DoPut` said: a batch is in its ring, or
/// the call ended.
enum Answer {
    Acked(u64),
    Ended(Result<(), Status>),
}

pub fn push(args: &PushArgs) -> Result<(), CliError> {
    let remote_name = args.into.clone().unwrap_or_else(|| args.ring.clone());
    let endpoint = wire::endpoint(&args.url, args.remote.tls_ca.as_deref())?;
    let token = args
        .remote
        .token_file
        .as_deref()
        .map(wire::read_token)
        .transpose()?;
    let bearer = Bearer::new(token.as_deref())?;
    let mut opts = rings::ring_options(&args.geometry, &args.location);
    opts.segment.subscriber = args.subscriber.clone();
    let mut rx = rings::consumer(&args.ring, &opts, &args.geometry)?;
    let rt = wire::runtime()?;
    let session = format!(
        "session={}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let descriptor = FlightDescriptor::new_path(vec![remote_name.clone(), session]);
    let mut pusher = Pusher {
        held: VecDeque::new(),
        next_seq: 1,
        moved: Moved::default(),
        first: None,
        stopped: None,
    };
    let mut backoff = Backoff::new();
    let patience = Patience::new(args.remote.timeout)?;
    let ended = loop {
        let before = pusher.moved.batches;
        match pusher.turn(&rt, &endpoint, &bearer, &descriptor, &mut rx, &patience) {
            Ok(ending) => break Ok(ending),
            Err(Broke::Remote(s)) if args.remote.retry && retriable(&s) && !patience.over() => {
                if pusher.moved.batches > before {
                    backoff = Backoff::new();
                }
                backoff.wait(
                    &format!("{}, ring '{remote_name}'", args.url),
                    &s,
                    &patience,
                );
            }
            Err(Broke::Remote(_)) if patience.over() => break Err(patience.broke(Side::Remote)),
            Err(b) => break Err(b),
        }
    };
    let summary = format!(
        "pushed {} from ring '{}' to ring '{remote_name}' at {}",
        pusher.moved.text(),
        args.ring,
        args.url
    );
    let ended = match ended {
        Ok(Some(Ending::Died)) if pusher.stopped.is_some() => {
            let sig = pusher.stopped.unwrap_or_default();
            drop(pusher);
            drop(rx);
            die_by(
                sig,
                &summary,
                "the remote stream ends as a dead producer's; what was not read stays in the \
                 local ring",
            );
        }
        Ok(e) => Ok(e),
        Err(Broke::Stopped(sig)) => {
            rx.detach();
            die_by(
                sig,
                &summary,
                "what the server did not acknowledge stays in the local ring; a stream the \
                 server had started for it ends as a dead producer's after its --resume-grace",
            );
        }
        Err(Broke::TimedOut(Side::Local)) => {
            Err(patience.timed_out(format!("ring '{}' sent no batch", args.ring), &summary))
        }
        Err(Broke::TimedOut(Side::Remote)) => Err(patience.timed_out(
            format!(
                "the server at {} took no batch for ring '{remote_name}'",
                args.url
            ),
            &summary,
        )),
        Err(Broke::Remote(s)) => Err(remote_error(&args.url, &remote_name, &s)),
        Err(Broke::Local(e)) => Err(e),
    };
    match ended {
        Ok(None) => {
            drop(pusher);
            drop(rx);
            errln!("laminar-ring: {summary}; end of stream");
            Ok(())
        }
        Ok(Some(Ending::Died)) => Err(CliError::ProducerDied {
            name: args.ring.clone(),
            summary,
        }),
        Ok(Some(Ending::Failed(reason))) => Err(CliError::ProducerFailed {
            name: args.ring.clone(),
            reason,
            summary,
        }),
        Err(e) => {
            // What the server did not take stays in the local ring.
            rx.detach();
            Err(e)
        }
    }
}

/// The local side of `push`: the batches sent and not yet acknowledged
/// (leased: still in the local ring).
struct Pusher {
    held: VecDeque<(u64, RecordBatch)>,
    next_seq: u64,
    moved: Moved,
    /// The first batch, read before the first connection (the schema is
    /// known only with it).
    first: Option<RecordBatch>,
    /// The signal that ended the local stream for the server, if one did.
    stopped: Option<i32>,
}

impl Pusher {
    /// One connection: sends what was not acknowledged, then the local
    /// stream, until it ends.
    fn turn(
        &mut self,
        rt: &tokio::runtime::Runtime,
        endpoint: &tonic::transport::Endpoint,
        bearer: &Bearer,
        descriptor: &FlightDescriptor,
        rx: &mut BatchFanIn,
        patience: &Patience,
    ) -> Result<Option<Ending>, Broke> {
        // The schema is known with the first batch; an ending before any
        // batch is passed on with an empty stream.
        let mut early_end = None;
        while rx.schema().is_none() && self.held.is_empty() && self.first.is_none() {
            match recv(rx) {
                Ok(Some(b)) => self.first = Some(b),
                Ok(None) => return Ok(None),
                Err(Some(e)) => {
                    early_end = Some(e);
                    break;
                }
                Err(None) if patience.over() => return Err(patience.broke(Side::Local)),
                Err(None) => {}
            }
        }
        let schema = rx
            .schema()
            .cloned()
            .or_else(|| self.first.as_ref().map(RecordBatch::schema))
            .unwrap_or_else(|| std::sync::Arc::new(arrow_schema::Schema::empty()));
        let mut enc = Encoder::new();
        let (data, outgoing) = mpsc::channel::<FlightData>(4);
        // The first message goes before the call, so that the server's
        // handler, which reads it first, can answer.
        data.try_send(enc.schema(&schema, Some(descriptor.clone())))
            .map_err(|_| Status::internal("the message queue is full"))?;
        let (answers_tx, answers) = std::sync::mpsc::channel();
        let connected = patience.within(rt, async {
            let mut client = wire::connect(endpoint, bearer).await?;
            let mut response = client
                .do_put(ReceiverStream::new(outgoing))
                .await?
                .into_inner();
            tokio::spawn(async move {
                let end = loop {
                    match response.message().await {
                        Ok(Some(r)) => {
                            if let Some(seq) = seq_of(&r.app_metadata) {
                                let _ = answers_tx.send(Answer::Acked(seq));
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(s) => break Err(s),
                    }
                };
                let _ = answers_tx.send(Answer::Ended(end));
            });
            Ok::<_, Status>(())
        });
        connected.ok_or_else(|| patience.broke(Side::Remote))??;
        let send = |msgs: Vec<FlightData>| -> Result<(), Broke> {
            for m in msgs {
                patience
                    .within(rt, data.send(m))
                    .ok_or_else(|| patience.broke(Side::Remote))?
                    .map_err(|_| Status::unavailable("the connection closed"))?;
            }
            Ok(())
        };
        // Unacknowledged batches first, under their own numbers.
        for (seq, b) in &self.held {
            send(enc.batch(b, *seq)?)?;
        }
        if let Some(b) = self.first.take() {
            self.send_new(b, &mut enc, &send)?;
        }
        let ending = loop {
            if let Some(e) = early_end.take() {
                break e;
            }
            if self.take_answers(&answers, None)? {
                return Err(Broke::Remote(Status::unavailable(
                    "the server ended the call before the stream's end",
                )));
            }
            if let Some(sig) = patience.stopped() {
                // The remote stream ends as a dead producer's, as a local
                // consumer learns of a `produce` stopped by a signal.
                self.stopped = Some(sig);
                break Some(Ending::Died);
            }
            match recv(rx) {
                Ok(Some(b)) => {
                    // A batch came: the wait for the server starts now.
                    patience.moved();
                    self.send_new(b, &mut enc, &send)?;
                }
                Ok(None) => break None,
                Err(Some(e)) => break e,
                // A signal: the stream's end is sent first (above).
                Err(None) if patience.stopped().is_some() => {}
                Err(None) if patience.over() => {
                    // Batches sent and not acknowledged since: the server's.
                    let side = if self.held.is_empty() {
                        Side::Local
                    } else {
                        Side::Remote
                    };
                    return Err(Broke::TimedOut(side));
                }
                Err(None) => {
                    // Out of leases, or nothing yet: wait for answers a little.
                    if rx.outstanding() > 0 {
                        self.take_answers(&answers, Some(Duration::from_millis(1)))?;
                    }
                }
            }
        };
        // How the stream ended: without it, the server takes the end of the
        // call for a dropped connection. Sent even after a signal.
        let control = match &ending {
            None => CLOSED.to_vec(),
            Some(Ending::Died) => DIED.to_vec(),
            Some(Ending::Failed(reason)) => [FAILED, reason.as_bytes()].concat(),
        };
        let said = FlightData::new().with_app_metadata(control);
        if self.stopped.is_some() {
            // Stopped by a signal: the server gets 5 s to take it.
            match rt.block_on(data.send_timeout(said, Duration::from_secs(5))) {
                Ok(()) => {}
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    return Err(patience.broke(Side::Remote));
                }
                Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                    return Err(Broke::Remote(Status::unavailable("the connection closed")));
                }
            }
        } else {
            send(vec![said])?;
        }
        drop(data);
        // The server answers every batch, then ends the call. Stopped by a
        // signal, it gets 5 s for that.
        let since = Instant::now();
        loop {
            let held = self.held.len();
            if self.take_answers(&answers, Some(STEP))? {
                if self.held.is_empty() {
                    return Ok(ending);
                }
                return Err(Broke::Remote(Status::unavailable(
                    "the server ended the call before acknowledging every batch",
                )));
            }
            if self.held.len() < held {
                patience.moved();
            }
            match self.stopped {
                Some(sig) if since.elapsed() >= Duration::from_secs(5) => {
                    return Err(Broke::Stopped(sig));
                }
                None if patience.over() => return Err(patience.broke(Side::Remote)),
                _ => {}
            }
            if self.stopped.is_none() && patience.left() == Some(Duration::ZERO) {
                return Err(Broke::TimedOut(Side::Remote));
            }
        }
    }

    fn send_new(
        &mut self,
        b: RecordBatch,
        enc: &mut Encoder,
        send: &dyn Fn(Vec<FlightData>) -> Result<(), Broke>,
    ) -> Result<(), Broke> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.moved.add(&b);
        let msgs = enc.batch(&b, seq)?;
        self.held.push_back((seq, b));
        send(msgs)?;
        Ok(())
    }

    /// Drops the acknowledged batches (their leases let the local ring
    /// release them); true once the call ended well, an error if it broke.
    fn take_answers(
        &mut self,
        answers: &std::sync::mpsc::Receiver<Answer>,
        wait: Option<Duration>,
    ) -> Result<bool, Broke> {
        let mut next = match wait {
            Some(w) => answers.recv_timeout(w).ok(),
            None => answers.try_recv().ok(),
        };
        while let Some(a) = next {
            match a {
                Answer::Acked(seq) => {
                    while self.held.front().is_some_and(|(s, _)| *s <= seq) {
                        self.held.pop_front();
                    }
                }
                Answer::Ended(Ok(())) => return Ok(true),
                Answer::Ended(Err(s)) => return Err(Broke::Remote(s)),
            }
            next = answers.try_recv().ok();
        }
        Ok(false)
    }
}

/// The next local batch (leased); `Ok(None)` at the end of the stream;
/// `Err(None)` for nothing yet; `Err(Some(ending))` when its producer died
/// or failed.
fn recv(rx: &mut BatchFanIn) -> Result<Option<RecordBatch>, Option<Option<Ending>>> {
    match rx.recv_lane_zero_copy(Some(STEP)) {
        Ok(Some((_, b))) => Ok(Some(b.into_inner())),
        Ok(None) => Ok(None),
        Err(BatchFanInError::Timeout) => Err(None),
        Err(BatchFanInError::Lane { error, .. }) => match error {
            ArrowRingError::PeerGone if rx.lanes() <= 1 => Err(Some(Some(Ending::Died))),
            ArrowRingError::ProducerFailed { reason } if rx.lanes() <= 1 => {
                Err(Some(Some(Ending::Failed(reason))))
            }
            // Another lane goes on; out of leases: wait for answers.
            _ => Err(None),
        },
    }
}
