//! Wait strategies for the blocking calls (`push`, `pop`, `*_timeout`).
//!
//! * [`WaitStrategy::BusySpin`]: spin with a CPU pause hint; lowest latency,
//!   one core at 100% while waiting.
//! * [`WaitStrategy::SpinYield`] (default): spin with exponential backoff, then
//!   `sched_yield` between attempts (crossbeam's `Backoff`). Still polls.
//! * [`WaitStrategy::Park`]: spin up to [`PARK_SPIN_TIME`] (50 µs), then
//!   sleep in the kernel on a futex word until the other side wakes it; no
//!   CPU while asleep. The spin catches a peer that answers quickly without
//!   paying a wake-up, which on a virtual machine costs tens of
//!   microseconds (BENCHMARKS.md measures both). After the first
//!   [`PARK_YIELD_AFTER`] (5 µs) of it, the spinner offers its core to
//!   any other runnable thread (`sched_yield`) between looks: with more
//!   busy processes than cores (several consumers of one ring on a small
//!   machine) the peer it waits for may be the one waiting for that core.
//!
//! # Waking without a lost wakeup
//!
//! A parked waiter announces itself in a wait cell (a futex word and a
//! waiter count) and re-checks its condition; the other side publishes and
//! then looks for waiters. A barrier between each side's store and its load
//! (the Dekker pattern) makes sure that either the waiter sees the new data
//! or the publisher sees the waiter.
//!
//! Publishing happens on every item; sleeping happens after
//! [`PARK_SPIN_TIME`] of spinning found nothing. So the barrier is split
//! unevenly, as the Linux kernel's `membarrier(2)` allows: the publisher's
//! half is a compiler fence (no instruction; the CPU may still hold its
//! store in its store buffer while it loads the waiter count), and the
//! sleeper's half is `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which
//! runs a full memory barrier on every CPU that is running a thread of a
//! process registered for it, the publisher's included, before it returns.
//! Whatever point of the publisher's program that barrier lands on, one of
//! the two sides sees the other: before the publisher's load of the count,
//! that load sees the waiter (whose increment came before the barrier);
//! after its store, the sleeper's re-check sees the data. A process
//! registers the first time it publishes on a cell (and executes one full
//! fence then, for a sleeper whose barrier came before the registration).
//!
//! Where `membarrier` is missing (not Linux, a kernel without it, a
//! sandbox that forbids it) both halves are `SeqCst` fences, as a plain
//! Dekker pattern has it; a sleeper whose own `membarrier` failed sleeps at
//! most [`FALLBACK_SLICE`] at a time, in case its publisher relies on it.
//! Every sleep is bounded anyway ([`PARK_SLICE`]), so that a waiter
//! re-checks its condition and the peer's liveness even if a wake were
//! lost.

use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;

use crate::sync::{AtomicU32, AtomicU64, Ordering, spin_hint, yield_now};

/// How a blocking call waits for the ring to change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitStrategy {
    /// Spin on the ring with a pause hint between attempts.
    BusySpin,
    /// Spin with exponential backoff, then yield the time slice between attempts.
    #[default]
    SpinYield,
    /// Spin up to [`PARK_SPIN_TIME`] (50 µs), yielding the core between
    /// looks after [`PARK_YIELD_AFTER`], then sleep on a futex until woken
    /// (no CPU while asleep).
    Park,
}

/// Longest single sleep of a parked waiter before it re-checks on its own.
pub const PARK_SLICE: Duration = Duration::from_millis(50);

/// Longest single sleep of a parked waiter whose process cannot use
/// `membarrier` (see "Waking without a lost wakeup").
pub const FALLBACK_SLICE: Duration = Duration::from_millis(1);

/// Spins of a parked waiter between looks at the clock (one under loom,
/// where each is a scheduling point to explore).
const PARK_SPINS: u32 = if cfg!(loom) { 1 } else { 64 };

/// How long a parked waiter spins before it goes to sleep: about the cost of
/// a futex wake-up on a virtual machine, so that a peer that answers within
/// it is caught without one, while a long wait costs at most this much CPU.
pub const PARK_SPIN_TIME: Duration = Duration::from_micros(50);

/// How long a parked waiter spins before it starts offering its core to
/// other runnable threads between looks (`sched_yield`): longer than a
/// cross-core round trip (0.1 to 0.5 µs), so a peer answering at once is
/// caught without a system call. With three busy processes on two cores,
/// the yield doubled a ring's throughput to each of two consumers
/// (BENCHMARKS.md, "Several consumers of one ring").
pub const PARK_YIELD_AFTER: Duration = Duration::from_micros(5);

/// [`PARK_SLICE`], unless a test made it longer ([`set_park_slice`]).
fn park_slice() -> Duration {
    #[cfg(not(loom))]
    {
        // Relaxed: a setting, read on the slow path; any value seen is one
        // that was set.
        let ms = PARK_SLICE_MS.load(std::sync::atomic::Ordering::Relaxed);
        if ms != 0 {
            return Duration::from_millis(ms);
        }
    }
    PARK_SLICE
}

#[cfg(not(loom))]
static PARK_SLICE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sets this process's longest single sleep of a parked waiter, instead of
/// [`PARK_SLICE`]. For tests of the wake-up protocol: with a slice longer
/// than the test's deadline, a lost wake-up is a timeout rather than a
/// 50 ms delay nobody notices. Not for production use.
#[doc(hidden)]
#[cfg(not(loom))]
pub fn set_park_slice(slice: Duration) {
    let ms = u64::try_from(slice.as_millis()).unwrap_or(u64::MAX).max(1);
    // Relaxed: see park_slice.
    PARK_SLICE_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}

/// Who sleeps on and wakes a [`WaitCell`]: which futex the kernel keys it
/// by (`FUTEX_PRIVATE_FLAG` or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// Threads of this process only (an in-process ring): the private futex,
    /// keyed by virtual address, which the kernel finds without a page walk.
    ThisProcess,
    /// Every process that maps the cell (a ring in a shared-memory segment):
    /// the shared futex, keyed by the physical page.
    #[cfg_attr(any(loom, not(target_os = "linux")), allow(dead_code))] // shm only
    AcrossProcesses,
}

/// A futex word and a waiter count: where one side of a ring sleeps and the
/// other wakes it. `#[repr(C)]` so that a later layer can place it in shared
/// memory.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct WaitCell {
    /// Futex word: bumped by every wake, so a sleeper whose snapshot is stale
    /// returns from `FUTEX_WAIT` at once.
    epoch: AtomicU32,
    /// Number of threads that may be asleep on `epoch`.
    waiters: AtomicU32,
    /// Under loom, the futex is a mutex and a condition variable, and a
    /// sleep has no time limit: a lost wake-up is a deadlock the model
    /// checker reports.
    #[cfg(loom)]
    futex: futex::Futex,
}

impl WaitCell {
    pub(crate) fn new() -> Self {
        Self {
            epoch: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            #[cfg(loom)]
            futex: futex::Futex::default(),
        }
    }

    /// Forgets every sleeper. Only for a cell that one party alone sleeps on
    /// (a ring's role holder), when that party takes over from a
    /// predecessor: one killed while asleep never decrements the count, and
    /// every later `notify` would then make a wake-up system call for it.
    #[cfg_attr(loom, allow(dead_code))] // only the shared-memory layer resets
    pub(crate) fn reset_waiters(&self) {
        // Relaxed: no sleeper can be on the cell while its only party is the
        // caller, so there is no sleep to order against; a `notify` racing
        // with this at worst makes one needless wake-up call.
        self.waiters.store(0, Ordering::Relaxed);
    }

    /// Forgets sleeper `bit` (see [`Waiter::sleeping_as`]): for a party
    /// that takes over that bit from a predecessor, which may have been
    /// killed while asleep.
    #[cfg_attr(loom, allow(dead_code))] // only the shared-memory layer uses bits
    pub(crate) fn clear_sleeper(&self, bit: u32) {
        // Relaxed: as reset_waiters; the bit is the caller's alone.
        self.waiters.fetch_and(!(1 << bit), Ordering::Relaxed);
    }

    /// Wakes every sleeper, if there is any. Call after the store that made
    /// the waiters' condition true.
    #[inline]
    pub(crate) fn notify(&self, sharing: Sharing) {
        // SYNC POINT wake: the light half of the barrier between the caller's
        // publishing store and the load of `waiters`; pairs with the heavy
        // half in `sleep_until`, between the waiter's increment of `waiters`
        // and its re-check of the condition.
        barrier::light(sharing);
        // Relaxed: ordered by the barrier pair above.
        if self.waiters.load(Ordering::Relaxed) != 0 {
            self.wake(sharing);
        }
    }

    #[cold]
    fn wake(&self, sharing: Sharing) {
        // Release: orders the wake after the publish for a sleeper that reads
        // the epoch (Acquire in `wait`).
        self.epoch.fetch_add(1, Ordering::Release);
        futex::wake_all(self, sharing);
    }

    /// Sleeps until `ready()` is true, the deadline passes, or [`PARK_SLICE`]
    /// passes; returns `ready()`'s last answer.
    ///
    /// With `bit`, the sleeper announces itself by setting that bit of the
    /// waiter word rather than by counting (see [`Waiter::sleeping_as`]).
    fn sleep_until(
        &self,
        sharing: Sharing,
        deadline: Option<Instant>,
        bit: Option<u32>,
        ready: &mut impl FnMut() -> bool,
    ) -> bool {
        // Acquire: pairs with the Release increment in `wake`.
        let epoch = self.epoch.load(Ordering::Acquire);
        // Relaxed: ordered by the barrier below.
        match bit {
            None => self.waiters.fetch_add(1, Ordering::Relaxed),
            Some(b) => self.waiters.fetch_or(1 << b, Ordering::Relaxed),
        };
        // SYNC POINT wake: the heavy half; pairs with the light half in
        // `notify`.
        let paired = barrier::heavy(sharing);
        let done = ready();
        if !done {
            let mut slice = if paired { park_slice() } else { FALLBACK_SLICE };
            if let Some(d) = deadline {
                slice = slice.min(d.saturating_duration_since(Instant::now()));
            }
            if !slice.is_zero() {
                futex::wait(self, epoch, slice, sharing);
            }
        }
        // Relaxed: a count only; a notify that still sees it makes one
        // needless wake-up call.
        match bit {
            None => self.waiters.fetch_sub(1, Ordering::Relaxed),
            Some(b) => self.waiters.fetch_and(!(1 << b), Ordering::Relaxed),
        };
        done
    }
}

#[cfg(all(test, not(loom)))]
impl WaitCell {
    /// Waits, at most 10 s, until a thread sleeps on this cell (or is about
    /// to: it has announced itself and re-checks its condition).
    ///
    /// # Panics
    ///
    /// If none does within 10 s.
    pub(crate) fn await_sleeper(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        // Relaxed: a test's poll; the sleeper's own fence orders what matters.
        while self.waiters.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "no thread slept on the cell");
            std::thread::yield_now();
        }
    }
}

/// Runs `attempt` until it returns `Some`, waiting between tries as `strategy`
/// says. Returns `None` once `deadline` has passed.
///
/// `attempt` must perform the whole operation (try to push or pop and report
/// disconnection), so that a success after a wake is never lost. With
/// `bit`, a sleep announces itself as that bit of the cell's waiter word
/// ([`Waiter::sleeping_as`]).
pub(crate) fn wait_until<R>(
    strategy: WaitStrategy,
    cell: &WaitCell,
    sharing: Sharing,
    deadline: Option<Instant>,
    (bit, nap): (Option<u32>, Option<Duration>),
    mut attempt: impl FnMut() -> Option<R>,
) -> Option<R> {
    if let Some(r) = attempt() {
        return Some(r);
    }
    let expired = |deadline: Option<Instant>| deadline.is_some_and(|d| Instant::now() >= d);
    match strategy {
        WaitStrategy::BusySpin => loop {
            for _ in 0..128 {
                spin_hint();
                if let Some(r) = attempt() {
                    return Some(r);
                }
            }
            if expired(deadline) {
                return attempt();
            }
        },
        WaitStrategy::SpinYield => {
            let backoff = Backoff::new();
            loop {
                if backoff.is_completed() {
                    yield_now();
                    if expired(deadline) {
                        return attempt();
                    }
                } else {
                    backoff.snooze();
                }
                if let Some(r) = attempt() {
                    return Some(r);
                }
            }
        }
        WaitStrategy::Park => {
            // Under loom time does not pass: one round of spins.
            let start = (!cfg!(loom)).then(Instant::now);
            loop {
                for _ in 0..PARK_SPINS {
                    spin_hint();
                    if let Some(r) = attempt() {
                        return Some(r);
                    }
                }
                let Some(start) = start else { break };
                let spun = start.elapsed();
                if spun >= PARK_SPIN_TIME || expired(deadline) {
                    break;
                }
                // Scheduling only, no ordering. Past the first few
                // microseconds, a peer on this core (more processes than
                // cores: several consumers of one ring on two) runs in the
                // gaps; with no one else runnable, the call returns at once.
                // On a busy core a deadline may pass during the yield, as
                // during any sleep: the next look sees it.
                if spun >= PARK_YIELD_AFTER {
                    yield_now();
                }
            }
            let mut result = None;
            loop {
                let mut ready = || {
                    result = attempt();
                    result.is_some()
                };
                // With a nap, no sleep is longer: the attempt has something
                // to do at that pace even when nobody wakes it.
                let wake = match (deadline, nap.map(|n| Instant::now() + n)) {
                    (Some(d), Some(n)) => Some(d.min(n)),
                    (d, n) => d.or(n),
                };
                if cell.sleep_until(sharing, wake, bit, &mut ready) {
                    return result;
                }
                if expired(deadline) {
                    return attempt();
                }
                if let Some(r) = attempt() {
                    return Some(r);
                }
            }
        }
    }
}

/// The error of a non-blocking call that may mean only "not now" (the ring
/// is full, or empty): what a blocking call retries on.
pub(crate) trait WouldBlock: Sized {
    /// What the next try needs back: the value of a push, `()` for a pop.
    type Retry;

    /// `Ok` with what to try again with when the call may succeed later,
    /// `Err(self)` when it failed for good (the peer is gone).
    fn into_retry(self) -> Result<Self::Retry, Self>;

    /// The error of a call still blocked at its deadline.
    fn blocked(retry: Self::Retry) -> Self;
}

/// Implements [`WouldBlock`] for an error whose `$blocked` variant means
/// "not now": `Full(T)` of a push error (retried with its value), `Empty`
/// of a pop error.
macro_rules! would_block {
    ($error:ident<$t:ident>::$blocked:ident) => {
        impl<$t> $crate::wait::WouldBlock for $error<$t> {
            type Retry = $t;

            fn into_retry(self) -> Result<$t, Self> {
                match self {
                    Self::$blocked(value) => Ok(value),
                    gone => Err(gone),
                }
            }

            fn blocked(value: $t) -> Self {
                Self::$blocked(value)
            }
        }
    };
    ($error:ident::$blocked:ident) => {
        impl $crate::wait::WouldBlock for $error {
            type Retry = ();

            fn into_retry(self) -> Result<(), Self> {
                match self {
                    Self::$blocked => Ok(()),
                    gone => Err(gone),
                }
            }

            fn blocked((): ()) -> Self {
                Self::$blocked
            }
        }
    };
}
pub(crate) use would_block;

/// Where and how one half of a ring waits: what its blocking calls need
/// besides the non-blocking call they retry.
pub(crate) struct Waiter<W> {
    strategy: WaitStrategy,
    sharing: Sharing,
    /// Keeps the cell alive without borrowing the half (an `Arc` clone),
    /// so that the retries may borrow the half mutably meanwhile.
    handle: W,
    cell: fn(&W) -> &WaitCell,
    /// A word that says since when this half waits (Unix ns, 0: it does
    /// not), for people looking at a shared ring (`info`).
    since: Option<fn(&W) -> &AtomicU64>,
    /// The bit this half sets in the cell's waiter word while it sleeps,
    /// rather than counting itself.
    bit: Option<u32>,
    /// The longest sleep ([`napping`](Self::napping)).
    nap: Option<Duration>,
}

impl<W> Waiter<W> {
    pub(crate) fn new(
        strategy: WaitStrategy,
        sharing: Sharing,
        handle: W,
        cell: fn(&W) -> &WaitCell,
    ) -> Self {
        Self {
            strategy,
            sharing,
            handle,
            cell,
            since: None,
            bit: None,
            nap: None,
        }
    }

    /// Sleeps (with [`WaitStrategy::Park`]) at most `nap` at a time: for a
    /// waiter whose attempts have something to do at that pace even when
    /// nobody wakes it (a producer under `Policy::Lag` watching a dead
    /// subscriber's grace run out).
    #[cfg_attr(any(loom, not(target_os = "linux")), allow(dead_code))]
    pub(crate) fn napping(mut self, nap: Option<Duration>) -> Self {
        self.nap = nap;
        self
    }

    /// Sleeps as sleeper `bit` (below 32) of the cell: sets that bit of
    /// the waiter word while asleep instead of counting itself. For a cell
    /// that several parties in several processes sleep on, each with its
    /// own bit: one killed while asleep leaves only its own bit set, which
    /// the next holder of that bit clears ([`WaitCell::clear_sleeper`]),
    /// where a count left behind could not be told from the others'.
    #[cfg_attr(any(loom, not(target_os = "linux")), allow(dead_code))]
    pub(crate) fn sleeping_as(mut self, bit: u32) -> Self {
        debug_assert!(bit < 32);
        self.bit = Some(bit);
        self
    }

    /// Stores the time into `since`'s word while this waiter waits, and 0
    /// after.
    // Only shared rings mark, and they are Linux's and not modelled by loom.
    #[cfg_attr(any(loom, not(target_os = "linux")), allow(dead_code))]
    pub(crate) fn marking(mut self, since: fn(&W) -> &AtomicU64) -> Self {
        self.since = Some(since);
        self
    }

    /// [`wait_until`] on this waiter's cell, as its strategy says.
    pub(crate) fn wait_until<R>(
        &self,
        deadline: Option<Instant>,
        attempt: impl FnMut() -> Option<R>,
    ) -> Option<R> {
        let cell = (self.cell)(&self.handle);
        let Some(word) = self.since.map(|word| word(&self.handle)) else {
            return wait_until(
                self.strategy,
                cell,
                self.sharing,
                deadline,
                (self.bit, self.nap),
                attempt,
            );
        };
        /// Unmarks the word however the wait ends (a panicking attempt
        /// included), if it was marked.
        struct Unmark<'a>(&'a AtomicU64, bool);
        impl Drop for Unmark<'_> {
            fn drop(&mut self) {
                if self.1 {
                    // Relaxed: information for people, ordered with nothing.
                    self.0.store(0, Ordering::Relaxed);
                }
            }
        }
        let mut mark = Unmark(word, false);
        let mut attempt = attempt;
        wait_until(
            self.strategy,
            cell,
            self.sharing,
            deadline,
            (self.bit, self.nap),
            || {
                let done = attempt();
                // Marked once, when the first attempt found it must wait.
                if done.is_none() && !mark.1 {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(1, |d| d.as_nanos() as u64);
                    // Relaxed: information for people, ordered with nothing.
                    mark.0.store(now.max(1), Ordering::Relaxed);
                    mark.1 = true;
                }
                done
            },
        )
    }
}

/// One half of a ring whose blocking calls retry its non-blocking ones
/// ([`retry_until`]).
pub(crate) trait Blocking {
    /// What keeps the half's wait cell alive.
    type Handle;

    /// How and where this half waits, taken only once a try was blocked.
    fn waiter(&self) -> Waiter<Self::Handle>;
}

/// The blocking form of the non-blocking call `try_op`: runs it with `input`
/// until it succeeds or fails for good, waiting between tries as `half`
/// says. Once `deadline` has passed it returns the last would-block error
/// (`Full(value)`, `Empty`).
///
/// Every blocking call of the crate (`push`, `push_timeout`, `pop`,
/// `pop_timeout`, in process and across processes) is this, as
/// crossbeam-channel's `send`/`send_timeout` are one `send(msg, deadline)`.
pub(crate) fn retry_until<H, I, R, E>(
    half: &mut H,
    deadline: Option<Instant>,
    input: I,
    mut try_op: impl FnMut(&mut H, I) -> Result<R, E>,
) -> Result<R, E>
where
    H: Blocking,
    E: WouldBlock<Retry = I>,
{
    // Fast path first: the handle taken below may touch a shared refcount.
    let input = match try_op(half, input) {
        Err(e) => e.into_retry()?,
        done => return done,
    };
    let mut pending = Some(input);
    let outcome = half.waiter().wait_until(deadline, || {
        let input = pending
            .take()
            .expect("each blocked try hands its input back");
        match try_op(half, input) {
            Err(e) => match e.into_retry() {
                Ok(input) => {
                    pending = Some(input);
                    None
                }
                Err(e) => Some(Err(e)),
            },
            done => Some(done),
        }
    });
    outcome.unwrap_or_else(|| Err(E::blocked(pending.expect("the last try was blocked"))))
}

/// The two halves of the barrier between a publisher's store and its look
/// for sleepers, and a sleeper's announcement and its re-check (see
/// "Waking without a lost wakeup" in the module documentation).
///
/// Rings in one process use `membarrier`'s private commands (a barrier on
/// the CPUs running this process's threads); rings across processes its
/// global ones (every process registered for them). Each kind is
/// registered on its first use.
#[doc(hidden)]
pub mod barrier {
    use super::Sharing;

    #[cfg(all(target_os = "linux", not(loom)))]
    use std::sync::atomic::{AtomicU8, Ordering, compiler_fence, fence};

    /// This process has not asked the kernel yet.
    #[cfg(all(target_os = "linux", not(loom)))]
    const UNKNOWN: u8 = 0;
    /// Registered: the light half is a compiler fence.
    #[cfg(all(target_os = "linux", not(loom)))]
    const ASYMMETRIC: u8 = 1;
    /// No `membarrier` here: both halves are `SeqCst` fences.
    #[cfg(all(target_os = "linux", not(loom)))]
    const SYMMETRIC: u8 = 2;

    /// Per [`Sharing`]: `[ThisProcess, AcrossProcesses]`.
    #[cfg(all(target_os = "linux", not(loom)))]
    static STATE: [AtomicU8; 2] = [AtomicU8::new(UNKNOWN), AtomicU8::new(UNKNOWN)];

    // From linux/membarrier.h (not in the libc crate).
    #[cfg(all(target_os = "linux", not(loom)))]
    const MEMBARRIER_CMD_QUERY: libc::c_long = 0;
    #[cfg(all(target_os = "linux", not(loom)))]
    const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_long = 1 << 1;
    #[cfg(all(target_os = "linux", not(loom)))]
    const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_long = 1 << 2;
    #[cfg(all(target_os = "linux", not(loom)))]
    const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    #[cfg(all(target_os = "linux", not(loom)))]
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    /// The commands of one kind of sharing: (barrier, register).
    #[cfg(all(target_os = "linux", not(loom)))]
    fn commands(sharing: Sharing) -> (libc::c_long, libc::c_long) {
        match sharing {
            Sharing::ThisProcess => (
                MEMBARRIER_CMD_PRIVATE_EXPEDITED,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            ),
            Sharing::AcrossProcesses => (
                MEMBARRIER_CMD_GLOBAL_EXPEDITED,
                MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
            ),
        }
    }

    #[cfg(all(target_os = "linux", not(loom)))]
    fn state_of(sharing: Sharing) -> &'static AtomicU8 {
        &STATE[sharing as usize]
    }

    #[cfg(all(target_os = "linux", not(loom)))]
    fn membarrier(cmd: libc::c_long) -> libc::c_long {
        // SAFETY: membarrier takes two integers (command, flags) and a CPU
        // id that these commands ignore; it touches no memory of ours.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                cmd,
                0 as libc::c_long,
                0 as libc::c_long,
            )
        }
    }

    /// Asks the kernel once whether this process can have the asymmetric
    /// barrier for `sharing`, and registers it if so. Idempotent: two
    /// threads racing here both register, which the kernel accepts.
    #[cfg(all(target_os = "linux", not(loom)))]
    #[cold]
    fn init(sharing: Sharing) -> u8 {
        let (barrier, register) = commands(sharing);
        let supported = membarrier(MEMBARRIER_CMD_QUERY);
        let state = if supported >= 0
            && supported & (barrier | register) == barrier | register
            && membarrier(register) == 0
        {
            ASYMMETRIC
        } else {
            SYMMETRIC
        };
        // Relaxed: a thread that still reads UNKNOWN comes here again; one
        // that reads ASYMMETRIC runs in a process the kernel has
        // registered (the registration returned before this store).
        state_of(sharing).store(state, Ordering::Relaxed);
        state
    }

    /// The publisher's half: between its store and its load of the waiter
    /// count, on every publish.
    #[inline(always)]
    pub(crate) fn light(sharing: Sharing) {
        #[cfg(all(target_os = "linux", not(loom)))]
        // Relaxed: see init.
        match state_of(sharing).load(Ordering::Relaxed) {
            // The sleeper's membarrier puts the full barrier in our
            // instruction stream; only the compiler must keep the store
            // and the load in program order.
            ASYMMETRIC => compiler_fence(Ordering::SeqCst),
            UNKNOWN => {
                init(sharing);
                // Once, after registering: a sleeper whose membarrier ran
                // before this process was registered is covered by this
                // fence and its own barrier, as in the plain pattern.
                fence(Ordering::SeqCst);
            }
            _ => fence(Ordering::SeqCst),
        }
        // Under loom, membarrier is modelled by what it guarantees: a full
        // barrier in the publisher's program between its store and its load
        // (see the module documentation for why any point will do).
        #[cfg(any(loom, not(target_os = "linux")))]
        {
            let _ = sharing;
            crate::sync::fence(crate::sync::Ordering::SeqCst);
        }
    }

    /// The sleeper's half: between its announcement in the waiter count and
    /// its re-check of the condition, on every sleep. `false` when it could
    /// only run a local fence while a publisher in another process may rely
    /// on `membarrier`: the caller then sleeps at most
    /// [`FALLBACK_SLICE`](super::FALLBACK_SLICE). (A publisher in this
    /// process uses fences too in that case, so in-process rings never
    /// fall back.)
    pub(crate) fn heavy(sharing: Sharing) -> bool {
        #[cfg(all(target_os = "linux", not(loom)))]
        {
            // Relaxed: see init.
            let state = match state_of(sharing).load(Ordering::Relaxed) {
                UNKNOWN => init(sharing),
                s => s,
            };
            if state == ASYMMETRIC && membarrier(commands(sharing).0) == 0 {
                return true;
            }
            fence(Ordering::SeqCst);
            sharing == Sharing::ThisProcess && state == SYMMETRIC
        }
        #[cfg(any(loom, not(target_os = "linux")))]
        {
            let _ = sharing;
            crate::sync::fence(crate::sync::Ordering::SeqCst);
            true
        }
    }

    /// Whether this process uses the asymmetric barrier for rings in shared
    /// memory (asking the kernel if it has not yet): what a test of the
    /// wake-up protocol across processes checks before it claims to test it.
    #[doc(hidden)]
    pub fn asymmetric_across_processes() -> bool {
        #[cfg(all(target_os = "linux", not(loom)))]
        {
            let sharing = Sharing::AcrossProcesses;
            // Relaxed: see init.
            match state_of(sharing).load(Ordering::Relaxed) {
                UNKNOWN => init(sharing) == ASYMMETRIC,
                s => s == ASYMMETRIC,
            }
        }
        #[cfg(any(loom, not(target_os = "linux")))]
        false
    }
}

#[cfg(all(target_os = "linux", not(loom)))]
mod futex {
    //! `FUTEX_WAIT`/`FUTEX_WAKE` on an `AtomicU32`: private for in-process
    //! rings, shared (keyed by the physical page) for rings in a mapping that
    //! several processes see.

    use std::time::Duration;

    use super::{Sharing, WaitCell};

    fn op(base: libc::c_int, sharing: Sharing) -> libc::c_int {
        match sharing {
            Sharing::AcrossProcesses => base,
            Sharing::ThisProcess => base | libc::FUTEX_PRIVATE_FLAG,
        }
    }

    /// Sleeps while `*word == expected`, at most `timeout`. Spurious returns
    /// are fine: every caller re-checks its condition.
    pub(super) fn wait(cell: &WaitCell, expected: u32, timeout: Duration, sharing: Sharing) {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // The result (woken, EAGAIN, ETIMEDOUT, EINTR) needs no handling:
        // the caller re-checks its condition.
        // SAFETY: `word` is a live, aligned 4-byte atomic for the duration of
        // the call, and `ts` outlives it; FUTEX_WAIT only reads both.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                cell.epoch.as_ptr(),
                op(libc::FUTEX_WAIT, sharing),
                expected,
                &ts as *const libc::timespec,
            );
        }
    }

    /// Wakes every thread sleeping on the cell's epoch.
    pub(super) fn wake_all(cell: &WaitCell, sharing: Sharing) {
        // SAFETY: `word` is a live, aligned 4-byte atomic; FUTEX_WAKE does not
        // dereference anything else.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                cell.epoch.as_ptr(),
                op(libc::FUTEX_WAKE, sharing),
                i32::MAX,
            );
        }
    }
}

#[cfg(all(not(target_os = "linux"), not(loom)))]
mod futex {
    //! Fallback without a futex: a bounded yield, so `Park` degrades to
    //! polling but stays correct.

    use std::time::Duration;

    use super::{Sharing, WaitCell};

    pub(super) fn wait(_cell: &WaitCell, _expected: u32, _timeout: Duration, _sharing: Sharing) {
        std::thread::yield_now();
    }

    pub(super) fn wake_all(_cell: &WaitCell, _sharing: Sharing) {}
}

#[cfg(loom)]
mod futex {
    //! The futex as loom can model it: `wait` sleeps on a condition
    //! variable while the epoch is unchanged, with no time limit, and
    //! `wake_all` wakes every sleeper under the same mutex. So a wake-up
    //! the protocol loses leaves a thread asleep for good: a deadlock, which
    //! loom reports as a failure of the model.

    use std::time::Duration;

    use loom::sync::{Condvar, Mutex};

    use super::{Sharing, WaitCell};
    use crate::sync::Ordering;

    #[derive(Debug, Default)]
    pub(crate) struct Futex {
        lock: Mutex<()>,
        woken: Condvar,
    }

    pub(super) fn wait(cell: &WaitCell, expected: u32, _timeout: Duration, _sharing: Sharing) {
        let guard = cell.futex.lock.lock().expect("model mutex");
        // Checked under the mutex that `wake_all` takes after its epoch
        // bump, as the kernel checks the word under its hash-bucket lock.
        if cell.epoch.load(Ordering::Acquire) == expected {
            drop(cell.futex.woken.wait(guard).expect("model mutex"));
        }
    }

    pub(super) fn wake_all(cell: &WaitCell, _sharing: Sharing) {
        drop(cell.futex.lock.lock().expect("model mutex"));
        cell.futex.woken.notify_all();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn every_strategy_times_out_when_nothing_happens() {
        for s in [
            WaitStrategy::BusySpin,
            WaitStrategy::SpinYield,
            WaitStrategy::Park,
        ] {
            let cell = WaitCell::new();
            let start = Instant::now();
            let deadline = start + Duration::from_millis(20);
            let r: Option<()> = wait_until(
                s,
                &cell,
                Sharing::ThisProcess,
                Some(deadline),
                (None, None),
                || None,
            );
            assert!(r.is_none(), "{s:?}");
            assert!(
                Instant::now() >= deadline,
                "{s:?} returned before its deadline"
            );
        }
    }

    #[test]
    fn park_is_woken_by_notify() {
        let cell = Arc::new(WaitCell::new());
        let flag = Arc::new(AtomicBool::new(false));
        let (c2, f2) = (cell.clone(), flag.clone());
        let waiter = std::thread::spawn(move || {
            wait_until(
                WaitStrategy::Park,
                &c2,
                Sharing::ThisProcess,
                None,
                (None, None),
                || f2.load(Ordering::Acquire).then_some(7),
            )
        });
        cell.await_sleeper();
        flag.store(true, Ordering::Release);
        cell.notify(Sharing::ThisProcess);
        assert_eq!(waiter.join().unwrap(), Some(7));
    }
}
