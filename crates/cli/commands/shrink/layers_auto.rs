//! `shrink --drop-layers auto`: layers ranked by block influence on the calibration data, the
//! 1, 2, ... least influential dropped while the check passes, the most that passed written
//! and checked once more (the search is the tune library's [`search_layers`]).

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use onnx_prune_core::shrink::layers::{self, LayersReport};
use onnx_prune_core::shrink::ShrinkReportTotals;
use onnx_prune_core::{Destination, Model};
use onnx_prune_tune::{search_layers, Baseline, LayerSearch, Progress};
use onnx_prune_verify::Calibration;

use super::{counted_macs, free_note, plan_passes};
use crate::args::ShrinkArgs;
use crate::files::{preflight_check, source_path, Files};
use crate::options::{max_evaluations, search_check, shrink_calibration, Passes};
use crate::outcome::{finish_check, stage_json};
use crate::progress::Bar;
use crate::render::{check_exit_code, print_notes, render_check, render_layers, render_totals};
use crate::stdout;

/// Refuses the flags that mean nothing to a layer search.
fn refuse(args: &ShrinkArgs) -> Result<()> {
    let conflicts = [
        (
            args.dry_run,
            "--dry-run (use --drop-layers 1 --dry-run to list the layers)",
        ),
        (!args.include.is_empty(), "--include"),
        (!args.exclude.is_empty(), "--exclude"),
        (args.round_to.is_some(), "--round-to"),
        (args.no_refit, "--no-refit"),
        (args.scope.is_some(), "--scope"),
    ];
    if let Some((_, flag)) = conflicts.iter().find(|(given, _)| *given) {
        bail!(
            "{flag} cannot be used with --drop-layers auto, which drops whole layers and checks \
             the written model against the input"
        );
    }
    Ok(())
}

pub fn run(args: ShrinkArgs) -> Result<ExitCode> {
    refuse(&args)?;
    let (options, metric) = search_check(&args.check_flags, "--drop-layers auto")?;
    let max_evaluations = max_evaluations(args.max_evaluations)?;
    let output = args
        .output
        .as_deref()
        .context("--drop-layers auto needs -o OUT")?;
    let input = Model::load(&args.model)?;
    let mut files = Files::default();
    files.read_model(&input).read_check_inputs(&options);
    preflight_check(&options)?;
    files.write_model("-o", &input, Destination::File(output))?;
    if let Some(report) = &args.report {
        files.write("--report", report);
    }
    let passes = Passes::from_args(&args, &input, &mut files)?;
    let calibration_options =
        shrink_calibration(&args).context("--drop-layers auto needs --calibration")?;
    for source in &calibration_options.inputs {
        files.read(source_path(source));
    }
    let mut outputs = files.check()?;
    // The vocabulary pass, when asked, is made in every candidate.
    let vocab = plan_passes(&passes, &input, None)?;
    let stream = layers::find(&input)?;
    let total = stream.layers.len();
    if total < 2 {
        bail!(
            "--drop-layers auto: a stream of at least two layers is needed\n{}",
            stream.describe().trim_end()
        );
    }

    let progress = Bar::start();
    progress.phase("measuring block influence through tract");
    let calibration = Calibration::load(&input, &calibration_options)?;
    print_notes(&calibration.notes);
    let influence = onnx_prune_verify::block_influence(
        &calibration,
        input.bytes(),
        &stream.influence_values(),
    )?;
    progress.phase("running the model through tract");
    let baseline = Baseline::load(&args.model, &options)?;
    print_notes(baseline.notes());
    let search = LayerSearch {
        model: &input,
        stream: &stream,
        influence: &influence[..total],
        base: &vocab.edit,
        metric,
        max_evaluations,
    };
    let found = search_layers(&search, &baseline, (&mut outputs, output), &progress)?;
    drop(progress);
    print_notes(&found.notes);
    let Some((removed, edit, notes, check)) = found.best else {
        let failure = found.failure.context("no layer set was tried")?;
        stdout::print(format!(
            "no layer can go: dropping the least influential ({}) gives\n\n{}",
            found.tried.first().map_or(0, |t| t.removed[0]),
            render_check(&failure)
        ))?;
        return Ok(check_exit_code(&failure));
    };

    let layers = LayersReport::new(&stream, &influence, &removed, notes);
    let totals = edit.totals(&input)?;
    let macs = counted_macs(&input, &outputs.staged(output)?, &options.shapes);
    let totals = ShrinkReportTotals {
        params_before: totals.params_before,
        params_after: totals.params_after,
        macs_before: macs.as_ref().map(|m| m.before),
        macs_after: macs.as_ref().map(|m| m.after),
        bytes_before: totals.bytes_before,
        bytes_after: totals.bytes_after,
    };
    let free = macs.map(|m| m.free_inputs).unwrap_or_default();
    let search_line = format!(
        "--drop-layers auto: {} of {total} layers dropped ({} checks, metric {})\n",
        removed.len(),
        found.tried.len(),
        metric.label()
    );
    if let Some(path) = &args.report {
        let mut value = serde_json::json!({
            "method": "none",
            "sparsity": null,
            "groups": [],
            "totals": totals,
            "layers": layers,
            "check": check,
            "auto": {
                "metric": metric,
                "layers_removed": removed.len(),
                "search_checks": found.tried.len(),
                "tried": found.tried,
                "notes": found.notes,
            },
        });
        if let Some(note) = free_note(&free) {
            value["notes"] = serde_json::json!([note]);
        }
        if let Some(vocabulary) = &vocab.vocab {
            value["vocabulary"] = serde_json::to_value(vocabulary)?;
        }
        stage_json(&mut outputs, path, &value)?;
    }
    outputs.commit()?;
    stdout::print(format!(
        "{}{}{search_line}{}",
        vocab.summary,
        render_layers(&stream, &layers),
        render_totals(&totals, &free)
    ))?;
    finish_check(Some(&check))
}
