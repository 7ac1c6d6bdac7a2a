//! Reading a segment's header from outside: what `laminar-ring info` and
//! `ls` print. Inspection opens the file read-only and takes no role, so it
//! works beside a live producer and consumer and never disturbs them.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::error::{OpenError, Role};
use super::header::{
    Layout, ROLE_ATTACHED, ROLE_CLOSED, ROLE_FAILED, ROLE_NEVER, ROLE_SUBSCRIBING,
};
use super::segment::{Segment, SegmentOptions};
use crate::fanout::{CURSOR_DROPPED, CURSOR_SUBSCRIBED};
use crate::sync::Ordering;

/// What the header says of one side of the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoleState {
    /// No process ever attached in this role.
    Never,
    /// A process attached and has not detached; see
    /// [`RoleInfo::alive`] for whether it still lives.
    Attached,
    /// The last process in this role detached cleanly (for the producer:
    /// the stream is closed).
    Closed,
    /// Producer only: the last producer gave up with an error
    /// ([`RingInfo::producer_failure`] says why); its stream ends in error.
    Failed,
    /// Consumers only: a process was subscribing the cursor and has not
    /// finished (or died doing so: the next consumer to attach subscribes
    /// it again).
    Subscribing,
    /// A value no version of the layout writes.
    Unknown(u32),
}

impl RoleState {
    fn from_word(w: u32) -> Self {
        match w {
            ROLE_NEVER => Self::Never,
            ROLE_ATTACHED => Self::Attached,
            ROLE_CLOSED => Self::Closed,
            ROLE_FAILED => Self::Failed,
            ROLE_SUBSCRIBING => Self::Subscribing,
            other => Self::Unknown(other),
        }
    }
}

/// One side of the ring, as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleInfo {
    /// The state word in the header.
    pub state: RoleState,
    /// Whether a live process holds the role's lock right now.
    pub alive: bool,
    /// Process id the last process in this role recorded when it attached
    /// (in its own pid namespace), if any attached. It names the live
    /// holder only while [`Self::alive`].
    pub pid: Option<u32>,
    /// Since when the side has been waiting: the producer for room in a
    /// full ring, the consumer for an item in an empty one. `None` while it
    /// is not waiting (or not attached).
    pub waiting_since: Option<SystemTime>,
}

impl RoleInfo {
    /// One word for humans: `alive`, `dead` (attached, lock gone: it
    /// crashed), `closed` or `never`.
    pub fn describe(&self) -> &'static str {
        match (self.alive, self.state) {
            (true, _) => "alive",
            (false, RoleState::Attached) => "dead",
            (false, RoleState::Closed) => "closed",
            (false, RoleState::Failed) => "failed",
            (false, RoleState::Never) => "never attached",
            (false, RoleState::Subscribing) => "being subscribed",
            (false, RoleState::Unknown(_)) => "unknown",
        }
    }
}

/// One subscribed consumer, as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriberInfo {
    /// The name it subscribed under (`?` when the cursor's name bytes are
    /// damaged).
    pub name: String,
    /// Its cursor's index in the header.
    pub cursor: u32,
    /// Its consumer's state, liveness, pid and wait.
    pub role: RoleInfo,
    /// Items it has released.
    pub read_seq: u64,
    /// Arrow rings: the end of the last message it released.
    pub arena_released: u64,
    /// Producer sessions whose end it has not read yet.
    pub ends_pending: u64,
    /// The producer dropped it ([`Policy::Lag`](super::Policy::Lag)): it no
    /// longer holds the producer back; its consumer, when it comes back,
    /// is told how many items it missed.
    pub dropped: bool,
}

/// A snapshot of a ring's header. The sequences are read one after the
/// other while both sides may run, so they are each exact but not taken at
/// the same instant.
#[derive(Debug, Clone)]
pub struct RingInfo {
    /// The segment file.
    pub path: PathBuf,
    /// The validated geometry.
    pub layout: Layout,
    /// Slots published by producers so far.
    pub write_seq: u64,
    /// Slots released by every subscribed consumer (the slowest one's
    /// position; with none subscribed, where the producer's room starts).
    pub read_seq: u64,
    /// The producer side.
    pub producer: RoleInfo,
    /// The consumer side: the slowest subscriber (a live one first), or
    /// `Never` when none is subscribed. Its `alive` says whether any
    /// consumer is attached and alive.
    pub consumer: RoleInfo,
    /// Every subscribed consumer, in cursor order.
    pub subscribers: Vec<SubscriberInfo>,
    /// Producer attachments so far.
    pub producer_sessions: u64,
    /// Arrow rings: arena position after the last message written.
    pub arena_head: u64,
    /// Arrow rings: arena bytes released so far.
    pub arena_released: u64,
    /// Why the last producer failed, when [`RoleState::Failed`].
    pub producer_failure: Option<String>,
    /// Producer sessions whose end is recorded in the end log and not yet
    /// read by every subscribed consumer (`ends_head - ends_seen` of the
    /// slowest, 0 when they contradict).
    pub ends_pending: u64,
}

impl SubscriberInfo {
    /// Items published and not yet released by this consumer (clamped to
    /// the capacity), for a ring whose `write_seq` is `write_seq`.
    pub fn lag(&self, info: &RingInfo) -> u64 {
        let behind = info.write_seq.saturating_sub(self.read_seq);
        // A dropped subscriber may be more than a ring behind: its lag is
        // what it will have missed.
        if self.dropped {
            behind
        } else {
            behind.min(info.layout.capacity)
        }
    }

    /// Arrow rings: arena bytes this consumer has not released (clamped to
    /// the arena); 0 when it released every published message.
    pub fn arena_lag(&self, info: &RingInfo) -> u64 {
        if self.lag(info) == 0 {
            return 0;
        }
        info.arena_head
            .saturating_sub(self.arena_released)
            .min(info.layout.arena_len)
    }
}

impl RingInfo {
    /// Published slots not yet released (clamped to the capacity).
    pub fn lag(&self) -> u64 {
        self.write_seq
            .saturating_sub(self.read_seq)
            .min(self.layout.capacity)
    }

    /// Arrow rings: arena bytes written and not yet released, including the
    /// padding and skipped tails between messages (clamped to the arena);
    /// 0 when every published message is released.
    pub fn arena_used(&self) -> u64 {
        if self.lag() == 0 {
            return 0;
        }
        self.arena_head
            .saturating_sub(self.arena_released)
            .min(self.layout.arena_len)
    }

    /// When the segment was created.
    pub fn created(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(self.layout.created_unix_ns)
    }
}

/// Reads the header of segment `name` in `opts.dir` without attaching.
///
/// # Errors
///
/// As opening a segment: `NotFound`, `PermissionDenied` (read permission is
/// enough), `NotReady`, `BadHeader` for a file that is not a valid ring, I/O.
pub fn inspect(name: &str, opts: &SegmentOptions) -> Result<RingInfo, OpenError> {
    let seg = Segment::open_read_only(name, opts)?;
    let (tail, write_seq) = seg.sequences().map_err(|source| OpenError::BadHeader {
        path: seg.path().to_owned(),
        source,
    })?;
    let h = seg.header();
    // Relaxed: information only, each word stands alone.
    let pid = |w: u32| (w != 0).then_some(w);
    let since = |ns: u64| (ns != 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns));
    // Acquire loads: each pairs with the Release store of its writer
    // (the role-state stores at attach/detach, the positions' stores);
    // nothing is read through them but numbers.
    let ends_head = h.producer.ends_head.load(Ordering::Acquire);
    let subscribers: Vec<SubscriberInfo> = seg
        .cursors()
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            matches!(
                c.subscription.load(Ordering::Acquire),
                CURSOR_SUBSCRIBED | CURSOR_DROPPED
            )
        })
        .map(|(i, c)| {
            let alive = seg.cursor_alive(i as u32);
            SubscriberInfo {
                name: c.load_name().unwrap_or_else(|| "?".into()),
                cursor: i as u32,
                role: RoleInfo {
                    state: RoleState::from_word(c.consumer_state.load(Ordering::Acquire)),
                    alive,
                    pid: pid(c.consumer_pid.load(Ordering::Relaxed)),
                    // One that died while waiting left its word set.
                    waiting_since: since(c.waiting_since_ns.load(Ordering::Relaxed))
                        .filter(|_| alive),
                },
                read_seq: c.read_seq.load(Ordering::Acquire),
                arena_released: c.arena_released.load(Ordering::Acquire),
                ends_pending: ends_head.saturating_sub(c.ends_seen.load(Ordering::Acquire)),
                dropped: c.subscription.load(Ordering::Acquire) == CURSOR_DROPPED,
            }
        })
        .collect();
    // The slowest subscriber, a live one first among equals.
    let slowest = subscribers
        .iter()
        .filter(|s| !s.dropped)
        .min_by_key(|s| (s.read_seq, !s.role.alive));
    let read_seq = slowest.map_or(tail, |s| s.read_seq.min(write_seq));
    let producer_state = h.producer.producer_state.load(Ordering::Acquire);
    let arena_released = slowest.map_or(0, |s| s.arena_released);
    let arena_head = h.producer.arena_head.load(Ordering::Acquire);
    // Relaxed: a counter, ordered with nothing.
    let producer_sessions = h.producer.producer_sessions.load(Ordering::Relaxed);
    // After the Acquire load of producer_state above, which pairs with the
    // Release store of ROLE_FAILED that follows the reason's stores.
    let producer_failure = (producer_state == ROLE_FAILED).then(|| h.producer.failure.load());
    let ends_pending = subscribers
        .iter()
        .map(|s| s.ends_pending)
        .max()
        .unwrap_or(0);
    let producer_pid = pid(h.producer.producer_pid.load(Ordering::Relaxed));
    let producer_alive = seg.role_alive(Role::Producer);
    // A side that died while waiting left its word set: it waits no more.
    let producer_waiting =
        since(h.producer.blocked_since_ns.load(Ordering::Relaxed)).filter(|_| producer_alive);
    let consumer = slowest.map_or(
        RoleInfo {
            state: RoleState::Never,
            alive: false,
            pid: None,
            waiting_since: None,
        },
        |s| RoleInfo {
            alive: subscribers.iter().any(|s| s.role.alive),
            ..s.role
        },
    );
    Ok(RingInfo {
        path: seg.path().to_owned(),
        layout: *seg.layout(),
        write_seq,
        read_seq,
        producer: RoleInfo {
            state: RoleState::from_word(producer_state),
            alive: producer_alive,
            pid: producer_pid,
            waiting_since: producer_waiting,
        },
        consumer,
        subscribers,
        producer_sessions,
        arena_head,
        arena_released,
        producer_failure,
        ends_pending,
    })
}

/// Names of the regular files in `dir`, sorted: the candidates for
/// [`inspect`]. Anything else (directories, FIFOs, sockets, symlinks) is
/// left out, since opening a FIFO would block.
///
/// # Errors
///
/// Reading the directory failed.
pub fn list_candidates(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(ty) = entry.file_type() else { continue };
        if !ty.is_file() {
            continue;
        }
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}
