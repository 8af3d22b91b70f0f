//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's `fixtures/` directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A fixture by file name.
pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// Every `.onnx` fixture, sorted.
pub fn onnx_fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    files
}

/// Runs the binary with `args`.
pub fn run(args: &[&str]) -> Output {
    run_with_env(args, &[])
}

/// Runs the binary with `args` and extra environment variables.
pub fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onnx-prune"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

/// Stdout of a run that must succeed.
pub fn stdout_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "onnx-prune {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A path as a `&str` argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A file of the PyTorch training sample in `fixtures/digits-mlp-pytorch/`.
pub fn sample(name: &str) -> PathBuf {
    fixture("digits-mlp-pytorch").join(name)
}

/// The sample's test set and its `--labels` argument.
pub fn sample_test_set() -> (PathBuf, String) {
    let test_set = sample("test_set.npz");
    let labels = format!("{}:labels", test_set.display());
    (test_set, labels)
}

/// The trained digits CNN of `fixtures/shrink/real`, its test set and its `--labels` argument.
pub fn digits_cnn() -> (PathBuf, PathBuf, String) {
    let real = fixture("shrink/real");
    let data = real.join("digits_cnn_test_set.npz");
    let labels = format!("{}:labels", data.display());
    (real.join("digits_cnn.onnx"), data, labels)
}

/// A one-node model `y = x · W` with a `rows x cols` float32 weight, written to `dir/model.onnx`.
pub fn matmul_model(dir: &Path, rows: usize, cols: usize, weight: &[f32]) -> PathBuf {
    let mut w = onnx_protobuf::TensorProto::new();
    w.name = "w".into();
    w.dims = vec![rows as i64, cols as i64];
    w.data_type = 1;
    w.raw_data = weight.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut node = onnx_protobuf::NodeProto::new();
    node.op_type = "MatMul".into();
    node.input = vec!["x".into(), "w".into()];
    node.output = vec!["y".into()];
    let mut graph = onnx_protobuf::GraphProto::new();
    graph.node.push(node);
    graph.initializer.push(w);
    let path = dir.join("model.onnx");
    std::fs::write(&path, model_bytes(graph)).unwrap();
    path
}

/// A serialized model (IR 8, opset 17) holding `graph`.
pub fn model_bytes(graph: onnx_protobuf::GraphProto) -> Vec<u8> {
    use protobuf::Message;
    let mut model = onnx_protobuf::ModelProto::new();
    model.ir_version = 8;
    let mut opset = onnx_protobuf::OperatorSetIdProto::new();
    opset.version = 17;
    model.opset_import.push(opset);
    model.graph = protobuf::MessageField::some(graph);
    model.write_to_bytes().unwrap()
}

/// Asserts two JSON numbers agree to a relative `1e-5` (tract's kernels differ between CPUs
/// and batch sizes in the last bits), or are equal when not numbers.
pub fn assert_close(a: &serde_json::Value, b: &serde_json::Value, what: &str) {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => assert!(
            (x - y).abs() <= 1e-5 * x.abs().max(y.abs()).max(1e-6),
            "{what}: {x} vs {y}"
        ),
        _ => assert_eq!(a, b, "{what}"),
    }
}
