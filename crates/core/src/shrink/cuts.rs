//! What the channel walk records about constants and attributes: the weight axes that carry a
//! group's channels ([`Cut`]) and the counts that follow the kept channels ([`Recount`]).

use super::layout::Owner;

/// What a cut weight axis is to its group: the weights that make the channel, those that read
/// it, or per-channel parameters on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CutKind {
    /// Producer weights and biases (out-channel axis).
    Producer,
    /// Consumer weights (reduction axis).
    Consumer,
    /// Per-channel parameters (normalisation, PRelu slopes, Mul/Add constants, depthwise).
    Param,
}

/// One axis of one constant tensor whose positions carry group channels.
#[derive(Debug, Clone)]
pub(crate) struct Cut {
    /// Index into [`Model::tensors`](crate::model::Model::tensors).
    pub tensor: usize,
    /// The axis.
    pub axis: usize,
    /// The owner of each position on the axis (once the walk is finished: group index, unit).
    pub owners: Vec<Owner>,
    /// What the tensor is to the group.
    pub kind: CutKind,
    /// For a consumer: the activation it reads and the axis of that activation whose indices
    /// are this cut's positions (folded modulo the positions for grouped convolutions).
    pub reads: Option<(String, i64)>,
    /// For a constant other nodes read too: the input (node, input) that reads this cut's
    /// slice from a copy of its own, so that the other readers keep theirs.
    pub reader: Option<(usize, usize)>,
}

/// A constant input a cut can slice: the tensor and, when other node inputs read it too, the
/// input (node, input) that gets its own sliced copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Operand {
    /// Index into [`Model::tensors`](crate::model::Model::tensors).
    pub tensor: usize,
    /// The reading input, for a shared constant.
    pub reader: Option<(usize, usize)>,
}

/// A count that follows the channels: fixed, or the kept positions among `owners`.
#[derive(Debug, Clone)]
pub(crate) enum Count {
    /// Stays as it is.
    Fixed(i64),
    /// The number of positions of these owners that are kept.
    Kept(Vec<Owner>),
}

/// A node attribute or shape tensor whose value follows the channel count.
#[derive(Debug, Clone)]
pub(crate) enum Recount {
    /// An integer attribute (a depthwise Conv's `group`).
    Int {
        node: usize,
        attr: &'static str,
        count: Count,
    },
    /// An integer-list attribute (Split's `split`, Slice's `starts`/`ends` before opset 10).
    Ints {
        node: usize,
        attr: &'static str,
        counts: Vec<Count>,
    },
    /// A constant integer tensor (Split sizes, Slice bounds, Reshape target, Resize sizes).
    Tensor { tensor: usize, counts: Vec<Count> },
    /// Such a tensor that other nodes read too: input `input` of `node` gets its own copy.
    Input {
        node: usize,
        input: usize,
        tensor: usize,
        counts: Vec<Count>,
    },
    /// A shape computation other readers share (the dynamo exporter's one `repeat_kv` shape
    /// for every layer) whose constant input `at` counts heads: input `input` of `reader`
    /// reads its own copy of node `node`, whose constant `tensor` holds `counts`.
    NodeCopy {
        reader: (usize, usize),
        node: usize,
        at: usize,
        tensor: usize,
        counts: Vec<Count>,
    },
    /// Sizes for a Split that splits equally without giving them: added when they change (an
    /// input from opset 13, the `split` attribute before), replacing `num_outputs`.
    SplitSizes { node: usize, counts: Vec<Count> },
}
