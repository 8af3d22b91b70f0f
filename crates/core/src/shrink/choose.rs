//! Which channels go: dead channels exactly (no `--sparsity`), or each group's least important
//! channels by group L2 norm, normalised per group as Torch-Pruning does by default.

use num_integer::gcd;
use std::collections::BTreeMap;

use regex::Regex;

use crate::error::{Error, Result};
use crate::model::values::{dense_bytes, for_each_key, NON_FINITE_KEY};
use crate::model::Model;

use super::cuts::CutKind;
use super::Analysis;

/// How `--sparsity` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShrinkScope {
    /// That fraction of each group's channels.
    #[default]
    Group,
    /// That fraction of all selected channels, ranked together by normalised importance.
    Global,
}

/// How channels are scored for `--sparsity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Importance {
    /// The sum of squares of every member weight's slice for the channel (producers' out
    /// slices and consumers' in slices), divided by the group's mean.
    #[default]
    GroupL2,
}

/// What to remove.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `None`: dead channels only. `Some(s)`: that fraction, `0 <= s < 1`.
    pub sparsity: Option<f64>,
    /// How the fraction counts.
    pub scope: ShrinkScope,
    /// Kept channel counts are multiples of this (1: any count).
    pub round_to: usize,
    /// Groups whose producers match one of these (all when empty).
    pub include: Vec<Regex>,
    /// Groups whose producers match one of these are left alone.
    pub exclude: Vec<Regex>,
    /// Squared norms of each channel of the consumers' input activations over calibration
    /// data, by activation name (see [`Analysis::activation_taps`]): importance becomes
    /// `sum over consumers of ||W_consumer[:, c]|| * ||X_c||`.
    pub activations: Option<BTreeMap<String, Vec<f64>>>,
    /// With `--scope group`: per group (indexed as [`Analysis::groups`]), its own fraction
    /// instead of `sparsity` (a per-group allocation, as `--sparsity auto` chooses).
    pub group_sparsity: Option<Vec<f64>>,
}

/// Per position of a cut axis: the sum of squares of its slice and whether the slice is zero.
fn axis_stats(model: &Model, analysis: &Analysis, cut: usize) -> Result<Vec<(f64, bool)>> {
    let cut = &analysis.cuts[cut];
    let tensor = &model.tensors()[cut.tensor];
    let data = dense_bytes(model, tensor)?;
    let dims: Vec<usize> = tensor.dims.iter().map(|&d| d as usize).collect();
    let n = dims[cut.axis];
    let inner: usize = dims[cut.axis + 1..].iter().product();
    let mut stats = vec![(0.0f64, true); n];
    let mut bad = None;
    for_each_key(tensor.dtype, &data, 0, |i, key| {
        if key >= NON_FINITE_KEY {
            bad.get_or_insert(i);
        }
        let v = f64::from_bits(key);
        let s = &mut stats[(i / inner) % n];
        s.0 += v * v;
        s.1 &= key == 0;
    });
    if let Some(i) = bad {
        return Err(Error::tensor(
            &tensor.name,
            format!("element {i} is NaN or infinite; refusing to shrink"),
        ));
    }
    Ok(stats)
}

/// Per group and unit: (importance, producer side all zero, consumer side all zero, has a
/// consumer).
struct Scores {
    importance: Vec<Vec<f64>>,
    dead: Vec<Vec<bool>>,
}

/// Refuses an `--include` or `--exclude` pattern that matches no group's producer (blocked
/// groups included): a flag that selects nothing is a mistake, not a no-op.
pub fn patterns_match(analysis: &Analysis, include: &[Regex], exclude: &[Regex]) -> Result<()> {
    for (flag, patterns) in [("--include", include), ("--exclude", exclude)] {
        let unmatched = patterns.iter().find(|r| {
            !analysis
                .groups
                .iter()
                .any(|g| g.producers.iter().any(|p| r.is_match(p)))
        });
        if let Some(r) = unmatched {
            return Err(Error::Usage(format!(
                "{flag} `{r}` matches no channel group's producer (--dry-run lists them)"
            )));
        }
    }
    Ok(())
}

/// Why no group is selected: none found (and where the weights are, when a subgraph holds
/// them), all blocked, or none matching `--include`/`--exclude`.
fn nothing_selected(model: &Model, analysis: &Analysis) -> String {
    let nested = model.graphs()[0]
        .nodes
        .iter()
        .enumerate()
        .find(|(_, n)| !n.subgraphs.is_empty());
    match nested {
        Some((i, node)) if analysis.groups.is_empty() => format!(
            "found no channel group in the main graph: its weights are inside the subgraphs of \
             `{}` ({}), and shrink does not enter subgraphs",
            node.label(i),
            node.op_type
        ),
        _ if analysis.groups.is_empty() => "found no channel group: no Conv, ConvTranspose, \
            Gemm or MatMul has a constant weight of its own"
            .to_string(),
        _ if analysis.open().next().is_none() => "every channel group is blocked (see \
            --dry-run for the node that blocks each)"
            .to_string(),
        _ => "--include/--exclude select no open channel group (see --dry-run for their \
            producers)"
            .to_string(),
    }
}

fn scores(
    model: &Model,
    analysis: &Analysis,
    activations: Option<&BTreeMap<String, Vec<f64>>>,
) -> Result<Scores> {
    let units: Vec<usize> = analysis.groups.iter().map(|g| g.units()).collect();
    let mut importance: Vec<Vec<f64>> = units.iter().map(|&u| vec![0.0; u]).collect();
    let mut unread: Vec<Vec<bool>> = units.iter().map(|&u| vec![true; u]).collect();
    let mut read: Vec<Vec<bool>> = units.iter().map(|&u| vec![false; u]).collect();
    let mut stats = BTreeMap::new();
    for (i, cut) in analysis.cuts.iter().enumerate() {
        let s = axis_stats(model, analysis, i)?;
        // With activations: the consumer's weights for a position times the norm of the
        // activation there (folded onto the positions for grouped convolutions).
        let norms = match (activations, &cut.reads) {
            (Some(a), Some((name, _))) => a.get(name).map(|x| {
                let n = cut.owners.len();
                let mut folded = vec![0.0; n];
                for (c, v) in x.iter().enumerate() {
                    folded[c % n] += v;
                }
                folded
            }),
            _ => None,
        };
        for (p, owner) in cut.owners.iter().enumerate() {
            let Some((g, u)) = *owner else { continue };
            match (&norms, activations.is_some(), cut.kind) {
                (Some(x), _, _) => importance[g][u] += (s[p].0 * x[p]).sqrt(),
                (None, false, CutKind::Producer | CutKind::Consumer) => importance[g][u] += s[p].0,
                _ => {}
            }
            if cut.kind == CutKind::Consumer {
                read[g][u] = true;
                unread[g][u] &= s[p].1;
            }
        }
        stats.insert(i, s);
    }
    // Producer side: every clause touching the unit has a cut that is zero for it.
    let mut made_zero: Vec<Vec<bool>> = analysis
        .groups
        .iter()
        .map(|g| vec![g.not_zero.is_none(); g.units()])
        .collect();
    for clause in &analysis.clauses {
        let mut touched: BTreeMap<(usize, usize), bool> = BTreeMap::new();
        for &c in clause {
            let mut zero_here: BTreeMap<(usize, usize), bool> = BTreeMap::new();
            for (p, owner) in analysis.cuts[c].owners.iter().enumerate() {
                if let Some(unit) = *owner {
                    *zero_here.entry(unit).or_insert(true) &= stats[&c][p].1;
                }
            }
            for (unit, zero) in zero_here {
                *touched.entry(unit).or_insert(false) |= zero;
            }
        }
        for ((g, u), satisfied) in touched {
            made_zero[g][u] &= satisfied;
        }
    }
    let dead = (0..units.len())
        .map(|g| {
            (0..units[g])
                .map(|u| made_zero[g][u] || (read[g][u] && unread[g][u]))
                .collect()
        })
        .collect();
    Ok(Scores { importance, dead })
}

/// The channels to remove from each group (sorted; empty for blocked or unselected groups).
/// Errors when the selection matches no open group.
pub fn choose(model: &Model, analysis: &Analysis, request: &Request) -> Result<Vec<Vec<usize>>> {
    patterns_match(analysis, &request.include, &request.exclude)?;
    let round = request.round_to.max(1);
    let selected: Vec<bool> = analysis
        .groups
        .iter()
        .map(|g| {
            let any = |patterns: &[Regex]| {
                g.producers
                    .iter()
                    .any(|p| patterns.iter().any(|r| r.is_match(p)))
            };
            g.blocked.is_empty()
                && (request.include.is_empty() || any(&request.include))
                && !any(&request.exclude)
        })
        .collect();
    if !selected.iter().any(|&s| s) {
        let mut why = nothing_selected(model, analysis);
        if let Some(port) = analysis.groups.iter().find_map(|g| g.interface_block()) {
            why.push_str(&format!(
                "; some stay whole because a KV cache holds their heads ({port}): give \
                 --allow-interface-change to remove them from the caches too"
            ));
        }
        return Err(Error::Usage(why));
    }
    let scores = scores(model, analysis, request.activations.as_ref())?;
    // Units kept must be a multiple of `step` so that kept channels are a multiple of `round`.
    let step = |g: usize| {
        let group = &analysis.groups[g];
        let per_unit = group.channels / group.units();
        let step = round / gcd(round, per_unit);
        if step <= group.units() {
            step
        } else {
            group.units()
        }
    };
    let keep_rounded = |g: usize, keep: usize| {
        let s = step(g);
        (keep.div_ceil(s) * s).clamp(s, analysis.groups[g].units())
    };
    let mut remove_units: Vec<Vec<usize>> = vec![Vec::new(); analysis.groups.len()];
    let ranked = |g: usize| -> Vec<usize> {
        let imp = &scores.importance[g];
        let mut order: Vec<usize> = (0..imp.len()).collect();
        order.sort_by(|&a, &b| imp[a].total_cmp(&imp[b]).then(a.cmp(&b)));
        order
    };
    match request.sparsity {
        None => {
            for g in (0..analysis.groups.len()).filter(|&g| selected[g]) {
                let units = analysis.groups[g].units();
                let dead: Vec<usize> = (0..units).filter(|&u| scores.dead[g][u]).collect();
                let keep = keep_rounded(g, units - dead.len());
                let n = units - keep;
                remove_units[g] = dead[dead.len() - n..].to_vec();
            }
        }
        Some(s) if request.scope == ShrinkScope::Group => {
            for g in (0..analysis.groups.len()).filter(|&g| selected[g]) {
                let s = request.group_sparsity.as_ref().map_or(s, |all| all[g]);
                let units = analysis.groups[g].units();
                let remove = round_half_even(s * units as f64);
                let keep = keep_rounded(g, units - remove.min(units - 1));
                remove_units[g] = ranked(g)[..units - keep].to_vec();
            }
        }
        Some(s) => {
            let mut all = Vec::new();
            let mut total = 0usize;
            for g in (0..analysis.groups.len()).filter(|&g| selected[g]) {
                let group = &analysis.groups[g];
                total += group.channels;
                let imp = &scores.importance[g];
                let mean = imp.iter().sum::<f64>() / imp.len() as f64;
                for (u, &v) in imp.iter().enumerate() {
                    let normalised = if mean > 0.0 { v / mean } else { 0.0 };
                    all.push((normalised, g, u, group.channels / group.units()));
                }
            }
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            let target = round_half_even(s * total as f64);
            let mut removed = 0;
            for (_, g, u, channels) in all {
                if removed >= target {
                    break;
                }
                if analysis.groups[g].units() - remove_units[g].len() > step(g) {
                    remove_units[g].push(u);
                    removed += channels;
                }
            }
            for (g, units) in remove_units.iter_mut().enumerate() {
                let all = analysis.groups[g].units();
                let keep = keep_rounded(g, all - units.len());
                // The least important of those picked stay removed.
                units.truncate(all - keep);
            }
        }
    }
    Ok(analysis
        .groups
        .iter()
        .zip(remove_units)
        .map(|(group, units)| {
            let mut channels: Vec<usize> = (0..group.channels)
                .filter(|&c| units.contains(&group.unit_of(c)))
                .collect();
            channels.sort_unstable();
            channels
        })
        .collect())
}

/// Rounds half to even, as Python's `round` does.
fn round_half_even(x: f64) -> usize {
    let r = x.round();
    let r = if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - 1.0
    } else {
        r
    };
    r.max(0.0) as usize
}
