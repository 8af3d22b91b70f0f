//! Pruning flags to a selection, a pruning configuration and a calibrated request.

use anyhow::{bail, Context, Result};
use onnx_prune_core::calibrated::{Calibrated, Method, Order};
use onnx_prune_core::prune::{check_sparsity, Pattern, PruneConfig, Scope, Selection};
use onnx_prune_verify::CalibrationOptions;

use super::{input_source, regexes};
use crate::args::{CalibrationFlags, MethodArg, OrderArg, PruneArgs, ScopeArg, SparsityArg};

/// The `--pattern` flag.
pub fn parse_pattern(pattern: &str) -> Result<Pattern> {
    pattern
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--pattern: {e}"))
}

/// The selection that `--include`, `--exclude`, `--op-types` and `--min-params` ask for.
pub fn selection(
    include: &[String],
    exclude: &[String],
    op_types: &[String],
    min_params: u64,
) -> Result<Selection> {
    Ok(Selection {
        include: regexes(include, "--include")?,
        exclude: regexes(exclude, "--exclude")?,
        op_types: op_types.to_vec(),
        min_params,
    })
}

/// The selection and pruning configuration the flags of a fixed-sparsity prune ask for.
pub fn prune_config(args: &PruneArgs) -> Result<(Selection, PruneConfig)> {
    let pattern = parse_pattern(&args.pattern)?;
    let sparsity = match (
        args.sparsity.map(|s| match s {
            SparsityArg::Value(value) => value,
            SparsityArg::Auto => unreachable!("--sparsity auto is searched, not configured"),
        }),
        pattern.fixed_sparsity(),
    ) {
        (None, Some(fixed)) => fixed,
        (Some(_), Some(_)) => bail!(
            "--sparsity has no effect with --pattern {pattern}: N:M keeps N of every M elements \
             (2:4 is 50% zeros, 1:4 is 75%); drop --sparsity or use another pattern"
        ),
        (Some(s), None) => check_sparsity(s, "--sparsity")?,
        (None, None) => {
            bail!("--sparsity is required (e.g. --sparsity 0.5) unless --pattern is N:M")
        }
    };
    if !args.sparsity_for.is_empty() && pattern.fixed_sparsity().is_some() {
        bail!("--sparsity-for has no effect with --pattern {pattern}, whose sparsity is fixed");
    }
    let sparsity_for = args
        .sparsity_for
        .iter()
        .map(|spec| {
            let (pattern, value) = spec
                .split_once('=')
                .with_context(|| format!("--sparsity-for `{spec}` is not REGEX=S"))?;
            let value: f64 = value
                .parse()
                .with_context(|| format!("--sparsity-for `{spec}`: `{value}` is not a number"))?;
            let mut regex = regexes(&[pattern.to_string()], "--sparsity-for")?;
            Ok((regex.remove(0), check_sparsity(value, "--sparsity-for")?))
        })
        .collect::<Result<Vec<_>>>()?;
    let selection = selection(
        &args.include,
        &args.exclude,
        &args.op_types,
        args.min_params,
    )?;
    let config = PruneConfig {
        sparsity,
        scope: match args.scope {
            ScopeArg::Tensor => Scope::Tensor,
            ScopeArg::Global => Scope::Global,
        },
        pattern,
        sparsity_for,
    };
    Ok((selection, config))
}

/// The calibrated request the flags ask for, with its data; `None` for magnitude pruning
/// without calibration data. Flags that would have no effect are errors.
pub fn calibration(
    flags: &CalibrationFlags,
) -> Result<(Method, Option<(Calibrated, CalibrationOptions)>)> {
    let method = match flags.method {
        MethodArg::Magnitude => Method::Magnitude,
        MethodArg::Wanda => Method::Wanda,
        MethodArg::Sparsegpt => Method::SparseGpt,
    };
    if flags.calibration.is_empty() {
        if method != Method::Magnitude {
            bail!(
                "--method {} scores weights by their input activations: give calibration samples with --calibration FILE.npz (or a test-data DIR, or NAME=FILE.npy)",
                method.name()
            );
        }
        for (given, flag) in [
            (flags.calibration_samples.is_some(), "--calibration-samples"),
            (flags.calibration_order.is_some(), "--calibration-order"),
            (flags.correct_bias, "--correct-bias"),
        ] {
            if given {
                bail!("{flag} has no effect without --calibration");
            }
        }
        return Ok((method, None));
    }
    let samples = flags.calibration_samples.unwrap_or(128);
    if samples == 0 {
        bail!("--calibration-samples must be at least 1");
    }
    let request = Calibrated {
        method,
        order: match flags.calibration_order {
            Some(OrderArg::Sequential) => Order::Sequential,
            _ => Order::Dense,
        },
        correct_bias: flags.correct_bias,
    };
    let options = CalibrationOptions {
        inputs: flags
            .calibration
            .iter()
            .map(|spec| input_source(spec))
            .collect(),
        samples,
        ..CalibrationOptions::default()
    };
    Ok((method, Some((request, options))))
}

/// Parses `--sparsities` (comma-separated, each in (0, 1)), sorted and without repeats.
pub fn parse_sparsities(list: &str) -> Result<Vec<f64>> {
    let mut values = list
        .split(',')
        .map(|item| {
            let value: f64 = item.trim().parse().with_context(|| {
                format!("--sparsities `{list}`: `{item}` is not a number (e.g. 0.1,0.3,0.5)")
            })?;
            if value == 0.0 {
                bail!("--sparsities `{list}`: 0 prunes nothing; list sparsities above 0");
            }
            Ok(check_sparsity(value, "--sparsities")?)
        })
        .collect::<Result<Vec<f64>>>()?;
    values.sort_by(f64::total_cmp);
    values.dedup();
    Ok(values)
}
