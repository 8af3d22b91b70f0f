//! The core of onnx-prune: load an ONNX model without copying its tensors, find its weights
//! wherever they live, prune them, and write the result from the input's own bytes.
//!
//! No inference engine here: verification lives in `onnx-prune-verify`.
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

mod add_bias;
mod bits;
pub mod budget;
mod calibrated;
mod error;
mod inspect;
mod masks;
mod model;
mod outputs;
mod pending;
mod proto;
mod prune;
mod replay;
mod report;
mod rewrite;
mod schedule;
mod select;
pub mod shrink;
mod size;
mod sparse;
mod threshold;
mod values;
mod weights;
mod zeroing;

pub use add_bias::{BiasAdd, NewBias};
pub use calibrated::{
    plan_calibrated, tap, Calibrated, ConvGeometry, Geometry, LayerStats, Method, Order, Padding,
    Tap,
};
pub use error::{Error, Result};
pub use inspect::{inspect, summarize_weight, Inspection, ModelSummary, Totals, WeightSummary};
pub use masks::{read_masks, Mask};
pub use model::{
    element_count, FileBytes, Graph, Model, ModelInfo, Node, Payload, Source, SparseLayout, Tensor,
    ValueInfo, MAX_GRAPH_DEPTH,
};
pub use outputs::{check_outputs, real_output_path, NamedOutput};
pub use pending::remove_unfinished_outputs;
pub use proto::DataType;
pub use prune::{
    check_sparsity, plan, plan_zeroings, zeros_for, Pattern, Plan, PruneConfig, Scope,
    WeightOutcome,
};
pub use replay::{resolve, unpruned, Resolution};
pub use report::{write_file_atomic, FileSizes, OutcomeTotals, RewriteReport};
pub use rewrite::{
    output_files, save, to_bytes, Change, Destination, Edit, OutputFiles, Saved, Storage,
    WrittenFile,
};
pub use schedule::{Layout, Manifest, SparsitySchedule, Step, FORMAT};
pub use select::{select, Selection};
pub use size::{compressed_size, CompressedSize};
pub use sparse::densified;
pub use threshold::{cut, Cut, Segment};
pub use values::{count_zeros, dense_bytes, magnitude_key, stored_bytes};
pub use weights::{discover, discover_with, Consumer, Role, Weight, DEFAULT_MIN_PARAMS};
pub use zeroing::{write_zeroed, Zeroing};
