//! The `onnx-prune` command line: the definition of the interface and the glue that turns flags
//! into library calls. No pruning logic lives here.

mod args;
mod commands;
mod files;
mod options;
mod outcome;
mod progress;
mod render;
mod stdout;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::commands::{check, generate, inspect, prune, replay, sensitivity, shrink};

/// Exit code for bad usage or bad input.
const EXIT_BAD_INPUT: u8 = 2;
/// Exit code for a model that tract cannot run.
const EXIT_UNSUPPORTED: u8 = 3;

/// Exit code after an interruption (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: i32 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Ctrl-C or SIGTERM: remove half-written outputs, then exit; the input is never touched.
    let _ = ctrlc::set_handler(|| {
        onnx_prune_core::write::remove_unfinished_outputs();
        std::process::exit(EXIT_INTERRUPTED);
    });
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Prune(args) => prune::run(args),
        Command::Check(args) => check::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Sensitivity(args) => sensitivity::run(args),
        Command::Shrink(args) => shrink::run(args),
        Command::Completions(args) => generate::completions(args),
        Command::Man(args) => generate::man(args),
    };
    match result {
        Ok(code) => code,
        Err(error) if stdout::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if tract_cannot_run(&error) {
                ExitCode::from(EXIT_UNSUPPORTED)
            } else {
                ExitCode::from(EXIT_BAD_INPUT)
            }
        }
    }
}

/// Whether `error` says that tract cannot run a model, directly or from a tuning run.
fn tract_cannot_run(error: &anyhow::Error) -> bool {
    let verify = error
        .downcast_ref::<onnx_prune_verify::Error>()
        .or_else(|| error.downcast_ref::<onnx_prune_tune::Error>()?.verify());
    matches!(verify, Some(onnx_prune_verify::Error::Unsupported { .. }))
}
