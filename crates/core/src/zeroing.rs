//! Which elements of a tensor become zero, and writing a tensor's bytes with them zeroed.

use std::io::{self, Write};

use rayon::prelude::*;

use crate::proto::DataType;
use crate::values::{magnitude_key, CHUNK_ELEMENTS};

/// Chunks processed in parallel before their bytes are written.
const BATCH_CHUNKS: usize = 32;

/// The elements of one tensor to set to zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Zeroing {
    /// Every element whose magnitude key (see [`crate::magnitude_key`]) is below `key`, and the
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
        let n = bytes.len() / size;
        match self {
            Zeroing::Threshold { key, ties } => {
                let (less, zeros) = (0..n)
                    .into_par_iter()
                    .fold(
                        || (0u64, 0u64),
                        |(less, zeros), i| {
                            let k = magnitude_key(dtype, bytes, i);
                            (less + u64::from(k < *key), zeros + u64::from(k == 0))
                        },
                    )
                    .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
                (less + ties).max(zeros)
            }
            Zeroing::Keep(keep) => (0..n)
                .into_par_iter()
                .filter(|&i| !keep[i] || magnitude_key(dtype, bytes, i) == 0)
                .count() as u64,
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
/// `zeroing` multiplied by zero (so `-x` becomes `-0`, bit for bit what PyTorch's masks give). Work is spread over threads; the output does not depend on their number.
pub fn write_zeroed(
    dtype: DataType,
    bytes: &[u8],
    zeroing: &Zeroing,
    out: &mut dyn Write,
) -> io::Result<()> {
    let size = dtype.size().expect("float type");
    let chunk_bytes = size * CHUNK_ELEMENTS;
    let mut ties_left = match zeroing {
        Zeroing::Threshold { ties, .. } => *ties,
        Zeroing::Keep(_) => 0,
    };
    for (batch_index, batch) in bytes.chunks(chunk_bytes * BATCH_CHUNKS).enumerate() {
        let first_element = batch_index * CHUNK_ELEMENTS * BATCH_CHUNKS;
        let chunks: Vec<&[u8]> = batch.chunks(chunk_bytes).collect();
        // Ties are zeroed in flat-index order: each chunk learns how many remain for it.
        let budgets: Vec<u64> = match zeroing {
            Zeroing::Threshold { key, .. } if ties_left > 0 => {
                let equal: Vec<u64> = chunks
                    .par_iter()
                    .map(|c| {
                        (0..c.len() / size)
                            .filter(|&i| magnitude_key(dtype, c, i) == *key)
                            .count() as u64
                    })
                    .collect();
                equal
                    .iter()
                    .map(|&e| {
                        let take = e.min(ties_left);
                        ties_left -= take;
                        take
                    })
                    .collect()
            }
            _ => vec![0; chunks.len()],
        };
        let zeroed: Vec<Vec<u8>> = chunks
            .par_iter()
            .zip(budgets)
            .enumerate()
            .map(|(c, (chunk, mut budget))| {
                let mut data = chunk.to_vec();
                let base = first_element + c * CHUNK_ELEMENTS;
                for i in 0..chunk.len() / size {
                    let zero = match zeroing {
                        Zeroing::Threshold { key, .. } => {
                            let k = magnitude_key(dtype, chunk, i);
                            k < *key
                                || (k == *key && budget > 0 && {
                                    budget -= 1;
                                    true
                                })
                        }
                        Zeroing::Keep(keep) => !keep[base + i],
                    };
                    if zero {
                        // `x * 0.0`, as training frameworks apply masks: the sign survives.
                        let last = (i + 1) * size - 1;
                        let sign = data[last] & 0x80;
                        data[i * size..=last].fill(0);
                        data[last] = sign;
                    }
                }
                data
            })
            .collect();
        for chunk in zeroed {
            out.write_all(&chunk)?;
        }
    }
    Ok(())
}
