//! Mask schedules exported from training: the JSON manifest, and mask files in safetensors or
//! `.npz` (any element type; nonzero means keep).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The manifest's `format` value.
pub const FORMAT: &str = "onnx-prune/mask-schedule";

/// Kernel layout of the training framework.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// PyTorch: `Linear` `[out, in]`, `Conv2d` `[out, in, kh, kw]` (ONNX's own layouts).
    #[default]
    Pytorch,
    /// Keras: `Dense` `[in, out]`, `Conv2D` `[kh, kw, in, out]`.
    Tensorflow,
}

/// One step of a mask schedule.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Step {
    /// Training step (or epoch) number.
    pub step: i64,
    /// Sparsity measured by the training job, if recorded.
    pub sparsity: Option<f64>,
    /// Mask file, relative to the manifest.
    pub file: PathBuf,
}

/// A sparsity schedule to replay by magnitude, with TF-MOT's semantics.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SparsitySchedule {
    /// `s = final + (initial - final) * (1 - p)^power`, `p = clamp((step - begin) / (end - begin), 0, 1)`,
    /// updated every `frequency` steps.
    PolynomialDecay {
        /// Sparsity at `begin_step`.
        initial_sparsity: f64,
        /// Sparsity from `end_step` on.
        final_sparsity: f64,
        /// First pruning step.
        begin_step: i64,
        /// Last step of the decay.
        end_step: i64,
        /// Exponent (TF-MOT's default is 3).
        #[serde(default = "default_power")]
        power: f64,
        /// Steps between updates (TF-MOT's default is 100).
        #[serde(default = "default_frequency")]
        frequency: i64,
    },
    /// `target_sparsity` from `begin_step` on (until `end_step`, if given).
    Constant {
        /// The sparsity.
        target_sparsity: f64,
        /// First pruning step.
        begin_step: i64,
        /// Last pruning step, `-1` or absent for none.
        #[serde(default = "no_end")]
        end_step: i64,
        /// Steps between updates.
        #[serde(default = "default_frequency")]
        frequency: i64,
    },
}

fn default_power() -> f64 {
    3.0
}
fn default_frequency() -> i64 {
    100
}
fn no_end() -> i64 {
    -1
}

impl SparsitySchedule {
    /// The sparsity in force at `step`: the value computed at the last update step at or
    /// before it (TF-MOT updates masks when `(step - begin) % frequency == 0`, and at the end).
    pub fn sparsity_at(&self, step: i64) -> f64 {
        match *self {
            SparsitySchedule::PolynomialDecay {
                initial_sparsity,
                final_sparsity,
                begin_step,
                end_step,
                power,
                frequency,
            } => {
                if step < begin_step {
                    return 0.0;
                }
                let frequency = frequency.max(1);
                let update = if step >= end_step {
                    end_step
                } else {
                    begin_step + (step - begin_step) / frequency * frequency
                };
                let span = (end_step - begin_step).max(1) as f64;
                let p = ((update - begin_step) as f64 / span).clamp(0.0, 1.0);
                final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - p).powf(power)
            }
            SparsitySchedule::Constant {
                target_sparsity,
                begin_step,
                ..
            } => {
                if step < begin_step {
                    0.0
                } else {
                    target_sparsity
                }
            }
        }
    }
}

/// The manifest of a mask schedule.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Manifest {
    /// Must be [`FORMAT`].
    pub format: String,
    /// Must be 1.
    pub version: u32,
    /// Kernel layout of the masks.
    #[serde(default)]
    pub layout: Layout,
    /// Steps with mask files, in increasing step order.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Or a sparsity schedule replayed by magnitude.
    pub sparsity_schedule: Option<SparsitySchedule>,
    /// Directory of the manifest (mask files are relative to it).
    #[serde(skip)]
    pub dir: PathBuf,
    /// The manifest file.
    #[serde(skip)]
    pub path: PathBuf,
}

impl Manifest {
    /// Reads and validates a manifest.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let mut manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| Error::invalid(path, format!("not a mask-schedule manifest: {e}")))?;
        if manifest.format != FORMAT {
            return Err(Error::invalid(
                path,
                format!("format is `{}`, expected `{FORMAT}`", manifest.format),
            ));
        }
        if manifest.version != 1 {
            return Err(Error::invalid(
                path,
                format!(
                    "version {} is not supported (this tool reads version 1)",
                    manifest.version
                ),
            ));
        }
        match (&manifest.steps.is_empty(), &manifest.sparsity_schedule) {
            (true, None) => {
                return Err(Error::invalid(
                    path,
                    "has neither `steps` nor `sparsity_schedule`",
                ))
            }
            (false, Some(_)) => {
                return Err(Error::invalid(
                    path,
                    "has both `steps` and `sparsity_schedule`",
                ))
            }
            _ => {}
        }
        for pair in manifest.steps.windows(2) {
            if pair[1].step <= pair[0].step {
                return Err(Error::invalid(
                    path,
                    format!(
                        "steps are not in increasing order: {} comes after {}",
                        pair[1].step, pair[0].step
                    ),
                ));
            }
        }
        manifest.dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        manifest.path = path.to_path_buf();
        Ok(manifest)
    }

    /// The step numbered `step`, or the last one.
    pub fn step(&self, step: Option<i64>) -> Result<&Step> {
        match step {
            None => self
                .steps
                .last()
                .ok_or_else(|| Error::invalid(&self.path, "has no steps")),
            Some(n) => self.steps.iter().find(|s| s.step == n).ok_or_else(|| {
                let known: Vec<String> = self.steps.iter().map(|s| s.step.to_string()).collect();
                Error::Usage(format!(
                    "--step {n} is not in the schedule (steps: {})",
                    known.join(", ")
                ))
            }),
        }
    }
}

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

fn read_npz(path: &Path) -> Result<Vec<Mask>> {
    use ndarray_npy::NpzReader;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut npz = NpzReader::new(file)
        .map_err(|e| Error::invalid(path, format!("not a readable .npz: {e}")))?;
    let names = npz
        .names()
        .map_err(|e| Error::invalid(path, e.to_string()))?;
    let mut masks = Vec::new();
    for name in names {
        let key = name.trim_end_matches(".npy").to_string();
        macro_rules! attempt {
            ($($t:ty => $conv:expr),*) => {{
                let mut found = None;
                $(if found.is_none() {
                    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<$t>, ndarray::IxDyn>(&name) {
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
        masks.push(Mask { key, shape, keep });
    }
    Ok(masks)
}
