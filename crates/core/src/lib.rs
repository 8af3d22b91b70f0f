//! The core of onnx-prune: load an ONNX model without copying its tensors, find its weights
//! wherever they live, prune them, and write the result from the input's own bytes.
//!
//! No inference engine here: verification lives in `onnx-prune-verify`, and statistics
//! measured on data (calibration, shapes) reach this crate as plain values.
//!
//! One namespace per job:
//! - [`model`]: loading a model without copying its tensors, its graphs and tensors, and its
//!   weights ([`discover`]) with their roles;
//! - [`inspect`](mod@inspect): the inventory `onnx-prune inspect` prints;
//! - [`prune`]: choosing weights, magnitude thresholds, N:M and block patterns, the plan of
//!   what to zero, and the report of a rewrite;
//! - [`calibrated`]: Wanda, SparseGPT and bias correction from activation statistics;
//! - [`replay`]: mask schedules from training and their masks, resolved onto the weights;
//! - [`shrink`]: channel dependency groups and their removal;
//! - [`write`](mod@write): the byte-faithful writer, atomic outputs and the rules for output paths.
//!
//! ```no_run
//! use onnx_prune_core::{inspect, Model, DEFAULT_MIN_PARAMS};
//!
//! let model = Model::load("model.onnx")?;
//! let report = inspect(&model, DEFAULT_MIN_PARAMS)?;
//! for weight in &report.weights {
//!     println!("{} {:?} {} zeros of {}", weight.id, weight.shape, weight.zeros, weight.params);
//! }
//! # Ok::<(), onnx_prune_core::Error>(())
//! ```
#![deny(missing_docs)]

mod bits;
pub mod calibrated;
mod error;
pub mod inspect;
pub mod model;
mod proto;
pub mod prune;
pub mod replay;
pub mod shrink;
pub mod write;

pub use error::{Error, Result};
pub use inspect::inspect;
pub use model::{discover, DataType, Model, Weight, DEFAULT_MIN_PARAMS};
pub use write::{save, Destination, Edit, Storage};
