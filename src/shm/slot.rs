//! [`ShmSlot`]: what may be a slot of a typed shared-memory ring, and the
//! stable identity it declares.
//!
//! A ring's header records a fingerprint of its slot type, and a process
//! whose type's fingerprint differs is refused at open. The fingerprint
//! cannot come from `std::any::type_name`, whose output is not stable across
//! compiler versions (and changes when a type moves to another module or
//! crate): it goes into a file that programs built by other compilers read.
//! So a slot type declares its own name, as iceoryx2's `ZeroCopySend` lets a
//! type do, and the fingerprint hashes that name with the type's size and
//! alignment.

use bytemuck::Pod;

/// Plain data that may be a slot of a typed shared-memory ring, with a name
/// that identifies its layout.
///
/// Two programs attach to the same ring only if their slot types agree on
/// `TYPE_NAME`, size and alignment. Give a type a name that says what its
/// bytes mean, and change the name when the fields change (a version suffix
/// does it): the size and alignment alone do not catch two `u32` fields
/// swapped.
///
/// The trait is safe to implement: `T: Pod` already makes any bytes a valid
/// `T`, so a wrong name can give wrong values, never undefined behaviour.
///
/// Implemented for the fixed-width integers and floats (named as in Rust:
/// `"u64"`, `"f32"`...), `usize` and `isize` (their size tells 32- from
/// 64-bit programs apart), and arrays of slot types, which share their
/// element's name (the size tells `[u64; 2]` from `[u64; 4]`; `[u64; 1]` and
/// `u64` are the same slot).
///
/// # Examples
///
/// ```
/// use bytemuck::{Pod, Zeroable};
/// use laminar_ring::shm::ShmSlot;
///
/// #[repr(C)]
/// #[derive(Clone, Copy, Pod, Zeroable)]
/// struct Tick {
///     seq: u64,
///     price: f64,
/// }
///
/// impl ShmSlot for Tick {
///     const TYPE_NAME: &'static str = "example.Tick.v1";
/// }
/// ```
pub trait ShmSlot: Pod {
    /// The type's stable name, hashed into the ring's `type_fingerprint`
    /// (docs/FORMAT.md).
    const TYPE_NAME: &'static str;
}

macro_rules! named_by_rust {
    ($($t:ty),*) => {
        $(impl ShmSlot for $t {
            const TYPE_NAME: &'static str = stringify!($t);
        })*
    };
}

named_by_rust!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64
);

impl<T: ShmSlot, const N: usize> ShmSlot for [T; N]
where
    [T; N]: Pod,
{
    const TYPE_NAME: &'static str = T::TYPE_NAME;
}

/// Fingerprint of a slot type, as written in a ring's header: FNV-1a 64 of
/// its size (u64, little-endian), its alignment (u64, little-endian) and its
/// [`ShmSlot::TYPE_NAME`] (UTF-8).
pub fn fingerprint<T: ShmSlot>() -> u64 {
    fingerprint_of(size_of::<T>() as u64, align_of::<T>() as u64, T::TYPE_NAME)
}

/// [`fingerprint`] from its parts.
pub(crate) fn fingerprint_of(size: u64, align: u64, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    };
    eat(&size.to_le_bytes());
    eat(&align.to_le_bytes());
    eat(name.as_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_types_apart() {
        assert_ne!(fingerprint::<u64>(), fingerprint::<i64>());
        assert_ne!(fingerprint::<[u8; 8]>(), fingerprint::<u64>());
        assert_ne!(fingerprint::<[u64; 2]>(), fingerprint::<[u64; 4]>());
        assert_ne!(fingerprint::<[u32; 2]>(), fingerprint::<u64>());
        assert_eq!(fingerprint::<u64>(), fingerprint::<u64>());
        // FNV-1a 64 of 8u64 LE, 8u64 LE, "u64", computed by hand once.
        assert_eq!(fingerprint::<u64>(), fingerprint_of(8, 8, "u64"));
    }
}
