//! Pruning many candidates of one model (sensitivity curves, the `--sparsity auto` search) by
//! magnitude or by a calibrated method. The dense model's calibration statistics do not depend
//! on the candidate, so they are gathered once, for every selected weight, and reused.

use std::collections::HashMap;

use anyhow::{Context, Result};
use onnx_prune_core::{
    plan, plan_calibrated, tap, Calibrated, LayerStats, Model, Plan, PruneConfig, Tap, Weight,
};
use onnx_prune_verify::{Calibration, CalibrationOptions};

/// Plans candidates of one model.
pub struct Pruner<'m> {
    model: &'m Model,
    calibrated: Option<Calibrated>,
    calibration: Option<Calibration>,
    /// Statistics of the dense model, by weight id.
    dense: HashMap<String, LayerStats>,
}

impl<'m> Pruner<'m> {
    /// A pruner for `model`: by magnitude, or by the calibrated method asked for, whose
    /// statistics for every weight of `selected` are gathered now, in one pass.
    pub fn new(
        model: &'m Model,
        calibrated: Option<(Calibrated, CalibrationOptions)>,
        selected: &[&Weight],
    ) -> Result<Pruner<'m>> {
        let Some((request, options)) = calibrated else {
            return Ok(Pruner {
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
        Ok(Pruner {
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
                        self.dense
                            .get(&t.id)
                            .cloned()
                            .with_context(|| format!("no calibration statistics for `{}`", t.id))
                    })
                    .collect()
            } else {
                Ok(calibration.statistics(bytes, taps)?)
            }
        })
    }
}
