//! Integration tests: every fixture through the `onnx-prune` binary and the libraries.

mod auto;
mod calibrated;
mod calibrated_bias;
mod check;
mod check_data;
mod check_fix;
mod cli_errors;
mod common;
mod corrupted;
mod graph_diff;
mod hostile;
mod in_place;
mod inspect;
mod packaging;
mod past_2gib;
mod prune;
mod replay;
mod roundtrip;
mod saves;
mod sensitivity;
mod shrink;
mod shrink_layers;
mod shrink_on_disk;
mod shrink_refit;
mod shrink_vocab;
mod trust;
