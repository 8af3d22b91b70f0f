//! `onnx-prune shrink`: flags to a validated request, then analyse, choose, write, report.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use onnx_prune_core::shrink::{
    self, Analysis, GraphEdit, RefitOutcome, Request, ShrinkReport, ShrinkScope, ShrinkTotals,
};
use onnx_prune_core::{write_file_atomic, Destination, Model};
use onnx_prune_verify::{Calibration, CalibrationOptions};
use regex::Regex;
use tempfile::TempDir;

use crate::args::{ShrinkArgs, ShrinkScopeArg, SparsityArg};
use crate::check;
use crate::files::{preflight_check, source_path, Files};
use crate::shrink_auto;
use crate::shrink_passes::{self, Passes};
use crate::stdout;
use crate::table::table;

/// Timed runs per model for the latency `--check` reports (after one warm-up run).
const LATENCY_RUNS: usize = 10;

pub fn regexes(patterns: &[String], flag: &str) -> Result<Vec<Regex>> {
    patterns
        .iter()
        .map(|p| Regex::new(p).with_context(|| format!("{flag} `{p}` is not a valid regex")))
        .collect()
}

/// The request the flags ask for; flags without effect are errors.
fn request(args: &ShrinkArgs) -> Result<Request> {
    if let Some(s) = args.fraction() {
        if !(0.0..1.0).contains(&s) {
            bail!("--sparsity must be in [0, 1), got {s}");
        }
    } else if args.scope.is_some() {
        bail!("--scope has no effect without --sparsity (dead channels are found per group)");
    }
    if args.fraction().is_none() && !args.calibration.is_empty() && args.drop_layers.is_none() {
        bail!("--calibration has no effect without --sparsity (dead channels need no data)");
    }
    if args.calibration.is_empty() && args.calibration_samples.is_some() {
        bail!("--calibration-samples has no effect without --calibration");
    }
    if args.calibration.is_empty() && args.no_refit {
        bail!("--no-refit has no effect without --calibration (only calibration data refits)");
    }
    if args.fraction().is_none() && args.no_refit {
        bail!("--no-refit has no effect without --sparsity (only removed channels are refitted)");
    }
    if args.calibration_samples == Some(0) {
        bail!("--calibration-samples must be at least 1");
    }
    if args.round_to == Some(0) {
        bail!("--round-to must be at least 1 (a channel count that is a multiple of 0 is empty)");
    }
    Ok(Request {
        sparsity: args.fraction(),
        scope: match args.scope {
            Some(ShrinkScopeArg::Global) => ShrinkScope::Global,
            _ => ShrinkScope::Group,
        },
        round_to: args.round_to.unwrap_or(1),
        include: regexes(&args.include, "--include")?,
        exclude: regexes(&args.exclude, "--exclude")?,
        activations: None,
        group_sparsity: None,
    })
}

pub fn run(args: ShrinkArgs) -> Result<ExitCode> {
    Passes::check_flags(&args)?;
    if args.sparsity == Some(SparsityArg::Auto) {
        return shrink_auto::run(args);
    }
    if args.max_evaluations.is_some() {
        bail!("--max-evaluations bounds the search of --sparsity auto; it has no effect here");
    }
    let mut request = request(&args)?;
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
    let check_options = check::options_if(args.check, &args.check_flags)?;
    let input = Model::load(&args.model)?;
    let mut files = Files::default();
    files.read_model(&input);
    if let Some(options) = &check_options {
        files.read_check_inputs(options);
        preflight_check(options)?;
        onnx_prune_verify::validate(&input, options)?;
    }
    if let Some(output) = &args.output {
        files.write_model("-o", &input, Destination::File(output))?;
    }
    if let Some(report) = &args.report {
        files.write("--report", report);
    }
    let passes = Passes::from_args(&args, &input, &mut files)?;
    let calibration_options = (!args.calibration.is_empty()).then(|| CalibrationOptions {
        inputs: args
            .calibration
            .iter()
            .map(|s| check::input_source(s))
            .collect(),
        samples: args.calibration_samples.unwrap_or(128),
        ..CalibrationOptions::default()
    });
    for source in calibration_options.iter().flat_map(|o| &o.inputs) {
        files.read(source_path(source));
    }
    let calibration = match &calibration_options {
        Some(options) => Some(Calibration::load(&input, options)?),
        None => None,
    };
    files.check()?;
    // The layer and vocabulary passes first; the channel pass (with --sparsity, or alone)
    // then shrinks what they wrote.
    let planned = if passes.is_empty() {
        None
    } else {
        Some(passes.plan(&input, calibration.as_ref())?)
    };
    let channels = planned.is_none() || args.fraction().is_some();
    let staged = match (&planned, &args.output) {
        (Some(planned), Some(_)) if channels => Some(stage(&input, &planned.edit)?),
        _ => None,
    };
    let model = staged.as_ref().map_or(&input, |(_, m)| m);
    let staged_calibration = match (&staged, &calibration_options) {
        (Some((_, staged)), Some(options)) => Some(Calibration::load(staged, options)?),
        _ => None,
    };
    let channel_calibration = staged_calibration.as_ref().or(calibration.as_ref());
    let mut channel_totals = None;
    let mut report = None;
    if channels {
        let analysis = shrink::analyze(model)?;
        if let Some(calibration) = channel_calibration {
            let taps = analysis.activation_taps();
            let norms = calibration.channel_sq_norms(model.bytes(), &taps)?;
            request.activations = Some(taps.into_iter().map(|(name, _)| name).zip(norms).collect());
        }
        let removed = match shrink::choose(model, &analysis, &request) {
            Ok(removed) => removed,
            Err(e) if args.dry_run => {
                stdout::print(analysis.describe())?;
                return Err(e.into());
            }
            Err(e) => bail!("{e}\n{}", analysis.describe().trim_end()),
        };
        let (edits, refits) = match (channel_calibration, &args.output) {
            (Some(calibration), Some(_)) if !args.no_refit => {
                shrink::refit(model, &analysis, &removed, |bytes, taps| {
                    Ok::<_, anyhow::Error>(calibration.statistics(bytes, taps)?)
                })?
            }
            _ => (Vec::new(), Vec::new()),
        };
        let totals = match &args.output {
            Some(output) => shrink::save_shrunk(model, &analysis, &removed, &edits, output)?.1,
            None => shrink::shrink_totals(model, &analysis, &removed)?,
        };
        if args.dry_run {
            stdout::print(analysis.describe())?;
        }
        let mut channel_report = ShrinkReport::new(
            &analysis,
            &removed,
            args.fraction(),
            calibration.is_some(),
            totals,
            None,
        );
        channel_report.refits = refits;
        channel_totals = Some(totals);
        report = Some((analysis, channel_report));
    } else if let (Some(planned), Some(output)) = (&planned, &args.output) {
        planned.edit.save(&input, output)?;
    }
    if let (Some(planned), true) = (&planned, args.dry_run) {
        stdout::print(planned.listing.trim_end())?;
    }
    let checked = match (&check_options, &args.output) {
        (Some(options), Some(output)) => Some(check::run_check(&args.model, output, options)?),
        _ => None,
    };
    let latency = match (&check_options, &args.output) {
        (Some(options), Some(output)) => {
            let time =
                |m: &Model| onnx_prune_verify::latency(m, m.bytes(), &options.shapes, LATENCY_RUNS);
            Some((time(&input)?, time(&Model::load(output)?)?))
        }
        _ => None,
    };
    let totals = match &planned {
        Some(planned) => shrink_passes::chained(planned.edit.totals(&input), channel_totals),
        None => channel_totals.expect("the channel pass ran"),
    };
    let given = check_options
        .as_ref()
        .map(|o| o.shapes.clone())
        .unwrap_or_default();
    let macs = match &args.output {
        Some(output) => match count_macs(&input, output, &given) {
            Ok(macs) => Some(macs),
            Err(e) => {
                eprintln!("note: MACs not counted: {e:#}");
                None
            }
        },
        None => None,
    };
    let mut value = match &report {
        Some((_, channel_report)) => serde_json::to_value(channel_report)?,
        None => serde_json::json!({"method": "none", "sparsity": null, "groups": []}),
    };
    value["totals"] = serde_json::json!({
        "params_before": totals.params_before,
        "params_after": totals.params_after,
        "macs_before": macs.map(|m| m.0),
        "macs_after": macs.map(|m| m.1),
    });
    if let Some(planned) = &planned {
        if let Some(layers) = &planned.layers {
            value["layers"] = serde_json::to_value(layers)?;
        }
        if let Some(vocabulary) = &planned.vocab {
            value["vocabulary"] = serde_json::to_value(vocabulary)?;
        }
    }
    if let Some(path) = &args.report {
        if let Some(checked) = &checked {
            value["check"] = serde_json::to_value(checked)?;
        }
        if let Some((before, after)) = latency {
            value["latency"] = serde_json::json!({
                "seconds_per_sample_before": before,
                "seconds_per_sample_after": after,
            });
        }
        write_file_atomic(path, &serde_json::to_vec_pretty(&value)?)?;
    }
    let mut out = String::new();
    if let Some(planned) = &planned {
        out.push_str(&planned.summary);
    }
    out.push_str(&match &report {
        Some((analysis, channel_report)) => render(analysis, channel_report, totals, macs),
        None => render_totals(totals, macs),
    });
    stdout::print(out)?;
    if let Some((before, after)) = latency {
        stdout::print(format!(
            "tract latency per sample: {:.3} ms -> {:.3} ms ({:.2}x)",
            before * 1e3,
            after * 1e3,
            before / after
        ))?;
    }
    Ok(match &checked {
        Some(checked) => {
            stdout::print(format!("\n{}", check::render(checked)))?;
            check::exit_code(checked)
        }
        None => ExitCode::SUCCESS,
    })
}

/// `model` with `edit` applied, written to a temporary directory (external data beside it)
/// and loaded, for the channel pass to shrink.
fn stage(model: &Model, edit: &GraphEdit) -> Result<(TempDir, Model)> {
    let dir = tempfile::tempdir().context("a temporary directory for the edited model")?;
    let name = model.path().file_name().unwrap_or("model.onnx".as_ref());
    let path = dir.path().join(name);
    edit.save(model, &path)?;
    let staged = Model::load(&path)?;
    Ok((dir, staged))
}

/// Multiply-accumulates of one inference of the input and of the shrunk model, at the input
/// shapes `given` (by `--shape`) or declared, from the shapes tract infers.
pub fn count_macs(
    model: &Model,
    output: &Path,
    given: &BTreeMap<String, Vec<usize>>,
) -> Result<(u64, u64)> {
    let count = |m: &Model| -> Result<u64> {
        let shapes = onnx_prune_verify::value_shapes(m, m.bytes(), &shrink::mac_values(m), given)?;
        shrink::macs(m, &shapes).context("a value's shape is unknown")
    };
    Ok((count(model)?, count(&Model::load(output)?)?))
}

/// The groups that changed, and the totals.
pub fn render(
    analysis: &Analysis,
    report: &ShrinkReport,
    totals: ShrinkTotals,
    macs: Option<(u64, u64)>,
) -> String {
    let rows: Vec<Vec<String>> = report
        .groups
        .iter()
        .filter(|g| !g.removed.is_empty())
        .map(|g| {
            let more = g.producers.len().saturating_sub(1);
            let name = analysis.groups[g.id].name().to_string();
            vec![
                g.id.to_string(),
                if more > 0 {
                    format!("{name} (+{more})")
                } else {
                    name
                },
                g.channels_before.to_string(),
                g.channels_after.to_string(),
            ]
        })
        .collect();
    let open = analysis.open().count();
    let mut out = if rows.is_empty() {
        "no channel removed\n".to_string()
    } else {
        table(
            &["group", "producer", "channels before", "after"],
            rows,
            &[0, 2, 3],
        ) + "\n"
    };
    if !report.refits.is_empty() {
        out.push('\n');
        out.push_str(&refit_table(&report.refits));
        out.push('\n');
    }
    out.push_str(&format!(
        "\n{} groups ({open} open, {} blocked); ",
        analysis.groups.len(),
        analysis.groups.len() - open,
    ));
    out.push_str(&render_totals(totals, macs));
    out
}

/// Parameters and MACs before and after.
fn render_totals(totals: ShrinkTotals, macs: Option<(u64, u64)>) -> String {
    let mut out = format!("params {} -> {}", totals.params_before, totals.params_after);
    if let Some((a, b)) = macs {
        out.push_str(&format!("; MACs {a} -> {b}"));
    }
    out
}

/// Per refitted consumer, its relative output error on the calibration data with the removed
/// inputs zeroed and after the least-squares refit.
fn refit_table(refits: &[RefitOutcome]) -> String {
    let percent = |e: Option<f64>| e.map_or("-".to_string(), |e| format!("{:.2}%", e * 100.0));
    let rows = refits
        .iter()
        .map(|r| {
            vec![
                r.weight.clone(),
                percent(r.output_error_before),
                percent(r.output_error_after),
                r.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["consumer weight", "output error zeroed", "refitted", "note"],
        rows,
        &[1, 2],
    )
}
