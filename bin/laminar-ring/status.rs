//! `info` (once, or `--watch`ed with each side's rate) and `ls`: what a
//! ring's header says, for people and for scripts.

use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime};

use laminar_ring::arrow::schema::SchemaRef;
use laminar_ring::shm::{self, HeaderError, OpenError, RingInfo, RingKind, RoleInfo, RoleState};
use serde_json::json;

use crate::error::CliError;
use crate::print::{errln, outln};
use crate::rings::{Location, inspect};
use crate::units::{fmt_bytes, fmt_count, fmt_counted, fmt_utc};

fn kind_name(kind: RingKind) -> &'static str {
    match kind {
        RingKind::Typed => "typed",
        RingKind::Arrow => "arrow",
    }
}

/// The side's state for JSON, the same word the text shows: `attached`
/// while a live process holds it, `dead` when its holder died attached.
fn state_name(r: &RoleInfo) -> String {
    match (r.alive, r.state) {
        (true, _) => "attached".into(),
        (false, RoleState::Attached) => "dead".into(),
        (false, RoleState::Never) => "never".into(),
        (false, RoleState::Closed) => "closed".into(),
        (false, RoleState::Failed) => "failed".into(),
        (false, RoleState::Unknown(v)) => format!("unknown ({v})"),
        (false, other) => format!("{other:?}").to_lowercase(),
    }
}

/// Seconds since `t` (0 if it lies in the future).
fn secs_since(t: SystemTime) -> f64 {
    SystemTime::now()
        .duration_since(t)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

fn subscribers_json(i: &RingInfo) -> serde_json::Value {
    json!(
        i.subscribers
            .iter()
            .map(|s| {
                let mut v = role_json(&s.role);
                v["name"] = json!(s.name);
                v["cursor"] = json!(s.cursor);
                v["read_seq"] = json!(s.read_seq);
                v["lag"] = json!(s.lag(i));
                v["arena_lag"] = json!(s.arena_lag(i));
                v["arena_released"] = json!(s.arena_released);
                v["ends_pending"] = json!(s.ends_pending);
                v["dropped"] = json!(s.dropped);
                v
            })
            .collect::<Vec<_>>()
    )
}

fn policy_json(p: shm::Policy) -> serde_json::Value {
    match p {
        shm::Policy::Block => json!({ "kind": "block" }),
        shm::Policy::Lag { bound, grace } => json!({
            "kind": "lag",
            "bound": bound,
            "grace_s": grace.as_secs_f64(),
        }),
    }
}

fn role_json(r: &RoleInfo) -> serde_json::Value {
    json!({
        "state": state_name(r),
        "alive": r.alive,
        "pid": r.pid.filter(|_| r.alive || r.state == RoleState::Attached),
        "waiting": r.waiting_since.is_some(),
        "waiting_s": r.waiting_since.map(secs_since),
    })
}

/// The lanes after lane 0 of the stream `name` (rings `NAME#1`, ... made
/// by producers that joined it while another held the ring), up to the
/// first missing one; a lane that cannot be inspected is left out.
fn other_lanes(name: &str, location: &Location) -> Vec<(u32, RingInfo)> {
    let mut lanes = Vec::new();
    for lane in 1..shm::MAX_LANES {
        match inspect(&shm::lane_name(name, lane), location, Duration::ZERO) {
            Ok(i) => lanes.push((lane, i)),
            Err(OpenError::NotFound { .. }) => break,
            Err(_) => {}
        }
    }
    lanes
}

/// Each lane of a stream (lane 0 is the ring itself) for `info --json`:
/// its producer and how much it sent.
fn lanes_json(first: &RingInfo, others: &[(u32, RingInfo)]) -> serde_json::Value {
    let lane = |n: u32, i: &RingInfo| {
        let mut producer = role_json(&i.producer);
        producer["sessions"] = json!(i.producer_sessions);
        producer["failure"] = json!(i.producer_failure);
        json!({
            "lane": n,
            "path": i.path.display().to_string(),
            "producer": producer,
            "sent": i.write_seq,
            "lag": i.lag(),
        })
    };
    json!(
        std::iter::once(lane(0, first))
            .chain(others.iter().map(|(n, i)| lane(*n, i)))
            .collect::<Vec<_>>()
    )
}

/// `info --json`'s object (also each ring of `ls --json`).
pub fn info_json(name: &str, i: &RingInfo) -> serde_json::Value {
    let l = &i.layout;
    let created_unix_s = l.created_unix_ns / 1_000_000_000;
    let mut producer = role_json(&i.producer);
    producer["sessions"] = json!(i.producer_sessions);
    producer["failure"] = json!(i.producer_failure);
    json!({
        "name": name,
        "status": "ok",
        "path": i.path.display().to_string(),
        "layout_version": shm::header::LAYOUT_VERSION,
        "kind": kind_name(l.kind),
        "temporary": l.temporary,
        "capacity": l.capacity,
        "slot_size": l.slot_size,
        "slots_used": i.lag(),
        "arena_bytes": l.arena_len,
        "arena_used": i.arena_used(),
        "arena_head": i.arena_head,
        "arena_released": i.arena_released,
        "write_seq": i.write_seq,
        "read_seq": i.read_seq,
        "lag": i.lag(),
        "ends_pending": i.ends_pending,
        "producer": producer,
        "consumer": role_json(&i.consumer),
        "max_consumers": l.max_consumers,
        "policy": policy_json(l.policy),
        "subscribers": subscribers_json(i),
        "created_unix_s": created_unix_s,
        "created": fmt_utc(i.created()),
        "total_bytes": l.total_len,
    })
}

/// One side for people: `alive, pid 1234, blocked on a full ring for
/// 12.3 s`, `dead, pid 1234`, `failed: why`, `closed`, `never attached`.
fn describe_role(r: &RoleInfo, waiting: &str, failure: Option<&str>) -> String {
    let mut s = r.describe().to_owned();
    if let Some(pid) = r.pid.filter(|_| r.alive || r.state == RoleState::Attached) {
        s.push_str(&format!(", pid {pid}"));
    }
    if let Some(t) = r.waiting_since {
        s.push_str(&format!(", {waiting} for {:.1} s", secs_since(t)));
    }
    if let (RoleState::Failed, false, Some(why)) = (r.state, r.alive, failure) {
        s.push_str(&format!(": {why}"));
    }
    s
}

/// Show a ring's layout, sequences, use and peers.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// Name of the ring.
    pub name: String,
    /// Print JSON instead of text (with --watch, one object a line).
    #[arg(long)]
    pub json: bool,
    /// Refresh every INTERVAL (default 1s; 500ms, 2s, 0.5) until Ctrl-C,
    /// with each side's rate between refreshes.
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "1s",
          value_parser = crate::units::parse_interval)]
    pub watch: Option<Duration>,
    /// With --watch: stop after N refreshes.
    #[arg(long, value_name = "N", requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    #[command(flatten)]
    pub location: Location,
}

/// Items and bytes per second of each side between two samples.
struct Rates {
    interval: f64,
    produced: f64,
    written: f64,
    consumed: f64,
    read: f64,
}

impl Rates {
    fn between(a: &RingInfo, b: &RingInfo, interval: Duration) -> Self {
        let s = interval.as_secs_f64().max(1e-9);
        let per_s = |x: u64, y: u64| y.saturating_sub(x) as f64 / s;
        Self {
            interval: s,
            produced: per_s(a.write_seq, b.write_seq),
            written: per_s(a.arena_head, b.arena_head),
            consumed: per_s(a.read_seq, b.read_seq),
            read: per_s(a.arena_released, b.arena_released),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "interval_s": self.interval,
            "producer": { "items_per_s": self.produced, "bytes_per_s": self.written },
            "consumer": { "items_per_s": self.consumed, "bytes_per_s": self.read },
        })
    }
}

fn rate_text(items: f64, bytes: f64) -> String {
    format!(
        "{} items/s, {}/s",
        fmt_count(items.round() as u64),
        fmt_bytes(bytes.round() as u64)
    )
}

pub fn info(args: &InfoArgs) -> Result<(), CliError> {
    let Some(interval) = args.watch else {
        let i = inspect(&args.name, &args.location, Duration::from_secs(2))?;
        return print_info(args, &i, None);
    };
    let clear = !args.json && std::io::stdout().is_terminal();
    let mut last: Option<(Instant, RingInfo)> = None;
    let mut n = 0;
    loop {
        let i = inspect(&args.name, &args.location, Duration::from_secs(2))?;
        let now = Instant::now();
        let rates = last
            .as_ref()
            .map(|(t, prev)| Rates::between(prev, &i, now - *t));
        if clear {
            // Home the cursor and clear the screen, as watch(1) does.
            outln!("\x1b[H\x1b[2J{}", fmt_utc(SystemTime::now()));
        } else if !args.json {
            outln!("--- {}", fmt_utc(SystemTime::now()));
        }
        print_info(args, &i, Some(rates.as_ref()))?;
        last = Some((now, i));
        n += 1;
        if args.count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}

/// Prints one sample; `watch` is `Some` under --watch (with the rates since
/// the previous sample, `None` on the first).
fn print_info(
    args: &InfoArgs,
    i: &RingInfo,
    watch: Option<Option<&Rates>>,
) -> Result<(), CliError> {
    let name = &args.name;
    let schema = (i.layout.kind == RingKind::Arrow).then(|| schema_of(name, &args.location));
    let lanes = other_lanes(name, &args.location);
    if args.json {
        let mut v = info_json(name, i);
        v["lanes"] = lanes_json(i, &lanes);
        if let Some(rates) = watch {
            v["rate"] = rates.map_or(serde_json::Value::Null, Rates::json);
        }
        v["schema"] = match &schema {
            Some(Ok(Some(s))) => json!(
                s.fields()
                    .iter()
                    .map(|f| json!({
                        "name": f.name(),
                        "type": f.data_type().to_string(),
                        "nullable": f.is_nullable(),
                    }))
                    .collect::<Vec<_>>()
            ),
            Some(Err(why)) => json!({ "error": why }),
            _ => serde_json::Value::Null,
        };
        outln!("{v}");
        return Ok(());
    }
    let l = &i.layout;
    let age = SystemTime::now().duration_since(i.created()).map_or_else(
        |_| "in the future".into(),
        |d| format!("{} s ago", d.as_secs()),
    );
    outln!("ring       {name} ({})", i.path.display());
    outln!(
        "layout     version {}, {}{} ring, {} in all",
        shm::header::LAYOUT_VERSION,
        if l.temporary { "temporary " } else { "" },
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
    outln!("lag        {}", fmt_counted(i.lag(), "slot", "slots"));
    outln!(
        "producer   {} ({} session{})",
        describe_role(
            &i.producer,
            "blocked on a full ring",
            i.producer_failure.as_deref()
        ),
        i.producer_sessions,
        if i.producer_sessions == 1 { "" } else { "s" }
    );
    if !lanes.is_empty() {
        outln!(
            "lanes      {} (several producers joined this stream, one lane each; \
             lane 0 is this ring)",
            lanes.len() + 1
        );
        for (n, li) in std::iter::once((0, i)).chain(lanes.iter().map(|(n, li)| (*n, li))) {
            outln!(
                "  lane {n:<2}  {}; sent {}, {} unread",
                describe_role(
                    &li.producer,
                    "blocked on a full ring",
                    li.producer_failure.as_deref()
                ),
                fmt_counted(li.write_seq, "item", "items"),
                fmt_count(li.lag())
            );
        }
    }
    outln!("policy     {}", crate::rings::fmt_policy(l.policy));
    if i.subscribers.is_empty() {
        outln!(
            "consumers  none subscribed (of {}): the ring keeps what it holds for the first",
            l.max_consumers
        );
    } else {
        outln!(
            "consumers  {} subscribed of {}",
            i.subscribers.len(),
            l.max_consumers
        );
    }
    let width = i
        .subscribers
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    for s in &i.subscribers {
        let mut lag = fmt_counted(s.lag(i), "item", "items");
        if l.kind == RingKind::Arrow {
            lag.push_str(&format!(", {}", fmt_bytes(s.arena_lag(i))));
        }
        let dropped = if s.dropped {
            "dropped (the producer no longer waits for it), "
        } else {
            ""
        };
        outln!(
            "  {:width$}  {dropped}{}; at {}, behind by {lag}",
            s.name,
            describe_role(&s.role, "waiting on an empty ring", None),
            fmt_count(s.read_seq)
        );
    }
    match &schema {
        None => {}
        Some(Ok(None)) => outln!("schema     none yet (no schema message in the ring)"),
        Some(Ok(Some(s))) => {
            let n = s.fields().len();
            outln!(
                "schema     {n} column{}, as a consumer attaching now reads it",
                if n == 1 { "" } else { "s" }
            );
            let width = s.fields().iter().map(|f| f.name().len()).max().unwrap_or(0);
            for f in s.fields() {
                outln!(
                    "           {:width$}  {}{}",
                    f.name(),
                    f.data_type(),
                    if f.is_nullable() { "" } else { " not null" }
                );
            }
        }
        Some(Err(why)) => outln!("schema     unreadable: {why}"),
    }
    if let Some(rates) = watch {
        match rates {
            Some(r) => {
                outln!("rate in    {} (producer)", rate_text(r.produced, r.written));
                outln!("rate out   {} (consumer)", rate_text(r.consumed, r.read));
            }
            None => outln!("rate       - (from the next refresh)"),
        }
    }
    Ok(())
}

/// The schema a consumer attaching to `name` now would read.
fn schema_of(name: &str, location: &Location) -> Result<Option<SchemaRef>, String> {
    let opts = shm::SegmentOptions {
        dir: location.dir.clone(),
        allow_shared: location.shared,
        ready_timeout: Duration::ZERO,
        ..shm::SegmentOptions::default()
    };
    laminar_ring::arrow::stream_schema(name, &opts).map_err(|e| crate::error::one_line(&e))
}

/// List every ring in a directory, and every file there that fails like
/// one (damaged, not readable); other files are skipped.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub location: Location,
}

/// What `ls` found in one file.
pub enum Entry {
    Ok(Box<RingInfo>),
    /// A ring of another layout version (made by another release).
    OtherVersion {
        found: u32,
        supported: u32,
    },
    /// Carries the magic but cannot be read as a ring.
    Damaged(String),
    /// Cannot be opened: it may be a ring.
    NotReadable(String),
}

/// `Some` for a file that is a ring or fails like one; `None` for a file
/// that is not a ring.
pub fn classify(name: &str, location: &Location) -> Option<Entry> {
    match inspect(name, location, Duration::ZERO) {
        Ok(i) => Some(Entry::Ok(Box::new(i))),
        Err(OpenError::BadHeader {
            source: HeaderError::BadMagic { .. } | HeaderError::TooShort { .. },
            ..
        })
        | Err(OpenError::NotFound { .. } | OpenError::BadName { .. }) => None,
        Err(OpenError::BadHeader {
            source: HeaderError::VersionMismatch { found, supported },
            ..
        }) => Some(Entry::OtherVersion { found, supported }),
        Err(OpenError::BadHeader { source, .. }) => Some(Entry::Damaged(source.to_string())),
        // An empty file has nothing of a ring (a creator sizes it at once).
        Err(OpenError::NotReady { path, .. })
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) =>
        {
            None
        }
        Err(OpenError::NotReady { .. }) => Some(Entry::Damaged(
            "not ready (its creator is still initialising it, or died doing so)".into(),
        )),
        Err(OpenError::PermissionDenied { .. }) => {
            Some(Entry::NotReadable("permission denied".into()))
        }
        Err(OpenError::Untrusted { why, .. }) => Some(Entry::NotReadable(why)),
        Err(OpenError::Io { source, .. }) => Some(Entry::NotReadable(source.to_string())),
        Err(e) => Some(Entry::Damaged(crate::error::one_line(&e))),
    }
}

pub fn ls(args: &LsArgs) -> Result<(), CliError> {
    let LsArgs { json, location } = args;
    let names = shm::list_candidates(&location.dir).map_err(|source| CliError::List {
        dir: location.dir.clone(),
        source,
    })?;
    // A stream's other lanes (NAME#n) are counted on its line, not listed.
    let streams: std::collections::HashSet<String> = names.iter().cloned().collect();
    let rings: Vec<_> = names
        .into_iter()
        .filter(|n| {
            let (stream, lane) = shm::parse_lane_name(n);
            lane == 0 || !streams.contains(stream)
        })
        .filter_map(|n| classify(&n, location).map(|e| (n, e)))
        .collect();
    let lanes: std::collections::HashMap<&str, Vec<(u32, RingInfo)>> = rings
        .iter()
        .filter(|(_, e)| matches!(e, Entry::Ok(_)))
        .map(|(n, _)| (n.as_str(), other_lanes(n, location)))
        .collect();
    // "N producers" for a stream of several lanes: the live ones; with
    // none live, how many lanes there are and what lane 0's producer did.
    let producers = |name: &str, i: &RingInfo| -> String {
        match lanes.get(name) {
            Some(others) if !others.is_empty() => {
                let alive = others.iter().filter(|(_, l)| l.producer.alive).count()
                    + usize::from(i.producer.alive);
                if alive == 0 {
                    // Each lane's last producer closed, failed or died.
                    let n = others.len() + 1;
                    let dead = others
                        .iter()
                        .filter(|(_, l)| l.producer.describe() == "dead")
                        .count()
                        + usize::from(i.producer.describe() == "dead");
                    return match dead {
                        0 => format!("no producer, {n} lanes"),
                        d => format!("no producer, {n} lanes, {d} dead"),
                    };
                }
                format!("{alive} producer{}", if alive == 1 { "" } else { "s" })
            }
            _ => i.producer.describe().to_owned(),
        }
    };
    if *json {
        let list: Vec<_> = rings
            .iter()
            .map(|(name, e)| match e {
                Entry::Ok(i) => {
                    let mut v = info_json(name, i);
                    v["lanes"] = lanes_json(i, lanes.get(name.as_str()).map_or(&[], |l| l));
                    v
                }
                Entry::OtherVersion { found, supported } => json!({
                    "name": name,
                    "status": "other version",
                    "layout_version": found,
                    "why": format!(
                        "layout version {found}, made by another release; this one reads {supported}"
                    ),
                }),
                Entry::Damaged(why) => json!({ "name": name, "status": "damaged", "why": why }),
                Entry::NotReadable(why) => {
                    json!({ "name": name, "status": "not readable", "why": why })
                }
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
        "{:width$}  {:5}  {:>15}  {:>21}  {:14}  {:14}  SUBSCRIBERS",
        "NAME",
        "KIND",
        "SLOTS USED",
        "ARENA USED",
        "PRODUCER",
        "CONSUMER"
    );
    for (name, e) in &rings {
        match e {
            Entry::Ok(i) => outln!(
                "{name:width$}  {:5}  {:>15}  {:>21}  {:14}  {:14}  {}/{}",
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
                producers(name, i),
                i.consumer.describe(),
                i.subscribers.len(),
                i.layout.max_consumers
            ),
            Entry::OtherVersion { found, supported } => outln!(
                "{name:width$}  layout version {found}, made by another release of \
                 laminar-ring (this one reads {supported})"
            ),
            Entry::Damaged(why) => outln!("{name:width$}  damaged: {why}"),
            Entry::NotReadable(why) => outln!("{name:width$}  not readable: {why}"),
        }
    }
    Ok(())
}
