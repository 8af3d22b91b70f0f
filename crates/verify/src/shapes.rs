//! What one model costs at given input shapes: the shapes of its intermediate values as
//! tract's typed model infers them (the core crate counts multiply-accumulates from them), and
//! tract's latency per sample.

use std::collections::BTreeMap;
use std::time::Instant;

use onnx_prune_core::Model;
use tract_onnx::prelude::Tensor;

use crate::error::{Error, Result};
use crate::fold::Fixed;
use crate::runner::{input_specs, RunError, Runner, Shapes};

/// The input shapes: `given`, else declared with every free dimension 1.
fn input_shapes(model: &Model, given: &BTreeMap<String, Vec<usize>>) -> Result<Shapes> {
    let mut shapes = Shapes::new();
    for spec in input_specs(model)? {
        let dims = given
            .get(&spec.name)
            .cloned()
            .unwrap_or_else(|| spec.dims.iter().map(|d| d.unwrap_or(1)).collect());
        shapes.insert(spec.name, (spec.datum, dims));
    }
    Ok(shapes)
}

/// Seconds per sample of one tract run of `model` on zeros at the input shapes (see
/// [`value_shapes`]): the fastest of `runs` runs after one warm-up run, divided by the batch.
pub fn latency(
    model: &Model,
    bytes: &[u8],
    given: &BTreeMap<String, Vec<usize>>,
    runs: usize,
) -> Result<f64> {
    let shapes = input_shapes(model, given)?;
    let runner = Runner::new(bytes, model.path(), &shapes, &Fixed::new())?;
    let inputs: BTreeMap<String, Tensor> = shapes
        .iter()
        .map(|(name, (datum, dims))| {
            Ok((
                name.clone(),
                Tensor::zero_dt(*datum, dims)
                    .map_err(|e| Error::Usage(format!("input `{name}`: {e}")))?,
            ))
        })
        .collect::<Result<_>>()?;
    let batch = shapes
        .values()
        .find_map(|(_, d)| d.first().copied())
        .unwrap_or(1)
        .max(1);
    let mut best = f64::INFINITY;
    for round in 0..=runs {
        let start = Instant::now();
        runner.run(model.path(), &inputs).map_err(|e| match e {
            RunError::Failed(error) => error,
            RunError::Panic(what) => Error::Usage(format!("tract panicked: {what}")),
        })?;
        if round > 0 {
            best = best.min(start.elapsed().as_secs_f64());
        }
    }
    Ok(best / batch as f64)
}

/// The shapes of the values `names` of `model` (whose bytes tract reads are `bytes`) for its
/// inputs at the shapes in `given`, or where not given at their declared shapes with every
/// free dimension 1. Graph inputs among `names` get their own shapes.
pub fn value_shapes(
    model: &Model,
    bytes: &[u8],
    names: &[String],
    given: &BTreeMap<String, Vec<usize>>,
) -> Result<BTreeMap<String, Vec<usize>>> {
    let shapes = input_shapes(model, given)?;
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut tapped = Vec::new();
    for name in names {
        match shapes.get(name) {
            Some((_, dims)) => {
                out.insert(name.clone(), dims.clone());
            }
            None if !tapped.contains(name) => tapped.push(name.clone()),
            None => {}
        }
    }
    if !tapped.is_empty() {
        let runner = Runner::tapping(bytes, model.path(), &shapes, &Fixed::new(), &tapped)?;
        out.extend(tapped.into_iter().zip(runner.output_shapes));
    }
    Ok(out)
}
