//! Input samples for a check: `.npz` files, single `.npy` files, ONNX test-data directories, or
//! seeded random tensors; and labels for accuracy.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use ndarray::Axis;
use ndarray_npy::{NpzReader, ReadNpyExt};
use rand::{Rng, SeedableRng};
use tract_onnx::prelude::*;

use crate::error::{Error, Result};

fn invalid(path: &Path, msg: impl Into<String>) -> Error {
    Error::Input {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Reads one array of a `.npz` as a tract tensor, whatever its element type.
fn npz_array(reader: &mut NpzReader<File>, key: &str, path: &Path) -> Result<Tensor> {
    macro_rules! attempt {
        ($($t:ty),*) => {
            $(if let Ok(array) = reader.by_name::<ndarray::OwnedRepr<$t>, ndarray::IxDyn>(key) {
                return Ok(Tensor::from(array));
            })*
        };
    }
    attempt!(f32, f64, i64, i32, u8, i8, bool);
    Err(invalid(
        path,
        format!("array `{key}` has an element type that cannot be read"),
    ))
}

fn open_npz(path: &Path) -> Result<NpzReader<File>> {
    let file = File::open(path).map_err(|e| invalid(path, e.to_string()))?;
    NpzReader::new(file).map_err(|e| invalid(path, format!("not a readable .npz: {e}")))
}

/// Every array of a `.npz`, by key (a trailing `.npy` in the key is dropped).
pub fn read_npz(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let mut reader = open_npz(path)?;
    let names = reader.names().map_err(|e| invalid(path, e.to_string()))?;
    names
        .into_iter()
        .map(|name| {
            let tensor = npz_array(&mut reader, &name, path)?;
            Ok((name.trim_end_matches(".npy").to_string(), tensor))
        })
        .collect()
}

/// One `.npy` file as an input.
pub fn read_npy(name: &str, path: &Path) -> Result<Tensor> {
    macro_rules! attempt {
        ($($t:ty),*) => {
            $(if let Ok(array) = File::open(path)
                .map_err(|e| invalid(path, e.to_string()))
                .and_then(|f| ndarray::ArrayD::<$t>::read_npy(f).map_err(|e| invalid(path, e.to_string())))
            {
                return Ok(Tensor::from(array));
            })*
        };
    }
    attempt!(f32, f64, i64, i32, u8, i8, bool);
    Err(invalid(
        path,
        format!("input `{name}`: not a readable .npy"),
    ))
}

/// An ONNX test-data directory (`test_data_set_*/input_*.pb`, inputs in the model's order):
/// one set of whole model inputs per data set.
pub fn read_test_data(dir: &Path, input_names: &[String]) -> Result<Vec<BTreeMap<String, Tensor>>> {
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
    let load = |path: &Path| -> Result<Tensor> {
        let bytes = std::fs::read(path).map_err(|e| invalid(path, e.to_string()))?;
        let proto = <tract_onnx::pb::TensorProto as prost::Message>::decode(&bytes[..])
            .map_err(|e| invalid(path, format!("not a TensorProto: {e}")))?;
        tract_onnx::tensor::load_tensor(&*resolver, &proto, None)
            .map_err(|e| invalid(path, format!("{e:#}")))
    };
    sets.iter()
        .map(|set| {
            input_names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let path = set.join(format!("input_{i}.pb"));
                    if !path.exists() {
                        return Err(invalid(
                            set,
                            format!("has no input_{i}.pb for input `{name}`"),
                        ));
                    }
                    Ok((name.clone(), load(&path)?))
                })
                .collect()
        })
        .collect()
}

/// `count` random samples for an input of element type `dt` and per-sample shape `shape`:
/// floats uniform in [0, 1), integers in [0, 10), booleans fair; fixed by `seed`.
pub fn random(
    dt: DatumType,
    shape: &[usize],
    count: usize,
    seed: u64,
    input: usize,
) -> Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(input as u64));
    let mut full = vec![count];
    full.extend_from_slice(shape);
    let n: usize = full.iter().product();
    let tensor = match dt {
        DatumType::F32 => Tensor::from_shape(
            &full,
            &(0..n).map(|_| rng.random::<f32>()).collect::<Vec<_>>(),
        ),
        DatumType::F64 => Tensor::from_shape(
            &full,
            &(0..n).map(|_| rng.random::<f64>()).collect::<Vec<_>>(),
        ),
        DatumType::I64 => Tensor::from_shape(
            &full,
            &(0..n)
                .map(|_| rng.random_range(0..10i64))
                .collect::<Vec<_>>(),
        ),
        DatumType::I32 => Tensor::from_shape(
            &full,
            &(0..n)
                .map(|_| rng.random_range(0..10i32))
                .collect::<Vec<_>>(),
        ),
        DatumType::Bool => Tensor::from_shape(
            &full,
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

/// Class labels from `FILE.npy` or `FILE.npz:KEY`, as integers.
pub fn read_labels(spec: &str) -> Result<Vec<i64>> {
    let (path, tensor) = match spec.rsplit_once(':') {
        Some((file, key)) if file.ends_with(".npz") => {
            let path = Path::new(file);
            let mut reader = open_npz(path)?;
            let key = if reader
                .names()
                .map_err(|e| invalid(path, e.to_string()))?
                .iter()
                .any(|n| n == key)
            {
                key.to_string()
            } else {
                format!("{key}.npy")
            };
            (
                path,
                npz_array(&mut reader, &key, path)
                    .map_err(|_| invalid(path, format!("has no array `{key}`")))?,
            )
        }
        _ => (Path::new(spec), read_npy("labels", Path::new(spec))?),
    };
    let tensor = tensor
        .cast_to::<i64>()
        .map_err(|e| invalid(path, format!("labels are not integers: {e:#}")))?
        .into_owned();
    let view = tensor
        .to_plain_array_view::<i64>()
        .map_err(|e| invalid(path, format!("{e:#}")))?;
    Ok(view.iter().copied().collect())
}

/// Samples `start..end` of every input.
pub fn slice(
    samples: &BTreeMap<String, Tensor>,
    start: usize,
    end: usize,
) -> Result<BTreeMap<String, Tensor>> {
    samples
        .iter()
        .map(|(name, t)| {
            let sliced = t
                .slice(0, start, end)
                .map_err(|e| Error::Usage(format!("input `{name}`: {e:#}")))?;
            Ok((name.clone(), sliced))
        })
        .collect()
}

/// An output tensor as `f64` values: all of it, or one sample of its first axis.
pub fn output_values(tensor: &Tensor, sample: Option<usize>) -> Result<Vec<f64>> {
    let cast = tensor
        .cast_to::<f64>()
        .map_err(|e| Error::Usage(format!("output is not numeric: {e:#}")))?;
    let view = cast
        .to_plain_array_view::<f64>()
        .map_err(|e| Error::Usage(format!("{e:#}")))?;
    Ok(match sample {
        Some(sample) if view.ndim() > 0 && sample < view.shape()[0] => {
            view.index_axis(Axis(0), sample).iter().copied().collect()
        }
        _ => view.iter().copied().collect(),
    })
}
