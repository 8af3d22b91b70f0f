//! `shrink --calibration` refits the consumers of shrunk groups by least squares: held-out
//! accuracy of the trained digits CNN, the report's output errors, `--no-refit`, and bytes
//! that do not depend on the thread count; the writer slicing edited values.

use std::path::{Path, PathBuf};

use ndarray::{s, Array1, Array4};
use ndarray_npy::{NpzReader, NpzWriter};
use onnx_prune_core::model::dense_bytes;
use onnx_prune_core::{shrink, Edit, Model};

use crate::common::{arg, fixture, run, run_with_env, shrink_in};

fn real(name: &str) -> PathBuf {
    fixture("shrink/real").join(name)
}

/// The digits test set split in two: calibration on the first 225 samples, checks on the
/// other 225, so that no figure is measured on the data the refit saw.
fn halves(dir: &Path) -> (PathBuf, PathBuf) {
    let mut npz =
        NpzReader::new(std::fs::File::open(real("digits_cnn_test_set.npz")).unwrap()).unwrap();
    let input: Array4<f32> = npz.by_name("input").unwrap();
    let labels: Array1<i64> = npz.by_name("labels").unwrap();
    let write = |name: &str, from: usize, to: usize| {
        let path = dir.join(name);
        let mut out = NpzWriter::new(std::fs::File::create(&path).unwrap());
        out.add_array("input", &input.slice(s![from..to, .., .., ..]))
            .unwrap();
        out.add_array("labels", &labels.slice(s![from..to]))
            .unwrap();
        out.finish().unwrap();
        path
    };
    (write("calib.npz", 0, 225), write("test.npz", 225, 450))
}

/// Shrinks the digits CNN at 50% (`--round-to 8`) calibrated on `calib`, checked on `test`;
/// returns the exit code and the report.
fn shrink(dir: &Path, calib: &Path, test: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let labels = format!("{}:labels", arg(test));
    let flags = [
        "--sparsity",
        "0.5",
        "--round-to",
        "8",
        "--calibration",
        arg(calib),
        "--calibration-samples",
        "225",
        "--check",
        "--inputs",
        arg(test),
        "--labels",
        &labels,
    ];
    let model = real("digits_cnn.onnx");
    let (result, json) = shrink_in(dir, &model, &[&flags[..], extra].concat());
    (result.status.code().unwrap(), json)
}

#[test]
fn refit_restores_the_held_out_accuracy_of_the_digits_cnn() {
    // Measured: reference 97.78% on the held-out 225 samples; shrunk to 50% by activation
    // importance, 86.22% with --no-refit, 96.89% with the refit. Relative output errors on the
    // calibration half, zeroed -> refitted: conv2 17.20% -> 0.22%, conv3 18.30% -> 0.22%,
    // fc1 (Flatten -> Gemm, 16 columns per channel) 10.42% -> 0.01%, fc2 0.23% -> 0.04%.
    let dir = tempfile::tempdir().unwrap();
    let (calib, test) = halves(dir.path());
    let accuracy = |json: &serde_json::Value| json["check"]["accuracy"]["candidate"].as_f64();
    // Without the refit the accuracy drop fails the check's default tolerance (exit 1).
    let (code, plain) = shrink(dir.path(), &calib, &test, &["--no-refit"]);
    assert_eq!(code, 1, "{plain}");
    assert!(plain.get("refits").is_none(), "{plain}");
    let without = accuracy(&plain).unwrap();
    assert!((without - 0.8622).abs() < 0.005, "{without}");
    // With it the check passes.
    let (code, refitted) = shrink(dir.path(), &calib, &test, &[]);
    assert_eq!(code, 0, "{refitted}");
    let with = accuracy(&refitted).unwrap();
    assert!((with - 0.9689).abs() < 0.005, "{with}");
    assert!(with > without + 0.05, "{with} vs {without}");
    // The same groups shrink either way: the refit changes values, not the choice.
    assert_eq!(plain["groups"], refitted["groups"]);
    let refits = refitted["refits"].as_array().unwrap();
    let weights: Vec<&str> = refits
        .iter()
        .map(|r| r["weight"].as_str().unwrap())
        .collect();
    assert_eq!(
        weights,
        ["conv2.weight", "conv3.weight", "fc1.weight", "fc2.weight"]
    );
    for r in refits {
        assert_eq!(r["refitted"], true, "{r}");
        let before = r["output_error_before"].as_f64().unwrap();
        let after = r["output_error_after"].as_f64().unwrap();
        assert!(after < before && after < 0.01, "{r}");
        assert!(r["note"].as_str().unwrap().contains("shifted"), "{r}");
    }
}

#[test]
fn refitted_bytes_do_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let (calib, _) = halves(dir.path());
    let model = real("digits_cnn.onnx");
    let outputs: Vec<Vec<u8>> = ["1", "2"]
        .iter()
        .map(|threads| {
            let out = dir.path().join(format!("out{threads}.onnx"));
            let args = [
                "shrink",
                arg(&model),
                "-o",
                arg(&out),
                "--sparsity",
                "0.5",
                "--calibration",
                arg(&calib),
            ];
            let result = run_with_env(&args, &[("RAYON_NUM_THREADS", threads)]);
            assert!(
                result.status.success(),
                "{}",
                String::from_utf8_lossy(&result.stderr)
            );
            std::fs::read(&out).unwrap()
        })
        .collect();
    assert!(outputs[0] == outputs[1], "1 and 2 threads differ");
}

#[test]
fn no_refit_needs_calibration_data() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let result = run(&[
        "shrink",
        arg(&real("digits_cnn.onnx")),
        "-o",
        arg(&out),
        "--sparsity",
        "0.5",
        "--no-refit",
    ]);
    assert_eq!(result.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("--no-refit has no effect without --calibration"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn grouped_convolutions_are_refitted_group_by_group() {
    // The grouped fixture (group 2 Convs) at 50%, calibrated and checked on the same 64
    // deterministic inputs. Measured: output errors w7 35.67% -> 7.86%, w13 39.40% -> 10.08%;
    // output cosine 0.6362 with --no-refit, 0.9048 refitted.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("x.npz");
    let x = Array4::from_shape_fn((64, 3, 8, 8), |(n, c, y, x)| {
        let i = ((n * 3 + c) * 8 + y) * 8 + x;
        ((i * 37 % 101) as f32) / 50.0 - 1.0
    });
    let mut npz = NpzWriter::new(std::fs::File::create(&data).unwrap());
    npz.add_array("x", &x).unwrap();
    npz.finish().unwrap();
    let model = fixture("shrink/graphs").join("grouped.onnx");
    let shrink = |extra: &[&str]| {
        let flags = [
            "--sparsity",
            "0.5",
            "--calibration",
            arg(&data),
            "--check",
            "--inputs",
            arg(&data),
        ];
        shrink_in(dir.path(), &model, &[&flags[..], extra].concat()).1
    };
    let plain = shrink(&["--no-refit"]);
    let refitted = shrink(&[]);
    let cosine = |json: &serde_json::Value| json["check"]["outputs"][0]["cosine"].as_f64().unwrap();
    assert!((cosine(&plain) - 0.6362).abs() < 0.001, "{plain}");
    assert!((cosine(&refitted) - 0.9048).abs() < 0.001, "{refitted}");
    let errors: Vec<(&str, f64, f64)> = refitted["refits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["weight"].as_str().unwrap(),
                r["output_error_before"].as_f64().unwrap(),
                r["output_error_after"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    for (weight, before, after, (name, b, a)) in [
        ("w13", 0.3940, 0.1008, errors[0]),
        ("w7", 0.3567, 0.0786, errors[1]),
    ] {
        assert_eq!(name, weight);
        assert!(
            (b - before).abs() < 0.0005 && (a - after).abs() < 0.0005,
            "{errors:?}"
        );
    }
}

/// Regression guard for the writer: values replaced by an edit (what the refit gives) are the
/// ones sliced, and a replaced tensor that is not sliced (a bias whose own channels stay) is
/// written too, rather than the input's values.
#[test]
fn edited_values_are_sliced_and_written() {
    let model = Model::load(fixture("shrink/graphs").join("flatten_gemm.onnx")).unwrap();
    let analysis = shrink::analyze(&model).unwrap();
    // Channels 1 and 4 of the Conv go: 16 columns each of the Flatten -> Gemm weight `fc11`.
    let mut removed = vec![Vec::new(); analysis.groups.len()];
    removed[0] = vec![1, 4];
    let index = |name: &str| model.tensors().iter().position(|t| t.name == name).unwrap();
    let floats = |values: &[f32]| {
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>()
    };
    let weight: Vec<f32> = (0..960).map(|i| i as f32).collect();
    let bias: Vec<f32> = (0..10).map(|i| -(i as f32)).collect();
    let edits = [
        Edit::replace(index("fc11"), floats(&weight)),
        Edit::replace(index("fcb12"), floats(&bias)),
    ];
    let (bytes, _) = shrink::shrink_bytes(&model, &analysis, &removed, &edits).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shrunk.onnx");
    std::fs::write(&path, bytes).unwrap();
    let shrunk = Model::load(&path).unwrap();
    let values = |name: &str| {
        let tensor = shrunk.tensors().iter().find(|t| t.name == name).unwrap();
        let data = dense_bytes(&shrunk, tensor).unwrap();
        let floats: Vec<f32> = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (tensor.dims.clone(), floats)
    };
    let kept: Vec<f32> = weight
        .iter()
        .enumerate()
        .filter(|(i, _)| ![1, 4].contains(&(i % 96 / 16)))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(values("fc11"), (vec![10, 64], kept));
    assert_eq!(values("fcb12"), (vec![10], bias));
}
