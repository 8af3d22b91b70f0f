//! The dense model as every candidate is checked against it: loaded into tract and run once,
//! its outputs kept (see [`onnx_prune_verify::Reference`]).

use std::path::Path;

use onnx_prune_core::{Edit, Model};
use onnx_prune_verify::{CheckOptions, CheckReport, Keep, Reference, Suffix, Swappable};

use crate::error::Result;

/// A reference checked against many candidates (sensitivity curves, budget searches, the
/// steps of a mask schedule).
pub struct Baseline {
    reference: Reference,
}

impl Baseline {
    /// Loads the model at `reference` and runs it on the samples `options` describe.
    pub fn load(reference: &Path, options: &CheckOptions) -> Result<Baseline> {
        let model = Model::load(reference)?;
        let reference = Reference::load(&model, options, Keep::Outputs)?;
        Ok(Baseline { reference })
    }

    /// What was done to the data to fit the model (casts, one-hot labels, batch notes).
    pub fn notes(&self) -> &[String] {
        self.reference.notes()
    }

    /// Checks the model at `candidate` against the reference.
    pub fn check(&self, candidate: &Path) -> Result<CheckReport> {
        self.compare(&Model::load(candidate)?)
    }

    /// The reference's `model` loaded once with the weights at `tensors` (indices in
    /// [`Model::tensors`]) as inputs, so that candidates changing only them run without a
    /// file of their own ([`Baseline::compare_edits`]); `None` when tract cannot load it so,
    /// and every candidate is then written and loaded.
    pub fn swappable(&self, model: &Model, tensors: &[usize]) -> Option<Swappable> {
        self.reference.swappable(model, tensors).ok()
    }

    /// Checks the reference's model changed by `edits` against the reference, run in
    /// `swappable`; `None` when `edits` change more than it swaps.
    pub fn compare_edits(
        &self,
        swappable: &Swappable,
        edits: &[Edit],
    ) -> Result<Option<CheckReport>> {
        Ok(self.reference.compare_swapped(swappable, edits)?)
    }

    /// Calls `each(w, suffix)` for every weight `w` of `tensors` (indices in
    /// [`Model::tensors`] of the reference's `model`) whose `candidates` (how many each weight
    /// has) can run from that weight on at a saving, in parallel: the results by weight,
    /// `None` for a weight whose candidates must be compared whole (see
    /// [`Reference::each_suffix`]).
    pub fn each_suffix<T: Send>(
        &self,
        model: &Model,
        (tensors, candidates): (&[usize], usize),
        each: impl Fn(usize, &Suffix) -> Result<T> + Sync,
    ) -> Result<Vec<Option<T>>> {
        self.reference
            .each_suffix(model, (tensors, candidates), each)
    }

    /// Checks `candidate` (a model loaded, or prepared and not yet in place) against the
    /// reference.
    pub fn compare(&self, candidate: &Model) -> Result<CheckReport> {
        Ok(self.reference.compare(candidate)?)
    }
}
