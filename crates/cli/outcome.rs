//! What commands do at their end: check what they prepared, prepare the JSON report asked
//! for, commit every output, print the tables, and give the exit code.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use onnx_prune_core::prune::RewriteReport;
use onnx_prune_core::write::Outputs;
use onnx_prune_core::Model;
use onnx_prune_tune::search::Found;
use onnx_prune_verify::{CheckOptions, CheckReport};

use crate::render::{check_exit_code, print_notes, render_check, render_rewrite};
use crate::stdout;

/// Checks `candidate` (a model prepared and not yet in place, or one on disk) against the
/// model at `reference`.
pub fn check_model(
    reference: &Path,
    candidate: &Model,
    options: &CheckOptions,
) -> Result<CheckReport> {
    let reference = Model::load(reference)?;
    let report = onnx_prune_verify::check(&reference, candidate, options)?;
    print_notes(&report.notes);
    Ok(report)
}

/// Prepares `value` as pretty JSON for `path` (named by `--report`), put in place when
/// `outputs` are committed.
pub fn stage_json(outputs: &mut Outputs, path: &Path, value: &impl serde::Serialize) -> Result<()> {
    outputs.stage_file("--report", path, &serde_json::to_vec_pretty(value)?)?;
    Ok(())
}

/// Prints the check report, if a check ran, and gives its exit code (0 without a check).
pub fn finish_check(checked: Option<&CheckReport>) -> Result<ExitCode> {
    Ok(match checked {
        Some(checked) => {
            stdout::print(format!("\n{}", render_check(checked)))?;
            check_exit_code(checked)
        }
        None => ExitCode::SUCCESS,
    })
}

/// Prepares the JSON report if asked (with the check's, and the `--sparsity auto` search's
/// summary under `auto`), commits every output, then prints the rewrite report (and the
/// check's) and gives the exit code: 1 when the check failed.
pub fn finish_rewrite(
    mut outputs: Outputs,
    report: &RewriteReport,
    checked: Option<&CheckReport>,
    (json, auto): (Option<&Path>, Option<serde_json::Value>),
) -> Result<ExitCode> {
    if let Some(path) = json {
        let mut value = serde_json::to_value(report)?;
        if let Some(checked) = checked {
            value["check"] = serde_json::to_value(checked)?;
        }
        if let Some(auto) = auto {
            value["auto"] = auto;
        }
        stage_json(&mut outputs, path, &value)?;
    }
    outputs.commit()?;
    stdout::print(render_rewrite(report))?;
    finish_check(checked)
}

/// When no allocation above zero passed: prints the figures of the smallest one tried and
/// gives the failed check's exit code (nothing is written).
pub fn nothing_passed(found: Found<CheckReport>) -> Result<ExitCode> {
    print_notes(&found.notes);
    let Some(failure) = found.smallest_failure else {
        anyhow::bail!("no allocation was tried");
    };
    stdout::print(format!(
        "no sparsity above zero passes: the smallest tried, {:.2}% overall, gives\n\n{}",
        100.0 * failure.overall,
        render_check(&failure.report)
    ))?;
    Ok(check_exit_code(&failure.report))
}
