//! Calibrated channel removal for many candidates of one model, as `shrink --calibration` does
//! it once: channels ranked by what their consumers make of them on calibration data, the
//! consumers' kept weights refitted by least squares. The dense model's channel norms and its
//! consumers' input statistics do not depend on the candidate, so they are gathered once, and
//! each candidate costs only its least-squares solves.

use std::collections::BTreeMap;

use onnx_prune_core::calibrated::{LayerStats, Tap};
use onnx_prune_core::shrink::{self, Analysis, RefitOutcome, Request};
use onnx_prune_core::{Edit, Model};
use onnx_prune_verify::{Calibration, CalibrationOptions};

use crate::error::{Error, Result};
use crate::groups::{allocation, GroupUnit};

/// Calibration data's view of one model's channels, gathered once for every candidate.
pub struct ChannelCalibration {
    /// Squared norms of each channel of the consumers' inputs, by activation name.
    activations: BTreeMap<String, Vec<f64>>,
    /// Statistics of the consumers' inputs on the dense model (none without refit).
    stats: Vec<(Tap, LayerStats)>,
    /// What was done to the data to fit the model (casts).
    pub notes: Vec<String>,
}

/// The channels removed from each group, and the refit of their consumers.
#[derive(Debug, Default)]
pub struct Removal {
    /// Per group (indexed as [`Analysis::groups`]), the channels removed.
    pub removed: Vec<Vec<usize>>,
    /// New values of the refitted consumer weights and their biases.
    pub edits: Vec<Edit>,
    /// Per consumer weight, what its refit did.
    pub refits: Vec<RefitOutcome>,
}

impl ChannelCalibration {
    /// Reads the samples `options` names and runs `model` over them: the channel norms that
    /// rank channels and, with `refit`, the statistics that refit the consumers of every group
    /// of `units`.
    pub fn gather(
        model: &Model,
        analysis: &Analysis,
        units: &[GroupUnit],
        (options, refit): (&CalibrationOptions, bool),
    ) -> Result<ChannelCalibration> {
        let calibration = Calibration::load(model, options)?;
        let taps = analysis.activation_taps();
        let norms = calibration.channel_sq_norms(model.bytes(), &taps)?;
        let mut gathered = ChannelCalibration {
            activations: taps.into_iter().map(|(name, _)| name).zip(norms).collect(),
            stats: Vec::new(),
            notes: calibration.notes.clone(),
        };
        if refit {
            // Half of every unit removed: each consumer of a unit loses channels, so the refit
            // asks for the statistics of all of them, once.
            let half = allocation(analysis, units, &vec![0.5; units.len()], 1);
            let removed = shrink::choose(model, analysis, &gathered.rank(half))?;
            let mut stats = Vec::new();
            shrink::refit(model, analysis, &removed, |bytes, taps| {
                let gathered = calibration.statistics(bytes, taps)?;
                stats = taps.iter().cloned().zip(gathered.iter().cloned()).collect();
                Ok::<_, Error>(gathered)
            })?;
            gathered.stats = stats;
        }
        Ok(gathered)
    }

    /// `request`, ranking channels by the calibration data.
    pub fn rank(&self, request: Request) -> Request {
        Request {
            activations: Some(self.activations.clone()),
            ..request
        }
    }

    /// The refit of the consumers that lose channels under `removed` (nothing without refit).
    fn refit(
        &self,
        model: &Model,
        analysis: &Analysis,
        removed: &[Vec<usize>],
    ) -> Result<(Vec<Edit>, Vec<RefitOutcome>)> {
        if self.stats.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        shrink::refit(model, analysis, removed, |_, taps| {
            taps.iter()
                .map(|tap| {
                    self.stats
                        .iter()
                        .find(|(t, _)| t == tap)
                        .map(|(_, s)| s.clone())
                        .ok_or_else(|| {
                            Error::Usage(format!("no calibration statistics for `{}`", tap.id))
                        })
                })
                .collect()
        })
    }
}

/// The channels `request` removes from `model` (ranked by `calibration` when given), and the
/// refit of their consumers.
pub(crate) fn removal(
    model: &Model,
    analysis: &Analysis,
    request: Request,
    calibration: Option<&ChannelCalibration>,
) -> Result<Removal> {
    let Some(calibration) = calibration else {
        let removed = shrink::choose(model, analysis, &request)?;
        return Ok(Removal {
            removed,
            ..Removal::default()
        });
    };
    let removed = shrink::choose(model, analysis, &calibration.rank(request))?;
    let (edits, refits) = calibration.refit(model, analysis, &removed)?;
    Ok(Removal {
        removed,
        edits,
        refits,
    })
}
