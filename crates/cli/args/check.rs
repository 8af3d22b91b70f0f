//! Flags of a check through tract: `check` itself, and `--check` on the commands that write.

use std::path::PathBuf;

use clap::Args;

/// The samples a check runs both models on.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Check")]
pub struct SampleFlags {
    /// Input samples (repeatable): FILE.npz (keys are input names, first axis is the sample
    /// axis), a directory in the ONNX test-data layout (test_data_set_*/input_*.pb), or
    /// NAME=FILE.npy.
    ///
    /// Example: --inputs test_set.npz
    #[arg(long, value_name = "FILE|DIR|NAME=FILE")]
    pub inputs: Vec<String>,

    /// Draw N random samples for the inputs not given by --inputs (floats in [0, 1),
    /// integers in [0, 10)).
    ///
    /// Example: --random 100 --seed 7
    #[arg(long, value_name = "N")]
    pub random: Option<usize>,

    /// Seed of --random.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,

    /// Shape of an input drawn by --random that has dynamic dimensions, batch first
    /// (repeatable; it must agree with the dimensions the model fixes). shrink also counts MACs
    /// at it, with or without --check (else free dimensions count as 1).
    ///
    /// Example: --shape images=1,3,224,224
    #[arg(long = "shape", value_name = "NAME=D,D,...")]
    pub shapes: Vec<String>,

    /// Class labels for top-1 accuracy of both models: FILE.npy or FILE.npz:KEY.
    ///
    /// Example: --labels test_set.npz:labels
    #[arg(long, value_name = "FILE")]
    pub labels: Option<String>,

    /// Samples per run where the model's batch dimension is free. Default: the fastest per
    /// sample of 1, 8 and 32, timed on the first samples (the metrics do not depend on it).
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,

    /// Make input NAME a constant before tract analyses the models (repeatable): `If` nodes
    /// that branch on it are then decided and their branch inlined. Comma-separated values of
    /// the input's type.
    ///
    /// Example: --fix sr=16000
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
