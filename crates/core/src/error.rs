//! Errors of the core library: each names the file, tensor or node it is about.

use std::path::PathBuf;

/// An error that says where and what.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// A file is not what it should be (not ONNX, truncated, malformed JSON, ...).
    #[error("{}: {msg}", path.display())]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A tensor is malformed or cannot be used as asked.
    #[error("tensor `{id}`: {msg}")]
    Tensor {
        /// The weight id or tensor name.
        id: String,
        /// What is wrong.
        msg: String,
    },
    /// A request (flags, configuration) is invalid.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            error,
        }
    }

    /// An [`Error::InvalidFile`] for `path`.
    pub fn invalid(path: impl Into<PathBuf>, msg: impl Into<String>) -> Error {
        Error::InvalidFile {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// An [`Error::Tensor`] for `id`.
    pub fn tensor(id: impl Into<String>, msg: impl Into<String>) -> Error {
        Error::Tensor {
            id: id.into(),
            msg: msg.into(),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
