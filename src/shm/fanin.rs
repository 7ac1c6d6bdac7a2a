//! Fan-in: several producer processes into one stream, one lane each.
//!
//! A stream of several producers is a set of ordinary rings, its *lanes*:
//! lane 0 is the ring named after the stream, lane `n` the ring
//! `NAME#n`. A producer that joins the stream ([`ShmProducer::join`])
//! takes the first lane with no live producer, making it if there is none
//! (with the geometry and policy of lane 0, and lane 0's subscriptions);
//! from then on it is that lane's only writer, on the single-producer hot
//! path, and its crash is that lane's alone. The consumer
//! ([`ShmFanIn`]) reads every lane round robin, at most
//! [`DEFAULT_BURST`] items from one lane before it moves to the next, and
//! looks for new lanes every few milliseconds (one failed `open` each
//! time).
//!
//! A stream with one producer is one ring, exactly as before: a plain
//! [`ShmConsumer`] reads it, and a plain [`ShmProducer::open`] writes it.
//! `docs/FORMAT.md` ("Fan-in") says why lanes rather than one ring with
//! claims.

use std::time::{Duration, Instant};

use super::error::{OpenError, ShmTryPopError};
use super::header::{Layout, RingKind};
use super::segment::{Segment, SegmentOptions, validate_name};
use super::slot::ShmSlot;
use super::typed::{EndSource, ShmConsumer, ShmProducer, typed_layout};
use crate::shm::MAX_NAME_LEN;
use crate::wait::WaitStrategy;

/// Lanes a stream may have: at most this many producers at once.
pub const MAX_LANES: u32 = 64;

/// Items a [`ShmFanIn`] takes from one lane in a row while another lane
/// has items waiting (the default of [`ShmFanIn::set_burst`]).
pub const DEFAULT_BURST: u32 = 64;

/// How often a [`ShmFanIn`] looks for lanes it does not know yet.
const SCAN_INTERVAL: Duration = Duration::from_millis(5);

/// How often a scan looks past a missing lane, at every lane number (a
/// lane may have been removed while later ones live on).
const FULL_SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// Polls between two looks at the clock (for [`SCAN_INTERVAL`]).
const POLLS_PER_CLOCK: u32 = 1024;

/// The ring name of lane `lane` of stream `stream`: the stream's own name
/// for lane 0, `stream#lane` for the others.
pub fn lane_name(stream: &str, lane: u32) -> String {
    if lane == 0 {
        stream.to_owned()
    } else {
        format!("{stream}#{lane}")
    }
}

/// The stream and lane a ring name stands for: `("a", 3)` for `a#3`,
/// `(name, 0)` for a name that is no other stream's lane.
pub fn parse_lane_name(name: &str) -> (&str, u32) {
    if let Some((stream, lane)) = name.rsplit_once('#')
        && !stream.is_empty()
        && let Ok(n) = lane.parse::<u32>()
        && (1..MAX_LANES).contains(&n)
        && lane == n.to_string()
    {
        return (stream, n);
    }
    (name, 0)
}

/// Checks that `stream` names a stream whose every lane name is valid.
fn validate_stream(stream: &str) -> Result<(), OpenError> {
    validate_name(stream)?;
    if stream.len() + 3 > MAX_NAME_LEN {
        return Err(OpenError::BadName {
            name: stream.to_owned(),
            why: "leaves no room for a lane suffix (at most 252 bytes for a stream)",
        });
    }
    Ok(())
}

/// How many times one lane is tried again after a race with another
/// process making or removing it, before its number is given up.
const LANE_RETRIES: u32 = 100;

/// Joins stream `stream` as one of its producers: attaches, with `attach`,
/// to the first lane that has no live producer, making a lane where none
/// exists (lane 0 as `plan` says, the others as lane 0 is).
///
/// `as_open` finds the [`OpenError`] in an error of `attach`, if any
/// (`RoleTaken`: the lane has a producer).
pub(crate) fn join_lane<P, E: From<OpenError>>(
    stream: &str,
    opts: &SegmentOptions,
    plan: impl Fn() -> Result<Layout, OpenError>,
    mut attach: impl FnMut(Segment) -> Result<P, E>,
    as_open: impl Fn(&E) -> Option<&OpenError>,
) -> Result<P, E> {
    validate_stream(stream)?;
    let mut lane = 0;
    let mut retries = 0;
    while lane < MAX_LANES {
        let name = lane_name(stream, lane);
        let seg = match Segment::open(&name, opts) {
            Ok(seg) => seg,
            Err(OpenError::NotFound { .. }) => match make_lane(stream, lane, opts, &plan) {
                Ok(seg) => seg,
                // Another process made (or removed) it first: look again.
                Err(OpenError::AlreadyExists { .. } | OpenError::Removed { .. })
                    if retries < LANE_RETRIES =>
                {
                    retries += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            },
            Err(OpenError::NotReady { .. }) => {
                // Its creator died making it (or is slow): remove it unless
                // someone holds it, and make it again; else the next lane.
                match super::remove_unused(&name, &opts.dir) {
                    Ok(()) | Err(OpenError::NotFound { .. }) if retries < LANE_RETRIES => {
                        retries += 1;
                    }
                    _ => lane += 1,
                }
                continue;
            }
            Err(OpenError::Removed { .. }) if retries < LANE_RETRIES => {
                retries += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        match attach(seg) {
            Ok(p) => return Ok(p),
            Err(e) => match as_open(&e) {
                Some(OpenError::RoleTaken { .. }) => lane += 1,
                // Removed between the open and the attach: look again.
                Some(OpenError::Removed { .. }) if retries < LANE_RETRIES => retries += 1,
                _ => return Err(e),
            },
        }
    }
    Err(OpenError::NoFreeLane {
        stream: stream.to_owned(),
        max: MAX_LANES,
    }
    .into())
}

/// Makes lane `lane` of `stream`: lane 0 as `plan` says; another as lane 0
/// is (geometry, policy, temporariness), subscribed under every name lane 0
/// has before any process can open it.
fn make_lane(
    stream: &str,
    lane: u32,
    opts: &SegmentOptions,
    plan: &impl Fn() -> Result<Layout, OpenError>,
) -> Result<Segment, OpenError> {
    let name = lane_name(stream, lane);
    if lane == 0 {
        return Segment::create(&name, plan()?, opts);
    }
    let (layout, names) = match Segment::open_read_only(stream, opts) {
        Ok(first) => (*first.layout(), first.subscriber_names()),
        // No lane 0 (removed meanwhile): this lane is made as it would be.
        Err(OpenError::NotFound { .. }) => (plan()?, Vec::new()),
        Err(e) => return Err(e),
    };
    let mut like_first = opts.clone();
    like_first.temporary = layout.temporary;
    like_first.policy = layout.policy;
    like_first.max_consumers = layout.max_consumers;
    // Subscribed before it is ready: a producer killed making it leaves
    // no lane without its subscriptions (openers remove a lane never made
    // ready).
    Segment::create_subscribed(&name, layout, &like_first, &names)
}

impl<T: ShmSlot> ShmProducer<T> {
    /// Joins the stream `name` (in `opts.dir`) as one of its producers, so
    /// that several processes may produce into one stream at once: takes
    /// the first of its lanes that has no live producer (lane 0 is the ring
    /// `name` itself), making one if every lane is taken. A lane that has
    /// to be made takes lane 0's geometry and subscriptions; `capacity`
    /// (and `opts`' creation fields) apply only when lane 0 itself is
    /// made. A lane's previous producer may have closed it; this one goes
    /// on after it, as [`open`](Self::open) does.
    ///
    /// Which lane it took is [`lane`](Self::lane): the producer's id, as
    /// the consumer ([`ShmFanIn`]) reports it.
    ///
    /// # Errors
    ///
    /// [`OpenError::NoFreeLane`] with [`MAX_LANES`] producers attached;
    /// otherwise as [`create_with`](Self::create_with) and
    /// [`open_with`](Self::open_with) (`Mismatch` when the stream holds
    /// another slot type).
    pub fn join(name: &str, capacity: usize, opts: &SegmentOptions) -> Result<Self, OpenError> {
        // Refused before any lane is made for it: a stream of another type.
        if let Ok(first) = Segment::open_read_only(name, opts) {
            let want = typed_layout::<T>(1, 1)?;
            let have = first.layout();
            if have.kind != RingKind::Typed || have.type_fingerprint != want.type_fingerprint {
                return Err(OpenError::Mismatch {
                    path: first.path().to_owned(),
                    what: format!(
                        "the stream's first lane holds another kind of ring or slot type than {}",
                        T::TYPE_NAME
                    ),
                });
            }
        }
        join_lane(
            name,
            opts,
            || typed_layout::<T>(capacity, opts.max_consumers),
            |seg| ShmProducer::attach_as(seg, RingKind::Typed),
            |e: &OpenError| Some(e),
        )
    }

    /// The lane of its stream this producer writes: 0 for the ring named
    /// after the stream (as any producer that did not
    /// [`join`](Self::join)), `n` for the ring `NAME#n`.
    pub fn lane(&self) -> u32 {
        lane_of(self.segment())
    }
}

/// The lane number of the ring a segment holds, from its file name.
pub(crate) fn lane_of(seg: &Segment) -> u32 {
    seg.path()
        .file_name()
        .and_then(|n| n.to_str())
        .map_or(0, |n| parse_lane_name(n).1)
}

/// Why a [`ShmFanIn`] returned no item.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FanInError {
    /// Nothing to read now (non-blocking calls only).
    #[error("stream is empty")]
    Empty,
    /// Nothing came before the deadline (blocking calls only).
    #[error("timed out")]
    Timeout,
    /// Every lane is drained and its producer closed it, and no producer
    /// came for the linger time ([`ShmFanIn::set_linger`]). A producer that
    /// joins later starts the stream again.
    #[error("end of stream: every producer closed its lane")]
    EndOfStream,
    /// Lane `lane` reports `error`: its producer died (`PeerGone`) or
    /// failed (`ProducerFailed`, reason in
    /// [`ShmFanIn::producer_failure`]), after every item it committed was
    /// delivered; or this consumer was dropped from it (`Lagged`); or it
    /// is damaged (`BadHeader`). Reported once; the other lanes go on, and
    /// so does this one when a producer joins it again.
    #[error("lane {lane}: {error}")]
    Lane {
        /// The lane: the producer's id ([`ShmProducer::lane`]).
        lane: u32,
        /// What it reported.
        #[source]
        error: ShmTryPopError,
    },
    /// Lane `lane` exists but cannot be read: another user's, another slot
    /// type, damaged, or its subscription is attached in another process.
    /// Reported once; the lane is left alone from then on.
    #[error("lane {lane}: {error}")]
    Open {
        /// The lane.
        lane: u32,
        /// Why it could not be opened.
        #[source]
        error: OpenError,
    },
}

/// One lane a [`ShmFanIn`] knows of. At most [`MAX_LANES`] of them: the
/// consumer is kept inline, one pointer less on the way to each item.
#[allow(clippy::large_enum_variant)]
enum LaneState<T: ShmSlot> {
    /// Not found yet (or not ready when last looked at).
    Unknown,
    /// Attached.
    Open {
        rx: ShmConsumer<T>,
        /// Its last pop reported an end (the lane is drained and its
        /// producer gone) and no item came since.
        ended: bool,
    },
    /// Refused when opened (reported once).
    Refused,
    /// No such lane, while a later one exists (a lane removed, and not
    /// made again yet): looked for again at each scan; holds nothing back.
    Missing,
}

/// The consuming end of a stream that several producers
/// ([`ShmProducer::join`]) write, one lane each: every lane's items, each
/// lane's in its order, lanes interleaved round robin.
///
/// Fairness: while several lanes have items, it takes at most
/// [`burst`](Self::set_burst) items from one before it moves to the next,
/// so no producer waits for more than `(lanes - 1) × burst` items of the
/// others. Attached under [`SegmentOptions::subscriber`] in every lane, so
/// that each lane keeps this consumer's position (fan-out works per lane
/// as in one ring).
pub struct ShmFanIn<T: ShmSlot> {
    stream: String,
    opts: SegmentOptions,
    lanes: Vec<LaneState<T>>,
    /// The lane read first by the next pop, and the items taken from it in
    /// a row.
    next: usize,
    burst: u32,
    max_burst: u32,
    linger: Option<Duration>,
    /// Since when every lane has been ended.
    ended_since: Option<Instant>,
    polls: u32,
    last_scan: Instant,
    last_full_scan: Instant,
    failure: Option<String>,
    wait: WaitStrategy,
}

impl<T: ShmSlot> std::fmt::Debug for ShmFanIn<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmFanIn")
            .field("stream", &self.stream)
            .field("lanes", &self.lanes())
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl<T: ShmSlot> ShmFanIn<T> {
    /// Attaches to the stream `name` (in `opts.dir`): to its lane 0, which
    /// must exist, and to every other lane it finds; later lanes are found
    /// as they come.
    ///
    /// # Errors
    ///
    /// As [`ShmConsumer::open_with`] for lane 0; `BadName` when `name`
    /// leaves no room for a lane suffix.
    pub fn open_with(name: &str, opts: &SegmentOptions) -> Result<Self, OpenError> {
        validate_stream(name)?;
        let first = ShmConsumer::open_with(name, opts)?;
        Self::with_first(name, opts, first)
    }

    /// Creates the stream's lane 0 (`capacity` slots) and attaches to it,
    /// so that producers may join after the consumer started.
    ///
    /// # Errors
    ///
    /// As [`ShmConsumer::create_with`].
    pub fn create_with(
        name: &str,
        capacity: usize,
        opts: &SegmentOptions,
    ) -> Result<Self, OpenError> {
        validate_stream(name)?;
        let first = ShmConsumer::create_with(name, capacity, opts)?;
        Self::with_first(name, opts, first)
    }

    fn with_first(
        name: &str,
        opts: &SegmentOptions,
        first: ShmConsumer<T>,
    ) -> Result<Self, OpenError> {
        let mut scan_opts = opts.clone();
        // A lane being made is looked at again at the next scan, not
        // waited for.
        scan_opts.ready_timeout = Duration::ZERO;
        let mut fan = Self {
            stream: name.to_owned(),
            opts: scan_opts,
            lanes: vec![LaneState::Open {
                rx: first,
                ended: false,
            }],
            next: 0,
            burst: 0,
            max_burst: DEFAULT_BURST,
            linger: Some(Duration::ZERO),
            ended_since: None,
            polls: 0,
            last_scan: Instant::now(),
            last_full_scan: Instant::now(),
            failure: None,
            wait: WaitStrategy::Park,
        };
        match fan.scan(true) {
            Some(FanInError::Open { error, .. }) => Err(error),
            _ => Ok(fan),
        }
    }

    /// Items taken from one lane in a row while others have items
    /// (default [`DEFAULT_BURST`]; at least 1).
    pub fn set_burst(&mut self, burst: u32) {
        self.max_burst = burst.max(1);
    }

    /// How long the stream stays open once every lane has ended, for a
    /// producer that joins late (default zero: it ends as soon as every
    /// producer that came has closed and its items are read); `None`: it
    /// never ends (follow the stream).
    pub fn set_linger(&mut self, linger: Option<Duration>) {
        self.linger = linger;
    }

    /// Sets how blocking calls wait (default [`WaitStrategy::Park`]: spin a
    /// little, then sleep in slices that grow to 1 ms, since lanes have no
    /// common wake-up word: an idle stream answers within about 1 ms).
    /// `BusySpin` polls without pause; `SpinYield` yields between polls.
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.wait = wait;
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.stream
    }

    /// Lanes attached to so far.
    pub fn lanes(&self) -> usize {
        self.lanes
            .iter()
            .filter(|l| matches!(l, LaneState::Open { .. }))
            .count()
    }

    /// Why the producer of the lane last reported as `ProducerFailed`
    /// failed.
    pub fn producer_failure(&self) -> Option<String> {
        self.failure.clone()
    }

    /// Pops the next item.
    ///
    /// # Errors
    ///
    /// See [`FanInError`]; never `Timeout`.
    #[inline]
    pub fn try_pop(&mut self) -> Result<T, FanInError> {
        self.try_pop_lane().map(|(_, v)| v)
    }

    /// [`try_pop`](Self::try_pop), with the lane the item came from.
    ///
    /// # Errors
    ///
    /// As [`try_pop`](Self::try_pop).
    pub fn try_pop_lane(&mut self) -> Result<(u32, T), FanInError> {
        self.polls = self.polls.wrapping_add(1);
        if self.polls.is_multiple_of(POLLS_PER_CLOCK)
            && self.last_scan.elapsed() >= SCAN_INTERVAL
            && let Some(e) = self.scan(self.last_full_scan.elapsed() >= FULL_SCAN_INTERVAL)
        {
            return Err(e);
        }
        let n = self.lanes.len();
        let mut all_ended = true;
        for k in 0..n {
            let i = if self.next + k < n {
                self.next + k
            } else {
                self.next + k - n
            };
            let LaneState::Open { rx, ended } = &mut self.lanes[i] else {
                if matches!(self.lanes[i], LaneState::Unknown) {
                    all_ended = false;
                }
                continue;
            };
            match rx.try_pop() {
                Ok(v) => {
                    *ended = false;
                    if k != 0 {
                        self.next = i;
                        self.burst = 0;
                    }
                    self.burst += 1;
                    if self.burst >= self.max_burst {
                        self.next = if i + 1 == n { 0 } else { i + 1 };
                        self.burst = 0;
                    }
                    self.ended_since = None;
                    return Ok((i as u32, v));
                }
                Err(ShmTryPopError::Empty) => {
                    *ended = false;
                    all_ended = false;
                }
                Err(
                    e @ (ShmTryPopError::EndOfStream
                    | ShmTryPopError::PeerGone
                    | ShmTryPopError::ProducerFailed),
                ) => {
                    let fresh = rx.end_source() != EndSource::Repeat;
                    *ended = true;
                    if fresh && !matches!(e, ShmTryPopError::EndOfStream) {
                        if matches!(e, ShmTryPopError::ProducerFailed) {
                            self.failure = rx.producer_failure();
                        }
                        return Err(FanInError::Lane {
                            lane: i as u32,
                            error: e,
                        });
                    }
                }
                Err(e) => {
                    return Err(FanInError::Lane {
                        lane: i as u32,
                        error: e,
                    });
                }
            }
        }
        if !all_ended {
            self.ended_since = None;
            return Err(FanInError::Empty);
        }
        let Some(linger) = self.linger else {
            return Err(FanInError::Empty);
        };
        let now = Instant::now();
        let since = *self.ended_since.get_or_insert(now);
        if now.duration_since(since) < linger {
            return Err(FanInError::Empty);
        }
        // A producer that joined a new lane meanwhile keeps the stream open.
        let found = self.found();
        if let Some(e) = self.scan(true) {
            return Err(e);
        }
        if self.found() > found || self.lanes.iter().any(|l| matches!(l, LaneState::Unknown)) {
            return Err(FanInError::Empty);
        }
        Err(FanInError::EndOfStream)
    }

    /// Pops the next item, waiting while every lane is empty.
    ///
    /// # Errors
    ///
    /// As [`try_pop`](Self::try_pop), never `Empty` nor `Timeout`.
    pub fn pop(&mut self) -> Result<T, FanInError> {
        self.pop_lane_timeout(None).map(|(_, v)| v)
    }

    /// Pops the next item, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`try_pop`](Self::try_pop), with `Timeout` for `Empty`.
    pub fn pop_timeout(&mut self, timeout: Duration) -> Result<T, FanInError> {
        self.pop_lane_timeout(Some(timeout)).map(|(_, v)| v)
    }

    /// [`pop_timeout`](Self::pop_timeout) (`None`: no deadline), with the
    /// lane the item came from.
    ///
    /// # Errors
    ///
    /// As [`pop_timeout`](Self::pop_timeout).
    pub fn pop_lane_timeout(&mut self, timeout: Option<Duration>) -> Result<(u32, T), FanInError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut spins = 0u32;
        let mut nap = Duration::from_micros(20);
        loop {
            match self.try_pop_lane() {
                Err(FanInError::Empty) => {}
                other => return other,
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(FanInError::Timeout);
            }
            match self.wait {
                WaitStrategy::BusySpin => std::hint::spin_loop(),
                WaitStrategy::SpinYield => std::thread::yield_now(),
                _ if spins < 1000 => {
                    spins += 1;
                    std::hint::spin_loop();
                }
                _ => {
                    let nap_for = deadline.map_or(nap, |d| {
                        nap.min(d.saturating_duration_since(Instant::now()))
                    });
                    std::thread::sleep(nap_for);
                    nap = (nap * 2).min(Duration::from_millis(1));
                }
            }
        }
    }

    /// Attaches to the lanes not attached yet, up to the first that does
    /// not exist. Returns the first lane refused (reported once).
    fn scan(&mut self, full: bool) -> Option<FanInError> {
        self.last_scan = Instant::now();
        if full {
            self.last_full_scan = self.last_scan;
        }
        let mut refused = None;
        for lane in 0..MAX_LANES {
            let i = lane as usize;
            if i < self.lanes.len()
                && !matches!(self.lanes[i], LaneState::Unknown | LaneState::Missing)
            {
                continue;
            }
            let name = lane_name(&self.stream, lane);
            let state = match ShmConsumer::<T>::open_with(&name, &self.opts) {
                Ok(mut rx) => {
                    rx.set_wait_strategy(WaitStrategy::BusySpin);
                    LaneState::Open { rx, ended: false }
                }
                Err(OpenError::NotFound { .. }) if !full => break,
                Err(OpenError::NotFound { .. }) => LaneState::Missing,
                // Being made; or made half by a creator that died, which
                // nobody can attach to: removed (holding nothing back).
                Err(OpenError::NotReady { .. }) => {
                    match super::remove_unused(&name, &self.opts.dir) {
                        Ok(()) | Err(OpenError::NotFound { .. }) => LaneState::Missing,
                        Err(_) => LaneState::Unknown,
                    }
                }
                Err(OpenError::Removed { .. }) => LaneState::Unknown,
                Err(error) => {
                    if refused.is_none() {
                        refused = Some(FanInError::Open { lane, error });
                    }
                    LaneState::Refused
                }
            };
            if i < self.lanes.len() {
                self.lanes[i] = state;
            } else {
                self.lanes.push(state);
            }
        }
        while matches!(self.lanes.last(), Some(LaneState::Missing)) {
            self.lanes.pop();
        }
        refused
    }

    /// Lanes found (open, refused, or not ready yet).
    fn found(&self) -> usize {
        self.lanes
            .iter()
            .filter(|l| !matches!(l, LaneState::Missing))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_names_round_trip() {
        assert_eq!(lane_name("events", 0), "events");
        assert_eq!(lane_name("events", 7), "events#7");
        assert_eq!(parse_lane_name("events#7"), ("events", 7));
        assert_eq!(parse_lane_name("events"), ("events", 0));
        // Not lanes: no number, a number out of range or not canonical.
        assert_eq!(parse_lane_name("a#b"), ("a#b", 0));
        assert_eq!(parse_lane_name("a#0"), ("a#0", 0));
        assert_eq!(parse_lane_name("a#64"), ("a#64", 0));
        assert_eq!(parse_lane_name("a#07"), ("a#07", 0));
        assert_eq!(parse_lane_name("#3"), ("#3", 0));
        assert_eq!(parse_lane_name("a#1#2"), ("a#1", 2));
    }
}
