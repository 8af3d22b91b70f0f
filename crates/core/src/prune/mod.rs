//! Magnitude pruning: per tensor or with one global threshold, unstructured, N:M along the
//! reduction axis, or whole blocks scored by their L1 norm.

mod report;
pub(crate) mod select;
pub(crate) mod size;
pub(crate) mod threshold;
pub(crate) mod zeroing;

pub use report::{FileSizes, OutcomeTotals, RewriteReport};
pub use select::{select, Selection};
pub use size::{compressed_size, CompressedSize};
pub use threshold::{cut, Cut, Segment};
pub use zeroing::{write_zeroed, Zeroing};

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;
use regex::Regex;

use crate::error::{Error, Result};
use crate::model::values::{count_zeros, dense_bytes, finite_values, magnitude_key};
use crate::model::weights::Weight;
use crate::model::Model;
use crate::proto::DataType;
use crate::write::Edit;

/// Where the sparsity target applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Each weight reaches the target on its own.
    #[default]
    Tensor,
    /// One magnitude threshold across all selected weights, as
    /// `torch.nn.utils.prune.global_unstructured` does.
    Global,
}

/// The shape of what is zeroed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pattern {
    /// Any element.
    #[default]
    Unstructured,
    /// In every group of `m` consecutive elements along the reduction axis, the `n` largest
    /// are kept and the others zeroed, as the N:M literature and TF-MOT's `sparsity_m_by_n`
    /// define it (`1:4` is 75% zeros; `2:4` is what sparse tensor cores run).
    NOfM {
        /// Kept per group.
        n: usize,
        /// Group size.
        m: usize,
    },
    /// Whole `rows x cols` blocks of the weight viewed as `[dims[0], rest]`.
    Block {
        /// Block height.
        rows: usize,
        /// Block width.
        cols: usize,
    },
}

impl FromStr for Pattern {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Pattern, String> {
        let positive = |v: &str| v.parse::<usize>().ok().filter(|&v| v > 0);
        if s == "unstructured" {
            return Ok(Pattern::Unstructured);
        }
        if let Some(block) = s.strip_prefix("block:") {
            if let Some((r, c)) = block.split_once('x') {
                if let (Some(rows), Some(cols)) = (positive(r), positive(c)) {
                    return Ok(Pattern::Block { rows, cols });
                }
            }
            return Err(format!(
                "`{s}` is not a block pattern: write block:RxC, e.g. block:4x4"
            ));
        }
        if let Some((n, m)) = s.split_once(':') {
            if let (Some(n), Some(m)) = (positive(n), positive(m)) {
                if n < m {
                    return Ok(Pattern::NOfM { n, m });
                }
            }
            return Err(format!(
                "`{s}` is not an N:M pattern: write N:M with 0 < N < M, e.g. 2:4"
            ));
        }
        Err(format!(
            "unknown pattern `{s}`: use unstructured, N:M (e.g. 2:4) or block:RxC (e.g. block:4x4)"
        ))
    }
}

impl Pattern {
    /// The fraction of zeros the pattern fixes by itself (N:M), if it does.
    pub fn fixed_sparsity(self) -> Option<f64> {
        match self {
            Pattern::NOfM { n, m } => Some((m - n) as f64 / m as f64),
            _ => None,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Unstructured => write!(f, "unstructured"),
            Pattern::NOfM { n, m } => write!(f, "{n}:{m}"),
            Pattern::Block { rows, cols } => write!(f, "block:{rows}x{cols}"),
        }
    }
}

/// A validated magnitude-pruning request.
#[derive(Debug, Clone, Default)]
pub struct PruneConfig {
    /// Fraction of zeros wanted, in `[0, 1)`. Unused by N:M patterns, whose ratio is fixed.
    pub sparsity: f64,
    /// Where the target applies.
    pub scope: Scope,
    /// What is zeroed.
    pub pattern: Pattern,
    /// Per-weight targets: the first pattern matching a weight's id gives its sparsity.
    pub sparsity_for: Vec<(Regex, f64)>,
}

/// What pruning did to one weight.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WeightOutcome {
    /// Weight id.
    pub id: String,
    /// Index into [`Model::tensors`].
    #[serde(skip)]
    pub tensor: usize,
    /// Elements.
    pub params: u64,
    /// Zeros before pruning.
    pub zeros_before: u64,
    /// Zeros after pruning.
    pub zeros_after: u64,
    /// `zeros_after / params`.
    pub sparsity: f64,
    /// Why the weight was left alone, if it was.
    pub skipped: Option<String>,
    /// Whether the output stores it sparsely (`--storage sparse`).
    pub stored_sparse: bool,
    /// Why the requested storage was not used for it, if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_note: Option<String>,
    /// How it was scored, in a calibrated prune (see [`crate::calibrated::Method`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'static str>,
    /// `||WX - W'X||^2 / ||WX||^2` on the calibration data, when there is some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_error: Option<f64>,
    /// Whether kept elements changed value too (SparseGPT updates them).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub values_changed: bool,
    /// What else happened to it, or did not (bias correction, fallbacks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Pruning decisions for a model, ready for [`crate::save`].
#[derive(Debug, Clone)]
pub struct Plan {
    /// Changes to write.
    pub edits: Vec<Edit>,
    /// One entry per selected weight, in file order.
    pub outcomes: Vec<WeightOutcome>,
    /// What the user should hear about (weights pruned another way than asked).
    pub warnings: Vec<String>,
}

struct Loaded<'m, 'w> {
    weight: &'w Weight,
    dtype: DataType,
    dims: Vec<i64>,
    data: Cow<'m, [u8]>,
    zeros_before: u64,
}

impl WeightOutcome {
    pub(crate) fn new(
        weight: &Weight,
        params: u64,
        zeros_before: u64,
        zeros_after: u64,
        skipped: Option<String>,
    ) -> Self {
        WeightOutcome {
            id: weight.id.clone(),
            tensor: weight.tensor,
            params,
            zeros_before,
            zeros_after,
            sparsity: if params == 0 {
                0.0
            } else {
                zeros_after as f64 / params as f64
            },
            skipped,
            stored_sparse: false,
            storage_note: None,
            method: None,
            output_error: None,
            values_changed: false,
            notes: Vec::new(),
        }
    }
}

/// How many of `n` elements a sparsity zeroes: `round(sparsity * n)`, half to even as Python's
/// `round` in `torch.nn.utils.prune` (265 elements at 0.5: 132).
pub fn zeros_for(sparsity: f64, n: u64) -> u64 {
    (sparsity * n as f64).round_ties_even() as u64
}

/// Checks a sparsity value given by `what` (a flag name).
pub fn check_sparsity(value: f64, what: &str) -> Result<f64> {
    if (0.0..1.0).contains(&value) {
        Ok(value)
    } else {
        Err(Error::Usage(format!(
            "{what} must be in [0, 1), got {value}"
        )))
    }
}

/// Refuses a `--sparsity-for` target that names none of the selected weights.
pub(crate) fn check_targets(selected: &[&Weight], config: &PruneConfig) -> Result<()> {
    for (pattern, _) in &config.sparsity_for {
        if !selected.iter().any(|w| pattern.is_match(&w.id)) {
            return Err(Error::Usage(format!(
                "--sparsity-for `{pattern}` matches none of the {} selected weights \
                 (see `onnx-prune prune --dry-run` for their ids)",
                selected.len()
            )));
        }
    }
    Ok(())
}

/// Decides what to zero in the `selected` weights of `model`.
pub fn plan(model: &Model, selected: &[&Weight], config: &PruneConfig) -> Result<Plan> {
    if config.scope == Scope::Global && config.pattern != Pattern::Unstructured {
        return Err(Error::Usage(format!(
            "--scope global applies to unstructured pruning only, not to pattern {}",
            config.pattern
        )));
    }
    check_targets(selected, config)?;
    let loaded = selected
        .par_iter()
        .map(|&weight| {
            let tensor = &model.tensors()[weight.tensor];
            let (data, stats) = finite_values(model, weight, "rank it by magnitude")?;
            let zeros_before = stats.zeros;
            Ok(Loaded {
                weight,
                dtype: tensor.dtype,
                dims: tensor.dims.clone(),
                data,
                zeros_before,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let target = |w: &Weight| {
        config
            .sparsity_for
            .iter()
            .find(|(pattern, _)| pattern.is_match(&w.id))
            .map(|(_, s)| *s)
    };
    let in_pool = |w: &Weight| config.scope == Scope::Global && target(w).is_none();
    // Each decision: the zeroing and the zeros it leaves, or why the weight is left alone.
    let mut decisions: Vec<Option<std::result::Result<(Zeroing, u64), String>>> = loaded
        .par_iter()
        .map(|item| {
            if in_pool(item.weight) {
                return None;
            }
            let sparsity = target(item.weight).unwrap_or(config.sparsity);
            let with_zeros = |zeroing: Zeroing| {
                let zeros = zeroing.zeros_after(item.dtype, &item.data);
                (zeroing, zeros)
            };
            Some(match config.pattern {
                Pattern::Unstructured => Ok(threshold_zeroing(&[item], sparsity).remove(0)),
                Pattern::NOfM { n, m } => n_of_m(item, n, m).map(with_zeros),
                Pattern::Block { rows, cols } => Ok(with_zeros(block(item, rows, cols, sparsity))),
            })
        })
        .collect();
    let pool: Vec<(usize, &Loaded)> = loaded
        .iter()
        .enumerate()
        .filter(|(_, l)| in_pool(l.weight))
        .collect();
    if !pool.is_empty() {
        let items: Vec<&Loaded> = pool.iter().map(|(_, l)| *l).collect();
        for ((i, _), decided) in pool.iter().zip(threshold_zeroing(&items, config.sparsity)) {
            decisions[*i] = Some(Ok(decided));
        }
    }
    let mut plan = Plan {
        edits: Vec::new(),
        outcomes: Vec::new(),
        warnings: Vec::new(),
    };
    for (item, decision) in loaded.iter().zip(decisions) {
        let decision = decision.expect("every weight decided");
        let params = (item.data.len() / item.dtype.size().expect("float type")) as u64;
        let (zeros_after, skipped) = match decision {
            Ok((zeroing, zeros)) => {
                plan.edits.push(Edit::zero(item.weight.tensor, zeroing));
                (zeros, None)
            }
            Err(reason) => (item.zeros_before, Some(reason)),
        };
        plan.outcomes.push(WeightOutcome::new(
            item.weight,
            params,
            item.zeros_before,
            zeros_after,
            skipped,
        ));
    }
    if plan.edits.is_empty() && !plan.outcomes.is_empty() {
        let reasons: Vec<String> = plan
            .outcomes
            .iter()
            .filter_map(|o| o.skipped.as_ref().map(|why| format!("`{}`: {why}", o.id)))
            .take(5)
            .collect();
        return Err(Error::Usage(format!(
            "--pattern {} fits none of the {} selected weights, so nothing would be pruned: {}",
            config.pattern,
            plan.outcomes.len(),
            reasons.join("; ")
        )));
    }
    Ok(plan)
}

/// One threshold over `pool` zeroing `round(sparsity * n)` elements: per weight, its zeroing
/// and the zeros it leaves.
fn threshold_zeroing(pool: &[&Loaded], sparsity: f64) -> Vec<(Zeroing, u64)> {
    let segments: Vec<Segment> = pool
        .iter()
        .map(|l| Segment {
            dtype: l.dtype,
            bytes: &l.data,
        })
        .collect();
    let total: u64 = pool
        .iter()
        .map(|l| (l.data.len() / l.dtype.size().unwrap()) as u64)
        .sum();
    let k = zeros_for(sparsity, total);
    let cut = cut(&segments, k);
    pool.iter()
        .zip(cut.ties.iter().zip(&cut.below))
        .map(|(item, (&ties, &below))| {
            let zeroing = Zeroing::Threshold { key: cut.key, ties };
            // Zeros have the smallest key: below a positive threshold, all of them are counted.
            (zeroing, (below + ties).max(item.zeros_before))
        })
        .collect()
}

/// N:M along the weight's reduction axis.
fn n_of_m(item: &Loaded, n: usize, m: usize) -> std::result::Result<Zeroing, String> {
    let axis = item.weight.reduction_axis.ok_or_else(|| {
        format!(
            "{}: no reduction axis known for this role",
            item.weight.role.name()
        )
    })?;
    let dims: Vec<usize> = item.dims.iter().map(|&d| d as usize).collect();
    let Some(&len) = dims.get(axis) else {
        return Err(format!("rank {} has no reduction axis {axis}", dims.len()));
    };
    if len % m != 0 {
        return Err(format!(
            "axis {axis} has {len} elements, not a multiple of {m}"
        ));
    }
    let inner: usize = dims[axis + 1..].iter().product();
    let outer: usize = dims[..axis].iter().product();
    let mut keep = vec![true; dims.iter().product()];
    let mut group: Vec<(u64, usize)> = Vec::with_capacity(m);
    for o in 0..outer {
        for i in 0..inner {
            for start in (0..len).step_by(m) {
                group.clear();
                for a in start..start + m {
                    let index = (o * len + a) * inner + i;
                    group.push((magnitude_key(item.dtype, &item.data, index), index));
                }
                group.sort_unstable();
                for &(_, index) in &group[..m - n] {
                    keep[index] = false;
                }
            }
        }
    }
    Ok(Zeroing::Keep(keep))
}

/// Whole blocks of the weight viewed as `[dims[0], rest]`, the `round(sparsity * blocks)` with
/// the smallest L1 norm (ties by block index); edge blocks are smaller and scored as they are.
fn block(item: &Loaded, rows: usize, cols: usize, sparsity: f64) -> Zeroing {
    let n = item.data.len() / item.dtype.size().expect("float type");
    let height = item.dims.first().map_or(1, |&d| d.max(1) as usize);
    let width = n / height.max(1);
    let (block_rows, block_cols) = (height.div_ceil(rows), width.div_ceil(cols));
    let value = |index: usize| f64::from_bits(magnitude_key(item.dtype, &item.data, index));
    let mut scores: Vec<(f64, usize)> = (0..block_rows * block_cols)
        .into_par_iter()
        .map(|b| {
            let (br, bc) = (b / block_cols, b % block_cols);
            let mut sum = 0.0;
            for r in br * rows..((br + 1) * rows).min(height) {
                for c in bc * cols..((bc + 1) * cols).min(width) {
                    sum += value(r * width + c);
                }
            }
            (sum, b)
        })
        .collect();
    scores.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let pruned = zeros_for(sparsity, scores.len() as u64) as usize;
    let mut keep = vec![true; n];
    for &(_, b) in &scores[..pruned] {
        let (br, bc) = (b / block_cols, b % block_cols);
        for r in br * rows..((br + 1) * rows).min(height) {
            keep[r * width + bc * cols..r * width + ((bc + 1) * cols).min(width)].fill(false);
        }
    }
    Zeroing::Keep(keep)
}

/// A plan that applies given zeroings (replayed masks) to weights, with their outcomes.
pub fn plan_zeroings(model: &Model, zeroings: Vec<(&Weight, Zeroing)>) -> Result<Plan> {
    let mut plan = Plan {
        edits: Vec::new(),
        outcomes: Vec::new(),
        warnings: Vec::new(),
    };
    for (weight, zeroing) in zeroings {
        let tensor = &model.tensors()[weight.tensor];
        let data = dense_bytes(model, tensor)?;
        let zeros_before = count_zeros(tensor.dtype, &data);
        let zeros_after = zeroing.zeros_after(tensor.dtype, &data);
        let params = tensor.elements;
        plan.outcomes.push(WeightOutcome::new(
            weight,
            params,
            zeros_before,
            zeros_after,
            None,
        ));
        plan.edits.push(Edit::zero(weight.tensor, zeroing));
    }
    Ok(plan)
}
