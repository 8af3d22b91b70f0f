//! The budget search: the largest allocation (one sparsity per unit) that passes the check,
//! never worse than pruning every unit alike.
//!
//! Candidates lie on two lines, each ordered by overall sparsity:
//! - **uniform**: every unit at the same sparsity, in steps of [`UNIFORM_STEP`];
//! - **curves**: the sensitivity curves' allocation, from zero up to what the curves call free
//!   (every unit's free share scaled by `k / SCALE_STEPS`), then on past it by raising the
//!   cost threshold (the least sensitive units pruned most, see [`crate::budget`]).
//!
//! The uniform line is bisected first: its best is the floor the answer never falls below.
//! The curves line is then bisected above that floor, the flip between its last pass and the
//! failing step above it is narrowed by a few checks of allocations in between, and what is
//! left of the budget goes to the steps above the last pass, largest first (a check on a few
//! samples is not monotone in sparsity). Single-unit curves do not add up: when every unit at
//! its free share together fails the check, the search says so and comes down the line.

use crate::budget::{allocate, overall, thresholds, LayerCurve};
use crate::error::Result;
use crate::metric::Metric;
use crate::progress::Progress;
use onnx_prune_verify::CheckReport;

/// Sparsities the sensitivity curves of a search are measured at.
pub const GRID: [f64; 10] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95];

/// Checks a search may run unless told otherwise.
pub const DEFAULT_MAX_EVALUATIONS: usize = 16;

/// Steps of the uniform line: 5%, 10%, ... 95%.
pub const UNIFORM_STEP: f64 = 0.05;

/// Steps of the curves line below the curves' free allocation.
const SCALE_STEPS: usize = 8;

/// Checks spent at most between the curves line's last pass and the failing step above it.
const REFINE_CHECKS: usize = 3;

/// The curves of units holding `params` each, from `reports` (unit `u` at the sparsity
/// `GRID[s]` at `u * GRID.len() + s`) under `metric`.
pub fn curves(params: &[u64], reports: &[CheckReport], metric: Metric) -> Vec<LayerCurve> {
    params
        .iter()
        .enumerate()
        .map(|(u, &params)| LayerCurve {
            params,
            points: GRID
                .iter()
                .enumerate()
                .map(|(s, &sparsity)| (sparsity, metric.value(&reports[u * GRID.len() + s])))
                .collect(),
        })
        .collect()
}

/// Which line a candidate lies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Line {
    /// Every unit at the same sparsity.
    Uniform,
    /// The sensitivity curves' allocation.
    Curves,
}

/// One allocation tried: per unit its sparsity, and the check of the result.
#[derive(Debug, Clone)]
pub struct Tried<R> {
    /// The line it lies on.
    pub line: Line,
    /// Per unit.
    pub sparsities: Vec<f64>,
    /// Overall sparsity of the allocation.
    pub overall: f64,
    /// Whether the check passed.
    pub passed: bool,
    /// The check of the candidate.
    pub report: R,
}

/// What a search found.
#[derive(Debug, Clone)]
pub struct Found<R> {
    /// The largest passing allocation above zero, on either line.
    pub best: Option<Tried<R>>,
    /// The largest passing uniform sparsity, if any passed.
    pub best_uniform: Option<f64>,
    /// The smallest failing allocation.
    pub smallest_failure: Option<Tried<R>>,
    /// Checks run.
    pub evaluations: usize,
    /// Every candidate checked, in order: its line, overall sparsity and whether it passed.
    pub history: Vec<(Line, f64, bool)>,
    /// Where the curves and the joint checks disagreed.
    pub notes: Vec<String>,
}

/// The candidates of one line, in increasing overall sparsity, with no two alike.
fn line_of(line: Line, curves: &[LayerCurve]) -> Vec<(Vec<f64>, f64)> {
    let mut candidates: Vec<(Vec<f64>, f64)> = match line {
        Line::Uniform => (1..)
            .map(|k| (k as f64 * UNIFORM_STEP * 100.0).round() / 100.0)
            .take_while(|&s| s < 1.0 - 1e-9)
            .map(|s| (vec![s; curves.len()], s))
            .collect(),
        Line::Curves => {
            let free = allocate(curves, 0.0);
            let scaled = (1..SCALE_STEPS).map(|k| {
                free.iter()
                    .map(|s| s * k as f64 / SCALE_STEPS as f64)
                    .collect::<Vec<f64>>()
            });
            let raised = thresholds(curves)
                .into_iter()
                .map(|(tau, _)| allocate(curves, tau));
            scaled
                .chain(raised)
                .map(|sparsities| {
                    let overall = overall(curves, &sparsities);
                    (sparsities, overall)
                })
                .collect()
        }
    };
    candidates.retain(|(_, overall)| *overall > 0.0);
    candidates.dedup_by(|b, a| b.1 <= a.1);
    candidates
}

/// The search's state: the candidate checker, the budget and what was found so far.
struct Searcher<'a, R, F> {
    check: F,
    budget: usize,
    progress: &'a dyn Progress,
    found: Found<R>,
}

impl<R: Clone, F: FnMut(&[f64]) -> Result<(bool, R)>> Searcher<'_, R, F> {
    fn spent(&self) -> bool {
        self.found.evaluations >= self.budget
    }

    /// Checks one candidate and records it.
    fn evaluate(&mut self, line: Line, (sparsities, overall): &(Vec<f64>, f64)) -> Result<bool> {
        let (passed, report) = (self.check)(sparsities)?;
        self.found.evaluations += 1;
        self.found.history.push((line, *overall, passed));
        self.progress.step();
        let tried = Tried {
            line,
            sparsities: sparsities.clone(),
            overall: *overall,
            passed,
            report,
        };
        let found = &mut self.found;
        if passed {
            if line == Line::Uniform {
                found.best_uniform = Some(found.best_uniform.unwrap_or(0.0).max(*overall));
            }
            if found.best.as_ref().is_none_or(|b| b.overall < *overall) {
                found.best = Some(tried);
            }
        } else if found
            .smallest_failure
            .as_ref()
            .is_none_or(|f| *overall < f.overall)
        {
            found.smallest_failure = Some(tried);
        }
        Ok(passed)
    }

    /// Whether the candidate at `overall` on `line` passed, if it was checked.
    fn outcome(&self, line: Line, overall: f64) -> Option<bool> {
        self.found
            .history
            .iter()
            .find(|&&(l, o, _)| l == line && (o - overall).abs() < 1e-12)
            .map(|&(_, _, passed)| passed)
    }

    /// Bisects between `pass` and the failing `fail` above it, [`REFINE_CHECKS`] checks at
    /// most: each unit's sparsity taken the same fraction of the way from one to the other.
    fn refine(&mut self, curves: &[LayerCurve], pass: &[f64], fail: &[f64]) -> Result<()> {
        let (mut low, mut high) = (0.0f64, 1.0f64);
        for _ in 0..REFINE_CHECKS {
            if self.spent() {
                break;
            }
            let t = (low + high) / 2.0;
            let between: Vec<f64> = pass
                .iter()
                .zip(fail)
                .map(|(a, b)| a + t * (b - a))
                .collect();
            let overall = overall(curves, &between);
            if self.evaluate(Line::Curves, &(between, overall))? {
                low = t;
            } else {
                high = t;
            }
        }
        Ok(())
    }

    /// Bisects `candidates` for the last that passes, assuming the check is monotone along
    /// them; returns the index one past the last pass found.
    fn bisect(&mut self, line: Line, candidates: &[(Vec<f64>, f64)]) -> Result<usize> {
        let (mut low, mut high) = (0usize, candidates.len());
        while low < high && !self.spent() {
            let mid = low + (high - low) / 2;
            if self.evaluate(line, &candidates[mid])? {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        Ok(low)
    }
}

/// Searches the largest allocation over `curves` that passes, with at most `budget` checks
/// (counted on `progress`): `check(sparsities)` writes and checks one candidate (one sparsity
/// per curve) and says whether it passed. The answer is never below the largest uniform
/// sparsity the bisection of the uniform line finds passing.
pub fn search_allocation<R: Clone>(
    curves: &[LayerCurve],
    budget: usize,
    progress: &dyn Progress,
    check: impl FnMut(&[f64]) -> Result<(bool, R)>,
) -> Result<Found<R>> {
    let uniform = line_of(Line::Uniform, curves);
    let along_curves = line_of(Line::Curves, curves);
    progress.steps(
        "searching the largest sparsity that passes",
        budget.min(uniform.len() + along_curves.len()) as u64,
    );
    let mut searcher = Searcher {
        check,
        budget,
        progress,
        found: Found {
            best: None,
            best_uniform: None,
            smallest_failure: None,
            evaluations: 0,
            history: Vec::new(),
            notes: Vec::new(),
        },
    };
    searcher.bisect(Line::Uniform, &uniform)?;
    let floor = searcher.found.best_uniform.unwrap_or(0.0);
    let above: Vec<(Vec<f64>, f64)> = along_curves
        .into_iter()
        .filter(|(_, overall)| *overall > floor)
        .collect();
    let passed_up_to = searcher.bisect(Line::Curves, &above)?;
    let last_pass = passed_up_to.checked_sub(1).and_then(|i| above.get(i));
    if let (Some(pass), Some(fail)) = (last_pass, above.get(passed_up_to)) {
        if searcher.outcome(Line::Curves, fail.1) == Some(false) {
            searcher.refine(curves, &pass.0, &fail.0)?;
        }
    }
    for candidate in above[passed_up_to.min(above.len())..].iter().rev() {
        if searcher.spent() {
            break;
        }
        if searcher.outcome(Line::Curves, candidate.1).is_some() {
            continue;
        }
        if searcher.evaluate(Line::Curves, candidate)? {
            break;
        }
    }
    let mut found = searcher.found;
    found.notes = disagreements(curves, &found);
    Ok(found)
}

/// What the joint checks said against the curves: the curves' free allocation failing, or the
/// uniform line beating the curves.
fn disagreements<R>(curves: &[LayerCurve], found: &Found<R>) -> Vec<String> {
    let mut notes = Vec::new();
    let free = allocate(curves, 0.0);
    let free_overall = overall(curves, &free);
    let curves_failure = found
        .history
        .iter()
        .filter(|(line, overall, passed)| {
            *line == Line::Curves && !passed && *overall <= free_overall + 1e-12
        })
        .map(|(_, overall, _)| *overall)
        .reduce(f64::min);
    if let Some(failed) = curves_failure {
        notes.push(format!(
            "the curves measured one unit at a time call {:.2}% free, but together {:.2}% \
             fails the check: single-unit costs do not add up here",
            100.0 * free_overall,
            100.0 * failed
        ));
    }
    if let (Some(best), Some(uniform)) = (&found.best, found.best_uniform) {
        if best.line == Line::Uniform && found.history.iter().any(|t| t.0 == Line::Curves) {
            notes.push(format!(
                "pruning every unit alike ({:.2}%) passes where no allocation drawn from the \
                 curves above it does: the curves are noisy or do not add up on these samples",
                100.0 * uniform
            ));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Units of equal size whose curves cost `costs[u]` at every grid sparsity times the
    /// sparsity (a straight line through zero).
    fn curves(slopes: &[f64]) -> Vec<LayerCurve> {
        slopes
            .iter()
            .map(|&slope| LayerCurve {
                params: 100,
                points: GRID.iter().map(|&s| (s, slope * s)).collect(),
            })
            .collect()
    }

    /// Runs the search with `passes(sparsities)` as the check.
    fn run(
        curves: &[LayerCurve],
        budget: usize,
        mut passes: impl FnMut(&[f64]) -> bool,
    ) -> Found<()> {
        search_allocation(curves, budget, &(), |s| Ok((passes(s), ()))).unwrap()
    }

    fn mean(s: &[f64]) -> f64 {
        s.iter().sum::<f64>() / s.len() as f64
    }

    #[test]
    fn a_monotone_check_gives_the_curves_allocation_above_uniform() {
        // Two free units and one fragile: the check fails once the fragile unit passes 20%.
        let curves = curves(&[0.0, 0.0, 1.0]);
        let found = run(&curves, 16, |s| s[2] <= 0.2 + 1e-9);
        let best = found.best.unwrap();
        assert_eq!(best.line, Line::Curves);
        assert_eq!(found.best_uniform, Some(0.2));
        assert!((best.sparsities[0] - 0.95).abs() < 1e-9, "{best:?}");
        assert!(best.sparsities[2] <= 0.2 + 1e-9);
        assert!(best.overall > 0.6, "{}", best.overall);
        assert!(found.evaluations <= 16);
        assert!(found.notes.is_empty(), "{:?}", found.notes);
    }

    #[test]
    fn the_flip_between_two_steps_of_the_curves_line_is_narrowed() {
        // Two free units that pass together up to 75% each, one fragile: the curves line's
        // steps (7/8 and 6/8 of 95% for the free units) fail and pass around it; the
        // allocations in between find 74.2%, where the steps alone stop at 71.25%.
        let curves = curves(&[0.0, 0.0, 1.0]);
        let passes = |s: &[f64]| s[0] + s[1] <= 1.5 + 1e-9 && s[2] <= 0.2 + 1e-9;
        let found = run(&curves, 16, passes);
        let best = found.best.unwrap();
        assert_eq!(best.line, Line::Curves);
        assert!(passes(&best.sparsities));
        assert!((best.sparsities[0] - 0.7421875).abs() < 1e-9, "{best:?}");
        assert!(found.evaluations <= 16);
    }

    #[test]
    fn curves_that_promise_more_than_the_joint_check_allows_come_back_down() {
        // Every unit is free alone up to 95%, but together more than 30% on average fails.
        let curves = curves(&[0.0, 0.0, 0.0, 0.0]);
        let found = run(&curves, 16, |s| mean(s) <= 0.3 + 1e-9);
        let best = found.best.unwrap();
        assert!((best.overall - 0.3).abs() < 1e-9, "{best:?}");
        assert!((found.best_uniform.unwrap() - 0.3).abs() < 1e-9);
        assert!(
            found.notes.iter().any(|n| n.contains("do not add up")),
            "{:?}",
            found.notes
        );
    }

    #[test]
    fn a_non_monotone_check_never_ends_below_the_best_uniform_bisection() {
        // Passes below 40% and in a lucky window at 60-65%: whatever the curves say, the
        // answer is at least the uniform 40% the bisection finds.
        let curves = curves(&[0.5, 0.1, 2.0]);
        let passes = |s: &[f64]| {
            let m = mean(s);
            m <= 0.4 + 1e-9 || (0.6..=0.65).contains(&m)
        };
        let found = run(&curves, 16, passes);
        let best = found.best.as_ref().unwrap();
        assert!(best.overall >= found.best_uniform.unwrap() - 1e-12);
        assert!(found.best_uniform.unwrap() >= 0.4 - 1e-9, "{found:?}");
        assert!(passes(&best.sparsities));
    }

    #[test]
    fn a_noisy_check_is_searched_within_its_budget_and_keeps_only_what_passed() {
        // A check that flips pseudo-randomly around 50%: every answer must be one that passed,
        // and the budget is a hard limit.
        let curves = curves(&[0.2, 0.4, 0.8, 1.6]);
        let mut state = 12345u64;
        let mut seen = Vec::new();
        let found = run(&curves, 7, |s| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = (state >> 33) as f64 / (1u64 << 31) as f64 * 0.2 - 0.1;
            let passed = mean(s) + noise <= 0.5;
            seen.push((s.to_vec(), passed));
            passed
        });
        assert_eq!(found.evaluations, 7);
        assert_eq!(seen.len(), 7);
        if let Some(best) = &found.best {
            assert!(seen.iter().any(|(s, p)| *p && s == &best.sparsities));
            assert!(seen
                .iter()
                .filter(|(_, p)| *p)
                .all(|(s, _)| overall(&curves, s) <= best.overall + 1e-12));
        }
    }

    #[test]
    fn no_candidate_is_checked_twice_and_uniform_steps_are_round() {
        // The curves' allocation fails above 50%: the bisection fails some steps, and the
        // steps left above its last pass are tried without checking those again.
        let curves = curves(&[0.2, 0.4, 0.8, 1.6]);
        let found = run(&curves, 32, |s| mean(s) <= 0.5 + 1e-9);
        let mut checked: Vec<(Line, f64)> = found.history.iter().map(|t| (t.0, t.1)).collect();
        let key = |t: &(Line, f64)| (t.0 == Line::Curves, t.1);
        checked.sort_by(|a, b| key(a).0.cmp(&key(b).0).then(a.1.total_cmp(&b.1)));
        let before = checked.len();
        checked.dedup();
        assert_eq!(checked.len(), before, "{:?}", found.history);
        for (line, overall) in checked.iter().filter(|t| t.0 == Line::Uniform) {
            assert!(format!("{overall}").len() <= 4, "{line:?} {overall}");
        }
    }

    #[test]
    fn when_nothing_passes_the_smallest_failure_is_the_first_uniform_step() {
        let curves = curves(&[1.0, 1.0]);
        let found = run(&curves, 16, |_| false);
        assert!(found.best.is_none());
        assert_eq!(found.best_uniform, None);
        let failure = found.smallest_failure.unwrap();
        assert_eq!(failure.line, Line::Uniform);
        assert!((failure.overall - UNIFORM_STEP).abs() < 1e-12);
    }
}
