//! Command-line flags, each with its help next to its definition.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod analysis;
mod check;
mod examples;
mod prune;
mod shrink;

pub use analysis::{ReplayArgs, SensitivityArgs, StructureArg, DEFAULT_SPARSITIES};
pub use check::{CheckArgs, CheckFlags, SampleFlags};
pub use prune::{CalibrationFlags, MethodArg, OrderArg, PruneArgs, ScopeArg};
pub use shrink::{DropLayersArg, ShrinkArgs, ShrinkScopeArg};

/// What `--version` prints after the name: this version and the tract version that runs the
/// models (read from Cargo.lock by build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (tract ",
    env!("ONNX_PRUNE_TRACT_VERSION"),
    ")"
);

/// Prune and shrink ONNX models, and check what it cost by running them through tract.
///
/// Weights are pruned by magnitude, by activation-aware scores, or by replaying a mask schedule
/// exported from training; shrink removes whole channels, layers and vocabulary.
///
/// Exit codes: 0 success, 1 a check failed its tolerance, 2 bad usage or bad input,
/// 3 the model cannot be run by tract, 4 an output could not be written (no permission, a full
/// disk, another run writing it; nothing was changed), 130 interrupted before the outputs were
/// committed (nothing was changed).
#[derive(Debug, Parser)]
#[command(name = "onnx-prune", version = VERSION, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every floating-point constant of a model.
    ///
    /// For each: where it lives, what consumes it, its shape, its zeros, and whether it is
    /// pruned by default.
    #[command(after_help = examples::INSPECT)]
    Inspect(InspectArgs),

    /// Zero the least important weights and write the pruned model.
    ///
    /// Weights are scored by magnitude, or by activation-aware scores from calibration data.
    #[command(after_help = examples::PRUNE)]
    Prune(PruneArgs),

    /// Run two models side by side through tract and compare every output.
    ///
    /// Both run on the same inputs. Exits 1 when a tolerance fails, naming the output and the
    /// worst sample.
    #[command(after_help = examples::CHECK)]
    Check(CheckArgs),

    /// Apply a mask schedule exported from training to the exported model.
    #[command(after_help = examples::REPLAY)]
    Replay(ReplayArgs),

    /// Measure what pruning each weight (or channel group) alone costs, at each sparsity.
    ///
    /// Each candidate runs through tract: the cost is the accuracy drop with --labels, else
    /// the drop in top-1 agreement for class scores, else 1 - cosine. The dense model runs
    /// once. Prints a table (weights x sparsities), and writes JSON and an SVG plot.
    #[command(after_help = examples::SENSITIVITY)]
    Sensitivity(SensitivityArgs),

    /// Remove whole channels, layers or vocabulary: a smaller, faster model in every runtime.
    ///
    /// Channels (Conv filters, Gemm/MatMul neurons) go through the graph's channel dependency
    /// groups. Without --sparsity only dead channels go (all-zero weights all the way, or
    /// never read), and the outputs stay the same to float rounding. A group reaching an op
    /// the tool does not understand, a graph output or a subgraph is blocked, never guessed
    /// through: --dry-run lists every group and what blocks it. Transformers can also lose
    /// whole layers (--drop-layers) and unused vocabulary (--vocab).
    #[command(after_help = examples::SHRINK)]
    Shrink(ShrinkArgs),

    /// Print the completion script for a shell.
    #[command(after_help = examples::COMPLETIONS)]
    Completions(CompletionsArgs),

    /// Print the man page (roff) of onnx-prune, or of one of its commands.
    #[command(after_help = examples::MAN)]
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The command whose page to print (default: the page of onnx-prune itself).
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The ONNX model to inspect.
    pub model: PathBuf,

    /// Print JSON (keys: model, weights, totals) instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Weights with fewer elements are not pruned by default (the `prunable` column).
    #[arg(long, value_name = "N", default_value_t = onnx_prune_core::DEFAULT_MIN_PARAMS)]
    pub min_params: u64,
}

/// Flags shared by the commands that rewrite a model.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Also write the report as JSON to FILE (keys: weights, totals, input, output); a new path
    /// or a regular file, never an input or another output.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// `dense`: pruned weights keep their place with exact zeros (runs everywhere);
    /// `sparse`: they move to sparse_initializer / a Constant's sparse_value (COO, int64
    /// linear indices) where that is smaller.
    #[arg(long, value_enum, default_value = "dense")]
    pub storage: StorageArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StorageArg {
    Dense,
    Sparse,
}

impl From<StorageArg> for onnx_prune_core::Storage {
    fn from(arg: StorageArg) -> Self {
        match arg {
            StorageArg::Dense => onnx_prune_core::Storage::Dense,
            StorageArg::Sparse => onnx_prune_core::Storage::Sparse,
        }
    }
}

/// `--sparsity`: a fraction, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SparsityArg {
    /// A fraction of zeros.
    Value(f64),
    /// Searched against the check's tolerances.
    Auto,
}

fn parse_sparsity(text: &str) -> Result<SparsityArg, String> {
    if text == "auto" {
        return Ok(SparsityArg::Auto);
    }
    text.parse()
        .map(SparsityArg::Value)
        .map_err(|_| format!("`{text}` is neither a number in [0, 1) nor `auto`"))
}

/// How many threads a command runs on.
#[derive(Debug, Clone, Copy, Args)]
pub struct JobsFlag {
    /// Run on N threads (candidates of a sensitivity analysis or an auto search in parallel,
    /// and the samples of each check). Default: every core. Results do not depend on N.
    ///
    /// Example: --jobs 4
    #[arg(long, value_name = "N", value_parser = parse_jobs)]
    pub jobs: Option<usize>,
}

fn parse_jobs(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1 thread".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a whole number of threads")),
    }
}

impl Command {
    /// The threads `--jobs` asks for, on the commands that have it.
    pub fn jobs(&self) -> Option<usize> {
        match self {
            Command::Prune(args) => args.jobs.jobs,
            Command::Shrink(args) => args.jobs.jobs,
            Command::Sensitivity(args) => args.jobs.jobs,
            _ => None,
        }
    }
}
