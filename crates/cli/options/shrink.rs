//! Shrink flags to a channel-removal request and its calibration data.

use anyhow::{bail, Result};
use onnx_prune_core::shrink::{Interface, Request, ShrinkScope};
use onnx_prune_verify::CalibrationOptions;

use super::{input_source, regexes};
use crate::args::{ShrinkArgs, ShrinkScopeArg, SparsityArg};

/// The request the flags of a fixed-sparsity (or dead-channel) shrink ask for; flags without
/// effect are errors.
pub fn shrink_request(args: &ShrinkArgs) -> Result<Request> {
    if let Some(s) = args.fraction() {
        if !(0.0..1.0).contains(&s) {
            bail!("--sparsity must be in [0, 1), got {s}");
        }
    } else if args.scope.is_some() {
        bail!("--scope has no effect without --sparsity (dead channels are found per group)");
    }
    if args.fraction().is_none() && !args.calibration.is_empty() && args.drop_layers.is_none() {
        bail!("--calibration has no effect without --sparsity (dead channels need no data)");
    }
    check_calibration_flags(args)?;
    if args.fraction().is_none() && args.no_refit {
        bail!("--no-refit has no effect without --sparsity (only removed channels are refitted)");
    }
    if args.round_to == Some(0) {
        bail!("--round-to must be at least 1 (a channel count that is a multiple of 0 is empty)");
    }
    Ok(Request {
        sparsity: args.fraction(),
        scope: match args.scope {
            Some(ShrinkScopeArg::Global) => ShrinkScope::Global,
            _ => ShrinkScope::Group,
        },
        round_to: args.round_to.unwrap_or(1),
        include: regexes(&args.include, "--include")?,
        exclude: regexes(&args.exclude, "--exclude")?,
        activations: None,
        group_sparsity: None,
    })
}

/// Refuses the calibration flags that have no effect, or no meaning.
pub fn check_calibration_flags(args: &ShrinkArgs) -> Result<()> {
    if args.calibration.is_empty() && args.calibration_samples.is_some() {
        bail!("--calibration-samples has no effect without --calibration");
    }
    if args.calibration.is_empty() && args.no_refit {
        bail!("--no-refit has no effect without --calibration (only calibration data refits)");
    }
    if args.calibration_samples == Some(0) {
        bail!("--calibration-samples must be at least 1");
    }
    Ok(())
}

/// The calibration data `--calibration` and `--calibration-samples` name, if any.
pub fn shrink_calibration(args: &ShrinkArgs) -> Option<CalibrationOptions> {
    (!args.calibration.is_empty()).then(|| CalibrationOptions {
        inputs: args.calibration.iter().map(|s| input_source(s)).collect(),
        samples: args.calibration_samples.unwrap_or(128),
        ..CalibrationOptions::default()
    })
}

/// Whether `--allow-interface-change` lets heads go from KV caches. Refused where the shrunk
/// model is run on the input's data: `--check` and `--sparsity auto` feed both models the same
/// inputs, which no longer fit a cache with fewer heads.
pub fn shrink_interface(args: &ShrinkArgs) -> Result<Interface> {
    if !args.allow_interface_change {
        return Ok(Interface::Keep);
    }
    if args.check || args.sparsity == Some(SparsityArg::Auto) {
        let flag = if args.check {
            "--check"
        } else {
            "--sparsity auto"
        };
        bail!(
            "{flag} runs the shrunk model on the same inputs as the original, which do not fit \
             the smaller caches --allow-interface-change gives: drop one of them and check the \
             written model with caches of its new shape"
        );
    }
    Ok(Interface::MayChange)
}
