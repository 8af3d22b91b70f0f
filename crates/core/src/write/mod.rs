//! Writing a model with some tensors changed, from the input's own bytes: untouched bytes are
//! copied, changed tensor data is streamed in place. A run's outputs are one commit
//! ([`Outputs`]): each is locked before any work, written and synced under a temporary or new
//! name, then put in place by one rename (a model's data files get new names first, so the
//! model's rename is the commit of the set), so that a failure or an interruption before the
//! commit leaves every output path as it was and never touches the input.

pub(crate) mod add_bias;
mod atomic;
mod lock;
mod outputs;
pub(crate) mod paths;
mod pause;
pub(crate) mod sparse;
mod stage;
mod targets;
mod temp;
pub(crate) mod unfinished;

pub use add_bias::{BiasAdd, NewBias};
pub use atomic::write_file_atomic;
pub use outputs::{Outputs, Target};
pub use paths::{check_outputs, check_writable, real_output_path, NamedOutput};
pub use sparse::densified;
pub use targets::{output_files, Destination, OutputFiles};
pub use unfinished::{interrupt, interrupted_too_late, remove_unfinished_outputs, Interruption};

pub(crate) use stage::stage_spliced;

use std::collections::BTreeMap;
use std::path::PathBuf;

use onnx_splice::{encode_len_header, Patch, Splice};

use crate::error::{Error, Result};
use crate::model::values::dense_bytes;
use crate::model::{Model, Payload, Tensor};
use crate::proto::{tensor as field, DataType};
use crate::prune::zeroing::{write_zeroed, Zeroing};
use crate::write::add_bias::splice_biases;
use crate::write::sparse::{sparse_field, swap_field};

/// A change to a model: a tensor's elements, or a new bias for a layer without one.
#[derive(Debug, Clone)]
pub enum Edit {
    /// A tensor's elements change; its shape and element type stay.
    Tensor {
        /// Index into [`Model::tensors`].
        tensor: usize,
        /// What changes.
        change: Change,
    },
    /// A main-graph layer gains a bias initializer (see [`NewBias`]).
    AddBias(NewBias),
}

/// What an [`Edit::Tensor`] does to a tensor's elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Some elements become zero, every other keeps its bytes.
    Zero(Zeroing),
    /// Every element is replaced: little-endian elements of the tensor's own type (as SparseGPT
    /// updates kept weights and bias correction shifts biases).
    Replace(Vec<u8>),
}

impl Edit {
    /// An edit zeroing elements of `tensor`.
    pub fn zero(tensor: usize, zeroing: Zeroing) -> Edit {
        Edit::Tensor {
            tensor,
            change: Change::Zero(zeroing),
        }
    }

    /// An edit replacing every element of `tensor` with `bytes`.
    pub fn replace(tensor: usize, bytes: Vec<u8>) -> Edit {
        Edit::Tensor {
            tensor,
            change: Change::Replace(bytes),
        }
    }

    /// The tensor the edit changes, if it changes one.
    pub fn tensor(&self) -> Option<usize> {
        match self {
            Edit::Tensor { tensor, .. } => Some(*tensor),
            Edit::AddBias(_) => None,
        }
    }
}

/// Whether `change` leaves `tensor` as it is.
fn is_noop(model: &Model, tensor: &Tensor, change: &Change) -> Result<bool> {
    Ok(match change {
        Change::Zero(zeroing) => zeroing.is_noop(),
        Change::Replace(bytes) => *bytes == *dense_bytes(model, tensor)?,
    })
}

/// How pruned tensors are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Storage {
    /// Dense, with exact zeros: runs everywhere.
    #[default]
    Dense,
    /// COO in `sparse_initializer` (or a `Constant`'s `sparse_value`) where that is smaller.
    Sparse,
}

/// What [`save`] wrote.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The files, the model last.
    pub files: Vec<WrittenFile>,
    /// Tensors (indices into [`Model::tensors`]) stored sparse in the output.
    pub sparse: Vec<usize>,
    /// Tensors that sparse storage was asked for but that stay dense because they live in
    /// external data (the external file keeps its layout).
    pub kept_dense: Vec<usize>,
}

/// An output file written by [`save`] (or prepared by [`Outputs::stage`]).
#[derive(Debug, Clone)]
pub struct WrittenFile {
    /// Where it is (or will be, once committed).
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Where its bytes can be read now: `path` once committed, a temporary file before.
    pub read_from: PathBuf,
}

/// The packed typed field (`float_data`, `double_data`, or the varint fields `int32_data`,
/// `int64_data`, `uint64_data`) holding `data`.
pub(crate) fn typed_field(number: u32, element_size: usize, data: &[u8]) -> Vec<u8> {
    let varint = [field::INT32_DATA, field::INT64_DATA, field::UINT64_DATA];
    let payload = if varint.contains(&number) {
        let mut varints = Vec::with_capacity(data.len() * 2);
        for element in data.chunks_exact(element_size) {
            let mut value = [0u8; 8];
            value[..element_size].copy_from_slice(element);
            prost::encoding::encode_varint(u64::from_le_bytes(value), &mut varints);
        }
        varints
    } else {
        data.to_vec()
    };
    let mut out = Vec::with_capacity(payload.len() + 12);
    encode_len_header(number, payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// A tensor's elements with `change` applied, in memory.
pub(crate) fn changed_copy(model: &Model, tensor: &Tensor, change: &Change) -> Result<Vec<u8>> {
    match change {
        Change::Zero(zeroing) => {
            let data = dense_bytes(model, tensor)?;
            let mut zeroed = Vec::with_capacity(data.len());
            write_zeroed(tensor.dtype, &data, zeroing, &mut zeroed).expect("writing to memory");
            Ok(zeroed)
        }
        Change::Replace(bytes) => Ok(bytes.clone()),
    }
}

/// The patch writing `data` (the tensor's stored elements) with `change` applied: zeroing is
/// streamed, replaced elements are written as they are.
fn patch<'a>(dtype: DataType, data: &'a [u8], change: &'a Change) -> Result<Patch<'a>> {
    Ok(match change {
        Change::Zero(zeroing) => Patch::Stream {
            len: data.len(),
            write: Box::new(move |w| write_zeroed(dtype, data, zeroing, w)),
        },
        Change::Replace(bytes) if bytes.len() == data.len() => Patch::Stream {
            len: bytes.len(),
            write: Box::new(move |w| w.write_all(bytes)),
        },
        Change::Replace(bytes) => {
            return Err(Error::Usage(format!(
                "a replacement of {} bytes for a tensor of {}",
                bytes.len(),
                data.len()
            )))
        }
    })
}

/// What applying edits gives: the splice of the model file, those of its external data files,
/// the tensors stored sparse, and those asked to be but kept dense (external data).
pub(crate) struct Splices<'m> {
    pub model: Splice<'m>,
    pub external: BTreeMap<&'m str, Splice<'m>>,
    pub moved: Vec<usize>,
    pub kept_dense: Vec<usize>,
}

/// An empty splice per external data file of `model`, by location.
pub(crate) fn external_splices(model: &Model) -> BTreeMap<&str, Splice<'_>> {
    model
        .external_files()
        .keys()
        .map(|location| (location.as_str(), Splice::default()))
        .collect()
}

pub(crate) fn splice_edits<'m>(
    model: &'m Model,
    edits: &'m [Edit],
    storage: Storage,
) -> Result<Splices<'m>> {
    let mut moved = Vec::new();
    let mut kept_dense = Vec::new();
    let mut model_splice = Splice::default();
    let mut external = external_splices(model);
    let mut biases = Vec::new();
    for edit in edits {
        let (index, change) = match edit {
            Edit::Tensor { tensor, change } => (*tensor, change),
            Edit::AddBias(bias) => {
                biases.push(bias);
                continue;
            }
        };
        let tensor = &model.tensors()[index];
        if is_noop(model, tensor, change)? {
            continue;
        }
        let dtype = tensor.dtype;
        let stays_sparse = tensor.sparse.is_some();
        if storage == Storage::Sparse && matches!(tensor.payload, Payload::External { .. }) {
            kept_dense.push(index);
        }
        // Sparse storage needs the zeroed elements in memory; when the tensor stays dense after
        // all, they are written as they are rather than zeroed a second time. A tensor stored
        // sparse stays sparse, with its zeroed elements left out.
        let mut zeroed = None;
        let inline = !matches!(tensor.payload, Payload::External { .. });
        if stays_sparse || (storage == Storage::Sparse && inline) {
            let data = changed_copy(model, tensor, change)?;
            if stays_sparse && data == *dense_bytes(model, tensor)? {
                moved.push(index);
                continue; // nothing new to zero: the sparse tensor keeps its bytes
            }
            if let Some(field) = sparse_field(tensor, &data, stays_sparse) {
                swap_field(&mut model_splice, tensor, field);
                moved.push(index);
                continue;
            }
            zeroed = Some(data);
        }
        match &tensor.payload {
            Payload::Raw(raw) => {
                let data = model.raw_bytes(&tensor.payload).expect("raw payload");
                let mut enclosing = tensor.enclosing.clone();
                enclosing.push(*raw);
                let patch = match zeroed {
                    Some(bytes) => Patch::Bytes(bytes),
                    None => patch(dtype, data, change)?,
                };
                model_splice.replace(raw.payload_start..raw.payload_end, patch, enclosing);
            }
            Payload::External {
                location,
                offset,
                length,
                ..
            } => {
                let data = model.raw_bytes(&tensor.payload).expect("external payload");
                let start = *offset as usize;
                external
                    .get_mut(location.as_str())
                    .expect("mapped external file")
                    .replace(
                        start..start + *length as usize,
                        patch(dtype, data, change)?,
                        Vec::new(),
                    );
            }
            Payload::Typed { number, pieces } => {
                let zeroed = match zeroed {
                    Some(bytes) => bytes,
                    None => changed_copy(model, tensor, change)?,
                };
                let size = dtype.size().expect("float type");
                let mut new_field = typed_field(*number, size, &zeroed);
                for piece in pieces {
                    // The first piece becomes the whole packed field; the others are removed.
                    let patch = Patch::Bytes(std::mem::take(&mut new_field));
                    model_splice.replace(piece.span.clone(), patch, tensor.enclosing.clone());
                }
            }
            Payload::Empty => {}
        }
    }
    splice_biases(model, &biases, &mut model_splice)?;
    Ok(Splices {
        model: model_splice,
        external,
        moved,
        kept_dense,
    })
}

/// The model file's bytes with `edits` applied, in memory (to hand an inference engine a
/// partly pruned model). Edits of tensors in external data are refused.
pub fn to_bytes(model: &Model, edits: &[Edit]) -> Result<Vec<u8>> {
    if let Some(tensor) = edits
        .iter()
        .filter_map(Edit::tensor)
        .find(|&t| matches!(model.tensors()[t].payload, Payload::External { .. }))
    {
        return Err(Error::tensor(
            &model.tensors()[tensor].name,
            "lives in external data: an in-memory copy of the model cannot hold its change",
        ));
    }
    let splice = splice_edits(model, edits, Storage::Dense)?.model;
    let mut out = Vec::with_capacity(splice.output_len(model.bytes().len()));
    splice
        .write_to(model.bytes(), &mut out)
        .map_err(|e| Error::io(model.path(), std::io::Error::other(e)))?;
    Ok(out)
}

/// Writes `model` with `edits` applied to `to` (and its external data files beside it), and
/// puts it in place at once: [`Outputs`] prepares several outputs for one commit.
pub fn save(model: &Model, edits: &[Edit], to: Destination, storage: Storage) -> Result<Saved> {
    let mut outputs = Outputs::scratch();
    let mut saved = outputs.stage(model, edits, to, storage)?;
    outputs.commit()?;
    committed(&mut saved.files);
    Ok(saved)
}

/// Points `files`, just committed, at their final paths.
pub(crate) fn committed(files: &mut [WrittenFile]) {
    for file in files {
        file.read_from = file.path.clone();
    }
}
