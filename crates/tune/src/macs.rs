//! Multiply-accumulates of one inference, before and after a rewrite, from the value shapes
//! tract infers (the counting itself is in the core crate, [`onnx_prune_core::shrink::macs`]).

use std::collections::BTreeMap;

use onnx_prune_core::shrink;
use onnx_prune_core::Model;

use crate::error::{Error, Result};

/// Multiply-accumulates of `model` at the input shapes `given` (by name; free dimensions
/// otherwise 1, see [`free_inputs`]).
pub fn macs(model: &Model, given: &BTreeMap<String, Vec<usize>>) -> Result<u64> {
    let shapes =
        onnx_prune_verify::value_shapes(model, model.bytes(), &shrink::mac_values(model), given)?;
    shrink::macs(model, &shapes).ok_or_else(|| Error::Usage("a value's shape is unknown".into()))
}

/// The inputs of `model` that declare a free (symbolic or unknown) dimension and whose shape
/// `given` does not set: MACs count them with every free dimension 1.
pub fn free_inputs(model: &Model, given: &BTreeMap<String, Vec<usize>>) -> Vec<String> {
    model
        .graph_inputs()
        .into_iter()
        .filter(|i| !given.contains_key(&i.name))
        .filter(|i| i.dims.iter().any(Option::is_none))
        .map(|i| i.name.clone())
        .collect()
}

/// Multiply-accumulates of a model and of the model written from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacCount {
    /// Of the model.
    pub before: u64,
    /// Of the model written from it.
    pub after: u64,
    /// The inputs counted with their free dimensions 1 ([`free_inputs`]).
    pub free_inputs: Vec<String>,
}

/// Multiply-accumulates of `model` and of `output` (the model written from it).
pub fn macs_before_after(
    model: &Model,
    output: &Model,
    given: &BTreeMap<String, Vec<usize>>,
) -> Result<MacCount> {
    Ok(MacCount {
        before: macs(model, given)?,
        after: macs(output, given)?,
        free_inputs: free_inputs(model, given),
    })
}
