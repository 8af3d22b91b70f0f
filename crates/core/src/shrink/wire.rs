//! Where the main graph's messages sit in the model's bytes: its nodes (with their attribute
//! fields), `value_info` entries and declared inputs and outputs, so that the rewrite can edit
//! them in place. Tensors are located by [`crate::model`] already.

use std::collections::BTreeMap;

use onnx_splice::{fields, Field, LenField, Value};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::proto;

/// `GraphProto.output`.
const GRAPH_OUTPUT: u32 = 12;
/// `GraphProto.value_info`.
pub(crate) const GRAPH_VALUE_INFO: u32 = 13;

/// One attribute of a node: its field and the fields inside it.
#[derive(Debug, Clone)]
pub(crate) struct AttributeWire {
    /// The attribute message's field in the node.
    pub field: LenField,
    /// The whole field, for removal.
    pub span: std::ops::Range<usize>,
    /// Fields of the attribute message.
    pub parts: Vec<Field>,
}

/// A node of the main graph.
#[derive(Debug, Clone)]
pub(crate) struct NodeWire {
    /// The node message's field in the graph.
    pub field: LenField,
    /// The whole field, for removal.
    pub span: std::ops::Range<usize>,
    /// Attributes by name.
    pub attributes: BTreeMap<String, AttributeWire>,
    /// Where the node's last `input` field ends (where another input goes).
    pub inputs_end: usize,
    /// Each `input` field, in order.
    pub inputs: Vec<std::ops::Range<usize>>,
}

/// A `ValueInfoProto` of the main graph (a declared input, output or intermediate).
#[derive(Debug, Clone)]
pub(crate) struct ValueWire {
    /// Its name.
    pub name: String,
    /// The whole field, for removal or replacement.
    pub span: std::ops::Range<usize>,
}

/// The main graph's editable messages.
#[derive(Debug, Clone)]
pub(crate) struct GraphWire {
    /// The graph field in the model.
    pub graph: LenField,
    /// Nodes, in the order of [`crate::model::Graph::nodes`].
    pub nodes: Vec<NodeWire>,
    /// `value_info` entries.
    pub value_info: Vec<ValueWire>,
    /// Declared inputs (initializers listed as inputs included).
    pub inputs: Vec<ValueWire>,
    /// Declared outputs.
    pub outputs: Vec<ValueWire>,
}

fn bad(model: &Model, what: &str) -> Error {
    Error::invalid(model.path(), format!("not a valid ONNX model: {what}"))
}

fn message(bytes: &[u8], field: &Field) -> Vec<Field> {
    match &field.value {
        Value::Len(range) => fields(&bytes[range.clone()], range.start)
            .filter_map(|f| f.ok())
            .collect(),
        _ => Vec::new(),
    }
}

fn text(bytes: &[u8], field: &Field) -> String {
    match &field.value {
        Value::Len(range) => String::from_utf8_lossy(&bytes[range.clone()]).into_owned(),
        _ => String::new(),
    }
}

fn name_of(bytes: &[u8], parts: &[Field], number: u32) -> String {
    parts
        .iter()
        .filter(|f| f.number == number)
        .map(|f| text(bytes, f))
        .next_back()
        .unwrap_or_default()
}

/// Scans the main graph of `model` (already validated by [`Model::load`]).
pub(crate) fn scan(model: &Model) -> Result<GraphWire> {
    let bytes = model.bytes();
    let graph_field = fields(bytes, 0)
        .filter_map(|f| f.ok())
        .filter(|f| f.number == proto::model::GRAPH)
        .last()
        .ok_or_else(|| bad(model, "no graph"))?;
    let graph = LenField::of(&graph_field).ok_or_else(|| bad(model, "graph is not a message"))?;
    let mut wire = GraphWire {
        graph,
        nodes: Vec::new(),
        value_info: Vec::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
    };
    for f in message(bytes, &graph_field) {
        let value = |f: &Field| ValueWire {
            name: name_of(bytes, &message(bytes, f), proto::value_info::NAME),
            span: f.span.clone(),
        };
        match f.number {
            proto::graph::NODE => {
                let mut attributes = BTreeMap::new();
                let payload = f.payload().unwrap_or_default();
                let mut inputs_end = payload.start;
                let mut inputs = Vec::new();
                for part in message(bytes, &f) {
                    if part.number == proto::node::INPUT {
                        inputs_end = part.span.end;
                        inputs.push(part.span.clone());
                    }
                    if part.number != proto::node::ATTRIBUTE {
                        continue;
                    }
                    let parts = message(bytes, &part);
                    let name = name_of(bytes, &parts, proto::attribute::NAME);
                    let field = LenField::of(&part).ok_or_else(|| bad(model, "attribute"))?;
                    let span = part.span.clone();
                    attributes.insert(name, AttributeWire { field, span, parts });
                }
                let field = LenField::of(&f).ok_or_else(|| bad(model, "node"))?;
                wire.nodes.push(NodeWire {
                    field,
                    span: f.span.clone(),
                    attributes,
                    inputs_end,
                    inputs,
                });
            }
            GRAPH_VALUE_INFO => wire.value_info.push(value(&f)),
            proto::graph::INPUT => wire.inputs.push(value(&f)),
            GRAPH_OUTPUT => wire.outputs.push(value(&f)),
            _ => {}
        }
    }
    if wire.nodes.len() != model.graphs()[0].nodes.len() {
        return Err(bad(model, "the graph's nodes could not be located"));
    }
    Ok(wire)
}
