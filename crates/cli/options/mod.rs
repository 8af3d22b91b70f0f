//! The one place where parsed flags become library options: every flag is validated here,
//! and a flag that would have no effect in its combination is an error naming it.

mod check;
mod passes;
mod prune;
mod shrink;

use anyhow::{Context, Result};
use regex::Regex;

pub use check::{
    check_options, check_options_if, input_source, sample_options, search_check, shapes,
};
pub use passes::Passes;
pub use prune::{calibration, parse_pattern, parse_sparsities, prune_config, selection};
pub use shrink::{check_calibration_flags, shrink_calibration, shrink_interface, shrink_request};

/// `--max-evaluations`, or its default.
pub fn max_evaluations(given: Option<usize>) -> Result<usize> {
    let budget = given.unwrap_or(onnx_prune_tune::search::DEFAULT_MAX_EVALUATIONS);
    if budget == 0 {
        anyhow::bail!("--max-evaluations must be at least 1");
    }
    Ok(budget)
}

/// The regexes of a repeatable pattern flag (`--include`, `--exclude`, ...).
pub fn regexes(patterns: &[String], flag: &str) -> Result<Vec<Regex>> {
    patterns
        .iter()
        .map(|p| Regex::new(p).with_context(|| format!("{flag} `{p}` is not a valid regex")))
        .collect()
}
