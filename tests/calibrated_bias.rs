//! `--correct-bias` on layers without a bias: the `add_bias` rewrite gives a bias-less `Conv`
//! and `Gemm` a third input and a `MatMul` an `Add` after it, so that the layer's mean output
//! over the calibration data is the dense model's again, measured through tract.
//!
//! Fixture: `fixtures/calibration/bias_free.onnx`, a real PyTorch export of `bias=False` layers
//! (made by `fixtures/calibration/export_bias_free.py`). Models written as these tests write
//! them were checked once with `onnx.checker.check_model(onnx.load(path), full_check=True)`
//! (onnx 1.23.2, 2026-11-29): magnitude, wanda and sparsegpt at 50% with `--correct-bias` over
//! all four layers of `bias_free.onnx`, of its external data variant and of `layers.onnx` (whose
//! depthwise `Conv` gains a bias), and sparsegpt with `--calibration-order sequential`: all pass.

use std::path::{Path, PathBuf};

use onnx_prune_core::{ConvGeometry, Geometry, Model, Padding, Tap};
use onnx_prune_verify::{Calibration, CalibrationOptions, InputSource};
use protobuf::Message;

use crate::common::{arg, fixture, stdout_ok};

fn calibration(name: &str) -> PathBuf {
    fixture("calibration").join(name)
}

/// Each layer: weight id, the tensor its output is, and how to average that output per channel.
fn layers() -> [(&'static str, &'static str, Geometry, usize); 4] {
    let rows = Geometry::Rows { transposed: false };
    let per_channel = Geometry::Conv(ConvGeometry {
        kernel: vec![1, 1],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        padding: Padding::Explicit(vec![0; 4]),
        group: 1,
    });
    [
        ("conv.weight", "conv2d", per_channel, 4),
        ("fc.weight", "linear", rows.clone(), 16),
        ("val_16", "linear_1", rows.clone(), 6),
        ("val_17", "y", rows, 3),
    ]
}

/// The mean of each output channel of `output` over the calibration samples, run by tract.
fn mean_output(model: &Path, output: &str, geometry: &Geometry, channels: usize) -> Vec<f64> {
    let model = Model::load(model).unwrap();
    let options = CalibrationOptions {
        inputs: vec![InputSource::Npz(calibration("bias_free_calibration.npz"))],
        ..CalibrationOptions::default()
    };
    let data = Calibration::load(&model, &options).unwrap();
    let tap = Tap {
        id: output.into(),
        activation: output.into(),
        geometry: geometry.clone(),
        cols: channels,
    };
    let stats = data.statistics(model.bytes(), &[tap]).unwrap();
    stats[0].means(0)
}

fn max_drift(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Prunes `weight` alone (so that its input stays the dense model's) and returns the report.
fn prune_one(
    model: &Path,
    out: &Path,
    method: &str,
    weight: &str,
    bias: bool,
) -> serde_json::Value {
    let report = out.with_extension("json");
    let include = format!("^{weight}$");
    let data = calibration("bias_free_calibration.npz");
    let mut args = vec![
        "prune",
        arg(model),
        "-o",
        arg(out),
        "--report",
        arg(&report),
        "--method",
        method,
        "--sparsity",
        "0.7",
        "--min-params",
        "0",
        "--include",
        &include,
        "--calibration",
        arg(&data),
    ];
    if bias {
        args.push("--correct-bias");
    }
    stdout_ok(&args);
    serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap()
}

#[test]
fn an_added_bias_keeps_the_mean_output_of_a_conv_a_gemm_and_matmuls() {
    let dir = tempfile::tempdir().unwrap();
    let model = calibration("bias_free.onnx");
    for (weight, output, geometry, channels) in layers() {
        let dense = mean_output(&model, output, &geometry, channels);
        for method in ["magnitude", "wanda", "sparsegpt"] {
            let label = format!("{method} {weight}");
            let plain = dir.path().join("plain.onnx");
            let fixed = dir.path().join("fixed.onnx");
            prune_one(&model, &plain, method, weight, false);
            let report = prune_one(&model, &fixed, method, weight, true);
            let notes = &report["weights"][0]["notes"];
            assert!(
                notes[0].as_str().unwrap().contains("added"),
                "{label}: {notes}"
            );
            let drift = max_drift(&mean_output(&plain, output, &geometry, channels), &dense);
            let scale = dense.iter().fold(1.0, |m: f64, v| m.max(v.abs()));
            assert!(
                drift > 1e-3 * scale,
                "{label}: pruning moved no mean ({drift})"
            );
            let left = max_drift(&mean_output(&fixed, output, &geometry, channels), &dense);
            assert!(left < 1e-5 * scale, "{label}: mean still off by {left}");
        }
    }
}

/// A model's nodes, initializers, graph inputs and outputs and `value_info`, one per line.
fn outline(path: &Path) -> String {
    let model = onnx_protobuf::ModelProto::parse_from_bytes(&std::fs::read(path).unwrap()).unwrap();
    let graph = model.graph.as_ref().unwrap();
    let mut lines = Vec::new();
    for node in &graph.node {
        lines.push(format!(
            "node {} {}: {} -> {}",
            node.op_type,
            node.name,
            node.input.join(", "),
            node.output.join(", ")
        ));
    }
    for t in &graph.initializer {
        let place = if t.external_data.is_empty() {
            "inline"
        } else {
            "external"
        };
        lines.push(format!(
            "initializer {} {:?} type {} {place}",
            t.name, t.dims, t.data_type
        ));
    }
    let names = |values: &[onnx_protobuf::ValueInfoProto]| {
        values
            .iter()
            .map(|v| v.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    lines.push(format!("inputs: {}", names(&graph.input)));
    lines.push(format!("outputs: {}", names(&graph.output)));
    lines.push(format!("value_info: {}", names(&graph.value_info)));
    lines.join("\n")
}

/// Guards the rewrite itself: what `add_bias` inserts and renames, and nothing else.
#[test]
fn added_biases_in_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let model = calibration("bias_free.onnx");
    let out = dir.path().join("out.onnx");
    let report = dir.path().join("out.json");
    stdout_ok(&[
        "prune",
        arg(&model),
        "-o",
        arg(&out),
        "--report",
        arg(&report),
        "--method",
        "wanda",
        "--sparsity",
        "0.5",
        "--min-params",
        "0",
        "--correct-bias",
        "--calibration",
        arg(&calibration("bias_free_calibration.npz")),
    ]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    let notes: Vec<String> = report["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| format!("{}: {}", w["id"], w["notes"]))
        .collect();
    insta::assert_snapshot!(format!(
        "before:\n{}\n\nafter:\n{}\n\nnotes:\n{}",
        outline(&model),
        outline(&out),
        notes.join("\n")
    ));
}

/// A model with its weights in external data: the new biases are stored inline, the other
/// tensors stay in the (rewritten) external file, and the means are kept as for the inline model.
#[test]
fn an_added_bias_is_stored_inline_beside_external_data() {
    let dir = tempfile::tempdir().unwrap();
    let model = calibration("bias_free_external.onnx");
    let out = dir.path().join("external.onnx");
    for (weight, output, geometry, channels) in layers() {
        let dense = mean_output(&calibration("bias_free.onnx"), output, &geometry, channels);
        prune_one(&model, &out, "sparsegpt", weight, true);
        let left = max_drift(&mean_output(&out, output, &geometry, channels), &dense);
        let scale = dense.iter().fold(1.0, |m: f64, v| m.max(v.abs()));
        assert!(left < 1e-5 * scale, "{weight}: mean still off by {left}");
        let outline = outline(&out);
        let added: Vec<&str> = outline
            .lines()
            .filter(|l| l.starts_with("initializer") && l.contains(".bias"))
            .collect();
        assert_eq!(added.len(), 1, "{weight}: {outline}");
        assert!(added[0].ends_with("inline"), "{weight}: {}", added[0]);
        let kept_external = outline
            .lines()
            .filter(|l| l.starts_with("initializer") && !l.contains(".bias"))
            .all(|l| l.ends_with("external"));
        assert!(kept_external, "{weight}: {outline}");
    }
}
