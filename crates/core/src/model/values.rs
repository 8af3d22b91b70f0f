//! Reading a tensor's stored elements as little-endian bytes, whatever field holds them, and
//! element-wise helpers over those bytes (zero counts, magnitudes).

use std::borrow::Cow;

use onnx_splice::Value;
use rayon::prelude::*;

use crate::bits::{native_threshold, with_bits, Bits};
use crate::error::{Error, Result};
use crate::model::{Model, Payload, Tensor};
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
            // Sized by what the file holds, not by what a (possibly hostile) shape claims.
            let held: usize = pieces.iter().map(|p| p.span.len()).sum();
            let mut out =
                Vec::with_capacity((held.saturating_mul(size) as u64).min(expected) as usize);
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

/// A weight's elements (see [`dense_bytes`]) and their statistics, refusing NaN and infinities,
/// which no score can rank; `why` ends the message ("rank it by magnitude", "score it").
pub(crate) fn finite_values<'m>(
    model: &'m Model,
    weight: &crate::model::weights::Weight,
    why: &str,
) -> Result<(Cow<'m, [u8]>, ValueStats)> {
    let tensor = &model.tensors()[weight.tensor];
    let data = dense_bytes(model, tensor)?;
    let stats = value_stats(tensor.dtype, &data);
    if let Some(index) = stats.first_non_finite {
        return Err(crate::error::Error::tensor(
            &weight.id,
            format!("element {index} is NaN or infinite; refusing to {why}"),
        ));
    }
    Ok((data, stats))
}

/// The elements of a tensor as little-endian bytes (see [`stored_bytes`]); a tensor stored
/// sparse is densified.
pub fn dense_bytes<'m>(model: &'m Model, tensor: &Tensor) -> Result<Cow<'m, [u8]>> {
    if tensor.sparse.is_some() {
        return Ok(Cow::Owned(crate::write::sparse::dense_of(model, tensor)?));
    }
    stored_bytes(
        model,
        &tensor.payload,
        tensor.dtype,
        tensor.elements,
        &tensor.name,
    )
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

/// Calls `f(index, key)` for every element of `bytes` (little-endian elements of `dtype`), with
/// `index` counted from `first`. The type dispatch sits outside the loop, so each arm is a
/// tight loop over one element type: this is the hot path of pruning gigabytes.
#[inline]
pub fn for_each_key(dtype: DataType, bytes: &[u8], first: usize, mut f: impl FnMut(usize, u64)) {
    macro_rules! each {
        ($size:expr, $to_f64:expr) => {
            for (i, c) in bytes.chunks_exact($size).enumerate() {
                let value: f64 = $to_f64(c.try_into().unwrap());
                f(first + i, value.abs().to_bits());
            }
        };
    }
    match dtype {
        DataType::Float32 => each!(4, |c| f64::from(f32::from_le_bytes(c))),
        DataType::Float64 => each!(8, f64::from_le_bytes),
        DataType::Float16 => each!(2, |c| half::f16::from_le_bytes(c).to_f64()),
        DataType::BFloat16 => each!(2, |c| half::bf16::from_le_bytes(c).to_f64()),
        DataType::Other(_) => unreachable!("magnitudes of non-float tensors"),
    }
}

/// What one pass over a float tensor finds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValueStats {
    /// Elements equal to zero (either sign).
    pub zeros: u64,
    /// The first NaN or infinite element, if any.
    pub first_non_finite: Option<usize>,
}

/// Counts zeros and finds the first non-finite element, in one parallel pass.
pub fn value_stats(dtype: DataType, bytes: &[u8]) -> ValueStats {
    let size = dtype.size().expect("float type");
    let infinity = native_threshold(dtype, NON_FINITE_KEY);
    bytes
        .par_chunks(size * CHUNK_ELEMENTS)
        .enumerate()
        .map(|(c, chunk)| with_bits!(dtype, chunk_stats(chunk, c * CHUNK_ELEMENTS, infinity)))
        .reduce(ValueStats::default, |a, b| ValueStats {
            zeros: a.zeros + b.zeros,
            first_non_finite: a.first_non_finite.or(b.first_non_finite),
        })
}

/// [`value_stats`] of one chunk whose first element has index `first`; `infinity` is the
/// magnitude bits of infinity.
fn chunk_stats<T: Bits>(chunk: &[u8], first: usize, infinity: u64) -> ValueStats {
    const BLOCK: usize = 64;
    let (zero, infinity) = (T::from(false), T::saturating_from(infinity));
    let mut stats = ValueStats::default();
    for (b, block) in chunk.chunks(T::SIZE * BLOCK).enumerate() {
        // Counted branch-free; the rare block holding a non-finite element is searched.
        let (mut zeros, mut non_finite) = (0u32, 0u32);
        for element in block.chunks_exact(T::SIZE) {
            let magnitude = T::read(element).magnitude();
            zeros += u32::from(magnitude == zero);
            non_finite += u32::from(magnitude >= infinity);
        }
        stats.zeros += u64::from(zeros);
        if non_finite > 0 && stats.first_non_finite.is_none() {
            let at = block
                .chunks_exact(T::SIZE)
                .position(|element| T::read(element).magnitude() >= infinity);
            stats.first_non_finite = at.map(|i| first + b * BLOCK + i);
        }
    }
    stats
}

/// Counts the elements equal to zero (either sign).
pub fn count_zeros(dtype: DataType, bytes: &[u8]) -> u64 {
    value_stats(dtype, bytes).zeros
}
