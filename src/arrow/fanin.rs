//! Fan-in of Arrow streams: the consuming end of a stream that several
//! [`BatchProducer::join`](super::BatchProducer::join)s write, one lane
//! each (see [`shm::ShmFanIn`](crate::shm::ShmFanIn) for the lanes).

use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::{ArrowRingError, ArrowRingOptions, BatchConsumer, LeasedBatch};
use crate::shm::{DEFAULT_BURST, MAX_LANES, OpenError, lane_name};

/// How often a [`BatchFanIn`] looks for lanes it does not know yet.
const SCAN_INTERVAL: Duration = Duration::from_millis(5);

/// Why a [`BatchFanIn`] returned no batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchFanInError {
    /// Nothing came before the deadline.
    #[error("timed out")]
    Timeout,
    /// Lane `lane` reports `error`: its producer died (`PeerGone`) or
    /// failed (`ProducerFailed`) after every batch it committed was
    /// delivered, or its data is bad. Reported once for an end; the other
    /// lanes go on. A lane whose stream has another schema than the
    /// stream's (`SchemaMismatch`) is reported once and then left alone.
    #[error("lane {lane}: {error}")]
    Lane {
        /// The lane: the producer's id ([`BatchProducer::lane`](super::BatchProducer::lane)).
        lane: u32,
        /// What it reported.
        #[source]
        error: ArrowRingError,
    },
}

/// One lane a [`BatchFanIn`] knows of. At most [`MAX_LANES`] of them: the
/// consumer is kept inline.
#[allow(clippy::large_enum_variant)]
enum Lane {
    Unknown,
    Open { rx: BatchConsumer, ended: bool },
    Refused,
}

/// Receives the batches of every producer of an Arrow stream
/// ([`BatchProducer::join`](super::BatchProducer::join)), each producer's
/// in the order it sent them, lanes interleaved round robin (at most
/// [`set_burst`](Self::set_burst) batches from one lane in a row while
/// another has some). Every lane must carry the schema of the first batch
/// received.
pub struct BatchFanIn {
    stream: String,
    opts: ArrowRingOptions,
    lanes: Vec<Lane>,
    next: usize,
    burst: u32,
    max_burst: u32,
    linger: Option<Duration>,
    ended_since: Option<Instant>,
    last_scan: Instant,
    schema: Option<SchemaRef>,
}

impl std::fmt::Debug for BatchFanIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchFanIn")
            .field("stream", &self.stream)
            .field("lanes", &self.lanes())
            .finish_non_exhaustive()
    }
}

impl BatchFanIn {
    /// Attaches to the Arrow stream `name`: to its lane 0, which must
    /// exist, and to the other lanes as they are found.
    ///
    /// # Errors
    ///
    /// As [`BatchConsumer::open`] for lane 0 or another lane found now.
    pub fn open(name: &str, opts: &ArrowRingOptions) -> Result<Self, ArrowRingError> {
        let first = BatchConsumer::open(name, opts)?;
        Self::with_first(name, opts, first)
    }

    /// Creates the stream's lane 0 and attaches to it, so that producers
    /// may join after the consumer started.
    ///
    /// # Errors
    ///
    /// As [`BatchConsumer::create`].
    pub fn create(name: &str, opts: &ArrowRingOptions) -> Result<Self, ArrowRingError> {
        let first = BatchConsumer::create(name, opts)?;
        Self::with_first(name, opts, first)
    }

    fn with_first(
        name: &str,
        opts: &ArrowRingOptions,
        first: BatchConsumer,
    ) -> Result<Self, ArrowRingError> {
        let mut scan_opts = opts.clone();
        scan_opts.segment.ready_timeout = Duration::ZERO;
        let mut fan = Self {
            stream: name.to_owned(),
            opts: scan_opts,
            lanes: vec![Lane::Open {
                rx: first,
                ended: false,
            }],
            next: 0,
            burst: 0,
            max_burst: DEFAULT_BURST,
            linger: Some(Duration::ZERO),
            ended_since: None,
            last_scan: Instant::now(),
            schema: None,
        };
        match fan.scan() {
            Some(BatchFanInError::Lane { error, .. }) => Err(error),
            _ => Ok(fan),
        }
    }

    /// Batches taken from one lane in a row while others have some
    /// (default [`DEFAULT_BURST`]; at least 1).
    pub fn set_burst(&mut self, burst: u32) {
        self.max_burst = burst.max(1);
    }

    /// How long the stream stays open once every lane has ended (default
    /// zero); `None`: it never ends. See
    /// [`ShmFanIn::set_linger`](crate::shm::ShmFanIn::set_linger).
    pub fn set_linger(&mut self, linger: Option<Duration>) {
        self.linger = linger;
    }

    /// Lanes attached to so far.
    pub fn lanes(&self) -> usize {
        self.lanes
            .iter()
            .filter(|l| matches!(l, Lane::Open { .. }))
            .count()
    }

    /// The stream's schema, once a batch has been received.
    pub fn schema(&self) -> Option<&SchemaRef> {
        self.schema.as_ref()
    }

    /// The next batch, copied out of the ring, and the lane it came from;
    /// `Ok(None)` at the end of the stream. Waits at most `timeout`
    /// (`None`: no deadline).
    ///
    /// # Errors
    ///
    /// See [`BatchFanInError`].
    pub fn recv_lane(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<(u32, RecordBatch)>, BatchFanInError> {
        Ok(self
            .recv_inner(timeout, false)?
            .map(|(lane, b)| (lane, b.into_inner())))
    }

    /// [`recv_lane`](Self::recv_lane) without copying: the batch's buffers
    /// point into the lane's mapping (see
    /// [`BatchConsumer::recv_zero_copy`]).
    ///
    /// # Errors
    ///
    /// As [`recv_lane`](Self::recv_lane).
    pub fn recv_lane_zero_copy(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<(u32, LeasedBatch)>, BatchFanInError> {
        self.recv_inner(timeout, true)
    }

    /// The next batch, copied out; `Ok(None)` at the end of the stream.
    ///
    /// # Errors
    ///
    /// As [`recv_lane`](Self::recv_lane), never `Timeout`.
    pub fn recv(&mut self) -> Result<Option<RecordBatch>, BatchFanInError> {
        Ok(self.recv_lane(None)?.map(|(_, b)| b))
    }

    fn recv_inner(
        &mut self,
        timeout: Option<Duration>,
        zero_copy: bool,
    ) -> Result<Option<(u32, LeasedBatch)>, BatchFanInError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut nap = Duration::from_micros(20);
        let mut spins = 0;
        loop {
            if let Some(got) = self.poll(zero_copy)? {
                return Ok(got);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(BatchFanInError::Timeout);
            }
            if spins < 100 {
                spins += 1;
                std::thread::yield_now();
            } else {
                let nap_for = deadline.map_or(nap, |d| {
                    nap.min(d.saturating_duration_since(Instant::now()))
                });
                std::thread::sleep(nap_for);
                nap = (nap * 2).min(Duration::from_millis(1));
            }
        }
    }

    /// One look at every lane: `Some(Some(batch))`, `Some(None)` at the end
    /// of the stream, `None` when nothing is ready.
    #[allow(clippy::type_complexity)]
    fn poll(
        &mut self,
        zero_copy: bool,
    ) -> Result<Option<Option<(u32, LeasedBatch)>>, BatchFanInError> {
        if self.last_scan.elapsed() >= SCAN_INTERVAL
            && let Some(e) = self.scan()
        {
            return Err(e);
        }
        let n = self.lanes.len();
        let mut all_ended = true;
        for k in 0..n {
            let i = (self.next + k) % n;
            let Lane::Open { rx, ended } = &mut self.lanes[i] else {
                if matches!(self.lanes[i], Lane::Unknown) {
                    all_ended = false;
                }
                continue;
            };
            let got = if zero_copy {
                rx.recv_zero_copy_timeout(Duration::ZERO)
            } else {
                rx.recv_timeout(Duration::ZERO)
                    .map(|b| b.map(|batch| LeasedBatch { batch }))
            };
            let lane = i as u32;
            match got {
                Ok(Some(batch)) => {
                    *ended = false;
                    if self.schema.is_none() {
                        let schema = batch.schema();
                        for l in &mut self.lanes {
                            if let Lane::Open { rx, .. } = l {
                                rx.expect_schema(schema.clone());
                            }
                        }
                        self.schema = Some(schema);
                    }
                    if k != 0 {
                        self.next = i;
                        self.burst = 0;
                    }
                    self.burst += 1;
                    if self.burst >= self.max_burst {
                        self.next = (i + 1) % n;
                        self.burst = 0;
                    }
                    self.ended_since = None;
                    return Ok(Some(Some((lane, batch))));
                }
                Ok(None) => *ended = true,
                Err(ArrowRingError::Timeout) => {
                    *ended = rx.between_sessions();
                    all_ended &= *ended;
                }
                Err(error @ (ArrowRingError::PeerGone | ArrowRingError::ProducerFailed { .. })) => {
                    *ended = true;
                    return Err(BatchFanInError::Lane { lane, error });
                }
                Err(error @ ArrowRingError::SchemaMismatch { .. }) => {
                    self.lanes[i] = Lane::Refused;
                    return Err(BatchFanInError::Lane { lane, error });
                }
                Err(error) => return Err(BatchFanInError::Lane { lane, error }),
            }
        }
        if !all_ended {
            self.ended_since = None;
            return Ok(None);
        }
        let Some(linger) = self.linger else {
            return Ok(None);
        };
        let now = Instant::now();
        let since = *self.ended_since.get_or_insert(now);
        if now.duration_since(since) < linger {
            return Ok(None);
        }
        if let Some(e) = self.scan() {
            return Err(e);
        }
        if self.lanes.len() > n || self.lanes.iter().any(|l| matches!(l, Lane::Unknown)) {
            return Ok(None);
        }
        Ok(Some(None))
    }

    /// Attaches to the lanes not attached yet, up to the first that does
    /// not exist; returns the first one refused (reported once).
    fn scan(&mut self) -> Option<BatchFanInError> {
        self.last_scan = Instant::now();
        let mut refused = None;
        for lane in 0..MAX_LANES {
            let i = lane as usize;
            if i < self.lanes.len() && !matches!(self.lanes[i], Lane::Unknown) {
                continue;
            }
            let state = match BatchConsumer::open(&lane_name(&self.stream, lane), &self.opts) {
                Ok(mut rx) => {
                    if let Some(schema) = &self.schema {
                        rx.expect_schema(schema.clone());
                    }
                    Lane::Open { rx, ended: false }
                }
                Err(ArrowRingError::Open(OpenError::NotFound { .. })) => break,
                Err(ArrowRingError::Open(
                    OpenError::NotReady { .. } | OpenError::Removed { .. },
                )) => Lane::Unknown,
                Err(error) => {
                    if refused.is_none() {
                        refused = Some(BatchFanInError::Lane { lane, error });
                    }
                    Lane::Refused
                }
            };
            if i < self.lanes.len() {
                self.lanes[i] = state;
            } else {
                self.lanes.push(state);
            }
        }
        refused
    }
}
