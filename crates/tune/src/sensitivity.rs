//! Sensitivity curves: each selected weight pruned alone (or each channel group shrunk alone) at
//! each sparsity, checked against the dense model. The curves say what each unit costs, and a
//! budget search draws per-unit sparsities from them.

use std::borrow::Borrow;
use std::path::Path;

use onnx_prune_core::prune::{Pattern, PruneConfig};
use onnx_prune_core::{save, Destination, Edit, Model, Storage, Weight};
use onnx_prune_verify::{CheckReport, Swappable};
use rayon::prelude::*;

use crate::baseline::Baseline;
use crate::error::{Error, Result};
use crate::metric::Metric;
use crate::planner::Planner;
use crate::progress::Progress;

/// One weight's (or channel group's) curve.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Curve {
    /// Weight id, or the channel group's first producer node.
    pub id: String,
    /// Elements of the weight, or parameters the group's channels hold in all its members.
    pub params: u64,
    /// The metric at each sparsity of [`Sensitivity::sparsities`].
    pub values: Vec<f64>,
}

/// What was pruned at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Structure {
    /// Single weights, element by element.
    Weights,
    /// Channel groups, whole channels at a time.
    Channels,
    /// Attention head groups, whole heads at a time.
    Heads,
    /// Layers of the residual stream, one whole layer at a time.
    Layers,
}

/// The result of a sensitivity analysis.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sensitivity {
    /// What the values measure.
    pub metric: Metric,
    /// What was pruned at a time.
    pub structure: Structure,
    /// How: `magnitude`, `wanda`, `sparsegpt` (weights), `group_l2` or `activation`
    /// (channels, heads) or `drop` (layers).
    pub method: &'static str,
    /// The pattern weights were pruned with (none for channels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Sparsities tried, in increasing order.
    pub sparsities: Vec<f64>,
    /// One curve per unit, in file order.
    pub weights: Vec<Curve>,
    /// Samples each check ran on.
    pub samples: usize,
}

impl Sensitivity {
    /// The curves of `units` (id and parameters) from `reports`, the check of unit `u` at
    /// sparsity `s` being at `u * sparsities.len() + s`, under the metric the reports support
    /// best. `reports` must not be empty.
    pub fn from_reports(
        (structure, method, pattern): (Structure, &'static str, Option<String>),
        units: Vec<(String, u64)>,
        sparsities: Vec<f64>,
        reports: &[CheckReport],
    ) -> Sensitivity {
        let metric = Metric::of(&reports[0]);
        Sensitivity {
            metric,
            structure,
            method,
            pattern,
            samples: reports[0].samples,
            weights: units
                .into_iter()
                .enumerate()
                .map(|(u, (id, params))| Curve {
                    id,
                    params,
                    values: (0..sparsities.len())
                        .map(|s| metric.value(&reports[u * sparsities.len() + s]))
                        .collect(),
                })
                .collect(),
            sparsities,
        }
    }

    /// How candidates were pruned, in a few words.
    pub fn how(&self) -> String {
        match &self.pattern {
            Some(pattern) if self.method == "magnitude" => pattern.clone(),
            Some(pattern) => format!("{}, {pattern}", self.method),
            None if self.method == "activation" => "activations, refitted".to_string(),
            None if self.structure == Structure::Layers => {
                "the layer's input passed on".to_string()
            }
            None => "group L2 norm".to_string(),
        }
    }

    /// What one curve is of.
    pub fn unit(&self) -> &'static str {
        match self.structure {
            Structure::Channels => "channel group",
            Structure::Heads => "head group",
            Structure::Layers => "layer",
            Structure::Weights => "weight",
        }
    }
}

/// Runs `check(unit, sparsity, scratch path)` for every unit at every sparsity, in parallel,
/// counting the checks on `progress` under `what`: the report of unit `u` at sparsity `s` is
/// at `u * sparsities.len() + s`. Each candidate has its own scratch path, removed once
/// checked if `check` wrote it.
pub(crate) fn each_candidate(
    (units, sparsities): (usize, &[f64]),
    (what, progress): (&'static str, &dyn Progress),
    check: impl Fn(usize, usize, &Path) -> Result<CheckReport> + Sync,
) -> Result<Vec<CheckReport>> {
    let jobs: Vec<(usize, usize)> = (0..units)
        .flat_map(|u| (0..sparsities.len()).map(move |s| (u, s)))
        .collect();
    progress.steps(what, jobs.len() as u64);
    check_each(&jobs, progress, check)
}

/// Runs `check(unit, sparsity, scratch path)` for each of `jobs`, in parallel, counting the
/// checks on `progress`: the reports in the order of `jobs`.
fn check_each(
    jobs: &[(usize, usize)],
    progress: &dyn Progress,
    check: impl Fn(usize, usize, &Path) -> Result<CheckReport> + Sync,
) -> Result<Vec<CheckReport>> {
    let scratch = tempfile::tempdir().map_err(Error::Scratch)?;
    jobs.par_iter()
        .map(|&(u, s)| {
            let candidate = scratch.path().join(format!("u{u}_s{s}.onnx"));
            let report = check(u, s, &candidate)?;
            std::fs::remove_file(&candidate).ok();
            progress.step();
            Ok(report)
        })
        .collect()
}

/// Checks the planner's model against `baseline` with each selected weight alone pruned at
/// each sparsity, in parallel, counting the checks on `progress`: the report of weight `w` at
/// sparsity `s` is at `w * sparsities.len() + s`. Each weight's candidates run from that
/// weight on, the dense values before it kept ([`Baseline::each_suffix`]); those that cannot
/// run in the model loaded once with the selected weights as inputs, fed their pruned values,
/// and a candidate that changes more than them (a bias correction) is written and loaded as a
/// file.
pub fn measure_weights(
    planner: &Planner,
    baseline: &Baseline,
    (selected, sparsities, pattern): (&[&Weight], &[f64], Pattern),
    progress: &dyn Progress,
) -> Result<Vec<CheckReport>> {
    measure(
        planner,
        (baseline, || {
            baseline.swappable(planner.model(), &tensors_of(selected))
        }),
        (selected, sparsities, pattern),
        progress,
    )
}

/// The tensors the weights are held in.
pub(crate) fn tensors_of(selected: &[&Weight]) -> Vec<usize> {
    selected.iter().map(|w| w.tensor).collect()
}

/// [`measure_weights`] with `swappable` for the candidates that cannot run from their weight
/// on.
pub(crate) fn measure_swapped(
    planner: &Planner,
    (baseline, swappable): (&Baseline, Option<&Swappable>),
    (selected, sparsities, pattern): (&[&Weight], &[f64], Pattern),
    progress: &dyn Progress,
) -> Result<Vec<CheckReport>> {
    measure(
        planner,
        (baseline, || swappable),
        (selected, sparsities, pattern),
        progress,
    )
}

/// [`measure_weights`], the model with the selected weights as inputs made by `swappable`
/// only if some candidate cannot run from its weight on.
fn measure<S: Borrow<Swappable>>(
    planner: &Planner,
    (baseline, swappable): (&Baseline, impl FnOnce() -> Option<S>),
    (selected, sparsities, pattern): (&[&Weight], &[f64], Pattern),
    progress: &dyn Progress,
) -> Result<Vec<CheckReport>> {
    let count = sparsities.len();
    progress.steps(
        "pruning one weight at a time and running tract",
        (selected.len() * count) as u64,
    );
    let edits = |w: usize, s: usize| -> Result<Vec<Edit>> {
        let config = PruneConfig {
            sparsity: sparsities[s],
            pattern,
            ..PruneConfig::default()
        };
        Ok(planner.plan(&selected[w..=w], &config)?.edits)
    };
    let context =
        |w: usize, s: usize| format!("checking `{}` at {}", selected[w].id, sparsities[s]);
    let model = planner.model();
    let by_weight = baseline.each_suffix(model, (&tensors_of(selected), count), |w, suffix| {
        (0..count)
            .into_par_iter()
            .map(|s| {
                let report = suffix
                    .compare(&edits(w, s)?)
                    .map_err(|e| Error::from(e).context(context(w, s)))?;
                if report.is_some() {
                    progress.step();
                }
                Ok(report)
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let mut reports: Vec<Option<CheckReport>> = by_weight
        .into_iter()
        .flat_map(|r| r.unwrap_or_else(|| (0..count).map(|_| None).collect()))
        .collect();
    let rest: Vec<(usize, usize)> = (0..reports.len())
        .filter(|&at| reports[at].is_none())
        .map(|at| (at / count, at % count))
        .collect();
    if !rest.is_empty() {
        let swappable = swappable();
        let swappable = swappable.as_ref().map(Borrow::borrow);
        let checked = check_each(&rest, progress, |w, s, candidate| {
            check_plan(
                (baseline, swappable),
                (model, &edits(w, s)?, Storage::Dense),
                candidate,
            )
            .map_err(|e| e.context(context(w, s)))
        })?;
        for ((w, s), report) in rest.into_iter().zip(checked) {
            reports[w * count + s] = Some(report);
        }
    }
    Ok(reports
        .into_iter()
        .map(|r| r.expect("every candidate is checked"))
        .collect())
}

/// Checks `model` changed by `edits` against `baseline`: run in `swappable` when it swaps
/// every tensor the edits change, else saved (with `storage`) to `scratch` and loaded.
pub(crate) fn check_plan(
    (baseline, swappable): (&Baseline, Option<&Swappable>),
    (model, edits, storage): (&Model, &[Edit], Storage),
    scratch: &Path,
) -> Result<CheckReport> {
    if let Some(swappable) = swappable {
        if let Some(report) = baseline.compare_edits(swappable, edits)? {
            return Ok(report);
        }
    }
    save(model, edits, Destination::File(scratch), storage)?;
    baseline.check(scratch)
}
