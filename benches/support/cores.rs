//! Pinning threads to CPUs, and the cross-core round trip that every
//! cross-core figure of these benches follows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Instant;

use crossbeam_utils::CachePadded;

/// Pins the calling thread to `cpu`; `false` when the kernel refuses (a
/// machine or cpuset without that CPU), and the thread stays where it was.
pub fn pin(cpu: usize) -> bool {
    #[allow(unsafe_code)]
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes within it
    // (it checks the bound); sched_setaffinity reads
    // `size_of::<cpu_set_t>()` bytes of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Lets the calling thread run on any CPU again.
#[allow(dead_code)] // not every bench unpins
pub fn unpin() {
    #[allow(unsafe_code)]
    // SAFETY: as in `pin`, with every CPU the set can name.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        let _ = libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Mean round trip of one cache line between CPU 0 and CPU 1, in ns:
/// ~100 ns when the machine placed the two vCPUs near each other, several
/// hundred when far.
#[allow(dead_code)] // not every bench reports it
pub fn probe_rtt_ns() -> f64 {
    const TRIPS: u64 = 20_000;
    let line = Arc::new(CachePadded::new(AtomicU64::new(0)));
    let echo = {
        let line = line.clone();
        thread::spawn(move || {
            let _ = pin(1);
            for i in 0..TRIPS {
                // Acquire/Release: a ping-pong, each side waits for the other's store.
                while line.load(Ordering::Acquire) != 2 * i + 1 {
                    std::hint::spin_loop();
                }
                line.store(2 * i + 2, Ordering::Release);
            }
        })
    };
    let _ = pin(0);
    let start = Instant::now();
    for i in 0..TRIPS {
        line.store(2 * i + 1, Ordering::Release);
        while line.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / TRIPS as f64;
    echo.join().expect("probe thread");
    ns
}
