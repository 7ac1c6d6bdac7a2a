//! `flight serve`: a Flight server in front of the rings of a directory.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
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
use arrow_schema::Schema;
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
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051")]
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
    let rt = wire::runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| CliError::Flight(format!("cannot listen on {}: {e}", args.listen)))?;
        let local = listener
            .local_addr()
            .map_err(|e| CliError::Flight(format!("cannot listen on {}: {e}", args.listen)))?;
        let mut builder = Server::builder()
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
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn stopped() {
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

/// A `push` session's producer: busy with a call, or waiting for its
/// client to reconnect since `since`.
enum Session {
    Busy,
    Parked {
        tx: Box<BatchProducer>,
        last_seq: u64,
        since: Instant,
    },
}

type Sessions = Arc<Mutex<HashMap<String, Session>>>;

/// Ends the streams of parked sessions whose client did not come back in
/// time: their producers are abandoned (a dead producer's ending).
async fn expire_sessions(sessions: Sessions, grace: Duration) {
    let mut tick =
        tokio::time::interval(Duration::from_secs(1).min(grace.max(Duration::from_millis(50))));
    loop {
        tick.tick().await;
        let expired: Vec<Session> = {
            let mut map = sessions.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<String> = map
                .iter()
                .filter(
                    |(_, s)| matches!(s, Session::Parked { since, .. } if since.elapsed() >= grace),
                )
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| map.remove(k)).collect()
        };
        // Outside the lock: detaching from the ring takes a moment.
        for s in expired {
            if let Session::Parked { tx, .. } = s {
                tx.abandon();
            }
        }
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
fn open_status(ring: &str, e: &ArrowRingError) -> Status {
    let text = format!("ring '{ring}': {}", one_line(e));
    match e {
        ArrowRingError::Open(OpenError::NotFound { .. }) => {
            Status::not_found(format!("no ring '{ring}' on this server"))
        }
        ArrowRingError::Open(OpenError::RoleTaken { .. }) => Status::already_exists(text),
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

    /// The Flight description of the ring `name`.
    fn describe(segment: &shm::SegmentOptions, name: &str) -> Result<FlightInfo, Status> {
        let info = shm::inspect(name, segment).map_err(|e| match e {
            OpenError::NotFound { .. } => {
                Status::not_found(format!("no ring '{name}' on this server"))
            }
            e => Status::failed_precondition(format!("ring '{name}': {}", one_line(&e))),
        })?;
        if info.layout.kind != RingKind::Arrow {
            return Err(Status::failed_precondition(format!(
                "ring '{name}' is a typed ring, not an Arrow one"
            )));
        }
        let schema = laminar_ring::arrow::stream_schema(name, segment)
            .map_err(|e| Status::failed_precondition(format!("ring '{name}': {}", one_line(&e))))?
            .unwrap_or_else(|| Arc::new(Schema::empty()));
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
        blocking(move || BatchFanIn::open(&ring, &opts).map_err(|e| open_status(&ring, &e))).await
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
            shm::inspect(&ring, &segment).map_err(|e| match e {
                OpenError::NotFound { .. } => {
                    Status::not_found(format!("no ring '{ring}' on this server"))
                }
                e => Status::failed_precondition(format!("ring '{ring}': {}", one_line(&e))),
            })?;
            laminar_ring::arrow::stream_schema(&ring, &segment)
                .map_err(|e| {
                    Status::failed_precondition(format!("ring '{ring}': {}", one_line(&e)))
                })?
                .ok_or_else(|| {
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
        let (acks_tx, acks) = std::sync::mpsc::channel();
        tokio::spawn(async move {
            // Ends (dropping `acks_tx`) when the client's side ends or breaks.
            while let Ok(Some(m)) = incoming.message().await {
                if let Some(seq) = seq_of(&m.app_metadata)
                    && acks_tx.send(seq).is_err()
                {
                    break;
                }
            }
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

/// Streams the ring `rx` reads to `out` until its stream ends or the
/// client goes. With `acks`, a batch is kept (leased, so in the ring)
/// until the client acknowledges it, and a client that goes leaves what
/// it did not acknowledge to the subscription's next reader; without, a
/// batch is released once its messages are handed to the connection.
fn send_ring(
    mut rx: BatchFanIn,
    ring: &str,
    out: &mpsc::Sender<Result<FlightData, Status>>,
    acks: Option<&std::sync::mpsc::Receiver<u64>>,
) {
    let mut enc = Encoder::new();
    let mut schema_sent = false;
    let mut seq = 0u64;
    let mut held: VecDeque<(u64, RecordBatch)> = VecDeque::new();
    // A lane among several whose producer died or failed: reported at the
    // end, after every other lane's batches.
    let mut lane_ending: Option<Ending> = None;
    // Takes the acknowledgements that came (waiting up to `wait` for one);
    // false once the client is gone.
    let take_acks = |held: &mut VecDeque<(u64, RecordBatch)>, wait: Option<Duration>| -> bool {
        let Some(acks) = acks else {
            return !out.is_closed();
        };
        let mut next = match wait {
            Some(w) => acks
                .recv_timeout(w)
                .map_err(|e| matches!(e, RecvTimeoutError::Disconnected)),
            None => acks
                .try_recv()
                .map_err(|e| matches!(e, TryRecvError::Disconnected)),
        };
        loop {
            match next {
                Ok(a) => {
                    while held.front().is_some_and(|(s, _)| *s <= a) {
                        held.pop_front();
                    }
                }
                Err(gone) => return !gone && !out.is_closed(),
            }
            next = acks
                .try_recv()
                .map_err(|e| matches!(e, TryRecvError::Disconnected));
        }
    };
    let ending: Result<Option<Ending>, Status> = loop {
        if !take_acks(&mut held, None) {
            // Gone: what it did not acknowledge stays leased through the
            // detach, so the subscription's next reader receives it.
            rx.detach();
            return;
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
                if acks.is_some() {
                    held.push_back((seq, batch.into_inner()));
                }
                for m in messages {
                    if out.blocking_send(Ok(m)).is_err() {
                        rx.detach();
                        return;
                    }
                }
            }
            Ok(None) => break Ok(lane_ending.take()),
            Err(BatchFanInError::Timeout) => {}
            Err(BatchFanInError::Lane { error, .. }) => match error {
                ArrowRingError::TooManyLeases { .. } => {
                    if !take_acks(&mut held, Some(STEP)) {
                        rx.detach();
                        return;
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
    // The client acknowledges the last batches before the stream ends.
    while !held.is_empty() {
        if !take_acks(&mut held, Some(STEP)) {
            rx.detach();
            return;
        }
    }
    match ending {
        Ok(None) => {}
        Ok(Some(e)) => drop(out.blocking_send(Err(ending_status(ring, &e)))),
        Err(s) => drop(out.blocking_send(Err(s))),
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

impl Put {
    fn session_key(&self) -> Option<String> {
        self.target
            .session
            .as_ref()
            .map(|s| format!("{}\n{s}", self.target.ring))
    }

    /// The producer and the last sequence number of a session that lost its
    /// connection, once its previous call has let go of it (waiting up to
    /// the grace time for that); marks the session busy.
    fn resume(&self) -> Option<(BatchProducer, u64)> {
        let key = self.session_key()?;
        let deadline = Instant::now() + self.grace;
        loop {
            {
                let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
                match map.remove(&key) {
                    Some(Session::Parked { tx, last_seq, .. }) => {
                        map.insert(key, Session::Busy);
                        return Some((*tx, last_seq));
                    }
                    Some(Session::Busy) if Instant::now() < deadline => {
                        map.insert(key.clone(), Session::Busy);
                    }
                    _ => {
                        map.insert(key, Session::Busy);
                        return None;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Leaves the session: parks the producer for the client's return, or
    /// forgets the session.
    fn leave(&self, park: Option<(BatchProducer, u64)>) {
        let Some(key) = self.session_key() else {
            // No session to come back to: ends as a dead producer's.
            if let Some((tx, _)) = park {
                tx.abandon();
            }
            return;
        };
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match park {
            Some((tx, last_seq)) => {
                map.insert(
                    key,
                    Session::Parked {
                        tx: Box::new(tx),
                        last_seq,
                        since: Instant::now(),
                    },
                );
            }
            None => {
                map.remove(&key);
            }
        }
    }

    fn run(
        self,
        mut decoder: FlightDataDecoder,
        control: &Mutex<Option<Vec<u8>>>,
        out: &mpsc::Sender<Result<PutResult, Status>>,
    ) {
        let ring = self.target.ring.clone();
        let (mut tx, mut last_seq) = match self.resume() {
            Some((tx, s)) => (Some(tx), s),
            None => (None, 0),
        };
        let mut count = 0u64;
        let gone = || out.is_closed();
        let refuse = |tx: Option<BatchProducer>, status: Status| {
            if let Some(tx) = tx {
                tx.fail(&status.message().chars().take(200).collect::<String>());
            }
            drop(out.blocking_send(Err(status)));
        };
        loop {
            let next = self.handle.block_on(decoder.next());
            match next {
                Some(Ok(d)) => {
                    let seq = seq_of(&d.inner.app_metadata);
                    match d.payload {
                        DecodedPayload::Schema(schema) => {
                            if tx.is_none() {
                                match rings::producer(&ring, &self.opts, &self.geometry, &schema) {
                                    Ok(p) => tx = Some(p),
                                    Err(e) => {
                                        self.leave(None);
                                        return refuse(
                                            None,
                                            Status::failed_precondition(one_line(&e)),
                                        );
                                    }
                                }
                            }
                        }
                        DecodedPayload::RecordBatch(batch) => {
                            count += 1;
                            let seq = seq.unwrap_or(count);
                            let Some(p) = tx.as_mut() else {
                                self.leave(None);
                                return refuse(
                                    None,
                                    Status::invalid_argument("a batch before the schema"),
                                );
                            };
                            if seq > last_seq {
                                match put(p, &batch, &ring, &gone) {
                                    Ok(()) => last_seq = seq,
                                    Err(status) if gone() => {
                                        drop(status);
                                        let tx = tx.take().map(|t| (t, last_seq));
                                        return self.leave(tx);
                                    }
                                    Err(status) => {
                                        self.leave(None);
                                        return refuse(tx, status);
                                    }
                                }
                            }
                            let ack = PutResult {
                                app_metadata: seq_bytes(seq),
                            };
                            if out.blocking_send(Ok(ack)).is_err() {
                                let tx = tx.take().map(|t| (t, last_seq));
                                return self.leave(tx);
                            }
                        }
                        DecodedPayload::None => {}
                    }
                }
                Some(Err(FlightError::Tonic(_))) => {
                    // The connection broke: a session's producer waits for
                    // its client; any other ends as a dead producer's.
                    let tx = tx.take().map(|t| (t, last_seq));
                    return self.leave(tx);
                }
                Some(Err(e)) => {
                    self.leave(None);
                    return refuse(
                        tx,
                        Status::invalid_argument(format!("bad Flight data: {e}")),
                    );
                }
                None => break,
            }
        }
        self.leave(None);
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
                    errln!(
                        "laminar-ring: ring '{ring}': cannot close the stream: {}",
                        one_line(&e)
                    );
                }
            }
        }
    }
}
