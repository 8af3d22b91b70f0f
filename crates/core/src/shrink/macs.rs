//! Multiply-accumulates of one inference: for every Conv, ConvTranspose, Gemm and MatMul of the
//! main graph, output elements times the length of the reduction (for ConvTranspose, input
//! elements times the kernel it spreads each over). Shapes come from an engine as plain data.

use std::collections::BTreeMap;

use crate::model::{Model, Source};

fn product(dims: &[usize]) -> u64 {
    dims.iter().map(|&d| d as u64).product()
}

/// The values whose shapes [`macs`] needs: each such node's first input and first output.
pub fn mac_values(model: &Model) -> Vec<String> {
    let mut names = Vec::new();
    for node in &model.graphs()[0].nodes {
        if matches!(
            node.op_type.as_str(),
            "Conv" | "ConvTranspose" | "Gemm" | "MatMul"
        ) {
            names.extend(node.inputs.first().cloned());
            names.extend(node.outputs.first().cloned());
        }
    }
    names.retain(|n| !n.is_empty());
    names.sort();
    names.dedup();
    names
}

/// The multiply-accumulates of one inference with the values at `shapes` (by name); `None`
/// when a shape is missing.
pub fn macs(model: &Model, shapes: &BTreeMap<String, Vec<usize>>) -> Option<u64> {
    let dims_of = |name: &str| -> Option<Vec<usize>> {
        model
            .tensors()
            .iter()
            .find(|t| {
                t.graph == 0
                    && t.name == name
                    && matches!(t.source, Source::Initializer | Source::Constant(_))
            })
            .map(|t| t.dims.iter().map(|&d| d.max(0) as usize).collect())
            .or_else(|| shapes.get(name).cloned())
    };
    let mut total = 0u64;
    for node in &model.graphs()[0].nodes {
        let (op, inputs) = (node.op_type.as_str(), &node.inputs);
        let output = || shapes.get(node.outputs.first()?);
        total += match op {
            "Conv" => product(output()?) * product(&dims_of(&inputs[1])?[1..]),
            "ConvTranspose" => product(&dims_of(&inputs[0])?) * product(&dims_of(&inputs[1])?[1..]),
            "Gemm" => {
                let a = dims_of(&inputs[0])?;
                let k = if node.ints.get("transA").copied().unwrap_or(0) != 0 {
                    a[0]
                } else {
                    *a.last()?
                };
                product(output()?) * k as u64
            }
            "MatMul" => product(output()?) * *dims_of(&inputs[0])?.last()? as u64,
            _ => 0,
        };
    }
    Some(total)
}
