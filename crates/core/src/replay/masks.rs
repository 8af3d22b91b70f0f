//! Reading masks as the training side stored them: safetensors or `.npz`, any element type,
//! one meaning keep and zero prune (any other value is an error). Sizes are checked against the file before anything is
//! allocated, so a hostile file is an error, never an unbounded allocation.

use std::io::Read;
use std::path::Path;

use ndarray_npy::npy::header::Header;
use ndarray_npy::ReadNpyExt;
use py_literal::Value as PyValue;

use crate::error::{Error, Result};

/// One mask as the training side stored it.
#[derive(Debug, Clone)]
pub struct Mask {
    /// Key in the mask file.
    pub key: String,
    /// Shape in the training framework's layout.
    pub shape: Vec<usize>,
    /// Keep flags, row-major.
    pub keep: Vec<bool>,
}

fn binary(values: impl Iterator<Item = f64>, key: &str, path: &Path) -> Result<Vec<bool>> {
    values
        .enumerate()
        .map(|(i, v)| {
            if v == 0.0 {
                Ok(false)
            } else if v == 1.0 {
                Ok(true)
            } else {
                Err(Error::invalid(
                    path,
                    format!("mask `{key}` is not binary: element {i} is {v}"),
                ))
            }
        })
        .collect()
}

/// Reads every mask of a safetensors or `.npz` file, in key order.
pub fn read_masks(path: &Path) -> Result<Vec<Mask>> {
    let is_npz = path.extension().is_some_and(|e| e == "npz");
    let mut masks = if is_npz {
        read_npz(path)?
    } else {
        read_safetensors(path)?
    };
    masks.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(masks)
}

fn read_safetensors(path: &Path) -> Result<Vec<Mask>> {
    use safetensors::Dtype;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::invalid(path, format!("not a safetensors file: {e}")))?;
    file.tensors()
        .into_iter()
        .map(|(key, view)| {
            let data = view.data();
            macro_rules! values {
                ($size:expr, $conv:expr) => {
                    data.chunks_exact($size)
                        .map(|c| $conv(c.try_into().unwrap()))
                };
            }
            let keep = match view.dtype() {
                Dtype::BOOL | Dtype::U8 => binary(data.iter().map(|&b| f64::from(b)), &key, path),
                Dtype::I8 => binary(data.iter().map(|&b| f64::from(b as i8)), &key, path),
                Dtype::I16 => binary(values!(2, |c| f64::from(i16::from_le_bytes(c))), &key, path),
                Dtype::U16 => binary(values!(2, |c| f64::from(u16::from_le_bytes(c))), &key, path),
                Dtype::I32 => binary(values!(4, |c| f64::from(i32::from_le_bytes(c))), &key, path),
                Dtype::U32 => binary(values!(4, |c| f64::from(u32::from_le_bytes(c))), &key, path),
                Dtype::I64 => binary(values!(8, |c| i64::from_le_bytes(c) as f64), &key, path),
                Dtype::U64 => binary(values!(8, |c| u64::from_le_bytes(c) as f64), &key, path),
                Dtype::F16 => binary(
                    values!(2, |c| half::f16::from_le_bytes(c).to_f64()),
                    &key,
                    path,
                ),
                Dtype::BF16 => binary(
                    values!(2, |c| half::bf16::from_le_bytes(c).to_f64()),
                    &key,
                    path,
                ),
                Dtype::F32 => binary(values!(4, |c| f64::from(f32::from_le_bytes(c))), &key, path),
                Dtype::F64 => binary(values!(8, f64::from_le_bytes), &key, path),
                other => Err(Error::invalid(
                    path,
                    format!("mask `{key}` has unsupported element type {other:?}"),
                )),
            }?;
            Ok(Mask {
                key,
                shape: view.shape().to_vec(),
                keep,
            })
        })
        .collect()
}

/// Reads every array of an `.npz`.
fn read_npz(path: &Path) -> Result<Vec<Mask>> {
    npz_entries(path)?
        .into_iter()
        .map(|(key, npy)| npy_mask(&npy, key, path))
        .collect()
}

/// Every entry of an `.npz` as (key without `.npy`, the `.npy` bytes). Each entry is read into
/// memory, bounded by the size the archive declares for it, and its `.npy` header is checked
/// against the bytes it holds before ndarray-npy sees it: ndarray-npy allocates whatever a
/// header claims.
pub(crate) fn npz_entries(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let invalid = |msg: String| Error::invalid(path, msg);
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| invalid(format!("not a readable .npz: {e}")))?;
    let mut entries = Vec::new();
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| invalid(format!("not a readable .npz: {e}")))?;
        let key = entry.name().trim_end_matches(".npy").to_string();
        let declared = entry.size();
        let mut npy = Vec::new();
        (&mut entry)
            .take(declared)
            .read_to_end(&mut npy)
            .map_err(|e| invalid(format!("array `{key}` cannot be read: {e}")))?;
        check_npy_sizes(&npy).map_err(|msg| invalid(format!("array `{key}`: {msg}")))?;
        entries.push((key, npy));
    }
    Ok(entries)
}

/// Checks that a `.npy`'s header and the array its header describes fit in the bytes given.
pub(crate) fn check_npy_sizes(npy: &[u8]) -> std::result::Result<(), String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if npy.len() < 10 || !npy.starts_with(MAGIC) {
        return Err("not a .npy array".into());
    }
    let (header_len, header_start) = match npy[6] {
        1 => (usize::from(u16::from_le_bytes([npy[8], npy[9]])), 10),
        2 | 3 if npy.len() >= 12 => (
            u32::from_le_bytes([npy[8], npy[9], npy[10], npy[11]]) as usize,
            12,
        ),
        version => return Err(format!(".npy version {version} is not supported")),
    };
    let data_start = header_start + header_len;
    if data_start > npy.len() {
        return Err(format!(
            "its header claims {header_len} bytes but the array holds {}",
            npy.len()
        ));
    }
    let header =
        Header::from_reader(&mut &npy[..]).map_err(|e| format!("unreadable .npy header: {e}"))?;
    let element_size = match &header.type_descriptor {
        PyValue::String(descr) => descr
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .parse::<usize>()
            .map_err(|_| format!("element type `{descr}` cannot be read"))?,
        other => return Err(format!("element type `{other}` cannot be read")),
    };
    let needed = header
        .shape
        .iter()
        .try_fold(element_size, |n, &d| n.checked_mul(d))
        .ok_or("its shape overflows")?;
    let held = npy.len() - data_start;
    if needed != held {
        return Err(format!(
            "its shape {:?} needs {needed} bytes of data but it holds {held}",
            header.shape
        ));
    }
    Ok(())
}

/// The mask in a `.npy` whose sizes [`check_npy_sizes`] accepted.
fn npy_mask(npy: &[u8], key: String, path: &Path) -> Result<Mask> {
    macro_rules! attempt {
        ($($t:ty => $conv:expr),*) => {{
            let mut found = None;
            $(if found.is_none() {
                if let Ok(a) = ndarray::ArrayD::<$t>::read_npy(npy) {
                    let shape = a.shape().to_vec();
                    found = Some((shape, binary(a.iter().map($conv), &key, path)?));
                }
            })*
            found
        }};
    }
    let (shape, keep) = attempt!(
        bool => |&b: &bool| f64::from(u8::from(b)),
        u8 => |&v: &u8| f64::from(v),
        i8 => |&v: &i8| f64::from(v),
        i32 => |&v: &i32| f64::from(v),
        i64 => |&v: &i64| v as f64,
        f32 => |&v: &f32| f64::from(v),
        f64 => |&v: &f64| v
    )
    .ok_or_else(|| {
        Error::invalid(
            path,
            format!("array `{key}` has an element type that cannot be read"),
        )
    })?;
    Ok(Mask { key, shape, keep })
}
