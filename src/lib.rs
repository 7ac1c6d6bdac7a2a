//! A pre-allocated, lock-free ring buffer with power-of-two slots and
//! cache-padded sequences, and single- and multi-producer channels on top.
//!
//! ```
//! use laminar_ring::spsc;
//!
//! let (mut producer, mut consumer) = spsc::channel::<u64>(1024);
//! std::thread::scope(|s| {
//!     s.spawn(move || {
//!         for i in 0..100_000 {
//!             producer.push(i).unwrap();
//!         }
//!     });
//!     for i in 0..100_000 {
//!         assert_eq!(consumer.pop(), Ok(i));
//!     }
//! });
//! ```
//!
//! * [`RingBuffer<T>`]: the storage (spec F-STREAM-001): slots, `write_seq`,
//!   `read_seq`, and the unsafe slot-level API the protocols use.
//! * [`spsc`]: one producer, one consumer; cached positions, batch and chunk
//!   calls that publish once per batch.
//! * [`mpsc`]: cloneable producers claiming slots by CAS, per-slot stamps.
//! * [`wait`]: how blocking calls wait (spin, yield, or sleep on a futex).
//!
//! Every push and pop after construction is allocation-free
//! (`tests/zero_alloc.rs` counts).
//!
//! # See also
//!
//! * [rtrb](https://docs.rs/rtrb): the SPSC ring this one's caching and chunk
//!   API follow, and the peer in our benchmarks.
//! * [crossbeam-queue](https://docs.rs/crossbeam-queue)'s `ArrayQueue`: the
//!   Vyukov MPMC queue that [`mpsc`] restricts to one consumer.

#![warn(missing_debug_implementations)]

#[cfg(all(feature = "arrow", not(target_os = "linux")))]
compile_error!(
    "laminar-ring's `arrow` feature (a default one) needs Linux: its rings live in \
     shared memory and wait on futexes. Elsewhere use `default-features = false` \
     for the in-process ring and channels."
);

#[cfg(all(feature = "arrow", target_os = "linux", not(loom)))]
#[allow(unsafe_code)] // arena writes and leased buffers over the mapping
pub mod arrow;
#[allow(unsafe_code)] // slices over slots that a chunk owns until commit
mod chunks;
mod error;
#[allow(unsafe_code)] // Vyukov slot claims: slot access under stamp discipline
pub mod mpsc;
#[allow(unsafe_code)] // the SPSC protocol: slot access under its sequence discipline
mod protocol;
#[allow(unsafe_code)] // the slot memory and its raw, unsafe API (the spec's)
mod ring_buffer;
#[cfg(all(target_os = "linux", not(loom)))]
pub mod shm;
#[allow(unsafe_code)] // hands protocol-owned slot runs to chunks
pub mod spsc;
mod sync;
#[allow(unsafe_code)] // the futex system call
pub mod wait;

pub use chunks::{ReadChunk, WriteChunkUninit};
pub use error::{
    CapacityError, PopError, PopTimeoutError, PushError, PushTimeoutError, TryPopError,
    TryPushError,
};
pub use ring_buffer::RingBuffer;
pub use wait::WaitStrategy;
