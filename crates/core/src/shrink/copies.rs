//! Constants that several nodes read and the shrink changes for some of them only: integer
//! counts (Split sizes, Reshape targets) recounted for one reader, and float per-channel
//! operands (biases, scales, normalisation parameters) sliced for one reader. Each such reader
//! gets its own copy, a new initializer named `<tensor>_shrink_<node output>`; the other readers
//! keep the shared tensor, which goes once no node reads it. A shared float constant that every
//! reader slices alike is sliced where it lives instead.

use std::collections::BTreeMap;

use onnx_splice::{Patch, Splice};

use crate::error::Result;
use crate::model::{Model, Source};
use crate::proto::DataType;

use super::encode::own_copy;
use super::save::{sliced, Keeps, Plan};
use super::wire::GraphWire;

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
