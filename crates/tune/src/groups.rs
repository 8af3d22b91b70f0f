//! Channel groups as units of sensitivity and search: each open group shrunk alone at each
//! sparsity, its least important channels removed as `shrink --sparsity` removes them, and
//! checked against the dense model.

use onnx_prune_core::shrink::{self, Analysis, Request};
use onnx_prune_core::Model;
use onnx_prune_verify::CheckReport;
use regex::Regex;

use crate::baseline::Baseline;
use crate::channels::{removal, ChannelCalibration};
use crate::error::Result;
use crate::progress::Progress;
use crate::sensitivity::each_candidate;

/// One open group to measure: where it is, its name and its parameters (those its channels
/// hold in every member).
#[derive(Debug, Clone)]
pub struct GroupUnit {
    /// Index in [`Analysis::groups`].
    pub group: usize,
    /// The name shrink's `--include` matches: the group's first producer.
    pub name: String,
    /// Parameters the group's channels hold.
    pub params: u64,
}

/// The request removing, from each group of `units`, its fraction of `sparsities` (channel
/// counts kept multiples of `round_to`), and nothing from any other group.
pub fn allocation(
    analysis: &Analysis,
    units: &[GroupUnit],
    sparsities: &[f64],
    round_to: usize,
) -> Request {
    let mut per_group = vec![0.0; analysis.groups.len()];
    for (unit, &s) in units.iter().zip(sparsities) {
        per_group[unit.group] = s;
    }
    Request {
        sparsity: Some(0.0),
        round_to,
        group_sparsity: Some(per_group),
        ..Request::default()
    }
}

/// The request removing fraction `sparsity` of group `name`'s channels, and of no other group.
fn alone(name: &str, sparsity: f64) -> Request {
    Request {
        sparsity: Some(sparsity),
        round_to: 1,
        include: vec![Regex::new(&format!("^{}$", regex::escape(name))).expect("an escaped name")],
        ..Request::default()
    }
}

/// The open groups of `analysis` whose producers `include`/`exclude` select (as `shrink`
/// selects them) and that have more than one unit to remove, with their parameter counts.
pub fn group_units(
    model: &Model,
    analysis: &Analysis,
    include: &[Regex],
    exclude: &[Regex],
) -> Result<Vec<GroupUnit>> {
    shrink::patterns_match(analysis, include, exclude)?;
    let matches = |patterns: &[Regex], producers: &[String]| {
        producers
            .iter()
            .any(|p| patterns.iter().any(|r| r.is_match(p)))
    };
    analysis
        .open()
        .filter(|g| include.is_empty() || matches(include, &g.producers))
        .filter(|g| !matches(exclude, &g.producers))
        // A group is never emptied: one unit leaves nothing to remove.
        .filter(|g| g.units() > 1)
        .map(|g| {
            // Every unit of a group (a channel, or one per group of a grouped Conv) holds as
            // many parameters as any other: count one unit's removal and scale.
            let mut removed = vec![Vec::new(); analysis.groups.len()];
            removed[g.id] = g.channels_of(0).collect();
            let totals = shrink::shrink_totals(model, analysis, &removed).map_err(|e| {
                crate::Error::from(e).context(format!("measuring channel group `{}`", g.name()))
            })?;
            let per_unit = totals.params_before - totals.params_after;
            Ok(GroupUnit {
                group: g.id,
                name: g.name().to_string(),
                params: per_unit * g.units() as u64,
            })
        })
        .collect()
}

/// Checks `model` against `baseline` with each group alone shrunk at each sparsity (channels
/// ranked and consumers refitted by `calibration` when given), in parallel, counting the
/// checks on `progress`: the report of group `u` at sparsity `s` is at
/// `u * sparsities.len() + s`.
pub fn measure_groups(
    (model, analysis, calibration): (&Model, &Analysis, Option<&ChannelCalibration>),
    (units, sparsities): (&[GroupUnit], &[f64]),
    baseline: &Baseline,
    progress: &dyn Progress,
) -> Result<Vec<CheckReport>> {
    each_candidate(
        (units.len(), sparsities),
        (
            "shrinking one channel group at a time and running tract",
            progress,
        ),
        |u, s, candidate| {
            let unit = &units[u];
            let request = alone(&unit.name, sparsities[s]);
            let shrunk = removal(model, analysis, request, calibration)?;
            shrink::save_shrunk(model, analysis, &shrunk.removed, &shrunk.edits, candidate)?;
            baseline.check(candidate).map_err(|e| {
                e.context(format!(
                    "checking group `{}` at {}",
                    unit.name, sparsities[s]
                ))
            })
        },
    )
}
