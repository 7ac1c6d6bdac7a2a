//! Fan-in of Arrow streams: the consuming end of a stream that several
//! [`BatchProducer::join`](super::BatchProducer::join)s write, one lane
//! each (see [`shm::ShmFanIn`](crate::shm::ShmFanIn) for the lanes).

use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::{ArrowRingError, ArrowRingOptions, BatchConsumer, LeasedBatch};
use crate::shm::{LaneReader, LaneSet, OpenError, Pause, Round, Take};

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

/// How a [`BatchFanIn`] reads its lanes: a [`BatchConsumer`] each, waited
/// in when it is the only one.
struct ArrowLanes {
    opts: ArrowRingOptions,
    /// The stream's schema: expected of every lane once known.
    schema: Option<SchemaRef>,
    /// A batch or an end has come from some lane since attaching: from
    /// then on, a lane whose stream was over before this consumer came
    /// (nothing to read, no producer) counts as ended. Before, such lanes
    /// wait for a producer, as a [`BatchConsumer`] on an ended ring does.
    seen_any: bool,
}

impl LaneReader for ArrowLanes {
    type Rx = BatchConsumer;
    type Item = LeasedBatch;
    type Error = BatchFanInError;
    type OpenFailure = ArrowRingError;
    /// Zero-copy: leased in place rather than copied out.
    type Mode = bool;

    // A stream of one lane waits in that lane (asleep on its futex, woken
    // by its producer), a slice at a time, so that new lanes are still
    // found.
    const LONE_WAIT: Duration = LONE_SLICE;

    fn open(&mut self, name: &str) -> Result<BatchConsumer, ArrowRingError> {
        let mut rx = BatchConsumer::open(name, &self.opts)?;
        if let Some(schema) = &self.schema {
            rx.expect_schema(schema.clone());
        }
        Ok(rx)
    }

    fn ring_error(error: &ArrowRingError) -> Option<&OpenError> {
        match error {
            ArrowRingError::Open(e) => Some(e),
            _ => None,
        }
    }

    fn refused(lane: u32, error: ArrowRingError) -> BatchFanInError {
        BatchFanInError::Lane { lane, error }
    }

    fn take(
        &mut self,
        lane: u32,
        rx: &mut BatchConsumer,
        zero_copy: bool,
        wait: Duration,
    ) -> Take<LeasedBatch, BatchFanInError> {
        let got = if zero_copy {
            rx.recv_zero_copy_timeout(wait)
        } else {
            rx.recv_timeout(wait)
                .map(|b| b.map(|batch| LeasedBatch { batch }))
        };
        let report = |error| BatchFanInError::Lane { lane, error };
        match got {
            Ok(Some(batch)) => {
                self.seen_any = true;
                Take::Item(batch)
            }
            Ok(None) => {
                self.seen_any = true;
                Take::Ended(None)
            }
            // A lane drained to the end of a session it reported (or that
            // was over before this consumer came) waits for the next one.
            Err(ArrowRingError::Timeout) if rx.between_sessions() => Take::Ended(None),
            Err(ArrowRingError::Timeout) => Take::Empty,
            Err(error @ (ArrowRingError::PeerGone | ArrowRingError::ProducerFailed { .. })) => {
                self.seen_any = true;
                Take::Ended(Some(report(error)))
            }
            Err(error @ ArrowRingError::SchemaMismatch { .. }) => Take::Refused(report(error)),
            Err(error) => Take::Failed(report(error)),
        }
    }

    fn may_end(&self) -> bool {
        self.seen_any
    }
}

/// Receives the batches of every producer of an Arrow stream
/// ([`BatchProducer::join`](super::BatchProducer::join)), each producer's
/// in the order it sent them, lanes interleaved round robin (at most
/// [`set_burst`](Self::set_burst) batches from one lane in a row while
/// another has some). Every lane must carry the schema of the first batch
/// received.
pub struct BatchFanIn {
    lanes: LaneSet<ArrowLanes>,
}

impl std::fmt::Debug for BatchFanIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchFanIn")
            .field("stream", &self.lanes.name())
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
    /// As [`BatchConsumer::open`] for lane 0 or another lane found now;
    /// `BadName` for a name that is another stream's lane
    /// ([`check_stream_name`](crate::shm::check_stream_name)).
    pub fn open(name: &str, opts: &ArrowRingOptions) -> Result<Self, ArrowRingError> {
        crate::shm::validate_stream(name)?;
        let first = BatchConsumer::open(name, opts)?;
        Self::with_first(name, opts, first)
    }

    /// Creates the stream's lane 0 and attaches to it, so that producers
    /// may join after the consumer started.
    ///
    /// # Errors
    ///
    /// As [`BatchConsumer::create`]; `BadName` as for
    /// [`open`](Self::open).
    pub fn create(name: &str, opts: &ArrowRingOptions) -> Result<Self, ArrowRingError> {
        crate::shm::validate_stream(name)?;
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
        let reader = ArrowLanes {
            opts: scan_opts,
            schema: None,
            seen_any: false,
        };
        Ok(Self {
            lanes: LaneSet::new(name, &opts.segment.dir, reader, first)?,
        })
    }

    /// Batches taken from one lane in a row while others have some
    /// (default [`DEFAULT_BURST`](crate::shm::DEFAULT_BURST); at least 1).
    pub fn set_burst(&mut self, burst: u32) {
        self.lanes.set_burst(burst);
    }

    /// How long the stream stays open once every lane has ended (default
    /// zero); `None`: it never ends. See
    /// [`ShmFanIn::set_linger`](crate::shm::ShmFanIn::set_linger).
    pub fn set_linger(&mut self, linger: Option<Duration>) {
        self.lanes.set_linger(linger);
    }

    /// Lanes attached to so far.
    pub fn lanes(&self) -> usize {
        self.lanes.open_count()
    }

    /// The stream's schema, once a batch has been received.
    pub fn schema(&self) -> Option<&SchemaRef> {
        self.lanes.reader().schema.as_ref()
    }

    /// Requires every lane's stream to have `schema` (as
    /// [`BatchConsumer::expect_schema`]); without it, the first batch
    /// received sets the schema for every lane.
    pub fn expect_schema(&mut self, schema: SchemaRef) {
        for rx in self.lanes.open_lanes_mut() {
            rx.expect_schema(schema.clone());
        }
        self.lanes.reader_mut().schema = Some(schema);
    }

    /// Messages read and not yet released, over every lane.
    pub fn outstanding(&self) -> usize {
        self.lanes.open_lanes().map(|rx| rx.outstanding()).sum()
    }

    /// [`BatchConsumer::release_dropped`] on every lane: releases what
    /// was dropped, and returns what stays outstanding (0 when no leased
    /// batch is alive).
    pub fn release_dropped(&mut self) -> usize {
        self.lanes
            .open_lanes_mut()
            .map(BatchConsumer::release_dropped)
            .sum()
    }

    /// The mappings of the lanes open now ([`BatchConsumer::mapped_range`]):
    /// a zero-copy batch's buffers lie in one of them.
    pub fn mapped_ranges(&self) -> Vec<std::ops::Range<usize>> {
        self.lanes
            .open_lanes()
            .map(BatchConsumer::mapped_range)
            .collect()
    }

    /// Whether the stream was created temporary (its lane 0).
    pub fn is_temporary(&self) -> bool {
        self.lanes
            .open_lanes()
            .next()
            .is_some_and(|rx| rx.is_temporary())
    }

    /// Whether a producer is attached to some lane now (a look at each
    /// lane's producer lock).
    pub fn producer_attached(&self) -> bool {
        self.lanes
            .open_lanes()
            .any(super::BatchConsumer::producer_attached_now)
    }

    /// Detaches from every lane as [`BatchConsumer::detach`] does: what was
    /// read and is still leased stays in its lane for the next consumer.
    pub fn detach(self) {
        for rx in self.lanes.into_open_lanes() {
            rx.detach();
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
        for rx in self.lanes.open_lanes_mut().rev() {
            match rx.remove_if_unused() {
                Ok(()) | Err(ArrowRingError::Open(OpenError::NotFound { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
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
        match self
            .lanes
            .pop(zero_copy, deadline, Pause::YieldThenNap(100))
        {
            Round::Item(lane, batch) => {
                // The first batch's schema is every lane's from now on.
                if self.schema().is_none() {
                    self.expect_schema(batch.schema());
                }
                Ok(Some((lane, batch)))
            }
            Round::Empty => Err(BatchFanInError::Timeout),
            Round::End => Ok(None),
            Round::Error(e) => Err(e),
        }
    }
}
