//! Encoding the few new messages the rewrite writes (packed dims, value declarations,
//! attributes) and giving an equal Split explicit sizes.

use onnx_splice::{encode_len_header, Patch, Splice};

use crate::model::Model;
use crate::proto;

use super::wire::GraphWire;

pub(crate) fn varint_field(number: u32, value: u64, out: &mut Vec<u8>) {
    prost::encoding::encode_varint(u64::from(number << 3), out);
    prost::encoding::encode_varint(value, out);
}

pub(crate) fn packed_ints(number: u32, values: &[i64]) -> Vec<u8> {
    let mut payload = Vec::new();
    for &v in values {
        prost::encoding::encode_varint(v as u64, &mut payload);
    }
    let mut out = Vec::new();
    encode_len_header(number, payload.len(), &mut out);
    out.extend(payload);
    out
}

pub(crate) fn message(number: u32, payload: &[u8], out: &mut Vec<u8>) {
    encode_len_header(number, payload.len(), out);
    out.extend_from_slice(payload);
}

/// A `ValueInfoProto` field `{name, tensor_type {elem_type, shape}}` of a graph (`number`:
/// `input` or `value_info`).
pub(crate) fn value_info(number: u32, name: &str, elem_type: i32, dims: &[i64]) -> Vec<u8> {
    use proto::value_info as v;
    let mut shape = Vec::new();
    for &d in dims {
        let mut dim = Vec::new();
        varint_field(v::DIM_VALUE, d as u64, &mut dim);
        message(v::DIM, &dim, &mut shape);
    }
    let mut tensor = Vec::new();
    varint_field(v::ELEM_TYPE, elem_type as u64, &mut tensor);
    message(v::SHAPE, &shape, &mut tensor);
    let mut ty = Vec::new();
    message(v::TENSOR_TYPE, &tensor, &mut ty);
    let mut info = Vec::new();
    message(v::NAME, name.as_bytes(), &mut info);
    message(v::TYPE, &ty, &mut info);
    let mut out = Vec::new();
    message(number, &info, &mut out);
    out
}
/// A graph `initializer` field: an integer tensor `name` of shape `dims` holding `values`,
/// int32 when `int32` (values in range), else int64.
pub(crate) fn int_initializer(name: &str, dims: &[i64], values: &[i64], int32: bool) -> Vec<u8> {
    let raw: Vec<u8> = if int32 {
        values
            .iter()
            .flat_map(|&v| (v as i32).to_le_bytes())
            .collect()
    } else {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    };
    initializer(name, dims, if int32 { 6 } else { 7 }, &raw)
}

/// A graph `initializer` field: a tensor `name` of shape `dims` and element type `data_type`
/// holding the little-endian bytes `raw`.
pub(crate) fn initializer(name: &str, dims: &[i64], data_type: i32, raw: &[u8]) -> Vec<u8> {
    let mut tensor = packed_ints(proto::tensor::DIMS, dims);
    varint_field(proto::tensor::DATA_TYPE, data_type as u64, &mut tensor);
    message(proto::tensor::NAME, name.as_bytes(), &mut tensor);
    message(proto::tensor::RAW_DATA, raw, &mut tensor);
    let mut field = Vec::new();
    message(proto::graph::INITIALIZER, &tensor, &mut field);
    field
}

/// A graph `node` field without attributes: `op_type` (default domain) named `name`.
pub(crate) fn plain_node(name: &str, op_type: &str, inputs: &[&str], outputs: &[&str]) -> Vec<u8> {
    use proto::node as n;
    let mut node = Vec::new();
    for input in inputs {
        message(n::INPUT, input.as_bytes(), &mut node);
    }
    for output in outputs {
        message(n::OUTPUT, output.as_bytes(), &mut node);
    }
    message(n::NAME, name.as_bytes(), &mut node);
    message(n::OP_TYPE, op_type.as_bytes(), &mut node);
    let mut field = Vec::new();
    message(proto::graph::NODE, &node, &mut field);
    field
}

/// Gives a Split that split equally explicit `sizes`: a new int64 initializer as its second
/// input from opset 13 (its `num_outputs` attribute removed), the `split` attribute before.
pub(crate) fn explicit_split(
    model: &Model,
    wire: &GraphWire,
    node: usize,
    sizes: &[i64],
    splice: &mut Splice,
) {
    let opset = model.info().default_opset();
    let n = &wire.nodes[node];
    let graph_node = &model.graphs()[0].nodes[node];
    let node_chain = vec![wire.graph, n.field];
    if opset >= 13 {
        let name = format!("{}_shrink_split_sizes", graph_node.outputs[0]);
        let field = int_initializer(&name, &[sizes.len() as i64], sizes, false);
        let end = wire.graph.payload_end;
        splice.replace(end..end, Patch::Bytes(field), vec![wire.graph]);
        let mut input = Vec::new();
        message(proto::node::INPUT, name.as_bytes(), &mut input);
        splice.replace(
            n.inputs_end..n.inputs_end,
            Patch::Bytes(input),
            node_chain.clone(),
        );
        if let Some(attr) = n.attributes.get("num_outputs") {
            splice.replace(attr.span.clone(), Patch::Bytes(Vec::new()), node_chain);
        }
    } else {
        let mut attr = Vec::new();
        message(proto::attribute::NAME, b"split", &mut attr);
        attr.extend(packed_ints(proto::attribute::INTS, sizes));
        varint_field(ATTRIBUTE_TYPE, 7, &mut attr);
        let mut field = Vec::new();
        message(proto::node::ATTRIBUTE, &attr, &mut field);
        let end = n.field.payload_end;
        splice.replace(end..end, Patch::Bytes(field), node_chain);
    }
}

/// Gives input `input` of `node` its own copy of the shared tensor `tensor`, of shape `dims`
/// holding the little-endian bytes `raw` (the shared tensor's element type): a new initializer
/// named after the tensor and the node's first output (and the input, with `by_input`: the
/// node gets more than one copy of the tensor).
pub(crate) fn own_copy(
    model: &Model,
    wire: &GraphWire,
    (node, input, by_input): (usize, usize, bool),
    (tensor, dims, raw): (usize, &[i64], &[u8]),
    splice: &mut Splice,
) {
    let shared = &model.tensors()[tensor];
    let graph_node = &model.graphs()[0].nodes[node];
    let mut name = format!("{}_shrink_{}", shared.name, graph_node.outputs[0]);
    if by_input {
        name = format!("{name}_{input}");
    }
    let field = initializer(&name, dims, shared.dtype.code(), raw);
    let end = wire.graph.payload_end;
    splice.replace(end..end, Patch::Bytes(field), vec![wire.graph]);
    let n = &wire.nodes[node];
    let mut field = Vec::new();
    message(proto::node::INPUT, name.as_bytes(), &mut field);
    splice.replace(
        n.inputs[input].clone(),
        Patch::Bytes(field),
        vec![wire.graph, n.field],
    );
}

/// `AttributeProto.type`; 7 is `INTS`.
const ATTRIBUTE_TYPE: u32 = 20;
