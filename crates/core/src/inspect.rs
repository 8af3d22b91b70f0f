//! `inspect`: what a model holds, weight by weight, with exact counts.

use std::collections::BTreeMap;

use rayon::prelude::*;

use crate::error::Result;
use crate::model::values::{count_zeros, stored_bytes};
use crate::model::weights::{discover_with, Weight};
use crate::model::{Model, Payload};
use crate::prune::size::{compressed_size, CompressedSize};

/// Model-level summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelSummary {
    /// File name (without directories, so reports do not depend on where they ran).
    pub file: String,
    /// `ir_version`.
    pub ir_version: i64,
    /// `producer_name`.
    pub producer: String,
    /// `producer_version`.
    pub producer_version: String,
    /// Opset version by domain (`""` is the default ONNX domain).
    pub opsets: BTreeMap<String, i64>,
    /// Number of graphs, the main graph included.
    pub graphs: usize,
    /// Number of nodes over all graphs.
    pub nodes: usize,
    /// External data files, by location.
    pub external_files: Vec<String>,
}

/// One weight's facts and counts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WeightSummary {
    /// Stable id (see [`Weight::id`]).
    pub id: String,
    /// Tensor name.
    pub name: String,
    /// `initializer`, `constant` or `subgraph:<path>`.
    pub location: String,
    /// Consuming op, if any.
    pub op_type: Option<String>,
    /// Role given by the consumer.
    pub role: &'static str,
    /// Element type.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// Elements.
    pub params: u64,
    /// Elements equal to zero (for sparse storage, the elements not stored plus stored zeros).
    pub zeros: u64,
    /// Whether the default selection prunes it.
    pub prunable: bool,
    /// `raw`, `typed`, `external` or `sparse`.
    pub storage: &'static str,
    /// Bytes its data occupies where it is stored.
    pub bytes: u64,
}

/// Totals over all weights and files.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Totals {
    /// Number of weights.
    pub weights: usize,
    /// Elements over all weights.
    pub params: u64,
    /// Zero elements over all weights.
    pub zeros: u64,
    /// Elements of the weights pruned by default.
    pub prunable_params: u64,
    /// Bytes the weights' data occupies.
    pub bytes: u64,
    /// Size of the model file plus its external data files.
    pub file_bytes: u64,
    /// That size compressed.
    pub compressed_bytes: CompressedSize,
}

/// The result of `inspect`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    /// Model-level summary.
    pub model: ModelSummary,
    /// One entry per floating-point constant tensor, in file order.
    pub weights: Vec<WeightSummary>,
    /// Totals.
    pub totals: Totals,
}

/// Summarises one weight, counting its zeros.
pub fn summarize_weight(model: &Model, weight: &Weight) -> Result<WeightSummary> {
    let tensor = &model.tensors()[weight.tensor];
    let stored = tensor.sparse.as_ref().map_or(tensor.elements, |s| s.nnz);
    let data = stored_bytes(model, &tensor.payload, tensor.dtype, stored, &weight.id)?;
    let zeros = count_zeros(tensor.dtype, &data) + (tensor.elements - stored);
    let storage = match (&tensor.sparse, &tensor.payload) {
        (Some(_), _) => "sparse",
        (None, Payload::External { .. }) => "external",
        (None, Payload::Typed { .. }) => "typed",
        (None, _) => "raw",
    };
    Ok(WeightSummary {
        id: weight.id.clone(),
        name: tensor.name.clone(),
        location: weight.location.clone(),
        op_type: weight.consumer.as_ref().map(|c| c.op_type.clone()),
        role: weight.role.name(),
        dtype: tensor.dtype.name(),
        shape: tensor.dims.clone(),
        params: tensor.elements,
        zeros,
        prunable: weight.prunable,
        storage,
        bytes: data.len() as u64,
    })
}

/// Inspects `model`; `min_params` is the default selection's minimum size.
pub fn inspect(model: &Model, min_params: u64) -> Result<Inspection> {
    let weights = discover_with(model, min_params);
    let summaries = weights
        .par_iter()
        .map(|w| summarize_weight(model, w))
        .collect::<Result<Vec<_>>>()?;
    let info = model.info();
    let mut parts: Vec<&[u8]> = vec![model.bytes()];
    parts.extend(model.external_files().values().map(|f| &f[..]));
    let totals = Totals {
        weights: summaries.len(),
        params: summaries.iter().map(|w| w.params).sum(),
        zeros: summaries.iter().map(|w| w.zeros).sum(),
        prunable_params: summaries
            .iter()
            .filter(|w| w.prunable)
            .map(|w| w.params)
            .sum(),
        bytes: summaries.iter().map(|w| w.bytes).sum(),
        file_bytes: parts.iter().map(|p| p.len() as u64).sum(),
        compressed_bytes: compressed_size(&parts),
    };
    Ok(Inspection {
        model: ModelSummary {
            file: model
                .path()
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            ir_version: info.ir_version,
            producer: info.producer_name.clone(),
            producer_version: info.producer_version.clone(),
            opsets: info.opsets.iter().cloned().collect(),
            graphs: model.graphs().len(),
            nodes: model.graphs().iter().map(|g| g.nodes.len()).sum(),
            external_files: model.external_files().keys().cloned().collect(),
        },
        weights: summaries,
        totals,
    })
}
