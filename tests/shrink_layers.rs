//! `shrink --drop-layers`: the residual stream found in each export, the graph after a drop,
//! dropped layers against the same PyTorch models exported with those layers removed
//! (`fixtures/transformers/layers/generate.py`), block influence and accuracy on the trained
//! ViT against PyTorch's own figures, and bad input.

use std::path::{Path, PathBuf};

use onnx_prune_core::shrink::layers;
use onnx_prune_core::Model;

use crate::common::{arg, fixture, run, stdout_ok};
use crate::graph_diff::graph_diff;
use crate::shrink::{assert_same_on, refused};

fn dir() -> PathBuf {
    fixture("transformers/layers")
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir().join("expected.json")).unwrap()).unwrap()
}

/// The entries of the object at `key` of the JSON file `path`: per fixture, its facts.
fn facts(path: &Path, key: &str) -> Vec<(String, serde_json::Value)> {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    json[key]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The exports of random-weight models (both exporters), by file name.
fn exports() -> Vec<(String, serde_json::Value)> {
    facts(&dir().join("expected.json"), "models")
}

#[test]
fn residual_streams_of_each_export() {
    insta::glob!("../fixtures/transformers/layers", "*.onnx", |path| {
        let stream = layers::find(&Model::load(path).unwrap()).unwrap();
        insta::assert_snapshot!(stream.describe());
    });
    for (name, facts) in exports() {
        let stream = layers::find(&Model::load(dir().join(&name)).unwrap()).unwrap();
        assert_eq!(stream.layers.len() as u64, facts["layers"], "{name}");
        assert_eq!(stream.blocks.len(), 2 * stream.layers.len(), "{name}");
    }
}

/// `model` with `layers` dropped by the core pass, written to `dir` (with its external data).
fn dropped(model: &Path, drop: &[usize], dir: &Path) -> PathBuf {
    let model = Model::load(model).unwrap();
    let stream = layers::find(&model).unwrap();
    let (edit, _) = layers::drop_layers(&model, &stream, drop).unwrap();
    let out = dir.join(model.path().file_name().unwrap());
    edit.save(&model, &out).unwrap();
    out
}

#[test]
fn a_dropped_layer_computes_what_pytorch_computes_without_it() {
    // Each reference is the same PyTorch model with its layer 1 removed in PyTorch, exported
    // again: independent of onnx-prune. Both exporters' graphs are compared with it.
    for (name, facts) in exports() {
        let tmp = tempfile::tempdir().unwrap();
        let out = dropped(&dir().join(&name), &[1], tmp.path());
        let reference = dir().join(facts["without_layer1"].as_str().unwrap());
        assert_same_on(
            &reference,
            &out,
            &dir().join(facts["inputs"].as_str().unwrap()),
        );
    }
}

#[test]
fn the_last_post_norm_layer_goes_through_an_identity_to_the_graph_output() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = dir().join("text_inputs.npz");
    for exporter in ["ts", "dynamo"] {
        let out = dropped(
            &dir().join(format!("bert_{exporter}.onnx")),
            &[2],
            tmp.path(),
        );
        assert_same_on(&dir().join("bert_without_layer2.onnx"), &out, &inputs);
    }
}

#[test]
fn consecutive_layers_go_together() {
    // Layers 0 and 1 of the ViT dropped at once leave layer 2 alone: what dropping layer 0 of
    // the PyTorch export without layer 1 (layers 0 and 2) leaves.
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let both = dropped(&dir().join("vit_ts.onnx"), &[0, 1], &a);
    let one = dropped(&dir().join("vit_without_layer1.onnx"), &[0], &b);
    assert_same_on(&one, &both, &dir().join("image_inputs.npz"));
}

/// The graph change of dropping `drop` from `name`.
fn drop_diff(name: &str, drop: &[usize]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = dropped(&dir().join(name), drop, tmp.path());
    graph_diff(
        &std::fs::read(dir().join(name)).unwrap(),
        &std::fs::read(out).unwrap(),
    )
}

#[test]
fn graph_after_dropping_a_layer() {
    for (name, drop) in [
        ("bert_ts.onnx", &[1][..]),
        ("bert_dynamo.onnx", &[2]),
        ("gpt2_ts.onnx", &[1]),
        ("llama_ts.onnx", &[0, 1]),
        ("llama_dynamo.onnx", &[2]),
        ("vit_dynamo.onnx", &[1]),
    ] {
        insta::assert_snapshot!(format!("drop_{name}_{drop:?}"), drop_diff(name, drop));
    }
}

/// The report of `shrink --drop-layers 1` of `model`, ranked on (the first 200 samples of)
/// `calibration`, checked on `test` (the accuracy drop fails the default tolerance: exit 1,
/// output kept).
fn drop_one(
    model: &Path,
    calibration: &Path,
    test: &Path,
    tmp: &Path,
) -> (PathBuf, serde_json::Value) {
    let (out, report) = (tmp.join("out.onnx"), tmp.join("report.json"));
    let labels = format!("{}:labels", arg(test));
    let result = run(&[
        "shrink",
        arg(model),
        "-o",
        arg(&out),
        "--drop-layers",
        "1",
        "--calibration",
        arg(calibration),
        "--calibration-samples",
        "200",
        "--report",
        arg(&report),
        "--check",
        "--inputs",
        arg(test),
        "--labels",
        &labels,
    ]);
    assert_eq!(
        result.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let json = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    (out, json)
}

#[test]
fn the_least_influential_layer_of_the_trained_vit_goes() {
    // PyTorch measured every layer's block influence on the same 128 calibration samples and
    // the test accuracy without each layer (generate.py): 94.92% whole, 92.80% without layer 3
    // (the least influential, 0.0579), 9.96% without layer 0 (the most, 0.8396).
    let facts = &expected()["digits_vit"];
    let least = facts["least_influential"].as_u64().unwrap() as usize;
    for name in ["digits_vit.onnx", "digits_vit_dynamo.onnx"] {
        let tmp = tempfile::tempdir().unwrap();
        let (calibration, test) = (
            dir().join("digits_calibration.npz"),
            dir().join("digits_test.npz"),
        );
        let (out, json) = drop_one(&dir().join(name), &calibration, &test, tmp.path());
        let layers = &json["layers"];
        assert_eq!(layers["removed"], serde_json::json!([least]), "{name}");
        assert_eq!(layers["layers_before"], 4);
        assert_eq!(layers["layers_after"], 3);
        for (layer, want) in layers["layers"]
            .as_array()
            .unwrap()
            .iter()
            .zip(facts["influence"].as_array().unwrap())
        {
            let (got, want) = (layer["influence"].as_f64().unwrap(), want.as_f64().unwrap());
            assert!(
                (got - want).abs() < 1e-4,
                "{name}: {got} vs PyTorch's {want}"
            );
        }
        let accuracy = &json["check"]["accuracy"];
        let test_samples = 472.0;
        let whole = facts["accuracy"].as_f64().unwrap();
        let without = facts["accuracy_without_layer"][least].as_f64().unwrap();
        assert!((accuracy["reference"].as_f64().unwrap() - whole).abs() < 1.5 / test_samples);
        assert!((accuracy["candidate"].as_f64().unwrap() - without).abs() < 1.5 / test_samples);
        let totals = &json["totals"];
        for key in ["params", "macs"] {
            let before = totals[format!("{key}_before")].as_u64().unwrap();
            assert!(
                totals[format!("{key}_after")].as_u64().unwrap() < before,
                "{key}"
            );
        }
        let reference = dir().join(format!("digits_vit_without_layer{least}.onnx"));
        assert_same_on(&reference, &out, &dir().join("digits_test.npz"));
    }
}

#[test]
fn the_most_influential_layer_for_comparison() {
    // Dropping layer 0 instead (the most influential) costs most of the accuracy, as PyTorch
    // measured: 9.96%.
    let facts = &expected()["digits_vit"];
    let most = facts["most_influential"].as_u64().unwrap() as usize;
    let tmp = tempfile::tempdir().unwrap();
    let out = dropped(&dir().join("digits_vit.onnx"), &[most], tmp.path());
    let test = dir().join("digits_test.npz");
    let labels = format!("{}:labels", arg(&test));
    let report = tmp.path().join("check.json");
    let result = run(&[
        "check",
        arg(&dir().join("digits_vit.onnx")),
        arg(&out),
        "--inputs",
        arg(&test),
        "--labels",
        &labels,
        "--report",
        arg(&report),
    ]);
    assert_eq!(result.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let want = facts["accuracy_without_layer"][most].as_f64().unwrap();
    let got = json["accuracy"]["candidate"].as_f64().unwrap();
    assert!(
        (got - want).abs() < 1.5 / 472.0,
        "{got} vs PyTorch's {want}"
    );
}

#[test]
fn dry_run_lists_the_layers_and_their_influence() {
    let model = dir().join("gpt2_ts.onnx");
    let stdout = stdout_ok(&[
        "shrink",
        arg(&model),
        "--dry-run",
        "--drop-layers",
        "1",
        "--calibration",
        arg(&dir().join("text_inputs.npz")),
    ]);
    assert!(
        stdout.contains("residual stream: 6 blocks in 3 layers"),
        "{stdout}"
    );
    assert!(stdout.contains("influence"), "{stdout}");
    assert_eq!(stdout.matches("removed").count(), 1, "{stdout}");
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let vit = dir().join("digits_vit.onnx");
    let calibration = dir().join("digits_calibration.npz");
    let (vit, calibration) = (arg(&vit), arg(&calibration));
    refused(
        &[vit, "--drop-layers", "4", "--calibration", calibration],
        "--drop-layers 4: the residual stream has 4 layers, so at most 3 can go",
    );
    refused(
        &[vit, "--drop-layers", "0", "--calibration", calibration],
        "--drop-layers must be at least 1",
    );
    refused(
        &[vit, "--drop-layers", "1"],
        "--drop-layers needs --calibration",
    );
    refused(
        &[vit, "--drop-layers", "auto", "--calibration", calibration],
        "--drop-layers auto needs a tolerance",
    );
    refused(
        &[
            vit,
            "--drop-layers",
            "1",
            "--calibration",
            calibration,
            "--no-refit",
        ],
        "--no-refit has no effect without --sparsity",
    );
    // A CNN without residual blocks.
    let inputs = fixture("shrink/real/flatten_gemm_inputs.npz");
    refused(
        &[
            arg(&fixture("shrink/real/flatten_gemm.onnx")),
            "--drop-layers",
            "1",
            "--calibration",
            arg(&inputs),
        ],
        "residual stream: none found",
    );
}

/// The facts of the transformer fixtures of `fixtures/transformers` (their `expected.json`).
pub fn transformer_fixtures() -> Vec<(String, serde_json::Value)> {
    facts(&fixture("transformers/expected.json"), "fixtures")
}

#[test]
fn residual_streams_of_the_transformer_fixtures() {
    insta::glob!("../fixtures/transformers", "*.onnx", |path| {
        let stream = layers::find(&Model::load(path).unwrap()).unwrap();
        insta::assert_snapshot!(stream.describe());
    });
    // What their generator recorded: layers, residual Adds, where the norm sits. The
    // onnxruntime-fused copies hide the residual Add inside SkipLayerNormalization, which tract
    // cannot run to measure influence: no stream there.
    for (name, facts) in transformer_fixtures() {
        let stream =
            layers::find(&Model::load(fixture("transformers").join(&name)).unwrap()).unwrap();
        if !facts["fused_ops"].as_object().unwrap().is_empty() {
            assert!(stream.blocks.is_empty(), "{name}");
            continue;
        }
        assert_eq!(stream.layers.len() as u64, facts["layers"], "{name}");
        assert_eq!(stream.blocks.len() as u64, facts["residual_adds"], "{name}");
        let post = facts["norm"] == "post";
        assert!(stream.blocks.iter().all(|b| b.post_norm == post), "{name}");
    }
}

/// The test accuracy of `model` with `layer` dropped by the core pass.
fn accuracy_without(model: &Path, layer: usize, test: &Path) -> f64 {
    let tmp = tempfile::tempdir().unwrap();
    let out = dropped(model, &[layer], tmp.path());
    let labels = format!("{}:labels", arg(test));
    let report = tmp.path().join("check.json");
    run(&[
        "check",
        arg(model),
        arg(&out),
        "--inputs",
        arg(test),
        "--labels",
        &labels,
        "--report",
        arg(&report),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    json["accuracy"]["candidate"].as_f64().unwrap()
}

#[test]
fn accuracy_of_the_trained_transformers_with_one_layer_dropped() {
    // The two models trained by fixtures/transformers/train.py, on their held-out test splits
    // (500 samples each), ranked on the first 200 samples of their calibration splits. Measured
    // with this test, both exporters alike: text BERT (post-norm) 86.8% whole; the least
    // influential layer (0, BI 0.404) dropped: 60.0%; the most (1, BI 0.607) instead: 53.6%.
    // Digits ViT (pre-norm) 98.6% whole; the least influential layer (1, BI 0.502) dropped:
    // 78.2%; the most (0, BI 0.585) instead: 31.0%. (Two-layer models: one layer is half.)
    let dir = fixture("transformers");
    for (stem, least_acc, most_acc) in [("text_bert", 0.600, 0.536), ("digits_vit", 0.782, 0.310)] {
        for exporter in ["torchscript", "dynamo"] {
            let model = dir.join(format!("{stem}_{exporter}.onnx"));
            let test = dir.join(format!("{stem}_test.npz"));
            let calibration = dir.join(format!("{stem}_calibration.npz"));
            let tmp = tempfile::tempdir().unwrap();
            let (_, report) = drop_one(&model, &calibration, &test, tmp.path());
            let accuracy = &report["check"]["accuracy"];
            let influence: Vec<f64> = report["layers"]["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["influence"].as_f64().unwrap())
                .collect();
            let most = if influence[0] > influence[1] { 0 } else { 1 };
            let candidate = accuracy["candidate"].as_f64().unwrap();
            let without_most = accuracy_without(&model, most, &test);
            assert!(influence[1 - most] < influence[most]);
            assert!(
                (candidate - least_acc).abs() < 1.5 / 500.0,
                "{stem} {exporter}: {candidate}"
            );
            assert!(
                (without_most - most_acc).abs() < 1.5 / 500.0,
                "{stem} {exporter}: {without_most}"
            );
        }
    }
}
