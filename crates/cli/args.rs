//! Command-line flags, each with its help next to its definition.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// What `--version` prints after the name: this version and the tract version that runs the
/// models (read from Cargo.lock by build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (tract ",
    env!("ONNX_PRUNE_TRACT_VERSION"),
    ")"
);

/// Prune ONNX models by weight magnitude or by replaying a mask schedule exported from training,
/// and check what pruning cost by running both models through tract.
///
/// Exit codes: 0 success, 1 a check failed its tolerance, 2 bad usage or bad input,
/// 3 the model cannot be run by tract.
#[derive(Debug, Parser)]
#[command(name = "onnx-prune", version = VERSION, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every floating-point constant of a model: where it lives, what consumes it,
    /// its shape, its zeros, and whether it is pruned by default.
    ///
    /// Example: onnx-prune inspect model.onnx --json > weights.json
    Inspect(InspectArgs),

    /// Zero the least important weights (by magnitude, or by activation-aware scores from
    /// calibration data) and write the pruned model.
    ///
    /// Examples:
    ///   onnx-prune prune model.onnx -o pruned.onnx --sparsity 0.5
    ///   onnx-prune prune model.onnx -o pruned.onnx --sparsity 0.7 --scope global --exclude 'classifier'
    ///   onnx-prune prune model.onnx -o pruned.onnx --pattern 2:4
    ///   onnx-prune prune model.onnx -o pruned.onnx --sparsity 0.5 --method sparsegpt --calibration calib.npz
    #[command(verbatim_doc_comment)]
    Prune(PruneArgs),

    /// Run two models side by side through tract on the same inputs and compare every output.
    ///
    /// Exits 1 when a tolerance fails, naming the output and the worst sample.
    ///
    /// Examples:
    ///   onnx-prune check dense.onnx pruned.onnx --inputs test_set.npz --labels test_set.npz:labels
    ///   onnx-prune check model.onnx pruned.onnx --random 64 --seed 1 --shape images=1,3,224,224
    ///   onnx-prune check model.onnx pruned.onnx --inputs model_dir/ --atol 1e-4 --rtol 1e-3
    #[command(verbatim_doc_comment)]
    Check(CheckArgs),

    /// Apply a mask schedule exported from training to the exported model.
    ///
    /// Examples:
    ///   onnx-prune replay model.onnx --schedule schedule.json -o pruned.onnx
    ///   onnx-prune replay model.onnx --schedule schedule.json --step 6 -o step6.onnx --explain
    ///   onnx-prune replay model.onnx --schedule schedule.json -o pruned.onnx --check --inputs test.npz
    #[command(verbatim_doc_comment)]
    Replay(ReplayArgs),

    /// Prune one weight (or shrink one channel group) at a time at each sparsity and measure
    /// what each costs through tract: accuracy drop with --labels, else the drop in top-1
    /// agreement for class scores, else 1 - cosine. The dense model runs once. Prints a table
    /// (weights x sparsities), and writes JSON and an SVG plot.
    ///
    /// Examples:
    ///   onnx-prune sensitivity model.onnx --inputs test.npz --labels test.npz:labels --plot s.svg
    ///   onnx-prune sensitivity model.onnx --random 32 --sparsities 0.5,0.7,0.9 --report s.json
    ///   onnx-prune sensitivity model.onnx --inputs test.npz --method sparsegpt --calibration c.npz
    ///   onnx-prune sensitivity model.onnx --inputs test.npz --structure channels
    #[command(verbatim_doc_comment)]
    Sensitivity(SensitivityArgs),

    /// Remove whole channels (Conv filters, Gemm/MatMul neurons) through the graph's channel
    /// dependency groups: a smaller, faster model in every runtime. Without --sparsity only dead
    /// channels go (all-zero weights all the way, or never read), and the outputs stay the same
    /// to float rounding. A group reaching an op the tool does not understand, a graph output or
    /// a subgraph is blocked, never guessed through: --dry-run lists every group and what blocks it.
    ///
    /// Examples:
    ///   onnx-prune shrink model.onnx --dry-run
    ///   onnx-prune shrink model.onnx -o smaller.onnx
    ///   onnx-prune shrink model.onnx -o smaller.onnx --sparsity 0.3 --round-to 8 --report r.json
    ///   onnx-prune shrink model.onnx -o smaller.onnx --sparsity 0.5 --scope global --exclude 'head'
    ///   onnx-prune shrink model.onnx -o smaller.onnx --sparsity 0.3 --check --random 16
    ///   onnx-prune shrink model.onnx -o smaller.onnx --sparsity 0.5 --calibration calib.npz
    ///   onnx-prune shrink model.onnx -o smaller.onnx --sparsity auto --round-to 8 \
    ///       --inputs test.npz --labels test.npz:labels --max-accuracy-drop 0.01
    #[command(verbatim_doc_comment)]
    Shrink(ShrinkArgs),

    /// Print the completion script for a shell.
    ///
    /// Examples:
    ///   onnx-prune completions bash > ~/.local/share/bash-completion/completions/onnx-prune
    ///   onnx-prune completions zsh > ~/.zfunc/_onnx-prune
    ///   onnx-prune completions fish > ~/.config/fish/completions/onnx-prune.fish
    ///   onnx-prune completions powershell >> $PROFILE
    #[command(verbatim_doc_comment)]
    Completions(CompletionsArgs),

    /// Print the man page (roff) of onnx-prune, or of one of its commands.
    ///
    /// Examples:
    ///   onnx-prune man > onnx-prune.1 && man ./onnx-prune.1
    ///   onnx-prune man prune > onnx-prune-prune.1
    #[command(verbatim_doc_comment)]
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct ShrinkArgs {
    /// The ONNX model to shrink.
    pub model: PathBuf,

    /// Where to write the shrunk model (external data goes beside it).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Remove this fraction of each group's channels, least important first (group L2 norm of
    /// every member's weights for the channel). Without it, only dead channels go. `auto`: the
    /// largest overall fraction whose check passes the tolerances given on --inputs, each
    /// group's share drawn from its sensitivity curve (as `prune --sparsity auto`).
    /// Example: --sparsity 0.3; --sparsity auto --inputs t.npz --labels t.npz:y --max-accuracy-drop 0.01
    #[arg(long, value_name = "S|auto", allow_negative_numbers = true, value_parser = parse_sparsity)]
    pub sparsity: Option<SparsityArg>,

    /// With --sparsity auto: at most N checks while searching (after the sensitivity curves,
    /// one check per group and sparsity). Default 12.
    #[arg(long, value_name = "N")]
    pub max_evaluations: Option<usize>,

    /// With --sparsity: `group` takes the fraction from every group; `global` ranks all
    /// groups' channels together by importance normalised per group (default: group).
    #[arg(long, value_enum, value_name = "SCOPE")]
    pub scope: Option<ShrinkScopeArg>,

    /// Keep every group's channel count a multiple of N (8 or 16 suit SIMD kernels; counts are
    /// rounded up, and a group is never emptied). Example: --round-to 8
    #[arg(long, value_name = "N")]
    pub round_to: Option<usize>,

    /// Shrink only the groups with a producer node matching REGEX (repeatable).
    /// Example: --include 'layer[34]'
    #[arg(long, value_name = "REGEX")]
    pub include: Vec<String>,

    /// Leave alone the groups with a producer node matching REGEX (repeatable).
    /// Example: --exclude '^/head/'
    #[arg(long, value_name = "REGEX")]
    pub exclude: Vec<String>,

    /// With --sparsity: score channels by what their consumers make of them on calibration
    /// samples, sum over consumers of ||W_consumer[:, c]|| * ||X_c||, instead of by weights
    /// alone, then refit the consumers' kept weights by least squares on the same samples
    /// (repeatable): FILE.npz (sample axis first), a test-data DIR, or NAME=FILE.npy.
    /// Example: --calibration calib.npz
    #[arg(long, value_name = "FILE|DIR|NAME=FILE")]
    pub calibration: Vec<String>,

    /// Calibration samples used (the first N; default 128).
    #[arg(long, value_name = "N")]
    pub calibration_samples: Option<usize>,

    /// With --calibration: keep the consumers' remaining weights as they are, instead of
    /// refitting them by least squares on the calibration data to restore their outputs.
    #[arg(long)]
    pub no_refit: bool,

    /// List every channel group (producers, consumers, the nodes in between, channel count)
    /// and every blocked one with the node that blocks it; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Write a JSON report: per group producers, consumers, channels_before, channels_after
    /// and removed; totals params_before/after and macs_before/after.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// After writing, run both models through tract (see the check options) and compare
    /// their outputs; a failed tolerance exits 1 and keeps the output.
    #[arg(long)]
    pub check: bool,

    #[command(flatten)]
    pub check_flags: CheckFlags,
}

impl ShrinkArgs {
    /// `--sparsity` as a fraction (`None` when absent or `auto`).
    pub fn fraction(&self) -> Option<f64> {
        match self.sparsity {
            Some(SparsityArg::Value(s)) => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ShrinkScopeArg {
    Group,
    Global,
}

/// What `sensitivity` prunes at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StructureArg {
    Weights,
    Channels,
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

    /// Write over MODEL (and its external data files) instead of -o: each file is replaced
    /// atomically, so an interrupted run leaves the input as it was. Not with --check, which
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
    /// Example: --sparsity auto --inputs test.npz --labels test.npz:labels --max-accuracy-drop 0.01
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
    /// Example: --include '^encoder\.'
    #[arg(long, value_name = "REGEX")]
    pub include: Vec<String>,

    /// Leave the weights whose id matches REGEX alone (repeatable). Example: --exclude 'head'
    #[arg(long, value_name = "REGEX")]
    pub exclude: Vec<String>,

    /// Only prune weights consumed by these ops. Example: --op-types Conv,Gemm
    #[arg(long, value_name = "OPS", value_delimiter = ',')]
    pub op_types: Vec<String>,

    /// Another target for the weights whose id matches REGEX (repeatable, first match wins;
    /// they leave the global pool; REGEX has no `=`). Example: --sparsity-for 'fc3=0.2'
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
    /// last two need --calibration. Example: --method wanda --calibration calib.npz
    #[arg(long, value_enum, default_value = "magnitude")]
    pub method: MethodArg,

    /// Calibration samples (repeatable), read as check's --inputs: FILE.npz (keys are input
    /// names, first axis is the sample axis), a directory in the ONNX test-data layout, or
    /// NAME=FILE.npy. With any method, the report gives each weight's output error on them.
    /// Example: --calibration calib.npz
    #[arg(long, value_name = "FILE|DIR|NAME=FILE")]
    pub calibration: Vec<String>,

    /// Use the first N calibration samples [default: 128].
    #[arg(long, value_name = "N")]
    pub calibration_samples: Option<usize>,

    /// `dense` [default]: every layer's statistics from one pass over the dense model.
    /// `sequential`: each layer's from the model with the layers before it already pruned
    /// (one pass per layer: slower, often a little more accurate).
    #[arg(long, value_enum, value_name = "ORDER")]
    pub calibration_order: Option<OrderArg>,

    /// Shift each pruned layer's bias so that its mean output over the calibration data is
    /// unchanged: b += (W - W') E[x]. Layers without a bias are reported and left as they are.
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

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ScopeArg {
    Tensor,
    Global,
}

/// The samples a check runs both models on.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Check")]
pub struct SampleFlags {
    /// Input samples (repeatable): FILE.npz (keys are input names, first axis is the sample
    /// axis), a directory in the ONNX test-data layout (test_data_set_*/input_*.pb), or
    /// NAME=FILE.npy. Example: --inputs test_set.npz
    #[arg(long, value_name = "FILE|DIR|NAME=FILE")]
    pub inputs: Vec<String>,

    /// Draw N random samples for the inputs not given by --inputs (floats in [0, 1),
    /// integers in [0, 10)). Example: --random 100 --seed 7
    #[arg(long, value_name = "N")]
    pub random: Option<usize>,

    /// Seed of --random.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,

    /// Shape of an input drawn by --random that has dynamic dimensions, batch first
    /// (repeatable; it must agree with the dimensions the model fixes).
    /// Example: --shape images=1,3,224,224
    #[arg(long = "shape", value_name = "NAME=D,D,...")]
    pub shapes: Vec<String>,

    /// Class labels for top-1 accuracy of both models: FILE.npy or FILE.npz:KEY.
    /// Example: --labels test_set.npz:labels
    #[arg(long, value_name = "FILE")]
    pub labels: Option<String>,

    /// Samples per run where the model's batch dimension is free. Default: the fastest per
    /// sample of 1, 8 and 32, timed on the first samples (the metrics do not depend on it).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,

    /// Make input NAME a constant before tract analyses the models (repeatable): `If` nodes
    /// that branch on it are then decided and their branch inlined. Comma-separated values of
    /// the input's type. Example: --fix sr=16000
    #[arg(long = "fix", value_name = "NAME=VALUE")]
    pub fixes: Vec<String>,
}

/// Samples and tolerances of a check through tract.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Check")]
pub struct CheckFlags {
    #[command(flatten)]
    pub samples: SampleFlags,

    /// Absolute element-wise tolerance: an element passes when
    /// |candidate - reference| <= atol + rtol * |reference| (numpy.isclose, as Polygraphy).
    /// Not checked unless --atol or --rtol is given.
    #[arg(long, value_name = "X")]
    pub atol: Option<f64>,

    /// Relative element-wise tolerance (see --atol).
    #[arg(long, value_name = "X")]
    pub rtol: Option<f64>,

    /// Fail when the cosine similarity of any output falls below this. Default 0.99.
    #[arg(long, value_name = "X")]
    pub min_cosine: Option<f64>,

    /// Fail when the top-1 agreement of a class-score output falls below this.
    #[arg(long, value_name = "X")]
    pub min_agreement: Option<f64>,

    /// With --labels: fail when accuracy drops by more than this (0.01 = one point).
    /// Default 0.01.
    #[arg(long, value_name = "X")]
    pub max_accuracy_drop: Option<f64>,
}

impl CheckFlags {
    /// `--min-cosine` when not given.
    pub const DEFAULT_MIN_COSINE: f64 = 0.99;
    /// `--max-accuracy-drop` when not given.
    pub const DEFAULT_MAX_ACCURACY_DROP: f64 = 0.01;
}

impl CheckFlags {
    /// The flags given (those with defaults: when given another value than the default).
    pub fn given(&self) -> Vec<&'static str> {
        let defaults = CheckFlags::default().samples;
        let samples = &self.samples;
        [
            ("--inputs", !samples.inputs.is_empty()),
            ("--random", samples.random.is_some()),
            ("--seed", samples.seed != defaults.seed),
            ("--shape", !samples.shapes.is_empty()),
            ("--labels", samples.labels.is_some()),
            ("--batch-size", samples.batch_size != defaults.batch_size),
            ("--fix", !samples.fixes.is_empty()),
            ("--atol", self.atol.is_some()),
            ("--rtol", self.rtol.is_some()),
            ("--min-cosine", self.min_cosine.is_some()),
            ("--min-agreement", self.min_agreement.is_some()),
            ("--max-accuracy-drop", self.max_accuracy_drop.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect()
    }
}

impl Default for CheckFlags {
    fn default() -> Self {
        use clap::Parser;
        /// Parses no flags, so that the defaults live in one place: the `#[arg]` attributes.
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            flags: CheckFlags,
        }
        Defaults::parse_from(["defaults"]).flags
    }
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The reference model (e.g. the dense original).
    pub reference: PathBuf,

    /// The candidate model (e.g. the pruned one).
    pub candidate: PathBuf,

    #[command(flatten)]
    pub flags: CheckFlags,

    /// Also write the report as JSON to FILE (keys: passed, samples, outputs, accuracy, ...); a
    /// new path or a regular file, never one of the models or inputs.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The exported ONNX model to replay the masks onto.
    pub model: PathBuf,

    /// The mask-schedule manifest (format onnx-prune/mask-schedule, version 1).
    #[arg(long, value_name = "FILE")]
    pub schedule: PathBuf,

    /// Where to write the pruned model: a new path or a regular file (a symlink's target is
    /// replaced, the link kept); never an input. External data goes beside it.
    #[arg(
        short,
        long,
        value_name = "OUT",
        required_unless_present_any = ["all_steps", "in_place"],
        conflicts_with = "all_steps"
    )]
    pub output: Option<PathBuf>,

    /// Write over MODEL (and its external data files) instead of -o: each file is replaced
    /// atomically, so an interrupted run leaves the input as it was. Not with --check, which
    /// needs the original: replay to a new file, check it, then move it.
    #[arg(long, conflicts_with_all = ["output", "check", "all_steps"])]
    pub in_place: bool,

    #[command(flatten)]
    pub rewrite: OutputArgs,

    /// The step to replay (default: the last). Masks are cumulative: step N's masks are applied.
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        conflicts_with = "all_steps"
    )]
    pub step: Option<i64>,

    /// Replay every step, one model per step in --out-dir, and print the sparsity (and, with
    /// --check, the accuracy or agreement) of each: the curve to pick the step to ship from.
    /// Example: --all-steps --out-dir steps/ --check --inputs test.npz --labels test.npz:labels
    #[arg(long, requires = "out_dir")]
    pub all_steps: bool,

    /// Directory for --all-steps outputs, named <model>.step<N>.onnx.
    #[arg(long, value_name = "DIR", requires = "all_steps")]
    pub out_dir: Option<PathBuf>,

    /// With --all-steps --check: draw each step's sparsity and accuracy (or top-1 agreement,
    /// or cosine) as SVG to FILE, points labelled by step: the curve to pick a step from.
    #[arg(long, value_name = "FILE.svg", requires_all = ["all_steps", "check"])]
    pub plot: Option<PathBuf>,

    /// JSON object mapping training-side mask keys to weight ids, overriding name resolution.
    /// Example: {"encoder.fc.weight_mask": "val_20"}
    #[arg(long, value_name = "FILE")]
    pub map: Option<PathBuf>,

    /// Print how each mask key was resolved to a weight.
    #[arg(long)]
    pub explain: bool,

    /// Fail (exit 2) when the replayed step keeps weights that the step before it pruned,
    /// instead of warning.
    #[arg(long)]
    pub strict: bool,

    /// After writing, check the result against the input through tract (see the Check options).
    #[arg(long)]
    pub check: bool,

    #[command(flatten)]
    pub check_flags: CheckFlags,
}

#[derive(Debug, Args)]
pub struct SensitivityArgs {
    /// The ONNX model to analyse.
    pub model: PathBuf,

    /// Sparsities to try, comma-separated, each in (0, 1).
    #[arg(
        long,
        value_name = "LIST",
        default_value = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"
    )]
    pub sparsities: String,

    /// `weights`: each weight pruned alone (zeros, by --method and --pattern). `channels`:
    /// each open channel group shrunk alone, its least important channels removed as `shrink
    /// --sparsity` removes them (see `shrink --help`).
    #[arg(long, value_enum, default_value = "weights")]
    pub structure: StructureArg,

    /// `unstructured` or `block:RxC` (see `prune --help`); N:M fixes its own sparsity.
    #[arg(long, value_name = "PATTERN", default_value = "unstructured")]
    pub pattern: String,

    /// Analyse the weights (with --structure channels: the groups with a producer node) whose
    /// id matches REGEX instead of the default selection (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub include: Vec<String>,

    /// Leave the weights (or groups) matching REGEX out (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub exclude: Vec<String>,

    /// Weights with fewer elements are left out (see `prune --help`).
    #[arg(long, value_name = "N", default_value_t = onnx_prune_core::DEFAULT_MIN_PARAMS)]
    pub min_params: u64,

    #[command(flatten)]
    pub samples: SampleFlags,

    #[command(flatten)]
    pub calibration: CalibrationFlags,

    /// Also write the curves as JSON to FILE (keys: metric, pattern, sparsities, weights,
    /// samples).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Also draw the curves as SVG to FILE: one line per weight, labelled at its end.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}
