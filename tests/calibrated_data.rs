//! Calibration data for calibrated pruning: data that does not fit the model is refused naming
//! the flag, the file and the array; one sample is enough for a dampened Hessian; float64 data is
//! cast with a note.

use std::path::{Path, PathBuf};

use ndarray::ArrayD;

use crate::calibrated::{calibration, weight};
use crate::common::{arg, run};

/// Runs a prune that must fail with exit 2, write nothing, and say `needle`.
fn refused(model: &Path, flags: &[&str], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let args = [&["prune", arg(model), "-o", arg(&out)][..], flags].concat();
    let result = run(&args);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{flags:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{flags:?}: `{needle}` not in {stderr}"
    );
    assert!(!out.exists(), "{flags:?}: an output was written");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Writes `values` of `shape` as array `key` of `dir/name`.
pub(crate) fn npz_with(
    dir: &Path,
    name: &str,
    key: &str,
    shape: &[usize],
    values: Vec<f32>,
) -> PathBuf {
    let path = dir.join(name);
    let mut npz = ndarray_npy::NpzWriter::new(std::fs::File::create(&path).unwrap());
    npz.add_array(
        key,
        &ArrayD::from_shape_vec(shape.to_vec(), values).unwrap(),
    )
    .unwrap();
    npz.finish().unwrap();
    path
}

#[test]
fn calibration_data_that_does_not_fit_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = calibration("gemm_layer.onnx");
    let good = calibration("gemm_layer_calibration.npz");
    let sparsegpt = [
        "--method",
        "sparsegpt",
        "--sparsity",
        "0.5",
        "--calibration",
    ];
    // Scores by activations need activations.
    refused(
        &model,
        &["--method", "wanda", "--sparsity", "0.5"],
        "--calibration",
    );
    refused(
        &model,
        &["--sparsity", "0.5", "--correct-bias"],
        "--correct-bias has no effect",
    );
    refused(
        &model,
        &[
            "--sparsity",
            "0.5",
            "--calibration",
            arg(&good),
            "--calibration-order",
            "sequential",
        ],
        "no effect with --method magnitude",
    );
    refused(
        &model,
        &[
            "--method",
            "wanda",
            "--sparsity",
            "0.5",
            "--scope",
            "global",
            "--calibration",
            arg(&good),
        ],
        "--scope global",
    );
    let wrong_name = npz_with(dir.path(), "name.npz", "images", &[4, 200], vec![0.5; 800]);
    // The message names the flag, the file and what it holds (issue 23 item 7).
    refused(
        &model,
        &[&sparsegpt[..], &[arg(&wrong_name)]].concat(),
        &format!(
            "--calibration: no array named `x`, the model's input ({} holds images)",
            wrong_name.display()
        ),
    );
    let no_arrays = dir.path().join("no_arrays.npz");
    // An empty zip archive: only its end-of-central-directory record.
    let mut eocd = b"PK\x05\x06".to_vec();
    eocd.resize(22, 0);
    std::fs::write(&no_arrays, eocd).unwrap();
    refused(
        &model,
        &[&sparsegpt[..], &[arg(&no_arrays)]].concat(),
        "no_arrays.npz holds no array",
    );
    let bare = dir.path().join("bare.npy");
    std::fs::write(&bare, b"not read").unwrap();
    refused(
        &model,
        &[&sparsegpt[..], &[arg(&bare)]].concat(),
        "a .npy holds one array; say which input it is with NAME=",
    );
    refused(
        &model,
        &[&sparsegpt[..], &["y=nothere.npy"]].concat(),
        "--calibration y=nothere.npy: the model has no input `y`",
    );
    let wrong_width = npz_with(dir.path(), "width.npz", "x", &[4, 199], vec![0.5; 796]);
    refused(
        &model,
        &[&sparsegpt[..], &[arg(&wrong_width)]].concat(),
        "`x`",
    );
    let mut nan = vec![0.5f32; 800];
    nan[7] = f32::NAN;
    let nan = npz_with(dir.path(), "nan.npz", "x", &[4, 200], nan);
    refused(
        &model,
        &[&sparsegpt[..], &[arg(&nan)]].concat(),
        "nan.npz: array `x` holds NaN at sample 0 (element 7)",
    );
    let empty = dir.path().join("empty.npz");
    std::fs::write(&empty, b"").unwrap();
    refused(
        &model,
        &[&sparsegpt[..], &[arg(&empty)]].concat(),
        "empty.npz",
    );
    let none = npz_with(dir.path(), "none.npz", "x", &[0, 200], Vec::new());
    refused(
        &model,
        &[&sparsegpt[..], &[arg(&none)]].concat(),
        "no sample",
    );
}

#[test]
fn one_sample_is_enough_for_a_dampened_hessian() {
    // X^T X of one sample has rank 1 for 200 columns: dampening makes it invertible, and the
    // user hears that the statistics are thin.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let result = run(&[
        "prune",
        arg(&calibration("gemm_layer.onnx")),
        "-o",
        arg(&out),
        "--method",
        "sparsegpt",
        "--sparsity",
        "0.5",
        "--calibration",
        arg(&calibration("gemm_layer_calibration.npz")),
        "--calibration-samples",
        "1",
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("1 rows for 200 columns"), "{stderr}");
    let w = weight(&out, "w");
    assert_eq!(w.iter().filter(|v| **v == 0.0).count(), 2400);
    assert!(w.iter().all(|v| v.is_finite()));
}

/// Issue 23 item 8: float64 calibration data is cast with the note `check` gives, on stderr and
/// in the report's `notes`.
#[test]
fn float64_calibration_data_is_noted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("f64.npz");
    let mut npz = ndarray_npy::NpzWriter::new(std::fs::File::create(&data).unwrap());
    let values: Vec<f64> = (0..16 * 64).map(|i| (i % 17) as f64 / 17.0).collect();
    npz.add_array(
        "pixels",
        &ArrayD::from_shape_vec(vec![16, 64], values).unwrap(),
    )
    .unwrap();
    npz.finish().unwrap();
    let report = dir.path().join("r.json");
    let out = run(&[
        "prune",
        arg(&crate::common::sample("dense.onnx")),
        "-o",
        arg(&dir.path().join("o.onnx")),
        "--sparsity",
        "0.5",
        "--method",
        "wanda",
        "--calibration",
        arg(&data),
        "--report",
        arg(&report),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let note = "input `pixels`: F64 data cast to F32, the model's type";
    assert!(stderr.contains(&format!("note: {note}")), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["notes"], serde_json::json!([note]));
}
