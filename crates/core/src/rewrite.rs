//! Writing a model with some tensors changed, from the input's own bytes: untouched bytes are
//! copied, changed tensor data is streamed in place, and every output file (the model and its
//! external data files) is written to a temporary file in the output directory, synced, then
//! renamed, so that a failure leaves nothing behind and never touches the input.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use onnx_splice::{encode_len_header, Patch, Splice};
use tempfile::NamedTempFile;

use crate::error::{Error, Result};
use crate::model::{Model, Payload, Tensor};
use crate::pending::{temp_beside, Pending};
use crate::proto::tensor as field;
use crate::proto::DataType;
use crate::sparse::{sparse_field, swap_field};
use crate::values::dense_bytes;
use crate::zeroing::{write_zeroed, Zeroing};

/// A change to one tensor.
#[derive(Debug, Clone)]
pub struct Edit {
    /// Index into [`Model::tensors`].
    pub tensor: usize,
    /// What changes.
    pub change: Change,
}

/// What an [`Edit`] does to a tensor's elements; its shape and element type stay.
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
        Edit {
            tensor,
            change: Change::Zero(zeroing),
        }
    }

    /// Whether the edit leaves the tensor as it is.
    fn is_noop(&self, model: &Model) -> Result<bool> {
        Ok(match &self.change {
            Change::Zero(zeroing) => zeroing.is_noop(),
            Change::Replace(bytes) => *bytes == *dense_bytes(model, &model.tensors()[self.tensor])?,
        })
    }
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
    /// Tensors (indices into [`Model::tensors`]) moved to sparse storage.
    pub sparse: Vec<usize>,
}

/// An output file written by [`save`].
#[derive(Debug, Clone)]
pub struct WrittenFile {
    /// Where it was written.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
}

/// Where [`save`] writes.
#[derive(Debug, Clone, Copy)]
pub enum Destination<'p> {
    /// A new model file; never the input model or one of its external data files.
    File(&'p Path),
    /// Over the input model (the file a symlink points to) and its external data files, each
    /// replaced atomically; the input's mapping stays valid meanwhile.
    InPlace,
}

/// The output directory and file name `to` resolves to: refuses to write a new file over the
/// model's own file or its external data (also through links).
fn output_location(model: &Model, to: Destination) -> Result<(PathBuf, std::ffi::OsString)> {
    let out = match to {
        Destination::File(out) => out,
        Destination::InPlace => {
            let input = model
                .path()
                .canonicalize()
                .map_err(|e| Error::io(model.path(), e))?;
            let dir = input.parent().unwrap_or(Path::new("/")).to_path_buf();
            let name = input.file_name().expect("a canonical file path").to_owned();
            return Ok((dir, name));
        }
    };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let out_dir = dir.canonicalize().map_err(|e| Error::io(&dir, e))?;
    let file_name = out
        .file_name()
        .ok_or_else(|| Error::Usage(format!("output `{}` is not a file name", out.display())))?;
    let target = out_dir.join(file_name);
    let input = model
        .path()
        .canonicalize()
        .map_err(|e| Error::io(model.path(), e))?;
    let resolved = target.canonicalize().unwrap_or_else(|_| target.clone());
    if resolved == input {
        return Err(Error::Usage(format!(
            "output `{}` is the input model; write to another file, or pass --in-place",
            out.display()
        )));
    }
    let input_dir = input.parent().unwrap_or(Path::new("/"));
    if model
        .external_files()
        .keys()
        .any(|l| input_dir.join(l) == resolved)
    {
        return Err(Error::Usage(format!(
            "output `{}` is an external data file of the input; write to another file",
            out.display()
        )));
    }
    Ok((out_dir, file_name.to_owned()))
}

/// Where each external data file goes, by location: the same name beside the output (the same
/// layout), unless that is the input's own file and the output is another model; then
/// `<output file name>.<location>`.
fn external_targets(
    model: &Model,
    out_dir: &Path,
    out_name: &str,
    to: Destination,
) -> Result<BTreeMap<String, String>> {
    let input = model
        .path()
        .canonicalize()
        .map_err(|e| Error::io(model.path(), e))?;
    let beside_input = input.parent() == Some(out_dir) && matches!(to, Destination::File(_));
    Ok(model
        .external_files()
        .keys()
        .map(|location| {
            let target = if beside_input {
                format!("{out_name}.{}", location.replace(['/', '\\'], "_"))
            } else {
                location.clone()
            };
            (location.clone(), target)
        })
        .collect())
}

/// The packed typed field (`float_data`, `double_data` or `int32_data`) holding `data`.
fn typed_field(number: u32, element_size: usize, data: &[u8]) -> Vec<u8> {
    let payload = if number == field::INT32_DATA {
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
fn changed_copy(model: &Model, tensor: &Tensor, change: &Change) -> Result<Vec<u8>> {
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

/// The splices of the model file and of each external data file that apply `edits`, and the
/// tensors moved to sparse storage.
type Splices<'m> = (Splice<'m>, BTreeMap<&'m str, Splice<'m>>, Vec<usize>);

fn splice_edits<'m>(model: &'m Model, edits: &'m [Edit], storage: Storage) -> Result<Splices<'m>> {
    let mut moved = Vec::new();
    let mut model_splice = Splice::default();
    let mut external: BTreeMap<&str, Splice> = model
        .external_files()
        .keys()
        .map(|location| (location.as_str(), Splice::default()))
        .collect();
    for edit in edits {
        if edit.is_noop(model)? {
            continue;
        }
        let tensor = &model.tensors()[edit.tensor];
        if tensor.sparse.is_some() {
            return Err(Error::tensor(
                &tensor.name,
                "sparse tensors cannot be pruned in place",
            ));
        }
        let dtype = tensor.dtype;
        // Sparse storage needs the zeroed elements in memory; when the tensor stays dense after
        // all, they are written as they are rather than zeroed a second time.
        let mut zeroed = None;
        if storage == Storage::Sparse && !matches!(tensor.payload, Payload::External { .. }) {
            let data = changed_copy(model, tensor, &edit.change)?;
            if let Some(field) = sparse_field(tensor, &data) {
                swap_field(&mut model_splice, tensor, field);
                moved.push(edit.tensor);
                continue;
            }
            zeroed = Some(data);
        }
        let change = &edit.change;
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
    Ok((model_splice, external, moved))
}

/// The model file's bytes with `edits` applied, in memory (to hand an inference engine a
/// partly pruned model). Edits of tensors in external data are refused.
pub fn to_bytes(model: &Model, edits: &[Edit]) -> Result<Vec<u8>> {
    if let Some(edit) = edits
        .iter()
        .find(|e| matches!(model.tensors()[e.tensor].payload, Payload::External { .. }))
    {
        return Err(Error::tensor(
            &model.tensors()[edit.tensor].name,
            "lives in external data: an in-memory copy of the model cannot hold its change",
        ));
    }
    let (splice, _, _) = splice_edits(model, edits, Storage::Dense)?;
    let mut out = Vec::with_capacity(splice.output_len(model.bytes().len()));
    splice
        .write_to(model.bytes(), &mut out)
        .map_err(|e| Error::io(model.path(), std::io::Error::other(e)))?;
    Ok(out)
}

/// Writes `model` with `edits` applied to `to` (and its external data files beside it).
pub fn save(model: &Model, edits: &[Edit], to: Destination, storage: Storage) -> Result<Saved> {
    let (out_dir, out_name) = output_location(model, to)?;
    let (mut model_splice, external, moved) = splice_edits(model, edits, storage)?;
    let targets = external_targets(model, &out_dir, &out_name.to_string_lossy(), to)?;
    for tensor in model.tensors() {
        let Payload::External {
            location,
            location_field,
            ..
        } = &tensor.payload
        else {
            continue;
        };
        if targets[location] == *location {
            continue;
        }
        let [entry, value] = location_field
            .ok_or_else(|| Error::tensor(&tensor.name, "external data without a location entry"))?;
        let mut enclosing = tensor.enclosing.clone();
        enclosing.extend([entry, value]);
        let renamed = targets[location].clone().into_bytes();
        model_splice.replace(
            value.payload_start..value.payload_end,
            Patch::Bytes(renamed),
            enclosing,
        );
    }
    let mut pending = Vec::new();
    for (location, splice) in external {
        let target = out_dir.join(&targets[location]);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        pending.push((
            write_temp(&target, &model.external_files()[location], splice)?,
            target,
        ));
    }
    let target = out_dir.join(&out_name);
    pending.push((write_temp(&target, model.bytes(), model_splice)?, target));
    let mut written = Vec::new();
    for ((temp, _registered), target) in pending {
        let bytes = temp
            .as_file()
            .metadata()
            .map_err(|e| Error::io(&target, e))?
            .len();
        temp.persist(&target)
            .map_err(|e| Error::io(&target, e.error))?;
        written.push(WrittenFile {
            path: target,
            bytes,
        });
    }
    Ok(Saved {
        files: written,
        sparse: moved,
    })
}

/// Writes `input` with `splice` applied to a synced temporary file beside `target`.
fn write_temp(target: &Path, input: &[u8], splice: Splice) -> Result<(NamedTempFile, Pending)> {
    let (temp, pending) = temp_beside(target)?;
    let file: &File = temp.as_file();
    // Small buffer: large pieces (copied ranges, tensor batches) go straight to the file.
    let mut writer = BufWriter::with_capacity(64 << 10, Piecewise(file));
    splice
        .write_to(input, &mut writer)
        .map_err(|e| Error::io(target, std::io::Error::other(e)))?;
    writer.flush().map_err(|e| Error::io(target, e))?;
    drop(writer);
    file.sync_all().map_err(|e| Error::io(target, e))?;
    Ok((temp, pending))
}

/// Bytes handed to the kernel per `write`. Large writes are slow to copy into the page cache:
/// on the development machine, 1 GiB written in 256 KiB pieces took 0.22 to 0.24 s, and 0.24 to
/// 2.45 s in 8 MiB pieces (`dd`, four runs each).
const WRITE_PIECE: usize = 256 << 10;

/// A file that takes at most [`WRITE_PIECE`] bytes per `write`.
struct Piecewise<'f>(&'f File);

impl Write for Piecewise<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut file = self.0;
        file.write(&buf[..buf.len().min(WRITE_PIECE)])
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
