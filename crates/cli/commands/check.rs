//! `onnx-prune check`: two models side by side through tract on the same samples.

use std::process::ExitCode;

use anyhow::Result;
use onnx_prune_core::Model;
use onnx_prune_tune::Progress;

use crate::args::CheckArgs;
use crate::files::Files;
use crate::options::check_options;
use crate::outcome::{check_model, stage_json};
use crate::progress::Bar;
use crate::render::{check_exit_code, render_check};
use crate::stdout;

pub fn run(args: CheckArgs) -> Result<ExitCode> {
    let options = check_options(&args.flags)?;
    let candidate = Model::load(&args.candidate)?;
    let mut files = Files::default();
    files
        .read_model(&Model::load(&args.reference)?)
        .read_model(&candidate)
        .read_check_inputs(&options);
    if let Some(report) = &args.report {
        files.write("--report", report);
    }
    let mut outputs = files.check()?;
    let progress = Bar::start();
    progress.phase("running both models through tract");
    let report = check_model(&args.reference, &candidate, &options)?;
    drop(progress);
    if let Some(path) = &args.report {
        stage_json(&mut outputs, path, &report)?;
    }
    outputs.commit()?;
    stdout::print(render_check(&report))?;
    Ok(check_exit_code(&report))
}
