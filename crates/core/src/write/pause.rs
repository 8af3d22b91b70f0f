//! A pause point for fault-injection tests, in debug builds only: with
//! `ONNX_PRUNE_PAUSE=<step>` in the environment, a run's writer prints
//! `onnx-prune: paused at <step>` on stderr when it reaches that step and waits for a line on
//! standard input, so that a test can signal, kill or change files at a known moment. Release
//! builds have no pause point.
//!
//! Steps, in order: `writing` (output names chosen, nothing written yet), `staged` (every
//! output written and synced, nothing committed), `committed` (every output in place, the
//! files only the replaced model read not yet removed).

/// Waits at `step` when the environment asks for it (debug builds only).
#[cfg(debug_assertions)]
pub(crate) fn pause(step: &str) {
    if std::env::var_os("ONNX_PRUNE_PAUSE").is_some_and(|s| s == step) {
        eprintln!("onnx-prune: paused at {step}");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
}

/// Release builds have no pause point.
#[cfg(not(debug_assertions))]
pub(crate) fn pause(_step: &str) {}
