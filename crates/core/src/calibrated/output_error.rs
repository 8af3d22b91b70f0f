//! How much of a layer's output a pruned weight loses on the calibration data:
//! `||X W^T - X W'^T||^2 / ||X W^T||^2`, computed from `H = X^T X` as
//! `tr(dW H dW^T) / tr(W H W^T)` without the activations.

use crate::calibrated::stats::LayerStats;
use crate::calibrated::view::MatrixView;

/// The relative output error of replacing `old` by `new` (flat values of the stored tensor);
/// 0 when the layer's output is zero on the calibration data.
pub(crate) fn relative(view: &MatrixView, stats: &LayerStats, old: &[f64], new: &[f64]) -> f64 {
    let (mut lost, mut kept) = (0.0, 0.0);
    let cols = view.cols;
    for g in 0..view.groups {
        let rows = view.group_rows(g);
        let n = rows.len();
        // `[W; W - W']`, row-major, multiplied by `H` at once.
        let mut m = Vec::with_capacity(2 * n * cols);
        for r in rows.clone() {
            m.extend((0..cols).map(|c| old[view.index(r, c)]));
        }
        for r in rows {
            m.extend((0..cols).map(|c| {
                let i = view.index(r, c);
                old[i] - new[i]
            }));
        }
        let mut product = vec![0.0; 2 * n * cols];
        let h = stats.gram(g);
        // SAFETY: `m` and `product` hold `2n x cols` elements, `h` `cols x cols`, all
        // row-major with these strides.
        unsafe {
            matrixmultiply::dgemm(
                2 * n,
                cols,
                cols,
                1.0,
                m.as_ptr(),
                cols as isize,
                1,
                h.as_ptr(),
                cols as isize,
                1,
                0.0,
                product.as_mut_ptr(),
                cols as isize,
                1,
            );
        }
        let trace = |part: std::ops::Range<usize>| -> f64 {
            product[part.clone()]
                .iter()
                .zip(&m[part])
                .map(|(p, x)| p * x)
                .sum()
        };
        kept += trace(0..n * cols);
        lost += trace(n * cols..2 * n * cols);
    }
    if kept > 0.0 {
        lost / kept
    } else {
        0.0
    }
}
