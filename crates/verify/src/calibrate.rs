//! Calibration through tract: run a model on calibration samples with the input activation of
//! every pruned layer made an output, and reduce each batch's activations to the layer's
//! statistics ([`LayerStats`]) at once, so that activations are never all held in memory.
//! Batches run through tract in parallel; then each layer, one thread per layer, adds their
//! activations to its sums in batch order, so that the result does not depend on the thread
//! count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use onnx_prune_core::calibrated::{LayerStats, Tap};
use onnx_prune_core::Model;
use rayon::prelude::*;
use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::fold::Fixed;
use crate::options::{CheckOptions, InputSource};
use crate::runner::{input_specs, RunError, Runner, Shapes};
use crate::samples::{Layout, Samples};

/// Where calibration samples come from and how many are used.
#[derive(Debug, Clone)]
pub struct CalibrationOptions {
    /// Input files, as check's `--inputs` reads them.
    pub inputs: Vec<InputSource>,
    /// The first this many samples are used (all of them when fewer).
    pub samples: usize,
    /// Samples per run where the model's batch dimension is free.
    pub batch_size: usize,
}

impl Default for CalibrationOptions {
    fn default() -> Self {
        CalibrationOptions {
            inputs: Vec::new(),
            samples: 128,
            batch_size: 32,
        }
    }
}

/// Calibration samples, split into runs, ready to give statistics of any version of a model.
pub struct Calibration {
    path: PathBuf,
    input_names: BTreeSet<String>,
    data: Samples,
    /// Each run's first sample and length.
    runs: Vec<(usize, usize)>,
    samples: usize,
    /// What was done to the data to fit the model (casts).
    pub notes: Vec<String>,
}

impl Calibration {
    /// Reads the samples `options` name for `model` and checks that they fit its inputs (names,
    /// element types, ranks, fixed dimensions), as check does.
    pub fn load(model: &Model, options: &CalibrationOptions) -> Result<Calibration> {
        let specs = input_specs(model)?;
        let check_options = CheckOptions {
            inputs: options.inputs.clone(),
            inputs_flag: Some("--calibration"),
            ..CheckOptions::default()
        };
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let mut notes = Vec::new();
        let data = Samples::load(&check_options, &names, &specs, &mut notes)?;
        let count = data.count.min(options.samples.max(1));
        let runs: Vec<(usize, usize)> = match data.layout {
            Layout::Whole => (0..count).map(|s| (s, 1)).collect(),
            Layout::Batched => {
                // A fixed batch dimension sets the run size: whole runs only.
                let fixed = specs.iter().find_map(|s| s.dims.first().copied().flatten());
                let batch = fixed.unwrap_or(options.batch_size.max(1)).max(1);
                let usable = if fixed.is_some() {
                    count / batch * batch
                } else {
                    count
                };
                if count > 0 && usable == 0 {
                    return Err(Error::Usage(format!(
                        "the model takes batches of {batch} samples; the calibration data holds {count}"
                    )));
                }
                (0..usable)
                    .step_by(batch)
                    .map(|start| (start, batch.min(usable - start)))
                    .collect()
            }
        };
        let samples = runs.iter().map(|(_, len)| len).sum();
        if samples == 0 {
            return Err(Error::Usage("the calibration data holds no sample".into()));
        }
        Ok(Calibration {
            path: model.path().to_path_buf(),
            input_names: names.into_iter().collect(),
            data,
            runs,
            samples,
            notes,
        })
    }

    /// Samples used.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Statistics of every tap's activation over the samples, for the model given as `bytes`
    /// (the calibrated model itself or a partly pruned version of it).
    pub fn statistics(&self, bytes: &[u8], taps: &[Tap]) -> Result<Vec<LayerStats>> {
        let mut tapped: Vec<String> = taps
            .iter()
            .map(|t| t.activation.clone())
            .filter(|name| !self.input_names.contains(name))
            .collect();
        tapped.sort();
        tapped.dedup();
        let runners = self.runners(bytes, &tapped)?;
        // Runs go through tract a window at a time, in parallel; then every tap adds the
        // window's activations in run order, taps in parallel. Each tap's sums are made by one
        // thread in one order, so they do not depend on the thread count, and one set of sums
        // per tap is all the memory statistics take.
        let mut totals: Vec<LayerStats> = taps.iter().map(LayerStats::new).collect();
        let window = rayon::current_num_threads().max(1);
        for runs in self.runs.chunks(window) {
            let outputs = runs
                .par_iter()
                .map(|&(first, len)| {
                    let run = self.data.run_inputs(first, len, len)?;
                    let outputs = self.run_tapped(&run, first, &tapped, &runners)?;
                    Ok((first, run, outputs))
                })
                .collect::<Result<Vec<_>>>()?;
            // The first error in tap order, whatever the thread count.
            let added: Vec<Result<()>> = totals
                .par_iter_mut()
                .zip(taps)
                .map(|(total, tap)| {
                    for (first, run, outputs) in &outputs {
                        let tensor = match tapped.iter().position(|name| *name == tap.activation) {
                            Some(i) => &outputs[i],
                            None => &run[&tap.activation],
                        };
                        add(total, tap, tensor, *first)?;
                    }
                    Ok(())
                })
                .collect();
            added.into_iter().collect::<Result<()>>()?;
        }
        Ok(totals)
    }

    /// One runner per input shape the runs take, with `tapped` as outputs.
    fn runners(&self, bytes: &[u8], tapped: &[String]) -> Result<Vec<(Shapes, Runner)>> {
        let mut runners: Vec<(Shapes, Runner)> = Vec::new();
        if !tapped.is_empty() {
            for &(first, len) in &self.runs {
                let shapes = self.data.shapes(first, len);
                if !runners.iter().any(|(s, _)| *s == shapes) {
                    let runner =
                        Runner::tapping(bytes, &self.path, &shapes, &Fixed::new(), tapped)?;
                    runners.push((shapes, runner));
                }
            }
        }
        Ok(runners)
    }

    /// Per value `(name, axis)` (a negative axis counts from the end), the sum over the samples of the squares of each index of
    /// `axis` (over every other axis): the squared norm of each channel of the activation.
    /// Runs go one after the other, so the sums do not depend on the thread count.
    pub fn channel_sq_norms(
        &self,
        bytes: &[u8],
        values: &[(String, i64)],
    ) -> Result<Vec<Vec<f64>>> {
        let names: Vec<String> = values.iter().map(|(name, _)| name.clone()).collect();
        let mut totals: Vec<Vec<f64>> = vec![Vec::new(); values.len()];
        self.each_run(bytes, &names, |tensors| {
            for (((name, axis), total), tensor) in values.iter().zip(&mut totals).zip(tensors) {
                let bad = |e: TractError| Error::Usage(format!("activation `{name}`: {e:#}"));
                let values = tensor.cast_to::<f32>().map_err(bad)?;
                let view = values.to_plain_array_view::<f32>().map_err(bad)?;
                let rank = view.ndim() as i64;
                let axis = if *axis < 0 { axis + rank } else { *axis };
                let axis = usize::try_from(axis)
                    .ok()
                    .filter(|&a| a < view.ndim())
                    .ok_or_else(|| {
                        Error::Usage(format!("activation `{name}` has no axis {axis}"))
                    })?;
                let n = view.shape()[axis];
                total.resize(n, 0.0);
                for (index, v) in view.indexed_iter() {
                    total[index[axis]] += f64::from(*v) * f64::from(*v);
                }
            }
            Ok(())
        })?;
        Ok(totals)
    }

    /// Runs the model given as `bytes` on every run of samples, one after the other, and hands
    /// `visit` the values `names` (inputs or activations) of each run, in the order of `names`.
    pub(crate) fn each_run(
        &self,
        bytes: &[u8],
        names: &[String],
        mut visit: impl FnMut(&[&Tensor]) -> Result<()>,
    ) -> Result<()> {
        let mut tapped: Vec<String> = names
            .iter()
            .filter(|name| !self.input_names.contains(*name))
            .cloned()
            .collect();
        tapped.sort();
        tapped.dedup();
        let runners = self.runners(bytes, &tapped)?;
        for &(first, len) in &self.runs {
            let run = self.data.run_inputs(first, len, len)?;
            let outputs = self.run_tapped(&run, first, &tapped, &runners)?;
            let tensors: Vec<&Tensor> = names
                .iter()
                .map(|name| match tapped.iter().position(|t| t == name) {
                    Some(i) => &outputs[i],
                    None => &run[name],
                })
                .collect();
            visit(&tensors)?;
        }
        Ok(())
    }

    /// The tapped activations of one run, in the order of `tapped`.
    fn run_tapped(
        &self,
        run: &BTreeMap<String, Tensor>,
        first: usize,
        tapped: &[String],
        runners: &[(Shapes, Runner)],
    ) -> Result<Vec<Tensor>> {
        if tapped.is_empty() {
            return Ok(Vec::new());
        }
        let shapes: Shapes = run
            .iter()
            .map(|(name, t)| (name.clone(), (t.datum_type(), t.shape().to_vec())))
            .collect();
        let (_, runner) = runners
            .iter()
            .find(|(s, _)| *s == shapes)
            .expect("a runner per shape");
        runner.run(&self.path, run).map_err(|e| match e {
            RunError::Failed(error) => error,
            RunError::Panic(what) => Error::Usage(format!(
                "{}: tract failed on the calibration run from sample {first} ({what}); are \
                 the input values in the model's range?",
                self.path.display()
            )),
        })
    }
}

/// Adds the rows that `tensor`, the activation of `tap` in the run from sample `first`, gives.
fn add(total: &mut LayerStats, tap: &Tap, tensor: &Tensor, first: usize) -> Result<()> {
    let layer = |msg: String| Error::Usage(format!("layer `{}`: {msg}", tap.id));
    let values = tensor.cast_to::<f32>().map_err(|e| {
        layer(format!(
            "activation `{}` is not numeric: {e:#}",
            tap.activation
        ))
    })?;
    let view = values
        .to_plain_array_view::<f32>()
        .map_err(|e| layer(format!("{e:#}")))?;
    let copy: Vec<f32>;
    let data = match view.as_slice() {
        Some(data) => data,
        None => {
            copy = view.iter().copied().collect();
            &copy
        }
    };
    total
        .add(tap, tensor.shape(), data)
        .map_err(|msg| layer(format!("{msg}, in the run from sample {first}")))
}
