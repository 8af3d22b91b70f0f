//! The budget search: from sensitivity curves, the cost threshold whose allocation (the least
//! sensitive units pruned most, see [`crate::budget`]) gives the largest overall sparsity that
//! still passes the check, each candidate written to a scratch file and checked.

use std::path::Path;

use onnx_prune_verify::CheckReport;

use crate::baseline::Baseline;
use crate::budget::{allocate, thresholds, LayerCurve};
use crate::error::{Error, Result};
use crate::metric::Metric;
use crate::progress::Progress;

/// Sparsities the sensitivity curves of a search are measured at.
pub const GRID: [f64; 10] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95];

/// Checks a search may run unless told otherwise.
pub const DEFAULT_MAX_EVALUATIONS: usize = 12;

/// The curves of units holding `params` each, from `reports` (unit `u` at the sparsity
/// `GRID[s]` at `u * GRID.len() + s`) under `metric`.
pub fn curves(params: &[u64], reports: &[CheckReport], metric: Metric) -> Vec<LayerCurve> {
    params
        .iter()
        .enumerate()
        .map(|(u, &params)| LayerCurve {
            params,
            points: GRID
                .iter()
                .enumerate()
                .map(|(s, &sparsity)| (sparsity, metric.value(&reports[u * GRID.len() + s])))
                .collect(),
        })
        .collect()
}

/// One allocation tried: per unit (weight or channel group) its sparsity, and the check of
/// the result.
#[derive(Debug, Clone)]
pub struct Tried {
    /// Per unit.
    pub sparsities: Vec<f64>,
    /// Overall sparsity of the allocation.
    pub overall: f64,
    /// The check of the candidate.
    pub report: CheckReport,
}

/// What a search found.
#[derive(Debug, Clone)]
pub struct Found {
    /// The largest passing allocation above zero.
    pub best: Option<Tried>,
    /// The smallest failing one.
    pub smallest_failure: Option<Tried>,
    /// Checks run.
    pub evaluations: usize,
}

/// Searches the cost threshold over `curves` with at most `budget` checks against `baseline`
/// (counted on `progress`): each threshold's allocation (one sparsity per curve, from
/// [`allocate`]) is written by `write(sparsities, path)` to a scratch file and checked.
/// Overall sparsity grows with the threshold: bisect for the last passing step, then, as
/// measured accuracy is not monotonic in sparsity (a few samples either way), spend what is
/// left of the budget on the steps above it, largest first.
pub fn search_allocation(
    curves: &[LayerCurve],
    budget: usize,
    (baseline, progress): (&Baseline, &dyn Progress),
    write: impl Fn(&[f64], &Path) -> Result<()>,
) -> Result<Found> {
    let steps = thresholds(curves);
    progress.steps(
        "searching the largest sparsity that passes",
        budget.min(steps.len()) as u64,
    );
    let scratch = tempfile::tempdir().map_err(Error::Scratch)?;
    let candidate = scratch.path().join("candidate.onnx");
    let evaluate = |(tau, overall): (f64, f64)| -> Result<Tried> {
        let sparsities = allocate(curves, tau);
        write(&sparsities, &candidate)?;
        let report = baseline.check(&candidate)?;
        progress.step();
        Ok(Tried {
            sparsities,
            overall,
            report,
        })
    };
    let (mut low, mut high) = (0usize, steps.len());
    let mut best: Option<Tried> = None;
    let mut smallest_failure: Option<Tried> = None;
    let mut evaluations = 0;
    while low < high && evaluations < budget {
        let mid = low + (high - low) / 2;
        let tried = evaluate(steps[mid])?;
        evaluations += 1;
        if tried.report.passed {
            low = mid + 1;
            best = Some(tried);
        } else {
            high = mid;
            smallest_failure = Some(tried);
        }
    }
    let mut above = (low..steps.len()).rev();
    while evaluations < budget {
        let Some(step) = above.next() else { break };
        if best.as_ref().is_some_and(|b| b.overall >= steps[step].1) {
            break;
        }
        let tried = evaluate(steps[step])?;
        evaluations += 1;
        if tried.report.passed {
            best = Some(tried);
            break;
        }
    }
    Ok(Found {
        best: best.filter(|b| b.overall > 0.0),
        smallest_failure,
        evaluations,
    })
}
