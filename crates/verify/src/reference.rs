//! A reference model loaded once and compared with any number of candidates: the sensitivity
//! analysis and the `--sparsity auto` search check dozens of candidates against one model.
//!
//! The reference is loaded into tract once per input shape, and with [`Keep::Outputs`] it is
//! run once: its outputs (and the inputs that produced them) stay in memory, up to
//! [`KEPT_BYTES_LIMIT`], and each candidate is only loaded and run itself.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use onnx_prune_core::{Edit, Model};
use rayon::prelude::*;
use tract_onnx::prelude::Tensor;

use crate::error::Result;
use crate::metrics::{Limits, Totals};
use crate::options::CheckOptions;
use crate::prepare::{prepare, Prepared};
use crate::report::{Accuracy, CheckReport, OutputMetrics};
use crate::side_by_side::{
    check_labels, compare_run, plan, run_reference, Expected, Loaded, Plan, RunStats,
};
use crate::swap::Swappable;

/// What a [`Reference`] keeps between comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Nothing: each comparison runs the reference again (one comparison, or outputs too large
    /// to hold).
    Nothing,
    /// Its outputs on every run, when they fit in [`KEPT_BYTES_LIMIT`].
    Outputs,
}

/// Bytes of reference inputs and outputs kept at most; above it, each comparison runs the
/// reference again, batch by batch, as a single check does.
pub const KEPT_BYTES_LIMIT: usize = 1 << 30;

/// A reference model ready to be compared with candidates on the samples of a check.
pub struct Reference {
    pub(crate) path: PathBuf,
    options: CheckOptions,
    pub(crate) prepared: Prepared,
    pub(crate) plan: Plan,
    /// `(first sample, samples)` of each run.
    pub(crate) runs: Vec<(usize, usize)>,
    /// The reference's outputs per run, when kept.
    pub(crate) kept: Option<Vec<Expected>>,
}

/// A model's bytes as tract reads them: tract reads only dense initializers, so a model with
/// sparse tensors is handed over densified; any other is handed its mapped bytes as they are,
/// without a copy.
pub(crate) fn tract_bytes(model: &Model) -> Result<Cow<'_, [u8]>> {
    Ok(match onnx_prune_core::write::densified(model)? {
        Some(dense) => Cow::Owned(dense),
        None => Cow::Borrowed(model.bytes()),
    })
}

/// Bytes a run's inputs and outputs take.
fn run_bytes(expected: &Expected) -> usize {
    let size = |t: &Tensor| t.len() * t.datum_type().size_of();
    expected.inputs.values().map(size).sum::<usize>()
        + expected.outputs.iter().map(size).sum::<usize>()
}

impl Reference {
    /// Reads the samples and labels `options` describe, loads `model` into tract for their
    /// shapes and, with [`Keep::Outputs`], runs it on every sample.
    pub fn load(model: &Model, options: &CheckOptions, keep: Keep) -> Result<Reference> {
        let path = model.path().to_path_buf();
        let mut prepared = prepare(model, options)?;
        let plan = plan(
            (&path, &tract_bytes(model)?),
            &prepared.samples,
            &prepared.specs,
            options,
            &prepared.fixed,
            &mut prepared.notes,
        )?;
        if let Some(labels) = &prepared.labels {
            check_labels(labels, &plan)?;
        }
        let count = prepared.samples.count;
        let runs: Vec<(usize, usize)> = (0..count)
            .step_by(plan.size)
            .map(|first| (first, plan.size.min(count - first)))
            .collect();
        let mut reference = Reference {
            path,
            options: options.clone(),
            prepared,
            plan,
            runs,
            kept: None,
        };
        if keep == Keep::Outputs {
            reference.kept = reference.run_all()?;
        }
        Ok(reference)
    }

    /// The reference's outputs on every run, or `None` (with a note) when they would take
    /// more than [`KEPT_BYTES_LIMIT`], estimated from the first run.
    fn run_all(&mut self) -> Result<Option<Vec<Expected>>> {
        let first = run_reference(&self.path, &self.prepared.samples, &self.plan, self.runs[0])?;
        let estimate = run_bytes(&first).saturating_mul(self.runs.len());
        if estimate > KEPT_BYTES_LIMIT {
            self.prepared.notes.push(format!(
                "the reference's inputs and outputs take about {} MiB, more than the {} MiB kept \
                 in memory: it runs again for every candidate",
                estimate >> 20,
                KEPT_BYTES_LIMIT >> 20
            ));
            return Ok(None);
        }
        let rest = self.runs[1..]
            .par_iter()
            .map(|&run| run_reference(&self.path, &self.prepared.samples, &self.plan, run))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(std::iter::once(first).chain(rest).collect()))
    }

    /// The path the reference was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What was done to the data to fit the model (casts, one-hot labels, batch notes).
    pub fn notes(&self) -> &[String] {
        &self.prepared.notes
    }

    /// Loads `candidate` into tract for the reference's input shapes, runs it on every sample
    /// and measures every output against the reference's.
    pub fn compare(&self, candidate: &Model) -> Result<CheckReport> {
        let path = candidate.path();
        let runners = self
            .plan
            .load_candidate((path, &tract_bytes(candidate)?), &self.prepared.fixed)?;
        self.compare_loaded((path, &runners, &BTreeMap::new()))
    }

    /// Loads `model` (the reference's own model) into tract once for the reference's input
    /// shapes, with those of `tensors` (indices in [`Model::tensors`]) that are constants of
    /// the main graph made inputs: any candidate that changes only them is then compared
    /// without loading it (see [`Reference::compare_swapped`]).
    pub fn swappable(&self, model: &Model, tensors: &[usize]) -> Result<Swappable> {
        let bytes = tract_bytes(model)?;
        Swappable::load(model, tensors, |weights| {
            self.plan
                .load_swapping((model.path(), &bytes), &self.prepared.fixed, weights)
        })
    }

    /// Compares the reference with itself changed by `edits`, run in `swappable`; `None`
    /// when an edit changes something `swappable` does not swap (the candidate must then be
    /// written and compared).
    pub fn compare_swapped(
        &self,
        swappable: &Swappable,
        edits: &[Edit],
    ) -> Result<Option<CheckReport>> {
        let Some(weights) = swappable.values(edits) else {
            return Ok(None);
        };
        self.compare_loaded((&swappable.path, &swappable.runners, &weights))
            .map(Some)
    }

    /// Runs a candidate loaded for the plan on every sample and measures every output against
    /// the reference's.
    fn compare_loaded(&self, candidate: Loaded) -> Result<CheckReport> {
        let limits = self.limits();
        let samples = &self.prepared.samples;
        let results: Vec<RunStats> = self
            .runs
            .par_iter()
            .enumerate()
            .map(|(at, &run)| {
                let computed;
                let expected = match &self.kept {
                    Some(kept) => &kept[at],
                    None => {
                        computed = run_reference(&self.path, samples, &self.plan, run)?;
                        &computed
                    }
                };
                compare_run(candidate, expected, &self.plan, run, limits)
            })
            .collect::<Result<_>>()?;
        Ok(self.report(&results, limits))
    }

    /// The absolute and relative tolerances each element is held to, when given.
    pub(crate) fn limits(&self) -> Limits {
        let tolerances = &self.options.tolerances;
        (tolerances.atol.is_some() || tolerances.rtol.is_some()).then(|| {
            (
                tolerances.atol.unwrap_or(0.0),
                tolerances.rtol.unwrap_or(0.0),
            )
        })
    }

    /// Sums the per-sample measures into the report, and names each failed tolerance.
    pub(crate) fn report(&self, results: &[RunStats], limits: Limits) -> CheckReport {
        let tolerances = &self.options.tolerances;
        let labels = &self.prepared.labels;
        let count = self.prepared.samples.count;
        let output_names = &self.plan.runners[0].1.outputs;
        let mut totals = vec![Totals::default(); output_names.len()];
        let (mut ref_correct, mut cand_correct) = (0u64, 0u64);
        for (sample, stats) in results.iter().flatten() {
            for (total, s) in totals.iter_mut().zip(stats) {
                total.add(*sample, s);
            }
            if let (Some(labels), Some((r, c))) = (labels, stats.first().and_then(|s| s.classes)) {
                ref_correct += u64::from(r as i64 == labels[*sample]);
                cand_correct += u64::from(c as i64 == labels[*sample]);
            }
        }
        let mut failures = Vec::new();
        let outputs: Vec<OutputMetrics> = output_names
            .iter()
            .zip(&totals)
            .map(|(name, total)| total.finish(name, tolerances, limits, &mut failures))
            .collect();
        let accuracy = labels.as_ref().map(|_| Accuracy {
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
        CheckReport {
            passed: failures.is_empty(),
            samples: count,
            outputs,
            accuracy,
            tolerances: tolerances.clone(),
            failures,
            batch_size: self.plan.size,
            notes: self.prepared.notes.clone(),
        }
    }
}
