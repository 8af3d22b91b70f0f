//! `onnx-prune shrink`: flags to a request, then the layer and vocabulary passes (with
//! `--drop-layers`, `--vocab`), then analyse, choose, refit, write, check and report; with
//! `--sparsity auto`, the budget search of the tune library instead; with `--drop-layers
//! auto`, the layer search ([`layers_auto`]).

mod layers_auto;

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use onnx_prune_core::shrink::layers::{self, LayersReport};
use onnx_prune_core::shrink::vocab::{self, VocabReport};
use onnx_prune_core::shrink::{self, GraphEdit, ShrinkReport, ShrinkReportTotals};
use onnx_prune_core::{Destination, Model};
use onnx_prune_tune::{
    free_inputs, group_units, macs_before_after, search_groups, Baseline, ChannelCalibration,
    GroupSearch, MacCount, Outcome, Progress,
};
use onnx_prune_verify::Calibration;
use tempfile::TempDir;

use crate::args::{DropLayersArg, ShrinkArgs, ShrinkScopeArg, SparsityArg};
use crate::files::{preflight_check, source_path, Files};
use crate::options::{
    check_calibration_flags, check_options_if, max_evaluations, regexes, search_check, shapes,
    shrink_calibration, shrink_interface, shrink_request, Passes,
};
use crate::outcome::{check_model, finish_check, nothing_passed, stage_json};
use crate::progress::Bar;
use crate::render::{
    print_notes, quoted_list, render_layers, render_searched, render_shrink, render_totals,
    render_vocab,
};
use crate::stdout;

/// Timed runs per model for the latency `--check` reports (after one warm-up run).
const LATENCY_RUNS: usize = 10;

pub fn run(args: ShrinkArgs) -> Result<ExitCode> {
    Passes::check_flags(&args)?;
    let interface = shrink_interface(&args)?;
    if args.sparsity == Some(SparsityArg::Auto) {
        return auto(args);
    }
    if args.drop_layers == Some(DropLayersArg::Auto) {
        return layers_auto::run(args);
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
    // --shape also sets the input shapes MACs are counted at, without --check.
    let mac_shapes = shapes(&args.check_flags.samples.shapes)?;
    let mut check_flags = args.check_flags.clone();
    if !args.check {
        check_flags.samples.shapes.clear();
    }
    let check_options = check_options_if(args.check, &check_flags)?;
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
    let calibration_options = shrink_calibration(&args);
    let calibration = match &calibration_options {
        Some(options) => {
            for source in &options.inputs {
                files.read(source_path(source));
            }
            Some(Calibration::load(&input, options)?)
        }
        None => None,
    };
    let mut outputs = files.check()?;
    // The layer and vocabulary passes first; the channel pass (with --sparsity, or alone) then
    // shrinks what they wrote.
    let planned = if passes.is_empty() {
        None
    } else {
        Some(plan_passes(&passes, &input, calibration.as_ref())?)
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
    let calibration = staged_calibration.as_ref().or(calibration.as_ref());
    let mut channel_pass = None;
    if channels {
        let analysis = shrink::analyze_with(model, interface)?;
        if let Some(calibration) = calibration {
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
        let nothing_removed = request.round_to > 1 && removed.iter().all(Vec::is_empty);
        if let Some(s) = args.fraction().filter(|&s| s > 0.0 && nothing_removed) {
            bail!(
                "--round-to {} keeps every channel of every selected group at --sparsity {s}: \
                 nothing would be removed (try a smaller --round-to)",
                request.round_to
            );
        }
        let (edits, refits) = match (calibration, &args.output) {
            (Some(calibration), Some(_)) if !args.no_refit => {
                shrink::refit(model, &analysis, &removed, |bytes, taps| {
                    Ok::<_, anyhow::Error>(calibration.statistics(bytes, taps)?)
                })?
            }
            _ => (Vec::new(), Vec::new()),
        };
        let totals = match &args.output {
            Some(output) => {
                let removal = (&analysis, removed.as_slice());
                shrink::stage_shrunk(&mut outputs, model, removal, &edits, output)?.1
            }
            None => shrink::shrink_totals(model, &analysis, &removed)?,
        };
        if args.dry_run {
            stdout::print(analysis.describe())?;
        }
        let mut report = ShrinkReport::new(
            &analysis,
            &removed,
            args.fraction(),
            calibration.is_some(),
            totals,
            None,
        );
        report.refits = refits;
        if let Some(calibration) = calibration {
            print_notes(&calibration.notes);
            report.notes.clone_from(&calibration.notes);
        }
        channel_pass = Some((analysis, report));
    } else if let (Some(planned), Some(output)) = (&planned, &args.output) {
        planned.edit.stage(&mut outputs, &input, output)?;
    }
    if let (Some(planned), true) = (&planned, args.dry_run) {
        stdout::print(planned.listing.trim_end())?;
    }
    let written = match &args.output {
        Some(output) => Some(outputs.staged(output)?),
        None => None,
    };
    let checked = match (&check_options, &written) {
        (Some(options), Some(shrunk)) => Some(check_model(&args.model, shrunk, options)?),
        _ => None,
    };
    let latency = match (&check_options, &written) {
        (Some(options), Some(shrunk)) => {
            let time =
                |m: &Model| onnx_prune_verify::latency(m, m.bytes(), &options.shapes, LATENCY_RUNS);
            Some((time(&input)?, time(shrunk)?))
        }
        _ => None,
    };
    let given = check_options
        .as_ref()
        .map_or(mac_shapes, |o| o.shapes.clone());
    let macs = written
        .as_ref()
        .and_then(|shrunk| counted_macs(&input, shrunk, &given));
    // Totals from the input to what was written: before the first pass, after the last.
    let first = match &planned {
        Some(planned) => Some(planned.edit.totals(&input)?),
        None => None,
    };
    let ((params_before, bytes_before), (params_after, bytes_after)) = match (&first, &channel_pass)
    {
        (Some(first), Some((_, report))) => (
            (first.params_before, first.bytes_before),
            (report.totals.params_after, report.totals.bytes_after),
        ),
        (Some(t), None) => (
            (t.params_before, t.bytes_before),
            (t.params_after, t.bytes_after),
        ),
        (None, Some((_, report))) => {
            let t = &report.totals;
            (
                (t.params_before, t.bytes_before),
                (t.params_after, t.bytes_after),
            )
        }
        (None, None) => unreachable!("the channel pass runs without the other passes"),
    };
    let totals = ShrinkReportTotals {
        params_before,
        params_after,
        macs_before: macs.as_ref().map(|m| m.before),
        macs_after: macs.as_ref().map(|m| m.after),
        bytes_before,
        bytes_after,
    };
    let free = macs.map(|m| m.free_inputs).unwrap_or_default();
    let macs_note = free_note(&free);
    if let Some((_, report)) = &mut channel_pass {
        report.totals = totals;
        report.notes.extend(macs_note.clone());
    }
    let mut value = match &channel_pass {
        Some((_, report)) => serde_json::to_value(report)?,
        None => {
            let mut value = serde_json::json!({"method": "none", "sparsity": null, "groups": [], "totals": totals});
            if let Some(note) = &macs_note {
                value["notes"] = serde_json::json!([note]);
            }
            value
        }
    };
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
        stage_json(&mut outputs, path, &value)?;
    }
    outputs.commit()?;
    let mut out = planned
        .as_ref()
        .map(|p| p.summary.clone())
        .unwrap_or_default();
    out.push_str(&match &channel_pass {
        Some((analysis, report)) => render_shrink(analysis, report, &free),
        None => render_totals(&totals, &free),
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
    finish_check(checked.as_ref())
}

/// What the layer and vocabulary passes do to a model.
struct Planned {
    /// Their edit, merged.
    edit: GraphEdit,
    /// With --drop-layers.
    layers: Option<LayersReport>,
    /// With --vocab.
    vocab: Option<VocabReport>,
    /// What was found: the residual stream, the embedding tables (--dry-run prints it).
    listing: String,
    /// What goes: every layer's influence, the vocabulary's rows.
    summary: String,
}

/// The layer and vocabulary passes' edit of `model`, with `calibration` to rank layers.
fn plan_passes(
    passes: &Passes,
    model: &Model,
    calibration: Option<&Calibration>,
) -> Result<Planned> {
    let mut planned = Planned {
        edit: GraphEdit::default(),
        layers: None,
        vocab: None,
        listing: String::new(),
        summary: String::new(),
    };
    if let Some(count) = passes.drop_layers {
        let stream = layers::find(model)?;
        planned.listing.push_str(&stream.describe());
        let total = stream.layers.len();
        if total == 0 {
            bail!("--drop-layers: {}", stream.describe().trim_end());
        }
        if count >= total {
            bail!(
                "--drop-layers {count}: the residual stream has {total} layers, so at most {} can go\n{}",
                total - 1,
                stream.describe().trim_end()
            );
        }
        let calibration = calibration.context("--drop-layers needs --calibration")?;
        let influence = onnx_prune_verify::block_influence(
            calibration,
            model.bytes(),
            &stream.influence_values(),
        )?;
        let removed = layers::least_influential(&influence[..total], count);
        let (edit, notes) = layers::drop_layers(model, &stream, &removed)?;
        planned.edit.merge(edit)?;
        let report = LayersReport::new(&stream, &influence, &removed, notes);
        planned.summary.push_str(&render_layers(&stream, &report));
        planned.layers = Some(report);
    }
    if let Some(flags) = &passes.vocab {
        let found = vocab::embeddings(model)?;
        planned.listing.push_str(&vocab::describe(&found));
        let embedding = vocab::select(&found, flags.input.as_deref())
            .map_err(|e| anyhow::anyhow!("--vocab: {e}"))?;
        let (edit, report) = vocab::keep_rows(model, embedding, &flags.request)?;
        planned.edit.merge(edit)?;
        planned.summary.push_str(&render_vocab(&report));
        planned.vocab = Some(report);
    }
    Ok(planned)
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

/// MACs before and after, or `None` with a note saying why they were not counted and, where
/// free dimensions were set to 1, the `--shape` that counts them at the shapes deployed.
fn counted_macs(
    model: &Model,
    output: &Model,
    given: &BTreeMap<String, Vec<usize>>,
) -> Option<MacCount> {
    macs_before_after(model, output, given)
        .map_err(|e| {
            let free = free_inputs(model, given);
            let hint = match free_note(&free) {
                Some(note) => format!("\nnote: {note}"),
                None => String::new(),
            };
            eprintln!("note: MACs not counted: {:#}{hint}", anyhow::Error::from(e));
        })
        .ok()
}

/// What to say when MACs are counted (or tried) with the free dimensions of inputs `free` set
/// to 1: the `--shape` flags that set them.
fn free_note(free: &[String]) -> Option<String> {
    if free.is_empty() {
        return None;
    }
    let flags: Vec<String> = free
        .iter()
        .map(|n| format!("--shape {n}=D,D,..."))
        .collect();
    Some(format!(
        "MACs are counted with the free dimensions of {} set to 1; give the shapes you deploy \
         with {}",
        quoted_list(free),
        flags.join(" ")
    ))
}

/// Refuses flags that mean nothing with `--sparsity auto`.
fn refuse_with_auto(args: &ShrinkArgs) -> Result<()> {
    let conflicts = [
        (args.dry_run, "--dry-run"),
        (
            matches!(args.scope, Some(ShrinkScopeArg::Global)),
            "--scope global",
        ),
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
    check_calibration_flags(args)
}

/// `--sparsity auto`: each channel group's sensitivity measured (the group shrunk alone), the
/// largest allocation that passes the check searched, written and checked once more.
fn auto(args: ShrinkArgs) -> Result<ExitCode> {
    refuse_with_auto(&args)?;
    let (options, metric) = search_check(&args.check_flags, "--sparsity auto")?;
    let max_evaluations = max_evaluations(args.max_evaluations)?;
    let output = args
        .output
        .as_deref()
        .context("--sparsity auto needs -o OUT")?;
    let model = Model::load(&args.model)?;
    let mut files = Files::default();
    files.read_model(&model).read_check_inputs(&options);
    preflight_check(&options)?;
    let calibration_options = shrink_calibration(&args);
    for source in calibration_options.iter().flat_map(|o| &o.inputs) {
        files.read(source_path(source));
    }
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
    let calibration = match &calibration_options {
        Some(options) => {
            progress.phase("calibrating through tract");
            let refit = (options, !args.no_refit);
            let gathered = ChannelCalibration::gather(&model, &analysis, &units, refit)?;
            print_notes(&gathered.notes);
            Some(gathered)
        }
        None => None,
    };
    progress.phase("running the model through tract");
    let baseline = Baseline::load(&args.model, &options)?;
    print_notes(baseline.notes());
    let search = GroupSearch {
        model: &model,
        analysis: &analysis,
        units: &units,
        round_to: args.round_to.unwrap_or(1),
        calibration: calibration.as_ref(),
        metric,
        max_evaluations,
    };
    let outcome = search_groups(&search, &baseline, (&mut outputs, output), &progress)?;
    drop(progress);
    let searched = match outcome {
        Outcome::Passed(searched) => *searched,
        Outcome::NothingPassed(found) => return nothing_passed(*found),
    };
    print_notes(&searched.notes);
    let summary = searched.summary(("groups", "producer"), units.iter().map(|u| u.name.clone()));
    let (shrunk, totals) = &searched.written;
    let macs = counted_macs(&model, &outputs.staged(output)?, &options.shapes);
    let counted = macs.as_ref().map(|m| (m.before, m.after));
    let calibrated = calibration.is_some();
    let mut report = ShrinkReport::new(
        &analysis,
        &shrunk.removed,
        None,
        calibrated,
        *totals,
        counted,
    );
    report.method = if calibrated { "activation" } else { "group-l2" };
    report.refits.clone_from(&shrunk.refits);
    if let Some(calibration) = &calibration {
        report.notes.clone_from(&calibration.notes);
    }
    let free = macs.map(|m| m.free_inputs).unwrap_or_default();
    report.notes.extend(free_note(&free));
    if let Some(path) = &args.report {
        let mut value = serde_json::to_value(&report)?;
        value["check"] = serde_json::to_value(&searched.check)?;
        value["auto"] = summary;
        stage_json(&mut outputs, path, &value)?;
    }
    outputs.commit()?;
    stdout::print(render_searched(
        &searched,
        "shares allocated for the groups' parameters,",
    ))?;

    stdout::print(render_shrink(&analysis, &report, &free))?;
    finish_check(Some(&searched.check))
}
