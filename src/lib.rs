//! A pre-allocated, lock-free ring buffer with power-of-two slots and
//! cache-padded sequences; single- and multi-producer channels on it, in
//! process; the same ring in a shared-memory segment, so that separate
//! processes exchange items with no lock and no system call per item; and
//! Arrow `RecordBatch`es through that segment, with a zero-copy receive path.
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
//! # Which part to use
//!
//! | you have | use | module |
//! |---|---|---|
//! | two threads, one writer | [`spsc::channel`] | [`spsc`] |
//! | several writer threads, one reader | [`mpsc::channel`] | [`mpsc`] |
//! | two processes, plain-data items (`bytemuck::Pod`) | `ShmProducer<T>` / `ShmConsumer<T>` | `shm` (Linux) |
//! | two processes, Arrow `RecordBatch`es | `BatchProducer` / `BatchConsumer` | `arrow` (Linux, feature `arrow`) |
//! | your own protocol over the slots | [`RingBuffer<T>`] (unsafe slot API) | crate root |
//!
//! Every layer has non-blocking calls (`try_push`, `try_pop`), blocking ones
//! (`push`, `pop`, and `*_timeout` with a deadline) that wait according to a
//! [`WaitStrategy`] (spin, yield, or sleep on a futex), and calls that move
//! many items per publication (`push_slice`, `pop_slice`,
//! `write_chunk_uninit`, `read_chunk`): the sequences are stored once per
//! call, not once per item.
//!
//! # Guarantees
//!
//! * **Order and exactly-once in process.** Every item pushed is popped once,
//!   in push order (per producer, for [`mpsc`]); every item still in a channel
//!   when both ends are gone is dropped exactly once.
//! * **No allocation after construction** on any push or pop path.
//! * **Disconnection is an error, not a hang.** When every producer is gone
//!   the consumer drains what is left, then gets `Disconnected`; when the
//!   consumer is gone a push returns the value in `Disconnected(value)`.
//! * **Across processes, crashes lose nothing committed.** A producer killed
//!   at any moment: the consumer receives every item it published, once and in
//!   order, then `PeerGone`. A consumer killed: its restart resumes at the
//!   first item it had not released (at-least-once). Roles are kernel file
//!   locks, so a dead process never keeps one.
//! * **Untrusted peers.** Every header field, size, sequence and (for Arrow)
//!   IPC message read from a segment is validated; a bad one is a typed error,
//!   never a panic or an out-of-bounds read.
//!
//! The segment's byte layout, the store orders and the state each crash can
//! leave are specified in `docs/FORMAT.md` in the repository.
//!
//! # Features and platforms
//!
//! * `arrow` (default): the `arrow` module. It pulls the
//!   arrow-rs crates its API uses and re-exports them
//!   (`laminar_ring::arrow::{array, buffer, data, ipc, schema}`), so a caller
//!   never needs a second copy of arrow. This release speaks **arrow 60**.
//! * Without default features the crate is the in-process ring and channels
//!   and, on Linux, the shared-memory ring of plain-data items (15
//!   dependencies).
//!
//! The shared-memory segment and the futex are Linux's (x86_64 and aarch64
//! are tested). Elsewhere the in-process parts build, `WaitStrategy::Park`
//! degrades to a bounded yield loop (correct, but not sleeping), and the
//! `arrow` feature is a compile error that says why. The minimum Rust version is 1.88.
//!
//! # Memory ordering
//!
//! The producer writes a slot, then stores `write_seq` with `Release`; the
//! consumer loads `write_seq` with `Acquire`, reads the slot, then stores
//! `read_seq` with `Release`, which the producer's `Acquire` reload pairs
//! with before it overwrites the slot. Each pair is marked `SYNC POINT` at
//! both ends in the source, and the protocols are model-checked with loom
//! (`tests/loom.rs`).
//!
//! # See also
//!
//! * [rtrb](https://docs.rs/rtrb): the SPSC ring this one's caching and chunk
//!   API follow, and the peer in our benchmarks.
//! * [crossbeam-queue](https://docs.rs/crossbeam-queue)'s `ArrayQueue`: the
//!   Vyukov MPMC queue that [`mpsc`] restricts to one consumer.
//! * The `laminar-ring` command (package `laminar-ring-cli`): pipes Arrow,
//!   Parquet and CSV files between processes through these rings.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_debug_implementations)]

#[cfg(all(feature = "arrow", not(target_os = "linux")))]
compile_error!(
    "laminar-ring's `arrow` feature (a default one) needs Linux: its rings live in \
     shared memory and wait on futexes. Elsewhere use `default-features = false` \
     for the in-process ring and channels."
);

#[cfg(all(feature = "arrow", target_os = "linux", not(loom)))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "arrow", target_os = "linux"))))]
#[allow(unsafe_code)] // arena writes and leased buffers over the mapping
pub mod arrow;
#[allow(unsafe_code)] // slices over slots that a chunk owns until commit
mod chunks;
mod error;
// The fan-out protocol; public under loom, for the models in tests/loom.rs.
#[cfg(loom)]
#[doc(hidden)]
pub mod fanout;
#[cfg(not(loom))]
mod fanout;
#[allow(unsafe_code)] // Vyukov slot claims: slot access under stamp discipline
pub mod mpsc;
#[allow(unsafe_code)] // the SPSC protocol: slot access under its sequence discipline
mod protocol;
#[allow(unsafe_code)] // the slot memory and its raw, unsafe API (the spec's)
mod ring_buffer;
#[cfg(all(target_os = "linux", not(loom)))]
#[cfg_attr(docsrs, doc(cfg(target_os = "linux")))]
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
