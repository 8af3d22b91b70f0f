//! Calibrated pruning (`--method wanda|sparsegpt`, `--correct-bias`): statistics and masks
//! against numpy references committed in `fixtures/calibration/` (made by its `generate.py`),
//! exact zero counts, mean outputs kept, determinism across thread counts, bad input.

use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use ndarray_npy::NpzReader;
use onnx_prune_core::calibrated::tap;
use onnx_prune_core::model::{dense_bytes, discover_with};
use onnx_prune_core::Model;
use onnx_prune_verify::{Calibration, CalibrationOptions, InputSource};

use crate::common::{arg, fixture, run_with_env, stdout_ok};

pub(crate) fn calibration(name: &str) -> PathBuf {
    fixture("calibration").join(name)
}

fn npz_f64(path: &Path, key: &str) -> ArrayD<f64> {
    let mut npz = NpzReader::new(std::fs::File::open(path).unwrap()).unwrap();
    npz.by_name(key).unwrap()
}

fn npz_bool(path: &Path, key: &str) -> ArrayD<bool> {
    let mut npz = NpzReader::new(std::fs::File::open(path).unwrap()).unwrap();
    npz.by_name(key).unwrap()
}

fn npz_keys(path: &Path) -> Vec<String> {
    let mut npz = NpzReader::new(std::fs::File::open(path).unwrap()).unwrap();
    npz.names().unwrap()
}

/// Every weight of a model as f64 values, by id (f32 weights only: the fixtures').
fn weights(path: &Path) -> Vec<(String, Vec<f64>)> {
    let model = Model::load(path).unwrap();
    discover_with(&model, 0)
        .iter()
        .map(|w| {
            let bytes = dense_bytes(&model, &model.tensors()[w.tensor]).unwrap();
            let values = bytes
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                .collect();
            (w.id.clone(), values)
        })
        .collect()
}

pub(crate) fn weight(path: &Path, id: &str) -> Vec<f64> {
    weights(path).into_iter().find(|(i, _)| i == id).unwrap().1
}

/// Prunes with `flags` and returns the JSON report.
fn prune(model: &Path, out: &Path, flags: &[&str]) -> serde_json::Value {
    let report = out.with_extension("json");
    let mut args = vec![
        "prune",
        arg(model),
        "-o",
        arg(out),
        "--report",
        arg(&report),
    ];
    args.extend_from_slice(flags);
    stdout_ok(&args);
    serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap()
}

const LAYERS: [&str; 5] = [
    "conv1.weight",
    "dw.weight",
    "mm.weight",
    "fc1.weight",
    "fc2.weight",
];

#[test]
fn column_norms_match_numpy_im2col_for_convs_gemms_and_a_3d_matmul() {
    let model = Model::load(calibration("layers.onnx")).unwrap();
    let weights = discover_with(&model, 0);
    let taps: Vec<_> = LAYERS
        .iter()
        .map(|id| tap(&model, weights.iter().find(|w| w.id == *id).unwrap()).unwrap())
        .collect();
    let options = CalibrationOptions {
        inputs: vec![InputSource::Npz(calibration("layers_calibration.npz"))],
        // Runs of 5, 5, 5, 5 and 4 samples: sums must not depend on how samples are batched.
        batch_size: 5,
        ..CalibrationOptions::default()
    };
    let calibration_data = Calibration::load(&model, &options).unwrap();
    assert_eq!(calibration_data.samples(), 24);
    let stats = calibration_data.statistics(model.bytes(), &taps).unwrap();
    let reference = calibration("layers_reference.npz");
    for (id, stats) in LAYERS.iter().zip(&stats) {
        let expected = npz_f64(&reference, &format!("{id}/sq_norms"));
        assert_eq!(stats.sq_norms.len(), expected.len(), "{id}");
        for (i, (a, b)) in stats.sq_norms.iter().zip(expected.iter()).enumerate() {
            assert!(
                // tract and onnx's evaluator round intermediate float32 activations differently.
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{id} column {i}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn wanda_masks_match_the_numpy_reference() {
    let dir = tempfile::tempdir().unwrap();
    let model = calibration("layers.onnx");
    let data = calibration("layers_calibration.npz");
    let reference = calibration("layers_reference.npz");
    for (flags, label) in [
        (&["--sparsity", "0.5"][..], "0.5"),
        (&["--pattern", "2:4"][..], "2:4"),
    ] {
        let out = dir
            .path()
            .join(format!("wanda-{}.onnx", label.replace(':', "-")));
        let mut args = vec![
            "--method",
            "wanda",
            "--min-params",
            "0",
            "--calibration",
            arg(&data),
        ];
        args.extend_from_slice(flags);
        let report = prune(&model, &out, &args);
        assert_eq!(report["method"], "wanda");
        let mut compared = 0;
        for id in LAYERS {
            let key = format!("{id}/keep_{label}");
            let entry = report["weights"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["id"] == id)
                .unwrap();
            let keys = npz_keys(&reference);
            if !keys.iter().any(|k| k.trim_end_matches(".npy") == key) {
                // No reference: the channel axis does not divide by 4, so the weight is left alone.
                assert!(
                    entry["skipped"].as_str().unwrap().contains("multiple of 4"),
                    "{id}"
                );
                continue;
            }
            let expected = npz_bool(&reference, &key);
            let after = weight(&out, id);
            let kept: Vec<bool> = after.iter().map(|v| *v != 0.0).collect();
            assert_eq!(
                kept,
                expected.iter().copied().collect::<Vec<_>>(),
                "{id} {label}"
            );
            assert!(entry["output_error"].as_f64().unwrap() > 0.0, "{id}");
            compared += 1;
        }
        assert!(compared >= 3, "{label}: {compared} weights compared");
    }
}

#[test]
fn sparsegpt_matches_a_numpy_port_of_fasterprune() {
    let dir = tempfile::tempdir().unwrap();
    let model = calibration("gemm_layer.onnx");
    let data = calibration("gemm_layer_calibration.npz");
    let reference = calibration("gemm_layer_reference.npz");
    for (flags, label) in [
        (&["--sparsity", "0.5"][..], "0.5"),
        (&["--pattern", "2:4"][..], "2:4"),
    ] {
        let out = dir
            .path()
            .join(format!("sparsegpt-{}.onnx", label.replace(':', "-")));
        let mut args = vec!["--method", "sparsegpt", "--calibration", arg(&data)];
        args.extend_from_slice(flags);
        let report = prune(&model, &out, &args);
        assert_eq!(report["weights"][0]["values_changed"], true);
        let after = weight(&out, "w");
        let expected = npz_f64(&reference, &format!("w/{label}"));
        let keep = npz_bool(&reference, &format!("w/keep_{label}"));
        let mut changed = 0;
        let before = weight(&model, "w");
        for (i, ((a, b), k)) in after
            .iter()
            .zip(expected.iter())
            .zip(keep.iter())
            .enumerate()
        {
            assert_eq!(*a != 0.0, *k, "{label}: element {i} mask");
            assert!((a - b).abs() <= 1e-5, "{label}: element {i}: {a} vs {b}");
            changed += usize::from(*k && *a != before[i]);
        }
        // The OBS update moved kept weights (not only zeroed the others).
        assert!(
            changed > after.len() / 4,
            "{label}: {changed} kept weights changed"
        );
    }
}

/// `x W^T + b` averaged over the calibration samples, for the single Gemm fixture.
fn mean_output(model: &Path, x: &ArrayD<f64>) -> Vec<f64> {
    let w = weight(model, "w");
    let b = weight(model, "b");
    let (n, k) = (x.shape()[0], x.shape()[1]);
    let x: Vec<f64> = x.iter().copied().collect();
    (0..b.len())
        .map(|o| {
            let sum: f64 = (0..n)
                .map(|s| (0..k).map(|c| x[s * k + c] * w[o * k + c]).sum::<f64>())
                .sum();
            sum / n as f64 + b[o]
        })
        .collect()
}

#[test]
fn bias_correction_keeps_the_mean_output_on_the_calibration_set() {
    let dir = tempfile::tempdir().unwrap();
    let model = calibration("gemm_layer.onnx");
    let data = calibration("gemm_layer_calibration.npz");
    let x: ArrayD<f64> = {
        let mut npz = NpzReader::new(std::fs::File::open(&data).unwrap()).unwrap();
        let x: ArrayD<f32> = npz.by_name("x").unwrap();
        x.mapv(f64::from)
    };
    let dense = mean_output(&model, &x);
    for method in ["magnitude", "wanda", "sparsegpt"] {
        let (plain, corrected) = (dir.path().join("plain.onnx"), dir.path().join("fixed.onnx"));
        let common = [
            "--method",
            method,
            "--sparsity",
            "0.7",
            "--calibration",
            arg(&data),
        ];
        prune(&model, &plain, &common);
        let report = prune(
            &model,
            &corrected,
            &[&common[..], &["--correct-bias"]].concat(),
        );
        assert_eq!(
            report["weights"][0]["notes"][0], "bias `b` corrected",
            "{method}"
        );
        let drift = |path: &Path| {
            mean_output(path, &x)
                .iter()
                .zip(&dense)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
        };
        assert!(
            drift(&plain) > 1e-2,
            "{method}: pruning moved no mean output"
        );
        assert!(drift(&corrected) < 1e-4, "{method}: {}", drift(&corrected));
    }
}

#[test]
fn every_method_keeps_the_exact_zero_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = calibration("gemm_layer_calibration.npz");
    let model = calibration("gemm_layer.onnx");
    for method in ["magnitude", "wanda", "sparsegpt"] {
        for sparsity in ["0.25", "0.5", "0.7", "0.93"] {
            let out = dir.path().join("out.onnx");
            let report = prune(
                &model,
                &out,
                &[
                    "--method",
                    method,
                    "--sparsity",
                    sparsity,
                    "--calibration",
                    arg(&data),
                ],
            );
            let s: f64 = sparsity.parse().unwrap();
            let w = weight(&out, "w");
            let zeros = w.iter().filter(|v| **v == 0.0).count();
            let expected = match method {
                // Per row of 200 columns.
                "wanda" => 24 * (s * 200.0).round_ties_even() as usize,
                _ => (s * w.len() as f64).round() as usize,
            };
            assert_eq!(zeros, expected, "{method} at {sparsity}");
            assert_eq!(report["weights"][0]["zeros_after"], zeros as u64);
            if method == "wanda" {
                for row in w.chunks(200) {
                    let zeros = row.iter().filter(|v| **v == 0.0).count();
                    assert_eq!(zeros, (s * 200.0).round_ties_even() as usize);
                }
            }
        }
    }
}

#[test]
fn same_bytes_with_one_thread_and_with_many() {
    let dir = tempfile::tempdir().unwrap();
    let model = calibration("layers.onnx");
    let data = calibration("layers_calibration.npz");
    let requests: [&[&str]; 4] = [
        &["--method", "wanda", "--sparsity", "0.6", "--correct-bias"],
        &[
            "--method",
            "sparsegpt",
            "--sparsity",
            "0.6",
            "--correct-bias",
        ],
        &[
            "--method",
            "sparsegpt",
            "--pattern",
            "2:4",
            "--calibration-order",
            "sequential",
        ],
        &[
            "--method",
            "magnitude",
            "--sparsity",
            "0.6",
            "--correct-bias",
        ],
    ];
    let mut outputs = Vec::new();
    for threads in ["1", "2", "7"] {
        for (r, flags) in requests.iter().enumerate() {
            let out = dir.path().join(format!("out-{threads}-{r}.onnx"));
            let report = out.with_extension("json");
            let args = [
                &[
                    "prune",
                    arg(&model),
                    "-o",
                    arg(&out),
                    "--report",
                    arg(&report),
                ][..],
                &["--min-params", "0", "--calibration", arg(&data)],
                flags,
            ]
            .concat();
            let result = run_with_env(&args, &[("RAYON_NUM_THREADS", threads)]);
            assert!(
                result.status.success(),
                "{}",
                String::from_utf8_lossy(&result.stderr)
            );
            outputs.push((
                r,
                std::fs::read(&out).unwrap(),
                std::fs::read(&report).unwrap(),
            ));
        }
    }
    for (r, bytes, report) in &outputs {
        let first = outputs.iter().find(|(s, _, _)| s == r).unwrap();
        assert!(*bytes == first.1, "{:?}: model bytes differ", requests[*r]);
        assert!(*report == first.2, "{:?}: reports differ", requests[*r]);
    }
}

#[test]
fn report_of_a_calibrated_prune() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let data = calibration("layers_calibration.npz");
    let mut report = prune(
        &calibration("layers.onnx"),
        &out,
        &[
            "--method",
            "sparsegpt",
            "--sparsity",
            "0.5",
            "--min-params",
            "0",
            "--correct-bias",
            "--calibration",
            arg(&data),
        ],
    );
    // Errors to four significant digits: the snapshot pins behaviour, not the last bits.
    for w in report["weights"].as_array_mut().unwrap() {
        if let Some(e) = w["output_error"].as_f64() {
            w["output_error"] = format!("{e:.3e}").into();
        }
    }
    report["input"] = serde_json::Value::Null;
    report["output"] = serde_json::Value::Null;
    insta::assert_json_snapshot!(report);
}

#[test]
fn sequential_order_differs_from_dense_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = calibration("layers_calibration.npz");
    let model = calibration("layers.onnx");
    let mut errors = Vec::new();
    for order in ["dense", "sequential"] {
        let out = dir.path().join(format!("{order}.onnx"));
        let report = prune(
            &model,
            &out,
            &[
                "--method",
                "sparsegpt",
                "--sparsity",
                "0.6",
                "--min-params",
                "0",
                "--calibration-order",
                order,
                "--calibration",
                arg(&data),
            ],
        );
        // The first layer sees the model's input either way.
        errors.push(
            report["weights"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["output_error"].as_f64().unwrap())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(errors[0][0], errors[1][0]);
    assert_ne!(errors[0][4], errors[1][4]);
}
