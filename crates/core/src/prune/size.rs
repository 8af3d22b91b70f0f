//! How small a file would get compressed: what users compare after pruning, since zeros only
//! shrink a dense model once it is compressed.

use std::io::Write;

use flate2::{write::DeflateEncoder, Compression};
use rayon::prelude::*;

/// Inputs are compressed in independent chunks of this size, in parallel.
const CHUNK: usize = 4 << 20;
/// Inputs up to this size are compressed whole; larger ones are sampled.
const EXACT_LIMIT: usize = 64 << 20;
/// Chunks sampled from a large input.
const SAMPLES: usize = 32;
/// Bytes compressed from each sampled chunk.
const SAMPLE_BYTES: usize = 64 << 10;

/// A compressed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CompressedSize {
    /// Bytes after DEFLATE (level 6, as `zip` and `gzip` use by default), summed over chunks.
    pub bytes: u64,
    /// True when extrapolated from evenly spaced sample chunks of a large input.
    pub estimated: bool,
}

fn deflated_len(data: &[u8]) -> u64 {
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("writing to memory");
    encoder.finish().expect("writing to memory").len() as u64
}

/// The DEFLATE-compressed size of `parts` taken together (a model and its external data files).
/// Inputs over 64 MiB are estimated from 32 evenly spaced 64 KiB samples, so that reporting
/// the size of a gigabyte model costs a fraction of a second.
pub fn compressed_size(parts: &[&[u8]]) -> CompressedSize {
    let chunks: Vec<&[u8]> = parts.iter().flat_map(|p| p.chunks(CHUNK)).collect();
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if total <= EXACT_LIMIT {
        let bytes = chunks.par_iter().map(|c| deflated_len(c)).sum();
        return CompressedSize {
            bytes,
            estimated: false,
        };
    }
    let step = chunks.len() as f64 / SAMPLES as f64;
    let picked: Vec<&[u8]> = (0..SAMPLES)
        .map(|i| {
            let chunk = chunks[(i as f64 * step) as usize];
            &chunk[..chunk.len().min(SAMPLE_BYTES)]
        })
        .collect();
    let sampled_in: usize = picked.iter().map(|c| c.len()).sum();
    let sampled_out: u64 = picked.par_iter().map(|c| deflated_len(c)).sum();
    CompressedSize {
        bytes: (sampled_out as f64 * total as f64 / sampled_in as f64).round() as u64,
        estimated: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_compress_and_noise_does_not() {
        let zeros = vec![0u8; 1 << 20];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..1 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert!(compressed_size(&[&zeros]).bytes < 2_000);
        assert!(compressed_size(&[&noise]).bytes > 900_000);
        assert!(!compressed_size(&[&noise]).estimated);
    }
}
