//! Running a reference and a candidate model on the same samples and measuring how far apart
//! their outputs are, against named tolerances.

use std::collections::BTreeMap;
use std::path::PathBuf;

use onnx_prune_core::Model;

pub use crate::batch::BATCH_CANDIDATES;
use crate::error::{Error, Result};
use crate::fold::{parse_fix, Fixed};
use crate::inputs::read_labels;
use crate::reference::{Keep, Reference};
use crate::runner::{input_specs, InputSpec};
use crate::samples::Samples;

/// Where input samples come from.
#[derive(Debug, Clone)]
pub enum InputSource {
    /// A `.npz` whose keys are input names.
    Npz(PathBuf),
    /// An ONNX test-data directory (`test_data_set_*/input_*.pb`).
    TestData(PathBuf),
    /// One input from a `.npy` file.
    Npy {
        /// Input name.
        name: String,
        /// The file.
        path: PathBuf,
    },
}

/// Limits a candidate must stay within. Element-wise limits follow `numpy.isclose`, as
/// Polygraphy does: an element passes when `|candidate - reference| <= atol + rtol * |reference|`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tolerances {
    /// Absolute element-wise tolerance (unchecked when neither it nor `rtol` is set).
    pub atol: Option<f64>,
    /// Relative element-wise tolerance.
    pub rtol: Option<f64>,
    /// Minimum cosine similarity of every output (default 0.99).
    pub min_cosine: f64,
    /// Minimum top-1 agreement of class-score outputs, if set.
    pub min_agreement: Option<f64>,
    /// Maximum drop of accuracy against labels (default 0.01).
    pub max_accuracy_drop: f64,
}

impl Tolerances {
    /// Checks that every tolerance is in its range: cosine and agreement in [-1, 1] and
    /// [0, 1], the others non-negative and finite.
    pub fn validate(&self) -> Result<()> {
        let checks = [
            ("--atol", self.atol, 0.0, f64::MAX),
            ("--rtol", self.rtol, 0.0, f64::MAX),
            ("--min-cosine", Some(self.min_cosine), -1.0, 1.0),
            ("--min-agreement", self.min_agreement, 0.0, 1.0),
            (
                "--max-accuracy-drop",
                Some(self.max_accuracy_drop),
                0.0,
                1.0,
            ),
        ];
        for (flag, value, low, high) in checks {
            if let Some(v) = value {
                if !(low..=high).contains(&v) {
                    let range = if high == f64::MAX {
                        format!("a finite number >= {low}")
                    } else {
                        format!("in [{low}, {high}]")
                    };
                    return Err(Error::Usage(format!("{flag} {v}: must be {range}")));
                }
            }
        }
        Ok(())
    }
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            atol: None,
            rtol: None,
            min_cosine: 0.99,
            min_agreement: None,
            max_accuracy_drop: 0.01,
        }
    }
}

/// What to check and how.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Input files; they may be combined (e.g. one `.npy` per input).
    pub inputs: Vec<InputSource>,
    /// Random samples instead: (count, seed).
    pub random: Option<(usize, u64)>,
    /// Full shapes of inputs drawn at random, by name (their free dimensions).
    pub shapes: BTreeMap<String, Vec<usize>>,
    /// `FILE.npy` or `FILE.npz:KEY` with class labels.
    pub labels: Option<String>,
    /// Samples per run where the model's batch dimension is free; `None` picks the fastest per
    /// sample of [`BATCH_CANDIDATES`], timed on the first samples.
    pub batch_size: Option<usize>,
    /// Inputs made constants before tract analyses the models (`--fix NAME=VALUE`): (name,
    /// comma-separated values), parsed as the input's element type.
    pub fixes: Vec<(String, String)>,
    /// Limits.
    pub tolerances: Tolerances,
}

/// How one output of the candidate differs from the reference's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutputMetrics {
    /// Output name.
    pub name: String,
    /// Largest absolute difference.
    pub max_abs: f64,
    /// Mean absolute difference.
    pub mean_abs: f64,
    /// Root mean square difference.
    pub rmse: f64,
    /// Cosine similarity of the flattened outputs.
    pub cosine: f64,
    /// Signal-to-noise ratio in dB: reference energy over difference energy.
    pub snr_db: f64,
    /// Fraction of samples whose arg-max agrees, for class-score outputs (`[batch, classes]`).
    pub top1_agreement: Option<f64>,
    /// The sample with the largest absolute difference.
    pub worst_sample: usize,
    /// Elements outside `atol + rtol * |reference|`, when element-wise tolerances are set.
    pub elements_out_of_tolerance: Option<u64>,
}

/// Accuracy of both models against labels.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Accuracy {
    /// Reference model's top-1 accuracy.
    pub reference: f64,
    /// Candidate model's top-1 accuracy.
    pub candidate: f64,
}

/// The result of a check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    /// Whether every tolerance held.
    pub passed: bool,
    /// Number of samples compared.
    pub samples: usize,
    /// One entry per output.
    pub outputs: Vec<OutputMetrics>,
    /// With labels: accuracy of both models.
    pub accuracy: Option<Accuracy>,
    /// The tolerances applied.
    pub tolerances: Tolerances,
    /// Each failed tolerance, naming the output and the worst sample.
    pub failures: Vec<String>,
    /// Samples per run.
    pub batch_size: usize,
    /// What was done to the data to fit the models (casts, one-hot labels, ...).
    pub notes: Vec<String>,
}

/// The inputs `--fix` makes constants, parsed against the inputs the model declares.
fn fixed_inputs(specs: &[InputSpec], fixes: &[(String, String)]) -> Result<Fixed> {
    let mut fixed = Fixed::new();
    for (name, value) in fixes {
        let spec = specs.iter().find(|s| &s.name == name).ok_or_else(|| {
            Error::Usage(format!(
                "--fix {name}={value}: the model has no input `{name}` (its inputs: {})",
                specs
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if fixed
            .insert(name.clone(), parse_fix(spec, value)?)
            .is_some()
        {
            return Err(Error::Usage(format!("--fix {name}: given twice")));
        }
    }
    Ok(fixed)
}

/// What a check reads before it runs anything.
pub(crate) struct Prepared {
    pub fixed: Fixed,
    /// The inputs that are not fixed.
    pub specs: Vec<InputSpec>,
    pub samples: Samples,
    pub labels: Option<Vec<i64>>,
    pub notes: Vec<String>,
}

pub(crate) fn prepare(reference: &Model, options: &CheckOptions) -> Result<Prepared> {
    if options.batch_size == Some(0) {
        return Err(Error::Usage("--batch-size must be at least 1".into()));
    }
    let all_specs = input_specs(reference)?;
    let fixed = fixed_inputs(&all_specs, &options.fixes)?;
    let specs: Vec<InputSpec> = all_specs
        .iter()
        .filter(|s| !fixed.contains_key(&s.name))
        .cloned()
        .collect();
    let all_names: Vec<String> = all_specs.iter().map(|s| s.name.clone()).collect();
    let mut notes = Vec::new();
    let samples = Samples::load(options, &all_names, &specs, &mut notes)?;
    if samples.count == 0 {
        return Err(Error::Usage("the inputs hold no sample".into()));
    }
    let labels = options
        .labels
        .as_deref()
        .map(|spec| read_labels(spec, Some(samples.count), &mut notes))
        .transpose()?;
    if let Some(labels) = &labels {
        if labels.len() != samples.count {
            return Err(Error::Usage(format!(
                "--labels: {} labels for {} samples",
                labels.len(),
                samples.count
            )));
        }
    }
    Ok(Prepared {
        fixed,
        specs,
        samples,
        labels,
        notes,
    })
}

/// Class labels from `FILE.npy` or `FILE.npz:KEY`, one class index per sample (one-hot rows
/// are read as their arg-max).
pub fn labels(spec: &str) -> Result<Vec<i64>> {
    read_labels(spec, None, &mut Vec::new())
}

/// Reads and checks everything a check of a candidate against `reference` with `options`
/// needs (flags, input files, labels) without running a model: for commands that write a
/// file before they check it, so that bad input is refused before the first byte is written.
pub fn validate(reference: &Model, options: &CheckOptions) -> Result<()> {
    prepare(reference, options).map(|_| ())
}

/// Runs `reference` and `candidate` on the samples the options describe and compares every
/// output. Each model comes with the ONNX bytes tract is to run (its own, or a densified copy).
/// To compare several candidates with one reference, load a [`Reference`] once instead.
pub fn check(
    reference: (&Model, &[u8]),
    candidate: (&Model, &[u8]),
    options: &CheckOptions,
) -> Result<CheckReport> {
    Reference::load(reference, options, Keep::Nothing)?.compare(candidate)
}
