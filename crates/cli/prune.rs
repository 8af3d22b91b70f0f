//! `onnx-prune prune`: flags to a validated configuration, then plan, save and report.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use onnx_prune_core::{
    check_sparsity, discover_with, plan, plan_calibrated, save, select, write_file_atomic,
    Calibrated, Destination, Method, Model, Order, Pattern, PruneConfig, RewriteReport, Scope,
    Selection,
};
use onnx_prune_verify::{Calibration, CalibrationOptions, CheckReport};
use regex::Regex;

use crate::args::{CalibrationFlags, MethodArg, OrderArg, PruneArgs, ScopeArg, SparsityArg};
use crate::auto;
use crate::check;
use crate::files::{preflight_check, source_path, Files};
use crate::progress::Progress;
use crate::stdout;
use crate::table::{bytes, percent, table};

fn regex(pattern: &str, flag: &str) -> Result<Regex> {
    Regex::new(pattern).with_context(|| format!("{flag} `{pattern}` is not a valid regex"))
}

/// The `--pattern` flag.
pub fn parse_pattern(pattern: &str) -> Result<Pattern> {
    pattern
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--pattern: {e}"))
}

/// The selection that `--include`, `--exclude`, `--op-types` and `--min-params` ask for.
pub fn selection(
    include: &[String],
    exclude: &[String],
    op_types: &[String],
    min_params: u64,
) -> Result<Selection> {
    let regexes = |patterns: &[String], flag: &str| {
        patterns
            .iter()
            .map(|p| regex(p, flag))
            .collect::<Result<Vec<_>>>()
    };
    Ok(Selection {
        include: regexes(include, "--include")?,
        exclude: regexes(exclude, "--exclude")?,
        op_types: op_types.to_vec(),
        min_params,
    })
}

/// The selection and pruning configuration the flags ask for.
fn configure(args: &PruneArgs) -> Result<(Selection, PruneConfig)> {
    let pattern = parse_pattern(&args.pattern)?;
    let sparsity = match (
        args.sparsity.map(|s| match s {
            SparsityArg::Value(value) => value,
            SparsityArg::Auto => unreachable!("--sparsity auto is searched by the auto module"),
        }),
        pattern.fixed_sparsity(),
    ) {
        (None, Some(fixed)) => fixed,
        (Some(_), Some(_)) => bail!(
            "--sparsity has no effect with --pattern {pattern}: N:M keeps N of every M elements \
             (2:4 is 50% zeros, 1:4 is 75%); drop --sparsity or use another pattern"
        ),
        (Some(s), None) => check_sparsity(s, "--sparsity")?,
        (None, None) => {
            bail!("--sparsity is required (e.g. --sparsity 0.5) unless --pattern is N:M")
        }
    };
    if !args.sparsity_for.is_empty() && pattern.fixed_sparsity().is_some() {
        bail!("--sparsity-for has no effect with --pattern {pattern}, whose sparsity is fixed");
    }
    let sparsity_for = args
        .sparsity_for
        .iter()
        .map(|spec| {
            let (pattern, value) = spec
                .split_once('=')
                .with_context(|| format!("--sparsity-for `{spec}` is not REGEX=S"))?;
            let value: f64 = value
                .parse()
                .with_context(|| format!("--sparsity-for `{spec}`: `{value}` is not a number"))?;
            Ok((
                regex(pattern, "--sparsity-for")?,
                check_sparsity(value, "--sparsity-for")?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let selection = selection(
        &args.include,
        &args.exclude,
        &args.op_types,
        args.min_params,
    )?;
    let config = PruneConfig {
        sparsity,
        scope: match args.scope {
            ScopeArg::Tensor => Scope::Tensor,
            ScopeArg::Global => Scope::Global,
        },
        pattern,
        sparsity_for,
    };
    Ok((selection, config))
}

/// The calibrated request the flags ask for, with its data; `None` for magnitude pruning
/// without calibration data. Flags that would have no effect are errors.
pub fn calibration(
    flags: &CalibrationFlags,
) -> Result<(Method, Option<(Calibrated, CalibrationOptions)>)> {
    let method = match flags.method {
        MethodArg::Magnitude => Method::Magnitude,
        MethodArg::Wanda => Method::Wanda,
        MethodArg::Sparsegpt => Method::SparseGpt,
    };
    if flags.calibration.is_empty() {
        if method != Method::Magnitude {
            bail!(
                "--method {} scores weights by their input activations: give calibration                  samples with --calibration FILE.npz (or a test-data DIR, or NAME=FILE.npy)",
                method.name()
            );
        }
        for (given, flag) in [
            (flags.calibration_samples.is_some(), "--calibration-samples"),
            (flags.calibration_order.is_some(), "--calibration-order"),
            (flags.correct_bias, "--correct-bias"),
        ] {
            if given {
                bail!("{flag} has no effect without --calibration");
            }
        }
        return Ok((method, None));
    }
    let samples = flags.calibration_samples.unwrap_or(128);
    if samples == 0 {
        bail!("--calibration-samples must be at least 1");
    }
    let request = Calibrated {
        method,
        order: match flags.calibration_order {
            Some(OrderArg::Sequential) => Order::Sequential,
            _ => Order::Dense,
        },
        correct_bias: flags.correct_bias,
    };
    let options = CalibrationOptions {
        inputs: flags
            .calibration
            .iter()
            .map(|spec| check::input_source(spec))
            .collect(),
        samples,
        ..CalibrationOptions::default()
    };
    Ok((method, Some((request, options))))
}

pub fn run(args: PruneArgs) -> Result<ExitCode> {
    let (method, calibrated) = calibration(&args.calibration)?;
    if args.sparsity == Some(SparsityArg::Auto) {
        return auto::run(args, method, calibrated);
    }
    if args.max_evaluations.is_some() {
        bail!("--max-evaluations bounds the search of --sparsity auto; it has no effect here");
    }
    let (selection, config) = configure(&args)?;
    if args.dry_run && args.check {
        bail!("--dry-run writes nothing, so there is nothing for --check to check");
    }
    let check_options = check::options_if(args.check, &args.check_flags)?;
    let progress = Progress::start();
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
    files.check()?;
    let weights = discover_with(&model, args.min_params);
    let selected = select(&model, &weights, &selection)?;
    let plan = match &calibrated {
        None => {
            progress.phase("choosing what to zero");
            plan(&model, &selected, &config)?
        }
        Some((request, options)) => {
            progress.phase("reading calibration data");
            let calibration = Calibration::load(&model, options)?;
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
    let written = match destination {
        Some(to) => Some(save(&model, &plan.edits, to, args.rewrite.storage.into())?),
        None => None,
    };
    progress.phase("measuring sizes");
    let mut report = RewriteReport::new(&model, plan.outcomes, written.as_ref())?;
    report.method = Some(method.name());
    progress.phase("checking through tract");
    let checked = match (&check_options, &args.output, args.dry_run) {
        (Some(options), Some(output), false) => {
            Some(check::run_check(&args.model, output, options)?)
        }
        _ => None,
    };
    drop(progress);
    finish(
        &report,
        checked.as_ref(),
        args.rewrite.report.as_deref(),
        None,
    )
}

/// Prints the rewrite report (and the check's, if one ran), writes the JSON report if asked
/// (with the `--sparsity auto` search's summary under `auto`),
/// and gives the exit code: 1 when the check failed.
pub fn finish(
    report: &RewriteReport,
    checked: Option<&CheckReport>,
    json: Option<&Path>,
    auto: Option<serde_json::Value>,
) -> Result<ExitCode> {
    if let Some(path) = json {
        let mut value = serde_json::to_value(report)?;
        if let Some(checked) = checked {
            value["check"] = serde_json::to_value(checked)?;
        }
        if let Some(auto) = auto {
            value["auto"] = auto;
        }
        write_file_atomic(path, &serde_json::to_vec_pretty(&value)?)?;
    }
    stdout::print(render(report))?;
    Ok(match checked {
        Some(checked) => {
            stdout::print(format!("\n{}", check::render(checked)))?;
            check::exit_code(checked)
        }
        None => ExitCode::SUCCESS,
    })
}

/// The human-readable form of a rewrite report.
pub fn render(report: &RewriteReport) -> String {
    let measured = report.weights.iter().any(|w| w.output_error.is_some());
    let rows = report
        .weights
        .iter()
        .map(|w| {
            let mut notes: Vec<String> = match (&w.skipped, w.stored_sparse, &w.storage_note) {
                (Some(reason), _, _) => vec![format!("skipped: {reason}")],
                (None, true, _) => vec!["stored sparse".into()],
                (None, false, Some(note)) => vec![note.clone()],
                (None, false, None) => Vec::new(),
            };
            if w.values_changed {
                notes.push("kept values updated".into());
            }
            notes.extend(w.notes.iter().cloned());
            let mut row = vec![
                w.id.clone(),
                w.params.to_string(),
                percent(w.zeros_before, w.params),
                percent(w.zeros_after, w.params),
            ];
            if measured {
                row.push(w.output_error.map_or("-".into(), |e| format!("{e:.3e}")));
            }
            row.push(notes.join("; "));
            row
        })
        .collect();
    let mut header = vec!["id", "params", "zeros before", "zeros after"];
    let mut right = vec![1, 2, 3];
    if measured {
        header.push("output error");
        right.push(4);
    }
    header.push("");
    let mut out = table(&header, rows, &right);
    let t = &report.totals;
    if let Some(method) = report.method.filter(|m| measured || *m != "magnitude") {
        out.push_str(&format!("\n\nmethod: {method}"));
    }
    out.push_str(&format!(
        "\n\ntotal: {} weights, {} params, zeros {} -> {}\n",
        report.weights.len(),
        t.params,
        percent(t.zeros_before, t.params),
        percent(t.zeros_after, t.params),
    ));
    let size = |s: &onnx_prune_core::FileSizes| {
        format!(
            "{} on disk, {} compressed{}",
            bytes(s.bytes),
            bytes(s.compressed.bytes),
            if s.compressed.estimated {
                " (estimated)"
            } else {
                ""
            }
        )
    };
    out.push_str(&format!("input:  {}\n", size(&report.input)));
    match &report.output {
        Some(output) => out.push_str(&format!(
            "output: {}\n(zeros make a dense model smaller only once compressed)",
            size(output)
        )),
        None => out.push_str("dry run: nothing written"),
    }
    out
}
