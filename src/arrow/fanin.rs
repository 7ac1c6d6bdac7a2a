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

/// How often a scan looks past a missing lane, at every lane number (a
/// lane may have been removed while later ones live on).
const FULL_SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// The longest a [`BatchFanIn`] of one lane waits in it before it looks
/// for new lanes.
const LONE_SLICE: Duration = Duration::from_millis(50);

/// Why a [`BatchFanIn`] returned no batch. (Not `non_exhaustive`: what a
/// lane says is an [`ArrowRingError`], which is.)
#[derive(Debug, thiserror::Error)]
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
    /// Exists, not ready when last looked at.
    Unknown,
    Open {
        rx: BatchConsumer,
        ended: bool,
    },
    /// Refused when opened (reported once).
    Refused,
    /// No such lane, while a later one exists: looked for again at each
    /// scan; holds nothing back.
    Missing,
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
    last_full_scan: Instant,
    schema: Option<SchemaRef>,
    /// A batch or an end has come from some lane since attaching: from
    /// then on, a lane whose stream was over before this consumer came
    /// (nothing to read, no producer) counts as ended. Before, such lanes
    /// wait for a producer, as a [`BatchConsumer`] on an ended ring does.
    seen_any: bool,
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
            last_full_scan: Instant::now(),
            schema: None,
            seen_any: false,
        };
        match fan.scan(true) {
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

    /// Requires every lane's stream to have `schema` (as
    /// [`BatchConsumer::expect_schema`]); without it, the first batch
    /// received sets the schema for every lane.
    pub fn expect_schema(&mut self, schema: SchemaRef) {
        for l in &mut self.lanes {
            if let Lane::Open { rx, .. } = l {
                rx.expect_schema(schema.clone());
            }
        }
        self.schema = Some(schema);
    }

    /// Messages read and not yet released, over every lane.
    pub fn outstanding(&self) -> usize {
        self.open_lanes().map(|rx| rx.outstanding()).sum()
    }

    /// Whether the stream was created temporary (its lane 0).
    pub fn is_temporary(&self) -> bool {
        self.open_lanes().next().is_some_and(|rx| rx.is_temporary())
    }

    /// Whether a producer is attached to some lane now (a look at each
    /// lane's producer lock).
    pub fn producer_attached(&self) -> bool {
        self.open_lanes()
            .any(super::BatchConsumer::producer_attached_now)
    }

    /// Detaches from every lane as [`BatchConsumer::detach`] does: what was
    /// read and is still leased stays in its lane for the next consumer.
    pub fn detach(self) {
        for l in self.lanes {
            if let Lane::Open { rx, .. } = l {
                rx.detach();
            }
        }
    }

    /// Removes every lane's file, as [`BatchConsumer::remove_if_unused`]
    /// does for one, from the last lane down to lane 0; stops at the first
    /// lane that is in use (or was sent to meanwhile), so that the lanes
    /// left are still numbered from 0 without a gap.
    ///
    /// # Errors
    ///
    /// As [`BatchConsumer::remove_if_unused`], for the lane that stopped it.
    pub fn remove_if_unused(&mut self) -> Result<(), ArrowRingError> {
        for l in self.lanes.iter_mut().rev() {
            if let Lane::Open { rx, .. } = l {
                match rx.remove_if_unused() {
                    Ok(()) | Err(ArrowRingError::Open(OpenError::NotFound { .. })) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn open_lanes(&self) -> impl Iterator<Item = &BatchConsumer> {
        self.lanes.iter().filter_map(|l| match l {
            Lane::Open { rx, .. } => Some(rx),
            _ => None,
        })
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
            // A stream of one lane waits in that lane (asleep on its futex,
            // woken by its producer), a slice at a time, so that new lanes
            // are still found; several lanes are polled in turn.
            let lone = self.lanes.len() == 1;
            let wait = if lone {
                deadline.map_or(LONE_SLICE, |d| {
                    LONE_SLICE.min(d.saturating_duration_since(Instant::now()))
                })
            } else {
                Duration::ZERO
            };
            if let Some(got) = self.poll(zero_copy, wait)? {
                return Ok(got);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(BatchFanInError::Timeout);
            }
            if lone {
                continue;
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

    /// One look at every lane (waiting up to `wait` in each):
    /// `Some(Some(batch))`, `Some(None)` at the end of the stream, `None`
    /// when nothing is ready.
    #[allow(clippy::type_complexity)]
    fn poll(
        &mut self,
        zero_copy: bool,
        wait: Duration,
    ) -> Result<Option<Option<(u32, LeasedBatch)>>, BatchFanInError> {
        if self.last_scan.elapsed() >= SCAN_INTERVAL
            && let Some(e) = self.scan(self.last_full_scan.elapsed() >= FULL_SCAN_INTERVAL)
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
                rx.recv_zero_copy_timeout(wait)
            } else {
                rx.recv_timeout(wait)
                    .map(|b| b.map(|batch| LeasedBatch { batch }))
            };
            let lane = i as u32;
            match got {
                Ok(Some(batch)) => {
                    *ended = false;
                    self.seen_any = true;
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
                Ok(None) => {
                    *ended = true;
                    self.seen_any = true;
                }
                Err(ArrowRingError::Timeout) => {
                    *ended = rx.between_sessions();
                    all_ended &= *ended;
                }
                Err(error @ (ArrowRingError::PeerGone | ArrowRingError::ProducerFailed { .. })) => {
                    *ended = true;
                    self.seen_any = true;
                    self.next = (i + 1) % n;
                    self.burst = 0;
                    return Err(BatchFanInError::Lane { lane, error });
                }
                Err(error @ ArrowRingError::SchemaMismatch { .. }) => {
                    self.lanes[i] = Lane::Refused;
                    return Err(BatchFanInError::Lane { lane, error });
                }
                Err(error) => return Err(BatchFanInError::Lane { lane, error }),
            }
        }
        if !all_ended || !self.seen_any {
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
        let found = self.found();
        if let Some(e) = self.scan(true) {
            return Err(e);
        }
        if self.found() > found || self.lanes.iter().any(|l| matches!(l, Lane::Unknown)) {
            return Ok(None);
        }
        Ok(Some(None))
    }

    /// Attaches to the lanes not attached yet, up to the first that does
    /// not exist; returns the first one refused (reported once).
    fn scan(&mut self, full: bool) -> Option<BatchFanInError> {
        self.last_scan = Instant::now();
        if full {
            self.last_full_scan = self.last_scan;
        }
        let mut refused = None;
        for lane in 0..MAX_LANES {
            let i = lane as usize;
            if i < self.lanes.len() && !matches!(self.lanes[i], Lane::Unknown | Lane::Missing) {
                continue;
            }
            let name = lane_name(&self.stream, lane);
            let state = match BatchConsumer::open(&name, &self.opts) {
                Ok(mut rx) => {
                    if let Some(schema) = &self.schema {
                        rx.expect_schema(schema.clone());
                    }
                    Lane::Open { rx, ended: false }
                }
                Err(ArrowRingError::Open(OpenError::NotFound { .. })) if !full => break,
                Err(ArrowRingError::Open(OpenError::NotFound { .. })) => Lane::Missing,
                // Being made; or made half by a creator that died, which
                // nobody can attach to: removed (holding nothing back).
                Err(ArrowRingError::Open(OpenError::NotReady { .. })) => {
                    match crate::shm::remove_unused(&name, &self.opts.segment.dir) {
                        Ok(()) | Err(OpenError::NotFound { .. }) => Lane::Missing,
                        Err(_) => Lane::Unknown,
                    }
                }
                Err(ArrowRingError::Open(OpenError::Removed { .. })) => Lane::Unknown,
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
        while matches!(self.lanes.last(), Some(Lane::Missing)) {
            self.lanes.pop();
        }
        refused
    }

    /// Lanes found (open, refused, or not ready yet).
    fn found(&self) -> usize {
        self.lanes
            .iter()
            .filter(|l| !matches!(l, Lane::Missing))
            .count()
    }
}
