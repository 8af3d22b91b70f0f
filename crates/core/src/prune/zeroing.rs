//! Which elements of a tensor become zero, and writing a tensor's bytes with them zeroed.

use std::io::{self, Write};

use rayon::prelude::*;

use crate::bits::{native_threshold, with_bits, Bits};
use crate::model::values::{for_each_key, CHUNK_ELEMENTS};
use crate::proto::DataType;

/// Chunks processed in parallel before their bytes are written.
const BATCH_CHUNKS: usize = 32;

/// The elements of one tensor to set to zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Zeroing {
    /// Every element whose magnitude key (see [`crate::model::magnitude_key`]) is below `key`, and the
    /// first `ties` elements (by flat index) whose key equals it.
    Threshold {
        /// The threshold key.
        key: u64,
        /// How many elements equal to the threshold are zeroed.
        ties: u64,
    },
    /// Elements whose entry is `false`.
    Keep(Vec<bool>),
}

impl Zeroing {
    /// Number of zero elements after applying this to `bytes` (existing zeros included).
    pub fn zeros_after(&self, dtype: DataType, bytes: &[u8]) -> u64 {
        let size = dtype.size().expect("float type");
        let (below, zeros) = bytes
            .par_chunks(size * CHUNK_ELEMENTS)
            .enumerate()
            .map(|(c, chunk)| {
                let (mut below, mut zeros) = (0u64, 0u64);
                for_each_key(dtype, chunk, c * CHUNK_ELEMENTS, |i, key| match self {
                    Zeroing::Threshold { key: t, .. } => {
                        below += u64::from(key < *t);
                        zeros += u64::from(key == 0);
                    }
                    Zeroing::Keep(keep) => zeros += u64::from(!keep[i] || key == 0),
                });
                (below, zeros)
            })
            .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        match self {
            Zeroing::Threshold { ties, .. } => (below + ties).max(zeros),
            Zeroing::Keep(_) => zeros,
        }
    }

    /// Whether any element would change.
    pub fn is_noop(&self) -> bool {
        match self {
            Zeroing::Threshold { key, ties } => *key == 0 && *ties == 0,
            Zeroing::Keep(keep) => keep.iter().all(|&k| k),
        }
    }
}

/// Writes `bytes` (little-endian elements of `dtype`) to `out` with the elements chosen by
/// `zeroing` multiplied by zero (so `-x` becomes `-0`, bit for bit what PyTorch's masks give).
/// Batches are zeroed on the thread pool while the previous one is being written; the output
/// does not depend on the number of threads.
pub fn write_zeroed(
    dtype: DataType,
    bytes: &[u8],
    zeroing: &Zeroing,
    out: &mut dyn Write,
) -> io::Result<()> {
    let batch_bytes = dtype.size().expect("float type") * CHUNK_ELEMENTS * BATCH_CHUNKS;
    let mut zeroer = BatchZeroer {
        dtype,
        zeroing,
        ties_left: match zeroing {
            Zeroing::Threshold { ties, .. } => *ties,
            Zeroing::Keep(_) => 0,
        },
    };
    let mut batches = bytes.chunks(batch_bytes).enumerate();
    let (mut ready, mut spare) = (
        vec![0u8; bytes.len().min(batch_bytes)],
        vec![0u8; bytes.len().min(batch_bytes)],
    );
    let Some((index, batch)) = batches.next() else {
        return Ok(());
    };
    zeroer.zero(index * CHUNK_ELEMENTS * BATCH_CHUNKS, batch, &mut ready);
    let mut ready_len = batch.len();
    for (index, batch) in batches {
        // Zero the next batch while this thread writes the one before it.
        let written = std::thread::scope(|scope| {
            let next = scope
                .spawn(|| zeroer.zero(index * CHUNK_ELEMENTS * BATCH_CHUNKS, batch, &mut spare));
            let written = out.write_all(&ready[..ready_len]);
            next.join().expect("zeroing does not panic");
            written
        });
        written?;
        std::mem::swap(&mut ready, &mut spare);
        ready_len = batch.len();
    }
    out.write_all(&ready[..ready_len])
}

/// Zeroes batches in order, carrying how many threshold ties remain to be zeroed.
struct BatchZeroer<'z> {
    dtype: DataType,
    zeroing: &'z Zeroing,
    ties_left: u64,
}

impl BatchZeroer<'_> {
    /// Writes `batch` (whose first element has index `first_element`) zeroed into `out`.
    fn zero(&mut self, first_element: usize, batch: &[u8], out: &mut [u8]) {
        let (dtype, zeroing) = (self.dtype, self.zeroing);
        let size = dtype.size().expect("float type");
        let chunk_bytes = size * CHUNK_ELEMENTS;
        let chunks: Vec<&[u8]> = batch.chunks(chunk_bytes).collect();
        // Ties are zeroed in flat-index order: each chunk learns how many remain for it.
        let budgets: Vec<u64> = match zeroing {
            Zeroing::Threshold { key: t, .. } if self.ties_left > 0 => {
                let equal: Vec<u64> = chunks
                    .par_iter()
                    .map(|c| {
                        let mut equal = 0;
                        for_each_key(dtype, c, 0, |_, key| equal += u64::from(key == *t));
                        equal
                    })
                    .collect();
                equal
                    .iter()
                    .map(|&e| {
                        let take = e.min(self.ties_left);
                        self.ties_left -= take;
                        take
                    })
                    .collect()
            }
            _ => vec![0; chunks.len()],
        };
        out[..batch.len()]
            .par_chunks_mut(chunk_bytes)
            .zip(budgets)
            .enumerate()
            .for_each(|(c, (data, mut budget))| {
                let original = chunks[c];
                if let (Zeroing::Threshold { key, .. }, 0) = (zeroing, budget) {
                    let threshold = native_threshold(dtype, *key);
                    with_bits!(dtype, zero_below(threshold, original, data));
                    return;
                }
                data.copy_from_slice(original);
                let first = first_element + c * CHUNK_ELEMENTS;
                for_each_key(dtype, original, first, |i, key| {
                    let zero = match zeroing {
                        Zeroing::Threshold { key: t, .. } => {
                            key < *t
                                || (key == *t && budget > 0 && {
                                    budget -= 1;
                                    true
                                })
                        }
                        Zeroing::Keep(keep) => !keep[i],
                    };
                    if zero {
                        // `x * 0.0`, as training frameworks apply masks: the sign survives.
                        let at = i - first;
                        let last = (at + 1) * size - 1;
                        let sign = data[last] & 0x80;
                        data[at * size..=last].fill(0);
                        data[last] = sign;
                    }
                });
            });
    }
}

/// Copies `source` to `out`, multiplying by zero every element whose magnitude bits are below
/// `threshold` (see [`native_threshold`]): integer compares only, so the loop vectorises.
fn zero_below<T: Bits>(threshold: u64, source: &[u8], out: &mut [u8]) {
    let threshold = T::saturating_from(threshold);
    let one = T::from(true);
    for (o, s) in out
        .chunks_exact_mut(T::SIZE)
        .zip(source.chunks_exact(T::SIZE))
    {
        let word = T::read(s);
        let below = T::from(word.magnitude() < threshold);
        // All ones when kept; only the sign bit when zeroed.
        let mask = T::SIGN | below.wrapping_sub(one);
        (word & mask).write(o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_thresholds_agree_with_magnitude_keys() {
        let values = [0.0f32, 1e-30, 0.1, 0.25, 0.3333, 1.0, 65504.0, f32::MAX];
        for &t in &values {
            for dtype in [
                DataType::Float32,
                DataType::Float16,
                DataType::BFloat16,
                DataType::Float64,
            ] {
                let key = f64::from(t).to_bits();
                let native = native_threshold(dtype, key);
                for &x in &values {
                    for x in [x, -x] {
                        let bytes: Vec<u8> = match dtype {
                            DataType::Float32 => x.to_le_bytes().to_vec(),
                            DataType::Float64 => f64::from(x).to_le_bytes().to_vec(),
                            DataType::Float16 => half::f16::from_f32(x).to_le_bytes().to_vec(),
                            _ => half::bf16::from_f32(x).to_le_bytes().to_vec(),
                        };
                        let mut fast = vec![0; bytes.len()];
                        with_bits!(dtype, zero_below(native, &bytes, &mut fast));
                        let mut slow = Vec::new();
                        write_zeroed(
                            dtype,
                            &bytes,
                            &Zeroing::Keep(vec![
                                crate::model::magnitude_key(dtype, &bytes, 0) >= key,
                            ]),
                            &mut slow,
                        )
                        .unwrap();
                        assert_eq!(fast, slow, "{dtype:?} t={t} x={x}");
                    }
                }
            }
        }
    }
}
