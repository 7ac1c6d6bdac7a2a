//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Counts how often each of `n` tracked values has been dropped.
#[derive(Clone)]
pub struct DropLedger(Arc<Vec<AtomicU32>>);

impl DropLedger {
    pub fn new(n: usize) -> Self {
        Self(Arc::new((0..n).map(|_| AtomicU32::new(0)).collect()))
    }

    pub fn item(&self, id: usize) -> Tracked {
        Tracked {
            id,
            ledger: self.clone(),
        }
    }

    pub fn drops(&self, id: usize) -> u32 {
        self.0[id].load(Ordering::SeqCst)
    }

    /// Panics unless every value was dropped exactly once.
    pub fn assert_each_dropped_once(&self) {
        for (id, c) in self.0.iter().enumerate() {
            let c = c.load(Ordering::SeqCst);
            assert_eq!(c, 1, "value {id} dropped {c} times");
        }
    }
}

/// A value that reports its drop to a [`DropLedger`].
pub struct Tracked {
    pub id: usize,
    ledger: DropLedger,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.ledger.0[self.id].fetch_add(1, Ordering::SeqCst);
    }
}

/// Order-sensitive checksum of a stream of u64 (FNV-1a over the bytes).
pub fn fnv(mut h: u64, v: u64) -> u64 {
    if h == 0 {
        h = 0xcbf2_9ce4_8422_2325;
    }
    for b in v.to_le_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Tiny xorshift generator for randomized tests. Its seed comes from
/// `LAMINAR_SEED` when set, else from the clock, and is printed, so that a
/// failing run can be replayed exactly: `LAMINAR_SEED=<seed> cargo test ...`.
pub struct Rng(u64);

impl Rng {
    pub fn from_env_or_time() -> Self {
        let seed = std::env::var("LAMINAR_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
            | 1; // xorshift's one fixed point is 0
        eprintln!("rng seed {seed} (set LAMINAR_SEED={seed} to replay)");
        Self(seed)
    }

    /// The next value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Takes an open-file-description write lock on byte `byte` of `file`, as
/// a segment's producer (byte 0) or consumer (byte 1) holds its role, and
/// its creator byte 2 until the segment is ready. Released with the file.
pub fn ofd_lock(file: &std::fs::File, byte: i64) {
    use std::os::fd::AsRawFd;
    #[allow(unsafe_code)]
    // SAFETY: flock is a plain C struct for which all-zero bytes are valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte;
    fl.l_len = 1;
    #[allow(unsafe_code)] // one fcntl call
    // SAFETY: a valid descriptor and a valid flock for the call's duration.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    assert_eq!(rc, 0, "F_OFD_SETLK: {}", std::io::Error::last_os_error());
}

#[cfg(all(target_os = "linux", not(loom)))]
pub mod process;
