//! Loading the reference once per input shape, the candidate for the same shapes, and running
//! them over the samples batch by batch on every core, each sample measured on its own.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;
use tract_onnx::prelude::*;

use crate::batch::{fastest, guessed_axes, output_axes};
use crate::error::{Error, Result};
use crate::fold::Fixed;
use crate::inputs::output_values;
use crate::metrics::{Limits, SampleStats};
use crate::options::CheckOptions;
use crate::runner::{InputSpec, RunError, Runner, Shapes};
use crate::samples::{Layout, Samples};
use crate::swap::WeightInput;

/// A model to run: its path (for messages) and the ONNX bytes tract is handed.
pub type Subject<'a> = (&'a Path, &'a [u8]);

/// The reference loaded for each distinct input shape of the runs, and how the runs go.
pub struct Plan {
    /// Samples per run.
    pub size: usize,
    /// (input shapes, reference loaded for them).
    pub runners: Vec<(Shapes, Runner)>,
    /// The batch axis of each output (`None`: compared whole).
    pub axes: Vec<Option<usize>>,
}

impl Plan {
    /// Where the runner for `shapes` is in [`Plan::runners`].
    fn position(&self, shapes: &Shapes) -> usize {
        self.runners
            .iter()
            .position(|(s, _)| s == shapes)
            .expect("a runner per shape")
    }

    /// Loads `candidate` for every input shape the reference was loaded for, in the same order.
    pub fn load_candidate(&self, candidate: Subject, fixed: &Fixed) -> Result<Vec<Runner>> {
        self.load_swapping(candidate, fixed, &[])
    }

    /// As [`Plan::load_candidate`], with `weights` made inputs (see [`Runner::swapping`]).
    pub fn load_swapping(
        &self,
        candidate: Subject,
        fixed: &Fixed,
        weights: &[WeightInput],
    ) -> Result<Vec<Runner>> {
        self.runners
            .par_iter()
            .map(|(shapes, _)| Runner::swapping(candidate.1, candidate.0, shapes, fixed, weights))
            .collect()
    }
}

/// Chooses the batch size, loads the reference for it and finds each output's batch axis.
pub fn plan(
    reference: Subject,
    samples: &Samples,
    specs: &[InputSpec],
    options: &CheckOptions,
    fixed: &Fixed,
    notes: &mut Vec<String>,
) -> Result<Plan> {
    let load = |shapes: Shapes| -> Result<(Shapes, Runner)> {
        let runner = Runner::new(reference.1, reference.0, &shapes, fixed)?;
        Ok((shapes, runner))
    };
    if samples.layout == Layout::Whole {
        let mut distinct: Vec<Shapes> = Vec::new();
        for sample in 0..samples.count {
            let shapes = samples.shapes(sample, 1);
            if !distinct.contains(&shapes) {
                distinct.push(shapes);
            }
        }
        let runners = distinct
            .into_par_iter()
            .map(load)
            .collect::<Result<Vec<_>>>()?;
        let axes = vec![None; runners[0].1.outputs.len()];
        return Ok(Plan {
            size: 1,
            runners,
            axes,
        });
    }
    let fixed_batch = specs.iter().find_map(|s| s.dims.first().copied().flatten());
    let (size, loaded, other) = match (fixed_batch, options.batch_size) {
        (Some(size), _) => (size, None, None),
        (None, Some(size)) => {
            let size = size.min(samples.count).max(1);
            // A second size, to see which output axis follows the batch.
            let other = size + 1;
            let runner = Runner::new(reference.1, reference.0, &samples.shapes(0, other), fixed)?;
            (size, None, Some((other, runner.output_shapes)))
        }
        (None, None) => {
            let mut timed = fastest(reference, samples, fixed)?;
            let best = timed.remove(0);
            let other = timed
                .first()
                .map(|l| (l.size, l.runner.output_shapes.clone()));
            (best.size, Some(best.runner), other)
        }
    };
    let mut runner = match loaded {
        Some(runner) => (samples.shapes(0, size), runner),
        None => load(samples.shapes(0, size))?,
    };
    let mut axes = match &other {
        Some((b, at_b)) => output_axes((size, &runner.1.output_shapes), (*b, at_b)),
        None => guessed_axes(size, &runner.1.output_shapes),
    };
    let mut size = size;
    if fixed_batch.is_none() && size > 1 && axes.iter().any(Option::is_none) {
        let whole: Vec<&str> = runner
            .1
            .outputs
            .iter()
            .zip(&axes)
            .filter(|(_, a)| a.is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        notes.push(format!(
            "output{} `{}` {} no axis that follows the batch: samples run one at a time",
            if whole.len() > 1 { "s" } else { "" },
            whole.join("`, `"),
            if whole.len() > 1 { "have" } else { "has" }
        ));
        size = 1;
        runner = load(samples.shapes(0, 1))?;
        axes = match &other {
            Some((b, at_b)) if *b != 1 => output_axes((1, &runner.1.output_shapes), (*b, at_b)),
            _ => vec![None; axes.len()],
        };
    }
    Ok(Plan {
        size,
        runners: vec![runner],
        axes,
    })
}

/// The number of classes of a class-score output of shape `shape` with batch axis `axis`:
/// `[batch, classes]`, or `[1, classes]` for a run of one sample.
fn classes(shape: &[usize], axis: Option<usize>) -> Option<usize> {
    match (shape, axis) {
        ([_, c], Some(0)) | ([1, c], None) if *c > 1 => Some(*c),
        _ => None,
    }
}

/// Turns a failed run into the error to report: a panic of tract on inputs the reference ran
/// (or on float inputs of the declared shapes) is a model tract cannot run; on integer inputs
/// it may be values out of the model's range.
pub(crate) fn run_error(
    error: RunError,
    path: &Path,
    inputs: &BTreeMap<String, Tensor>,
    first: usize,
    reference_ran: bool,
) -> Error {
    match error {
        RunError::Failed(error) => error,
        RunError::Panic(what) => {
            let integers: Vec<&str> = inputs
                .iter()
                .filter(|(_, t)| t.datum_type().is_integer())
                .map(|(n, _)| n.as_str())
                .collect();
            if reference_ran || integers.is_empty() {
                Error::Unsupported {
                    path: path.to_path_buf(),
                    msg: format!(
                        "tract panicked on sample {first} ({what}), on inputs {}",
                        if reference_ran {
                            "the reference ran"
                        } else {
                            "of the declared types and shapes"
                        }
                    ),
                }
            } else {
                Error::Usage(format!(
                    "{}: tract failed on sample {first} ({what}); are the values of input{} `{}` \
                     in the model's range? (--random draws integers from [0, 10))",
                    path.display(),
                    if integers.len() > 1 { "s" } else { "" },
                    integers.join("`, `")
                ))
            }
        }
    }
}

/// Per sample (in order): its index and how each output differs.
pub type RunStats = Vec<(usize, Vec<SampleStats>)>;

/// One run of samples `first..first + len`: the inputs and the reference's outputs, kept from
/// an earlier run or computed now.
pub struct Expected {
    /// Input tensors by name.
    pub inputs: BTreeMap<String, Tensor>,
    /// Which runner of the plan the run's shapes use.
    pub runner: usize,
    /// The reference's outputs.
    pub outputs: Vec<Tensor>,
}

/// Runs the reference on samples `first..first + len`.
pub fn run_reference(
    path: &Path,
    samples: &Samples,
    plan: &Plan,
    (first, len): (usize, usize),
) -> Result<Expected> {
    let inputs = samples.run_inputs(first, len, plan.size)?;
    let runner = plan.position(&samples.shapes(first, plan.size));
    let outputs = plan.runners[runner]
        .1
        .run(path, &inputs)
        .map_err(|e| run_error(e, path, &inputs, first, false))?;
    Ok(Expected {
        inputs,
        runner,
        outputs,
    })
}

/// A candidate loaded for the plan: its path, its runners in the plan's order and the values
/// of the weights they take as inputs.
pub type Loaded<'a> = (&'a Path, &'a [Runner], &'a BTreeMap<String, TValue>);

/// Runs the candidate on the run's inputs and measures each of samples `first..first + len`
/// against the reference's outputs.
pub fn compare_run(
    (path, runners, weights): Loaded,
    expected: &Expected,
    plan: &Plan,
    run: (usize, usize),
    limits: Limits,
) -> Result<RunStats> {
    let actual = runners[expected.runner]
        .run_with(path, &expected.inputs, weights)
        .map_err(|e| run_error(e, path, &expected.inputs, run.0, true))?;
    measure_run(
        &actual.iter().collect::<Vec<_>>(),
        expected,
        plan,
        run,
        limits,
    )
}

/// Measures each of samples `first..first + len` of the candidate's outputs `actual` against
/// the reference's.
pub fn measure_run(
    actual: &[&Tensor],
    expected: &Expected,
    plan: &Plan,
    (first, len): (usize, usize),
    limits: Limits,
) -> Result<RunStats> {
    let mut stats = vec![Vec::with_capacity(actual.len()); len];
    for ((e, a), &axis) in expected.outputs.iter().zip(actual).zip(&plan.axes) {
        let is_classes = classes(e.shape(), axis).is_some();
        for (s, sample) in stats.iter_mut().enumerate() {
            // An output without a batch axis is compared whole, on the run's first sample.
            if axis.is_none() && s > 0 {
                sample.push(SampleStats::default());
                continue;
            }
            let at = axis.map(|axis| (axis, s));
            let (ev, av) = (output_values(e, at)?, output_values(a, at)?);
            sample.push(SampleStats::compare(&ev, &av, is_classes, limits));
        }
    }
    Ok(stats
        .into_iter()
        .enumerate()
        .map(|(s, stats)| (first + s, stats))
        .collect())
}

/// Checks the labels against the number of classes of the first output.
pub fn check_labels(labels: &[i64], plan: &Plan) -> Result<()> {
    let runner = &plan.runners[0].1;
    let shape = &runner.output_shapes[0];
    let Some(n) = classes(shape, plan.axes[0]) else {
        return Err(Error::Usage(format!(
            "--labels: the first output `{}` has shape {shape:?}, not class scores [batch, classes]",
            runner.outputs[0]
        )));
    };
    if let Some((sample, label)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l < 0 || l as usize >= n)
    {
        return Err(Error::Usage(format!(
            "--labels: label {label} of sample {sample} is outside the {n} classes (0..{}) of output `{}`",
            n - 1,
            runner.outputs[0]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(dt: DatumType) -> BTreeMap<String, Tensor> {
        let t = Tensor::zero_dt(dt, &[1, 2]).unwrap();
        BTreeMap::from([("x".to_string(), t)])
    }

    /// A tract panic is bad input only where the input values may be out of the model's
    /// range: integers the reference itself could not take.
    #[test]
    fn a_tract_panic_is_exit_3_unless_integer_inputs_may_be_out_of_range() {
        let path = Path::new("m.onnx");
        let panic = || RunError::Panic("index out of bounds".into());
        let floats = run_error(panic(), path, &inputs(DatumType::F32), 4, false);
        assert!(
            matches!(&floats, Error::Unsupported { msg, .. } if msg.contains("sample 4") && msg.contains("index out of bounds")),
            "{floats}"
        );
        let integers = run_error(panic(), path, &inputs(DatumType::I64), 4, false);
        assert!(matches!(integers, Error::Usage(_)), "{integers}");
        let after_reference = run_error(panic(), path, &inputs(DatumType::I64), 4, true);
        assert!(
            matches!(&after_reference, Error::Unsupported { msg, .. } if msg.contains("the reference ran")),
            "{after_reference}"
        );
    }
}
