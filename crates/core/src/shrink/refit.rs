//! Least-squares refit of the consumers of shrunk groups (He et al. 2017, ThiNet): once a
//! group's channels are chosen, each consumer's kept weights are refitted so that the kept
//! inputs reproduce, as well as they can on the calibration data, what the full row computed.
//!
//! With `X` the consumer's input on the dense model (im2col rows for a Conv), `H = X^T X` and
//! `K` the kept columns, each output row `w` becomes `w_K = (H_KK + lambda I)^-1 H_K,: w`
//! (`lambda` = 1% of the mean of `diag H_KK`, as SparseGPT dampens), the other columns zero; an
//! existing bias is shifted by `(w - w') E[x]` so that the mean output is kept. The statistics
//! arrive as plain data ([`LayerStats`], from the same taps as calibrated pruning): this crate
//! runs no model. The new values go through shrink's writer as [`Edit`]s, sliced there.

use std::collections::BTreeSet;

use nalgebra::DMatrix;
use rayon::prelude::*;
use serde::Serialize;

use crate::calibrated::bias::{self, Bias};
use crate::calibrated::output_error;
use crate::calibrated::view::{decode, encode, layer_of, MatrixView};
use crate::calibrated::{LayerStats, Tap};
use crate::error::{Error, Result};
use crate::model::values::finite_values;
use crate::model::weights::{discover_with, Weight};
use crate::model::Model;
use crate::write::Edit;

use super::cuts::CutKind;
use super::save::plan;
use super::Analysis;

/// Consumers whose `X^T X` would have more columns than this are left as they are: the matrix
/// alone would take `cols^2 * 8` bytes (512 MiB at 8192).
pub const MAX_REFIT_COLS: usize = 8192;

/// What happened to one consumer weight of a shrunk group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefitOutcome {
    /// The consumer weight's id.
    pub weight: String,
    /// Whether its kept weights were refitted.
    pub refitted: bool,
    /// `||XW^T - XW'^T||^2 / ||XW^T||^2` on the calibration data with the removed columns
    /// only zeroed (`None` when the layer has no statistics).
    pub output_error_before: Option<f64>,
    /// The same after the refit.
    pub output_error_after: Option<f64>,
    /// Why it was not refitted, or what happened to its bias.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A consumer weight to refit.
struct Layer<'w> {
    weight: &'w Weight,
    view: MatrixView,
    /// Per column of the view: whether it is kept.
    keep: Vec<bool>,
}

/// The refit of every consumer that loses input channels under `removed`: the edits (new
/// values of the consumer weights and their biases, to be sliced by [`super::save_shrunk`])
/// and an outcome per consumer. `statistics(model_bytes, taps)` returns one [`LayerStats`] per
/// tap from runs of the dense model over the calibration data.
pub fn refit<E: From<Error>>(
    model: &Model,
    analysis: &Analysis,
    removed: &[Vec<usize>],
    statistics: impl FnOnce(&[u8], &[Tap]) -> std::result::Result<Vec<LayerStats>, E>,
) -> std::result::Result<(Vec<Edit>, Vec<RefitOutcome>), E> {
    let slices = plan(model, analysis, removed).slices;
    let weights = discover_with(model, 0);
    let mut outcomes = Vec::new();
    let mut layers = Vec::new();
    let mut taps = Vec::new();
    let mut seen = BTreeSet::new();
    for cut in analysis.cuts.iter().filter(|c| c.kind == CutKind::Consumer) {
        let Some(keep) = slices
            .get(&cut.tensor)
            .and_then(|axes| axes[cut.axis].as_ref())
        else {
            continue;
        };
        if !seen.insert(cut.tensor) {
            continue;
        }
        let name = &model.tensors()[cut.tensor].name;
        let skip = |note: String| RefitOutcome {
            weight: name.clone(),
            refitted: false,
            output_error_before: None,
            output_error_after: None,
            note: Some(note),
        };
        let Some(weight) = weights.iter().find(|w| w.tensor == cut.tensor) else {
            outcomes.push(skip("not refitted: not a floating-point weight".into()));
            continue;
        };
        let (view, tap) = match layer_of(model, weight) {
            Ok(layer) => layer,
            Err(reason) => {
                outcomes.push(skip(format!("not refitted: {reason}")));
                continue;
            }
        };
        if keep.len() * view.inner != view.cols {
            outcomes.push(skip(format!(
                "not refitted: its {} input channels do not make its {} columns",
                keep.len(),
                view.cols
            )));
            continue;
        }
        if view.cols > MAX_REFIT_COLS {
            outcomes.push(skip(format!(
                "not refitted: X^T X would have {} columns (more than {MAX_REFIT_COLS})",
                view.cols
            )));
            continue;
        }
        let keep = (0..view.cols).map(|j| keep[j / view.inner]).collect();
        layers.push(Layer { weight, view, keep });
        taps.push(tap);
    }
    if layers.is_empty() {
        return Ok((Vec::new(), outcomes));
    }
    let stats = statistics(model.bytes(), &taps)?;
    let results = layers
        .par_iter()
        .zip(&stats)
        .map(|(layer, stats)| refit_layer(model, layer, stats))
        .collect::<Result<Vec<_>>>()?;
    let mut edits = Vec::new();
    for (layer_edits, outcome) in results {
        edits.extend(layer_edits);
        outcomes.push(outcome);
    }
    outcomes.sort_by(|a, b| a.weight.cmp(&b.weight));
    Ok((edits, outcomes))
}

/// The refitted weight (and bias) edits of one layer, and its outcome.
fn refit_layer(
    model: &Model,
    layer: &Layer,
    stats: &LayerStats,
) -> Result<(Vec<Edit>, RefitOutcome)> {
    let weight = layer.weight;
    let tensor = &model.tensors()[weight.tensor];
    let (data, _) = finite_values(model, weight, "refit it")?;
    let old = decode(tensor.dtype, &data);
    let view = &layer.view;
    let masked: Vec<f64> = old
        .iter()
        .enumerate()
        .map(|(i, &v)| if layer.keep[column(view, i)] { v } else { 0.0 })
        .collect();
    let before = output_error::relative(view, stats, &old, &masked);
    let mut outcome = RefitOutcome {
        weight: weight.id.clone(),
        refitted: false,
        output_error_before: Some(before),
        output_error_after: Some(before),
        note: None,
    };
    let new = match least_squares(view, stats, &layer.keep, &old) {
        Ok(new) => new,
        Err(reason) => {
            outcome.note = Some(format!("not refitted: {reason}"));
            return Ok((Vec::new(), outcome));
        }
    };
    let keep_nonzero: Vec<bool> = new.iter().map(|v| *v != 0.0).collect();
    let bytes = encode(tensor.dtype, &new, &keep_nonzero);
    let new = decode(tensor.dtype, &bytes);
    let after = output_error::relative(view, stats, &old, &new);
    if after >= before {
        // The dampening can cost more than the removed inputs did (inputs that were dead on
        // the calibration data): the zeroed weights are the better fit then.
        outcome.note = Some(format!(
            "not refitted: the refit's output error ({:.4}%) is not below zeroing's",
            after * 100.0
        ));
        return Ok((Vec::new(), outcome));
    }
    outcome.refitted = true;
    outcome.output_error_after = Some(after);
    let mut edits = vec![Edit::replace(weight.tensor, bytes)];
    outcome.note = Some(match bias::find(model, weight, view.rows) {
        Ok(Bias::Existing { tensor, scale }) => {
            let shift = bias::shift(view, stats, &old, &new, scale);
            edits.push(bias::edit(model, tensor, &shift)?);
            format!(
                "bias `{}` shifted to keep the mean output",
                model.tensors()[tensor].name
            )
        }
        Ok(Bias::New { .. }) => "no bias: the mean output is not kept".into(),
        Err(reason) => format!("bias not shifted: {reason}"),
    });
    Ok((edits, outcome))
}

/// The view column of flat element `i` of the stored tensor.
fn column(view: &MatrixView, i: usize) -> usize {
    if view.transposed {
        i / view.rows
    } else {
        i % view.cols
    }
}

/// The stored tensor's values with each row's kept columns `K` set to
/// `(H_KK + lambda I)^-1 H_K,: w` and the other columns to zero.
fn least_squares(
    view: &MatrixView,
    stats: &LayerStats,
    keep: &[bool],
    old: &[f64],
) -> std::result::Result<Vec<f64>, String> {
    let cols = view.cols;
    let kept: Vec<usize> = (0..cols).filter(|&c| keep[c]).collect();
    let mut new = vec![0.0; old.len()];
    for g in 0..view.groups {
        let h = stats.gram(g);
        let rows: Vec<usize> = view.group_rows(g).collect();
        let mean_diag = kept.iter().map(|&k| h[k * cols + k]).sum::<f64>() / kept.len() as f64;
        if mean_diag <= 0.0 || !mean_diag.is_finite() {
            return Err("the kept inputs are zero on every calibration sample".into());
        }
        let lambda = 0.01 * mean_diag;
        let h_kk = DMatrix::from_fn(kept.len(), kept.len(), |a, b| {
            h[kept[a] * cols + kept[b]] + if a == b { lambda } else { 0.0 }
        });
        let h_k = DMatrix::from_fn(kept.len(), cols, |a, c| h[kept[a] * cols + c]);
        let w_t = DMatrix::from_fn(cols, rows.len(), |c, r| old[view.index(rows[r], c)]);
        let cholesky = h_kk
            .cholesky()
            .ok_or("H_KK + lambda I is not positive definite")?;
        let fitted = cholesky.solve(&(h_k * w_t));
        for (r, &row) in rows.iter().enumerate() {
            for (a, &k) in kept.iter().enumerate() {
                new[view.index(row, k)] = fitted[(a, r)];
            }
        }
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrated::{Geometry, Tap};

    #[test]
    fn kept_columns_fit_the_full_rows_output() {
        // X (4 rows, 3 columns), W (2 rows); column 1 goes. Reference from numpy:
        //   H = X.T @ X; K = [0, 2]; lam = 0.01 * H[K][:, K].diagonal().mean()
        //   np.linalg.solve(H[np.ix_(K, K)] + lam * np.eye(2), H[K] @ W.T).T
        //   -> [[1.79672561, 0.81338493], [0.81892056, 0.80337367]]
        let x = [[1., 2., 0.], [0., 1., 1.], [2., 1., 1.], [1., 0., 3.]];
        let w = [1., 1., 1., 0., 1., 1.];
        let tap = Tap {
            id: "w".into(),
            activation: "x".into(),
            geometry: Geometry::Rows { transposed: false },
            cols: 3,
        };
        let mut stats = LayerStats::new(&tap);
        let flat: Vec<f32> = x.iter().flatten().map(|&v| v as f32).collect();
        stats.add(&tap, &[4, 3], &flat).unwrap();
        let view = MatrixView {
            rows: 2,
            cols: 3,
            groups: 1,
            transposed: false,
            inner: 1,
        };
        let keep = [true, false, true];
        let new = least_squares(&view, &stats, &keep, &w).unwrap();
        let expected = [1.79672561, 0.0, 0.81338493, 0.81892056, 0.0, 0.80337367];
        for (got, want) in new.iter().zip(expected) {
            assert!((got - want).abs() < 1e-7, "{new:?}");
        }
        // The fit loses about half of what zeroing the column does (numpy:
        // sum((X W^T - X W'^T)^2) / sum((X W^T)^2) = 0.18182 zeroed, 0.09321 fitted).
        let masked = [1., 0., 1., 0., 0., 1.];
        let zeroed = output_error::relative(&view, &stats, &w, &masked);
        let fitted = output_error::relative(&view, &stats, &w, &new);
        assert!((zeroed - 0.18182).abs() < 1e-5, "{zeroed}");
        assert!((fitted - 0.09321).abs() < 1e-5, "{fitted}");
        // Stored transposed (MatMul [K, N]): the same values, transposed.
        let transposed = MatrixView {
            transposed: true,
            ..view.clone()
        };
        let w_t = [1., 0., 1., 1., 1., 1.];
        let new_t = least_squares(&transposed, &stats, &keep, &w_t).unwrap();
        for r in 0..2 {
            for c in 0..3 {
                assert!((new_t[c * 2 + r] - new[r * 3 + c]).abs() < 1e-12);
            }
        }
    }
}
