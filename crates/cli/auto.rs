//! `prune --sparsity auto`: measure each weight's sensitivity, then search the cost threshold
//! whose per-layer allocation (the least sensitive layers pruned most) gives the largest overall
//! sparsity that still passes the check's tolerances; write that model and check it once more.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use onnx_prune_core::budget::{allocate, thresholds, LayerCurve};
use onnx_prune_core::{
    discover_with, save, select, Calibrated, Destination, Method, Model, Pattern, Plan,
    PruneConfig, RewriteReport, Weight,
};
use onnx_prune_verify::{CalibrationOptions, CheckReport};
use regex::Regex;

use crate::args::{PruneArgs, ScopeArg};
use crate::check::{self, Baseline};
use crate::files::{preflight_check, source_path, Files};
use crate::progress::Progress;
use crate::prune::{finish, parse_pattern, selection};
use crate::pruner::Pruner;
use crate::sensitivity::{measure, Metric};
use crate::stdout;

/// Sparsities the sensitivity curves are measured at.
const GRID: [f64; 10] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95];

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

/// One allocation tried: per selected weight its sparsity, and the check of the result.
struct Tried {
    sparsities: Vec<f64>,
    overall: f64,
    report: CheckReport,
}

/// Refuses flags that mean nothing with `--sparsity auto`.
fn validate(args: &PruneArgs) -> Result<()> {
    let conflicts = [
        (args.dry_run, "--dry-run"),
        (args.in_place, "--in-place"),
        (matches!(args.scope, ScopeArg::Global), "--scope global"),
        (!args.sparsity_for.is_empty(), "--sparsity-for"),
    ];
    if let Some((_, flag)) = conflicts.iter().find(|(given, _)| *given) {
        bail!(
            "{flag} cannot be used with --sparsity auto, which chooses every weight's sparsity \
             and checks the written model against the input"
        );
    }
    if args.output.is_none() {
        bail!("--sparsity auto needs -o OUT");
    }
    let given = args.check_flags.given();
    if !TOLERANCES.iter().any(|t| given.contains(t)) {
        bail!(
            "--sparsity auto needs a tolerance to hold: give one of {} (e.g. \
             --max-accuracy-drop 0.01 with --labels)",
            TOLERANCES.join(", ")
        );
    }
    Ok(())
}

/// The plan giving each selected weight its sparsity.
fn plan_for(
    pruner: &Pruner,
    selected: &[&Weight],
    sparsities: &[f64],
    pattern: Pattern,
) -> Result<Plan> {
    let sparsity_for = selected
        .iter()
        .zip(sparsities)
        .map(|(w, &s)| Ok((Regex::new(&format!("^{}$", regex::escape(&w.id)))?, s)))
        .collect::<Result<Vec<_>>>()?;
    let config = PruneConfig {
        pattern,
        sparsity_for,
        ..PruneConfig::default()
    };
    pruner.plan(selected, &config)
}

/// Searches, writes and checks the model; `method` and `calibrated` as `--method` and
/// `--calibration` ask.
pub fn run(
    args: PruneArgs,
    method: Method,
    calibrated: Option<(Calibrated, CalibrationOptions)>,
) -> Result<ExitCode> {
    validate(&args)?;
    let pattern = parse_pattern(&args.pattern)?;
    if pattern.fixed_sparsity().is_some() {
        bail!("--pattern {pattern} fixes the sparsity; --sparsity auto varies it");
    }
    let mut options = check::options(&args.check_flags)?;
    // Only the tolerances given hold: a default (cosine 0.99) would otherwise cap a search
    // the user bounded by accuracy.
    let given = args.check_flags.given();
    if given.contains(&"--max-accuracy-drop") && options.labels.is_none() {
        bail!("--max-accuracy-drop needs --labels to measure accuracy");
    }
    if !given.contains(&"--min-cosine") {
        options.tolerances.min_cosine = f64::NEG_INFINITY;
    }
    if !given.contains(&"--max-accuracy-drop") {
        options.tolerances.max_accuracy_drop = f64::INFINITY;
    }
    let budget = args.max_evaluations.unwrap_or(DEFAULT_MAX_EVALUATIONS);
    if budget == 0 {
        bail!("--max-evaluations must be at least 1");
    }
    let output = args.output.as_deref().expect("validated");
    let model = Model::load(&args.model)?;
    let mut files = Files::default();
    files.read_model(&model).read_check_inputs(&options);
    preflight_check(&options)?;
    if let Some((_, calibration)) = &calibrated {
        for source in &calibration.inputs {
            files.read(source_path(source));
        }
    }
    files.write_model("-o", &model, Destination::File(output))?;
    if let Some(report) = &args.rewrite.report {
        files.write("--report", report);
    }
    files.check()?;
    let selection = selection(
        &args.include,
        &args.exclude,
        &args.op_types,
        args.min_params,
    )?;
    let weights = discover_with(&model, args.min_params);
    let selected = select(&model, &weights, &selection)?;

    let progress = Progress::start();
    if calibrated.is_some() {
        progress.phase("calibrating through tract");
    }
    let pruner = Pruner::new(&model, calibrated, &selected)?;
    progress.phase("running the model through tract");
    let baseline = Baseline::load(&args.model, &options)?;
    let reports = measure(&pruner, &baseline, (&selected, &GRID, pattern), &progress)?;
    // The curves measure what the tolerances bound.
    let metric = if given.contains(&"--max-accuracy-drop") && options.labels.is_some() {
        Metric::Accuracy
    } else if given.contains(&"--min-agreement") {
        Metric::Agreement
    } else {
        Metric::Cosine
    };
    let curves: Vec<LayerCurve> = selected
        .iter()
        .enumerate()
        .map(|(w, weight)| LayerCurve {
            params: model.tensors()[weight.tensor].elements,
            points: GRID
                .iter()
                .enumerate()
                .map(|(s, &sparsity)| (sparsity, metric.value(&reports[w * GRID.len() + s])))
                .collect(),
        })
        .collect();
    let steps = thresholds(&curves);
    progress.steps(
        "searching the largest sparsity that passes",
        budget.min(steps.len()) as u64,
    );
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let evaluate = |tau: f64, overall: f64| -> Result<Tried> {
        let sparsities = allocate(&curves, tau);
        let plan = plan_for(&pruner, &selected, &sparsities, pattern)?;
        let candidate = scratch.path().join("candidate.onnx");
        save(
            &model,
            &plan.edits,
            Destination::File(&candidate),
            args.rewrite.storage.into(),
        )?;
        let report = baseline.check(&candidate)?;
        progress.step();
        Ok(Tried {
            sparsities,
            overall,
            report,
        })
    };
    // Overall sparsity grows with the threshold. Bisect for the last passing step, then, as
    // measured accuracy is not monotonic in sparsity (a few samples either way), spend what is
    // left of the budget on the steps above it, largest first.
    let (mut low, mut high) = (0usize, steps.len());
    let mut best: Option<Tried> = None;
    let mut smallest_failure: Option<Tried> = None;
    let mut evaluations = 0;
    while low < high && evaluations < budget {
        let mid = low + (high - low) / 2;
        let (tau, overall) = steps[mid];
        let tried = evaluate(tau, overall)?;
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
        let tried = evaluate(steps[step].0, steps[step].1)?;
        evaluations += 1;
        if tried.report.passed {
            best = Some(tried);
            break;
        }
    }
    drop(progress);
    let Some(best) = best.filter(|b| b.overall > 0.0) else {
        let failure = smallest_failure.context("no allocation was tried")?;
        stdout::print(format!(
            "no sparsity above zero passes: the smallest tried, {:.2}% overall, gives\n\n{}",
            100.0 * failure.overall,
            check::render(&failure.report)
        ))?;
        return Ok(check::exit_code(&failure.report));
    };
    let plan = plan_for(&pruner, &selected, &best.sparsities, pattern)?;
    let saved = save(
        &model,
        &plan.edits,
        Destination::File(output),
        args.rewrite.storage.into(),
    )?;
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    let mut report = RewriteReport::new(&model, plan.outcomes, Some(&saved))?;
    report.method = Some(method.name());
    // The written model, checked once more: what ships is what was verified.
    let checked = baseline.check(output)?;
    stdout::print(format!(
        "--sparsity auto: {:.2}% overall ({} sensitivity runs, {evaluations} search checks, \
         metric {})\n",
        100.0 * best.overall,
        reports.len(),
        metric.label()
    ))?;
    let summary = serde_json::json!({
        "metric": metric,
        "sparsity": best.overall,
        "sensitivity_runs": reports.len(),
        "search_checks": evaluations,
        "layers": selected.iter().zip(&best.sparsities).map(|(w, s)| {
            serde_json::json!({ "id": w.id, "sparsity": s })
        }).collect::<Vec<_>>(),
    });
    finish(
        &report,
        Some(&checked),
        args.rewrite.report.as_deref(),
        Some(summary),
    )
}
