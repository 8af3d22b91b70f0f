//! Errors of verification, split by what the user can do about them.

use std::path::PathBuf;

/// A verification error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// tract cannot load or run the model; the message names the op and node where tract does.
    #[error("{}: tract cannot run this model: {msg}", path.display())]
    Unsupported {
        /// The model.
        path: PathBuf,
        /// tract's error chain.
        msg: String,
    },
    /// An input or label file is unreadable or does not fit the model.
    #[error("{}: {msg}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A model file cannot be read or rewritten for tract.
    #[error(transparent)]
    Model(#[from] onnx_prune_core::Error),
    /// The request does not fit the model (missing input, wrong type or rank, ...).
    #[error("{0}")]
    Usage(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
