//! `--sparsity auto` from start to finish: measure each unit's curve, search the allocation,
//! write the best one to the output and check what was written once more, so that what ships
//! is what was verified.

use std::path::Path;

use onnx_prune_core::prune::{Pattern, Plan, PruneConfig};
use onnx_prune_core::shrink::{self, Analysis, ShrinkTotals};
use onnx_prune_core::write::{Outputs, Saved};
use onnx_prune_core::{Destination, Model, Storage, Weight};
use onnx_prune_verify::CheckReport;
use regex::Regex;

use crate::baseline::Baseline;
use crate::budget::LayerCurve;
use crate::channels::{removal, ChannelCalibration, Removal};
use crate::error::{Error, Result};
use crate::groups::{allocation, measure_groups, GroupUnit};
use crate::metric::Metric;
use crate::planner::Planner;
use crate::progress::Progress;
use crate::search::{curves, search_allocation, Found, Line, Tried, GRID};
use crate::sensitivity::{check_plan, measure_swapped, tensors_of};

/// A search that found an allocation passing the check, and what it wrote.
#[derive(Debug)]
pub struct Searched<T> {
    /// The allocation written.
    pub best: Tried<CheckReport>,
    /// The largest uniform sparsity that passed, if any.
    pub best_uniform: Option<f64>,
    /// Every candidate checked: its line, overall sparsity and whether it passed.
    pub history: Vec<(Line, f64, bool)>,
    /// Where the curves and the joint checks disagreed.
    pub notes: Vec<String>,
    /// The metric the curves measured.
    pub metric: Metric,
    /// Checks run to measure the curves.
    pub sensitivity_runs: usize,
    /// Checks run by the search.
    pub evaluations: usize,
    /// What was written to the output.
    pub written: T,
    /// The check of the output as written.
    pub check: CheckReport,
}

/// How a search ended.
#[derive(Debug)]
pub enum Outcome<T> {
    /// An allocation above zero passed; it was written and checked again.
    Passed(Box<Searched<T>>),
    /// Nothing above zero passed; nothing was written.
    NothingPassed(Box<Found<CheckReport>>),
}

impl<T> Searched<T> {
    /// The search `found` with `best` (its best) written as `written` and checked as `check`.
    fn new(
        (found, best): (Found<CheckReport>, Tried<CheckReport>),
        (metric, sensitivity_runs): (Metric, usize),
        written: T,
        check: CheckReport,
    ) -> Self {
        Searched {
            best,
            best_uniform: found.best_uniform,
            history: found.history,
            notes: found.notes,
            metric,
            sensitivity_runs,
            evaluations: found.evaluations,
            written,
            check,
        }
    }

    /// The report's `auto` key: the metric, the overall sparsity, the runs and checks it took,
    /// and under `units_key` each unit (named by `id_key`, ids in unit order) with its share.
    pub fn summary(
        &self,
        (units_key, id_key): (&str, &str),
        ids: impl Iterator<Item = String>,
    ) -> serde_json::Value {
        let units: Vec<serde_json::Value> = ids
            .zip(&self.best.sparsities)
            .map(|(id, s)| serde_json::json!({ id_key: id, "sparsity": s }))
            .collect();
        let tried: Vec<serde_json::Value> = self
            .history
            .iter()
            .map(|(line, sparsity, passed)| {
                serde_json::json!({ "line": line, "sparsity": sparsity, "passed": passed })
            })
            .collect();
        serde_json::json!({
            "metric": self.metric,
            "sparsity": self.best.overall,
            "line": self.best.line,
            "uniform_sparsity": self.best_uniform,
            "sensitivity_runs": self.sensitivity_runs,
            "search_checks": self.evaluations,
            "tried": tried,
            "notes": self.notes,
            units_key: units,
        })
    }
}

/// Searches over `curves`: each candidate is checked by `check(sparsities, scratch path)`.
fn search_scratch(
    curves: &[LayerCurve],
    max_evaluations: usize,
    progress: &dyn Progress,
    check: impl Fn(&[f64], &Path) -> Result<CheckReport>,
) -> Result<Found<CheckReport>> {
    let scratch = tempfile::tempdir().map_err(Error::Scratch)?;
    let candidate = scratch.path().join("candidate.onnx");
    search_allocation(curves, max_evaluations, progress, |sparsities| {
        let report = check(sparsities, &candidate)?;
        Ok((report.passed, report))
    })
}

/// The weights a `prune --sparsity auto` search prunes, and how.
pub struct WeightSearch<'a> {
    /// Plans candidates (by magnitude or a calibrated method).
    pub planner: &'a Planner<'a>,
    /// The weights, each a unit of the search.
    pub selected: &'a [&'a Weight],
    /// The pattern every weight is pruned with.
    pub pattern: Pattern,
    /// How the output stores pruned tensors.
    pub storage: Storage,
    /// What the curves measure (the metric the check's tolerances bound).
    pub metric: Metric,
    /// Checks the search may run.
    pub max_evaluations: usize,
}

/// The plan giving each selected weight its sparsity.
fn plan_for(search: &WeightSearch, sparsities: &[f64]) -> Result<Plan> {
    let sparsity_for = search
        .selected
        .iter()
        .zip(sparsities)
        .map(|(w, &s)| {
            let exact = Regex::new(&format!("^{}$", regex::escape(&w.id))).expect("escaped");
            (exact, s)
        })
        .collect();
    let config = PruneConfig {
        pattern: search.pattern,
        sparsity_for,
        ..PruneConfig::default()
    };
    search.planner.plan(search.selected, &config)
}

/// The largest per-weight allocation that passes the check of `baseline`, prepared for
/// `output` among `outputs` (in place once they are committed) and checked there once more;
/// the plan and what was saved come back with it.
pub fn search_weights(
    search: &WeightSearch,
    baseline: &Baseline,
    (outputs, output): (&mut Outputs, &Path),
    progress: &dyn Progress,
) -> Result<Outcome<(Plan, Saved)>> {
    let model = search.planner.model();
    let swappable = baseline.swappable(model, &tensors_of(search.selected));
    let reports = measure_swapped(
        search.planner,
        (baseline, swappable.as_ref()),
        (search.selected, &GRID, search.pattern),
        progress,
    )?;
    let params: Vec<u64> = search
        .selected
        .iter()
        .map(|w| model.tensors()[w.tensor].elements)
        .collect();
    let curves = curves(&params, &reports, search.metric);
    let found = search_scratch(
        &curves,
        search.max_evaluations,
        progress,
        |sparsities, candidate| {
            let plan = plan_for(search, sparsities)?;
            check_plan(
                (baseline, swappable.as_ref()),
                (model, &plan.edits, search.storage),
                candidate,
            )
        },
    )?;
    let Some(best) = found.best.clone() else {
        return Ok(Outcome::NothingPassed(Box::new(found)));
    };
    let plan = plan_for(search, &best.sparsities)?;
    let saved = outputs.stage(
        model,
        &plan.edits,
        Destination::File(output),
        search.storage,
    )?;
    let check = baseline.compare(&outputs.staged(output)?)?;
    Ok(Outcome::Passed(Box::new(Searched::new(
        (found, best),
        (search.metric, reports.len()),
        (plan, saved),
        check,
    ))))
}

/// The channel groups a `shrink --sparsity auto` search shrinks, and how.
pub struct GroupSearch<'a> {
    /// The model.
    pub model: &'a Model,
    /// Its channel groups.
    pub analysis: &'a Analysis,
    /// The groups searched, each a unit.
    pub units: &'a [GroupUnit],
    /// Channel counts stay multiples of this.
    pub round_to: usize,
    /// Ranks channels and refits consumers (`None`: by weights alone, no refit).
    pub calibration: Option<&'a ChannelCalibration>,
    /// What the curves measure (the metric the check's tolerances bound).
    pub metric: Metric,
    /// Checks the search may run.
    pub max_evaluations: usize,
}

/// The largest per-group allocation that passes the check of `baseline`, prepared for
/// `output` among `outputs` (in place once they are committed) and checked there once more;
/// the channels removed per group (with the refit of their consumers) and the totals come
/// back.
pub fn search_groups(
    search: &GroupSearch,
    baseline: &Baseline,
    (outputs, output): (&mut Outputs, &Path),
    progress: &dyn Progress,
) -> Result<Outcome<(Removal, ShrinkTotals)>> {
    let (model, analysis) = (search.model, search.analysis);
    let reports = measure_groups(
        (model, analysis, search.calibration),
        (search.units, &GRID),
        baseline,
        progress,
    )?;
    let params: Vec<u64> = search.units.iter().map(|u| u.params).collect();
    let curves = curves(&params, &reports, search.metric);
    let removal = |sparsities: &[f64]| {
        let request = allocation(analysis, search.units, sparsities, search.round_to);
        removal(model, analysis, request, search.calibration)
    };
    let found = search_scratch(
        &curves,
        search.max_evaluations,
        progress,
        |sparsities, candidate| {
            let shrunk = removal(sparsities)?;
            shrink::save_shrunk(model, analysis, &shrunk.removed, &shrunk.edits, candidate)?;
            baseline.check(candidate)
        },
    )?;
    let Some(best) = found.best.clone() else {
        return Ok(Outcome::NothingPassed(Box::new(found)));
    };
    let shrunk = removal(&best.sparsities)?;
    let removed = (analysis, shrunk.removed.as_slice());
    let (_, totals) = shrink::stage_shrunk(outputs, model, removed, &shrunk.edits, output)?;
    let check = baseline.compare(&outputs.staged(output)?)?;
    Ok(Outcome::Passed(Box::new(Searched::new(
        (found, best),
        (search.metric, reports.len()),
        (shrunk, totals),
        check,
    ))))
}
