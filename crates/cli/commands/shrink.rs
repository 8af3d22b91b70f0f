//! `onnx-prune shrink`: flags to a request, then analyse, choose, refit, write, check and
//! report; with `--sparsity auto`, the budget search of the tune library instead.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use onnx_prune_core::shrink::{self, ShrinkReport};
use onnx_prune_core::{Destination, Model};
use onnx_prune_tune::{
    group_units, macs_before_after, search_groups, Baseline, GroupSearch, Outcome, Progress,
};
use onnx_prune_verify::Calibration;

use crate::args::{ShrinkArgs, ShrinkScopeArg, SparsityArg};
use crate::files::{preflight_check, source_path, Files};
use crate::options::{
    check_options_if, max_evaluations, regexes, search_check, shrink_calibration, shrink_request,
};
use crate::outcome::{check_model, finish_check, nothing_passed, stage_json};
use crate::progress::Bar;
use crate::render::{print_notes, render_shrink};
use crate::stdout;

/// Timed runs per model for the latency `--check` reports (after one warm-up run).
const LATENCY_RUNS: usize = 10;

pub fn run(args: ShrinkArgs) -> Result<ExitCode> {
    if args.sparsity == Some(SparsityArg::Auto) {
        return auto(args);
    }
    if args.max_evaluations.is_some() {
        bail!("--max-evaluations bounds the search of --sparsity auto; it has no effect here");
    }
    let mut request = shrink_request(&args)?;
    match (&args.output, args.dry_run) {
        (None, false) => {
            bail!("give the output with -o FILE (or --dry-run to only list the groups)")
        }
        (Some(_), true) => bail!("--dry-run writes nothing: drop -o or --dry-run"),
        _ => {}
    }
    if args.dry_run && args.check {
        bail!("--dry-run writes nothing, so there is nothing for --check to check");
    }
    let check_options = check_options_if(args.check, &args.check_flags)?;
    let model = Model::load(&args.model)?;
    let mut files = Files::default();
    files.read_model(&model);
    if let Some(options) = &check_options {
        files.read_check_inputs(options);
        preflight_check(options)?;
        onnx_prune_verify::validate(&model, options)?;
    }
    if let Some(output) = &args.output {
        files.write_model("-o", &model, Destination::File(output))?;
    }
    if let Some(report) = &args.report {
        files.write("--report", report);
    }
    let calibration = match shrink_calibration(&args) {
        Some(options) => {
            for source in &options.inputs {
                files.read(source_path(source));
            }
            Some(Calibration::load(&model, &options)?)
        }
        None => None,
    };
    let mut outputs = files.check()?;
    let analysis = shrink::analyze(&model)?;
    if let Some(calibration) = &calibration {
        let taps = analysis.activation_taps();
        let norms = calibration.channel_sq_norms(model.bytes(), &taps)?;
        request.activations = Some(taps.into_iter().map(|(name, _)| name).zip(norms).collect());
    }
    let removed = match shrink::choose(&model, &analysis, &request) {
        Ok(removed) => removed,
        Err(e) if args.dry_run => {
            stdout::print(analysis.describe())?;
            return Err(e.into());
        }
        Err(e) => bail!("{e}\n{}", analysis.describe().trim_end()),
    };
    let (edits, refits) = match (&calibration, &args.output) {
        (Some(calibration), Some(_)) if !args.no_refit => {
            shrink::refit(&model, &analysis, &removed, |bytes, taps| {
                Ok::<_, anyhow::Error>(calibration.statistics(bytes, taps)?)
            })?
        }
        _ => (Vec::new(), Vec::new()),
    };
    let staged = match &args.output {
        Some(output) => {
            let removal = (&analysis, removed.as_slice());
            let (_, totals) = shrink::stage_shrunk(&mut outputs, &model, removal, &edits, output)?;
            Some((outputs.staged(output)?, totals))
        }
        None => None,
    };
    if args.dry_run {
        stdout::print(analysis.describe())?;
    }
    let checked = match (&check_options, &staged) {
        (Some(options), Some((shrunk, _))) => Some(check_model(&args.model, shrunk, options)?),
        _ => None,
    };
    let latency = match (&check_options, &staged) {
        (Some(options), Some((shrunk, _))) => {
            let time =
                |m: &Model| onnx_prune_verify::latency(m, m.bytes(), &options.shapes, LATENCY_RUNS);
            Some((time(&model)?, time(shrunk)?))
        }
        _ => None,
    };
    let given = check_options
        .as_ref()
        .map(|o| o.shapes.clone())
        .unwrap_or_default();
    let (totals, macs) = match staged {
        Some((shrunk, totals)) => (totals, counted_macs(&model, &shrunk, &given)),
        None => (shrink::shrink_totals(&model, &analysis, &removed)?, None),
    };
    let mut report = ShrinkReport::new(
        &analysis,
        &removed,
        args.fraction(),
        calibration.is_some(),
        totals,
        macs,
    );
    report.refits = refits;
    if let Some(path) = &args.report {
        let mut value = serde_json::to_value(&report)?;
        if let Some(checked) = &checked {
            value["check"] = serde_json::to_value(checked)?;
        }
        if let Some((before, after)) = latency {
            value["latency"] = serde_json::json!({
                "seconds_per_sample_before": before,
                "seconds_per_sample_after": after,
            });
        }
        stage_json(&mut outputs, path, &value)?;
    }
    outputs.commit()?;
    stdout::print(render_shrink(&analysis, &report))?;
    if let Some((before, after)) = latency {
        stdout::print(format!(
            "tract latency per sample: {:.3} ms -> {:.3} ms ({:.2}x)",
            before * 1e3,
            after * 1e3,
            before / after
        ))?;
    }
    finish_check(checked.as_ref())
}

/// MACs before and after, or `None` with a note saying why they were not counted.
fn counted_macs(
    model: &Model,
    output: &Model,
    given: &BTreeMap<String, Vec<usize>>,
) -> Option<(u64, u64)> {
    macs_before_after(model, output, given)
        .map_err(|e| eprintln!("note: MACs not counted: {:#}", anyhow::Error::from(e)))
        .ok()
}

/// Refuses flags that mean nothing with `--sparsity auto`.
fn refuse_with_auto(args: &ShrinkArgs) -> Result<()> {
    let conflicts = [
        (args.dry_run, "--dry-run"),
        (
            matches!(args.scope, Some(ShrinkScopeArg::Global)),
            "--scope global",
        ),
        (!args.calibration.is_empty(), "--calibration"),
        (args.no_refit, "--no-refit"),
    ];
    if let Some((_, flag)) = conflicts.iter().find(|(given, _)| *given) {
        bail!(
            "{flag} cannot be used with --sparsity auto, which chooses each group's share from \
             its sensitivity curve and checks the written model against the input"
        );
    }
    if args.round_to == Some(0) {
        bail!("--round-to must be at least 1 (a channel count that is a multiple of 0 is empty)");
    }
    Ok(())
}

/// `--sparsity auto`: each channel group's sensitivity measured (the group shrunk alone), the
/// largest allocation that passes the check searched, written and checked once more.
fn auto(args: ShrinkArgs) -> Result<ExitCode> {
    refuse_with_auto(&args)?;
    let (options, metric) = search_check(&args.check_flags)?;
    let max_evaluations = max_evaluations(args.max_evaluations)?;
    let output = args
        .output
        .as_deref()
        .context("--sparsity auto needs -o OUT")?;
    let model = Model::load(&args.model)?;
    let mut files = Files::default();
    files.read_model(&model).read_check_inputs(&options);
    preflight_check(&options)?;
    files.write_model("-o", &model, Destination::File(output))?;
    if let Some(report) = &args.report {
        files.write("--report", report);
    }
    let mut outputs = files.check()?;
    let analysis = shrink::analyze(&model)?;
    let units = group_units(
        &model,
        &analysis,
        &regexes(&args.include, "--include")?,
        &regexes(&args.exclude, "--exclude")?,
    )?;
    if units.is_empty() {
        bail!(
            "no open channel group with more than one channel is selected\n{}",
            analysis.describe().trim_end()
        );
    }

    let progress = Bar::start();
    progress.phase("running the model through tract");
    let baseline = Baseline::load(&args.model, &options)?;
    print_notes(baseline.notes());
    let search = GroupSearch {
        model: &model,
        analysis: &analysis,
        units: &units,
        round_to: args.round_to.unwrap_or(1),
        metric,
        max_evaluations,
    };
    let outcome = search_groups(&search, &baseline, (&mut outputs, output), &progress)?;
    drop(progress);
    let searched = match outcome {
        Outcome::Passed(searched) => *searched,
        Outcome::NothingPassed(found) => return nothing_passed(*found),
    };
    let summary = searched.summary(("groups", "producer"), units.iter().map(|u| u.name.clone()));
    let (removed, totals) = &searched.written;
    let macs = counted_macs(&model, &outputs.staged(output)?, &options.shapes);
    let report = ShrinkReport::new(&analysis, removed, None, false, *totals, macs);
    if let Some(path) = &args.report {
        let mut value = serde_json::to_value(&report)?;
        value["check"] = serde_json::to_value(&searched.check)?;
        value["auto"] = summary;
        stage_json(&mut outputs, path, &value)?;
    }
    outputs.commit()?;
    stdout::print(format!(
        "--sparsity auto: shares allocated for {:.2}% of the groups' parameters ({} sensitivity \
         runs, {} search checks, metric {})\n",
        100.0 * searched.best.overall,
        searched.sensitivity_runs,
        searched.evaluations,
        metric.label()
    ))?;
    stdout::print(render_shrink(&analysis, &report))?;
    finish_check(Some(&searched.check))
}
