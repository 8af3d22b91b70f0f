//! Writing the shrunk model from the input's bytes: each member tensor re-sliced (its `dims`
//! and data replaced, in the model, in a `Constant` node, or in external data), counts that
//! follow the channels rewritten (`group`, Split sizes, Slice bounds, Reshape targets, Resize
//! sizes), stale `value_info` shapes dropped and the declared shapes of initializers listed as
//! graph inputs updated. Everything else keeps its bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use onnx_splice::{fields, Patch, Splice, Value};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::values::dense_bytes;
use crate::model::{Model, Payload};
use crate::proto::{self, DataType};
use crate::write::{
    changed_copy, committed, stage_spliced, typed_field, Destination, Edit, Outputs, WrittenFile,
};

use super::copies::{copy_nodes, node_copies, slice_shared_in_place, write_copies, NodeCopy};
use super::cuts::{Count, CutKind, Recount};
use super::encode::{explicit_split, packed_ints, value_info, varint_field};
use super::external::{bytes_before_after, lay_out};
use super::layout::Owner;
use super::wire::{self, GraphWire};
use super::Analysis;

/// Parameter counts (elements of floating-point constants) and file sizes before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShrinkTotals {
    /// Before.
    pub params_before: u64,
    /// After.
    pub params_after: u64,
    /// Bytes of the model file and its external data files before.
    pub bytes_before: u64,
    /// After: those written, or those a write would give (the names of external data files
    /// aside, which the write chooses).
    pub bytes_after: u64,
}

/// Per axis of a tensor, the positions kept (`None`: the whole axis).
pub(super) type Keeps = Vec<Option<Vec<bool>>>;

/// What changes, tensor by tensor and attribute by attribute.
#[derive(Default)]
pub(super) struct Plan {
    /// Per tensor, per axis, the positions kept (`None`: the whole axis).
    pub slices: BTreeMap<usize, Keeps>,
    /// Shared constants sliced for one reader, by (tensor, (node, input)): the reader gets its
    /// own sliced copy, the other readers keep the tensor.
    pub reader_slices: BTreeMap<(usize, (usize, usize)), Keeps>,
    /// Integer tensors with new values.
    ints: BTreeMap<usize, Vec<i64>>,
    /// Shared integer tensors read with new values by one node: (node, input, tensor, values).
    pub copies: Vec<(usize, usize, usize, Vec<i64>)>,
    /// (node, attribute, values, whether a list).
    attrs: Vec<(usize, &'static str, Vec<i64>, bool)>,
    /// Activations whose recorded shapes go stale.
    stale: BTreeSet<String>,
    /// Split nodes that get explicit sizes.
    split_sizes: Vec<(usize, Vec<i64>)>,
    /// Copies of shared shape computations.
    pub node_copies: Vec<NodeCopy>,
}

pub(super) fn plan(model: &Model, analysis: &Analysis, removed: &[Vec<usize>]) -> Plan {
    let gone: Vec<Vec<bool>> = analysis
        .groups
        .iter()
        .zip(removed)
        .map(|(g, channels)| {
            let mut units = vec![false; g.units()];
            for &c in channels {
                units[g.unit_of(c)] = true;
            }
            units
        })
        .collect();
    let removed_at = |owner: &Owner| owner.is_some_and(|(g, u)| gone[g][u]);
    let kept = |owners: &[Owner]| owners.iter().filter(|o| !removed_at(o)).count() as i64;
    let count = |c: &Count| match c {
        Count::Fixed(v) => *v,
        Count::Kept(owners) => kept(owners),
    };
    // The new values of counts some of whose kept positions are removed.
    let changed = |counts: &[Count]| {
        let values: Vec<i64> = counts.iter().map(count).collect();
        counts
            .iter()
            .zip(&values)
            .any(|(c, v)| matches!(c, Count::Kept(o) if o.len() as i64 != *v))
            .then_some(values)
    };
    let mut plan = Plan::default();
    for cut in &analysis.cuts {
        if !cut.owners.iter().any(removed_at) {
            continue;
        }
        let rank = model.tensors()[cut.tensor].dims.len();
        let axes = match cut.reader {
            None => plan
                .slices
                .entry(cut.tensor)
                .or_insert_with(|| vec![None; rank]),
            Some(reader) => plan
                .reader_slices
                .entry((cut.tensor, reader))
                .or_insert_with(|| vec![None; rank]),
        };
        let keep = axes[cut.axis].get_or_insert_with(|| vec![true; cut.owners.len()]);
        for (k, owner) in keep.iter_mut().zip(&cut.owners) {
            *k &= !removed_at(owner);
        }
    }
    slice_shared_in_place(model, &mut plan);
    let graph = &model.graphs()[0];
    for recount in &analysis.recounts {
        match recount {
            Recount::Int {
                node,
                attr,
                count: c,
            } => {
                let value = count(c);
                if graph.nodes[*node].ints.get(*attr) != Some(&value) {
                    plan.attrs.push((*node, attr, vec![value], false));
                }
            }
            Recount::Ints { node, attr, counts } => {
                let values: Vec<i64> = counts.iter().map(count).collect();
                if graph.nodes[*node].int_lists.get(*attr) != Some(&values) {
                    plan.attrs.push((*node, attr, values, true));
                }
            }
            Recount::SplitSizes { node, counts } => {
                let values: Vec<i64> = counts.iter().map(count).collect();
                if values.windows(2).any(|w| w[0] != w[1]) {
                    plan.split_sizes.push((*node, values));
                }
            }
            Recount::Tensor { tensor, counts } => {
                if let Some(values) = changed(counts) {
                    plan.ints.insert(*tensor, values);
                }
            }
            Recount::Input {
                node,
                input,
                tensor,
                counts,
            } => {
                if let Some(values) = changed(counts) {
                    plan.copies.push((*node, *input, *tensor, values));
                }
            }
            Recount::NodeCopy { .. } => {}
        }
    }
    plan.node_copies = node_copies(analysis, &count);
    for (name, groups) in &analysis.activations {
        if groups.iter().any(|&g| gone[g].iter().any(|&x| x)) {
            plan.stale.insert(name.clone());
        }
    }
    plan
}

/// The elements of `data` (shape `dims`, `size` bytes each) kept by `keeps`.
fn slice_elements(
    data: &[u8],
    dims: &[usize],
    size: usize,
    keeps: &[Option<Vec<bool>>],
) -> Vec<u8> {
    let mut strides = vec![1usize; dims.len()];
    for a in (0..dims.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * dims[a + 1];
    }
    let slicer = Slicer {
        kept: dims
            .iter()
            .zip(keeps)
            .map(|(&d, k)| {
                (0..d)
                    .filter(|&i| k.as_ref().is_none_or(|k| k[i]))
                    .collect()
            })
            .collect(),
        whole_rows: keeps.last().is_some_and(Option::is_none),
        strides,
        dims,
        data,
        size,
    };
    let mut out = Vec::new();
    if !dims.is_empty() {
        slicer.walk(0, 0, &mut out);
    }
    out
}

/// What [`slice_elements`] walks over.
struct Slicer<'a> {
    kept: Vec<Vec<usize>>,
    whole_rows: bool,
    strides: Vec<usize>,
    dims: &'a [usize],
    data: &'a [u8],
    size: usize,
}

impl Slicer<'_> {
    fn walk(&self, axis: usize, base: usize, out: &mut Vec<u8>) {
        let last = axis + 1 == self.dims.len();
        if last && self.whole_rows {
            out.extend_from_slice(
                &self.data[base * self.size..(base + self.dims[axis]) * self.size],
            );
            return;
        }
        for &i in &self.kept[axis] {
            let at = base + i * self.strides[axis];
            if last {
                out.extend_from_slice(&self.data[at * self.size..(at + 1) * self.size]);
            } else {
                self.walk(axis + 1, at, out);
            }
        }
    }
}

/// Replaces a tensor's `dims` (when they change) and its data: in the model, or, for data in
/// an external file, noted in `external` for [`lay_out`].
pub(super) fn write_tensor<'m>(
    model: &'m Model,
    t: usize,
    dims: &[i64],
    data: Vec<u8>,
    splice: &mut Splice<'m>,
    external: &mut BTreeMap<usize, Vec<u8>>,
) {
    let tensor = &model.tensors()[t];
    let own = *tensor.enclosing.last().expect("a tensor's own field");
    let bytes = model.bytes();
    if dims != tensor.dims.as_slice() {
        let mut first = true;
        let parts = fields(
            &bytes[own.payload_start..own.payload_end],
            own.payload_start,
        )
        .filter_map(|f| f.ok());
        for f in parts.filter(|f| f.number == proto::tensor::DIMS) {
            let patch = if first {
                packed_ints(proto::tensor::DIMS, dims)
            } else {
                Vec::new()
            };
            first = false;
            splice.replace(
                f.span.clone(),
                Patch::Bytes(patch),
                tensor.enclosing.clone(),
            );
        }
    }
    let size = tensor.dtype.size().expect("sized element type");
    match &tensor.payload {
        Payload::Raw(raw) => {
            let mut enclosing = tensor.enclosing.clone();
            enclosing.push(*raw);
            splice.replace(
                raw.payload_start..raw.payload_end,
                Patch::Bytes(data),
                enclosing,
            );
        }
        Payload::Typed { number, pieces } => {
            let mut field = typed_field(*number, size, &data);
            for piece in pieces {
                let patch = Patch::Bytes(std::mem::take(&mut field));
                splice.replace(piece.span.clone(), patch, tensor.enclosing.clone());
            }
        }
        Payload::External { .. } => {
            external.insert(t, data);
        }
        Payload::Empty => {}
    }
}

/// Tensor `t` (its values replaced first when `replaced` has them) sliced by `keeps`: its new
/// dims and bytes.
pub(super) fn sliced(
    model: &Model,
    t: usize,
    keeps: &Keeps,
    replaced: Option<&Vec<u8>>,
) -> Result<(Vec<i64>, Vec<u8>)> {
    let tensor = &model.tensors()[t];
    let size = tensor
        .dtype
        .size()
        .ok_or_else(|| Error::tensor(&tensor.name, "element type without a size"))?;
    let dims: Vec<usize> = tensor.dims.iter().map(|&d| d as usize).collect();
    let data = match replaced {
        Some(values) => slice_elements(values, &dims, size, keeps),
        None => slice_elements(&dense_bytes(model, tensor)?, &dims, size, keeps),
    };
    let shrunk = dims
        .iter()
        .zip(keeps)
        .map(|(&d, k)| k.as_ref().map_or(d, |k| k.iter().filter(|&&x| x).count()) as i64)
        .collect();
    Ok((shrunk, data))
}

/// The splices that shrink `model`, and its parameter totals.
fn splices<'m>(
    model: &'m Model,
    wire: &GraphWire,
    analysis: &Analysis,
    removed: &[Vec<usize>],
    edits: &[Edit],
) -> Result<(Splice<'m>, BTreeMap<&'m str, Splice<'m>>, ShrinkTotals)> {
    let plan = plan(model, analysis, removed);
    // Tensors whose values change before they are sliced (refitted consumers, their biases).
    let mut replaced: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    for edit in edits {
        let Edit::Tensor { tensor, change } = edit else {
            return Err(Error::Usage(
                "shrink replaces tensors' values; it does not add biases".into(),
            ));
        };
        replaced.insert(
            *tensor,
            changed_copy(model, &model.tensors()[*tensor], change)?,
        );
    }
    let mut splice = Splice::default();
    let mut external: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    let params_before: u64 = model
        .tensors()
        .iter()
        .filter(|t| t.dtype.is_float())
        .map(|t| t.elements)
        .sum();
    let mut params_after = params_before;
    let mut new_dims: BTreeMap<&str, (i32, Vec<i64>)> = BTreeMap::new();
    // Copies of shared tensors are sliced from the values refit gave them, if any.
    let shared_replaced: BTreeMap<usize, Vec<u8>> = replaced
        .iter()
        .filter(|(t, _)| plan.reader_slices.keys().any(|(s, _)| s == *t))
        .map(|(t, v)| (*t, v.clone()))
        .collect();
    for (&t, keeps) in &plan.slices {
        let tensor = &model.tensors()[t];
        let (shrunk, data) = sliced(model, t, keeps, replaced.remove(&t).as_ref())?;
        if tensor.dtype.is_float() {
            params_after -= tensor.elements - shrunk.iter().product::<i64>() as u64;
        }
        write_tensor(model, t, &shrunk, data, &mut splice, &mut external);
        new_dims.insert(tensor.name.as_str(), (tensor.dtype.code(), shrunk));
    }
    for (t, data) in replaced {
        let dims = model.tensors()[t].dims.clone();
        write_tensor(model, t, &dims, data, &mut splice, &mut external);
    }
    for (&t, values) in &plan.ints {
        let tensor = &model.tensors()[t];
        let data: Vec<u8> = match tensor.dtype {
            DataType::Other(7) => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            _ => values
                .iter()
                .flat_map(|&v| (v as i32).to_le_bytes())
                .collect(),
        };
        write_tensor(model, t, &tensor.dims, data, &mut splice, &mut external);
    }
    for (node, attr, values, list) in &plan.attrs {
        let Some(a) = wire.nodes[*node].attributes.get(*attr) else {
            return Err(Error::Usage(format!(
                "node {node}: attribute `{attr}` not found"
            )));
        };
        let enclosing = vec![wire.graph, wire.nodes[*node].field, a.field];
        let number = if *list {
            proto::attribute::INTS
        } else {
            proto::attribute::I
        };
        let mut first = true;
        for part in a.parts.iter().filter(|p| p.number == number) {
            let patch = match (first, list) {
                (false, _) => Vec::new(),
                (true, true) if matches!(part.value, Value::Len(_)) || values.len() != 1 => {
                    packed_ints(number, values)
                }
                (true, _) => {
                    let mut out = Vec::new();
                    varint_field(number, values[0] as u64, &mut out);
                    out
                }
            };
            first = false;
            splice.replace(part.span.clone(), Patch::Bytes(patch), enclosing.clone());
        }
    }
    for (node, sizes) in &plan.split_sizes {
        explicit_split(model, wire, *node, sizes, &mut splice);
    }
    let (added, dropped) = write_copies(model, wire, &plan, &shared_replaced, &mut splice)?;
    copy_nodes(model, wire, &plan, &mut splice);
    params_after = params_after + added - dropped;
    // Declared shapes: of changed weights (initializers listed as inputs, value_info of
    // weights) updated, of activations whose channels changed dropped.
    let declared = [
        (wire::GRAPH_VALUE_INFO, &wire.value_info),
        (proto::graph::INPUT, &wire.inputs),
    ];
    for (number, values) in declared {
        for v in values {
            let patch = match new_dims.get(v.name.as_str()) {
                Some((elem_type, dims)) => value_info(number, &v.name, *elem_type, dims),
                None if plan.stale.contains(&v.name) && number == wire::GRAPH_VALUE_INFO => {
                    Vec::new()
                }
                None => continue,
            };
            splice.replace(v.span.clone(), Patch::Bytes(patch), vec![wire.graph]);
        }
    }
    let changes = analysis.interface_changes(removed);
    super::interface::patch_ports(model, wire, &changes, &mut splice)?;
    let external = lay_out(model, external, &BTreeSet::new(), &mut splice)?;
    let (bytes_before, bytes_after) = bytes_before_after(model, &splice, &external);
    Ok((
        splice,
        external,
        ShrinkTotals {
            params_before,
            params_after,
            bytes_before,
            bytes_after,
        },
    ))
}

/// The shrunk model's bytes, in memory (for checks and tests), with `edits` (new values of
/// whole tensors, such as [`super::refit`]'s) applied before slicing. Models with external data
/// are refused: write them with [`save_shrunk`].
pub fn shrink_bytes(
    model: &Model,
    analysis: &Analysis,
    removed: &[Vec<usize>],
    edits: &[Edit],
) -> Result<(Vec<u8>, ShrinkTotals)> {
    if !model.external_files().is_empty() {
        return Err(Error::Usage(
            "a model with external data is shrunk to files, not in memory".into(),
        ));
    }
    let wire = wire::scan(model)?;
    let (splice, _, totals) = splices(model, &wire, analysis, removed, edits)?;
    let mut out = Vec::with_capacity(splice.output_len(model.bytes().len()));
    splice
        .write_to(model.bytes(), &mut out)
        .map_err(|e| Error::io(model.path(), std::io::Error::other(e)))?;
    Ok((out, totals))
}

/// The parameter totals a shrink would give, without writing anything (external data
/// included).
pub fn shrink_totals(
    model: &Model,
    analysis: &Analysis,
    removed: &[Vec<usize>],
) -> Result<ShrinkTotals> {
    let wire = wire::scan(model)?;
    Ok(splices(model, &wire, analysis, removed, &[])?.2)
}

/// Prepares the shrunk model for `to` (external data beside it) among `outputs`, with `edits`
/// applied before slicing (see [`shrink_bytes`]); it is in place once `outputs` are committed.
pub fn stage_shrunk(
    outputs: &mut Outputs,
    model: &Model,
    (analysis, removed): (&Analysis, &[Vec<usize>]),
    edits: &[Edit],
    to: &Path,
) -> Result<(Vec<WrittenFile>, ShrinkTotals)> {
    let wire = wire::scan(model)?;
    let (splice, external, mut totals) = splices(model, &wire, analysis, removed, edits)?;
    let files = stage_spliced(outputs, model, Destination::File(to), splice, external)?;
    totals.bytes_after = files.iter().map(|f| f.bytes).sum();
    Ok((files, totals))
}

/// Writes the shrunk model to `to` (external data beside it), atomically, with `edits` applied
/// before slicing (see [`shrink_bytes`]).
pub fn save_shrunk(
    model: &Model,
    analysis: &Analysis,
    removed: &[Vec<usize>],
    edits: &[Edit],
    to: &Path,
) -> Result<(Vec<WrittenFile>, ShrinkTotals)> {
    let mut outputs = Outputs::scratch();
    let (mut files, totals) = stage_shrunk(&mut outputs, model, (analysis, removed), edits, to)?;
    outputs.commit()?;
    committed(&mut files);
    Ok((files, totals))
}

/// Which members' weights [`zeroed_bytes`] zeroes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The producers' weights and biases for the channels: the channels become dead when every
    /// op on the way maps 0 to 0.
    Producers,
    /// The consumers' weights for the channels: the channels are no longer read, and the model
    /// computes what its shrunk form computes.
    Consumers,
}

/// The model's bytes with the `side` weights of the `removed` channels set to zero and every
/// shape kept: the reference a shrink is compared with. Models with external data are refused.
pub fn zeroed_bytes(
    model: &Model,
    analysis: &Analysis,
    removed: &[Vec<usize>],
    side: Side,
) -> Result<Vec<u8>> {
    let kind = match side {
        Side::Producers => CutKind::Producer,
        Side::Consumers => CutKind::Consumer,
    };
    let plan = plan(model, analysis, removed);
    // A shared constant sliced in copies cannot be zeroed in place for one reader alone.
    for (t, _) in plan.reader_slices.keys() {
        if analysis
            .cuts
            .iter()
            .any(|c| c.tensor == *t && c.kind == kind)
        {
            return Err(Error::tensor(
                &model.tensors()[*t].name,
                "read by several nodes that remove different channels: it has no zeroed form",
            ));
        }
    }
    let mut zero: BTreeMap<usize, Keeps> = BTreeMap::new();
    for (cut, keeps) in plan.slices.iter().flat_map(|(t, keeps)| {
        analysis
            .cuts
            .iter()
            .filter(move |c| c.tensor == *t && c.kind == kind)
            .map(move |c| (c, keeps))
    }) {
        let rank = keeps.len();
        let axes = zero.entry(cut.tensor).or_insert_with(|| vec![None; rank]);
        axes[cut.axis] = keeps[cut.axis].clone();
    }
    let mut edits = Vec::new();
    for (t, axes) in zero {
        let tensor = &model.tensors()[t];
        let size = tensor
            .dtype
            .size()
            .ok_or_else(|| Error::tensor(&tensor.name, "element type without a size"))?;
        let mut data = dense_bytes(model, tensor)?.into_owned();
        let dims: Vec<usize> = tensor.dims.iter().map(|&d| d as usize).collect();
        for (axis, keep) in axes.iter().enumerate() {
            let Some(keep) = keep else { continue };
            let inner: usize = dims[axis + 1..].iter().product();
            for (i, chunk) in data.chunks_exact_mut(size).enumerate() {
                if !keep[(i / inner) % dims[axis]] {
                    chunk.fill(0);
                }
            }
        }
        edits.push(Edit::replace(t, data));
    }
    crate::write::to_bytes(model, &edits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slicing_keeps_the_chosen_positions_of_every_axis() {
        // A [2, 3] tensor of bytes 0..6; keep row 1 and columns 0 and 2.
        let data: Vec<u8> = (0..6).collect();
        let keeps = vec![Some(vec![false, true]), Some(vec![true, false, true])];
        assert_eq!(slice_elements(&data, &[2, 3], 1, &keeps), vec![3, 5]);
        let rows = vec![Some(vec![true, false]), None];
        assert_eq!(slice_elements(&data, &[2, 3], 1, &rows), vec![0, 1, 2]);
    }
}
