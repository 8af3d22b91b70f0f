//! `replay`: the PyTorch sample reproduced bit for bit and step by step, renamed and transposed
//! weights, `.npz` and Keras layouts, sparsity schedules, and every bad input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use onnx_prune_core::model::dense_bytes;
use onnx_prune_core::{discover, Model};

use crate::common::{arg, fixture, run, sample, sample_test_set};

/// Every weight's stored bytes, by tensor name.
fn weight_bytes(path: &Path) -> HashMap<String, Vec<u8>> {
    let model = Model::load(path).unwrap();
    discover(&model)
        .iter()
        .map(|w| {
            let t = &model.tensors()[w.tensor];
            (t.name.clone(), dense_bytes(&model, t).unwrap().into_owned())
        })
        .collect()
}

fn replay(model: &Path, schedule: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "replay",
        arg(model),
        "--schedule",
        arg(schedule),
        "-o",
        arg(out),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn the_last_step_reproduces_pytorchs_export_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("final.onnx");
    let result = replay(&sample("dense.onnx"), &sample("schedule.json"), &out, &[]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(
        weight_bytes(&out),
        weight_bytes(&sample("reference_final.onnx"))
    );
}

#[test]
fn explain_says_how_each_key_was_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("step4.onnx");
    let result = replay(
        &sample("dense.onnx"),
        &sample("schedule.json"),
        &out,
        &["--step", "4", "--explain"],
    );
    let stdout = String::from_utf8(result.stdout).unwrap();
    let explained: Vec<&str> = stdout.lines().take(4).collect();
    insta::assert_snapshot!(explained.join("\n"));
}

/// A mask schedule of one step holding `masks` (key, shape, 0/1 values) as safetensors.
fn schedule_with(
    dir: &Path,
    masks: &[(&str, Vec<usize>, Vec<u8>)],
    layout: &str,
    npz: bool,
) -> PathBuf {
    let file = if npz {
        "masks.npz"
    } else {
        "masks.safetensors"
    };
    if npz {
        let mut writer =
            ndarray_npy::NpzWriter::new(std::fs::File::create(dir.join(file)).unwrap());
        for (key, shape, values) in masks {
            let array = ndarray::ArrayD::from_shape_vec(shape.clone(), values.clone()).unwrap();
            writer.add_array(*key, &array).unwrap();
        }
        writer.finish().unwrap();
    } else {
        let views: Vec<(String, safetensors::tensor::TensorView)> = masks
            .iter()
            .map(|(key, shape, values)| {
                (
                    key.to_string(),
                    safetensors::tensor::TensorView::new(
                        safetensors::Dtype::U8,
                        shape.clone(),
                        values,
                    )
                    .unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(file)).unwrap();
    }
    let manifest = serde_json::json!({
        "format": "onnx-prune/mask-schedule", "version": 1, "layout": layout,
        "steps": [{ "step": 1, "file": file }]
    });
    let path = dir.join("schedule.json");
    std::fs::write(&path, manifest.to_string()).unwrap();
    path
}

/// A mask of `shape` keeping the elements whose row-major index is a multiple of 3.
fn every_third(shape: &[usize]) -> Vec<u8> {
    (0..shape.iter().product::<usize>())
        .map(|i| u8::from(i % 3 == 0))
        .collect()
}

#[test]
fn a_renamed_transposed_linear_is_found_through_its_bias() {
    for npz in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        // Training names: the Linear `enc.fc` ([out=24, in=32]) and a conv with shape [8, 6, 3, 3].
        let schedule = schedule_with(
            dir.path(),
            &[
                ("enc.fc.weight_mask", vec![24, 32], every_third(&[24, 32])),
                (
                    "backbone.conv.weight",
                    vec![8, 6, 3, 3],
                    every_third(&[8, 6, 3, 3]),
                ),
            ],
            "pytorch",
            npz,
        );
        let out = dir.path().join("out.onnx");
        let result = replay(
            &fixture("renamed_transposed.onnx"),
            &schedule,
            &out,
            &["--explain"],
        );
        assert!(
            result.status.success(),
            "{}",
            String::from_utf8_lossy(&result.stderr)
        );
        let stdout = String::from_utf8(result.stdout).unwrap();
        let explained =
            |parts: &[&str]| stdout.lines().any(|l| parts.iter().all(|p| l.contains(p)));
        assert!(
            explained(&[
                "enc.fc.weight_mask",
                "val_20",
                "bias sibling (`enc.fc.bias`), transposed"
            ]),
            "{stdout}"
        );
        assert!(
            explained(&["backbone.conv.weight", "onnx::Conv_31", "unique shape"]),
            "{stdout}"
        );
        // val_20 is [in=32, out=24]: element [i, o] follows mask element [o, i].
        let after = &weight_bytes(&out)["val_20"];
        for i in 0..32 {
            for o in 0..24 {
                let kept = (o * 32 + i) % 3 == 0;
                let bits = u32::from_le_bytes(after[(i * 24 + o) * 4..][..4].try_into().unwrap());
                assert_eq!(bits & 0x7fff_ffff != 0, kept, "[{i}, {o}]");
            }
        }
    }
}

#[test]
fn keras_kernels_are_permuted_to_onnx_layouts() {
    let dir = tempfile::tempdir().unwrap();
    // Keras Dense kernel [in=32, out=24] lands on MatMul's [32, 24] as it is; Conv2D
    // [kh=3, kw=3, in=6, out=8] is permuted to [8, 6, 3, 3].
    let schedule = schedule_with(
        dir.path(),
        &[
            ("val_20", vec![32, 24], every_third(&[32, 24])),
            (
                "conv2d/kernel",
                vec![3, 3, 6, 8],
                every_third(&[3, 3, 6, 8]),
            ),
        ],
        "tensorflow",
        false,
    );
    let out = dir.path().join("out.onnx");
    let result = replay(&fixture("renamed_transposed.onnx"), &schedule, &out, &[]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let conv = &weight_bytes(&out)["onnx::Conv_31"];
    for (o, c, y, x) in [(0, 0, 0, 0), (7, 5, 2, 2), (3, 1, 2, 0)] {
        let kept = (((y * 3 + x) * 6 + c) * 8 + o) % 3 == 0;
        let index = ((o * 6 + c) * 3 + y) * 3 + x;
        let bits = u32::from_le_bytes(conv[index * 4..][..4].try_into().unwrap());
        assert_eq!(bits & 0x7fff_ffff != 0, kept, "[{o}, {c}, {y}, {x}]");
    }
}

#[test]
fn a_sparsity_schedule_is_replayed_by_magnitude() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = serde_json::json!({
        "format": "onnx-prune/mask-schedule", "version": 1,
        "sparsity_schedule": { "kind": "polynomial_decay", "initial_sparsity": 0.0, "final_sparsity": 0.9,
                               "begin_step": 2, "end_step": 10, "power": 3, "frequency": 1 }
    });
    let schedule = dir.path().join("schedule.json");
    std::fs::write(&schedule, manifest.to_string()).unwrap();
    let out = dir.path().join("out.onnx");
    let report = dir.path().join("report.json");
    let result = replay(
        &sample("dense.onnx"),
        &schedule,
        &out,
        &["--step", "4", "--report", arg(&report)],
    );
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    // TF-MOT: s = 0.9 + (0 - 0.9) * (1 - 2/8)^3 = 0.5203125, per weight.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    for weight in report["weights"].as_array().unwrap() {
        let params = weight["params"].as_u64().unwrap() as f64;
        assert_eq!(
            weight["zeros_after"].as_u64().unwrap(),
            (0.5203125 * params).round() as u64
        );
    }
}

#[test]
fn bad_schedules_exit_2_naming_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let model = fixture("renamed_transposed.onnx");
    let fails = |schedule: &Path, extra: &[&str], needle: &str| {
        let result = replay(&model, schedule, &out, extra);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(needle), "`{needle}` not in {stderr}");
        assert!(!out.exists());
    };
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    fails(
        &write("bad.json", "{ not json"),
        &[],
        "bad.json: not a mask-schedule manifest",
    );
    fails(
        &write(
            "v2.json",
            r#"{"format": "onnx-prune/mask-schedule", "version": 2, "steps": [{"step": 1, "file": "m.safetensors"}]}"#,
        ),
        &[],
        "version 2 is not supported",
    );
    fails(
        &write(
            "order.json",
            r#"{"format": "onnx-prune/mask-schedule", "version": 1, "steps": [{"step": 2, "file": "a"}, {"step": 1, "file": "b"}]}"#,
        ),
        &[],
        "not in increasing order",
    );
    fails(
        &write(
            "missing.json",
            r#"{"format": "onnx-prune/mask-schedule", "version": 1, "steps": [{"step": 1, "file": "gone.safetensors"}]}"#,
        ),
        &[],
        "gone.safetensors",
    );
    let sub = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir(&d).unwrap();
        d
    };
    let schedule = schedule_with(
        &sub("unknown"),
        &[("decoder.weight_mask", vec![5, 7], vec![1; 35])],
        "pytorch",
        false,
    );
    fails(
        &schedule,
        &[],
        "mask `decoder.weight_mask` [5, 7] matches no weight; candidates: val_20 [32, 24]",
    );
    let schedule = schedule_with(
        &sub("binary"),
        &[("val_20", vec![32, 24], vec![2; 768])],
        "pytorch",
        false,
    );
    fails(
        &schedule,
        &[],
        "mask `val_20` is not binary: element 0 is 2",
    );
    let schedule = schedule_with(
        &sub("shape"),
        &[("val_20", vec![16, 48], vec![1; 768])],
        "pytorch",
        false,
    );
    fails(
        &schedule,
        &[],
        "mask `val_20` has shape [16, 48] but weight `val_20` has shape [32, 24]",
    );
    let map = write("map.json", r#"{"val_20": "nope"}"#);
    let schedule = schedule_with(
        &sub("map"),
        &[("val_20", vec![32, 24], vec![1; 768])],
        "pytorch",
        false,
    );
    fails(
        &schedule,
        &["--map", arg(&map)],
        "--map sends `val_20` to `nope`",
    );
    fails(
        &sample("schedule.json"),
        &["--step", "99"],
        "--step 99 is not in the schedule",
    );
}

#[test]
fn strict_refuses_a_step_that_unprunes() {
    let dir = tempfile::tempdir().unwrap();
    let shape = vec![32, 24];
    let first = schedule_with(
        dir.path(),
        &[("val_20", shape.clone(), every_third(&shape))],
        "pytorch",
        false,
    );
    std::fs::rename(
        dir.path().join("masks.safetensors"),
        dir.path().join("step1.safetensors"),
    )
    .unwrap();
    schedule_with(
        dir.path(),
        &[("val_20", shape.clone(), vec![1; 768])],
        "pytorch",
        false,
    );
    let manifest = serde_json::json!({
        "format": "onnx-prune/mask-schedule", "version": 1,
        "steps": [{ "step": 1, "file": "step1.safetensors" }, { "step": 2, "file": "masks.safetensors" }]
    });
    std::fs::write(&first, manifest.to_string()).unwrap();
    let out = dir.path().join("out.onnx");
    let warned = replay(&fixture("renamed_transposed.onnx"), &first, &out, &[]);
    assert!(warned.status.success());
    assert!(String::from_utf8_lossy(&warned.stderr)
        .contains("warning: step 2 keeps 512 elements of `val_20` that step 1 pruned"));
    std::fs::remove_file(&out).unwrap();
    let strict = replay(
        &fixture("renamed_transposed.onnx"),
        &first,
        &out,
        &["--strict"],
    );
    assert_eq!(strict.status.code(), Some(2));
    assert!(!out.exists());
}

#[test]
fn all_steps_give_the_accuracy_curve_torch_measured() {
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sample("torch_metrics.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps");
    let report = dir.path().join("curve.json");
    let (test_set, labels) = sample_test_set();
    let result = run(&[
        "replay",
        arg(&sample("dense.onnx")),
        "--schedule",
        arg(&sample("schedule.json")),
        "--all-steps",
        "--out-dir",
        arg(&steps),
        "--report",
        arg(&report),
        "--check",
        "--inputs",
        arg(&test_set),
        "--labels",
        &labels,
        // The last step's outputs move (cosine 0.95) while its accuracy rises: only the
        // accuracy is held here, as a failed last step exits 1.
        "--min-cosine",
        "0",
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let curve: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    let curve = curve["steps"].as_array().unwrap();
    let expected = metrics["steps"].as_array().unwrap();
    assert_eq!(curve.len(), expected.len());
    for (got, want) in curve.iter().zip(expected) {
        assert_eq!(got["step"], want["step"]);
        assert_eq!(got["check"]["accuracy"]["candidate"], want["accuracy"]);
        let sparsity = got["report"]["totals"]["sparsity"].as_f64().unwrap();
        assert!(
            (sparsity - want["sparsity"].as_f64().unwrap()).abs() < 1e-6,
            "step {}",
            want["step"]
        );
        assert!(steps
            .join(format!("dense.step{}.onnx", want["step"]))
            .exists());
    }
}
