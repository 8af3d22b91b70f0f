//! `shrink --calibration` refits the consumers of shrunk groups by least squares: held-out
//! accuracy of the trained digits CNN, the report's output errors, `--no-refit`, and bytes
//! that do not depend on the thread count.

use std::path::{Path, PathBuf};

use ndarray::{s, Array1, Array4};
use ndarray_npy::{NpzReader, NpzWriter};

use crate::common::{arg, fixture, run, run_with_env};

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
    let model = real("digits_cnn.onnx");
    let (out, report) = (dir.join("out.onnx"), dir.join("r.json"));
    let labels = format!("{}:labels", arg(test));
    let mut args = vec![
        "shrink",
        arg(&model),
        "-o",
        arg(&out),
        "--report",
        arg(&report),
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
    args.extend_from_slice(extra);
    let result = run(&args);
    let json = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
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
