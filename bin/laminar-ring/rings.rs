//! `create`, `info`, `ls`, `rm`, and attaching to a ring that may not exist
//! yet.

use std::time::{Duration, SystemTime};

use laminar_ring::arrow::{ArrowRingError, ArrowRingOptions, BatchConsumer, BatchProducer};
use laminar_ring::shm::{
    self, HeaderError, OpenError, RingInfo, RingKind, RoleState, SegmentOptions,
};
use serde_json::json;

use crate::error::CliError;
use crate::print::{errln, outln};
use crate::units::{fmt_bytes, fmt_count, fmt_utc};

/// Where rings live.
#[derive(Debug, Clone, clap::Args)]
pub struct Location {
    /// Directory of the ring files (a tmpfs such as /dev/shm, or a hugetlbfs
    /// mount).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/dev/shm",
        env = "LAMINAR_RING_DIR"
    )]
    pub dir: std::path::PathBuf,
    /// Trust rings that their group may write (such as those made with
    /// `create --mode 660`), and other users' rings of a group you are in.
    /// Without it a ring must be yours and writable by no one else.
    #[arg(long)]
    pub shared: bool,
}

/// The shape of a new ring. Used only when the ring is created; an existing
/// ring keeps its own.
#[derive(Debug, Clone, clap::Args)]
pub struct Geometry {
    /// Descriptor slots of a new ring, a power of two; one slot per IPC
    /// message (schema, dictionary batch or record batch).
    #[arg(long, value_name = "N", default_value = "1024", value_parser = crate::units::parse_slots)]
    pub slots: usize,
    /// Arena of a new ring for message bytes: 64MiB, 1GiB, 512KiB (binary),
    /// 100MB (decimal) or bytes; a multiple of 64, at least 4KiB. The last
    /// eighth holds the consumer's saved decoder state; a batch must fit in
    /// the rest (produce splits larger ones).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = crate::units::parse_arena)]
    pub arena: u64,
    /// Permission bits of a new ring's file, in octal.
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = crate::units::parse_mode)]
    pub mode: u32,
}

/// The ring options for `geometry` in `location`.
pub fn ring_options(geometry: &Geometry, location: &Location) -> ArrowRingOptions {
    ArrowRingOptions {
        slots: geometry.slots,
        arena_bytes: geometry.arena,
        segment: SegmentOptions {
            dir: location.dir.clone(),
            mode: geometry.mode,
            allow_shared: location.shared,
            ..SegmentOptions::default()
        },
        ..ArrowRingOptions::default()
    }
}

/// Attaches with `open`, or creates the ring with `create` when it does not
/// exist; a creation race lost to another process falls back to `open`.
pub fn open_or_create<T>(
    name: &str,
    opts: &ArrowRingOptions,
    open: impl Fn(&str, &ArrowRingOptions) -> Result<T, ArrowRingError>,
    create: impl Fn(&str, &ArrowRingOptions) -> Result<T, ArrowRingError>,
) -> Result<T, CliError> {
    let r = match open(name, opts) {
        Err(ArrowRingError::Open(OpenError::NotFound { .. })) => match create(name, opts) {
            Err(ArrowRingError::Open(OpenError::AlreadyExists { .. })) => open(name, opts),
            r => r,
        },
        r => r,
    };
    r.map_err(|e| CliError::ring(name, e))
}

/// Attaches as the producer of `name`, creating it if needed.
pub fn producer(name: &str, opts: &ArrowRingOptions) -> Result<BatchProducer, CliError> {
    open_or_create(name, opts, BatchProducer::open, BatchProducer::create)
}

/// Attaches as the consumer of `name`, creating it if needed.
pub fn consumer(name: &str, opts: &ArrowRingOptions) -> Result<BatchConsumer, CliError> {
    open_or_create(name, opts, BatchConsumer::open, BatchConsumer::create)
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
    laminar_ring::arrow::create(name, &opts).map_err(|e| CliError::ring(name, e))?;
    outln!(
        "created ring '{name}' in {}: {} slots, {} arena",
        location.dir.display(),
        geometry.slots,
        fmt_bytes(geometry.arena)
    );
    Ok(())
}

fn inspect(name: &str, location: &Location, ready: Duration) -> Result<RingInfo, OpenError> {
    let opts = SegmentOptions {
        dir: location.dir.clone(),
        ready_timeout: ready,
        allow_shared: location.shared,
        ..SegmentOptions::default()
    };
    shm::inspect(name, &opts)
}

fn kind_name(kind: RingKind) -> &'static str {
    match kind {
        RingKind::Typed => "typed",
        RingKind::Arrow => "arrow",
    }
}

fn state_name(s: RoleState) -> String {
    match s {
        RoleState::Never => "never".into(),
        RoleState::Attached => "attached".into(),
        RoleState::Closed => "closed".into(),
        RoleState::Failed => "failed".into(),
        RoleState::Unknown(v) => format!("unknown ({v})"),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn info_json(name: &str, i: &RingInfo) -> serde_json::Value {
    let l = &i.layout;
    let created_unix_s = l.created_unix_ns / 1_000_000_000;
    json!({
        "name": name,
        "path": i.path.display().to_string(),
        "layout_version": shm::header::LAYOUT_VERSION,
        "kind": kind_name(l.kind),
        "capacity": l.capacity,
        "slot_size": l.slot_size,
        "slots_used": i.lag(),
        "arena_bytes": l.arena_len,
        "arena_used": i.arena_used(),
        "write_seq": i.write_seq,
        "read_seq": i.read_seq,
        "lag": i.lag(),
        "producer": {
            "state": state_name(i.producer.state),
            "alive": i.producer.alive,
            "sessions": i.producer_sessions,
            "failure": i.producer_failure,
        },
        "consumer": {
            "state": state_name(i.consumer.state),
            "alive": i.consumer.alive,
        },
        "created_unix_s": created_unix_s,
        "created": fmt_utc(i.created()),
        "total_bytes": l.total_len,
    })
}

/// Show a ring's layout, sequences, use and peers.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// Name of the ring.
    pub name: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub location: Location,
}

pub fn info(args: &InfoArgs) -> Result<(), CliError> {
    let InfoArgs {
        name,
        json,
        location,
    } = args;
    let i = inspect(name, location, Duration::from_secs(2))?;
    if *json {
        outln!("{}", info_json(name, &i));
        return Ok(());
    }
    let l = &i.layout;
    let age = SystemTime::now().duration_since(i.created()).map_or_else(
        |_| "in the future".into(),
        |d| format!("{} s ago", d.as_secs()),
    );
    outln!("ring       {name} ({})", i.path.display());
    outln!(
        "layout     version {}, {} ring, {} in all",
        shm::header::LAYOUT_VERSION,
        kind_name(l.kind),
        fmt_bytes(l.total_len)
    );
    outln!("created    {} ({age})", fmt_utc(i.created()));
    outln!(
        "slots      {} in use of {} ({} B each)",
        fmt_count(i.lag()),
        fmt_count(l.capacity),
        l.slot_size
    );
    if l.kind == RingKind::Arrow {
        outln!(
            "arena      {} in use of {}",
            fmt_bytes(i.arena_used()),
            fmt_bytes(l.arena_len)
        );
    }
    outln!("write_seq  {}", fmt_count(i.write_seq));
    outln!("read_seq   {}", fmt_count(i.read_seq));
    outln!("lag        {} slots", fmt_count(i.lag()));
    outln!(
        "producer   {} ({} session{})",
        i.producer.describe(),
        i.producer_sessions,
        if i.producer_sessions == 1 { "" } else { "s" }
    );
    if let Some(why) = &i.producer_failure {
        outln!("failure    {why}");
    }
    outln!("consumer   {}", i.consumer.describe());
    Ok(())
}

/// List the rings in a directory (other files are skipped).
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub location: Location,
}

pub fn ls(args: &LsArgs) -> Result<(), CliError> {
    let LsArgs { json, location } = args;
    let names = shm::list_candidates(&location.dir).map_err(|source| CliError::List {
        dir: location.dir.clone(),
        source,
    })?;
    let mut rings = Vec::new();
    for name in names {
        match inspect(&name, location, Duration::ZERO) {
            Ok(i) => rings.push((name, Ok(i))),
            // A file that carries the magic but is damaged is worth showing.
            Err(OpenError::BadHeader { source, .. })
                if !matches!(
                    source,
                    HeaderError::BadMagic { .. } | HeaderError::TooShort { .. }
                ) =>
            {
                rings.push((name, Err(source.to_string())));
            }
            // Not a ring, not readable by us, or still being created.
            Err(_) => {}
        }
    }
    if *json {
        let list: Vec<_> = rings
            .iter()
            .map(|(name, r)| match r {
                Ok(i) => info_json(name, i),
                Err(why) => json!({ "name": name, "damaged": why }),
            })
            .collect();
        outln!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    if rings.is_empty() {
        errln!("no rings in {}", location.dir.display());
        return Ok(());
    }
    let width = rings.iter().map(|(n, _)| n.len()).max().unwrap_or(4).max(4);
    outln!(
        "{:width$}  {:5}  {:>15}  {:>21}  {:14}  {:14}",
        "NAME",
        "KIND",
        "SLOTS USED",
        "ARENA USED",
        "PRODUCER",
        "CONSUMER"
    );
    for (name, r) in &rings {
        match r {
            Ok(i) => outln!(
                "{name:width$}  {:5}  {:>15}  {:>21}  {:14}  {:14}",
                kind_name(i.layout.kind),
                format!("{}/{}", i.lag(), i.layout.capacity),
                if i.layout.kind == RingKind::Arrow {
                    format!(
                        "{}/{}",
                        fmt_bytes(i.arena_used()),
                        fmt_bytes(i.layout.arena_len)
                    )
                } else {
                    "-".into()
                },
                i.producer.describe(),
                i.consumer.describe()
            ),
            Err(why) => outln!("{name:width$}  damaged: {why}"),
        }
    }
    Ok(())
}

/// Remove rings (processes attached keep their mapping until they
/// detach).
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Names of the rings.
    #[arg(required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    pub location: Location,
}

pub fn rm(args: &RmArgs) -> Result<(), CliError> {
    let RmArgs { names, location } = args;
    for name in names {
        // Only rings: refuse to unlink a file that is not one.
        match inspect(name, location, Duration::from_millis(200)) {
            Ok(_) | Err(OpenError::NotReady { .. }) => {}
            Err(OpenError::BadHeader {
                path,
                source: source @ (HeaderError::BadMagic { .. } | HeaderError::TooShort { .. }),
            }) => {
                return Err(CliError::NotARing { path, source });
            }
            // A damaged ring may be removed; other errors say why not.
            Err(OpenError::BadHeader { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        shm::remove_in(name, &location.dir)?;
    }
    Ok(())
}
