//! Comparing outputs sample by sample, and the metrics and failures of a whole check.
//!
//! Each sample is measured on its own and the samples are summed in sample order, so the
//! metrics do not depend on how samples were grouped into batches or threads.

use crate::options::Tolerances;
use crate::report::OutputMetrics;

/// Element-wise limits `(atol, rtol)`, when set.
pub type Limits = Option<(f64, f64)>;

/// How one output of one sample differs between the models.
#[derive(Debug, Clone, Default)]
pub struct SampleStats {
    count: u64,
    sum_abs: f64,
    sum_sq: f64,
    ref_sq: f64,
    cand_sq: f64,
    dot: f64,
    max_abs: f64,
    out_of_tolerance: u64,
    /// Arg-max of both models, for class-score outputs.
    pub classes: Option<(usize, usize)>,
}

fn argmax(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

impl SampleStats {
    /// Compares `expected` and `actual`, the values of one output for one sample; `classes`
    /// when they are class scores.
    pub fn compare(expected: &[f64], actual: &[f64], classes: bool, limits: Limits) -> Self {
        let mut stats = SampleStats {
            count: expected.len() as u64,
            ..SampleStats::default()
        };
        for (&x, &y) in expected.iter().zip(actual) {
            let d = (y - x).abs();
            stats.max_abs = stats.max_abs.max(d);
            stats.sum_abs += d;
            stats.sum_sq += d * d;
            stats.ref_sq += x * x;
            stats.cand_sq += y * y;
            stats.dot += x * y;
            if let Some((atol, rtol)) = limits {
                stats.out_of_tolerance += u64::from(d > atol + rtol * x.abs());
            }
        }
        if classes && expected.len() > 1 {
            stats.classes = Some((argmax(expected), argmax(actual)));
        }
        stats
    }
}

/// The sums of one output over the samples seen so far.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    stats: SampleStats,
    worst_sample: usize,
    agree: u64,
    classified: u64,
}

impl Totals {
    /// Adds sample `sample`; samples must come in order for the sums to be reproducible.
    pub fn add(&mut self, sample: usize, s: &SampleStats) {
        let t = &mut self.stats;
        if s.max_abs > t.max_abs {
            t.max_abs = s.max_abs;
            self.worst_sample = sample;
        }
        t.count += s.count;
        t.sum_abs += s.sum_abs;
        t.sum_sq += s.sum_sq;
        t.ref_sq += s.ref_sq;
        t.cand_sq += s.cand_sq;
        t.dot += s.dot;
        t.out_of_tolerance += s.out_of_tolerance;
        if let Some((r, c)) = s.classes {
            self.classified += 1;
            self.agree += u64::from(r == c);
        }
    }

    /// The metrics of output `name`, and the tolerances it fails.
    pub fn finish(
        &self,
        name: &str,
        tolerances: &Tolerances,
        limits: Limits,
        failures: &mut Vec<String>,
    ) -> OutputMetrics {
        let acc = &self.stats;
        let n = acc.count.max(1) as f64;
        let cosine = if acc.ref_sq == 0.0 && acc.cand_sq == 0.0 {
            1.0
        } else {
            acc.dot / (acc.ref_sq.sqrt() * acc.cand_sq.sqrt()).max(f64::MIN_POSITIVE)
        };
        let metrics = OutputMetrics {
            name: name.to_string(),
            max_abs: acc.max_abs,
            mean_abs: acc.sum_abs / n,
            rmse: (acc.sum_sq / n).sqrt(),
            cosine,
            snr_db: if acc.sum_sq == 0.0 {
                f64::INFINITY
            } else {
                10.0 * (acc.ref_sq / acc.sum_sq).log10()
            },
            top1_agreement: (self.classified > 0)
                .then(|| self.agree as f64 / self.classified as f64),
            worst_sample: self.worst_sample,
            elements_out_of_tolerance: limits.map(|_| acc.out_of_tolerance),
        };
        let worst = format!("worst sample {}", metrics.worst_sample);
        if metrics.cosine < tolerances.min_cosine {
            failures.push(format!(
                "output `{name}`: cosine {:.6} < --min-cosine {} ({worst}, max abs diff {:.6})",
                metrics.cosine, tolerances.min_cosine, metrics.max_abs
            ));
        }
        if let (Some(bad), Some((atol, rtol))) = (metrics.elements_out_of_tolerance, limits) {
            if bad > 0 {
                failures.push(format!(
                    "output `{name}`: {bad} elements outside --atol {atol} --rtol {rtol} ({worst}, max abs diff {:.6})",
                    metrics.max_abs
                ));
            }
        }
        if let (Some(agreement), Some(min)) = (metrics.top1_agreement, tolerances.min_agreement) {
            if agreement < min {
                failures.push(format!(
                    "output `{name}`: top-1 agreement {agreement:.4} < --min-agreement {min} ({worst})"
                ));
            }
        }
        metrics
    }
}
