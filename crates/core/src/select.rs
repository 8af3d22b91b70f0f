//! Choosing which weights to prune: the default selection, adjusted by id patterns and op types.

use regex::Regex;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::weights::Weight;

/// How to choose the weights to prune.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// When non-empty, the candidates are the weights whose id matches one of these (whatever
    /// their role), instead of the default selection.
    pub include: Vec<Regex>,
    /// Weights whose id matches one of these are left alone.
    pub exclude: Vec<Regex>,
    /// When non-empty, only weights consumed by these op types are kept.
    pub op_types: Vec<String>,
}

/// The weights chosen by `selection`, in file order. A pattern that matches no weight is an
/// error, so that a typo cannot silently prune nothing.
pub fn select<'w>(
    model: &Model,
    weights: &'w [Weight],
    selection: &Selection,
) -> Result<Vec<&'w Weight>> {
    for pattern in selection.include.iter().chain(&selection.exclude) {
        if !weights.iter().any(|w| pattern.is_match(&w.id)) {
            return Err(Error::Usage(format!(
                "pattern `{pattern}` matches no weight of `{}` (see `onnx-prune inspect` for ids)",
                model.path().display()
            )));
        }
    }
    let chosen: Vec<&Weight> = weights
        .iter()
        .filter(|w| {
            if selection.include.is_empty() {
                w.prunable
            } else {
                selection.include.iter().any(|p| p.is_match(&w.id))
                    && model.tensors()[w.tensor].sparse.is_none()
            }
        })
        .filter(|w| !selection.exclude.iter().any(|p| p.is_match(&w.id)))
        .filter(|w| {
            selection.op_types.is_empty()
                || w.consumer
                    .as_ref()
                    .is_some_and(|c| selection.op_types.contains(&c.op_type))
        })
        .collect();
    if chosen.is_empty() {
        return Err(Error::Usage(format!(
            "no weight of `{}` is selected for pruning",
            model.path().display()
        )));
    }
    Ok(chosen)
}
