//! Integration tests: every fixture through the `onnx-prune` binary and the libraries.

mod common;
mod inspect;
mod roundtrip;
