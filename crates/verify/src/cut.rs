//! The part of a graph that one weight changes: the nodes downstream of it, which a candidate
//! pruning only that weight must run again, and the values crossing into them from the rest,
//! which are the dense model's for every such candidate.
//!
//! A node is downstream of the weight when it reads the weight or a value computed from it
//! (a node with subgraphs reads every name its subgraphs use). The part cut out keeps those
//! nodes and, so that tract still sees constants where the whole graph has them, every node
//! computing a *static* value they read: an initializer's or `Constant`'s, a `Shape` or `Size`
//! (constant once the input shapes are), or one computed from static values only (Reshape
//! targets, Slice bounds). Any other value they read from outside, an activation or a graph
//! input, crosses the cut: the part takes it as an input.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;

/// The part of a graph downstream of one weight.
#[derive(Debug, Clone)]
pub(crate) struct Cut {
    /// Indices of the nodes kept, in graph order.
    pub nodes: Vec<usize>,
    /// The nodes of the whole graph.
    pub of: usize,
    /// Values computed outside the part (or graph inputs) that it reads, in first-read order.
    pub crossing: Vec<String>,
    /// Positions, among the graph's outputs, of those the part computes.
    pub outputs: Vec<usize>,
}

/// Every name `node` reads: its inputs and, for a node with subgraphs, every name their nodes
/// read (a name a subgraph defines itself is read too: it only makes the part larger).
fn reads(node: &pb::NodeProto) -> Vec<&str> {
    let mut names: Vec<&str> = node.input.iter().map(String::as_str).collect();
    for attribute in &node.attribute {
        for graph in attribute.g.iter().chain(&attribute.graphs) {
            for inner in &graph.node {
                names.extend(reads(inner));
            }
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

/// What is known of a graph to cut parts out of it.
pub(crate) struct Graph<'a> {
    graph: &'a pb::GraphProto,
    /// The node computing each value.
    producer: HashMap<&'a str, usize>,
    /// The nodes reading each value.
    readers: HashMap<&'a str, Vec<usize>>,
    /// Whether each node computes static values only.
    fixed: Vec<bool>,
    initializers: HashSet<&'a str>,
}

impl<'a> Graph<'a> {
    /// Reads the main graph of `model`; `None` when it has none.
    pub(crate) fn new(model: &'a pb::ModelProto) -> Option<Graph<'a>> {
        let graph = model.graph.as_ref()?;
        let initializers: HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let mut producer = HashMap::new();
        let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut fixed = Vec::with_capacity(graph.node.len());
        for (index, node) in graph.node.iter().enumerate() {
            let names = reads(node);
            for &name in &names {
                readers.entry(name).or_default().push(index);
            }
            let by_shape = matches!(node.op_type.as_str(), "Shape" | "Size")
                && (node.domain.is_empty() || node.domain == "ai.onnx");
            let from_static = names.iter().all(|name| {
                initializers.contains(name) || producer.get(name).is_some_and(|&p: &usize| fixed[p])
            });
            fixed.push(by_shape || from_static);
            for output in node.output.iter().filter(|o| !o.is_empty()) {
                producer.insert(output.as_str(), index);
            }
        }
        Some(Graph {
            graph,
            producer,
            readers,
            fixed,
            initializers,
        })
    }

    /// The part downstream of `weight` (an initializer or a `Constant`'s output), or `None`
    /// when no graph output depends on it.
    pub(crate) fn cut(&self, weight: &str) -> Option<Cut> {
        let nodes = &self.graph.node;
        let mut kept = vec![false; nodes.len()];
        let mut stack: Vec<&str> = vec![weight];
        while let Some(value) = stack.pop() {
            for &reader in self.readers.get(value).into_iter().flatten() {
                if !kept[reader] {
                    kept[reader] = true;
                    stack.extend(nodes[reader].output.iter().map(String::as_str));
                }
            }
        }
        let outputs: Vec<usize> = self
            .graph
            .output
            .iter()
            .enumerate()
            .filter(|(_, o)| self.producer.get(o.name.as_str()).is_some_and(|&p| kept[p]))
            .map(|(at, _)| at)
            .collect();
        if outputs.is_empty() {
            return None;
        }
        // The static values the downstream nodes read are computed inside the part.
        let mut stack: Vec<usize> = (0..nodes.len()).filter(|&n| kept[n]).collect();
        while let Some(node) = stack.pop() {
            for name in reads(&nodes[node]) {
                if let Some(&p) = self.producer.get(name) {
                    if !kept[p] && self.fixed[p] {
                        kept[p] = true;
                        stack.push(p);
                    }
                }
            }
        }
        let mut crossing: Vec<String> = Vec::new();
        for node in (0..nodes.len()).filter(|&n| kept[n]) {
            for name in reads(&nodes[node]) {
                let inside = self.producer.get(name).is_some_and(|&p| kept[p]);
                if !inside
                    && name != weight
                    && !self.initializers.contains(name)
                    && self.is_value(name)
                    && !crossing.iter().any(|c| c == name)
                {
                    crossing.push(name.to_string());
                }
            }
        }
        Some(Cut {
            nodes: (0..nodes.len()).filter(|&n| kept[n]).collect(),
            of: nodes.len(),
            crossing,
            outputs,
        })
    }

    /// Whether `name` is a value of the main graph: a node's output or a graph input.
    fn is_value(&self, name: &str) -> bool {
        self.producer.contains_key(name) || self.graph.input.iter().any(|i| i.name == name)
    }
}

/// The model of `model`'s part `cut`: its nodes, the initializers they read, the crossing
/// values as inputs (typed by `types`, ONNX element type codes by name) and the graph outputs
/// it computes. The weight stays an initializer (or `Constant`) for the caller to make an input.
pub(crate) fn part(
    model: &pb::ModelProto,
    cut: &Cut,
    types: &HashMap<String, i32>,
) -> pb::ModelProto {
    let graph = model
        .graph
        .as_ref()
        .expect("a cut is of a model with a graph");
    let nodes: Vec<pb::NodeProto> = cut.nodes.iter().map(|&n| graph.node[n].clone()).collect();
    let read: HashSet<&str> = nodes.iter().flat_map(reads).collect();
    let produced: HashSet<&str> = nodes
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let input = cut
        .crossing
        .iter()
        .map(|name| pb::ValueInfoProto {
            name: name.clone(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: types.get(name).copied().unwrap_or(0),
                    shape: None,
                })),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let part = pb::GraphProto {
        name: graph.name.clone(),
        initializer: graph
            .initializer
            .iter()
            .filter(|t| read.contains(t.name.as_str()))
            .cloned()
            .collect(),
        input,
        output: cut
            .outputs
            .iter()
            .map(|&o| graph.output[o].clone())
            .collect(),
        value_info: graph
            .value_info
            .iter()
            .filter(|v| produced.contains(v.name.as_str()))
            .cloned()
            .collect(),
        node: nodes,
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: model.ir_version,
        opset_import: model.opset_import.clone(),
        graph: Some(part),
        ..Default::default()
    }
}

#[cfg(test)]
impl Cut {
    /// A part of no node reading `crossing`.
    pub(crate) fn for_test(crossing: &[&str]) -> Cut {
        Cut {
            nodes: Vec::new(),
            of: 0,
            crossing: crossing.iter().map(|c| c.to_string()).collect(),
            outputs: vec![0],
        }
    }
}
