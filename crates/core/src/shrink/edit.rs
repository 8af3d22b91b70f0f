//! Structural edits of the main graph, written from the input's bytes: nodes removed, added or
//! given another input, initializers removed, added or re-sliced, and the declarations
//! (`value_info`, initializers listed as inputs) of what changed dropped or updated.
//! Everything else keeps its bytes. The layer and vocabulary passes describe what they do as a
//! [`GraphEdit`]; edits of one model can be merged and written together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use onnx_splice::{fields, LenField, Patch, Splice};

use crate::error::{Error, Result};
use crate::model::{Model, Source};
use crate::proto;
use crate::write::{committed, stage_spliced, Destination, Outputs, WrittenFile};

use super::encode::{int_initializer, plain_node, value_info};
use super::external::{bytes_before_after, lay_out};
use super::save::write_tensor;
use super::wire::{self, GraphWire};
use super::ShrinkTotals;

/// A node the edit adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewNode {
    pub name: String,
    pub op_type: &'static str,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// A structural change to a model's main graph: nodes removed, added or given another input,
/// initializers removed, added or re-sliced, stale declarations dropped; written from the
/// input's bytes by [`GraphEdit::save`] or [`GraphEdit::to_bytes`].
#[derive(Debug, Clone, Default)]
pub struct GraphEdit {
    /// Main-graph nodes removed (with the `Constant` tensors and subgraphs they hold).
    pub(crate) remove_nodes: BTreeSet<usize>,
    /// (node, input position) -> the value it reads instead.
    pub(crate) rewire: BTreeMap<(usize, usize), String>,
    /// Nodes added just before a node, which stays.
    pub(crate) insert_before: BTreeMap<usize, Vec<NewNode>>,
    /// Nodes added after every other.
    pub(crate) append: Vec<NewNode>,
    /// New integer initializers: name, dims, values, whether int32 (else int64).
    pub(crate) initializers: Vec<(String, Vec<i64>, Vec<i64>, bool)>,
    /// Main-graph initializers removed (indices into [`Model::tensors`]).
    pub(crate) remove_tensors: BTreeSet<usize>,
    /// Tensors given new dims and data (little-endian elements of their own type).
    pub(crate) replace_tensors: BTreeMap<usize, (Vec<i64>, Vec<u8>)>,
    /// Values whose `value_info` is dropped (no longer produced).
    pub(crate) drop_declared: BTreeSet<String>,
}

impl GraphEdit {
    /// Whether the edit changes nothing.
    pub fn is_empty(&self) -> bool {
        self.remove_nodes.is_empty()
            && self.rewire.is_empty()
            && self.insert_before.is_empty()
            && self.append.is_empty()
            && self.initializers.is_empty()
            && self.remove_tensors.is_empty()
            && self.replace_tensors.is_empty()
    }

    /// Adds `other`'s changes (of the same model). Two edits that change the same node input
    /// or tensor are an error.
    pub fn merge(&mut self, other: GraphEdit) -> Result<()> {
        let clash = |what: &str| Err(Error::Usage(format!("two passes both change {what}")));
        for (key, name) in other.rewire {
            if self.rewire.insert(key, name).is_some() {
                return clash(&format!("input {} of node {}", key.1, key.0));
            }
        }
        for (tensor, change) in other.replace_tensors {
            if self.replace_tensors.insert(tensor, change).is_some() {
                return clash(&format!("tensor {tensor}"));
            }
        }
        for (node, nodes) in other.insert_before {
            self.insert_before.entry(node).or_default().extend(nodes);
        }
        self.remove_nodes.extend(other.remove_nodes);
        self.append.extend(other.append);
        self.initializers.extend(other.initializers);
        self.remove_tensors.extend(other.remove_tensors);
        self.drop_declared.extend(other.drop_declared);
        Ok(())
    }

    /// Parameter counts (elements of floating-point constants) and bytes on disk before and
    /// after the edit.
    pub fn totals(&self, model: &Model) -> Result<ShrinkTotals> {
        let gone = self.removed_graphs(model);
        let mut before = 0;
        let mut after = 0;
        for (i, t) in model.tensors().iter().enumerate() {
            if !t.dtype.is_float() {
                continue;
            }
            before += t.elements;
            let removed = self.remove_tensors.contains(&i)
                || gone.contains(&t.graph)
                || matches!(t.source, Source::Constant(n) | Source::SparseConstant(n)
                    if t.graph == 0 && self.remove_nodes.contains(&n));
            after += match self.replace_tensors.get(&i) {
                _ if removed => 0,
                Some((dims, _)) => dims.iter().map(|&d| d as u64).product(),
                None => t.elements,
            };
        }
        let wire = wire::scan(model)?;
        let (splice, external) = self.splices(model, &wire)?;
        let (bytes_before, bytes_after) = bytes_before_after(model, &splice, &external);
        Ok(ShrinkTotals {
            params_before: before,
            params_after: after,
            bytes_before,
            bytes_after,
        })
    }

    /// The graphs held by removed nodes, at any depth.
    fn removed_graphs(&self, model: &Model) -> BTreeSet<usize> {
        let mut gone = BTreeSet::new();
        let mut stack: Vec<usize> = self
            .remove_nodes
            .iter()
            .flat_map(|&n| model.graphs()[0].nodes[n].subgraphs.iter().map(|s| s.1))
            .collect();
        while let Some(g) = stack.pop() {
            if gone.insert(g) {
                stack.extend(
                    model.graphs()[g]
                        .nodes
                        .iter()
                        .flat_map(|n| n.subgraphs.iter().map(|s| s.1)),
                );
            }
        }
        gone
    }

    /// The splices of the model file and of its external data files.
    fn splices<'m>(
        &self,
        model: &'m Model,
        wire: &GraphWire,
    ) -> Result<(Splice<'m>, BTreeMap<&'m str, Splice<'m>>)> {
        let bytes = model.bytes();
        let graph = wire.graph;
        let mut splice = Splice::default();
        // New values of tensors in external data files, laid out once every edit is known.
        let mut external_values = BTreeMap::new();
        for &n in &self.remove_nodes {
            splice.replace(
                wire.nodes[n].span.clone(),
                Patch::Bytes(Vec::new()),
                vec![graph],
            );
        }
        for (&(n, position), name) in &self.rewire {
            let node = &wire.nodes[n];
            let input = fields(
                &bytes[node.field.payload_start..node.field.payload_end],
                node.field.payload_start,
            )
            .filter_map(|f| f.ok())
            .filter(|f| f.number == proto::node::INPUT)
            .nth(position)
            .ok_or_else(|| Error::Usage(format!("node {n} has no input {position}")))?;
            let field = LenField::of(&input).expect("a string field");
            splice.replace(
                field.payload_start..field.payload_end,
                Patch::Bytes(name.as_bytes().to_vec()),
                vec![graph, node.field, field],
            );
        }
        let encode = |nodes: &[NewNode]| -> Vec<u8> {
            nodes
                .iter()
                .flat_map(|n| {
                    let inputs: Vec<&str> = n.inputs.iter().map(String::as_str).collect();
                    let outputs: Vec<&str> = n.outputs.iter().map(String::as_str).collect();
                    plain_node(&n.name, n.op_type, &inputs, &outputs)
                })
                .collect()
        };
        for (&n, nodes) in &self.insert_before {
            let at = wire.nodes[n].span.start;
            splice.replace(at..at, Patch::Bytes(encode(nodes)), vec![graph]);
        }
        let mut tail = encode(&self.append);
        for (name, dims, values, int32) in &self.initializers {
            tail.extend(int_initializer(name, dims, values, *int32));
        }
        if !tail.is_empty() {
            let end = graph.payload_end;
            splice.replace(end..end, Patch::Bytes(tail), vec![graph]);
        }
        let mut removed_names = BTreeSet::new();
        for &t in &self.remove_tensors {
            let tensor = &model.tensors()[t];
            if tensor.graph != 0
                || !matches!(
                    tensor.source,
                    Source::Initializer | Source::SparseInitializer
                )
            {
                return Err(Error::tensor(&tensor.name, "not a main-graph initializer"));
            }
            let parents = tensor.enclosing[..tensor.enclosing.len() - 1].to_vec();
            splice.replace(tensor.field.clone(), Patch::Bytes(Vec::new()), parents);
            removed_names.insert(tensor.name.as_str());
        }
        let mut new_dims: BTreeMap<&str, (i32, &[i64])> = BTreeMap::new();
        for (&t, (dims, data)) in &self.replace_tensors {
            let tensor = &model.tensors()[t];
            write_tensor(
                model,
                t,
                dims,
                data.clone(),
                &mut splice,
                &mut external_values,
            );
            new_dims.insert(tensor.name.as_str(), (tensor.dtype.code(), dims));
        }
        let declared = [
            (wire::GRAPH_VALUE_INFO, &wire.value_info),
            (proto::graph::INPUT, &wire.inputs),
        ];
        for (number, values) in declared {
            for v in values {
                let name = v.name.as_str();
                let patch = if let Some((elem_type, dims)) = new_dims.get(name) {
                    value_info(number, name, *elem_type, dims)
                } else if removed_names.contains(name)
                    || (number == wire::GRAPH_VALUE_INFO && self.drop_declared.contains(name))
                {
                    Vec::new()
                } else {
                    continue;
                };
                splice.replace(v.span.clone(), Patch::Bytes(patch), vec![graph]);
            }
        }
        let external = lay_out(model, external_values, &self.remove_tensors, &mut splice)?;
        Ok((splice, external))
    }

    /// The edited model's bytes, in memory (for checks and tests). Models with external data
    /// are refused: write them with [`GraphEdit::save`].
    pub fn to_bytes(&self, model: &Model) -> Result<Vec<u8>> {
        if !model.external_files().is_empty() {
            return Err(Error::Usage(
                "a model with external data is edited to files, not in memory".into(),
            ));
        }
        let wire = wire::scan(model)?;
        let (splice, _) = self.splices(model, &wire)?;
        let mut out = Vec::with_capacity(splice.output_len(model.bytes().len()));
        splice
            .write_to(model.bytes(), &mut out)
            .map_err(|e| Error::io(model.path(), std::io::Error::other(e)))?;
        Ok(out)
    }

    /// Prepares the edited model for `to` (external data beside it) among `outputs`; it is in
    /// place once `outputs` are committed.
    pub fn stage(
        &self,
        outputs: &mut Outputs,
        model: &Model,
        to: &Path,
    ) -> Result<Vec<WrittenFile>> {
        let wire = wire::scan(model)?;
        let (splice, external) = self.splices(model, &wire)?;
        stage_spliced(outputs, model, Destination::File(to), splice, external)
    }

    /// Writes the edited model to `to` (external data beside it), atomically.
    pub fn save(&self, model: &Model, to: &Path) -> Result<Vec<WrittenFile>> {
        let mut outputs = Outputs::scratch();
        let mut files = self.stage(&mut outputs, model, to)?;
        outputs.commit()?;
        committed(&mut files);
        Ok(files)
    }
}
