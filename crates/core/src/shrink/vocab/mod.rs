//! Vocabulary: keep only the rows of an embedding table that a deployment's token ids use.
//!
//! Passes, in order:
//! 1. [`embeddings`]: the `Gather`s (axis 0) of a constant table `[rows, ...]`, and the fused
//!    `com.microsoft` `EmbedLayerNormalization`s of a word table, whose indices come from an
//!    integer graph input (directly or through Reshape, Flatten, Squeeze,
//!    Unsqueeze, Identity, Transpose, Expand, Slice or an integer Cast), one [`Embedding`] per
//!    table. Position and token-type tables gathered at computed or constant indices are not
//!    embeddings of an input and are left alone.
//! 2. [`read_ids`]: the ids to keep, from text, `.npy` or `.npz` files.
//! 3. [`keep_rows`]: the [`GraphEdit`](super::GraphEdit) that slices the table to the kept
//!    rows (in id order) and puts a constant remap `Gather` in front of each embedding
//!    `Gather`, so that the model keeps its interface: every old id maps to its new row, ids
//!    not kept to the row of the unknown token. For inputs made only of kept ids the outputs
//!    are bit-identical.
//!
//! A table that anything else reads (a tied output head `MatMul(h, Transpose(table))` or
//! `Gemm(h, table, transB=1)`, a Gather at other indices) stays whole: removing its rows would
//! change that reader's output. The report says so.

mod ids;
mod plan;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{Model, Node, Source};

use super::flow::Flow;

pub use ids::read_ids;
pub use plan::{keep_rows, VocabReport, VocabRequest};

/// An embedding table and the Gathers that read it at token ids.
#[derive(Debug, Clone, Serialize)]
pub struct Embedding {
    /// The table's name.
    pub table: String,
    /// Index into [`Model::tensors`].
    #[serde(skip)]
    pub(crate) tensor: usize,
    /// Rows (the vocabulary size).
    pub rows: usize,
    /// The integer graph inputs whose ids index it.
    pub inputs: Vec<String>,
    /// The Gather nodes reading it at those ids.
    pub gathers: Vec<String>,
    /// Their indices in the main graph, with the position of their ids input.
    #[serde(skip)]
    pub(crate) gather_nodes: Vec<(usize, usize)>,
    /// Every other node reading the table (with its op): a tied output head, for one. When
    /// there is any, the table stays whole.
    pub other_uses: Vec<String>,
}

/// Ops that hand on token ids unchanged (some of them, rearranged).
const PASS_IDS: &[&str] = &[
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Transpose",
    "Expand",
    "Slice",
];

/// `TensorProto.DataType` codes of int32 and int64.
const INTEGER_TYPES: [i32; 2] = [6, 7];

/// The integer graph input whose values `value` holds, through ops that only move ids.
fn id_source<'m>(model: &'m Model, flow: &Flow, mut value: &'m str) -> Option<String> {
    let main = &model.graphs()[0];
    for _ in 0..main.nodes.len() + 1 {
        if let Some(input) = model.graph_inputs().into_iter().find(|i| i.name == value) {
            return INTEGER_TYPES
                .contains(&input.elem_type)
                .then(|| input.name.clone());
        }
        let node = &main.nodes[*flow.producer.get(value)?];
        let int_cast = node.op_type == "Cast"
            && node
                .ints
                .get("to")
                .is_some_and(|t| INTEGER_TYPES.contains(&(*t as i32)));
        if !node.domain.is_empty() || !(PASS_IDS.contains(&node.op_type.as_str()) || int_cast) {
            return None;
        }
        value = node.inputs.first()?;
    }
    None
}

/// A table lookup at token ids: the positions of the table and of the ids among `node`'s
/// inputs.
fn lookup(node: &Node) -> Option<(usize, usize)> {
    match (node.op_type.as_str(), node.domain.as_str()) {
        ("Gather", "") if node.inputs.len() == 2 => {
            (node.ints.get("axis").copied().unwrap_or(0) == 0).then_some((0, 1))
        }
        ("EmbedLayerNormalization", "com.microsoft") if node.inputs.len() > 2 => Some((2, 0)),
        _ => None,
    }
}

/// Every embedding table of `model`'s main graph gathered at the ids of an integer input, in
/// the order of their first Gather.
pub fn embeddings(model: &Model) -> Result<Vec<Embedding>> {
    let flow = Flow::of(model)?;
    let main = &model.graphs()[0];
    let mut found: BTreeMap<usize, Embedding> = BTreeMap::new();
    let mut order = Vec::new();
    for (n, node) in main.nodes.iter().enumerate() {
        let Some((table, ids)) = lookup(node) else {
            continue;
        };
        let Some(t) = model.tensors().iter().position(|t| {
            t.graph == 0
                && t.name == node.inputs[table]
                && matches!(t.source, Source::Initializer | Source::Constant(_))
                && t.dtype.is_float()
                && t.dims.len() >= 2
        }) else {
            continue;
        };
        let Some(input) = id_source(model, &flow, &node.inputs[ids]) else {
            continue;
        };
        let entry = found.entry(t).or_insert_with(|| {
            order.push(t);
            Embedding {
                table: node.inputs[table].clone(),
                tensor: t,
                rows: model.tensors()[t].dims[0] as usize,
                inputs: Vec::new(),
                gathers: Vec::new(),
                gather_nodes: Vec::new(),
                other_uses: Vec::new(),
            }
        });
        if !entry.inputs.contains(&input) {
            entry.inputs.push(input);
        }
        entry.gathers.push(node.label(n));
        entry.gather_nodes.push((n, ids));
    }
    for e in found.values_mut() {
        for &c in flow.consumers_of(&e.table) {
            if !e.gather_nodes.iter().any(|&(g, _)| g == c) {
                let node = &main.nodes[c];
                e.other_uses
                    .push(format!("{} ({})", node.label(c), node.op_type));
            }
        }
        if flow.outputs.contains(&e.table) {
            e.other_uses.push("a graph output".into());
        }
    }
    Ok(order
        .into_iter()
        .map(|t| found.remove(&t).expect("found"))
        .collect())
}

/// A text listing of the embeddings found (what `--dry-run` prints).
pub fn describe(found: &[Embedding]) -> String {
    use std::fmt::Write;
    if found.is_empty() {
        return "embedding: none found (no Gather on axis 0, or EmbedLayerNormalization, of a \
                constant float table at the ids of an int32/int64 graph input)\n"
            .to_string();
    }
    let mut out = String::new();
    for e in found {
        let _ = writeln!(
            out,
            "embedding `{}`: {} rows, gathered at input {} by {}",
            e.table,
            e.rows,
            e.inputs.join(", "),
            e.gathers.join(", ")
        );
        for other in &e.other_uses {
            let _ = writeln!(out, "  also read by {other}: the table stays whole");
        }
    }
    out
}

/// The embedding gathered at the ids of `input`, or, without one, the only embedding (or the
/// one of an input named `input_ids`). Errors say what was found.
pub fn select<'e>(found: &'e [Embedding], input: Option<&str>) -> Result<&'e Embedding> {
    let of = |name: &str| found.iter().find(|e| e.inputs.iter().any(|i| i == name));
    let chosen = match input {
        Some(name) => of(name),
        None if found.len() == 1 => found.first(),
        None => of("input_ids"),
    };
    chosen.ok_or_else(|| {
        let why = match input {
            Some(name) => format!("no embedding Gather reads the ids of input `{name}`"),
            None if found.is_empty() => "the model has no embedding Gather".to_string(),
            None => "several tables are gathered at token ids: name the input with \
                     --vocab-from DATA.npz:INPUT or --vocab INPUT=FILE"
                .to_string(),
        };
        Error::Usage(format!("{why}; found:\n{}", describe(found).trim_end()))
    })
}
