//! Flags of `shrink`.

use std::path::PathBuf;

use clap::Args;

use super::{parse_sparsity, CheckFlags, JobsFlag, SparsityArg};

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
    /// group's share drawn from its sensitivity curve (as `prune --sparsity auto`); with
    /// --calibration, every candidate ranks channels and refits consumers as a fixed fraction
    /// does.
    ///
    /// Example: --sparsity 0.3
    ///
    /// Example: --sparsity auto --inputs t.npz --min-cosine 0.99
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
    /// rounded up, and a group is never emptied).
    ///
    /// Example: --round-to 8
    #[arg(long, value_name = "N")]
    pub round_to: Option<usize>,

    /// Shrink only the groups with a producer node matching REGEX (repeatable).
    ///
    /// Example: --include 'layer[34]'
    #[arg(long, value_name = "REGEX")]
    pub include: Vec<String>,

    /// Leave alone the groups with a producer node matching REGEX (repeatable).
    ///
    /// Example: --exclude '^/head/'
    #[arg(long, value_name = "REGEX")]
    pub exclude: Vec<String>,

    /// With --sparsity: score channels by what their consumers make of them on calibration
    /// samples, sum over consumers of ||W_consumer[:, c]|| * ||X_c||, instead of by weights
    /// alone, then refit the consumers' kept weights by least squares on the same samples
    /// (repeatable): FILE.npz (sample axis first), a test-data DIR, or NAME=FILE.npy.
    ///
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

    /// Drop the N transformer layers of least block influence, 1 - E[cos(x_in, x_out)] over
    /// the tokens of the --calibration samples (ShortGPT); needs --calibration. A layer is an
    /// attention block of the residual stream with the blocks after it (its FFN); --dry-run
    /// lists the layers found and their influence.
    ///
    /// `auto`: drop the 1, 2, ... least influential layers while the check passes (its
    /// tolerances, --inputs and --labels as for --sparsity auto), write the most that pass
    /// and check them once more.
    ///
    /// Example: --drop-layers 2 --calibration calib.npz
    ///
    /// Example: --drop-layers auto --calibration calib.npz --min-cosine 0.99
    #[arg(long, value_name = "N|auto", value_parser = parse_drop_layers)]
    pub drop_layers: Option<DropLayersArg>,

    /// Keep only these token ids' rows of the embedding table (repeatable; the lists add up):
    /// a text file of integers (one per line or whitespace-separated) or a .npy of integers,
    /// as INPUT=FILE to name the integer input whose table it is. Ids not kept read as
    /// --unknown-token through a remap Gather, so the inputs keep their meaning.
    ///
    /// Example: --vocab ids.txt --unknown-token 100 --keep-token 0,101,102
    #[arg(long, value_name = "[INPUT=]FILE")]
    pub vocab: Vec<String>,

    /// Keep every token id that occurs in an array of a .npz (repeatable), as --vocab does;
    /// KEY, when it is the name of an input, names the input whose table it is.
    ///
    /// Example: --vocab-from train.npz:input_ids --unknown-token 100
    #[arg(long, value_name = "DATA.npz:KEY")]
    pub vocab_from: Vec<String>,

    /// With --vocab/--vocab-from: token ids kept whatever the lists say, such as special
    /// tokens (several after the flag, comma-separated, or the flag repeated).
    ///
    /// Example: --keep-token 0 101 102
    #[arg(long, value_name = "ID", num_args = 1.., value_delimiter = ',')]
    pub keep_token: Vec<i64>,

    /// With --vocab/--vocab-from (required): the id that every id not kept reads as; it must be
    /// kept.
    ///
    /// Example: --unknown-token 100
    #[arg(long, value_name = "ID")]
    pub unknown_token: Option<i64>,

    /// Let attention heads go that a graph input or output holds too (a KV cache:
    /// `past_key_values.*` inputs, `present.*` outputs, the caches of onnxruntime's fused
    /// attention): their head axis gets the kept count, the same heads go from the cache
    /// inputs, and the caller feeds and reads caches of the new shape. The report's
    /// `interface_changes` lists them. Without it such groups stay whole (--dry-run names them).
    #[arg(long)]
    pub allow_interface_change: bool,

    /// List every channel group (producers, consumers, the nodes in between, channel count)
    /// and every blocked one with the node that blocks it; with --drop-layers the layers found
    /// and their influence instead, with --vocab the embedding tables; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub jobs: JobsFlag,

    /// Write a JSON report: per group producers, consumers, channels_before, channels_after
    /// and removed; totals params_before/after, bytes_before/after (the model and its external
    /// data files on disk) and macs_before/after; with --drop-layers, `layers` (every layer's
    /// influence, which were removed); with --vocab, `vocabulary` (rows_before, rows_after);
    /// with --allow-interface-change, `interface_changes` (the cache inputs and outputs whose
    /// head axis changed, and the positions removed).
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

/// `--drop-layers N|auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropLayersArg {
    /// Drop this many layers.
    Count(usize),
    /// As many as the check allows.
    Auto,
}

/// `--drop-layers N|auto`: a count, or `auto` for the budget search.
fn parse_drop_layers(text: &str) -> Result<DropLayersArg, String> {
    if text == "auto" {
        return Ok(DropLayersArg::Auto);
    }
    text.parse()
        .map(DropLayersArg::Count)
        .map_err(|_| format!("`{text}` is not a number of layers (or `auto`)"))
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ShrinkScopeArg {
    Group,
    Global,
}
