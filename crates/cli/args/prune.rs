//! Flags of `prune`, and the calibration flags `sensitivity` shares.

use std::path::PathBuf;

use clap::Args;

use super::{parse_sparsity, CheckFlags, JobsFlag, OutputArgs, SparsityArg};

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The ONNX model to prune.
    pub model: PathBuf,

    /// Where to write the pruned model: a new path or a regular file (a symlink's target is
    /// replaced, the link kept); never an input. External data goes beside it.
    #[arg(
        short,
        long,
        value_name = "OUT",
        required_unless_present_any = ["in_place", "dry_run"]
    )]
    pub output: Option<PathBuf>,

    /// Write over MODEL (and its external data files) instead of -o: changed data files are
    /// written under new names and the model pointing at them renamed into place last, so an
    /// interrupted run leaves the input as it was. A file you may not write is refused, as cp
    /// would. Not with --check, which
    /// needs the original: prune to a new file, check it, then move it.
    #[arg(long, conflicts_with_all = ["output", "check"])]
    pub in_place: bool,

    #[command(flatten)]
    pub rewrite: OutputArgs,

    /// Fraction of zeros wanted in [0, 1): exactly round(S x n) zeros per weight (or across
    /// all selected weights with --scope global), half rounded to even; existing zeros count.
    /// Not with N:M, whose ratio is fixed. `auto`: the largest overall sparsity whose check
    /// passes the tolerances given (e.g. --max-accuracy-drop 0.01) on --inputs, with per-layer
    /// sparsities drawn from sensitivity curves; the written model is checked once more.
    ///
    /// Example: --sparsity 0.5
    ///
    /// Example: --sparsity auto --inputs t.npz --min-cosine 0.99
    #[arg(long, value_name = "S|auto", allow_negative_numbers = true, value_parser = parse_sparsity)]
    pub sparsity: Option<SparsityArg>,

    /// With --sparsity auto: at most N checks while searching the budget (after the
    /// sensitivity curves, which take one check per weight and sparsity). Default 12.
    #[arg(long, value_name = "N")]
    pub max_evaluations: Option<usize>,

    /// `tensor`: each weight reaches the target; `global`: one magnitude threshold across all
    /// selected weights (torch.nn.utils.prune.global_unstructured).
    #[arg(long, value_enum, default_value = "tensor")]
    pub scope: ScopeArg,

    /// `unstructured`, `N:M` (keep the N largest of every M consecutive elements along the
    /// reduction axis: 2:4 is 50% zeros, as sparse tensor cores run; 1:4 is 75%) or `block:RxC` (whole blocks with the smallest L1 norm, e.g. block:4x4).
    #[arg(long, value_name = "PATTERN", default_value = "unstructured")]
    pub pattern: String,

    /// Prune the weights whose id matches REGEX instead of the default selection (repeatable).
    ///
    /// Example: --include '^encoder\.'
    #[arg(long, value_name = "REGEX")]
    pub include: Vec<String>,

    /// Leave the weights whose id matches REGEX alone (repeatable).
    ///
    /// Example: --exclude 'head'
    #[arg(long, value_name = "REGEX")]
    pub exclude: Vec<String>,

    /// Only prune weights consumed by these ops.
    ///
    /// Example: --op-types Conv,Gemm
    #[arg(long, value_name = "OPS", value_delimiter = ',')]
    pub op_types: Vec<String>,

    /// Another target for the weights whose id matches REGEX (repeatable, first match wins;
    /// they leave the global pool; REGEX has no `=`).
    ///
    /// Example: --sparsity-for 'fc3=0.2'
    #[arg(long, value_name = "REGEX=S")]
    pub sparsity_for: Vec<String>,

    /// Weights with fewer elements are left alone, also when --include names them (0 lifts
    /// the limit; scalars and shape parameters are never pruned).
    #[arg(long, value_name = "N", default_value_t = onnx_prune_core::DEFAULT_MIN_PARAMS)]
    pub min_params: u64,

    /// Print what would be pruned and write nothing (-o is then not needed).
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub jobs: JobsFlag,

    #[command(flatten)]
    pub calibration: CalibrationFlags,

    /// After writing, check the pruned model against the input through tract (see the Check
    /// options); a failed check keeps the output but exits 1.
    #[arg(long)]
    pub check: bool,

    #[command(flatten)]
    pub check_flags: CheckFlags,
}

/// How weights are scored, and the calibration data that activation-aware scores need.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Calibration")]
pub struct CalibrationFlags {
    /// `magnitude`: |w|, no data needed. `wanda`: |w| x ||x|| (the norm of the weight's input
    /// column over the calibration data), compared per output row. `sparsegpt`: optimal brain
    /// surgeon masks, and updates of the kept weights that make up for the pruned ones. The
    /// last two need --calibration.
    ///
    /// Example: --method wanda --calibration calib.npz
    #[arg(long, value_enum, default_value = "magnitude")]
    pub method: MethodArg,

    /// Calibration samples (repeatable), read as check's --inputs: FILE.npz (keys are input
    /// names, first axis is the sample axis), a directory in the ONNX test-data layout, or
    /// NAME=FILE.npy. With any method, the report gives each weight's output error on them;
    /// with --structure channels, they rank channels and refit their consumers.
    ///
    /// Example: --calibration calib.npz
    #[arg(long, value_name = "FILE|DIR|NAME=FILE")]
    pub calibration: Vec<String>,

    /// Use the first N calibration samples [default: 128].
    #[arg(long, value_name = "N")]
    pub calibration_samples: Option<usize>,

    /// `dense` (the default): every layer's statistics from one pass over the dense model.
    /// `sequential`: each layer's from the model with the layers before it already pruned
    /// (one pass per layer: slower, often a little more accurate).
    #[arg(long, value_enum, value_name = "ORDER")]
    pub calibration_order: Option<OrderArg>,

    /// Shift each pruned layer's bias so that its mean output over the calibration data is
    /// unchanged: b += (W - W') E(x). A layer without a bias gets one: a Conv or Gemm a bias
    /// input, a MatMul an Add after it (its output renamed `<output>.unbiased`).
    #[arg(long)]
    pub correct_bias: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    Magnitude,
    Wanda,
    Sparsegpt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OrderArg {
    Dense,
    Sequential,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ScopeArg {
    Tensor,
    Global,
}
