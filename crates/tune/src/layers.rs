//! Whole layers as units of sensitivity and search: each layer of a residual stream dropped
//! alone and checked (`sensitivity --structure layers`), and the largest number of the least
//! influential layers whose removal passes the check (`shrink --drop-layers auto`).

use std::path::Path;

use onnx_prune_core::shrink::layers::{self, Stream};
use onnx_prune_core::shrink::GraphEdit;
use onnx_prune_core::Model;
use onnx_prune_verify::CheckReport;

use crate::baseline::Baseline;
use crate::error::{Error, Result};
use crate::metric::Metric;
use crate::progress::Progress;
use crate::sensitivity::each_candidate;

/// One layer as a unit: its name in tables and the parameters dropping it alone removes.
#[derive(Debug, Clone)]
pub struct LayerUnit {
    /// `layer I` with its first block's residual Add.
    pub name: String,
    /// Parameters dropping the layer alone removes.
    pub params: u64,
}

/// The edit dropping `removed` from `stream`, with `base` (another pass's edit of the same
/// model, such as a vocabulary's) added.
fn edit_dropping(
    model: &Model,
    stream: &Stream,
    removed: &[usize],
    base: &GraphEdit,
) -> Result<(GraphEdit, Vec<String>)> {
    let (mut edit, notes) = layers::drop_layers(model, stream, removed)?;
    edit.merge(base.clone())?;
    Ok((edit, notes))
}

/// Every layer of `stream` as a unit, named and counted.
pub fn layer_units(model: &Model, stream: &Stream) -> Result<Vec<LayerUnit>> {
    stream
        .layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let (edit, _) = layers::drop_layers(model, stream, &[i])?;
            let totals = edit.totals(model)?;
            let first = layer.blocks.first().map(|&b| stream.blocks[b].add.as_str());
            Ok(LayerUnit {
                name: match first {
                    Some(add) => format!("layer {i} ({add})"),
                    None => format!("layer {i}"),
                },
                params: totals.params_before - totals.params_after,
            })
        })
        .collect()
}

/// Checks `model` against `baseline` with each layer of `stream` alone dropped, in parallel,
/// counting the checks on `progress`: the report of layer `i` is at `i`.
pub fn measure_layers(
    model: &Model,
    stream: &Stream,
    baseline: &Baseline,
    progress: &dyn Progress,
) -> Result<Vec<CheckReport>> {
    each_candidate(
        (stream.layers.len(), &[1.0]),
        ("dropping one layer at a time and running tract", progress),
        |i, _, candidate| {
            let (edit, _) = edit_dropping(model, stream, &[i], &GraphEdit::default())?;
            edit.save(model, candidate)?;
            baseline
                .check(candidate)
                .map_err(|e| e.context(format!("checking layer {i} dropped")))
        },
    )
}

/// The layers a `shrink --drop-layers auto` search drops, and how.
pub struct LayerSearch<'a> {
    /// The model.
    pub model: &'a Model,
    /// Its residual stream.
    pub stream: &'a Stream,
    /// Each layer's block influence on calibration data (in stream order): the least
    /// influential go first.
    pub influence: &'a [f64],
    /// Another pass's edit of the same model, made in every candidate (a vocabulary's).
    pub base: &'a GraphEdit,
    /// What the check bounds.
    pub metric: Metric,
    /// Checks the search may run.
    pub max_evaluations: usize,
}

/// One candidate of a layer search.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayersTried {
    /// Layers dropped, in stream order.
    pub removed: Vec<usize>,
    /// The metric the check bounds, on this candidate.
    pub value: f64,
    /// Whether it passed.
    pub passed: bool,
}

/// What a layer search found.
#[derive(Debug)]
pub struct LayersFound {
    /// Every candidate checked, in order: 1, 2, ... of the least influential layers.
    pub tried: Vec<LayersTried>,
    /// The largest passing set, if any: its edit (with the base's), the notes of what stays
    /// of dropped layers, and its check as written to the output.
    pub best: Option<(Vec<usize>, GraphEdit, Vec<String>, CheckReport)>,
    /// The check of the first set that failed, if one did.
    pub failure: Option<CheckReport>,
    /// Why the search stopped where it did.
    pub notes: Vec<String>,
}

/// Drops the 1, 2, ... least influential layers until the check fails, the stream would be
/// empty or `max_evaluations` checks ran; the largest set that passed is prepared for `output`
/// among `outputs` (in place once they are committed) and checked there once more.
///
/// Design note: the count grows one at a time rather than by bisection, because a model
/// usually loses only a few layers before failing, so a scan from one stops soon, and it never
/// skips past a count that passes when a larger one fails.
pub fn search_layers(
    search: &LayerSearch,
    baseline: &Baseline,
    (outputs, output): (&mut onnx_prune_core::write::Outputs, &Path),
    progress: &dyn Progress,
) -> Result<LayersFound> {
    let total = search.stream.layers.len();
    if search.influence.len() < total {
        return Err(Error::Usage(format!(
            "{} influence values for {total} layers",
            search.influence.len()
        )));
    }
    let scratch = tempfile::tempdir().map_err(Error::Scratch)?;
    let candidate = scratch.path().join("candidate.onnx");
    let most = (total - 1).min(search.max_evaluations);
    progress.steps("dropping the least influential layers", most as u64);
    let mut found = LayersFound {
        tried: Vec::new(),
        best: None,
        failure: None,
        notes: Vec::new(),
    };
    let mut best = None;
    for count in 1..=most {
        let removed = layers::least_influential(&search.influence[..total], count);
        let (edit, _) = edit_dropping(search.model, search.stream, &removed, search.base)?;
        edit.save(search.model, &candidate)?;
        let report = baseline
            .check(&candidate)
            .map_err(|e| e.context(format!("checking layers {removed:?} dropped")))?;
        progress.step();
        found.tried.push(LayersTried {
            removed: removed.clone(),
            value: search.metric.value(&report),
            passed: report.passed,
        });
        if !report.passed {
            found.failure = Some(report);
            break;
        }
        best = Some(removed);
    }
    let last = found.tried.last().map(|t| (t.removed.len(), t.passed));
    match last {
        Some((count, true)) if count < total - 1 => found.notes.push(format!(
            "stopped after {count} checks (--max-evaluations); more layers may pass"
        )),
        Some((count, true)) => found.notes.push(format!(
            "all but one layer dropped ({count} of {total}) and the check still passes"
        )),
        _ => {}
    }
    if let Some(removed) = best {
        let (edit, notes) = edit_dropping(search.model, search.stream, &removed, search.base)?;
        edit.stage(outputs, search.model, output)?;
        let check = baseline.compare(&outputs.staged(output)?)?;
        found.best = Some((removed, edit, notes, check));
    }
    Ok(found)
}
