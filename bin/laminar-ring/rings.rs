//! `create`, `rm`, `gc`, and attaching to a ring that may not exist
//! yet.

use std::time::Duration;

use laminar_ring::arrow::schema::SchemaRef;
use laminar_ring::arrow::{ArrowRingError, ArrowRingOptions, BatchFanIn, BatchProducer};
use laminar_ring::shm::{self, HeaderError, OpenError, RingInfo, RoleState, SegmentOptions};

use crate::error::CliError;
use crate::print::{errln, outln};
use crate::units::{fmt_bytes, fmt_counted};

/// Where rings live.
#[derive(Debug, Clone, clap::Args)]
pub struct Location {
    /// Directory of the ring files (a tmpfs such as /dev/shm, or a hugetlbfs
    /// mount). The default is $LAMINAR_RING_DIR when it is set, else
    /// /dev/shm.
    // The variable is read here rather than by clap's `env`: clap counts
    // a value from the environment as given, and its usage line then
    // shows `--dir <DIR>` as if it were required.
    #[arg(long, value_name = "DIR", default_value_os_t = shm::ring_dir())]
    pub dir: std::path::PathBuf,
    /// Trust rings that their group may write (such as those made with
    /// `create --mode 660`), and other users' rings of a group you are in.
    /// Without it a ring must be yours and writable by no one else.
    #[arg(long)]
    pub shared: bool,
}

/// The shape of a new ring. Used only when the ring is created; an existing
/// ring keeps its own (a warning says so when these flags ask for another,
/// an error with --strict).
#[derive(Debug, Clone, clap::Args)]
pub struct Geometry {
    /// Descriptor slots of a new ring, a power of two; one slot per IPC
    /// message (schema, dictionary batch or record batch). Default 1024.
    #[arg(long, value_name = "N", value_parser = crate::units::parse_slots)]
    pub slots: Option<usize>,
    /// Arena of a new ring for message bytes: 64MiB, 1GiB, 512KiB (binary),
    /// 100MB (decimal) or bytes; a multiple of 64, at least 4KiB. The last
    /// eighth holds the consumer's saved decoder state; a batch must fit in
    /// the rest (produce splits larger ones). Default 64MiB.
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_arena)]
    pub arena: Option<u64>,
    /// Permission bits of a new ring's file, in octal.
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = crate::units::parse_mode)]
    pub mode: u32,
    /// Consumers a new ring can have subscribed at once (1 to 32), each
    /// under its own name (`consume --as`), each with its own position.
    /// Default 8.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..=32))]
    pub consumers: Option<u32>,
    /// What the producer of a new ring does about a subscriber that holds
    /// it back: `block` waits for it, however long (nothing is lost);
    /// `lag` drops a subscriber that has had no consumer attached for
    /// --lag-grace, so a dead sidecar stalls the others no longer (when it
    /// comes back it is told how many messages it missed and reads on from
    /// the next producer session). Default block.
    #[arg(long, value_name = "POLICY", value_enum)]
    pub policy: Option<PolicyArg>,
    /// How long a subscriber with no consumer attached may hold the
    /// producer back before it is dropped: 500ms, 10s, 2m. Implies --policy
    /// lag. Default 10s.
    #[arg(long, value_name = "DURATION", value_parser = crate::units::parse_duration)]
    pub lag_grace: Option<std::time::Duration>,
    /// Make a new ring temporary: a consumer that reaches a clean end of
    /// stream (without --follow) removes it, unless another process has
    /// attached to it by then.
    #[arg(long)]
    pub temporary: bool,
    /// Exit 1 when the ring exists with another --slots, --arena,
    /// --consumers, --policy or --temporary than asked for, instead of
    /// warning and using it as it is.
    #[arg(long)]
    pub strict: bool,
}

/// `--policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyArg {
    /// Wait for every subscriber.
    Block,
    /// Drop a subscriber dead for --lag-grace.
    Lag,
}

/// --lag-grace when it is not given.
pub const DEFAULT_LAG_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Descriptor slots of a ring when --slots is not given.
pub const DEFAULT_SLOTS: usize = 1024;
/// Arena bytes of a ring when --arena is not given.
pub const DEFAULT_ARENA: u64 = 64 << 20;

impl Geometry {
    fn slots(&self) -> usize {
        self.slots.unwrap_or(DEFAULT_SLOTS)
    }

    fn arena(&self) -> u64 {
        self.arena.unwrap_or(DEFAULT_ARENA)
    }

    fn consumers(&self) -> u32 {
        self.consumers.unwrap_or(shm::DEFAULT_CONSUMERS)
    }

    fn policy(&self) -> shm::Policy {
        match (self.policy, self.lag_grace) {
            (Some(PolicyArg::Lag), _) | (None, Some(_)) => shm::Policy::Lag {
                bound: None,
                grace: self.lag_grace.unwrap_or(DEFAULT_LAG_GRACE),
            },
            _ => shm::Policy::Block,
        }
    }

    /// A policy asked for: given, or implied by --lag-grace.
    fn asks_policy(&self) -> bool {
        self.policy.is_some() || self.lag_grace.is_some()
    }

    /// What of the flags given differs from the existing ring `i`:
    /// `--slots 8 (it has 1024)`, ...
    fn differences(&self, i: &RingInfo) -> Vec<String> {
        let mut d = Vec::new();
        if let Some(s) = self.slots
            && s as u64 != i.layout.capacity
        {
            d.push(format!("--slots {s} (it has {})", i.layout.capacity));
        }
        if let Some(a) = self.arena
            && a != i.layout.arena_len
        {
            d.push(format!(
                "--arena {} (it has {})",
                fmt_bytes(a),
                fmt_bytes(i.layout.arena_len)
            ));
        }
        if let Some(k) = self.consumers
            && k != i.layout.max_consumers
        {
            d.push(format!(
                "--consumers {k} (it has {})",
                i.layout.max_consumers
            ));
        }
        if self.asks_policy() && self.policy() != i.layout.policy {
            d.push(format!(
                "{} (it has {})",
                fmt_policy_flags(self.policy()),
                fmt_policy(i.layout.policy)
            ));
        }
        if self.temporary && !i.layout.temporary {
            d.push("--temporary (it is not temporary)".to_owned());
        }
        d
    }
}

/// A policy in words: `block`, `lag (drop a dead subscriber after 10s)`.
pub fn fmt_policy(p: shm::Policy) -> String {
    match p {
        shm::Policy::Block => "block".into(),
        shm::Policy::Lag { bound, grace } => {
            let mut s = format!(
                "lag (drop a dead subscriber after {}",
                crate::units::fmt_duration(grace)
            );
            if let Some(b) = bound {
                s += &format!(
                    ", any subscriber {} behind",
                    fmt_counted(b, "item", "items")
                );
            }
            s + ")"
        }
    }
}

/// The flags that ask for `p`.
fn fmt_policy_flags(p: shm::Policy) -> String {
    match p {
        shm::Policy::Block => "--policy block".into(),
        shm::Policy::Lag { grace, .. } => format!(
            "--policy lag --lag-grace {}",
            crate::units::fmt_duration(grace)
        ),
    }
}

/// The ring options for `geometry` in `location`.
pub fn ring_options(geometry: &Geometry, location: &Location) -> ArrowRingOptions {
    if geometry.policy == Some(PolicyArg::Block) && geometry.lag_grace.is_some() {
        errln!("laminar-ring: warning: --lag-grace is ignored with --policy block");
    }
    ArrowRingOptions {
        slots: geometry.slots(),
        arena_bytes: geometry.arena(),
        segment: SegmentOptions {
            dir: location.dir.clone(),
            mode: geometry.mode,
            allow_shared: location.shared,
            temporary: geometry.temporary,
            max_consumers: geometry.consumers(),
            policy: geometry.policy(),
            ..SegmentOptions::default()
        },
        ..ArrowRingOptions::default()
    }
}

/// Attaches with `open`, or creates the ring with `create` when it does not
/// exist; a creation race lost to another process falls back to `open`,
/// and a ring removed while attaching is opened or created anew. An
/// existing ring whose shape differs from what `geometry` asks for gets a
/// warning, or (--strict) an error.
pub fn open_or_create<T>(
    name: &str,
    opts: &ArrowRingOptions,
    geometry: &Geometry,
    open: impl Fn(&str, &ArrowRingOptions) -> Result<T, ArrowRingError>,
    create: impl Fn(&str, &ArrowRingOptions) -> Result<T, ArrowRingError>,
) -> Result<T, CliError> {
    // Checked before attaching, so that --strict leaves the ring untouched
    // (a producer that attached and gave up would end its stream).
    if let Ok(i) = shm::inspect(name, &opts.segment) {
        let differs = geometry.differences(&i);
        if !differs.is_empty() {
            let what = format!(
                "ring '{name}' exists already; {} ignored: an existing ring keeps its shape \
                 (remove it to make it anew)",
                differs.join(", ")
            );
            if geometry.strict {
                return Err(CliError::Strict { what });
            }
            errln!("laminar-ring: warning: {what}");
        }
    }
    let mut tries = 0;
    loop {
        let attempt = match open(name, opts) {
            Err(ArrowRingError::Open(OpenError::NotFound { .. })) => match create(name, opts) {
                Err(ArrowRingError::Open(OpenError::AlreadyExists { .. })) => open(name, opts),
                r => r,
            },
            r => r,
        };
        tries += 1;
        match attempt {
            // Removed (rm, gc, a temporary ring's consumer) between our
            // open and our taking the role: open or create it anew.
            Err(ArrowRingError::Open(OpenError::Removed { .. })) if tries < 5 => {}
            r => return r.map_err(|e| CliError::ring(name, e)),
        }
    }
}

/// Attaches as the producer of lane 0 of `name` (the ring itself),
/// creating it if needed: `RoleTaken` when another producer holds it.
pub fn first_lane_producer(
    name: &str,
    opts: &ArrowRingOptions,
    geometry: &Geometry,
) -> Result<BatchProducer, CliError> {
    open_or_create(
        name,
        opts,
        geometry,
        BatchProducer::open,
        BatchProducer::create,
    )
}

/// Joins the stream `name` as one of its producers, sending `schema`: the
/// ring itself when no other producer holds it, else a lane of its own
/// (`NAME#n`), created as needed.
pub fn producer(
    name: &str,
    opts: &ArrowRingOptions,
    geometry: &Geometry,
    schema: &SchemaRef,
) -> Result<BatchProducer, CliError> {
    open_or_create(
        name,
        opts,
        geometry,
        |name, opts| BatchProducer::join(name, schema.clone(), opts),
        |name, opts| BatchProducer::join(name, schema.clone(), opts),
    )
}

/// Attaches as the consumer of every lane of the stream `name`, creating
/// its ring if needed.
pub fn consumer(
    name: &str,
    opts: &ArrowRingOptions,
    geometry: &Geometry,
) -> Result<BatchFanIn, CliError> {
    open_or_create(name, opts, geometry, BatchFanIn::open, BatchFanIn::create)
}

/// Create an Arrow ring.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Name of the ring (a file name in --dir).
    pub name: String,
    #[command(flatten)]
    pub geometry: Geometry,
    #[command(flatten)]
    pub location: Location,
}

pub fn create(args: &CreateArgs) -> Result<(), CliError> {
    let CreateArgs {
        name,
        geometry,
        location,
    } = args;
    let opts = ring_options(geometry, location);
    // A ring named as another stream's lane could never be produced into.
    laminar_ring::shm::check_stream_name(name)?;
    laminar_ring::arrow::create(name, &opts).map_err(|e| CliError::ring(name, e))?;
    outln!(
        "created {}ring '{name}' in {}: {}, {} arena, room for {}, policy {}",
        if geometry.temporary { "temporary " } else { "" },
        location.dir.display(),
        fmt_counted(geometry.slots() as u64, "slot", "slots"),
        fmt_bytes(geometry.arena()),
        fmt_counted(geometry.consumers().into(), "consumer", "consumers"),
        fmt_policy(geometry.policy())
    );
    Ok(())
}

/// Remove a consumer's subscription: the producer no longer keeps items
/// for it, and its place is free for another name. Refused while that
/// consumer is attached.
#[derive(Debug, clap::Args)]
pub struct UnsubscribeArgs {
    /// Name of the ring.
    pub name: String,
    /// The consumer's name (as given to `consume --as`).
    pub subscriber: String,
    #[command(flatten)]
    pub location: Location,
}

pub fn unsubscribe(args: &UnsubscribeArgs) -> Result<(), CliError> {
    let opts = SegmentOptions {
        dir: args.location.dir.clone(),
        allow_shared: args.location.shared,
        ..SegmentOptions::default()
    };
    shm::unsubscribe(&args.name, &args.subscriber, &opts)
        .map_err(|e| CliError::ring(&args.name, ArrowRingError::Open(e)))?;
    outln!(
        "unsubscribed '{}' from ring '{}'",
        args.subscriber,
        args.name
    );
    Ok(())
}

/// Reads `name`'s header without attaching, waiting up to `ready` for a
/// ring being created.
pub fn inspect(name: &str, location: &Location, ready: Duration) -> Result<RingInfo, OpenError> {
    let opts = SegmentOptions {
        dir: location.dir.clone(),
        ready_timeout: ready,
        allow_shared: location.shared,
        ..SegmentOptions::default()
    };
    shm::inspect(name, &opts)
}

/// Remove rings. A ring in use by a live process, or one that cannot be
/// read, is removed only with --force (processes attached keep their
/// mapping until they detach, but no new process finds the ring).
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Names of the rings.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Remove rings in use by live processes, and damaged rings, too
    /// (never a file that is not a ring, nor one that is not a regular file).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub location: Location,
}

/// The live sides of `i`: `producer pid 12 and consumer pid 34`.
fn live_roles(i: &RingInfo) -> Option<String> {
    let live: Vec<String> = [("producer", &i.producer), ("consumer", &i.consumer)]
        .into_iter()
        .filter(|(_, r)| r.alive)
        .map(|(role, r)| match r.pid {
            Some(pid) => format!("{role} pid {pid}"),
            None => role.to_owned(),
        })
        .collect();
    (!live.is_empty()).then(|| live.join(" and "))
}

pub fn rm(args: &RmArgs) -> Result<(), CliError> {
    let RmArgs {
        names,
        force,
        location,
    } = args;
    // A stream's other lanes (NAME#n, one per producer that joined it)
    // go with it, the last lane first, so that what a refusal leaves is
    // still numbered from lane 0.
    let names: Vec<String> = names
        .iter()
        .flat_map(|name| {
            let mut all: Vec<String> = (1..shm::MAX_LANES)
                .map(|lane| shm::lane_name(name, lane))
                .filter(|lane| {
                    shm::parse_lane_name(name).1 == 0 && location.dir.join(lane).is_file()
                })
                .collect();
            all.reverse();
            all.push(name.clone());
            all
        })
        .collect();
    for name in &names {
        // Never follow a link or open a FIFO, socket or device: only a
        // regular file can be a ring.
        let path = location.dir.join(name);
        if let Ok(meta) = std::fs::symlink_metadata(&path)
            && !meta.file_type().is_file()
        {
            return Err(CliError::NotAFile { path });
        }
        match inspect(name, location, Duration::from_millis(200)) {
            Ok(i) => {
                if let (Some(who), false) = (live_roles(&i), force) {
                    return Err(CliError::InUse {
                        name: name.clone(),
                        who,
                    });
                }
            }
            Err(OpenError::BadHeader {
                path,
                source: source @ (HeaderError::BadMagic { .. } | HeaderError::TooShort { .. }),
            }) => {
                return Err(CliError::NotARing { path, source });
            }
            // A damaged ring, one still being created (or whose creator
            // died doing so), or one we do not trust: only with --force.
            Err(
                e @ (OpenError::BadHeader { .. }
                | OpenError::NotReady { .. }
                | OpenError::Untrusted { .. }),
            ) => {
                if !force {
                    return Err(CliError::Damaged {
                        name: name.clone(),
                        source: e,
                    });
                }
            }
            Err(e) => return Err(e.into()),
        }
        if *force {
            shm::remove_in(name, &location.dir)?;
            continue;
        }
        // Checked again under the role locks: a process that attached since
        // the check above keeps the ring.
        match shm::remove_unused(name, &location.dir) {
            Err(OpenError::InUse { roles, .. }) => {
                let who = inspect(name, location, Duration::from_millis(200))
                    .ok()
                    .and_then(|i| live_roles(&i))
                    .unwrap_or_else(|| {
                        let r: Vec<String> = roles.iter().map(ToString::to_string).collect();
                        format!("a {}", r.join(" and a "))
                    });
                return Err(CliError::InUse {
                    name: name.clone(),
                    who,
                });
            }
            r => r?,
        }
    }
    Ok(())
}

/// Remove the rings whose processes are gone and whose streams ended
/// (the producer closed or failed, nothing left unread); live, unfinished
/// and damaged rings are left alone.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub location: Location,
}

/// Whether `i` is finished: no live process, the stream closed or failed,
/// every item read. `Err` says why it is kept.
fn finished(i: &RingInfo) -> Result<(), &'static str> {
    if live_roles(i).is_some() {
        return Err("in use");
    }
    if !matches!(i.producer.state, RoleState::Closed | RoleState::Failed) || i.lag() > 0 {
        return Err("unfinished");
    }
    Ok(())
}

pub fn gc(args: &GcArgs) -> Result<(), CliError> {
    let GcArgs { dry_run, location } = args;
    let names = shm::list_candidates(&location.dir).map_err(|source| CliError::List {
        dir: location.dir.clone(),
        source,
    })?;
    let (mut removed, mut in_use, mut unfinished, mut damaged, mut other) = (0, 0, 0, 0, 0);
    for name in names {
        match crate::status::classify(&name, location) {
            None => {}
            Some(crate::status::Entry::Ok(i)) => match finished(&i) {
                Ok(()) => {
                    if *dry_run {
                        outln!("would remove {name}");
                    } else {
                        // Under the role locks, and only if no producer
                        // wrote since the look above; gone already
                        // (another gc): nothing to do.
                        match shm::remove_unused_as_seen(&name, &location.dir, &i) {
                            Ok(()) => outln!("removed {name}"),
                            Err(OpenError::NotFound { .. }) => continue,
                            Err(OpenError::InUse { .. }) => {
                                in_use += 1;
                                continue;
                            }
                            // A producer came and went since the look.
                            Err(OpenError::Changed { .. }) => {
                                unfinished += 1;
                                continue;
                            }
                            // One ring that cannot be removed (another
                            // user's, say) does not stop the others.
                            Err(e) => {
                                errln!("laminar-ring: kept {name}: {}", crate::error::one_line(&e));
                                damaged += 1;
                                continue;
                            }
                        }
                    }
                    removed += 1;
                }
                Err("in use") => in_use += 1,
                Err(_) => unfinished += 1,
            },
            // Another release's ring: that release's gc decides.
            Some(crate::status::Entry::OtherVersion { .. }) => other += 1,
            Some(_) => damaged += 1,
        }
    }
    outln!(
        "{} {removed} ring{}; left {in_use} in use, {unfinished} unfinished, {damaged} damaged or unreadable{}",
        if *dry_run { "would remove" } else { "removed" },
        if removed == 1 { "" } else { "s" },
        if other > 0 {
            format!(", {other} of another layout version")
        } else {
            String::new()
        }
    );
    Ok(())
}
