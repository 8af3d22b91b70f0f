//! One module per command: each turns its parsed flags into library options (through
//! [`crate::options`]), calls the libraries, and hands the results to [`crate::render`] and
//! [`crate::outcome`]. Commands never import each other.

pub mod check;
pub mod generate;
pub mod inspect;
pub mod prune;
pub mod replay;
pub mod sensitivity;
pub mod shrink;
