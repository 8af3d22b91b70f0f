//! Errors of tuning: those of the libraries it drives, bad requests, and where they happened.

/// A tuning error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading, pruning or writing a model failed.
    #[error(transparent)]
    Model(#[from] onnx_prune_core::Error),
    /// Running a model through tract failed.
    #[error(transparent)]
    Verify(#[from] onnx_prune_verify::Error),
    /// The request cannot be carried out on this model.
    #[error("{0}")]
    Usage(String),
    /// A temporary file or directory could not be made.
    #[error("cannot create a temporary directory: {0}")]
    Scratch(std::io::Error),
    /// An error while working on one candidate.
    #[error("{context}")]
    Context {
        /// What was being done (`checking `conv1.weight` at 0.5`).
        context: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// This error, said to have happened while doing `context`.
    pub(crate) fn context(self, context: String) -> Error {
        Error::Context {
            context,
            source: Box::new(self),
        }
    }

    /// The tract error underneath, if this is one.
    pub fn verify(&self) -> Option<&onnx_prune_verify::Error> {
        match self {
            Error::Verify(e) => Some(e),
            Error::Context { source, .. } => source.verify(),
            _ => None,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
