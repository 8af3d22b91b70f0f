//! Layers and heads under a budget: `shrink --drop-layers auto` against PyTorch's own accuracy
//! figures for the trained ViT (`fixtures/transformers/layers/generate.py`), and `sensitivity
//! --structure layers|heads`.

use std::path::{Path, PathBuf};

use crate::common::{arg, fixture, run, stdout_ok};
use crate::shrink::refused;

fn dir() -> PathBuf {
    fixture("transformers/layers")
}

/// PyTorch's figures for the trained digits ViT: accuracy whole and without each layer.
fn pytorch() -> (f64, Vec<f64>) {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir().join("expected.json")).unwrap()).unwrap();
    let facts = &json["digits_vit"];
    let without = facts["accuracy_without_layer"].as_array().unwrap();
    (
        facts["accuracy"].as_f64().unwrap(),
        without.iter().map(|a| a.as_f64().unwrap()).collect(),
    )
}

/// The digits test split has 472 samples: one flip is 1/472 of accuracy; tract and PyTorch
/// may differ by a flip on each side of a difference.
const FLIP: f64 = 1.0 / 472.0;

/// `shrink --drop-layers auto` of the trained ViT at `max_drop`, with its report.
fn drop_auto(tmp: &Path, max_drop: &str) -> (std::process::Output, PathBuf, PathBuf) {
    let (out, report) = (tmp.join("out.onnx"), tmp.join("report.json"));
    let test = dir().join("digits_test.npz");
    let labels = format!("{}:labels", arg(&test));
    let result = run(&[
        "shrink",
        arg(&dir().join("digits_vit.onnx")),
        "-o",
        arg(&out),
        "--drop-layers",
        "auto",
        "--calibration",
        arg(&dir().join("digits_calibration.npz")),
        "--calibration-samples",
        "200",
        "--inputs",
        arg(&test),
        "--labels",
        &labels,
        "--max-accuracy-drop",
        max_drop,
        "--report",
        arg(&report),
    ]);
    (result, out, report)
}

#[test]
fn drop_layers_auto_drops_the_most_layers_the_check_allows() {
    // Influence ranks layers 3, 2, 1, 0 (least first). PyTorch: 94.92% whole, 92.80% without
    // layer 3. Layers 2 and 3 together cost more than 3 points, so at 3 points one layer goes.
    let (whole, without) = pytorch();
    let tmp = tempfile::tempdir().unwrap();
    let (result, out, report) = drop_auto(tmp.path(), "0.03");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["layers"]["removed"], serde_json::json!([3]));
    assert_eq!(json["layers"]["layers_after"], 3);
    let tried = json["auto"]["tried"].as_array().unwrap();
    assert_eq!(tried.len(), 2, "stops at the first failure: {tried:?}");
    assert_eq!(tried[0]["removed"], serde_json::json!([3]));
    assert_eq!(tried[0]["passed"], true);
    let cost = tried[0]["value"].as_f64().unwrap();
    assert!(
        (cost - (whole - without[3])).abs() <= 2.0 * FLIP,
        "{cost} vs PyTorch's {}",
        whole - without[3]
    );
    assert_eq!(tried[1]["removed"], serde_json::json!([2, 3]));
    assert_eq!(tried[1]["passed"], false);
    assert!(tried[1]["value"].as_f64().unwrap() > 0.03);
    assert_eq!(json["check"]["passed"], true);
    let totals = &json["totals"];
    assert!(totals["params_after"].as_u64() < totals["params_before"].as_u64());
    // What was written passes a fresh check at the same tolerance (the search bounds only
    // accuracy; `check` also holds a cosine of 0.99 unless told).
    let test = dir().join("digits_test.npz");
    let labels = format!("{}:labels", arg(&test));
    stdout_ok(&[
        "check",
        arg(&dir().join("digits_vit.onnx")),
        arg(&out),
        "--inputs",
        arg(&test),
        "--labels",
        &labels,
        "--max-accuracy-drop",
        "0.03",
        "--min-cosine",
        "0.9",
    ]);
}

#[test]
fn drop_layers_auto_exits_1_and_writes_nothing_when_no_layer_can_go() {
    let tmp = tempfile::tempdir().unwrap();
    let (result, out, report) = drop_auto(tmp.path(), "0.001");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert_eq!(result.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("no layer can go"), "{stdout}");
    assert!(!out.exists() && !report.exists());
}

#[test]
fn drop_layers_auto_bad_input_exits_2_naming_the_flag() {
    let model = dir().join("digits_vit.onnx");
    let (calibration, test) = (
        dir().join("digits_calibration.npz"),
        dir().join("digits_test.npz"),
    );
    let base = [
        arg(&model),
        "--drop-layers",
        "auto",
        "--calibration",
        arg(&calibration),
        "--inputs",
        arg(&test),
    ];
    let with = |more: &[&'static str]| {
        let mut all = base.to_vec();
        all.extend_from_slice(more);
        all
    };
    refused(&base, "--drop-layers auto needs a tolerance");
    refused(
        &with(&["--min-cosine", "0.9", "--sparsity", "0.3"]),
        "--drop-layers auto searches layers alone",
    );
    refused(
        &with(&["--min-cosine", "0.9", "--round-to", "8"]),
        "--round-to cannot be used with --drop-layers auto",
    );
    refused(
        &[arg(&model), "--drop-layers", "auto", "--min-cosine", "0.9"],
        "--drop-layers needs --calibration",
    );
    refused(
        &[arg(&model), "--drop-layers", "some"],
        "is not a number of layers (or `auto`)",
    );
}

/// `sensitivity` of `model` on `inputs` (with labels) with `more` flags: its JSON report.
fn sensitivity(model: &Path, inputs: &Path, more: &[&str]) -> serde_json::Value {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report.json");
    let labels = format!("{}:labels", arg(inputs));
    let mut all = vec![
        "sensitivity",
        arg(model),
        "--inputs",
        arg(inputs),
        "--labels",
        &labels,
        "--report",
        arg(&report),
    ];
    all.extend_from_slice(more);
    stdout_ok(&all);
    serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()
}

#[test]
fn each_layer_dropped_alone_costs_what_pytorch_measured() {
    let (whole, without) = pytorch();
    let json = sensitivity(
        &dir().join("digits_vit.onnx"),
        &dir().join("digits_test.npz"),
        &["--structure", "layers"],
    );
    assert_eq!(json["structure"], "layers");
    assert_eq!(json["sparsities"], serde_json::json!([1.0]));
    let curves = json["weights"].as_array().unwrap();
    assert_eq!(curves.len(), without.len());
    for (i, (curve, without)) in curves.iter().zip(&without).enumerate() {
        assert!(
            curve["id"]
                .as_str()
                .unwrap()
                .starts_with(&format!("layer {i} (")),
            "{curve}"
        );
        assert!(curve["params"].as_u64().unwrap() > 0);
        let cost = curve["values"][0].as_f64().unwrap();
        assert!(
            (cost - (whole - without)).abs() <= 2.0 * FLIP,
            "layer {i}: {cost} vs PyTorch's {}",
            whole - without
        );
    }
}

#[test]
fn heads_structure_measures_the_head_groups_only() {
    let (model, test) = (
        fixture("transformers/text_bert_torchscript.onnx"),
        fixture("transformers/text_bert_test.npz"),
    );
    let flags = |structure| ["--structure", structure, "--sparsities", "0.5"];
    let heads = sensitivity(&model, &test, &flags("heads"));
    let channels = sensitivity(&model, &test, &flags("channels"));
    let ids = |json: &serde_json::Value| -> Vec<(String, Vec<f64>)> {
        json["weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let values = c["values"].as_array().unwrap();
                let values = values.iter().map(|v| v.as_f64().unwrap()).collect();
                (c["id"].as_str().unwrap().to_string(), values)
            })
            .collect()
    };
    let (heads_ids, channel_ids) = (ids(&heads), ids(&channels));
    // Two layers: one head group each; the FFN groups are channel groups only.
    assert_eq!(heads_ids.len(), 2, "{heads_ids:?}");
    assert!(channel_ids.len() > heads_ids.len(), "{channel_ids:?}");
    for head in &heads_ids {
        let same = channel_ids.iter().find(|c| c.0 == head.0).unwrap();
        assert!((same.1[0] - head.1[0]).abs() < 1e-9, "{head:?} vs {same:?}");
    }
    assert_eq!(heads["structure"], "heads");
    let stdout = stdout_ok(&[
        "sensitivity",
        arg(&model),
        "--inputs",
        arg(&test),
        "--structure",
        "heads",
        "--sparsities",
        "0.5",
    ]);
    assert!(
        stdout.contains("one head group pruned at a time"),
        "{stdout}"
    );
}

#[test]
fn layers_structure_refuses_flags_it_ignores() {
    let model = dir().join("digits_vit.onnx");
    let test = dir().join("digits_test.npz");
    for (flag, value) in [("--sparsities", "0.5"), ("--pattern", "block:1x4")] {
        let result = run(&[
            "sensitivity",
            arg(&model),
            "--inputs",
            arg(&test),
            "--structure",
            "layers",
            flag,
            value,
        ]);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("{flag}: no effect with --structure layers")),
            "{stderr}"
        );
    }
}
