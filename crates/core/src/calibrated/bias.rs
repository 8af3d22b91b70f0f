//! Bias correction: shift a pruned layer's bias so that its mean output over the calibration
//! data is unchanged, `b += (W - W') E[x]` (per im2col column for a Conv).

use crate::calibrated::stats::LayerStats;
use crate::calibrated::view::{decode, encode, MatrixView};
use crate::error::Result;
use crate::model::values::dense_bytes;
use crate::model::weights::Weight;
use crate::model::{Model, Source};
use crate::write::add_bias::{names_in_use, unique, BiasAdd, NewBias};
use crate::write::Edit;

/// Where a layer's bias correction goes.
pub(crate) enum Bias {
    /// Its bias tensor, and the factor a change takes (`alpha / beta` for a `Gemm`, else 1).
    Existing { tensor: usize, scale: f64 },
    /// It has none: one is added (see [`NewBias`]); a `MatMul` gets an `Add` after it.
    New { node: usize, scale: f64, add: bool },
}

/// The bias a layer adds to its output, or why it cannot take a correction.
pub(crate) fn find(model: &Model, weight: &Weight, outputs: usize) -> Result<Bias, String> {
    let consumer = weight.consumer.as_ref().ok_or("consumed by no node")?;
    let graph = &model.graphs()[consumer.graph];
    let node = &graph.nodes[consumer.node];
    let new = |scale: f64, add: bool| {
        if consumer.graph != 0 {
            return Err("the layer has no bias, and one is added in the main graph only".into());
        }
        Ok(Bias::New {
            node: consumer.node,
            scale,
            add,
        })
    };
    let third = || node.inputs.get(2).filter(|n| !n.is_empty()).cloned();
    let (name, scale) = match node.op_type.as_str() {
        "Conv" => match third() {
            Some(name) => (name, 1.0),
            None => return new(1.0, false),
        },
        "Gemm" => {
            let alpha = f64::from(node.floats.get("alpha").copied().unwrap_or(1.0));
            let beta = f64::from(node.floats.get("beta").copied().unwrap_or(1.0));
            if beta == 0.0 {
                return Err("the Gemm's beta is 0: its C input cannot carry a correction".into());
            }
            match third() {
                Some(name) => (name, alpha / beta),
                None => return new(alpha / beta, false),
            }
        }
        "MatMul" => {
            // A bias added right after: the MatMul's only consumer adds a constant of one
            // element per output. Anything else (a residual Add, several consumers) gets an Add
            // of its own.
            let output = node.outputs.first().ok_or("the MatMul has no output")?;
            let users: Vec<_> = graph
                .nodes
                .iter()
                .filter(|n| n.inputs.iter().any(|i| i == output))
                .collect();
            let existing = match users.as_slice() {
                [add] if add.op_type == "Add" => add
                    .inputs
                    .iter()
                    .find(|i| *i != output)
                    .and_then(|name| constant(model, consumer.graph, name, outputs).ok()),
                _ => None,
            };
            match existing {
                Some(tensor) if shared_by(model, consumer.graph, tensor) == 1 => {
                    return Ok(Bias::Existing { tensor, scale: 1.0 })
                }
                _ => return new(1.0, true),
            }
        }
        other => return Err(format!("{other} layers are not bias-corrected")),
    };
    let tensor = constant(model, consumer.graph, &name, outputs)?;
    let users = shared_by(model, consumer.graph, tensor);
    if users != 1 {
        return Err(format!("its bias `{name}` is shared by {users} nodes"));
    }
    Ok(Bias::Existing { tensor, scale })
}

/// The dense float constant `name` of `graph` with one element per output.
fn constant(model: &Model, graph: usize, name: &str, outputs: usize) -> Result<usize, String> {
    let tensor = model
        .tensors()
        .iter()
        .position(|t| {
            t.graph == graph
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
    Ok(tensor)
}

/// How many nodes of `graph` read `tensor`.
fn shared_by(model: &Model, graph: usize, tensor: usize) -> usize {
    let name = &model.tensors()[tensor].name;
    model.graphs()[graph]
        .nodes
        .iter()
        .filter(|n| n.inputs.contains(name))
        .count()
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
    Ok(Edit::replace(tensor, bytes))
}

/// The edit giving main-graph node `node` a new bias of `shift` (in `weight`'s element type),
/// and the report's note. New names are built from the node's output name, which no other node
/// produces, with suffixes that differ by kind, and made unused in the model: so they collide
/// neither with the model's names nor with each other.
pub(crate) fn add(
    model: &Model,
    weight: &Weight,
    node: usize,
    add: bool,
    shift: &[f64],
) -> (Edit, String) {
    let layer = &model.graphs()[0].nodes[node];
    let output = layer.outputs.first().cloned().unwrap_or_default();
    let taken = names_in_use(model);
    let name = unique(&format!("{output}.bias"), &taken);
    let dtype = model.tensors()[weight.tensor].dtype;
    let data = encode(dtype, shift, &vec![false; shift.len()]);
    let op = &layer.op_type;
    let (add, note) = if add {
        let renamed = unique(&format!("{output}.unbiased"), &taken);
        let node_name = unique(&format!("{}.bias_add", layer.label(node)), &taken);
        let note = format!(
            "bias `{name}` added by an Add `{node_name}` after the {op} (its output renamed \
             `{renamed}`), and corrected"
        );
        (Some(BiasAdd { renamed, node_name }), note)
    } else {
        (
            None,
            format!("bias `{name}` added as the {op}'s third input, and corrected"),
        )
    };
    let bias = NewBias {
        node,
        name,
        dtype,
        data,
        add,
    };
    (Edit::AddBias(bias), note)
}
