//! `shrink --sparsity auto`: measure each channel group's sensitivity (the group shrunk alone),
//! then search the cost threshold whose per-group allocation gives the largest overall
//! fraction of the groups' parameters removed that still passes the check's tolerances; write
//! that model and check it once more.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use onnx_prune_core::shrink::{self, ShrinkReport};
use onnx_prune_core::{write_file_atomic, Destination, Model};

use crate::args::{ShrinkArgs, ShrinkScopeArg};
use crate::budget_search::{budget, curves, nothing_passed, search, search_options, summary, GRID};
use crate::channel_sensitivity::{allocation, groups, measure};
use crate::check::{self, Baseline};
use crate::files::{preflight_check, Files};
use crate::progress::Progress;
use crate::shrink::{count_macs, regexes, render};
use crate::stdout;

/// Refuses flags that mean nothing with `--sparsity auto`.
fn validate(args: &ShrinkArgs) -> Result<()> {
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

pub fn run(args: ShrinkArgs) -> Result<ExitCode> {
    validate(&args)?;
    let (options, metric) = search_options(&args.check_flags)?;
    let budget = budget(args.max_evaluations)?;
    let output = args
        .output
        .as_deref()
        .context("--sparsity auto needs -o OUT")?;
    let round_to = args.round_to.unwrap_or(1);
    let model = Model::load(&args.model)?;
    let mut files = Files::default();
    files.read_model(&model).read_check_inputs(&options);
    preflight_check(&options)?;
    files.write_model("-o", &model, Destination::File(output))?;
    if let Some(report) = &args.report {
        files.write("--report", report);
    }
    files.check()?;
    let analysis = shrink::analyze(&model)?;
    let units = groups(
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

    let progress = Progress::start();
    progress.phase("running the model through tract");
    let baseline = Baseline::load(&args.model, &options)?;
    let reports = measure(&model, &analysis, (&units, &GRID), &baseline, &progress)?;
    let params: Vec<u64> = units.iter().map(|u| u.params).collect();
    let curves = curves(&params, &reports, metric);
    let removal = |sparsities: &[f64]| {
        shrink::choose(
            &model,
            &analysis,
            &allocation(&analysis, &units, sparsities, round_to),
        )
    };
    let found = search(
        &curves,
        budget,
        (&baseline, &progress),
        |sparsities, candidate| {
            shrink::save_shrunk(&model, &analysis, &removal(sparsities)?, &[], candidate)?;
            Ok(())
        },
    )?;
    drop(progress);
    let evaluations = found.evaluations;
    let Some(best) = found.best else {
        return nothing_passed(found);
    };
    let removed = removal(&best.sparsities)?;
    let (_, totals) = shrink::save_shrunk(&model, &analysis, &removed, &[], output)?;
    // The written model, checked once more: what ships is what was verified.
    let checked = baseline.check(output)?;
    let macs = count_macs(&model, output, &options.shapes)
        .map_err(|e| eprintln!("note: MACs not counted: {e:#}"))
        .ok();
    let report = ShrinkReport::new(&analysis, &removed, None, false, totals, macs);
    let summary = summary(
        metric,
        (&best, reports.len(), evaluations),
        ("groups", "producer"),
        units.iter().map(|u| u.name.clone()),
    );
    if let Some(path) = &args.report {
        let mut value = serde_json::to_value(&report)?;
        value["check"] = serde_json::to_value(&checked)?;
        value["auto"] = summary;
        write_file_atomic(path, &serde_json::to_vec_pretty(&value)?)?;
    }
    stdout::print(format!(
        "--sparsity auto: shares allocated for {:.2}% of the groups' parameters ({} sensitivity \
         runs, {evaluations} search checks, metric {})\n",
        100.0 * best.overall,
        reports.len(),
        metric.label()
    ))?;
    stdout::print(render(&analysis, &report, totals, macs))?;
    stdout::print(format!("\n{}", check::render(&checked)))?;
    Ok(check::exit_code(&checked))
}
