//! What a check compares and how: where samples come from, and the tolerances a candidate must
//! stay within.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Error, Result};

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
    /// The flag that gave `inputs`, for messages: `--inputs` when `None` (`--calibration` for
    /// calibration data).
    pub inputs_flag: Option<&'static str>,
    /// Random samples instead: (count, seed).
    pub random: Option<(usize, u64)>,
    /// Full shapes of inputs drawn at random, by name (their free dimensions).
    pub shapes: BTreeMap<String, Vec<usize>>,
    /// `FILE.npy` or `FILE.npz:KEY` with class labels.
    pub labels: Option<String>,
    /// Samples per run where the model's batch dimension is free; `None` picks the fastest per
    /// sample of [`crate::BATCH_CANDIDATES`], timed on the first samples.
    pub batch_size: Option<usize>,
    /// Inputs made constants before tract analyses the models (`--fix NAME=VALUE`): (name,
    /// comma-separated values), parsed as the input's element type.
    pub fixes: Vec<(String, String)>,
    /// Limits.
    pub tolerances: Tolerances,
}
