//! Errors of the shared-memory layer: one enum for attaching to a segment,
//! small ones for the data path.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::header::HeaderError;
use crate::error::CapacityError;
use crate::wait::would_block;

/// A side of the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The process that writes slots.
    Producer,
    /// The process that reads slots.
    Consumer,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        })
    }
}

/// Why a segment could not be created, opened or attached to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The segment name breaks a rule.
    #[error("bad ring name {name:?}: it {why}")]
    BadName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// No such segment.
    #[error("{}: no such ring", .path.display())]
    NotFound {
        /// The segment file.
        path: PathBuf,
    },
    /// `create` found a file of that name.
    #[error("{}: already exists", .path.display())]
    AlreadyExists {
        /// The segment file.
        path: PathBuf,
    },
    /// The file's permissions do not let this process open it.
    #[error("{}: permission denied", .path.display())]
    PermissionDenied {
        /// The segment file.
        path: PathBuf,
    },
    /// The creator never marked the segment ready (still initialising, or it
    /// died while doing so: remove the file and create it again).
    #[error("{}: not ready after {waited:?} (creator still initialising, or died doing so)", .path.display())]
    NotReady {
        /// The segment file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// The header is invalid or contradicts the file.
    #[error("{}: {source}", .path.display())]
    BadHeader {
        /// The segment file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: HeaderError,
    },
    /// The segment's owner or permissions let a process this one does not
    /// trust write it (see [`SegmentOptions::allow_shared`](super::SegmentOptions::allow_shared)).
    #[error("{}: refusing to trust this ring: {why}", .path.display())]
    Untrusted {
        /// The segment file.
        path: PathBuf,
        /// Who may write it, and what would allow it.
        why: String,
    },
    /// The segment holds another kind of ring or another slot type.
    #[error("{}: {what}", .path.display())]
    Mismatch {
        /// The segment file.
        path: PathBuf,
        /// What differs, with both values.
        what: String,
    },
    /// Another live process holds this role.
    #[error("{}: the {role} role is taken by another live process", .path.display())]
    RoleTaken {
        /// The segment file.
        path: PathBuf,
        /// The role asked for.
        role: Role,
    },
    /// The consumer subscribed under this name is attached and alive.
    #[error("{}: consumer {name:?} is attached in another live process", .path.display())]
    SubscriberAttached {
        /// The segment file.
        path: PathBuf,
        /// The subscription's name.
        name: String,
    },
    /// Every consumer cursor of the ring holds a subscription: unsubscribe
    /// one (`laminar-ring unsubscribe`), or create the ring with more.
    #[error(
        "{}: all {max} consumer cursors are subscribed ({names}); unsubscribe one, or remove \
         the ring and create it again with more consumers",
        .path.display()
    )]
    NoFreeCursor {
        /// The segment file.
        path: PathBuf,
        /// Cursors the ring was created with.
        max: u32,
        /// The subscriptions' names, comma-separated.
        names: String,
    },
    /// Every lane of a fan-in stream has a live producer
    /// ([`ShmProducer::join`](super::ShmProducer::join)).
    #[error("stream {stream:?}: all {max} lanes have a live producer")]
    NoFreeLane {
        /// The stream's name.
        stream: String,
        /// Lanes a stream may have ([`MAX_LANES`](super::MAX_LANES)).
        max: u32,
    },
    /// A subscription name breaks a rule.
    #[error("bad consumer name {name:?}: it {why}")]
    BadSubscriber {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// No subscription of that name (unsubscribing).
    #[error("{}: no consumer subscribed as {name:?}", .path.display())]
    NotSubscribed {
        /// The segment file.
        path: PathBuf,
        /// The name asked for.
        name: String,
    },
    /// The ring was removed (unlinked) while this process was attaching:
    /// open or create it again.
    #[error("{}: the ring was removed while attaching to it", .path.display())]
    Removed {
        /// The segment file.
        path: PathBuf,
    },
    /// [`remove_unused_as_seen`](super::remove_unused_as_seen): a producer
    /// wrote to the ring since it was inspected; nothing was removed.
    #[error("{}: a producer wrote to the ring since it was inspected", .path.display())]
    Changed {
        /// The segment file.
        path: PathBuf,
    },
    /// [`remove_unused`](super::remove_unused) found processes attached.
    #[error("{}: in use by a {}", .path.display(), roles_text(.roles))]
    InUse {
        /// The segment file.
        path: PathBuf,
        /// The roles held (a creator still initialising counts as a
        /// producer).
        roles: Vec<Role>,
    },
    /// A producer attaching found the end log full: the consumer has not
    /// read the ends of `pending` earlier producer sessions, and did not
    /// read enough of them within the attach timeout
    /// ([`SegmentOptions::attach_timeout`](super::SegmentOptions::attach_timeout)).
    /// Nothing was stored; the role was given back.
    #[error(
        "{}: the consumer has not read the ends of {pending} earlier producer sessions \
         (room for {max}); gave up attaching after {waited:?}",
        .path.display()
    )]
    EndLogFull {
        /// The segment file.
        path: PathBuf,
        /// Ends appended and not yet read by the consumer.
        pending: u64,
        /// The most a producer may find pending and attach.
        max: u64,
        /// How long it waited.
        waited: Duration,
    },
    /// A size that does not fit this machine's address space.
    #[error("{}: {len} bytes is too large to map", .path.display())]
    TooLarge {
        /// The segment file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The slot type needs a stricter alignment than a segment can give its
    /// slots (they are aligned to at most a page: `MAX_SLOT_ALIGN`).
    #[error(
        "slot type {type_name} is aligned to {align} bytes; a ring's slots are aligned to at most {max}"
    )]
    SlotAlignment {
        /// The slot type.
        type_name: &'static str,
        /// Its alignment.
        align: usize,
        /// The largest slot alignment a segment guarantees.
        max: u32,
    },
    /// A capacity that `create` refuses (zero, not a power of two, or above
    /// 2^32 slots).
    #[error("invalid ring geometry: {0}")]
    Capacity(#[from] CapacityError),
    /// Invalid geometry asked of `create`.
    #[error("invalid ring geometry: {0}")]
    Geometry(String),
    /// Any other I/O error.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The segment file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn roles_text(roles: &[Role]) -> String {
    let names: Vec<String> = roles.iter().map(ToString::to_string).collect();
    names.join(" and a ")
}

impl OpenError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Maps the errors of opening a file to their own variants.
    pub(crate) fn from_open(path: &Path, e: std::io::Error) -> Self {
        let path = path.to_owned();
        match e.kind() {
            std::io::ErrorKind::NotFound => Self::NotFound { path },
            std::io::ErrorKind::AlreadyExists => Self::AlreadyExists { path },
            std::io::ErrorKind::PermissionDenied => Self::PermissionDenied { path },
            _ => Self::Io { path, source: e },
        }
    }
}

/// Why a non-blocking pop returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShmTryPopError {
    /// Nothing to read now; a producer is attached, or none has attached yet.
    #[error("ring is empty")]
    Empty,
    /// The ring is drained and the producer closed the stream. A new producer
    /// may attach later and continue.
    #[error("end of stream: the producer closed the ring")]
    EndOfStream,
    /// The ring is drained and the producer died without closing. Every item
    /// it committed has been delivered; a new producer may attach.
    #[error("the producer died; every committed item was delivered")]
    PeerGone,
    /// The ring is drained and the producer gave up with an error
    /// ([`ShmProducer::fail`](super::ShmProducer::fail)); its reason is
    /// [`ShmConsumer::producer_failure`](super::ShmConsumer::producer_failure).
    /// Every item it committed has been delivered; a new producer may attach.
    #[error("the producer failed; every committed item was delivered")]
    ProducerFailed,
    /// The ring's end log holds a value no producer keeping the protocol
    /// writes (another process damaged it): how the stream goes on cannot
    /// be known.
    #[error("damaged ring: {0}")]
    BadHeader(HeaderError),
    /// The producer dropped this consumer's subscription (the ring's policy
    /// is [`Policy::Lag`](crate::shm::Policy::Lag): it fell the lag bound
    /// behind, or was dead for the grace period) and overwrote `missed`
    /// items it had not read. It is subscribed again; the next pop reads
    /// the oldest item the ring still holds. `missed` is 0 when it lost no
    /// item but the ends of producer sessions it was too far behind to
    /// read.
    #[error("this consumer fell behind and was dropped: it missed {missed} items")]
    Lagged {
        /// Items it will never see.
        missed: u64,
    },
}

would_block!(ShmTryPopError::Empty);

impl ShmTryPopError {
    /// The error of a blocking pop: `Empty` at the deadline is `Timeout`.
    pub(crate) fn into_pop_error(self) -> ShmPopError {
        match self {
            Self::Empty => ShmPopError::Timeout,
            Self::EndOfStream => ShmPopError::EndOfStream,
            Self::PeerGone => ShmPopError::PeerGone,
            Self::ProducerFailed => ShmPopError::ProducerFailed,
            Self::BadHeader(e) => ShmPopError::BadHeader(e),
            Self::Lagged { missed } => ShmPopError::Lagged { missed },
        }
    }
}

/// Why a blocking pop returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShmPopError {
    /// Nothing arrived before the deadline.
    #[error("timed out waiting for an item")]
    Timeout,
    /// See [`ShmTryPopError::EndOfStream`].
    #[error("end of stream: the producer closed the ring")]
    EndOfStream,
    /// See [`ShmTryPopError::PeerGone`].
    #[error("the producer died; every committed item was delivered")]
    PeerGone,
    /// See [`ShmTryPopError::ProducerFailed`].
    #[error("the producer failed; every committed item was delivered")]
    ProducerFailed,
    /// See [`ShmTryPopError::BadHeader`].
    #[error("damaged ring: {0}")]
    BadHeader(HeaderError),
    /// See [`ShmTryPopError::Lagged`].
    #[error("this consumer fell behind and was dropped: it missed {missed} items")]
    Lagged {
        /// Items it will never see.
        missed: u64,
    },
}

/// Why a push did not happen; the value is handed back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ShmPushError<T> {
    /// The ring is full (`try_push`), or stayed full until the deadline.
    Full(T),
    /// The ring is full and the consumer that had attached is gone (died or
    /// detached). Items stay in the ring; a restarted consumer resumes at the
    /// first one it had not released.
    ConsumerGone(T),
}

impl<T> ShmPushError<T> {
    /// The value that was not pushed.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(v) | Self::ConsumerGone(v) => v,
        }
    }
}

would_block!(ShmPushError<T>::Full);

impl<T> fmt::Debug for ShmPushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full(_) => "ShmPushError::Full(..)",
            Self::ConsumerGone(_) => "ShmPushError::ConsumerGone(..)",
        })
    }
}

impl<T> fmt::Display for ShmPushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full(_) => "ring is full",
            Self::ConsumerGone(_) => "ring is full and its consumer is gone",
        })
    }
}

impl<T> std::error::Error for ShmPushError<T> {}
