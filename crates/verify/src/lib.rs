//! Verification of pruned ONNX models: run a reference and a candidate side by side through
//! tract on the same inputs and measure, output by output, what pruning cost.
//!
//! This is the only crate of onnx-prune that depends on tract.
//!
//! ```no_run
//! use onnx_prune_verify::{check, CheckOptions, InputSource};
//! use std::path::Path;
//!
//! let (a, b) = (Path::new("dense.onnx"), Path::new("pruned.onnx"));
//! let options = CheckOptions {
//!     inputs: vec![InputSource::Npz("test_set.npz".into())],
//!     labels: Some("test_set.npz:labels".into()),
//!     ..CheckOptions::default()
//! };
//! let report = check((a, &std::fs::read(a)?), (b, &std::fs::read(b)?), &options)?;
//! println!("passed: {}, cosine {}", report.passed, report.outputs[0].cosine);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod check;
mod error;
mod inputs;
mod runner;

pub use check::{
    check, Accuracy, CheckOptions, CheckReport, InputSource, OutputMetrics, Tolerances,
};
pub use error::{Error, Result};
