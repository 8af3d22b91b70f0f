//! The mask-schedule manifest parser on arbitrary bytes, and the sparsity a schedule gives at
//! any step: never a panic, and a sparsity is always a fraction.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onnx_prune_core::replay::Manifest;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("schedule.json");
    std::fs::write(&path, data).expect("writing the input");
    let Ok(manifest) = Manifest::load(&path) else {
        return;
    };
    let _ = manifest.step(None);
    if let Some(schedule) = &manifest.sparsity_schedule {
        for step in [i64::MIN, -1, 0, 1, 7, 100, 10_000, i64::MAX] {
            let s = schedule.sparsity_at(step);
            assert!((0.0..=1.0).contains(&s), "sparsity {s} at step {step}");
        }
    }
});
