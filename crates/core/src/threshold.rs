//! Finding the magnitude below which the `k` smallest elements of one or more tensors lie,
//! by radix selection on the bits of `|x|` rather than by sorting: a few parallel passes of
//! 16-bit digits, then an exact selection among the few candidates left.

use rayon::prelude::*;

use crate::proto::DataType;
use crate::values::{magnitude_key, CHUNK_ELEMENTS};

/// Candidates left after a pass are gathered and selected directly below this count.
const GATHER_LIMIT: u64 = 1 << 20;
const DIGIT_BITS: u32 = 16;

/// The elements of one tensor, as little-endian bytes of a float type.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// Element type.
    pub dtype: DataType,
    /// Elements.
    pub bytes: &'a [u8],
}

impl Segment<'_> {
    fn len(&self) -> usize {
        self.bytes.len() / self.dtype.size().expect("float type")
    }

    /// Parallel iterator over (chunk start, chunk end) element ranges.
    fn chunks(&self) -> impl ParallelIterator<Item = (usize, usize)> + '_ {
        let n = self.len();
        (0..n.div_ceil(CHUNK_ELEMENTS))
            .into_par_iter()
            .map(move |c| (c * CHUNK_ELEMENTS, ((c + 1) * CHUNK_ELEMENTS).min(n)))
    }
}

/// Where to cut: zero every element with key below `key`, and per segment the first `ties[i]`
/// elements (by flat index) whose key equals it. Segments are ordered, so ties break by
/// position in the concatenation of all segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Threshold key.
    pub key: u64,
    /// Elements equal to the threshold to zero, per segment.
    pub ties: Vec<u64>,
}

/// The cut that zeroes exactly the `k` smallest elements (by magnitude, then position) of the
/// concatenated `segments`. The result does not depend on the number of threads.
pub fn cut(segments: &[Segment], k: u64) -> Cut {
    let total: u64 = segments.iter().map(|s| s.len() as u64).sum();
    let k = k.min(total);
    if k == 0 {
        return Cut {
            key: 0,
            ties: vec![0; segments.len()],
        };
    }
    let key = kth_key(segments, k);
    // Per segment: elements below the threshold and equal to it.
    let counts: Vec<(u64, u64)> = segments
        .iter()
        .map(|s| {
            s.chunks()
                .map(|(a, b)| {
                    (a..b).fold((0u64, 0u64), |(less, equal), i| {
                        let x = magnitude_key(s.dtype, s.bytes, i);
                        (less + u64::from(x < key), equal + u64::from(x == key))
                    })
                })
                .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        })
        .collect();
    let mut remaining = k - counts.iter().map(|c| c.0).sum::<u64>();
    let ties = counts
        .iter()
        .map(|&(_, equal)| {
            let take = equal.min(remaining);
            remaining -= take;
            take
        })
        .collect();
    Cut { key, ties }
}

/// The key of the `k`-th smallest element (1-based).
fn kth_key(segments: &[Segment], k: u64) -> u64 {
    let mut prefix = 0u64; // the digits fixed so far, in place
    let mut fixed_bits = 0u32; // how many high bits of `prefix` are fixed
    let mut rank = k; // rank of the wanted key among candidates
    let mut candidates: u64 = segments.iter().map(|s| s.len() as u64).sum();
    let matches = |key: u64, prefix: u64, fixed_bits: u32| {
        fixed_bits == 0 || key >> (64 - fixed_bits) == prefix >> (64 - fixed_bits)
    };
    while fixed_bits < 64 {
        if candidates <= GATHER_LIMIT {
            let mut keys: Vec<u64> = segments
                .iter()
                .flat_map(|s| {
                    (0..s.len())
                        .into_par_iter()
                        .map(|i| magnitude_key(s.dtype, s.bytes, i))
                        .filter(|&key| matches(key, prefix, fixed_bits))
                        .collect::<Vec<_>>()
                })
                .collect();
            let (_, nth, _) = keys.select_nth_unstable((rank - 1) as usize);
            return *nth;
        }
        let shift = 64 - fixed_bits - DIGIT_BITS;
        let histogram = segments
            .iter()
            .map(|s| {
                s.chunks()
                    .fold(
                        || vec![0u64; 1 << DIGIT_BITS],
                        |mut h, (a, b)| {
                            for i in a..b {
                                let key = magnitude_key(s.dtype, s.bytes, i);
                                if matches(key, prefix, fixed_bits) {
                                    h[((key >> shift) & 0xffff) as usize] += 1;
                                }
                            }
                            h
                        },
                    )
                    .reduce(|| vec![0u64; 1 << DIGIT_BITS], add_histograms)
            })
            .reduce(add_histograms)
            .expect("at least one segment");
        let mut below = 0u64;
        for (digit, &count) in histogram.iter().enumerate() {
            if below + count >= rank {
                rank -= below;
                candidates = count;
                prefix |= (digit as u64) << shift;
                fixed_bits += DIGIT_BITS;
                break;
            }
            below += count;
        }
    }
    prefix
}

fn add_histograms(mut a: Vec<u64>, b: Vec<u64>) -> Vec<u64> {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn zeroed_by_sorting(values: &[f32], k: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[a].abs().total_cmp(&values[b].abs()).then(a.cmp(&b)));
        let mut chosen = order[..k].to_vec();
        chosen.sort();
        chosen
    }

    fn zeroed_by_cut(values: &[f32], cut: &Cut) -> Vec<usize> {
        let mut ties = cut.ties[0];
        (0..values.len())
            .filter(|&i| {
                let key = f64::from(values[i].abs()).to_bits();
                key < cut.key
                    || (key == cut.key && ties > 0 && {
                        ties -= 1;
                        true
                    })
            })
            .collect()
    }

    #[test]
    fn agrees_with_sorting_on_large_inputs_with_ties() {
        // Enough elements for several radix passes, with many equal magnitudes and zeros.
        let values: Vec<f32> = (0..3_000_000u32)
            .map(|i| {
                let v = ((i.wrapping_mul(2654435761)) % 1000) as f32 / 1000.0 - 0.5;
                if i % 3 == 0 {
                    -v
                } else {
                    v
                }
            })
            .collect();
        let bytes = f32_bytes(&values);
        for k in [1, 2_999, 1_500_000, 2_999_999, 3_000_000] {
            let cut = cut(
                &[Segment {
                    dtype: DataType::Float32,
                    bytes: &bytes,
                }],
                k as u64,
            );
            assert_eq!(
                zeroed_by_cut(&values, &cut),
                zeroed_by_sorting(&values, k),
                "k = {k}"
            );
        }
    }

    #[test]
    fn ties_across_segments_break_by_segment_order() {
        let a = f32_bytes(&[0.5, 0.1, 0.1]);
        let b = f32_bytes(&[0.1, 0.2]);
        let segments = [
            Segment {
                dtype: DataType::Float32,
                bytes: &a,
            },
            Segment {
                dtype: DataType::Float32,
                bytes: &b,
            },
        ];
        let cut = cut(&segments, 2);
        assert_eq!(cut.key, f64::from(0.1f32).to_bits());
        assert_eq!(cut.ties, vec![2, 0]);
    }
}
