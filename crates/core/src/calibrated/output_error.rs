//! How much of a layer's output a pruned weight loses on the calibration data:
//! `||X W^T - X W'^T||^2 / ||X W^T||^2`, computed from `H = X^T X` as
//! `tr(dW H dW^T) / tr(W H W^T)` without the activations.

use nalgebra::DMatrix;

use crate::calibrated::stats::LayerStats;
use crate::calibrated::view::MatrixView;

/// The relative output error of replacing `old` by `new` (flat values of the stored tensor);
/// 0 when the layer's output is zero on the calibration data.
pub(crate) fn relative(view: &MatrixView, stats: &LayerStats, old: &[f64], new: &[f64]) -> f64 {
    let (mut lost, mut kept) = (0.0, 0.0);
    for g in 0..view.groups {
        let rows = view.group_rows(g);
        let h = DMatrix::from_row_slice(view.cols, view.cols, stats.gram(g));
        let matrix = |f: &dyn Fn(usize) -> f64| {
            DMatrix::from_fn(rows.len(), view.cols, |r, c| {
                f(view.index(rows.start + r, c))
            })
        };
        let w = matrix(&|i| old[i]);
        let d = matrix(&|i| old[i] - new[i]);
        lost += (&d * &h).component_mul(&d).sum();
        kept += (&w * &h).component_mul(&w).sum();
    }
    if kept > 0.0 {
        lost / kept
    } else {
        0.0
    }
}
