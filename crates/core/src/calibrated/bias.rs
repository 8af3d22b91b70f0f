//! Bias correction: shift a pruned layer's bias so that its mean output over the calibration
//! data is unchanged, `b += (W - W') E[x]` (per im2col column for a Conv).

use crate::calibrated::stats::LayerStats;
use crate::calibrated::view::{decode, encode, MatrixView};
use crate::error::Result;
use crate::model::{Model, Source};
use crate::rewrite::{Change, Edit};
use crate::values::dense_bytes;
use crate::weights::Weight;

/// The bias a layer adds to its output: its tensor and the factor its change takes (`alpha /
/// beta` for a `Gemm`, 1 otherwise); or why there is none to correct.
pub(crate) fn find(model: &Model, weight: &Weight, outputs: usize) -> Result<(usize, f64), String> {
    let consumer = weight.consumer.as_ref().ok_or("consumed by no node")?;
    let graph = &model.graphs()[consumer.graph];
    let node = &graph.nodes[consumer.node];
    let (name, scale) = match node.op_type.as_str() {
        "Conv" => (node.inputs.get(2).cloned(), 1.0),
        "Gemm" => {
            let alpha = f64::from(node.floats.get("alpha").copied().unwrap_or(1.0));
            let beta = f64::from(node.floats.get("beta").copied().unwrap_or(1.0));
            if beta == 0.0 {
                return Err("the Gemm's beta is 0: its C input cannot carry a correction".into());
            }
            (node.inputs.get(2).cloned(), alpha / beta)
        }
        "MatMul" => {
            // A bias added right after: the MatMul's only consumer is an Add of a constant.
            let output = node.outputs.first().ok_or("the MatMul has no output")?;
            let users: Vec<_> = graph
                .nodes
                .iter()
                .filter(|n| n.inputs.iter().any(|i| i == output))
                .collect();
            match users.as_slice() {
                [add] if add.op_type == "Add" => {
                    (add.inputs.iter().find(|i| *i != output).cloned(), 1.0)
                }
                _ => (None, 1.0),
            }
        }
        other => return Err(format!("{other} layers are not bias-corrected")),
    };
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Err("the layer has no bias; adding one is not supported yet".into());
    };
    let tensor = model
        .tensors()
        .iter()
        .position(|t| {
            t.graph == consumer.graph
                && t.name == name
                && t.sparse.is_none()
                && matches!(t.source, Source::Initializer | Source::Constant(_))
                && t.dtype.is_float()
        })
        .ok_or_else(|| format!("its bias `{name}` is not a dense float constant"))?;
    let bias = &model.tensors()[tensor];
    if bias.elements != outputs as u64 {
        return Err(format!(
            "its bias `{name}` has {} elements for {outputs} outputs",
            bias.elements
        ));
    }
    let users = graph
        .nodes
        .iter()
        .filter(|n| n.inputs.contains(&name))
        .count();
    if users != 1 {
        return Err(format!("its bias `{name}` is shared by {users} nodes"));
    }
    Ok((tensor, scale))
}

/// The shift of every output's bias: `scale * (W - W') E[x]`.
pub(crate) fn shift(
    view: &MatrixView,
    stats: &LayerStats,
    old: &[f64],
    new: &[f64],
    scale: f64,
) -> Vec<f64> {
    let means: Vec<Vec<f64>> = (0..view.groups).map(|g| stats.means(g)).collect();
    (0..view.rows)
        .map(|r| {
            let mean = &means[view.group(r)];
            scale
                * (0..view.cols)
                    .map(|c| {
                        let i = view.index(r, c);
                        (old[i] - new[i]) * mean[c]
                    })
                    .sum::<f64>()
        })
        .collect()
}

/// The edit adding `shift` to the bias `tensor`, in the bias's own element type.
pub(crate) fn edit(model: &Model, tensor: usize, shift: &[f64]) -> Result<Edit> {
    let bias = &model.tensors()[tensor];
    let values: Vec<f64> = decode(bias.dtype, &dense_bytes(model, bias)?)
        .iter()
        .zip(shift)
        .map(|(b, d)| b + d)
        .collect();
    let bytes = encode(bias.dtype, &values, &vec![false; values.len()]);
    Ok(Edit {
        tensor,
        change: Change::Replace(bytes),
    })
}
