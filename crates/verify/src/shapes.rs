//! The shapes of a model's intermediate values at given input shapes, as tract's typed model
//! infers them (for counting multiply-accumulates in the core crate, which has no engine).

use std::collections::BTreeMap;

use onnx_prune_core::Model;

use crate::error::Result;
use crate::fold::Fixed;
use crate::runner::{input_specs, Runner, Shapes};

/// The shapes of the values `names` of `model` (whose bytes tract reads are `bytes`) for its
/// inputs at the shapes in `given`, or where not given at their declared shapes with every
/// free dimension 1. Graph inputs among `names` get their own shapes.
pub fn value_shapes(
    model: &Model,
    bytes: &[u8],
    names: &[String],
    given: &BTreeMap<String, Vec<usize>>,
) -> Result<BTreeMap<String, Vec<usize>>> {
    let mut shapes = Shapes::new();
    for spec in input_specs(model)? {
        let dims = given
            .get(&spec.name)
            .cloned()
            .unwrap_or_else(|| spec.dims.iter().map(|d| d.unwrap_or(1)).collect());
        shapes.insert(spec.name, (spec.datum, dims));
    }
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
