//! `--in-place`: the input is replaced only when asked, through symlinks, with its external
//! data (under a new name, committed with the model), keeping its permissions and leaving no
//! temporary file behind.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::{arg, fixture, run, stdout_ok};

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Total zeros over the weights `inspect --json` lists.
fn zeros(model: &Path) -> u64 {
    let json: serde_json::Value =
        serde_json::from_str(&stdout_ok(&["inspect", arg(model), "--json"])).unwrap();
    json["totals"]["zeros"].as_u64().unwrap()
}

#[test]
fn in_place_replaces_the_file_behind_a_symlink_and_keeps_its_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    std::fs::copy(fixture("mlp_gemm.onnx"), &model).unwrap();
    std::fs::set_permissions(&model, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.path().join("link.onnx");
    std::os::unix::fs::symlink(&model, &link).unwrap();
    let prune = ["prune", arg(&link), "--sparsity", "0.5"];

    let refused = run(&[&prune[..], &["-o", arg(&link)]].concat());
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--in-place"));
    assert_eq!(zeros(&model), 0);

    stdout_ok(&[&prune[..], &["--in-place"]].concat());
    assert_eq!(zeros(&model), 1280, "half of the 2,560 weight elements");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    let mode = std::fs::metadata(&model).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    assert_eq!(names(dir.path()), ["link.onnx", "model.onnx"]);
}

#[test]
fn in_place_writes_changed_external_data_under_a_new_name_then_back() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("external_data.onnx");
    std::fs::copy(fixture("external_data.onnx"), &model).unwrap();
    std::fs::copy(
        fixture("external_data.bin"),
        dir.path().join("external_data.bin"),
    )
    .unwrap();
    let model_bytes = std::fs::read(&model).unwrap();
    let data_bytes = std::fs::read(dir.path().join("external_data.bin")).unwrap();
    // Nothing to change: the model and its data keep their names and bytes.
    stdout_ok(&["prune", arg(&model), "--in-place", "--sparsity", "0"]);
    assert_eq!(std::fs::read(&model).unwrap(), model_bytes);
    assert_eq!(
        names(dir.path()),
        ["external_data.bin", "external_data.onnx"]
    );
    // The pruned data goes to a new file that the model, renamed into place, names (the
    // commit of both); the old data file goes once the model is in place.
    let flags = ["--sparsity", "0.5", "--include", ".", "--min-params", "0"];
    stdout_ok(&[&["prune", arg(&model), "--in-place"][..], &flags].concat());
    assert_eq!(
        names(dir.path()),
        ["external_data.1.bin", "external_data.onnx"]
    );
    let pruned = zeros(&model);
    assert!(pruned > 0);
    let data = std::fs::read(dir.path().join("external_data.1.bin")).unwrap();
    assert_eq!(
        data.len(),
        data_bytes.len(),
        "dense storage keeps the layout"
    );
    // Another run goes back to the first name: with dense storage the model is the input's
    // bytes again, its data pruned.
    stdout_ok(&[&["prune", arg(&model), "--in-place"][..], &flags].concat());
    assert_eq!(
        names(dir.path()),
        ["external_data.bin", "external_data.onnx"]
    );
    assert_eq!(std::fs::read(&model).unwrap(), model_bytes);
    assert_eq!(zeros(&model), pruned);
}

#[test]
fn in_place_is_refused_with_check_and_with_an_output() {
    let model = fixture("mlp_gemm.onnx");
    for extra in [&["--check"][..], &["-o", "elsewhere.onnx"]] {
        let args = [
            &["prune", arg(&model), "--sparsity", "0.5", "--in-place"][..],
            extra,
        ]
        .concat();
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    }
}
