//! Candidates that differ from the reference only in the values of some weights, run without
//! loading them: the reference's graph is loaded once per input shape with those weights
//! turned from constants into graph inputs, and each candidate runs by feeding its values.
//!
//! tract optimises a graph input like any other input: nothing computed from it is folded
//! into constants, so the one optimised plan computes what a plan of each candidate would
//! (a Conv kernel, for one, is then reshaped and packed at every run, a small cost beside
//! loading and optimising the whole model again, which is what a candidate file costs).

use std::collections::BTreeMap;
use std::path::PathBuf;

use onnx_prune_core::model::dense_bytes;
use onnx_prune_core::prune::write_zeroed;
use onnx_prune_core::write::Change;
use onnx_prune_core::{DataType, Edit, Model};
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::error::Result;
use crate::runner::Runner;

/// A weight made a graph input: its name, element type (ONNX code and tract's) and shape.
#[derive(Debug, Clone)]
pub struct WeightInput {
    /// The initializer's (or `Constant` output's) name.
    pub name: String,
    /// ONNX element type code.
    pub elem_type: i32,
    /// The same type in tract.
    pub datum: DatumType,
    /// Its shape.
    pub shape: Vec<usize>,
}

/// Turns each of `weights`, an initializer or a `Constant` node's output of the main graph,
/// into a graph input of its type and shape; a weight found as neither is refused by name.
pub fn weights_as_inputs(
    model: &mut pb::ModelProto,
    weights: &[WeightInput],
) -> std::result::Result<(), String> {
    if weights.is_empty() {
        return Ok(());
    }
    let graph = model.graph.as_mut().ok_or("the model has no graph")?;
    for weight in weights {
        let before = graph.initializer.len() + graph.node.len();
        graph.initializer.retain(|t| t.name != weight.name);
        graph.node.retain(|n| {
            !(n.op_type == "Constant" && n.output.len() == 1 && n.output[0] == weight.name)
        });
        if graph.initializer.len() + graph.node.len() == before {
            return Err(format!(
                "weight `{}` is neither an initializer nor a Constant of the main graph",
                weight.name
            ));
        }
        graph.input.retain(|i| i.name != weight.name);
        let dims = weight
            .shape
            .iter()
            .map(|&d| pb::tensor_shape_proto::Dimension {
                value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(d as i64)),
                ..Default::default()
            });
        graph.input.push(pb::ValueInfoProto {
            name: weight.name.clone(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: weight.elem_type,
                    shape: Some(pb::TensorShapeProto {
                        dim: dims.collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    Ok(())
}

/// One swapped weight: what it is and its dense value.
#[derive(Clone)]
pub(crate) struct Slot {
    /// The weight as a graph input.
    pub input: WeightInput,
    dtype: DataType,
    dense: TValue,
}

/// Every weight's value of `slots` (by tensor index) with `edits` applied, by name, or `None`
/// when an edit changes anything else (a weight not among them, a new bias).
pub(crate) fn slot_values(
    slots: &BTreeMap<usize, Slot>,
    edits: &[Edit],
) -> Option<BTreeMap<String, TValue>> {
    let mut values: BTreeMap<String, TValue> = slots
        .values()
        .map(|s| (s.input.name.clone(), s.dense.clone()))
        .collect();
    for edit in edits {
        let Edit::Tensor { tensor, change } = edit else {
            return None;
        };
        let slot = slots.get(tensor)?;
        let bytes = match change {
            Change::Zero(zeroing) => {
                let mut out = Vec::with_capacity(slot.dense.as_bytes().len());
                write_zeroed(slot.dtype, slot.dense.as_bytes(), zeroing, &mut out).ok()?;
                out
            }
            Change::Replace(bytes) => bytes.clone(),
        };
        // SAFETY: as in `slots`: little-endian elements of the weight's own type.
        let value =
            unsafe { Tensor::from_raw_dt(slot.input.datum, &slot.input.shape, &bytes) }.ok()?;
        values.insert(slot.input.name.clone(), value.into_tvalue());
    }
    Some(values)
}

/// The reference loaded with some of its weights as inputs, for each input shape of its runs:
/// a candidate that changes only those weights runs here, fed its values (see
/// [`crate::Reference::swappable`]).
pub struct Swappable {
    pub(crate) path: PathBuf,
    pub(crate) runners: Vec<Runner>,
    /// By tensor index in [`Model::tensors`].
    slots: BTreeMap<usize, Slot>,
}

/// The weights among `tensors` that can be swapped: constants of the main graph (initializers
/// or `Constant` nodes, sparse or dense) of a type tract runs, with their dense values.
pub(crate) fn slots(model: &Model, tensors: &[usize]) -> Result<BTreeMap<usize, Slot>> {
    let mut slots = BTreeMap::new();
    for &index in tensors {
        let tensor = &model.tensors()[index];
        if model.graphs()[tensor.graph].parent.is_some() {
            continue;
        }
        let Some(datum) = pb::tensor_proto::DataType::try_from(tensor.dtype.code())
            .ok()
            .and_then(|t| DatumType::try_from(t).ok())
        else {
            continue;
        };
        let shape: Vec<usize> = tensor.dims.iter().map(|&d| d as usize).collect();
        let bytes = dense_bytes(model, tensor)?;
        // SAFETY: `bytes` holds the tensor's elements as little-endian bytes of `datum`, the
        // layout tract reads, and their count matches `shape` (checked by `from_raw_dt`).
        let Ok(dense) = (unsafe { Tensor::from_raw_dt(datum, &shape, &bytes) }) else {
            continue;
        };
        let input = WeightInput {
            name: tensor.name.clone(),
            elem_type: tensor.dtype.code(),
            datum,
            shape,
        };
        slots.insert(
            index,
            Slot {
                input,
                dtype: tensor.dtype,
                dense: dense.into_tvalue(),
            },
        );
    }
    Ok(slots)
}

impl Swappable {
    /// Loads `model` (at `path`) with the swappable ones of `tensors` as inputs, with
    /// `load(weights)` for each input shape.
    pub(crate) fn load(
        model: &Model,
        tensors: &[usize],
        load: impl Fn(&[WeightInput]) -> Result<Vec<Runner>>,
    ) -> Result<Swappable> {
        let slots = slots(model, tensors)?;
        let inputs: Vec<WeightInput> = slots.values().map(|s| s.input.clone()).collect();
        Ok(Swappable {
            path: model.path().to_path_buf(),
            runners: load(&inputs)?,
            slots,
        })
    }

    /// Every swapped weight's value with `edits` applied, by name, or `None` when an edit
    /// changes anything else (a weight not swapped, a new bias).
    pub(crate) fn values(&self, edits: &[Edit]) -> Option<BTreeMap<String, TValue>> {
        slot_values(&self.slots, edits)
    }
}
