//! Running a reference and a candidate model on the same samples and measuring how far apart
//! their outputs are, against named tolerances.

use std::collections::BTreeMap;
use std::path::PathBuf;

use onnx_prune_core::Model;
use rayon::prelude::*;
use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::inputs::{
    output_values, random, read_labels, read_npy, read_npz, read_test_data, slice,
};
use crate::runner::{input_specs, InputSpec, Runner, Shapes};

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

/// The inputs of a check, as the options describe them.
pub(crate) enum SampleSet {
    /// Tensors whose first axis is the sample axis, run in batches.
    Batched(BTreeMap<String, Tensor>),
    /// Whole model inputs, one run each (ONNX test-data sets).
    Sets(Vec<BTreeMap<String, Tensor>>),
}

/// One run of both models.
struct Run {
    inputs: BTreeMap<String, Tensor>,
    /// Index of the first sample the run covers.
    first: usize,
    /// Real samples in it (a padded last batch holds fewer than its size).
    samples: usize,
    /// Whether outputs carry a sample axis to split on (batched runs).
    batched: bool,
}

fn check_fits(specs: &[InputSpec], name: &str, tensor: &Tensor, batched: bool) -> Result<()> {
    let Some(spec) = specs.iter().find(|s| s.name == name) else {
        return Ok(());
    };
    if tensor.datum_type() != spec.datum {
        return Err(Error::Usage(format!(
            "input `{name}` is {:?} in the data but the model wants {:?}",
            tensor.datum_type(),
            spec.datum
        )));
    }
    if !spec.dims.is_empty() && tensor.rank() != spec.dims.len() {
        let what = if batched { " (sample axis first)" } else { "" };
        return Err(Error::Usage(format!(
            "input `{name}` has rank {}{what} in the data but the model wants rank {}",
            tensor.rank(),
            spec.dims.len()
        )));
    }
    Ok(())
}

/// The samples the options ask for, for a model with the given inputs.
pub(crate) fn load_samples(options: &CheckOptions, specs: &[InputSpec]) -> Result<SampleSet> {
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let directories: Vec<&PathBuf> = options
        .inputs
        .iter()
        .filter_map(|s| match s {
            InputSource::TestData(dir) => Some(dir),
            _ => None,
        })
        .collect();
    if let Some(dir) = directories.first() {
        if options.inputs.len() > 1 || options.random.is_some() {
            return Err(Error::Usage(format!(
                "`{}` is a test-data directory: give it alone, without other --inputs or --random",
                dir.display()
            )));
        }
        let sets = read_test_data(dir, &names)?;
        for set in &sets {
            for (name, tensor) in set {
                check_fits(specs, name, tensor, false)?;
            }
        }
        return Ok(SampleSet::Sets(sets));
    }
    let mut tensors = BTreeMap::new();
    for source in &options.inputs {
        match source {
            InputSource::Npz(path) => tensors.extend(read_npz(path)?),
            InputSource::Npy { name, path } => {
                tensors.insert(name.clone(), read_npy(name, path)?);
            }
            InputSource::TestData(_) => unreachable!("handled above"),
        }
    }
    if let Some((count, seed)) = options.random {
        for (i, spec) in specs.iter().enumerate() {
            if tensors.contains_key(&spec.name) {
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
            tensors.insert(
                spec.name.clone(),
                random(spec.datum, per_sample, count, seed, i)?,
            );
        }
    }
    for spec in specs {
        let tensor = tensors.get(&spec.name).ok_or_else(|| {
            Error::Usage(format!(
                "no data for input `{}` (give --inputs or --random)",
                spec.name
            ))
        })?;
        check_fits(specs, &spec.name, tensor, true)?;
    }
    tensors.retain(|name, _| names.contains(name));
    let counts: Vec<usize> = tensors
        .values()
        .map(|t| t.shape().first().copied().unwrap_or(1))
        .collect();
    if counts.windows(2).any(|w| w[0] != w[1]) {
        return Err(Error::Usage(format!(
            "inputs hold different numbers of samples on their first axis: {counts:?}"
        )));
    }
    Ok(SampleSet::Batched(tensors))
}

/// Splits batched samples into runs of `batch`, padding the last by repeating its last sample.
fn batched_runs(
    tensors: &BTreeMap<String, Tensor>,
    count: usize,
    batch: usize,
) -> Result<Vec<Run>> {
    (0..count)
        .step_by(batch)
        .map(|start| {
            let end = (start + batch).min(count);
            let mut inputs = slice(tensors, start, end)?;
            if end - start < batch {
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
            Ok(Run {
                inputs,
                first: start,
                samples: end - start,
                batched: true,
            })
        })
        .collect()
}

fn shapes_of(inputs: &BTreeMap<String, Tensor>) -> Shapes {
    inputs
        .iter()
        .map(|(name, t)| (name.clone(), (t.datum_type(), t.shape().to_vec())))
        .collect()
}

/// Runs `reference` and `candidate` on the samples the options describe and compares every
/// output. Each model comes with the ONNX bytes tract is to run (its own, or a densified copy).
pub fn check(
    (reference_model, reference_bytes): (&Model, &[u8]),
    (candidate_model, candidate_bytes): (&Model, &[u8]),
    options: &CheckOptions,
) -> Result<CheckReport> {
    let reference = (reference_model.path(), reference_bytes);
    let candidate = (candidate_model.path(), candidate_bytes);
    let specs = input_specs(reference_model)?;
    let (runs, count) = match load_samples(options, &specs)? {
        SampleSet::Sets(sets) => {
            let count = sets.len();
            let runs = sets
                .into_iter()
                .enumerate()
                .map(|(i, inputs)| Run {
                    inputs,
                    first: i,
                    samples: 1,
                    batched: false,
                })
                .collect();
            (runs, count)
        }
        SampleSet::Batched(tensors) => {
            let count = tensors
                .values()
                .next()
                .map_or(0, |t| t.shape().first().copied().unwrap_or(1));
            // One batch size for all inputs: a fixed batch dimension sets it, else --batch-size.
            let batch = specs
                .iter()
                .find_map(|s| s.dims.first().copied().flatten())
                .unwrap_or(options.batch_size.max(1))
                .min(count)
                .max(1);
            (batched_runs(&tensors, count, batch)?, count)
        }
    };
    if count == 0 {
        return Err(Error::Usage("the inputs hold no sample".into()));
    }
    // Each model is optimised once per distinct input shape.
    let mut runners: Vec<(Shapes, Runner, Runner)> = Vec::new();
    for run in &runs {
        let shapes = shapes_of(&run.inputs);
        if !runners.iter().any(|(s, _, _)| *s == shapes) {
            let r = Runner::new(reference.1, reference.0, &shapes)?;
            let c = Runner::new(candidate.1, candidate.0, &shapes)?;
            runners.push((shapes, r, c));
        }
    }
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
    type RunResult = (Vec<Accumulator>, u64, u64);
    let results: Vec<RunResult> = runs
        .par_iter()
        .map(|run| -> Result<RunResult> {
            let shapes = shapes_of(&run.inputs);
            let (_, reference_runner, candidate_runner) = runners
                .iter()
                .find(|(s, _, _)| *s == shapes)
                .expect("a runner per shape");
            let expected = reference_runner.run(reference.0, &run.inputs, run.first)?;
            let actual = candidate_runner.run(candidate.0, &run.inputs, run.first)?;
            let mut accs = vec![Accumulator::default(); expected.len()];
            let (mut ref_correct, mut cand_correct) = (0, 0);
            for (o, (e, a)) in expected.iter().zip(&actual).enumerate() {
                // Outputs without the batch as their first axis are compared whole, once.
                let split = run.batched
                    && e.rank() > 0
                    && e.shape()[0] == run.inputs.values().next().map_or(0, |t| t.shape()[0]);
                let pieces = if split { run.samples } else { 1 };
                for s in 0..pieces {
                    let sample = split.then_some(s);
                    let (ev, av) = (output_values(e, sample)?, output_values(a, sample)?);
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
                        acc.worst_sample = run.first + s;
                    }
                    if split && e.rank() == 2 && ev.len() > 1 {
                        acc.classified += 1;
                        let (re, ca) = (argmax(&ev), argmax(&av));
                        acc.agree += u64::from(re == ca);
                        if let (0, Some(labels)) = (o, &labels) {
                            ref_correct += u64::from(re as i64 == labels[run.first + s]);
                            cand_correct += u64::from(ca as i64 == labels[run.first + s]);
                        }
                    }
                }
            }
            Ok((accs, ref_correct, cand_correct))
        })
        .collect::<Result<_>>()?;
    let output_names = &runners[0].1.outputs;
    let mut totals = vec![Accumulator::default(); output_names.len()];
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
    let outputs: Vec<OutputMetrics> = output_names
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
