//! Finding the residual stream: the residual blocks of the main graph, chained, and grouped
//! into layers.
//!
//! A **residual block** is an `Add(x, f(x))` whose second operand depends on the first through
//! at least one weighted op (MatMul, Gemm, Conv with a constant weight): pre-norm
//! `x + f(norm(x))` (GPT-2, Llama, ViT), its output the Add's. When everything that reads the
//! Add's output is a chain of per-value ops (LayerNormalization, or its decomposed form, an
//! activation) that hands on exactly one value, the block is post-norm `norm(x + f(x))`
//! (BERT) and its output is that value. Blocks chain when one's output is the next one's
//! input; the **stream** is the longest chain.
//!
//! A **layer** is one transformer layer: a block whose branch holds attention (a Softmax)
//! with the blocks that follow it up to the next such block (its FFN). Without attention
//! anywhere, each block is a layer. Dropping a layer drops all its blocks, as ShortGPT does.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::error::Result;
use crate::model::{Model, Node};

use super::super::flow::Flow;

/// One residual block of the stream.
#[derive(Debug, Clone, Serialize)]
pub struct Block {
    /// The residual Add node.
    pub add: String,
    /// The stream value entering the block.
    pub input: String,
    /// The stream value leaving it.
    pub output: String,
    /// Whether a normalisation follows the Add (post-norm) rather than opening the branch.
    pub post_norm: bool,
    /// Whether the branch holds attention (a Softmax).
    pub attention: bool,
    /// The nodes of the branch and of the post-norm: everything from `input` to `output`.
    pub nodes: usize,
    /// The residual Add's output (the block's output unless post-norm).
    #[serde(skip)]
    add_output: String,
    /// Nodes of the post-norm.
    #[serde(skip)]
    post_nodes: usize,
}

/// One layer: consecutive blocks dropped together.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    /// Indices into [`Stream::blocks`].
    pub blocks: Vec<usize>,
    /// The stream value entering the layer.
    pub input: String,
    /// The stream value leaving it.
    pub output: String,
}

/// The residual stream of a model.
#[derive(Debug, Clone, Serialize)]
pub struct Stream {
    /// Every block, in stream order.
    pub blocks: Vec<Block>,
    /// Every layer, in stream order.
    pub layers: Vec<Layer>,
}

/// Ops that contribute weights: a branch without one is not a residual block.
fn weighted(node: &Node, flow: &Flow) -> bool {
    matches!(
        node.op_type.as_str(),
        "MatMul" | "Gemm" | "Conv" | "ConvTranspose"
    ) && node.inputs.iter().any(|i| flow.constants.contains(i))
}

/// Ops that a post-norm may hold: normalisations, their decomposed forms, activations.
const POST_OPS: &[&str] = &[
    "LayerNormalization",
    "SimplifiedLayerNormalization",
    "RMSNormalization",
    "BatchNormalization",
    "ReduceMean",
    "Sub",
    "Pow",
    "Add",
    "Sqrt",
    "Div",
    "Mul",
    "Reciprocal",
    "Cast",
    "Identity",
    "Relu",
];

/// A residual Add: (skip input, branch nodes) when one operand depends on the other through
/// a weighted op.
fn residual(model: &Model, flow: &Flow, index: usize) -> Option<(String, BTreeSet<usize>)> {
    let node = &model.graphs()[0].nodes[index];
    if node.op_type != "Add" || !node.domain.is_empty() || node.inputs.len() != 2 {
        return None;
    }
    if node.inputs.iter().any(|i| flow.constants.contains(i)) {
        return None;
    }
    for (skip, branch) in [(0, 1), (1, 0)] {
        let (x, b) = (&node.inputs[skip], &node.inputs[branch]);
        let ancestors = flow.ancestors(b);
        let region = flow.descendants_within(x, &ancestors);
        let nodes = &model.graphs()[0].nodes;
        if region.iter().any(|&n| weighted(&nodes[n], flow)) {
            return Some((x.clone(), region));
        }
    }
    None
}

/// What follows the Add's output `a` of node `add`: the post-norm's nodes and output value
/// when a chain of per-value ops reads all of `a` and hands on exactly one value.
fn post_norm(model: &Model, flow: &Flow, add: usize, a: &str) -> Option<(BTreeSet<usize>, String)> {
    let nodes = &model.graphs()[0].nodes;
    let mut post = BTreeSet::new();
    let mut made: BTreeSet<&str> = BTreeSet::from([a]);
    for (n, node) in nodes.iter().enumerate().skip(add + 1) {
        let allowed = node.domain.is_empty() && POST_OPS.contains(&node.op_type.as_str());
        let reads = &flow.reads[n];
        let inside = reads
            .iter()
            .all(|r| made.contains(r.as_str()) || flow.constants.contains(r));
        if allowed && inside && reads.iter().any(|r| made.contains(r.as_str())) {
            post.insert(n);
            made.extend(node.outputs.iter().map(String::as_str));
        }
    }
    let outward: Vec<&str> = made
        .iter()
        .copied()
        .filter(|v| {
            flow.outputs.iter().any(|o| o == v)
                || flow.consumers_of(v).iter().any(|c| !post.contains(c))
        })
        .collect();
    match outward[..] {
        [z] if z != a => Some((post, z.to_string())),
        _ => None,
    }
}

/// Finds the residual stream of `model`'s main graph: its residual blocks (pre- or post-norm),
/// chained, grouped into layers (an attention block with the blocks after it); a stream of no
/// block when there is none.
pub fn find(model: &Model) -> Result<Stream> {
    let flow = Flow::of(model)?;
    let nodes = &model.graphs()[0].nodes;
    let mut blocks = Vec::new();
    for index in 0..nodes.len() {
        let Some((input, branch)) = residual(model, &flow, index) else {
            continue;
        };
        let a = &nodes[index].outputs[0];
        let (post, output) = match post_norm(model, &flow, index, a) {
            Some((post, z)) => (post, z),
            None => (BTreeSet::new(), a.clone()),
        };
        blocks.push(Block {
            add: nodes[index].label(index),
            input,
            post_norm: !post.is_empty(),
            attention: branch.iter().any(|&n| nodes[n].op_type == "Softmax"),
            nodes: branch.len() + 1 + post.len(),
            output,
            add_output: a.clone(),
            post_nodes: post.len(),
        });
    }
    let mut blocks = longest_chain(&flow, nodes, blocks);
    // After pre-norm blocks, the norm after the last Add is the model's final norm, not a
    // post-norm of the last block: it stays when the last layer goes.
    if blocks.len() > 1 && blocks[..blocks.len() - 1].iter().any(|b| !b.post_norm) {
        let last = blocks.last_mut().expect("blocks");
        if last.post_norm {
            last.post_norm = false;
            last.output = last.add_output.clone();
            last.nodes -= last.post_nodes;
        }
    }
    let layers = group(&blocks);
    Ok(Stream { blocks, layers })
}

/// The value `value` copies: through Identity and Cast nodes (exporters put a Cast between
/// blocks where a norm casts the stream to its own type).
fn copied_from<'f>(flow: &'f Flow, model_nodes: &[Node], mut value: &'f str) -> &'f str {
    while let Some(&p) = flow.producer.get(value) {
        let node = &model_nodes[p];
        if !matches!(node.op_type.as_str(), "Identity" | "Cast") || flow.reads[p].len() != 1 {
            break;
        }
        value = &flow.reads[p][0];
    }
    value
}

/// The longest chain of blocks, each reading the previous one's output (or a copy of it), the
/// first of equals.
fn longest_chain(flow: &Flow, nodes: &[Node], blocks: Vec<Block>) -> Vec<Block> {
    let mut by_input: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, b) in blocks.iter().enumerate().rev() {
        by_input.insert(copied_from(flow, nodes, &b.input), i);
        by_input.insert(&b.input, i);
    }
    let follows: BTreeSet<usize> = blocks
        .iter()
        .filter_map(|b| by_input.get(b.output.as_str()).copied())
        .collect();
    let mut best: Vec<usize> = Vec::new();
    for start in (0..blocks.len()).filter(|i| !follows.contains(i)) {
        let mut chain = vec![start];
        while let Some(&next) = by_input.get(blocks[*chain.last().unwrap()].output.as_str()) {
            if chain.contains(&next) {
                break;
            }
            chain.push(next);
        }
        if chain.len() > best.len() {
            best = chain;
        }
    }
    best.into_iter().map(|i| blocks[i].clone()).collect()
}

/// Layers: each attention block with the blocks after it up to the next one; each block alone
/// when none has attention (or before the first that has).
fn group(blocks: &[Block]) -> Vec<Layer> {
    let mut layers: Vec<Layer> = Vec::new();
    let mut seen_attention = false;
    for (i, b) in blocks.iter().enumerate() {
        seen_attention |= b.attention;
        match layers.last_mut() {
            Some(layer) if seen_attention && !b.attention => {
                layer.blocks.push(i);
                layer.output = b.output.clone();
            }
            _ => layers.push(Layer {
                blocks: vec![i],
                input: b.input.clone(),
                output: b.output.clone(),
            }),
        }
    }
    layers
}

impl Stream {
    /// A text listing of the layers and their blocks (what `--dry-run` prints).
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        if self.blocks.is_empty() {
            return "residual stream: none found (no Add(x, f(x)) whose branch holds a MatMul, \
                    Gemm or Conv with a constant weight)\n"
                .to_string();
        }
        let mut out = format!(
            "residual stream: {} blocks in {} layers\n",
            self.blocks.len(),
            self.layers.len()
        );
        for (i, layer) in self.layers.iter().enumerate() {
            let _ = writeln!(out, "layer {i}: {} -> {}", layer.input, layer.output);
            for &b in &layer.blocks {
                let block = &self.blocks[b];
                let kind = match (block.attention, block.post_norm) {
                    (true, true) => "attention, post-norm",
                    (true, false) => "attention, pre-norm",
                    (false, true) => "post-norm",
                    (false, false) => "pre-norm",
                };
                let _ = writeln!(
                    out,
                    "  block {b}: {} ({kind}, {} nodes)",
                    block.add, block.nodes
                );
            }
        }
        out
    }
}
