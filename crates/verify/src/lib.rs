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
//! let report = check(&a, &b, &options)?;
//! println!("passed: {}, cosine {}", report.passed, report.outputs[0].cosine);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod batch;
mod calibrate;
mod check;
mod cut;
mod error;
mod fold;
mod influence;
mod inputs;
mod last_axis_softmax;
mod metrics;
mod options;
mod patch;
mod prepare;
mod reference;
mod report;
mod runner;
mod samples;
mod shapes;
mod side_by_side;
mod suffix;
mod swap;

pub use batch::BATCH_CANDIDATES;
pub use calibrate::{Calibration, CalibrationOptions};
pub use check::{check, labels as read_labels, validate};
pub use error::{Error, Result};
pub use influence::block_influence;
pub use options::{CheckOptions, InputSource, Tolerances};
pub use reference::{Keep, Reference, KEPT_BYTES_LIMIT};
pub use report::{Accuracy, CheckReport, OutputMetrics};
pub use shapes::{latency, value_shapes};
pub use suffix::{Suffix, SUFFIX_CACHE_BYTES};
pub use swap::Swappable;
