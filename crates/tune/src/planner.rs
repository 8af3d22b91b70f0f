//! Planning many candidates of one model (sensitivity curves, the `--sparsity auto` search) by
//! magnitude or by a calibrated method. The dense model's calibration statistics do not depend
//! on the candidate, so they are gathered once, for every selected weight, and reused: the
//! calibration cache.

use std::collections::HashMap;

use onnx_prune_core::calibrated::{plan_calibrated, tap, Calibrated, LayerStats, Tap};
use onnx_prune_core::prune::{plan, Plan, PruneConfig};
use onnx_prune_core::{Model, Weight};
use onnx_prune_verify::{Calibration, CalibrationOptions};

use crate::error::{Error, Result};

/// Plans candidates of one model.
pub struct Planner<'m> {
    model: &'m Model,
    calibrated: Option<Calibrated>,
    calibration: Option<Calibration>,
    /// Statistics of the dense model, by weight id.
    dense: HashMap<String, LayerStats>,
}

impl<'m> Planner<'m> {
    /// A planner for `model`: by magnitude, or by the calibrated method asked for, whose
    /// statistics for every weight of `selected` are gathered now, in one pass.
    pub fn new(
        model: &'m Model,
        calibrated: Option<(Calibrated, CalibrationOptions)>,
        selected: &[&Weight],
    ) -> Result<Planner<'m>> {
        let Some((request, options)) = calibrated else {
            return Ok(Planner {
                model,
                calibrated: None,
                calibration: None,
                dense: HashMap::new(),
            });
        };
        let calibration = Calibration::load(model, &options)?;
        let taps: Vec<Tap> = selected.iter().filter_map(|w| tap(model, w).ok()).collect();
        let stats = calibration.statistics(model.bytes(), &taps)?;
        let dense = taps.into_iter().map(|t| t.id).zip(stats).collect();
        Ok(Planner {
            model,
            calibrated: Some(request),
            calibration: Some(calibration),
            dense,
        })
    }

    /// The model candidates are planned from.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Plans the pruning of `selected` under `config`.
    pub fn plan(&self, selected: &[&Weight], config: &PruneConfig) -> Result<Plan> {
        let (Some(request), Some(calibration)) = (&self.calibrated, &self.calibration) else {
            return Ok(plan(self.model, selected, config)?);
        };
        plan_calibrated(self.model, selected, config, request, |bytes, taps| {
            // Candidates planned from the dense model reuse its statistics; a sequential order
            // hands partly pruned models, whose statistics are gathered anew.
            if std::ptr::eq(bytes, self.model.bytes()) {
                taps.iter()
                    .map(|t| {
                        self.dense.get(&t.id).cloned().ok_or_else(|| {
                            Error::Usage(format!("no calibration statistics for `{}`", t.id))
                        })
                    })
                    .collect()
            } else {
                Ok(calibration.statistics(bytes, taps)?)
            }
        })
    }
}
