//! `onnx-prune inspect`: every floating-point constant of a model, as a table or JSON.

use std::process::ExitCode;

use anyhow::Result;
use onnx_prune_core::{inspect, Model};

use crate::args::InspectArgs;
use crate::render::render_inspection;
use crate::stdout;

pub fn run(args: InspectArgs) -> Result<ExitCode> {
    let model = Model::load(&args.model)?;
    let report = inspect(&model, args.min_params)?;
    if args.json {
        stdout::print(serde_json::to_string_pretty(&report)?)?;
    } else {
        stdout::print(render_inspection(&report))?;
    }
    Ok(ExitCode::SUCCESS)
}
