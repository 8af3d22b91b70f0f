//! The `add_bias` graph rewrite: a main-graph layer without a bias gains one, so that bias
//! correction can shift its mean output. A `Conv` or `Gemm` gets a new initializer as its third
//! input; a `MatMul` gets an `Add` of a new initializer right after it: the `MatMul`'s output
//! is renamed and the `Add` produces the original name, so that consumers and graph outputs
//! stay as they were (a `value_info` of the output is copied under the new name).
//!
//! Edits are recorded in a [`Splice`] of the model file, as tensor edits are: every byte outside
//! the touched node and the insertions is copied. The new initializer is stored inline
//! (`raw_data`), also in a model whose other tensors live in external data.

use std::collections::BTreeSet;
use std::ops::Range;

use onnx_splice::{encode_len_header, fields, LenField, Patch, Splice};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::proto::{self, DataType};

/// A bias for a main-graph layer that has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBias {
    /// The layer's node index in the main graph (a `Conv`, `Gemm` or `MatMul`).
    pub node: usize,
    /// The new initializer's name, unused elsewhere in the model.
    pub name: String,
    /// Its element type (the weight's).
    pub dtype: DataType,
    /// Its little-endian elements, one per output channel.
    pub data: Vec<u8>,
    /// For a `MatMul`: the `Add` that adds the bias after it.
    pub add: Option<BiasAdd>,
}

/// The `Add` node that gives a `MatMul` its bias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BiasAdd {
    /// The new name of the `MatMul`'s output (the `Add`'s first input).
    pub renamed: String,
    /// The `Add` node's name.
    pub node_name: String,
}

/// Every name a model uses: tensors, node inputs, outputs and names, graph inputs, in every
/// graph (a subgraph may see the main graph's names), so that new names shadow none of them.
pub(crate) fn names_in_use(model: &Model) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = model.tensors().iter().map(|t| t.name.clone()).collect();
    for graph in model.graphs() {
        names.extend(graph.inputs.iter().map(|i| i.name.clone()));
        for node in &graph.nodes {
            names.insert(node.name.clone());
            names.extend(node.inputs.iter().cloned());
            names.extend(node.outputs.iter().cloned());
        }
    }
    names
}

/// `base` if no name in `taken` is `base`, else `base_1`, `base_2`, ...: the first one free.
pub(crate) fn unique(base: &str, taken: &BTreeSet<String>) -> String {
    if !taken.contains(base) {
        return base.to_string();
    }
    (1..)
        .map(|k| format!("{base}_{k}"))
        .find(|name| !taken.contains(name))
        .expect("a free name")
}

/// A length-delimited field: key, length and `payload`.
fn len_field(number: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 12);
    encode_len_header(number, payload.len(), &mut out);
    out.extend_from_slice(payload);
    out
}

/// A varint field.
fn varint_field(number: u32, value: u64, out: &mut Vec<u8>) {
    prost::encoding::encode_key(number, prost::encoding::WireType::Varint, out);
    prost::encoding::encode_varint(value, out);
}

/// The `TensorProto` of a 1-D initializer.
fn tensor_proto(bias: &NewBias, elements: usize) -> Vec<u8> {
    use proto::tensor as t;
    let mut out = Vec::new();
    varint_field(t::DIMS, elements as u64, &mut out);
    varint_field(t::DATA_TYPE, bias.dtype.code() as u64, &mut out);
    out.extend(len_field(t::NAME, bias.name.as_bytes()));
    out.extend(len_field(t::RAW_DATA, &bias.data));
    out
}

/// The `ValueInfoProto` of a 1-D tensor (a graph input, which IR versions below 4 require
/// for every initializer).
fn value_info_proto(name: &str, dtype: DataType, elements: usize) -> Vec<u8> {
    use proto::value_info as v;
    let mut dim = Vec::new();
    varint_field(v::DIM_VALUE, elements as u64, &mut dim);
    let shape = len_field(v::DIM, &dim);
    let mut tensor = Vec::new();
    varint_field(v::ELEM_TYPE, dtype.code() as u64, &mut tensor);
    tensor.extend(len_field(v::SHAPE, &shape));
    let type_proto = len_field(v::TENSOR_TYPE, &tensor);
    let mut out = len_field(v::NAME, name.as_bytes());
    out.extend(len_field(v::TYPE, &type_proto));
    out
}

/// The `NodeProto` of `Add(renamed, bias) -> output`.
fn add_node(add: &BiasAdd, bias: &str, output: &str) -> Vec<u8> {
    use proto::node as n;
    let mut out = len_field(n::INPUT, add.renamed.as_bytes());
    out.extend(len_field(n::INPUT, bias.as_bytes()));
    out.extend(len_field(n::OUTPUT, output.as_bytes()));
    out.extend(len_field(n::NAME, add.node_name.as_bytes()));
    out.extend(len_field(n::OP_TYPE, b"Add"));
    out
}

/// A node's field in the file: its span, and those of its input and output names.
struct NodeField {
    span: Range<usize>,
    len: LenField,
    inputs: Vec<(String, Range<usize>)>,
    outputs: Vec<(String, Range<usize>)>,
}

/// Where the main graph and its parts are in the file.
struct MainGraph {
    len: LenField,
    nodes: Vec<NodeField>,
    /// `value_info` entries: name, field span, payload.
    value_infos: Vec<(String, Range<usize>, Range<usize>)>,
}

fn wire(model: &Model, e: onnx_splice::WireError) -> Error {
    Error::invalid(model.path(), e.to_string())
}

/// Inserts `data` at byte `at`.
fn insert(splice: &mut Splice, at: usize, data: Vec<u8>, enclosing: Vec<LenField>) {
    splice.replace(at..at, Patch::Bytes(data), enclosing)
}

/// A string field's value.
fn text(bytes: &[u8], field: &onnx_splice::Field) -> String {
    field
        .payload()
        .map(|p| String::from_utf8_lossy(&bytes[p]).into_owned())
        .unwrap_or_default()
}

fn main_graph(model: &Model) -> Result<MainGraph> {
    let bytes = model.bytes();
    let mut graph = None;
    for field in fields(bytes, 0) {
        let field = field.map_err(|e| wire(model, e))?;
        if field.number == proto::model::GRAPH {
            graph = Some(field);
        }
    }
    let graph = graph.expect("a loaded model has a graph");
    let len = LenField::of(&graph).expect("a graph is a message");
    let mut main = MainGraph {
        len,
        nodes: Vec::new(),
        value_infos: Vec::new(),
    };
    let payload = len.payload_start..len.payload_end;
    for field in fields(&bytes[payload.clone()], payload.start) {
        let field = field.map_err(|e| wire(model, e))?;
        let Some(inner) = field.payload() else {
            continue;
        };
        match field.number {
            proto::graph::NODE => {
                let mut node = NodeField {
                    span: field.span.clone(),
                    len: LenField::of(&field).expect("a message"),
                    inputs: Vec::new(),
                    outputs: Vec::new(),
                };
                for f in fields(&bytes[inner.clone()], inner.start) {
                    let f = f.map_err(|e| wire(model, e))?;
                    match f.number {
                        proto::node::INPUT => node.inputs.push((text(bytes, &f), f.span)),
                        proto::node::OUTPUT => node.outputs.push((text(bytes, &f), f.span)),
                        _ => {}
                    }
                }
                main.nodes.push(node);
            }
            proto::graph::VALUE_INFO => {
                let mut name = String::new();
                for f in fields(&bytes[inner.clone()], inner.start) {
                    let f = f.map_err(|e| wire(model, e))?;
                    if f.number == proto::value_info::NAME {
                        name = text(bytes, &f);
                    }
                }
                main.value_infos.push((name, field.span.clone(), inner));
            }
            _ => {}
        }
    }
    Ok(main)
}

/// Records in `splice` the edits giving the layers of `biases` their new bias.
pub(crate) fn splice_biases(model: &Model, biases: &[&NewBias], splice: &mut Splice) -> Result<()> {
    if biases.is_empty() {
        return Ok(());
    }
    let graph = main_graph(model)?;
    let bytes = model.bytes();
    let end = graph.len.payload_end;
    for bias in biases {
        let node = graph
            .nodes
            .get(bias.node)
            .ok_or_else(|| Error::Usage(format!("no node {} in the main graph", bias.node)))?;
        let elements = bias.data.len() / bias.dtype.size().expect("float type");
        let initializer = len_field(proto::graph::INITIALIZER, &tensor_proto(bias, elements));
        insert(splice, end, initializer, vec![graph.len]);
        if model.info().ir_version < 4 {
            let input = value_info_proto(&bias.name, bias.dtype, elements);
            insert(
                splice,
                end,
                len_field(proto::graph::INPUT, &input),
                vec![graph.len],
            );
        }
        let in_node = vec![graph.len, node.len];
        match &bias.add {
            None => {
                // The third input: in place of an empty (omitted) one, or after the last.
                let field = len_field(proto::node::INPUT, bias.name.as_bytes());
                match node.inputs.get(2) {
                    Some((name, span)) if name.is_empty() => {
                        splice.replace(span.clone(), Patch::Bytes(field), in_node)
                    }
                    Some((name, _)) => {
                        return Err(Error::Usage(format!(
                            "node {} already has a third input `{name}`",
                            bias.node
                        )))
                    }
                    None => {
                        let last = node
                            .inputs
                            .last()
                            .map_or(node.len.payload_start, |i| i.1.end);
                        insert(splice, last, field, in_node);
                    }
                }
            }
            Some(add) => {
                let (output, span) = node
                    .outputs
                    .first()
                    .ok_or_else(|| Error::Usage(format!("node {} has no output", bias.node)))?;
                let renamed = len_field(proto::node::OUTPUT, add.renamed.as_bytes());
                splice.replace(span.clone(), Patch::Bytes(renamed), in_node);
                let node_bytes = add_node(add, &bias.name, output);
                insert(
                    splice,
                    node.span.end,
                    len_field(proto::graph::NODE, &node_bytes),
                    vec![graph.len],
                );
                for (name, span, payload) in &graph.value_infos {
                    if name != output {
                        continue;
                    }
                    // The same type and shape under the new name.
                    let mut copy = len_field(proto::value_info::NAME, add.renamed.as_bytes());
                    for f in fields(&bytes[payload.clone()], payload.start) {
                        let f = f.map_err(|e| wire(model, e))?;
                        if f.number != proto::value_info::NAME {
                            copy.extend_from_slice(&bytes[f.span]);
                        }
                    }
                    insert(
                        splice,
                        span.end,
                        len_field(proto::graph::VALUE_INFO, &copy),
                        vec![graph.len],
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_names_avoid_every_name_in_use() {
        let taken: BTreeSet<String> = ["conv.bias", "conv.bias_1", "x"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(unique("conv.bias", &taken), "conv.bias_2");
        assert_eq!(unique("y.bias", &taken), "y.bias");
    }

    #[test]
    fn a_graph_input_for_old_ir_versions_is_a_1d_tensor_type() {
        // name "b", type { tensor_type { elem_type: 1, shape { dim { dim_value: 3 } } } }
        assert_eq!(
            value_info_proto("b", DataType::Float32, 3),
            [10, 1, b'b', 18, 10, 10, 8, 8, 1, 18, 4, 10, 2, 8, 3]
        );
    }
}
