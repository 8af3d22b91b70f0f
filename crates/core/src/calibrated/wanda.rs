//! Wanda (Sun et al. 2023): score `|W_ij| * ||X_j||_2`, compared within each output row.

use crate::calibrated::stats::LayerStats;
use crate::calibrated::view::MatrixView;
use crate::calibrated::Target;
use crate::prune::zeros_for;

/// Wanda scores of every element, by flat index.
pub(crate) fn scores(view: &MatrixView, values: &[f64], stats: &LayerStats) -> Vec<f64> {
    let mut scores = vec![0.0; values.len()];
    for r in 0..view.rows {
        let g = view.group(r);
        let norms = &stats.sq_norms[g * view.cols..(g + 1) * view.cols];
        for (c, norm) in norms.iter().enumerate() {
            let i = view.index(r, c);
            scores[i] = values[i].abs() * norm.sqrt();
        }
    }
    scores
}

/// Which elements to keep: per row, the `round(S x cols)` lowest scores zeroed (rounding half
/// to even), or the `m - n` lowest of every `m` columns along the reduction axis for N:M;
/// ties by flat index.
pub(crate) fn keep(
    view: &MatrixView,
    values: &[f64],
    stats: &LayerStats,
    target: Target,
) -> Vec<bool> {
    let scores = scores(view, values, stats);
    let mut keep = vec![true; values.len()];
    let mut row: Vec<(f64, usize)> = Vec::with_capacity(view.cols);
    let order = match target {
        Target::Fraction(_) => (0..view.cols).collect(),
        Target::NOfM { .. } => view.nm_order(),
    };
    for r in 0..view.rows {
        row.clear();
        row.extend(order.iter().map(|&c| {
            let i = view.index(r, c);
            (scores[i], i)
        }));
        let mut zero = |group: &mut [(f64, usize)], count: usize| {
            group.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for &(_, i) in &group[..count] {
                keep[i] = false;
            }
        };
        match target {
            Target::Fraction(s) => {
                let count = zeros_for(s, view.cols as u64) as usize;
                zero(&mut row[..], count);
            }
            Target::NOfM { n, m } => {
                for group in row.chunks_mut(m) {
                    zero(group, m - n);
                }
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrated::stats::{Geometry, Tap};

    #[test]
    fn activations_outweigh_magnitudes() {
        // One row [1, 2, 3, 4]; column norms [10, 1, 1, 1]: scores 10, 2, 3, 4.
        let tap = Tap {
            id: "w".into(),
            activation: "x".into(),
            geometry: Geometry::Rows { transposed: false },
            cols: 4,
        };
        let mut stats = LayerStats::new(&tap);
        stats.sq_norms = vec![100.0, 1.0, 1.0, 1.0];
        let view = MatrixView {
            rows: 1,
            cols: 4,
            groups: 1,
            transposed: false,
            inner: 1,
        };
        let values = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(
            keep(&view, &values, &stats, Target::Fraction(0.5)),
            vec![true, false, false, true]
        );
        assert_eq!(
            keep(&view, &values, &stats, Target::NOfM { n: 1, m: 2 }),
            vec![true, false, false, true]
        );
        // 2.5 zeros round to 2 (half to even) in a row of 5.
        let view5 = MatrixView { cols: 5, ..view };
        stats.sq_norms = vec![1.0; 5];
        let kept = keep(&view5, &[1.0; 5], &stats, Target::Fraction(0.5));
        assert_eq!(kept, vec![false, false, true, true, true]);
    }
}
