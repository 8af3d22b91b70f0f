//! Per-layer sparsities from sensitivity curves: for a cost threshold `tau`, every layer takes
//! the largest sparsity whose measured cost (and the cost of every sparsity below it) stays
//! within `tau`. Raising `tau` prunes the least sensitive layers most and the sensitive ones
//! last (water-filling on the curves); a search over `tau` then finds the largest overall
//! sparsity that still passes a check.

/// One layer's sensitivity: its size and its measured cost at increasing sparsities.
#[derive(Debug, Clone)]
pub struct LayerCurve {
    /// Elements of the weight.
    pub params: u64,
    /// `(sparsity, cost)` pairs in increasing sparsity; cost 0 means no measurable loss.
    pub points: Vec<(f64, f64)>,
}

/// The sparsity each layer takes at threshold `tau`: the largest sparsity of its curve such
/// that the cost there and at every smaller sparsity is at most `tau` (0 when even the first
/// point costs more).
pub fn allocate(curves: &[LayerCurve], tau: f64) -> Vec<f64> {
    curves
        .iter()
        .map(|curve| {
            curve
                .points
                .iter()
                .take_while(|(_, cost)| *cost <= tau)
                .last()
                .map_or(0.0, |(sparsity, _)| *sparsity)
        })
        .collect()
}

/// The overall sparsity of an allocation: zeros over elements, across the layers.
pub fn overall(curves: &[LayerCurve], sparsities: &[f64]) -> f64 {
    let params: u64 = curves.iter().map(|c| c.params).sum();
    if params == 0 {
        return 0.0;
    }
    let zeros: f64 = curves
        .iter()
        .zip(sparsities)
        .map(|(c, s)| c.params as f64 * s)
        .sum();
    zeros / params as f64
}

/// The thresholds worth trying, in increasing order: each one changes the allocation, so that
/// every distinct allocation is reached by exactly one of them. Each comes with its overall
/// sparsity, which never decreases along the list.
pub fn thresholds(curves: &[LayerCurve]) -> Vec<(f64, f64)> {
    let mut taus: Vec<f64> = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|(_, cost)| cost.max(0.0)))
        .collect();
    taus.push(0.0);
    taus.sort_by(f64::total_cmp);
    taus.dedup();
    let mut out: Vec<(f64, f64)> = Vec::new();
    for tau in taus {
        let sparsity = overall(curves, &allocate(curves, tau));
        if out.last().is_none_or(|&(_, last)| sparsity > last) {
            out.push((tau, sparsity));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(params: u64, costs: &[f64]) -> LayerCurve {
        let grid = [0.25, 0.5, 0.75, 0.9];
        LayerCurve {
            params,
            points: grid.iter().copied().zip(costs.iter().copied()).collect(),
        }
    }

    #[test]
    fn a_fragile_layer_keeps_its_weights_while_a_robust_one_is_emptied_first() {
        let robust = curve(1000, &[0.0, 0.0, 0.0, 0.001]);
        let fragile = curve(1000, &[0.2, 0.5, 0.9, 0.9]);
        let curves = [robust, fragile];
        assert_eq!(allocate(&curves, 0.0), [0.75, 0.0]);
        assert_eq!(allocate(&curves, 0.01), [0.9, 0.0]);
        assert_eq!(allocate(&curves, 0.3), [0.9, 0.25]);
        let steps = thresholds(&curves);
        assert_eq!(steps[0], (0.0, 0.375));
        assert!(steps.windows(2).all(|w| w[0].1 < w[1].1 && w[0].0 < w[1].0));
        assert_eq!(steps.last().unwrap().1, 0.9);
    }

    #[test]
    fn a_cost_that_dips_after_a_rise_does_not_let_a_layer_skip_past_it() {
        // Noise: 50% costs more than 75% on the data; the layer still stops before 50%.
        let curves = [curve(10, &[0.0, 0.3, 0.1, 0.5])];
        assert_eq!(allocate(&curves, 0.2), [0.25]);
        assert_eq!(allocate(&curves, 0.3), [0.75]);
    }

    #[test]
    fn overall_sparsity_weighs_layers_by_size() {
        let curves = [curve(300, &[0.0; 4]), curve(100, &[1.0; 4])];
        assert_eq!(overall(&curves, &[0.5, 0.9]), (150.0 + 90.0) / 400.0);
    }
}
