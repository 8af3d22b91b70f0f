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
use onnx_prune_core::write::{self, Interruption};

use crate::args::{Cli, Command};
use crate::commands::{check, generate, inspect, prune, replay, sensitivity, shrink};

/// Exit code for bad usage or bad input.
const EXIT_BAD_INPUT: u8 = 2;
/// Exit code for a model that tract cannot run.
const EXIT_UNSUPPORTED: u8 = 3;
/// Exit code for an output that could not be written (a full disk, no permission, another run
/// writing it): nothing was changed unless the message says what was.
const EXIT_CANNOT_WRITE: u8 = 4;

/// Exit code after an interruption (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: i32 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Ctrl-C, SIGTERM or SIGHUP before the outputs are committed: remove what is half
    // written, then exit, nothing changed; once the commit has begun, finish it.
    let _ = ctrlc::set_handler(|| match write::interrupt() {
        Interruption::NothingChanged => {
            eprintln!("onnx-prune: interrupted; nothing was changed");
            std::process::exit(EXIT_INTERRUPTED);
        }
        Interruption::TooLate => {
            eprintln!(
                "onnx-prune: interrupted while the outputs were being put in place; finishing"
            )
        }
    });
    // An input truncated by another program while it is read: a message, not a bus error.
    onnx_prune_core::model::catch_changed_inputs(EXIT_BAD_INPUT.into());
    if let Some(jobs) = cli.command.jobs() {
        // Before any parallel work: the global pool runs everything, candidates and samples.
        if let Err(error) = rayon::ThreadPoolBuilder::new()
            .num_threads(jobs)
            .build_global()
        {
            eprintln!("error: --jobs {jobs}: {error}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    }
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
    if write::interrupted_too_late() {
        eprintln!(
            "note: the interruption came after the outputs were put in place: they are \
             complete, and the run finished"
        );
    }
    match result {
        Ok(code) => code,
        Err(error) if stdout::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if tract_cannot_run(&error) {
                ExitCode::from(EXIT_UNSUPPORTED)
            } else if could_not_write(&error) {
                ExitCode::from(EXIT_CANNOT_WRITE)
            } else {
                ExitCode::from(EXIT_BAD_INPUT)
            }
        }
    }
}

/// Whether `error` is an output that could not be written, directly or from a tuning run.
fn could_not_write(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let core =
            cause
                .downcast_ref::<onnx_prune_core::Error>()
                .or_else(|| match cause.downcast_ref::<onnx_prune_tune::Error>()? {
                    onnx_prune_tune::Error::Model(e) => Some(e),
                    _ => None,
                });
        matches!(core, Some(onnx_prune_core::Error::Write { .. }))
    })
}

/// Whether `error` says that tract cannot run a model, directly or from a tuning run.
fn tract_cannot_run(error: &anyhow::Error) -> bool {
    let verify = error
        .downcast_ref::<onnx_prune_verify::Error>()
        .or_else(|| error.downcast_ref::<onnx_prune_tune::Error>()?.verify());
    matches!(verify, Some(onnx_prune_verify::Error::Unsupported { .. }))
}
