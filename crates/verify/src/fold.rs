//! Constant inputs (`--fix NAME=VALUE`) and the `If` nodes that they, or concrete input shapes,
//! decide. Applied to the ONNX graph handed to tract, never to a model file.
//!
//! tract types an `If` whose branches give outputs of different shapes as an error even when
//! its condition is constant, so a decided `If` is replaced here, before tract analyses the
//! graph, by the nodes of the branch taken (ONNX's `If` semantics), followed by an `Identity`
//! per output. A condition is decided by handing tract the small graph that computes it: the
//! fixed inputs are initializers there and the other inputs have concrete shapes, so
//! `Equal(Gather(Shape(x), 1), 16)` folds to a constant as `Equal(sr, 16000)` does.

use std::collections::{BTreeMap, BTreeSet};

use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::InferenceModelExt;

use crate::error::{Error, Result};
use crate::runner::{inside_tract, InputSpec, Shapes};

/// Inputs made constants, by name.
pub type Fixed = BTreeMap<String, Tensor>;

/// The value of `--fix NAME=VALUE` for input `spec`: comma-separated values of the input's
/// element type, shaped as the input declares; with no declared shape, one value is a scalar
/// and more are a vector.
pub fn parse_fix(spec: &InputSpec, value: &str) -> Result<Tensor> {
    let name = &spec.name;
    let bad = |msg: String| Error::Usage(format!("--fix {name}={value}: {msg}"));
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    let n = items.len();
    let shape: Vec<usize> = if spec.scalar && n > 1 {
        return Err(bad(format!(
            "input `{name}` is a scalar and {n} values were given"
        )));
    } else if spec.dims.is_empty() {
        if n == 1 {
            vec![]
        } else {
            vec![n]
        }
    } else {
        let known: usize = spec.dims.iter().flatten().product();
        let free = spec.dims.iter().filter(|d| d.is_none()).count();
        match free {
            0 if known == n => spec.dims.iter().flatten().copied().collect(),
            1 if known > 0 && n % known == 0 => {
                spec.dims.iter().map(|d| d.unwrap_or(n / known)).collect()
            }
            _ => {
                return Err(bad(format!(
                    "{n} values do not fill input `{name}` of shape {}",
                    dims_text(&spec.dims)
                )))
            }
        }
    };
    let what = format!("input `{name}` is {:?}", spec.datum);
    let tensor = match spec.datum {
        DatumType::Bool => {
            let values = items
                .iter()
                .map(|v| match *v {
                    "true" | "True" | "1" => Ok(true),
                    "false" | "False" | "0" => Ok(false),
                    other => Err(bad(format!("`{other}` is not a boolean ({what})"))),
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::from_shape(&shape, &values)
        }
        dt if dt.is_float() => {
            let values = items
                .iter()
                .map(|v| {
                    v.parse::<f64>()
                        .map_err(|_| bad(format!("`{v}` is not a number ({what})")))
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::from_shape(&shape, &values).and_then(|t| Ok(t.cast_to_dt(dt)?.into_owned()))
        }
        dt if dt.is_integer() => {
            let values = items
                .iter()
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| bad(format!("`{v}` is not an integer ({what})")))
                })
                .collect::<Result<Vec<_>>>()?;
            let wide = Tensor::from_shape(&shape, &values).map_err(|e| bad(format!("{e:#}")))?;
            let narrow = wide
                .cast_to_dt(dt)
                .map_err(|e| bad(format!("{e:#}")))?
                .into_owned();
            let back = narrow.cast_to::<i64>().map_err(|e| bad(format!("{e:#}")))?;
            if *back != wide {
                return Err(bad(format!("a value is out of the range of {what}")));
            }
            Ok(narrow)
        }
        other => return Err(bad(format!("cannot fix an input of type {other:?}"))),
    };
    tensor.map_err(|e| bad(format!("{e:#}")))
}

fn dims_text(dims: &[Option<usize>]) -> String {
    let dims: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".into(), |d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

/// An `If` of the main graph whose condition could not be decided before tract's analysis.
#[derive(Debug, Clone)]
pub struct Undecided {
    /// The `If` node's name (or `If_<index>`).
    pub node: String,
    /// The inputs of the model its condition depends on.
    pub inputs: Vec<String>,
}

impl Undecided {
    /// What to tell a user whose model tract refused.
    pub fn hint(&self) -> String {
        if self.inputs.is_empty() {
            format!(
                "`If` node `{}` branches on a condition that is not constant here",
                self.node
            )
        } else {
            let fixes: Vec<String> = self
                .inputs
                .iter()
                .map(|i| format!("--fix {i}=VALUE"))
                .collect();
            format!(
                "`If` node `{}` branches on input{} {}: give the value every caller passes with {}",
                self.node,
                if self.inputs.len() > 1 { "s" } else { "" },
                self.inputs
                    .iter()
                    .map(|i| format!("`{i}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                fixes.join(" ")
            )
        }
    }
}

pub(crate) fn data_type(dt: DatumType) -> Option<pb::tensor_proto::DataType> {
    use pb::tensor_proto::DataType as D;
    Some(match dt {
        DatumType::Bool => D::Bool,
        DatumType::U8 => D::Uint8,
        DatumType::U16 => D::Uint16,
        DatumType::U32 => D::Uint32,
        DatumType::U64 => D::Uint64,
        DatumType::I8 => D::Int8,
        DatumType::I16 => D::Int16,
        DatumType::I32 => D::Int32,
        DatumType::I64 => D::Int64,
        DatumType::F16 => D::Float16,
        DatumType::F32 => D::Float,
        DatumType::F64 => D::Double,
        _ => return None,
    })
}

fn tensor_proto(name: &str, value: &Tensor) -> Result<pb::TensorProto> {
    let dt = data_type(value.datum_type()).ok_or_else(|| {
        Error::Usage(format!(
            "--fix {name}: cannot fix an input of type {:?}",
            value.datum_type()
        ))
    })?;
    Ok(pb::TensorProto {
        name: name.to_string(),
        dims: value.shape().iter().map(|&d| d as i64).collect(),
        data_type: dt as i32,
        // Element bytes as tract holds them: little-endian on every platform it runs on.
        raw_data: value.as_bytes().to_vec(),
        ..Default::default()
    })
}

fn is_if(node: &pb::NodeProto) -> bool {
    node.op_type == "If" && (node.domain.is_empty() || node.domain == "ai.onnx")
}

fn label(node: &pb::NodeProto, index: usize) -> String {
    if node.name.is_empty() {
        format!("If_{index}")
    } else {
        node.name.clone()
    }
}

/// Makes the fixed inputs constants and inlines every `If` of the main graph whose condition
/// is then constant, until none is left that can be decided. Returns those left.
pub fn fold(model: &mut pb::ModelProto, fixed: &Fixed, shapes: &Shapes) -> Result<Vec<Undecided>> {
    let Some(graph) = model.graph.as_mut() else {
        return Ok(Vec::new());
    };
    for (name, value) in fixed {
        graph.input.retain(|i| &i.name != name);
        graph.initializer.retain(|t| &t.name != name);
        graph.initializer.push(tensor_proto(name, value)?);
    }
    if !graph.node.iter().any(is_if) {
        return Ok(Vec::new());
    }
    let (opsets, ir_version) = (model.opset_import.clone(), model.ir_version);
    let graph = model.graph.as_mut().expect("checked above");
    let mut undecided = Vec::new();
    let mut index = 0;
    while index < graph.node.len() {
        if !is_if(&graph.node[index]) {
            index += 1;
            continue;
        }
        let node = &graph.node[index];
        let Some(condition) = node.input.first().cloned() else {
            index += 1;
            continue;
        };
        let (producers, inputs, leaves) = dependencies(graph, &condition);
        let depends_on_fix: Vec<&String> = fixed.keys().filter(|f| leaves.contains(*f)).collect();
        match decide(graph, &producers, &inputs, &condition, &opsets, ir_version, shapes) {
            Some(value) if value.len() == 1 && value.datum_type() == DatumType::Bool => {
                let take_then = value.cast_to_scalar::<bool>().expect("a boolean scalar");
                inline(graph, index, take_then);
                // The branch's nodes now stand at `index`: they are visited next, nested
                // `If`s included.
            }
            Some(value) if !depends_on_fix.is_empty() => {
                return Err(Error::Usage(format!(
                    "--fix {}: `If` node `{}` then branches on a {:?} of shape {:?}, not on one boolean",
                    depends_on_fix
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", --fix "),
                    label(node, index),
                    value.datum_type(),
                    value.shape()
                )))
            }
            _ => {
                undecided.push(Undecided {
                    node: label(node, index),
                    inputs: inputs
                        .iter()
                        .filter(|i| !fixed.contains_key(*i))
                        .cloned()
                        .collect(),
                });
                index += 1;
            }
        }
    }
    Ok(undecided)
}

/// The nodes (indices, in graph order) that compute `value` in `graph`, the graph inputs they
/// read, and every value they read that no node produces (inputs and initializers).
fn dependencies(
    graph: &pb::GraphProto,
    value: &str,
) -> (Vec<usize>, BTreeSet<String>, BTreeSet<String>) {
    let producer: BTreeMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let declared: BTreeSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    let initializers: BTreeSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let (mut nodes, mut inputs, mut leaves) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut pending = vec![value.to_string()];
    while let Some(name) = pending.pop() {
        if let Some(&i) = producer.get(name.as_str()) {
            if nodes.insert(i) {
                pending.extend(
                    graph.node[i]
                        .input
                        .iter()
                        .filter(|s| !s.is_empty())
                        .cloned(),
                );
            }
        } else {
            if declared.contains(name.as_str()) && !initializers.contains(name.as_str()) {
                inputs.insert(name.clone());
            }
            leaves.insert(name);
        }
    }
    (nodes.into_iter().collect(), inputs, leaves)
}

/// The value of `condition`, when tract can compute it from constants and input shapes alone.
fn decide(
    graph: &pb::GraphProto,
    producers: &[usize],
    inputs: &BTreeSet<String>,
    condition: &str,
    opsets: &[pb::OperatorSetIdProto],
    ir_version: i64,
    shapes: &Shapes,
) -> Option<Tensor> {
    let nodes: Vec<pb::NodeProto> = producers.iter().map(|&i| graph.node[i].clone()).collect();
    // Subgraphs may read outer values their node does not list: not decided here.
    if nodes.iter().any(|n| {
        n.attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    }) {
        return None;
    }
    let used: BTreeSet<String> = nodes
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(std::iter::once(condition.to_string()))
        .collect();
    let sub = pb::GraphProto {
        name: "condition".into(),
        node: nodes,
        initializer: graph
            .initializer
            .iter()
            .filter(|t| used.contains(&t.name))
            .cloned()
            .collect(),
        input: graph
            .input
            .iter()
            .filter(|i| inputs.contains(&i.name))
            .cloned()
            .collect(),
        output: vec![pb::ValueInfoProto {
            name: condition.to_string(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let proto = pb::ModelProto {
        ir_version,
        opset_import: opsets.to_vec(),
        graph: Some(sub),
        ..Default::default()
    };
    let evaluate = || -> TractResult<Option<Tensor>> {
        let onnx = tract_onnx::onnx()
            .with_ignore_output_shapes(true)
            .with_ignore_value_info(true);
        let mut model = onnx.parse(&proto, None)?.model;
        let names: Vec<String> = model
            .input_outlets()?
            .iter()
            .map(|o| model.nodes()[o.node].name.clone())
            .collect();
        for (i, name) in names.iter().enumerate() {
            let Some((datum, shape)) = shapes.get(name) else {
                return Ok(None);
            };
            model.set_input_fact(i, InferenceFact::dt_shape(*datum, shape.as_slice()))?;
        }
        let typed = model.into_typed()?.into_decluttered()?;
        Ok(typed.output_fact(0)?.konst.as_ref().map(|k| (**k).clone()))
    };
    inside_tract(evaluate).ok()?.ok()?
}

/// Replaces the `If` at `index` by the nodes of the branch taken, its initializers, and an
/// `Identity` from each branch output to the `If`'s output.
fn inline(graph: &mut pb::GraphProto, index: usize, take_then: bool) {
    let node = graph.node.remove(index);
    let branch = if take_then {
        "then_branch"
    } else {
        "else_branch"
    };
    let body = node
        .attribute
        .iter()
        .find(|a| a.name == branch)
        .and_then(|a| a.g.clone())
        .unwrap_or_default();
    let mut nodes = body.node;
    for (output, inner) in node.output.iter().zip(&body.output) {
        if output.is_empty() {
            continue;
        }
        nodes.push(pb::NodeProto {
            name: format!("{}/{branch}/{output}", node.name),
            op_type: "Identity".into(),
            input: vec![inner.name.clone()],
            output: vec![output.clone()],
            ..Default::default()
        });
    }
    graph.initializer.extend(body.initializer);
    graph.sparse_initializer.extend(body.sparse_initializer);
    graph.node.splice(index..index, nodes);
}
