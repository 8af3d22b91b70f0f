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
    /// An output could not be written (a full disk, no permission, another run writing it):
    /// nothing was put in place unless the message says what was.
    #[error("cannot write {what}: {error}")]
    Write {
        /// The output: its path, with the flag that named it when known.
        what: String,
        /// What the operating system (or the lock) said.
        error: std::io::Error,
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

    /// An [`Error::Write`] of the output `path`.
    pub fn write(path: impl AsRef<std::path::Path>, error: std::io::Error) -> Error {
        Error::Write {
            what: format!("`{}`", path.as_ref().display()),
            error,
        }
    }

    /// An [`Error::Write`] of the output `path` named by `flag` (`-o`, `--report`).
    pub fn write_output(flag: &str, path: &std::path::Path, error: std::io::Error) -> Error {
        Error::Write {
            what: format!("{flag} `{}`", path.display()),
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
