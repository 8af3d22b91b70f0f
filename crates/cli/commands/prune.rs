//! `onnx-prune prune`: flags to options, then plan, save, check and report; with
//! `--sparsity auto`, the budget search of the tune library instead of one plan.

use std::process::ExitCode;

use anyhow::{bail, Result};
use onnx_prune_core::calibrated::{plan_calibrated, Calibrated, Method};
use onnx_prune_core::model::discover_with;
use onnx_prune_core::prune::{plan, select, RewriteReport};
use onnx_prune_core::{Destination, Model};
use onnx_prune_tune::{search_weights, Baseline, Outcome, Planner, Progress, WeightSearch};
use onnx_prune_verify::{Calibration, CalibrationOptions};

use crate::args::{PruneArgs, ScopeArg, SparsityArg};
use crate::files::{preflight_check, source_path, Files};
use crate::options::{
    calibration, check_options_if, max_evaluations, parse_pattern, prune_config, search_check,
    selection,
};
use crate::outcome::{check_model, finish_rewrite, nothing_passed};
use crate::progress::Bar;
use crate::render::{print_notes, render_searched};
use crate::stdout;

pub fn run(args: PruneArgs) -> Result<ExitCode> {
    let (method, calibrated) = calibration(&args.calibration)?;
    if args.sparsity == Some(SparsityArg::Auto) {
        return auto(args, method, calibrated);
    }
    if args.max_evaluations.is_some() {
        bail!("--max-evaluations bounds the search of --sparsity auto; it has no effect here");
    }
    let (selection, config) = prune_config(&args)?;
    if args.dry_run && args.check {
        bail!("--dry-run writes nothing, so there is nothing for --check to check");
    }
    if args.dry_run && (args.output.is_some() || args.in_place) {
        let flag = if args.in_place { "--in-place" } else { "-o" };
        bail!("--dry-run writes nothing: drop {flag} or --dry-run");
    }
    let check_options = check_options_if(args.check, &args.check_flags)?;
    let progress = Bar::start();
    progress.phase("loading");
    let model = Model::load(&args.model)?;
    let destination = match &args.output {
        _ if args.dry_run => None,
        _ if args.in_place => Some(Destination::InPlace),
        Some(output) => Some(Destination::File(output)),
        None => None,
    };
    let mut files = Files::default();
    files.read_model(&model);
    if let Some(options) = &check_options {
        files.read_check_inputs(options);
        preflight_check(options)?;
        // Bad check input is refused before the output is written.
        onnx_prune_verify::validate(&model, options)?;
    }
    if let Some((_, options)) = &calibrated {
        for source in &options.inputs {
            files.read(source_path(source));
        }
    }
    if let Some(to) = destination {
        let flag = if args.in_place { "--in-place" } else { "-o" };
        files.write_model(flag, &model, to)?;
    }
    if let Some(report) = &args.rewrite.report {
        files.write("--report", report);
    }
    let mut outputs = files.check()?;
    let weights = discover_with(&model, args.min_params);
    let selected = select(&model, &weights, &selection)?;
    let mut notes = Vec::new();
    let plan = match &calibrated {
        None => {
            progress.phase("choosing what to zero");
            plan(&model, &selected, &config)?
        }
        Some((request, options)) => {
            progress.phase("reading calibration data");
            let calibration = Calibration::load(&model, options)?;
            notes.clone_from(&calibration.notes);
            progress.phase("calibrating through tract");
            plan_calibrated(&model, &selected, &config, request, |bytes, taps| {
                Ok::<_, anyhow::Error>(calibration.statistics(bytes, taps)?)
            })?
        }
    };
    for warning in &plan.warnings {
        progress.warn(warning);
    }
    progress.phase("writing");
    let storage = args.rewrite.storage.into();
    let written = match destination {
        Some(to) => Some(outputs.stage(&model, &plan.edits, to, storage)?),
        None => None,
    };
    progress.phase("measuring sizes");
    let mut report = RewriteReport::new(&model, plan.outcomes, written.as_ref())?;
    report.method = Some(method.name());
    print_notes(&notes);
    report.notes = notes;
    progress.phase("checking through tract");
    let checked = match (&check_options, &args.output, args.dry_run) {
        (Some(options), Some(output), false) => {
            Some(check_model(&args.model, &outputs.staged(output)?, options)?)
        }
        _ => None,
    };
    drop(progress);
    let json = args.rewrite.report.as_deref();
    finish_rewrite(outputs, &report, checked.as_ref(), (json, None))
}

/// Refuses flags that mean nothing with `--sparsity auto`.
fn refuse_with_auto(args: &PruneArgs) -> Result<()> {
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

/// `--sparsity auto`: each weight's sensitivity measured, the largest allocation that passes
/// the check searched, written and checked once more.
fn auto(
    args: PruneArgs,
    method: Method,
    calibrated: Option<(Calibrated, CalibrationOptions)>,
) -> Result<ExitCode> {
    refuse_with_auto(&args)?;
    let pattern = parse_pattern(&args.pattern)?;
    if pattern.fixed_sparsity().is_some() {
        bail!("--pattern {pattern} fixes the sparsity; --sparsity auto varies it");
    }
    let (options, metric) = search_check(&args.check_flags, "--sparsity auto")?;
    let max_evaluations = max_evaluations(args.max_evaluations)?;
    let output = args.output.as_deref().expect("refused without -o");
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
    let mut outputs = files.check()?;
    let selection = selection(
        &args.include,
        &args.exclude,
        &args.op_types,
        args.min_params,
    )?;
    let weights = discover_with(&model, args.min_params);
    let selected = select(&model, &weights, &selection)?;

    let progress = Bar::start();
    if calibrated.is_some() {
        progress.phase("calibrating through tract");
    }
    let planner = Planner::new(&model, calibrated, &selected)?;
    progress.phase("running the model through tract");
    let baseline = Baseline::load(&args.model, &options)?;
    print_notes(baseline.notes());
    let search = WeightSearch {
        planner: &planner,
        selected: &selected,
        pattern,
        storage: args.rewrite.storage.into(),
        metric,
        max_evaluations,
    };
    let outcome = search_weights(&search, &baseline, (&mut outputs, output), &progress)?;
    drop(progress);
    let searched = match outcome {
        Outcome::Passed(searched) => *searched,
        Outcome::NothingPassed(found) => return nothing_passed(*found),
    };
    print_notes(&searched.notes);
    let summary = searched.summary(("layers", "id"), selected.iter().map(|w| w.id.clone()));
    let headline = render_searched(&searched, "overall");
    let (plan, saved) = searched.written;
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    let mut report = RewriteReport::new(&model, plan.outcomes, Some(&saved))?;
    report.method = Some(method.name());
    stdout::print(headline)?;

    let json = args.rewrite.report.as_deref();
    finish_rewrite(
        outputs,
        &report,
        Some(&searched.check),
        (json, Some(summary)),
    )
}
