//! Multiply-accumulates of one inference, before and after a rewrite, from the value shapes
//! tract infers (the counting itself is in the core crate, [`onnx_prune_core::shrink::macs`]).

use std::collections::BTreeMap;

use onnx_prune_core::shrink;
use onnx_prune_core::Model;

use crate::error::{Error, Result};

/// Multiply-accumulates of `model` at the input shapes `given` (by name; free dimensions
/// otherwise as declared).
pub fn macs(model: &Model, given: &BTreeMap<String, Vec<usize>>) -> Result<u64> {
    let shapes =
        onnx_prune_verify::value_shapes(model, model.bytes(), &shrink::mac_values(model), given)?;
    shrink::macs(model, &shapes).ok_or_else(|| Error::Usage("a value's shape is unknown".into()))
}

/// Multiply-accumulates of `model` and of `output` (the model written from it).
pub fn macs_before_after(
    model: &Model,
    output: &Model,
    given: &BTreeMap<String, Vec<usize>>,
) -> Result<(u64, u64)> {
    Ok((macs(model, given)?, macs(output, given)?))
}
