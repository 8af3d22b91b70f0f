//! `onnx-prune sensitivity`: each weight pruned alone (or each channel or head group shrunk
//! alone) at each sparsity, or each layer dropped alone, and checked against the dense model,
//! as a table, JSON and a plot.

use std::process::ExitCode;

use anyhow::{bail, Result};
use onnx_prune_core::model::discover_with;
use onnx_prune_core::prune::{select, Pattern};
use onnx_prune_core::shrink::{self, layers};
use onnx_prune_core::{Model, DEFAULT_MIN_PARAMS};
use onnx_prune_tune::{
    group_units, layer_units, measure_groups, measure_layers, measure_weights, Baseline,
    ChannelCalibration, Planner, Progress, Sensitivity, Structure,
};

use crate::args::{MethodArg, SensitivityArgs, StructureArg, DEFAULT_SPARSITIES};
use crate::files::{preflight_check, source_path, Files};
use crate::options::{
    calibration, parse_pattern, parse_sparsities, regexes, sample_options, selection,
};
use crate::outcome::stage_json;
use crate::progress::Bar;
use crate::render::{print_notes, render_sensitivity, sensitivity_svg};
use crate::stdout;

pub fn run(args: SensitivityArgs) -> Result<ExitCode> {
    if args.structure == StructureArg::Layers {
        return run_layers(args);
    }
    let sparsities = parse_sparsities(&args.sparsities)?;
    let options = sample_options(&args.samples)?;
    let heads = args.structure == StructureArg::Heads;
    let channels = heads || args.structure == StructureArg::Channels;
    let pattern = parse_pattern(&args.pattern)?;
    if channels {
        let flags = &args.calibration;
        let defaults = (
            pattern == Pattern::Unstructured,
            args.min_params == DEFAULT_MIN_PARAMS,
            flags.method == MethodArg::Magnitude,
            flags.calibration_order.is_none() && !flags.correct_bias,
        );
        for (default, flag) in [
            (defaults.0, "--pattern"),
            (defaults.1, "--min-params"),
            (defaults.2, "--method"),
            (defaults.3, "--calibration-order and --correct-bias"),
        ] {
            if !default {
                bail!("{flag}: no effect with --structure channels or heads, which remove whole channels or heads by group L2 norm (with --calibration: by activations, refitting their consumers)");
            }
        }
    } else if pattern.fixed_sparsity().is_some() {
        bail!("--pattern {pattern} fixes the sparsity; sensitivity varies it: use unstructured or block:RxC");
    }
    let (method, calibrated) = calibration(&args.calibration)?;
    let method = match channels {
        true if calibrated.is_some() => "activation",
        true => "group_l2",
        false => method.name(),
    };
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
    let outputs = files.check()?;

    let progress = Bar::start();
    let (units, reports) = if channels {
        let analysis = shrink::analyze(&model)?;
        let mut units = group_units(
            &model,
            &analysis,
            &regexes(&args.include, "--include")?,
            &regexes(&args.exclude, "--exclude")?,
        )?;
        if heads {
            // A head group's channels go in runs of a head's columns.
            units.retain(|u| analysis.groups[u.group].block > 1);
        }
        if units.is_empty() {
            let what = match heads {
                true => "attention head group with more than one head",
                false => "channel group with more than one channel",
            };
            bail!(
                "no open {what} is selected (see `onnx-prune shrink --dry-run` for the groups \
                 and what blocks them)"
            );
        }
        let calibration = match &calibrated {
            Some((_, options)) => {
                progress.phase("calibrating through tract");
                let gathered =
                    ChannelCalibration::gather(&model, &analysis, &units, (options, true))?;
                print_notes(&gathered.notes);
                Some(gathered)
            }
            None => None,
        };
        progress.phase("running the model through tract");
        let baseline = Baseline::load(&args.model, &options)?;
        print_notes(baseline.notes());
        let reports = measure_groups(
            (&model, &analysis, calibration.as_ref()),
            (&units, &sparsities),
            &baseline,
            &progress,
        )?;
        let units: Vec<(String, u64)> = units.into_iter().map(|u| (u.name, u.params)).collect();
        (units, reports)
    } else {
        let selection = selection(&args.include, &args.exclude, &[], args.min_params)?;
        let weights = discover_with(&model, args.min_params);
        let selected = select(&model, &weights, &selection)?;
        if calibrated.is_some() {
            progress.phase("calibrating through tract");
        }
        let planner = Planner::new(&model, calibrated, &selected)?;
        progress.phase("running the model through tract");
        let baseline = Baseline::load(&args.model, &options)?;
        print_notes(baseline.notes());
        let reports = measure_weights(
            &planner,
            &baseline,
            (&selected, &sparsities, pattern),
            &progress,
        )?;
        let units = selected
            .iter()
            .map(|w| (w.id.clone(), model.tensors()[w.tensor].elements))
            .collect();
        (units, reports)
    };
    drop(progress);
    let how = match (channels, heads) {
        (true, true) => (Structure::Heads, method, None),
        (true, false) => (Structure::Channels, method, None),
        _ => (Structure::Weights, method, Some(pattern.to_string())),
    };
    let result = Sensitivity::from_reports(how, units, sparsities, &reports);
    finish(&args, outputs, &result)
}

/// Writes the report and the plot `args` ask for and prints the table.
fn finish(
    args: &SensitivityArgs,
    mut outputs: onnx_prune_core::write::Outputs,
    result: &Sensitivity,
) -> Result<ExitCode> {
    if let Some(path) = &args.report {
        stage_json(&mut outputs, path, result)?;
    }
    if let Some(path) = &args.plot {
        outputs.stage_file("--plot", path, sensitivity_svg(result)?.as_bytes())?;
    }
    outputs.commit()?;
    stdout::print(render_sensitivity(result))?;
    Ok(ExitCode::SUCCESS)
}

/// The flags with no effect on `--structure layers`, each with whether it was given.
fn ignored_by_layers(args: &SensitivityArgs) -> [(bool, &'static str); 7] {
    let flags = &args.calibration;
    [
        (
            args.plot.is_some(),
            "--plot (one column: the table says it all)",
        ),
        (args.sparsities != DEFAULT_SPARSITIES, "--sparsities"),
        (args.pattern != "unstructured", "--pattern"),
        (args.min_params != DEFAULT_MIN_PARAMS, "--min-params"),
        (
            !args.include.is_empty() || !args.exclude.is_empty(),
            "--include and --exclude",
        ),
        (flags.method != MethodArg::Magnitude, "--method"),
        (
            !flags.calibration.is_empty()
                || flags.calibration_order.is_some()
                || flags.correct_bias,
            "--calibration",
        ),
    ]
}

/// `--structure layers`: each layer of the residual stream dropped alone and checked.
fn run_layers(args: SensitivityArgs) -> Result<ExitCode> {
    if let Some((_, flag)) = ignored_by_layers(&args).iter().find(|(given, _)| *given) {
        bail!(
            "{flag}: no effect with --structure layers, which drops each whole layer alone \
             (one column, 100%)"
        );
    }
    let options = sample_options(&args.samples)?;
    let model = Model::load(&args.model)?;
    let mut files = Files::default();
    files.read_model(&model).read_check_inputs(&options);
    preflight_check(&options)?;
    if let Some(report) = &args.report {
        files.write("--report", report);
    }
    if let Some(plot) = &args.plot {
        files.write("--plot", plot);
    }
    let outputs = files.check()?;
    let stream = layers::find(&model)?;
    if stream.layers.len() < 2 {
        bail!(
            "--structure layers: a stream of at least two layers is needed\n{}",
            stream.describe().trim_end()
        );
    }
    let units = layer_units(&model, &stream)?;
    let progress = Bar::start();
    progress.phase("running the model through tract");
    let baseline = Baseline::load(&args.model, &options)?;
    print_notes(baseline.notes());
    let reports = measure_layers(&model, &stream, &baseline, &progress)?;
    drop(progress);
    let units = units.into_iter().map(|u| (u.name, u.params)).collect();
    let how = (Structure::Layers, "drop", None);
    let result = Sensitivity::from_reports(how, units, vec![1.0], &reports);
    finish(&args, outputs, &result)
}
