//! Error types of the in-process ring and channels.
//!
//! Push errors hand the rejected value back (like rtrb's `PushError::Full(T)`),
//! and their `Debug` does not require `T: Debug`.

use std::fmt;

use crate::wait::would_block;

/// A ring capacity that [`RingBuffer::try_new`](crate::RingBuffer::try_new), a
/// channel constructor or a shared-memory ring's `create` refuses: every
/// ring's capacity is a non-zero power of two, and a ring in shared memory
/// has at most `shm::header::MAX_CAPACITY` (2^32) slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapacityError {
    /// Capacity zero: a ring must hold at least one item.
    #[error("ring capacity must be non-zero")]
    Zero,
    /// Capacity that is not a power of two (the index is `seq & (capacity - 1)`).
    #[error("ring capacity must be a power of two, got {0}")]
    NotPowerOfTwo(usize),
    /// Fewer slots than this kind of ring works with: an [`mpsc`](crate::mpsc)
    /// channel needs two, because its slot stamps (`seq` when free, `seq +
    /// 1` when written) cannot tell "written for `seq`" from "free for `seq +
    /// 1`" when both are the same slot.
    #[error("ring capacity must be at least {min} for this kind of ring, got {capacity}")]
    TooSmall {
        /// The capacity asked for.
        capacity: usize,
        /// The smallest one allowed.
        min: usize,
    },
    /// More slots than this kind of ring (or this machine's `usize`) allows.
    #[error("ring capacity must be at most {max}, got {capacity}")]
    TooLarge {
        /// The capacity asked for.
        capacity: u64,
        /// The largest one allowed.
        max: u64,
    },
}

/// The one capacity check of every ring: `capacity` is non-zero, at most
/// `max` and `usize::MAX`, and a power of two. Returns it as a `usize`.
///
/// # Errors
///
/// The first rule `capacity` breaks, in that order.
pub(crate) fn check_capacity(capacity: u64, max: u64) -> Result<usize, CapacityError> {
    let max = max.min(usize::MAX as u64);
    if capacity == 0 {
        return Err(CapacityError::Zero);
    }
    let Some(slots) = usize::try_from(capacity).ok().filter(|_| capacity <= max) else {
        return Err(CapacityError::TooLarge { capacity, max });
    };
    if !slots.is_power_of_two() {
        return Err(CapacityError::NotPowerOfTwo(slots));
    }
    Ok(slots)
}

macro_rules! value_error {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident => $msg:literal,)+ }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq)]
        pub enum $name<T> {
            $($(#[$vmeta])* $variant(T),)+
        }

        impl<T> $name<T> {
            /// Returns the value that could not be pushed.
            pub fn into_inner(self) -> T {
                match self {
                    $(Self::$variant(value) => value,)+
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Self::$variant(_) => f.write_str(concat!(stringify!($name), "::", stringify!($variant), "(..)")),)+
                }
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Self::$variant(_) => f.write_str($msg),)+
                }
            }
        }

        impl<T> std::error::Error for $name<T> {}
    };
}

value_error! {
    /// Error of a non-blocking push (`try_push`).
    TryPushError {
        /// The ring is full; the value is handed back.
        Full => "ring is full",
        /// The consumer is gone; the value is handed back.
        Disconnected => "consumer is disconnected",
    }
}

value_error! {
    /// Error of a blocking push (`push`).
    PushError {
        /// The consumer is gone; the value is handed back.
        Disconnected => "consumer is disconnected",
    }
}

value_error! {
    /// Error of a push with a deadline (`push_timeout`).
    PushTimeoutError {
        /// The ring stayed full until the deadline; the value is handed back.
        Timeout => "timed out waiting for a free slot",
        /// The consumer is gone; the value is handed back.
        Disconnected => "consumer is disconnected",
    }
}

/// Error of a non-blocking pop (`try_pop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryPopError {
    /// Nothing to read right now.
    #[error("ring is empty")]
    Empty,
    /// The ring is empty and every producer is gone: nothing will ever arrive.
    #[error("ring is empty and the producer is disconnected")]
    Disconnected,
}

/// Error of a blocking pop (`pop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PopError {
    /// The ring is empty and every producer is gone.
    #[error("ring is empty and the producer is disconnected")]
    Disconnected,
}

/// Error of a pop with a deadline (`pop_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PopTimeoutError {
    /// Nothing arrived before the deadline.
    #[error("timed out waiting for an item")]
    Timeout,
    /// The ring is empty and every producer is gone.
    #[error("ring is empty and the producer is disconnected")]
    Disconnected,
}

would_block!(TryPushError<T>::Full);
would_block!(TryPopError::Empty);

impl<T> TryPushError<T> {
    /// The error of `push`: without a deadline the ring is never `Full`.
    pub(crate) fn into_push_error(self) -> PushError<T> {
        match self {
            Self::Disconnected(v) => PushError::Disconnected(v),
            Self::Full(_) => unreachable!("no deadline, so no timeout"),
        }
    }

    /// The error of `push_timeout`: `Full` at the deadline is `Timeout`.
    pub(crate) fn into_timeout_error(self) -> PushTimeoutError<T> {
        match self {
            Self::Full(v) => PushTimeoutError::Timeout(v),
            Self::Disconnected(v) => PushTimeoutError::Disconnected(v),
        }
    }
}

impl TryPopError {
    /// The error of `pop`: without a deadline the ring is never `Empty`.
    pub(crate) fn into_pop_error(self) -> PopError {
        match self {
            Self::Disconnected => PopError::Disconnected,
            Self::Empty => unreachable!("no deadline, so no timeout"),
        }
    }

    /// The error of `pop_timeout`: `Empty` at the deadline is `Timeout`.
    pub(crate) fn into_timeout_error(self) -> PopTimeoutError {
        match self {
            Self::Empty => PopTimeoutError::Timeout,
            Self::Disconnected => PopTimeoutError::Disconnected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NotDebug;

    #[test]
    fn push_errors_debug_without_t_debug_and_return_value() {
        let e = TryPushError::Full(NotDebug);
        assert_eq!(format!("{e:?}"), "TryPushError::Full(..)");
        assert_eq!(e.to_string(), "ring is full");
        let e = PushTimeoutError::Timeout(7_u8);
        assert_eq!(e.into_inner(), 7);
        let e: Box<dyn std::error::Error> = Box::new(PushError::Disconnected(1_u8));
        assert_eq!(e.to_string(), "consumer is disconnected");
    }

    #[test]
    fn a_capacity_is_non_zero_then_at_most_max_then_a_power_of_two() {
        assert_eq!(check_capacity(0, 8), Err(CapacityError::Zero));
        assert_eq!(
            check_capacity(12, 8),
            Err(CapacityError::TooLarge {
                capacity: 12,
                max: 8
            })
        );
        assert_eq!(check_capacity(6, 8), Err(CapacityError::NotPowerOfTwo(6)));
        assert_eq!(check_capacity(8, 8), Ok(8));
        assert_eq!(check_capacity(1, 8), Ok(1));
        assert_eq!(check_capacity(1 << 40, u64::MAX), Ok(1 << 40));
        assert_eq!(
            CapacityError::TooLarge {
                capacity: 1 << 33,
                max: 1 << 32
            }
            .to_string(),
            "ring capacity must be at most 4294967296, got 8589934592"
        );
    }

    #[test]
    fn pop_errors_display() {
        assert_eq!(TryPopError::Empty.to_string(), "ring is empty");
        assert_eq!(
            CapacityError::NotPowerOfTwo(3).to_string(),
            "ring capacity must be a power of two, got 3"
        );
    }
}
