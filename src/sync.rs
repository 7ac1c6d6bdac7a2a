//! Atomics, `UnsafeCell` and `Arc` from `std`, or from [`loom`] when built with
//! `RUSTFLAGS="--cfg loom"`.
//!
//! Nothing else in the crate names `std::sync::atomic` or `std::cell::UnsafeCell`
//! for ring state, so the loom models in `tests/loom.rs` exercise exactly the code
//! that ships. The shared-memory layer, which must use real `std` atomics placed
//! in a mapping, is compiled out under loom; the ring protocol it runs is the one
//! checked here.

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, fence};

#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};
// Linux uses std's fences directly, next to membarrier (wait::barrier).
#[cfg(not(loom))]
#[cfg_attr(target_os = "linux", allow(unused_imports))]
pub(crate) use std::sync::atomic::fence;

pub(crate) use std::sync::atomic::Ordering;

/// `std::cell::UnsafeCell` with loom's closure-based access API, so that the
/// same call sites compile against both.
#[cfg(not(loom))]
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    #[inline(always)]
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// One step of a spin loop: a CPU pause hint, or a loom yield so that the
/// model checker can schedule the other thread.
#[inline(always)]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// Give the rest of the time slice to another thread.
#[inline]
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}
