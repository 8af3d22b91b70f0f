//! Verification of pruned ONNX models: run a reference and a candidate side by side through
//! tract on the same inputs and measure, output by output, what pruning cost.
//!
//! This is the only crate of onnx-prune that depends on tract.
//!
//! ```no_run
//! use onnx_prune_core::Model;
//! use onnx_prune_verify::{check, CheckOptions, InputSource};
//!
//! let (a, b) = (Model::load("dense.onnx")?, Model::load("pruned.onnx")?);
//! let options = CheckOptions {
//!     inputs: vec![InputSource::Npz("test_set.npz".into())],
//!     labels: Some("test_set.npz:labels".into()),
//!     ..CheckOptions::default()
//! };
//! // A model with sparse initializers runs as `onnx_prune_core::densified` gives it.
//! let report = check((&a, a.bytes()), (&b, b.bytes()), &options)?;
//! println!("passed: {}, cosine {}", report.passed, report.outputs[0].cosine);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod batch;
mod calibrate;
mod check;
mod error;
mod fold;
mod influence;
mod inputs;
mod metrics;
mod patch;
mod reference;
mod run;
mod runner;
mod samples;
mod shapes;

pub use calibrate::{Calibration, CalibrationOptions};
pub use check::{
    check, labels as read_labels, validate, Accuracy, CheckOptions, CheckReport, InputSource,
    OutputMetrics, Tolerances, BATCH_CANDIDATES,
};
pub use error::{Error, Result};
pub use influence::block_influence;
pub use reference::{Keep, Reference, KEPT_BYTES_LIMIT};
pub use shapes::{latency, value_shapes};
