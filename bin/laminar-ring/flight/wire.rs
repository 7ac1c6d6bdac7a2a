//! What `serve`, `pull` and `push` share: encoding batches as Flight data,
//! sequence numbers, what a ticket or descriptor names, how an ending
//! travels, the bearer token, the connection to a server.

use std::path::Path;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_flight::{FlightData, FlightDescriptor};
use arrow_ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow_schema::Schema;
use bytes::Bytes;
use laminar_ring::arrow::{ArrowRingError, BatchProducer};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::error::{CliError, one_line};

/// The largest gRPC message either end takes or sends: one batch is one
/// message, and a ring's batch may be as large as its arena.
pub const MAX_MESSAGE: usize = 1 << 30;

/// HTTP/2 flow-control windows: gRPC's default of 64 KiB per stream makes
/// a megabyte batch wait for a dozen window updates, each a round trip.
pub const STREAM_WINDOW: u32 = 16 << 20;
pub const CONNECTION_WINDOW: u32 = 32 << 20;
/// HTTP/2 frames of up to 1 MiB (the default is 16 KiB).
pub const FRAME: u32 = (1 << 20) - 1;

/// HTTP/2 pings: a connection whose peer vanished without a word (a host
/// gone, a network cut without a reset) is found dead within
/// `KEEPALIVE + KEEPALIVE_TIMEOUT`, rather than waited on for ever.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The metadata key of a status that ends a stream for its producer.
pub const ENDING_KEY: &str = "x-laminar-ending";
/// `push` → server: the local stream ended cleanly.
pub const CLOSED: &[u8] = b"laminar-ring:closed";
/// `push` → server: the local producer died.
pub const DIED: &[u8] = b"laminar-ring:died";
/// `push` → server: the local producer failed; the reason follows.
pub const FAILED: &[u8] = b"laminar-ring:failed:";

/// A multi-threaded tokio runtime of two workers.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Flight(format!("cannot start the async runtime: {e}")))
}

/// A sequence number as `app_metadata`.
pub fn seq_bytes(seq: u64) -> Bytes {
    Bytes::copy_from_slice(&seq.to_le_bytes())
}

/// The sequence number an `app_metadata` carries, if it is one.
pub fn seq_of(meta: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(meta).ok().map(u64::from_le_bytes)
}

/// Encodes one stream's schema and batches as Flight data (dictionaries
/// as dictionary messages, replaced when a batch brings another).
pub struct Encoder {
    generator: IpcDataGenerator,
    tracker: DictionaryTracker,
    options: IpcWriteOptions,
    context: IpcWriteContext,
    /// The stream's schema, once it holds a dictionary anywhere.
    dictionaries: Option<Schema>,
}

impl Encoder {
    pub fn new() -> Self {
        Self {
            generator: IpcDataGenerator::default(),
            tracker: DictionaryTracker::new(false),
            options: IpcWriteOptions::default(),
            context: IpcWriteContext::default(),
            dictionaries: None,
        }
    }

    /// The schema message, naming `descriptor` if given.
    pub fn schema(&mut self, schema: &Schema, descriptor: Option<FlightDescriptor>) -> FlightData {
        // Through the tracker, which numbers the dictionary fields.
        let encoded = self.generator.schema_to_bytes_with_dictionary_tracker(
            schema,
            &mut self.tracker,
            &self.options,
        );
        if schema
            .fields()
            .iter()
            .any(|f| laminar_ring::arrow::has_dictionary(f.data_type()))
        {
            self.dictionaries = Some(schema.clone());
        }
        let mut data = FlightData::from(encoded);
        data.flight_descriptor = descriptor;
        data
    }

    /// The messages of `batch`: its dictionaries, then the batch itself,
    /// carrying `seq`.
    pub fn batch(&mut self, batch: &RecordBatch, seq: u64) -> Result<Vec<FlightData>, Status> {
        if let Some(schema) = &self.dictionaries {
            // The tracker keeps the last dictionary column it wrote, keys
            // and all: a zero-copy batch's keys are a lease on the ring,
            // and leases are released in order, so one kept lease would
            // hold back every later batch (and the batch itself, until
            // the next one comes, which may need its room). A tracker per
            // batch, dropped once the batch is encoded, keeps nothing
            // (each batch brings its dictionaries again); the schema
            // passes through it first to number them as the schema
            // message did (the numbering depends on the schema alone).
            self.tracker = DictionaryTracker::new(false);
            self.generator.schema_to_bytes_with_dictionary_tracker(
                schema,
                &mut self.tracker,
                &self.options,
            );
        }
        let (dicts, encoded) = self
            .generator
            .encode(batch, &mut self.tracker, &self.options, &mut self.context)
            .map_err(|e| Status::internal(format!("cannot encode a batch: {e}")))?;
        if self.dictionaries.is_some() {
            // Let go of the column it just kept, this batch's lease.
            self.tracker = DictionaryTracker::new(false);
        }
        let mut out: Vec<FlightData> = dicts.into_iter().map(FlightData::from).collect();
        out.push(FlightData::from(encoded).with_app_metadata(seq_bytes(seq)));
        Ok(out)
    }
}

/// What a ticket or descriptor asks for: a ring, and the name to read it
/// under.
#[derive(Debug, Clone)]
pub struct Target {
    pub ring: String,
    pub subscriber: Option<String>,
    /// `push`'s session (descriptor `session=ID`).
    pub session: Option<String>,
}

impl Target {
    /// A ticket: the ring's name, or `NAME` and a subscriber joined by a
    /// newline (ring names may hold any other character but '/').
    pub fn from_ticket(ticket: &[u8]) -> Result<Self, Status> {
        let text = std::str::from_utf8(ticket).map_err(|_| {
            Status::invalid_argument("the ticket is not UTF-8 text (a ring's name)")
        })?;
        let mut parts = text.splitn(2, '\n');
        let ring = parts.next().unwrap_or_default().to_owned();
        let subscriber = parts.next().map(str::to_owned);
        Self::checked(ring, subscriber, None)
    }

    /// A path descriptor: `[NAME]`, `[NAME, SUBSCRIBER]` or `[NAME,
    /// session=ID]`.
    pub fn from_descriptor(d: Option<&FlightDescriptor>) -> Result<Self, Status> {
        let Some(d) = d else {
            return Err(Status::invalid_argument(
                "no flight descriptor: give a path descriptor whose first element is the \
                 ring's name",
            ));
        };
        let (Some(ring), true) = (d.path.first(), d.path.len() <= 2) else {
            return Err(Status::invalid_argument(
                "a path descriptor of one or two elements is expected: the ring's name, \
                 then a subscriber's name or session=ID",
            ));
        };
        match d.path.get(1).map(String::as_str) {
            Some(s) if s.starts_with("session=") => {
                Self::checked(ring.clone(), None, Some(s["session=".len()..].to_owned()))
            }
            other => Self::checked(ring.clone(), other.map(str::to_owned), None),
        }
    }

    fn checked(
        ring: String,
        subscriber: Option<String>,
        session: Option<String>,
    ) -> Result<Self, Status> {
        laminar_ring::shm::check_stream_name(&ring)
            .map_err(|e| Status::invalid_argument(one_line(&e)))?;
        if let Some(s) = &subscriber {
            laminar_ring::shm::validate_subscriber(s)
                .map_err(|e| Status::invalid_argument(one_line(&e)))?;
        }
        Ok(Self {
            ring,
            subscriber,
            session,
        })
    }
}

/// How a stream ended, as the server's status says it.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    Died,
    Failed(String),
}

/// The status that ends a stream with `ending`.
pub fn ending_status(ring: &str, ending: &Ending) -> Status {
    let (mut status, tag) = match ending {
        Ending::Died => (
            Status::aborted(format!(
                "the producer of ring '{ring}' died; every batch it committed was sent"
            )),
            "died",
        ),
        Ending::Failed(reason) => (Status::aborted(reason.clone()), "failed"),
    };
    status
        .metadata_mut()
        .insert(ENDING_KEY, MetadataValue::from_static(tag));
    status
}

/// The ending a status carries, if it is one of ours.
pub fn ending_of(status: &Status) -> Option<Ending> {
    if status.code() != Code::Aborted {
        return None;
    }
    match status.metadata().get(ENDING_KEY)?.to_str().ok()? {
        "died" => Some(Ending::Died),
        "failed" => Some(Ending::Failed(status.message().to_owned())),
        _ => None,
    }
}

/// The token in `path` (surrounding white space removed).
pub fn read_token(path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::Flight(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(CliError::Flight(format!(
            "the token file {} is empty",
            path.display()
        )));
    }
    Ok(token)
}

/// Compares without an early exit, so that the time taken tells nothing of
/// where a guess went wrong.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A Flight location (`grpc://host:port`, `grpc+tcp://…`, `grpc+tls://…`)
/// as a channel endpoint; TLS for `grpc+tls`, trusting `ca` (PEM) if given
/// and the system's roots otherwise.
pub fn endpoint(url: &str, ca: Option<&Path>) -> Result<Endpoint, CliError> {
    let bad = |why: &str| CliError::Flight(format!("{url}: {why}"));
    let (tls, rest) = if let Some(rest) = url.strip_prefix("grpc+tls://") {
        (true, rest)
    } else if let Some(rest) = url
        .strip_prefix("grpc://")
        .or_else(|| url.strip_prefix("grpc+tcp://"))
    {
        (false, rest)
    } else {
        return Err(bad(
            "not a Flight location: grpc://HOST:PORT, grpc+tcp://HOST:PORT or \
             grpc+tls://HOST:PORT is expected",
        ));
    };
    if rest.is_empty() || rest.contains('/') {
        return Err(bad("HOST:PORT is expected after the scheme"));
    }
    let scheme = if tls { "https" } else { "http" };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{rest}"))
        .map_err(|e| bad(&e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(FRAME)
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if tls {
        let mut config = ClientTlsConfig::new();
        config = match ca {
            Some(ca) => {
                let pem = std::fs::read(ca)
                    .map_err(|e| CliError::Flight(format!("cannot read {}: {e}", ca.display())))?;
                config.ca_certificate(Certificate::from_pem(pem))
            }
            None => config.with_enabled_roots(),
        };
        ep = ep
            .tls_config(config)
            .map_err(|e| bad(&format!("TLS: {e}")))?;
    } else if ca.is_some() {
        return Err(bad("--tls-ca needs a grpc+tls:// location"));
    }
    Ok(ep)
}

/// A connected Flight client that sends the bearer token with each call.
pub type Client = arrow_flight::flight_service_client::FlightServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, Bearer>,
>;

/// Adds `authorization: Bearer TOKEN` to each call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Result<Self, CliError> {
        token
            .map(|t| {
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| CliError::Flight("the token is not printable ASCII".into()))
            })
            .transpose()
            .map(Self)
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Connects to `endpoint`.
pub async fn connect(endpoint: &Endpoint, bearer: &Bearer) -> Result<Client, Status> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("cannot connect: {}", one_line(&e))))?;
    Ok(
        arrow_flight::flight_service_client::FlightServiceClient::with_interceptor(
            channel,
            bearer.clone(),
        )
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE),
    )
}

/// Whether a call that failed with `status` may succeed if made again (the
/// connection or the server went away), rather than being refused.
pub fn retriable(status: &Status) -> bool {
    // A certificate that is not trusted stays so.
    let permanent = status.message().contains("certificate");
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::Internal
            | Code::DeadlineExceeded
    ) && ending_of(status).is_none()
        && !permanent
}

/// A Flight location, checked as [`endpoint`] reads it (for clap).
pub fn parse_location(url: &str) -> Result<String, String> {
    let rest = ["grpc://", "grpc+tcp://", "grpc+tls://"]
        .iter()
        .find_map(|p| url.strip_prefix(p))
        .ok_or_else(|| {
            "not a Flight location: grpc://HOST:PORT, grpc+tcp://HOST:PORT or \
             grpc+tls://HOST:PORT is expected"
                .to_owned()
        })?;
    if rest.is_empty() || rest.contains('/') {
        return Err("HOST:PORT is expected after the scheme".into());
    }
    Ok(url.to_owned())
}

/// How long a wait for the ring, for an acknowledgement or for room lasts
/// before looking again whether the other end is still there.
pub const STEP: Duration = Duration::from_millis(100);

/// A [`put`] that stopped short: how many of the batch's first rows the
/// producer took (in the ring, or pending in the producer, which sends them
/// first on its next send), and why it stopped.
pub struct Partial {
    pub taken: usize,
    pub status: Status,
}

/// Sends `batch` into the ring and waits until it is there (halving it
/// while one message would not fit the arena); waits for room and for a
/// consumer as long as `gone` says the other end is there.
pub fn put(
    tx: &mut BatchProducer,
    batch: &RecordBatch,
    ring: &str,
    gone: &dyn Fn() -> bool,
) -> Result<(), Partial> {
    let lost = |taken| Partial {
        taken,
        status: Status::cancelled("the client went away"),
    };
    let failed = |taken, e: ArrowRingError| Partial {
        taken,
        status: Status::failed_precondition(format!("ring '{ring}': {}", one_line(&e))),
    };
    let rows = batch.num_rows();
    loop {
        match tx.send_timeout(batch, STEP) {
            Ok(()) => break,
            Err(ArrowRingError::BatchTooLarge { .. }) if rows > 1 => {
                let half = rows / 2;
                put(tx, &batch.slice(0, half), ring, gone)?;
                return put(tx, &batch.slice(half, rows - half), ring, gone).map_err(|p| Partial {
                    taken: half + p.taken,
                    status: p.status,
                });
            }
            // Not taken (`send_timeout`'s contract).
            Err(ArrowRingError::Timeout | ArrowRingError::ConsumerGone) if !gone() => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(ArrowRingError::Timeout | ArrowRingError::ConsumerGone) => return Err(lost(0)),
            Err(e) => return Err(failed(0, e)),
        }
    }
    // Taken: the rows count as sent from here on, whatever the flush says.
    loop {
        match tx.flush(STEP) {
            Ok(true) => return Ok(()),
            Ok(false) | Err(ArrowRingError::ConsumerGone) if !gone() => {}
            Ok(false) | Err(ArrowRingError::ConsumerGone) => return Err(lost(rows)),
            Err(e) => return Err(failed(rows, e)),
        }
    }
}
