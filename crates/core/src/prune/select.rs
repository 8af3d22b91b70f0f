//! Choosing which weights to prune: the default selection, adjusted by id patterns and op types.

use regex::Regex;

use crate::error::{Error, Result};
use crate::model::weights::{default_candidate, Role, Weight, DEFAULT_MIN_PARAMS};
use crate::model::Model;

/// How to choose the weights to prune.
#[derive(Debug, Clone)]
pub struct Selection {
    /// When non-empty, the candidates are the weights whose id matches one of these (whatever
    /// their role, except shape and index parameters and scalars, which are never pruned),
    /// instead of the default selection.
    pub include: Vec<Regex>,
    /// Weights whose id matches one of these are left alone.
    pub exclude: Vec<Regex>,
    /// When non-empty, only weights consumed by these op types are kept.
    pub op_types: Vec<String>,
    /// Weights with fewer elements are left alone, also when `include` names them.
    pub min_params: u64,
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            include: Vec::new(),
            exclude: Vec::new(),
            op_types: Vec::new(),
            min_params: DEFAULT_MIN_PARAMS,
        }
    }
}

/// Whether `weight` may be pruned at all when named: never a shape or index parameter (a
/// `Reshape` target, `Resize` scales, a `Range` bound...) nor a scalar, whose zeroing breaks the
/// graph rather than thinning it.
fn may_prune(model: &Model, weight: &Weight) -> bool {
    weight.role != Role::Shape && model.tensors()[weight.tensor].elements > 1
}

/// The weights chosen by `selection`, in file order. A pattern that matches no weight is an
/// error, so that a typo cannot silently prune nothing.
pub fn select<'w>(
    model: &Model,
    weights: &'w [Weight],
    selection: &Selection,
) -> Result<Vec<&'w Weight>> {
    let include = selection.include.iter().map(|p| ("--include", p));
    let patterns = include.chain(selection.exclude.iter().map(|p| ("--exclude", p)));
    for (flag, pattern) in patterns {
        if !weights.iter().any(|w| pattern.is_match(&w.id)) {
            return Err(Error::Usage(format!(
                "{flag} `{pattern}` matches no weight of `{}` (see `onnx-prune inspect` for ids)",
                model.path().display()
            )));
        }
    }
    for op_type in &selection.op_types {
        if !weights
            .iter()
            .any(|w| w.consumer.as_ref().is_some_and(|c| c.op_type == *op_type))
        {
            let mut known: Vec<&str> = weights
                .iter()
                .filter_map(|w| w.consumer.as_ref().map(|c| c.op_type.as_str()))
                .collect();
            known.sort_unstable();
            known.dedup();
            return Err(Error::Usage(format!(
                "--op-types `{op_type}`: no weight of `{}` is consumed by a `{op_type}` node \
                 (weights here feed: {})",
                model.path().display(),
                known.join(", ")
            )));
        }
    }
    let named = |w: &Weight| {
        if selection.include.is_empty() {
            default_candidate(w.role, &model.tensors()[w.tensor])
        } else {
            selection.include.iter().any(|p| p.is_match(&w.id)) && may_prune(model, w)
        }
    };
    let candidates: Vec<&Weight> = weights
        .iter()
        .filter(|w| named(w))
        .filter(|w| !selection.exclude.iter().any(|p| p.is_match(&w.id)))
        .filter(|w| {
            selection.op_types.is_empty()
                || w.consumer
                    .as_ref()
                    .is_some_and(|c| selection.op_types.contains(&c.op_type))
        })
        .collect();
    let big_enough = |w: &&Weight| model.tensors()[w.tensor].elements >= selection.min_params;
    let chosen: Vec<&Weight> = candidates.iter().copied().filter(big_enough).collect();
    if chosen.is_empty() {
        let small = candidates.len();
        return Err(Error::Usage(if small > 0 {
            format!(
                "no weight of `{}` is selected for pruning: {small} weight(s) match but have \
                 fewer than --min-params {} elements (lower --min-params to include them)",
                model.path().display(),
                selection.min_params
            )
        } else {
            format!(
                "no weight of `{}` is selected for pruning",
                model.path().display()
            )
        }));
    }
    Ok(chosen)
}
