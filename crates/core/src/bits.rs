//! Magnitudes in an element type's own bits. For IEEE floats, `|x| < |y|` exactly when the bits
//! of `|x|` (the sign bit cleared) are below those of `|y|`, so the passes over gigabytes compare
//! 16-, 32- or 64-bit integers, which vectorise, instead of converting every element to `f64`.

use std::ops::{BitAnd, BitOr, Not};

use crate::proto::DataType;

/// The unsigned integer holding one element of a float type.
pub(crate) trait Bits:
    Copy
    + Ord
    + Send
    + Sync
    + From<bool>
    + BitAnd<Output = Self>
    + BitOr<Output = Self>
    + Not<Output = Self>
{
    /// Bytes per element.
    const SIZE: usize;
    /// The sign bit.
    const SIGN: Self;
    /// Reads a little-endian element from exactly `SIZE` bytes.
    fn read(bytes: &[u8]) -> Self;
    /// Writes it back as little-endian bytes into exactly `SIZE` bytes.
    fn write(self, out: &mut [u8]);
    /// `value` narrowed to this width, saturating.
    fn saturating_from(value: u64) -> Self;
    /// Wrapping subtraction.
    fn wrapping_sub(self, other: Self) -> Self;

    /// The magnitude bits: the sign cleared.
    #[inline]
    fn magnitude(self) -> Self {
        self & !Self::SIGN
    }
}

macro_rules! bits {
    ($t:ty) => {
        impl Bits for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            const SIGN: $t = 1 << (<$t>::BITS - 1);
            #[inline]
            fn read(bytes: &[u8]) -> $t {
                <$t>::from_le_bytes(bytes.try_into().expect("one element"))
            }
            #[inline]
            fn write(self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn saturating_from(value: u64) -> $t {
                value.min(<$t>::MAX as u64) as $t
            }
            #[inline]
            fn wrapping_sub(self, other: $t) -> $t {
                <$t>::wrapping_sub(self, other)
            }
        }
    };
}
bits!(u16);
bits!(u32);
bits!(u64);

/// Calls `$f::<T>($args)` with `T` the integer type of `$dtype`'s elements.
macro_rules! with_bits {
    ($dtype:expr, $f:ident($($args:expr),* $(,)?)) => {
        match $dtype.size().expect("float type") {
            2 => $f::<u16>($($args),*),
            4 => $f::<u32>($($args),*),
            _ => $f::<u64>($($args),*),
        }
    };
}
pub(crate) use with_bits;

/// The magnitude key (see [`crate::model::magnitude_key`]) in `dtype`'s own bits: the smallest `b`
/// such that every element whose magnitude bits are at least `b` has a key of at least `key`.
pub(crate) fn native_threshold(dtype: DataType, key: u64) -> u64 {
    let t = f64::from_bits(key);
    // Rounding to the nearest representable value gives the neighbour below or above `t`.
    let smallest_at_least = |bits: u64, value: f64| if value < t { bits + 1 } else { bits };
    match dtype {
        DataType::Float32 => {
            let v = t as f32;
            smallest_at_least(u64::from(v.to_bits()), f64::from(v))
        }
        DataType::Float64 => key,
        DataType::Float16 => {
            let v = half::f16::from_f64(t);
            smallest_at_least(u64::from(v.to_bits()), v.to_f64())
        }
        DataType::BFloat16 => {
            let v = half::bf16::from_f64(t);
            smallest_at_least(u64::from(v.to_bits()), v.to_f64())
        }
        DataType::Other(_) => unreachable!("thresholds of non-float tensors"),
    }
}
