//! Reading a tensor's stored elements as little-endian bytes, whatever field holds them, and
//! element-wise helpers over those bytes (zero counts, magnitudes).

use std::borrow::Cow;

use onnx_splice::Value;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::{Model, Payload};
use crate::proto::{tensor as field, DataType};

/// Elements per chunk for parallel element-wise work.
pub(crate) const CHUNK_ELEMENTS: usize = 1 << 16;

/// The `count` stored elements of `payload` as little-endian bytes of `dtype`: borrowed from the
/// mapping for `raw_data` and external data, decoded for typed fields.
pub fn stored_bytes<'m>(
    model: &'m Model,
    payload: &Payload,
    dtype: DataType,
    count: u64,
    id: &str,
) -> Result<Cow<'m, [u8]>> {
    let size = dtype.size().ok_or_else(|| {
        Error::tensor(
            id,
            format!("element type {} has no fixed size", dtype.name()),
        )
    })?;
    let expected = count
        .checked_mul(size as u64)
        .ok_or_else(|| Error::tensor(id, "shape overflows"))?;
    let bytes: Cow<[u8]> = match payload {
        Payload::Raw(_) | Payload::External { .. } => {
            Cow::Borrowed(model.raw_bytes(payload).expect("raw payload"))
        }
        Payload::Typed { number, pieces } => {
            let mut out = Vec::with_capacity(expected.min(1 << 30) as usize);
            let bytes = model.bytes();
            for piece in pieces {
                match (&piece.value, *number) {
                    (Value::Len(range), field::FLOAT_DATA | field::DOUBLE_DATA) => {
                        out.extend_from_slice(&bytes[range.clone()]);
                    }
                    (Value::Fixed32(v), field::FLOAT_DATA) => {
                        out.extend_from_slice(&v.to_le_bytes())
                    }
                    (Value::Fixed64(v), field::DOUBLE_DATA) => {
                        out.extend_from_slice(&v.to_le_bytes())
                    }
                    (Value::Len(range), _) => {
                        let mut rest = &bytes[range.clone()];
                        while !rest.is_empty() {
                            let v = prost::encoding::decode_varint(&mut rest)
                                .map_err(|_| Error::tensor(id, "malformed packed data"))?;
                            push_varint_element(&mut out, v, size);
                        }
                    }
                    (Value::Varint(v), _) => push_varint_element(&mut out, *v, size),
                    _ => {
                        return Err(Error::tensor(
                            id,
                            "typed data field has an unexpected wire type",
                        ))
                    }
                }
                if out.len() as u64 > expected {
                    break;
                }
            }
            Cow::Owned(out)
        }
        Payload::Empty => Cow::Owned(Vec::new()),
    };
    if bytes.len() as u64 != expected {
        return Err(Error::tensor(
            id,
            format!(
                "holds {} bytes of {} data but its shape needs {expected}",
                bytes.len(),
                dtype.name()
            ),
        ));
    }
    Ok(bytes)
}

fn push_varint_element(out: &mut Vec<u8>, v: u64, size: usize) {
    out.extend_from_slice(&v.to_le_bytes()[..size]);
}

/// The magnitude of every element as an order-preserving key: the bits of `|x|` as `f64`.
/// Keys of different float types compare like their values. NaN maps above every number.
#[inline]
pub fn magnitude_key(dtype: DataType, bytes: &[u8], index: usize) -> u64 {
    let value = match dtype {
        DataType::Float32 => {
            let at = index * 4;
            f64::from(f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()))
        }
        DataType::Float64 => {
            let at = index * 8;
            f64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
        }
        DataType::Float16 => {
            let at = index * 2;
            half::f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f64()
        }
        DataType::BFloat16 => {
            let at = index * 2;
            half::bf16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f64()
        }
        DataType::Other(_) => unreachable!("magnitudes of non-float tensors"),
    };
    value.abs().to_bits()
}

/// Keys at or above this are infinite or NaN.
pub const NON_FINITE_KEY: u64 = 0x7ff0_0000_0000_0000;

/// Counts the elements equal to zero (either sign).
pub fn count_zeros(dtype: DataType, bytes: &[u8]) -> u64 {
    let Some(size) = dtype.size() else { return 0 };
    let is_zero = |element: &[u8]| {
        let last = element.len() - 1;
        element[..last].iter().all(|&b| b == 0) && element[last] & 0x7f == 0
    };
    bytes
        .par_chunks(size * CHUNK_ELEMENTS)
        .map(|chunk| chunk.chunks_exact(size).filter(|e| is_zero(e)).count() as u64)
        .sum()
}

/// Finds the first element that is NaN or infinite.
pub fn first_non_finite(dtype: DataType, bytes: &[u8]) -> Option<usize> {
    let size = dtype.size()?;
    let n = bytes.len() / size;
    (0..n)
        .into_par_iter()
        .by_exponential_blocks()
        .find_first(|&i| magnitude_key(dtype, bytes, i) >= NON_FINITE_KEY)
}
