//! SparseGPT (Frantar & Alistarh 2023) as the reference `fasterprune` does it, in `f64`:
//! dead columns, dampening by 1% of the mean Hessian diagonal, the upper Cholesky factor `U` of
//! `H^-1`, column blocks of 128 whose mask is chosen once per block from `w^2 / U_jj^2`, the
//! OBS update of the columns still to come, and the lazy update of later blocks.
//!
//! One departure, for exact zero counts: the reference zeroes every element of a block at or
//! below the score of rank `int(S x block)` (one more than asked, and ties); here each block
//! zeroes exactly its share of `round(S x n)` (shares spread by cumulative rounding, ties by
//! flat index), so that a weight ends with exactly `round(S x n)` zeros.

use nalgebra::DMatrix;

use crate::calibrated::stats::LayerStats;
use crate::calibrated::view::MatrixView;
use crate::calibrated::Target;
use crate::prune::zeros_for;

/// Columns per block, as the reference.
const BLOCK: usize = 128;
/// Dampening: this fraction of the mean of the Hessian's diagonal is added to it.
const PERCDAMP: f64 = 0.01;

/// The pruned weight: new values by flat index, and which elements were pruned.
pub(crate) struct Pruned {
    /// Every element after the OBS updates; pruned ones are exactly zero.
    pub values: Vec<f64>,
    /// `false` where pruned.
    pub keep: Vec<bool>,
}

/// Runs SparseGPT on every column group of the weight.
pub(crate) fn prune(
    view: &MatrixView,
    values: &[f64],
    stats: &LayerStats,
    target: Target,
) -> Result<Pruned, String> {
    let mut out = Pruned {
        values: values.to_vec(),
        keep: vec![true; values.len()],
    };
    let order: Vec<usize> = match target {
        Target::Fraction(_) => (0..view.cols).collect(),
        Target::NOfM { .. } => view.nm_order(),
    };
    let block = match target {
        Target::Fraction(_) => BLOCK,
        Target::NOfM { m, .. } => (BLOCK / m).max(1) * m,
    };
    // Elements whose blocks came before: each block zeroes its share of round(S x n).
    let mut before = 0usize;
    let share = |s: f64, before: usize, len: usize| {
        let cum = |e: usize| zeros_for(s, e as u64) as usize;
        cum(before + len) - cum(before)
    };
    for g in 0..view.groups {
        let rows = view.group_rows(g);
        let n_rows = rows.len();
        let cols = view.cols;
        let gram = stats.gram(g);
        let mut h = DMatrix::from_fn(cols, cols, |a, b| gram[order[a] * cols + order[b]]);
        let mut w = DMatrix::from_fn(n_rows, cols, |r, c| {
            values[view.index(rows.start + r, order[c])]
        });
        for j in 0..cols {
            if h[(j, j)] == 0.0 {
                h[(j, j)] = 1.0;
                w.column_mut(j).fill(0.0);
            }
        }
        let damp = PERCDAMP * h.diagonal().mean();
        for j in 0..cols {
            h[(j, j)] += damp;
        }
        let not_definite = || {
            "its Hessian is not positive definite even after dampening (are the calibration \
             activations finite and varied?)"
                .to_string()
        };
        let u = inverse_upper_factor(&h).ok_or_else(not_definite)?;
        let flat = |r: usize, c: usize| view.index(rows.start + r, order[c]);
        let mut pruned = vec![false; n_rows * cols];
        for i1 in (0..cols).step_by(block) {
            let i2 = (i1 + block).min(cols);
            let count = i2 - i1;
            let mut w1 = w.columns(i1, count).clone_owned();
            let mut q1 = DMatrix::<f64>::zeros(n_rows, count);
            let mut err1 = DMatrix::<f64>::zeros(n_rows, count);
            let d = |j: usize| u[(i1 + j, i1 + j)];
            let score = |w1: &DMatrix<f64>, r: usize, j: usize| w1[(r, j)].powi(2) / d(j).powi(2);
            let mut mask = vec![false; n_rows * count];
            if let Target::Fraction(s) = target {
                let k = share(s, before, n_rows * count);
                before += n_rows * count;
                let mut ranked: Vec<(f64, usize, usize)> = (0..n_rows)
                    .flat_map(|r| (0..count).map(move |j| (r, j)))
                    .map(|(r, j)| (score(&w1, r, j), flat(r, i1 + j), r * count + j))
                    .collect();
                ranked.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                for &(_, _, at) in &ranked[..k] {
                    mask[at] = true;
                }
            }
            for i in 0..count {
                if let Target::NOfM { n, m } = target {
                    if i % m == 0 {
                        for r in 0..n_rows {
                            let mut group: Vec<(f64, usize, usize)> = (i..i + m)
                                .map(|j| (score(&w1, r, j), flat(r, i1 + j), j))
                                .collect();
                            group.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                            for &(_, _, j) in &group[..m - n] {
                                mask[r * count + j] = true;
                            }
                        }
                    }
                }
                let di = d(i);
                for r in 0..n_rows {
                    let wv = w1[(r, i)];
                    let q = if mask[r * count + i] { 0.0 } else { wv };
                    q1[(r, i)] = q;
                    let e = (wv - q) / di;
                    err1[(r, i)] = e;
                    if e != 0.0 {
                        for j in i..count {
                            w1[(r, j)] -= e * u[(i1 + i, i1 + j)];
                        }
                    }
                }
            }
            w.columns_mut(i1, count).copy_from(&q1);
            if i2 < cols {
                let later = u.view((i1, i2), (count, cols - i2));
                let mut rest = w.columns_mut(i2, cols - i2);
                rest.gemm(-1.0, &err1, &later, 1.0);
            }
            for r in 0..n_rows {
                for j in 0..count {
                    pruned[r * cols + i1 + j] = mask[r * count + j];
                }
            }
        }
        for r in 0..n_rows {
            for c in 0..cols {
                let at = flat(r, c);
                out.values[at] = w[(r, c)];
                out.keep[at] = !pruned[r * cols + c];
            }
        }
    }
    Ok(out)
}

/// The upper Cholesky factor `U` of `H^-1` (`H^-1 = U^T U`), what the reference gets from
/// `cholesky(cholesky_inverse(cholesky(H)), upper=True)`, with one factorisation instead of
/// two: with `J` the reversal permutation and `J H J = L L^T`, `U = J L^-1 J` (upper
/// triangular, positive diagonal, and `U^T U = J L^-T L^-1 J = H^-1`).
fn inverse_upper_factor(h: &DMatrix<f64>) -> Option<DMatrix<f64>> {
    let n = h.nrows();
    let reversed = DMatrix::from_fn(n, n, |i, j| h[(n - 1 - i, n - 1 - j)]);
    let l = reversed.cholesky()?.unpack();
    let l_inverse = l.solve_lower_triangular(&DMatrix::identity(n, n))?;
    Some(DMatrix::from_fn(n, n, |i, j| {
        l_inverse[(n - 1 - i, n - 1 - j)]
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn inverse_upper_factor_is_the_reference_one() {
        let h = DMatrix::from_row_slice(3, 3, &[4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0]);
        let reference = h
            .clone()
            .cholesky()
            .unwrap()
            .inverse()
            .cholesky()
            .unwrap()
            .l()
            .transpose();
        let u = inverse_upper_factor(&h).unwrap();
        assert!((u - reference).abs().max() < 1e-12);
    }

    use super::*;
    use crate::calibrated::stats::{Geometry, Tap};

    fn layer(rows: usize, cols: usize) -> (MatrixView, LayerStats, Vec<f64>) {
        let tap = Tap {
            id: "w".into(),
            activation: "x".into(),
            geometry: Geometry::Rows { transposed: false },
            cols,
        };
        let mut stats = LayerStats::new(&tap);
        // Deterministic pseudo-random activations and weights.
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        let x: Vec<f32> = (0..64 * cols).map(|_| next() as f32).collect();
        stats.add(&tap, &[64, cols], &x).unwrap();
        let w: Vec<f64> = (0..rows * cols).map(|_| next()).collect();
        let view = MatrixView {
            rows,
            cols,
            groups: 1,
            transposed: false,
            inner: 1,
        };
        (view, stats, w)
    }

    #[test]
    fn exact_zero_counts_across_blocks() {
        let (view, stats, w) = layer(5, 300);
        for s in [0.1, 0.5, 0.77] {
            let pruned = prune(&view, &w, &stats, Target::Fraction(s)).unwrap();
            let zeros = pruned.values.iter().filter(|v| **v == 0.0).count();
            assert_eq!(zeros, (s * 1500.0).round_ties_even() as usize, "{s}");
            assert_eq!(pruned.keep.iter().filter(|k| !**k).count(), zeros);
        }
        let pruned = prune(&view, &w, &stats, Target::NOfM { n: 2, m: 4 }).unwrap();
        for row in pruned.values.chunks(300) {
            for group in row.chunks(4) {
                assert_eq!(group.iter().filter(|v| **v == 0.0).count(), 2);
            }
        }
    }

    #[test]
    fn a_hessian_of_zeros_is_handled_as_dead_columns() {
        let (view, mut stats, w) = layer(3, 8);
        stats.gram.iter_mut().for_each(|v| *v = 0.0);
        let pruned = prune(&view, &w, &stats, Target::Fraction(0.5)).unwrap();
        assert!(pruned.values.iter().all(|v| *v == 0.0));
    }
}
