//! The model loader and everything downstream of it, on arbitrary bytes: loading never panics;
//! a model that loads is saved unchanged byte for byte, and what pruning writes loads again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onnx_prune_core::{discover, inspect, save, Destination, Model, Storage};
use onnx_prune_core::prune::{plan, select, Pattern, PruneConfig, Scope, Selection};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let input = dir.path().join("input.onnx");
    std::fs::write(&input, data).expect("writing the input");
    let Ok(model) = Model::load(&input) else {
        return;
    };
    let _ = inspect(&model, 0);
    let unchanged = dir.path().join("unchanged.onnx");
    if save(&model, &[], Destination::File(&unchanged), Storage::Dense).is_ok() {
        assert_eq!(std::fs::read(&unchanged).expect("the saved model"), data);
    }
    let weights = discover(&model);
    let everything = Selection {
        include: vec![regex::Regex::new(".").expect("a regex")],
        ..Selection::default()
    };
    let Ok(selected) = select(&model, &weights, &everything) else {
        return;
    };
    let requests = [
        (Scope::Global, Pattern::Unstructured, Storage::Sparse),
        (Scope::Tensor, Pattern::NOfM { n: 2, m: 4 }, Storage::Dense),
        (
            Scope::Tensor,
            Pattern::Block { rows: 2, cols: 3 },
            Storage::Dense,
        ),
    ];
    for (scope, pattern, storage) in requests {
        let config = PruneConfig {
            sparsity: 0.5,
            scope,
            pattern,
            ..PruneConfig::default()
        };
        let Ok(plan) = plan(&model, &selected, &config) else {
            continue;
        };
        let out = dir.path().join("pruned.onnx");
        if save(&model, &plan.edits, Destination::File(&out), storage).is_ok() {
            if let Err(e) = Model::load(&out) {
                panic!("a written model does not load: {e}");
            }
        }
    }
});
