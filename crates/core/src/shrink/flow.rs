//! Who produces and who reads each value of the main graph, subgraphs' reads of outer values
//! included, and which values are constants: what the layer and vocabulary passes walk.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Result;
use crate::model::{Model, Source};

use super::wire;

/// The data flow of a model's main graph.
#[derive(Debug, Clone)]
pub(crate) struct Flow {
    /// Per node, every value it reads: its inputs, and the outer values its subgraphs read.
    pub reads: Vec<Vec<String>>,
    /// The node producing each value.
    pub producer: BTreeMap<String, usize>,
    /// The nodes reading each value, in node order.
    pub consumers: BTreeMap<String, Vec<usize>>,
    /// The graph's declared outputs.
    pub outputs: Vec<String>,
    /// Values known before any input is read: initializers, and outputs of nodes that read
    /// only constants (`Constant`, `ConstantOfShape` of a constant, ...).
    pub constants: BTreeSet<String>,
    /// Per node, the graphs its attributes hold, at any depth.
    pub subgraphs: Vec<Vec<usize>>,
}

/// Every graph held by `graph`'s node `node`, at any depth.
fn nested(model: &Model, graph: usize, node: usize, out: &mut Vec<usize>) {
    for &(_, g) in &model.graphs()[graph].nodes[node].subgraphs {
        out.push(g);
        for n in 0..model.graphs()[g].nodes.len() {
            nested(model, g, n, out);
        }
    }
}

impl Flow {
    /// The flow of `model`'s main graph.
    pub fn of(model: &Model) -> Result<Flow> {
        let main = &model.graphs()[0];
        let outputs = wire::scan(model)?
            .outputs
            .into_iter()
            .map(|o| o.name)
            .collect();
        let mut flow = Flow {
            reads: Vec::with_capacity(main.nodes.len()),
            producer: BTreeMap::new(),
            consumers: BTreeMap::new(),
            outputs,
            constants: model
                .tensors()
                .iter()
                .filter(|t| t.graph == 0 && t.source == Source::Initializer)
                .map(|t| t.name.clone())
                .collect(),
            subgraphs: Vec::with_capacity(main.nodes.len()),
        };
        for (i, node) in main.nodes.iter().enumerate() {
            let mut graphs = Vec::new();
            nested(model, 0, i, &mut graphs);
            let mut reads: Vec<String> = node
                .inputs
                .iter()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect();
            for &g in &graphs {
                for inner in &model.graphs()[g].nodes {
                    reads.extend(inner.inputs.iter().filter(|n| !n.is_empty()).cloned());
                }
            }
            reads.dedup();
            if graphs.is_empty() && reads.iter().all(|r| flow.constants.contains(r)) {
                flow.constants.extend(node.outputs.iter().cloned());
            }
            for r in &reads {
                flow.consumers.entry(r.clone()).or_default().push(i);
            }
            for o in node.outputs.iter().filter(|o| !o.is_empty()) {
                flow.producer.insert(o.clone(), i);
            }
            flow.reads.push(reads);
            flow.subgraphs.push(graphs);
        }
        for list in flow.consumers.values_mut() {
            list.dedup();
        }
        Ok(flow)
    }

    /// The nodes reading `value`.
    pub fn consumers_of(&self, value: &str) -> &[usize] {
        self.consumers.get(value).map_or(&[], Vec::as_slice)
    }

    /// Every node that `value` depends on (its producer and theirs, transitively).
    pub fn ancestors(&self, value: &str) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<usize> = self.producer.get(value).copied().into_iter().collect();
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                stack.extend(self.reads[n].iter().filter_map(|r| self.producer.get(r)));
            }
        }
        seen
    }

    /// The nodes depending on `value` among `within` (a set closed under ancestors, such as
    /// the ancestors of a value), taken in graph order.
    pub fn descendants_within(&self, value: &str, within: &BTreeSet<usize>) -> BTreeSet<usize> {
        let mut region = BTreeSet::new();
        for &n in within {
            let reads_it = self.reads[n]
                .iter()
                .any(|r| r == value || self.producer.get(r).is_some_and(|p| region.contains(p)));
            if reads_it {
                region.insert(n);
            }
        }
        region
    }

    /// The nodes that contribute to a graph output once every read of a value in `renamed`
    /// (graph outputs included) reads its new name instead.
    pub fn live(&self, renamed: &BTreeMap<String, String>) -> BTreeSet<usize> {
        let name = |v: &String| renamed.get(v).unwrap_or(v).clone();
        let mut live = BTreeSet::new();
        let mut stack: Vec<usize> = self
            .outputs
            .iter()
            .filter_map(|o| self.producer.get(&name(o)).copied())
            .collect();
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(
                    self.reads[n]
                        .iter()
                        .filter_map(|r| self.producer.get(&name(r))),
                );
            }
        }
        live
    }
}
