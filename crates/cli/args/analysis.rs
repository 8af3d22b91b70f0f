//! Flags of `replay` and `sensitivity`.

use std::path::PathBuf;

use clap::Args;

use super::{CalibrationFlags, CheckFlags, JobsFlag, OutputArgs, SampleFlags};

/// The sparsities `sensitivity` tries unless told.
pub const DEFAULT_SPARSITIES: &str = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9";

/// What `sensitivity` prunes at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StructureArg {
    Weights,
    Channels,
    Heads,
    Layers,
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

    /// Write over MODEL (and its external data files) instead of -o: changed data files are
    /// written under new names and the model pointing at them renamed into place last, so an
    /// interrupted run leaves the input as it was. A file you may not write is refused, as cp
    /// would. Not with --check, which
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
    ///
    /// Example: --all-steps --out-dir steps/ --check --inputs test.npz
    #[arg(long, requires = "out_dir")]
    pub all_steps: bool,

    /// Directory for --all-steps outputs, named `<model>.step<N>.onnx`.
    #[arg(long, value_name = "DIR", requires = "all_steps")]
    pub out_dir: Option<PathBuf>,

    /// With --all-steps --check: draw each step's sparsity and accuracy (or top-1 agreement,
    /// or cosine) as SVG to FILE, points labelled by step: the curve to pick a step from.
    #[arg(long, value_name = "FILE.svg", requires_all = ["all_steps", "check"])]
    pub plot: Option<PathBuf>,

    /// JSON object mapping training-side mask keys to weight ids, overriding name resolution.
    ///
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
        default_value = DEFAULT_SPARSITIES
    )]
    pub sparsities: String,

    /// `weights`: each weight pruned alone (zeros, by --method and --pattern). `channels`:
    /// each open channel group shrunk alone, its least important channels removed as `shrink
    /// --sparsity` removes them (see `shrink --help`); with --calibration, ranked by their
    /// consumers' activations and the consumers refitted. `heads`: the same for the attention
    /// head groups only, a head at a time. `layers`: each layer of the residual stream dropped
    /// alone (see `shrink --drop-layers`), one column.
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
    pub jobs: JobsFlag,

    #[command(flatten)]
    pub samples: SampleFlags,

    #[command(flatten)]
    pub calibration: CalibrationFlags,

    /// Also write the curves as JSON to FILE (keys: metric, pattern, sparsities, weights,
    /// samples).
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub report: Option<PathBuf>,

    /// Also draw the curves as SVG to FILE: one line per weight, labelled at its end.
    #[arg(long, value_name = "FILE.svg", help_heading = "Output")]
    pub plot: Option<PathBuf>,
}
