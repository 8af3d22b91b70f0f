//! `shrink` on what real exporters write around the channel groups: a Split-sizes constant
//! shared between C2f blocks (Ultralytics' YOLOv8 export), per-channel biases computed as
//! `Reshape(Constant, Identity(Constant))` (Paddle2ONNX), and blocks named by their cause.

use std::path::{Path, PathBuf};

use onnx_prune_core::shrink;
use onnx_prune_core::Model;

use crate::common::{arg, fixture, run, stdout_ok};
use crate::shrink::assert_same_on;

fn real(name: &str) -> PathBuf {
    fixture("shrink/real").join(name)
}

/// (open, all) channel groups of a fixture.
fn open_groups(name: &str) -> (usize, usize) {
    let analysis = shrink::analyze(&Model::load(real(name)).unwrap()).unwrap();
    (analysis.open().count(), analysis.groups.len())
}

/// Shrinks `name` at `sparsity` and checks the result against the original on the fixture's
/// inputs (dead channels aside, outputs change: only the shapes and the run are compared) and
/// returns the report.
fn shrink_runs(name: &str, sparsity: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("out.onnx"), dir.path().join("r.json"));
    stdout_ok(&[
        "shrink",
        arg(&real(name)),
        "-o",
        arg(&out),
        "--sparsity",
        sparsity,
        "--report",
        arg(&report),
    ]);
    let inputs = real(&name.replace(".onnx", "_inputs.npz"));
    // The shrunk model runs in tract on the same inputs and gives outputs of the same shapes.
    let checked = run(&[
        "check",
        arg(&real(name)),
        arg(&out),
        "--inputs",
        arg(&inputs),
        "--atol",
        "1e9",
    ]);
    assert!(
        checked.status.code() == Some(0),
        "{name}: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap()
}

/// The second half of every open group's units (channels, grouped-convolution periods or
/// attention heads) removed.
pub fn second_halves(analysis: &shrink::Analysis) -> Vec<Vec<usize>> {
    analysis
        .groups
        .iter()
        .map(|g| match g.blocked.is_empty() {
            true => (0..g.channels)
                .filter(|&c| g.unit_of(c) >= g.units().div_ceil(2))
                .collect(),
            false => Vec::new(),
        })
        .collect()
}

/// Shrinks the second half of every open group of `model` and checks the result computes what
/// the original with those units' consumer weights zeroed computes, on `inputs`.
pub fn assert_second_halves_shrink_as_masked(model: &Path, inputs: &Path) {
    assert_shrinks_as_masked(model, inputs, second_halves);
}

/// Shrinks the channels `pick` chooses (per group) in `model` and checks the result computes
/// what the original with those channels' consumer weights zeroed computes, on `inputs`.
pub fn assert_shrinks_as_masked(
    model: &Path,
    inputs: &Path,
    pick: impl Fn(&shrink::Analysis) -> Vec<Vec<usize>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let loaded = Model::load(model).unwrap();
    let analysis = shrink::analyze(&loaded).unwrap();
    let removed = pick(&analysis);
    let (bytes, _) = shrink::shrink_bytes(&loaded, &analysis, &removed, &[]).unwrap();
    let masked =
        shrink::zeroed_bytes(&loaded, &analysis, &removed, shrink::Side::Consumers).unwrap();
    let (a, b) = (
        dir.path().join("masked.onnx"),
        dir.path().join("shrunk.onnx"),
    );
    std::fs::write(&a, masked).unwrap();
    std::fs::write(&b, bytes).unwrap();
    assert_same_on(&a, &b, inputs);
}

/// [`assert_second_halves_shrink_as_masked`] on a fixture of `fixtures/shrink/real`, with its
/// own inputs.
fn assert_real_halves_shrink_as_masked(name: &str) {
    assert_second_halves_shrink_as_masked(
        &real(name),
        &real(&name.replace(".onnx", "_inputs.npz")),
    );
}

#[test]
fn shared_split_sizes_get_a_copy_per_split() {
    // `onnx::Split_157` feeds /model.4/Split and /model.15/Split, `onnx::Split_184` five more:
    // each Split gets its own sizes, so the C2f groups open (51 of 58).
    assert_eq!(open_groups("yolov8_tiny.onnx"), (51, 58));
    let report = shrink_runs("yolov8_tiny.onnx", "0.5");
    let totals = &report["totals"];
    assert!(
        totals["params_after"].as_u64().unwrap()
            < totals["params_before"].as_u64().unwrap() * 2 / 3,
        "{totals}"
    );
}

#[test]
fn a_shrunk_yolo_export_computes_what_its_masked_original_computes() {
    // Split sizes change in every C2f.
    assert_real_halves_shrink_as_masked("yolov8_tiny.onnx");
}

#[test]
fn reshaped_constant_biases_fold_into_their_groups() {
    // Paddle2ONNX adds each squeeze-excite Conv's bias as Reshape(Constant, Identity(Constant)):
    // folded, 14 of 16 groups open.
    assert_eq!(open_groups("ppocr_cls_tiny.onnx"), (14, 16));
    assert_real_halves_shrink_as_masked("ppocr_cls_tiny.onnx");
    shrink_runs("ppocr_cls_tiny.onnx", "0.3");
}

#[test]
fn a_group_blocked_upstream_names_the_node_that_blocked() {
    // c2f_tiny_torchscript slices its chunk with computed bounds: the residual Adds after it
    // say so, not "in no channel group".
    let analysis =
        shrink::analyze(&Model::load(real("c2f_tiny_torchscript.onnx")).unwrap()).unwrap();
    let blocks: Vec<&String> = analysis.groups.iter().flat_map(|g| &g.blocked).collect();
    assert!(
        blocks.iter().any(|b| b.contains(
            "`/Slice_1_output_0`, which comes from `/Slice_1` (Slice), blocked because its \
             shape arguments are computed"
        )),
        "{blocks:?}"
    );
    assert!(
        blocks.iter().all(|b| !b.contains("in no channel group")),
        "{blocks:?}"
    );
}
