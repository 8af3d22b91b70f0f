//! The vocabulary edit: the table sliced to the kept rows and a constant remap `Gather` in
//! front of each embedding lookup.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::values::dense_bytes;
use crate::model::Model;

use super::super::edit::{GraphEdit, NewNode};
use super::Embedding;

/// Which token ids to keep.
#[derive(Debug, Clone, Default)]
pub struct VocabRequest {
    /// The ids, each list with what it came from (a flag and file, for errors).
    pub ids: Vec<(String, Vec<i64>)>,
    /// Ids kept whatever the lists say (`--keep-token`: special tokens).
    pub keep: Vec<i64>,
    /// The id every id not kept reads as (`--unknown-token`); it must be kept.
    pub unknown: i64,
}

/// The `vocabulary` part of the `shrink --report` JSON.
#[derive(Debug, Clone, Serialize)]
pub struct VocabReport {
    /// The embedding table.
    pub table: String,
    /// The integer inputs whose ids index it.
    pub inputs: Vec<String>,
    /// The Gathers that read it at those ids.
    pub gathers: Vec<String>,
    /// Rows before.
    pub rows_before: usize,
    /// Rows after (as before when the table stays whole).
    pub rows_after: usize,
    /// The id that ids not kept read as.
    pub unknown_token: i64,
    /// Other readers of the table (a tied output head): when any, the table stays whole.
    pub left_whole_for: Vec<String>,
}

/// A name not used by any value or tensor of `model`, from `base`.
fn fresh(model: &Model, base: String) -> String {
    let used = |name: &str| {
        model.tensors().iter().any(|t| t.name == name)
            || model.graphs()[0]
                .nodes
                .iter()
                .any(|n| n.outputs.iter().chain(&n.inputs).any(|v| v == name))
    };
    let mut name = base.clone();
    let mut k = 1;
    while used(&name) {
        name = format!("{base}_{k}");
        k += 1;
    }
    name
}

/// The kept ids, sorted, after checking every id against the table's rows.
fn kept_ids(embedding: &Embedding, request: &VocabRequest) -> Result<Vec<i64>> {
    let rows = embedding.rows as i64;
    let check = |id: i64, source: &str| {
        if (0..rows).contains(&id) {
            Ok(id)
        } else {
            Err(Error::Usage(format!(
                "{source}: token id {id} is out of range: table `{}` has {rows} rows (ids 0 to {})",
                embedding.table,
                rows - 1
            )))
        }
    };
    let mut kept = BTreeSet::new();
    for (source, ids) in &request.ids {
        for &id in ids {
            kept.insert(check(id, source)?);
        }
    }
    for &id in &request.keep {
        kept.insert(check(id, "--keep-token")?);
    }
    check(request.unknown, "--unknown-token")?;
    if !kept.contains(&request.unknown) {
        return Err(Error::Usage(format!(
            "--unknown-token {} is not among the kept ids: add it with --keep-token {}",
            request.unknown, request.unknown
        )));
    }
    Ok(kept.into_iter().collect())
}

/// The edit keeping only the rows of `embedding`'s table that `request` names, behind a
/// constant remap `Gather` in front of each lookup, and its report. A table that something else reads is left
/// whole: the edit is empty and the report names the readers.
pub fn keep_rows(
    model: &Model,
    embedding: &Embedding,
    request: &VocabRequest,
) -> Result<(GraphEdit, VocabReport)> {
    let kept = kept_ids(embedding, request)?;
    let mut report = VocabReport {
        table: embedding.table.clone(),
        inputs: embedding.inputs.clone(),
        gathers: embedding.gathers.clone(),
        rows_before: embedding.rows,
        rows_after: embedding.rows,
        unknown_token: request.unknown,
        left_whole_for: embedding.other_uses.clone(),
    };
    let mut edit = GraphEdit::default();
    if !embedding.other_uses.is_empty() {
        return Ok((edit, report));
    }
    let tensor = &model.tensors()[embedding.tensor];
    if tensor.sparse.is_some() {
        return Err(Error::tensor(
            &tensor.name,
            "the embedding table is stored sparse; densify it first",
        ));
    }
    let size = tensor
        .dtype
        .size()
        .ok_or_else(|| Error::tensor(&tensor.name, "element type without a size"))?;
    let row_bytes = size * tensor.dims[1..].iter().product::<i64>() as usize;
    let data = dense_bytes(model, tensor)?;
    let mut sliced = Vec::with_capacity(kept.len() * row_bytes);
    for &id in &kept {
        let at = id as usize * row_bytes;
        sliced.extend_from_slice(&data[at..at + row_bytes]);
    }
    let mut dims = tensor.dims.clone();
    dims[0] = kept.len() as i64;
    edit.replace_tensors
        .insert(embedding.tensor, (dims, sliced));
    let new_row: BTreeMap<i64, i64> = kept
        .iter()
        .enumerate()
        .map(|(r, &id)| (id, r as i64))
        .collect();
    let remap: Vec<i64> = (0..embedding.rows as i64)
        .map(|id| {
            new_row
                .get(&id)
                .copied()
                .unwrap_or(new_row[&request.unknown])
        })
        .collect();
    // One remap table per element type (EmbedLayerNormalization reads int32 ids), one remap
    // Gather per distinct ids value, before the first node reading it.
    let nodes = &model.graphs()[0].nodes;
    let mut tables: BTreeMap<bool, String> = BTreeMap::new();
    let mut remapped: BTreeMap<&str, String> = BTreeMap::new();
    for (&(n, position), label) in embedding.gather_nodes.iter().zip(&embedding.gathers) {
        let int32 = nodes[n].op_type == "EmbedLayerNormalization";
        let table = tables.entry(int32).or_insert_with(|| {
            let suffix = if int32 {
                "_vocab_remap_int32"
            } else {
                "_vocab_remap"
            };
            let name = fresh(model, format!("{}{suffix}", embedding.table));
            edit.initializers.push((
                name.clone(),
                vec![embedding.rows as i64],
                remap.clone(),
                int32,
            ));
            name
        });
        let ids = nodes[n].inputs[position].as_str();
        let new_ids = match remapped.get(ids) {
            Some(name) => name.clone(),
            None => {
                let name = fresh(model, format!("{ids}_vocab_remapped"));
                edit.insert_before.entry(n).or_default().push(NewNode {
                    name: fresh(model, format!("{label}_vocab_remap")),
                    op_type: "Gather",
                    inputs: vec![table.clone(), ids.to_string()],
                    outputs: vec![name.clone()],
                });
                remapped.insert(ids, name.clone());
                name
            }
        };
        edit.rewire.insert((n, position), new_ids);
    }
    report.rows_after = kept.len();
    Ok((edit, report))
}
