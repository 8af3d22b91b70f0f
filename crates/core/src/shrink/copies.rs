//! Constants that several nodes read and the shrink changes for some of them only: integer
//! counts (Split sizes, Reshape targets) recounted for one reader, float per-channel
//! operands (biases, scales, normalisation parameters) sliced for one reader, and shape
//! computations (a `Concat` of shape pieces) whose head count differs between readers. Each such reader
//! gets its own copy, a new initializer named `<tensor>_shrink_<node output>`; the other readers
//! keep the shared tensor, which goes once no node reads it. A shared float constant that every
//! reader slices alike is sliced where it lives instead.

use std::collections::BTreeMap;

use onnx_splice::{fields, Patch, Splice};

use crate::error::Result;
use crate::model::{Model, Source};
use crate::proto::{self, DataType};

use super::cuts::{Count, Recount};
use super::encode::{int_initializer, message, own_copy};
use super::save::{sliced, Keeps, Plan};
use super::wire::GraphWire;
use super::Analysis;

/// How many node inputs (any graph) read tensor `t`.
fn readers(model: &Model, t: usize) -> usize {
    let name = &model.tensors()[t].name;
    model
        .graphs()
        .iter()
        .flat_map(|g| &g.nodes)
        .flat_map(|n| &n.inputs)
        .filter(|i| *i == name)
        .count()
}

/// A shared constant that every reader slices alike is sliced where it lives, as an unshared
/// one is, rather than copied for each reader.
pub(super) fn slice_shared_in_place(model: &Model, plan: &mut Plan) {
    let mut by_tensor: BTreeMap<usize, Vec<&Keeps>> = BTreeMap::new();
    for ((t, _), keeps) in &plan.reader_slices {
        by_tensor.entry(*t).or_default().push(keeps);
    }
    let alike: Vec<(usize, Keeps)> = by_tensor
        .into_iter()
        .filter(|(t, keeps)| {
            keeps.windows(2).all(|w| w[0] == w[1])
                && keeps.len() == readers(model, *t)
                && !plan.slices.contains_key(t)
        })
        .map(|(t, keeps)| (t, keeps[0].clone()))
        .collect();
    for (t, keeps) in alike {
        plan.reader_slices.retain(|(tensor, _), _| *tensor != t);
        plan.slices.insert(t, keeps);
    }
}

/// Writes every reader's copy of a shared tensor (from `replaced`'s values when it has them)
/// and removes the shared initializers no node reads any more. Returns the float parameters
/// added (the copies) and removed (the initializers).
pub(super) fn write_copies(
    model: &Model,
    wire: &GraphWire,
    plan: &Plan,
    replaced: &BTreeMap<usize, Vec<u8>>,
    splice: &mut Splice,
) -> Result<(u64, u64)> {
    // A node that gets two copies of one tensor names them by input.
    let mut per_node: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let counted = plan.copies.iter().map(|c| (c.0, c.2));
    let sliced_for = plan.reader_slices.keys().map(|(t, (node, _))| (*node, *t));
    for key in counted.chain(sliced_for) {
        *per_node.entry(key).or_default() += 1;
    }
    let by_input = |node: usize, t: usize| per_node[&(node, t)] > 1;
    for (node, input, tensor, values) in &plan.copies {
        let shared = &model.tensors()[*tensor];
        let raw: Vec<u8> = match shared.dtype {
            DataType::Other(6) => values
                .iter()
                .flat_map(|&v| (v as i32).to_le_bytes())
                .collect(),
            _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        let reader = (*node, *input, by_input(*node, *tensor));
        own_copy(model, wire, reader, (*tensor, &shared.dims, &raw), splice);
    }
    let mut added = 0;
    for ((t, (node, input)), keeps) in &plan.reader_slices {
        let (dims, data) = sliced(model, *t, keeps, replaced.get(t))?;
        if model.tensors()[*t].dtype.is_float() {
            added += dims.iter().product::<i64>() as u64;
        }
        let reader = (*node, *input, by_input(*node, *t));
        own_copy(model, wire, reader, (*t, &dims, &data), splice);
    }
    let copied = (plan.copies.iter().map(|c| c.2)).chain(plan.reader_slices.keys().map(|k| k.0));
    let removed = drop_copied(model, wire, copied, splice)
        .into_iter()
        .filter(|&t| model.tensors()[t].dtype.is_float())
        .map(|t| model.tensors()[t].elements)
        .sum();
    Ok((added, removed))
}

/// Removes the shared initializers that every reader now reads a copy of (`copied`: the
/// tensor of each copy); returns them.
fn drop_copied(
    model: &Model,
    wire: &GraphWire,
    copied: impl Iterator<Item = usize>,
    splice: &mut Splice,
) -> Vec<usize> {
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for tensor in copied {
        *counts.entry(tensor).or_default() += 1;
    }
    let mut dropped = Vec::new();
    for (t, count) in counts {
        let tensor = &model.tensors()[t];
        let declared = wire.inputs.iter().any(|v| v.name == tensor.name);
        if count == readers(model, t) && !declared && tensor.source == Source::Initializer {
            let parents = tensor.enclosing[..tensor.enclosing.len() - 1].to_vec();
            splice.replace(tensor.field.clone(), Patch::Bytes(Vec::new()), parents);
            dropped.push(t);
        }
    }
    dropped
}

/// A copy of a shared shape computation: node `node` again, its constant input `at` (tensor
/// `tensor`) holding `values`, read by `readers` (node, input).
pub(super) struct NodeCopy {
    node: usize,
    at: usize,
    tensor: usize,
    values: Vec<i64>,
    readers: Vec<(usize, usize)>,
}

/// The copies of shared shape computations the readers of [`Recount::NodeCopy`] need: none
/// for a reader whose values are those the shared node gets, one per distinct set of values
/// for the others.
pub(super) fn node_copies(analysis: &Analysis, count: &dyn Fn(&Count) -> i64) -> Vec<NodeCopy> {
    // Readers by (node, constant input, tensor, values).
    type Key = (usize, usize, usize, Vec<i64>);
    let mut copies: BTreeMap<Key, Vec<(usize, usize)>> = BTreeMap::new();
    for recount in &analysis.recounts {
        let Recount::NodeCopy {
            reader,
            node,
            at,
            tensor,
            counts,
        } = recount
        else {
            continue;
        };
        let values: Vec<i64> = counts.iter().map(count).collect();
        // What the shared node's constant becomes (its own recount).
        let shared = analysis.recounts.iter().find_map(|r| match r {
            Recount::Input {
                node: n,
                input,
                counts,
                ..
            } if n == node && input == at => Some(counts),
            Recount::Tensor { tensor: t, counts } if t == tensor => Some(counts),
            _ => None,
        });
        let shared: Option<Vec<i64>> = shared.map(|c| c.iter().map(count).collect());
        if shared.as_ref() != Some(&values) {
            copies
                .entry((*node, *at, *tensor, values))
                .or_default()
                .push(*reader);
        }
    }
    copies
        .into_iter()
        .map(|((node, at, tensor, values), readers)| NodeCopy {
            node,
            at,
            tensor,
            values,
            readers,
        })
        .collect()
}

/// Writes each copy of a shared shape computation: the node again, right after it, with its
/// constant input replaced by a new initializer of the copy's values and its output (and name)
/// suffixed with `_shrink_<first reader's output>`; its readers read that output.
pub(super) fn copy_nodes(model: &Model, wire: &GraphWire, plan: &Plan, splice: &mut Splice) {
    let graph = &model.graphs()[0];
    let bytes = model.bytes();
    for copy in &plan.node_copies {
        let NodeCopy {
            node,
            at,
            tensor,
            values,
            readers,
        } = copy;
        let suffix = format!("_shrink_{}", graph.nodes[readers[0].0].outputs[0]);
        let shared = &model.tensors()[*tensor];
        let constant = format!("{}{suffix}", shared.name);
        let int32 = shared.dtype == DataType::Other(6);
        let field = int_initializer(&constant, &shared.dims, values, int32);
        let end = wire.graph.payload_end;
        splice.replace(end..end, Patch::Bytes(field), vec![wire.graph]);
        let original = &graph.nodes[*node];
        let output = format!("{}{suffix}", original.outputs[0]);
        let n = &wire.nodes[*node];
        let mut payload = Vec::new();
        let mut input = 0;
        let parts = fields(
            &bytes[n.field.payload_start..n.field.payload_end],
            n.field.payload_start,
        );
        for f in parts.filter_map(|f| f.ok()) {
            match f.number {
                proto::node::INPUT => {
                    match input == *at {
                        true => message(f.number, constant.as_bytes(), &mut payload),
                        false => payload.extend_from_slice(&bytes[f.span.clone()]),
                    }
                    input += 1;
                }
                proto::node::OUTPUT => message(f.number, output.as_bytes(), &mut payload),
                proto::node::NAME => {
                    let name = format!("{}{suffix}", original.name);
                    message(f.number, name.as_bytes(), &mut payload);
                }
                _ => payload.extend_from_slice(&bytes[f.span.clone()]),
            }
        }
        let mut field = Vec::new();
        message(proto::graph::NODE, &payload, &mut field);
        splice.replace(
            n.span.end..n.span.end,
            Patch::Bytes(field),
            vec![wire.graph],
        );
        for &(reader, input) in readers {
            let r = &wire.nodes[reader];
            let mut field = Vec::new();
            message(proto::node::INPUT, output.as_bytes(), &mut field);
            splice.replace(
                r.inputs[input].clone(),
                Patch::Bytes(field),
                vec![wire.graph, r.field],
            );
        }
    }
}
