//! What a sensitivity curve or a search measures, from the check of a candidate.

use onnx_prune_verify::{CheckReport, Tolerances};

/// A cost read off a check report: 0 when the candidate is as good as the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Metric {
    /// Reference accuracy minus candidate accuracy (with labels).
    #[serde(rename = "accuracy_drop")]
    Accuracy,
    /// One minus the lowest top-1 agreement over class-score outputs.
    #[serde(rename = "agreement_drop")]
    Agreement,
    /// One minus the lowest cosine similarity over outputs.
    #[serde(rename = "cosine_drop")]
    Cosine,
}

impl Metric {
    /// The metric a check report supports best: accuracy with labels, else agreement for
    /// class scores, else cosine.
    pub fn of(report: &CheckReport) -> Metric {
        if report.accuracy.is_some() {
            Metric::Accuracy
        } else if report.outputs.iter().any(|o| o.top1_agreement.is_some()) {
            Metric::Agreement
        } else {
            Metric::Cosine
        }
    }

    /// The metric that `tolerances` bound, for a search to measure what it must hold: accuracy
    /// when an accuracy drop is bounded, else agreement when it is, else cosine.
    pub fn bounded_by(tolerances: &Tolerances) -> Metric {
        if tolerances.max_accuracy_drop.is_finite() {
            Metric::Accuracy
        } else if tolerances.min_agreement.is_some() {
            Metric::Agreement
        } else {
            Metric::Cosine
        }
    }

    /// Its value on `report`.
    pub fn value(self, report: &CheckReport) -> f64 {
        match self {
            Metric::Accuracy => report
                .accuracy
                .as_ref()
                .map_or(0.0, |a| a.reference - a.candidate),
            Metric::Agreement => {
                1.0 - report
                    .outputs
                    .iter()
                    .filter_map(|o| o.top1_agreement)
                    .fold(1.0, f64::min)
            }
            Metric::Cosine => 1.0 - report.outputs.iter().map(|o| o.cosine).fold(1.0, f64::min),
        }
    }

    /// How the metric reads in tables and on a plot's axis.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy drop",
            Metric::Agreement => "top-1 agreement drop",
            Metric::Cosine => "1 - cosine",
        }
    }
}
