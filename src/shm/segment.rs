//! Segment files: create, open, remove; the mapping; role locks.
//!
//! A segment is a file, by default in `/dev/shm` (which is what `shm_open`
//! uses on Linux: opening `/dev/shm/NAME` directly is the same call, and lets
//! one code path serve any directory, such as a hugetlbfs mount or a disk).
//! It is created with `O_CREAT | O_EXCL | O_NOFOLLOW` and mode 0600 unless
//! asked otherwise, sized with `ftruncate` (so it starts zeroed, with `state`
//! = initialising), its memory committed with `posix_fallocate`,
//! initialised, and only then marked ready with a Release store.
//!
//! Roles are open-file-description (OFD) write locks on single bytes of the
//! file: byte 0 for the producer, byte `16 + i` for the consumer of cursor
//! `i`, byte 1 for a process changing the cursor table (subscribing or
//! unsubscribing), byte 2 for a creator or a remover. The kernel drops a
//! lock when its holder's descriptor closes, including when the process dies,
//! so a peer's death is seen without trusting PIDs: `F_OFD_GETLK` on the
//! peer's byte reports whether anyone holds it.

use std::fs::{File, OpenOptions};
use std::mem::offset_of;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{FcntlArg, fcntl};

use super::error::{OpenError, Role};
use super::header::{
    ConsumerCursor, DEFAULT_CONSUMERS, DROPPED_ENDS, END_LOG_LEN, FLAG_LAG, FLAG_TEMPORARY,
    FLAGS_KNOWN, HEADER_LEN, HeaderError, HeaderFields, InfoLine, Layout, MAGIC, MAX_CONSUMERS,
    MAX_SUBSCRIBER_NAME, ROLE_NEVER, ROLE_SUBSCRIBING, RingKind, SAVED_JOINED, STATE_INITIALIZING,
    STATE_READY, SegmentHeader, snapshot_sequences, validate,
};
use crate::fanout::{self, CURSOR_DROPPED, CURSOR_FREE, CURSOR_SUBSCRIBED, Policy, Start};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// Default directory of segments.
pub const DEFAULT_DIR: &str = "/dev/shm";
/// Longest segment name (Linux allows 255; macOS's POSIX shm only 31).
pub const MAX_NAME_LEN: usize = 255;
/// How long taking a role's lock looks again before it reports the role
/// taken (see `Segment::lock_as`).
const FORK_PATIENCE: Duration = Duration::from_millis(100);

/// The byte whose lock a creator holds from before it sizes the file until
/// it has marked the segment ready, and a remover while it removes.
const INIT_LOCK_BYTE: libc::off_t = 2;
/// The byte whose lock a process holds while it subscribes or unsubscribes
/// a consumer (briefly: no one waits on it for long).
const TABLE_LOCK_BYTE: libc::off_t = 1;
/// The consumer of cursor `i` holds the lock of byte `CURSOR_LOCK_BASE + i`.
const CURSOR_LOCK_BASE: libc::off_t = 16;
/// The name a consumer subscribes under unless told otherwise.
pub const DEFAULT_SUBSCRIBER: &str = "default";
/// How long `lock_role` waits for a remover that holds the lock bytes (it
/// holds them for microseconds) before it reports the role taken.
const REMOVER_PATIENCE: Duration = Duration::from_millis(50);

/// Where a segment lives and how it is opened.
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// Directory of the segment file (default [`DEFAULT_DIR`]).
    pub dir: PathBuf,
    /// Permission bits for a new segment (default 0o600).
    pub mode: u32,
    /// How long `open` waits for a segment whose creator is still
    /// initialising it (default 2 s).
    pub ready_timeout: Duration,
    /// How long a producer attaching waits for room in the ring's end log
    /// (default 10 s): the consumer has not yet read the ends of 15 earlier
    /// producer sessions (`END_LOG_LEN - 1`). At the deadline the attach
    /// fails with [`OpenError::EndLogFull`] and leaves the ring as it was.
    pub attach_timeout: Duration,
    /// Also open a segment that its group may write (such as one created
    /// with `mode: 0o660`), or that another user owns with a group this
    /// process is in (default `false`).
    ///
    /// By default `open` refuses a segment that is not owned by this
    /// process's effective user or that anyone else may write: in a
    /// world-writable directory such as `/dev/shm`, another local user can
    /// create a file under a ring's name first, then feed this process data,
    /// rewrite zero-copy buffers under it, or shrink the file (SIGBUS). Set
    /// this only when every member of the segment's group is trusted. A
    /// segment that every user may write is refused either way.
    pub allow_shared: bool,
    /// Create the ring temporary (default `false`): a consumer that reaches
    /// a clean end of stream removes it when no other process holds a role
    /// in it ([`ShmConsumer::remove_if_unused`](super::ShmConsumer::remove_if_unused)).
    /// Only `create` reads it; an existing ring keeps what it was created
    /// with ([`Layout::temporary`]).
    pub temporary: bool,
    /// How many consumers a new ring can have subscribed at once (default
    /// [`DEFAULT_CONSUMERS`], at most [`MAX_CONSUMERS`]): each has a cursor
    /// of 128 bytes in the header and, in an Arrow ring, its share of the
    /// save area. Only `create` reads it.
    pub max_consumers: u32,
    /// The name a consumer attaches under (default [`DEFAULT_SUBSCRIBER`]):
    /// 1 to 32 of `A-Z a-z 0-9 . _ -`. A name not yet subscribed is
    /// subscribed (starting where [`start`](Self::start) says); one already
    /// subscribed resumes at its first unreleased item. Producers ignore it.
    pub subscriber: String,
    /// Where a new subscription starts (default [`Start::Earliest`]: the
    /// oldest item the ring still holds, so nothing already in the ring is
    /// missed). An existing subscription resumes where it stands.
    pub start: Start,
    /// What the producer of a new ring does about a subscriber that holds
    /// it back (default [`Policy::Block`]). Only `create` reads it; an
    /// existing ring keeps what it was created with ([`Layout::policy`]).
    pub policy: Policy,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(DEFAULT_DIR),
            mode: 0o600,
            ready_timeout: Duration::from_secs(2),
            attach_timeout: Duration::from_secs(10),
            allow_shared: false,
            temporary: false,
            max_consumers: DEFAULT_CONSUMERS,
            subscriber: DEFAULT_SUBSCRIBER.to_owned(),
            start: Start::Earliest,
            policy: Policy::Block,
        }
    }
}

/// Checks a policy for a ring of `kind` with `capacity` slots.
///
/// # Errors
///
/// [`OpenError::Geometry`] saying what is wrong.
pub(crate) fn check_policy(policy: Policy, kind: RingKind, capacity: u64) -> Result<(), OpenError> {
    let Policy::Lag { bound, grace } = policy else {
        return Ok(());
    };
    if grace.as_millis() > u128::from(u64::MAX) {
        return Err(OpenError::Geometry(format!(
            "lag grace {grace:?} is too long"
        )));
    }
    match bound {
        None => Ok(()),
        Some(_) if kind == RingKind::Arrow => Err(OpenError::Geometry(
            "an Arrow ring takes a lag grace only, no lag bound: a live consumer's zero-copy \
             batches lie in the arena, which the producer must not overwrite"
                .into(),
        )),
        Some(b) if (1..=capacity).contains(&b) => Ok(()),
        Some(b) => Err(OpenError::Geometry(format!(
            "lag bound {b} is not between 1 and the capacity, {capacity}"
        ))),
    }
}

/// Checks a subscription name: 1 to 32 bytes of `A-Z a-z 0-9 . _ -`.
///
/// # Errors
///
/// [`OpenError::BadSubscriber`] saying which rule it breaks.
pub fn validate_subscriber(name: &str) -> Result<(), OpenError> {
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_SUBSCRIBER_NAME {
        Some("is longer than 32 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("has a character other than A-Z a-z 0-9 . _ -")
    } else {
        None
    };
    match why {
        Some(why) => Err(OpenError::BadSubscriber {
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// The owner, group and permission bits of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileOwner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mode: u32,
}

/// Whether a segment file may be trusted by a process of effective uid
/// `euid`, which is a member of the groups for which `in_group` is true;
/// `Err` says why not (see [`SegmentOptions::allow_shared`]).
pub(crate) fn check_owner(
    file: FileOwner,
    euid: u32,
    in_group: impl Fn(u32) -> bool,
    allow_shared: bool,
) -> Result<(), String> {
    let FileOwner { uid, gid, mode } = file;
    let mode = mode & 0o7777;
    if mode & 0o002 != 0 {
        return Err(format!("mode {mode:04o} lets every user write it"));
    }
    if allow_shared {
        if uid == euid || in_group(gid) {
            return Ok(());
        }
        return Err(format!(
            "it is owned by uid {uid} and gid {gid}, neither of them this process's"
        ));
    }
    if uid != euid {
        return Err(format!(
            "it is owned by uid {uid}, not by this process's effective uid {euid} \
             (allow a shared ring, `allow_shared` or `--shared`, to trust a ring \
             of a group this process is in)"
        ));
    }
    if mode & 0o020 != 0 {
        return Err(format!(
            "mode {mode:04o} lets its group (gid {gid}) write it (allow a shared \
             ring, `allow_shared` or `--shared`, if that group is trusted)"
        ));
    }
    Ok(())
}

/// [`check_owner`] for this process.
fn check_owner_of(meta: &std::fs::Metadata, allow_shared: bool) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let file = FileOwner {
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode(),
    };
    use nix::unistd::{getegid, geteuid, getgroups};
    let in_group = |gid: u32| {
        gid == getegid().as_raw()
            || getgroups().is_ok_and(|groups| groups.iter().any(|g| g.as_raw() == gid))
    };
    check_owner(file, geteuid().as_raw(), in_group, allow_shared)
}

/// Checks a segment name: non-empty, at most [`MAX_NAME_LEN`] bytes, no `/`,
/// no NUL, not `.` or `..`.
///
/// # Errors
///
/// [`OpenError::BadName`] saying which rule the name breaks.
pub fn validate_name(name: &str) -> Result<(), OpenError> {
    let why = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_NAME_LEN {
        "is longer than 255 bytes (keep it under 32 for macOS)"
    } else if name.contains('/') {
        "contains '/'"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else if name == "." || name == ".." {
        "is '.' or '..'"
    } else {
        return Ok(());
    };
    Err(OpenError::BadName {
        name: name.to_owned(),
        why,
    })
}

/// An open, mapped, validated segment. Holds the file descriptor (and so any
/// role lock taken through it) for as long as it lives.
pub(crate) struct Segment {
    path: PathBuf,
    file: File,
    map: MmapRaw,
    layout: Layout,
    /// [`SegmentOptions::attach_timeout`] of the options it was opened with.
    attach_timeout: Duration,
    /// [`SegmentOptions::subscriber`] and [`SegmentOptions::start`]: how a
    /// consumer attaches.
    subscriber: String,
    start: Start,
}

impl Segment {
    /// Creates a new segment with `layout`, initialised and marked ready.
    pub(crate) fn create(
        name: &str,
        layout: Layout,
        opts: &SegmentOptions,
    ) -> Result<Self, OpenError> {
        Self::create_subscribed(name, layout, opts, &[])
    }

    /// Creates a new segment as [`create`](Self::create) does, subscribed
    /// under each of `names` (as [`subscribe_names`](Self::subscribe_names)
    /// does) before it is marked ready: no process ever opens it without
    /// those subscriptions, and a creator killed before READY leaves a file
    /// that openers find not ready and remove.
    pub(crate) fn create_subscribed(
        name: &str,
        layout: Layout,
        opts: &SegmentOptions,
        names: &[String],
    ) -> Result<Self, OpenError> {
        validate_name(name)?;
        check_policy(opts.policy, layout.kind, layout.capacity)?;
        let path = opts.dir.join(name);
        let io = |source| OpenError::io(&path, source);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(opts.mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| OpenError::from_open(&path, e))?;
        // Held until the segment is ready: an opener that finds the file
        // sized but not ready, and this lock free, knows the creator died
        // (the kernel drops the lock with the process). Taken at once; a
        // remover that got there first (it holds the byte while it
        // unlinks), or a file unlinked before we hold it, is `Removed`:
        // create again.
        let removed = || OpenError::Removed { path: path.clone() };
        match lock_byte(&file, INIT_LOCK_BYTE, libc::F_WRLCK) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                return Err(removed());
            }
            Err(e) => return Err(io(e)),
        }
        if !still_linked(&file, &path).map_err(io)? {
            return Err(removed());
        }
        // From here on, a failure must not leave a half-made file behind.
        // A duplicate descriptor shares the open file description, so byte
        // 2 stays locked through it until the cleanup below: no remover
        // unlinks the file meanwhile, and the path still names our file
        // when we unlink it (never another creator's).
        let keep = file.try_clone().map_err(io)?;
        let result = (|| {
            file.set_len(layout.total_len).map_err(io)?;
            // Commit the memory now. tmpfs allocates a page on its first
            // write, and if /dev/shm is full by then the writer dies of
            // SIGBUS mid-stream; allocating here makes that ENOSPC at create
            // and takes page allocation and zeroing off the data path.
            let len = libc::off_t::try_from(layout.total_len)
                .map_err(|_| io(std::io::Error::other("segment too large")))?;
            nix::fcntl::posix_fallocate(&file, 0, len).map_err(|e| io(e.into()))?;
            // A raw mapping: every access goes through pointers we check.
            let map = MmapOptions::new()
                .len(layout.total_len as usize)
                .populate()
                .map_raw(&file)
                .map_err(io)?;
            let mut layout = layout;
            layout.temporary = opts.temporary;
            layout.policy = opts.policy;
            layout.created_unix_ns = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let seg = Self {
                attach_timeout: opts.attach_timeout,
                subscriber: opts.subscriber.clone(),
                start: opts.start,
                path: path.clone(),
                file,
                map,
                layout,
            };
            // The mapping is at least HEADER_LEN bytes (total_len >
            // slots_offset >= HEADER_LEN), page-aligned and zero-filled, so
            // every atomic in the header is a valid zero.
            // SAFETY: in bounds and aligned; openers copy these fields only
            // after they see `state` READY (below), except the magic, which
            // they only compare (see open_as).
            unsafe {
                std::ptr::write_volatile(
                    seg.map.as_mut_ptr().cast::<HeaderFields>(),
                    layout.fields(),
                );
            }
            let info = &seg.header().info;
            let mut flags = if layout.temporary { FLAG_TEMPORARY } else { 0 };
            if let Policy::Lag { bound, grace } = layout.policy {
                flags |= FLAG_LAG;
                // Relaxed (both): published by the READY store below.
                info.lag_bound.store(bound.unwrap_or(0), Ordering::Relaxed);
                info.lag_grace_ms
                    .store(grace.as_millis() as u64, Ordering::Relaxed);
            }
            // Relaxed: published by the READY store below.
            info.flags.store(flags, Ordering::Relaxed);
            if !names.is_empty() {
                // Before READY: the subscriptions' stores are published by
                // the READY store below too.
                seg.subscribe_names(names)?;
            }
            // SYNC POINT ready: Release publishes every header field; pairs
            // with the Acquire load in wait_ready.
            seg.header()
                .info
                .state
                .store(STATE_READY, Ordering::Release);
            // After READY, so an opener that sees the lock free re-reads
            // READY (see open_as).
            lock_byte(&seg.file, INIT_LOCK_BYTE, libc::F_UNLCK).map_err(io)?;
            Ok(seg)
        })();
        if result.is_err() && still_linked(&keep, &path).unwrap_or(false) {
            let _ = std::fs::remove_file(&path);
        }
        drop(keep);
        result
    }

    /// Opens an existing segment: waits for it to be ready, validates the
    /// header against the file, and maps it.
    pub(crate) fn open(name: &str, opts: &SegmentOptions) -> Result<Self, OpenError> {
        Self::open_as(name, opts, true)
    }

    /// Opens an existing segment to read its header only (no role can be
    /// taken through it, and nothing in it may be written).
    pub(crate) fn open_read_only(name: &str, opts: &SegmentOptions) -> Result<Self, OpenError> {
        Self::open_as(name, opts, false)
    }

    fn open_as(name: &str, opts: &SegmentOptions, writable: bool) -> Result<Self, OpenError> {
        validate_name(name)?;
        let path = opts.dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            // O_NONBLOCK: opening a FIFO by mistake must not hang; it has no
            // effect on the regular files that segments are.
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| OpenError::from_open(&path, e))?;
        let meta = file.metadata().map_err(|e| OpenError::io(&path, e))?;
        if !meta.is_file() {
            return Err(OpenError::Mismatch {
                path,
                what: "not a regular file, so not a ring".into(),
            });
        }
        // The descriptor's own metadata: the file checked is the file mapped.
        if let Err(why) = check_owner_of(&meta, opts.allow_shared) {
            return Err(OpenError::Untrusted { path, why });
        }
        let deadline = Instant::now() + opts.ready_timeout;
        // The creator may be between open and ftruncate: wait for the size.
        let file_len = loop {
            let len = file.metadata().map_err(|e| OpenError::io(&path, e))?.len();
            if len >= HEADER_LEN as u64 {
                break len;
            }
            // A creator sizes the file in one ftruncate, from 0 to its full
            // length: a non-empty file shorter than a header is no ring.
            if len > 0 {
                return Err(OpenError::BadHeader {
                    path,
                    source: HeaderError::TooShort { len },
                });
            }
            if Instant::now() >= deadline {
                return Err(OpenError::NotReady {
                    path,
                    waited: opts.ready_timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        // Only the header is mapped until it has been validated: the file may
        // be far longer than the ring it claims to be (a large sparse file),
        // and mapping it whole, let alone populating it, would materialise
        // all of it in memory before we know whether it is a ring at all.
        let head = MmapOptions::new()
            .len(HEADER_LEN)
            .map_raw_read_only(&file)
            .map_err(|e| OpenError::io(&path, e))?;
        // The reference covers only that atomic word, and the mapping
        // outlives every use of it below.
        // SAFETY: the header mapping is HEADER_LEN bytes and page-aligned, so
        // `state` (at a 4-aligned offset inside it) is in bounds and aligned.
        let state = unsafe {
            &*head
                .as_ptr()
                .add(offset_of!(SegmentHeader, info) + offset_of!(InfoLine, state))
                .cast::<AtomicU32>()
        };
        // The creator writes the magic before marking the segment ready: a
        // file with other non-zero bytes there is not a ring being made (a
        // byte still zero may be one the creator has not written yet).
        // The creator may be writing these bytes right now: in Rust's model
        // that race is a data race even for a volatile read, the standard
        // practice for memory another process writes (as the kernel's
        // READ_ONCE); in practice it yields some bytes.
        // SAFETY: the mapping is at least HEADER_LEN bytes (checked above);
        // any 8 bytes are a valid [u8; 8], compared and never trusted.
        let magic = unsafe { std::ptr::read_volatile(head.as_ptr().cast::<[u8; 8]>()) };
        if magic.iter().zip(MAGIC).any(|(&b, m)| b != 0 && b != m) {
            return Err(OpenError::BadHeader {
                path,
                source: HeaderError::BadMagic { found: magic },
            });
        }
        loop {
            // SYNC POINT ready: Acquire pairs with the Release in create.
            match state.load(Ordering::Acquire) {
                STATE_READY => break,
                STATE_INITIALIZING => {}
                // A creator stores only READY there: this file can never
                // become ready, so say so now rather than wait.
                other => {
                    return Err(OpenError::BadHeader {
                        path,
                        source: HeaderError::BadField {
                            field: "state",
                            value: other.into(),
                            why: "0 (initialising) or 0x52454459 (ready)",
                        },
                    });
                }
            }
            // A creator holds the init lock from before it sizes the file
            // (the file is sized: we are past the length loop) until after
            // it stores READY. Free now, with the state still not READY
            // when read again after the probe: the creator died.
            if !byte_locked(&file, INIT_LOCK_BYTE)
                // SYNC POINT ready (as above).
                && state.load(Ordering::Acquire) == STATE_INITIALIZING
            {
                return Err(OpenError::BadHeader {
                    path,
                    source: HeaderError::NeverReady,
                });
            }
            if Instant::now() >= deadline {
                return Err(OpenError::NotReady {
                    path,
                    waited: opts.ready_timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // Only a process breaking the format could still write these bytes,
        // racing with this volatile read as with the magic's above; the copy
        // is what gets validated and used, so at worst validation refuses.
        // SAFETY: in bounds and aligned (above), HeaderFields is Pod, and
        // `state` READY (Acquire) says the creator has finished writing.
        let fields = unsafe { std::ptr::read_volatile(head.as_ptr().cast::<HeaderFields>()) };
        let mut layout = validate(&fields, file_len).map_err(|source| OpenError::BadHeader {
            path: path.clone(),
            source,
        })?;
        // SAFETY: as for `state`: in bounds of the header mapping, aligned.
        let flags = unsafe {
            &*head
                .as_ptr()
                .add(offset_of!(SegmentHeader, info) + offset_of!(InfoLine, flags))
                .cast::<AtomicU32>()
        };
        // Relaxed: after the Acquire load that saw READY (SYNC POINT ready),
        // which the creator stored after this word.
        let flags = flags.load(Ordering::Relaxed);
        if flags & !FLAGS_KNOWN != 0 {
            return Err(OpenError::BadHeader {
                path,
                source: HeaderError::BadField {
                    field: "flags",
                    value: flags.into(),
                    why: "bits 1 (temporary) and 2 (lag) only",
                },
            });
        }
        layout.temporary = flags & FLAG_TEMPORARY != 0;
        if flags & FLAG_LAG != 0 {
            // SAFETY: as for `flags`: in bounds of the header mapping (the
            // InfoLine is its first line), aligned to 8.
            let word = |off: usize| unsafe {
                &*head
                    .as_ptr()
                    .add(offset_of!(SegmentHeader, info) + off)
                    .cast::<AtomicU64>()
            };
            // Relaxed (both): as `flags`.
            let bound = word(offset_of!(InfoLine, lag_bound)).load(Ordering::Relaxed);
            let grace = word(offset_of!(InfoLine, lag_grace_ms)).load(Ordering::Relaxed);
            layout.policy = Policy::Lag {
                bound: (bound != 0).then_some(bound),
                grace: Duration::from_millis(grace),
            };
            if check_policy(layout.policy, layout.kind, layout.capacity).is_err() {
                return Err(OpenError::BadHeader {
                    path,
                    source: HeaderError::BadField {
                        field: "lag_bound",
                        value: bound,
                        why: "0 (none), or 1 to the capacity in a typed ring",
                    },
                });
            }
        }
        drop(head);
        let map_len = usize::try_from(layout.total_len).map_err(|_| OpenError::TooLarge {
            path: path.clone(),
            len: layout.total_len,
        })?;
        // A raw shared mapping of the validated length (`total_len <= file
        // length`), populated only now. Another process shrinking the file
        // later would make accesses fault (SIGBUS); docs/FORMAT.md documents
        // that hazard.
        let map = if writable {
            MmapOptions::new().len(map_len).populate().map_raw(&file)
        } else {
            MmapOptions::new().len(map_len).map_raw_read_only(&file)
        }
        .map_err(|e| OpenError::io(&path, e))?;
        let seg = Self {
            path,
            file,
            map,
            layout,
            attach_timeout: opts.attach_timeout,
            subscriber: opts.subscriber.clone(),
            start: opts.start,
        };
        seg.sequences().map_err(|source| OpenError::BadHeader {
            path: seg.path.clone(),
            source,
        })?;
        Ok(seg)
    }

    /// A snapshot of `(tail_seq, write_seq)`, checked against each other
    /// while a producer and a consumer may both be running
    /// ([`snapshot_sequences`]).
    pub(crate) fn sequences(&self) -> Result<(u64, u64), HeaderError> {
        let h = self.header();
        // Acquire (all three loads): see snapshot_sequences for what each
        // pairs with. The producer's `tail_seq` stands for the consumers'
        // positions: it is the bound the producer last published, which
        // keeps `tail_seq <= write_seq <= tail_seq + capacity` (each
        // consumer's own position is checked by that consumer).
        snapshot_sequences(
            || h.producer.tail_seq.load(Ordering::Acquire),
            || h.producer.write_seq.load(Ordering::Acquire),
            self.layout.capacity,
        )
    }

    /// Removes the segment file `name` (the mapping of anyone attached stays
    /// valid until they detach).
    pub(crate) fn remove(name: &str, dir: &Path) -> Result<(), OpenError> {
        validate_name(name)?;
        let path = dir.join(name);
        std::fs::remove_file(&path).map_err(|e| OpenError::from_open(&path, e))
    }

    /// The validated layout.
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The subscription a consumer attaches under, and where a new one
    /// starts.
    pub(crate) fn subscriber(&self) -> (&str, Start) {
        (&self.subscriber, self.start)
    }

    /// How long a producer attaching waits for room in the end log.
    pub(crate) fn attach_timeout(&self) -> Duration {
        self.attach_timeout
    }

    /// Path of the segment file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The header, for its atomics (the immutable fields were copied into
    /// `layout` at open and are not read from the mapping again).
    pub(crate) fn header(&self) -> &SegmentHeader {
        // Other processes write the header at any time; every byte of
        // SegmentHeader is an atomic or opaque (UnsafeCell), so the shared
        // reference claims nothing those writes break.
        // SAFETY: the mapping is at least HEADER_LEN bytes and page-aligned
        // (checked at create/open), and lives as long as `self`.
        unsafe { &*self.map.as_ptr().cast::<SegmentHeader>() }
    }

    /// The consumers' cursors.
    pub(crate) fn cursors(&self) -> &[ConsumerCursor] {
        // Every byte of ConsumerCursor is an atomic or opaque, as for the
        // header.
        // SAFETY: validate() checked header_len = HEADER_LEN + max_consumers
        // * CURSOR_LEN <= slots_offset <= total_len, within the mapping;
        // HEADER_LEN is a multiple of 128, the cursors' alignment.
        unsafe {
            std::slice::from_raw_parts(
                self.ptr_at(HEADER_LEN as u64).cast::<ConsumerCursor>(),
                self.layout.max_consumers as usize,
            )
        }
    }

    /// Pointer to byte `offset` of the mapping.
    ///
    /// # Safety
    ///
    /// `offset` must be within the validated layout (`<= total_len`).
    pub(crate) unsafe fn ptr_at(&self, offset: u64) -> *mut u8 {
        debug_assert!(offset <= self.layout.total_len);
        // SAFETY: the caller keeps offset within total_len, which validate()
        // checked is within the mapped file length.
        unsafe { self.map.as_mut_ptr().add(offset as usize) }
    }

    /// Takes `role`'s lock; fails with `RoleTaken` if another holds it, and
    /// with `Removed` if the file was unlinked before the lock was taken
    /// (see [`unlink_unused`]: a remover unlinks only while it holds every
    /// role's lock, so a process that holds one and still finds the file
    /// linked attached to the ring that others will open).
    pub(crate) fn lock_role(&self, role: Role) -> Result<(), OpenError> {
        debug_assert_eq!(role, Role::Producer, "consumers lock their cursor");
        self.lock_as(role_byte(role), || OpenError::RoleTaken {
            path: self.path.clone(),
            role,
        })
    }

    /// Takes the lock of `byte` as [`lock_role`](Self::lock_role) does,
    /// with `taken` the error when another process holds it.
    fn lock_as(&self, byte: libc::off_t, taken: impl Fn() -> OpenError) -> Result<(), OpenError> {
        let removed = || OpenError::Removed {
            path: self.path.clone(),
        };
        // A remover holds every lock byte for a few microseconds, then
        // either unlinks the file or lets go: while byte 2 (held after
        // READY by removers only) is taken, wait for it to finish, up to
        // REMOVER_PATIENCE, rather than report the role taken.
        let started = Instant::now();
        let deadline = started + REMOVER_PATIENCE;
        loop {
            match lock_byte(&self.file, byte, libc::F_WRLCK) {
                Ok(()) => break,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                    if !still_linked(&self.file, &self.path).unwrap_or(true) {
                        return Err(removed());
                    }
                    if byte_locked(&self.file, INIT_LOCK_BYTE) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                    // A lock a process let go of may still be held for a
                    // moment: a child that another thread of it forked
                    // shares its open file description until the child's
                    // exec closes it (O_CLOEXEC). Look again for a while.
                    if started.elapsed() < FORK_PATIENCE {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    return Err(taken());
                }
                Err(e) => return Err(OpenError::io(&self.path, e)),
            }
        }
        match still_linked(&self.file, &self.path) {
            Ok(true) => Ok(()),
            other => {
                let _ = lock_byte(&self.file, byte, libc::F_UNLCK);
                match other {
                    Err(e) => Err(OpenError::io(&self.path, e)),
                    _ => Err(removed()),
                }
            }
        }
    }

    /// Unlinks the segment file if no other process holds a role in it
    /// (this one may hold `own`) and every item published has been
    /// released: see [`unlink_unused`].
    ///
    /// # Errors
    ///
    /// [`OpenError::InUse`] naming the roles held; `Changed` when items are
    /// left unreleased; `NotFound` if the file is already gone; I/O.
    pub(crate) fn unlink_if_unused(&self, own: Option<u32>) -> Result<(), OpenError> {
        let h = self.header();
        // Under the locks no producer can publish: everything published has
        // been read and released by every subscriber, or a producer that
        // came and went since keeps its items in the ring. Acquire (all):
        // pairs with the Release stores of write_seq and read_seq by the
        // sides.
        let unchanged = |_: &File| {
            let write = h.producer.write_seq.load(Ordering::Acquire);
            Ok(self.cursors().iter().all(|c| {
                c.subscription.load(Ordering::Acquire) != CURSOR_SUBSCRIBED
                    || c.read_seq.load(Ordering::Acquire) == write
            }))
        };
        match unlink_unused(&self.file, &self.path, own, unchanged) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(roles)) if roles.is_empty() => Err(OpenError::Changed {
                path: self.path.clone(),
            }),
            Ok(Err(roles)) => Err(OpenError::InUse {
                path: self.path.clone(),
                roles,
            }),
            Err(e) => Err(OpenError::from_open(&self.path, e)),
        }
    }

    /// Removes the file `name` in `dir`, whatever it holds, if no process
    /// holds a role in it (see [`unlink_unused`]) and, with `seen`, its
    /// `(write_seq, producer_sessions)` are still those (read under the
    /// locks, when no process can change them): `Changed` otherwise.
    pub(crate) fn remove_unused(
        name: &str,
        dir: &Path,
        seen: Option<(u64, u64)>,
    ) -> Result<(), OpenError> {
        validate_name(name)?;
        let path = dir.join(name);
        // Write access is needed: removers' write locks keep them apart,
        // and a process that may not write a ring does not decide its end
        // (`rm --force` unlinks without locks). Never follow a link, nor
        // block on a FIFO.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => {
                    OpenError::io(&path, std::io::Error::other("a symbolic link, not a ring"))
                }
                _ => OpenError::from_open(&path, e),
            })?;
        let meta = file.metadata().map_err(|e| OpenError::io(&path, e))?;
        if !meta.file_type().is_file() {
            return Err(OpenError::io(
                &path,
                std::io::Error::other("not a regular file, so not a ring"),
            ));
        }
        let unchanged = |f: &File| match seen {
            None => Ok(true),
            Some(seen) => match producer_words(f) {
                Ok(now) => Ok(now == seen),
                // Shorter than a header: not the file that was inspected.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
                Err(e) => Err(e),
            },
        };
        match unlink_unused(&file, &path, None, unchanged) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(roles)) if roles.is_empty() => Err(OpenError::Changed { path }),
            Ok(Err(roles)) => Err(OpenError::InUse { path, roles }),
            Err(e) => Err(OpenError::from_open(&path, e)),
        }
    }

    /// Whether some other open file description holds `role`'s lock: the
    /// process in that role is attached and alive (for
    /// [`Role::Consumer`]: any consumer).
    pub(crate) fn role_alive(&self, role: Role) -> bool {
        match role {
            Role::Producer => byte_locked(&self.file, role_byte(role)),
            Role::Consumer => range_locked(
                &self.file,
                CURSOR_LOCK_BASE,
                self.layout.max_consumers.into(),
            ),
        }
    }

    /// Whether another process holds cursor `i`'s lock: its consumer is
    /// attached and alive.
    pub(crate) fn cursor_alive(&self, i: u32) -> bool {
        byte_locked(&self.file, cursor_byte(i))
    }

    /// Attaches as the consumer subscribed under `name`, subscribing it
    /// first (starting at `start`) when no cursor holds that name; returns
    /// the cursor's index, holding its lock.
    ///
    /// Subscribing takes the table lock (byte 1) for the scan and the
    /// subscription, so two processes never subscribe one name twice;
    /// attaching to an existing subscription takes it too, for the scan.
    pub(crate) fn attach_cursor(&self, name: &str, start: Start) -> Result<u32, OpenError> {
        validate_subscriber(name)?;
        self.with_table_lock(|| {
            self.finish_broken_subscriptions();
            let cursors = self.cursors();
            let found = cursors.iter().position(|c| {
                // Acquire: pairs with the Release store in fanout::subscribe
                // (the name is stored before it).
                is_subscription(c.subscription.load(Ordering::Acquire))
                    && c.load_name().as_deref() == Some(name)
            });
            let (i, new) = match found {
                Some(i) => (i, false),
                // Anything but a subscription, kept or dropped, is free.
                None => match cursors
                    .iter()
                    .position(|c| !is_subscription(c.subscription.load(Ordering::Acquire)))
                {
                    Some(i) => (i, true),
                    None => {
                        return Err(OpenError::NoFreeCursor {
                            path: self.path.clone(),
                            max: self.layout.max_consumers,
                            names: self.subscriber_names().join(", "),
                        });
                    }
                },
            };
            let i = i as u32;
            self.lock_as(cursor_byte(i), || OpenError::SubscriberAttached {
                path: self.path.clone(),
                name: name.to_owned(),
            })?;
            let cursor = &cursors[i as usize];
            if new {
                // Relaxed: published by the subscription's Release store.
                cursor.dropped_at.store(0, Ordering::Relaxed);
                self.subscribe(cursor, name, start, None);
            } else {
                self.resubscribe_dropped(cursor, name);
            }
            Ok(i)
        })
    }

    /// Subscribes each of `names` that no cursor holds yet, at the oldest
    /// item the ring holds, without attaching to it: a fan-in lane just
    /// made takes over the subscriptions of its stream's first lane, so
    /// that a subscriber that has not found the lane yet misses none of
    /// its items (and, under [`Policy::Block`], holds its producer back as
    /// it would in the first lane). A name that is not a valid subscriber
    /// name (a damaged one) is skipped; so are the names that find every
    /// cursor taken.
    pub(crate) fn subscribe_names(&self, names: &[String]) -> Result<(), OpenError> {
        self.with_table_lock(|| {
            self.finish_broken_subscriptions();
            for name in names {
                if validate_subscriber(name).is_err() {
                    continue;
                }
                let cursors = self.cursors();
                // Acquire (both): pair with the Release store in
                // fanout::subscribe (the name is stored before it).
                if cursors.iter().any(|c| {
                    is_subscription(c.subscription.load(Ordering::Acquire))
                        && c.load_name().as_deref() == Some(name.as_str())
                }) {
                    continue;
                }
                let Some(i) = cursors
                    .iter()
                    .position(|c| !is_subscription(c.subscription.load(Ordering::Acquire)))
                else {
                    break;
                };
                let byte = cursor_byte(i as u32);
                // Under the table lock no consumer is attaching; a free
                // cursor whose lock is held anyway is left alone.
                if lock_byte(&self.file, byte, libc::F_WRLCK).is_err() {
                    continue;
                }
                let cursor = &cursors[i];
                // Relaxed: published by the subscription's Release store.
                cursor.dropped_at.store(0, Ordering::Relaxed);
                self.subscribe(cursor, name, Start::Earliest, None);
                let _ = lock_byte(&self.file, byte, libc::F_UNLCK);
            }
            Ok(())
        })
    }

    /// Subscribes again cursor `i`, this process's (it holds its lock),
    /// if the producer dropped it ([`Policy::Lag`]): see
    /// [`resubscribe_dropped`](Self::resubscribe_dropped).
    /// Gives up at once (`false`) if the table lock is held: an attached
    /// consumer does not wait inside a pop; it tries again at its next.
    pub(crate) fn resubscribe(&self, i: u32) -> bool {
        let cursor = &self.cursors()[i as usize];
        let name = cursor.load_name().unwrap_or_default();
        if lock_byte(&self.file, TABLE_LOCK_BYTE, libc::F_WRLCK).is_err() {
            return false;
        }
        self.resubscribe_dropped(cursor, &name);
        let _ = lock_byte(&self.file, TABLE_LOCK_BYTE, libc::F_UNLCK);
        true
    }

    /// Subscribes `cursor` again under `name` if the producer dropped it,
    /// holding its lock and the table lock: from where it stood, raised to
    /// the oldest item the ring still holds. Its `dropped_at` keeps where it
    /// stood (1 + the position) until its consumer reports what it missed
    /// (`ShmConsumer`), through a kill here too.
    fn resubscribe_dropped(&self, cursor: &ConsumerCursor, name: &str) {
        // Acquire: pairs with the producer's Release (AcqRel) store of
        // CURSOR_DROPPED.
        if cursor.subscription.load(Ordering::Acquire) != CURSOR_DROPPED {
            return;
        }
        // Relaxed (all): this process is the cursor's only writer now
        // (the producer no longer stores to a dropped cursor).
        let mut at = cursor.dropped_at.load(Ordering::Relaxed);
        if at == 0 && cursor.consumer_state.load(Ordering::Relaxed) == ROLE_SUBSCRIBING {
            // A new subscription killed part-way, then dropped: it never
            // started, so it starts now, from scratch, and missed nothing.
            self.subscribe(cursor, name, Start::Earliest, None);
            return;
        }
        if at == 0 {
            at = cursor.read_seq.load(Ordering::Relaxed).saturating_add(1) & !DROPPED_ENDS;
            // Its unread end records are kept only while the end log holds
            // them (subscribe's `keep`); otherwise it skips them: a loss
            // to report even when no item was overwritten.
            // SYNC POINT ends_head: Acquire, as in subscribe.
            let head = self.header().producer.ends_head.load(Ordering::Acquire);
            let seen = cursor.ends_seen.load(Ordering::Relaxed);
            if seen > head || head - seen >= END_LOG_LEN / 2 {
                at |= DROPPED_ENDS;
            }
            // SYNC POINT dropped_at: Release, before the subscription
            // starts anew; pairs with the consumer's Acquire load.
            cursor.dropped_at.store(at, Ordering::Release);
        }
        let from = (at & !DROPPED_ENDS).saturating_sub(1);
        self.subscribe(cursor, name, Start::Earliest, Some(from));
    }

    /// Drops cursor `i`, subscribed with no consumer attached and still at
    /// `at` (the producer saw it so for the grace period,
    /// [`Policy::Lag`]): `true` when it did. Holds the table lock and the
    /// cursor's lock meanwhile, so no consumer attaches to it half-way;
    /// gives up at once (`false`) if either is held.
    pub(crate) fn drop_dead_subscriber(&self, i: u32, at: u64) -> bool {
        if lock_byte(&self.file, TABLE_LOCK_BYTE, libc::F_WRLCK).is_err() {
            return false;
        }
        let byte = cursor_byte(i);
        let dropped = lock_byte(&self.file, byte, libc::F_WRLCK).is_ok() && {
            let cursor = &self.cursors()[i as usize];
            // Acquire (all): pair with the subscriber's Release stores. A
            // cursor whose subscriber was killed part-way (consumer_state
            // 4) is dropped too: whoever attaches under its name subscribes
            // it again from scratch (resubscribe_dropped), as
            // finish_broken_subscriptions would.
            let holds = cursor.subscription.load(Ordering::Acquire) == CURSOR_SUBSCRIBED
                && cursor.read_seq.load(Ordering::Acquire) == at;
            if holds {
                // Killed while storing its name: nobody can come back under
                // it, so the cursor is freed (as finish_broken_subscriptions
                // does).
                let word = if cursor.load_name().is_some() {
                    CURSOR_DROPPED
                } else {
                    CURSOR_FREE
                };
                // SYNC POINT subscription: Release pairs with the Acquire
                // loads in fanout::min_read and resubscribe_dropped.
                cursor.subscription.store(word, Ordering::Release);
                // A consumer of it killed asleep left its bit set.
                self.header().not_empty.cell.clear_sleeper(i);
            }
            let _ = lock_byte(&self.file, byte, libc::F_UNLCK);
            holds
        };
        let _ = lock_byte(&self.file, TABLE_LOCK_BYTE, libc::F_UNLCK);
        dropped
    }

    /// The names of the subscribed cursors, in cursor order (a damaged
    /// name as `?`).
    pub(crate) fn subscriber_names(&self) -> Vec<String> {
        self.cursors()
            .iter()
            .filter(|c| is_subscription(c.subscription.load(Ordering::Acquire)))
            .map(|c| c.load_name().unwrap_or_else(|| "?".into()))
            .collect()
    }

    /// Subscribes the `cursor` (this process holds its lock and the table
    /// lock) under `name`: a free one, or one whose subscriber died
    /// part-way ([`ROLE_SUBSCRIBING`]), subscribed afresh.
    ///
    /// `consumer_state` says [`ROLE_SUBSCRIBING`] from before the
    /// subscription until every field is final: a subscriber killed in
    /// between leaves a subscribed cursor that may start where the producer
    /// overwrites (its start was never checked against the producer's
    /// `tail_seq`), or whose `ends_seen` does not match its start. The next
    /// process to take the table lock finds it so, with its lock free, and
    /// runs the whole subscription again (see
    /// [`finish_broken_subscriptions`](Self::finish_broken_subscriptions)):
    /// the pattern with the producer (`fanout`) holds for a fresh start,
    /// whatever the producer did meanwhile.
    ///
    /// With `at`, it starts there (raised to the producer's tail, at most
    /// `write_seq`) rather than at `start`: a dropped subscription coming
    /// back.
    fn subscribe(&self, cursor: &ConsumerCursor, name: &str, start: Start, at: Option<u64>) {
        let h = self.header();
        // A subscriber killed part-way left fields that may not match its
        // start: none of them is kept (below).
        // Relaxed: this process is the cursor's only writer now.
        let broken = cursor.consumer_state.load(Ordering::Relaxed) == ROLE_SUBSCRIBING;
        // Relaxed (all): published by the subscription's Release store in
        // fanout::subscribe (or, re-run, this process is the cursor's only
        // writer: no consumer attaches to it before the marker goes).
        cursor
            .consumer_state
            .store(ROLE_SUBSCRIBING, Ordering::Relaxed);
        cursor.arena_released.store(0, Ordering::Relaxed);
        cursor.consumer_pid.store(0, Ordering::Relaxed);
        cursor.waiting_since_ns.store(0, Ordering::Relaxed);
        cursor.store_name(name);
        let words = fanout::Words {
            tail: &h.producer.tail_seq,
            epoch: &h.subscriptions.epoch,
        };
        let provisional = match at {
            None => fanout::provisional_start(words, &h.producer.write_seq, self.cursors(), start),
            Some(at) => {
                // SYNC POINT tail, write_seq: Acquire, as in
                // fanout::provisional_start.
                let tail = h.producer.tail_seq.load(Ordering::Acquire);
                let write = h.producer.write_seq.load(Ordering::Acquire);
                at.clamp(tail, write.max(tail))
            }
        };
        // A dropped subscription that comes back where it stood missed
        // nothing: it keeps its decoder state and the ends it has not read
        // (unless the end log went round meanwhile).
        // SYNC POINT ends_head: Acquire pairs with the Release store in
        // append_end.
        let head = h.producer.ends_head.load(Ordering::Acquire);
        // Relaxed: this process is the cursor's only writer.
        let seen = cursor.ends_seen.load(Ordering::Relaxed);
        let keep =
            !broken && at == Some(provisional) && seen <= head && head - seen < END_LOG_LEN / 2;
        let joined = self.layout.kind == RingKind::Arrow;
        if !keep {
            // An Arrow subscriber has no decoder state: it reads from the
            // next schema message (arrow/resume.rs).
            let saved = if joined { SAVED_JOINED } else { 0 };
            cursor.saved_state.store(saved, Ordering::Relaxed);
            // The ends it reads are those recorded after its start; counted
            // before it subscribes, so that a producer attaching meanwhile
            // never finds this cursor's count ahead of ends_head.
            // SYNC POINT ends_seen: Release, as ShmConsumer::store_ends_seen
            // (a cursor subscribed again is subscribed already).
            cursor
                .ends_seen
                .store(self.first_end_after(provisional), Ordering::Release);
        }
        let from = fanout::subscribe(words, cursor, provisional);
        if from > provisional {
            // Raised to the producer's tail: ends at or before it are behind
            // this consumer too. Only forward: a count already stored may
            // have let a producer append.
            let seen = self.first_end_after(from);
            // SYNC POINT ends_seen (as above).
            cursor.ends_seen.fetch_max(seen, Ordering::Release);
            if joined {
                // Relaxed: published by the Release store of the state below.
                cursor.saved_state.store(SAVED_JOINED, Ordering::Relaxed);
            }
        }
        // Release: the subscription is complete; pairs with the Acquire
        // loads of consumer_state (a consumer attaching, the producer's
        // consumer_gone, info).
        cursor.consumer_state.store(ROLE_NEVER, Ordering::Release);
    }

    /// Subscribes again every cursor whose subscriber died part-way
    /// ([`subscribe`](Self::subscribe)), holding the table lock.
    fn finish_broken_subscriptions(&self) {
        for (i, cursor) in self.cursors().iter().enumerate() {
            // Acquire (both): pair with the Release stores in subscribe.
            if cursor.subscription.load(Ordering::Acquire) != CURSOR_SUBSCRIBED
                || cursor.consumer_state.load(Ordering::Acquire) != ROLE_SUBSCRIBING
            {
                continue;
            }
            let byte = cursor_byte(i as u32);
            if lock_byte(&self.file, byte, libc::F_WRLCK).is_err() {
                continue; // held: not ours to touch
            }
            if let Some(name) = cursor.load_name() {
                // A dropped subscription being subscribed again starts from
                // where it stood, as resubscribe_dropped.
                // Relaxed: this process holds the cursor's lock.
                let at = (cursor.dropped_at.load(Ordering::Relaxed) & !DROPPED_ENDS).checked_sub(1);
                self.subscribe(cursor, &name, Start::Earliest, at);
            } else {
                // Killed while storing the name: no one can attach under it.
                // Release: the producer stops counting it (as unsubscribe).
                cursor.subscription.store(CURSOR_FREE, Ordering::Release);
            }
            let _ = lock_byte(&self.file, byte, libc::F_UNLCK);
        }
    }

    /// The number of the first end record whose `at_seq` is after `pos`
    /// (`ends_head` when there is none): the end records a consumer
    /// starting at `pos` reads. Looks at the newest 8 records only, which
    /// no producer overwrites while `ends_head` stays put (an append writes
    /// record `ends_head`, 16 behind, before it moves `ends_head`), and
    /// again if `ends_head` moved.
    fn first_end_after(&self, pos: u64) -> u64 {
        let h = self.header();
        loop {
            // SYNC POINT ends_head: Acquire pairs with the Release store in
            // append_end (the records below it are written).
            let head = h.producer.ends_head.load(Ordering::Acquire);
            let mut first = head;
            while first > head.saturating_sub(END_LOG_LEN / 2)
                // Relaxed: published by the Acquire load of ends_head.
                && h.end_log.record(first - 1).at_seq.load(Ordering::Relaxed) > pos
            {
                first -= 1;
            }
            // SYNC POINT ends_head (as above).
            if h.producer.ends_head.load(Ordering::Acquire) == head {
                return first;
            }
        }
    }

    /// Removes the subscription `name`: its cursor becomes free, and the
    /// producer no longer keeps items for it. Refused while its consumer
    /// is attached.
    pub(crate) fn unsubscribe(&self, name: &str) -> Result<(), OpenError> {
        validate_subscriber(name)?;
        self.with_table_lock(|| {
            let Some(i) = self.cursors().iter().position(|c| {
                // Acquire: as in attach_cursor.
                is_subscription(c.subscription.load(Ordering::Acquire))
                    && c.load_name().as_deref() == Some(name)
            }) else {
                return Err(OpenError::NotSubscribed {
                    path: self.path.clone(),
                    name: name.to_owned(),
                });
            };
            let i = i as u32;
            self.lock_as(cursor_byte(i), || OpenError::SubscriberAttached {
                path: self.path.clone(),
                name: name.to_owned(),
            })?;
            let cursor = &self.cursors()[i as usize];
            // Release: a producer that sees the cursor free no longer bounds
            // itself by it; pairs with the Acquire load in fanout::min_read.
            cursor.subscription.store(CURSOR_FREE, Ordering::Release);
            // A consumer of it killed asleep left its bit set.
            self.header().not_empty.cell.clear_sleeper(i);
            // Wake a producer waiting for this consumer.
            self.header()
                .not_full
                .cell
                .notify(crate::wait::Sharing::AcrossProcesses);
            let _ = lock_byte(&self.file, cursor_byte(i), libc::F_UNLCK);
            Ok(())
        })
    }

    /// Runs `f` holding the table lock (byte 1), waiting for it up to the
    /// ready timeout: subscribers hold it for microseconds.
    fn with_table_lock<R>(&self, f: impl FnOnce() -> Result<R, OpenError>) -> Result<R, OpenError> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match lock_byte(&self.file, TABLE_LOCK_BYTE, libc::F_WRLCK) {
                Ok(()) => break,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                    if Instant::now() >= deadline {
                        return Err(OpenError::io(
                            &self.path,
                            std::io::Error::other(
                                "another process has held the subscription table for 2 s",
                            ),
                        ));
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => return Err(OpenError::io(&self.path, e)),
            }
        }
        let result = f();
        let _ = lock_byte(&self.file, TABLE_LOCK_BYTE, libc::F_UNLCK);
        result
    }
}

/// Whether a cursor's subscription word holds a subscription, kept or
/// dropped: its name is taken.
fn is_subscription(word: u32) -> bool {
    word == CURSOR_SUBSCRIBED || word == CURSOR_DROPPED
}

/// Whether `path` still names the file open as `file` (same device and
/// inode): false once it was unlinked or replaced.
fn still_linked(file: &File, path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = file.metadata()?;
    if open.nlink() == 0 {
        return Ok(false);
    }
    match std::fs::symlink_metadata(path) {
        Ok(named) => Ok(named.dev() == open.dev() && named.ino() == open.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Unlinks `path`, the file open (for writing) as `file`, if no process
/// holds a role in it or is creating it: takes the creator's lock byte,
/// then the producer's and the consumer's (those not in `own`, which this
/// open file description already holds), unlinks while holding them, then
/// lets go.
///
/// A process that attaches takes its role's lock and then checks that the
/// file is still linked ([`Segment::lock_role`]), so it either attached
/// before (and the remover finds its lock taken) or finds the file gone
/// and opens or creates a new one: nobody is left writing to, or waiting
/// on, a ring that no one else can open. A process that tries to take its
/// role while the remover holds the locks waits for it (see `lock_role`).
/// The write lock on byte 2 also keeps two removers apart.
///
/// Returns `Ok(Err(roles))`, removing nothing, when a process holds
/// `roles`' locks (`Role::Producer` also stands for a creator that has not
/// finished). `unchanged` runs while the locks are held, when no process
/// can attach and change the ring: it returns false to keep the ring after
/// all (`Ok(Err(vec![]))`). `NotFound` when the path no longer names the
/// file (another remover was first).
pub(crate) fn unlink_unused(
    file: &File,
    path: &Path,
    own: Option<u32>,
    unchanged: impl FnOnce(&File) -> std::io::Result<bool>,
) -> std::io::Result<Result<(), Vec<Role>>> {
    let gone = || std::io::Error::from(std::io::ErrorKind::NotFound);
    // Every cursor's byte but our own (a remover that is a consumer holds
    // it): the ranges before and after it.
    let own_byte = own.map(cursor_byte);
    let all_cursors = libc::off_t::from(MAX_CONSUMERS);
    let (before, after) = match own_byte {
        Some(b) => (
            (CURSOR_LOCK_BASE, b - CURSOR_LOCK_BASE),
            (b + 1, CURSOR_LOCK_BASE + all_cursors - b - 1),
        ),
        None => ((CURSOR_LOCK_BASE, all_cursors), (0, 0)),
    };
    let ranges: [(libc::off_t, libc::off_t, Role); 5] = [
        (INIT_LOCK_BYTE, 1, Role::Producer),
        (role_byte(Role::Producer), 1, Role::Producer),
        (TABLE_LOCK_BYTE, 1, Role::Consumer),
        (before.0, before.1, Role::Consumer),
        (after.0, after.1, Role::Consumer),
    ];
    let mut taken = Vec::new();
    let result = (|| {
        for (byte, len, role) in ranges {
            if len == 0 {
                continue;
            }
            match lock_range(file, byte, len, libc::F_WRLCK) {
                Ok(()) => taken.push((byte, len)),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => {
                    // Stop at the first lock held (holding the others would
                    // keep an attaching process waiting for nothing); name
                    // every role held, for the message.
                    if !still_linked(file, path)? {
                        return Err(gone());
                    }
                    let mut busy = Vec::new();
                    if role == Role::Producer || byte_locked(file, role_byte(Role::Producer)) {
                        busy.push(Role::Producer);
                    }
                    if role == Role::Consumer
                        || range_locked(file, before.0, before.1)
                        || range_locked(file, after.0, after.1)
                    {
                        busy.push(Role::Consumer);
                    }
                    if busy.is_empty() {
                        busy.push(role);
                    }
                    return Ok(Err(busy));
                }
                Err(e) => return Err(e),
            }
        }
        if !unchanged(file)? {
            Ok(Err(Vec::new()))
        } else if still_linked(file, path)? {
            std::fs::remove_file(path).map(Ok)
        } else {
            Err(gone())
        }
    })();
    release(file, &taken);
    result
}

/// `(write_seq, producer_sessions)` as the file holds them, read with
/// `pread` (a copy by the kernel: no reference into memory that another
/// process may write).
fn producer_words(file: &File) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::FileExt;
    let line = offset_of!(SegmentHeader, producer);
    let mut b = [0_u8; 8];
    file.read_exact_at(
        &mut b,
        (line + offset_of!(super::header::ProducerLine, write_seq)) as u64,
    )?;
    let write_seq = u64::from_ne_bytes(b);
    file.read_exact_at(
        &mut b,
        (line + offset_of!(super::header::ProducerLine, producer_sessions)) as u64,
    )?;
    Ok((write_seq, u64::from_ne_bytes(b)))
}

fn release(file: &File, ranges: &[(libc::off_t, libc::off_t)]) {
    for &(b, len) in ranges {
        let _ = lock_range(file, b, len, libc::F_UNLCK);
    }
}

/// The byte whose lock is `role`'s (the producer's; consumers lock their
/// cursor's, [`cursor_byte`]).
fn role_byte(role: Role) -> libc::off_t {
    match role {
        Role::Producer => 0,
        Role::Consumer => TABLE_LOCK_BYTE,
    }
}

/// The byte whose lock cursor `i`'s consumer holds.
fn cursor_byte(i: u32) -> libc::off_t {
    CURSOR_LOCK_BASE + libc::off_t::from(i)
}

/// Sets (`F_WRLCK`) or releases (`F_UNLCK`) this open file description's
/// lock on one byte, without waiting.
fn lock_byte(file: &File, byte: libc::off_t, kind: libc::c_int) -> std::io::Result<()> {
    lock_range(file, byte, 1, kind)
}

/// [`lock_byte`] for `len` bytes from `start`.
fn lock_range(
    file: &File,
    start: libc::off_t,
    len: libc::off_t,
    kind: libc::c_int,
) -> std::io::Result<()> {
    let fl = flock_for(start, len, kind);
    fcntl(file.as_fd(), FcntlArg::F_OFD_SETLK(&fl))
        .map(drop)
        .map_err(std::io::Error::from)
}

/// Whether another open file description holds a lock on `byte`.
fn byte_locked(file: &File, byte: libc::off_t) -> bool {
    range_locked(file, byte, 1)
}

/// Whether another open file description holds a lock on a byte of the
/// `len` bytes from `start` (`false` for none).
fn range_locked(file: &File, start: libc::off_t, len: libc::off_t) -> bool {
    if len == 0 {
        return false;
    }
    let mut fl = flock_for(start, len, libc::F_WRLCK);
    match fcntl(file.as_fd(), FcntlArg::F_OFD_GETLK(&mut fl)) {
        Ok(_) => fl.l_type != libc::F_UNLCK as libc::c_short,
        // Cannot tell: assume held rather than report a false death.
        Err(_) => true,
    }
}

fn flock_for(start: libc::off_t, len: libc::off_t, kind: libc::c_int) -> libc::flock {
    // SAFETY: flock is a plain C struct for which all-zero bytes are valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    fl.l_pid = 0; // required for OFD locks
    fl
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process that opened a ring, and takes its role only after the
    /// file was unlinked, is told so rather than attached to a ring no one
    /// else can find; `unlink_if_unused` removes nothing while a role is
    /// held by another open file description.
    #[test]
    fn a_role_taken_after_the_ring_was_removed_is_refused() {
        let name = format!("lr-unit-{}-removed", std::process::id());
        let opts = SegmentOptions::default();
        let layout = Layout::plan(RingKind::Typed, 8, 8, 8, 1, 0, 8).unwrap();
        let created = Segment::create(&name, layout, &opts).unwrap();
        let opened = Segment::open(&name, &opts).unwrap();
        opened.attach_cursor("default", Start::Earliest).unwrap();
        match created.unlink_if_unused(None) {
            Err(OpenError::InUse { roles, .. }) => assert_eq!(roles, [Role::Consumer]),
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(opened);
        let late = Segment::open(&name, &opts).unwrap();
        created.unlink_if_unused(None).unwrap();
        assert!(matches!(
            late.lock_role(Role::Producer),
            Err(OpenError::Removed { .. })
        ));
        // Refused, the role lock was let go: not held by `late`.
        assert!(!created.role_alive(Role::Producer));
    }

    /// A process taking its role while a remover holds the lock bytes
    /// waits for the remover to let go, rather than report the role taken.
    #[test]
    fn a_role_taken_while_a_remover_holds_the_locks_waits_for_it() {
        let name = format!("lr-unit-{}-remover", std::process::id());
        let opts = SegmentOptions::default();
        let layout = Layout::plan(RingKind::Typed, 8, 8, 8, 1, 0, 8).unwrap();
        let created = Segment::create(&name, layout, &opts).unwrap();
        let attaching = Segment::open(&name, &opts).unwrap();
        // A remover's locks, on its own open file description.
        let remover = OpenOptions::new()
            .read(true)
            .write(true)
            .open(created.path())
            .unwrap();
        lock_byte(&remover, INIT_LOCK_BYTE, libc::F_WRLCK).unwrap();
        lock_byte(&remover, role_byte(Role::Producer), libc::F_WRLCK).unwrap();
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            drop(remover); // it found the ring in use, say, and gave up
        });
        attaching.lock_role(Role::Producer).unwrap();
        letting_go.join().unwrap();
        created.unlink_if_unused(None).unwrap_err();
        drop(attaching);
        created.unlink_if_unused(None).unwrap();
    }

    fn owner(uid: u32, gid: u32, mode: u32) -> FileOwner {
        FileOwner { uid, gid, mode }
    }

    /// The trust rule on synthetic owners and modes, including owners that
    /// only root could arrange with chown: by default only a file of this
    /// user that no one else may write; with `allow_shared`, also one its
    /// group may write and one of another owner in a group of ours; never
    /// one that every user may write.
    #[test]
    fn only_segments_no_untrusted_user_may_write_are_trusted() {
        const ME: u32 = 1000;
        let my_groups = |gid: u32| gid == 1000 || gid == 50;
        let check = |f: FileOwner, shared| check_owner(f, ME, my_groups, shared);
        // Default: mine, and no one else may write.
        assert_eq!(check(owner(ME, 1000, 0o100600), false), Ok(()));
        assert_eq!(check(owner(ME, 1000, 0o100640), false), Ok(()));
        assert_eq!(check(owner(ME, 1000, 0o100644), false), Ok(()));
        let e = check(owner(ME, 50, 0o100660), false).unwrap_err();
        assert!(e.contains("0660 lets its group (gid 50) write it"), "{e}");
        let e = check(owner(ME, 1000, 0o100666), false).unwrap_err();
        assert!(e.contains("every user"), "{e}");
        let e = check(owner(0, 0, 0o100600), false).unwrap_err();
        assert!(
            e.contains("owned by uid 0, not by this process's effective uid 1000"),
            "{e}"
        );
        let e = check(owner(2000, 50, 0o100660), false).unwrap_err();
        assert!(e.contains("owned by uid 2000"), "{e}");
        // Shared: a group of ours may write it, or it is ours.
        assert_eq!(check(owner(ME, 50, 0o100660), true), Ok(()));
        assert_eq!(check(owner(2000, 50, 0o100660), true), Ok(()));
        assert_eq!(check(owner(ME, 7, 0o100660), true), Ok(()));
        let e = check(owner(2000, 7, 0o100660), true).unwrap_err();
        assert!(e.contains("owned by uid 2000 and gid 7"), "{e}");
        let e = check(owner(ME, 50, 0o100662), true).unwrap_err();
        assert!(e.contains("0662 lets every user write it"), "{e}");
    }
}
