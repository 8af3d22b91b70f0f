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

use onnx_prune_core::calibrated::{ConvGeometry, Geometry, Padding, Tap};
use onnx_prune_core::Model;
use onnx_prune_verify::{Calibration, CalibrationOptions, InputSource};
use protobuf::Message;

use crate::common::{arg, fixture, float_tensor, float_value, stdout_ok};

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

/// The mean of each output channel of `output` over the samples of `data`, run by tract.
fn mean_output(
    model: &Path,
    data: &Path,
    output: &str,
    geometry: &Geometry,
    channels: usize,
) -> Vec<f64> {
    let model = Model::load(model).unwrap();
    let options = CalibrationOptions {
        inputs: vec![InputSource::Npz(data.to_path_buf())],
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

/// Prunes with `flags` (and `--min-params 0 --calibration data`), returns the report.
fn prune(model: &Path, out: &Path, data: &Path, flags: &[&str]) -> serde_json::Value {
    let report = out.with_extension("json");
    let mut args = vec![
        "prune",
        arg(model),
        "-o",
        arg(out),
        "--report",
        arg(&report),
        "--min-params",
        "0",
        "--calibration",
        arg(data),
    ];
    args.extend_from_slice(flags);
    stdout_ok(&args);
    serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap()
}

/// Prunes `weight` alone to 70% (so that its input stays the dense model's).
fn prune_one(
    model: &Path,
    out: &Path,
    method: &str,
    weight: &str,
    bias: bool,
) -> serde_json::Value {
    let include = format!("^{weight}$");
    let mut flags = vec![
        "--method",
        method,
        "--sparsity",
        "0.7",
        "--include",
        &include,
    ];
    if bias {
        flags.push("--correct-bias");
    }
    prune(
        model,
        out,
        &calibration("bias_free_calibration.npz"),
        &flags,
    )
}

#[test]
fn an_added_bias_keeps_the_mean_output_of_a_conv_a_gemm_and_matmuls() {
    let dir = tempfile::tempdir().unwrap();
    let model = calibration("bias_free.onnx");
    let data = calibration("bias_free_calibration.npz");
    for (weight, output, geometry, channels) in layers() {
        let dense = mean_output(&model, &data, output, &geometry, channels);
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
            let drift = max_drift(
                &mean_output(&plain, &data, output, &geometry, channels),
                &dense,
            );
            let scale = dense.iter().fold(1.0, |m: f64, v| m.max(v.abs()));
            assert!(
                drift > 1e-3 * scale,
                "{label}: pruning moved no mean ({drift})"
            );
            let left = max_drift(
                &mean_output(&fixed, &data, output, &geometry, channels),
                &dense,
            );
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
    let data = calibration("bias_free_calibration.npz");
    let flags = ["--method", "wanda", "--sparsity", "0.5", "--correct-bias"];
    let report = prune(&model, &out, &data, &flags);
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
    let data = calibration("bias_free_calibration.npz");
    for (weight, output, geometry, channels) in layers() {
        let dense = mean_output(
            &calibration("bias_free.onnx"),
            &data,
            output,
            &geometry,
            channels,
        );
        prune_one(&model, &out, "sparsegpt", weight, true);
        let left = max_drift(
            &mean_output(&out, &data, output, &geometry, channels),
            &dense,
        );
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

/// A `Gemm` `y = 2 x w^T (+ 0.5 C)` without `C`, whose natural bias name `y.bias` is taken by
/// an unused initializer, and 40 samples of `x` with a non-zero mean.
fn scaled_gemm(dir: &Path) -> (PathBuf, PathBuf) {
    use onnx_protobuf::attribute_proto::AttributeType;
    let (rows, cols) = (6, 20);
    // Deterministic values in [-1, 1).
    let value = |i: usize| ((i * 37 % 101) as f32) / 50.0 - 1.0;
    let weight: Vec<f32> = (0..(rows * cols) as usize).map(value).collect();
    let mut node = onnx_protobuf::NodeProto::new();
    node.op_type = "Gemm".into();
    node.input = vec!["x".into(), "w".into()];
    node.output = vec!["y".into()];
    for (name, value) in [("alpha", 2.0), ("beta", 0.5)] {
        let mut a = onnx_protobuf::AttributeProto::new();
        a.name = name.into();
        a.f = value;
        a.type_ = AttributeType::FLOAT.into();
        node.attribute.push(a);
    }
    let mut a = onnx_protobuf::AttributeProto::new();
    a.name = "transB".into();
    a.i = 1;
    a.type_ = AttributeType::INT.into();
    node.attribute.push(a);
    let mut graph = onnx_protobuf::GraphProto::new();
    graph.node.push(node);
    graph
        .initializer
        .push(float_tensor("w", &[rows, cols], &weight));
    graph.initializer.push(float_tensor("y.bias", &[1], &[0.0]));
    graph.input.push(float_value("x", &[None, Some(cols)]));
    graph.output.push(float_value("y", &[None, Some(rows)]));
    let model = dir.join("gemm.onnx");
    std::fs::write(&model, crate::common::model_bytes(graph)).unwrap();
    let x: Vec<f32> = (0..40 * cols as usize)
        .map(|i| value(i * 7 + 3) + 0.3)
        .collect();
    let data = crate::calibrated_data::npz_with(dir, "gemm.npz", "x", &[40, cols as usize], x);
    (model, data)
}

/// Guards the `alpha / beta` factor of a new `C` and the name collision: without the factor the
/// correction would be 4x too large here.
#[test]
fn a_gemm_with_beta_gets_its_new_c_scaled_and_a_free_name() {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = scaled_gemm(dir.path());
    let out = dir.path().join("out.onnx");
    let flags = [
        "--method",
        "sparsegpt",
        "--sparsity",
        "0.6",
        "--include",
        "^w$",
    ];
    let report = prune(
        &model,
        &out,
        &data,
        &[&flags[..], &["--correct-bias"]].concat(),
    );
    assert_eq!(
        report["weights"][0]["notes"][0],
        "bias `y.bias_1` added as the Gemm's third input, and corrected"
    );
    let rows = Geometry::Rows { transposed: false };
    let mean = |path: &Path| mean_output(path, &data, "y", &rows, 6);
    let (dense, fixed) = (mean(&model), mean(&out));
    let left = max_drift(&fixed, &dense);
    assert!(left < 1e-5, "mean off by {left}: {fixed:?} vs {dense:?}");
}

/// Sequential order hands tract the model with the earlier layers' biases already added (an
/// in-memory copy with the new nodes): every layer still gains its bias, and the last layer's
/// mean output is the one its (corrected) input gives it unpruned.
#[test]
fn sequential_order_runs_on_the_model_with_the_biases_added() {
    let dir = tempfile::tempdir().unwrap();
    let model = calibration("bias_free.onnx");
    let data = calibration("bias_free_calibration.npz");
    let out = dir.path().join("seq.onnx");
    let flags = [
        "--method",
        "sparsegpt",
        "--sparsity",
        "0.6",
        "--calibration-order",
    ];
    let report = prune(
        &model,
        &out,
        &data,
        &[&flags[..], &["sequential", "--correct-bias"]].concat(),
    );
    let notes: Vec<String> = report["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["notes"].to_string())
        .collect();
    assert!(notes.iter().all(|n| n.contains("added")), "{notes:?}");
    // Prune all but the last layer the same way: the last layer's input is then the same.
    let head = dir.path().join("head.onnx");
    let include = ["--include", "^(conv|fc)\\.weight$|^val_16$"];
    prune(
        &model,
        &head,
        &data,
        &[&flags[..], &["sequential", "--correct-bias"], &include].concat(),
    );
    let rows = Geometry::Rows { transposed: false };
    let (expected, got) = (
        mean_output(&head, &data, "y", &rows, 3),
        mean_output(&out, &data, "y", &rows, 3),
    );
    assert!(max_drift(&expected, &got) < 1e-5, "{expected:?} vs {got:?}");
}
