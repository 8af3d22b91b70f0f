//! Bad input and bad usage: exit 2, a message naming the file, tensor or flag, nothing written.

use std::path::Path;

use onnx_prune_core::model::Payload;
use onnx_prune_core::Model;

use crate::common::{arg, fixture, matmul_model, run};

fn fails_with(args: &[&str], code: i32, needle: &str) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: `{needle}` not in: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn assert_empty_dir(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn files_that_are_not_models_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.onnx");
    std::fs::write(&text, "this is not a model\n").unwrap();
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, "").unwrap();
    let truncated = dir.path().join("truncated.onnx");
    let whole = std::fs::read(fixture("mlp_gemm.onnx")).unwrap();
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    fails_with(
        &["inspect", arg(&text)],
        2,
        "notes.onnx: not a valid ONNX model",
    );
    fails_with(&["inspect", arg(&empty)], 2, "empty.onnx: is empty");
    fails_with(
        &["inspect", arg(&truncated)],
        2,
        "truncated.onnx: not a valid ONNX model",
    );
    fails_with(&["inspect", arg(dir.path())], 2, "is a directory");
    fails_with(
        &["inspect", arg(&dir.path().join("missing.onnx"))],
        2,
        "missing.onnx",
    );
}

#[test]
fn a_missing_or_short_external_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("external_data.onnx"), dir.path().join("m.onnx")).unwrap();
    fails_with(
        &["inspect", arg(&dir.path().join("m.onnx"))],
        2,
        "external_data.bin",
    );
    std::fs::write(dir.path().join("external_data.bin"), [0u8; 100]).unwrap();
    fails_with(
        &["inspect", arg(&dir.path().join("m.onnx"))],
        2,
        "but the file holds 100",
    );
}

#[test]
fn bad_prune_requests_write_nothing() {
    let model = fixture("mlp_gemm.onnx");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let o = arg(&out);
    let m = arg(&model);
    fails_with(
        &["prune", m, "-o", o, "--sparsity", "1.0"],
        2,
        "--sparsity must be in [0, 1)",
    );
    fails_with(
        &["prune", m, "-o", o, "--sparsity", "-0.1"],
        2,
        "--sparsity must be in [0, 1)",
    );
    fails_with(&["prune", m, "-o", o], 2, "--sparsity is required");
    fails_with(&["prune", m, "-o", o, "--pattern", "4:2"], 2, "--pattern");
    fails_with(
        &[
            "prune",
            m,
            "-o",
            o,
            "--pattern",
            "block:0x4",
            "--sparsity",
            "0.5",
        ],
        2,
        "block:RxC",
    );
    fails_with(
        &[
            "prune",
            m,
            "-o",
            o,
            "--sparsity",
            "0.5",
            "--include",
            "nope",
        ],
        2,
        "--include `nope` matches no weight",
    );
    fails_with(
        &["prune", m, "-o", o, "--sparsity", "0.5", "--exclude", "("],
        2,
        "not a valid regex",
    );
    fails_with(
        &["prune", m, "-o", o, "--pattern", "2:4", "--scope", "global"],
        2,
        "--scope global",
    );
    fails_with(
        &["prune", m, "-o", m, "--sparsity", "0.5"],
        2,
        "is the input model",
    );
    assert_empty_dir(dir.path());
}

#[test]
fn output_through_a_symlink_to_the_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    std::fs::copy(fixture("mlp_gemm.onnx"), &model).unwrap();
    let link = dir.path().join("link.onnx");
    std::os::unix::fs::symlink(&model, &link).unwrap();
    fails_with(
        &["prune", arg(&model), "-o", arg(&link), "--sparsity", "0.5"],
        2,
        "is the input model",
    );
    assert_eq!(
        std::fs::read(&model).unwrap(),
        std::fs::read(fixture("mlp_gemm.onnx")).unwrap()
    );
}

#[test]
fn nan_in_a_selected_weight_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let source = fixture("mlp_gemm.onnx");
    let model = Model::load(&source).unwrap();
    let fc1 = model
        .tensors()
        .iter()
        .find(|t| t.name == "fc1.weight")
        .unwrap();
    let Payload::Raw(raw) = &fc1.payload else {
        panic!("fc1.weight is raw data")
    };
    let mut bytes = model.bytes().to_vec();
    bytes[raw.payload_start + 40..raw.payload_start + 44].copy_from_slice(&f32::NAN.to_le_bytes());
    let broken = dir.path().join("nan.onnx");
    std::fs::write(&broken, bytes).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.onnx");
    fails_with(
        &["prune", arg(&broken), "-o", arg(&out), "--sparsity", "0.5"],
        2,
        "tensor `fc1.weight`: element 10 is NaN",
    );
    assert_empty_dir(out_dir.path());
}

/// A 128 MiB one-layer model, large enough that writing it takes a while.
fn large_model(dir: &Path) -> std::path::PathBuf {
    let (rows, cols) = (4096usize, 8192usize);
    let weight: Vec<f32> = (0..rows * cols)
        .map(|i| (i % 1000) as f32 - 500.0)
        .collect();
    matmul_model(dir, rows, cols, &weight)
}

#[test]
fn an_interrupted_prune_leaves_nothing_behind() {
    let input_dir = tempfile::tempdir().unwrap();
    let model = large_model(input_dir.path());
    let size = std::fs::metadata(&model).unwrap().len();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("out.onnx");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_onnx-prune"))
        .args(["prune", arg(&model), "-o", arg(&out), "--sparsity", "0.5"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Interrupt as soon as the temporary output appears, as Ctrl-C mid-write would.
    let started = std::time::Instant::now();
    loop {
        let writing = std::fs::read_dir(out_dir.path()).unwrap().count() > 0;
        if writing {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "prune finished before it could be interrupted"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_empty_dir(out_dir.path());
    assert_eq!(std::fs::metadata(&model).unwrap().len(), size);
}
