//! Running a reference and a candidate model on the same samples and measuring how far apart
//! their outputs are, against named tolerances.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::inputs::{
    random, read_labels, read_npy, read_npz, read_test_data, sample_values, slice, Samples,
};
use crate::runner::{input_specs, Runner};

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
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Input files; they may be combined (e.g. one `.npy` per input).
    pub inputs: Vec<InputSource>,
    /// Random samples instead: (count, seed).
    pub random: Option<(usize, u64)>,
    /// Full shapes (batch first) for inputs whose declared shape is dynamic, by name.
    pub shapes: BTreeMap<String, Vec<usize>>,
    /// `FILE.npy` or `FILE.npz:KEY` with class labels.
    pub labels: Option<String>,
    /// Samples per run where the model's batch dimension is free.
    pub batch_size: usize,
    /// Limits.
    pub tolerances: Tolerances,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            inputs: Vec::new(),
            random: None,
            shapes: BTreeMap::new(),
            labels: None,
            batch_size: 32,
            tolerances: Tolerances::default(),
        }
    }
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
}

#[derive(Debug, Clone, Default)]
struct Accumulator {
    count: u64,
    sum_abs: f64,
    sum_sq: f64,
    ref_sq: f64,
    cand_sq: f64,
    dot: f64,
    max_abs: f64,
    worst_sample: usize,
    agree: u64,
    classified: u64,
    out_of_tolerance: u64,
}

impl Accumulator {
    fn merge(mut self, other: Accumulator) -> Accumulator {
        if other.max_abs > self.max_abs {
            self.max_abs = other.max_abs;
            self.worst_sample = other.worst_sample;
        }
        self.count += other.count;
        self.sum_abs += other.sum_abs;
        self.sum_sq += other.sum_sq;
        self.ref_sq += other.ref_sq;
        self.cand_sq += other.cand_sq;
        self.dot += other.dot;
        self.agree += other.agree;
        self.classified += other.classified;
        self.out_of_tolerance += other.out_of_tolerance;
        self
    }
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

/// The samples the options ask for, for a model with the given inputs.
fn load_samples(options: &CheckOptions, reference: &Path, bytes: &[u8]) -> Result<Samples> {
    let specs = input_specs(bytes, reference)?;
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let mut samples = Samples::default();
    for source in &options.inputs {
        let more = match source {
            InputSource::Npz(path) => read_npz(path)?,
            InputSource::TestData(dir) => read_test_data(dir, &names)?,
            InputSource::Npy { name, path } => {
                let mut s = Samples::default();
                s.tensors.insert(name.clone(), read_npy(name, path)?);
                s
            }
        };
        samples.tensors.extend(more.tensors);
    }
    if let Some((count, seed)) = options.random {
        for (i, spec) in specs.iter().enumerate() {
            if samples.tensors.contains_key(&spec.name) {
                continue;
            }
            let dims: Vec<usize> = match options.shapes.get(&spec.name) {
                Some(shape) => shape.clone(),
                None => spec
                    .dims
                    .iter()
                    .enumerate()
                    .map(|(axis, d)| match (axis, d) {
                        (0, None) => Ok(1),
                        (_, Some(d)) => Ok(*d),
                        (_, None) => Err(Error::Usage(format!(
                            "input `{}` has a dynamic dimension {axis}: give its shape with --shape {}=D,D,...",
                            spec.name, spec.name
                        ))),
                    })
                    .collect::<Result<_>>()?,
            };
            let per_sample = if dims.is_empty() { &[][..] } else { &dims[1..] };
            samples.tensors.insert(
                spec.name.clone(),
                random(spec.datum, per_sample, count, seed, i)?,
            );
        }
    }
    for spec in &specs {
        let Some(tensor) = samples.tensors.get(&spec.name) else {
            return Err(Error::Usage(format!(
                "no data for input `{}` (give --inputs or --random)",
                spec.name
            )));
        };
        if tensor.datum_type() != spec.datum {
            return Err(Error::Usage(format!(
                "input `{}` is {:?} in the data but the model wants {:?}",
                spec.name,
                tensor.datum_type(),
                spec.datum
            )));
        }
        if !spec.dims.is_empty() && tensor.rank() != spec.dims.len() {
            return Err(Error::Usage(format!(
                "input `{}` has rank {} in the data (sample axis first) but the model wants rank {}",
                spec.name,
                tensor.rank(),
                spec.dims.len()
            )));
        }
    }
    samples.tensors.retain(|name, _| names.contains(name));
    let counts: Vec<usize> = samples
        .tensors
        .values()
        .map(|t| t.shape().first().copied().unwrap_or(1))
        .collect();
    if counts.windows(2).any(|w| w[0] != w[1]) {
        return Err(Error::Usage(format!(
            "inputs hold different numbers of samples: {counts:?}"
        )));
    }
    Ok(samples)
}

/// Runs `reference` and `candidate` (ONNX bytes of the files at those paths) on the samples the
/// options describe and compares every output.
pub fn check(
    reference: (&Path, &[u8]),
    candidate: (&Path, &[u8]),
    options: &CheckOptions,
) -> Result<CheckReport> {
    let samples = load_samples(options, reference.0, reference.1)?;
    let count = samples.count();
    if count == 0 {
        return Err(Error::Usage("the inputs hold no sample".into()));
    }
    let specs = input_specs(reference.1, reference.0)?;
    // One batch size for all inputs: free batch dimensions take --batch-size, fixed ones their size.
    let batch = specs
        .iter()
        .find_map(|s| s.dims.first().copied().flatten())
        .unwrap_or(options.batch_size.max(1))
        .min(count)
        .max(1);
    let shapes: BTreeMap<String, (DatumType, Vec<usize>)> = samples
        .tensors
        .iter()
        .map(|(name, t)| {
            let mut shape = t.shape().to_vec();
            if let Some(first) = shape.first_mut() {
                *first = batch;
            }
            (name.clone(), (t.datum_type(), shape))
        })
        .collect();
    let reference_runner = Runner::new(reference.1, reference.0, &shapes)?;
    let candidate_runner = Runner::new(candidate.1, candidate.0, &shapes)?;
    let labels = options.labels.as_deref().map(read_labels).transpose()?;
    if let Some(labels) = &labels {
        if labels.len() != count {
            return Err(Error::Usage(format!(
                "{} labels for {count} samples",
                labels.len()
            )));
        }
    }
    let tolerances = &options.tolerances;
    let element_limits = (tolerances.atol.is_some() || tolerances.rtol.is_some()).then(|| {
        (
            tolerances.atol.unwrap_or(0.0),
            tolerances.rtol.unwrap_or(0.0),
        )
    });
    let starts: Vec<usize> = (0..count).step_by(batch).collect();
    type BatchResult = (Vec<Accumulator>, u64, u64);
    let results: Vec<BatchResult> = starts
        .par_iter()
        .map(|&start| -> Result<BatchResult> {
            let end = (start + batch).min(count);
            let mut inputs = slice(&samples.tensors, start, end)?;
            if end - start < batch {
                // Pad a short last batch by repeating its last sample; padded rows are dropped.
                for tensor in inputs.values_mut() {
                    let last = tensor
                        .slice(0, end - start - 1, end - start)
                        .map_err(|e| Error::Usage(format!("{e:#}")))?;
                    let mut parts = vec![tensor.clone()];
                    parts.extend(std::iter::repeat_n(last, batch - (end - start)));
                    *tensor = Tensor::stack_tensors(0, &parts)
                        .map_err(|e| Error::Usage(format!("{e:#}")))?;
                }
            }
            let expected = reference_runner.run(reference.0, &inputs)?;
            let actual = candidate_runner.run(candidate.0, &inputs)?;
            let mut accs = vec![Accumulator::default(); expected.len()];
            let (mut ref_correct, mut cand_correct) = (0, 0);
            for s in 0..end - start {
                for (o, (e, a)) in expected.iter().zip(&actual).enumerate() {
                    let (ev, av) = (sample_values(e, s)?, sample_values(a, s)?);
                    let acc = &mut accs[o];
                    let mut sample_max = 0.0f64;
                    for (&x, &y) in ev.iter().zip(&av) {
                        let d = (y - x).abs();
                        sample_max = sample_max.max(d);
                        acc.sum_abs += d;
                        acc.sum_sq += d * d;
                        acc.ref_sq += x * x;
                        acc.cand_sq += y * y;
                        acc.dot += x * y;
                        if let Some((atol, rtol)) = element_limits {
                            acc.out_of_tolerance += u64::from(d > atol + rtol * x.abs());
                        }
                    }
                    acc.count += ev.len() as u64;
                    if sample_max > acc.max_abs {
                        acc.max_abs = sample_max;
                        acc.worst_sample = start + s;
                    }
                    if e.rank() == 2 && ev.len() > 1 {
                        acc.classified += 1;
                        let (re, ca) = (argmax(&ev), argmax(&av));
                        acc.agree += u64::from(re == ca);
                        if o == 0 {
                            if let Some(labels) = &labels {
                                ref_correct += u64::from(re as i64 == labels[start + s]);
                                cand_correct += u64::from(ca as i64 == labels[start + s]);
                            }
                        }
                    }
                }
            }
            Ok((accs, ref_correct, cand_correct))
        })
        .collect::<Result<_>>()?;
    let outputs_count = reference_runner.outputs.len();
    let mut totals = vec![Accumulator::default(); outputs_count];
    let (mut ref_correct, mut cand_correct) = (0u64, 0u64);
    for (accs, r, c) in results {
        totals = totals
            .into_iter()
            .zip(accs)
            .map(|(a, b)| a.merge(b))
            .collect();
        ref_correct += r;
        cand_correct += c;
    }
    let mut failures = Vec::new();
    let outputs: Vec<OutputMetrics> = reference_runner
        .outputs
        .iter()
        .zip(totals)
        .map(|(name, acc)| {
            let n = acc.count.max(1) as f64;
            let cosine = if acc.ref_sq == 0.0 && acc.cand_sq == 0.0 {
                1.0
            } else {
                acc.dot / (acc.ref_sq.sqrt() * acc.cand_sq.sqrt()).max(f64::MIN_POSITIVE)
            };
            let metrics = OutputMetrics {
                name: name.clone(),
                max_abs: acc.max_abs,
                mean_abs: acc.sum_abs / n,
                rmse: (acc.sum_sq / n).sqrt(),
                cosine,
                snr_db: if acc.sum_sq == 0.0 { f64::INFINITY } else { 10.0 * (acc.ref_sq / acc.sum_sq).log10() },
                top1_agreement: (acc.classified > 0).then(|| acc.agree as f64 / acc.classified as f64),
                worst_sample: acc.worst_sample,
                elements_out_of_tolerance: element_limits.map(|_| acc.out_of_tolerance),
            };
            let worst = format!("worst sample {}", metrics.worst_sample);
            if metrics.cosine < tolerances.min_cosine {
                failures.push(format!(
                    "output `{name}`: cosine {:.6} < --min-cosine {} ({worst}, max abs diff {:.6})",
                    metrics.cosine, tolerances.min_cosine, metrics.max_abs
                ));
            }
            if let (Some(bad), Some((atol, rtol))) = (metrics.elements_out_of_tolerance, element_limits) {
                if bad > 0 {
                    failures.push(format!(
                        "output `{name}`: {bad} elements outside --atol {atol} --rtol {rtol} ({worst}, max abs diff {:.6})",
                        metrics.max_abs
                    ));
                }
            }
            if let (Some(agreement), Some(min)) = (metrics.top1_agreement, tolerances.min_agreement) {
                if agreement < min {
                    failures.push(format!("output `{name}`: top-1 agreement {agreement:.4} < --min-agreement {min} ({worst})"));
                }
            }
            metrics
        })
        .collect();
    let accuracy = labels.map(|_| Accuracy {
        reference: ref_correct as f64 / count as f64,
        candidate: cand_correct as f64 / count as f64,
    });
    if let Some(acc) = &accuracy {
        if acc.reference - acc.candidate > tolerances.max_accuracy_drop {
            failures.push(format!(
                "accuracy dropped from {:.4} to {:.4}, more than --max-accuracy-drop {}",
                acc.reference, acc.candidate, tolerances.max_accuracy_drop
            ));
        }
    }
    Ok(CheckReport {
        passed: failures.is_empty(),
        samples: count,
        outputs,
        accuracy,
        tolerances: tolerances.clone(),
        failures,
    })
}
