//! Corrupted models (truncated, flipped bytes, garbage) never panic: loading, inspecting,
//! planning and saving either work or return an error that names the file.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use onnx_prune_core::prune::{plan, select, PruneConfig, Scope, Selection};
use onnx_prune_core::{discover, inspect, save, Destination, Model, Storage};

use crate::common::onnx_fixtures;

/// Deterministic xorshift64, so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Everything a pipeline would do with a model; errors are fine, panics are not.
fn exercise(path: &Path, out_dir: &Path) {
    let Ok(model) = Model::load(path) else { return };
    let _ = inspect(&model, 0);
    let weights = discover(&model);
    let selection = Selection {
        include: vec![regex::Regex::new(".").unwrap()],
        ..Selection::default()
    };
    let Ok(selected) = select(&model, &weights, &selection) else {
        return;
    };
    let config = PruneConfig {
        sparsity: 0.5,
        scope: Scope::Global,
        ..PruneConfig::default()
    };
    if let Ok(plan) = plan(&model, &selected, &config) {
        let _ = save(
            &model,
            &plan.edits,
            Destination::File(&out_dir.join("out.onnx")),
            Storage::Sparse,
        );
    }
}

fn mutations(original: &[u8], rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for cut in (0..original.len()).step_by((original.len() / 48).max(1)) {
        out.push(original[..cut].to_vec());
    }
    // ONNX_PRUNE_MUTATIONS=100000 for a longer campaign than CI's.
    let count = std::env::var("ONNX_PRUNE_MUTATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    for _ in 0..count {
        let mut bytes = original.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            bytes[at] = match rng.below(4) {
                0 => bytes[at] ^ (1 << rng.below(8)),
                1 => 0xff,
                2 => 0x00,
                _ => rng.next() as u8,
            };
        }
        out.push(bytes);
    }
    out
}

#[test]
fn corrupted_fixtures_never_panic() {
    let seed = std::env::var("ONNX_PRUNE_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_ef01);
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mutant.onnx");
    for fixture in onnx_fixtures() {
        let original = std::fs::read(&fixture).unwrap();
        for (i, mutant) in mutations(&original, &mut rng).into_iter().enumerate() {
            std::fs::write(&path, &mutant).unwrap();
            if fixture.ends_with("external_data.onnx") {
                std::fs::copy(
                    fixture.with_file_name("external_data.bin"),
                    dir.path().join("external_data.bin"),
                )
                .unwrap();
            }
            let result = catch_unwind(AssertUnwindSafe(|| exercise(&path, out_dir.path())));
            if result.is_err() {
                let keep = std::env::temp_dir().join(format!("onnx-prune-panic-{i}.onnx"));
                std::fs::write(&keep, &mutant).unwrap();
                panic!(
                    "mutant {i} of {} panicked; kept as {}",
                    fixture.display(),
                    keep.display()
                );
            }
        }
    }
}
