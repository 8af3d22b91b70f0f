//! The `shrink --report` JSON: per group what was removed, and the totals.

use serde::Serialize;

use super::{Analysis, InterfaceChange, RefitOutcome, ShrinkTotals};

/// One group in the report.
#[derive(Debug, Clone, Serialize)]
pub struct GroupOutcome {
    /// Group index (as `--dry-run` numbers them).
    pub id: usize,
    /// Nodes that make the channels.
    pub producers: Vec<String>,
    /// Nodes that read them.
    pub consumers: Vec<String>,
    /// Channel count before.
    pub channels_before: usize,
    /// Channel count after.
    pub channels_after: usize,
    /// Removed channel indices (in the producers' numbering).
    pub removed: Vec<usize>,
    /// Attention heads before, for a group of heads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heads_before: Option<usize>,
    /// And after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heads_after: Option<usize>,
    /// Removed heads (in the producers' numbering), for a group of heads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_heads: Option<Vec<usize>>,
    /// What blocks the group, if anything.
    pub blocked: Vec<String>,
}

/// Totals before and after.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ShrinkReportTotals {
    /// Elements of floating-point constants before.
    pub params_before: u64,
    /// And after.
    pub params_after: u64,
    /// Multiply-accumulates of one inference at the model's input shapes, before (when they
    /// could be measured).
    pub macs_before: Option<u64>,
    /// And after.
    pub macs_after: Option<u64>,
    /// Bytes on disk of the model file and its external data files before.
    pub bytes_before: u64,
    /// And after (what `-o` wrote, or what it would write).
    pub bytes_after: u64,
}

/// The report of one shrink.
#[derive(Debug, Clone, Serialize)]
pub struct ShrinkReport {
    /// `dead` (no `--sparsity`), `group-l2`, or `activation` (with calibration data).
    pub method: &'static str,
    /// `--sparsity`, if given.
    pub sparsity: Option<f64>,
    /// Every group.
    pub groups: Vec<GroupOutcome>,
    /// Totals.
    pub totals: ShrinkReportTotals,
    /// Graph inputs and outputs whose shapes changed (KV caches that lost heads, with
    /// `--allow-interface-change`): the caller feeds and reads them with the new shapes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interface_changes: Vec<InterfaceChange>,
    /// Per consumer of a shrunk group, its least-squares refit (with calibration data and
    /// without `--no-refit`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refits: Vec<RefitOutcome>,
    /// What the run noted about its data (calibration data cast to the model's type).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl ShrinkReport {
    /// The report of removing `removed` (per group) with `totals` and, when measured, MACs.
    pub fn new(
        analysis: &Analysis,
        removed: &[Vec<usize>],
        sparsity: Option<f64>,
        calibrated: bool,
        totals: ShrinkTotals,
        macs: Option<(u64, u64)>,
    ) -> ShrinkReport {
        let groups = analysis
            .groups
            .iter()
            .zip(removed)
            .map(|(g, removed)| {
                let heads = (g.block > 1).then(|| {
                    let mut units: Vec<usize> = removed.iter().map(|&c| g.unit_of(c)).collect();
                    units.sort_unstable();
                    units.dedup();
                    units
                });
                GroupOutcome {
                    id: g.id,
                    producers: g.producers.clone(),
                    consumers: g.consumers.clone(),
                    channels_before: g.channels,
                    channels_after: g.channels - removed.len(),
                    removed: removed.clone(),
                    heads_before: heads.as_ref().map(|_| g.units()),
                    heads_after: heads.as_ref().map(|h| g.units() - h.len()),
                    removed_heads: heads,
                    blocked: g.blocked.clone(),
                }
            })
            .collect();
        ShrinkReport {
            method: match (sparsity, calibrated) {
                (None, _) => "dead",
                (Some(_), false) => "group-l2",
                (Some(_), true) => "activation",
            },
            sparsity,
            groups,
            totals: ShrinkReportTotals {
                params_before: totals.params_before,
                params_after: totals.params_after,
                macs_before: macs.map(|m| m.0),
                macs_after: macs.map(|m| m.1),
                bytes_before: totals.bytes_before,
                bytes_after: totals.bytes_after,
            },
            interface_changes: analysis.interface_changes(removed),
            refits: Vec::new(),
            notes: Vec::new(),
        }
    }
}
