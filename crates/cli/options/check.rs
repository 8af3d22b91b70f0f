//! Check flags to [`CheckOptions`]: samples, shapes, fixed inputs and tolerances.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use onnx_prune_tune::Metric;
use onnx_prune_verify::{CheckOptions, InputSource, Tolerances};

use crate::args::{CheckFlags, SampleFlags};

/// Where `FILE.npz`, `DIR` or `NAME=FILE.npy` says samples come from.
pub fn input_source(spec: &str) -> InputSource {
    match spec.split_once('=') {
        Some((name, file)) => InputSource::Npy {
            name: name.to_string(),
            path: PathBuf::from(file),
        },
        None if Path::new(spec).is_dir() => InputSource::TestData(PathBuf::from(spec)),
        None => InputSource::Npz(PathBuf::from(spec)),
    }
}

/// The check options the flags ask for.
pub fn check_options(flags: &CheckFlags) -> Result<CheckOptions> {
    let tolerances = Tolerances {
        atol: flags.atol,
        rtol: flags.rtol,
        min_cosine: flags.min_cosine.unwrap_or(CheckFlags::DEFAULT_MIN_COSINE),
        min_agreement: flags.min_agreement,
        max_accuracy_drop: flags
            .max_accuracy_drop
            .unwrap_or(CheckFlags::DEFAULT_MAX_ACCURACY_DROP),
    };
    tolerances.validate()?;
    Ok(CheckOptions {
        tolerances,
        ..sample_options(&flags.samples)?
    })
}

/// The check options of the samples the flags describe, with the default tolerances.
pub fn sample_options(flags: &SampleFlags) -> Result<CheckOptions> {
    let inputs = flags.inputs.iter().map(|spec| input_source(spec)).collect();
    let shapes = shapes(&flags.shapes)?;
    let fixes = flags
        .fixes
        .iter()
        .map(|spec| {
            let (name, value) = spec
                .split_once('=')
                .with_context(|| format!("--fix `{spec}` is not NAME=VALUE"))?;
            Ok((name.to_string(), value.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    if flags.inputs.is_empty() && flags.random.is_none() {
        bail!("a check needs inputs: give --inputs FILE or --random N");
    }
    if flags.batch_size == Some(0) {
        bail!("--batch-size 0: a run takes at least one sample");
    }
    Ok(CheckOptions {
        inputs,
        inputs_flag: None,
        random: flags.random.map(|n| (n, flags.seed)),
        shapes,
        labels: flags.labels.clone(),
        batch_size: flags.batch_size,
        fixes,
        tolerances: Tolerances::default(),
    })
}

/// The check options when `check` (`--check`) is set; without it, check flags would be silently
/// ignored, so giving any is an error naming them.
pub fn check_options_if(check: bool, flags: &CheckFlags) -> Result<Option<CheckOptions>> {
    if check {
        return check_options(flags).map(Some);
    }
    let given = flags.given();
    if !given.is_empty() {
        let (verb, them) = match given.len() {
            1 => ("takes", "it"),
            _ => ("take", "them"),
        };
        bail!(
            "{} only {verb} effect with --check; add --check or drop {them}",
            given.join(", ")
        );
    }
    Ok(None)
}

/// Tolerance flags; a search needs at least one, or "passes" would mean only the defaults.
const TOLERANCES: [&str; 5] = [
    "--max-accuracy-drop",
    "--min-cosine",
    "--min-agreement",
    "--atol",
    "--rtol",
];

/// The check options of a budget search, and the metric its curves measure. Only the
/// tolerances given hold (a default, cosine 0.99, would otherwise cap a search the user
/// bounded by accuracy), and at least one must be given.
pub fn search_check(flags: &CheckFlags, search: &str) -> Result<(CheckOptions, Metric)> {
    let given = flags.given();
    if !TOLERANCES.iter().any(|t| given.contains(t)) {
        bail!(
            "{search} needs a tolerance to hold: give one of {} (e.g. \
             --max-accuracy-drop 0.01 with --labels)",
            TOLERANCES.join(", ")
        );
    }
    let mut options = check_options(flags)?;
    if given.contains(&"--max-accuracy-drop") && options.labels.is_none() {
        bail!("--max-accuracy-drop needs --labels to measure accuracy");
    }
    if !given.contains(&"--min-cosine") {
        options.tolerances.min_cosine = f64::NEG_INFINITY;
    }
    if !given.contains(&"--max-accuracy-drop") {
        options.tolerances.max_accuracy_drop = f64::INFINITY;
    }
    // The curves measure what the tolerances bound.
    let metric = Metric::bounded_by(&options.tolerances);
    Ok((options, metric))
}

/// `--shape NAME=D,D,...` flags, by input name.
pub fn shapes(specs: &[String]) -> Result<BTreeMap<String, Vec<usize>>> {
    specs
        .iter()
        .map(|spec| {
            let (name, dims) = spec
                .split_once('=')
                .with_context(|| format!("--shape `{spec}` is not NAME=D,D,..."))?;
            let dims = dims
                .split(',')
                .map(|d| d.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("--shape `{spec}`: dimensions must be numbers"))?;
            Ok((name.to_string(), dims))
        })
        .collect()
}
