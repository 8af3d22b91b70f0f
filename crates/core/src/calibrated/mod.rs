//! Pruning with calibration data: Wanda and SparseGPT scores, the output error of every pruned
//! weight and bias correction, from statistics of each layer's input activations.
//!
//! The statistics ([`LayerStats`]) come from outside as plain data: this crate runs no model.
//! [`plan_calibrated`] asks a caller-given function for them, once for every layer over the
//! dense model (`Order::Dense`), or layer by layer over the model with the earlier layers
//! already pruned (`Order::Sequential`, the reference implementations' order).
//!
//! Steps, one private module each: `view` (a weight as the matrix `W` of `Y = X W^T`, and the
//! tap that gives `X`), `stats` (what a run accumulates), `wanda`, `sparsegpt`, `output_error`
//! (what pruning costs a layer) and `bias` (correcting its mean).

pub(crate) mod bias;
pub(crate) mod output_error;
mod sparsegpt;
mod stats;
pub(crate) mod view;
mod wanda;

use rayon::prelude::*;

pub use stats::{ConvGeometry, Geometry, LayerStats, Padding, Tap};

use crate::error::{Error, Result};
use crate::model::values::{count_zeros, dense_bytes, finite_values};
use crate::model::weights::Weight;
use crate::model::Model;
use crate::prune::zeroing::Zeroing;
use crate::prune::{
    check_targets, plan, zeros_for, Pattern, Plan, PruneConfig, Scope, WeightOutcome,
};
use crate::write::{to_bytes, Change, Edit};
use view::{decode, encode, layer_of, MatrixView};

/// How weights are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// `|w|`, without calibration data.
    #[default]
    Magnitude,
    /// `|w| * ||x||`, compared per output row (Wanda).
    Wanda,
    /// Optimal brain surgeon masks and updates of the kept weights (SparseGPT).
    SparseGpt,
}

impl Method {
    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Method::Magnitude => "magnitude",
            Method::Wanda => "wanda",
            Method::SparseGpt => "sparsegpt",
        }
    }
}

/// Where each layer's statistics come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// One pass over the dense model for every layer.
    #[default]
    Dense,
    /// Each layer from the model with the layers before it already pruned.
    Sequential,
}

/// A calibrated pruning request (the sparsity, scope and pattern come from [`PruneConfig`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Calibrated {
    /// How weights are scored.
    pub method: Method,
    /// Where statistics come from.
    pub order: Order,
    /// Shift each pruned layer's bias so that its mean output is unchanged.
    pub correct_bias: bool,
}

/// What one weight must reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Target {
    /// This fraction of zeros.
    Fraction(f64),
    /// `n` kept of every `m` along the reduction axis.
    NOfM { n: usize, m: usize },
}

/// A selected weight with what calibration knows of it.
struct Layer<'w> {
    weight: &'w Weight,
    view: MatrixView,
    tap: Tap,
    /// The consumer's node index: layers run in graph order.
    node: usize,
}

/// What was decided for one calibrated weight.
struct Decision {
    outcome: WeightOutcome,
    edits: Vec<Edit>,
}

/// The calibration tap of `weight`: the activation its layer multiplies it with, and how; or
/// why it has none (its role, or a subgraph).
pub fn tap(model: &Model, weight: &Weight) -> std::result::Result<Tap, String> {
    layer_of(model, weight).map(|(_, tap)| tap)
}

/// Plans calibrated pruning of `selected`. `statistics(model_bytes, taps)` returns one
/// [`LayerStats`] per tap, from runs of the model given as bytes over the calibration data.
/// Weights that cannot be calibrated (roles without an input matrix, subgraphs) fall back to
/// magnitude, with a warning in [`Plan::warnings`].
pub fn plan_calibrated<E: From<Error>>(
    model: &Model,
    selected: &[&Weight],
    config: &PruneConfig,
    calibrated: &Calibrated,
    mut statistics: impl FnMut(&[u8], &[Tap]) -> std::result::Result<Vec<LayerStats>, E>,
) -> std::result::Result<Plan, E> {
    let method = calibrated.method;
    check_targets(selected, config)?;
    if method != Method::Magnitude {
        if config.scope == Scope::Global {
            return Err(Error::Usage(format!(
                "--method {} compares scores within each output row: --scope global applies to \
                 magnitude only",
                method.name()
            ))
            .into());
        }
        if matches!(config.pattern, Pattern::Block { .. }) {
            return Err(Error::Usage(format!(
                "--method {} prunes unstructured or N:M, not pattern {}",
                method.name(),
                config.pattern
            ))
            .into());
        }
    } else if calibrated.order == Order::Sequential {
        return Err(Error::Usage(
            "--calibration-order sequential has no effect with --method magnitude, whose masks \
             do not depend on activations"
                .into(),
        )
        .into());
    }
    let mut layers = Vec::new();
    let mut fallback = Vec::new();
    let mut warnings = Vec::new();
    for &weight in selected {
        match layer_of(model, weight) {
            Ok((view, tap)) => layers.push(Layer {
                weight,
                view,
                tap,
                node: weight.consumer.as_ref().map_or(0, |c| c.node),
            }),
            Err(reason) => {
                if method != Method::Magnitude {
                    warnings.push(format!(
                        "`{}`: pruned by magnitude instead of {}: {reason}",
                        weight.id,
                        method.name()
                    ));
                }
                fallback.push((weight, reason));
            }
        }
    }
    // Magnitude decides masks without activations; calibration then measures and corrects.
    let magnitude_selection: Vec<&Weight> = if method == Method::Magnitude {
        selected.to_vec()
    } else {
        fallback.iter().map(|(w, _)| *w).collect()
    };
    // The targets that name calibrated weights only are not the fallback's to check.
    let magnitude_config = PruneConfig {
        sparsity_for: config
            .sparsity_for
            .iter()
            .filter(|(pattern, _)| magnitude_selection.iter().any(|w| pattern.is_match(&w.id)))
            .cloned()
            .collect(),
        ..config.clone()
    };
    let magnitude = plan(model, &magnitude_selection, &magnitude_config)?;
    let mut edits: Vec<Edit> = Vec::new();
    let mut decided: Vec<(usize, WeightOutcome)> = Vec::new();
    let position = |id: &str| selected.iter().position(|w| w.id == id).expect("selected");
    for mut outcome in magnitude.outcomes {
        if let Some((_, reason)) = fallback.iter().find(|(w, _)| w.id == outcome.id) {
            outcome.method = Some(Method::Magnitude.name());
            outcome.notes.push(format!("not calibrated: {reason}"));
        }
        decided.push((position(&outcome.id), outcome));
    }
    let magnitude_edits = magnitude.edits;
    if method == Method::Magnitude {
        // Measure the zeroings magnitude chose, and correct biases.
        let taps: Vec<Tap> = layers.iter().map(|l| l.tap.clone()).collect();
        let stats = statistics(model.bytes(), &taps)?;
        let results = layers
            .par_iter()
            .zip(&stats)
            .map(|(layer, stats)| {
                let at = decided
                    .iter()
                    .position(|(_, o)| o.id == layer.weight.id)
                    .expect("decided");
                let zeroing = magnitude_edits.iter().find_map(|e| match e {
                    Edit::Tensor {
                        tensor,
                        change: Change::Zero(z),
                    } if *tensor == layer.weight.tensor => Some(z),
                    _ => None,
                });
                measure(model, layer, stats, zeroing, calibrated).map(|m| (at, m))
            })
            .collect::<Result<Vec<_>>>()?;
        edits.extend(magnitude_edits);
        for (at, (extra, error, bias_note)) in results {
            let outcome = &mut decided[at].1;
            outcome.output_error = Some(error);
            outcome.notes.extend(bias_note);
            edits.extend(extra);
        }
    } else {
        edits.extend(magnitude_edits);
        layers.sort_by_key(|l| l.node);
        let thin = |layer: &Layer, stats: &LayerStats| {
            (method == Method::SparseGpt && stats.rows < stats.cols as u64).then(|| {
                format!(
                    "`{}`: X^T X from {} rows for {} columns is singular; dampening (1% of its \
                     mean diagonal) makes it invertible, but more calibration samples would \
                     describe the layer better",
                    layer.weight.id, stats.rows, stats.cols
                )
            })
        };
        let decisions: Vec<Decision> = match calibrated.order {
            Order::Dense => {
                let taps: Vec<Tap> = layers.iter().map(|l| l.tap.clone()).collect();
                let stats = statistics(model.bytes(), &taps)?;
                warnings.extend(layers.iter().zip(&stats).filter_map(|(l, s)| thin(l, s)));
                layers
                    .par_iter()
                    .zip(&stats)
                    .map(|(layer, stats)| decide(model, layer, stats, config, calibrated))
                    .collect::<Result<_>>()?
            }
            Order::Sequential => {
                let mut decisions = Vec::new();
                for layer in &layers {
                    let bytes = to_bytes(model, &edits)?;
                    let stats = statistics(&bytes, std::slice::from_ref(&layer.tap))?;
                    warnings.extend(thin(layer, &stats[0]));
                    let decision = decide(model, layer, &stats[0], config, calibrated)?;
                    edits.extend(decision.edits.iter().cloned());
                    decisions.push(decision);
                }
                decisions
            }
        };
        for decision in decisions {
            if calibrated.order == Order::Dense {
                edits.extend(decision.edits);
            }
            decided.push((position(&decision.outcome.id), decision.outcome));
        }
    }
    decided.sort_by_key(|(at, _)| *at);
    Ok(Plan {
        edits,
        outcomes: decided.into_iter().map(|(_, o)| o).collect(),
        warnings,
    })
}

/// The target of `weight` under `config`, or why its shape cannot take it.
fn target(
    weight: &Weight,
    view: &MatrixView,
    config: &PruneConfig,
) -> std::result::Result<Target, String> {
    let sparsity = config
        .sparsity_for
        .iter()
        .find(|(pattern, _)| pattern.is_match(&weight.id))
        .map_or(config.sparsity, |(_, s)| *s);
    match config.pattern {
        Pattern::NOfM { n, m } => {
            let len = view.nm_axis_len();
            if len % m != 0 {
                return Err(format!(
                    "the reduction axis has {len} elements, not a multiple of {m}"
                ));
            }
            Ok(Target::NOfM { n, m })
        }
        _ => Ok(Target::Fraction(sparsity)),
    }
}

/// The weight's values as `f64`, refusing NaN and infinities.
fn weight_values(model: &Model, weight: &Weight) -> Result<(Vec<f64>, u64)> {
    let (data, stats) = finite_values(model, weight, "score it")?;
    Ok((
        decode(model.tensors()[weight.tensor].dtype, &data),
        stats.zeros,
    ))
}

/// Wanda or SparseGPT for one layer, then its output error and bias correction.
fn decide(
    model: &Model,
    layer: &Layer,
    stats: &LayerStats,
    config: &PruneConfig,
    calibrated: &Calibrated,
) -> Result<Decision> {
    let weight = layer.weight;
    let tensor = &model.tensors()[weight.tensor];
    let (values, zeros_before) = weight_values(model, weight)?;
    let params = values.len() as u64;
    let mut outcome = WeightOutcome::new(weight, params, zeros_before, zeros_before, None);
    outcome.method = Some(calibrated.method.name());
    let target = match target(weight, &layer.view, config) {
        Ok(target) => target,
        Err(reason) => {
            outcome.skipped = Some(reason);
            return Ok(Decision {
                outcome,
                edits: Vec::new(),
            });
        }
    };
    let (change, new_values) = match calibrated.method {
        Method::Wanda => {
            let keep = wanda::keep(&layer.view, &values, stats, target);
            let new = values
                .iter()
                .zip(&keep)
                .map(|(v, k)| if *k { *v } else { 0.0 })
                .collect();
            (Change::Zero(Zeroing::Keep(keep)), new)
        }
        Method::SparseGpt => {
            if let Target::Fraction(s) = target {
                let wanted = zeros_for(s, params);
                if zeros_before >= wanted {
                    outcome.skipped = Some(format!(
                        "already holds {zeros_before} zeros, at least the {wanted} wanted"
                    ));
                    return Ok(Decision {
                        outcome,
                        edits: Vec::new(),
                    });
                }
            }
            let pruned = sparsegpt::prune(&layer.view, &values, stats, target)
                .map_err(|msg| Error::tensor(&weight.id, msg))?;
            // Kept weights never round to a zero that was not promised.
            let kept_nonzero: Vec<bool> = pruned
                .keep
                .iter()
                .zip(&pruned.values)
                .map(|(k, v)| *k && *v != 0.0)
                .collect();
            let bytes = encode(tensor.dtype, &pruned.values, &kept_nonzero);
            outcome.values_changed = true;
            (Change::Replace(bytes.clone()), decode(tensor.dtype, &bytes))
        }
        Method::Magnitude => unreachable!("magnitude is planned without decide"),
    };
    outcome.zeros_after = new_values.iter().filter(|v| **v == 0.0).count() as u64;
    outcome.sparsity = outcome.zeros_after as f64 / params.max(1) as f64;
    let mut edits = vec![Edit::Tensor {
        tensor: weight.tensor,
        change,
    }];
    outcome.output_error = Some(output_error::relative(
        &layer.view,
        stats,
        &values,
        &new_values,
    ));
    if calibrated.correct_bias {
        match correction(model, layer, stats, &values, &new_values)? {
            Ok((edit, note)) => {
                edits.push(edit);
                outcome.notes.push(note);
            }
            Err(note) => outcome.notes.push(note),
        }
    }
    Ok(Decision { outcome, edits })
}

/// For a weight magnitude pruned: its output error, and its bias edit when asked for.
fn measure(
    model: &Model,
    layer: &Layer,
    stats: &LayerStats,
    zeroing: Option<&Zeroing>,
    calibrated: &Calibrated,
) -> Result<(Vec<Edit>, f64, Option<String>)> {
    let tensor = &model.tensors()[layer.weight.tensor];
    let data = dense_bytes(model, tensor)?;
    let values = decode(tensor.dtype, &data);
    let new_values = match zeroing {
        Some(zeroing) => {
            let mut zeroed = Vec::with_capacity(data.len());
            crate::prune::zeroing::write_zeroed(tensor.dtype, &data, zeroing, &mut zeroed)
                .expect("writing to memory");
            debug_assert_eq!(
                count_zeros(tensor.dtype, &zeroed),
                zeroing.zeros_after(tensor.dtype, &data)
            );
            decode(tensor.dtype, &zeroed)
        }
        None => values.clone(),
    };
    let error = output_error::relative(&layer.view, stats, &values, &new_values);
    if !calibrated.correct_bias || zeroing.is_none() {
        return Ok((Vec::new(), error, None));
    }
    Ok(
        match correction(model, layer, stats, &values, &new_values)? {
            Ok((edit, note)) => (vec![edit], error, Some(note)),
            Err(note) => (Vec::new(), error, Some(note)),
        },
    )
}

/// The bias edit that keeps the layer's mean output, with a note for the report; or a note
/// saying why there is none.
fn correction(
    model: &Model,
    layer: &Layer,
    stats: &LayerStats,
    old: &[f64],
    new: &[f64],
) -> Result<std::result::Result<(Edit, String), String>> {
    let shift = |scale| bias::shift(&layer.view, stats, old, new, scale);
    Ok(match bias::find(model, layer.weight, layer.view.rows) {
        Ok(bias::Bias::Existing { tensor, scale }) => {
            let edit = bias::edit(model, tensor, &shift(scale))?;
            let name = &model.tensors()[tensor].name;
            Ok((edit, format!("bias `{name}` corrected")))
        }
        Ok(bias::Bias::New { node, scale, add }) => {
            Ok(bias::add(model, layer.weight, node, add, &shift(scale)))
        }
        Err(reason) => Err(format!("bias not corrected: {reason}")),
    })
}
