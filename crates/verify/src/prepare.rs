//! Everything a check reads before it runs a model: the inputs `--fix` makes constants, the
//! samples and the labels, checked against the inputs the reference declares.

use crate::error::{Error, Result};
use crate::fold::{parse_fix, Fixed};
use crate::inputs::read_labels;
use crate::options::CheckOptions;
use crate::runner::{input_specs, InputSpec};
use crate::samples::Samples;
use onnx_prune_core::Model;

/// The inputs `--fix` makes constants, parsed against the inputs the model declares.
fn fixed_inputs(specs: &[InputSpec], fixes: &[(String, String)]) -> Result<Fixed> {
    let mut fixed = Fixed::new();
    for (name, value) in fixes {
        let spec = specs.iter().find(|s| &s.name == name).ok_or_else(|| {
            Error::Usage(format!(
                "--fix {name}={value}: the model has no input `{name}` (its inputs: {})",
                specs
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if fixed
            .insert(name.clone(), parse_fix(spec, value)?)
            .is_some()
        {
            return Err(Error::Usage(format!("--fix {name}: given twice")));
        }
    }
    Ok(fixed)
}

/// What a check reads before it runs anything.
pub(crate) struct Prepared {
    pub fixed: Fixed,
    /// The inputs that are not fixed.
    pub specs: Vec<InputSpec>,
    pub samples: Samples,
    pub labels: Option<Vec<i64>>,
    pub notes: Vec<String>,
}

pub(crate) fn prepare(reference: &Model, options: &CheckOptions) -> Result<Prepared> {
    if options.batch_size == Some(0) {
        return Err(Error::Usage("--batch-size must be at least 1".into()));
    }
    let all_specs = input_specs(reference)?;
    let fixed = fixed_inputs(&all_specs, &options.fixes)?;
    let specs: Vec<InputSpec> = all_specs
        .iter()
        .filter(|s| !fixed.contains_key(&s.name))
        .cloned()
        .collect();
    let all_names: Vec<String> = all_specs.iter().map(|s| s.name.clone()).collect();
    let mut notes = Vec::new();
    let samples = Samples::load(options, &all_names, &specs, &mut notes)?;
    if samples.count == 0 {
        return Err(Error::Usage("the inputs hold no sample".into()));
    }
    let labels = options
        .labels
        .as_deref()
        .map(|spec| read_labels(spec, Some(samples.count), &mut notes))
        .transpose()?;
    if let Some(labels) = &labels {
        if labels.len() != samples.count {
            return Err(Error::Usage(format!(
                "--labels: {} labels for {} samples",
                labels.len(),
                samples.count
            )));
        }
    }
    Ok(Prepared {
        fixed,
        specs,
        samples,
        labels,
        notes,
    })
}
