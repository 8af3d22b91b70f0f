//! `onnx-prune prune`: flags to a validated configuration, then plan, save and report.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use onnx_prune_core::{
    check_sparsity, discover_with, plan, save, select, write_file_atomic, Destination, Model,
    Pattern, PruneConfig, RewriteReport, Scope, Selection,
};
use onnx_prune_verify::CheckReport;
use regex::Regex;

use crate::args::{PruneArgs, ScopeArg};
use crate::check;
use crate::progress::Progress;
use crate::table::{bytes, percent, table};

fn regex(pattern: &str, flag: &str) -> Result<Regex> {
    Regex::new(pattern).with_context(|| format!("{flag} `{pattern}` is not a valid regex"))
}

/// The selection and pruning configuration the flags ask for.
fn configure(args: &PruneArgs) -> Result<(Selection, PruneConfig)> {
    let pattern: Pattern = args
        .pattern
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--pattern: {e}"))?;
    let sparsity = match (args.sparsity, pattern.fixed_sparsity()) {
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
    let sparsity_for = args
        .sparsity_for
        .iter()
        .map(|spec| {
            let (pattern, value) = spec
                .rsplit_once('=')
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
    let selection = Selection {
        include: args
            .include
            .iter()
            .map(|p| regex(p, "--include"))
            .collect::<Result<_>>()?,
        exclude: args
            .exclude
            .iter()
            .map(|p| regex(p, "--exclude"))
            .collect::<Result<_>>()?,
        op_types: args.op_types.clone(),
    };
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

pub fn run(args: PruneArgs) -> Result<ExitCode> {
    let (selection, config) = configure(&args)?;
    let check_options = args
        .check
        .then(|| check::options(&args.check_flags))
        .transpose()?;
    let progress = Progress::start();
    progress.phase("loading");
    let model = Model::load(&args.model)?;
    if let Some(options) = &check_options {
        // Bad check input is refused before the output is written.
        onnx_prune_verify::validate(&model, options)?;
    }
    let weights = discover_with(&model, args.min_params);
    let selected = select(&model, &weights, &selection)?;
    progress.phase("choosing what to zero");
    let plan = plan(&model, &selected, &config)?;
    progress.phase("writing");
    let destination = match &args.output {
        _ if args.in_place => Some(Destination::InPlace),
        Some(output) => Some(Destination::File(output)),
        None => None,
    };
    let written = match destination {
        Some(to) if !args.dry_run => {
            Some(save(&model, &plan.edits, to, args.rewrite.storage.into())?)
        }
        _ => None,
    };
    progress.phase("measuring sizes");
    let report = RewriteReport::new(&model, plan.outcomes, written.as_ref())?;
    progress.phase("checking through tract");
    let checked = match (&check_options, &args.output, args.dry_run) {
        (Some(options), Some(output), false) => {
            Some(check::run_check(&args.model, output, options)?)
        }
        _ => None,
    };
    drop(progress);
    finish(&report, checked.as_ref(), args.rewrite.report.as_deref())
}

/// Prints the rewrite report (and the check's, if one ran), writes the JSON report if asked,
/// and gives the exit code: 1 when the check failed.
pub fn finish(
    report: &RewriteReport,
    checked: Option<&CheckReport>,
    json: Option<&Path>,
) -> Result<ExitCode> {
    if let Some(path) = json {
        let mut value = serde_json::to_value(report)?;
        if let Some(checked) = checked {
            value["check"] = serde_json::to_value(checked)?;
        }
        write_file_atomic(path, &serde_json::to_vec_pretty(&value)?)?;
    }
    println!("{}", render(report));
    Ok(match checked {
        Some(checked) => {
            println!("\n{}", check::render(checked));
            check::exit_code(checked)
        }
        None => ExitCode::SUCCESS,
    })
}

/// The human-readable form of a rewrite report.
pub fn render(report: &RewriteReport) -> String {
    let rows = report
        .weights
        .iter()
        .map(|w| {
            vec![
                w.id.clone(),
                w.params.to_string(),
                percent(w.zeros_before, w.params),
                percent(w.zeros_after, w.params),
                match (&w.skipped, w.stored_sparse) {
                    (Some(reason), _) => format!("skipped: {reason}"),
                    (None, true) => "stored sparse".into(),
                    (None, false) => String::new(),
                },
            ]
        })
        .collect();
    let mut out = table(
        &["id", "params", "zeros before", "zeros after", ""],
        rows,
        &[1, 2, 3],
    );
    let t = &report.totals;
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
