//! Tuning pruning against a check: what each weight or channel group costs (sensitivity
//! curves), and the largest pruning that still passes (budget searches), for any front end.
//!
//! The dense model is loaded into tract and run once ([`Baseline`]). A weight candidate runs
//! in one more load of that model, with the selected weights as inputs fed its values; a
//! candidate that changes more (a new bias, shapes) is written to a scratch file and checked
//! against it. Calibration statistics are gathered once
//! and reused for every candidate ([`Planner`]). Progress reaches the caller through
//! [`Progress`]; nothing is printed.
//!
//! ```no_run
//! use onnx_prune_core::prune::{select, Pattern, Selection};
//! use onnx_prune_core::{discover, Model};
//! use onnx_prune_tune::{measure_weights, Baseline, Planner, Sensitivity, Structure};
//! use onnx_prune_verify::{CheckOptions, InputSource};
//!
//! let model = Model::load("model.onnx")?;
//! let weights = discover(&model);
//! let selected = select(&model, &weights, &Selection::default())?;
//! let options = CheckOptions {
//!     inputs: vec![InputSource::Npz("test_set.npz".into())],
//!     labels: Some("test_set.npz:labels".into()),
//!     ..CheckOptions::default()
//! };
//! let baseline = Baseline::load(model.path(), &options)?;
//! let planner = Planner::new(&model, None, &selected)?;
//! let sparsities = [0.5, 0.9];
//! let reports = measure_weights(&planner, &baseline, (&selected, &sparsities, Pattern::Unstructured), &())?;
//! let units = selected.iter().map(|w| (w.id.clone(), model.tensors()[w.tensor].elements)).collect();
//! let curves = Sensitivity::from_reports(
//!     (Structure::Weights, "magnitude", Some("unstructured".into())),
//!     units,
//!     sparsities.to_vec(),
//!     &reports,
//! );
//! for curve in &curves.weights {
//!     println!("{}: {:?}", curve.id, curve.values);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod auto;
mod baseline;
pub mod budget;
mod channels;
mod error;
mod groups;
mod layers;
mod macs;
mod metric;
mod planner;
mod progress;
pub mod search;
mod sensitivity;

pub use auto::{search_groups, search_weights, GroupSearch, Outcome, Searched, WeightSearch};
pub use baseline::Baseline;
pub use channels::{ChannelCalibration, Removal};
pub use error::{Error, Result};
pub use groups::{allocation, group_units, measure_groups, GroupUnit};
pub use layers::{
    layer_units, measure_layers, search_layers, LayerSearch, LayerUnit, LayersFound, LayersTried,
};
pub use macs::{free_inputs, macs, macs_before_after, MacCount};
pub use metric::Metric;
pub use planner::Planner;
pub use progress::Progress;
pub use sensitivity::{measure_weights, Curve, Sensitivity, Structure};
