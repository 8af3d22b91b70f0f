//! Weight discovery: every floating-point constant tensor of the model, with a stable id that
//! says where it lives, the op that consumes it and the role that consumption gives it.

use std::collections::HashMap;

use crate::model::{Graph, Model, Source, Tensor};

/// Weights with fewer elements than this are not pruned by default.
pub const DEFAULT_MIN_PARAMS: u64 = 256;

/// What a weight is for, read from the op that consumes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `Conv` input `W`, `[M, C/group, kH, kW]`.
    ConvWeight,
    /// `ConvTranspose` input `W`, `[C, M/group, kH, kW]`.
    ConvTransposeWeight,
    /// `Gemm` input `A` held as a constant.
    GemmA,
    /// `Gemm` input `B`.
    GemmB,
    /// A constant operand of `MatMul`.
    MatmulWeight,
    /// `LSTM`/`GRU`/`RNN` input weights `W`.
    RnnW,
    /// `LSTM`/`GRU`/`RNN` recurrent weights `R`.
    RnnR,
    /// `Gather` data: an embedding table.
    Embedding,
    /// A bias: `Conv`/`Gemm`/RNN `B`, or a vector added to a result.
    Bias,
    /// A normalisation parameter (scale, bias, mean, variance).
    Norm,
    /// A shape or index parameter (a `Reshape`/`Expand`/`Tile` shape, `Slice`/`Pad`
    /// parameters, `Resize` scales, a `Range` bound...): never pruned, not even when named.
    Shape,
    /// Consumed otherwise.
    Other,
    /// Consumed by no node.
    Unused,
}

impl Role {
    /// Whether weights of this role are pruned by default.
    pub fn prunable(self) -> bool {
        matches!(
            self,
            Role::ConvWeight
                | Role::ConvTransposeWeight
                | Role::GemmB
                | Role::MatmulWeight
                | Role::RnnW
                | Role::RnnR
        )
    }

    /// The role's name as it appears in reports.
    pub fn name(self) -> &'static str {
        match self {
            Role::ConvWeight => "conv_weight",
            Role::ConvTransposeWeight => "conv_transpose_weight",
            Role::GemmA => "gemm_a",
            Role::GemmB => "gemm_b",
            Role::MatmulWeight => "matmul_weight",
            Role::RnnW => "rnn_w",
            Role::RnnR => "rnn_r",
            Role::Embedding => "embedding",
            Role::Bias => "bias",
            Role::Norm => "norm",
            Role::Shape => "shape",
            Role::Other => "other",
            Role::Unused => "unused",
        }
    }
}

/// The node that consumes a weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// Graph index.
    pub graph: usize,
    /// Node index in that graph.
    pub node: usize,
    /// The node's label (name, or `<op_type>_<index>`).
    pub label: String,
    /// `op_type`.
    pub op_type: String,
    /// Which input the weight feeds.
    pub input: usize,
}

/// A floating-point constant tensor of the model.
#[derive(Debug, Clone)]
pub struct Weight {
    /// Index into [`Model::tensors`].
    pub tensor: usize,
    /// Stable id: the tensor name for a main-graph initializer, `Constant:<output>` for a
    /// `Constant` node, prefixed by the subgraph path (`If_0/then_branch/...`) inside subgraphs.
    pub id: String,
    /// `initializer`, `constant` or `subgraph:<path>`.
    pub location: String,
    /// First consuming node, if any.
    pub consumer: Option<Consumer>,
    /// Role given by the consumer.
    pub role: Role,
    /// The reduction (input) axis of the consuming op, along which N:M groups run.
    pub reduction_axis: Option<usize>,
    /// Whether the default selection prunes it (role, rank and size).
    pub prunable: bool,
}

/// Lists every floating-point constant tensor of `model`, in file order.
pub fn discover(model: &Model) -> Vec<Weight> {
    discover_with(model, DEFAULT_MIN_PARAMS)
}

/// As [`discover`], with another minimum size for the default selection.
pub fn discover_with(model: &Model, min_params: u64) -> Vec<Weight> {
    let graphs = model.graphs();
    let consumers = consumer_index(graphs);
    let mut seen: HashMap<String, usize> = HashMap::new();
    model
        .tensors()
        .iter()
        .enumerate()
        .filter(|(_, t)| t.dtype.is_float())
        .map(|(index, tensor)| {
            let graph = &graphs[tensor.graph];
            let local = match tensor.source {
                Source::Constant(_) | Source::SparseConstant(_) => {
                    format!("Constant:{}", tensor.name)
                }
                Source::Initializer | Source::SparseInitializer => tensor.name.clone(),
            };
            let (mut id, location) = if graph.path.is_empty() {
                let location = match tensor.source {
                    Source::Constant(_) | Source::SparseConstant(_) => "constant",
                    _ => "initializer",
                };
                (local, location.to_string())
            } else {
                (
                    format!("{}/{local}", graph.path),
                    format!("subgraph:{}", graph.path),
                )
            };
            let count = seen.entry(id.clone()).or_default();
            *count += 1;
            if *count > 1 {
                id = format!("{id}#{count}");
            }
            let (consumer, axes) = computing_consumer(graphs, &consumers, tensor);
            let (role, reduction_axis) = consumer
                .as_ref()
                .map(|c| role_of(graphs, c, tensor))
                .unwrap_or((Role::Unused, None));
            // The reduction axis is the consumer's; through layout ops, in the weight's layout.
            let reduction_axis =
                reduction_axis.and_then(|a| axes.as_ref().and_then(|axes| axes.get(a).copied()));
            let prunable = default_candidate(role, tensor) && tensor.elements >= min_params;
            Weight {
                tensor: index,
                id,
                location,
                consumer,
                role,
                reduction_axis,
                prunable,
            }
        })
        .collect()
}

/// Whether the default selection takes a weight of this role and shape, size aside: the
/// computing roles, of rank 2 or more.
pub(crate) fn default_candidate(role: Role, tensor: &Tensor) -> bool {
    role.prunable() && tensor.dims.len() >= 2
}

type ConsumerIndex<'g> = HashMap<&'g str, Vec<(usize, usize, usize)>>;

fn consumer_index(graphs: &[Graph]) -> ConsumerIndex<'_> {
    let mut index: ConsumerIndex = HashMap::new();
    for (g, graph) in graphs.iter().enumerate() {
        for (n, node) in graph.nodes.iter().enumerate() {
            for (i, input) in node.inputs.iter().enumerate() {
                index.entry(input.as_str()).or_default().push((g, n, i));
            }
        }
    }
    index
}

fn is_within(graphs: &[Graph], mut graph: usize, ancestor: usize) -> bool {
    loop {
        if graph == ancestor {
            return true;
        }
        match graphs[graph].parent {
            Some(parent) => graph = parent,
            None => return false,
        }
    }
}

/// Ops that only move, select or retype elements: a weight that reaches a computing op through
/// them (an LSTM cell's weights through `Slice` and `Transpose` to `MatMul`, as exporters write
/// them) gets the role that op gives it.
const LAYOUT_OPS: &[&str] = &[
    "Identity",
    "Cast",
    "Slice",
    "Transpose",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
];

/// The first consumer of `tensor` that computes with it, following single-output layout ops,
/// and, per axis of the tensor that consumer sees, the weight's own axis (`None` once a layout
/// op makes that unknown: a reshape, a transpose of rank above 2).
fn computing_consumer(
    graphs: &[Graph],
    index: &ConsumerIndex,
    tensor: &Tensor,
) -> (Option<Consumer>, Option<Vec<usize>>) {
    let rank = tensor.dims.len();
    let mut axes: Option<Vec<usize>> = Some((0..rank).collect());
    let Some(mut consumer) = first_consumer(graphs, index, &tensor.name, tensor.graph) else {
        return (None, axes);
    };
    // Bounded: a graph is acyclic, but a malformed one must not loop forever.
    for _ in 0..16 {
        let node = &graphs[consumer.graph].nodes[consumer.node];
        if consumer.input != 0
            || node.outputs.len() != 1
            || !LAYOUT_OPS.contains(&node.op_type.as_str())
        {
            break;
        }
        let Some(next) = first_consumer(graphs, index, &node.outputs[0], consumer.graph) else {
            break;
        };
        axes = match node.op_type.as_str() {
            "Identity" | "Cast" | "Slice" => axes,
            "Transpose" if axes.as_ref().is_some_and(|a| a.len() == 2) => {
                axes.map(|a| vec![a[1], a[0]])
            }
            _ => None,
        };
        consumer = next;
    }
    (Some(consumer), axes)
}

fn first_consumer(
    graphs: &[Graph],
    index: &ConsumerIndex,
    name: &str,
    graph: usize,
) -> Option<Consumer> {
    let uses = index.get(name)?;
    // Prefer a consumer in the value's own graph, then one in a nested subgraph.
    let (graph, node, input) = uses
        .iter()
        .find(|(g, _, _)| *g == graph)
        .or_else(|| uses.iter().find(|(g, _, _)| is_within(graphs, *g, graph)))?;
    let n = &graphs[*graph].nodes[*node];
    Some(Consumer {
        graph: *graph,
        node: *node,
        label: n.label(*node),
        op_type: n.op_type.clone(),
        input: *input,
    })
}

fn role_of(graphs: &[Graph], consumer: &Consumer, tensor: &Tensor) -> (Role, Option<usize>) {
    let node = &graphs[consumer.graph].nodes[consumer.node];
    let int = |name: &str| node.ints.get(name).copied().unwrap_or(0);
    let rank = tensor.dims.len();
    match (node.op_type.as_str(), consumer.input) {
        ("Conv", 1) => (Role::ConvWeight, Some(1)),
        ("ConvTranspose", 1) => (Role::ConvTransposeWeight, Some(0)),
        ("Conv" | "ConvTranspose" | "Gemm", 2) => (Role::Bias, None),
        ("Gemm", 0) => (Role::GemmA, Some(if int("transA") != 0 { 0 } else { 1 })),
        ("Gemm", 1) => (Role::GemmB, Some(if int("transB") != 0 { 1 } else { 0 })),
        ("MatMul", 1) if rank >= 2 => (Role::MatmulWeight, Some(rank - 2)),
        ("MatMul", 0) if rank >= 2 => (Role::MatmulWeight, Some(rank - 1)),
        ("LSTM" | "GRU" | "RNN", 1) => (Role::RnnW, Some(2)),
        ("LSTM" | "GRU" | "RNN", 2) => (Role::RnnR, Some(2)),
        ("LSTM" | "GRU" | "RNN", 3) => (Role::Bias, None),
        ("Gather", 0) => (Role::Embedding, None),
        (
            "BatchNormalization"
            | "InstanceNormalization"
            | "LayerNormalization"
            | "GroupNormalization"
            | "SimplifiedLayerNormalization"
            | "RMSNormalization",
            1..,
        ) => (Role::Norm, None),
        ("Add", _) if rank <= 1 => (Role::Bias, None),
        (
            "Reshape" | "Expand" | "Tile" | "Squeeze" | "Unsqueeze" | "Split" | "TopK" | "Upsample"
            | "ReduceSum" | "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1"
            | "ReduceL2" | "ReduceLogSumExp" | "ReduceSumSquare" | "CumSum",
            1,
        )
        | ("Slice" | "Pad" | "Resize" | "OneHot", 1..)
        | ("Range" | "ConstantOfShape", _) => (Role::Shape, None),
        _ => (Role::Other, None),
    }
}
