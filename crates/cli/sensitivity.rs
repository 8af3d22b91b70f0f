//! `onnx-prune sensitivity`: prune one weight at a time at each sparsity, run both models
//! through tract, and record what each costs: the curves a per-layer budget is drawn from.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use onnx_prune_core::shrink;
use onnx_prune_core::{
    check_sparsity, discover_with, save, select, Destination, Model, Pattern, PruneConfig, Storage,
    Weight,
};
use onnx_prune_verify::CheckReport;
use rayon::prelude::*;

use crate::args::{MethodArg, SensitivityArgs, StructureArg};
use crate::channel_sensitivity;
use crate::check::{self, Baseline};
use crate::files::{preflight_check, source_path, Files};
use crate::plot;
use crate::progress::Progress;
use crate::prune::{calibration, parse_pattern, selection};
use crate::pruner::Pruner;
use crate::stdout;
use crate::table::table;

/// What a sensitivity curve measures, from the check of the model with one weight pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Metric {
    /// Reference accuracy minus candidate accuracy (with labels).
    #[serde(rename = "accuracy_drop")]
    Accuracy,
    /// One minus the lowest top-1 agreement over class-score outputs.
    #[serde(rename = "agreement_drop")]
    Agreement,
    /// One minus the lowest cosine similarity over outputs.
    #[serde(rename = "cosine_drop")]
    Cosine,
}

impl Metric {
    /// The metric a check report supports best: accuracy with labels, else agreement for
    /// class scores, else cosine.
    pub fn of(report: &CheckReport) -> Metric {
        if report.accuracy.is_some() {
            Metric::Accuracy
        } else if report.outputs.iter().any(|o| o.top1_agreement.is_some()) {
            Metric::Agreement
        } else {
            Metric::Cosine
        }
    }

    /// Its value on `report`.
    pub fn value(self, report: &CheckReport) -> f64 {
        match self {
            Metric::Accuracy => report
                .accuracy
                .as_ref()
                .map_or(0.0, |a| a.reference - a.candidate),
            Metric::Agreement => {
                1.0 - report
                    .outputs
                    .iter()
                    .filter_map(|o| o.top1_agreement)
                    .fold(1.0, f64::min)
            }
            Metric::Cosine => 1.0 - report.outputs.iter().map(|o| o.cosine).fold(1.0, f64::min),
        }
    }

    /// How the metric reads in tables and on the plot's axis.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy drop",
            Metric::Agreement => "top-1 agreement drop",
            Metric::Cosine => "1 - cosine",
        }
    }
}

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

/// The result of a sensitivity analysis.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sensitivity {
    /// What the values measure.
    pub metric: Metric,
    /// What was pruned at a time: `weights` or `channels` (channel groups).
    pub structure: &'static str,
    /// How: `magnitude`, `wanda`, `sparsegpt` (weights) or `group_l2` (channels).
    pub method: &'static str,
    /// The pattern weights were pruned with (none for channels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Sparsities tried, in increasing order.
    pub sparsities: Vec<f64>,
    /// One curve per selected weight, in file order.
    pub weights: Vec<Curve>,
    /// Samples each check ran on.
    pub samples: usize,
}

impl Sensitivity {
    /// How candidates were pruned, in a few words.
    pub fn how(&self) -> String {
        match &self.pattern {
            Some(pattern) if self.method == "magnitude" => pattern.clone(),
            Some(pattern) => format!("{}, {pattern}", self.method),
            None => "group L2 norm".to_string(),
        }
    }

    /// What one curve is of.
    pub fn unit(&self) -> &'static str {
        if self.structure == "channels" {
            "channel group"
        } else {
            "weight"
        }
    }
}

/// Checks `model` against `baseline` with each selected weight alone pruned at each sparsity,
/// in parallel, counting the checks on `progress`: the report of weight `w` at sparsity `s` is
/// at `w * sparsities.len() + s`.
pub fn measure(
    pruner: &Pruner,
    baseline: &Baseline,
    (selected, sparsities, pattern): (&[&Weight], &[f64], Pattern),
    progress: &Progress,
) -> Result<Vec<CheckReport>> {
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let jobs: Vec<(usize, usize)> = (0..selected.len())
        .flat_map(|w| (0..sparsities.len()).map(move |s| (w, s)))
        .collect();
    progress.steps(
        "pruning one weight at a time and running tract",
        jobs.len() as u64,
    );
    jobs.par_iter()
        .map(|&(w, s)| {
            let config = PruneConfig {
                sparsity: sparsities[s],
                pattern,
                ..PruneConfig::default()
            };
            let plan = pruner.plan(&selected[w..=w], &config)?;
            let candidate = scratch.path().join(format!("w{w}_s{s}.onnx"));
            save(
                pruner.model(),
                &plan.edits,
                Destination::File(&candidate),
                Storage::Dense,
            )?;
            let report = baseline
                .check(&candidate)
                .with_context(|| format!("checking `{}` at {}", selected[w].id, sparsities[s]))?;
            std::fs::remove_file(&candidate).ok();
            progress.step();
            Ok(report)
        })
        .collect()
}

/// Parses `--sparsities` (comma-separated, each in (0, 1)), sorted and without repeats.
fn parse_sparsities(list: &str) -> Result<Vec<f64>> {
    let mut values = list
        .split(',')
        .map(|item| {
            let value: f64 = item.trim().parse().with_context(|| {
                format!("--sparsities `{list}`: `{item}` is not a number (e.g. 0.1,0.3,0.5)")
            })?;
            if value == 0.0 {
                bail!("--sparsities `{list}`: 0 prunes nothing; list sparsities above 0");
            }
            Ok(check_sparsity(value, "--sparsities")?)
        })
        .collect::<Result<Vec<f64>>>()?;
    values.sort_by(f64::total_cmp);
    values.dedup();
    Ok(values)
}

pub fn run(args: SensitivityArgs) -> Result<ExitCode> {
    let sparsities = parse_sparsities(&args.sparsities)?;
    let options = check::sample_options(&args.samples)?;
    let channels = args.structure == StructureArg::Channels;
    let pattern = parse_pattern(&args.pattern)?;
    if channels {
        let defaults = (
            pattern == Pattern::Unstructured,
            args.min_params == onnx_prune_core::DEFAULT_MIN_PARAMS,
            args.calibration.method == MethodArg::Magnitude
                && args.calibration.calibration.is_empty(),
        );
        for (default, flag) in [
            (defaults.0, "--pattern"),
            (defaults.1, "--min-params"),
            (defaults.2, "--method and --calibration"),
        ] {
            if !default {
                bail!("{flag}: no effect with --structure channels, which removes whole channels by group L2 norm");
            }
        }
    } else if pattern.fixed_sparsity().is_some() {
        bail!("--pattern {pattern} fixes the sparsity; sensitivity varies it: use unstructured or block:RxC");
    }
    let (method, calibrated) = calibration(&args.calibration)?;
    let model = Model::load(&args.model)?;
    let mut files = Files::default();
    files.read_model(&model).read_check_inputs(&options);
    preflight_check(&options)?;
    if let Some((_, calibration)) = &calibrated {
        for source in &calibration.inputs {
            files.read(source_path(source));
        }
    }
    if let Some(report) = &args.report {
        files.write("--report", report);
    }
    if let Some(plot) = &args.plot {
        files.write("--plot", plot);
    }
    files.check()?;

    let progress = Progress::start();
    let (curves, reports) = if channels {
        let analysis = shrink::analyze(&model)?;
        let units = channel_sensitivity::groups(
            &model,
            &analysis,
            &crate::shrink::regexes(&args.include, "--include")?,
            &crate::shrink::regexes(&args.exclude, "--exclude")?,
        )?;
        if units.is_empty() {
            bail!(
                "no open channel group with more than one channel is selected (see `onnx-prune \
                 shrink --dry-run` for the groups and what blocks them)"
            );
        }
        progress.phase("running the model through tract");
        let baseline = Baseline::load(&args.model, &options)?;
        let reports = channel_sensitivity::measure(
            &model,
            &analysis,
            (&units, &sparsities),
            &baseline,
            &progress,
        )?;
        let curves: Vec<(String, u64)> = units.into_iter().map(|u| (u.name, u.params)).collect();
        (curves, reports)
    } else {
        let selection = selection(&args.include, &args.exclude, &[], args.min_params)?;
        let weights = discover_with(&model, args.min_params);
        let selected = select(&model, &weights, &selection)?;
        if calibrated.is_some() {
            progress.phase("calibrating through tract");
        }
        let pruner = Pruner::new(&model, calibrated, &selected)?;
        progress.phase("running the model through tract");
        let baseline = Baseline::load(&args.model, &options)?;
        let reports = measure(
            &pruner,
            &baseline,
            (&selected, &sparsities, pattern),
            &progress,
        )?;
        let curves = selected
            .iter()
            .map(|w| (w.id.clone(), model.tensors()[w.tensor].elements))
            .collect();
        (curves, reports)
    };
    drop(progress);
    let metric = Metric::of(&reports[0]);
    let result = Sensitivity {
        metric,
        structure: if channels { "channels" } else { "weights" },
        method: if channels { "group_l2" } else { method.name() },
        pattern: (!channels).then(|| pattern.to_string()),
        samples: reports[0].samples,
        weights: curves
            .into_iter()
            .enumerate()
            .map(|(w, (id, params))| Curve {
                id,
                params,
                values: (0..sparsities.len())
                    .map(|s| metric.value(&reports[w * sparsities.len() + s]))
                    .collect(),
            })
            .collect(),
        sparsities,
    };
    if let Some(path) = &args.report {
        onnx_prune_core::write_file_atomic(path, &serde_json::to_vec_pretty(&result)?)?;
    }
    if let Some(path) = &args.plot {
        onnx_prune_core::write_file_atomic(path, plot::sensitivity_svg(&result)?.as_bytes())?;
    }
    stdout::print(render(&result))?;
    Ok(ExitCode::SUCCESS)
}

/// The human-readable form: weights down, sparsities across, the metric in percentage points.
pub fn render(result: &Sensitivity) -> String {
    let mut header = vec![result.unit().to_string(), "params".to_string()];
    header.extend(
        result
            .sparsities
            .iter()
            .map(|s| format!("{:.0}%", 100.0 * s)),
    );
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let rows = result
        .weights
        .iter()
        .map(|curve| {
            let mut row = vec![curve.id.clone(), curve.params.to_string()];
            row.extend(curve.values.iter().map(|v| format!("{:.2}", 100.0 * v)));
            row
        })
        .collect();
    let right: Vec<usize> = (1..header.len()).collect();
    format!(
        "{} by sparsity, in percentage points ({} samples, {}), one {} pruned at a time\n\n{}",
        result.metric.label(),
        result.samples,
        result.how(),
        result.unit(),
        table(&header, rows, &right)
    )
}
