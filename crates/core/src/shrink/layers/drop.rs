//! Dropping layers of the residual stream: every reader of a dropped layer's output reads the
//! layer's input instead (through the dropped layers before it, when several in a row go),
//! and every node, initializer and `value_info` that only the dropped layers used goes with
//! them. A dropped output that is a graph output is kept by an `Identity` from the input, so
//! that the model's interface stays.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::model::{Model, Source};

use super::super::edit::{GraphEdit, NewNode};
use super::super::flow::Flow;
use super::find::{Layer, Stream};

/// The edit that removes `layers` (indices into [`Stream::layers`], any set) from `model`,
/// and a note per dropped layer whose nodes other graph outputs still read (a KV cache's
/// `present` outputs): those nodes stay, so that the model keeps its interface.
pub fn drop_layers(
    model: &Model,
    stream: &Stream,
    layers: &[usize],
) -> Result<(GraphEdit, Vec<String>)> {
    let flow = Flow::of(model)?;
    let nodes = &model.graphs()[0].nodes;
    let dropped: BTreeSet<usize> = layers.iter().copied().collect();
    if let Some(&bad) = dropped.iter().find(|&&l| l >= stream.layers.len()) {
        return Err(Error::Usage(format!(
            "layer {bad} does not exist: the stream has {} layers",
            stream.layers.len()
        )));
    }
    // Each dropped output reads as the input of the first dropped layer of its run.
    let mut renamed: BTreeMap<String, String> = BTreeMap::new();
    for &l in &dropped {
        let layer = &stream.layers[l];
        let input = renamed
            .get(&layer.input)
            .cloned()
            .unwrap_or_else(|| layer.input.clone());
        renamed.insert(layer.output.clone(), input);
    }
    let before = flow.live(&BTreeMap::new());
    let after = flow.live(&renamed);
    let mut removed: BTreeSet<usize> = before.difference(&after).copied().collect();
    // Nodes that were dead already but read what goes.
    loop {
        let gone: BTreeSet<&str> = removed
            .iter()
            .flat_map(|&n| nodes[n].outputs.iter().map(String::as_str))
            .filter(|v| !renamed.contains_key(*v))
            .collect();
        let more: Vec<usize> = (0..nodes.len())
            .filter(|n| !removed.contains(n))
            .filter(|&n| flow.reads[n].iter().any(|r| gone.contains(r.as_str())))
            .collect();
        if more.is_empty() {
            break;
        }
        removed.extend(more);
    }
    let mut edit = GraphEdit::default();
    for (n, node) in nodes
        .iter()
        .enumerate()
        .filter(|(n, _)| !removed.contains(n))
    {
        for (position, input) in node.inputs.iter().enumerate() {
            if let Some(new) = renamed.get(input) {
                edit.rewire.insert((n, position), new.clone());
            }
        }
        let implicit = flow.reads[n]
            .iter()
            .find(|r| renamed.contains_key(*r) && !node.inputs.contains(r));
        if let Some(value) = implicit {
            return Err(Error::Usage(format!(
                "node `{}` ({}) reads `{value}` inside a subgraph: the layer ending there \
                 cannot be dropped",
                node.label(n),
                node.op_type
            )));
        }
    }
    for output in flow.outputs.iter().filter(|o| renamed.contains_key(*o)) {
        edit.append.push(NewNode {
            name: format!("{output}_skip"),
            op_type: "Identity",
            inputs: vec![renamed[output].clone()],
            outputs: vec![output.clone()],
        });
    }
    let read_after: BTreeSet<&str> = (0..nodes.len())
        .filter(|n| !removed.contains(n))
        .flat_map(|n| {
            flow.reads[n]
                .iter()
                .map(|r| renamed.get(r).unwrap_or(r).as_str())
        })
        .chain(
            edit.append
                .iter()
                .flat_map(|n| n.inputs.iter().map(String::as_str)),
        )
        .chain(flow.outputs.iter().map(String::as_str))
        .collect();
    let read_before: BTreeSet<&str> = removed
        .iter()
        .flat_map(|&n| flow.reads[n].iter().map(String::as_str))
        .collect();
    for (t, tensor) in model.tensors().iter().enumerate() {
        let initializer = matches!(
            tensor.source,
            Source::Initializer | Source::SparseInitializer
        );
        let name = tensor.name.as_str();
        if tensor.graph == 0
            && initializer
            && read_before.contains(name)
            && !read_after.contains(name)
        {
            edit.remove_tensors.insert(t);
        }
    }
    edit.drop_declared = removed
        .iter()
        .flat_map(|&n| nodes[n].outputs.iter().cloned())
        .filter(|v| !flow.outputs.contains(v))
        .collect();
    let notes = dropped
        .iter()
        .filter_map(|&l| still_read(&flow, &stream.layers[l], &removed, &renamed).map(|o| (l, o)))
        .map(|(l, outputs)| {
            format!(
                "layer {l}: graph outputs {} still read some of its nodes, which stay",
                outputs.join(", ")
            )
        })
        .collect();
    edit.remove_nodes = removed;
    Ok((edit, notes))
}

/// The graph outputs that still read nodes of `layer` once `removed` go, if any (outputs
/// downstream of the layer are not among them: they read the stream).
fn still_read(
    flow: &Flow,
    layer: &Layer,
    removed: &BTreeSet<usize>,
    renamed: &BTreeMap<String, String>,
) -> Option<Vec<String>> {
    let inside: BTreeSet<usize> = flow
        .descendants_within(&layer.input, &flow.ancestors(&layer.output))
        .difference(removed)
        .copied()
        .collect();
    if inside.is_empty() {
        return None;
    }
    // Outputs downstream of the layer read the stream instead; the others read its nodes.
    let end = flow.producer.get(&layer.output);
    let outputs: Vec<String> = flow
        .outputs
        .iter()
        .filter(|o| !renamed.contains_key(*o))
        .map(|o| (o, flow.ancestors(o)))
        .filter(|(_, a)| end.is_none_or(|e| !a.contains(e)) && !a.is_disjoint(&inside))
        .map(|(o, _)| o.clone())
        .collect();
    (!outputs.is_empty()).then_some(outputs)
}
