//! `flight pull` (a remote ring into a local one) and `flight push` (a
//! local ring into a remote one).

use std::collections::VecDeque;
use std::path::PathBuf;
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
    self, Bearer, DIED, Encoder, Ending, FAILED, STEP, ending_of, put, retriable, seq_bytes, seq_of,
};
use crate::error::{CliError, one_line};
use crate::pipe::data_bytes;
use crate::print::errln;
use crate::rings::{self, Geometry, Location};
use crate::units::{fmt_bytes, fmt_counted};

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

    fn wait(&mut self, what: &str, status: &Status) {
        errln!(
            "laminar-ring: {what}: {}; again in {:.1} s",
            status.message(),
            self.0.as_secs_f64()
        );
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }
}

/// Why a connection's turn ended early.
enum Broke {
    /// The server or the connection (`retriable` says whether to try again).
    Remote(Status),
    /// The local ring.
    Local(CliError),
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
    let ended = loop {
        let before = moved.batches;
        let turn = (|| -> Result<Option<Ending>, Broke> {
            let (acks, response) = rt.block_on(async {
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
            })?;
            let mut decoder = FlightDataDecoder::new(
                response.map(|r| r.map_err(|s| FlightError::Tonic(Box::new(s)))),
            );
            loop {
                // A decoder that panics on bytes nobody foresaw ends the
                // pull with an error, not a crash.
                let next = crate::guard::guarded("a Flight message from the server", || {
                    Ok(rt.block_on(decoder.next()))
                })
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
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
                            let tx = local.as_mut().ok_or_else(|| {
                                Status::invalid_argument(
                                    "the server sent a batch before its schema",
                                )
                            })?;
                            put(tx, &batch, &local_name, &|| false).map_err(|p| {
                                Broke::Local(CliError::Flight(p.status.message().to_owned()))
                            })?;
                            moved.add(&batch);
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
                if args.remote.retry && (retriable(&s) || s.code() == tonic::Code::NotFound) =>
            {
                if moved.batches > before {
                    backoff = Backoff::new();
                }
                backoff.wait(&format!("{}, ring '{}'", args.url, args.ring), &s);
            }
            Err(Broke::Remote(s)) => break Err(remote_error(&args.url, &args.ring, &s)),
            Err(Broke::Local(e)) => break Err(e),
        }
    };
    let summary = format!(
        "pulled {} from ring '{}' at {} into ring '{local_name}'",
        moved.text(),
        args.ring,
        args.url
    );
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
    };
    let mut backoff = Backoff::new();
    let ended = loop {
        let before = pusher.moved.batches;
        match pusher.turn(&rt, &endpoint, &bearer, &descriptor, &mut rx) {
            Ok(ending) => break Ok(ending),
            Err(Broke::Remote(s)) if args.remote.retry && retriable(&s) => {
                if pusher.moved.batches > before {
                    backoff = Backoff::new();
                }
                backoff.wait(&format!("{}, ring '{remote_name}'", args.url), &s);
            }
            Err(Broke::Remote(s)) => break Err(remote_error(&args.url, &remote_name, &s)),
            Err(Broke::Local(e)) => break Err(e),
        }
    };
    let summary = format!(
        "pushed {} from ring '{}' to ring '{remote_name}' at {}",
        pusher.moved.text(),
        args.ring,
        args.url
    );
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
        rt.block_on(async {
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
        })?;
        let send = |msgs: Vec<FlightData>| -> Result<(), Status> {
            for m in msgs {
                data.blocking_send(m)
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
            self.take_answers(&answers, None)?;
            match recv(rx) {
                Ok(Some(b)) => self.send_new(b, &mut enc, &send)?,
                Ok(None) => break None,
                Err(Some(e)) => break e,
                Err(None) => {
                    // Out of leases, or nothing yet: wait for answers a little.
                    if rx.outstanding() > 0 {
                        self.take_answers(&answers, Some(Duration::from_millis(1)))?;
                    }
                }
            }
        };
        let control = match &ending {
            None => None,
            Some(Ending::Died) => Some(DIED.to_vec()),
            Some(Ending::Failed(reason)) => Some([FAILED, reason.as_bytes()].concat()),
        };
        if let Some(c) = control {
            send(vec![FlightData::new().with_app_metadata(c)])?;
        }
        drop(data);
        // The server answers every batch, then ends the call.
        let deadline = Instant::now() + Duration::from_secs(3600);
        while Instant::now() < deadline {
            if self.take_answers(&answers, Some(STEP))? {
                if self.held.is_empty() {
                    return Ok(ending);
                }
                return Err(Broke::Remote(Status::unavailable(
                    "the server ended the call before acknowledging every batch",
                )));
            }
        }
        Err(Broke::Remote(Status::deadline_exceeded(
            "the server acknowledged nothing for an hour",
        )))
    }

    fn send_new(
        &mut self,
        b: RecordBatch,
        enc: &mut Encoder,
        send: &dyn Fn(Vec<FlightData>) -> Result<(), Status>,
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
