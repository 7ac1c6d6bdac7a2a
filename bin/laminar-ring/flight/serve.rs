//! `flight serve`: a Flight server in front of the rings of a directory.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::{Schema, SchemaRef};
use futures::{Stream, StreamExt};
use laminar_ring::arrow::{
    ArrowRingError, ArrowRingOptions, BatchFanIn, BatchFanInError, BatchProducer,
};
use laminar_ring::shm::{self, OpenError, RingKind};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use super::wire::{
    self, DIED, Encoder, Ending, FAILED, STEP, Target, ending_status, put, seq_bytes, seq_of,
};
use crate::error::{CliError, one_line};
use crate::print::{errln, outln};
use crate::rings::{self, Geometry, Location};
use crate::units::parse_duration;

/// `--listen`: an IP address and port, or a host name and port (its first
/// address, IPv4 first).
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("not an address to listen on (HOST:PORT or IP:PORT): {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{text} has no address"))
}

/// Serve the rings of --dir over Arrow Flight.
///
/// ListFlights lists the rings (a path descriptor naming each);
/// GetFlightInfo and GetSchema describe one (its `info --json` is the
/// info's app_metadata); DoGet with a ring's name as ticket streams its
/// batches as one more consumer (a ticket of NAME, a newline and a
/// subscriber name reads under that name, `default` otherwise), each
/// released once handed to the connection; DoPut with a path descriptor
/// naming a ring sends the client's stream into it as one more producer
/// (creating the ring as `produce` does). `flight pull` reads through
/// DoExchange, acknowledging each batch, so that the server releases only
/// what reached the puller's ring. Prints `listening on grpc://ADDR` once
/// it accepts calls; stops on SIGINT or SIGTERM.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. The default takes calls from this host only;
    /// give 0.0.0.0:PORT (with --token-file, and --tls-cert over networks
    /// you do not trust) to take them from others. Port 0 picks a free one.
    /// A host name (localhost:50051) listens on its first address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051",
          value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Require `authorization: Bearer TOKEN` on every call, TOKEN being
    /// this file's content (white space around it removed).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How long the producer of a `flight push` whose connection dropped
    /// stays attached, waiting for it to reconnect, before its stream is
    /// ended as a dead producer's.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub resume_grace: Duration,
    #[command(flatten)]
    pub geometry: Geometry,
    #[command(flatten)]
    pub location: Location,
}

pub fn serve(args: &ServeArgs) -> Result<(), CliError> {
    if !args.location.dir.is_dir() {
        return Err(CliError::Flight(format!(
            "{} is not a directory: nothing to serve",
            args.location.dir.display()
        )));
    }
    let token = args
        .token_file
        .as_deref()
        .map(wire::read_token)
        .transpose()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &PathBuf| {
                std::fs::read(p)
                    .map_err(|e| CliError::Flight(format!("cannot read {}: {e}", p.display())))
            };
            Some(ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?)))
        }
        _ => None,
    };
    let rings = Rings {
        geometry: args.geometry.clone(),
        opts: rings::ring_options(&args.geometry, &args.location),
        sessions: Arc::default(),
        grace: args.resume_grace,
    };
    let sessions = rings.sessions.clone();
    let grace = args.resume_grace;
    let scheme = if tls.is_some() { "grpc+tls" } else { "grpc" };
    let sessions_left = sessions.clone();
    let rt = wire::runtime()?;
    let served = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| CliError::Flight(format!("cannot listen on {}: {e}", args.listen)))?;
        let local = listener
            .local_addr()
            .map_err(|e| CliError::Flight(format!("cannot listen on {}: {e}", args.listen)))?;
        let mut builder = Server::builder()
            .http2_keepalive_interval(Some(wire::KEEPALIVE))
            .http2_keepalive_timeout(Some(wire::KEEPALIVE_TIMEOUT))
            .initial_stream_window_size(wire::STREAM_WINDOW)
            .initial_connection_window_size(wire::CONNECTION_WINDOW)
            .max_frame_size(wire::FRAME);
        if let Some(tls) = tls {
            builder = builder
                .tls_config(tls)
                .map_err(|e| CliError::Flight(format!("TLS: {}", one_line(&e))))?;
        }
        let service = InterceptedService::new(
            FlightServiceServer::new(rings)
                .max_decoding_message_size(wire::MAX_MESSAGE)
                .max_encoding_message_size(wire::MAX_MESSAGE),
            Gate { token },
        );
        tokio::spawn(expire_sessions(sessions, grace));
        outln!("listening on {scheme}://{local}");
        // Our own listener (for port 0's address): the builder's
        // `tcp_nodelay` applies only to listeners it makes, so each
        // connection turns Nagle's algorithm off here (a small batch would
        // otherwise wait for the peer's delayed acknowledgement).
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
            s.and_then(|s| {
                s.set_nodelay(true)?;
                Ok(s)
            })
        });
        builder
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stopped())
            .await
            .map_err(|e| CliError::Flight(format!("the server failed: {}", one_line(&e))))
    });
    // Streams whose pushers were away end as dead producers' (dropped
    // parked producers abandon).
    drop(std::mem::take(
        &mut sessions_left.lock().unwrap_or_else(|e| e.into_inner()).map,
    ));
    served
}

/// Set once the server stops: streams out of rings end (their readers
/// detach, so what a client did not acknowledge stays in the ring).
static STOPPING: AtomicBool = AtomicBool::new(false);

/// How long calls still open may take to end once the server stops.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Resolves on SIGINT or SIGTERM, telling the calls to end; exits the
/// process if some have not ended within [`STOP_GRACE`] (a `DoPut` waiting
/// for its client, say: its producer then ends as a dead one's).
async fn stopped() {
    signalled().await;
    STOPPING.store(true, Ordering::Relaxed);
    tokio::spawn(async {
        tokio::time::sleep(STOP_GRACE).await;
        errln!(
            "laminar-ring: flight serve: calls still open {} s after the signal; stopping anyway",
            STOP_GRACE.as_secs()
        );
        std::process::exit(0);
    });
}

/// Resolves on SIGINT or SIGTERM.
async fn signalled() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// Refuses a call without the bearer token, when there is one.
#[derive(Clone)]
struct Gate {
    token: Option<String>,
}

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.token else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(g) if wire::same_secret(g.as_bytes(), token.as_bytes()) => Ok(req),
            Some(_) => Err(Status::unauthenticated("wrong bearer token")),
            None => Err(Status::unauthenticated(
                "this server needs `authorization: Bearer TOKEN`",
            )),
        }
    }
}

/// A parked session's producer: however it is dropped (expired, the
/// server stopping, the map dropped), its stream ends as a dead producer's,
/// never as a closed one (a plain drop would close it, and its consumers
/// would take a cut stream for a whole one).
struct ParkedProducer(Option<Box<BatchProducer>>);

impl ParkedProducer {
    fn take(mut self) -> BatchProducer {
        *self.0.take().expect("taken once")
    }
}

impl Drop for ParkedProducer {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            tx.abandon();
        }
    }
}

/// A `push` session's producer: busy with the call of one generation, or
/// waiting for its client to reconnect since `since`.
enum Session {
    Busy(u64),
    Parked {
        tx: ParkedProducer,
        last: Taken,
        since: Instant,
    },
    /// Its client did not come back within the grace time: its stream was
    /// ended, and a call that resumes it is refused.
    Expired,
}

/// How far a session's stream got: the last batch wholly taken, and how
/// many rows of the next one (a batch halved to fit the arena, cut off
/// half-way).
#[derive(Clone, Copy, Default)]
struct Taken {
    seq: u64,
    rows_of_next: usize,
}

#[derive(Default)]
struct SessionMap {
    map: HashMap<String, Session>,
    generation: u64,
}

type Sessions = Arc<Mutex<SessionMap>>;

/// Expired sessions remembered (past this many entries, every expired one
/// is forgotten).
const EXPIRED_KEPT: usize = 10_000;

/// Ends the streams of parked sessions whose client did not come back in
/// time: their producers are abandoned (a dead producer's ending).
async fn expire_sessions(sessions: Sessions, grace: Duration) {
    let mut tick =
        tokio::time::interval(Duration::from_secs(1).min(grace.max(Duration::from_millis(50))));
    loop {
        tick.tick().await;
        let expired: Vec<Session> = {
            let mut s = sessions.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<String> = s
                .map
                .iter()
                .filter(
                    |(_, v)| matches!(v, Session::Parked { since, .. } if since.elapsed() >= grace),
                )
                .map(|(k, _)| k.clone())
                .collect();
            if s.map.len() > EXPIRED_KEPT {
                s.map.retain(|_, v| !matches!(v, Session::Expired));
            }
            keys.into_iter()
                .filter_map(|k| s.map.insert(k, Session::Expired))
                .collect()
        };
        // Outside the lock: each parked producer, dropped, abandons.
        drop(expired);
    }
}

struct Rings {
    geometry: Geometry,
    opts: ArrowRingOptions,
    sessions: Sessions,
    grace: Duration,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// An open error as the status a client can act on.
/// `text` without the server's directory: a client has no business with
/// where the rings lie.
fn hide(dir: &std::path::Path, text: &str) -> String {
    text.replace(&format!("{}/", dir.display()), "")
}

fn open_status(ring: &str, dir: &std::path::Path, e: &ArrowRingError) -> Status {
    let text = hide(dir, &one_line(e));
    match e {
        ArrowRingError::Open(OpenError::NotFound { .. }) => {
            Status::not_found(format!("no ring '{ring}' on this server"))
        }
        // Retriable: a reader whose client just went is still detaching.
        ArrowRingError::Open(
            OpenError::RoleTaken { .. } | OpenError::SubscriberAttached { .. },
        ) => Status::unavailable(format!(
            "{text}: another reader of this server reads ring '{ring}' under that name; \
                 read under another (a ticket of the name, a newline and a subscriber; \
                 `flight pull --as`)"
        )),
        ArrowRingError::Open(OpenError::PermissionDenied { .. } | OpenError::Untrusted { .. }) => {
            Status::permission_denied(text)
        }
        ArrowRingError::Open(OpenError::BadName { .. }) => Status::invalid_argument(text),
        ArrowRingError::SchemaMismatch { .. } => Status::invalid_argument(text),
        _ => Status::failed_precondition(text),
    }
}

/// Runs `f` on a thread that may block.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("a worker thread failed: {e}")))?
}

impl Rings {
    fn segment(&self) -> shm::SegmentOptions {
        shm::SegmentOptions {
            ready_timeout: Duration::ZERO,
            ..self.opts.segment.clone()
        }
    }

    /// What `GetFlightInfo` and `GetSchema` read of the Arrow ring `name`:
    /// its header and the schema a consumer attaching now would read.
    fn peek(
        segment: &shm::SegmentOptions,
        name: &str,
    ) -> Result<(shm::RingInfo, Option<SchemaRef>), Status> {
        let info = shm::inspect(name, segment).map_err(|e| match e {
            OpenError::NotFound { .. } => {
                Status::not_found(format!("no ring '{name}' on this server"))
            }
            e => Status::failed_precondition(hide(&segment.dir, &one_line(&e))),
        })?;
        if info.layout.kind != RingKind::Arrow {
            return Err(Status::failed_precondition(format!(
                "ring '{name}' is a typed ring, not an Arrow one"
            )));
        }
        let schema = laminar_ring::arrow::stream_schema(name, segment)
            .map_err(|e| Status::failed_precondition(hide(&segment.dir, &one_line(&e))))?;
        Ok((info, schema))
    }

    /// The Flight description of the ring `name`.
    fn describe(segment: &shm::SegmentOptions, name: &str) -> Result<FlightInfo, Status> {
        let (info, schema) = Self::peek(segment, name)?;
        let schema = schema.unwrap_or_else(|| Arc::new(Schema::empty()));
        let meta = crate::status::info_json(name, &info).to_string();
        FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))
            .map(|i| {
                i.with_descriptor(FlightDescriptor::new_path(vec![name.to_owned()]))
                    .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(name.to_owned())))
                    .with_total_records(-1)
                    .with_total_bytes(-1)
                    .with_ordered(true)
                    .with_app_metadata(meta)
            })
    }

    /// Attaches as a consumer of `target` (which must exist).
    async fn reader(&self, target: &Target) -> Result<BatchFanIn, Status> {
        let mut opts = self.opts.clone();
        if let Some(s) = &target.subscriber {
            opts.segment.subscriber = s.clone();
        }
        let ring = target.ring.clone();
        blocking(move || {
            // A client that reconnects may be quicker than the reader of
            // its old call is to see it gone and detach: wait for that.
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                match BatchFanIn::open(&ring, &opts) {
                    Err(ArrowRingError::Open(
                        OpenError::RoleTaken { .. } | OpenError::SubscriberAttached { .. },
                    )) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    r => return r.map_err(|e| open_status(&ring, &opts.segment.dir, &e)),
                }
            }
        })
        .await
    }
}

#[tonic::async_trait]
impl FlightService for Rings {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        // The bearer token goes with every call; there is nothing to trade.
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let segment = self.segment();
        let infos = blocking(move || {
            let names = shm::list_candidates(&segment.dir).map_err(|e| {
                Status::internal(format!("cannot list {}: {e}", segment.dir.display()))
            })?;
            Ok(names
                .into_iter()
                .filter(|n| shm::parse_lane_name(n).1 == 0)
                .filter_map(|n| Self::describe(&segment, &n).ok())
                .map(Ok)
                .collect::<Vec<_>>())
        })
        .await?;
        Ok(Response::new(Box::pin(futures::stream::iter(infos))))
    }

    async fn get_flight_info(
        &self,
        req: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let target = Target::from_descriptor(Some(req.get_ref()))?;
        let segment = self.segment();
        blocking(move || Self::describe(&segment, &target.ring))
            .await
            .map(Response::new)
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "a ring's info is ready at once: use GetFlightInfo",
        ))
    }

    async fn get_schema(
        &self,
        req: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let target = Target::from_descriptor(Some(req.get_ref()))?;
        let segment = self.segment();
        let ring = target.ring.clone();
        let schema = blocking(move || {
            Self::peek(&segment, &ring)?.1.ok_or_else(|| {
                Status::failed_precondition(format!(
                    "ring '{ring}' has no schema yet: no producer has sent one"
                ))
            })
        })
        .await?;
        SchemaResult::try_from(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()))
            .map(Response::new)
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))
    }

    async fn do_get(&self, req: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let target = Target::from_ticket(&req.get_ref().ticket)?;
        let rx = self.reader(&target).await?;
        let (out, stream) = mpsc::channel(2);
        std::thread::spawn(move || send_ring(rx, &target.ring, &out, None));
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    async fn do_exchange(
        &self,
        req: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let mut incoming = req.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("DoExchange: no first message"))?;
        let target = Target::from_descriptor(first.flight_descriptor.as_ref())?;
        let rx = self.reader(&target).await?;
        let acks = Arc::new(Acks::default());
        let seen = acks.clone();
        tokio::spawn(async move {
            // Cumulative: the highest number is all there is to keep.
            while let Ok(Some(m)) = incoming.message().await {
                if let Some(seq) = seq_of(&m.app_metadata) {
                    let sent = seen.sent.load(Ordering::Relaxed);
                    seen.highest.fetch_max(seq.min(sent), Ordering::Relaxed);
                }
            }
            // The client's side ended or broke.
            seen.closed.store(true, Ordering::Relaxed);
        });
        let (out, stream) = mpsc::channel(2);
        std::thread::spawn(move || send_ring(rx, &target.ring, &out, Some(&acks)));
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    async fn do_put(
        &self,
        req: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let mut incoming = req.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("DoPut: no first message"))?;
        let target = Target::from_descriptor(first.flight_descriptor.as_ref())?;
        // Messages of `app_metadata` only say how the client's stream ended.
        let control: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
        let seen = control.clone();
        let raw = futures::stream::once(async move { Ok(first) })
            .chain(incoming)
            .filter_map(move |m| {
                let out = match m {
                    Ok(d) if d.data_header.is_empty() => {
                        *seen.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(d.app_metadata.to_vec());
                        None
                    }
                    Ok(d) => Some(Ok(d)),
                    Err(s) => Some(Err(FlightError::Tonic(Box::new(s)))),
                };
                std::future::ready(out)
            });
        let decoder = FlightDataDecoder::new(raw);
        let (out, stream) = mpsc::channel(16);
        let put = Put {
            target,
            opts: self.opts.clone(),
            geometry: self.geometry.clone(),
            sessions: self.sessions.clone(),
            grace: self.grace,
            handle: tokio::runtime::Handle::current(),
        };
        std::thread::spawn(move || put.run(decoder, &control, &out));
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    async fn do_action(
        &self,
        req: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented(format!(
            "no action '{}': this server has none",
            req.get_ref().r#type
        )))
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }
}

/// What a puller acknowledged: the highest sequence number, and whether
/// its side of the call ended. (Atomics, not a queue: a client that floods
/// acknowledgements costs nothing.)
#[derive(Default)]
struct Acks {
    highest: AtomicU64,
    /// The last sequence number sent: an acknowledgement past it counts up
    /// to it only.
    sent: AtomicU64,
    closed: AtomicBool,
}

/// Streams the ring `rx` reads to `out` until its stream ends, the client
/// goes or the server stops. With `acks`, a batch is kept (leased, so in
/// the ring) until the client acknowledges it, and a client that goes
/// leaves what it did not acknowledge to the subscription's next reader;
/// without, a batch is released once its messages are handed to the
/// connection.
fn send_ring(
    mut rx: BatchFanIn,
    ring: &str,
    out: &mpsc::Sender<Result<FlightData, Status>>,
    acks: Option<&Acks>,
) {
    let mut enc = Encoder::new();
    let mut schema_sent = false;
    let mut seq = 0u64;
    let mut held: VecDeque<(u64, RecordBatch)> = VecDeque::new();
    // A lane among several whose producer died or failed: reported at the
    // end, after every other lane's batches.
    let mut lane_ending: Option<Ending> = None;
    // Drops the acknowledged batches, waiting up to `wait` for one when
    // some are held; false once the client is gone.
    let take_acks = |held: &mut VecDeque<(u64, RecordBatch)>, seq: u64, wait: Duration| -> bool {
        let Some(acks) = acks else {
            return !out.is_closed();
        };
        let deadline = Instant::now() + wait;
        loop {
            // An acknowledgement past what was sent counts up to it.
            let acked = acks.highest.load(Ordering::Relaxed).min(seq);
            let before = held.len();
            while held.front().is_some_and(|(s, _)| *s <= acked) {
                held.pop_front();
            }
            if acks.closed.load(Ordering::Relaxed) || out.is_closed() {
                return false;
            }
            if held.len() < before || held.is_empty() || Instant::now() >= deadline {
                return true;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    // What the client did not acknowledge stays leased through the detach,
    // so the subscription's next reader receives it.
    let ending: Result<Option<Ending>, Status> = loop {
        if !take_acks(&mut held, seq, Duration::ZERO) {
            return rx.detach();
        }
        if STOPPING.load(Ordering::Relaxed) {
            break Err(Status::unavailable("the server is stopping"));
        }
        match rx.recv_lane_zero_copy(Some(STEP)) {
            Ok(Some((_, batch))) => {
                let mut messages = Vec::new();
                if !schema_sent {
                    messages.push(enc.schema(&batch.schema(), None));
                    schema_sent = true;
                }
                seq += 1;
                match enc.batch(&batch, seq) {
                    Ok(m) => messages.extend(m),
                    Err(s) => break Err(s),
                }
                if let Some(a) = acks {
                    held.push_back((seq, batch.into_inner()));
                    a.sent.store(seq, Ordering::Relaxed);
                }
                for m in messages {
                    if out.blocking_send(Ok(m)).is_err() {
                        return rx.detach();
                    }
                }
            }
            Ok(None) => break Ok(lane_ending.take()),
            Err(BatchFanInError::Timeout) => {}
            Err(BatchFanInError::Lane { error, .. }) => match error {
                ArrowRingError::TooManyLeases { .. } => {
                    if !take_acks(&mut held, seq, STEP) {
                        return rx.detach();
                    }
                }
                ArrowRingError::Lagged { .. } => {}
                ArrowRingError::PeerGone if rx.lanes() > 1 => {
                    lane_ending.get_or_insert(Ending::Died);
                }
                ArrowRingError::PeerGone => break Ok(Some(Ending::Died)),
                ArrowRingError::ProducerFailed { reason } if rx.lanes() > 1 => {
                    lane_ending.get_or_insert(Ending::Failed(reason));
                }
                ArrowRingError::ProducerFailed { reason } => {
                    break Ok(Some(Ending::Failed(reason)));
                }
                e => break Err(Status::internal(format!("ring '{ring}': {}", one_line(&e)))),
            },
        }
    };
    if let Err(s) = ending {
        // Stopping, or a ring that cannot be read on: what was not
        // acknowledged goes to the next reader.
        drop(out.blocking_send(Err(s)));
        return rx.detach();
    }
    // The client acknowledges the last batches before the stream ends.
    while !held.is_empty() {
        if !take_acks(&mut held, seq, STEP) {
            return rx.detach();
        }
        if STOPPING.load(Ordering::Relaxed) {
            // Not an end: the puller reconnects to the next server.
            drop(out.blocking_send(Err(Status::unavailable("the server is stopping"))));
            return rx.detach();
        }
    }
    if let Ok(Some(e)) = ending {
        drop(out.blocking_send(Err(ending_status(ring, &e))));
    }
}

/// One `DoPut` call: the client's stream into a ring.
struct Put {
    target: Target,
    opts: ArrowRingOptions,
    geometry: Geometry,
    sessions: Sessions,
    grace: Duration,
    handle: tokio::runtime::Handle,
}

/// Where a `DoPut` call stands with its session: none (a plain client), or
/// the generation of the call that holds it.
#[derive(Clone, Copy)]
enum Held {
    NoSession,
    Generation(u64),
}

impl Put {
    fn session_key(&self) -> Option<String> {
        self.target
            .session
            .as_ref()
            .map(|s| format!("{}\n{s}", self.target.ring))
    }

    /// Takes the session: the producer and progress of one whose connection
    /// dropped, once its previous call has let go of it (waiting up to the
    /// grace time for that). Refuses a session that expired, or one that
    /// another call still holds after the grace time.
    fn resume(&self) -> Result<(Held, Option<(BatchProducer, Taken)>), Status> {
        let Some(key) = self.session_key() else {
            return Ok((Held::NoSession, None));
        };
        let deadline = Instant::now() + self.grace;
        loop {
            {
                let mut guard = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
                let s = &mut *guard;
                match s.map.get(&key) {
                    Some(Session::Busy(_)) if Instant::now() < deadline => {}
                    Some(Session::Busy(_)) => {
                        return Err(Status::unavailable(
                            "another call still holds this push's stream; try again",
                        ));
                    }
                    Some(Session::Expired) => {
                        return Err(Status::failed_precondition(format!(
                            "this push's stream into ring '{}' was ended: its connection stayed \
                             lost longer than the server's --resume-grace ({} s); start the \
                             push again",
                            self.target.ring,
                            self.grace.as_secs_f64()
                        )));
                    }
                    _ => {
                        s.generation += 1;
                        let generation = s.generation;
                        let parked = match s.map.insert(key, Session::Busy(generation)) {
                            Some(Session::Parked { tx, last, .. }) => Some((tx.take(), last)),
                            _ => None,
                        };
                        return Ok((Held::Generation(generation), parked));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lets go of the session: parks the producer for the client's return,
    /// or forgets the session. A call that lost its session to a newer one
    /// (or a plain client's call) ends its producer as a dead one's.
    fn leave(&self, held: Held, park: Option<(BatchProducer, Taken)>) {
        let (Some(key), Held::Generation(generation)) = (self.session_key(), held) else {
            if let Some((tx, _)) = park {
                tx.abandon();
            }
            return;
        };
        let mut guard = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut *guard;
        if !matches!(s.map.get(&key), Some(Session::Busy(g)) if *g == generation) {
            drop(guard);
            if let Some((tx, _)) = park {
                tx.abandon();
            }
            return;
        }
        match park {
            Some((tx, last)) => {
                s.map.insert(
                    key,
                    Session::Parked {
                        tx: ParkedProducer(Some(Box::new(tx))),
                        last,
                        since: Instant::now(),
                    },
                );
            }
            None => {
                s.map.remove(&key);
            }
        }
    }

    fn run(
        self,
        mut decoder: FlightDataDecoder,
        control: &Mutex<Option<Vec<u8>>>,
        out: &mpsc::Sender<Result<PutResult, Status>>,
    ) {
        let (held, parked) = match self.resume() {
            Ok(r) => r,
            Err(status) => return drop(out.blocking_send(Err(status))),
        };
        let (mut tx, mut last) = match parked {
            Some((tx, last)) => (Some(tx), last),
            None => (None, Taken::default()),
        };
        let streamed = match self.stream(&mut decoder, &mut tx, &mut last, out) {
            // A session's stream that ends without saying how is a pusher
            // that went away mid-call (gave up, timed out, was stopped):
            // not a clean end.
            Ok(())
                if self.session_key().is_some()
                    && control.lock().unwrap_or_else(|e| e.into_inner()).is_none() =>
            {
                Err(None)
            }
            r => r,
        };
        match streamed {
            // The connection broke or the client went: a session's producer
            // waits for its client, any other ends as a dead one's.
            Err(None) => self.leave(held, tx.map(|t| (t, last))),
            Err(Some(status)) => {
                self.leave(held, None);
                if let Some(tx) = tx {
                    tx.fail(&status.message().chars().take(200).collect::<String>());
                }
                drop(out.blocking_send(Err(status)));
            }
            Ok(()) => {
                self.leave(held, None);
                let ended = control.lock().unwrap_or_else(|e| e.into_inner()).take();
                let Some(tx) = tx else {
                    return;
                };
                match ended.as_deref() {
                    Some(DIED) => tx.abandon(),
                    Some(m) if m.starts_with(FAILED) => {
                        tx.fail(&String::from_utf8_lossy(&m[FAILED.len()..]));
                    }
                    _ => {
                        if let Err(e) = tx.close() {
                            let ring = &self.target.ring;
                            drop(out.blocking_send(Err(Status::internal(format!(
                                "ring '{ring}': cannot close the stream: {}",
                                one_line(&e)
                            )))));
                        }
                    }
                }
            }
        }
    }

    /// Puts the client's batches into the ring until its stream ends
    /// (`Ok`), its connection goes (`Err(None)`), or it must be refused.
    fn stream(
        &self,
        decoder: &mut FlightDataDecoder,
        tx: &mut Option<BatchProducer>,
        last: &mut Taken,
        out: &mpsc::Sender<Result<PutResult, Status>>,
    ) -> Result<(), Option<Status>> {
        let ring = &self.target.ring;
        let gone = || out.is_closed();
        let mut count = 0u64;
        if let Some(p) = tx.as_mut() {
            // A resumed producer may hold batches taken but not yet in the
            // ring: they go in before anything is acknowledged.
            loop {
                match p.flush(STEP) {
                    Ok(true) => break,
                    Ok(false) | Err(ArrowRingError::ConsumerGone) if !gone() => {}
                    Ok(false) | Err(ArrowRingError::ConsumerGone) => return Err(None),
                    Err(e) => return Err(Some(Status::failed_precondition(one_line(&e)))),
                }
            }
        }
        loop {
            // A decoder that panics on bytes nobody foresaw refuses the
            // call instead of taking the thread down.
            let next = crate::guard::guarded("a Flight message", || {
                Ok(self.handle.block_on(decoder.next()))
            })
            .map_err(|e| Some(Status::invalid_argument(e.to_string())))?;
            let d = match next {
                None => return Ok(()),
                Some(Ok(d)) => d,
                Some(Err(FlightError::Tonic(_))) => return Err(None),
                Some(Err(e)) => {
                    return Err(Some(Status::invalid_argument(format!(
                        "bad Flight data: {e}"
                    ))));
                }
            };
            match d.payload {
                DecodedPayload::Schema(schema) => {
                    if tx.is_none() {
                        let p = rings::producer(ring, &self.opts, &self.geometry, &schema)
                            .map_err(|e| Some(Status::failed_precondition(one_line(&e))))?;
                        *tx = Some(p);
                    }
                }
                DecodedPayload::RecordBatch(batch) => {
                    count += 1;
                    // Only a session's numbers are ours; a plain client's
                    // app_metadata is its own business.
                    let seq = match self.target.session {
                        Some(_) => seq_of(&d.inner.app_metadata).ok_or_else(|| {
                            Some(Status::invalid_argument(
                                "a session's batch without its number",
                            ))
                        })?,
                        None => count,
                    };
                    let p = tx.as_mut().ok_or_else(|| {
                        Some(Status::invalid_argument("a batch before the schema"))
                    })?;
                    if seq > last.seq + 1 {
                        // A session this server does not know (it
                        // restarted): its stream starts here.
                        *last = Taken {
                            seq: seq - 1,
                            rows_of_next: 0,
                        };
                    }
                    if seq > last.seq {
                        // Rows of it taken before the connection dropped.
                        let skip = if seq == last.seq + 1 {
                            last.rows_of_next
                        } else {
                            0
                        };
                        let rest = batch.slice(
                            skip.min(batch.num_rows()),
                            batch.num_rows() - skip.min(batch.num_rows()),
                        );
                        match put(p, &rest, ring, &gone) {
                            Ok(()) => {
                                *last = Taken {
                                    seq,
                                    rows_of_next: 0,
                                }
                            }
                            Err(partial) => {
                                if skip + partial.taken >= batch.num_rows() {
                                    *last = Taken {
                                        seq,
                                        rows_of_next: 0,
                                    };
                                } else {
                                    last.rows_of_next = skip + partial.taken;
                                }
                                return Err(if gone() { None } else { Some(partial.status) });
                            }
                        }
                    }
                    let ack = PutResult {
                        app_metadata: seq_bytes(seq),
                    };
                    if out.blocking_send(Ok(ack)).is_err() {
                        return Err(None);
                    }
                }
                DecodedPayload::None => {}
            }
        }
    }
}
