//! The entry point of verification: run a reference and a candidate model on the same samples
//! and measure how far apart their outputs are, against named tolerances.

use onnx_prune_core::Model;

use crate::error::Result;
use crate::inputs::read_labels;
use crate::options::CheckOptions;
use crate::prepare::prepare;
use crate::reference::{Keep, Reference};
use crate::report::CheckReport;

/// Class labels from `FILE.npy` or `FILE.npz:KEY`, one class index per sample (one-hot rows
/// are read as their arg-max).
pub fn labels(spec: &str) -> Result<Vec<i64>> {
    read_labels(spec, None, &mut Vec::new())
}

/// Reads and checks everything a check of a candidate against `reference` with `options`
/// needs (flags, input files, labels) without running a model: for commands that write a
/// file before they check it, so that bad input is refused before the first byte is written.
pub fn validate(reference: &Model, options: &CheckOptions) -> Result<()> {
    prepare(reference, options).map(|_| ())
}

/// Runs `reference` and `candidate` on the samples the options describe and compares every
/// output (a model with sparse tensors runs densified). To compare several candidates with
/// one reference, load a [`Reference`] once instead.
pub fn check(reference: &Model, candidate: &Model, options: &CheckOptions) -> Result<CheckReport> {
    Reference::load(reference, options, Keep::Nothing)?.compare(candidate)
}
