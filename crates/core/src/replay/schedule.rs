//! Mask schedules exported from training: the JSON manifest, and mask files in safetensors or
//! `.npz` (any element type; nonzero means keep).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The manifest's `format` value.
pub const MANIFEST_FORMAT: &str = "onnx-prune/mask-schedule";

/// Kernel layout of the training framework.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelLayout {
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
    /// The steps the schedule updates the masks at, in order.
    pub fn update_steps(&self) -> Vec<i64> {
        match *self {
            SparsitySchedule::PolynomialDecay {
                begin_step,
                end_step,
                frequency,
                ..
            } => {
                let mut steps: Vec<i64> = (begin_step..end_step)
                    .step_by(frequency.max(1) as usize)
                    .collect();
                steps.push(end_step);
                steps
            }
            SparsitySchedule::Constant { begin_step, .. } => vec![begin_step],
        }
    }

    /// Why this schedule cannot be replayed, if it cannot: TF-MOT's own constraints
    /// (sparsities in [0, 1), `begin_step >= 0`, `end_step >= begin_step`, `frequency >= 1`)
    /// and a finite, non-negative `power`.
    fn problem(&self) -> Option<String> {
        let fraction = |name: &str, value: f64| {
            (!(0.0..1.0).contains(&value)).then(|| format!("{name} {value} is not in [0, 1)"))
        };
        let (sparsities, begin, end, frequency, power) = match *self {
            SparsitySchedule::PolynomialDecay {
                initial_sparsity,
                final_sparsity,
                begin_step,
                end_step,
                power,
                frequency,
            } => (
                vec![
                    ("initial_sparsity", initial_sparsity),
                    ("final_sparsity", final_sparsity),
                ],
                begin_step,
                Some(end_step),
                frequency,
                power,
            ),
            SparsitySchedule::Constant {
                target_sparsity,
                begin_step,
                end_step,
                frequency,
            } => (
                vec![("target_sparsity", target_sparsity)],
                begin_step,
                (end_step != -1).then_some(end_step),
                frequency,
                0.0,
            ),
        };
        sparsities
            .into_iter()
            .find_map(|(name, value)| fraction(name, value))
            .or_else(|| (begin < 0).then(|| format!("begin_step {begin} is negative")))
            .or_else(|| {
                end.filter(|&end| end < begin)
                    .map(|end| format!("end_step {end} comes before begin_step {begin}"))
            })
            .or_else(|| (frequency < 1).then(|| format!("frequency {frequency} is not positive")))
            .or_else(|| {
                (!(power.is_finite() && power >= 0.0))
                    .then(|| format!("power {power} is not a finite, non-negative number"))
            })
    }

    /// The sparsity in force at `step` of a schedule that [`Manifest::load`] accepted: the
    /// value computed at the last update step at or before it (TF-MOT updates masks when
    /// `(step - begin) % frequency == 0`, and at the end).
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
                let span = end_step.saturating_sub(begin_step).max(1) as f64;
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
    /// Must be [`MANIFEST_FORMAT`].
    pub format: String,
    /// Must be 1.
    pub version: u32,
    /// Kernel layout of the masks.
    #[serde(default)]
    pub layout: KernelLayout,
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
        if manifest.format != MANIFEST_FORMAT {
            return Err(Error::invalid(
                path,
                format!(
                    "format is `{}`, expected `{MANIFEST_FORMAT}`",
                    manifest.format
                ),
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
        if let Some(problem) = manifest
            .sparsity_schedule
            .as_ref()
            .and_then(SparsitySchedule::problem)
        {
            return Err(Error::invalid(
                path,
                format!("sparsity_schedule: {problem}"),
            ));
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
