//! The single pass over a model's protobuf fields: graph structure, value infos and where
//! every constant tensor's bytes live, without copying them.

use std::ops::Range;

use onnx_splice::{fields, Field, LenField, Value};

use super::*;
use crate::proto;

/// Scans a whole model: its header, its graphs (the main one first) and its tensors.
pub(super) fn scan(bytes: &[u8]) -> ScanResult<(ModelInfo, Vec<Graph>, Vec<Tensor>)> {
    let mut scanner = Scanner {
        bytes,
        graphs: Vec::new(),
        tensors: Vec::new(),
    };
    let info = scanner.model()?;
    Ok((info, scanner.graphs, scanner.tensors))
}

pub(super) type ScanResult<T> = std::result::Result<T, String>;

struct Scanner<'a> {
    bytes: &'a [u8],
    graphs: Vec<Graph>,
    tensors: Vec<Tensor>,
}

fn string(bytes: &[u8], field: &Field) -> ScanResult<String> {
    match &field.value {
        Value::Len(range) => Ok(String::from_utf8_lossy(&bytes[range.clone()]).into_owned()),
        _ => Err(format!(
            "field {} at byte {} is not a string",
            field.number, field.span.start
        )),
    }
}

fn varint(field: &Field) -> ScanResult<u64> {
    match field.value {
        Value::Varint(v) => Ok(v),
        _ => Err(format!(
            "field {} at byte {} is not an integer",
            field.number, field.span.start
        )),
    }
}

fn payload(field: &Field) -> ScanResult<Range<usize>> {
    field.payload().ok_or_else(|| {
        format!(
            "field {} at byte {} is not a message",
            field.number, field.span.start
        )
    })
}

/// Appends the int64 values of a repeated field occurrence (packed or not) to `out`.
fn push_ints(bytes: &[u8], field: &Field, out: &mut Vec<i64>) -> ScanResult<()> {
    match &field.value {
        Value::Varint(v) => out.push(*v as i64),
        Value::Len(range) => {
            let mut rest = &bytes[range.clone()];
            while !rest.is_empty() {
                let v = prost::encoding::decode_varint(&mut rest)
                    .map_err(|_| format!("malformed packed integers at byte {}", range.start))?;
                out.push(v as i64);
            }
        }
        _ => {
            return Err(format!(
                "field {} at byte {} is not an integer list",
                field.number, field.span.start
            ))
        }
    }
    Ok(())
}

fn with(enclosing: &[LenField], field: &Field) -> Vec<LenField> {
    let mut chain = enclosing.to_vec();
    chain.extend(LenField::of(field));
    chain
}

/// What a `TensorProto` says about itself.
struct TensorFacts {
    name: String,
    dims: Vec<i64>,
    dtype: DataType,
    payload: Payload,
}

impl Scanner<'_> {
    fn fields(&self, range: Range<usize>) -> impl Iterator<Item = ScanResult<Field>> + '_ {
        fields(&self.bytes[range.clone()], range.start).map(|f| f.map_err(|e| e.to_string()))
    }

    fn model(&mut self) -> ScanResult<ModelInfo> {
        let mut info = ModelInfo::default();
        let mut graph = None;
        for field in self.fields(0..self.bytes.len()).collect::<Vec<_>>() {
            let field = field?;
            match field.number {
                proto::model::IR_VERSION => info.ir_version = varint(&field)? as i64,
                proto::model::PRODUCER_NAME => info.producer_name = string(self.bytes, &field)?,
                proto::model::PRODUCER_VERSION => {
                    info.producer_version = string(self.bytes, &field)?
                }
                proto::model::OPSET_IMPORT => {
                    let (mut domain, mut version) = (String::new(), 0);
                    for f in self.fields(payload(&field)?) {
                        let f = f?;
                        match f.number {
                            proto::opset::DOMAIN => domain = string(self.bytes, &f)?,
                            proto::opset::VERSION => version = varint(&f)? as i64,
                            _ => {}
                        }
                    }
                    info.opsets.push((domain, version));
                }
                proto::model::GRAPH => graph = Some(field),
                _ => {}
            }
        }
        if info.ir_version == 0 && info.opsets.is_empty() {
            return Err("no ir_version and no opset_import".into());
        }
        let graph = graph.ok_or("no graph")?;
        info.graph_name = self.graph(&graph, &[], String::new(), None, 0)?;
        Ok(info)
    }

    /// Scans a `GraphProto` field; returns the graph's name.
    fn graph(
        &mut self,
        field: &Field,
        enclosing: &[LenField],
        path: String,
        parent: Option<usize>,
        depth: usize,
    ) -> ScanResult<String> {
        if depth > MAX_GRAPH_DEPTH {
            return Err(format!(
                "subgraphs nested deeper than {MAX_GRAPH_DEPTH} levels at `{path}`"
            ));
        }
        let index = self.graphs.len();
        self.graphs.push(Graph {
            path: path.clone(),
            parent,
            nodes: Vec::new(),
            inputs: Vec::new(),
        });
        let enclosing = with(enclosing, field);
        let mut name = String::new();
        for f in self.fields(payload(field)?).collect::<Vec<_>>() {
            let f = f?;
            match f.number {
                proto::graph::NAME => name = string(self.bytes, &f)?,
                proto::graph::INITIALIZER => {
                    let facts = self.tensor_facts(&f)?;
                    self.push_tensor(index, Source::Initializer, facts, None, &f, &enclosing)?;
                }
                proto::graph::SPARSE_INITIALIZER => {
                    self.sparse_tensor(index, Source::SparseInitializer, None, &f, &enclosing)?;
                }
                proto::graph::NODE => self.node(index, &f, &enclosing, &path, depth)?,
                proto::graph::INPUT => {
                    let input = self.value_info(&f)?;
                    self.graphs[index].inputs.push(input);
                }
                _ => {}
            }
        }
        Ok(name)
    }

    /// Reads a `ValueInfoProto`: name, and the element type and dimensions of a tensor type.
    fn value_info(&self, field: &Field) -> ScanResult<ValueInfo> {
        use proto::value_info as v;
        let mut info = ValueInfo {
            name: String::new(),
            elem_type: 0,
            dims: Vec::new(),
            has_shape: false,
        };
        // The message each level's field of interest is in, found by field number.
        let nested = |field: &Field, number: u32| -> ScanResult<Vec<Field>> {
            self.fields(payload(field)?)
                .filter(|f| f.as_ref().map_or(true, |f| f.number == number))
                .collect()
        };
        for f in self.fields(payload(field)?) {
            let f = f?;
            match f.number {
                v::NAME => info.name = string(self.bytes, &f)?,
                v::TYPE => {
                    for tensor in nested(&f, v::TENSOR_TYPE)? {
                        for part in self.fields(payload(&tensor)?) {
                            let part = part?;
                            match part.number {
                                v::ELEM_TYPE => info.elem_type = varint(&part)? as i32,
                                v::SHAPE => {
                                    info.has_shape = true;
                                    for dim in nested(&part, v::DIM)? {
                                        let value = nested(&dim, v::DIM_VALUE)?;
                                        let value = value.last().map(varint).transpose()?;
                                        // int64 on the wire: a negative size is no size.
                                        info.dims.push(value.filter(|&v| (v as i64) >= 0));
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(info)
    }

    fn node(
        &mut self,
        graph: usize,
        field: &Field,
        enclosing: &[LenField],
        graph_path: &str,
        depth: usize,
    ) -> ScanResult<()> {
        let enclosing = with(enclosing, field);
        let mut node = Node {
            name: String::new(),
            op_type: String::new(),
            domain: String::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            ints: BTreeMap::new(),
            int_lists: BTreeMap::new(),
            floats: BTreeMap::new(),
            strings: BTreeMap::new(),
            subgraphs: Vec::new(),
        };
        let mut attributes = Vec::new();
        for f in self.fields(payload(field)?) {
            let f = f?;
            match f.number {
                proto::node::INPUT => node.inputs.push(string(self.bytes, &f)?),
                proto::node::OUTPUT => node.outputs.push(string(self.bytes, &f)?),
                proto::node::NAME => node.name = string(self.bytes, &f)?,
                proto::node::OP_TYPE => node.op_type = string(self.bytes, &f)?,
                proto::node::DOMAIN => node.domain = string(self.bytes, &f)?,
                proto::node::ATTRIBUTE => attributes.push(f),
                _ => {}
            }
        }
        let node_index = self.graphs[graph].nodes.len();
        let label = node.label(node_index);
        let is_constant = node.op_type == "Constant" && node.domain.is_empty();
        let output = node.outputs.first().cloned().unwrap_or_default();
        // The node is recorded before its subgraphs are scanned, so indices stay in file order.
        self.graphs[graph].nodes.push(node);
        for attribute in attributes {
            let attr_enclosing = with(&enclosing, &attribute);
            let mut name = String::new();
            let mut int = None;
            let (mut float, mut text, mut list) = (None, None, None::<Vec<i64>>);
            let mut values = Vec::new();
            for f in self.fields(payload(&attribute)?) {
                let f = f?;
                match f.number {
                    proto::attribute::NAME => name = string(self.bytes, &f)?,
                    proto::attribute::I => int = Some(varint(&f)? as i64),
                    proto::attribute::F => {
                        if let Value::Fixed32(bits) = f.value {
                            float = Some(f32::from_bits(bits));
                        }
                    }
                    proto::attribute::S => text = Some(string(self.bytes, &f)?),
                    proto::attribute::INTS => {
                        push_ints(self.bytes, &f, list.get_or_insert_with(Vec::new))?
                    }
                    proto::attribute::T
                    | proto::attribute::G
                    | proto::attribute::GRAPHS
                    | proto::attribute::SPARSE_TENSOR => values.push(f),
                    _ => {}
                }
            }
            let node = &mut self.graphs[graph].nodes[node_index];
            if let Some(value) = int {
                node.ints.insert(name.clone(), value);
            }
            if let Some(value) = float {
                node.floats.insert(name.clone(), value);
            }
            if let Some(value) = text {
                node.strings.insert(name.clone(), value);
            }
            if let Some(value) = list {
                node.int_lists.insert(name.clone(), value);
            }
            for f in values {
                match f.number {
                    proto::attribute::T if is_constant && name == "value" => {
                        let mut facts = self.tensor_facts(&f)?;
                        facts.name = output.clone();
                        let source = Source::Constant(node_index);
                        self.push_tensor(graph, source, facts, None, &f, &attr_enclosing)?;
                    }
                    proto::attribute::SPARSE_TENSOR if is_constant && name == "sparse_value" => {
                        let source = Source::SparseConstant(node_index);
                        self.sparse_tensor(
                            graph,
                            source,
                            Some(output.clone()),
                            &f,
                            &attr_enclosing,
                        )?;
                    }
                    proto::attribute::G | proto::attribute::GRAPHS => {
                        let sub_index = self.graphs.len();
                        let mut path = format!("{label}/{name}");
                        if !graph_path.is_empty() {
                            path = format!("{graph_path}/{path}");
                        }
                        self.graph(&f, &attr_enclosing, path, Some(graph), depth + 1)?;
                        self.graphs[graph].nodes[node_index]
                            .subgraphs
                            .push((name.clone(), sub_index));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn tensor_facts(&self, field: &Field) -> ScanResult<TensorFacts> {
        let mut facts = TensorFacts {
            name: String::new(),
            dims: Vec::new(),
            dtype: DataType::Other(0),
            payload: Payload::Empty,
        };
        let mut typed: BTreeMap<u32, Vec<Field>> = BTreeMap::new();
        let mut external = false;
        let mut entries = Vec::new();
        for f in self.fields(payload(field)?) {
            let f = f?;
            match f.number {
                proto::tensor::DIMS => push_ints(self.bytes, &f, &mut facts.dims)?,
                proto::tensor::DATA_TYPE => facts.dtype = DataType::from_code(varint(&f)? as i32),
                proto::tensor::NAME => facts.name = string(self.bytes, &f)?,
                proto::tensor::RAW_DATA => {
                    let raw = LenField::of(&f).ok_or("raw_data is not bytes")?;
                    facts.payload = Payload::Raw(raw);
                }
                proto::tensor::DATA_LOCATION => {
                    external = varint(&f)? == proto::tensor::LOCATION_EXTERNAL
                }
                proto::tensor::EXTERNAL_DATA => entries.push(f),
                proto::tensor::FLOAT_DATA
                | proto::tensor::INT32_DATA
                | proto::tensor::STRING_DATA
                | proto::tensor::INT64_DATA
                | proto::tensor::DOUBLE_DATA
                | proto::tensor::UINT64_DATA => typed.entry(f.number).or_default().push(f),
                _ => {}
            }
        }
        if external {
            let (mut location, mut offset, mut length) = (String::new(), 0u64, None);
            let mut location_field = None;
            for entry in entries {
                let (mut key, mut value, mut value_field) = (String::new(), String::new(), None);
                for f in self.fields(payload(&entry)?) {
                    let f = f?;
                    match f.number {
                        proto::entry::KEY => key = string(self.bytes, &f)?,
                        proto::entry::VALUE => {
                            value = string(self.bytes, &f)?;
                            value_field = LenField::of(&f);
                        }
                        _ => {}
                    }
                }
                if key == "location" {
                    location_field = LenField::of(&entry).zip(value_field).map(|(e, v)| [e, v]);
                }
                let number = || {
                    value.parse::<u64>().map_err(|_| {
                        format!(
                            "tensor `{}`: external data {key} `{value}` is not a number",
                            facts.name
                        )
                    })
                };
                match key.as_str() {
                    "location" => location = value.clone(),
                    "offset" => offset = number()?,
                    "length" => length = Some(number()?),
                    _ => {}
                }
            }
            let length = match (length, facts.dtype.size()) {
                (Some(length), _) => length,
                (None, Some(size)) => element_count(&facts.dims)
                    .and_then(|n| n.checked_mul(size as u64))
                    .ok_or_else(|| format!("tensor `{}` has an invalid shape", facts.name))?,
                (None, None) => {
                    return Err(format!(
                        "tensor `{}`: external data without a length",
                        facts.name
                    ))
                }
            };
            facts.payload = Payload::External {
                location,
                offset,
                length,
                location_field,
            };
        } else if matches!(facts.payload, Payload::Empty) {
            if let Some((number, pieces)) = typed.into_iter().next() {
                facts.payload = Payload::Typed { number, pieces };
            }
        }
        Ok(facts)
    }

    fn sparse_tensor(
        &mut self,
        graph: usize,
        source: Source,
        name: Option<String>,
        field: &Field,
        enclosing: &[LenField],
    ) -> ScanResult<()> {
        let (mut values, mut indices, mut dims) = (None, None, Vec::new());
        for f in self.fields(payload(field)?) {
            let f = f?;
            match f.number {
                proto::sparse::VALUES => values = Some(self.tensor_facts(&f)?),
                proto::sparse::INDICES => indices = Some(self.tensor_facts(&f)?),
                proto::sparse::DIMS => push_ints(self.bytes, &f, &mut dims)?,
                _ => {}
            }
        }
        let (Some(mut values), Some(indices)) = (values, indices) else {
            return Err(format!(
                "sparse tensor at byte {} lacks values or indices",
                field.span.start
            ));
        };
        let nnz = values.dims.first().copied().unwrap_or(0).max(0) as u64;
        if let Some(name) = name {
            values.name = name;
        }
        let sparse = SparseLayout {
            nnz,
            indices_dims: indices.dims,
            indices_type: indices.dtype,
            indices: indices.payload,
        };
        values.dims = dims;
        self.push_tensor(graph, source, values, Some(sparse), field, enclosing)
    }

    fn push_tensor(
        &mut self,
        graph: usize,
        source: Source,
        facts: TensorFacts,
        sparse: Option<SparseLayout>,
        field: &Field,
        enclosing: &[LenField],
    ) -> ScanResult<()> {
        let elements = element_count(&facts.dims).ok_or_else(|| {
            format!(
                "tensor `{}` has an invalid shape {:?}",
                facts.name, facts.dims
            )
        })?;
        let stored = sparse.as_ref().map_or(elements, |s| s.nnz);
        if stored > elements {
            return Err(format!(
                "sparse tensor `{}` holds {stored} values but its shape {:?} has {elements} elements",
                facts.name, facts.dims
            ));
        }
        if let (Payload::Raw(raw), Some(size)) = (&facts.payload, facts.dtype.size()) {
            let len = (raw.payload_end - raw.payload_start) as u64;
            if stored.checked_mul(size as u64) != Some(len) {
                return Err(format!(
                    "tensor `{}` of shape {:?} ({}) needs {} bytes of raw_data but has {len}",
                    facts.name,
                    facts.dims,
                    facts.dtype.name(),
                    stored.saturating_mul(size as u64)
                ));
            }
        }
        self.tensors.push(Tensor {
            graph,
            source,
            name: facts.name,
            dims: facts.dims,
            dtype: facts.dtype,
            elements,
            payload: facts.payload,
            sparse,
            field: field.span.clone(),
            enclosing: with(enclosing, field),
        });
        Ok(())
    }
}
