//! Finding the magnitude below which the `k` smallest elements of one or more tensors lie,
//! without sorting them.
//!
//! Design note: a deterministic strided sample brackets the wanted rank between two keys; one
//! parallel pass then counts the elements below the bracket and gathers the few inside it, and
//! an exact selection among those gives the threshold and every per-tensor count. When the
//! sample misjudges (heavily skewed data), a radix selection on 16-bit digits of the keys takes
//! over. Either way the result does not depend on the number of threads.

use rayon::prelude::*;

use crate::bits::{native_threshold, with_bits, Bits};
use crate::model::values::{for_each_key, magnitude_key, CHUNK_ELEMENTS};
use crate::proto::DataType;

/// Candidates left after a radix pass are gathered and selected directly below this count.
const GATHER_LIMIT: u64 = 1 << 20;
const DIGIT_BITS: u32 = 16;
/// Elements sampled to bracket the wanted rank.
const SAMPLE: usize = 1 << 18;
/// Half-width of the bracket, as a fraction of all elements: five standard errors of a
/// quantile estimated from the sample (at most 0.5 / sqrt(SAMPLE)).
const BRACKET: f64 = 5.0 * 0.5 / 512.0;

/// The elements of one tensor, as little-endian bytes of a float type.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// Element type.
    pub dtype: DataType,
    /// Elements.
    pub bytes: &'a [u8],
}

impl Segment<'_> {
    fn size(&self) -> usize {
        self.dtype.size().expect("float type")
    }

    fn len(&self) -> usize {
        self.bytes.len() / self.size()
    }

    /// Parallel iterator over chunks of elements: (first element index, bytes).
    fn chunks(&self) -> impl IndexedParallelIterator<Item = (usize, &[u8])> + '_ {
        self.bytes
            .par_chunks(self.size() * CHUNK_ELEMENTS)
            .enumerate()
            .map(|(c, chunk)| (c * CHUNK_ELEMENTS, chunk))
    }

    fn key(&self, index: usize) -> u64 {
        let size = self.size();
        let mut key = 0;
        for_each_key(
            self.dtype,
            &self.bytes[index * size..(index + 1) * size],
            0,
            |_, k| key = k,
        );
        key
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
    /// Elements below the threshold, per segment.
    pub below: Vec<u64>,
}

/// Per-segment counts around a key.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    below: u64,
    equal: u64,
}

/// The cut that zeroes exactly the `k` smallest elements (by magnitude, then position) of the
/// concatenated `segments`.
pub fn cut(segments: &[Segment], k: u64) -> Cut {
    let total: u64 = segments.iter().map(|s| s.len() as u64).sum();
    let k = k.min(total);
    if k == 0 {
        return Cut {
            key: 0,
            ties: vec![0; segments.len()],
            below: vec![0; segments.len()],
        };
    }
    let (key, counts) = bracketed(segments, k, total).unwrap_or_else(|| {
        let key = radix_kth(segments, k);
        (key, count_around(segments, key))
    });
    let mut remaining = k - counts.iter().map(|c| c.below).sum::<u64>();
    let ties = counts
        .iter()
        .map(|c| {
            let take = c.equal.min(remaining);
            remaining -= take;
            take
        })
        .collect();
    Cut {
        key,
        ties,
        below: counts.iter().map(|c| c.below).collect(),
    }
}

/// Per segment: elements below `key` and equal to it.
fn count_around(segments: &[Segment], key: u64) -> Vec<Counts> {
    segments
        .iter()
        .map(|s| {
            s.chunks()
                .map(|(first, chunk)| {
                    let mut c = Counts::default();
                    for_each_key(s.dtype, chunk, first, |_, x| {
                        c.below += u64::from(x < key);
                        c.equal += u64::from(x == key);
                    });
                    c
                })
                .reduce(Counts::default, |a, b| Counts {
                    below: a.below + b.below,
                    equal: a.equal + b.equal,
                })
        })
        .collect()
}

/// The `k`-th key (1-based) and per-segment counts around it, from a strided sample and one
/// pass; `None` when the sample's bracket misses the rank or holds too many elements.
fn bracketed(segments: &[Segment], k: u64, total: u64) -> Option<(u64, Vec<Counts>)> {
    let stride = (total as usize / SAMPLE).max(1);
    let mut sample: Vec<u64> = Vec::with_capacity(SAMPLE + segments.len());
    let mut offset = 0usize;
    for s in segments {
        let n = s.len();
        let mut i = (stride - offset % stride) % stride;
        while i < n {
            sample.push(s.key(i));
            i += stride;
        }
        offset += n;
    }
    sample.sort_unstable();
    let m = sample.len() as f64;
    let q = k as f64 / total as f64;
    let lo_at = ((q - BRACKET) * m).floor();
    let hi_at = ((q + BRACKET) * m).ceil();
    let lo = if lo_at < 0.0 {
        0
    } else {
        sample[lo_at as usize]
    };
    let hi = if hi_at >= m {
        u64::MAX
    } else {
        sample[hi_at as usize]
    };
    // One pass over every chunk of every segment, results kept in order (no merging of lists).
    let chunks: Vec<Bracketed> = segments
        .par_iter()
        .enumerate()
        .flat_map_iter(|(index, s)| {
            let size = s.size();
            s.bytes
                .chunks(size * CHUNK_ELEMENTS)
                .map(move |chunk| (index, s.dtype, chunk))
        })
        .map(|(index, dtype, chunk)| with_bits!(dtype, bracket_chunk(dtype, chunk, lo, hi, index)))
        .collect();
    let mut edges = vec![[0u64; 3]; segments.len()];
    for chunk in &chunks {
        (0..3).for_each(|j| edges[chunk.segment][j] += chunk.edge[j]);
    }
    let below_lo: u64 = edges.iter().map(|e| e[0]).sum();
    let at_lo: u64 = edges.iter().map(|e| e[1]).sum();
    let at_hi: u64 = edges.iter().map(|e| e[2]).sum();
    let n_inside: u64 = chunks.iter().map(|c| c.inside.len() as u64).sum();
    if k <= below_lo || n_inside > 64 * GATHER_LIMIT {
        return None;
    }
    let per_segment = |f: &dyn Fn(&[u64; 3]) -> Counts| edges.iter().map(f).collect();
    if k <= below_lo + at_lo {
        return Some((
            lo,
            per_segment(&|e| Counts {
                below: e[0],
                equal: e[1],
            }),
        ));
    }
    let rank = k - below_lo - at_lo;
    if rank <= n_inside {
        let mut inside: Vec<u64> = Vec::with_capacity(n_inside as usize);
        chunks.iter().for_each(|c| inside.extend(&c.inside));
        let (_, &mut key, _) = inside.select_nth_unstable((rank - 1) as usize);
        let mut counts: Vec<Counts> = per_segment(&|e| Counts {
            below: e[0] + e[1],
            equal: 0,
        });
        for chunk in &chunks {
            let c = &mut counts[chunk.segment];
            for &x in &chunk.inside {
                c.below += u64::from(x < key);
                c.equal += u64::from(x == key);
            }
        }
        return Some((key, counts));
    }
    if rank <= n_inside + at_hi && hi != u64::MAX {
        let mut counts: Vec<Counts> = per_segment(&|e| Counts {
            below: e[0] + e[1],
            equal: e[2],
        });
        for chunk in &chunks {
            counts[chunk.segment].below += chunk.inside.len() as u64;
        }
        return Some((hi, counts));
    }
    None
}

/// What the bracket pass finds in one chunk of a segment.
struct Bracketed {
    /// The segment's index.
    segment: usize,
    /// Elements with keys below `lo`, equal to `lo`, equal to `hi`.
    edge: [u64; 3],
    /// The keys strictly between `lo` and `hi`.
    inside: Vec<u64>,
}

/// The bracket pass over one chunk of segment `segment`: elements are compared in their own
/// bits, branch-free; only blocks that hold a key in the bracket are looked at one by one.
fn bracket_chunk<T: Bits>(
    dtype: DataType,
    chunk: &[u8],
    lo: u64,
    hi: u64,
    segment: usize,
) -> Bracketed {
    const BLOCK: usize = 32;
    // In the bracket: `from <= bits < to`; no key is above `u64::MAX`, no magnitude reaches
    // the sign bit.
    let from = T::saturating_from(native_threshold(dtype, lo));
    let to = if hi == u64::MAX {
        T::SIGN
    } else {
        T::saturating_from(native_threshold(dtype, hi + 1))
    };
    let width = to.wrapping_sub(from);
    let (mut edge, mut inside) = ([0u64; 3], Vec::new());
    for block in chunk.chunks(T::SIZE * BLOCK) {
        let (mut below, mut in_bracket) = (0u32, 0u32);
        for element in block.chunks_exact(T::SIZE) {
            let bits = T::read(element).magnitude();
            below += u32::from(bits < from);
            in_bracket += u32::from(bits.wrapping_sub(from) < width);
        }
        edge[0] += u64::from(below);
        if in_bracket == 0 {
            continue;
        }
        // Branch-free compaction of the positions in the bracket, then those few one by one.
        let (mut found, mut n) = ([0u8; BLOCK], 0);
        for (i, element) in block.chunks_exact(T::SIZE).enumerate() {
            found[n] = i as u8;
            n += usize::from(T::read(element).magnitude().wrapping_sub(from) < width);
        }
        for &i in &found[..n] {
            let x = magnitude_key(dtype, block, usize::from(i));
            if x == lo {
                edge[1] += 1;
            } else if x == hi {
                edge[2] += 1;
            } else {
                inside.push(x);
            }
        }
    }
    Bracketed {
        segment,
        edge,
        inside,
    }
}

/// The key of the `k`-th smallest element (1-based), by radix selection.
fn radix_kth(segments: &[Segment], k: u64) -> u64 {
    let mut prefix = 0u64; // the digits fixed so far, in place
    let mut fixed_bits = 0u32; // how many high bits of `prefix` are fixed
    let mut rank = k; // rank of the wanted key among candidates
    let mut candidates: u64 = segments.iter().map(|s| s.len() as u64).sum();
    let matches = |key: u64, prefix: u64, fixed_bits: u32| {
        fixed_bits == 0 || key >> (64 - fixed_bits) == prefix >> (64 - fixed_bits)
    };
    while fixed_bits < 64 {
        if candidates <= GATHER_LIMIT {
            let mut keys: Vec<u64> = Vec::with_capacity(candidates as usize);
            for s in segments {
                for_each_key(s.dtype, s.bytes, 0, |_, key| {
                    if matches(key, prefix, fixed_bits) {
                        keys.push(key);
                    }
                });
            }
            let (_, nth, _) = keys.select_nth_unstable((rank - 1) as usize);
            return *nth;
        }
        let shift = 64 - fixed_bits - DIGIT_BITS;
        let histogram = segments
            .iter()
            .map(|s| {
                s.chunks()
                    .map(|(first, chunk)| {
                        let mut h = vec![0u64; 1 << DIGIT_BITS];
                        for_each_key(s.dtype, chunk, first, |_, key| {
                            if matches(key, prefix, fixed_bits) {
                                h[((key >> shift) & 0xffff) as usize] += 1;
                            }
                        });
                        h
                    })
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
    fn skewed_data_falls_back_to_radix_selection_and_agrees() {
        // 90% exact zeros then distinct values: the bracket collapses onto zero.
        let values: Vec<f32> = (0..1_500_000u32)
            .map(|i| if i % 10 == 0 { (i as f32).sqrt() } else { 0.0 })
            .collect();
        let bytes = f32_bytes(&values);
        let segment = Segment {
            dtype: DataType::Float32,
            bytes: &bytes,
        };
        for k in [10, 1_350_000, 1_400_001, 1_499_999] {
            let cut = cut(&[segment], k as u64);
            assert_eq!(
                zeroed_by_cut(&values, &cut),
                zeroed_by_sorting(&values, k),
                "k = {k}"
            );
            assert_eq!(radix_kth(&[segment], k as u64), cut.key, "k = {k}");
        }
    }

    #[test]
    fn mixed_float_types_agree_with_sorting() {
        // Large enough for the bracket pass, whose bounds come from one type and must be
        // translated into the bits of the others.
        let n = 400_000u32;
        let value = |i: u32| ((i.wrapping_mul(2654435761) >> 8) % 100_000) as f64 / 7_919.0 - 6.0;
        let segments_bytes: Vec<(DataType, Vec<u8>)> = vec![
            (
                DataType::Float32,
                (0..n)
                    .flat_map(|i| (value(i) as f32).to_le_bytes())
                    .collect(),
            ),
            (
                DataType::Float16,
                (0..n)
                    .flat_map(|i| half::f16::from_f64(value(i + 7)).to_le_bytes())
                    .collect(),
            ),
            (
                DataType::BFloat16,
                (0..n)
                    .flat_map(|i| half::bf16::from_f64(value(i + 13)).to_le_bytes())
                    .collect(),
            ),
            (
                DataType::Float64,
                (0..n).flat_map(|i| value(i + 29).to_le_bytes()).collect(),
            ),
        ];
        let segments: Vec<Segment> = segments_bytes
            .iter()
            .map(|(dtype, bytes)| Segment {
                dtype: *dtype,
                bytes,
            })
            .collect();
        let mut keys: Vec<(u64, usize)> = segments
            .iter()
            .enumerate()
            .flat_map(|(s, seg)| (0..seg.len()).map(move |i| (seg.key(i), s)))
            .collect();
        // Stable: equal keys keep segment order, as ties break by position.
        keys.sort_by_key(|&(key, _)| key);
        for k in [1, 640_000, 800_000, 1_599_999] {
            let cut = cut(&segments, k as u64);
            assert_eq!(cut.key, keys[k - 1].0, "k = {k}");
            for s in 0..segments.len() {
                let below = keys
                    .iter()
                    .filter(|&&(x, seg)| seg == s && x < cut.key)
                    .count();
                let ties = keys[..k]
                    .iter()
                    .filter(|&&(x, seg)| seg == s && x == cut.key)
                    .count();
                assert_eq!(cut.below[s], below as u64, "k = {k}, segment {s}");
                assert_eq!(cut.ties[s], ties as u64, "k = {k}, segment {s}");
            }
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
        assert_eq!(cut.below, vec![0, 0]);
    }
}
