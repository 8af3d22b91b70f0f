//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The commands of the tool, as `--help` lists them.
pub const COMMANDS: [&str; 8] = [
    "inspect",
    "prune",
    "check",
    "replay",
    "sensitivity",
    "shrink",
    "completions",
    "man",
];

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

/// Runs `onnx-prune shrink MODEL -o DIR/out.onnx --report DIR/r.json ARGS`; returns the run
/// and the report (`null` when none was written).
pub fn shrink_in(dir: &Path, model: &Path, args: &[&str]) -> (Output, serde_json::Value) {
    let (out, report) = (dir.join("out.onnx"), dir.join("r.json"));
    let base = [
        "shrink",
        arg(model),
        "-o",
        arg(&out),
        "--report",
        arg(&report),
    ];
    let result = run(&[&base[..], args].concat());
    let json = std::fs::read(&report)
        .map(|bytes| serde_json::from_slice(&bytes).unwrap())
        .unwrap_or_default();
    (result, json)
}

/// The JSON report at `path` written by `out`, a run that must succeed.
pub fn report_of(out: &Output, path: &Path) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
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
    let w = float_tensor("w", &[rows as i64, cols as i64], weight);
    let mut graph = onnx_protobuf::GraphProto::new();
    graph.node.push(node("MatMul", &["x", "w"], &["y"]));
    graph.initializer.push(w);
    let path = dir.join("model.onnx");
    std::fs::write(&path, model_bytes(graph)).unwrap();
    path
}

/// An unnamed node `op_type` reading `inputs` and writing `outputs`.
pub fn node(op_type: &str, inputs: &[&str], outputs: &[&str]) -> onnx_protobuf::NodeProto {
    let mut node = onnx_protobuf::NodeProto::new();
    node.op_type = op_type.into();
    node.input = inputs.iter().map(|s| s.to_string()).collect();
    node.output = outputs.iter().map(|s| s.to_string()).collect();
    node
}

/// A float32 initializer `name` of shape `dims` holding `values`.
pub fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> onnx_protobuf::TensorProto {
    let mut t = onnx_protobuf::TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = 1;
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

/// A one-dimensional int64 initializer `name` holding `values`.
pub fn int_tensor(name: &str, values: &[i64]) -> onnx_protobuf::TensorProto {
    let mut t = onnx_protobuf::TensorProto::new();
    t.name = name.into();
    t.dims = vec![values.len() as i64];
    t.data_type = 7;
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

/// A float32 graph input or output `name`: a size where `dims` gives one, else a free
/// dimension `N`.
pub fn float_value(name: &str, dims: &[Option<i64>]) -> onnx_protobuf::ValueInfoProto {
    use onnx_protobuf::tensor_shape_proto::Dimension;
    let mut v = onnx_protobuf::ValueInfoProto::new();
    v.name = name.into();
    let t = v.type_.mut_or_insert_default().mut_tensor_type();
    t.elem_type = 1;
    let shape = t.shape.mut_or_insert_default();
    for d in dims {
        let mut dim = Dimension::new();
        match d {
            Some(size) => dim.set_dim_value(*size),
            None => dim.set_dim_param("N".into()),
        }
        shape.dim.push(dim);
    }
    v
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
