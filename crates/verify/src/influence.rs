//! Block influence (ShortGPT, Men et al. 2024): how much a residual block or layer changes the
//! stream it reads, `BI = 1 - E[cos(x_in, x_out)]`, the expectation over every token (every
//! vector along the last axis) of every calibration sample, measured through tract.

use tract_onnx::prelude::*;

use crate::calibrate::Calibration;
use crate::error::{Error, Result};

/// Sums of the cosines between the vectors of two values along their last axis.
#[derive(Debug, Clone, Copy, Default)]
struct Cosines {
    sum: f64,
    tokens: u64,
}

impl Cosines {
    /// Adds the cosine of every pair of vectors of `a` and `b` (same shape); vectors of zero
    /// norm, whose cosine is undefined, are left out.
    fn add(&mut self, a: &[f32], b: &[f32], width: usize) {
        for (x, y) in a.chunks_exact(width).zip(b.chunks_exact(width)) {
            let (mut xy, mut xx, mut yy) = (0f64, 0f64, 0f64);
            for (&p, &q) in x.iter().zip(y) {
                let (p, q) = (f64::from(p), f64::from(q));
                xy += p * q;
                xx += p * p;
                yy += q * q;
            }
            if xx > 0.0 && yy > 0.0 {
                self.sum += xy / (xx.sqrt() * yy.sqrt());
                self.tokens += 1;
            }
        }
    }
}

fn floats(name: &str, tensor: &Tensor) -> Result<Vec<f32>> {
    let bad = |e: TractError| Error::Usage(format!("stream value `{name}`: {e:#}"));
    let values = tensor.cast_to::<f32>().map_err(bad)?;
    let view = values.to_plain_array_view::<f32>().map_err(bad)?;
    Ok(view.iter().copied().collect())
}

/// The block influence of each `(input, output)` pair of values of the model given as `bytes`
/// on the calibration samples: `1 - mean cos(input, output)` over every token. The two values
/// of a pair must have the same shape.
pub fn block_influence(
    calibration: &Calibration,
    bytes: &[u8],
    pairs: &[(String, String)],
) -> Result<Vec<f64>> {
    let names: Vec<String> = pairs
        .iter()
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    let mut totals = vec![Cosines::default(); pairs.len()];
    calibration.each_run(bytes, &names, |tensors| {
        for ((total, (a, b)), values) in totals.iter_mut().zip(pairs).zip(tensors.chunks(2)) {
            let (x, y) = (values[0], values[1]);
            if x.shape() != y.shape() || x.rank() == 0 {
                return Err(Error::Usage(format!(
                    "stream values `{a}` {:?} and `{b}` {:?} differ in shape: not a residual block",
                    x.shape(),
                    y.shape()
                )));
            }
            let width = *x.shape().last().expect("rank checked");
            total.add(&floats(a, x)?, &floats(b, y)?, width.max(1));
        }
        Ok(())
    })?;
    Ok(totals
        .iter()
        .map(|c| {
            if c.tokens == 0 {
                0.0
            } else {
                1.0 - c.sum / c.tokens as f64
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosines_average_over_tokens_and_skip_zero_vectors() {
        let mut c = Cosines::default();
        // Tokens: identical (cos 1), orthogonal (cos 0), a zero vector (left out).
        c.add(
            &[1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
            &[2.0, 0.0, 1.0, 0.0, 3.0, 1.0],
            2,
        );
        assert_eq!(c.tokens, 2);
        assert!((c.sum - 1.0).abs() < 1e-12);
    }
}
