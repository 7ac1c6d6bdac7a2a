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

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::{OpenError, ShmTryPopError};
use super::header::{HeaderError, Layout, RingKind};
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

/// How often a fan-in ([`ShmFanIn`], `BatchFanIn`) looks for lanes it
/// does not know yet.
const SCAN_INTERVAL: Duration = Duration::from_millis(5);

/// How often a scan looks past a missing lane, at every lane number (a
/// lane may have been removed while later ones live on).
const FULL_SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// Polls between two looks at the clock (for [`SCAN_INTERVAL`]); the
/// first poll after a blocking call slept looks at once.
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

/// Checks that `stream` can name a stream: a valid ring name with room
/// for a lane suffix, and not itself another stream's lane (`NAME#n`).
///
/// # Errors
///
/// [`OpenError::BadName`], saying which rule `stream` breaks.
pub fn check_stream_name(stream: &str) -> Result<(), OpenError> {
    validate_stream(stream)
}

/// [`check_stream_name`].
pub(crate) fn validate_stream(stream: &str) -> Result<(), OpenError> {
    validate_name(stream)?;
    if stream.len() + 3 > MAX_NAME_LEN {
        return Err(OpenError::BadName {
            name: stream.to_owned(),
            why: "leaves no room for a lane suffix (at most 252 bytes for a stream)",
        });
    }
    if parse_lane_name(stream).1 != 0 {
        return Err(OpenError::BadName {
            name: stream.to_owned(),
            why: "names a lane of another stream (NAME#n); a stream's name cannot end in #1 to #63",
        });
    }
    Ok(())
}

/// Whether `e` says a lane is not made yet: still being made
/// (`NotReady`), or never to be, its creator having died before READY
/// (`NeverReady`, once the file is sized). Such a lane is removed unless
/// a process holds it, and made again.
fn never_ready(e: &OpenError) -> bool {
    matches!(
        e,
        OpenError::NotReady { .. }
            | OpenError::BadHeader {
                source: HeaderError::NeverReady,
                ..
            }
    )
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
            Err(e) if never_ready(&e) => {
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

// The lane set: what every fan-in consumer does, whatever its rings hold.
// A consumer says how to open a lane and take one item from it
// (`LaneReader`); the set finds the lanes, takes turns among them and
// decides when the stream has ended.

/// How a fan-in reads the lanes of one kind of ring.
pub(crate) trait LaneReader {
    /// The consumer of one lane.
    type Rx;
    /// What a lane gives.
    type Item;
    /// What the fan-in reports.
    type Error;
    /// Why a lane could not be opened.
    type OpenFailure;
    /// How items are taken (the same for every lane within one call).
    type Mode: Copy;

    /// The longest a blocking call waits in the only lane of a stream
    /// (asleep on that lane's futex, woken by its producer) before it
    /// looks for new lanes; zero: it polls and naps as with several.
    const LONE_WAIT: Duration = Duration::ZERO;

    /// Attaches to the ring `name`, a lane found by a scan.
    fn open(&mut self, name: &str) -> Result<Self::Rx, Self::OpenFailure>;

    /// The ring layer's answer in a failed [`open`](Self::open), if that
    /// is what it is (a lane not found, not ready or removed is looked for
    /// again; any other failure refuses the lane).
    fn ring_error(error: &Self::OpenFailure) -> Option<&OpenError>;

    /// The error that reports lane `lane` refused when opened.
    fn refused(lane: u32, error: Self::OpenFailure) -> Self::Error;

    /// Takes one item from lane `lane`, waiting at most `wait` (zero but
    /// for the only lane of a stream, see [`LONE_WAIT`](Self::LONE_WAIT)).
    fn take(
        &mut self,
        lane: u32,
        rx: &mut Self::Rx,
        mode: Self::Mode,
        wait: Duration,
    ) -> Take<Self::Item, Self::Error>;

    /// Whether the stream may end now that every lane has ended (the
    /// linger time still applies).
    fn may_end(&self) -> bool {
        true
    }
}

/// What a lane gave to one [`LaneReader::take`].
pub(crate) enum Take<I, E> {
    /// An item.
    Item(I),
    /// Nothing now; its producer may still send.
    Empty,
    /// Drained to the end of a producer session. `Some`: an end to report,
    /// now, once (a death or a failure); the next pop starts at the next
    /// lane. `None`: a clean end, which only the end of the whole stream
    /// reports, or an end reported before.
    Ended(Option<E>),
    /// An error to report; the lane is read on as before.
    Failed(E),
    /// An error to report, after which the lane is left alone.
    #[cfg_attr(not(feature = "arrow"), allow(dead_code))] // the Arrow fan-in's only
    Refused(E),
}

/// What a round over the lanes gave.
pub(crate) enum Round<I, E> {
    /// An item, and the lane it came from.
    Item(u32, I),
    /// Nothing now (from a blocking call: nothing before the deadline).
    Empty,
    /// Every lane has ended, and no producer came for the linger time.
    End,
    /// A lane's error, or a lane refused when a scan opened it.
    Error(E),
}

/// How a blocking pop waits between two rounds over several lanes.
#[derive(Clone, Copy)]
pub(crate) enum Pause {
    /// A spin-loop hint each time.
    Spin,
    /// A `sched_yield` each time.
    Yield,
    /// That many spin-loop hints, then naps that grow from 20 µs to 1 ms
    /// (lanes have no common wake-up word).
    SpinThenNap(u32),
    /// That many yields, then naps as [`SpinThenNap`](Self::SpinThenNap).
    #[cfg_attr(not(feature = "arrow"), allow(dead_code))] // the Arrow fan-in's only
    YieldThenNap(u32),
}

/// One lane a fan-in knows of. At most [`MAX_LANES`] of them: the consumer
/// is kept inline, one pointer less on the way to each item.
enum Lane<R> {
    /// Not found yet (or not ready when last looked at).
    Unknown,
    /// Attached.
    Open(R),
    /// Refused, when opened or by what it holds (reported once).
    Refused,
    /// No such lane, while a later one exists (a lane removed, and not
    /// made again yet): looked for again at each full scan; holds nothing
    /// back.
    Missing,
}

/// The lanes of one stream as its fan-in consumer reads them: found by
/// scans, read round robin with a bounded burst, ended together.
pub(crate) struct LaneSet<R: LaneReader> {
    stream: String,
    dir: PathBuf,
    reader: R,
    lanes: Vec<Lane<R::Rx>>,
    /// The lane read first by the next pop, and the items taken from it in
    /// a row.
    next: usize,
    burst: u32,
    max_burst: u32,
    linger: Option<Duration>,
    /// Since when every lane has been ended.
    ended_since: Option<Instant>,
    /// Polls left before the next look at the clock.
    polls_left: u32,
    last_scan: Instant,
    last_full_scan: Instant,
}

impl<R: LaneReader> LaneSet<R> {
    /// The lanes of stream `stream` (in `dir`), lane 0 read by `first`,
    /// and every other lane a full scan finds now.
    ///
    /// # Errors
    ///
    /// The first lane that `reader` refused to open.
    pub(crate) fn new(
        stream: &str,
        dir: &Path,
        reader: R,
        first: R::Rx,
    ) -> Result<Self, R::OpenFailure> {
        let now = Instant::now();
        let mut set = Self {
            stream: stream.to_owned(),
            dir: dir.to_owned(),
            reader,
            lanes: vec![Lane::Open(first)],
            next: 0,
            burst: 0,
            max_burst: DEFAULT_BURST,
            linger: Some(Duration::ZERO),
            ended_since: None,
            polls_left: POLLS_PER_CLOCK - 1,
            last_scan: now,
            last_full_scan: now,
        };
        match set.scan(true) {
            Some((_, error)) => Err(error),
            None => Ok(set),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.stream
    }

    pub(crate) fn reader(&self) -> &R {
        &self.reader
    }

    #[cfg(feature = "arrow")] // used by the Arrow fan-in only
    pub(crate) fn reader_mut(&mut self) -> &mut R {
        &mut self.reader
    }

    /// Items taken from one lane in a row while others have some (at
    /// least 1).
    pub(crate) fn set_burst(&mut self, burst: u32) {
        self.max_burst = burst.max(1);
    }

    /// How long the stream stays open once every lane has ended; `None`:
    /// it never ends.
    pub(crate) fn set_linger(&mut self, linger: Option<Duration>) {
        self.linger = linger;
    }

    /// Lanes attached to so far.
    pub(crate) fn open_count(&self) -> usize {
        self.open_lanes().count()
    }

    /// The consumers of the lanes attached to, from lane 0 up.
    pub(crate) fn open_lanes(&self) -> impl DoubleEndedIterator<Item = &R::Rx> {
        self.lanes.iter().filter_map(|l| match l {
            Lane::Open(rx) => Some(rx),
            _ => None,
        })
    }

    /// [`open_lanes`](Self::open_lanes), to change.
    #[cfg(feature = "arrow")] // used by the Arrow fan-in only
    pub(crate) fn open_lanes_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut R::Rx> {
        self.lanes.iter_mut().filter_map(|l| match l {
            Lane::Open(rx) => Some(rx),
            _ => None,
        })
    }

    /// [`open_lanes`](Self::open_lanes), handed over.
    #[cfg(feature = "arrow")] // used by the Arrow fan-in only
    pub(crate) fn into_open_lanes(self) -> impl Iterator<Item = R::Rx> {
        self.lanes.into_iter().filter_map(|l| match l {
            Lane::Open(rx) => Some(rx),
            _ => None,
        })
    }

    /// One round over the lanes, from the one whose turn it is: the first
    /// item found, or why there is none. Every [`POLLS_PER_CLOCK`]th round
    /// (and the first after a sleep) looks at the clock, and scans for new
    /// lanes every [`SCAN_INTERVAL`].
    #[inline]
    pub(crate) fn poll(&mut self, mode: R::Mode, wait: Duration) -> Round<R::Item, R::Error> {
        if self.polls_left > 0 {
            self.polls_left -= 1;
        } else {
            self.polls_left = POLLS_PER_CLOCK - 1;
            if self.last_scan.elapsed() >= SCAN_INTERVAL
                && let Some((lane, error)) =
                    self.scan(self.last_full_scan.elapsed() >= FULL_SCAN_INTERVAL)
            {
                return Round::Error(R::refused(lane, error));
            }
        }
        let n = self.lanes.len();
        // Lanes only go at the end, and only ones never read: `next` is at
        // most `n`, and `n` stands for lane 0.
        let start = if self.next < n { self.next } else { 0 };
        let mut all_ended = true;
        for k in 0..n {
            let i = if start + k < n {
                start + k
            } else {
                start + k - n
            };
            let Lane::Open(rx) = &mut self.lanes[i] else {
                if matches!(self.lanes[i], Lane::Unknown) {
                    all_ended = false;
                }
                continue;
            };
            let lane = i as u32;
            match self.reader.take(lane, rx, mode, wait) {
                Take::Item(v) => {
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
                    return Round::Item(lane, v);
                }
                Take::Empty => all_ended = false,
                Take::Ended(None) => {}
                Take::Ended(Some(error)) => {
                    // Its end was its turn.
                    self.next = if i + 1 == n { 0 } else { i + 1 };
                    self.burst = 0;
                    return Round::Error(error);
                }
                Take::Failed(error) => {
                    // The turn moves on: a lane that fails again at once
                    // (a damaged header) must not hide the others.
                    self.next = if i + 1 == n { 0 } else { i + 1 };
                    self.burst = 0;
                    return Round::Error(error);
                }
                Take::Refused(error) => {
                    self.lanes[i] = Lane::Refused;
                    return Round::Error(error);
                }
            }
        }
        self.end(all_ended)
    }

    /// Rounds over the lanes until one gives something or `deadline`
    /// passes (`Empty` then), pausing between rounds as `pause` says; a
    /// stream of one lane waits in that lane, if the reader can
    /// ([`LaneReader::LONE_WAIT`]).
    pub(crate) fn pop(
        &mut self,
        mode: R::Mode,
        deadline: Option<Instant>,
        pause: Pause,
    ) -> Round<R::Item, R::Error> {
        let mut spins = 0u32;
        let mut nap = Duration::from_micros(20);
        loop {
            let lone = !R::LONE_WAIT.is_zero() && matches!(self.lanes[..], [Lane::Open(_)]);
            let wait = match deadline {
                _ if !lone => Duration::ZERO,
                Some(d) => R::LONE_WAIT.min(d.saturating_duration_since(Instant::now())),
                None => R::LONE_WAIT,
            };
            match self.poll(mode, wait) {
                Round::Empty => {}
                other => return other,
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Round::Empty;
            }
            match pause {
                // It waited in its lane; whether a lane came meanwhile is
                // worth a look at the clock.
                _ if lone => self.polls_left = 0,
                Pause::Spin => std::hint::spin_loop(),
                Pause::Yield => std::thread::yield_now(),
                Pause::SpinThenNap(n) if spins < n => {
                    spins += 1;
                    std::hint::spin_loop();
                }
                Pause::YieldThenNap(n) if spins < n => {
                    spins += 1;
                    std::thread::yield_now();
                }
                Pause::SpinThenNap(_) | Pause::YieldThenNap(_) => {
                    let nap_for = deadline.map_or(nap, |d| {
                        nap.min(d.saturating_duration_since(Instant::now()))
                    });
                    std::thread::sleep(nap_for);
                    nap = (nap * 2).min(Duration::from_millis(1));
                    self.polls_left = 0;
                }
            }
        }
    }

    /// The end of a round that found no item: `End` once every lane has
    /// ended for the linger time and a full scan finds no new one.
    fn end(&mut self, all_ended: bool) -> Round<R::Item, R::Error> {
        if !all_ended || !self.reader.may_end() {
            self.ended_since = None;
            return Round::Empty;
        }
        let Some(linger) = self.linger else {
            return Round::Empty;
        };
        let now = Instant::now();
        let since = *self.ended_since.get_or_insert(now);
        if now.duration_since(since) < linger {
            return Round::Empty;
        }
        // A producer that joined a new lane meanwhile keeps the stream open.
        let found = self.found();
        if let Some((lane, error)) = self.scan(true) {
            return Round::Error(R::refused(lane, error));
        }
        if self.found() > found || self.lanes.iter().any(|l| matches!(l, Lane::Unknown)) {
            return Round::Empty;
        }
        Round::End
    }

    /// Attaches to the lanes not attached yet, up to the first that does
    /// not exist (`full`: every lane number). Returns the first lane
    /// refused (reported once).
    fn scan(&mut self, full: bool) -> Option<(u32, R::OpenFailure)> {
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
            let state = match self.reader.open(&name) {
                Ok(rx) => Lane::Open(rx),
                Err(error) => match R::ring_error(&error) {
                    Some(OpenError::NotFound { .. }) if !full => break,
                    Some(OpenError::NotFound { .. }) => Lane::Missing,
                    // Being made; or made half by a creator that died, which
                    // nobody can attach to: removed (holding nothing back).
                    Some(e) if never_ready(e) => match super::remove_unused(&name, &self.dir) {
                        Ok(()) | Err(OpenError::NotFound { .. }) => Lane::Missing,
                        Err(_) => Lane::Unknown,
                    },
                    Some(OpenError::Removed { .. }) => Lane::Unknown,
                    _ => {
                        if refused.is_none() {
                            refused = Some((lane, error));
                        }
                        Lane::Refused
                    }
                },
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

/// How a [`ShmFanIn`] reads its lanes: a typed consumer each, polled.
struct TypedLanes<T> {
    opts: SegmentOptions,
    /// Why the producer of the lane last reported as `ProducerFailed`
    /// failed.
    failure: Option<String>,
    slot: PhantomData<fn() -> T>,
}

impl<T: ShmSlot> LaneReader for TypedLanes<T> {
    type Rx = ShmConsumer<T>;
    type Item = T;
    type Error = FanInError;
    type OpenFailure = OpenError;
    type Mode = ();

    fn open(&mut self, name: &str) -> Result<ShmConsumer<T>, OpenError> {
        let mut rx = ShmConsumer::open_with(name, &self.opts)?;
        rx.set_wait_strategy(WaitStrategy::BusySpin);
        Ok(rx)
    }

    fn ring_error(error: &OpenError) -> Option<&OpenError> {
        Some(error)
    }

    fn refused(lane: u32, error: OpenError) -> FanInError {
        FanInError::Open { lane, error }
    }

    /// Never waits: a typed fan-in naps between rounds even with one lane
    /// (`LONE_WAIT` is zero).
    #[inline]
    fn take(
        &mut self,
        lane: u32,
        rx: &mut ShmConsumer<T>,
        (): (),
        _wait: Duration,
    ) -> Take<T, FanInError> {
        match rx.try_pop() {
            Ok(v) => Take::Item(v),
            Err(ShmTryPopError::Empty) => Take::Empty,
            Err(
                error @ (ShmTryPopError::EndOfStream
                | ShmTryPopError::PeerGone
                | ShmTryPopError::ProducerFailed),
            ) => {
                // A clean end is the stream's to report, once every lane
                // has one; a death or a failure is reported the first time.
                if matches!(error, ShmTryPopError::EndOfStream)
                    || rx.end_source() == EndSource::Repeat
                {
                    return Take::Ended(None);
                }
                if matches!(error, ShmTryPopError::ProducerFailed) {
                    self.failure = rx.producer_failure();
                }
                Take::Ended(Some(FanInError::Lane { lane, error }))
            }
            Err(error) => Take::Failed(FanInError::Lane { lane, error }),
        }
    }
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
    lanes: LaneSet<TypedLanes<T>>,
    wait: WaitStrategy,
}

impl<T: ShmSlot> std::fmt::Debug for ShmFanIn<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmFanIn")
            .field("stream", &self.name())
            .field("lanes", &self.lanes())
            .field("next", &self.lanes.next)
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
        let reader = TypedLanes {
            opts: scan_opts,
            failure: None,
            slot: PhantomData,
        };
        Ok(Self {
            lanes: LaneSet::new(name, &opts.dir, reader, first)?,
            wait: WaitStrategy::Park,
        })
    }

    /// Items taken from one lane in a row while others have items
    /// (default [`DEFAULT_BURST`]; at least 1).
    pub fn set_burst(&mut self, burst: u32) {
        self.lanes.set_burst(burst);
    }

    /// How long the stream stays open once every lane has ended, for a
    /// producer that joins late (default zero: it ends as soon as every
    /// producer that came has closed and its items are read); `None`: it
    /// never ends (follow the stream).
    pub fn set_linger(&mut self, linger: Option<Duration>) {
        self.lanes.set_linger(linger);
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
        self.lanes.name()
    }

    /// Lanes attached to so far.
    pub fn lanes(&self) -> usize {
        self.lanes.open_count()
    }

    /// Why the producer of the lane last reported as `ProducerFailed`
    /// failed.
    pub fn producer_failure(&self) -> Option<String> {
        self.lanes.reader().failure.clone()
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
        into_result(self.lanes.poll((), Duration::ZERO), FanInError::Empty)
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
        let pause = match self.wait {
            WaitStrategy::BusySpin => Pause::Spin,
            WaitStrategy::SpinYield => Pause::Yield,
            WaitStrategy::Park => Pause::SpinThenNap(1000),
        };
        into_result(self.lanes.pop((), deadline, pause), FanInError::Timeout)
    }
}

/// A typed fan-in's answer, with `empty` for no item.
#[inline]
fn into_result<T>(round: Round<T, FanInError>, empty: FanInError) -> Result<(u32, T), FanInError> {
    match round {
        Round::Item(lane, v) => Ok((lane, v)),
        Round::Empty => Err(empty),
        Round::End => Err(FanInError::EndOfStream),
        Round::Error(e) => Err(e),
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

    #[test]
    fn a_stream_named_as_another_streams_lane_is_refused() {
        for bad in ["events#1", "events#63", "a#1#2"] {
            let e = validate_stream(bad).unwrap_err();
            assert!(matches!(e, OpenError::BadName { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("lane"), "{bad}: {e}");
        }
        for good in ["events", "events#64", "a#b", "a#0", "a#07"] {
            assert!(validate_stream(good).is_ok(), "{good}");
        }
        let long = "x".repeat(253);
        assert!(validate_stream(&long).is_err());
        assert!(validate_stream(&long[..252]).is_ok());
    }
}
