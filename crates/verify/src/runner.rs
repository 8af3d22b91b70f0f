//! Loading a model into tract once, for inputs of a given per-sample shape, and running it on
//! batches of samples from several threads.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use onnx_prune_core::Model;
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::InferenceModelExt;

use crate::error::{Error, Result};
use crate::fold::{fold, Fixed};
use crate::last_axis_softmax::last_axis_softmax;
use crate::patch::float16_gemm_bias;
use crate::swap::{weights_as_inputs, WeightInput};

/// What a model declares about one input.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// Input name.
    pub name: String,
    /// Element type.
    pub datum: DatumType,
    /// Declared dimensions; `None` where symbolic or unknown.
    pub dims: Vec<Option<usize>>,
    /// Declared a scalar (a shape with no dimension), not merely without a shape.
    pub scalar: bool,
}

/// How tract is asked to read a model. The first lets tract run the most real exports: stored
/// output shapes and `value_info` are ignored (their symbolic batch dimensions cannot unify
/// with concrete inputs) and shapes are inferred from the inputs; the second, tract's default,
/// is the fallback for the few models whose stored shapes tract needs.
const LOADINGS: [bool; 2] = [true, false];

/// The ONNX graph tract is handed for `bytes` (the model at `path`) at input `shapes`: tract's
/// known gaps patched, the `fixed` inputs made constants and the `If` nodes they or the input
/// shapes decide inlined. Also returns what to tell a user whose model tract then refuses
/// (the `If` nodes left undecided).
pub(crate) fn folded_proto(
    bytes: &[u8],
    path: &Path,
    (fixed, shapes): (&Fixed, &Shapes),
) -> Result<(pb::ModelProto, String)> {
    let mut proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| unsupported(path, e))?;
    float16_gemm_bias(&mut proto);
    let undecided = fold(&mut proto, fixed, shapes)?;
    let hint = undecided
        .iter()
        .map(|u| format!("; {}", u.hint()))
        .collect::<String>();
    Ok((proto, hint))
}

/// The model tract analyses from `proto` (the model at `path`), its stored shapes ignored or
/// not; a refusal carries `hint`.
fn inference_model(
    proto: &pb::ModelProto,
    path: &Path,
    ignore_stored_shapes: bool,
    hint: &str,
) -> Result<InferenceModel> {
    let onnx = tract_onnx::onnx()
        .with_ignore_output_shapes(ignore_stored_shapes)
        .with_ignore_value_info(ignore_stored_shapes);
    let dir = path
        .parent()
        .and_then(|p| p.to_str())
        .filter(|p| !p.is_empty())
        .unwrap_or(".");
    onnx.parse(proto, Some(dir))
        .map(|parsed| parsed.model)
        .map_err(|e| unsupported_with(path, e, hint))
}

fn unsupported_with(path: &Path, error: TractError, hint: &str) -> Error {
    Error::Unsupported {
        path: path.to_path_buf(),
        msg: format!("{error:#}{hint}"),
    }
}

fn panicked(path: &Path, what: &str) -> Error {
    Error::Unsupported {
        path: path.to_path_buf(),
        msg: format!("tract panicked while loading it: {what}"),
    }
}

fn unsupported(path: &Path, error: TractError) -> Error {
    Error::Unsupported {
        path: path.to_path_buf(),
        msg: format!("{error:#}"),
    }
}

/// The inputs a model declares, from the graph itself: tract is not asked, as parsing a model
/// costs a full decode of its weights. An input without an element type is taken as float32.
pub fn input_specs(model: &Model) -> Result<Vec<InputSpec>> {
    model
        .graph_inputs()
        .into_iter()
        .map(|input| {
            let datum = match input.elem_type {
                0 => DatumType::F32,
                number => DataType::try_from(number)
                    .ok()
                    .and_then(|t| DatumType::try_from(t).ok())
                    .ok_or_else(|| Error::Unsupported {
                        path: model.path().to_path_buf(),
                        msg: format!(
                            "input `{}` has element type {number}, which tract does not run",
                            input.name
                        ),
                    })?,
            };
            Ok(InputSpec {
                name: input.name.clone(),
                datum,
                dims: input.dims.iter().map(|d| d.map(|d| d as usize)).collect(),
                scalar: input.has_shape && input.dims.is_empty(),
            })
        })
        .collect()
}

/// Element type and full shape of every input, by name.
pub type Shapes = BTreeMap<String, (DatumType, Vec<usize>)>;

/// A model optimised for one batch shape, ready to run from several threads.
pub struct Runner {
    plan: std::sync::Arc<TypedRunnableModel>,
    /// Input names, in the model's order.
    pub inputs: Vec<String>,
    /// Output names, in the model's order.
    pub outputs: Vec<String>,
    /// Output shapes for the shapes the model was loaded for.
    pub output_shapes: Vec<Vec<usize>>,
}

/// Why a run failed.
pub enum RunError {
    /// tract panicked (its message): a bug of tract or input values out of the model's range.
    Panic(String),
    /// tract returned an error.
    Failed(Error),
}

impl Runner {
    /// Loads `bytes` (the model at `path`) for inputs of the given full shapes, by name, trying
    /// each way of loading in turn; the first way's error is the one reported.
    pub fn new(bytes: &[u8], path: &Path, shapes: &Shapes, fixed: &Fixed) -> Result<Runner> {
        Self::loading(bytes, path, (shapes, fixed), &[], &[])
    }

    /// As [`Runner::new`], with the `weights` (constants of the main graph) made inputs that
    /// every run is handed (see [`Runner::run_with`]): one load runs any values of them.
    pub fn swapping(
        bytes: &[u8],
        path: &Path,
        shapes: &Shapes,
        fixed: &Fixed,
        weights: &[WeightInput],
    ) -> Result<Runner> {
        Self::loading(bytes, path, (shapes, fixed), &[], weights)
    }

    /// As [`Runner::new`], with `outputs` (ONNX value names, e.g. intermediate activations)
    /// as the model's outputs instead of its own, when given.
    pub fn tapping(
        bytes: &[u8],
        path: &Path,
        shapes: &Shapes,
        fixed: &Fixed,
        outputs: &[String],
    ) -> Result<Runner> {
        Self::loading(bytes, path, (shapes, fixed), outputs, &[])
    }

    /// Loads with `taps` as outputs (when given) and `swapped` weights as inputs, trying each
    /// way of loading in turn; the first way's error is the one reported.
    fn loading(
        bytes: &[u8],
        path: &Path,
        (shapes, fixed): (&Shapes, &Fixed),
        taps: &[String],
        swapped: &[WeightInput],
    ) -> Result<Runner> {
        let (mut proto, hint) = inside_tract(|| folded_proto(bytes, path, (fixed, shapes)))
            .unwrap_or_else(|what| Err(panicked(path, &what)))?;
        weights_as_inputs(&mut proto, swapped).map_err(|msg| Error::Unsupported {
            path: path.to_path_buf(),
            msg,
        })?;
        let mut shapes = shapes.clone();
        for weight in swapped {
            shapes.insert(weight.name.clone(), (weight.datum, weight.shape.clone()));
        }
        Self::prepared((&proto, &hint), path, &shapes, taps)
    }

    /// Loads `proto` (the model at `path`, as [`folded_proto`] leaves it, its refusal `hint`)
    /// for inputs of the given full shapes, by name, with `taps` as outputs when given, trying
    /// each way of loading in turn; the first way's error is the one reported.
    pub(crate) fn prepared(
        (proto, hint): (&pb::ModelProto, &str),
        path: &Path,
        shapes: &Shapes,
        taps: &[String],
    ) -> Result<Runner> {
        let mut first_error = None;
        for ignore_stored_shapes in LOADINGS {
            let loaded = inside_tract(|| {
                let model = inference_model(proto, path, ignore_stored_shapes, hint)?;
                Self::load(model, path, shapes, taps, hint)
            })
            .unwrap_or_else(|what| Err(panicked(path, &what)));
            match loaded {
                Ok(runner) => return Ok(runner),
                // Bad usage (a --fix that makes no sense) does not depend on how tract reads.
                Err(error @ Error::Usage(_)) => return Err(error),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        Err(first_error.expect("at least one way of loading"))
    }

    fn load(
        mut model: InferenceModel,
        path: &Path,
        shapes: &Shapes,
        taps: &[String],
        hint: &str,
    ) -> Result<Runner> {
        if !taps.is_empty() {
            model
                .select_outputs_by_name(taps)
                .map_err(|e| Error::Usage(format!("{}: cannot tap {e:#}", path.display())))?;
        }
        let inputs: Vec<String> = model
            .input_outlets()
            .map_err(|e| unsupported(path, e))?
            .iter()
            .map(|o| model.nodes()[o.node].name.clone())
            .collect();
        for (i, name) in inputs.iter().enumerate() {
            let (datum, shape) = shapes
                .get(name)
                .ok_or_else(|| Error::Usage(format!("no input data for `{name}`")))?;
            model
                .set_input_fact(i, InferenceFact::dt_shape(*datum, shape.as_slice()))
                .map_err(|e| unsupported(path, e))?;
        }
        let outputs: Vec<String> = model
            .output_outlets()
            .map_err(|e| unsupported(path, e))?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| model.nodes()[o.node].name.clone())
            })
            .collect();
        let plan = model
            .into_optimized()
            .and_then(last_axis_softmax)
            .and_then(|m| m.into_runnable())
            .map_err(|e| unsupported_with(path, e, hint))?;
        let output_shapes = (0..outputs.len())
            .map(|i| {
                plan.model()
                    .output_fact(i)
                    .ok()
                    .and_then(|f| f.shape.as_concrete().map(|s| s.to_vec()))
                    .unwrap_or_default()
            })
            .collect();
        Ok(Runner {
            plan,
            inputs,
            outputs,
            output_shapes,
        })
    }

    /// Bytes each output takes, from the types and shapes the plan was optimised for (0 where
    /// a shape is not concrete).
    pub(crate) fn output_bytes(&self) -> Vec<usize> {
        (0..self.outputs.len())
            .map(|i| {
                self.plan.model().output_fact(i).map_or(0, |fact| {
                    fact.shape.as_concrete().map_or(0, |shape| {
                        shape.iter().product::<usize>() * fact.datum_type.size_of()
                    })
                })
            })
            .collect()
    }

    /// Runs one batch; `inputs` by name. A panic of tract is caught and returned as such:
    /// the caller tells bad input values (a `Gather` index past the end of its table) from a
    /// model tract cannot run.
    pub fn run(
        &self,
        path: &Path,
        inputs: &BTreeMap<String, Tensor>,
    ) -> std::result::Result<Vec<Tensor>, RunError> {
        self.run_with(path, inputs, &BTreeMap::new())
    }

    /// As [`Runner::run`], the swapped weights' values taken from `weights` (shared, not
    /// copied).
    pub fn run_with(
        &self,
        path: &Path,
        inputs: &BTreeMap<String, Tensor>,
        weights: &BTreeMap<String, TValue>,
    ) -> std::result::Result<Vec<Tensor>, RunError> {
        let values: TVec<TValue> = self
            .inputs
            .iter()
            .map(|name| match weights.get(name) {
                Some(weight) => weight.clone(),
                None => inputs[name].clone().into_tvalue(),
            })
            .collect();
        let outputs = inside_tract(|| self.plan.run(values))
            .map_err(RunError::Panic)?
            .map_err(|e| RunError::Failed(unsupported(path, e)))?;
        Ok(outputs.into_iter().map(|v| v.into_tensor()).collect())
    }
}

/// Runs `f`, which calls into tract, turning a panic into its message.
pub fn inside_tract<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    quiet_panics_inside_tract();
    RUNNING_TRACT.with(|running| running.set(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    RUNNING_TRACT.with(|running| running.set(false));
    result.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "no message".into())
    })
}

thread_local! {
    /// Set while this thread runs a tract plan, whose panics [`Runner::run`] catches.
    static RUNNING_TRACT: Cell<bool> = const { Cell::new(false) };
}

/// Installs, once, a panic hook that keeps quiet about panics inside tract runs (they are
/// caught and reported as errors) and hands every other panic to the hook it replaces.
fn quiet_panics_inside_tract() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !RUNNING_TRACT.with(Cell::get) {
                previous(info);
            }
        }));
    });
}
