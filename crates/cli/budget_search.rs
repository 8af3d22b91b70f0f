//! What `prune --sparsity auto` and `shrink --sparsity auto` share: the tolerances a search
//! holds, the sensitivity curves it starts from, and the search of the cost threshold whose
//! allocation gives the largest overall sparsity that still passes.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use onnx_prune_core::budget::{allocate, thresholds, LayerCurve};
use onnx_prune_verify::{CheckOptions, CheckReport};

use crate::args::CheckFlags;
use crate::check::{self, Baseline};
use crate::progress::Progress;
use crate::sensitivity::Metric;
use crate::stdout;

/// Sparsities the sensitivity curves are measured at.
pub const GRID: [f64; 10] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95];

/// Checks allowed while searching, unless --max-evaluations says otherwise.
const DEFAULT_MAX_EVALUATIONS: usize = 12;

/// Tolerance flags; at least one must be given, or "passes" would mean only the defaults.
const TOLERANCES: [&str; 5] = [
    "--max-accuracy-drop",
    "--min-cosine",
    "--min-agreement",
    "--atol",
    "--rtol",
];

/// The check options of a budget search, and the metric its curves measure. Only the
/// tolerances given hold (a default, cosine 0.99, would otherwise cap a search the user
/// bounded by accuracy), and at least one must be given.
pub fn search_options(flags: &CheckFlags) -> Result<(CheckOptions, Metric)> {
    let given = flags.given();
    if !TOLERANCES.iter().any(|t| given.contains(t)) {
        bail!(
            "--sparsity auto needs a tolerance to hold: give one of {} (e.g. \
             --max-accuracy-drop 0.01 with --labels)",
            TOLERANCES.join(", ")
        );
    }
    let mut options = check::options(flags)?;
    if given.contains(&"--max-accuracy-drop") && options.labels.is_none() {
        bail!("--max-accuracy-drop needs --labels to measure accuracy");
    }
    if !given.contains(&"--min-cosine") {
        options.tolerances.min_cosine = f64::NEG_INFINITY;
    }
    if !given.contains(&"--max-accuracy-drop") {
        options.tolerances.max_accuracy_drop = f64::INFINITY;
    }
    // The curves measure what the tolerances bound.
    let metric = if given.contains(&"--max-accuracy-drop") {
        Metric::Accuracy
    } else if given.contains(&"--min-agreement") {
        Metric::Agreement
    } else {
        Metric::Cosine
    };
    Ok((options, metric))
}

/// `--max-evaluations`, or its default.
pub fn budget(max_evaluations: Option<usize>) -> Result<usize> {
    let budget = max_evaluations.unwrap_or(DEFAULT_MAX_EVALUATIONS);
    if budget == 0 {
        bail!("--max-evaluations must be at least 1");
    }
    Ok(budget)
}

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
pub struct Tried {
    /// Per unit.
    pub sparsities: Vec<f64>,
    /// Overall sparsity of the allocation.
    pub overall: f64,
    /// The check of the candidate.
    pub report: CheckReport,
}

/// What a search found.
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
pub fn search(
    curves: &[LayerCurve],
    budget: usize,
    (baseline, progress): (&Baseline, &Progress),
    write: impl Fn(&[f64], &Path) -> Result<()>,
) -> Result<Found> {
    let steps = thresholds(curves);
    progress.steps(
        "searching the largest sparsity that passes",
        budget.min(steps.len()) as u64,
    );
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
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

/// The report's `auto` key: the metric, the overall sparsity, the runs and checks it took, and
/// under `units_key` each unit (named by `id_key`) with its share.
pub fn summary(
    metric: Metric,
    (best, sensitivity_runs, search_checks): (&Tried, usize, usize),
    (units_key, id_key): (&str, &str),
    ids: impl Iterator<Item = String>,
) -> serde_json::Value {
    let units: Vec<serde_json::Value> = ids
        .zip(&best.sparsities)
        .map(|(id, s)| serde_json::json!({ id_key: id, "sparsity": s }))
        .collect();
    serde_json::json!({
        "metric": metric,
        "sparsity": best.overall,
        "sensitivity_runs": sensitivity_runs,
        "search_checks": search_checks,
        units_key: units,
    })
}

/// When nothing above zero passed: prints the figures of the smallest allocation tried and
/// gives the failed check's exit code.
pub fn nothing_passed(found: Found) -> Result<ExitCode> {
    let failure = found.smallest_failure.context("no allocation was tried")?;
    stdout::print(format!(
        "no sparsity above zero passes: the smallest tried, {:.2}% overall, gives\n\n{}",
        100.0 * failure.overall,
        check::render(&failure.report)
    ))?;
    Ok(check::exit_code(&failure.report))
}
