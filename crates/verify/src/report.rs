//! What a check found: per output the metrics of the candidate against the reference, accuracy
//! against labels, and the tolerances that failed.

use crate::options::Tolerances;

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
