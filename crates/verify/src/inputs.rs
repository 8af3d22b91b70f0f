//! Reading input samples and labels: `.npz` files, single `.npy` files, ONNX test-data
//! directories; and drawing seeded random samples.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray_npy::{NpzReader, ReadDataError, ReadNpyExt, ReadableElement};
use py_literal::Value as PyValue;
use rand::{Rng, SeedableRng};
use tract_onnx::prelude::*;

use crate::error::{Error, Result};

fn invalid(path: &Path, msg: impl Into<String>) -> Error {
    Error::Input {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// A float16 element as numpy writes it (`<f2`), which ndarray-npy does not read itself.
#[derive(Clone, Copy)]
struct Half(f16);

impl ReadableElement for Half {
    fn read_to_end_exact_vec<R: Read>(
        mut reader: R,
        type_desc: &PyValue,
        len: usize,
    ) -> Result<Vec<Self>, ReadDataError> {
        let little = match type_desc {
            PyValue::String(s) if s == "<f2" => true,
            PyValue::String(s) if s == ">f2" => false,
            other => return Err(ReadDataError::WrongDescriptor(other.clone())),
        };
        let mut bytes = vec![0u8; len * 2];
        reader.read_exact(&mut bytes).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ReadDataError::MissingData,
            _ => ReadDataError::Io(e),
        })?;
        let extra = reader.read_to_end(&mut Vec::new())?;
        if extra > 0 {
            return Err(ReadDataError::ExtraBytes(extra));
        }
        Ok(bytes
            .chunks_exact(2)
            .map(|b| {
                let bits = [b[0], b[1]];
                Half(f16::from_bits(if little {
                    u16::from_le_bytes(bits)
                } else {
                    u16::from_be_bytes(bits)
                }))
            })
            .collect())
    }
}

/// Where arrays are read from: an entry of a `.npz`, or the bytes of a `.npy`.
trait ArraySource {
    /// The array as `T`, if its descriptor is `T`'s.
    fn read<T: ReadableElement>(&mut self) -> Option<ndarray::ArrayD<T>>;
}

struct NpzEntry<'a> {
    reader: &'a mut NpzReader<File>,
    key: &'a str,
}

impl ArraySource for NpzEntry<'_> {
    fn read<T: ReadableElement>(&mut self) -> Option<ndarray::ArrayD<T>> {
        self.reader
            .by_name::<ndarray::OwnedRepr<T>, ndarray::IxDyn>(self.key)
            .ok()
    }
}

impl ArraySource for &[u8] {
    fn read<T: ReadableElement>(&mut self) -> Option<ndarray::ArrayD<T>> {
        ndarray::ArrayD::<T>::read_npy(*self).ok()
    }
}

/// The array of `source` as a tract tensor, trying each element type ndarray-npy reads and
/// float16.
fn read_any(source: &mut impl ArraySource) -> Option<Tensor> {
    macro_rules! attempt {
        ($($t:ty),*) => {
            $(if let Some(array) = source.read::<$t>() {
                return Some(Tensor::from(array));
            })*
        };
    }
    attempt!(f32, f64, i64, i32, i16, i8, u64, u32, u16, u8, bool);
    source
        .read::<Half>()
        .map(|array| Tensor::from(array.mapv(|h| h.0)))
}

/// Reads one array of a `.npz` as a tract tensor, whatever its element type.
fn npz_array(reader: &mut NpzReader<File>, key: &str, path: &Path) -> Result<Tensor> {
    read_any(&mut NpzEntry { reader, key }).ok_or_else(|| {
        invalid(
            path,
            format!(
                "array `{key}` has an element type that cannot be read (float16/32/64, integers, bool)"
            ),
        )
    })
}

fn open_npz(path: &Path) -> Result<NpzReader<File>> {
    let file = File::open(path).map_err(|e| invalid(path, e.to_string()))?;
    NpzReader::new(file).map_err(|e| invalid(path, format!("not a readable .npz: {e}")))
}

fn npz_keys(reader: &mut NpzReader<File>, path: &Path) -> Result<Vec<String>> {
    Ok(reader
        .names()
        .map_err(|e| invalid(path, e.to_string()))?
        .into_iter()
        .map(|n| n.trim_end_matches(".npy").to_string())
        .collect())
}

/// Every array of a `.npz`, by key (a trailing `.npy` in the key is dropped).
pub fn read_npz(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let mut reader = open_npz(path)?;
    let names = reader.names().map_err(|e| invalid(path, e.to_string()))?;
    names
        .into_iter()
        .map(|name| {
            let tensor = npz_array(&mut reader, &name, path)?;
            let name = name.trim_end_matches(".npy").to_string();
            finite(path, &name, &tensor)?;
            Ok((name, tensor))
        })
        .collect()
}

/// One `.npy` file, for input (or labels) `name`.
pub fn read_npy(name: &str, path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(|e| invalid(path, e.to_string()))?;
    let tensor = read_any(&mut &bytes[..]).ok_or_else(|| {
        invalid(
            path,
            format!("{name}: not a readable .npy of float16/32/64, integers or bool"),
        )
    })?;
    finite(path, name, &tensor)?;
    Ok(tensor)
}

/// Refuses a float array holding a NaN or an infinity, naming the array and the sample (its
/// index on the first axis): found when the data is read, before any model runs on it.
fn finite(path: &Path, name: &str, tensor: &Tensor) -> Result<()> {
    let bad = |e: TractError| invalid(path, format!("array `{name}`: {e}"));
    // Read in place for float32 and float64; the half types are cast (to half the width of
    // float32's, at most).
    let first = match tensor.datum_type() {
        DatumType::F64 => first_not_finite(tensor.to_plain_array_view::<f64>().map_err(bad)?),
        DatumType::F32 => first_not_finite(tensor.to_plain_array_view::<f32>().map_err(bad)?),
        dt if dt.is_float() => {
            let cast = tensor.cast_to::<f32>().map_err(bad)?;
            first_not_finite(cast.to_plain_array_view::<f32>().map_err(bad)?)
        }
        _ => None,
    };
    let Some((at, value)) = first else {
        return Ok(());
    };
    let per_sample = match tensor.shape().first() {
        Some(&n) if n > 0 => tensor.len() / n,
        _ => tensor.len(),
    };
    Err(invalid(
        path,
        format!(
            "array `{name}` holds {value} at sample {} (element {at}): the data must be finite",
            at / per_sample
        ),
    ))
}

/// The index and value of the first element of `values` that is NaN or infinite.
fn first_not_finite<T: Into<f64> + Copy>(
    values: tract_ndarray::ArrayViewD<'_, T>,
) -> Option<(usize, f64)> {
    values
        .iter()
        .map(|&v| v.into())
        .enumerate()
        .find(|(_, v): &(usize, f64)| !v.is_finite())
}

/// One data set of an ONNX test-data directory: its `input_<N>.pb` files in the order of N.
fn data_set_files(set: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<(usize, PathBuf)> = std::fs::read_dir(set)
        .map_err(|e| invalid(set, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let n = name
                .strip_prefix("input_")?
                .strip_suffix(".pb")?
                .parse()
                .ok()?;
            Some((n, p))
        })
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// An ONNX test-data directory (`test_data_set_*/input_*.pb`): one set of model inputs per data
/// set. A file whose tensor name is one of `input_names` feeds that input; any other feeds the
/// input at its position among `all_inputs` (the model's inputs in order, fixed ones included:
/// data for an input in neither list is skipped). `fit` checks each tensor against its input.
pub fn read_test_data(
    dir: &Path,
    all_inputs: &[String],
    input_names: &[String],
    fit: &mut dyn FnMut(&str, Tensor) -> Result<Tensor>,
) -> Result<Vec<BTreeMap<String, Tensor>>> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| invalid(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    if sets.is_empty() && dir.join("input_0.pb").exists() {
        sets.push(dir.to_path_buf());
    }
    if sets.is_empty() {
        return Err(invalid(dir, "holds no test_data_set_*/input_*.pb"));
    }
    sets.sort();
    let resolver = tract_onnx::data_resolver::default();
    sets.iter()
        .map(|set| -> Result<BTreeMap<String, Tensor>> {
            let mut inputs = BTreeMap::new();
            for (position, path) in data_set_files(set)?.iter().enumerate() {
                let bytes = std::fs::read(path).map_err(|e| invalid(path, e.to_string()))?;
                let proto = <tract_onnx::pb::TensorProto as prost::Message>::decode(&bytes[..])
                    .map_err(|e| invalid(path, format!("not a TensorProto: {e}")))?;
                let by_name = input_names.contains(&proto.name);
                let input = if by_name {
                    proto.name.clone()
                } else {
                    match all_inputs.get(position) {
                        Some(name) => name.clone(),
                        None => {
                            return Err(invalid(
                                path,
                                format!(
                                    "tensor `{}` names no input of the model and its position {position} is past its {} inputs",
                                    proto.name,
                                    all_inputs.len()
                                ),
                            ))
                        }
                    }
                };
                if !input_names.contains(&input) {
                    continue;
                }
                if inputs.contains_key(&input) {
                    return Err(invalid(
                        path,
                        format!(
                            "tensor `{}` feeds input `{input}` (by {}), which another file of this data set already feeds",
                            proto.name,
                            if by_name { "name" } else { "position" }
                        ),
                    ));
                }
                let how = if by_name { "by name" } else { "by position" };
                let tensor = tract_onnx::tensor::load_tensor(&*resolver, &proto, None)
                    .map_err(|e| format!("{e:#}"))
                    .and_then(|t| fit(&input, t).map_err(|e| e.to_string()))
                    .map_err(|e| {
                        invalid(
                            path,
                            format!("tensor `{}` for input `{input}` ({how}): {e}", proto.name),
                        )
                    })?;
                inputs.insert(input, tensor);
            }
            if let Some(missing) = input_names.iter().find(|n| !inputs.contains_key(*n)) {
                return Err(invalid(set, format!("has no input_N.pb for input `{missing}`")));
            }
            Ok(inputs)
        })
        .collect()
}

/// One random sample of element type `dt` and shape `shape`: floats uniform in [0, 1),
/// integers in [0, 10), booleans fair. Fixed by `seed`, the input's index and the sample's, so
/// a sample is the same whatever batch it runs in.
pub fn random_sample(
    dt: DatumType,
    shape: &[usize],
    seed: u64,
    input: usize,
    sample: usize,
) -> Result<Tensor> {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(input as u64).to_le_bytes());
    key[16..24].copy_from_slice(&(sample as u64).to_le_bytes());
    let mut rng = rand_chacha::ChaCha8Rng::from_seed(key);
    let n: usize = shape.iter().product();
    let tensor = match dt {
        dt if dt.is_float() => Tensor::from_shape(
            shape,
            &(0..n).map(|_| rng.random::<f64>()).collect::<Vec<_>>(),
        )
        .and_then(|t| Ok(t.cast_to_dt(dt)?.into_owned())),
        DatumType::I64 => Tensor::from_shape(
            shape,
            &(0..n)
                .map(|_| rng.random_range(0..10i64))
                .collect::<Vec<_>>(),
        ),
        DatumType::I32 => Tensor::from_shape(
            shape,
            &(0..n)
                .map(|_| rng.random_range(0..10i32))
                .collect::<Vec<_>>(),
        ),
        DatumType::Bool => Tensor::from_shape(
            shape,
            &(0..n).map(|_| rng.random::<bool>()).collect::<Vec<_>>(),
        ),
        other => {
            return Err(Error::Usage(format!(
                "cannot draw random inputs of type {other:?}"
            )))
        }
    };
    tensor.map_err(|e| Error::Usage(format!("{e:#}")))
}

/// Class labels from `FILE.npy` or `FILE.npz:KEY` for `count` samples (when known), as
/// integers. One-hot rows (`[count, classes]` of zeros and a single one) are read as their
/// arg-max, with a note.
pub fn read_labels(spec: &str, count: Option<usize>, notes: &mut Vec<String>) -> Result<Vec<i64>> {
    let (path, tensor) = match spec.rsplit_once(':') {
        Some((file, key)) if file.ends_with(".npz") => {
            let path = Path::new(file);
            let mut reader = open_npz(path)?;
            let keys = npz_keys(&mut reader, path)?;
            if !keys.iter().any(|k| k == key) {
                return Err(invalid(
                    path,
                    format!(
                        "--labels: has no array `{key}` (it holds {})",
                        keys.join(", ")
                    ),
                ));
            }
            let name = if reader
                .names()
                .map_err(|e| invalid(path, e.to_string()))?
                .iter()
                .any(|n| n == key)
            {
                key.to_string()
            } else {
                format!("{key}.npy")
            };
            (path, npz_array(&mut reader, &name, path)?)
        }
        _ if spec.ends_with(".npz") => {
            let path = Path::new(spec);
            let keys = npz_keys(&mut open_npz(path)?, path)?;
            return Err(invalid(
                path,
                format!(
                    "--labels: a .npz holds several arrays: name the one with the labels as {spec}:KEY (it holds {})",
                    keys.join(", ")
                ),
            ));
        }
        _ => (Path::new(spec), read_npy("labels", Path::new(spec))?),
    };
    let samples = count.unwrap_or(tensor.shape().first().copied().unwrap_or(1));
    if tensor.rank() == 2 && tensor.shape()[0] == samples && tensor.shape()[1] > 1 {
        return one_hot(path, &tensor, notes);
    }
    if tensor.rank() > 1 && tensor.len() != samples {
        return Err(invalid(
            path,
            format!("labels of shape {:?} for {samples} samples", tensor.shape()),
        ));
    }
    let values = tensor
        .cast_to::<f64>()
        .map_err(|e| invalid(path, format!("labels are not numbers: {e:#}")))?;
    let view = values
        .to_plain_array_view::<f64>()
        .map_err(|e| invalid(path, format!("{e:#}")))?;
    view.iter()
        .enumerate()
        .map(|(sample, &v)| {
            if v.fract() == 0.0 && v.abs() < i64::MAX as f64 {
                Ok(v as i64)
            } else {
                Err(invalid(
                    path,
                    format!("label {v} of sample {sample} is not a class index"),
                ))
            }
        })
        .collect()
}

/// The class of each one-hot row of `tensor` (`[samples, classes]`), with a note.
fn one_hot(path: &Path, tensor: &Tensor, notes: &mut Vec<String>) -> Result<Vec<i64>> {
    let values = tensor
        .cast_to::<f64>()
        .map_err(|e| invalid(path, format!("labels are not numbers: {e:#}")))?;
    let view = values
        .to_plain_array_view::<f64>()
        .map_err(|e| invalid(path, format!("{e:#}")))?;
    let (count, classes) = (tensor.shape()[0], tensor.shape()[1]);
    let mut labels = Vec::with_capacity(count);
    for (sample, row) in view.outer_iter().enumerate() {
        let set: Vec<(usize, f64)> = row
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, v)| v != 0.0)
            .collect();
        match set[..] {
            [(class, 1.0)] => labels.push(class as i64),
            _ => {
                return Err(invalid(
                    path,
                    format!(
                        "labels of shape [{count}, {classes}] are neither one class per sample nor one-hot rows (sample {sample})"
                    ),
                ))
            }
        }
    }
    notes.push(format!(
        "{}: labels are one-hot rows [{count}, {classes}]; each row's arg-max is its class",
        path.display()
    ));
    Ok(labels)
}

/// An output tensor as `f64` values: all of it, or sample `sample` along axis `axis`.
pub fn output_values(tensor: &Tensor, sample: Option<(usize, usize)>) -> Result<Vec<f64>> {
    let cast = tensor
        .cast_to::<f64>()
        .map_err(|e| Error::Usage(format!("output is not numeric: {e:#}")))?;
    let view = cast
        .to_plain_array_view::<f64>()
        .map_err(|e| Error::Usage(format!("{e:#}")))?;
    Ok(match sample {
        Some((axis, sample)) => view
            .index_axis(ndarray::Axis(axis), sample)
            .iter()
            .copied()
            .collect(),
        None => view.iter().copied().collect(),
    })
}
