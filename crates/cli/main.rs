//! The `onnx-prune` command line: the definition of the interface and the glue that turns flags
//! into library calls. No pruning logic lives here.

mod args;
mod auto;
mod budget_search;
mod channel_sensitivity;
mod check;
mod files;
mod generate;
mod inspect;
mod plot;
mod progress;
mod prune;
mod pruner;
mod replay;
mod sensitivity;
mod shrink;
mod shrink_auto;
mod shrink_passes;
mod stdout;
mod table;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};

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
        onnx_prune_core::remove_unfinished_outputs();
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
            match error.downcast_ref::<onnx_prune_verify::Error>() {
                Some(onnx_prune_verify::Error::Unsupported { .. }) => {
                    ExitCode::from(EXIT_UNSUPPORTED)
                }
                _ => ExitCode::from(EXIT_BAD_INPUT),
            }
        }
    }
}
