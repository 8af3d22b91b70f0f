//! `prune --sparsity auto`: measure each weight's sensitivity, then search the cost threshold
//! whose per-layer allocation (the least sensitive layers pruned most) gives the largest overall
//! sparsity that still passes the check's tolerances; write that model and check it once more.

use std::process::ExitCode;

use anyhow::{bail, Result};
use onnx_prune_core::{
    discover_with, save, select, Calibrated, Destination, Method, Model, Pattern, Plan,
    PruneConfig, RewriteReport, Weight,
};
use onnx_prune_verify::CalibrationOptions;
use regex::Regex;

use crate::args::{PruneArgs, ScopeArg};
use crate::budget_search::{budget, curves, nothing_passed, search, search_options, summary, GRID};
use crate::check::Baseline;
use crate::files::{preflight_check, source_path, Files};
use crate::progress::Progress;
use crate::prune::{finish, parse_pattern, selection};
use crate::pruner::Pruner;
use crate::sensitivity::measure;
use crate::stdout;

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
    let (options, metric) = search_options(&args.check_flags)?;
    let budget = budget(args.max_evaluations)?;
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
    let params: Vec<u64> = selected
        .iter()
        .map(|w| model.tensors()[w.tensor].elements)
        .collect();
    let curves = curves(&params, &reports, metric);
    let storage = args.rewrite.storage.into();
    let found = search(
        &curves,
        budget,
        (&baseline, &progress),
        |sparsities, candidate| {
            let plan = plan_for(&pruner, &selected, sparsities, pattern)?;
            save(&model, &plan.edits, Destination::File(candidate), storage)?;
            Ok(())
        },
    )?;
    drop(progress);
    let evaluations = found.evaluations;
    let Some(best) = found.best else {
        return nothing_passed(found);
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
    let summary = summary(
        metric,
        (&best, reports.len(), evaluations),
        ("layers", "id"),
        selected.iter().map(|w| w.id.clone()),
    );
    finish(
        &report,
        Some(&checked),
        args.rewrite.report.as_deref(),
        Some(summary),
    )
}
